"""Value-model benchmark: AUC vs self-evaluation on held-out trees, and MCTS with the value model vs MCTS
as shipped vs best-of-N / maj@N at equal generated tokens → WORK/value.md + .json (--publish: benchmarks/).

    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/bench_value.py \\
        --value-model runs/bench_loop_s0/step-dpo-value/round_0/value_model --budget-minutes 15
    # rerun the same command until it prints "all done" (each section is saved when it finishes,
    # and a search resumes per tree); then
    .venv/bin/python scripts/bench_value.py --value-model ... --report-only --publish
    # another value model on the same problems: --reuse-from copies the sections without the value
    # model (the shipped search, the flat samples) from an earlier WORK into a fresh one
    ... scripts/bench_value.py --value-model runs/value_data/frozen_1024_outcome --work runs/bench_value_1024 \\
        --reuse-from runs/bench_value_300 --arith-problems 300 --tasks arithmetic
    # a value model per task (each learned from that task's trees), added to the same WORK later:
    ... scripts/bench_value.py --value-model gsm8k=runs/value_gsm8k/frozen_256_outcome \\
        --work runs/bench_value_1024 --tasks gsm8k

The value model is one trained from trees (`mcts-po train --method value`, or a loop's
`round_k/value_model`): one folder for every task, or `task=folder` pairs, comma-separated (WORK
records each task's; a task's sections are never mixed across value models); the policy is
--model (SmolLM2-135M-Instruct by default). For each task
(`arithmetic`: the first --arith-problems test problems at the loop's difficulty, num_ops 1,
max_value 50, which no loop round searches; `gsm8k`: the first --gsm8k-problems test problems),
in this order, each a section of WORK/results.json:

- `mcts_default_T`: the search as shipped (self-evaluation 0.5 + rollout 0.5) → WORK/T/mcts_default;
- `mcts_value_T`: the same search with the value model alone (value_model_weight 1, the others 0):
  no verdict or rollout tokens; the value model runs on --value-backend (vllm: the pooling runner
  with prefix caching, `mcts_po.backends.vllm_value`; transformers: the whole path each time) and
  its seconds, and of them its one-time load, are reported on their own (the search summary's
  `value_model_seconds` / `value_model_load_seconds`);
- `flat_T`: whole solutions sampled (`mcts_po.flat_baselines.sample_to_budget`, temperature 0.7)
  to the larger of the two searches' generated tokens; best-of-N (a correct sample) and maj@N (the
  most frequent answer is correct) at each search's tokens use every problem's samples in the
  order they were drawn until that many tokens were generated;
- `auc_T`: the value model's and the stored self-evaluation's AUC / Brier against the subtree
  outcome on the step nodes of `mcts_default_T`'s trees (problems the value model never saw;
  the slowest section on CPU, the whole path through transformers for every node, so it runs last),
  with 95 % bootstrap intervals over trees and the paired difference of the two AUCs; every node's
  two scores go to WORK/T/auc_scores.jsonl.

Solved counts carry 95 % Wilson intervals. "solved" of a search = a verified-correct terminal
in its tree; `solved_with_rollouts` also counts a correct rollout. Throughput: generated tokens
over wall seconds of each search and of the flat sampling, on the same vllm engine.
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
sys.path.insert(0, str(REPO))

from mcts_po.evaluation import majority_answer, normalise_answer, wilson_interval  # noqa: E402
from mcts_po.io_utils import UserError, atomic_write_json, atomic_write_text  # noqa: E402
from mcts_po.precision import source_commit  # noqa: E402

TASKS = ("arithmetic", "gsm8k")
ARITH_OPTIONS = {"num_ops": 1, "max_value": 50}  # configs/loop_arithmetic_cpu.yaml's difficulty
SECTIONS = ("mcts_default", "mcts_value", "flat", "auc")


class BudgetSpent(Exception):
    pass


def search_settings(kind: str):
    """The loop configs' search and sampling; `kind` "value" scores by the value model alone."""
    from mcts_po.llm.config import SamplingConfig
    from mcts_po.search.config import SearchConfig

    weights = ({"self_eval_weight": 0.0, "rollout_weight": 0.0, "value_model_weight": 1.0,
                "use_self_eval": False, "use_rollout": False} if kind == "value" else {})
    search = SearchConfig(num_simulations=8, num_children=4, leaves_per_wave=2, max_depth=6, max_tokens=256,
                          seed=0, **weights)
    sampling = SamplingConfig(temperature=0.7, top_p=0.95, step_delimiter="\n", max_step_tokens=64,
                              rollout_max_tokens=160)
    return search, sampling


