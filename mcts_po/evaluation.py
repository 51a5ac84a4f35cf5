"""Evaluate a model on a task split: greedy accuracy, maj@k and any_correct@k with 95 % Wilson intervals, unbiased pass@k.

What `mcts-po eval` and the loop's evaluation phase call. Problems go to the backend in
chunks (one batched engine call per chunk); finished problems are appended to
`OUT/results.partial.jsonl`, so a killed evaluation resumes where it stopped. When all are
done, `OUT/results.jsonl` (one record per problem) and `OUT/summary.json` are written
atomically and the partial file is removed. The bar (on a terminal, unless `progress=False`;
`mcts_po.progress`) shows problems done, running greedy accuracy (and maj@k) and generated
tokens per second.

    from mcts_po.evaluation import EvalConfig, evaluate_model
    summary = evaluate_model(EvalConfig(model="smollm2-135m", task="arithmetic", split="test", limit=300,
                                        backend="transformers", k=8), "runs/eval-x")
    summary["greedy"]["accuracy"], summary["greedy"]["ci95"]

maj@k: k samples at `temperature`; the answer stated most often wins (ties: the one stated
first); answers without a final answer do not vote. It is correct when the task's verifier
accepts the winning answer. Beside it: `any_correct@k` (problems with a correct sample among
the k; before this name existed the summary called it `pass@k`) and the unbiased pass@j
(Chen et al. 2021; `mcts_po.pass_at_k`) for j = 1, 2, 4, ... and k, from the same k samples.
At j = k the two are equal; below k only pass@j is an honest figure.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mcts_po.io_utils import UserError, append_jsonl_line, atomic_write_json, atomic_write_text, read_jsonl
from mcts_po.progress import Rate, progress_bar

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
PARTIAL_FILE = "results.partial.jsonl"
SUMMARY_FILE = "summary.json"
BACKENDS = ("vllm", "transformers", "http")


@dataclass
class EvalConfig:
    model: str = field(default="smollm2-135m", metadata={"help": "HF hub id, local folder or alias"})
    task: str = field(default="arithmetic", metadata={"help": "task name: arithmetic, gsm8k, math, demo, jsonl"})
    task_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "options of the task: a JSON object on the command line, e.g. '{\"num_ops\": 2}', a mapping in YAML"})
    split: str = field(default="test", metadata={"help": "split to evaluate"})
    limit: int = field(default=0, metadata={"help": "number of problems; 0 = all"})
    offset: int = field(default=0, metadata={"help": "skip this many problems first"})
    data: str = field(default="", metadata={"help": "problems file/folder or hub id (task default when empty)"})
    backend: str = field(default="vllm", metadata={"help": f"inference backend: {', '.join(BACKENDS)}"})
    k: int = field(default=1, metadata={"help": "maj@k samples per problem; 1 = greedy only"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of the maj@k samples"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus threshold of the maj@k samples"})
    max_tokens: int = field(default=400, metadata={"help": "generated tokens per solution"})
    chunk_size: int = field(default=64, metadata={"help": "problems per engine call (results are saved per chunk)"})
    seed: int = field(default=0, metadata={"help": "engine seed (maj@k sampling)"})

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"EvalConfig.backend = {self.backend!r} is not one of: {', '.join(BACKENDS)}")
        for name in ("k", "max_tokens", "chunk_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"EvalConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("limit", "offset"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"EvalConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.temperature <= 0 and self.k > 1:
            raise ValueError("EvalConfig.temperature must be > 0 for maj@k with k > 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """Settings that must match for a rerun to resume a partial evaluation."""
        return {k: v for k, v in self.to_dict().items() if k not in ("chunk_size", "backend")}


def wilson_interval(successes: int, total: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion; (0, 0) for total == 0."""
    if total <= 0:
        return (0.0, 0.0)
    if not 0 <= successes <= total:
        raise ValueError(f"successes must be in [0, {total}], got {successes}")
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def normalise_answer(answer: str) -> str:
    """Voting key of an answer: whitespace, '$', thousands commas and a trailing '.0' dropped."""
    text = re.sub(r"\s+", "", answer).strip("$").rstrip(".")
    if re.fullmatch(r"-?[\d,]+(\.\d+)?", text):
        text = text.replace(",", "")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
    return text


def majority_answer(answers: Sequence[str | None]) -> str | None:
    """The answer stated most often (ties: the one stated first); None when none stated one."""
    keys = [normalise_answer(a) if a is not None else None for a in answers]
    counts = Counter(key for key in keys if key is not None)
    if not counts:
        return None
    best = max(counts.values())
    for key, answer in zip(keys, answers):
        if key is not None and counts[key] == best:
            return answer
    return None  # unreachable


