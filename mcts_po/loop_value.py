"""The loop's value model: each round trains value model k+1 on a replay buffer of trees and measures value model k.

AlphaZero's second network inside `mcts-po loop` (mcts_po/loop.py). With a `value:` section
(`method: value|ppm`), round k, after its search (with policy k and value model k) and the
training of policy k+1, runs one more phase, `value` (marker `RUN/round_k/value.done.json`):

1. **Metrics of value model k on round k's fresh trees.** Round k searched train problems no
   earlier round searched, and value model k was trained on rounds < k only, so these are
   problems it was not trained on. Every non-terminal step node of those trees is scored by
   value model k (`ValueGuide`: the text the search scores), and its AUC and Brier score
   against the subtree outcome are reported beside the stored self-evaluation's on the same
   nodes (`mcts_po/score_quality.py`; a value v in [-1, 1] counts as p = (v + 1) / 2). Round 0
   has no value model: only the self-evaluation's figures.
2. **The replay buffer**: the trees of rounds max(0, k - R + 1) .. k (`replay_rounds: R`;
   0 = every round so far), read from `RUN/round_j/search/trees.jsonl`.
3. **Value rows** of the `method`'s format (`value` or `ppm`, the loop's `extract:` options) from
   the buffer, written to `RUN/round_k/value_data/` as `mcts-po extract` writes them.
4. **Value model k+1** trained on them (`mcts_po.train.value_model.train_value_model`, as
   `mcts-po train --method value|ppm` does) into `RUN/round_k/value_model/`: a new head on policy
   k+1 (`init: policy`, the default) or value model k trained on (`init: previous`). No rows:
   value model k+1 = value model k (none in round 0).

Round k+1 then searches with policy k+1 and value model k+1 (`SearchJob.value_model`) with the
value weights of the loop's `search:` section; round 0, which has no value model, searches with
`value_model_weight` 0 and the other weights as given.

    from mcts_po.loop_value import LoopValueConfig, replay_buffer_rounds
    LoopValueConfig.from_yaml_dict({"method": "value", "replay_rounds": 2, "learning_rate": 1e-5}, "cfg.yaml")
    replay_buffer_rounds(3, 2)   # [2, 3]

Torch-free at import; the value model is loaded only when scoring or training.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from mcts_po.config_utils import build_dataclass, route_options
from mcts_po.io_utils import UserError
from mcts_po.score_quality import outcome_step_nodes, value_and_self_eval_quality
from mcts_po.seeds import derive_seed
from mcts_po.train.config import DEVICES, TrainConfig, ValueConfig

VALUE_LOOP_METHODS = ("none", "value", "ppm")
VALUE_INITS = ("policy", "previous")
VALUE_PHASE = "value"
VALUE_DATA_DIR = "value_data"
VALUE_MODEL_DIR = "value_model"


@dataclass
class LoopValueConfig:
    """The loop's `value:` section. ValueConfig options (`value_init`, `ppm_use_margin`,
    `count_steps_once`) and the value model's TrainConfig options (`learning_rate`, `max_steps`,
    `batch_size`, `lora`, ...) sit directly in it (or under `options:` / `train:`)."""

    method: str = field(default="none", metadata={"help": f"value model trained each round: {', '.join(VALUE_LOOP_METHODS)} (none = no value model; value = regression to Q, ppm = rStar-Math pairs)"})
    replay_rounds: int = field(default=0, metadata={"help": "replay buffer: the value model of round k trains on the trees of the last R rounds (k-R+1 .. k); 0 = every round so far"})
    init: str = field(default="policy", metadata={"help": f"start of value model k+1: policy (a new head on policy k+1, as `mcts-po train --method value`) or previous (value model k trained on; round 0: the policy)"})
    score_device: str = field(default="auto", metadata={"help": f"device of the value model when it scores (the search's value_model_device and the metrics): {', '.join(DEVICES)}"})
    score_batch_size: int = field(default=16, metadata={"help": "paths per value-model forward pass when scoring (transformers)"})
    score_backend: str = field(default="auto", metadata={"help": "what runs the value model in the search (the search's value_model_backend): auto (vllm for a vllm loop), vllm or transformers; the per-round AUC / Brier metrics score with transformers"})
    train: TrainConfig = field(default_factory=TrainConfig)
    options: ValueConfig = field(default_factory=ValueConfig)

    def __post_init__(self) -> None:
        if self.method not in VALUE_LOOP_METHODS:
            raise ValueError(f"value.method = {self.method!r} is not one of: {', '.join(VALUE_LOOP_METHODS)}")
        if self.init not in VALUE_INITS:
            raise ValueError(f"value.init = {self.init!r} is not one of: {', '.join(VALUE_INITS)}")
        if self.score_device not in DEVICES:
            raise ValueError(f"value.score_device = {self.score_device!r} is not one of: {', '.join(DEVICES)}")
        if int(self.replay_rounds) < 0:
            raise ValueError(f"value.replay_rounds must be >= 0 (0 = every round), got {self.replay_rounds!r}")
        if self.score_backend not in ("auto", "vllm", "transformers"):
            raise ValueError(f"value.score_backend = {self.score_backend!r} is not one of: auto, vllm, transformers")
        if int(self.score_batch_size) < 1:
            raise ValueError(f"value.score_batch_size must be >= 1, got {self.score_batch_size!r}")
        if self.train.seed != 0:
            raise ValueError("value: the value model's training seed is derived from the loop's top-level `seed:`; "
                             "do not set value.seed")
        if self.init == "previous" and self.options.value_init:
            raise ValueError("value.init: previous starts each value model from the last one; value_init (a fixed "
                             "start) contradicts it: set one of them")

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_yaml_dict(cls, values: dict[str, Any] | None, source: str = "config") -> "LoopValueConfig":
        """From a loop config's `value:` mapping (None = the defaults: no value model)."""
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise UserError(f"{source}: `value:` must be a mapping of options")
        where = f"{source}: value"
        top, sections = route_options(values, cls, {"train": TrainConfig, "options": ValueConfig}, where)
        train = build_dataclass(TrainConfig, sections["train"], None, f"{where}.train")
        options = build_dataclass(ValueConfig, sections["options"], None, f"{where}.options")
        return build_dataclass(cls, top, None, where, train=train, options=options)


