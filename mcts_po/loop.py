"""AlphaZero-style rounds: search with policy k → extract → train policy k+1 [→ value model k+1] → evaluate, resumable per phase.

`run_loop(config, run_dir)` is what `mcts-po loop` calls. One run folder holds everything:

    RUN/loop_config.json           the settings (a rerun with other settings is refused; `rounds` may grow)
    RUN/baseline_eval/             evaluation of the initial policy (policy 0)
    RUN/round_k/search/            trees.jsonl + summary.json of the search with policy k (fresh train slice)
    RUN/round_k/data/              the method's extracted rows (<format>.jsonl, dataset folder, stats.json)
    RUN/round_k/policy/            policy k+1 (a plain HF folder + training_log.json)
    RUN/round_k/value_data/        with a `value:` method: value (or ppm) rows of the replay buffer's trees
    RUN/round_k/value_model/       value model k+1 (guides round k+1's search; mcts_po/loop_value.py)
    RUN/round_k/eval/              evaluation of policy k+1 on the held-out split
    RUN/round_k/<phase>.done.json  done-markers, written atomically after the phase's outputs
    RUN/metrics.json, metrics.png  accuracy by policy, pairs, tokens and time by round

Resuming: a phase whose marker exists is skipped; a phase killed before its marker is run
again (search resumes per tree, evaluation per chunk, training restarts). The inference
engine is built once per policy (evaluation of policy k and the search with policy k share
it) and closed before training, so each round's engine loads the new weights and the
trainer gets the memory back.

On a terminal (and unless `progress` is off) a bar over the phases (`mcts_po.progress.StageBar`,
"loop round k phase") sits above the bar of the phase at work.

Several GPUs for training: the loop itself is one process (search and evaluation use the inference
engine, which spreads over GPUs its own way); set `train_launcher: "accelerate launch --config_file
configs/accelerate/ddp_one_node.yaml"` and each round's training phase runs as
`<launcher> -m mcts_po.cli train ...` in a subprocess, after the engine is closed. Running the whole
loop under `accelerate launch` / `torchrun` is refused (docs/scale_out_training.md).

Round k searches train problems `train_offset + k * problems_per_round ...` (a fresh slice each
round).

Flat baselines (`method: rft` or `outcome-dpo`, mcts_po/flat_baselines.py): round k's search phase
samples whole solutions of the same slice instead, until the generated tokens reach round k's
budget: the search tokens of round k of a tree method's run folder (`flat_budget_run`, equal
compute) or `flat_tokens_per_round`; RUN/round_k/search/samples.jsonl holds the samples and the
marker both counts. The extract phase keeps the verified-correct samples (rft: SFT rows, trained
with `sft`) or pairs correct with wrong solutions (outcome-dpo: DPO rows, trained with `dpo`). The reference of round k's training is the initial policy (`reference: initial`) or
policy k, the one being trained (`reference: previous`).

Equal rows (`rows_budget_run`: another loop's run folder): round k trains on a random subset,
drawn with the round's training seed, of as many rows as that run's round k extracted, so that a
method with more rows per tree (step-apo) can be compared with another (step-dpo) at the same
amount of data; the train result records `rows` (trained) and `rows_extracted`.

    from mcts_po.loop import LoopConfig, run_loop
    metrics = run_loop(LoopConfig.from_yaml_dict(yaml.safe_load(open("configs/loop_arithmetic_cpu.yaml"))), "runs/loop")
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from mcts_po.config_utils import build_dataclass, route_options
from mcts_po.extract.config import ExtractConfig
from mcts_po.flat_baselines import FLAT_METHODS, SAMPLES_FILE
from mcts_po.seeds import loop_round_seeds, loop_seeds
from mcts_po.io_utils import UserError, atomic_write_json, read_jsonl
from mcts_po.llm.config import SamplingConfig
from mcts_po.loop_value import VALUE_PHASE, LoopValueConfig, quality_by_round, replay_buffer_rounds
from mcts_po.progress import StageBar, write_line
from mcts_po.search.config import SearchConfig
from mcts_po.train.config import TrainConfig

LOOP_METHODS = ("step-dpo", "step-apo", "tpo", "dpo", *FLAT_METHODS)  # the flat ones: rft, outcome-dpo
REFERENCES = ("initial", "previous")
PHASES = ("search", "extract", "train", VALUE_PHASE, "eval")  # value: only with a `value:` method (loop_value.py)
CONFIG_FILE = "loop_config.json"
METRICS_FILE = "metrics.json"
PLOT_FILE = "metrics.png"
BASELINE_DIR = "baseline_eval"
# Options that may differ between a run and its resumption ("reuse_engine": removed, but older
# loop_config.json files record it).
RESUMABLE_CHANGES = ("rounds", "progress", "reuse_engine", "train_launcher")
# The launchers `train_launcher` may name, and how this interpreter runs them (no PATH lookup).
LAUNCHERS = {"accelerate": ["-m", "accelerate.commands.launch"], "torchrun": ["-m", "torch.distributed.run"]}
SECTIONS = {"search": SearchConfig, "sampling": SamplingConfig, "extract": ExtractConfig, "train": TrainConfig}
# Loop options removed after being measured, and why (a config that still sets one is told so).
REMOVED_OPTIONS = {
    "reuse_engine": "loading a policy's weights into a running vllm engine in place did not reproduce a fresh "
                    "engine's greedy outputs (docs/loop.md, 'Engines between rounds'); each policy gets its own engine",
}


@dataclass
class LoopConfig:
    rounds: int = field(default=2, metadata={"help": "rounds of search -> extract -> train -> evaluate"})
    method: str = field(default="step-dpo", metadata={"help": f"training method (and extraction format): {', '.join(LOOP_METHODS)}"})
    model: str = field(default="smollm2-135m", metadata={"help": "initial policy: alias, HF hub id or local folder"})
    reference: str = field(default="initial", metadata={"help": f"reference policy of each round's training: {', '.join(REFERENCES)}"})
    task: str = field(default="arithmetic", metadata={"help": "task name"})
    task_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "task options: a JSON object on the command line, a mapping in YAML"})
    data: str = field(default="", metadata={"help": "problems file/folder or hub id (task default when empty)"})
    train_split: str = field(default="train", metadata={"help": "split searched each round"})
    problems_per_round: int = field(default=32, metadata={"help": "fresh train problems searched per round"})
    train_offset: int = field(default=0, metadata={"help": "first train problem of round 0"})
    eval_split: str = field(default="test", metadata={"help": "held-out split evaluated after each round"})
    eval_limit: int = field(default=300, metadata={"help": "held-out problems evaluated (0 = all)"})
    eval_offset: int = field(default=0, metadata={"help": "first held-out problem"})
    eval_k: int = field(default=1, metadata={"help": "maj@k samples in the evaluation (1 = greedy only)"})
    eval_temperature: float = field(default=0.0, metadata={"help": "sampling temperature of the maj@k samples in evaluation; 0 = the search's sampling temperature (a greedy search with eval_k > 1 must set it)"})
    eval_max_tokens: int = field(default=256, metadata={"help": "generated tokens per evaluated solution"})
    eval_initial: bool = field(default=True, metadata={"help": "also evaluate the initial policy (the round-0 baseline)"})
    backend: str = field(default="vllm", metadata={"help": "inference backend for search and evaluation: vllm (the default of every command), transformers, http"})
    backend_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "backend options: a JSON object on the command line, a mapping in YAML, e.g. base_url"})
    problems_in_flight: int = field(default=32, metadata={"help": "problems searched together"})
    seed: int = field(default=0, metadata={"help": "the loop's one seed: round k's search and training seeds and the engine and evaluation seeds are derived from it (mcts_po/seeds.py) and recorded in each round's phase results; search.seed and train.seed are not set in a loop config"})
    progress: bool = field(default=True, metadata={"help": "progress bars (off when not a terminal): the loop's over rounds x phases, each phase's below it"})
    flat_budget_run: str = field(default="", metadata={"help": "rft / outcome-dpo: a tree method's loop run folder; round k samples until as many tokens were generated as that run's round-k search generated (equal compute)"})
    flat_tokens_per_round: int = field(default=0, metadata={"help": "rft / outcome-dpo without flat_budget_run: generated tokens sampled per round"})
    flat_max_tokens: int = field(default=256, metadata={"help": "rft / outcome-dpo: generated tokens per sampled solution (a sample cut there is not trained on)"})
    rows_budget_run: str = field(default="", metadata={"help": "tree methods: another loop run folder; round k trains on a seeded random subset of this run's rows, as many as that run's round k extracted (equal rows: e.g. step-apo at step-dpo's row count); empty = all rows"})
    train_launcher: str = field(default="", metadata={"help": "empty: train in the loop's process; else run each round's training as `<this> -m mcts_po.cli train ...` in a subprocess, e.g. 'accelerate launch --config_file configs/accelerate/ddp_one_node.yaml' or 'torchrun --nproc_per_node 8' (docs/scale_out_training.md)"})
    search: SearchConfig = field(default_factory=SearchConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    value: LoopValueConfig = field(default_factory=LoopValueConfig)

    def __post_init__(self) -> None:
        if self.method not in LOOP_METHODS:
            raise ValueError(f"LoopConfig.method = {self.method!r} is not one of: {', '.join(LOOP_METHODS)}")
        if self.reference not in REFERENCES:
            raise ValueError(f"LoopConfig.reference = {self.reference!r} is not one of: {', '.join(REFERENCES)}")
        for name in ("rounds", "problems_per_round", "eval_k", "eval_max_tokens", "problems_in_flight"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"LoopConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("train_offset", "eval_limit", "eval_offset"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"LoopConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.eval_temperature < 0:
            raise ValueError(f"LoopConfig.eval_temperature must be >= 0, got {self.eval_temperature!r}")
        if self.eval_k > 1 and not (self.eval_temperature or self.sampling.temperature):
            raise ValueError(f"eval_k = {self.eval_k} samples greedily with sampling.temperature 0: set eval_temperature "
                             "(e.g. 0.7) for maj@k, or eval_k: 1")
        if self.train_launcher and shlex.split(self.train_launcher)[0] not in LAUNCHERS:
            raise ValueError(f"LoopConfig.train_launcher = {self.train_launcher!r} must start with one of: "
                             f"{', '.join(f'{name} ' for name in LAUNCHERS)}(e.g. 'accelerate launch --config_file ...')")
        if self.search.seed != 0 or self.train.seed != 0:
            raise ValueError("a loop derives its search and training seeds from its top-level seed: set `seed:` at "
                             "the top of the loop config, not search.seed or train.seed")
        if self.value.enabled and self.search.value_model_weight <= 0:
            raise ValueError(f"value.method = {self.value.method!r} trains a value model each round for the next "
                             "round's search, but search.value_model_weight is 0: give it a weight > 0")
        if not self.value.enabled and self.search.value_model_weight > 0:
            raise ValueError("search.value_model_weight > 0 needs a value model: set value.method (value or ppm) "
                             "so that each round trains one")
        if self.method in FLAT_METHODS:
            if bool(self.flat_budget_run) == bool(self.flat_tokens_per_round):
                raise ValueError(f"method {self.method} samples flat to a token budget per round: set exactly one of "
                                 "flat_budget_run (a tree method's loop run folder: equal compute) and "
                                 f"flat_tokens_per_round (got {self.flat_budget_run!r} and {self.flat_tokens_per_round})")
            if self.value.enabled:
                raise ValueError(f"method {self.method} builds no trees, so no value model: set value.method: none")
            if self.sampling.temperature <= 0:
                raise ValueError(f"method {self.method}: flat sampling at sampling.temperature 0 repeats one greedy "
                                 "solution per problem; set sampling.temperature > 0")
        elif self.flat_budget_run or self.flat_tokens_per_round:
            raise ValueError(f"flat_budget_run / flat_tokens_per_round apply to the flat methods "
                             f"({', '.join(FLAT_METHODS)}), not to {self.method}")
        if self.rows_budget_run and self.method in FLAT_METHODS:
            raise ValueError(f"rows_budget_run caps a tree method's rows; {self.method} has its own budget "
                             "(flat_budget_run)")
        if self.rows_budget_run and self.train_launcher:
            raise ValueError("rows_budget_run subsets the rows in the loop's process; it does not work with "
                             "train_launcher (the launched training reads the whole extracted folder)")
        if self.flat_tokens_per_round < 0 or self.flat_max_tokens < 1:
            raise ValueError("LoopConfig.flat_tokens_per_round must be >= 0 and flat_max_tokens >= 1")
        if self.value.enabled and self.search.tree == "plan":
            raise ValueError("value.method: value rows are not extracted from plan trees (search.tree: plan); "
                             "use step trees or value.method: none")

    @property
    def flat(self) -> bool:
        return self.method in FLAT_METHODS

    @property
    def extract_format(self) -> str:
        """The rows' format, file name and training method: the method's own, or for a flat
        baseline the format it trains with (rft: sft, outcome-dpo: dpo)."""
        return FLAT_METHODS.get(self.method, self.method)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_yaml_dict(cls, values: dict[str, Any], source: str = "config") -> "LoopConfig":
        """A LoopConfig from a YAML mapping: top-level loop options plus `search:`, `sampling:`,
        `extract:` and `train:` sections (the same path as every command: `mcts_po.config_utils`)."""
        removed = sorted(set(k.replace("-", "_") for k in (values or {})) & set(REMOVED_OPTIONS))
        if removed:
            raise UserError(f"{source}: loop option {removed[0]} was removed: {REMOVED_OPTIONS[removed[0]]}; "
                            "delete it from the config")
        values = {k.replace("-", "_"): v for k, v in (values or {}).items()}
        value_section = values.pop("value", None)  # its own routing (ValueConfig + the value model's TrainConfig)
        top, sections = route_options(values, cls, SECTIONS, source)
        built = {name: build_dataclass(section_cls, sections[name], None, f"{source}: {name}")
                 for name, section_cls in SECTIONS.items()}
        built["value"] = LoopValueConfig.from_yaml_dict(value_section, source)
        return build_dataclass(cls, top, None, source, **built)


# ---------------------------------------------------------------- phases and markers


def marker_path(phase_dir: Path, phase: str) -> Path:
    return phase_dir / f"{phase}.done.json"


def read_marker(phase_dir: Path, phase: str) -> dict[str, Any] | None:
    path = marker_path(phase_dir, phase)
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def run_phase(phase_dir: Path, phase: str, label: str, work: Callable[[], dict[str, Any]],
              log: Callable[[str], None]) -> dict[str, Any]:
    """Run `work` unless its done-marker exists; write the marker (result + seconds) after it returns."""
    done = read_marker(phase_dir, phase)
    if done is not None:
        log(f"{label}: done before, skipped ({done['seconds']:.1f} s then)")
        return done
    log(f"{label}: started")
    started = time.monotonic()
    result = work()
    record = {"phase": phase, "seconds": round(time.monotonic() - started, 2), "finished_at": time.time(), "result": result}
    phase_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker_path(phase_dir, phase), record)
    log(f"{label}: finished in {record['seconds']:.1f} s  {_brief(result)}")
    return record


def _brief(result: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v}" for k, v in result.items() if isinstance(v, (int, float, str)) and k != "path")


class BackendCache:
    """At most one live engine, for one policy. Asking for another policy closes the engine and
    starts a new one."""

    def __init__(self, make: Callable[[str], Any]):
        self.make = make
        self.model: str | None = None
        self.backend: Any = None
        self.engines_started = 0

    def get(self, model: str) -> Any:
        if self.backend is not None and self.model == model:
            return self.backend
        self.close()
        self.backend = self.make(model)
        self.model = model
        self.engines_started += 1
        return self.backend

    def release(self) -> None:
        """Before training: close the engine to free its memory."""
        self.close()

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
        self.backend, self.model = None, None


class LoopPhases:
    """The real work of each phase. Tests substitute a fake with the same four methods."""

    def __init__(self, config: LoopConfig, log: Callable[[str], None], engines: BackendCache | None = None):
        self.config = config
        self.log = log
        self.owns_engines = engines is None
        self.engines = engines if engines is not None else BackendCache(self._make_backend)

    def _make_backend(self, model: str) -> Any:
        from mcts_po.backends import make_backend

        if self.config.backend == "http" and model != self.config.model:
            raise UserError(f"backend http: the servers hold a fixed model and cannot follow the loop to the trained "
                            f"policy {model}; use backend vllm or transformers for the loop, or run the round by hand "
                            "against servers restarted on that folder (docs/loop.md, scale-out)")
        self.log(f"starting {self.config.backend} engine for {model}")
        return make_backend(self.config.backend, model=model, seed=loop_seeds(self.config.seed)["engine"],
                            **self.config.backend_options)

    def search(self, round_index: int, policy: str, out: Path, value_model: str | None = None) -> dict[str, Any]:
        if self.config.flat:
            return self.sample_flat(round_index, policy, out)
        from mcts_po.search_runner import SearchJob, run_search_job

        c = self.config
        seeds = loop_round_seeds(c.seed, round_index)
        search = dataclasses.replace(c.search, seed=seeds["search"])
        if value_model is None:  # round 0 (or no value rows yet): the other value sources only
            search = dataclasses.replace(search, value_model_weight=0.0)
        job = SearchJob(out=str(out), task=c.task, task_options=dict(c.task_options), split=c.train_split,
                        limit=c.problems_per_round, offset=c.train_offset + round_index * c.problems_per_round,
                        data=c.data or None, model=policy, backend=c.backend, backend_options=dict(c.backend_options),
                        search=search, sampling=c.sampling, problems_in_flight=c.problems_in_flight,
                        greedy_baseline=False, progress=c.progress, value_model=value_model,
                        value_model_backend=c.value.score_backend, value_model_device=c.value.score_device,
                        value_model_batch_size=c.value.score_batch_size)
        summary = run_search_job(job, backend=self.engines.get(policy))
        result = {key: summary[key] for key in ("problems", "problems_with_correct_terminal", "solved_share", "nodes",
                                                "generated_tokens", "prompt_tokens")}
        if c.value.enabled:
            result["value_model"] = value_model
        return {**result, "seed": seeds["search"], "engine_seed": loop_seeds(c.seed)["engine"]}

    def flat_budget(self, round_index: int) -> tuple[int, str]:
        """Round k's generated-token budget for flat sampling and where it comes from."""
        c = self.config
        if c.flat_tokens_per_round:
            return c.flat_tokens_per_round, "flat_tokens_per_round"
        result, marker_file = other_run_result("flat_budget_run", c.flat_budget_run, round_index, "search",
                                               "its generated tokens are this round's budget")
        if not result.get("generated_tokens"):
            raise UserError(f"{marker_file} records no generated_tokens")
        return int(result["generated_tokens"]), str(marker_file)

    def sample_flat(self, round_index: int, policy: str, out: Path) -> dict[str, Any]:
        """rft / outcome-dpo: whole solutions of round k's slice until the round's token budget."""
        from mcts_po.flat_baselines import sample_to_budget
        from mcts_po.progress import progress_bar
        from mcts_po.tasks import get_task

        c = self.config
        budget, source = self.flat_budget(round_index)
        task = get_task(c.task, **c.task_options)
        problems = task.load(split=c.train_split, limit=c.problems_per_round,
                             path=c.data or None, offset=c.train_offset + round_index * c.problems_per_round)
        if not problems:
            raise UserError(f"task {c.task!r} gave no {c.train_split!r} problems for round {round_index}")
        backend = self.engines.get(policy)
        out.mkdir(parents=True, exist_ok=True)
        bar = progress_bar(c.progress, total=budget, desc=f"round {round_index} flat samples", unit="tok")
        try:
            summary = sample_to_budget(backend, task, problems, budget, out_file=out / SAMPLES_FILE,
                                       temperature=c.sampling.temperature, top_p=c.sampling.top_p,
                                       max_tokens=c.flat_max_tokens,
                                       on_wave=lambda wave_tokens, used: bar.update(min(wave_tokens, max(0, budget - bar.n))))
        finally:
            bar.close()
        engine_seed = loop_seeds(c.seed)["engine"]
        return {**summary, "budget_source": source, "engine_seed": engine_seed}

    def extract(self, round_index: int, trees_dir: Path, out: Path) -> dict[str, Any]:
        if self.config.flat:
            return self.extract_flat(trees_dir, out)
        from mcts_po.extract.pipeline import extract_to_disk
        from mcts_po.tree_io import read_tree_file

        self.engines.release()  # the engine is not needed again for this policy; free memory for training
        trees = read_tree_file(trees_dir / "trees.jsonl")
        stats = extract_to_disk(trees, [self.config.extract_format], out, self.config.extract, sources=[str(trees_dir)])
        rows = sum(1 for _ in read_jsonl(out / f"{self.config.extract_format}.jsonl"))
        return {"rows": rows, "trees": len(trees), "format": self.config.extract_format,
                "stats": stats.get(self.config.extract_format, {})}

    def extract_flat(self, samples_dir: Path, out: Path) -> dict[str, Any]:
        from mcts_po.extract.saving import save_dataset
        from mcts_po.flat_baselines import flat_rows, read_samples

        self.engines.release()
        records = read_samples(samples_dir / SAMPLES_FILE)
        counters: dict[str, int] = {}
        rows, columns = flat_rows(self.config.method, records, self.config.extract, counters)
        save_dataset(rows, out, self.config.extract_format, columns)
        stats = {"method": self.config.method, "samples": len(records), "rows": len(rows),
                 "problems_with_rows": len({r["problem_id"] for r in rows}), "dropped": counters,
                 "extract": self.config.extract.to_dict(), "sources": [str(samples_dir)]}
        atomic_write_json(out / "stats.json", stats)
        return {"rows": len(rows), "samples": len(records), "format": self.config.extract_format, "stats": stats}

    def train(self, round_index: int, policy: str, reference: str, data_dir: Path, out: Path) -> dict[str, Any]:
        from mcts_po.train.trainer import train_preferences

        self.engines.release()
        rows = [row for _, row in read_jsonl(data_dir / f"{self.config.extract_format}.jsonl")]
        if not rows:
            self.log(f"round {round_index}: no training rows; policy {round_index + 1} = policy {round_index}")
            return {"policy": policy, "trained": False, "rows": 0}
        train_seed = loop_round_seeds(self.config.seed, round_index)["train"]
        extracted = len(rows)
        if self.config.rows_budget_run:
            rows = rows_within_budget(rows, self.rows_budget(round_index), train_seed)
            self.log(f"round {round_index}: training on {len(rows)} of {extracted} rows (rows_budget_run)")
        train_config = dataclasses.replace(self.config.train, ref_model=reference,
                                           progress=self.config.progress, seed=train_seed)
        if self.config.train_launcher:
            path = self._launch_training(policy, data_dir, train_config, out)
        else:
            path = train_preferences(policy, rows, self.config.extract_format, train_config, out)
        log = json.loads((Path(path) / "training_log.json").read_text(encoding="utf-8"))
        last = log["history"][-1] if log["history"] else {}
        return {"policy": str(path), "trained": True, "rows": len(rows), "optimizer_steps": log["optimizer_steps"],
                "train_seconds": log["seconds"], "final_loss": last.get("loss"),
                "final_reward_margin": last.get("reward_margin"), "final_ordered_pair_fraction": last.get("ordered_pair_fraction"),
                "seed": train_seed, **({"rows_extracted": extracted} if self.config.rows_budget_run else {})}

    def rows_budget(self, round_index: int) -> int:
        """Round k's row budget: the rows that `rows_budget_run`'s round k extracted."""
        result, _ = other_run_result("rows_budget_run", self.config.rows_budget_run, round_index, "extract",
                                     "its row count is this round's budget")
        return int(result["rows"])

    def value(self, round_index: int, policy: str, value_model: str | None, buffer: list[tuple[int, Path]],
              fresh_dir: Path, out: Path) -> dict[str, Any]:
        """Metrics of value model k on round k's trees, then value model k+1 from the replay buffer
        (mcts_po/loop_value.py)."""
        from mcts_po.loop_value import run_value_phase

        self.engines.release()
        c = self.config
        return run_value_phase(c.value, c.extract, c.seed, round_index, policy, value_model, buffer, fresh_dir, out,
                               self.log, progress=c.progress)

    def _launch_training(self, policy: str, data_dir: Path, train_config: TrainConfig, out: Path) -> Path:
        """Run `mcts-po train` under the configured launcher (several processes) and wait for it."""
        settings = data_dir.parent / "train_launch.json"  # JSON is YAML: `mcts-po train --config` reads it
        atomic_write_json(settings, {"train": train_config.to_dict()})
        launcher = shlex.split(self.config.train_launcher)
        runner = LAUNCHERS[launcher[0]]
        rest = launcher[2:] if launcher[0] == "accelerate" and launcher[1:2] == ["launch"] else launcher[1:]
        command = [sys.executable, *runner, *rest, "-m", "mcts_po.cli", "train", "--data", str(data_dir),
                   "--method", self.config.extract_format, "--model", policy, "--out", str(out), "--config", str(settings)]
        package_root = str(Path(__file__).resolve().parent.parent)  # the launched processes import this mcts_po
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        self.log(f"training under {self.config.train_launcher}: {shlex.join(command)}")
        done = subprocess.run(command, env=env)
        if done.returncode != 0:
            raise UserError(f"training under `{self.config.train_launcher}` exited with status {done.returncode} "
                            f"(command: {shlex.join(command)}); its output is above")
        return out

    def evaluate(self, policy: str, out: Path) -> dict[str, Any]:
        from mcts_po.evaluation import EvalConfig, evaluate_model

        c = self.config
        eval_config = EvalConfig(model=policy, task=c.task, task_options=dict(c.task_options), split=c.eval_split,
                                 limit=c.eval_limit, offset=c.eval_offset, data=c.data, backend=c.backend, k=c.eval_k,
                                 temperature=c.eval_temperature or c.sampling.temperature, top_p=c.sampling.top_p,
                                 max_tokens=c.eval_max_tokens, seed=loop_seeds(c.seed)["eval"])
        summary = evaluate_model(eval_config, out, backend=self.engines.get(policy), progress=c.progress)
        result = {"accuracy": summary["greedy"]["accuracy"], "correct": summary["greedy"]["correct"],
                  "problems": summary["problems"], "ci95": summary["greedy"]["ci95"],
                  "generated_tokens": summary["generated_tokens"]}
        result["seed"] = eval_config.seed
        if c.eval_k > 1:
            result[f"maj@{c.eval_k}"] = summary[f"maj@{c.eval_k}"]["accuracy"]
        return result

    def close(self) -> None:
        if self.owns_engines:
            self.engines.close()


