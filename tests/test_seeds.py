"""Tests of the one-seed rule (mcts_po/seeds.py, LoopConfig.seed) and of the training precision choice
(mcts_po/precision.py, TrainConfig.bf16).

The loop derives every round's search and training seed and its engine and evaluation seeds from
its one top-level seed. Checked here with the loop's real search phase on a tiny random Llama
(transformers backend, reseeded per chunk): two loop seeds give different trees, the same seed the
same trees, and a rerun with another seed is refused (a resume keeps its seed).

    .venv/bin/pytest -q tests/test_seeds.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcts_po.io_utils import UserError
from mcts_po.loop import LoopConfig, LoopPhases, run_loop
from mcts_po.precision import choose_bf16, normalize_bf16_choice
from mcts_po.seeds import SEED_PURPOSES, derive_seed, loop_round_seeds, loop_seeds
from test_crash_resume import build_tiny_llama
from test_loop import FakePhases, fake_config

VOLATILE_TREE_FIELDS = ("timings",)


def test_derived_seeds_are_distinct_stable_and_follow_the_top_level_seed():
    assert derive_seed(0, "search", 1) == derive_seed(0, "search", 1)
    every = [derive_seed(s, p, k) for s in (0, 1) for p in SEED_PURPOSES for k in (0, 1, 2)]
    assert len(set(every)) == len(every), "two streams share a seed"
    assert all(0 <= s < 2**31 for s in every)
    assert loop_round_seeds(0, 0) != loop_round_seeds(1, 0)
    assert loop_seeds(5)["engine"] != loop_seeds(6)["engine"]
    with pytest.raises(ValueError, match="search, engine, eval, train"):
        derive_seed(0, "rollout")


def test_a_loop_config_refuses_section_seeds_and_a_silent_greedy_evaluation():
    with pytest.raises(UserError, match="top of the loop config"):
        LoopConfig.from_yaml_dict({"search": {"seed": 3}})
    with pytest.raises(UserError, match="top of the loop config"):
        LoopConfig.from_yaml_dict({"train": {"seed": 3}})
    with pytest.raises(UserError, match="eval_temperature"):
        LoopConfig.from_yaml_dict({"eval_k": 4, "sampling": {"temperature": 0.0}})
    assert LoopConfig.from_yaml_dict({"eval_k": 4, "eval_temperature": 0.7, "sampling": {"temperature": 0.0}})


def test_a_rerun_with_another_seed_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_loop(fake_config(rounds=1, seed=3), run_dir, phases=FakePhases(), log=lambda m: None, plot=False)
    with pytest.raises(UserError, match="seed"):
        run_loop(fake_config(rounds=1, seed=4), run_dir, phases=FakePhases(), log=lambda m: None, plot=False)
    assert json.loads((run_dir / "loop_config.json").read_text())["seed"] == 3


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-seeds"))


def loop_trees(model: str, seed: int, out: Path) -> list[dict]:
    config = LoopConfig.from_yaml_dict({
        "model": model, "backend": "transformers", "backend_options": {"dtype": "float32"},
        "task": "demo", "train_split": "test", "problems_per_round": 2, "problems_in_flight": 2,
        "progress": False, "seed": seed,
        "search": {"num_simulations": 3, "num_children": 2, "leaves_per_wave": 1, "max_depth": 2},
        "sampling": {"max_step_tokens": 6, "rollout_max_tokens": 6, "self_eval_top_logprobs": 5},
    })
    phases = LoopPhases(config, log=lambda m: None)
    try:
        result = phases.search(0, model, out)
    finally:
        phases.close()
    assert result["seed"] == loop_round_seeds(seed, 0)["search"]
    trees = [json.loads(line) for line in (out / "trees.jsonl").read_text().splitlines()]
    for tree in trees:
        for name in VOLATILE_TREE_FIELDS:
            tree.pop(name, None)
    return trees


def test_the_loop_seed_decides_the_trees(tiny_model, tmp_path):
    first = loop_trees(tiny_model, 1, tmp_path / "a")
    again = loop_trees(tiny_model, 1, tmp_path / "b")
    other = loop_trees(tiny_model, 2, tmp_path / "c")
    assert first == again
    steps = lambda trees: [[n.get("text") for n in t["nodes"]] for t in trees]  # noqa: E731
    assert steps(first) != steps(other), "a different loop seed searched the same trees"


def test_bf16_auto_follows_the_processor(tmp_path):
    zen4 = tmp_path / "cpuinfo-zen4"
    zen4.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 sha_ni\n")
    avx2 = tmp_path / "cpuinfo-avx2"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert choose_bf16("auto", "cpu", str(zen4))[0] is True
    use, reason = choose_bf16("auto", "cpu", str(avx2))
    assert use is False and "no avx512_bf16" in reason
    assert choose_bf16(True, "cpu", str(avx2)) == (True, "bf16=true requested")
    assert choose_bf16("false", "cpu", str(zen4))[0] is False
    assert [normalize_bf16_choice(v) for v in (True, False, "AUTO", "on", "off")] == ["true", "false", "auto", "true", "false"]
    with pytest.raises(ValueError, match="auto, true, false"):
        normalize_bf16_choice("maybe")


def test_cpu_model_name_and_flags_come_from_the_first_processor(tmp_path):
    import platform

    from mcts_po.precision import cpu_flags, cpu_model_name

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx512_bf16\n\n"
                    "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    assert cpu_model_name(str(info)) == "AMD EPYC 9R14"
    assert cpu_flags(str(info)) == frozenset({"fpu", "avx512_bf16"})
    missing = str(tmp_path / "absent")
    assert cpu_model_name(missing) == platform.machine() and cpu_flags(missing) == frozenset()


def test_machine_summary_names_cores_python_and_each_package():
    import os
    import platform
    from importlib.metadata import version

    from mcts_po.precision import machine_summary

    line = machine_summary(("pytest", "no-such-package-mcts-po"))
    assert line.startswith(f"{os.cpu_count()} CPU cores (")
    assert f"Python {platform.python_version()}" in line
    assert line.endswith(f"pytest {version('pytest')}, no-such-package-mcts-po not installed")
    assert machine_summary(()).endswith(f"Python {platform.python_version()}")
