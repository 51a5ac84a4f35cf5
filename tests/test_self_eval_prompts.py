"""Self-evaluation prompt layouts: "followup" extends the node's own state, "separate" restates it.

The "followup" prompt must be the node's state text (what its rollout continues and its
children are sampled from) followed by a closed assistant turn and the question, so that
the prefix cache serves everything but the question; that is checked on a scripted
backend through `LLMSearchPolicy.evaluate`, and on SmolLM2's real chat template against
the template's own rendering of the same conversation.

    .venv/bin/pytest -q tests/test_self_eval_prompts.py
"""

from __future__ import annotations

import pytest

from mcts_po.llm.policy import LLMSearchPolicy, SamplingConfig
from mcts_po.llm.prompts import FOLLOWUP_QUESTION, followup_suffix, state_text
from mcts_po.search.config import SearchConfig
from mcts_po.search.mcts import EvaluationRequest
from mcts_po.search.tree import Tree
from mcts_po.tasks import get_task
from mcts_po.tasks.base import Problem

from test_limits import NeverEndingBackend


def chatml(messages, add_generation_prompt: bool = True) -> str:
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def test_state_plus_suffix_is_the_template_rendering_of_the_steps_as_an_answer():
    messages = [{"role": "system", "content": "Solve."}, {"role": "user", "content": "What is 3 + 4?"}]
    steps = ["3 + 4 = 7.", "The answer is 7."]
    state = state_text(chatml(messages), steps, "\n")
    expected = chatml(messages + [{"role": "assistant", "content": "3 + 4 = 7.\nThe answer is 7.\n"},
                                  {"role": "user", "content": FOLLOWUP_QUESTION}])
    assert state + followup_suffix(chatml) == expected
    hinted = followup_suffix(chatml, reference_solution="  4 + 3 = 7  ")
    assert hinted == f"<|im_end|>\n<|im_start|>user\nReference solution:\n4 + 3 = 7\n\n{FOLLOWUP_QUESTION}<|im_end|>\n<|im_start|>assistant\n"


def test_a_template_that_rewrites_the_answer_is_refused_with_the_fix():
    def lowercasing(messages, add_generation_prompt: bool = True) -> str:
        return "".join(f"[{m['role']}] {m['content'].lower()}\n" for m in messages)

    with pytest.raises(ValueError, match="self_eval_layout='separate'"):
        followup_suffix(lowercasing)


def test_sampling_config_rejects_an_unknown_layout():
    with pytest.raises(ValueError, match="self_eval_layout"):
        SamplingConfig(self_eval_layout="teacher")


def evaluation_prompts(layout: str, hint: bool = False) -> tuple[list, list[str], Tree]:
    """Self-evaluation and rollout prompts of one evaluation call over two depths of a tree."""
    backend = NeverEndingBackend()
    task = get_task("gsm8k")
    problem = Problem(id="p", question="Tom has 3 apples and buys 4. How many now?", answer="7",
                      solution="3 + 4 = 7")
    policy = LLMSearchPolicy(backend, task, [problem], SamplingConfig(self_eval_layout=layout, self_eval_hint=hint),
                             SearchConfig())
    tree = Tree.new(problem_id="p", question=problem.question, gold_answer="7", prompt=policy.root_prompts[0])
    first = tree.add_child(0, text="Tom has 3 apples.", num_tokens=5)
    second = tree.add_child(first.node_id, text="He buys 4 more, 3 + 4 = 7.", num_tokens=9)
    evaluations = policy.evaluate([tree], [EvaluationRequest(0, first.node_id, False),
                                           EvaluationRequest(0, second.node_id, False)])
    assert all(e.self_eval == pytest.approx(0.5) for e in evaluations)
    return backend.requests, [policy.root_prompts[0]], tree


