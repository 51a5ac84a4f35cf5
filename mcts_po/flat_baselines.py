"""Flat-sampling baselines at the search's token budget: `rft` (STaR/RFT) and `outcome-dpo`.

The question a tree method must answer is whether its step-level data beats what the same
generation budget buys without a tree: sample whole solutions of each problem until as many
tokens were generated as the search spent, then

- `rft`: fine-tune on the verified-correct samples (each text once per problem);
- `outcome-dpo`: DPO on (correct, wrong) whole solutions of the same problem.

Three parts, none importing torch:

`sample_to_budget(backend, task, problems, budget_tokens, ...)` samples in waves: first one
sample of every problem, then as many samples as the remaining budget buys at the mean sample
length so far (at most `max_samples_per_wave`), given to the problems with the fewest samples
first. It stops once the generated tokens reach the budget (the last wave may overshoot by a
few samples' worth; both counts are returned). Every wave is appended to `samples.jsonl` in one
write, so a killed run resumes from its last whole wave.

`rft_rows(samples)` and `outcome_dpo_rows(samples, config)` turn the sample records into rows in
the columns of the tree formats they stand beside (`sft`: prompt/completion/messages; `dpo`:
prompt/chosen/rejected), so `train --method sft` and `train --method dpo` train them unchanged.
Samples cut at `max_tokens` take part in neither (their text is not a whole solution and the
trainer ends every completion with EOS). Pairs follow the `dpo` format's rules: texts once per
problem, (i-th correct, j-th wrong) along anti-diagonals so the first pairs use different
samples, near duplicates dropped (`dedup_threshold`), at most `max_pairs_per_tree` per problem.

    from mcts_po.flat_baselines import sample_to_budget, rft_rows
    summary = sample_to_budget(backend, task, problems, 50_000, out_file=Path("runs/x/samples.jsonl"),
                               temperature=0.7, top_p=0.95, max_tokens=256)
    rows = rft_rows(read_samples(Path("runs/x/samples.jsonl")))
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from mcts_po.backends.base import FINISH_LENGTH
from mcts_po.extract.config import ExtractConfig
from mcts_po.extract.selection import count_event, near_duplicate, normalise_text
from mcts_po.extract.sft_traces import COLUMNS as SFT_COLUMNS
from mcts_po.extract.trajectory_pairs import COLUMNS as DPO_COLUMNS
from mcts_po.extract.trajectory_pairs import ordered_pairs
from mcts_po.io_utils import UserError, append_jsonl_lines, atomic_write_text, read_jsonl

SAMPLES_FILE = "samples.jsonl"
FLAT_METHODS = {"rft": "sft", "outcome-dpo": "dpo"}  # loop method -> the training method (and row format) it uses

SHARED_COLUMNS = ("question", "answer", "dataset", "problem_id")  # as the tree formats have them
RFT_COLUMNS: dict[str, Any] = {  # the `sft` format's columns, with the sample's place instead of the tree's
    **{name: SFT_COLUMNS[name] for name in ("prompt", "completion", "messages", *SHARED_COLUMNS)},
    "sample_index": "int64",
    "generated_tokens": "int64",
    "predicted_answer": "string",
    "ends_solution": "bool",
}
OUTCOME_DPO_COLUMNS: dict[str, Any] = {  # the `dpo` format's, likewise
    **{name: DPO_COLUMNS[name] for name in ("prompt", "chosen", "rejected", *SHARED_COLUMNS)},
    "chosen_index": "int64",
    "rejected_index": "int64",
    **{name: DPO_COLUMNS[name] for name in ("chosen_answer", "rejected_answer", "chosen_ends_solution",
                                             "rejected_ends_solution")},
}


# ---------------------------------------------------------------- sampling to a token budget


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The sample records of `path` ([] when absent). A torn last line (a kill inside a wave's
    write) is dropped and the file rewritten without it; any other bad line names file and line."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    records = [record for _, record in read_jsonl(path, drop_torn_tail=True)]
    if raw and not raw.endswith(b"\n"):
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return records


def wave_counts(samples_per_problem: Sequence[int], wave_size: int) -> list[int]:
    """How many of the wave's `wave_size` samples each problem gets: one at a time to the problem
    with the fewest samples so far (ties: the earlier problem)."""
    counts = list(samples_per_problem)
    given = [0] * len(counts)
    for _ in range(wave_size):
        index = min(range(len(counts)), key=lambda i: (counts[i], i))
        counts[index] += 1
        given[index] += 1
    return given


def next_wave_size(problems: int, used_tokens: int, samples: int, budget_tokens: int, max_samples_per_wave: int) -> int:
    """The first wave gives every problem one sample; later ones as many samples as the remaining
    budget buys at the mean sample length so far, at least 1 and at most `max_samples_per_wave`."""
    if samples == 0:
        return min(problems, max_samples_per_wave)
    mean = max(used_tokens / samples, 1.0)
    return max(1, min(max_samples_per_wave, math.ceil((budget_tokens - used_tokens) / mean)))


def sample_to_budget(backend: Any, task: Any, problems: Sequence[Any], budget_tokens: int, *, out_file: Path,
                     temperature: float, top_p: float, max_tokens: int, max_samples_per_wave: int = 0,
                     on_wave: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Sample whole solutions of `problems` until `budget_tokens` generated tokens (resumes from
    `out_file`); return the counts. `max_samples_per_wave` 0 = 8 per problem. `on_wave(tokens of
    the wave, tokens so far)` is called after each wave is written."""
    from mcts_po.llm.sampling import sample_solutions

    if budget_tokens < 1:
        raise UserError(f"flat sampling needs a token budget >= 1, got {budget_tokens}")
    if not problems:
        raise UserError("flat sampling got no problems")
    if temperature <= 0:
        raise UserError("flat sampling with temperature 0 repeats one greedy solution per problem: set "
                        "sampling.temperature > 0 (e.g. 0.7)")
    cap = max_samples_per_wave or 8 * len(problems)
    records = read_samples(out_file)
    index_of = {p.id: i for i, p in enumerate(problems)}
    unknown = sorted({r["problem_id"] for r in records} - set(index_of))
    if unknown:
        raise UserError(f"{out_file} holds samples of problems this round does not sample ({unknown[0]}, ...): "
                        "it belongs to another run; use a new folder")
    per_problem = [0] * len(problems)
    for record in records:
        per_problem[index_of[record["problem_id"]]] += 1
    used = sum(r["generated_tokens"] for r in records)
    wave = 1 + max((r["wave"] for r in records), default=-1)
    resumed_samples = len(records)
    prompts = {p.id: backend.render_chat(task.messages(p)) for p in problems}  # as sample_solutions renders them
    while used < budget_tokens:
        size = next_wave_size(len(problems), used, sum(per_problem), budget_tokens, cap)
        counts = wave_counts(per_problem, size)
        chosen = [(p, c) for p, c in zip(problems, counts) if c]
        results = sample_solutions(backend, task, [p for p, _ in chosen], n=[c for _, c in chosen],
                                   temperature=temperature, top_p=top_p, max_tokens=max_tokens)
        wave_records, wave_tokens = [], 0
        for (problem, _), result in zip(chosen, results):
            request_prompt_tokens = result.prompt_tokens  # the request's, counted on its first sample
            for text, answer, correct, tokens, finish in zip(result.texts, result.answers, result.correct,
                                                             result.sample_tokens, result.finish_reasons):
                index = per_problem[index_of[problem.id]]
                per_problem[index_of[problem.id]] += 1
                wave_tokens += tokens
                wave_records.append({
                    "problem_id": problem.id, "wave": wave, "sample_index": index, "prompt": prompts[problem.id],
                    "question": problem.question, "gold": problem.answer, "dataset": task.name, "text": text,
                    "answer": answer, "correct": bool(correct), "generated_tokens": tokens,
                    "cut_at_max_tokens": finish == FINISH_LENGTH, "prompt_tokens": request_prompt_tokens})
                request_prompt_tokens = 0
        if wave_tokens == 0:
            raise UserError(f"flat sampling: wave {wave} generated no tokens ({len(wave_records)} samples); the "
                            "model ends every solution at once, so no budget can be spent")
        append_jsonl_lines(out_file, [json.dumps(r, ensure_ascii=False) for r in wave_records])
        records.extend(wave_records)
        used += wave_tokens
        wave += 1
        if on_wave is not None:
            on_wave(wave_tokens, used)
    correct_by_problem = {r["problem_id"] for r in records if r["correct"]}
    return {"problems": len(problems), "samples": len(records), "resumed_samples": resumed_samples, "waves": wave,
            "correct_samples": sum(1 for r in records if r["correct"]),
            "samples_cut_at_max_tokens": sum(1 for r in records if r["cut_at_max_tokens"]),
            "problems_with_correct_sample": len(correct_by_problem),
            "solved_share": round(len(correct_by_problem) / len(problems), 4),
            "generated_tokens": used, "prompt_tokens": sum(r.get("prompt_tokens", 0) for r in records),
            "budget_tokens": budget_tokens,
            "budget_overshoot_tokens": used - budget_tokens}


