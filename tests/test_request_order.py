"""The order in which search requests reach the engine (it decides what the prefix cache can serve).

- VLLMBackend sends each of a request's n samples as its own one-sample request, in passes (every
  request's first sample, then every request's second sample, ...), and regroups the outputs;
- LLMSearchPolicy.evaluate sends the first new child of every expanded node first, then the second
  children, ..., and still gives every node its own verdict and rollout.

Both are checked against fakes here (what is sent, and that results land where they belong); the
effect on vLLM's prefill is measured by scripts/bench_search.py (BENCHMARKS.md).

    pytest tests/test_request_order.py -q
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mcts_po.backends.base import Completion, GenerationRequest, GenerationResult
from mcts_po.llm.policy import LLMSearchPolicy, SamplingConfig
from mcts_po.search.config import SearchConfig
from mcts_po.search.mcts import EvaluationRequest
from mcts_po.search.tree import Tree
from mcts_po.tasks import get_task


class FakeLLM:
    """Stands in for vllm.LLM.generate: records prompts and params, answers every prompt with
    '<prompt>/<how many times this prompt was asked before>'."""

    def __init__(self):
        self.prompts: list[str] = []
        self.params: list = []

    def generate(self, prompts, params, use_tqdm=False):
        outputs = []
        for prompt, p in zip(prompts, params):
            asked = self.prompts.count(prompt)
            self.prompts.append(prompt)
            self.params.append(p)
            sample = SimpleNamespace(text=f"{prompt}/{asked}", token_ids=[7, 8], logprobs=None,
                                     finish_reason="stop", stop_reason="\n")
            outputs.append(SimpleNamespace(outputs=[sample], prompt_token_ids=[1] * len(prompt),
                                           num_cached_tokens=10 * asked))
        return outputs


def fake_vllm_backend():
    pytest.importorskip("vllm")
    from mcts_po.backends.vllm_backend import VLLMBackend

    backend = object.__new__(VLLMBackend)  # no engine: only generate()'s bookkeeping is under test
    backend.llm, backend.eos_token_id = FakeLLM(), 0
    return backend


def test_vllm_backend_sends_parallel_samples_in_passes_and_regroups_them():
    backend = fake_vllm_backend()
    requests = [GenerationRequest(prompt="a", max_tokens=5, n=3, temperature=0.7, stop=("\n",)),
                GenerationRequest(prompt="b", max_tokens=5, n=1, temperature=0.7),
                GenerationRequest(prompt="c", max_tokens=5, n=2, temperature=0.7)]
    results = backend.generate(requests)
    assert backend.llm.prompts == ["a", "b", "c", "a", "c", "a"]
    assert all(p.n == 1 for p in backend.llm.params)
    assert [p.max_tokens for p in backend.llm.params] == [5] * 6 and backend.llm.params[0].stop == ["\n"]
    assert [[c.text for c in r.completions] for r in results] == [["a/0", "a/1", "a/2"], ["b/0"], ["c/0", "c/1"]]
    # prompt and cache counts are the first sample's (it prefilled the prompt)
    assert [(r.prompt_tokens, r.cached_prompt_tokens) for r in results] == [(1, 0), (1, 0), (1, 0)]


def test_vllm_backend_asks_a_greedy_request_once_and_repeats_it():
    backend = fake_vllm_backend()
    result, = backend.generate([GenerationRequest(prompt="g", max_tokens=5, n=3, temperature=0.0)])
    assert backend.llm.prompts == ["g"] and backend.llm.params[0].temperature == 0.0
    assert [c.text for c in result.completions] == ["g/0"] * 3


class RecordingBackend:
    """Verdicts and rollouts that name the node they were asked about."""

    name, model = "recording", "none"

    def __init__(self):
        self.calls: list[list[GenerationRequest]] = []

    def render_chat(self, messages, add_generation_prompt: bool = True) -> str:
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"

    def generate(self, requests):
        self.calls.append(list(requests))
        results = []
        for r in requests:
            last_step = r.prompt.split("<assistant>")[-1].rstrip("\n").rsplit("\n", 1)[-1]
            if r.top_logprobs:  # a verdict: "Yes" for steps that say good, "No" otherwise
                good = "good" in r.prompt.split("New step:")[-1]
                top = {" Yes": -0.1, " No": -3.0} if good else {" Yes": -3.0, " No": -0.1}
                results.append(GenerationResult([Completion(text=" Yes", num_tokens=1, top_logprobs=[top])]))
            else:  # a rollout: repeats the node's own step, so we can see where it landed
                results.append(GenerationResult([Completion(text=f"after {last_step}", num_tokens=3)]))
        return results


def test_evaluation_sends_siblings_rank_by_rank_and_returns_results_to_their_nodes():
    task = get_task("demo")
    problems = task.load(split="test", limit=2)
    backend = RecordingBackend()
    search = SearchConfig(num_children=3)
    policy = LLMSearchPolicy(backend, task, problems, SamplingConfig(), search)
    trees = [Tree.new(problem_id=p.id, question=p.question, gold_answer=p.answer) for p in problems]
    requests = []
    for tree_index, tree in enumerate(trees):
        for rank in range(3):
            quality = "good" if (tree_index + rank) % 2 == 0 else "bad"
            node = tree.add_child(0, kind="step", text=f"t{tree_index} child{rank} {quality}", num_tokens=3,
                                  logprob_sum=-1.0, prior=1 / 3)
            requests.append(EvaluationRequest(tree_index, node.node_id, False))
    evaluations = policy.evaluate(trees, requests)

    sent = backend.calls[-1]
    ranks = [int(r.prompt.split("child")[-1][0]) for r in sent]
    assert ranks == sorted(ranks) and ranks[0] == 0 and ranks[-1] == 2  # all first children first
    assert len(sent) == 2 * len(requests)  # a verdict and a rollout per node
    for request, evaluation in zip(requests, evaluations):
        text = trees[request.tree_index].nodes[request.node_id].text
        assert evaluation.rollout_text == f"after {text}"
        assert (evaluation.self_eval > 0.5) == text.endswith("good")
