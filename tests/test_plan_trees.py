"""Plan trees (CPL), exactly: plan expansion, the switch to solution steps, value flow, plan-level pairs.

Two fakes, no model: `PlanLetterPolicy` (a deterministic SearchPolicy in the style of
tests/fake_policy.py) drives the pure core for exact numbers, and `ScriptedPlanBackend`
drives the real `LLMSearchPolicy` so its plan-line handling and prompts are checked
against what extraction rebuilds from the stored tree.

    pytest tests/test_plan_trees.py -q
"""

from __future__ import annotations

import math
from typing import Sequence

import pytest

from mcts_po.backends.base import FINISH_EOS, FINISH_STOP, Completion, GenerationResult
from mcts_po.extract import ExtractConfig, extract_rows
from mcts_po.extract.tree_text import training_prompt
from mcts_po.llm import node_text, plan_prompts
from mcts_po.llm.config import SamplingConfig
from mcts_po.llm.policy import LLMSearchPolicy
from mcts_po.search import plan
from mcts_po.search.config import SearchConfig
from mcts_po.search.mcts import (
    STEP_ANSWER,
    STEP_CONTINUES,
    EvaluationRequest,
    ExpansionRequest,
    NodeEvaluation,
    StepProposal,
    run_search,
)
from mcts_po.search.tree import Tree
from mcts_po.tasks import get_task
from mcts_po.tasks.base import Problem

PLAN_PROMPT = "PLAN FOR: q\n"
SOLUTION_TEMPLATE = f"SOLVE q WITH PLAN:\n{node_text.PLAN_PLACEHOLDER}\nSOLUTION:\n"


# ---------------------------------------------------------------------------- a deterministic plan policy
class PlanLetterPolicy:
    """Plan children of a node at depth d are "P{d+1}a", "P{d+1}b", ... (k of them); when
    `marker_depth == d + 1` the last one is the plan-end marker instead. Solution children are
    "a", "b", ...; the `answer_steps`-th solution step states an answer. A solution is correct
    when its plan starts with "P1a" and every solution step starts with "a". Rollouts are +1
    exactly when the path so far could still end correct. Self-evaluation: none."""

    def __init__(self, answer_steps: int = 1, marker_depth: int | None = None):
        self.answer_steps = answer_steps
        self.marker_depth = marker_depth
        self.expand_calls: list[list[ExpansionRequest]] = []

    @staticmethod
    def _path_ok(tree: Tree, node_id: int) -> bool:
        plan_texts = plan.plan_steps(tree, node_id)
        steps = plan.solution_steps(tree, node_id)
        return (not plan_texts or plan_texts[0] == "P1a") and all(s.startswith("a") for s in steps)

    def expand(self, trees: Sequence[Tree], requests: Sequence[ExpansionRequest]) -> list[list[StepProposal]]:
        self.expand_calls.append(list(requests))
        out = []
        for r in requests:
            tree = trees[r.tree_index]
            letters = [chr(ord("a") + i) for i in range(r.num_children)]
            proposals = []
            if r.kind == "plan":
                depth = tree.nodes[r.node_id].depth + 1
                for rank, letter in enumerate(letters):
                    text = f"P{depth}{letter}"
                    if self.marker_depth == depth and rank == len(letters) - 1:
                        text = plan.PLAN_END_TEXT
                    proposals.append(StepProposal(text=text, num_tokens=2, logprob_sum=-1.0 * (rank + 1), kind="plan"))
            else:
                step_number = len(plan.solution_steps(tree, r.node_id)) + 1
                final = step_number >= self.answer_steps
                for rank, letter in enumerate(letters):
                    text = f"{letter} The answer is {step_number}." if final else letter
                    proposals.append(StepProposal(text=text, num_tokens=2, logprob_sum=-1.0 * (rank + 1),
                                                  finish=STEP_ANSWER if final else STEP_CONTINUES, kind="step"))
            out.append(proposals)
        return out

    def evaluate(self, trees: Sequence[Tree], requests: Sequence[EvaluationRequest]) -> list[NodeEvaluation]:
        out = []
        for r in requests:
            ok = self._path_ok(trees[r.tree_index], r.node_id)
            if r.terminal:
                out.append(NodeEvaluation(answer="1", correct=ok))
            else:
                out.append(NodeEvaluation(rollout_value=1.0 if ok else -1.0))
        return out


