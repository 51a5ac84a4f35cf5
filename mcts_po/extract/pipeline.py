"""One extraction run: trees in, every requested format saved, stats written (what the CLI calls).

    from mcts_po.extract.pipeline import extract_to_disk
    stats = extract_to_disk(trees, ["step-dpo", "tpo"], "data/x", ExtractConfig())
    # data/x/step-dpo/ (datasets.load_from_disk), data/x/step-dpo.jsonl, .parquet, ..., data/x/stats.json

The loop command (search, extract, train) uses this too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from mcts_po.extract import ExtractConfig, get_format
from mcts_po.extract.saving import make_readable, push_dataset, save_dataset
from mcts_po.extract.stats import extraction_stats
from mcts_po.io_utils import UserError, atomic_write_json
from mcts_po.search.tree import Tree

STATS_FILE = "stats.json"


def empty_value_data_message(name: str, num_trees: int, counters: dict[str, int]) -> str:
    dropped = ", ".join(f"{k}: {v}" for k, v in sorted(counters.items())) or "nothing dropped: no step met the rules"
    return (f"no {name} rows from {num_trees} trees ({dropped}); a value model needs searched trees with "
            "verified terminals (ppm: siblings leading to a correct and to a wrong answer, Q margin >= "
            "--ppm-min-q-margin)")


def extract_to_disk(trees: Sequence[Tree], formats: Sequence[str], out_dir: str | os.PathLike,
                    config: ExtractConfig | None = None, push_to_hub: str | None = None,
                    sources: Sequence[str] = ()) -> dict[str, Any]:
    """Extract `formats` from `trees`, save each under `out_dir`, write and return the stats."""
    config = config or ExtractConfig()
    chosen = [get_format(name) for name in dict.fromkeys(formats)]  # unknown names fail before any work
    out_dir = Path(out_dir)
    rows_by_format: dict[str, list[dict[str, Any]]] = {}
    counters_by_format: dict[str, dict[str, int]] = {}
    files: dict[str, dict[str, str]] = {}
    for fmt in chosen:
        counters: dict[str, int] = {}
        rows = fmt.rows(trees, config, counters)
        if fmt.value_format and not rows:
            raise UserError(empty_value_data_message(fmt.name, len(trees), counters))
        rows_by_format[fmt.name], counters_by_format[fmt.name] = rows, counters
        files[fmt.name] = save_dataset(rows, out_dir, fmt.name, fmt.columns)
    if push_to_hub:
        for fmt in chosen:
            push_dataset(rows_by_format[fmt.name], push_to_hub, fmt.name, fmt.columns)
    stats = extraction_stats(trees, rows_by_format, counters_by_format, config.to_dict())
    stats["sources"] = [str(s) for s in sources]
    stats["files"] = files
    if push_to_hub:
        stats["pushed_to"] = push_to_hub
    atomic_write_json(out_dir / STATS_FILE, stats)
    make_readable(out_dir / STATS_FILE)
    return stats
