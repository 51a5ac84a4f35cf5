"""ExtractConfig: the selection rules of every extraction format, a torch-free dataclass.

TRL-style: each field carries `metadata={"help": ...}` (the `mcts-po extract` flags are built
from it) and is validated in `__post_init__`, so a bad value fails at once with a message
naming the field and the valid choices. The rules themselves: `mcts_po.extract.selection`.

Which rule applies to which format:

| rule                | step-dpo | step-apo | tpo | dpo | sft | value | ppm |
|---------------------|----------|----------|-----|-----|-----|-------|-----|
| min_q_margin        |    x     |    x     |     |     |     |       |     |
| min_visits          |    x     |    x     |     |     |     |   x   |  x  |
| scope               |    x     |    x     |     |     |     |       |  x  |
| level               |    x     |    x     |     |     |     |       |  x  |
| max_pairs_per_tree  |    x     |    x     |     |  x  |     |       |     |
| dedup_threshold     |    x     |    x     |     |  x  |     |       |  x  |
| same_ending         |    x     |    x     |     |     |     |       |     |
| apo_rule/baseline   |          |    x     |     |     |     |       |     |
| max_list_size       |          |          |  x  |     |     |       |     |
| ppm_min_q_margin    |          |          |     |     |     |       |  x  |
| ppm_pairs_per_side  |          |          |     |     |     |       |  x  |

(`tpo` and `sft` always drop exact duplicates after text normalisation.)

    from mcts_po.extract.config import ExtractConfig
    config = ExtractConfig(min_q_margin=0.5, scope="correct_paths")
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCOPES = ("anywhere", "correct_paths")
LEVELS = ("all", "step", "plan")
APO_RULES = ("cpl", "margin")
APO_BASELINES = ("parent", "zero")


@dataclass
class ExtractConfig:
    min_q_margin: float = field(default=0.0, metadata={
        "help": "pairs need q_chosen - q_rejected >= this; 0 means strictly greater (equal Q never makes a pair)"})
    min_visits: int = field(default=1, metadata={
        "help": "both steps of a pair need at least this many visits; value: paths stop above a node with fewer"})
    scope: str = field(default="anywhere", metadata={
        "help": f"where pairs may come from: {', '.join(SCOPES)} (correct_paths = only parents on a path "
                "to a verified-correct terminal)"})
    max_pairs_per_tree: int = field(default=0, metadata={
        "help": "keep at most this many pairs per tree, largest Q margin first (0 = no limit)"})
    dedup_threshold: float = field(default=0.9, metadata={
        "help": "drop a pair whose chosen and rejected texts are this similar (difflib ratio after "
                "normalising case, whitespace and spacing around digits, and only when both hold the same "
                "numbers); 1.0 drops only texts equal after normalisation"})
    same_ending: bool = field(default=True, metadata={
        "help": "pair only steps that both end the solution (state an answer or stop) or both do not "
                "(step-dpo: the rejected step is the worst sibling ending like the chosen one): an unfinished "
                "step preferred to a wrong final answer also teaches the policy not to answer (off: step-dpo solved "
                "12/300 held-out problems after two loop rounds against 70/300 on, benchmarks/loop_grid/seed2.md); "
                "on by default, --no-same-ending turns it off"})
    level: str = field(default="all", metadata={
        "help": f"which tree level pairs come from: {', '.join(LEVELS)} (plan = abstract plan steps)"})
    apo_rule: str = field(default="cpl", metadata={
        "help": f"step-apo pairing: {', '.join(APO_RULES)} (cpl = every sibling above the baseline vs "
                "every sibling below it; margin = every sibling pair with a Q gap >= min_q_margin)"})
    apo_baseline: str = field(default="parent", metadata={
        "help": f"step-apo value baseline of the cpl rule: {', '.join(APO_BASELINES)} (parent = the parent's Q)"})
    max_list_size: int = field(default=5, metadata={
        "help": "tpo: trajectories per ranked list (distinct values first)"})
    ppm_min_q_margin: float = field(default=0.5, metadata={
        "help": "ppm: pairs need q_chosen - q_rejected >= this (rStar-Math drops pairs below 0.5)"})
    ppm_pairs_per_side: int = field(default=2, metadata={
        "help": "ppm: per parent, this many highest-Q correct-leading steps x this many lowest-Q wrong-leading ones"})

    def __post_init__(self) -> None:
        _choice("scope", self.scope, SCOPES)
        _choice("level", self.level, LEVELS)
        _choice("apo_rule", self.apo_rule, APO_RULES)
        _choice("apo_baseline", self.apo_baseline, APO_BASELINES)
        _number("min_q_margin", self.min_q_margin, float)
        if not 0.0 <= self.min_q_margin <= 2.0:
            raise ValueError(f"ExtractConfig.min_q_margin must be in [0, 2] (Q lies in [-1, 1]), got {self.min_q_margin!r}")
        if not isinstance(self.same_ending, bool):
            raise ValueError(f"ExtractConfig.same_ending must be true or false, got {self.same_ending!r}")
        _number("ppm_min_q_margin", self.ppm_min_q_margin, float)
        if not 0.0 <= self.ppm_min_q_margin <= 2.0:
            raise ValueError(f"ExtractConfig.ppm_min_q_margin must be in [0, 2] (Q lies in [-1, 1]), got {self.ppm_min_q_margin!r}")
        _number("dedup_threshold", self.dedup_threshold, float)
        if not 0.0 < self.dedup_threshold <= 1.0:
            raise ValueError(f"ExtractConfig.dedup_threshold must be in (0, 1], got {self.dedup_threshold!r}")
        for name, lowest in (("min_visits", 0), ("max_pairs_per_tree", 0), ("max_list_size", 2), ("ppm_pairs_per_side", 1)):
            value = getattr(self, name)
            _number(name, value, int)
            if value < lowest:
                raise ValueError(f"ExtractConfig.{name} must be >= {lowest}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"ExtractConfig.{name} = {value!r} is not one of: {', '.join(valid)}")


def _number(name: str, value: Any, kind: type) -> None:
    ok = isinstance(value, (int, float)) if kind is float else isinstance(value, int)
    if not ok or isinstance(value, bool):
        raise ValueError(f"ExtractConfig.{name} must be {'a number' if kind is float else 'an integer'}, got {value!r}")


# ---------------------------------------------------------------------------- pair rules