def task_source(args, task: str) -> dict[str, Any]:
    if task == "arithmetic":
        return {"task": "arithmetic", "task_options": dict(ARITH_OPTIONS), "split": "test", "limit": args.arith_problems}
    return {"task": "gsm8k", "task_options": {}, "split": "test", "limit": args.gsm8k_problems, "data": args.gsm8k_data}


def solved_entry(solved: int, problems: int, tokens: int, **extra: Any) -> dict[str, Any]:
    low, high = wilson_interval(solved, problems)
    return {"solved": solved, "problems": problems, "ci95": [round(low, 4), round(high, 4)],
            "generated_tokens": int(tokens), **extra}


def value_models_by_task(spec: str, tasks: list[str]) -> dict[str, str]:
    """--value-model → {task: resolved folder} for `tasks`: one folder for all, or `task=folder` pairs."""
    if "=" in spec:
        pairs = {}
        for item in (part.strip() for part in spec.split(",") if part.strip()):
            task, _, folder = item.partition("=")
            if task not in TASKS or not folder:
                raise UserError(f"--value-model {spec}: {item!r} is not task=folder with a task of {', '.join(TASKS)}")
            pairs[task] = folder
        missing = [t for t in tasks if t not in pairs]
        if missing:
            raise UserError(f"--value-model {spec} names no value model for {', '.join(missing)} (--tasks {','.join(tasks)})")
    else:
        pairs = {task: spec for task in tasks}
    for task, folder in pairs.items():
        if not Path(folder).is_dir():
            raise UserError(f"--value-model {folder} ({task}) is not a folder (train one: mcts-po train --method value)")
    return {task: str(Path(pairs[task]).resolve()) for task in tasks}


def merged_settings(stored: dict[str, Any] | None, settings: dict[str, Any], results_path: Path,
                    tasks_with_results: list[str]) -> dict[str, Any]:
    """WORK's settings with this run's: the policy, problem counts and value backend must be the same; each
    task keeps the value model its sections were measured with (a run before per-task value models
    stored one `value_model`, which holds for the tasks that have results)."""
    if not stored:
        return settings
    stored = dict(stored)
    stored.setdefault("value_backend", "transformers")  # the only one before the option
    if "value_model" in stored:
        one = stored.pop("value_model")
        stored["value_models"] = {task: one for task in tasks_with_results}
    differ = [k for k in settings if k != "value_models" and stored.get(k) != settings[k]]
    differ += [f"value_models.{task}" for task, folder in settings["value_models"].items()
               if stored["value_models"].get(task, folder) != folder]
    if differ:
        raise UserError(f"{results_path} holds results of other settings ({', '.join(differ)}: {stored}); use another --work")
    return {**stored, "value_models": {**stored["value_models"], **settings["value_models"]}}


