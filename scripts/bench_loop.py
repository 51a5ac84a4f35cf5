"""Loop benchmark: two rounds of search → extract → train → evaluate on CPU, for step-dpo, step-apo,
tpo and step-dpo-value (+ a value model each round) trained from the SAME round-0 trees, and the flat baselines rft and outcome-dpo sampling the same
problems at the same generated-token budget; held-out greedy accuracy by round → WORK/loop.md + .json.

    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/bench_loop.py --work runs/bench_loop --budget-minutes 18
    # --methods tpo advances only that method in a piece (the round-0 search of step-dpo must exist)
    # rerun the same command until it prints "all done": each run resumes at phase granularity and
    # stops starting new phases once the budget is spent (so each locked piece stays < 20 min)
    .venv/bin/python scripts/bench_loop.py --work runs/bench_loop --report-only   # rewrite the report
    # a seed's work folder lost, arms rerun in a new one: the earlier report's other arms join in
    ... --report-only --report benchmarks/loop_grid/seed1.md --earlier-report benchmarks/loop_grid/seed1_first_run.json

The report goes to WORK/loop.md and WORK/loop.json (default work runs/bench_loop); `--publish`
writes the repository's benchmarks/loop.md and benchmarks/loop.json instead (`--report PATH`
anywhere). The committed files came from the command recorded in them, repeated until
`all done`; regenerate them with

    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/bench_loop.py --work runs/bench_loop2 \
        --config configs/loop_arithmetic_cpu.yaml --budget-minutes 18        # until it prints "all done"
    .venv/bin/python scripts/bench_loop.py --work runs/bench_loop2 --report-only --publish

Settings come from configs/loop_arithmetic_cpu.yaml (`--config`), with `method` set per run. The
first method's run (WORK/step-dpo) does the baseline evaluation and the round-0 search; the other
methods copy those (`mcts_po.loop.share_round0`) before they start, so all three train from the
same round-0 trees and are compared against the same baseline. The flat baselines (rft, outcome-dpo)
copy the baseline evaluation only: round k samples whole solutions of round k's problems until they
generated as many tokens as step-dpo's round-k search (`flat_budget_run`), so they wait for it.
step-dpo-value is step-dpo with a value model trained each round (mcts_po.loop_value) and mixed
into the next round's search, with the `value:` section and search weights of
configs/loop_arithmetic_value_cpu.yaml: its round 0 searches without a value model, so it shares
step-dpo's round-0 trees; its report adds each round's value-model and self-evaluation AUC on
that round's fresh trees. Its value model is fine-tuned on Q (backbone train, target q: the setting
seeds 0 and 2 ran); step-dpo-value-frozen (only with --methods) is the same arm with the value
model as shipped since (the head on the frozen policy, target outcome; benchmarks/value_data.md).
Ablations (only with --methods): step-dpo-any-ending (extract.same_ending off) and step-dpo-no-sft
(train.sft_weight 0), each against step-dpo with both on, also from the shared round-0 trees;
step-apo-equal-rows: step-apo trained each round on a seeded random subset of its rows, as many as
step-dpo extracted that round (the loop's `rows_budget_run`), against step-apo with all its rows.
`--seed S` sets the loops' one seed and moves every method to a fresh slice of training problems
(train_offset + S x rounds x problems_per_round); give each seed its own --work. Breadth first: a first pass takes
every method through round 0 (train, evaluate policy 1) and its round-1 search; a second pass
finishes round 1 (extract, train, evaluate policy 2), so a partial run still compares the methods.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
METHODS = ("step-dpo", "step-dpo-value", "step-apo", "tpo", "rft", "outcome-dpo")  # rft, outcome-dpo sample flat (mcts_po.flat_baselines)
# step-dpo-value: step-dpo plus a value model trained each round (mcts_po.loop_value), its `value:`
# section and search weights from this file; every other setting is --config's
VALUE_CONFIG = REPO / "configs" / "loop_arithmetic_value_cpu.yaml"
# (method, the file whose value: section and search weights it takes, value options over that section)
VALUE_METHODS = {
    # as measured on seeds 0 and 2 (2026-12-04/07): the value model fine-tuned (backbone and head) on Q
    "step-dpo-value": ("step-dpo", VALUE_CONFIG, {"backbone": "train", "target": "q"}),
    # the value model as shipped since: the head on the frozen policy, fitted to the verified outcome
    # (benchmarks/value_data.md); only with --methods, paired with step-dpo-value as well
    "step-dpo-value-frozen": ("step-dpo", VALUE_CONFIG, {}),
}
# ablations (issue #21), run with --methods (not in the default list): the two settings that changed
# together before, each turned off for step-dpo; and step-apo at step-dpo's rows
ABLATIONS = {"step-dpo-any-ending": ("step-dpo", "extract", "same_ending", False),
             "step-dpo-no-sft": ("step-dpo", "train", "sft_weight", 0.0),
             # step-apo trained on as many rows as step-dpo extracted in the same round (a seeded random subset)
             "step-apo-equal-rows": ("step-apo", None, "rows_budget_run", METHODS[0])}
VARIANTS = {"step-dpo-value-frozen": "step-dpo-value"}  # extra arms (with --methods) and the arm each changes
ALL_METHODS = METHODS + tuple(VARIANTS) + tuple(ABLATIONS)
PUBLISHED_REPORT = REPO / "benchmarks" / "loop.md"  # written with --publish


class BudgetSpent(Exception):
    pass


class PassDone(Exception):
    """The first pass stops each method before its round-1 training (breadth first over methods)."""


class BudgetedPhases:
    """Wraps the real phases: refuses to start a phase once the wall-clock budget is spent, and in the
    first pass stops before round 1's training, so that every method gets its round-0 result (and
    its round-1 search, on the same engine as its policy-1 evaluation) before any method finishes."""

    def __init__(self, inner, deadline: float, first_pass: bool = False):
        self.inner = inner
        self.deadline = deadline
        self.first_pass = first_pass

    def _check(self, name: str) -> None:
        if time.monotonic() > self.deadline:
            raise BudgetSpent(name)

    def search(self, *args, **kwargs):
        self._check("search")
        return self.inner.search(*args, **kwargs)

    def extract(self, *args, **kwargs):
        self._check("extract")
        return self.inner.extract(*args, **kwargs)

    def train(self, *args, **kwargs):
        if self.first_pass and args[0] >= 1:
            raise PassDone()
        self._check("train")
        return self.inner.train(*args, **kwargs)

    def value(self, *args, **kwargs):
        self._check("value")
        return self.inner.value(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        self._check("eval")
        return self.inner.evaluate(*args, **kwargs)

    def close(self):
        self.inner.close()


TASK_OPTIONS_OVERRIDE: dict | None = None  # --task-options
SEED = 0  # --seed


def load_config(path: Path, method: str, work: Path):
    from mcts_po.config_utils import load_yaml
    from mcts_po.flat_baselines import FLAT_METHODS
    from mcts_po.loop import LoopConfig

    values = load_yaml(path)
    if method in VALUE_METHODS:
        method, value_path, value_options = VALUE_METHODS[method]
        with_value = load_yaml(value_path)
        values["value"] = {**with_value["value"], **value_options}
        weights = ("self_eval_weight", "rollout_weight", "value_model_weight")
        values["search"] = {**values.get("search", {}), **{k: with_value["search"][k] for k in weights if k in with_value["search"]}}
    if method in ABLATIONS:
        method, section, key, value = ABLATIONS[method]
        if key == "rows_budget_run":  # a method of this benchmark: its run folder in WORK
            values[key] = str((work / value).resolve())
        else:
            values[section] = {**values.get(section, {}), key: value}
    values["method"] = method
    if TASK_OPTIONS_OVERRIDE is not None:
        values["task_options"] = dict(TASK_OPTIONS_OVERRIDE)
    if SEED:
        values["seed"] = SEED
        values["train_offset"] = int(values.get("train_offset", 0)) + SEED * int(values.get("rounds", 2)) * int(
            values.get("problems_per_round", 32))
    if values["method"] in FLAT_METHODS:
        values["flat_budget_run"] = str((work / METHODS[0]).resolve())
    return LoopConfig.from_yaml_dict(values, str(path))


def run_methods(work: Path, config_path: Path, budget_minutes: float, engines=None,
                methods: tuple[str, ...] = METHODS) -> bool:
    """Advance the methods' loops (all three unless `methods` names some) within the budget; True
    when they are finished. `engines`: a BackendCache to use (and close) instead of a new one."""
    from mcts_po.loop import BackendCache, LoopPhases, marker_path, run_loop, share_round0, stderr_log

    deadline = time.monotonic() + budget_minutes * 60
    first = work / METHODS[0]
    base_config = load_config(config_path, METHODS[0], work)
    # one engine cache for all the methods (one live engine, for one policy, at a time)
    if engines is None:
        engines = BackendCache(LoopPhases(base_config, stderr_log)._make_backend)
    before, started = finished_phases(work), time.time()
    try:
        return _run_methods(work, config_path, first, deadline, budget_minutes, engines, methods)
    finally:
        engines.close()
        stderr_log(f"engines started: {engines.engines_started}")
        log_piece(work, started, sorted(finished_phases(work) - before), methods)


def finished_phases(work: Path) -> set[str]:
    """The done-markers under WORK, as 'method/round_k/phase' (baseline: 'method/baseline_eval/eval')."""
    return {str(p.relative_to(work)).removesuffix(".done.json") for p in work.glob("*/*/*.done.json")}


def piece_machine() -> dict[str, Any]:
    from mcts_po.precision import cpu_has_native_bf16, cpu_model_name

    return {"cpu": cpu_model_name(), "cores": os.cpu_count(), "bf16_instructions": cpu_has_native_bf16(), "host": platform.node()}


def log_piece(work: Path, started: float, phases: list[str], methods: tuple[str, ...] | None = None) -> None:
    """Append this piece (commit, machine, its --methods, the phases it finished) to WORK/pieces.jsonl."""
    from mcts_po.io_utils import append_jsonl_lines
    from mcts_po.precision import source_commit

    commit = source_commit(REPO)
    record = {"started": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)),
              "finished": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "commit": commit,
              "machine": piece_machine(), "methods": list(methods) if methods else None, "phases": phases}
    work.mkdir(parents=True, exist_ok=True)
    append_jsonl_lines(work / "pieces.jsonl", [json.dumps(record)])


def _run_methods(work, config_path, first, deadline, budget_minutes, engines, methods) -> bool:
    from mcts_po.loop import LoopPhases, marker_path, run_loop, share_round0, stderr_log

    for first_pass, method in [(True, m) for m in methods] + [(False, m) for m in methods]:
        config = load_config(config_path, method, work)
        run_dir = work / method
        if method != METHODS[0]:
            if not marker_path(first / "round_0", "search").exists():
                stderr_log(f"{method}: waiting for the shared round-0 search of {METHODS[0]}")
                return False
            copied = share_round0(first, run_dir, search=not config.flat)
            if copied:
                stderr_log(f"{method}: reusing {', '.join(copied)} from {first}")
        phases = BudgetedPhases(LoopPhases(config, stderr_log, engines=engines), deadline, first_pass)
        stderr_log(f"=== {method} ({run_dir}), {'first pass: up to the round-1 search' if first_pass else 'second pass'}")
        try:
            run_loop(config, run_dir, phases=phases)
        except PassDone:
            continue
        except BudgetSpent as stop:
            stderr_log(f"budget of {budget_minutes} min spent before {method} {stop}; rerun to continue")
            return False
    return True


def read_earlier_report(path: Path, held_out: list[str] | None, config_text: str) -> dict:
    """An earlier report of the same seed (its .json), whose arms WORK no longer holds: it must have
    evaluated the same held-out problems with the same config, else a clear error."""
    from mcts_po.io_utils import UserError

    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"--earlier-report {path}: not a bench_loop report .json ({error})") from error
    if earlier.get("config") != config_text:
        raise UserError(f"--earlier-report {path}: its config differs from --config's; only arms of one config can share a report")
    if held_out and earlier.get("held_out_problem_ids") and earlier["held_out_problem_ids"] != held_out:
        raise UserError(f"--earlier-report {path}: its held-out problems differ from this run's")
    return earlier


def rerun_lines(results: dict, earlier: dict, path: Path) -> list[str]:
    """Which arms came from the earlier report, and, for arms both ran, whether the rerun repeated them."""
    lines = ["## Arms from an earlier run of this seed", "",
             f"The work folder of an earlier run of this seed is gone; the arms WORK does not hold come from its "
             f"report `{path.name}` (command: `{earlier.get('command')}`). Arms run in both (the shared round-0 "
             "search and the flat budgets need step-dpo in WORK) show whether the rerun repeated the earlier one.", "",
             "| method | from | policy | earlier correct/300 | rerun correct/300 | problems solved by only one of the two |",
             "|---|---|---|---|---|---|"]
    for method, metrics in results.items():
        if metrics.get("from_earlier_report"):
            last = last_policy(metrics)
            lines.append(f"| {method} | earlier report | {last['policy'] if last else '—'} | "
                         f"{last['correct'] if last else '—'} | — | — |")
    for method, old in earlier["results"].items():
        new = results.get(method)
        if new is None or new.get("from_earlier_report"):
            continue
        for old_policy in old["policies"]:
            new_policy = next((p for p in new["policies"] if p["policy"] == old_policy["policy"]), None)
            if new_policy is None or old_policy["policy"] == 0:
                continue
            differ = (len(set(old_policy.get("correct_problem_ids", [])) ^ set(new_policy.get("correct_problem_ids", [])))
                      if "correct_problem_ids" in old_policy and "correct_problem_ids" in new_policy else "—")
            lines.append(f"| {method} | both | {old_policy['policy']} | {old_policy['correct']} | {new_policy['correct']} | {differ} |")
    return lines + [""]


def write_report(work: Path, config_path: Path, report: Path, command: str, earlier_path: Path | None = None) -> dict:
    from mcts_po.loop import collect_metrics
    from mcts_po.loop_value import quality_by_round

    results, held_out = {}, None
    for method in ALL_METHODS:
        run_dir = work / method
        if (run_dir / "loop_config.json").exists():
            results[method] = collect_metrics(run_dir, load_config(config_path, method, work))
            for policy in results[method]["policies"]:  # which held-out problems it solved, for paired tests
                graded = greedy_correct_ids(policy_eval_dir(run_dir, policy["policy"]))
                if graded is not None:
                    held_out = held_out or graded[0]
                    policy["correct_problem_ids"] = graded[1]
    config_text = config_path.read_text(encoding="utf-8")
    earlier = read_earlier_report(earlier_path, held_out, config_text) if earlier_path else None
    if earlier:
        held_out = held_out or earlier.get("held_out_problem_ids")
        for method, metrics in earlier["results"].items():
            if method not in results:
                results[method] = {**metrics, "from_earlier_report": earlier_path.name}
        results = {m: results[m] for m in ALL_METHODS if m in results}
    data = {"command": command, "config_file": str(config_path.relative_to(REPO)), "config": config_text,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), {platform.python_version()}",
            "held_out_problem_ids": held_out, "results": results, "paired": paired_rows(results, held_out),
            "ablation_of": {m: ABLATIONS[m][0] if m in ABLATIONS else VARIANTS[m] for m in results
                            if m in ABLATIONS or m in VARIANTS}}
    if earlier:
        data["earlier_report"] = {"file": earlier_path.name, "command": earlier.get("command"),
                                  "methods": [m for m, r in results.items() if r.get("from_earlier_report")]}
    report.parent.mkdir(parents=True, exist_ok=True)
    report.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    lines = ["# Loop benchmark: SmolLM2-135M, arithmetic, two rounds on CPU", "",
             "Written by `scripts/bench_loop.py` from the runs' outputs (the Notes section is WORK/NOTES.md).", "",
             "Command (run under the shared CPU lock, repeated until it printed `all done`; it resumes per phase):", "",
             f"    {command}", "",
             f"Config: `{data['config_file']}` (method set per run); step-apo, tpo and the value arms reuse step-dpo's baseline "
             "evaluation and round-0 trees; rft and outcome-dpo reuse the baseline evaluation and sample whole "
             "solutions of the same problems until they generated step-dpo's search tokens of the same round "
             "(their `search` columns below are that sampling). Machine: " + data["machine"] + ".", "",
             *difficulty_lines(work),
             "## Held-out greedy accuracy by policy", "",
             "Policy 0 = SmolLM2-135M-Instruct; policy k+1 = trained in round k. 95 % Wilson interval in brackets.", "",
             "| method | policy 0 | policy 1 | policy 2 | gain (2 rounds) | training rows r0 / r1 |",
             "|---|---|---|---|---|---|"]
    for method, metrics in results.items():
        cells = []
        for index in range(3):
            entry = next((p for p in metrics["policies"] if p["policy"] == index), None)
            cells.append(f"{entry['accuracy']:.3f} [{entry['ci95'][0]:.3f}, {entry['ci95'][1]:.3f}] ({entry['correct']}/{entry['problems']})"
                         if entry else "not run")
        gain = f"{100 * metrics['accuracy_gain']:+.1f} pts" if metrics["accuracy_gain"] is not None and len(metrics["policies"]) == 3 else "—"
        rows = " / ".join(trained_rows(r) for r in metrics["rounds"]) or "—"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {gain} | {rows} |")
    if not any(metrics["policies"] for metrics in results.values()):
        lines.append("| (no evaluation has finished yet) | | | | | |")
    lines += ["", "## Wall time per phase (seconds)", "",
              "| method | round | search | extract | train | eval | search tokens | final train loss | final reward margin |",
              "|---|---|---|---|---|---|---|---|---|"]
    for method, metrics in results.items():
        for r in metrics["rounds"]:
            s = r["seconds"]
            train = r.get("train", {})
            fmt = lambda v: "—" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))
            lines.append(f"| {method} | {r['round']} | {fmt(s['search'])} | {fmt(s['extract'])} | {fmt(s['train'])} | "
                         f"{fmt(s['eval'])} | {fmt(r.get('search_generated_tokens'))} | {fmt(train.get('final_loss'))} | "
                         f"{fmt(train.get('final_reward_margin'))} |")
        baseline = next((p for p in metrics["policies"] if p["policy"] == 0), None)
        if baseline and method == METHODS[0]:
            lines.append(f"| {method} | baseline eval | | | | {baseline['eval_seconds']:.1f} | | | |")
    valued = {m: quality_by_round(metrics["rounds"]) for m, metrics in results.items()}
    if any(valued.values()):
        lines += ["", "## Value model vs self-evaluation on each round's fresh trees", "",
                  "Round k's search trees are problems no earlier round searched; value model k was trained on "
                  "the trees of rounds < k (none in round 0). AUC and Brier score against the subtree outcome of "
                  "every non-terminal step node (mcts_po/score_quality.py; value v counts as p = (v + 1) / 2).", "",
                  "| method | round | nodes | value model AUC | value model Brier | self-eval AUC | self-eval Brier |",
                  "|---|---|---|---|---|---|---|"]
        fmt = lambda v: "—" if v is None else f"{v:.3f}"
        for method, rows in valued.items():
            for q in rows:
                lines.append(f"| {method} | {q['round']} | {q['nodes']} | {fmt(q['value_model_auc'])} | "
                             f"{fmt(q['value_model_brier'])} | {fmt(q['self_eval_auc'])} | {fmt(q['self_eval_brier'])} |")
    lines += paired_lines(data["paired"])
    lines += ["", "The round-0 search and the baseline evaluation ran once (in the step-dpo run); step-apo, tpo and the value arms "
              "copied them, so their round-0 search time repeats step-dpo's. Extraction, training and evaluation "
              "ran per method.", ""]
    lines += pieces_lines(work)
    if earlier:
        lines += rerun_lines(results, earlier, earlier_path)
    notes = work / "NOTES.md"  # measured side notes written during the runs (e.g. backend speed)
    if notes.exists():
        lines += ["## Notes", "", notes.read_text(encoding="utf-8").strip(), ""]
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data


def policy_eval_dir(run_dir: Path, policy: int) -> Path:
    """Where the loop evaluated policy k: the baseline evaluation for 0, round k-1's eval phase else."""
    from mcts_po.loop import BASELINE_DIR

    return run_dir / BASELINE_DIR if policy == 0 else run_dir / f"round_{policy - 1}" / "eval"


