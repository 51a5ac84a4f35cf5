"""SearchConfig: every knob of the tree search, as a TRL-style dataclass with help text.

Fields carry `metadata={"help": ...}` (the CLI builds its flags from them) and are
validated in `__post_init__`, so a bad value fails at start-up with a message that
names the field and the valid choices, never hours into a run.

    from mcts_po.search.config import SearchConfig
    config = SearchConfig(num_simulations=16, selection="puct")
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SELECTION_RULES = ("puct", "uct")
BACKUP_RULES = ("mean", "visit_weighted")
TREE_KINDS = ("step", "plan")


@dataclass
class SearchConfig:
    num_simulations: int = field(default=16, metadata={"help": "simulations (select-expand-evaluate-backup) per problem", "aliases": ("--simulations",)})
    num_children: int = field(default=4, metadata={"help": "k: steps sampled when a leaf is expanded"})
    leaves_per_wave: int = field(default=2, metadata={"help": "leaves of one tree expanded in the same wave (virtual loss keeps them apart)"})
    selection: str = field(default="puct", metadata={"help": f"selection rule: {', '.join(SELECTION_RULES)}"})
    c_explore: float = field(default=1.0, metadata={"help": "exploration constant c of PUCT / UCT"})
    prior_length_exponent: float = field(default=1.25, metadata={"help": "prior p = exp(sum log pi / len^x) (MCTS-DPO uses 1.25)"})
    backup: str = field(default="mean", metadata={"help": f"backup rule: {', '.join(BACKUP_RULES)}"})
    gamma: float = field(default=1.0, metadata={"help": "discount of the visit-weighted backup Q = r + gamma V"})
    virtual_loss: float = field(default=3.0, metadata={"help": "virtual visits with value -1 added per pending leaf on its path"})
    max_depth: int = field(default=8, metadata={"help": "steps per path; a node at this depth is terminal"})
    max_tokens: int = field(default=400, metadata={"help": "generated tokens per path; a node past this is terminal"})
    self_eval_weight: float = field(default=0.5, metadata={"help": "weight of the self-evaluation (2 * P(yes) - 1) in a non-terminal node's value; values are the weighted mean of the sources with weight > 0"})
    rollout_weight: float = field(default=0.5, metadata={"help": "weight of the rollout's verified outcome (+-1) in a non-terminal node's value"})
    value_model_weight: float = field(default=0.0, metadata={"help": "weight of the value model's score (in [-1, 1]) in a non-terminal node's value; > 0 needs the search job's value_model"})
    use_self_eval: bool = field(default=True, metadata={"help": "score new non-terminal steps by the policy's own yes/no verdict (false: as self_eval_weight 0; true with weight 0 is an error)"})
    use_rollout: bool = field(default=True, metadata={"help": "score new non-terminal steps by one rollout to an answer, checked by the verifier (false: as rollout_weight 0; true with weight 0 is an error)"})
    merge_identical_siblings: bool = field(default=True, metadata={"help": "merge sibling steps with identical text (after whitespace normalisation)"})
    tree: str = field(default="step", metadata={"help": f"tree kind: {', '.join(TREE_KINDS)} (plan = CPL: abstract plan steps first, then solution steps; see docs/plan_trees.md)"})
    max_plan_depth: int = field(default=3, metadata={"help": "plan trees: plan steps per path; the plan is complete at this depth (or earlier, when the model ends it)"})
    seed: int = field(default=0, metadata={"help": "the search job's seed: the engine is seeded with it and a reseedable backend (transformers) is reseeded per chunk from it and the chunk's problem ids; the search core itself draws no random numbers (ties keep the lowest node id). A loop derives it per round from its own seed"})

    def __post_init__(self) -> None:
        _choice("selection", self.selection, SELECTION_RULES)
        _choice("backup", self.backup, BACKUP_RULES)
        _choice("tree", self.tree, TREE_KINDS)
        for name in ("num_simulations", "num_children", "leaves_per_wave", "max_depth", "max_tokens", "max_plan_depth"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SearchConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("self_eval_weight", "rollout_weight", "value_model_weight"):
            if not float(getattr(self, name)) >= 0.0:
                raise ValueError(f"SearchConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for flag, name in (("use_self_eval", "self_eval_weight"), ("use_rollout", "rollout_weight")):
            if getattr(self, flag) and float(getattr(self, name)) == 0.0:
                raise ValueError(f"SearchConfig.{flag} is true but {name} is 0: a source with weight 0 is not run, "
                                 f"so set {flag} false too (or give {name} a weight > 0)")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"SearchConfig.gamma must be in (0, 1], got {self.gamma!r}")
        if self.c_explore < 0 or self.virtual_loss < 0:
            raise ValueError("SearchConfig.c_explore and virtual_loss must be >= 0")

    def value_weights(self) -> dict[str, float]:
        """The weight of each value source that runs (self_eval, rollout, value_model); a source
        switched off or with weight 0 is left out and generates nothing."""
        weights = {"self_eval": float(self.self_eval_weight) if self.use_self_eval else 0.0,
                   "rollout": float(self.rollout_weight) if self.use_rollout else 0.0,
                   "value_model": float(self.value_model_weight)}
        return {name: w for name, w in weights.items() if w > 0}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"SearchConfig.{name} = {value!r} is not one of: {', '.join(valid)}")