def run_search(args, task: str, kind: str, work: Path, backend) -> dict[str, Any]:
    from mcts_po.search_runner import SearchJob, run_search_job
    from mcts_po.tree_io import read_tree_file

    search, sampling = search_settings(kind)
    out = work / task / f"mcts_{kind}"
    job = SearchJob(out=str(out), model=args.model, backend="vllm", search=search, sampling=sampling,
                    problems_in_flight=32, greedy_baseline=False, progress=False,
                    value_model=args.value_models[task] if kind == "value" else None, value_model_device="cpu",
                    value_model_backend=args.value_backend, **task_source(args, task))
    started = time.perf_counter()
    summary = run_search_job(job, backend=backend)
    wall = time.perf_counter() - started
    trees = read_tree_file(out / "trees.jsonl")
    with_rollouts = sum(1 for t in trees if t.has_correct_terminal() or any(
        (n.rollout_value or 0) > 0 for n in t.nodes))
    now = summary["this_invocation"]
    resumed = now.get("problems_searched_now", len(trees)) != len(trees)
    load = now.get("value_model_load_seconds", 0.0)  # the value model's one-time start (a vLLM engine)
    tokens = summary["generated_tokens"]
    return solved_entry(summary["problems_with_correct_terminal"], len(trees), tokens,
                        solved_with_rollouts=with_rollouts, nodes=summary["nodes"], wall_seconds=round(wall, 1),
                        generated_tokens_per_second=round(tokens / wall, 1) if not resumed else None,
                        generated_tokens_per_second_after_load=round(tokens / (wall - load), 1)
                        if not resumed and kind == "value" else None,
                        value_model_seconds=round(now.get("value_model_seconds", 0.0), 1),
                        value_model_load_seconds=round(load, 1), value_model_calls=now.get("value_model_calls", 0),
                        value_model_nodes=now.get("value_model_nodes", 0),
                        value_backend=args.value_backend if kind == "value" else None, run=str(out))


def run_auc(args, task: str, work: Path) -> dict[str, Any]:
    from mcts_po.llm.value_guide import ValueGuide
    from mcts_po.score_quality import outcome_step_nodes, value_and_self_eval_quality
    from mcts_po.tree_io import read_tree_file

    trees = read_tree_file(work / task / "mcts_default" / "trees.jsonl")
    keys = outcome_step_nodes(trees)  # the nodes AUC and Brier are over
    started = time.perf_counter()
    guide = ValueGuide(args.value_models[task], device="cpu", batch_size=16)
    scores = dict(zip(keys, guide.score(trees, keys))) if keys else {}
    seconds = time.perf_counter() - started
    # every node's two scores, so that a later report can compare them (or another value model's) again
    atomic_write_text(work / task / "auc_scores.jsonl", "".join(
        json.dumps({"tree": t, "tree_id": trees[t].tree_id, "node": n, "value_model": scores[(t, n)],
                    "self_eval": trees[t].nodes[n].self_eval}) + "\n" for t, n in keys))
    quality = value_and_self_eval_quality(trees, scores, intervals=True)
    quality["score_seconds"] = round(seconds, 1)
    return quality


def take_to_tokens(records: list[dict[str, Any]], tokens: int) -> list[dict[str, Any]]:
    """The samples in the order drawn (wave, then position) until `tokens` generated tokens."""
    taken, used = [], 0
    for record in sorted(records, key=lambda r: (r["wave"], r["problem_id"], r["sample_index"])):
        if used >= tokens:
            break
        taken.append(record)
        used += record["generated_tokens"]
    return taken


def solved_by_samples(records: list[dict[str, Any]]) -> set[str]:
    """The problems with a correct sample among `records` (best-of-N's)."""
    return {r["problem_id"] for r in records if r["correct"]}


def solved_by_search(search: Path) -> tuple[set[str], set[str]]:
    """(the problems with a verified-correct terminal, all problems) of a search folder's trees."""
    from mcts_po.tree_io import read_tree_file

    trees = read_tree_file(search / "trees.jsonl")
    return {t.problem_id for t in trees if t.has_correct_terminal()}, {t.problem_id for t in trees}


def best_and_majority(records: list[dict[str, Any]], problems: int) -> tuple[int, int, int]:
    """(problems with a correct sample, problems whose most frequent answer is correct, tokens);
    the vote is `mcts_po.evaluation.majority_answer` over each problem's samples in drawing order."""
    by_problem: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(records, key=lambda r: r["sample_index"]):
        by_problem.setdefault(record["problem_id"], []).append(record)
    best = len(solved_by_samples(records))
    majority = 0
    for rs in by_problem.values():
        top = majority_answer([r["answer"] for r in rs])
        if top is not None:
            majority += any(r["correct"] for r in rs
                            if r["answer"] is not None and normalise_answer(r["answer"]) == normalise_answer(top))
    return best, majority, sum(r["generated_tokens"] for r in records)