def other_run_result(option: str, run: str, round_index: int, phase: str, why: str) -> tuple[dict[str, Any], Path]:
    """(result, marker file) of the `phase` done-marker of round `round_index` in another loop's run
    folder, which an equal-budget option (`option`) reads; a UserError naming the missing file else."""
    marker_dir = Path(run) / f"round_{round_index}"
    marker = read_marker(marker_dir, phase)
    if marker is None:
        raise UserError(f"{option}: {marker_path(marker_dir, phase)} is missing: run round {round_index}'s "
                        f"{phase} of that loop first ({why})")
    return marker["result"], marker_path(marker_dir, phase)


# ---------------------------------------------------------------- the loop


def rows_within_budget(rows: list[Any], budget: int, seed: int) -> list[Any]:
    """At most `budget` of `rows`: a random subset drawn with `seed`, in the rows' order (all when they fit)."""
    import random

    if len(rows) <= budget:
        return list(rows)
    keep = sorted(random.Random(seed).sample(range(len(rows)), budget))
    return [rows[i] for i in keep]


# ValueConfig options added after loop runs were recorded, with the behaviour those runs had
RECORDED_VALUE_OPTIONS = {"target": "q", "backbone": "train", "head_l2": 0.1}


def check_run_config(run_dir: Path, config: LoopConfig) -> None:
    """Write RUN/loop_config.json, or refuse a rerun whose settings differ (other than `rounds`)."""
    path = run_dir / CONFIG_FILE
    current = config.to_dict()
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        previous.setdefault("eval_temperature", 0.0)  # added later; 0 = the search's temperature, as before
        previous.setdefault("value", LoopValueConfig().to_dict())  # added later; runs before it had no value model
        if isinstance(previous["value"], dict) and isinstance(previous["value"].get("options"), dict):
            # added later: a run recorded before them trained its value models as these say
            for name, before in RECORDED_VALUE_OPTIONS.items():
                previous["value"]["options"].setdefault(name, before)
        if isinstance(previous["value"], dict) and isinstance(current.get("value"), dict):
            # what runs the value model may change: vLLM's pooling runner and transformers give the same
            # float32 scores (tests/test_value_search_job.py), so a run resumes on either
            previous["value"]["score_backend"] = current["value"].get("score_backend")
        for name in ("flat_budget_run", "flat_tokens_per_round", "flat_max_tokens",  # added with the flat baselines
                     "rows_budget_run"):  # added with the equal-rows ablation
            previous.setdefault(name, LoopConfig.__dataclass_fields__[name].default)
        if isinstance(previous.get("sampling"), dict):
            use_self_eval = (previous.get("search") or {}).get("use_self_eval", True)
            previous["sampling"] = SamplingConfig.check_recorded(previous["sampling"], path, use_self_eval)
        differing = sorted(k for k in set(previous) | set(current)
                           if k not in RESUMABLE_CHANGES and previous.get(k) != current.get(k))
        if differing:
            raise UserError(f"{run_dir} holds a loop run made with other settings ({', '.join(differing)} differ; "
                            f"see {path}); use a new --out to start afresh")
    atomic_write_json(path, current)