def replay_buffer_rounds(round_index: int, replay_rounds: int) -> list[int]:
    """The rounds whose trees train value model `round_index` + 1: the last `replay_rounds` up to
    and including `round_index` (0 = all of them), oldest first."""
    first = 0 if replay_rounds <= 0 else max(0, round_index - replay_rounds + 1)
    return list(range(first, round_index + 1))


def default_score(config: LoopValueConfig) -> Callable[[str, Sequence[Any], Sequence[tuple[int, int]]], list[float]]:
    def score(model: str, trees: Sequence[Any], keys: Sequence[tuple[int, int]]) -> list[float]:
        from mcts_po.llm.value_guide import ValueGuide

        return ValueGuide(model, device=config.score_device, batch_size=config.score_batch_size).score(trees, keys)
    return score


def default_train(*args: Any, **kwargs: Any) -> Path:
    from mcts_po.train.value_model import train_value_model

    return train_value_model(*args, **kwargs)


def rows_with_targets(rows: Sequence[dict[str, Any]], config: LoopValueConfig) -> list[dict[str, Any]]:
    """The rows a value model can train on: all of them, except that `value` rows with the
    `outcome` target need a step with a verified terminal below it (an `outcome` that is not None)."""
    if config.method != "value" or config.options.target != "outcome":
        return list(rows)
    return [row for row in rows if any(share is not None for share in row.get("outcome") or [])]


