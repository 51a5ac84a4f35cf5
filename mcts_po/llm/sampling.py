"""Flat sampling of whole solutions: greedy baselines, maj@k, best-of-N.

One batched backend call for all problems. Used by `mcts-po search` (the greedy
baseline beside each tree), `mcts-po eval` and the search benchmarks.

    solutions = sample_solutions(backend, task, problems, n=1, temperature=0.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from mcts_po.backends.base import Backend, GenerationRequest
from mcts_po.tasks.base import Problem, Task


@dataclass
class SampledSolutions:
    problem: Problem
    texts: list[str]
    answers: list[str | None]
    correct: list[bool]
    generated_tokens: int
    prompt_tokens: int
    cached_prompt_tokens: int
    sample_tokens: list[int] = field(default_factory=list)  # generated tokens of each sample, in order


def sample_solutions(backend: Backend, task: Task, problems: Sequence[Problem], n: int = 1,
                     temperature: float = 0.0, top_p: float = 1.0, max_tokens: int = 400) -> list[SampledSolutions]:
    requests = [
        GenerationRequest(prompt=backend.render_chat(task.messages(p)), max_tokens=max_tokens, n=n,
                          temperature=temperature, top_p=top_p if temperature > 0 else 1.0)
        for p in problems
    ]
    results = backend.generate(requests) if requests else []
    out = []
    for problem, result in zip(problems, results):
        texts = [c.text for c in result.completions]
        out.append(SampledSolutions(
            problem=problem,
            texts=texts,
            answers=[task.extract_answer(t) for t in texts],
            correct=[task.is_correct(t, problem) for t in texts],
            generated_tokens=sum(c.num_tokens for c in result.completions),
            prompt_tokens=result.prompt_tokens,
            cached_prompt_tokens=result.cached_prompt_tokens,
            sample_tokens=[c.num_tokens for c in result.completions],
        ))
    return out