def plan_tree_for_test() -> Tree:
    tree = Tree.new(problem_id="p1", question="q", gold_answer="1", task="demo", tree_kind="plan", prompt=PLAN_PROMPT,
                    sampling={"step_delimiter": "\n"})
    tree.extra[plan.EXTRA_KEY] = node_text.plan_metadata(SOLUTION_TEMPLATE, max_plan_depth=1)
    return tree


def plan_config(**overrides) -> SearchConfig:
    values = dict(tree="plan", num_children=2, leaves_per_wave=1, use_self_eval=False, backup="mean",
                  max_plan_depth=1, max_depth=4, c_explore=1.0)
    values.update(overrides)
    return SearchConfig(**values)


def kinds_by_depth(tree: Tree) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for node in tree.nodes[1:]:
        out.setdefault(node.depth, set()).add(node.kind)
    return out


# ---------------------------------------------------------------------------- core: expansion and switch
def test_root_expands_into_plan_steps_and_requests_say_plan():
    tree = plan_tree_for_test()
    policy = PlanLetterPolicy()
    run_search([tree], policy, plan_config(num_simulations=1))
    assert [(n.text, n.kind) for n in tree.children(0)] == [("P1a", "plan"), ("P1b", "plan")]
    assert [r.kind for r in policy.expand_calls[0]] == ["plan"]
    assert not any(n.terminal for n in tree.nodes)


def test_switch_to_solution_steps_at_max_plan_depth_with_exact_values():
    tree = plan_tree_for_test()
    policy = PlanLetterPolicy(answer_steps=1)
    run_search([tree], policy, plan_config(num_simulations=2))
    # wave 0: root -> P1a (+1 rollout), P1b (-1); root backed up with their mean 0
    # wave 1: PUCT picks P1a (1 + 0.5*1/2 vs -1 + ...); its plan is complete at depth 1, so it
    # expands into solution steps: "a The answer is 1." (correct, +1), "b ..." (wrong, -1)
    assert [r.kind for call in policy.expand_calls for r in call] == ["plan", "step"]
    p1a, p1b, a, b = tree.nodes[1:]
    assert (a.kind, a.parent, a.terminal, a.correct, a.terminal_reason) == ("step", 1, True, True, "answer")
    assert (b.kind, b.terminal, b.correct) == ("step", True, False)
    # value flow: P1a got its rollout +1, then the mean (0) of its solution children
    assert (p1a.visits, p1a.value_sum, p1a.q) == (2, 1.0, 0.5)
    assert (p1b.visits, p1b.q) == (1, -1.0)
    assert (tree.root.visits, tree.root.value_sum, tree.root.q) == (2, 0.0, 0.0)
    assert kinds_by_depth(tree) == {1: {"plan"}, 2: {"step"}}


def test_values_of_plan_steps_follow_verified_terminals_below_them():
    tree = plan_tree_for_test()
    run_search([tree], PlanLetterPolicy(answer_steps=1), plan_config(num_simulations=4))
    # wave 2 selects the correct terminal a (+1) under P1a; wave 3 again selects a:
    # P1a's value sum = 1 (rollout) + 0 (children mean) + 1 + 1 = 3 over 4 visits
    p1a, a = tree.nodes[1], tree.nodes[3]
    assert (a.visits, a.q) == (3, 1.0)
    assert (p1a.visits, p1a.value_sum) == (4, 3.0)
    assert math.isclose(p1a.q, 0.75)
    assert tree.root.visits == 4 and math.isclose(tree.root.value_sum, 2.0)


def test_plan_end_marker_switches_to_solution_steps_before_max_plan_depth():
    tree = plan_tree_for_test()
    tree.extra[plan.EXTRA_KEY]["max_plan_depth"] = 3
    policy = PlanLetterPolicy(answer_steps=2, marker_depth=2)
    config = plan_config(num_simulations=6, max_plan_depth=3, num_children=2)
    run_search([tree], policy, config)
    marker = [n for n in tree.nodes if plan.is_plan_end(n)]
    assert marker and all(n.depth == 2 and n.kind == "plan" and not n.terminal for n in marker)
    for node in marker:
        assert node.children, "the marker was selected and expanded"
        assert {c.kind for c in tree.children(node.node_id)} == {"step"}
    # the other depth-2 plan step (P2a) keeps planning: its plan is open until depth 3
    p2a = next(n for n in tree.nodes if n.text == "P2a")
    assert plan.child_kind(tree, p2a.node_id, 3) == "plan"
    # solution depth limits count solution steps only: "a" at depth 3 is not max_depth-terminal
    first_steps = tree.children(marker[0].node_id)
    assert [(n.text, n.terminal) for n in first_steps] == [("a", False), ("b", False)]


