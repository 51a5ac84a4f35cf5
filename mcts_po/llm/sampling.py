"""Flat sampling of whole solutions: greedy baselines, maj@k, best-of-N.

One batched backend call for all problems. Used by `mcts-po search` (the greedy
baseline beside each tree), `mcts-po eval`, the loop's flat baselines (`mcts_po.flat_baselines`,
which ask a different number of samples per problem: `n` as a list) and the search benchmarks.

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
    finish_reasons: list[str] = field(default_factory=list)  # of each sample: FINISH_STOP, FINISH_EOS or FINISH_LENGTH


def sample_solutions(backend: Backend, task: Task, problems: Sequence[Problem], n: int | Sequence[int] = 1,
                     temperature: float = 0.0, top_p: float = 1.0, max_tokens: int = 400) -> list[SampledSolutions]:
    """`n` samples of each problem (a list: `n[i]` samples of problem i, each >= 1), in one engine call."""
    counts = [n] * len(problems) if isinstance(n, int) else list(n)
    if len(counts) != len(problems) or any(count < 1 for count in counts):
        raise ValueError(f"sample_solutions: n must be >= 1 for each of the {len(problems)} problems, got {n!r}")
    requests = [
        GenerationRequest(prompt=backend.render_chat(task.messages(p)), max_tokens=max_tokens, n=count,
                          temperature=temperature, top_p=top_p if temperature > 0 else 1.0, route_key=p.id)
        for p, count in zip(problems, counts)
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
            finish_reasons=[c.finish_reason for c in result.completions],
        ))
    return out
