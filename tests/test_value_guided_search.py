"""Search guided by a value model: the value mix, zero-weight sources, one batched call per wave.

A scripted scorer stands in for `ValueScorer` (its score for a path is a fixed function of the
path's step count), and `NeverEndingBackend` (tests/test_limits.py) records every engine request.

    PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/test_value_guided_search.py
"""

from __future__ import annotations

import pytest

from mcts_po.extract.value_targets import rows_from_tree
from mcts_po.llm.config import SamplingConfig
from mcts_po.llm.policy import LLMSearchPolicy
from mcts_po.llm.value_guide import ValueGuide
from mcts_po.search.config import SearchConfig
from mcts_po.search.mcts import NodeEvaluation, node_value, run_search
from mcts_po.search.tree import Tree
from mcts_po.tasks import get_task
from mcts_po.tasks.base import Problem
from tests.test_limits import NeverEndingBackend


class ScriptedScorer:
    """score of step j (1-based) of a path = 0.1 * j - 0.25; records every call."""

    def __init__(self):
        self.calls: list[tuple[list[str], list[list[str]]]] = []

    def score_paths(self, prompts, step_lists):
        self.calls.append((list(prompts), [list(s) for s in step_lists]))
        return [[0.1 * (j + 1) - 0.25 for j in range(len(steps))] for steps in step_lists]


def search(config: SearchConfig, guide: ValueGuide | None):
    backend = NeverEndingBackend()
    task = get_task("gsm8k")
    problem = Problem(id="p", question="Tom has 3 apples and buys 4. How many now?", answer="7")
    policy = LLMSearchPolicy(backend, task, [problem], SamplingConfig(max_step_tokens=5, rollout_max_tokens=6),
                             config, value_guide=guide)
    tree = Tree.new(problem_id="p", question=problem.question, gold_answer="7", prompt=policy.root_prompts[0])
    progress = run_search([tree], policy, config)
    return tree, backend, progress


def assert_one_call_per_wave(tree: Tree, scorer: ScriptedScorer) -> None:
    """One scorer call per wave that added non-terminal nodes, holding exactly those nodes' paths."""
    waves = sorted({n.wave for n in tree.nodes[1:] if not n.terminal})
    assert len(waves) >= 2 and len(scorer.calls) == len(waves)
    for wave, (_, step_lists) in zip(waves, scorer.calls):
        expected = [[m.text for m in tree.path(n.node_id)] for n in tree.nodes[1:] if not n.terminal and n.wave == wave]
        assert step_lists == expected


def test_value_model_only_search_sends_only_expansions_and_uses_the_scores_exactly():
    config = SearchConfig(num_simulations=6, num_children=2, leaves_per_wave=2, max_depth=4, max_tokens=1000,
                          self_eval_weight=0, rollout_weight=0, use_self_eval=False, use_rollout=False,
                          value_model_weight=1.0)
    scorer = ScriptedScorer()
    tree, backend, progress = search(config, ValueGuide("scripted", scorer=scorer))
    # no verdict (top_logprobs) and no rollout (rollout_max_tokens) requests: expansions only
    assert backend.requests and all(r.max_tokens == 5 and not r.top_logprobs for r in backend.requests)
    for node in tree.nodes[1:]:
        if not node.terminal:
            depth = len(tree.path(node.node_id))
            assert node.initial_value == pytest.approx(0.1 * depth - 0.25, abs=1e-12)
    assert_one_call_per_wave(tree, scorer)


def test_mixed_weights_give_the_hand_computed_value():
    config = SearchConfig(self_eval_weight=1.0, rollout_weight=2.0, value_model_weight=3.0)
    evaluation = NodeEvaluation(self_eval=0.75, rollout_value=-1.0, value_model=0.4)
    # (1 * 0.5 + 2 * -1 + 3 * 0.4) / 6 = -0.3 / 6
    assert node_value(evaluation, False, config) == pytest.approx(-0.05)
    assert node_value(NodeEvaluation(correct=True, value_model=-1.0), True, config) == 1.0


