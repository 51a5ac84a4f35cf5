"""Self-evaluation prompts: the one layout ("numbered") and the refusal of the removed ones.

The verdict question is a teacher's chat with the path as a numbered list, so that a
child's question repeats its parent's up to the parent's step (checked on a scripted
backend through `LLMSearchPolicy.evaluate`). The layouts "separate", "followup" and
"question_first" were measured worse and removed (docs/prompts.md); asking for one is an
error that says so.

    .venv/bin/pytest -q tests/test_self_eval_prompts.py
"""

from __future__ import annotations

import pytest

from mcts_po.io_utils import UserError
from mcts_po.llm.config import SamplingConfig
from mcts_po.llm.policy import LLMSearchPolicy
from mcts_po.llm.prompts import REMOVED_SELF_EVAL_LAYOUTS
from mcts_po.loop import LoopConfig
from mcts_po.search.config import SearchConfig
from mcts_po.search.mcts import EvaluationRequest
from mcts_po.search.tree import Tree
from mcts_po.tasks import get_task
from mcts_po.tasks.base import Problem

from test_limits import NeverEndingBackend


@pytest.mark.parametrize("layout", sorted(REMOVED_SELF_EVAL_LAYOUTS))
def test_a_removed_layout_is_refused_saying_it_was_removed_and_where_it_was_measured(layout):
    with pytest.raises(ValueError, match=rf"self_eval_layout '{layout}' was removed \(.*docs/prompts.md"):
        SamplingConfig(self_eval_layout=layout)
    with pytest.raises(UserError, match=rf"loop.yaml: sampling: .*'{layout}' was removed"):
        LoopConfig.from_yaml_dict({"sampling": {"self_eval_layout": layout}}, "loop.yaml")


def test_sampling_config_rejects_an_unknown_layout():
    with pytest.raises(ValueError, match="self_eval_layout must be 'numbered', got 'teacher'"):
        SamplingConfig(self_eval_layout="teacher")
    assert SamplingConfig().to_dict()["self_eval_layout"] == "numbered"  # still recorded in trees


def test_recorded_sampling_of_a_run_without_self_evaluation_is_accepted_whatever_its_layout():
    recorded = {"temperature": 0.7, "self_eval_layout": "followup"}
    assert SamplingConfig.check_recorded(recorded, "x/run_config.json", use_self_eval=False) == {
        "temperature": 0.7, "self_eval_layout": "numbered"}
    with pytest.raises(UserError, match=r"^x/run_config.json: .* 'followup', which was removed \(ranked good steps"):
        SamplingConfig.check_recorded(recorded, "x/run_config.json")


def evaluation_prompts(hint: bool = False) -> tuple[list, list[str], Tree]:
    """Self-evaluation and rollout prompts of one evaluation call over two depths of a tree."""
    backend = NeverEndingBackend()
    task = get_task("gsm8k")
    problem = Problem(id="p", question="Tom has 3 apples and buys 4. How many now?", answer="7",
                      solution="3 + 4 = 7")
    policy = LLMSearchPolicy(backend, task, [problem], SamplingConfig(self_eval_hint=hint), SearchConfig())
    tree = Tree.new(problem_id="p", question=problem.question, gold_answer="7", prompt=policy.root_prompts[0])
    first = tree.add_child(0, text="Tom has 3 apples.", num_tokens=5)
    second = tree.add_child(first.node_id, text="He buys 4 more, 3 + 4 = 7.", num_tokens=9)
    evaluations = policy.evaluate([tree], [EvaluationRequest(0, first.node_id, False),
                                           EvaluationRequest(0, second.node_id, False)])
    assert all(e.self_eval == pytest.approx(0.5) for e in evaluations)
    return backend.requests, [policy.root_prompts[0]], tree


def test_numbered_layout_extends_the_parents_question_up_to_the_parents_step():
    requests, [root], _ = evaluation_prompts()
    parent, child = [r.prompt for r in requests if r.top_logprobs]
    assert "Solution steps:\n1. Tom has 3 apples.\n\nIs step 1 correct?" in parent
    assert "Solution steps:\n1. Tom has 3 apples.\n2. He buys 4 more, 3 + 4 = 7.\n\nIs step 2 correct?" in child
    shared = parent[: parent.index("Tom has 3 apples.\n") + len("Tom has 3 apples.\n")]
    assert child.startswith(shared) and "strict math teacher" in shared
    assert not parent.startswith(root)


def test_numbered_hint_goes_between_the_problem_and_the_steps():
    requests, _, _ = evaluation_prompts(hint=True)
    verdict = next(r for r in requests if r.top_logprobs)
    assert "Reference solution:\n3 + 4 = 7\n\nSolution steps:\n1. Tom has 3 apples." in verdict.prompt