def run_flat(args, task: str, work: Path, results: dict[str, Any], backend) -> dict[str, Any]:
    from mcts_po.flat_baselines import read_samples, sample_to_budget
    from mcts_po.tasks import get_task

    source = task_source(args, task)
    task_obj = get_task(task, **source["task_options"])
    problems = task_obj.load(split="test", limit=source["limit"], path=source.get("data"))
    arms = {kind: results[f"mcts_{kind}_{task}"] for kind in ("default", "value")}
    budget = max(arm["generated_tokens"] for arm in arms.values())
    out_file = work / task / "flat" / "samples.jsonl"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary = sample_to_budget(backend, task_obj, problems, budget, out_file=out_file, temperature=0.7, top_p=0.95,
                               max_tokens=400)
    wall = time.perf_counter() - started
    records = read_samples(out_file)
    entry: dict[str, Any] = {"sampling": summary, "wall_seconds": round(wall, 1),
                             "generated_tokens_per_second": round(summary["generated_tokens"] / wall, 1)
                             if summary["resumed_samples"] == 0 else None}
    reused = results.get("reused", {}).get(f"flat_{task}")
    if reused and summary["resumed_samples"] == summary["samples"]:  # all copied (--reuse-from): its own timing
        entry.update({k: reused["entry"][k] for k in ("sampling", "wall_seconds", "generated_tokens_per_second")},
                     reused_from=reused["from"])
    for kind, arm in arms.items():
        best, majority, tokens = best_and_majority(take_to_tokens(records, arm["generated_tokens"]), len(problems))
        entry[f"at_mcts_{kind}_tokens"] = {"best_of_n": solved_entry(best, len(problems), tokens),
                                          "maj_at_n": solved_entry(majority, len(problems), tokens)}
    return entry


REUSABLE = ("mcts_default", "flat")  # the sections that do not involve the value model


def reuse_sections(source: Path, work: Path, tasks: list[str], results: dict[str, Any],
                   settings: dict[str, Any]) -> list[str]:
    """--reuse-from: copy into a fresh WORK what another value model's run of this benchmark measured
    without the value model, for the same policy and problems: the shipped search (its record and
    trees) and the flat samples (their best-of-N / maj@N are counted again at this run's value
    search's tokens, which the samples must reach; their timing is kept). Return the sections taken."""
    import shutil

    source_results = json.loads((source / "results.json").read_text()) if (source / "results.json").exists() else {}
    theirs = source_results.get("settings", {})
    differ = [k for k in ("model", "arith_problems", "gsm8k_problems") if theirs.get(k) != settings[k]]
    if not theirs or differ:
        raise UserError(f"--reuse-from {source}: " + (f"its settings differ in {', '.join(differ)} ({theirs})" if theirs
                                                      else "no results.json with settings there"))
    taken = []
    for task in tasks:
        names = [f"{section}_{task}" for section in REUSABLE]
        if any(name in results for name in names) or not all(name in source_results for name in names):
            continue
        for section in REUSABLE:
            if not (work / task / section).exists():
                shutil.copytree(source / task / section, work / task / section)
        results[f"mcts_default_{task}"] = {**source_results[f"mcts_default_{task}"],
                                           "run": str(work / task / "mcts_default"), "reused_from": str(source)}
        results.setdefault("reused", {})[f"flat_{task}"] = {"from": str(source),
                                                            "entry": source_results[f"flat_{task}"]}
        taken += names
    for piece in source_results.get("pieces", []):
        sections = [name for name in piece["sections"] if name in taken]
        if sections:
            results.setdefault("pieces", []).append({**piece, "sections": sections, "reused_from": str(source)})
    return taken


