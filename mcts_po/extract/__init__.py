"""Preference data from search trees: Step-DPO, Step-APO, TPO lists, DPO pairs and SFT traces.

Pure Python (no torch): rows are plain dicts built from `mcts_po.search.tree.Tree`s; the
`datasets` library is imported only when saving (`mcts_po.extract.saving`). Formats are
chosen by name from `FORMATS`:

    step-dpo  sibling steps, highest-Q chosen / lowest-Q rejected     (step_dpo_pairs)
    step-dpo-repo  the same pairs in the Step-DPO repository's layout (step_dpo_repo_pairs)
    step-apo  sibling-step pairs with Q values for Step-APO (CPL)     (step_apo_pairs)
    tpo       Tree Preference Optimization ranked lists (Liao et al.)  (ranked_trajectories)
    dpo       correct vs wrong full trajectories                      (trajectory_pairs)
    sft       correct root-to-answer paths                            (sft_traces)

    from mcts_po.extract import ExtractConfig, extract_rows, read_trees
    trees = read_trees(["runs/x"])
    rows = extract_rows(trees, "step-dpo", ExtractConfig(min_q_margin=0.2))

Column meanings and example rows: docs/data_formats.md. CLI: `mcts-po extract`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Sequence

from mcts_po.extract import ranked_trajectories, sft_traces, step_apo_pairs, step_dpo_pairs, trajectory_pairs
from mcts_po.extract import step_dpo_repo_pairs
from mcts_po.tree_io import read_trees
from mcts_po.extract.selection import ExtractConfig
from mcts_po.io_utils import UserError
from mcts_po.search.tree import Tree


@dataclass(frozen=True)
class RowFormat:
    """A named output format: its column schema and the function that builds its rows."""

    name: str
    description: str
    columns: dict[str, Any]  # column -> type spec (see mcts_po.extract.saving.features_for)
    pair_format: bool  # rows carry q_chosen / q_rejected (margin histogram in the stats)
    module: ModuleType

    def rows(self, trees: Sequence[Tree], config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
        return self.module.rows_from_trees(trees, config, counters)


FORMATS: dict[str, RowFormat] = {
    module.NAME: RowFormat(module.NAME, module.DESCRIPTION, module.COLUMNS, module.PAIR_FORMAT, module)
    for module in (step_dpo_pairs, step_dpo_repo_pairs, step_apo_pairs, ranked_trajectories, trajectory_pairs, sft_traces)
}


def get_format(name: str) -> RowFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise UserError(f"unknown extraction format {name!r}; valid: {', '.join(FORMATS)}") from None


def extract_rows(trees: Sequence[Tree], format: str, config: ExtractConfig | None = None,
                 counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Rows of `format` from `trees` under `config` (defaults when None). `counters`, when
    given, is filled with how many candidates each rule dropped (e.g. "pairs_tied")."""
    return get_format(format).rows(trees, config or ExtractConfig(), counters)


__all__ = ["ExtractConfig", "FORMATS", "RowFormat", "extract_rows", "get_format", "read_trees"]