def test_plan_steps_are_never_terminal_even_if_a_policy_says_answer():
    tree = plan_tree_for_test()

    class AnsweringPlanPolicy(PlanLetterPolicy):
        def expand(self, trees, requests):
            out = super().expand(trees, requests)
            return [[StepProposal(p.text, p.num_tokens, p.logprob_sum, STEP_ANSWER, p.kind) for p in ps] for ps in out]

    run_search([tree], AnsweringPlanPolicy(), plan_config(num_simulations=1))
    assert [n.terminal for n in tree.children(0)] == [False, False]


def test_solution_max_depth_counts_only_solution_steps():
    tree = plan_tree_for_test()
    # plan depth 1 + max_depth 1: the first solution step is max_depth-terminal (no answer stated)
    run_search([tree], PlanLetterPolicy(answer_steps=5), plan_config(num_simulations=2, max_depth=1))
    a, b = tree.nodes[3], tree.nodes[4]
    assert (a.depth, a.terminal, a.terminal_reason) == (2, True, "max_depth")
    assert (b.terminal_reason, a.correct) == ("max_depth", True)


def test_step_trees_are_unchanged_by_the_plan_option_default():
    from fake_policy import LetterPolicy

    tree = Tree.new(problem_id="p", question="q")
    run_search([tree], LetterPolicy(answer_depth=2), SearchConfig(num_simulations=3, use_rollout=False))
    assert {n.kind for n in tree.nodes[1:]} == {"step"}


def test_max_plan_depth_is_validated():
    with pytest.raises(ValueError, match="max_plan_depth must be >= 1"):
        SearchConfig(tree="plan", max_plan_depth=0)


# ---------------------------------------------------------------------------- pure prompt helpers
def test_state_text_uses_plan_prompt_while_plan_is_open_then_solution_prompt():
    tree = plan_tree_for_test()
    p1 = tree.add_child(0, kind="plan", text="Find the total.")
    end = tree.add_child(p1.node_id, kind="plan", text=plan.PLAN_END_TEXT)
    s1 = tree.add_child(end.node_id, kind="step", text="2 + 3 = 5.")
    args = (PLAN_PROMPT, SOLUTION_TEMPLATE, "\n", 3)
    assert node_text.plan_state_text(tree, 0, *args) == PLAN_PROMPT
    assert node_text.plan_state_text(tree, p1.node_id, *args) == PLAN_PROMPT + "Find the total.\n"
    assert node_text.plan_state_text(tree, end.node_id, *args) == "SOLVE q WITH PLAN:\nFind the total.\nSOLUTION:\n"
    assert node_text.plan_state_text(tree, s1.node_id, *args) == "SOLVE q WITH PLAN:\nFind the total.\nSOLUTION:\n2 + 3 = 5.\n"
    # rollouts from an open plan solve with the plan so far
    assert node_text.plan_rollout_prompt(tree, p1.node_id, SOLUTION_TEMPLATE, "\n") == "SOLVE q WITH PLAN:\nFind the total.\nSOLUTION:\n"
    assert node_text.plan_rollout_prompt(tree, 0, SOLUTION_TEMPLATE, "\n") == f"SOLVE q WITH PLAN:\n{node_text.EMPTY_PLAN_TEXT}\nSOLUTION:\n"
    with pytest.raises(ValueError, match="placeholder"):
        node_text.solution_prompt("no placeholder here", ["x"])


@pytest.mark.parametrize("line,expected", [
    ("Now solve.", plan_prompts.PLAN_LINE_END),
    ("now, let's solve the problem:", plan_prompts.PLAN_LINE_END),
    ("Plan complete.", plan_prompts.PLAN_LINE_END),
    ("", plan_prompts.PLAN_LINE_END),
    ("   ", plan_prompts.PLAN_LINE_END),
    ("1. Find how many eggs are left.", plan_prompts.PLAN_LINE_STEP),
    ("Now solve for x by dividing both sides.", plan_prompts.PLAN_LINE_STEP),
])
def test_classify_plan_line(line, expected):
    assert plan_prompts.classify_plan_line(line) == expected


def test_a_plan_line_stating_the_answer_is_rejected():
    assert plan_prompts.classify_plan_line("The answer is 18.", has_final_answer=True) == plan_prompts.PLAN_LINE_REJECT


