"""SamplingConfig: how the policy samples steps, rollouts and verdicts during a search.

Torch-free, like every config of mcts_po (`mcts_po.search.config`, `mcts_po.train.config`,
`mcts_po.extract.config`): commands build their flags from the field metadata
(`mcts_po.config_utils`) and runs record the fields in `run_config.json` and tree metadata.

    from mcts_po.llm.config import SamplingConfig
    SamplingConfig(max_step_tokens=64, step_delimiter="\\n\\n")
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mcts_po.io_utils import UserError
from mcts_po.llm.prompts import REMOVED_SELF_EVAL_LAYOUTS, SELF_EVAL_LAYOUT


@dataclass
class SamplingConfig:
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of step expansion and rollouts"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling threshold"})
    max_step_tokens: int = field(default=96, metadata={"help": "tokens per sampled step"})
    rollout_max_tokens: int = field(default=256, metadata={"help": "tokens of a rollout to the answer"})
    step_delimiter: str = field(default="\n", metadata={"escapes": True, "help": "text that ends a step (SmolLM2 writes one step per line; use '\\n\\n' for paragraph steps; escapes typed on the command line are decoded)"})
    self_eval_hint: bool = field(default=False, metadata={"help": "show the reference solution to the self-evaluation (MCTS-DPO's ground-truth hint; recorded in tree metadata)"})
    self_eval_top_logprobs: int = field(default=20, metadata={"help": "alternatives read at the verdict token"})
    self_eval_layout: str = field(default=SELF_EVAL_LAYOUT, metadata={"help": "self-evaluation prompt layout, recorded in the trees: 'numbered' (a teacher's chat with the steps as a numbered list and 'Is step k correct?', so a child's question extends its parent's) is the only one; 'separate', 'followup' and 'question_first' were measured worse and removed (docs/prompts.md)"})

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("SamplingConfig: temperature must be >= 0 and top_p in (0, 1]")
        if self.max_step_tokens < 1 or self.rollout_max_tokens < 1:
            raise ValueError("SamplingConfig: max_step_tokens and rollout_max_tokens must be >= 1")
        if not self.step_delimiter:
            raise ValueError("SamplingConfig: step_delimiter must not be empty")
        if self.self_eval_layout in REMOVED_SELF_EVAL_LAYOUTS:
            raise ValueError(f"SamplingConfig.self_eval_layout {self.self_eval_layout!r} was removed "
                             f"({REMOVED_SELF_EVAL_LAYOUTS[self.self_eval_layout]}; docs/prompts.md, 'Self-evaluation "
                             f"layout'); the one layout is {SELF_EVAL_LAYOUT!r}")
        if self.self_eval_layout != SELF_EVAL_LAYOUT:
            raise ValueError(f"SamplingConfig.self_eval_layout must be {SELF_EVAL_LAYOUT!r}, got {self.self_eval_layout!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def check_recorded(recorded: dict[str, Any], path: Any, use_self_eval: bool = True) -> dict[str, Any]:
        """A sampling dict read back from a run's record `path`, as today's settings would spell it;
        UserError (naming `path`) when the run's verdicts came from a removed self-evaluation layout.

        Runs recorded before `self_eval_layout` existed were searched with 'separate'. A run
        without self-evaluation (`use_self_eval` false) never used its layout and resumes as is."""
        layout = recorded.get("self_eval_layout", "separate")
        if layout != SELF_EVAL_LAYOUT and use_self_eval:
            when = "" if "self_eval_layout" in recorded else " (recorded before the layout was a setting)"
            reason = REMOVED_SELF_EVAL_LAYOUTS.get(layout, "not a layout this version knows")
            raise UserError(f"{path}: this run was searched with the self-evaluation layout {layout!r}{when}, which "
                            f"was removed ({reason}; measured in docs/prompts.md, 'Self-evaluation layout'); "
                            f"its trees can still be extracted, shown and exported, but to search on, start a new "
                            f"run (another --out) with the one layout {SELF_EVAL_LAYOUT!r}")
        return {**recorded, "self_eval_layout": SELF_EVAL_LAYOUT}
