"""Tests of the loop's value model (mcts_po/loop_value.py, the `value` phase of mcts_po/loop.py).

Fast tests drive `run_loop` with fake search/train/eval phases that write real hand-built trees,
and run the REAL value phase (`run_value_phase`: replay buffer, value-row extraction, metrics)
with a scripted value-model scorer and a fake value-model trainer: round k+1's search gets value
model k+1, the buffer holds exactly the last R rounds' trees, the AUC/Brier in metrics.json are
those of a hand computation on round k's fresh trees, and a resume skips finished phases. One
test runs the real phases end to end on a tiny random Llama (transformers backend, CPU, seconds).

    PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/test_loop_value.py -m "not slow"
    flock /tmp/mcts_po_cpu.lock .venv/bin/python -m pytest -q tests/test_loop_value.py -m slow   # 6.9 min on 2 cores

The slow test runs two tiny rounds with SmolLM2-135M (transformers backend) and checks that round
1's node values are the mix of the self-evaluation and value model 1's own scores. With 3
simulations per problem its trees may hold no verified terminal, so its metrics may have 0 nodes
(it checks the count against an independent one); the fast tests check the figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcts_po.io_utils import UserError, atomic_write_json
from mcts_po.loop import CONFIG_FILE, LoopConfig, LoopPhases, marker_path, run_loop
from mcts_po.loop_value import LoopValueConfig, replay_buffer_rounds, run_value_phase
from mcts_po.score_quality import outcome_step_nodes, value_and_self_eval_quality
from mcts_po.search.config import SearchConfig
from mcts_po.search.tree import Tree
from mcts_po.seeds import derive_seed

PROMPT = "Q: what is 2 + 3?\n"
# scripted value-model scores by step text (in [-1, 1]); SELF_EVAL the stored P("yes")
VALUE_SCORE = {"a1": 0.6, "a2": -0.6, "b1": 0.2, "b3": -1.0}
SELF_EVAL = {"a1": 0.8, "a2": 0.6, "b1": 0.3, "b3": 0.9}


class Killed(Exception):
    """Stands for the process being killed in the middle of a phase."""


def add(tree: Tree, parent: int, text: str, q: float, correct: bool | None = None, terminal: bool = False):
    return tree.add_child(parent, text=text, q=q, visits=1, value_sum=q, terminal=terminal,
                          terminal_reason="answer" if terminal else "", correct=correct,
                          self_eval=None if terminal else SELF_EVAL[text])


def round_trees(k: int) -> list[Tree]:
    """Two trees per round (ids r<k>-a, r<k>-b).
    a: 1 "a1" (good: a correct terminal below), 2 "a2" (bad: a wrong terminal below)
    b: 1 "b1" (good), 3 "b3" (no verified terminal below: no outcome, left out of the metrics)"""
    a = Tree.new(problem_id=f"p{k}a", tree_id=f"r{k}-a", question="2 + 3?", gold_answer="5", task="demo", prompt=PROMPT)
    a.root.visits = 2
    add(a, 0, "a1", 0.5)
    add(a, 0, "a2", -0.5)
    add(a, 1, "The answer is 5.", 1.0, True, terminal=True)
    add(a, 2, "The answer is 6.", -1.0, False, terminal=True)
    b = Tree.new(problem_id=f"p{k}b", tree_id=f"r{k}-b", question="2 + 3?", gold_answer="5", task="demo", prompt=PROMPT)
    b.root.visits = 2
    add(b, 0, "b1", 0.5)
    add(b, 1, "The answer is 5.", 1.0, True, terminal=True)
    add(b, 0, "b3", 0.1)
    return [a, b]


class ValuePhases:
    """Fake search/extract/train/eval (policy k+1 = '<policy>+r<k>'); the value phase is the real
    `run_value_phase` with a scripted scorer and a trainer that writes a stub folder."""

    def __init__(self, config: LoopConfig, kill_at: tuple[str, int] | None = None, rows: bool = True):
        self.config = config
        self.kill_at = kill_at
        self.rows = rows
        self.calls: list[tuple] = []
        self.scored: list[tuple[str, list[str]]] = []  # (value model, tree ids scored)
        self.trained: list[dict] = []

    def search(self, k, policy, out, value_model=None):
        self.calls.append(("search", k, policy, value_model))
        out.mkdir(parents=True, exist_ok=True)
        trees = round_trees(k) if self.rows else [Tree.new(problem_id=f"p{k}", tree_id=f"r{k}", question="q")]
        (out / "trees.jsonl").write_text("".join(t.to_json() + "\n" for t in trees))
        return {"problems": 2}

    def extract(self, k, trees_dir, out):
        self.calls.append(("extract", k))
        return {"rows": 1}

    def train(self, k, policy, reference, data_dir, out):
        self.calls.append(("train", k, policy))
        return {"policy": f"{policy}+r{k}", "trained": True}

    def score(self, model, trees, keys):
        self.scored.append((model, sorted({t.tree_id for t in trees})))
        return [VALUE_SCORE[trees[t].nodes[n].text] for t, n in keys]

    def train_value(self, policy, rows, method, train_config, out, value_config):
        if self.kill_at == ("value", len(self.trained)):
            raise Killed("value")
        self.trained.append({"policy": policy, "method": method, "tree_ids": sorted({r["tree_id"] for r in rows}),
                             "value_init": value_config.value_init, "seed": train_config.seed})
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "training_log.json", {"optimizer_steps": 1, "seconds": 0.1, "history": [{"loss": 0.5}]})
        return out

    def value(self, k, policy, value_model, buffer, fresh_dir, out):
        self.calls.append(("value", k, policy, value_model, [j for j, _ in buffer]))
        c = self.config
        return run_value_phase(c.value, c.extract, c.seed, k, policy, value_model, buffer, fresh_dir, out,
                               lambda message: None, progress=False, score=self.score, train=self.train_value)

    def evaluate(self, policy, out):
        self.calls.append(("eval", policy))
        if self.kill_at == ("eval", policy.count("+")):
            raise Killed("eval")
        return {"accuracy": 0.1 * policy.count("+"), "correct": 1, "problems": 10, "ci95": [0.0, 0.5]}

    def close(self):
        pass


def value_config(rounds: int = 3, **value) -> LoopConfig:
    return LoopConfig(rounds=rounds, model="m0", problems_per_round=2, eval_limit=10, progress=False,
                      search=SearchConfig(value_model_weight=1.0),
                      value=LoopValueConfig(**{"method": "value", **value}))


def run(config, run_dir, phases):
    return run_loop(config, run_dir, phases=phases, log=lambda message: None, plot=False)


def test_round_k_plus_1_searches_with_policy_and_value_model_k_plus_1(tmp_path):
    config = value_config(rounds=3)
    phases = ValuePhases(config)
    run(config, tmp_path / "run", phases)
    vm = [str(tmp_path / "run" / f"round_{k}" / "value_model") for k in range(3)]
    searches = [c for c in phases.calls if c[0] == "search"]
    assert searches == [("search", 0, "m0", None), ("search", 1, "m0+r0", vm[0]), ("search", 2, "m0+r0+r1", vm[1])]
    order = [c[0] for c in phases.calls]
    assert order == ["eval"] + ["search", "extract", "train", "value", "eval"] * 3
    # value model k+1 starts from policy k+1 (a new head), seeded from the loop seed
    assert [t["policy"] for t in phases.trained] == ["m0+r0", "m0+r0+r1", "m0+r0+r1+r2"]
    assert [t["value_init"] for t in phases.trained] == ["", "", ""]
    assert [t["seed"] for t in phases.trained] == [derive_seed(0, "value", k) for k in range(3)]
    for k in range(3):
        assert marker_path(tmp_path / "run" / f"round_{k}", "value").exists()
        assert (tmp_path / "run" / f"round_{k}" / "value_data" / "value.jsonl").exists()


def test_replay_buffer_holds_exactly_the_last_r_rounds_trees(tmp_path):
    assert replay_buffer_rounds(0, 2) == [0]
    assert replay_buffer_rounds(3, 2) == [2, 3]
    assert replay_buffer_rounds(3, 0) == [0, 1, 2, 3]
    config = value_config(rounds=4, replay_rounds=2)
    phases = ValuePhases(config)
    metrics = run(config, tmp_path / "run", phases)
    expected = [[0], [0, 1], [1, 2], [2, 3]]
    assert [t["tree_ids"] for t in phases.trained] == [
        sorted(f"r{j}-{x}" for j in rounds for x in "ab") for rounds in expected]
    assert [r["value"]["buffer_rounds"] for r in metrics["rounds"]] == expected
    assert [r["value"]["buffer_trees"] for r in metrics["rounds"]] == [2, 4, 4, 4]
    every = ValuePhases(value_config(rounds=3))
    run(value_config(rounds=3), tmp_path / "all", every)
    assert [len(t["tree_ids"]) for t in every.trained] == [2, 4, 6]


def test_metrics_are_auc_and_brier_on_the_fresh_trees_by_hand(tmp_path):
    config = value_config(rounds=2)
    phases = ValuePhases(config)
    metrics = run(config, tmp_path / "run", phases)
    # value model 0 does not exist; value model 1 (trained on round 0) scores round 1's trees only
    assert phases.scored == [(str(tmp_path / "run" / "round_0" / "value_model"), ["r1-a", "r1-b"])]
    lines = metrics["value_quality_by_round"]
    # nodes with an outcome: a1 good, a2 bad, b1 good (b3 has none).
    # self-eval 0.8, 0.6, 0.3: AUC = (1 [0.8 > 0.6] + 0 [0.3 < 0.6]) / 2 = 0.5;
    #   Brier = ((0.8-1)^2 + 0.6^2 + (0.3-1)^2) / 3 = 0.89 / 3
    # value model 0.6, -0.6, 0.2 -> p = 0.8, 0.2, 0.6: AUC = 1; Brier = (0.04 + 0.04 + 0.16) / 3 = 0.08
    assert lines[0] == {"round": 0, "value_model": None, "nodes": 3, "value_model_auc": None,
                        "value_model_brier": None, "self_eval_nodes": 3, "self_eval_auc": 0.5,
                        "self_eval_brier": round(0.89 / 3, 4)}
    assert lines[1] == {"round": 1, "value_model": str(tmp_path / "run" / "round_0" / "value_model"), "nodes": 3,
                        "value_model_auc": 1.0, "value_model_brier": 0.08, "self_eval_nodes": 3,
                        "self_eval_auc": 0.5, "self_eval_brier": round(0.89 / 3, 4)}
    quality = metrics["rounds"][1]["value"]["quality"]
    assert (quality["step_nodes"], quality["value_model"]["good"], quality["value_model"]["bad"]) == (4, 2, 1)
    assert quality["value_model"]["mean_score_good"] == 0.7 and quality["value_model"]["mean_score_bad"] == 0.2
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["value_quality_by_round"] == lines


def test_value_model_on_the_self_evaluated_subset_when_some_nodes_lack_a_verdict():
    trees = round_trees(0)
    trees[0].nodes[2].self_eval = None  # a2: no verdict
    scores = {(t, n.node_id): VALUE_SCORE[n.text] for t, tree in enumerate(trees) for n in tree.nodes
              if n.depth >= 1 and not n.terminal}
    quality = value_and_self_eval_quality(trees, scores)
    assert quality["value_model"]["nodes"] == 3 and quality["self_eval"]["nodes"] == 2
    assert quality["self_eval"]["auc"] is None  # a1 and b1 are both good
    assert quality["value_model_on_self_eval_nodes"]["nodes"] == 2
    assert quality["value_model_on_self_eval_nodes"]["brier"] == round((0.04 + 0.16) / 2, 4)
    with pytest.raises(ValueError, match="1 step nodes with an outcome have no value-model score"):
        value_and_self_eval_quality(trees, {k: v for k, v in list(scores.items())[1:]})
    # only the step nodes with an outcome need a score (b3 has none): the same figures from those
    labeled = outcome_step_nodes(trees)
    assert len(labeled) == 3 and len(scores) == 4 and set(labeled) < set(scores)
    assert value_and_self_eval_quality(trees, {k: scores[k] for k in labeled}) == quality


def test_a_killed_value_phase_is_redone_and_finished_phases_are_skipped(tmp_path):
    run_dir = tmp_path / "run"
    config = value_config(rounds=2)
    with pytest.raises(Killed):
        run(config, run_dir, ValuePhases(config, kill_at=("value", 1)))  # round 1's value training
    assert marker_path(run_dir / "round_1", "train").exists()
    assert not marker_path(run_dir / "round_1", "value").exists()
    resumed = ValuePhases(config)
    metrics = run(config, run_dir, resumed)
    vm0 = str(run_dir / "round_0" / "value_model")
    assert resumed.calls == [("value", 1, "m0+r0+r1", vm0, [0, 1]), ("eval", "m0+r0+r1")]
    assert [line["value_model_auc"] for line in metrics["value_quality_by_round"]] == [None, 1.0]
    # a round-1 search killed after round 0's value phase resumes with value model 1 from the marker
    again = ValuePhases(config)
    run(config, run_dir, again)
    assert again.calls == []
    for name in ("search", "extract", "train", "value", "eval"):
        marker_path(run_dir / "round_1", name).unlink()
    redo = ValuePhases(config)
    run(config, run_dir, redo)
    assert redo.calls[0] == ("search", 1, "m0+r0", vm0)


def test_no_value_rows_keeps_the_previous_value_model(tmp_path):
    config = value_config(rounds=2)
    phases = ValuePhases(config, rows=False)  # trees with a root only: no value rows
    metrics = run(config, tmp_path / "run", phases)
    assert phases.trained == []
    assert [c[3] for c in phases.calls if c[0] == "search"] == [None, None]
    assert [r["value"]["trained"] for r in metrics["rounds"]] == [False, False]


def test_init_previous_trains_value_model_k_on(tmp_path):
    config = value_config(rounds=2, init="previous")
    phases = ValuePhases(config)
    run(config, tmp_path / "run", phases)
    assert [t["value_init"] for t in phases.trained] == ["", str(tmp_path / "run" / "round_0" / "value_model")]


def test_value_config_errors_and_yaml_routing():
    config = LoopConfig.from_yaml_dict({"search": {"value_model_weight": 1.0}, "value": {
        "method": "ppm", "replay_rounds": 2, "learning_rate": 2e-5, "ppm_use_margin": True,
        "train": {"max_steps": 7}}}, "x.yaml")
    assert (config.value.method, config.value.replay_rounds) == ("ppm", 2)
    assert (config.value.train.learning_rate, config.value.train.max_steps) == (2e-5, 7)
    assert config.value.options.ppm_use_margin is True and config.train.learning_rate == 5e-6
    with pytest.raises(UserError, match="search.value_model_weight is 0: give it a weight > 0"):
        LoopConfig.from_yaml_dict({"value": {"method": "value"}}, "x.yaml")
    with pytest.raises(UserError, match="search.value_model_weight > 0 needs a value model"):
        LoopConfig.from_yaml_dict({"search": {"value_model_weight": 1.0}}, "x.yaml")
    with pytest.raises(UserError, match="x.yaml: value: unknown option 'rounds'"):
        LoopConfig.from_yaml_dict({"value": {"rounds": 2}}, "x.yaml")
    with pytest.raises(UserError, match="value.replay_rounds must be >= 0"):
        LoopConfig.from_yaml_dict({"value": {"replay_rounds": -1}}, "x.yaml")
    with pytest.raises(UserError, match="do not set value.seed"):
        LoopConfig.from_yaml_dict({"value": {"seed": 3}}, "x.yaml")
    with pytest.raises(UserError, match="plan trees"):
        LoopConfig.from_yaml_dict({"search": {"value_model_weight": 1.0, "tree": "plan"},
                                   "value": {"method": "value"}}, "x.yaml")


def test_a_run_recorded_before_the_value_section_resumes(tmp_path):
    from test_loop import FakePhases, fake_config

    run_dir = tmp_path / "run"
    run(fake_config(rounds=1), run_dir, FakePhases())
    data = json.loads((run_dir / CONFIG_FILE).read_text())
    assert data.pop("value")["method"] == "none"
    (run_dir / CONFIG_FILE).write_text(json.dumps(data))
    resumed = FakePhases()
    metrics = run(fake_config(rounds=1), run_dir, resumed)
    assert resumed.calls == [] and "value_quality_by_round" not in metrics
    with pytest.raises(UserError, match=r"search, value differ"):
        run(value_config(rounds=1), run_dir, FakePhases())


def test_the_value_models_backend_may_change_on_resume(tmp_path):
    """value.score_backend is not part of the run's identity (both backends give the same float32
    scores): a run recorded without it, or with another one, resumes; another value method is refused."""
    valued = tmp_path / "valued"
    pinned = value_config(rounds=1, score_backend="transformers")
    run(pinned, valued, ValuePhases(pinned))
    data = json.loads((valued / CONFIG_FILE).read_text())
    data["value"].pop("score_backend")
    (valued / CONFIG_FILE).write_text(json.dumps(data))
    resumed = ValuePhases(value_config(rounds=1))
    run(value_config(rounds=1), valued, resumed)
    assert resumed.calls == [] and json.loads((valued / CONFIG_FILE).read_text())["value"]["score_backend"] == "auto"
    with pytest.raises(UserError, match=r"value differ"):
        run(value_config(rounds=1, method="ppm"), valued, ValuePhases(value_config(rounds=1, method="ppm")))


def test_outcome_rows_need_a_verified_step_and_without_one_no_value_model_is_trained():
    from mcts_po.loop_value import rows_with_targets

    verified, unverified = {"outcome": [None, 1.0]}, {"outcome": [None, None]}
    assert rows_with_targets([verified, unverified], LoopValueConfig(method="value")) == [verified]
    q_config = LoopValueConfig.from_yaml_dict({"method": "value", "target": "q"}, "cfg.yaml")
    assert rows_with_targets([verified, unverified], q_config) == [verified, unverified]
    assert rows_with_targets([unverified], LoopValueConfig(method="ppm")) == [unverified]


def test_a_run_recorded_before_the_value_target_and_backbone_resumes_as_it_trained(tmp_path):
    """A loop_config.json without value.options.target / backbone / head_l2 trained its value models
    on Q with the backbone (the behaviour before those options): it resumes with those settings and
    is refused with the new defaults (frozen, outcome), which would train other value models."""
    from mcts_po.train.config import ValueConfig

    old_way = ValueConfig(target="q", backbone="train")
    recorded = value_config(rounds=1, options=old_way)
    run(recorded, tmp_path / "old", ValuePhases(recorded))
    data = json.loads((tmp_path / "old" / CONFIG_FILE).read_text())
    for name in ("target", "backbone", "head_l2"):
        data["value"]["options"].pop(name)
    (tmp_path / "old" / CONFIG_FILE).write_text(json.dumps(data))
    resumed = ValuePhases(recorded)
    run(recorded, tmp_path / "old", resumed)
    assert resumed.calls == []
    assert json.loads((tmp_path / "old" / CONFIG_FILE).read_text())["value"]["options"]["backbone"] == "train"
    assert (ValueConfig().backbone, ValueConfig().target) == ("frozen", "outcome")
    with pytest.raises(UserError, match=r"value differ"):
        run(value_config(rounds=1), tmp_path / "old", ValuePhases(value_config(rounds=1)))


def test_loop_search_phase_passes_the_value_model_and_zeroes_its_weight_without_one(tmp_path, monkeypatch):
    import mcts_po.search_runner as runner
    from mcts_po.loop import BackendCache

    jobs = []

    def fake_run(job, backend=None):
        jobs.append(job)
        return {"problems": 2, "problems_with_correct_terminal": 1, "solved_share": 0.5, "nodes": 9,
                "generated_tokens": 10, "prompt_tokens": 20}

    monkeypatch.setattr(runner, "run_search_job", fake_run)
    config = value_config(rounds=2, score_device="cpu", score_batch_size=5)
    phases = LoopPhases(config, log=lambda m: None, engines=BackendCache(lambda model: type("E", (), {"close": lambda s: None})()))
    first = phases.search(0, "m0", tmp_path / "s0")
    second = phases.search(1, "m1", tmp_path / "s1", value_model="vm1")
    assert (jobs[0].value_model, jobs[0].search.value_model_weight) == (None, 0.0)
    assert (jobs[1].value_model, jobs[1].search.value_model_weight) == ("vm1", 1.0)
    assert (jobs[1].value_model_device, jobs[1].value_model_batch_size) == ("cpu", 5)
    assert jobs[1].value_model_backend == "auto"
    assert (first["value_model"], second["value_model"]) == (None, "vm1")


def test_real_phases_on_a_tiny_llama_train_and_use_a_value_model(tmp_path):
    """Two real rounds (transformers backend, CPU) with a tiny random Llama: round 1's search is
    guided by value model 1 (recorded in its trees), and its metrics come from scoring round 1's trees."""
    from tiny_model import byte_level_tokenizer, save_tiny_llama
    from mcts_po.train.value_model import value_model_fingerprint
    from mcts_po.tree_io import read_tree_file

    policy = save_tiny_llama(tmp_path / "policy", byte_level_tokenizer())
    config = LoopConfig.from_yaml_dict({
        "rounds": 2, "method": "step-dpo", "model": policy, "backend": "transformers",
        "backend_options": {"device": "cpu"}, "task": "arithmetic", "problems_per_round": 2, "eval_limit": 2,
        "eval_max_tokens": 8, "progress": False, "problems_in_flight": 2,
        "search": {"num_simulations": 3, "num_children": 2, "max_depth": 3, "max_tokens": 40,
                   "value_model_weight": 1.0, "rollout_weight": 0.0, "use_rollout": False},
        "sampling": {"max_step_tokens": 8},
        "train": {"max_steps": 1, "batch_size": 2, "device": "cpu", "max_length": 128},
        # target q: a random model's trees rarely hold a verified terminal (the outcome target's labels)
        "value": {"method": "value", "max_steps": 1, "batch_size": 4, "device": "cpu", "max_length": 128,
                  "score_device": "cpu", "target": "q"},
    }, "test")
    run_dir = tmp_path / "run"
    metrics = run_loop(config, run_dir, log=lambda message: None, plot=False)
    vm1 = run_dir / "round_0" / "value_model"
    assert (vm1 / "config.json").exists() and (vm1 / "training_log.json").exists()
    trees = read_tree_file(run_dir / "round_1" / "search" / "trees.jsonl")
    assert trees and all(t.extra["value_model"]["fingerprint"] == value_model_fingerprint(vm1) for t in trees)
    assert "value_model" not in read_tree_file(run_dir / "round_0" / "search" / "trees.jsonl")[0].extra
    lines = metrics["value_quality_by_round"]
    assert [line["value_model"] for line in lines] == [None, str(vm1)]
    quality = metrics["rounds"][1]["value"]["quality"]
    assert quality["step_nodes"] > 0 and quality["trees"] == len(trees)


