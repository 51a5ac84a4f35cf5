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
    value     per-step Q targets of maximal paths, for a value model  (value_targets)
    ppm       rStar-Math sibling pairs for a preference value model   (ppm_pairs)

`value` and `ppm` train a value model (`mcts-po train --method value|ppm`); `--format all`
means the policy formats (`POLICY_FORMATS`), and an empty value dataset is an error.

    from mcts_po.extract import ExtractConfig, extract_rows, read_trees
    trees = read_trees(["runs/x"])
    rows = extract_rows(trees, "step-dpo", ExtractConfig(min_q_margin=0.2))

Column meanings and example rows: docs/data_formats.md. CLI: `mcts-po extract`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Sequence

from mcts_po.extract import (ppm_pairs, ranked_trajectories, sft_traces, step_apo_pairs, step_dpo_pairs,
                             step_dpo_repo_pairs, trajectory_pairs, value_targets)
from mcts_po.tree_io import read_trees
from mcts_po.extract.config import ExtractConfig
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
    value_format: bool = False  # trains a value model: left out of `all`; no rows is an error

    def rows(self, trees: Sequence[Tree], config: ExtractConfig, counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
        return self.module.rows_from_trees(trees, config, counters)


FORMATS: dict[str, RowFormat] = {
    module.NAME: RowFormat(module.NAME, module.DESCRIPTION, module.COLUMNS, module.PAIR_FORMAT, module,
                           getattr(module, "VALUE_FORMAT", False))
    for module in (step_dpo_pairs, step_dpo_repo_pairs, step_apo_pairs, ranked_trajectories, trajectory_pairs,
                   sft_traces, value_targets, ppm_pairs)
}
POLICY_FORMATS = tuple(name for name, fmt in FORMATS.items() if not fmt.value_format)


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


__all__ = ["ExtractConfig", "FORMATS", "POLICY_FORMATS", "RowFormat", "extract_rows", "get_format", "read_trees"]
