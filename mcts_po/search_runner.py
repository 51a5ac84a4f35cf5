"""A resumable search job: problems in, `trees.jsonl` + `summary.json` out, in one run folder.

Used by `mcts-po search` and by the loop. The run folder holds:
- `run_config.json`: what the run was started with (a rerun with other settings is refused);
- `trees.jsonl`: one finished tree per line, appended and fsynced as chunks finish;
- `greedy.jsonl`: the greedy-decoding baseline per problem (when enabled);
- `summary.json`: run statistics, rewritten atomically after every chunk.

Rerunning the same command resumes: problems whose tree is already in `trees.jsonl` are
skipped; a torn last line left by a kill is dropped (the file is rewritten atomically
without it) and that problem is searched again. Problems are searched in chunks of
`problems_in_flight`; within a chunk all trees grow together, one engine call per wave.

Reproducible resume: chunk boundaries are cut from the full problem list (never from the
problems still pending), a chunk's trees are appended in one write, and before each chunk's
search a backend that can be reseeded (`backend.reseed(seed)`, e.g. the transformers
backend) is reseeded from (search seed, the chunk's problem ids). A chunk therefore gives
the same trees whatever ran before it, and a rerun after a kill ends with exactly the
trees of an uninterrupted run. A chunk that was only partly written is searched again
whole and only its missing trees are appended. (The vLLM engine is seeded once at start
and cannot be reseeded per chunk: its runs are not bit-reproducible across a resume.)

The bar (on a terminal, unless `progress` is off; `mcts_po.progress`) counts the simulations
still to run in this invocation (so tqdm's ETA holds on a resumed run) and shows generated
tokens/s, problems done and problems solved so far (`SearchMeter`).

    job = SearchJob(task="demo", model="smollm2-135m", backend="vllm", out="runs/demo")
    summary = run_search_job(job)

With `ray_address` (and `workers`), the unfinished chunks are searched by Ray actors, one engine
each, and this process stays the run folder's only writer (mcts_po/ray_search.py,
docs/scale_out_ray.md); a chunk is searched the same way there (`search_chunk`), so the trees are
the same and the run resumes the same, with or without Ray.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcts_po.io_utils import (
    InputError,
    UserError,
    append_jsonl_lines,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
)
from mcts_po.llm.config import SamplingConfig
from mcts_po.llm.policy import LLMSearchPolicy
from mcts_po.progress import Rate, progress_bar
from mcts_po.search.config import SearchConfig
from mcts_po.search.mcts import run_search
from mcts_po.search.tree import Tree
from mcts_po.tree_io import TREES_FILE, read_tree_file

logger = logging.getLogger(__name__)

GREEDY_FILE = "greedy.jsonl"
SUMMARY_FILE = "summary.json"
RUN_CONFIG_FILE = "run_config.json"


@dataclass
class SearchJob:
    """The options of one `mcts-po search` job (flags and YAML keys: `mcts_po.config_utils`)."""

    out: str = field(default="", metadata={"help": "run folder: trees.jsonl, summary.json, greedy.jsonl (required)"})
    task: str = field(default="arithmetic", metadata={"help": "task name: arithmetic, gsm8k, math, demo, jsonl (mcts-po tasks)"})
    task_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "task options, e.g. '{\"num_ops\": 2}' or, for jsonl, the field names"})
    split: str = field(default="test", metadata={"help": "split to load"})
    limit: int | None = field(default=None, metadata={"help": "number of problems (default: all)"})
    offset: int = field(default=0, metadata={"help": "skip this many problems first"})
    data: str | None = field(default=None, metadata={"help": "problems file/folder or hub dataset id (task default when empty)"})
    model: str = field(default="smollm2-135m", metadata={"help": "HF hub id, local folder or alias"})
    backend: str = field(default="vllm", metadata={"help": "inference backend: vllm, transformers or http"})
    backend_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "backend options, e.g. '{\"base_url\": \"http://127.0.0.1:8000/v1\"}' (http: max_concurrency, retry_budget_s, request_timeout_s, served_model; transformers: max_batch_size, device; vllm and transformers: dtype)"})
    search: SearchConfig = field(default_factory=SearchConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    problems_in_flight: int = field(default=32, metadata={"help": "problems searched together (one engine call per wave for all of them)"})
    greedy_baseline: bool = field(default=True, metadata={"help": "also decode each problem greedily, for comparison"})
    greedy_max_tokens: int = field(default=400, metadata={"help": "generated tokens of each greedy baseline solution"})
    progress: bool = field(default=True, metadata={"help": "progress bar (off when not a terminal)"})
    value_model: str | None = field(default=None, metadata={"help": "folder of a value model (mcts-po train --method value|ppm) scoring new non-terminal steps, weighted by search.value_model_weight; its tokenizer must be the policy's"})
    value_model_backend: str = field(default="auto", metadata={"help": "what runs the value model: vllm (pooling runner, prefix cache), transformers, or auto (vllm when the search's backend is vllm, else transformers)"})
    value_model_device: str = field(default="auto", metadata={"help": "device of the value model (transformers): auto, cpu, cuda"})
    value_model_batch_size: int = field(default=16, metadata={"help": "paths per value-model forward pass (transformers)"})
    ray_address: str = field(default="", metadata={"help": "search over Ray workers (the ray extra: pip install -e '.[ray]'): 'local' starts a Ray cluster on this machine, 'auto' attaches to the running one (`ray start --head`), or a cluster address (host:6379, ray://host:10001); empty: one process, no Ray"})
    workers: int = field(default=1, metadata={"help": "Ray workers (actors), each with its own engine; the problems' chunks are spread over them (with --ray-address)"})
    num_gpus_per_worker: float = field(default=0.0, metadata={"help": "GPUs Ray reserves for each worker (1 = one GPU each; 0 = CPU workers)"})
    num_cpus_per_worker: float = field(default=1.0, metadata={"help": "CPUs Ray reserves for each worker (also its torch thread count)"})
    ray_max_restarts: int = field(default=3, metadata={"help": "times Ray restarts a worker that died (its unfinished chunk is searched again); -1: no limit"})

    def identity(self) -> dict[str, Any]:
        """The settings that must match for a rerun to resume this run."""
        identity = {
            "task": self.task, "task_options": self.task_options, "split": self.split, "offset": self.offset,
            "data": self.data, "model": self.model, "backend": self.backend,
            "search": self.search.to_dict(), "sampling": self.sampling.to_dict(),
        }
        if self.value_model:  # absent otherwise, so runs without one keep their identity
            identity["value_model"] = value_model_record(self)
        return identity


def value_model_record(job: SearchJob) -> dict[str, Any]:
    """The value model's path, content hash (config + weights) and weight, for run_config.json and trees."""
    from mcts_po.train.value_model import value_model_fingerprint

    if not Path(str(job.value_model)).is_dir():
        raise UserError(f"value_model {job.value_model!r} is not a folder (train one with mcts-po train --method value)")
    return {"path": str(job.value_model), "fingerprint": value_model_fingerprint(job.value_model),
            "weight": job.search.value_model_weight}