# ---------------------------------------------------------------------------- extraction: level tags
def searched_plan_tree() -> Tree:
    tree = plan_tree_for_test()
    run_search([tree], PlanLetterPolicy(answer_steps=1), plan_config(num_simulations=4))
    return tree


def test_step_apo_plan_level_pairs_with_level_tag_and_plan_prompt():
    tree = searched_plan_tree()
    rows = extract_rows([tree], "step-apo", ExtractConfig(level="plan"))
    assert [(r["parent_id"], r["chosen_id"], r["rejected_id"], r["level"]) for r in rows] == [(0, 1, 2, "plan")]
    row = rows[0]
    assert (row["chosen"], row["rejected"]) == ("P1a", "P1b")
    assert row["prompt"] == PLAN_PROMPT and row["initial_reason_steps"] == ""
    assert (row["q_chosen"], row["q_rejected"], row["q_parent"], row["q_baseline"]) == (0.75, -1.0, 0.5, 0.5)
    assert row["chosen_ends_solution"] is False


def test_step_level_pairs_use_the_solution_prompt_with_the_plan():
    tree = searched_plan_tree()
    # "a The answer is 1." vs "b The answer is 1." are near-duplicates under the default 0.9
    rows = extract_rows([tree], "step-dpo", ExtractConfig(level="step", dedup_threshold=1.0))
    assert [(r["parent_id"], r["chosen_id"], r["rejected_id"], r["level"]) for r in rows] == [(1, 3, 4, "step")]
    assert rows[0]["prompt"] == "SOLVE q WITH PLAN:\nP1a\nSOLUTION:\n"
    assert rows[0]["initial_reason_steps"] == ""
    both = extract_rows([tree], "step-dpo", ExtractConfig(level="all", dedup_threshold=1.0))
    assert [r["level"] for r in both] == ["plan", "step"]