def greedy_correct_ids(eval_dir: Path) -> tuple[list[str], list[str]] | None:
    """(all problem ids, the ids answered correctly) from an evaluation's results.jsonl; None if absent."""
    from mcts_po.evaluation import RESULTS_FILE
    from mcts_po.io_utils import read_jsonl

    path = eval_dir / RESULTS_FILE
    if not path.exists():
        return None
    records = [record for _, record in read_jsonl(path)]
    return [r["problem_id"] for r in records], sorted(r["problem_id"] for r in records if r["greedy_correct"])


PAIRED_REFERENCES = ("step-dpo", "rft")  # each method's last policy is paired with these methods' last policies


def paired_references(method: str) -> tuple[str, ...]:
    """step-dpo and rft, and for an ablation also the method it changes, each once (an ablation of
    step-dpo is paired with it once: a repeated row would count twice when loop_grid sums the seeds)."""
    base = (ABLATIONS[method][0],) if method in ABLATIONS else (VARIANTS[method],) if method in VARIANTS else ()
    return tuple(dict.fromkeys(PAIRED_REFERENCES + base))


def trained_rows(round_entry: dict) -> str:
    """The rows a round trained on ('41 of 92' when rows_budget_run took a subset of the extracted ones)."""
    train = round_entry.get("train") or {}
    if "rows_extracted" in train:
        return f"{train['rows']} of {train['rows_extracted']}"
    return str(round_entry.get("rows", "—"))