def check_value_model_settings(job: SearchJob) -> bool:
    """Whether the job searches with a value model; refuses a value model without weight,
    a weight without a value model, and a value model whose tokenizer is not the policy's."""
    weighted = job.search.value_model_weight > 0
    if not job.value_model:
        if weighted:
            raise UserError("search.value_model_weight > 0 needs --value-model (a folder from mcts-po train --method value)")
        return False
    if not weighted:
        raise UserError(f"value_model {job.value_model!r} is given but search.value_model_weight is 0; give it a weight > 0")
    from mcts_po.models import resolve_model
    from mcts_po.train.value_model import check_same_tokenizer

    check_same_tokenizer(resolve_model(job.model), str(job.value_model))
    return True


def make_value_guide(job: SearchJob, checked: bool = False) -> Any:
    """The job's ValueGuide (None without a value model), after `check_value_model_settings`
    (skipped when `checked`: the caller did it already)."""
    if not job.value_model or (not checked and not check_value_model_settings(job)):
        return None
    from mcts_po.llm.value_guide import ValueGuide

    return ValueGuide(str(job.value_model), device=job.value_model_device, batch_size=job.value_model_batch_size,
                      backend=value_backend(job.value_model_backend, job.backend))


def value_backend(choice: str, search_backend: str) -> str:
    """The value model's backend: `choice`, where "auto" is vllm for a vllm search, else transformers."""
    from mcts_po.llm.value_guide import VALUE_BACKENDS

    if choice == "auto":
        return "vllm" if search_backend == "vllm" else "transformers"
    if choice not in VALUE_BACKENDS:
        raise UserError(f"value_model_backend {choice!r} is not one of: auto, {', '.join(VALUE_BACKENDS)}")
    return choice


