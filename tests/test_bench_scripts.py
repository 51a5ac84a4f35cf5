"""The benchmark scripts start, and write their results under runs/ unless told to publish.

    pytest tests/test_bench_scripts.py -q

Every script in scripts/ answers `--help`; the ones whose results are committed under
benchmarks/ take `--publish` (or `--out benchmarks/...`) and otherwise write to a run folder.
bench_search's own bookkeeping is tested in tests/test_bench_search.py.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

SCRIPTS = sorted(p.name for p in (REPO_ROOT / "scripts").glob("*.py"))
PUBLISHING = {"bench_search.py", "bench_loop.py", "measure_extraction.py", "bench_precision.py", "bench_math.py",
              "check_demo_reproducibility.py", "probe_vllm_cpu_threads.py", "bench_routing.py",
              "bench_value.py", "probe_value_scorers.py", "loop_grid.py", "bench_value_data.py", "probe_logit_head.py",
              "probe_logprob_ids.py", "probe_value_layers.py",
              "probe_value_top_layers.py"}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_under_test_{name[:-3]}", REPO_ROOT / "scripts" / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_starts(name):
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / name), "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
    assert ("--publish" in done.stdout) == (name in PUBLISHING)


def test_bench_loop_report_goes_to_the_work_folder(tmp_path):
    bench_loop = load_script("bench_loop.py")
    published = REPO_ROOT / "benchmarks" / "loop.md"
    before = published.read_bytes()
    assert bench_loop.main(["--work", str(tmp_path), "--report-only"]) == 0
    data = json.loads((tmp_path / "loop.json").read_text())
    assert data["results"] == {} and data["config_file"] == "configs/loop_arithmetic_cpu.yaml"
    assert "(no evaluation has finished yet)" in (tmp_path / "loop.md").read_text()
    assert published.read_bytes() == before
    assert bench_loop.report_path(tmp_path, None, publish=True) == published
    assert bench_loop.report_path(tmp_path, str(tmp_path / "x.md"), publish=True) == tmp_path / "x.md"


def test_bench_loop_flat_baselines_take_step_dpos_budget_and_a_seed_moves_every_methods_problems(tmp_path):
    bench_loop = load_script("bench_loop.py")
    config_path = REPO_ROOT / "configs" / "loop_arithmetic_cpu.yaml"
    tree, flat = (bench_loop.load_config(config_path, m, tmp_path) for m in ("step-dpo", "rft"))
    assert flat.flat_budget_run == str((tmp_path / "step-dpo").resolve()) and tree.flat_budget_run == ""
    assert (flat.extract_format, tree.train_offset, tree.seed) == ("sft", 0, 0)
    try:
        bench_loop.SEED = 2
        seeded = [bench_loop.load_config(config_path, m, tmp_path) for m in ("tpo", "outcome-dpo")]
    finally:
        bench_loop.SEED = 0
    shift = 2 * tree.rounds * tree.problems_per_round
    assert [(c.seed, c.train_offset) for c in seeded] == [(2, shift), (2, shift)]


def test_bench_loop_value_arm_is_step_dpo_plus_the_value_configs_value_settings(tmp_path):
    import dataclasses

    from mcts_po.config_utils import load_yaml

    bench_loop = load_script("bench_loop.py")
    config_path = REPO_ROOT / "configs" / "loop_arithmetic_cpu.yaml"
    tree, valued = (bench_loop.load_config(config_path, m, tmp_path) for m in ("step-dpo", "step-dpo-value"))
    assert valued.method == "step-dpo" and valued.value.enabled and not tree.value.enabled
    assert valued.search.value_model_weight == 1.0 and tree.search.value_model_weight == 0.0
    same = dataclasses.replace(valued, value=tree.value, search=dataclasses.replace(valued.search, value_model_weight=0.0))
    assert same == tree  # round 0 (no value model yet) searches and trains exactly as step-dpo
    # step-dpo-value keeps the value model seeds 0 and 2 measured; the frozen arm differs in that alone
    frozen = bench_loop.load_config(config_path, "step-dpo-value-frozen", tmp_path)
    assert (valued.value.options.backbone, valued.value.options.target) == ("train", "q")
    assert (frozen.value.options.backbone, frozen.value.options.target) == ("frozen", "outcome")
    assert dataclasses.replace(frozen, value=valued.value) == valued
    assert bench_loop.paired_references("step-dpo-value-frozen") == ("step-dpo", "rft", "step-dpo-value")
    # the shipped value config is the plain one plus its value settings, so `mcts-po loop` with it
    # compares with the plain config's run
    plain, with_value = load_yaml(config_path), load_yaml(bench_loop.VALUE_METHODS["step-dpo-value"][1])
    with_value.pop("value")
    assert with_value["search"].pop("value_model_weight") == 1.0
    assert {k: with_value["search"].pop(k) for k in ("self_eval_weight", "rollout_weight")} == {
        "self_eval_weight": 0.5, "rollout_weight": 0.5}  # the defaults, which the plain config leaves out
    assert with_value == plain


def test_bench_loop_ablations_turn_off_one_setting_each(tmp_path):
    import dataclasses

    bench_loop = load_script("bench_loop.py")
    config_path = REPO_ROOT / "configs" / "loop_arithmetic_cpu.yaml"
    tree, any_ending, no_sft = (bench_loop.load_config(config_path, m, tmp_path)
                                for m in ("step-dpo", "step-dpo-any-ending", "step-dpo-no-sft"))
    assert (tree.extract.same_ending, tree.train.sft_weight) == (True, 1.0)
    assert any_ending == dataclasses.replace(tree, extract=dataclasses.replace(tree.extract, same_ending=False))
    assert no_sft == dataclasses.replace(tree, train=dataclasses.replace(tree.train, sft_weight=0.0))
    assert "step-dpo-no-sft" not in bench_loop.METHODS and "step-dpo-no-sft" in bench_loop.ALL_METHODS


def test_bench_loop_logs_each_piece_with_its_commit_machine_and_phases(tmp_path):
    bench_loop = load_script("bench_loop.py")
    (tmp_path / "step-dpo" / "round_0").mkdir(parents=True)
    (tmp_path / "step-dpo" / "round_0" / "search.done.json").write_text("{}")
    before = bench_loop.finished_phases(tmp_path)
    assert before == {"step-dpo/round_0/search"}
    (tmp_path / "step-dpo" / "round_0" / "train.done.json").write_text("{}")
    bench_loop.log_piece(tmp_path, 0.0, sorted(bench_loop.finished_phases(tmp_path) - before), ("step-dpo", "tpo"))
    [record] = [json.loads(line) for line in (tmp_path / "pieces.jsonl").read_text().splitlines()]
    assert record["phases"] == ["step-dpo/round_0/train"] and record["started"] == "1970-01-01 00:00"
    assert record["machine"]["cores"] >= 1 and isinstance(record["machine"]["bf16_instructions"], bool)
    table = bench_loop.pieces_lines(tmp_path)
    assert table[-2].startswith("| 1970-01-01 00:00 |") and "step-dpo/round_0/train" in table[-2]
    assert "| step-dpo,tpo |" in table[-2] and record["methods"] == ["step-dpo", "tpo"]
    (tmp_path / "pieces.jsonl").write_text(json.dumps({**record, "methods": None}) + "\n")  # an older record
    assert "| — | step-dpo/round_0/train |" in bench_loop.pieces_lines(tmp_path)[-2]


def test_bench_loop_budget_wraps_every_phase_the_loop_calls():
    import inspect
    import re

    from mcts_po import loop

    bench_loop = load_script("bench_loop.py")
    called = set(re.findall(r"phases\.(\w+)\(", inspect.getsource(loop.run_loop)))
    assert {"search", "extract", "train", "value", "evaluate", "close"} <= called
    wrapped = {name for name in vars(bench_loop.BudgetedPhases) if not name.startswith("_")}
    assert called <= wrapped, called - wrapped  # a phase the wrapper lacks fails mid-run


def test_bench_loop_budget_wrapper_runs_a_value_loop_like_the_bare_phases(tmp_path):
    import time as clock

    from test_loop_value import ValuePhases, run, value_config

    bench_loop = load_script("bench_loop.py")
    config = value_config(rounds=2)
    bare, wrapped = ValuePhases(config), ValuePhases(config)
    run(config, tmp_path / "bare", bare)
    with pytest.raises(bench_loop.PassDone):  # the first pass stops at round 1's training
        run(config, tmp_path / "wrapped", bench_loop.BudgetedPhases(wrapped, clock.monotonic() + 60, first_pass=True))
    run(config, tmp_path / "wrapped", bench_loop.BudgetedPhases(wrapped, clock.monotonic() + 60))
    same_folders = json.dumps(wrapped.calls).replace(str(tmp_path / "wrapped"), str(tmp_path / "bare"))
    assert same_folders == json.dumps(bare.calls)  # value_model= reaches round 1's search, the value phase runs
    assert ("search", 1, "m0+r0", str(tmp_path / "wrapped" / "round_0" / "value_model")) in wrapped.calls


def test_bench_value_takes_flat_samples_in_drawing_order_to_a_token_count_and_votes():
    bench_value = load_script("bench_value.py")

    def sample(problem, wave, index, tokens, answer, correct):
        return {"problem_id": problem, "wave": wave, "sample_index": index, "generated_tokens": tokens,
                "answer": answer, "correct": correct}

    records = [sample("b", 0, 0, 10, "1", False), sample("a", 0, 0, 10, "7", True),
               sample("a", 1, 1, 10, "3", False), sample("a", 1, 2, 10, "3", False),
               sample("b", 1, 1, 10, "2", True), sample("b", 1, 2, 10, None, False)]
    taken = bench_value.take_to_tokens(records, 25)  # wave 0 (a, b), then wave 1's first by problem id: a
    assert [(r["problem_id"], r["sample_index"]) for r in taken] == [("a", 0), ("b", 0), ("a", 1)]
    assert bench_value.best_and_majority(taken, 2) == (1, 1, 30)  # a: 7 (correct) and 3 tie, the earlier wins
    everything = bench_value.best_and_majority(records, 2)
    assert everything == (2, 0, 60)  # a: "3" twice beats the correct "7"; b: 1 and 2 tie, the earlier (wrong) wins
    entry = bench_value.solved_entry(3, 10, 99)
    assert entry["solved"] == 3 and entry["ci95"][0] < 0.3 < entry["ci95"][1] and entry["generated_tokens"] == 99


def test_bench_value_pairs_each_search_with_best_of_n_at_its_tokens(tmp_path):
    from test_value_data import value_tree

    from mcts_po.search.tree import Tree

    bench_value = load_script("bench_value.py")
    solved = value_tree()                                             # has a correct terminal
    unsolved = Tree.new(problem_id="p2", tree_id="t2", question="?")  # only a root
    for kind, trees in (("default", [solved, unsolved]), ("value", [unsolved, value_tree()])):
        folder = tmp_path / "arithmetic" / f"mcts_{kind}"
        folder.mkdir(parents=True)
        (folder / "trees.jsonl").write_text("".join(t.to_json() + "\n" for t in trees))
    samples = [{"problem_id": "p2", "wave": 0, "sample_index": 0, "generated_tokens": 10, "answer": "5", "correct": True},
               {"problem_id": "p1", "wave": 1, "sample_index": 1, "generated_tokens": 10, "answer": "14", "correct": True}]
    (tmp_path / "arithmetic" / "flat").mkdir()
    (tmp_path / "arithmetic" / "flat" / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))
    results = {"mcts_default_arithmetic": {"generated_tokens": 10}, "mcts_value_arithmetic": {"generated_tokens": 20}}
    paired = bench_value.paired_with_flat(tmp_path, "arithmetic", results)
    # default: p1 by the search only, p2 by best-of-N only (its 10 tokens take wave 0's sample alone)
    assert paired["mcts_default_vs_best_of_n"] == {"search_only": 1, "best_of_n_only": 1, "both": 0, "neither": 0,
                                                   "mcnemar_p": 1.0}
    # value (20 tokens: both samples): p1 by both, p2 by best-of-N only
    assert paired["mcts_value_vs_best_of_n"]["both"] == 1 and paired["mcts_value_vs_best_of_n"]["best_of_n_only"] == 1


def test_bench_value_reuse_copies_only_what_the_value_model_does_not_touch(tmp_path):
    bench_value = load_script("bench_value.py")
    source, work = tmp_path / "old", tmp_path / "new"
    settings = {"value_model": "/m/old", "model": "smollm2-135m", "arith_problems": 300, "gsm8k_problems": 100,
                "value_backend": "vllm"}
    for section in ("mcts_default", "mcts_value", "flat"):
        (source / "arithmetic" / section).mkdir(parents=True)
        (source / "arithmetic" / section / "data.jsonl").write_text(section)
    flat = {"sampling": {"samples": 9}, "wall_seconds": 5.0, "generated_tokens_per_second": 40.0}
    piece = {"command": "c", "commit": "abc", "machine": "m",
             "sections": ["mcts_default_arithmetic", "mcts_value_arithmetic", "flat_arithmetic", "auc_arithmetic"]}
    (source / "results.json").write_text(json.dumps({
        "settings": settings, "mcts_default_arithmetic": {"solved": 3, "run": str(source / "arithmetic" / "mcts_default")},
        "mcts_value_arithmetic": {"solved": 1}, "flat_arithmetic": flat, "auc_arithmetic": {}, "pieces": [piece]}))
    results: dict = {}
    mine = {**settings, "value_model": "/m/new"}
    taken = bench_value.reuse_sections(source, work, ["arithmetic"], results, mine)
    assert taken == ["mcts_default_arithmetic", "flat_arithmetic"]
    assert results["mcts_default_arithmetic"]["solved"] == 3
    assert results["mcts_default_arithmetic"]["run"] == str(work / "arithmetic" / "mcts_default")
    assert "mcts_value_arithmetic" not in results and "flat_arithmetic" not in results   # flat is recounted
    assert results["reused"]["flat_arithmetic"] == {"from": str(source), "entry": flat}
    assert (work / "arithmetic" / "flat" / "data.jsonl").read_text() == "flat"
    assert not (work / "arithmetic" / "mcts_value").exists()
    assert results["pieces"] == [{**piece, "sections": ["mcts_default_arithmetic", "flat_arithmetic"],
                                  "reused_from": str(source)}]
    assert bench_value.reuse_sections(source, work, ["arithmetic"], results, mine) == []   # already there
    with pytest.raises(bench_value.UserError, match="settings differ in arith_problems"):
        bench_value.reuse_sections(source, tmp_path / "x", ["arithmetic"], {}, {**mine, "arith_problems": 64})


def test_bench_value_takes_a_value_model_per_task_and_keeps_each_tasks_in_work(tmp_path):
    bench_value = load_script("bench_value.py")
    arith, gsm = tmp_path / "arith_vm", tmp_path / "gsm_vm"
    arith.mkdir(), gsm.mkdir()
    both = ["arithmetic", "gsm8k"]
    assert bench_value.value_models_by_task(str(arith), both) == {"arithmetic": str(arith), "gsm8k": str(arith)}
    assert bench_value.value_models_by_task(f"gsm8k={gsm}", ["gsm8k"]) == {"gsm8k": str(gsm)}
    assert bench_value.value_models_by_task(f"arithmetic={arith},gsm8k={gsm}", ["gsm8k"]) == {"gsm8k": str(gsm)}
    with pytest.raises(bench_value.UserError, match="names no value model for arithmetic"):
        bench_value.value_models_by_task(f"gsm8k={gsm}", both)
    with pytest.raises(bench_value.UserError, match="'math=.*' is not task=folder"):
        bench_value.value_models_by_task(f"math={gsm}", ["gsm8k"])
    with pytest.raises(bench_value.UserError, match="nowhere \\(gsm8k\\) is not a folder"):
        bench_value.value_models_by_task(f"gsm8k={tmp_path / 'nowhere'}", ["gsm8k"])

    common = {"model": "smollm2-135m", "arith_problems": 300, "gsm8k_problems": 100, "value_backend": "vllm"}
    path = tmp_path / "results.json"
    # a WORK of the single-value-model days: its value model holds for the task that has results
    stored = {"value_model": str(arith), **common}
    merged = bench_value.merged_settings(stored, {"value_models": {"gsm8k": str(gsm)}, **common}, path, ["arithmetic"])
    assert merged == {"value_models": {"arithmetic": str(arith), "gsm8k": str(gsm)}, **common}
    assert bench_value.merged_settings(merged, {"value_models": {}, **common}, path, []) == merged   # --report-only
    with pytest.raises(bench_value.UserError, match="value_models.arithmetic"):
        bench_value.merged_settings(merged, {"value_models": {"arithmetic": str(gsm)}, **common}, path, [])
    with pytest.raises(bench_value.UserError, match="gsm8k_problems"):
        bench_value.merged_settings(merged, {"value_models": {"gsm8k": str(gsm)}, **common, "gsm8k_problems": 50}, path, [])
    fresh = {"value_models": {"gsm8k": str(gsm)}, **common}
    assert bench_value.merged_settings(None, fresh, path, []) == fresh


def test_bench_value_pairs_a_value_search_with_the_reused_runs(tmp_path):
    from test_value_data import value_tree

    from mcts_po.search.tree import Tree

    bench_value = load_script("bench_value.py")
    unsolved = lambda pid: Tree.new(problem_id=pid, tree_id=pid, question="?")
    for run, trees in (("new", [value_tree(), unsolved("p2"), unsolved("p3")]),   # value_tree is p1, solved
                       ("old", [unsolved("p1"), unsolved("p2"), unsolved("p3")])):
        folder = tmp_path / run / "arithmetic" / "mcts_value"
        folder.mkdir(parents=True)
        (folder / "trees.jsonl").write_text("".join(t.to_json() + "\n" for t in trees))
    paired = bench_value.paired_with_earlier_value_search(tmp_path / "new", "arithmetic", tmp_path / "old")
    assert (paired["this_solved"], paired["earlier_solved"], paired["this_only"], paired["earlier_only"]) == (1, 0, 1, 0)
    assert paired["mcnemar_p"] == 1.0
    assert bench_value.paired_with_earlier_value_search(tmp_path / "new", "arithmetic", tmp_path / "none") is None
    (tmp_path / "old" / "arithmetic" / "mcts_value" / "trees.jsonl").write_text(unsolved("p9").to_json() + "\n")
    with pytest.raises(bench_value.UserError, match="other problems"):
        bench_value.paired_with_earlier_value_search(tmp_path / "new", "arithmetic", tmp_path / "old")


def test_bench_math_counts_steps_and_flags_lenient_near_misses():
    bench_math = load_script("bench_math.py")
    text = "Step one $x = 2$.\nStep two.\n\nThe answer is \\boxed{4}.\n"
    assert bench_math.split_counts(text, "\n") == 3 and bench_math.split_counts(text, "\n\n") == 2
    assert bench_math.lenient("x = \\dfrac{1}{2}") == bench_math.lenient("\\frac{1}{2}")
    assert bench_math.lenient("30^\\circ") == "30" and bench_math.lenient("5\\text{ cm}") == "5"
    assert bench_math.lenient("12") != bench_math.lenient("21")
    items = [{"source": "eval greedy", "problem_id": "p", "gold": "5", "answer": "5 \\text{ units}", "correct": False, "text": "t"},
             {"source": "eval greedy", "problem_id": "q", "gold": "5", "answer": "0.5", "correct": True, "text": "t"},
             {"source": "eval greedy", "problem_id": "r", "gold": "5", "answer": None, "correct": False,
              "text": "so the answer is **5**"}]
    found = bench_math.near_misses(items)
    assert [i["problem_id"] for i in found["rejected_but_lenient_equal"]] == ["p"]
    assert [i["problem_id"] for i in found["accepted_but_text_differs"]] == ["q"]
    assert found["no_answer_but_mentions_answer_count"] == 1
    rate = bench_math.rate(3, 10)
    assert rate["count"] == 3 and rate["ci95"][0] < 0.3 < rate["ci95"][1]


def test_probe_value_scorers_compares_score_lists():
    probe = load_script("probe_value_scorers.py")
    assert probe.compare([0.1, 0.5, -0.2], [0.1, 0.4, 0.0]) == {"max_abs_diff": 0.2, "mean_abs_diff": 0.1,
                                                               "correlation": pytest.approx(0.9803, abs=1e-3)}
    assert probe.compare([0.3, 0.3], [0.1, 0.2])["correlation"] is None  # constant scores: no correlation


def test_bench_loop_pairs_each_methods_last_policy_with_step_dpo_and_rft_on_the_same_problems(tmp_path):
    bench_loop = load_script("bench_loop.py")
    held_out = [f"p{i}" for i in range(10)]
    for method, solved in {"step-dpo": ["p0", "p1"], "step-apo": ["p0", "p2", "p3", "p4", "p5", "p6"]}.items():
        eval_dir = bench_loop.policy_eval_dir(tmp_path / method, 2)
        eval_dir.mkdir(parents=True)
        (eval_dir / "results.jsonl").write_text("".join(
            json.dumps({"problem_id": p, "greedy_correct": p in solved}) + "\n" for p in held_out))
    assert bench_loop.policy_eval_dir(tmp_path, 0) == tmp_path / "baseline_eval"
    assert bench_loop.greedy_correct_ids(tmp_path / "nowhere") is None
    ids, correct = bench_loop.greedy_correct_ids(bench_loop.policy_eval_dir(tmp_path / "step-apo", 2))
    assert ids == held_out and correct == ["p0", "p2", "p3", "p4", "p5", "p6"]
    policy = lambda method, k: {"policy": k, "correct_problem_ids":
                                bench_loop.greedy_correct_ids(bench_loop.policy_eval_dir(tmp_path / method, k))[1]}
    results = {"step-dpo": {"policies": [{"policy": 0}, policy("step-dpo", 2)]},
               "step-apo": {"policies": [{"policy": 0}, policy("step-apo", 2)]},
               "tpo": {"policies": [{"policy": 0}]}}  # nothing trained yet: not paired
    rows = bench_loop.paired_rows(results, held_out)
    assert len(rows) == 1  # step-apo vs step-dpo only (no rft run, step-dpo not against itself)
    row = rows[0]
    assert (row["method"], row["reference"], row["policy"]) == ("step-apo", "step-dpo", 2)
    assert (row["both"], row["a_only"], row["b_only"], row["neither"]) == (1, 5, 1, 3)
    assert row["difference"] == pytest.approx(0.4) and row["mcnemar_p"] == pytest.approx(2 * 7 / 64)
    table = bench_loop.paired_lines(rows)
    assert "| step-apo | step-dpo | 2 | 1 | 5 | 1 | 3 | +40.0 pts | 0.219 |" in table
    # an ablation of step-dpo is paired with step-dpo once, an ablation of step-apo with step-apo too
    assert bench_loop.paired_references("step-dpo-no-sft") == ("step-dpo", "rft")
    assert bench_loop.paired_references("step-apo-equal-rows") == ("step-dpo", "rft", "step-apo")
    results["step-dpo-no-sft"] = {"policies": [{"policy": 0}, policy("step-apo", 2)]}
    ablation_rows = [r for r in bench_loop.paired_rows(results, held_out) if r["method"] == "step-dpo-no-sft"]
    assert [r["reference"] for r in ablation_rows] == ["step-dpo"]
    assert bench_loop.paired_lines([]) == []


def test_loop_grid_means_over_seeds_and_sums_paired_counts_of_the_seeds_that_have_them(tmp_path):
    loop_grid, bench_loop = load_script("loop_grid.py"), load_script("bench_loop.py")
    held_out = [f"p{i}" for i in range(10)]

    def report(correct, ids=None):
        results = {}
        for method, (base, final) in correct.items():
            final_policy = {"policy": 2, "correct": final if ids is None else len(ids[method]), "problems": 10}
            if ids is not None:
                final_policy["correct_problem_ids"] = ids[method]
            results[method] = {"policies": [{"policy": 0, "correct": base, "problems": 10}, final_policy]}
        return {"results": results, "held_out_problem_ids": held_out if ids else None,
                "paired": bench_loop.paired_rows(results, held_out) if ids else []}

    seed0 = report({"step-dpo": (1, 3), "rft": (1, 5)})  # an old report: counts only
    seed1 = report({"step-dpo": (1, None), "rft": (1, None)},
                   ids={"step-dpo": ["p0", "p1"], "rft": ["p0", "p2", "p3", "p4"]})
    for seed, data in ((0, seed0), (1, seed1)):
        (tmp_path / f"seed{seed}.json").write_text(json.dumps(data))
    (tmp_path / "summary.json").write_text("{}")  # not a seed
    seeds = loop_grid.load_seeds(tmp_path)
    assert list(seeds) == [0, 1]
    summary = loop_grid.summarize(seeds)
    rft = summary["methods"]["rft"]
    assert rft["seeds"][0]["correct"] == 5 and rft["seeds"][1]["correct"] == 4
    mean, low, high = rft["mean_accuracy"]
    assert mean == pytest.approx(0.45) and high - mean == pytest.approx(12.706 * (0.05 * 2 ** 0.5) / 2 ** 0.5)
    assert summary["methods"]["step-dpo"]["mean_gain"][0] == pytest.approx(0.15)  # (0.2 + 0.1) / 2
    (pair,) = [r for r in summary["paired"] if r["method"] == "rft"]  # rft vs step-dpo, seed 1 only
    assert pair["seeds"] == [1] and (pair["a_only"], pair["b_only"]) == (3, 1)
    assert pair["mcnemar_p"] == pytest.approx(2 * 5 / 16)
    text = loop_grid.markdown(summary, tmp_path)
    assert "| rft | 5/10 = 50.0 [23.7, 76.3] | 4/10 = 40.0 [16.8, 68.7] | 2 |" in text
    assert "†" not in text
    # an arm that joined a seed's report from an earlier run of that seed is marked, and the run named
    seed1["results"]["rft"]["from_earlier_report"] = "seed1_first_run.json"
    marked = loop_grid.markdown(loop_grid.summarize({0: seed0, 1: seed1}), tmp_path)
    assert "| 4/10 = 40.0 [16.8, 68.7] † |" in marked and "seed 1: `seed1_first_run.json`" in marked
    assert "| step-dpo | 3/10 = 30.0" in marked and "30.0 [10.8, 60.3] †" not in marked
    assert loop_grid.main(["--grid", str(tmp_path), "--out", str(tmp_path / "out" / "s.md")]) == 0
    assert json.loads((tmp_path / "out" / "s.json").read_text())["seeds"] == [0, 1]


def test_compare_self_eval_correlation_of_constant_scores_is_none():
    module = load_script("compare_self_eval.py")
    assert module.score_correlation([0.5, 0.5, 0.5], [0.1, 0.9, 0.4]) is None  # statistics would raise
    assert module.score_correlation([0.1], [0.2]) is None
    assert module.score_correlation([0.0, 1.0, 2.0], [0.0, 2.0, 4.0]) == 1.0
    assert module.score_correlation([0.0, 1.0, 2.0], [2.0, 1.0, 0.0]) == -1.0


def test_measure_extraction_keeps_the_hand_written_caveats(tmp_path):
    module = load_script("measure_extraction.py")
    report = tmp_path / "extraction.md"
    new = "# Extraction\n\nnew figures\n"
    assert module.with_hand_written_section(new, report) == new  # no report yet
    report.write_text("# Extraction\n\nold figures\n\n" + module.HAND_WRITTEN_HEADING + "\n\n- a caveat\n",
                      encoding="utf-8")
    assert module.with_hand_written_section(new, report) == (
        "# Extraction\n\nnew figures\n\n" + module.HAND_WRITTEN_HEADING + "\n\n- a caveat\n")
    report.write_text("# Extraction\n\nold figures without caveats\n", encoding="utf-8")
    assert module.with_hand_written_section(new, report) == new


def test_bench_value_data_tables_targets_and_a_head_that_learns(tmp_path):
    import torch
    from test_value_data import value_tree
    from tiny_model import byte_level_tokenizer, save_tiny_llama

    bench = load_script("bench_value_data.py")
    tree = value_tree()
    table = bench.node_table([tree])
    # step nodes = non-terminal, depth >= 1: 1, 2, 3, 6, 8 (4, 5, 7, 9 are terminals)
    assert [e["node"] for e in table] == [1, 2, 3, 6, 8]
    assert [e["label"] for e in table] == [True, False, None, True, None]
    assert bench.targets_of(table, "q") == [0.6, -0.8, 0.3, 0.4, -0.2]
    outcome = bench.targets_of(table, "outcome")
    assert outcome[0] == pytest.approx(2 * 2 / 3 - 1) and outcome[1:] == [-1.0, None, 1.0, None]
    scores = [0.9, -0.5, None, 0.1, 0.0]   # values in [-1, 1]: good nodes 1 (0.95) and 6 (0.55), bad node 2 (0.25)
    figures = bench.quality(table, scores, probability=False)
    assert (figures["nodes"], figures["good"], figures["auc"]) == (3, 2, 1.0)
    assert figures["brier"] == pytest.approx(((0.95 - 1) ** 2 + 0.25 ** 2 + (0.55 - 1) ** 2) / 3, abs=1e-4)
    assert bench.quality(table, [None] * 5, probability=True) is None
    # a head fitted to separable features ranks the held-out points and shrinks with l2
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=generator)
    y = torch.tanh(x @ torch.tensor([2.0, -1.0, 0, 0, 0, 0, 0, 0.5])).tolist()
    w = bench.fit_head(x[:150], y[:150], l2=1e-4)
    assert bench.auc_of((x[150:] @ w).tolist(), [v > 0 for v in y[150:]]) > 0.97
    assert bench.fit_head(x[:150], y[:150], l2=1.0).norm() < 0.5 * w.norm()
    # features: one forward per maximal path; a prefix node's state is the one its own path gives
    model = save_tiny_llama(tmp_path / "tiny", byte_level_tokenizer())
    tokenizer, backbone, _ = bench.load_backbone(model)
    features = bench.hidden_states((tokenizer, backbone, False), [tree], table, batch_size=2)   # float32
    alone = bench.hidden_states((tokenizer, backbone, False), [tree], [table[0]], batch_size=1)   # node 1 ends its path
    assert features.shape == (5, 64)
    assert torch.allclose(features[0], alone[0], atol=1e-5)
    assert not torch.allclose(features[0], features[3], atol=1e-3)
    # a train set that grows (another search folder) rebuilds the table and its last, partial group
    bench.features_section(tmp_path, model, [tree], [tree], log=lambda message: None)
    assert torch.load(tmp_path / "features_train.pt")["features"].shape == (5, 64)
    bench.features_section(tmp_path, model, [tree, tree], [tree], log=lambda message: None)
    grown = torch.load(tmp_path / "features_train.pt")
    assert [e["tree"] for e in grown["table"]] == [0] * 5 + [1] * 5 and grown["features"].shape == (10, 64)
    assert torch.allclose(grown["features"][5:], grown["features"][:5], atol=1e-5)


def test_layer_features_are_what_a_backbone_cut_after_that_layer_outputs(tmp_path):
    import torch
    from test_value_data import value_tree
    from tiny_model import byte_level_tokenizer, save_tiny_llama
    from transformers import AutoModel

    bench = load_script("bench_value_data.py")
    layers_probe = load_script("probe_value_layers.py")
    tree = value_tree()
    table = bench.node_table([tree])
    model = save_tiny_llama(tmp_path / "tiny", byte_level_tokenizer())
    tokenizer, backbone, _ = bench.load_backbone(model)
    loaded = (tokenizer, backbone, False)   # float32 (no bf16 autocast), to compare exactly
    last = bench.hidden_states(loaded, [tree], table)
    both = bench.hidden_states(loaded, [tree], table, layers=[1, 2])
    assert both.shape == (5, 2, 64)
    assert torch.allclose(both[:, 1], last, atol=1e-5)          # layer 2 of 2 is the last hidden state
    assert not torch.allclose(both[:, 0], last, atol=1e-3)
    cut = AutoModel.from_pretrained(model, num_hidden_layers=1).eval()   # the backbone cut after layer 1
    assert torch.allclose(bench.hidden_states((tokenizer, cut, False), [tree], table), both[:, 0], atol=1e-5)
    with pytest.raises(bench.UserError, match="1..2"):
        bench.hidden_states(loaded, [tree], table, layers=[3])
    # group files: reused when they hold the same layers, recomputed for others
    made = layers_probe.layer_features(bench, tmp_path, model, "train", [tree], [1, 2], log=lambda message: None)
    assert made["features"].dtype == torch.float16 and torch.allclose(made["features"].float(), both, atol=1e-2)
    logged = []
    layers_probe.layer_features(bench, tmp_path, model, "train", [tree], [1, 2], log=logged.append)
    assert logged == []
    assert layers_probe.layer_features(bench, tmp_path, model, "train", [tree], [2], log=logged.append)["features"].shape == (5, 1, 64)
    assert len(logged) == 1


def test_top_layers_on_stored_states_are_the_backbones_last_hidden_state_and_spans_mark_each_step(tmp_path):
    import torch
    from test_value_data import value_tree
    from tiny_model import byte_level_tokenizer, save_tiny_llama

    bench = load_script("bench_value_data.py")
    probe = load_script("probe_value_top_layers.py")
    tree = value_tree()
    table = bench.node_table([tree])
    model = save_tiny_llama(tmp_path / "tiny", byte_level_tokenizer())
    tokenizer, backbone, _ = bench.load_backbone(model)
    loaded = (tokenizer, backbone, False)   # float32, to compare exactly
    last = bench.hidden_states(loaded, [tree], table)
    rows = [0, 1, 3]   # the nodes with an outcome: 1, 2 and 6 (6 lies below 1)
    for top in (1, 2):   # the last layer; both layers of the tiny model (the states are the embeddings)
        entries = probe.path_states(loaded, [tree], table, rows, top, batch_size=2)   # two paths of unequal length, padded
        assert len(entries) == 2 and sorted(i for e in entries for i, *_ in e["nodes"]) == rows
        runner = probe.TopLayers(backbone, top, torch.zeros(64))
        with torch.no_grad():
            hidden = runner.hidden(probe.padded(entries))
        for row, entry in enumerate(entries):
            for index, step_start, steps_start, end in entry["nodes"]:
                distances = (last - hidden[row, end]).abs().max(dim=1).values   # to every node's hidden state
                assert distances[index] < 2e-2 < distances.sort().values[1]      # its own (states kept in bf16), no other
                assert steps_start <= step_start <= end < len(entry["states"])
    spans = {table[i]["node"]: (start, first, end) for e in entries for i, start, first, end in e["nodes"]}
    assert spans[1][0] == spans[1][1] == spans[2][1] and spans[6][0] > spans[1][2]   # node 6's step starts after node 1's
    assert runner.layers[0] is not backbone.layers[0]   # trained copies: the backbone stays the policy's
    # the last layer trained, the one below run frozen: the same output, only the last layer's weights train
    upper = probe.TopLayers(backbone, 2, torch.zeros(64), trained=1)
    with torch.no_grad():
        assert torch.allclose(upper.hidden(probe.padded(entries)), hidden, atol=1e-5)
    trainable = {id(p) for p in upper.parameters()}
    assert not any(id(p) in trainable for p in upper.frozen.parameters())
    assert all(id(p) in trainable for p in upper.layers[0].parameters()) and len(upper.layers) == 1


def test_bench_loop_report_takes_the_arms_work_lacks_from_an_earlier_report_of_the_same_seed(tmp_path):
    from mcts_po.io_utils import UserError

    bench_loop = load_script("bench_loop.py")
    config = bench_loop.REPO / "configs" / "loop_arithmetic_cpu.yaml"
    held_out = [f"p{i}" for i in range(10)]

    def arm(solved):
        policy = lambda k, ids: {"policy": k, "correct": len(ids), "problems": 10, "accuracy": len(ids) / 10,
                                 "ci95": [0.0, 1.0], "correct_problem_ids": ids, "eval_seconds": 1.0}
        return {"policies": [policy(0, ["p0"]), policy(2, solved)], "accuracy_gain": 0.1, "rounds": []}

    earlier = {"command": "bench_loop.py --seed 1 (first run)", "config": config.read_text(encoding="utf-8"),
               "held_out_problem_ids": held_out,
               "results": {"step-dpo": arm(["p0", "p1"]), "rft": arm(["p0", "p1", "p2", "p3", "p4", "p5"])}}
    path = tmp_path / "seed1_first_run.json"
    path.write_text(json.dumps(earlier))
    data = bench_loop.write_report(tmp_path / "work", config, tmp_path / "seed1.md", "cmd", path)
    assert list(data["results"]) == ["step-dpo", "rft"] and data["earlier_report"]["methods"] == ["step-dpo", "rft"]
    # the merged arms are paired with each other as if they had run here
    row = next(r for r in data["paired"] if (r["method"], r["reference"]) == ("step-dpo", "rft"))
    assert (row["a_only"], row["b_only"]) == (0, 4)
    text = (tmp_path / "seed1.md").read_text()
    assert "## Arms from an earlier run of this seed" in text and "| rft | earlier report | 2 | 6 | — | — |" in text
    # another config or other held-out problems cannot share a report
    path.write_text(json.dumps({**earlier, "config": "method: step-dpo\n"}))
    with pytest.raises(UserError, match="config differs"):
        bench_loop.write_report(tmp_path / "work", config, tmp_path / "seed1.md", "cmd", path)
    path.write_text(json.dumps({**earlier, "held_out_problem_ids": held_out[::-1]}))
    with pytest.raises(UserError, match="held-out problems differ"):
        bench_loop.read_earlier_report(path, held_out, earlier["config"])


def test_probe_logit_head_pursuit_spans_a_head_made_of_token_directions_and_centring_removes_the_logsumexp():
    import torch

    probe = load_script("probe_logit_head.py")
    generator = torch.Generator().manual_seed(0)
    E = torch.randn(50, 6, generator=generator)   # 50 tokens, hidden size 6
    centred = E - E.mean(0, keepdim=True)
    w = 2.0 * centred[7] - 0.5 * centred[31]          # a head inside the span of two token directions
    ids = probe.pursuit_ids(E, w, 2)
    assert sorted(ids) == [7, 31]
    basis = centred[ids].T
    assert torch.allclose(basis @ torch.linalg.lstsq(basis, w.unsqueeze(1)).solution.squeeze(1), w, atol=1e-4)
    # logprobs = logits - logsumexp: centred over the chosen ids they equal the centred logits
    h = torch.randn(4, 6, generator=generator)
    logprobs = torch.log_softmax(h @ E.T, dim=1)
    chosen = logprobs[:, ids]
    assert torch.allclose(chosen - chosen.mean(1, keepdim=True), probe.centred_logits(h, E, ids), atol=1e-4)


def test_source_commit_names_the_checkout_or_says_unknown(tmp_path):
    from mcts_po.precision import source_commit

    commit = source_commit(REPO_ROOT)
    assert len(commit) >= 7 and all(c in "0123456789abcdef" for c in commit)
    assert source_commit(tmp_path) == "unknown"  # not a git checkout