def stderr_log(message: str) -> None:
    write_line(f"[loop {time.strftime('%H:%M:%S')}] {message}", sys.stderr)  # above the progress bars


def run_loop(config: LoopConfig, run_dir: str | Path, phases: Any | None = None,
             log: Callable[[str], None] = stderr_log, plot: bool = True) -> dict[str, Any]:
    """Run (or resume) all rounds; write and return RUN/metrics.json (and metrics.png when `plot`)."""
    run_dir = Path(run_dir)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("the loop runs as one process (search and evaluation are not split over ranks): run "
                        "`mcts-po loop` without accelerate launch / torchrun and set train_launcher: 'accelerate "
                        "launch --config_file configs/accelerate/ddp_one_node.yaml' to train on several GPUs")
    run_dir.mkdir(parents=True, exist_ok=True)
    check_run_config(run_dir, config)
    phases = phases if phases is not None else LoopPhases(config, log)
    initial = config.model
    policy = initial
    value_model: str | None = None  # value model k (mcts_po/loop_value.py); none in round 0
    # the loop's own bar, one step per phase (run or skipped), above the phase's own bars
    phases_per_round = len(PHASES) - (0 if config.value.enabled else 1)  # the value phase runs only with a value method
    stages = StageBar(config.progress, total=int(config.eval_initial) + config.rounds * phases_per_round, desc="loop")
    try:
        if config.eval_initial:
            stages.begin("policy 0 eval")
            run_phase(run_dir / BASELINE_DIR, "eval", "policy 0 (initial) eval",
                      lambda: phases.evaluate(initial, run_dir / BASELINE_DIR), log)
        for k in range(config.rounds):
            round_dir = run_dir / f"round_{k}"
            current, guide = policy, value_model
            guided = {"value_model": guide} if guide else {}  # phases without a value model need not take it
            stages.begin(f"round {k} search")
            run_phase(round_dir, "search", f"round {k} search (policy {k}{', value model ' + str(k) if guide else ''})",
                      lambda: phases.search(k, current, round_dir / "search", **guided), log)
            stages.begin(f"round {k} extract")
            run_phase(round_dir, "extract", f"round {k} extract ({config.extract_format})",
                      lambda: phases.extract(k, round_dir / "search", round_dir / "data"), log)
            reference = initial if config.reference == "initial" else current
            stages.begin(f"round {k} train")
            trained = run_phase(round_dir, "train", f"round {k} train {config.method} (policy {k + 1})",
                                lambda: phases.train(k, current, reference, round_dir / "data", round_dir / "policy"), log)
            policy = trained["result"]["policy"]
            if config.value.enabled:
                stages.begin(f"round {k} value")
                buffer = [(j, run_dir / f"round_{j}" / "search") for j in replay_buffer_rounds(k, config.value.replay_rounds)]
                valued = run_phase(round_dir, VALUE_PHASE, f"round {k} value {config.value.method} (value model {k + 1})",
                                   lambda: phases.value(k, policy, guide, buffer, round_dir / "search", round_dir), log)
                value_model = valued["result"]["value_model"]
            stages.begin(f"round {k} eval")
            run_phase(round_dir, "eval", f"round {k} eval (policy {k + 1})",
                      lambda: phases.evaluate(policy, round_dir / "eval"), log)
        stages.finish()
    finally:
        stages.close()
        phases.close()
    metrics = collect_metrics(run_dir, config)
    atomic_write_json(run_dir / METRICS_FILE, metrics)
    if plot:
        plot_metrics(metrics, run_dir / PLOT_FILE)
    log(f"metrics: {run_dir / METRICS_FILE}" + (f", plot: {run_dir / PLOT_FILE}" if plot else ""))
    return metrics