def _repair_torn_tail(path: Path) -> None:
    """A last line without its newline is the remains of an interrupted append (possibly cut
    inside a multi-byte character): rewrite the file atomically without it."""
    if not path.exists():
        return
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        logger.warning("%s: dropping a torn last line left by an interrupted run", path)
        kept = raw[: raw.rfind(b"\n") + 1]
        try:
            atomic_write_text(path, kept.decode("utf-8"))
        except UnicodeDecodeError as exc:
            line = kept[: exc.start].count(b"\n") + 1
            raise InputError(path, line, "not valid UTF-8") from None


def _finished_tree_ids(path: Path) -> set[str]:
    """Problem ids of the trees already in a run's trees.jsonl (every line must be a valid tree)."""
    return set(_finished_trees(path))


def _finished_trees(path: Path) -> dict[str, bool]:
    """Problem id -> has a correct terminal, for the trees already in a run's trees.jsonl."""
    _repair_torn_tail(path)
    if not path.exists():
        return {}
    return {tree.problem_id: tree.has_correct_terminal() for tree in read_tree_file(path)}


def _finished_greedy_ids(path: Path) -> set[str]:
    _repair_torn_tail(path)
    if not path.exists():
        return set()
    ids = set()
    for line_no, record in read_jsonl(path):
        if not isinstance(record, dict) or not isinstance(record.get("problem_id"), str):
            raise InputError(path, line_no, "not a greedy-baseline record (needs a text 'problem_id')")
        ids.add(record["problem_id"])
    return ids


