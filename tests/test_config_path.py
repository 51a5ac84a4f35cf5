"""One config path for every command: flags generated from the config dataclasses, YAML < flags.

    .venv/bin/python -m pytest -q tests/test_config_path.py
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from mcts_po.config_utils import flag_fields
from mcts_po.io_utils import UserError

REPO = Path(__file__).resolve().parents[1]


def parser_of(command_module) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    command_module.add_arguments(parser)
    return parser


def flags_of(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def test_every_config_field_of_every_command_is_a_flag():
    from mcts_po.commands import evaluate, extract, loop, search, train
    from mcts_po.evaluation import EvalConfig
    from mcts_po.extract.config import ExtractConfig
    from mcts_po.llm.config import SamplingConfig
    from mcts_po.loop import LoopConfig
    from mcts_po.search.config import SearchConfig
    from mcts_po.search_runner import SearchJob
    from mcts_po.train.config import TrainConfig

    expected = {
        search: (SearchJob, SearchConfig, SamplingConfig),
        evaluate: (EvalConfig,),
        extract: (ExtractConfig,),
        train: (TrainConfig,),
        loop: (LoopConfig,),
    }
    for module, classes in expected.items():
        flags = flags_of(parser_of(module))
        for cls in classes:
            for f, _ in flag_fields(cls):
                flag = "--" + ("no-" if f.name == "progress" else "") + f.name.replace("_", "-")
                assert flag in flags, f"{module.__name__}: {cls.__name__}.{f.name} has no flag {flag}"
                assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


def test_search_task_options_and_sections_from_flags_and_yaml(tmp_path):
    from mcts_po.commands import search

    config = tmp_path / "s.yaml"
    config.write_text("task: arithmetic\nlimit: 7\nnum_simulations: 5\nsampling:\n  temperature: 0.3\n"
                      "task_options: {num_ops: 3}\nout: runs/from-yaml\n")
    parser = parser_of(search)
    job = search.build_job(parser.parse_args(["--config", str(config), "--task-options", '{"num_ops": 2, "max_value": 9}',
                                              "--num-simulations", "3", "--step-delimiter", "\\n\\n", "--no-progress"]))
    assert job.task == "arithmetic" and job.limit == 7 and job.out == "runs/from-yaml"  # from the file
    assert job.task_options == {"num_ops": 2, "max_value": 9}  # the flag replaces the file's mapping
    assert job.search.num_simulations == 3 and job.sampling.temperature == 0.3
    assert job.sampling.step_delimiter == "\n\n"  # escapes typed in a shell are decoded
    assert job.progress is False
    bare = search.build_job(parser.parse_args(["--out", "o"]))
    assert bare == dataclasses.replace(bare, out="o") and bare.task == "arithmetic" and bare.backend == "vllm"
    with pytest.raises(UserError, match="--out RUN_FOLDER is required"):
        search.build_job(parser.parse_args([]))
    config.write_text("num_sims: 3\n")
    with pytest.raises(UserError, match=r"s.yaml: unknown option 'num_sims'; valid: backend"):
        search.build_job(parser.parse_args(["--config", str(config), "--out", "o"]))


def test_a_bad_json_flag_is_one_clear_line():
    result = subprocess.run([sys.executable, "-m", "mcts_po.cli", "search", "--out", "o", "--task-options", "[1]"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert "argument --task-options: must be a JSON object" in result.stderr.splitlines()[-1]


def test_loop_flags_override_the_file_and_keep_its_sections(tmp_path):
    from mcts_po.commands import loop

    config = tmp_path / "l.yaml"
    config.write_text("rounds: 1\nmethod: tpo\ntask_options: {num_ops: 1}\ntrain: {max_steps: 3}\n"
                      "search: {num_simulations: 4}\n")
    args = parser_of(loop).parse_args(["--config", str(config), "--out", "r", "--rounds", "2", "--eval-k", "1",
                                       "--backend-options", '{"max_batch_size": 4}', "--base-url", "http://h:1/v1"])
    built = loop.build_config(args)
    assert (built.rounds, built.method, built.train.max_steps, built.search.num_simulations) == (2, "tpo", 3, 4)
    assert built.task_options == {"num_ops": 1}
    assert built.backend_options == {"max_batch_size": 4, "base_url": "http://h:1/v1"}


def test_config_modules_import_no_torch():
    code = ("import sys; import mcts_po.train.config, mcts_po.llm.config, mcts_po.extract.config, mcts_po.search.config, "
            "mcts_po.search_runner, mcts_po.loop, mcts_po.commands.search, mcts_po.commands.train, "
            "mcts_po.commands.loop, mcts_po.llm.policy, mcts_po.evaluation; "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_loop_file_may_leave_to_a_flag_what_its_method_needs(tmp_path):
    """`method: rft` in the file needs a budget; the flag gives it (flags are merged before the check)."""
    from mcts_po.commands import loop

    config = tmp_path / "l.yaml"
    config.write_text("method: rft\nsampling: {temperature: 0.7}\n")
    built = loop.build_config(parser_of(loop).parse_args(["--config", str(config), "--out", "r",
                                                          "--flat-budget-run", "runs/tree"]))
    assert (built.method, built.flat_budget_run, built.sampling.temperature) == ("rft", "runs/tree", 0.7)
    with pytest.raises(UserError, match="exactly one of flat_budget_run"):
        loop.build_config(parser_of(loop).parse_args(["--config", str(config), "--out", "r"]))