def paired_with_flat(work: Path, task: str, results: dict[str, Any]) -> dict[str, Any]:
    """Each search against best-of-N at its tokens on the same problems: the discordant counts (solved
    by the search only, by best-of-N only) and the exact McNemar p, from WORK's trees and samples."""
    from mcts_po.comparisons import mcnemar_exact, paired_counts
    from mcts_po.flat_baselines import read_samples

    records = read_samples(work / task / "flat" / "samples.jsonl")
    out = {}
    for kind in ("default", "value"):
        searched, problems = solved_by_search(work / task / f"mcts_{kind}")
        sampled = solved_by_samples(take_to_tokens(records, results[f"mcts_{kind}_{task}"]["generated_tokens"]))
        counts = paired_counts(searched, sampled, problems)
        out[f"mcts_{kind}_vs_best_of_n"] = {"search_only": counts["a_only"], "best_of_n_only": counts["b_only"],
                                            "both": counts["both"], "neither": counts["neither"],
                                            "mcnemar_p": mcnemar_exact(counts["a_only"], counts["b_only"])}
    return out


def paired_with_earlier_value_search(work: Path, task: str, earlier_work: Path) -> dict[str, Any] | None:
    """With --reuse-from: this run's value-guided search against the reused run's (another value model)
    on the same problems: solved by this one only, by the earlier only, exact McNemar p."""
    from mcts_po.comparisons import mcnemar_exact, paired_counts

    earlier = earlier_work / task / "mcts_value"
    if not (earlier / "trees.jsonl").exists():
        return None
    this_solved, problems = solved_by_search(work / task / "mcts_value")
    earlier_solved, earlier_problems = solved_by_search(earlier)
    if problems != earlier_problems:
        raise UserError(f"{earlier / 'trees.jsonl'} searched other problems than {work / task / 'mcts_value'}")
    counts = paired_counts(this_solved, earlier_solved, problems)
    return {"earlier": str(earlier), "this_solved": len(this_solved), "earlier_solved": len(earlier_solved),
            "this_only": counts["a_only"], "earlier_only": counts["b_only"],
            "mcnemar_p": mcnemar_exact(counts["a_only"], counts["b_only"])}


def headline(results: dict[str, Any], task: str, value_model: str | None = None) -> dict[str, Any] | None:
    """The keys issue #20 asks for, for one task (None until its sections ran), and its value model."""
    need = [f"{s}_{task}" for s in SECTIONS]
    if any(k not in results for k in need):
        return None
    flat = results[f"flat_{task}"]
    at_value = flat["at_mcts_value_tokens"]
    auc = results[f"auc_{task}"]
    value_run = results[f"mcts_value_{task}"]
    flat_speed = flat["generated_tokens_per_second"]
    return {
        "value_model": value_model,
        "auc": {"value_model": auc["value_model"]["auc"] if auc["value_model"] else None,
                "self_eval": auc["self_eval"]["auc"] if auc["self_eval"] else None,
                "value_model_brier": auc["value_model"]["brier"] if auc["value_model"] else None,
                "self_eval_brier": auc["self_eval"]["brier"] if auc["self_eval"] else None,
                "nodes": auc["value_model"]["nodes"] if auc["value_model"] else 0,
                # 95 % intervals over trees and the paired difference (runs measured at 819f08b or later)
                "value_model_ci95": (auc["value_model"] or {}).get("auc_ci95"),
                "self_eval_ci95": (auc["self_eval"] or {}).get("auc_ci95"),
                "value_minus_self_eval": auc.get("value_minus_self_eval")},
        "equal_tokens": {
            "mcts_value": {k: value_run[k] for k in ("solved", "problems", "ci95", "generated_tokens")},
            "mcts_default": {k: results[f"mcts_default_{task}"][k] for k in ("solved", "problems", "ci95", "generated_tokens")},
            "best_of_n": at_value["best_of_n"], "maj_at_n": at_value["maj_at_n"],
            "best_of_n_at_mcts_default_tokens": flat["at_mcts_default_tokens"]["best_of_n"],
            "maj_at_n_at_mcts_default_tokens": flat["at_mcts_default_tokens"]["maj_at_n"],
            "paired": results.get(f"paired_{task}"),
            "mcts_value_vs_earlier_value_model": results.get(f"paired_earlier_value_{task}"),
        },
        "throughput_vs_flat": {
            "mcts_value": round(value_run["generated_tokens_per_second"] / flat_speed, 3)
            if value_run.get("generated_tokens_per_second") and flat_speed else None,
            "mcts_default": round(results[f"mcts_default_{task}"]["generated_tokens_per_second"] / flat_speed, 3)
            if results[f"mcts_default_{task}"].get("generated_tokens_per_second") and flat_speed else None,
            "mcts_value_after_load": round(value_run["generated_tokens_per_second_after_load"] / flat_speed, 3)
            if value_run.get("generated_tokens_per_second_after_load") and flat_speed else None,
            "value_model_seconds": value_run["value_model_seconds"],
            "value_model_load_seconds": value_run.get("value_model_load_seconds"),
            "value_backend": value_run.get("value_backend") or "transformers",
            "mcts_value_wall_seconds": value_run["wall_seconds"],
        },
    }