def test_shipped_value_loop_config_parses():
    from mcts_po.config_utils import load_yaml

    path = Path(__file__).resolve().parents[1] / "configs" / "loop_arithmetic_value_cpu.yaml"
    config = LoopConfig.from_yaml_dict(load_yaml(path), str(path))
    assert (config.value.method, config.value.replay_rounds, config.value.train.max_steps) == ("value", 2, 40)
    assert config.search.value_model_weight == 1.0 and config.train.sft_weight == 1.0


def test_loop_command_keeps_the_value_section_of_the_file(tmp_path):
    import argparse

    from mcts_po.commands import loop

    config = tmp_path / "l.yaml"
    config.write_text("search: {value_model_weight: 2.0}\nvalue: {method: ppm, replay_rounds: 3, max_steps: 5}\n")
    parser = argparse.ArgumentParser()
    loop.add_arguments(parser)
    built = loop.build_config(parser.parse_args(["--config", str(config), "--out", "r", "--rounds", "4"]))
    assert (built.rounds, built.value.method, built.value.replay_rounds, built.value.train.max_steps) == (4, "ppm", 3, 5)
    assert built.search.value_model_weight == 2.0


def test_loop_value_and_score_quality_import_no_torch():
    import subprocess
    import sys

    code = ("import sys, mcts_po.loop_value, mcts_po.score_quality, mcts_po.loop; "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.slow
def test_smollm2_two_tiny_rounds_guided_by_the_value_model_of_the_round_before(tmp_path):
    """SmolLM2-135M (transformers, CPU): two rounds of 2 arithmetic problems. Round 0 is valued by
    the self-evaluation alone; value model 1 (a head on policy 1, trained on round 0's trees) joins it
    in round 1, and every new non-terminal node of round 1 starts at
    (0.5 * (2 * self_eval - 1) + 1.0 * v) / 1.5 with v value model 1's score of the node."""
    from mcts_po.graphs.run_stats import subtree_outcomes
    from mcts_po.llm.value_guide import ValueGuide
    from mcts_po.train.value_model import ValueScorer
    from mcts_po.tree_io import read_tree_file

    config = LoopConfig.from_yaml_dict({
        "rounds": 2, "method": "step-dpo", "model": "smollm2-135m", "backend": "transformers",
        "backend_options": {"device": "cpu"}, "task": "arithmetic", "task_options": {"num_ops": 1, "max_value": 20},
        "problems_per_round": 2, "problems_in_flight": 2, "eval_limit": 2, "eval_max_tokens": 32, "progress": False,
        "search": {"num_simulations": 3, "num_children": 2, "max_depth": 3, "max_tokens": 96,
                   "self_eval_weight": 0.5, "rollout_weight": 0.0, "use_rollout": False, "value_model_weight": 1.0},
        "sampling": {"max_step_tokens": 24},
        "train": {"max_steps": 1, "batch_size": 1, "max_length": 128, "device": "cpu"},
        "value": {"method": "value", "max_steps": 2, "batch_size": 2, "max_length": 128, "learning_rate": 1e-5,
                  "device": "cpu", "score_device": "cpu"},
    }, "slow test")
    run_dir = tmp_path / "run"
    metrics = run_loop(config, run_dir, log=print, plot=False)
    vm1 = run_dir / "round_0" / "value_model"
    assert metrics["rounds"][0]["value"]["trained"] is True
    assert metrics["rounds"][1]["search"]["value_model"] == str(vm1)
    trees = read_tree_file(run_dir / "round_1" / "search" / "trees.jsonl")
    keys = [(t, n.node_id) for t, tree in enumerate(trees) for n in tree.nodes if n.depth >= 1 and not n.terminal]
    assert keys, "round 1 grew no non-terminal step"
    scorer = ValueScorer(str(vm1), device="cpu")
    pairs = ValueGuide.texts(trees, keys)
    scores = [s[-1] for s in scorer.score_paths([p for p, _ in pairs], [s for _, s in pairs])]
    for (t, node_id), v in zip(keys, scores):
        node = trees[t].nodes[node_id]
        assert node.initial_value == pytest.approx((0.5 * (2 * node.self_eval - 1) + v) / 1.5, abs=1e-4)
    with_outcome = sum(1 for t, n in keys if subtree_outcomes(trees[t])[n] is not None)
    line = metrics["value_quality_by_round"][1]
    assert line["value_model"] == str(vm1) and line["nodes"] == with_outcome == line["self_eval_nodes"]