def best_of_n_curve(sample_correct: Sequence[Sequence[bool]], sample_tokens: Sequence[Sequence[int]],
                    sample_answers: Sequence[Sequence[str | None]] | None = None,
                    answer_is_correct: Any = None) -> list[dict[str, Any]]:
    """Best-of-N for every N from one batch of samples per problem, in sampling order.

    Entry N-1: `any_correct` = problems with a correct sample among their first N (one draw of
    best-of-N; results written before this name existed call it `solved`), `pass_at_n` = the
    unbiased pass@N estimated from all the samples (Chen et al. 2021; `mcts_po.pass_at_k`),
    `generated_tokens` = the tokens the first N samples cost (so N can be matched to another
    method's token spend), and, when answers and `answer_is_correct(problem_index, answer)` are
    given, `majority_correct` = maj@N over the first N. Every problem must have the same number
    of samples.
    """
    from mcts_po.pass_at_k import any_correct, mean_pass_at_k

    if len(sample_correct) != len(sample_tokens):
        raise ValueError("best_of_n_curve: one list of correctness and one of token counts per problem")
    sizes = {len(c) for c in sample_correct} | {len(t) for t in sample_tokens}
    if len(sizes) > 1:
        raise ValueError(f"best_of_n_curve: every problem needs the same number of samples, got sizes {sorted(sizes)}")
    n_max = sizes.pop() if sizes else 0
    curve = []
    for n in range(1, n_max + 1):
        entry = {"n": n,
                 "any_correct": any_correct(sample_correct, first=n),
                 "pass_at_n": round(mean_pass_at_k(sample_correct, n), 4),
                 "generated_tokens": sum(sum(tokens[:n]) for tokens in sample_tokens)}
        if sample_answers is not None and answer_is_correct is not None:
            majority = [majority_answer(list(answers[:n])) for answers in sample_answers]
            entry["majority_correct"] = sum(1 for i, answer in enumerate(majority)
                                            if answer is not None and answer_is_correct(i, answer))
        curve.append(entry)
    return curve


def best_of_n_at_tokens(curve: Sequence[dict[str, int]], tokens: int) -> tuple[dict[str, int] | None, dict[str, int] | None]:
    """The curve's entries just below (or at) and just above a token budget: (largest N that spends
    <= tokens, smallest N that spends more); either is None past the curve's ends."""
    below = [entry for entry in curve if entry["generated_tokens"] <= tokens]
    above = [entry for entry in curve if entry["generated_tokens"] > tokens]
    return (below[-1] if below else None, above[0] if above else None)


def rate(successes: int, total: int) -> dict[str, Any]:
    low, high = wilson_interval(successes, total)
    return {"correct": successes, "total": total, "accuracy": round(successes / total, 4) if total else None,
            "ci95": [round(low, 4), round(high, 4)]}


def summarize_results(records: Sequence[dict[str, Any]], config: EvalConfig, seconds: float) -> dict[str, Any]:
    total = len(records)
    summary: dict[str, Any] = {
        "model": config.model, "task": config.task, "task_options": config.task_options, "split": config.split,
        "offset": config.offset, "problems": total, "backend": config.backend,
        "greedy": rate(sum(1 for r in records if r["greedy_correct"]), total),
        "greedy_no_answer": sum(1 for r in records if r["greedy_answer"] is None),
        "generated_tokens": sum(r["generated_tokens"] for r in records),
        "seconds": round(seconds, 2),
        "config": config.to_dict(),
    }
    if config.k > 1:
        from mcts_po.pass_at_k import any_correct, pass_at_k_ladder, pass_at_k_summary

        samples = [r["sample_correct"] for r in records]
        summary[f"maj@{config.k}"] = rate(sum(1 for r in records if r["majority_correct"]), total)
        summary[f"any_correct@{config.k}"] = rate(any_correct(samples), total)  # was "pass@k" (same figure)
        for j in pass_at_k_ladder(config.k):
            summary[f"pass@{j}"] = pass_at_k_summary(samples, j)
    return summary


def evaluate_problems(backend: Any, task: Any, problems: Sequence[Any], config: EvalConfig) -> list[dict[str, Any]]:
    """One record per problem: greedy answer/correctness and, for k > 1, the k samples' votes."""
    from mcts_po.llm.sampling import sample_solutions

    greedy = sample_solutions(backend, task, problems, n=1, temperature=0.0, max_tokens=config.max_tokens)
    sampled = (sample_solutions(backend, task, problems, n=config.k, temperature=config.temperature,
                                top_p=config.top_p, max_tokens=config.max_tokens) if config.k > 1 else [None] * len(problems))
    records = []
    for problem, g, s in zip(problems, greedy, sampled):
        record: dict[str, Any] = {
            "problem_id": problem.id, "gold": problem.answer,
            "greedy_answer": g.answers[0], "greedy_correct": bool(g.correct[0]), "greedy_text": g.texts[0],
            "generated_tokens": g.generated_tokens,
        }
        if s is not None:
            majority = majority_answer(s.answers)
            record["sample_answers"] = s.answers
            record["sample_correct"] = [bool(c) for c in s.correct]
            record["majority_answer"] = majority
            record["majority_correct"] = bool(majority is not None and _matches(task, majority, problem.answer))
            record["generated_tokens"] += s.generated_tokens
        records.append(record)
    return records