def last_policy(metrics: dict) -> dict | None:
    """The method's latest evaluated policy that carries its correct problem ids (None without one)."""
    graded = [p for p in metrics["policies"] if "correct_problem_ids" in p and p["policy"] > 0]
    return max(graded, key=lambda p: p["policy"]) if graded else None


def paired_rows(results: dict, held_out: list[str] | None) -> list[dict]:
    """Each method's last policy against step-dpo's and rft's at the same round, on the same held-out problems."""
    from mcts_po.comparisons import mcnemar_exact, paired_counts

    rows = []
    if not held_out:
        return rows
    for method, metrics in results.items():
        mine = last_policy(metrics)
        for reference in paired_references(method):
            if reference == method or reference not in results or mine is None:
                continue
            theirs = next((p for p in results[reference]["policies"]
                           if p["policy"] == mine["policy"] and "correct_problem_ids" in p), None)
            if theirs is None:
                continue
            counts = paired_counts(mine["correct_problem_ids"], theirs["correct_problem_ids"], held_out)
            rows.append({"method": method, "reference": reference, "policy": mine["policy"], **counts,
                         "difference": (counts["a_only"] - counts["b_only"]) / counts["problems"],
                         "mcnemar_p": mcnemar_exact(counts["a_only"], counts["b_only"])})
    return rows