def run_search_job(job: SearchJob, backend: Any | None = None) -> dict[str, Any]:
    from mcts_po.tasks import get_task

    if job.workers < 1:
        raise UserError(f"workers must be >= 1, got {job.workers}")
    if job.ray_address:
        if backend is not None:
            raise UserError("a Ray search job (ray_address) builds one engine in each worker; pass no backend")
    elif job.workers > 1:
        raise UserError(f"workers={job.workers} needs --ray-address (local, auto or a cluster address)")
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    identity = job.identity()
    config_path = out / RUN_CONFIG_FILE
    if config_path.exists():
        previous = json.loads(config_path.read_text(encoding="utf-8")).get("identity") or {}
        recorded_search = previous.get("search")
        if isinstance(recorded_search, dict) and "rollout_weight" not in recorded_search:
            # recorded before explicit weights: the rollout had 1 - self_eval_weight, no value model
            recorded_search["rollout_weight"] = 1.0 - float(recorded_search.get("self_eval_weight", 0.5))
            recorded_search.setdefault("value_model_weight", 0.0)
        if isinstance(previous.get("sampling"), dict):
            use_self_eval = (previous.get("search") or {}).get("use_self_eval", True)
            previous["sampling"] = SamplingConfig.check_recorded(previous["sampling"], config_path, use_self_eval)
        if previous != json.loads(json.dumps(identity)):
            changed = ", ".join(_changed_settings(previous, json.loads(json.dumps(identity))))
            raise UserError(f"{out} holds a run made with other settings ({config_path}; changed: {changed}); "
                            "pass the run's own settings to resume it, or use a new --out to start afresh")
    else:
        atomic_write_json(config_path, {"identity": identity, "limit": job.limit, "problems_in_flight": job.problems_in_flight})

    guided = check_value_model_settings(job)
    task = get_task(job.task, **job.task_options)
    problems = task.load(split=job.split, limit=job.limit, path=job.data, offset=job.offset)
    if not problems:
        raise UserError(f"task {job.task!r} gave no problems for split {job.split!r}")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise UserError(f"task {job.task!r} gave duplicate problem ids; resuming needs unique ids")

    trees_path, greedy_path = out / TREES_FILE, out / GREEDY_FILE
    finished = _finished_trees(trees_path)
    done = set(finished)
    greedy_done = _finished_greedy_ids(greedy_path)
    pending = [p for p in problems if p.id not in done]
    if done:
        logger.info("resuming %s: %d of %d problems already searched", out, len(done), len(problems))

    stats = {"search_seconds": 0.0, "generated_tokens": 0, "prompt_tokens": 0, "cached_prompt_tokens": 0,
             "engine_calls": 0, "problems_searched_now": 0}
    if job.ray_address:
        from mcts_po.ray_search import run_chunks_on_ray

        bar = _progress_bar(job, len(pending) * job.search.num_simulations)  # moved per written chunk
        try:
            run_chunks_on_ray(job, problems, done, greedy_done, stats, bar)
        finally:
            bar.close()
        summary = summarize_run(out, job, stats)
        atomic_write_json(out / SUMMARY_FILE, summary)
        return summary

    guide = make_value_guide(job, checked=True) if guided else None
    owns_backend = False
    if pending or (job.greedy_baseline and any(p.id not in greedy_done for p in problems)):
        if backend is None:
            from mcts_po.backends import make_backend

            backend = make_backend(job.backend, model=job.model, seed=job.search.seed, **job.backend_options)
            owns_backend = True
    chunks = [chunk for chunk in problem_chunks(problems, job.problems_in_flight)
              if not all(p.id in done for p in chunk)]
    # a partly written chunk is searched again whole: its simulations count in the total
    meter = SearchMeter(_progress_bar(job, sum(len(chunk) for chunk in chunks) * job.search.num_simulations),
                        len(problems), finished)
    try:
        for chunk in chunks:
            result = search_chunk(backend, task, chunk, job, greedy_ids=_greedy_todo(job, chunk, greedy_done),
                                  skip_ids=done, guide=guide, meter=meter)
            write_chunk_result(out, result, done, greedy_done, stats)
            atomic_write_json(out / SUMMARY_FILE, summarize_run(out, job, stats))
        if job.greedy_baseline:
            missing = [p for p in problems if p.id not in greedy_done and p.id in done]
            if missing:
                append_jsonl_lines(greedy_path, greedy_lines(backend, task, missing, job))
    finally:
        meter.close()
        if guide is not None:
            guide.close(other_engines_live=backend is not None and not owns_backend)
        if owns_backend and backend is not None:
            backend.close()
    summary = summarize_run(out, job, stats)
    atomic_write_json(out / SUMMARY_FILE, summary)
    return summary


def _greedy_todo(job: SearchJob, chunk: list, greedy_done: set[str]) -> set[str]:
    return {p.id for p in chunk if p.id not in greedy_done} if job.greedy_baseline else set()


@dataclass
class ChunkResult:
    """What searching one chunk produced, before anything is written: the greedy-baseline lines
    and the tree lines as (problem id, JSON line), and the chunk's counters (added into the
    run's `this_invocation` statistics)."""

    greedy: list[tuple[str, str]]
    trees: list[tuple[str, str]]
    stats: dict[str, Any]


