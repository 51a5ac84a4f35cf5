"""Limits that keep a search finite when the model misbehaves.

A policy that never writes the step delimiter and never states a final answer must still
end: every path stops at `max_depth` steps or `max_tokens` generated tokens, with the
terminal reason recorded. Checked with exact node counts on a fake policy (no model), then
through the real LLM layer (`LLMSearchPolicy`) on a scripted backend whose every sample
runs to `max_tokens` without a delimiter (finish "length"), and one that returns nothing.

Verifier timeouts on pathological answers are covered in tests/test_verifiers.py
(`test_pathological_inputs_over_size_guard_return_false_fast`,
`test_slow_sympy_input_is_cut_by_the_timeout_and_the_worker_restarts`,
`test_deep_nesting_under_the_size_guard_is_cut_by_the_timeout`); here one check runs such an
answer through the search's own evaluation path.

    .venv/bin/pytest -q tests/test_limits.py
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Sequence

import pytest

from mcts_po.backends.base import FINISH_LENGTH, FINISH_STOP, Completion, GenerationRequest, GenerationResult
from mcts_po.llm.config import SamplingConfig
from mcts_po.llm.policy import LLMSearchPolicy
from mcts_po.search.config import SearchConfig
from mcts_po.search.mcts import STEP_CONTINUES, EvaluationRequest, ExpansionRequest, NodeEvaluation, StepProposal, run_search
from mcts_po.search.tree import Tree
from mcts_po.tasks import get_task
from mcts_po.tasks.base import Problem


class RamblingPolicy:
    """Every proposal is an ordinary step of `step_tokens` tokens with a fresh text: no answer,
    no end of output, ever."""

    def __init__(self, step_tokens: int):
        self.step_tokens = step_tokens
        self.proposed = 0

    def expand(self, trees: Sequence[Tree], requests: Sequence[ExpansionRequest]) -> list[list[StepProposal]]:
        out = []
        for request in requests:
            steps = []
            for _ in range(request.num_children):
                self.proposed += 1
                steps.append(StepProposal(text=f"and then {self.proposed}", num_tokens=self.step_tokens,
                                          logprob_sum=-1.0 * self.step_tokens, finish=STEP_CONTINUES))
            out.append(steps)
        return out

    def evaluate(self, trees: Sequence[Tree], requests: Sequence[EvaluationRequest]) -> list[NodeEvaluation]:
        return [NodeEvaluation(answer=None, correct=False) if r.terminal else NodeEvaluation(self_eval=0.5)
                for r in requests]


def grow(config: SearchConfig, policy) -> Tree:
    tree = Tree.new(problem_id="p", question="?")
    run_search([tree], policy, config)
    return tree


def test_depth_limit_caps_a_policy_that_never_finishes():
    config = SearchConfig(num_simulations=60, num_children=2, leaves_per_wave=1, max_depth=3, max_tokens=10_000,
                          use_rollout=False)
    tree = grow(config, RamblingPolicy(step_tokens=5))
    # the full binary tree of depth 3, and nothing deeper
    assert len(tree) == 1 + 2 + 4 + 8
    assert Counter(n.depth for n in tree.nodes) == {0: 1, 1: 2, 2: 4, 3: 8}
    terminals = tree.terminals()
    assert len(terminals) == 8
    assert {(n.depth, n.terminal_reason, n.correct) for n in terminals} == {(3, "max_depth", False)}
    assert all(not n.terminal for n in tree.nodes if n.depth < 3)
    assert tree.root.visits == 60  # the 46 simulations after the tree was full went to terminals


def test_token_limit_caps_a_policy_that_never_finishes():
    # 20-token steps, 50 tokens per path: the third step (60 tokens in all) is terminal
    config = SearchConfig(num_simulations=60, num_children=2, leaves_per_wave=1, max_depth=8, max_tokens=50,
                          use_rollout=False)
    tree = grow(config, RamblingPolicy(step_tokens=20))
    assert len(tree) == 15
    assert {(n.depth, n.terminal_reason) for n in tree.terminals()} == {(3, "max_tokens")}
    assert len(tree.terminals()) == 8
    assert max(sum(p.num_tokens for p in tree.path(n.node_id)) for n in tree.nodes) == 60


def test_depth_limit_wins_when_both_limits_hit_the_same_step():
    config = SearchConfig(num_simulations=30, num_children=1, leaves_per_wave=1, max_depth=2, max_tokens=20,
                          use_rollout=False)
    tree = grow(config, RamblingPolicy(step_tokens=10))
    assert [(n.depth, n.terminal, n.terminal_reason) for n in tree.nodes] == [
        (0, False, ""), (1, False, ""), (2, True, "max_depth")]


def test_the_search_stops_after_its_simulations_even_if_nothing_is_terminal():
    config = SearchConfig(num_simulations=5, num_children=3, leaves_per_wave=1, max_depth=50, max_tokens=10_000,
                          use_rollout=False)
    policy = RamblingPolicy(step_tokens=1)
    tree = grow(config, policy)
    assert len(tree) == 1 + 5 * 3  # one expansion per simulation
    assert policy.proposed == 15
    assert tree.terminals() == []


# --------------------------------------------------------------------------- through the LLM layer

class NeverEndingBackend:
    """Every sample runs to max_tokens without the stop string (finish "length"); verdict
    questions get a 50/50 answer. Samples differ so that siblings are not merged."""

    name = "never-ending"
    model = "none"

    def __init__(self, text_per_token: str = "blah "):
        self.text_per_token = text_per_token
        self.samples = 0
        self.requests: list[GenerationRequest] = []

    def render_chat(self, messages, add_generation_prompt: bool = True) -> str:
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.requests.extend(requests)
        results = []
        for request in requests:
            completions = []
            for _ in range(request.n):
                self.samples += 1
                if request.top_logprobs:
                    completions.append(Completion(text=" Yes", num_tokens=1, token_logprobs=[-0.69],
                                                  finish_reason=FINISH_LENGTH,
                                                  top_logprobs=[{" Yes": -0.69, " No": -0.69}]))
                    continue
                text = f"#{self.samples} " + self.text_per_token * (request.max_tokens - 1)
                completions.append(Completion(text=text, num_tokens=request.max_tokens,
                                              token_logprobs=[-1.0] * request.max_tokens, finish_reason=FINISH_LENGTH))
            results.append(GenerationResult(completions=completions, prompt_tokens=len(request.prompt)))
        return results

    def close(self) -> None:
        pass


def search_with_backend(backend, config: SearchConfig, sampling: SamplingConfig) -> Tree:
    task = get_task("gsm8k")
    problem = Problem(id="p", question="Tom has 3 apples and buys 4. How many now?", answer="7")
    policy = LLMSearchPolicy(backend, task, [problem], sampling, config)
    tree = Tree.new(problem_id="p", question=problem.question, gold_answer="7", prompt=policy.root_prompts[0])
    run_search([tree], policy, config)
    return tree


def test_llm_policy_with_a_model_that_never_ends_a_step_is_capped_by_tokens():
    backend = NeverEndingBackend()
    config = SearchConfig(num_simulations=40, num_children=2, leaves_per_wave=2, max_depth=8, max_tokens=60)
    sampling = SamplingConfig(max_step_tokens=25, rollout_max_tokens=30)
    tree = search_with_backend(backend, config, sampling)
    # 25-token steps: 50 tokens after two steps, the third step passes 60
    assert len(tree) == 15
    assert {(n.depth, n.terminal_reason) for n in tree.terminals()} == {(3, "max_tokens")}
    assert all(n.num_tokens == 25 for n in tree.nodes[1:])
    # terminals without an answer are judged wrong; rollouts without an answer count -1
    assert all(n.answer is None and n.correct is False for n in tree.terminals())
    assert all(n.rollout_value == -1.0 for n in tree.nodes[1:] if not n.terminal)
    expand_requests = [r for r in backend.requests if r.stop]
    assert {r.max_tokens for r in expand_requests} == {25}
    assert all(r.max_tokens == 30 for r in backend.requests if not r.stop and not r.top_logprobs)


def test_llm_policy_with_a_model_that_never_ends_a_step_is_capped_by_depth():
    backend = NeverEndingBackend()
    config = SearchConfig(num_simulations=40, num_children=2, leaves_per_wave=2, max_depth=2, max_tokens=10_000)
    tree = search_with_backend(backend, config, SamplingConfig(max_step_tokens=8, rollout_max_tokens=8))
    assert len(tree) == 7
    assert {(n.depth, n.terminal_reason) for n in tree.terminals()} == {(2, "max_depth")}


class EmptyBackend(NeverEndingBackend):
    """A model that ends every line at once: every step sample is empty."""

    def generate(self, requests):
        results = super().generate(requests)
        for request, result in zip(requests, results):
            if request.stop:
                result.completions = [Completion(text="", num_tokens=0, finish_reason=FINISH_STOP,
                                                 stop_string=request.stop[0]) for _ in result.completions]
        return results


def test_llm_policy_with_a_model_that_writes_nothing_ends_at_the_root():
    backend = EmptyBackend()
    config = SearchConfig(num_simulations=6, num_children=3, leaves_per_wave=1)
    tree = search_with_backend(backend, config, SamplingConfig())
    assert len(tree) == 1
    assert tree.root.terminal and tree.root.terminal_reason == "eos"
    assert tree.root.correct is False
    # one expansion found nothing; the other 5 simulations selected the (terminal) root
    assert sum(1 for r in backend.requests if r.stop) == 1


def test_a_pathological_final_answer_is_judged_within_the_verifier_timeout():
    """A terminal step whose boxed answer is slow for sympy: the math task's verifier gives up
    after its timeout and the node is judged wrong."""
    task = get_task("math", verify_timeout_s=0.5)
    problem = Problem(id="m", question="Simplify.", answer="2")
    deep = "\\frac{1}{" * 900 + "1" + "}" * 900
    tree = Tree.new(problem_id="m", question=problem.question, gold_answer="2")
    node = tree.add_child(0, text=f"The answer is $\\boxed{{{deep}}}$.", num_tokens=5, terminal=True,
                          terminal_reason="answer")
    policy = LLMSearchPolicy(NeverEndingBackend(), task, [problem], SamplingConfig(), SearchConfig())
    started = time.monotonic()
    [evaluation] = policy.evaluate([tree], [EvaluationRequest(0, node.node_id, True)])
    assert time.monotonic() - started < 0.5 + 3.0
    assert evaluation.correct is False
