"""LLMSearchPolicy: the search core's `SearchPolicy` on a real backend and task.

It sits between the pure search (`mcts_po.search.mcts`) and a backend
(`mcts_po.backends`): it renders node states as prompts, turns a wave's expansion
requests into ONE batched `backend.generate` call (k samples per leaf, stopped at the
step delimiter), and a wave's evaluation requests into ONE more call that carries both
the self-evaluation questions (one token with top log-probabilities) and the rollouts
(one sample to the end of the solution, checked by the task's verifier). Terminal nodes
are judged by the verifier alone.

It does not know about selection, backup or values: those are the core's.

Plan trees (`SearchConfig.tree == "plan"`, CPL): the root prompt is the plan prompt
(`mcts_po.llm.plan_prompts`); a leaf whose plan is open is expanded into plan steps (one
line each; an empty line, the model stopping, or a marker line becomes the plan-end node
"Now solve."); below a complete plan the solution prompt (the task prompt with the plan
in it) continues with solution steps. Rollouts of plan nodes solve from the plan so far.
Which text continues which node: `mcts_po.llm.node_text` (which extraction uses too).

    policy = LLMSearchPolicy(backend, task, problems, SamplingConfig(), SearchConfig())
    run_search(trees, policy, search_config)
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

from mcts_po.backends.base import FINISH_EOS, Backend, GenerationRequest
from mcts_po.llm import node_text, plan_prompts
from mcts_po.llm.config import SamplingConfig
from mcts_po.llm.prompts import (
    self_eval_numbered_messages,
    verdict_probability,
)
from mcts_po.search import plan as plan_tree
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


class LLMSearchPolicy:
    def __init__(self, backend: Backend, task: Task, problems: Sequence[Problem],
                 sampling: SamplingConfig, search: SearchConfig, value_guide: Any = None):
        self.backend = backend
        self.weights = search.value_weights()  # the value sources that run
        if "value_model" in self.weights and value_guide is None:
            raise ValueError("SearchConfig.value_model_weight > 0 needs a value model (the search job's value_model)")
        self.value_guide = value_guide if "value_model" in self.weights else None
        self.task = task
        self.problems = list(problems)
        self.sampling = sampling
        self.search = search
        self.plan_tree = search.tree == "plan"
        if self.plan_tree:
            self.root_prompts = [backend.render_chat(plan_prompts.plan_messages(task, p)) for p in self.problems]
            self.solution_templates = [self._solution_template(p) for p in self.problems]
        else:
            self.root_prompts = [backend.render_chat(task.messages(p)) for p in self.problems]
        self.token_counts: list[dict[str, int]] = [defaultdict(int) for _ in self.problems]
        self.engine_calls = 0

    # ------------------------------------------------------------ prompts
    def _solution_template(self, problem: Problem) -> str:
        template = self.backend.render_chat(plan_prompts.solution_messages(self.task, problem, node_text.PLAN_PLACEHOLDER))
        if template.count(node_text.PLAN_PLACEHOLDER) != 1:
            raise ValueError("the chat template changed the plan placeholder; plan trees need it verbatim")
        return template

    def _state_text(self, tree: Tree, tree_index: int, node_id: int) -> str:
        """The prompt that continues `node_id` (children are sampled from it)."""
        if not self.plan_tree:
            return node_text.state_text(self.root_prompts[tree_index], tree.steps(node_id), self.sampling.step_delimiter)
        if plan_tree.EXTRA_KEY not in tree.extra:  # what extraction needs to rebuild these prompts
            tree.extra[plan_tree.EXTRA_KEY] = node_text.plan_metadata(
                self.solution_templates[tree_index], self.search.max_plan_depth)
        return node_text.plan_state_text(tree, node_id, self.root_prompts[tree_index],
                                         self.solution_templates[tree_index], self.sampling.step_delimiter,
                                         self.search.max_plan_depth)

    def rollout_prompt(self, tree: Tree, tree_index: int, node_id: int) -> str:
        """The prompt a rollout from `node_id` continues: its state (plan trees: the solution
        prompt with the plan so far and the solution steps)."""
        if not self.plan_tree:
            return node_text.state_text(self.root_prompts[tree_index], tree.steps(node_id), self.sampling.step_delimiter)
        return node_text.plan_rollout_prompt(tree, node_id, self.solution_templates[tree_index],
                                             self.sampling.step_delimiter)

    def self_eval_prompt(self, tree: Tree, tree_index: int, node_id: int) -> str | None:
        """The verdict question for a non-terminal node, or None when it gets none."""
        if "self_eval" not in self.weights:
            return None
        steps = self._solution_steps(tree, node_id)
        node = tree.nodes[node_id]
        problem = self.problems[tree_index]
        if node.kind == "plan":
            plan_steps = plan_tree.plan_steps(tree, node_id)
            if plan_tree.is_plan_end(node) or not plan_steps:
                return None
            return self.backend.render_chat(plan_prompts.plan_self_eval_messages(problem, plan_steps[:-1], plan_steps[-1]))
        if not steps:
            return None
        hint = problem.solution if self.sampling.self_eval_hint else None
        return self.backend.render_chat(self_eval_numbered_messages(problem, steps, hint))

    def _solution_steps(self, tree: Tree, node_id: int) -> list[str]:
        return plan_tree.solution_steps(tree, node_id) if self.plan_tree else tree.steps(node_id)

    def _plan_proposal(self, completion: Any) -> StepProposal | None:
        """A sampled plan line as a plan-step proposal, the plan-end marker, or None (dropped)."""
        line = plan_prompts.classify_plan_line(completion.text, self.task.has_final_answer(completion.text))
        if line == plan_prompts.PLAN_LINE_REJECT:
            return None
        text = plan_tree.PLAN_END_TEXT if line == plan_prompts.PLAN_LINE_END else completion.text.strip()
        return StepProposal(text=text, num_tokens=completion.num_tokens, logprob_sum=completion.logprob_sum,
                            finish=STEP_CONTINUES, kind="plan")

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
                prompt=self._state_text(trees[r.tree_index], r.tree_index, r.node_id),
                max_tokens=s.max_step_tokens,
                n=r.num_children,
                temperature=s.temperature,
                top_p=s.top_p,
                stop=(s.step_delimiter,),
                route_key=self.problems[r.tree_index].id,
            )
            for r in requests
        ]
        results = self._generate(generation)
        out: list[list[StepProposal]] = []
        for request, result in zip(requests, results):
            self._count(request.tree_index, "expand", result)
            proposals = []
            for completion in result.completions:
                if request.kind == "plan":
                    proposal = self._plan_proposal(completion)
                    if proposal is not None:
                        proposals.append(proposal)
                    continue
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
            steps = self._solution_steps(tree, request.node_id)
            if request.terminal:
                solution = s.step_delimiter.join(steps)
                evaluations[index].answer = self.task.extract_answer(solution)
                evaluations[index].correct = self.task.is_correct(solution, problem)
                continue
            self_eval_prompt = self.self_eval_prompt(tree, request.tree_index, request.node_id)
            if self_eval_prompt is not None:
                generation.append(GenerationRequest(
                    prompt=self_eval_prompt, max_tokens=1, n=1,
                    temperature=1.0, top_p=1.0, top_logprobs=s.self_eval_top_logprobs, route_key=problem.id,
                ))
                slots.append((index, "self_eval"))
            if "rollout" in self.weights:
                generation.append(GenerationRequest(
                    prompt=self.rollout_prompt(tree, request.tree_index, request.node_id),
                    max_tokens=s.rollout_max_tokens, n=1, temperature=s.temperature, top_p=s.top_p,
                    route_key=problem.id,
                ))
                slots.append((index, "rollout"))
        if self.value_guide is not None:
            scored = [i for i, r in enumerate(requests) if not r.terminal]
            values = self.value_guide.score(trees, [(requests[i].tree_index, requests[i].node_id) for i in scored])
            for index, value in zip(scored, values):
                evaluations[index].value_model = value
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
                steps = self._solution_steps(trees[request.tree_index], request.node_id)
                full = s.step_delimiter.join(steps) + s.step_delimiter + completion.text
                evaluations[index].rollout_value = 1.0 if self.task.is_correct(full, problem) else -1.0
                evaluations[index].rollout_text = completion.text
        return evaluations