def _matches(task: Any, predicted: str, gold: str) -> bool:
    try:
        return bool(task.answers_match(predicted, gold))
    except Exception:  # a verifier must never take down an evaluation
        return False


def load_eval_problems(config: EvalConfig) -> tuple[Any, list[Any]]:
    from mcts_po.tasks import get_task

    task = get_task(config.task, **config.task_options)
    problems = task.load(split=config.split, limit=config.limit or None, path=config.data or None, offset=config.offset)
    if not problems:
        raise UserError(f"task {config.task!r} gave no problems for split {config.split!r}")
    return task, problems


def evaluate_model(config: EvalConfig, out_dir: str | Path, backend: Any | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Evaluate `config.model` (or the given backend's model) and write results + summary to `out_dir`.

    A finished evaluation (summary.json present) is not redone: its summary is returned.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / SUMMARY_FILE).exists() and (out / RESULTS_FILE).exists():
        return json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    task, problems = load_eval_problems(config)
    identity_path = out / "eval_config.json"
    identity = json.loads(json.dumps(config.identity()))
    if identity_path.exists() and json.loads(identity_path.read_text(encoding="utf-8")) != identity:
        raise UserError(f"{out} holds a partial evaluation made with other settings ({identity_path}); use a new --out")
    atomic_write_json(identity_path, identity)
    partial = out / PARTIAL_FILE
    done: dict[str, dict[str, Any]] = {}
    if partial.exists():
        text = partial.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):  # a torn last line of a killed run
            atomic_write_text(partial, text[: text.rfind("\n") + 1])
        done = {record["problem_id"]: record for _, record in read_jsonl(partial)}
    pending = [p for p in problems if p.id not in done]
    started = time.monotonic()
    owns_backend = backend is None and bool(pending)
    if owns_backend:
        from mcts_po.backends import make_backend

        backend = make_backend(config.backend, model=config.model, seed=config.seed)
    bar = progress_bar(progress and bool(pending), total=len(problems), initial=len(problems) - len(pending),
                       desc="eval", unit="problem")
    tokens_per_second, generated_now = Rate(), 0
    try:
        for start in range(0, len(pending), config.chunk_size):
            chunk = pending[start : start + config.chunk_size]
            for record in evaluate_problems(backend, task, chunk, config):
                append_jsonl_line(partial, json.dumps(record, ensure_ascii=False))
                done[record["problem_id"]] = record
                generated_now += record["generated_tokens"]
            bar.set_postfix(eval_postfix(list(done.values()), config, tokens_per_second.format(generated_now)),
                            refresh=False)  # drawn by the update
            bar.update(len(chunk))
    finally:
        bar.close()
        if owns_backend and backend is not None:
            backend.close()
    records = [done[p.id] for p in problems]
    seconds = time.monotonic() - started
    summary = summarize_results(records, config, seconds)
    atomic_write_text(out / RESULTS_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_json(out / SUMMARY_FILE, summary)
    partial.unlink(missing_ok=True)
    return summary


def eval_postfix(records: Sequence[dict[str, Any]], config: EvalConfig, tokens_per_second: str) -> dict[str, str]:
    """The evaluation bar's postfix: running greedy accuracy (and maj@k) over the problems done so
    far (resumed ones included), and generated tokens per second of this invocation."""
    postfix = {"greedy": f"{sum(1 for r in records if r['greedy_correct']) / len(records):.3f}" if records else "-"}
    if config.k > 1:
        postfix[f"maj@{config.k}"] = (f"{sum(1 for r in records if r['majority_correct']) / len(records):.3f}"
                                      if records else "-")
    postfix["tok/s"] = tokens_per_second
    return postfix


def format_summary(summary: dict[str, Any]) -> str:
    """A few human-readable lines: accuracy with its interval per metric."""
    lines = [f"{summary['model']} on {summary['task']}/{summary['split']} ({summary['problems']} problems, "
             f"{summary['seconds']} s, {summary['generated_tokens']} generated tokens)"]
    for key in [k for k in summary if k == "greedy" or k.startswith(("maj@", "any_correct@"))]:
        metric = summary[key]
        low, high = metric["ci95"]
        lines.append(f"  {key:8s} {metric['accuracy']:.4f}  ({metric['correct']}/{metric['total']}; "
                     f"95% CI {low:.4f}-{high:.4f})")
    for key in [k for k in summary if k.startswith("pass@")]:
        metric = summary[key]
        lines.append(f"  {key:8s} {metric['accuracy']:.4f}  (unbiased, mean over {metric['problems']} problems "
                     f"of {metric['samples_per_problem']} samples each; stderr {metric['stderr']:.4f})")
    return "\n".join(lines)
