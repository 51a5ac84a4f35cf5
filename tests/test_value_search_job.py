"""`mcts-po search --value-model DIR`: a tiny random Llama policy and a value model trained one
step from it drive a real transformers-backend search; the trees record the model, its scores
are the nodes' values, and a resume with a changed value model is refused; slow tests: SmolLM2
policy and value model on transformers, and a vllm search whose value model runs on vLLM's pooling runner.

    PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/test_value_search_job.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcts_po.cli import main
from mcts_po.llm.value_guide import ValueGuide
from mcts_po.train.config import TrainConfig, ValueConfig
from mcts_po.train.value_model import ValueScorer, train_value_model, value_model_fingerprint
from mcts_po.tree_io import read_trees
from tiny_model import byte_level_tokenizer, save_tiny_llama

ROWS = [{"prompt": "q: 1+1?\n", "completions": ["1+1=2", "so 2"], "labels": [0.8, 1.0], "tree_id": "t", "node_ids": [1, 2]}]
TRAINED = ValueConfig(backbone="train", target="q")  # the rows hold Q labels; lr moves the weights


def search_argv(policy: str, value: str, out: Path) -> list[str]:
    return ["search", "--task", "arithmetic", "--limit", "1", "--backend", "transformers", "--model", policy,
            "--backend-options", '{"device": "cpu"}', "--out", str(out), "--no-greedy-baseline",
            "--num-simulations", "3", "--num-children", "2", "--max-depth", "3",
            "--value-model", value, "--value-model-device", "cpu", "--value-model-weight", "1",
            "--self-eval-weight", "0", "--no-use-self-eval", "--rollout-weight", "0", "--no-use-rollout",
            "--max-step-tokens", "8"]


def test_search_with_a_trained_value_model_end_to_end(tmp_path, capsys):
    policy = save_tiny_llama(tmp_path / "policy", byte_level_tokenizer())
    config = TrainConfig(device="cpu", progress=False, batch_size=4, max_steps=1)
    value = str(train_value_model(policy, ROWS, "value", config, tmp_path / "value", TRAINED))
    out = tmp_path / "run"
    assert main(search_argv(policy, value, out)) == 0
    trees = read_trees(out / "trees.jsonl")
    tree = trees[0]
    assert tree.extra["value_model"] == {"path": value, "fingerprint": value_model_fingerprint(value), "weight": 1.0}
    inner = [n for n in tree.nodes[1:] if not n.terminal]
    assert inner
    scorer = ValueScorer(value, device="cpu")
    pairs = ValueGuide.texts([tree], [(0, n.node_id) for n in inner])
    scores = scorer.score_paths([p for p, _ in pairs], [s for _, s in pairs])
    for node, per_step in zip(inner, scores):
        assert node.initial_value == pytest.approx(per_step[-1], abs=1e-5)
    recorded = json.loads((out / "run_config.json").read_text())["identity"]["value_model"]
    assert recorded["fingerprint"] == value_model_fingerprint(value)

    # a run_config.json from before explicit weights (no rollout_weight: it was 1 - self_eval_weight)
    # resumes when the weights agree; here self_eval_weight 0 -> rollout 1 differs from 0: refused
    run_config = json.loads((out / "run_config.json").read_text())
    for key in ("rollout_weight", "value_model_weight"):
        del run_config["identity"]["search"][key]
    (out / "run_config.json").write_text(json.dumps(run_config))
    capsys.readouterr()
    assert main(search_argv(policy, value, out)) != 0
    assert "search.rollout_weight 1.0 -> 0.0" in capsys.readouterr().err
    run_config["identity"]["search"]["self_eval_weight"] = 1.0  # old lambda 1: rollout weight 0
    (out / "run_config.json").write_text(json.dumps(run_config))
    capsys.readouterr()
    assert main(search_argv(policy, value, out)) != 0
    err = capsys.readouterr().err
    # rollout weight 1 - 1.0 = 0 now agrees; an old run had no value model: weight 0 -> 1 differs
    assert "search.self_eval_weight 1.0 -> 0.0" in err and "search.rollout_weight" not in err
    assert "search.value_model_weight 0.0 -> 1.0" in err
    run_config["identity"]["search"]["self_eval_weight"] = 0.0
    run_config["identity"]["search"]["value_model_weight"] = 1.0
    run_config["identity"]["search"]["rollout_weight"] = 0.0
    (out / "run_config.json").write_text(json.dumps(run_config))
    # the same command resumes; a changed value model (other weights in the same folder) is refused
    assert main(search_argv(policy, value, out)) == 0
    train_value_model(policy, ROWS, "value", TrainConfig(device="cpu", progress=False, batch_size=4, max_steps=1,
                                                           learning_rate=1e-2), tmp_path / "value", TRAINED)
    capsys.readouterr()
    assert main(search_argv(policy, value, out)) != 0
    assert "changed: value_model.fingerprint" in capsys.readouterr().err
    other = str(train_value_model(policy, ROWS, "value", config, tmp_path / "value2", TRAINED))
    assert main(search_argv(policy, other, out)) != 0
    assert "value_model.path" in capsys.readouterr().err


def test_value_model_without_weight_and_other_tokenizer_are_refused(tmp_path, capsys):
    policy = save_tiny_llama(tmp_path / "policy", byte_level_tokenizer())
    config = TrainConfig(device="cpu", progress=False, batch_size=4, max_steps=1)
    value = str(train_value_model(policy, ROWS, "value", config, tmp_path / "value", TRAINED))
    argv = search_argv(policy, value, tmp_path / "run")
    capsys.readouterr()
    assert main([a if a != "1" or argv[i - 1] != "--value-model-weight" else "0" for i, a in enumerate(argv)]) != 0
    assert "value_model_weight is 0" in capsys.readouterr().err
    other_tokens = byte_level_tokenizer()
    other_tokens.add_tokens(["<step>"])
    other = save_tiny_llama(tmp_path / "other", other_tokens)
    assert main(search_argv(other, value, tmp_path / "run2")) != 0
    assert "another tokenizer" in capsys.readouterr().err


@pytest.mark.slow
def test_smollm2_search_guided_by_a_smollm2_value_model(tmp_path):
    """SmolLM2-135M policy (transformers, CPU) and a SmolLM2 value model trained 2 steps: 2
    arithmetic problems, 4 simulations each, value model + rollout (no verdicts)."""
    from mcts_po.models import resolve_model

    base = resolve_model("smollm2-135m")
    config = TrainConfig(device="cpu", progress=False, batch_size=1, max_steps=2, max_length=64, learning_rate=1e-5)
    value = str(train_value_model(base, ROWS * 2, "value", config, tmp_path / "value", TRAINED))
    out = tmp_path / "run"
    argv = ["search", "--task", "arithmetic", "--limit", "2", "--backend", "transformers", "--model", "smollm2-135m",
            "--backend-options", '{"device": "cpu"}', "--out", str(out), "--no-greedy-baseline",
            "--num-simulations", "4", "--num-children", "2", "--max-depth", "3", "--max-step-tokens", "24",
            "--rollout-max-tokens", "32", "--value-model", value, "--value-model-device", "cpu",
            "--value-model-weight", "2", "--self-eval-weight", "0", "--no-use-self-eval"]
    assert main(argv) == 0
    trees = read_trees(out / "trees.jsonl")
    assert len(trees) == 2
    scorer = ValueScorer(value, device="cpu")
    for tree in trees:
        assert tree.extra["value_model"]["fingerprint"] == value_model_fingerprint(value)
        inner = [n for n in tree.nodes[1:] if not n.terminal]
        assert inner
        pairs = ValueGuide.texts([tree], [(0, n.node_id) for n in inner])
        scores = scorer.score_paths([p for p, _ in pairs], [s for _, s in pairs])
        for node, per_step in zip(inner, scores):
            assert node.self_eval is None and node.rollout_value in (1.0, -1.0)
            expected = (2.0 * per_step[-1] + 0.5 * node.rollout_value) / 2.5
            assert node.initial_value == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
def test_smollm2_vllm_search_scored_by_vllms_pooling_runner(tmp_path):
    """A vllm search with a SmolLM2 value model and value_model_backend auto: the value model runs on
    a second vLLM engine (pooling runner, LAST token, no activation, prefix cache) in the same
    process. Its node values agree with the transformers scorer on the same paths (the search's
    pooling engine runs in the CPU's dtype; a float32 pooling engine matches transformers to 1e-3),
    and the summary counts the value model's nodes, calls and seconds."""
    from mcts_po.backends.vllm_value import VLLMValueScorer
    from mcts_po.models import resolve_model

    base = resolve_model("smollm2-135m")
    config = TrainConfig(device="cpu", progress=False, batch_size=1, max_steps=2, max_length=64, learning_rate=1e-4)
    value = str(train_value_model(base, ROWS * 2, "value", config, tmp_path / "value", TRAINED))
    out = tmp_path / "run"
    argv = ["search", "--task", "arithmetic", "--limit", "2", "--backend", "vllm", "--model", "smollm2-135m",
            "--out", str(out), "--no-greedy-baseline", "--num-simulations", "4", "--num-children", "2",
            "--max-depth", "3", "--max-step-tokens", "24", "--value-model", value, "--value-model-weight", "1",
            "--self-eval-weight", "0", "--no-use-self-eval", "--rollout-weight", "0", "--no-use-rollout",
            "--no-progress"]
    assert main(argv) == 0
    trees = read_trees(out / "trees.jsonl")
    inner = [(tree, n) for tree in trees for n in tree.nodes[1:] if not n.terminal]
    assert len(trees) == 2 and inner
    now = json.loads((out / "summary.json").read_text())["this_invocation"]
    # every new non-terminal child is scored when it is made; one can become terminal afterwards: a
    # leaf whose expansion gives only empty steps ends there as terminal "eos" (mcts.expand_leaves)
    assert len(inner) <= now["value_model_nodes"] <= sum(len(t.nodes) - 1 for t in trees)
    assert now["value_model_calls"] >= 1
    assert 0 < now["value_model_load_seconds"] < now["value_model_seconds"] < now["search_seconds"]
    pairs = [ValueGuide.texts([tree], [(0, n.node_id)])[0] for tree, n in inner]
    prompts, step_lists = [p for p, _ in pairs], [s for _, s in pairs]
    reference = [s[-1] for s in ValueScorer(value, device="cpu").score_paths(prompts, step_lists)]
    searched = [n.initial_value for _, n in inner]
    assert max(abs(a - b) for a, b in zip(searched, reference)) < 0.05
    exact = VLLMValueScorer(value, dtype="float32")
    try:
        float32 = exact.score_last_steps(prompts, step_lists)
        per_step = exact.score_paths(prompts[:2], step_lists[:2])
        stats = exact.stats()
    finally:
        exact.close()
    assert max(abs(a - b) for a, b in zip(float32, reference)) < 1e-3
    assert [s[-1] for s in per_step] == pytest.approx(float32[:2], abs=1e-4)
    assert stats["cached_prompt_tokens"] > 0  # the root prompt is shared by every path
    print(f"\nvllm value scorer: {len(inner)} nodes, max |search - transformers| "
          f"{max(abs(a - b) for a, b in zip(searched, reference)):.4f}, float32 "
          f"{max(abs(a - b) for a, b in zip(float32, reference)):.2e}")