def search_chunk(backend: Any, task: Any, chunk: list, job: SearchJob, *, greedy_ids: set[str] = frozenset(),
                 skip_ids: set[str] = frozenset(), guide: Any = None, meter: "SearchMeter | None" = None) -> ChunkResult:
    """Search one chunk of problems (as cut by `problem_chunks`) and return its lines unwritten.

    The greedy baseline of the problems in `greedy_ids` is decoded first, then the backend is
    reseeded from (search seed, the chunk's problem ids) and the whole chunk is searched, so the
    trees depend on nothing that ran before, in this process or any other; the trees of
    `skip_ids` (already written) are left out of the result."""
    greedy = greedy_lines(backend, task, [p for p in chunk if p.id in greedy_ids], job, with_ids=True)
    if meter is not None:
        meter.add_tokens(sum(json.loads(line)["generated_tokens"] for _, line in greedy))
    reseed_backend(backend, chunk_seed(job.search.seed, [p.id for p in chunk]))
    trees, stats = _search_chunk(backend, task, chunk, job, skip_ids=skip_ids, guide=guide, meter=meter)
    return ChunkResult(greedy=greedy, trees=trees, stats=stats)


def write_chunk_result(out: Path, result: ChunkResult, done: set[str], greedy_done: set[str],
                       stats: dict[str, Any]) -> int:
    """Append a chunk's greedy lines and then its tree lines (each group in one fsynced write),
    leaving out problems already in the files; update `done`, `greedy_done` and `stats`.
    Returns the number of trees written."""
    greedy = [line for pid, line in result.greedy if pid not in greedy_done]
    if greedy:
        append_jsonl_lines(out / GREEDY_FILE, greedy)
    greedy_done.update(pid for pid, _ in result.greedy)
    new = [(pid, line) for pid, line in result.trees if pid not in done]
    if new:
        append_jsonl_lines(out / TREES_FILE, [line for _, line in new])
    done.update(pid for pid, _ in new)
    for key, value in result.stats.items():
        stats[key] = stats.get(key, 0) + value
    stats["problems_searched_now"] += len(new)
    return len(new)


def problem_chunks(problems: list, size: int) -> list[list]:
    """Consecutive chunks of `size` problems, cut from the full list so that a resumed run
    searches the same groups as an uninterrupted one."""
    if size < 1:
        raise UserError(f"problems_in_flight must be >= 1, got {size}")
    return [problems[start : start + size] for start in range(0, len(problems), size)]