def collect_metrics(run_dir: Path, config: LoopConfig) -> dict[str, Any]:
    """Accuracy by policy and per-round pairs, tokens and phase times, from the done-markers."""
    policies = []
    baseline = read_marker(run_dir / BASELINE_DIR, "eval")
    if baseline is not None:
        policies.append({"policy": 0, "model": config.model, **baseline["result"], "eval_seconds": baseline["seconds"]})
    rounds = []
    for k in range(config.rounds):
        round_dir = run_dir / f"round_{k}"
        markers = {phase: read_marker(round_dir, phase) for phase in PHASES}
        if all(m is None for m in markers.values()):
            continue
        entry: dict[str, Any] = {"round": k, "seconds": {p: (m["seconds"] if m else None) for p, m in markers.items()}}
        if markers["search"]:
            entry["search"] = markers["search"]["result"]
            entry["search_generated_tokens"] = markers["search"]["result"].get("generated_tokens")
        if markers["extract"]:
            entry["rows"] = markers["extract"]["result"]["rows"]
        if markers["train"]:
            entry["train"] = markers["train"]["result"]
        if markers[VALUE_PHASE]:
            entry["value"] = markers[VALUE_PHASE]["result"]
        if markers["eval"]:
            policies.append({"policy": k + 1, "model": markers["train"]["result"]["policy"] if markers["train"] else None,
                             **markers["eval"]["result"], "eval_seconds": markers["eval"]["seconds"]})
        entry["total_seconds"] = round(sum(m["seconds"] for m in markers.values() if m), 2)
        rounds.append(entry)
    accuracies = [p["accuracy"] for p in policies]
    return {
        "method": config.method, "task": config.task, "task_options": config.task_options, "model": config.model,
        "reference": config.reference, "backend": config.backend,
        "accuracy_by_policy": accuracies,
        "accuracy_gain": round(accuracies[-1] - accuracies[0], 4) if len(accuracies) > 1 else None,
        "policies": policies, "rounds": rounds,
        **({"value_method": config.value.method, "value_quality_by_round": quality_by_round(rounds)}
           if config.value.enabled else {}),
        "total_seconds": round(sum(r["total_seconds"] for r in rounds) + sum(
            p["eval_seconds"] for p in policies if p["policy"] == 0), 2),
    }