def paired_lines(rows: list[dict]) -> list[str]:
    """The markdown table of paired_rows (nothing when no evaluation recorded its problems)."""
    if not rows:
        return []
    lines = ["", "## Paired comparisons on the same held-out problems", "",
             "Each method's last evaluated policy against step-dpo's (the tree baseline), rft's (the flat "
             "baseline) and, for an ablation, the method it changes, at the same round: problems only one of the two solves, and the exact two-sided McNemar "
             "p-value on those (mcts_po/comparisons.py). p < 0.05 is a difference on this seed; one seed is still "
             "one seed.", "",
             "| method | vs | policy | both | method only | other only | neither | difference | McNemar p |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['reference']} | {r['policy']} | {r['both']} | {r['a_only']} | "
                     f"{r['b_only']} | {r['neither']} | {100 * r['difference']:+.1f} pts | {r['mcnemar_p']:.3g} |")
    return lines


def pieces_lines(work: Path) -> list[str]:
    """A table of the pieces that ran (WORK/pieces.jsonl): when, which commit, which machine, what they finished."""
    path = work / "pieces.jsonl"
    if not path.exists():
        return []
    lines = ["## Pieces (which ran where)", "",
             "Each invocation of the command above, from WORK/pieces.jsonl. Phases finished before this log "
             "existed (2026-12-04, commits e52b1c9 and d21569a, the 2-core avx512_bf16 machine) are not listed; "
             "`--methods` is the piece's own (the command above omits it; pieces logged before it was recorded show —).", "",
             "| started (UTC) | finished | commit | machine | --methods | phases finished (run, or copied from step-dpo's run) |",
             "|---|---|---|---|---|---|"]
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        m = r["machine"]
        machine = f"{m['cores']} cores, {m['cpu']}, {'bf16' if m['bf16_instructions'] else 'no bf16 (AVX2-only)'}"
        methods = ",".join(r["methods"]) if r.get("methods") else "—"
        lines.append(f"| {r['started']} | {r['finished']} | {r['commit']} | {machine} | {methods} | "
                     f"{', '.join(r['phases']) or '—'} |")
    return lines + [""]