def chunk_seed(seed: int, problem_ids: list[str]) -> int:
    """A 63-bit seed that depends only on the search seed and the chunk's problem ids."""
    digest = hashlib.sha256(json.dumps([int(seed), [str(i) for i in problem_ids]]).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def reseed_backend(backend: Any, seed: int) -> bool:
    """Reseed a backend that supports it (`reseed(seed)`); returns whether it did."""
    reseed = getattr(backend, "reseed", None)
    if not callable(reseed):
        return False
    reseed(seed)
    return True


def _progress_bar(job: SearchJob, total: int):
    """The search bar over the simulations still to run in this invocation (mcts_po.progress's rule)."""
    return progress_bar(job.progress and total > 0, total=total, desc="search", unit="sim")


class SearchMeter:
    """What the search bar shows, updated after every wave: simulations (the bar itself, with
    tqdm's rate and ETA), and in its postfix the generated tokens per second of this invocation
    (search, rollouts, self-evaluation and greedy baselines; mean since the bar started), the
    problems finished (all simulations done, resumed ones included) out of the run's problems,
    the problems whose tree holds a correct terminal so far (finished and in-flight trees), the
    nodes of the trees in flight and the wave of the current chunk."""

    def __init__(self, bar: Any, problems: int, finished: dict[str, bool], clock: Any = None):
        self.bar = bar
        self.problems = problems
        self.rate = Rate(clock)
        self.tokens = 0  # generated in this invocation before the current chunk's search
        self.finished = set(finished)
        self.solved = {problem_id for problem_id, correct in finished.items() if correct}
        self.postfix: dict[str, Any] = {}
        self._simulations = 0  # of the current chunk, already on the bar

    def add_tokens(self, count: int) -> None:
        self.tokens += int(count)

    def start_chunk(self) -> None:
        self._simulations = 0

    def wave(self, progress: Any, trees: list[Tree], chunk_tokens: int) -> None:
        """After a wave of the current chunk: `chunk_tokens` generated so far by its search."""
        for tree, finished in zip(trees, progress.tree_finished):
            if finished:
                self.finished.add(tree.problem_id)
            if tree.problem_id not in self.solved and tree.has_correct_terminal():
                self.solved.add(tree.problem_id)
        self.postfix = {"tok/s": self.rate.format(self.tokens + chunk_tokens),
                        "done": f"{len(self.finished)}/{self.problems}", "solved": len(self.solved),
                        "nodes": progress.nodes, "waves": progress.waves}
        self.bar.set_postfix(self.postfix, refresh=False)  # drawn by the update
        self.bar.update(progress.simulations - self._simulations)
        self._simulations = progress.simulations

    def end_chunk(self, chunk_tokens: int) -> None:
        self.tokens += int(chunk_tokens)

    def close(self) -> None:
        self.bar.close()


def greedy_lines(backend, task, problems, job: SearchJob, with_ids: bool = False) -> list:
    """The greedy-baseline records of `problems` as JSON lines ((problem id, line) with `with_ids`)."""
    if not problems:
        return []
    from mcts_po.llm.sampling import sample_solutions

    lines = []
    for sampled in sample_solutions(backend, task, problems, n=1, temperature=0.0, max_tokens=job.greedy_max_tokens):
        line = json.dumps({
            "problem_id": sampled.problem.id, "text": sampled.texts[0], "answer": sampled.answers[0],
            "correct": sampled.correct[0], "generated_tokens": sampled.generated_tokens,
        }, ensure_ascii=False)
        lines.append((sampled.problem.id, line) if with_ids else line)
    return lines


def _search_chunk(backend, task, chunk, job: SearchJob, skip_ids: set[str] = frozenset(), guide: Any = None,
                  meter: "SearchMeter | None" = None) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """Search a chunk; returns its trees as (problem id, JSON line) without those in `skip_ids`,
    and the counters of what it did. `meter` (this process's search bar) is moved after every wave."""
    policy = LLMSearchPolicy(backend, task, chunk, job.sampling, job.search, value_guide=guide)
    extra = {"self_eval_reference_hint": job.sampling.self_eval_hint, "split": job.split}
    if guide is not None:
        extra["value_model"] = value_model_record(job)
    trees = [
        Tree.new(
            problem_id=p.id, question=p.question, gold_answer=p.answer, task=job.task, model=job.model,
            backend=job.backend, tree_kind=job.search.tree, prompt=policy.root_prompts[i], seed=job.search.seed,
            sampling=job.sampling.to_dict(), search_config=job.search.to_dict(),
            extra=dict(extra),
        )
        for i, p in enumerate(chunk)
    ]
    def chunk_tokens() -> int:
        return sum(counts.get("generated", 0) for counts in policy.token_counts)

    if meter is not None:
        meter.start_chunk()
    started = time.perf_counter()
    guide_before = (guide.seconds, guide.calls, guide.nodes, guide.load_seconds) if guide is not None else None
    on_progress = None if meter is None else (lambda progress: meter.wave(progress, trees, chunk_tokens()))
    run_search(trees, policy, job.search, on_progress=on_progress)
    elapsed = time.perf_counter() - started
    if meter is not None:
        meter.end_chunk(chunk_tokens())
    lines = []
    stats = {"generated_tokens": 0, "prompt_tokens": 0, "cached_prompt_tokens": 0}
    for tree, counts in zip(trees, policy.token_counts):
        tree.token_counts = dict(counts)
        tree.timings = {"chunk_seconds": round(elapsed, 3), "seconds_per_problem": round(elapsed / len(trees), 3)}
        if tree.problem_id in skip_ids:
            continue  # written before an interruption; the rerun of its chunk only re-derives it
        lines.append((tree.problem_id, tree.to_json()))
        stats["generated_tokens"] += counts.get("generated", 0)
        stats["prompt_tokens"] += counts.get("prompt", 0)
        stats["cached_prompt_tokens"] += counts.get("cached_prompt", 0)
    stats["search_seconds"] = elapsed
    stats["engine_calls"] = policy.engine_calls
    if guide_before is not None:  # the value model's share of search_seconds (its loading included)
        stats["value_model_seconds"] = guide.seconds - guide_before[0]
        stats["value_model_calls"] = guide.calls - guide_before[1]
        stats["value_model_nodes"] = guide.nodes - guide_before[2]
        stats["value_model_load_seconds"] = guide.load_seconds - guide_before[3]
    return lines, stats


def summarize_run(out: Path, job: SearchJob, stats: dict[str, Any]) -> dict[str, Any]:
    trees = read_tree_file(out / TREES_FILE) if (out / TREES_FILE).exists() else []
    greedy = [r for _, r in read_jsonl(out / GREEDY_FILE)] if (out / GREEDY_FILE).exists() else []
    searched_ids = {t.problem_id for t in trees}
    greedy_in_run = [r for r in greedy if r["problem_id"] in searched_ids]
    nodes = sum(len(t) for t in trees)
    generated_all = sum(t.token_counts.get("generated", 0) for t in trees)
    prompt_all = sum(t.token_counts.get("prompt", 0) for t in trees)
    cached_all = sum(t.token_counts.get("cached_prompt", 0) for t in trees)
    best_path_correct = sum(1 for t in trees if (lambda p: bool(p) and bool(p[-1].correct))(t.best_path()))
    seconds = stats.get("search_seconds", 0.0)
    return {
        "run": str(out),
        "task": job.task,
        "split": job.split,
        "model": job.model,
        "backend": job.backend,
        "problems": len(trees),
        "problems_with_correct_terminal": sum(1 for t in trees if t.has_correct_terminal()),
        "solved_share": _share(sum(1 for t in trees if t.has_correct_terminal()), len(trees)),
        "best_path_correct": best_path_correct,
        "greedy_correct": sum(1 for r in greedy_in_run if r["correct"]),
        "greedy_problems": len(greedy_in_run),
        "greedy_accuracy": _share(sum(1 for r in greedy_in_run if r["correct"]), len(greedy_in_run)),
        "nodes": nodes,
        "terminal_nodes": sum(len(t.terminals()) for t in trees),
        "generated_tokens": generated_all,
        "prompt_tokens": prompt_all,
        "cached_prompt_tokens": cached_all,
        "prefix_cache_hit_rate": _share(cached_all, prompt_all),
        "this_invocation": {
            **stats,
            "generated_tokens_per_second": round(stats.get("generated_tokens", 0) / seconds, 2) if seconds else None,
        },
        "search": job.search.to_dict(),
        "sampling": job.sampling.to_dict(),
    }


def _changed_settings(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two run identities (a missing key
    counts as changed)."""
    if isinstance(before, dict) and isinstance(after, dict):
        changed = []
        for key in sorted(set(before) | set(after), key=str):
            changed += _changed_settings(before.get(key, "<missing>"), after.get(key, "<missing>"), f"{prefix}{key}.")
        return changed
    return [] if before == after else [f"{prefix[:-1]} {before!r} -> {after!r}"]


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