def test_followup_self_evaluation_extends_the_rollout_prompt_of_the_same_node():
    requests, [root], tree = evaluation_prompts("followup")
    verdicts = [r for r in requests if r.top_logprobs]
    rollouts = [r for r in requests if not r.top_logprobs]
    assert len(verdicts) == len(rollouts) == 2
    suffix = followup_suffix(NeverEndingBackend().render_chat)
    for node_id, verdict, rollout in zip((1, 2), verdicts, rollouts):
        assert rollout.prompt == state_text(root, tree.steps(node_id), "\n")
        assert verdict.prompt == rollout.prompt + suffix
        assert verdict.max_tokens == 1
    # the deeper node's question starts with its parent's whole state
    assert verdicts[1].prompt.startswith(rollouts[0].prompt)
    assert "Steps so far" not in verdicts[0].prompt


def test_followup_hint_goes_after_the_shared_state():
    requests, [root], tree = evaluation_prompts("followup", hint=True)
    verdict = next(r for r in requests if r.top_logprobs)
    state = state_text(root, tree.steps(1), "\n")
    assert verdict.prompt.startswith(state)
    assert "Reference solution:\n3 + 4 = 7" in verdict.prompt[len(state):]


def test_separate_layout_restates_the_path_in_a_teachers_chat():
    requests, [root], _ = evaluation_prompts("separate")
    verdicts = [r for r in requests if r.top_logprobs]
    assert "strict math teacher" in verdicts[1].prompt
    assert "Steps so far:\nTom has 3 apples.\n\nNew step:\nHe buys 4 more, 3 + 4 = 7." in verdicts[1].prompt
    assert not verdicts[1].prompt.startswith(root)


@pytest.mark.slow
def test_smollm2_template_renders_the_followup_as_state_plus_suffix():
    transformers = pytest.importorskip("transformers")
    from mcts_po.models import resolve_model

    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))

    def render(messages, add_generation_prompt: bool = True) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    task = get_task("gsm8k")
    problem = Problem(id="p", question="Tom has 3 apples and buys 4. How many now?", answer="7")
    steps = ["Tom has 3 apples.", "He buys 4 more, 3 + 4 = 7."]
    state = state_text(render(task.messages(problem)), steps, "\n")
    conversation = task.messages(problem) + [{"role": "assistant", "content": "".join(s + "\n" for s in steps)},
                                             {"role": "user", "content": FOLLOWUP_QUESTION}]
    assert state + followup_suffix(render) == render(conversation)
    # the question costs few tokens beyond the state
    extra = len(tokenizer(state + followup_suffix(render))["input_ids"]) - len(tokenizer(state)["input_ids"])
    assert 15 <= extra <= 40


def test_numbered_layout_extends_the_parents_question_up_to_the_parents_step():
    requests, [root], _ = evaluation_prompts("numbered")
    parent, child = [r.prompt for r in requests if r.top_logprobs]
    assert "Solution steps:\n1. Tom has 3 apples.\n\nIs step 1 correct?" in parent
    assert "Solution steps:\n1. Tom has 3 apples.\n2. He buys 4 more, 3 + 4 = 7.\n\nIs step 2 correct?" in child
    shared = parent[: parent.index("Tom has 3 apples.\n") + len("Tom has 3 apples.\n")]
    assert child.startswith(shared) and "strict math teacher" in shared


def test_question_first_layout_extends_the_parents_prompt_up_to_the_templates_closing_tokens():
    requests, [root], _ = evaluation_prompts("question_first")
    parent, child = [r.prompt for r in requests if r.top_logprobs]
    question = "Is the last of the solution steps below correct? Answer with one word, Yes or No."
    assert question in parent and parent.index(question) < parent.index("Problem:\nTom has 3 apples")
    assert "Solution steps:\n1. Tom has 3 apples.\n2. He buys 4 more, 3 + 4 = 7.\n" in child
    shared = parent[: parent.index("1. Tom has 3 apples.\n") + len("1. Tom has 3 apples.\n")]
    assert child.startswith(shared) and "strict math teacher" in shared
    # what the parent has beyond the shared part is only the chat template's closing text
    assert parent[len(shared):] == child[child.index("2. He buys") + len("2. He buys 4 more, 3 + 4 = 7.\n"):]
    assert "Yes or No" not in parent[len(shared):]