def plot_metrics(metrics: dict[str, Any], path: Path) -> None:
    """Four panels: held-out accuracy (95 % CI) by policy, rows per round, search tokens, phase times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    policies = metrics["policies"]
    xs = [p["policy"] for p in policies]
    ys = [p["accuracy"] for p in policies]
    low = [p["accuracy"] - p["ci95"][0] for p in policies]
    high = [p["ci95"][1] - p["accuracy"] for p in policies]
    axes[0].errorbar(xs, ys, yerr=[low, high], marker="o", capsize=4)
    axes[0].set(title=f"held-out greedy accuracy ({metrics['method']})", xlabel="policy (after round k-1)", ylabel="accuracy")
    rounds = metrics["rounds"]
    rx = [r["round"] for r in rounds]
    axes[1].bar(rx, [r.get("rows", 0) for r in rounds])
    axes[1].set(title="training rows extracted", xlabel="round")
    axes[2].bar(rx, [r.get("search_generated_tokens") or 0 for r in rounds])
    axes[2].set(title="search generated tokens", xlabel="round")
    bottom = [0.0] * len(rounds)
    for phase in PHASES:
        values = [(r["seconds"].get(phase) or 0.0) / 60 for r in rounds]
        axes[3].bar(rx, values, bottom=bottom, label=phase)
        bottom = [b + v for b, v in zip(bottom, values)]
    axes[3].set(title="time per phase", xlabel="round", ylabel="minutes")
    axes[3].legend(fontsize=8)
    for ax in axes:
        if ax is not axes[0]:
            ax.set_xticks(rx)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def share_round0(source_run: str | Path, target_run: str | Path, search: bool = True) -> list[str]:
    """Copy a run's baseline evaluation and round-0 search (outputs + markers) into another run, so
    that several methods train from the SAME round-0 trees (`search` False: the baseline only, for
    a flat baseline, which samples instead of searching). Copies only what is finished and
    absent in the target; returns the phases copied."""
    source, target = Path(source_run), Path(target_run)
    copied = []
    shared = ((BASELINE_DIR, "eval", BASELINE_DIR), ("round_0", "search", "round_0/search"))
    for sub, phase, folder in shared[:2 if search else 1]:
        marker = marker_path(source / sub, phase)
        if not marker.exists() or marker_path(target / sub, phase).exists():
            continue
        if (target / folder).exists():
            shutil.rmtree(target / folder)
        shutil.copytree(source / folder, target / folder)
        (target / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy2(marker, marker_path(target / sub, phase))
        copied.append(f"{sub}/{phase}")
    return copied