# ---------------------------------------------------------------------------- the LLM policy on a scripted backend
class ScriptedPlanBackend:
    """Plan prompts get four plan lines (a real step, the marker, an empty line ended by EOS,
    and an answer line); solution prompts get a right and a wrong final step; rollouts are
    right when the plan mentions "total"; self-evaluation says Yes with probability 0.75."""

    name = "scripted"
    model = "scripted"

    def __init__(self):
        self.requests = []

    def render_chat(self, messages, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"

    def generate(self, requests):
        self.requests.extend(requests)
        out = []
        for r in requests:
            if r.max_tokens == 1:
                completions = [Completion(" Yes", 1, [math.log(0.6)],
                                          top_logprobs=[{" Yes": math.log(0.6), " No": math.log(0.2)}])]
            elif r.stop and plan_prompts.PLAN_INSTRUCTION in r.prompt:
                completions = [
                    Completion("Find the total of the two numbers.", 8, [-0.5] * 8, FINISH_STOP, "\n"),
                    Completion(" Now solve.", 3, [-0.2] * 3, FINISH_STOP, "\n"),
                    Completion("", 0, [], FINISH_EOS),
                    Completion("The answer is 5.", 5, [-0.1] * 5, FINISH_STOP, "\n"),
                ][: r.n]
            elif r.stop:
                completions = [Completion("2 + 3 = 5. The answer is 5.", 9, [-0.3] * 9, FINISH_STOP, "\n"),
                               Completion("2 + 3 = 6. The answer is 6.", 9, [-0.9] * 9, FINISH_STOP, "\n")][: r.n]
            else:
                answer = 5 if "total" in r.prompt else 7
                completions = [Completion(f"So 2 + 3 = {answer}. The answer is {answer}.", 10, [-0.4] * 10, FINISH_EOS)]
            out.append(GenerationResult(completions=completions, prompt_tokens=len(r.prompt)))
        return out

    def close(self):
        pass


def run_llm_plan_search(num_simulations=6):
    task = get_task("demo")
    problem = Problem(id="p1", question="What is 2 + 3?", answer="5")
    backend = ScriptedPlanBackend()
    search = SearchConfig(tree="plan", num_children=4, leaves_per_wave=1, num_simulations=num_simulations,
                          max_plan_depth=2)
    sampling = SamplingConfig()
    policy = LLMSearchPolicy(backend, task, [problem], sampling, search)
    tree = Tree.new(problem_id="p1", question=problem.question, gold_answer="5", task="demo", tree_kind="plan",
                    prompt=policy.root_prompts[0], sampling=sampling.to_dict(), search_config=search.to_dict())
    run_search([tree], policy, search)
    return tree, backend, policy


def test_llm_policy_plan_lines_become_plan_steps_and_one_merged_marker():
    tree, backend, policy = run_llm_plan_search()
    root_children = tree.children(0)
    # "Now solve." and the empty EOS line are both the marker (merged); the answer line is dropped
    assert [(n.text, n.kind, n.num_samples) for n in root_children] == [
        ("Find the total of the two numbers.", "plan", 1), (plan.PLAN_END_TEXT, "plan", 2)]
    assert plan_prompts.PLAN_INSTRUCTION in tree.prompt
    template = tree.extra["plan"]["solution_prompt_template"]
    assert template.count(node_text.PLAN_PLACEHOLDER) == 1 and "What is 2 + 3?" in template
    # the marker has no plan self-evaluation; the plan step has one (0.6 / (0.6 + 0.2))
    assert root_children[1].self_eval is None
    assert math.isclose(root_children[0].self_eval, 0.75)


def test_llm_policy_prompts_are_what_extraction_rebuilds():
    tree, backend, _ = run_llm_plan_search()
    expansion_prompts = [r.prompt for r in backend.requests if r.stop]
    expanded = [n.node_id for n in tree.nodes if n.children]
    assert sorted(expansion_prompts) == sorted(training_prompt(tree, node_id) for node_id in expanded)
    assert any(plan.is_plan_end(n) and n.children for n in tree.nodes), "a solution was expanded below a plan"


def test_self_evaluation_of_a_solution_step_numbers_the_solution_steps_only():
    from mcts_po.llm.prompts import self_eval_numbered_messages

    tree, backend, policy = run_llm_plan_search()
    plan_end = next(n for n in tree.nodes if plan.is_plan_end(n))
    step = tree.add_child(plan_end.node_id, text="2 + 3 = 5.", num_tokens=5, kind="step")
    rollout = policy.rollout_prompt(tree, 0, step.node_id)
    assert "2 + 3 = 5.\n" in rollout and "What is 2 + 3?" in rollout
    verdict = policy.self_eval_prompt(tree, 0, step.node_id)
    assert verdict == backend.render_chat(self_eval_numbered_messages(policy.problems[0], ["2 + 3 = 5."]))
    assert "Solution steps:\n1. 2 + 3 = 5.\n\nIs step 1 correct?" in verdict
    # plan steps keep their own plan question
    plan_step = next(n for n in tree.children(0) if not plan.is_plan_end(n))
    assert policy.self_eval_prompt(tree, 0, plan_step.node_id) == backend.render_chat(
        plan_prompts.plan_self_eval_messages(policy.problems[0], [], plan_step.text))


def test_llm_policy_terminals_are_judged_on_solution_steps_and_levels_are_ordered():
    tree, _, _ = run_llm_plan_search(num_simulations=8)
    terminals = tree.terminals()
    assert terminals and all(n.kind == "step" and n.correct is not None for n in terminals)
    assert {n.answer for n in terminals} == {"5", "6"}
    for node in tree.nodes[1:]:
        above = [a.kind for a in tree.path(node.node_id)[:-1]]
        if node.kind == "plan":
            assert set(above) <= {"plan"}, "plan steps only below the root and other plan steps"
    rows = extract_rows([tree], "step-apo", ExtractConfig(level="plan"))
    assert rows and {r["level"] for r in rows} == {"plan"}
    assert all(r["prompt"] == tree.prompt for r in rows if r["parent_id"] == 0)


# ---------------------------------------------------------------------------- statistics and text view mark the level
def test_run_stats_count_nodes_by_kind_and_text_view_marks_plan_steps():
    from mcts_po.graphs.run_stats import compute_run_stats, format_run_stats
    from mcts_po.graphs.text_view import render_tree_text

    tree = plan_tree_for_test()
    run_search([tree], PlanLetterPolicy(answer_steps=1), plan_config(num_simulations=2))
    stats = compute_run_stats([tree], pair_source="siblings")
    assert stats.nodes_by_kind == {"plan": 2, "root": 1, "step": 2}
    assert "nodes by kind: plan 2, root 1, step 2" in format_run_stats(stats)
    text = render_tree_text(tree, width=100, pair_source="siblings")
    assert "◆ [2]" in text and "kind plan" in text