def test_mixed_search_sends_verdicts_rollouts_and_one_scorer_call_per_wave():
    config = SearchConfig(num_simulations=4, num_children=2, leaves_per_wave=2, max_depth=3, max_tokens=1000,
                          self_eval_weight=1.0, rollout_weight=1.0, value_model_weight=2.0)
    scorer = ScriptedScorer()
    tree, backend, progress = search(config, ValueGuide("scripted", scorer=scorer))
    assert any(r.top_logprobs for r in backend.requests) and any(r.max_tokens == 6 for r in backend.requests)
    for node in tree.nodes[1:]:
        if not node.terminal:
            depth = len(tree.path(node.node_id))
            expected = (1.0 * (2 * node.self_eval - 1) + 1.0 * node.rollout_value + 2.0 * (0.1 * depth - 0.25)) / 4
            assert node.initial_value == pytest.approx(expected, abs=1e-12)
    assert_one_call_per_wave(tree, scorer)


def test_scored_texts_equal_the_extracted_value_rows():
    config = SearchConfig(num_simulations=6, num_children=2, leaves_per_wave=2, max_depth=4, max_tokens=1000,
                          self_eval_weight=0, rollout_weight=0, use_self_eval=False, use_rollout=False,
                          value_model_weight=1.0)
    tree, _, _ = search(config, ValueGuide("scripted", scorer=ScriptedScorer()))
    from mcts_po.extract.config import ExtractConfig

    rows = rows_from_tree(tree, ExtractConfig(min_visits=1))
    assert rows
    for row in rows:
        prompt, steps = ValueGuide.texts([tree], [(0, row["node_ids"][-1])])[0]
        assert (prompt, steps) == (row["prompt"], row["completions"])


def test_weight_knobs_that_contradict_are_errors():
    with pytest.raises(ValueError, match="use_rollout is true but rollout_weight is 0"):
        SearchConfig(rollout_weight=0)
    with pytest.raises(ValueError, match="value_model_weight must be >= 0"):
        SearchConfig(value_model_weight=-1)
    with pytest.raises(ValueError, match="needs a value model"):
        search(SearchConfig(value_model_weight=1.0), None)
    assert SearchConfig().value_weights() == {"self_eval": 0.5, "rollout": 0.5}


class LastStepScorer(ScriptedScorer):
    """Like ScriptedScorer, and also offers `score_last_steps` (as VLLMValueScorer does)."""

    def __init__(self):
        super().__init__()
        self.last_calls = 0

    def score_last_steps(self, prompts, step_lists):
        self.last_calls += 1
        return [per_path[-1] + 0.5 for per_path in self.score_paths(prompts, step_lists)]


def test_guide_prefers_score_last_steps_and_counts_what_it_scored():
    config = SearchConfig(num_simulations=6, num_children=2, leaves_per_wave=2, max_depth=4, max_tokens=1000,
                          self_eval_weight=0, rollout_weight=0, use_self_eval=False, use_rollout=False,
                          value_model_weight=1.0)
    scorer = LastStepScorer()
    guide = ValueGuide("scripted", scorer=scorer)
    tree, _, _ = search(config, guide)
    inner = [n for n in tree.nodes[1:] if not n.terminal]
    for node in inner:  # the +0.5 shows the search took score_last_steps' numbers
        assert node.initial_value == pytest.approx(0.1 * len(tree.path(node.node_id)) - 0.25 + 0.5, abs=1e-12)
    assert guide.calls == scorer.last_calls == len(scorer.calls) and guide.nodes == len(inner)
    assert guide.seconds >= 0.0
    guide.close()  # a scripted scorer has no close(): nothing to free, no error


def test_value_backend_choice():
    from mcts_po.io_utils import UserError
    from mcts_po.search_runner import value_backend

    assert value_backend("auto", "vllm") == "vllm"
    assert value_backend("auto", "transformers") == "transformers" and value_backend("auto", "http") == "transformers"
    assert value_backend("transformers", "vllm") == "transformers"
    with pytest.raises(UserError, match="value_model_backend 'onnx' is not one of: auto, transformers, vllm"):
        value_backend("onnx", "vllm")
    with pytest.raises(ValueError, match="backend 'onnx' is not one of"):
        ValueGuide("x", backend="onnx")