def difficulty_lines(work: Path) -> list[str]:
    """A table of the round-0 difficulty probe: WORK/difficulty/<name>/summary.json (mcts-po eval outputs)."""
    summaries = sorted((work / "difficulty").glob("*/summary.json"))
    if not summaries:
        return []
    lines = ["## Choosing the difficulty (SmolLM2-135M greedy, before any training)", "",
             "`mcts-po eval` summaries (the first held-out test problems of each setting); the loop uses the setting "
             "given by `--task-options` in the command above (else the config's), chosen for a greedy accuracy inside "
             "the 5-60 % band with at least 300 distinct test problems.", "",
             "| task options | problems | greedy accuracy [95 % CI] | backend | generated tokens | seconds |",
             "|---|---|---|---|---|---|"]
    for path in summaries:
        s = json.loads(path.read_text(encoding="utf-8"))
        g = s["greedy"]
        lines.append(f"| `{json.dumps(s['task_options'])}` | {s['problems']} | {g['accuracy']:.3f} "
                     f"[{g['ci95'][0]:.3f}, {g['ci95'][1]:.3f}] | {s['backend']} | {s['generated_tokens']} | {s['seconds']} |")
    return lines + [""]


def report_path(work: Path, report: str | None, publish: bool) -> Path:
    """--report, else benchmarks/loop.md with --publish, else WORK/loop.md."""
    if report:
        return Path(report)
    return PUBLISHED_REPORT if publish else work / "loop.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(REPO / "runs" / "bench_loop"), help="folder of the three loop runs")
    parser.add_argument("--config", default=str(REPO / "configs" / "loop_arithmetic_cpu.yaml"))
    parser.add_argument("--report", help="report (the .json goes beside it; default WORK/loop.md)")
    parser.add_argument("--publish", action="store_true",
                        help="write the report to the repository's benchmarks/loop.md (+ .json)")
    parser.add_argument("--budget-minutes", type=float, default=18.0, help="start no new phase after this many minutes")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from finished phases")
    parser.add_argument("--earlier-report", help="an earlier report .json of the same seed and config: its arms that "
                                                 "WORK does not hold join the report (and its paired tests)")
    parser.add_argument("--task-options", help="JSON object replacing the config's task_options (the difficulty)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the loops' one seed; also moves the training problems to a fresh slice (own --work per seed)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated methods to advance in this piece (the others wait for a later one); "
                             f"default the six, the ablations {', '.join(ABLATIONS)} only when named")
    args = parser.parse_args(argv)
    methods = tuple(m for m in args.methods.split(",") if m)
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        parser.error(f"--methods: {', '.join(unknown) or 'none given'}; choose from {', '.join(ALL_METHODS)}")
    global TASK_OPTIONS_OVERRIDE, SEED
    SEED = args.seed
    if args.task_options:
        TASK_OPTIONS_OVERRIDE = json.loads(args.task_options)
    if args.publish and args.report:
        parser.error("--publish writes benchmarks/loop.md; give it or --report, not both")
    work, config_path = Path(args.work), Path(args.config).resolve()
    report = report_path(work, args.report, args.publish)
    command = ("flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/bench_loop.py "
               f"--work {args.work} --config {os.path.relpath(config_path, REPO)} --budget-minutes {args.budget_minutes:g}"
               + (f" --task-options '{args.task_options}'" if args.task_options else "")
               + (f" --seed {args.seed}" if args.seed else ""))
    finished = True
    if not args.report_only:
        finished = run_methods(work, config_path, args.budget_minutes, methods=methods)
    earlier = Path(args.earlier_report) if args.earlier_report else None
    if earlier and earlier.resolve() == report.with_suffix(".json").resolve():
        parser.error("--earlier-report is the report's own .json, which this run overwrites; move it aside first")
    write_report(work, config_path, report, command, earlier)
    if not args.report_only:
        print("all done" if finished else "not finished: rerun the same command to continue", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