# ---------------------------------------------------------------- rows


def _distinct_whole(records: Sequence[dict[str, Any]], counters: dict[str, int] | None) -> dict[str, list[dict[str, Any]]]:
    """Per problem (in first-seen order), its whole samples, each text once (the first sampled)."""
    by_problem: dict[str, list[dict[str, Any]]] = {}
    seen: set[tuple[str, str]] = set()
    for record in sorted(records, key=lambda r: (r["wave"], r["sample_index"])):
        by_problem.setdefault(record["problem_id"], [])
        if record["cut_at_max_tokens"]:
            count_event(counters, "samples_cut_at_max_tokens")
            continue
        key = (record["problem_id"], normalise_text(record["text"]))
        if key in seen:
            count_event(counters, "samples_duplicate")
            continue
        seen.add(key)
        by_problem[record["problem_id"]].append(record)
    return by_problem


def rft_rows(records: Sequence[dict[str, Any]], counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """SFT rows from the verified-correct whole samples, each text once per problem."""
    rows = []
    for samples in _distinct_whole(records, counters).values():
        for record in samples:
            if not record["correct"]:
                continue
            rows.append({
                "prompt": record["prompt"], "completion": record["text"],
                "messages": [{"role": "user", "content": record["question"]},
                             {"role": "assistant", "content": record["text"]}],
                "question": record["question"], "answer": record["gold"], "dataset": record["dataset"],
                "problem_id": record["problem_id"], "sample_index": record["sample_index"],
                "generated_tokens": record["generated_tokens"], "predicted_answer": record["answer"],
                "ends_solution": True})
    return rows


def outcome_dpo_rows(records: Sequence[dict[str, Any]], config: ExtractConfig,
                     counters: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """(correct, wrong) whole-solution pairs per problem, by the `dpo` format's rules."""
    rows = []
    for samples in _distinct_whole(records, counters).values():
        correct = [r for r in samples if r["correct"]]
        wrong = [r for r in samples if not r["correct"]]
        kept = 0
        for chosen, rejected in ordered_pairs(correct, wrong):
            if config.max_pairs_per_tree and kept >= config.max_pairs_per_tree:
                count_event(counters, "pairs_over_max_pairs_per_tree")
                continue
            if near_duplicate(chosen["text"], rejected["text"], config.dedup_threshold):
                count_event(counters, "pairs_near_duplicate")
                continue
            kept += 1
            rows.append({
                "prompt": chosen["prompt"], "chosen": chosen["text"], "rejected": rejected["text"],
                "question": chosen["question"], "answer": chosen["gold"], "dataset": chosen["dataset"],
                "problem_id": chosen["problem_id"], "chosen_index": chosen["sample_index"],
                "rejected_index": rejected["sample_index"], "chosen_answer": chosen["answer"],
                "rejected_answer": rejected["answer"], "chosen_ends_solution": True, "rejected_ends_solution": True})
    return rows


def flat_rows(method: str, records: Sequence[dict[str, Any]], config: ExtractConfig,
              counters: dict[str, int] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of loop method `method` (rft or outcome-dpo) and their columns."""
    if method == "rft":
        return rft_rows(records, counters), RFT_COLUMNS
    if method == "outcome-dpo":
        return outcome_dpo_rows(records, config, counters), OUTCOME_DPO_COLUMNS
    raise ValueError(f"not a flat method: {method!r} (valid: {', '.join(FLAT_METHODS)})")
