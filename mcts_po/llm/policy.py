"""LLMSearchPolicy: the search core's `SearchPolicy` on a real backend and task.

It sits between the pure search (`mcts_po.search.mcts`) and a backend
(`mcts_po.backends`): it renders node states as prompts, turns a wave's expansion
requests into ONE batched `backend.generate` call (k samples per leaf, stopped at the
step delimiter), and a wave's evaluation requests into ONE more call that carries both
the self-evaluation questions (one token with top log-probabilities) and the rollouts
(one sample to the end of the solution, checked by the task's verifier). Terminal nodes
are judged by the verifier alone.

With `SamplingConfig.rollout_from_expansion` (step trees), expansion samples are not stopped
at the step delimiter: each goes on to the end of the solution, `split_first_step` cuts it
into the step (token counts and log-probabilities exactly as a stopped sample reports them)
and the text after it, and that text is the new child's rollout. The evaluation call then
carries only the verdict questions: one request per child fewer, and no prompt to prefill
for its rollout. The continuations of children that are terminal or merged with a sibling
go unused; `token_counts` reports them as `unused_generated`.

It does not know about selection, backup or values: those are the core's.

Plan trees (`SearchConfig.tree == "plan"`, CPL): the root prompt is the plan prompt
(`mcts_po.llm.plan_prompts`); a leaf whose plan is open is expanded into plan steps (one
line each; an empty line, the model stopping, or a marker line becomes the plan-end node
"Now solve."); below a complete plan the solution prompt (the task prompt with the plan
in it) continues with solution steps. Rollouts of plan nodes solve from the plan so far.
Which prompt continues which node: `mcts_po.search.plan`.

    policy = LLMSearchPolicy(backend, task, problems, SamplingConfig(), SearchConfig())
    run_search(trees, policy, search_config)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from mcts_po.backends.base import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, Backend, Completion, GenerationRequest
from mcts_po.llm import plan_prompts
from mcts_po.llm.prompts import (
    SELF_EVAL_LAYOUTS,
    followup_suffix,
    self_eval_messages,
    self_eval_numbered_messages,
    self_eval_question_first_messages,
    state_text,
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


@dataclass
class SamplingConfig:
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of step expansion and rollouts"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling threshold"})
    max_step_tokens: int = field(default=96, metadata={"help": "tokens per sampled step"})
    rollout_max_tokens: int = field(default=256, metadata={"help": "tokens of a rollout to the answer"})
    step_delimiter: str = field(default="\n", metadata={"help": "text that ends a step (SmolLM2 writes one step per line; use '\\n\\n' for paragraph steps)"})
    self_eval_hint: bool = field(default=False, metadata={"help": "show the reference solution to the self-evaluation (MCTS-DPO's ground-truth hint; recorded in tree metadata)"})
    self_eval_top_logprobs: int = field(default=20, metadata={"help": "alternatives read at the verdict token"})
    rollout_from_expansion: bool = field(default=False, metadata={"help": "sample each expansion past its step to the end of the solution and use the rest as the child's rollout (one request instead of two: saves the rollout prompt's prefill; step trees only, backends that report token texts); see docs/prompts.md"})
    self_eval_layout: str = field(default="numbered", metadata={"help": "self-evaluation prompt: 'numbered' (a teacher's chat with the steps as a numbered list and 'Is step k correct?', so a child's question extends its parent's), 'question_first' (that chat with the question first, so the prompt ends with the path), 'separate' (that chat restating the earlier steps and the new step, MCTS-DPO's layout) or 'followup' (a new user turn after the node's own state, which the prefix cache already holds); see docs/prompts.md"})

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("SamplingConfig: temperature must be >= 0 and top_p in (0, 1]")
        if self.max_step_tokens < 1 or self.rollout_max_tokens < 1:
            raise ValueError("SamplingConfig: max_step_tokens and rollout_max_tokens must be >= 1")
        if not self.step_delimiter:
            raise ValueError("SamplingConfig: step_delimiter must not be empty")
        if self.self_eval_layout not in SELF_EVAL_LAYOUTS:
            raise ValueError(f"SamplingConfig.self_eval_layout must be one of {SELF_EVAL_LAYOUTS}, got {self.self_eval_layout!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def with_earlier_defaults(recorded: dict[str, Any]) -> dict[str, Any]:
        """A sampling dict recorded before some fields existed, with those fields set to the
        behaviour the code had then (so a run's recorded settings compare equal to the same
        settings spelled out today)."""
        return {**FIELDS_ADDED_LATER, **recorded}


# Fields of SamplingConfig added after runs were recorded without them, and what those runs did.
FIELDS_ADDED_LATER = {"self_eval_layout": "separate", "rollout_from_expansion": False}


@dataclass(frozen=True)
class SplitSample:
    """One expansion sample cut into its first step and the rollout after it."""

    step: Completion  # the step as a stop-string sample would have given it
    continuation: str | None  # the text after the step delimiter (None: no usable rollout)
    continuation_tokens: int  # tokens generated after the step (all of them, used or not)


def split_first_step(completion: Completion, delimiter: str, max_step_tokens: int,
                     rollout_max_tokens: int) -> SplitSample | None:
    """Cut a sample drawn without stop strings into the step a `stop=(delimiter,)` sample of
    `max_step_tokens` would have been and the rollout that follows it.

    Token rule (the backends'): the step counts every token up to and including the one that
    completes the delimiter; its text is everything before the delimiter. Without a delimiter
    in its first `max_step_tokens` tokens the step is those tokens (finish "length", no
    continuation); an EOS before the delimiter ends the step ("eos", no continuation). The
    continuation is the text after the delimiter, cut to `rollout_max_tokens` tokens (a rollout's
    own limit). Token positions come from `completion.token_texts`; where they do not join to
    the text exactly (a character's bytes split across tokens) and a cut inside the text is
    needed, there is no continuation, or (step cut by length) no step at all: None.
    """
    texts = completion.token_texts
    if len(texts) != completion.num_tokens:
        return None
    exact = "".join(texts) == completion.text
    ends: list[int] = []
    position = 0
    for token_text in texts:
        position += len(token_text)
        ends.append(position)
    joined = "".join(texts)
    found = joined.find(delimiter)
    step_tokens = None
    if found >= 0:
        last_char = found + len(delimiter) - 1
        step_tokens = next(i for i, end in enumerate(ends) if end > last_char) + 1
    if step_tokens is None or step_tokens > max_step_tokens:
        if completion.num_tokens <= max_step_tokens and step_tokens is None:
            # the sample ended (EOS) before any delimiter: the whole sample is the step
            return SplitSample(step=_step_part(completion, completion.text, completion.num_tokens, completion.finish_reason),
                               continuation=None, continuation_tokens=0)
        if not exact:
            return None
        cut = ends[max_step_tokens - 1]
        return SplitSample(step=_step_part(completion, completion.text[:cut], max_step_tokens, FINISH_LENGTH),
                           continuation=None, continuation_tokens=completion.num_tokens - max_step_tokens)
    text_found = completion.text.find(delimiter)
    if text_found < 0:
        return None
    step = _step_part(completion, completion.text[:text_found], step_tokens, FINISH_STOP, delimiter)
    rest_tokens = completion.num_tokens - step_tokens
    continuation: str | None = completion.text[text_found + len(delimiter):]
    if rest_tokens > rollout_max_tokens:
        continuation = (completion.text[text_found + len(delimiter):ends[step_tokens + rollout_max_tokens - 1]]
                        if exact else None)
    return SplitSample(step=step, continuation=continuation, continuation_tokens=rest_tokens)


def _step_part(completion: Completion, text: str, num_tokens: int, finish: str, stop_string: str | None = None) -> Completion:
    return Completion(text=text, num_tokens=num_tokens, token_logprobs=completion.token_logprobs[:num_tokens],
                      finish_reason=finish, stop_string=stop_string, token_texts=completion.token_texts[:num_tokens])


class LLMSearchPolicy:
    def __init__(self, backend: Backend, task: Task, problems: Sequence[Problem],
                 sampling: SamplingConfig, search: SearchConfig):
        self.backend = backend
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
        # rollouts sampled with their steps (see split_first_step): only step trees, only when
        # rollouts are used at all
        self.rollout_from_expansion = sampling.rollout_from_expansion and search.use_rollout and not self.plan_tree
        self._continuation_tokens: dict[tuple[int, str], int] = {}  # this wave's, until evaluated
        self.followup_suffixes: list[str] | None = None
        if search.use_self_eval and sampling.self_eval_layout == "followup":
            render = backend.render_chat
            if sampling.self_eval_hint:
                self.followup_suffixes = [followup_suffix(render, p.solution) for p in self.problems]
            else:
                self.followup_suffixes = [followup_suffix(render)] * len(self.problems)

    # ------------------------------------------------------------ prompts
    def _solution_template(self, problem: Problem) -> str:
        template = self.backend.render_chat(plan_prompts.solution_messages(self.task, problem, plan_tree.PLAN_PLACEHOLDER))
        if template.count(plan_tree.PLAN_PLACEHOLDER) != 1:
            raise ValueError("the chat template changed the plan placeholder; plan trees need it verbatim")
        return template

    def _state_text(self, tree: Tree, tree_index: int, node_id: int) -> str:
        """The prompt that continues `node_id` (children are sampled from it)."""
        if not self.plan_tree:
            return state_text(self.root_prompts[tree_index], tree.steps(node_id), self.sampling.step_delimiter)
        if plan_tree.EXTRA_KEY not in tree.extra:  # what extraction needs to rebuild these prompts
            tree.extra[plan_tree.EXTRA_KEY] = plan_tree.plan_metadata(
                self.solution_templates[tree_index], self.search.max_plan_depth)
        return plan_tree.state_text(tree, node_id, self.root_prompts[tree_index], self.solution_templates[tree_index],
                                    self.sampling.step_delimiter, self.search.max_plan_depth)

    def rollout_prompt(self, tree: Tree, tree_index: int, node_id: int) -> str:
        """The prompt a rollout from `node_id` continues: its state (plan trees: the solution
        prompt with the plan so far and the solution steps)."""
        if not self.plan_tree:
            return state_text(self.root_prompts[tree_index], tree.steps(node_id), self.sampling.step_delimiter)
        return plan_tree.rollout_prompt(tree, node_id, self.solution_templates[tree_index], self.sampling.step_delimiter)

    def self_eval_prompt(self, tree: Tree, tree_index: int, node_id: int) -> str | None:
        """The verdict question for a non-terminal node, or None when it gets none."""
        if not self.search.use_self_eval:
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
        if self.followup_suffixes is not None:
            return self.rollout_prompt(tree, tree_index, node_id) + self.followup_suffixes[tree_index]
        hint = problem.solution if self.sampling.self_eval_hint else None
        if self.sampling.self_eval_layout == "numbered":
            return self.backend.render_chat(self_eval_numbered_messages(problem, steps, hint))
        if self.sampling.self_eval_layout == "question_first":
            return self.backend.render_chat(self_eval_question_first_messages(problem, steps, hint))
        return self.backend.render_chat(self_eval_messages(problem, steps[:-1], steps[-1], hint))

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
        fused = self.rollout_from_expansion
        generation = [
            GenerationRequest(
                prompt=self._state_text(trees[r.tree_index], r.tree_index, r.node_id),
                max_tokens=s.max_step_tokens + s.rollout_max_tokens if fused else s.max_step_tokens,
                n=r.num_children,
                temperature=s.temperature,
                top_p=s.top_p,
                stop=() if fused else (s.step_delimiter,),
            )
            for r in requests
        ]
        results = self._generate(generation)
        self._finish_continuations()  # any the previous wave left unevaluated
        out: list[list[StepProposal]] = []
        for request, result in zip(requests, results):
            if not fused:
                self._count(request.tree_index, "expand", result)
            proposals = []
            for completion in result.completions:
                if request.kind == "plan":
                    proposal = self._plan_proposal(completion)
                    if proposal is not None:
                        proposals.append(proposal)
                    continue
                continuation = None
                if fused:
                    completion, continuation = self._split_sample(request.tree_index, completion)
                    if completion is None:
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
                                              logprob_sum=completion.logprob_sum, finish=finish, kind=request.kind,
                                              continuation=continuation))
            if fused:
                counts = self.token_counts[request.tree_index]
                counts["prompt"] += result.prompt_tokens
                counts["cached_prompt"] += result.cached_prompt_tokens
            out.append(proposals)
        return out

    def _split_sample(self, tree_index: int, completion: Completion) -> tuple[Completion | None, str | None]:
        """An expansion sample drawn past its step: the step, and the rollout after it (or None)."""
        s = self.sampling
        counts = self.token_counts[tree_index]
        counts["generated"] += completion.num_tokens
        split = split_first_step(completion, s.step_delimiter, s.max_step_tokens, s.rollout_max_tokens)
        if split is None:
            counts["dropped_generated"] += completion.num_tokens
            return None, None
        counts["expand_generated"] += split.step.num_tokens
        if split.continuation is None:
            counts["unused_generated"] += split.continuation_tokens
        else:
            key = (tree_index, split.continuation)
            if key in self._continuation_tokens:  # the same text twice: only one can be used
                counts["unused_generated"] += split.continuation_tokens
            else:
                self._continuation_tokens[key] = split.continuation_tokens
        return split.step, split.continuation

    def _finish_continuations(self) -> None:
        """Count the continuations no evaluation used (terminal or merged children) as unused."""
        for (tree_index, _), num_tokens in self._continuation_tokens.items():
            self.token_counts[tree_index]["unused_generated"] += num_tokens
        self._continuation_tokens.clear()

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
                    temperature=1.0, top_p=1.0, top_logprobs=s.self_eval_top_logprobs,
                ))
                slots.append((index, "self_eval"))
            if self.search.use_rollout and request.rollout_text is not None:
                num_tokens = self._continuation_tokens.pop((request.tree_index, request.rollout_text), 0)
                self.token_counts[request.tree_index]["rollout_generated"] += num_tokens
                self.token_counts[request.tree_index]["rollouts_from_expansion"] += 1
                self._rollout_outcome(evaluations[index], trees, request, request.rollout_text)
            elif self.search.use_rollout:
                generation.append(GenerationRequest(
                    prompt=self.rollout_prompt(tree, request.tree_index, request.node_id),
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
                self._rollout_outcome(evaluations[index], trees, request, completion.text)
        self._finish_continuations()
        return evaluations

    def _rollout_outcome(self, evaluation: NodeEvaluation, trees: Sequence[Tree], request: EvaluationRequest,
                         rollout_text: str) -> None:
        """The verifier on the node's steps followed by a rollout from it."""
        s = self.sampling
        problem = self.problems[request.tree_index]
        steps = self._solution_steps(trees[request.tree_index], request.node_id)
        full = s.step_delimiter.join(steps) + s.step_delimiter + rollout_text
        evaluation.rollout_value = 1.0 if self.task.is_correct(full, problem) else -1.0
        evaluation.rollout_text = rollout_text