def run_value_phase(config: LoopValueConfig, extract_config: Any, seed: int, round_index: int, policy: str,
                    value_model: str | None, buffer: Sequence[tuple[int, Path]], fresh_dir: Path, out: Path,
                    log: Callable[[str], None], progress: bool = True,
                    score: Callable[..., list[float]] | None = None,
                    train: Callable[..., Path] | None = None) -> dict[str, Any]:
    """The `value` phase of round `round_index` (steps 1-4 of the module doc); returns the marker's result.

    `policy`: policy k+1 (the start of value model k+1 with `init: policy`); `value_model`: value
    model k (None in round 0, or when no earlier round had rows); `buffer`: (round, search
    folder) of the replay buffer's rounds, oldest first; `fresh_dir`: round k's search folder. `score(model,
    trees, keys)` and `train(policy, rows, method, train_config, out, value_config)` default to
    the real value model (tests pass fakes)."""
    from mcts_po.extract import get_format
    from mcts_po.extract.pipeline import extract_to_disk
    from mcts_po.tree_io import read_tree_file

    score = score or default_score(config)
    train = train or default_train
    fresh = read_tree_file(Path(fresh_dir) / "trees.jsonl")
    scores = None
    if value_model:
        keys = outcome_step_nodes(fresh)  # the nodes AUC and Brier are over
        values = score(value_model, fresh, keys) if keys else []
        scores = dict(zip(keys, values))
    quality = value_and_self_eval_quality(fresh, scores)
    quality["value_model_path"] = value_model
    def brief(figures: dict[str, Any] | None) -> str:
        return f"AUC {figures['auc']} Brier {figures['brier']} ({figures['nodes']} nodes)" if figures else "-"

    log(f"round {round_index}: on its {len(fresh)} fresh trees, value model {round_index} "
        f"{brief(quality['value_model']) if value_model else '(none)'}; self-evaluation {brief(quality['self_eval'])}")

    rounds = [int(r) for r, _ in buffer]
    trees = [tree for _, folder in buffer for tree in read_tree_file(Path(folder) / "trees.jsonl")]
    fmt = get_format(config.method)
    counters: dict[str, int] = {}
    rows = fmt.rows(trees, extract_config, counters)
    result: dict[str, Any] = {"method": config.method, "buffer_rounds": rounds, "buffer_trees": len(trees),
                              "rows": len(rows), "quality": quality}
    usable = rows_with_targets(rows, config)
    if not usable:
        what = f"{config.method} rows" if not rows else f"value rows with an {config.options.target} target"
        log(f"round {round_index}: no {what} in the buffer's {len(trees)} trees; value model "
            f"{round_index + 1} = value model {round_index} ({value_model or 'none'})")
        return {**result, "value_model": value_model, "trained": False, "counters": counters}
    extract_to_disk(trees, [config.method], Path(out) / VALUE_DATA_DIR, extract_config,
                    sources=[str(d) for _, d in buffer])
    start = value_model if (config.init == "previous" and value_model) else config.options.value_init
    value_config = dataclasses.replace(config.options, value_init=start or "")
    train_seed = derive_seed(seed, "value", round_index)
    train_config = dataclasses.replace(config.train, seed=train_seed, progress=progress)
    path = train(policy, rows, config.method, train_config, Path(out) / VALUE_MODEL_DIR, value_config)
    record = json.loads((Path(path) / "training_log.json").read_text(encoding="utf-8"))
    last = record["history"][-1] if record.get("history") else {}
    return {**result, "value_model": str(path), "trained": True, "init": value_config.value_init or policy,
            "seed": train_seed, "optimizer_steps": record.get("optimizer_steps"),
            "train_seconds": record.get("seconds"), "final_loss": last.get("loss")}


def quality_by_round(rounds: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per round with a value phase: value model k's and the self-evaluation's AUC / Brier on round
    k's fresh trees (the headline lines of metrics.json)."""
    lines = []
    for entry in rounds:
        quality = (entry.get("value") or {}).get("quality")
        if quality is None:
            continue
        vm, se = quality.get("value_model"), quality.get("self_eval")
        lines.append({"round": entry["round"], "value_model": quality.get("value_model_path"),
                      "nodes": vm["nodes"] if vm else (se["nodes"] if se else 0),
                      "value_model_auc": vm["auc"] if vm else None, "value_model_brier": vm["brier"] if vm else None,
                      "self_eval_nodes": se["nodes"] if se else 0,
                      "self_eval_auc": se["auc"] if se else None, "self_eval_brier": se["brier"] if se else None})
    return lines
