"""LLMSearchPolicy: the search core's `SearchPolicy` on a real backend and task.

It sits between the pure search (`mcts_po.search.mcts`) and a backend
(`mcts_po.backends`): it renders node states as prompts, turns a wave's expansion
requests into ONE batched `backend.generate` call (k samples per leaf, stopped at the
step delimiter), and a wave's evaluation requests into ONE more call that carries both
the self-evaluation questions (one token with top log-probabilities) and the rollouts
(one sample to the end of the solution, checked by the task's verifier). Terminal nodes
are judged by the verifier alone.

It does not know about selection, backup or values: those are the core's.

    policy = LLMSearchPolicy(backend, task, problems, SamplingConfig(), SearchConfig())
    run_search(trees, policy, search_config)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from mcts_po.backends.base import FINISH_EOS, Backend, GenerationRequest
from mcts_po.llm.prompts import self_eval_messages, state_text, verdict_probability
from mcts_po.search.config import SearchConfig
from mcts_po.search.mcts import (
    STEP_ANSWER,
    STEP_CONTINUES,
    STEP_EOS,
    EvaluationRequest,
    ExpansionRequest,
    NodeEvaluation,
    StepProposal,
)
from mcts_po.search.tree import Tree
from mcts_po.tasks.base import Problem, Task


@dataclass
class SamplingConfig:
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of step expansion and rollouts"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling threshold"})
    max_step_tokens: int = field(default=96, metadata={"help": "tokens per sampled step"})
    rollout_max_tokens: int = field(default=256, metadata={"help": "tokens of a rollout to the answer"})
    step_delimiter: str = field(default="\n", metadata={"help": "text that ends a step (SmolLM2 writes one step per line; use '\\n\\n' for paragraph steps)"})
    self_eval_hint: bool = field(default=False, metadata={"help": "show the reference solution to the self-evaluation (MCTS-DPO's ground-truth hint; recorded in tree metadata)"})
    self_eval_top_logprobs: int = field(default=20, metadata={"help": "alternatives read at the verdict token"})

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("SamplingConfig: temperature must be >= 0 and top_p in (0, 1]")
        if self.max_step_tokens < 1 or self.rollout_max_tokens < 1:
            raise ValueError("SamplingConfig: max_step_tokens and rollout_max_tokens must be >= 1")
        if not self.step_delimiter:
            raise ValueError("SamplingConfig: step_delimiter must not be empty")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LLMSearchPolicy:
    def __init__(self, backend: Backend, task: Task, problems: Sequence[Problem],
                 sampling: SamplingConfig, search: SearchConfig):
        self.backend = backend
        self.task = task
        self.problems = list(problems)
        self.sampling = sampling
        self.search = search
        self.root_prompts = [backend.render_chat(task.messages(p)) for p in self.problems]
        self.token_counts: list[dict[str, int]] = [defaultdict(int) for _ in self.problems]
        self.engine_calls = 0

    # ------------------------------------------------------------ accounting
    def _count(self, tree_index: int, kind: str, result: Any) -> None:
        counts = self.token_counts[tree_index]
        counts[f"{kind}_generated"] += sum(c.num_tokens for c in result.completions)
        counts["generated"] += sum(c.num_tokens for c in result.completions)
        counts["prompt"] += result.prompt_tokens
        counts["cached_prompt"] += result.cached_prompt_tokens

    def _generate(self, requests: list[GenerationRequest]):
        self.engine_calls += 1
        return self.backend.generate(requests)

    # ------------------------------------------------------------ expansion
    def expand(self, trees: Sequence[Tree], requests: Sequence[ExpansionRequest]) -> list[list[StepProposal]]:
        s = self.sampling
        generation = [
            GenerationRequest(
                prompt=state_text(self.root_prompts[r.tree_index], trees[r.tree_index].steps(r.node_id), s.step_delimiter),
                max_tokens=s.max_step_tokens,
                n=r.num_children,
                temperature=s.temperature,
                top_p=s.top_p,
                stop=(s.step_delimiter,),
            )
            for r in requests
        ]
        results = self._generate(generation)
        out: list[list[StepProposal]] = []
        for request, result in zip(requests, results):
            self._count(request.tree_index, "expand", result)
            proposals = []
            for completion in result.completions:
                text = completion.text.strip()
                if not text:
                    continue  # the model ended the line at once: no step
                if self.task.has_final_answer(text):
                    finish = STEP_ANSWER
                elif completion.finish_reason == FINISH_EOS:
                    finish = STEP_EOS
                else:
                    finish = STEP_CONTINUES
                proposals.append(StepProposal(text=text, num_tokens=completion.num_tokens,
                                              logprob_sum=completion.logprob_sum, finish=finish, kind=request.kind))
            out.append(proposals)
        return out

    # ------------------------------------------------------------ evaluation
    def evaluate(self, trees: Sequence[Tree], requests: Sequence[EvaluationRequest]) -> list[NodeEvaluation]:
        s = self.sampling
        evaluations = [NodeEvaluation() for _ in requests]
        generation: list[GenerationRequest] = []
        slots: list[tuple[int, str]] = []  # (index into requests, "self_eval" | "rollout")
        for index, request in enumerate(requests):
            tree = trees[request.tree_index]
            problem = self.problems[request.tree_index]
            steps = tree.steps(request.node_id)
            if request.terminal:
                solution = s.step_delimiter.join(steps)
                evaluations[index].answer = self.task.extract_answer(solution)
                evaluations[index].correct = self.task.is_correct(solution, problem)
                continue
            if self.search.use_self_eval and steps:
                messages = self_eval_messages(problem, steps[:-1], steps[-1],
                                              problem.solution if s.self_eval_hint else None)
                generation.append(GenerationRequest(
                    prompt=self.backend.render_chat(messages), max_tokens=1, n=1,
                    temperature=1.0, top_p=1.0, top_logprobs=s.self_eval_top_logprobs,
                ))
                slots.append((index, "self_eval"))
            if self.search.use_rollout:
                generation.append(GenerationRequest(
                    prompt=state_text(self.root_prompts[request.tree_index], steps, s.step_delimiter),
                    max_tokens=s.rollout_max_tokens, n=1, temperature=s.temperature, top_p=s.top_p,
                ))
                slots.append((index, "rollout"))
        results = self._generate(generation) if generation else []
        for (index, kind), result in zip(slots, results):
            request = requests[index]
            self._count(request.tree_index, kind, result)
            completion = result.completions[0]
            if kind == "self_eval":
                top = completion.top_logprobs[0] if completion.top_logprobs else {}
                evaluations[index].self_eval = verdict_probability(top)
            else:
                problem = self.problems[request.tree_index]
                steps = trees[request.tree_index].steps(request.node_id)
                full = s.step_delimiter.join(steps) + s.step_delimiter + completion.text
                evaluations[index].rollout_value = 1.0 if self.task.is_correct(full, problem) else -1.0
                evaluations[index].rollout_text = completion.text
        return evaluations