def write_report(results: dict[str, Any], meta: dict[str, Any], target: Path) -> None:
    value_models = meta.get("value_models", {})
    data = {"meta": meta, **{task: headline(results, task, value_models.get(task)) for task in TASKS}, "sections": results}
    atomic_write_json(target.with_suffix(".json"), data)
    lines = ["# Value model: AUC and equal-token search on held-out problems", "",
             f"Report written by `scripts/bench_value.py` ({meta['command']}), commit {meta['commit']}, {meta['machine']}. "
             f"Value models (each learned from its task's trees): "
             + "; ".join(f"{task} `{folder}`" for task, folder in value_models.items())
             + f"; policy {meta['model']}. 95 % Wilson intervals.", ""]
    for piece in meta.get("pieces", []):
        lines.append(f"- measured by `{piece['command']}` at commit {piece['commit']} ({piece['machine']}): "
                     f"{', '.join(piece['sections'])}"
                     + (f" (copied from `{piece['reused_from']}` by --reuse-from)" if piece.get("reused_from") else ""))
    lines.append("")
    for task in TASKS:
        lines.append(f"## {task}")
        lines.append("")
        if value_models.get(task):
            lines += [f"Value model: `{value_models[task]}`.", ""]
        done = [s for s in SECTIONS if f"{s}_{task}" in results]
        if not done:
            lines += ["(not run yet)", ""]
            continue
        auc = results.get(f"auc_{task}")
        if auc:
            fmt = lambda q, k: "—" if not q or q.get(k) is None else f"{q[k]:.3f}"
            ci = lambda q: "—" if not q or not q.get("auc_ci95") else f"[{q['auc_ci95'][0]:.3f}, {q['auc_ci95'][1]:.3f}]"
            lines += ["| scores | nodes | AUC | 95 % CI over trees | Brier |", "|---|---|---|---|---|",
                      f"| value model | {auc['value_model']['nodes'] if auc['value_model'] else 0} | "
                      f"{fmt(auc['value_model'], 'auc')} | {ci(auc['value_model'])} | {fmt(auc['value_model'], 'brier')} |",
                      f"| self-evaluation | {auc['self_eval']['nodes'] if auc['self_eval'] else 0} | "
                      f"{fmt(auc['self_eval'], 'auc')} | {ci(auc['self_eval'])} | {fmt(auc['self_eval'], 'brier')} |", ""]
            paired_auc = auc.get("value_minus_self_eval")
            if paired_auc and paired_auc.get("difference") is not None:
                dci = paired_auc["ci95"]
                lines += [f"Value model minus self-evaluation on the {paired_auc['nodes']} nodes with both: AUC "
                          f"{paired_auc['difference']:+.3f}" + (f" [{dci[0]:+.3f}, {dci[1]:+.3f}]" if dci else "")
                          + " (paired bootstrap over trees).", ""]
        lines += ["| method | solved | 95 % CI | generated tokens | tok/s | note |", "|---|---|---|---|---|---|"]
        for kind in ("default", "value"):
            arm = results.get(f"mcts_{kind}_{task}")
            if arm:
                note = (f"with rollouts {arm['solved_with_rollouts']}; value model ({arm.get('value_backend') or 'transformers'}) "
                        f"{arm['value_model_seconds']} s, of which loading {arm.get('value_model_load_seconds', '?')} s; "
                        f"tok/s after loading {arm.get('generated_tokens_per_second_after_load') or '—'}"
                        if kind == "value" else f"with rollouts {arm['solved_with_rollouts']}")
                lines.append(f"| MCTS {'+ value model' if kind == 'value' else 'as shipped'} | {arm['solved']}/{arm['problems']} | "
                             f"[{arm['ci95'][0]:.3f}, {arm['ci95'][1]:.3f}] | {arm['generated_tokens']} | "
                             f"{arm['generated_tokens_per_second']} | {note} |")
        flat = results.get(f"flat_{task}")
        if flat:
            for kind in ("default", "value"):
                for name, label in (("best_of_n", "best-of-N"), ("maj_at_n", "maj@N")):
                    e = flat[f"at_mcts_{kind}_tokens"][name]
                    lines.append(f"| {label} at MCTS {kind}'s tokens | {e['solved']}/{e['problems']} | "
                                 f"[{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}] | {e['generated_tokens']} | "
                                 f"{flat['generated_tokens_per_second']} | |")
        paired = results.get(f"paired_{task}")
        if paired:
            lines += ["", "Paired on the same problems (a verified-correct terminal in the tree against a correct sample "
                      "among best-of-N's at the search's tokens; exact McNemar):", "",
                      "| search | vs | search only | best-of-N only | both | McNemar p |", "|---|---|---|---|---|---|"]
            for kind in ("default", "value"):
                e = paired[f"mcts_{kind}_vs_best_of_n"]
                lines.append(f"| MCTS {'+ value model' if kind == 'value' else 'as shipped'} | best-of-N at its tokens | "
                             f"{e['search_only']} | {e['best_of_n_only']} | {e['both']} | {e['mcnemar_p']:.3g} |")
        earlier = results.get(f"paired_earlier_value_{task}")
        if earlier:
            lines += ["", f"This value model's search against the value-guided search of `{earlier['earlier']}` (the run "
                      f"--reuse-from took its other sections from; another value model), same problems: "
                      f"{earlier['this_solved']} against {earlier['earlier_solved']} solved, {earlier['this_only']} by "
                      f"this one only, {earlier['earlier_only']} by the earlier only, exact McNemar p {earlier['mcnemar_p']:.3g}."]
        lines.append("")
    atomic_write_text(target, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--value-model", help="folder of a trained value model, or task=folder pairs, comma-separated "
                        "(arithmetic=...,gsm8k=...); --report-only takes WORK's")
    parser.add_argument("--model", default="smollm2-135m", help="the policy")
    parser.add_argument("--work", default=str(REPO / "runs" / "bench_value"))
    parser.add_argument("--publish", action="store_true", help="write benchmarks/value.md and .json")
    parser.add_argument("--report", help="write the report here instead (the .json goes beside it)")
    parser.add_argument("--arith-problems", type=int, default=300)
    parser.add_argument("--gsm8k-problems", type=int, default=100)
    parser.add_argument("--gsm8k-data", default=str(REPO.parent / "shared" / "data" / "gsm8k"))
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--budget-minutes", type=float, default=15.0, help="start no new section after this many minutes")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--reuse-from", help="another value model's WORK (same policy and problems): copy its shipped "
                        "search and flat samples instead of running them again (a fresh --work only)")
    parser.add_argument("--value-backend", default="vllm", choices=("vllm", "transformers"),
                        help="what runs the value model in the search (the AUC section scores with transformers)")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    if any(t not in TASKS for t in tasks):
        parser.error(f"--tasks takes {', '.join(TASKS)}")
    if not args.value_model and not args.report_only:
        parser.error("--value-model is required (but with --report-only)")
    args.value_models = value_models_by_task(args.value_model, tasks) if args.value_model else {}
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    settings = {"value_models": args.value_models, "model": args.model,
                "arith_problems": args.arith_problems, "gsm8k_problems": args.gsm8k_problems,
                "value_backend": args.value_backend}
    with_results = [t for t in TASKS if any(f"{s}_{t}" in results for s in ("mcts_value", "auc"))]
    results["settings"] = merged_settings(results.get("settings"), settings, results_path, with_results)
    if args.reuse_from and not args.report_only:
        taken = reuse_sections(Path(args.reuse_from), work, tasks, results, settings)
        if taken:
            atomic_write_json(results_path, results)
            print(f"taken from {args.reuse_from}: {', '.join(taken)}", file=sys.stderr)
    commit = source_commit(REPO)
    meta = {"command": "scripts/bench_value.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "commit": commit, "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "value_models": results["settings"]["value_models"], "model": args.model}
    target = Path(args.report) if args.report else REPO / "benchmarks" / "value.md" if args.publish else work / "value.md"
    finished = True
    if not args.report_only:
        done_before = set(results)
        try:
            finished = run_sections(args, tasks, work, results, results_path)
        finally:  # also when a section failed: the sections finished before it keep their record
            ran = sorted(set(results) - done_before)
            if ran:  # which command, commit and machine measured which sections
                results.setdefault("pieces", []).append({**{k: meta[k] for k in ("command", "commit", "machine")},
                                                         "sections": ran})
                atomic_write_json(results_path, results)
    for task in tasks:  # derived from WORK's files, once both searches and the samples are there
        if f"paired_{task}" not in results and all(f"{s}_{task}" in results for s in ("mcts_default", "mcts_value", "flat")):
            results[f"paired_{task}"] = paired_with_flat(work, task, results)
            atomic_write_json(results_path, results)
        reused = results.get("reused", {}).get(f"flat_{task}")
        if reused and f"paired_earlier_value_{task}" not in results and f"mcts_value_{task}" in results:
            paired = paired_with_earlier_value_search(work, task, Path(reused["from"]))
            if paired:
                results[f"paired_earlier_value_{task}"] = paired
                atomic_write_json(results_path, results)
    meta["pieces"] = results.get("pieces", [])
    write_report({k: v for k, v in results.items() if k not in ("settings", "pieces", "reused")}, meta, target)
    if not args.report_only:
        print("all done" if finished else "not finished: rerun the same command to continue", file=sys.stderr)
    return 0


def run_sections(args, tasks, work: Path, results: dict[str, Any], results_path: Path) -> bool:
    from mcts_po.backends import make_backend

    deadline = time.monotonic() + args.budget_minutes * 60
    backend = None
    try:
        for task in tasks:
            for section in SECTIONS:
                name = f"{section}_{task}"
                if name in results:
                    continue
                if time.monotonic() > deadline:
                    print(f"budget of {args.budget_minutes:g} min spent before {name}", file=sys.stderr)
                    return False
                if section != "auc" and backend is None:
                    backend = make_backend("vllm", model=args.model, seed=0)
                print(f"[bench_value {time.strftime('%H:%M:%S')}] {name}: started", file=sys.stderr, flush=True)
                if section == "auc":
                    results[name] = run_auc(args, task, work)
                elif section == "flat":
                    results[name] = run_flat(args, task, work, results, backend)
                else:
                    results[name] = run_search(args, task, section.split("_")[1], work, backend)
                atomic_write_json(results_path, results)
                print(f"[bench_value {time.strftime('%H:%M:%S')}] {name}: done", file=sys.stderr, flush=True)
        return True
    finally:
        if backend is not None:
            backend.close()


if __name__ == "__main__":
    sys.exit(main())
