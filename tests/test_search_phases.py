"""The wave phases of `run_search` one at a time, and the tree-kind strategies, on hand-built trees.

`select_leaves`, `expand_leaves`, `evaluate_nodes` and `backup_wave` are run by hand on a
tiny tree with tests/fake_policy.py's `LetterPolicy`, with the exact values each phase must
leave; `StepTrees`/`PlanTrees` are checked on a hand-built plan tree, and the registry
against `SearchConfig`'s tree kinds. Whole searches: tests/test_search_golden.py.

    .venv/bin/pytest -q tests/test_search_phases.py
"""

from __future__ import annotations

import pytest

from mcts_po.search import config as search_config
from mcts_po.search.config import SearchConfig
from mcts_po.search.mcts import ExpansionRequest, backup_wave, evaluate_nodes, expand_leaves, select_leaves
from mcts_po.search.tree import Tree
from mcts_po.search.tree_kinds import TREE_KIND_STRATEGIES, PlanTrees, StepTrees, tree_kind

from fake_policy import LetterPolicy


def test_one_wave_phase_by_phase():
    config = SearchConfig(num_simulations=2, num_children=2, leaves_per_wave=2, self_eval_weight=0.5)
    trees = [Tree.new(problem_id="p0", question="q"), Tree.new(problem_id="p1", question="q")]
    done = [0, 2]  # the second tree is finished: not selected
    kind = tree_kind(config)

    selection = select_leaves(trees, done, config, kind)
    # the root is the only leaf: the second selection finds it again and stops the tree's wave
    assert selection.expansions == [ExpansionRequest(0, 0, 2, "step")]
    assert selection.terminal_leaves == [] and done == [1, 2]

    policy = LetterPolicy(answer_depth=2)
    expansion = expand_leaves(trees, policy, selection.expansions, config, kind, wave=0)
    assert [n.text for n in trees[0].children(0)] == ["a", "b"]
    assert expansion.children == [(selection.expansions[0], [1, 2])]
    assert [(e.node_id, e.terminal) for e in expansion.evaluations] == [(1, False), (2, False)]

    evaluate_nodes(trees, policy, expansion.evaluations, config)
    a, b = trees[0].children(0)
    # value = 0.5 * (2 * self_eval - 1) + 0.5 * rollout: "a" 0.5 * 0.8 + 0.5 * 1, "b" 0.5 * -0.2 + 0.5 * -1
    assert (a.initial_value, a.visits, a.q) == (pytest.approx(0.9), 1, pytest.approx(0.9))
    assert (b.initial_value, b.visits, b.q) == (pytest.approx(-0.6), 1, pytest.approx(-0.6))
    assert trees[0].root.visits == 0

    backup_wave(trees, selection, expansion, config)
    assert (trees[0].root.visits, trees[0].root.q) == (1, pytest.approx(0.15))  # mean of 0.9 and -0.6


def test_backup_wave_backs_up_terminal_leaves_with_their_stored_value():
    config = SearchConfig(num_simulations=4)
    tree = Tree.new(problem_id="p", question="q")
    tree.root.visits, tree.root.value_sum, tree.root.q = 1, 0.0, 0.0
    leaf = tree.add_child(0, text="The answer is 2.", terminal=True, initial_value=1.0, visits=1, value_sum=1.0, q=1.0)
    selection = select_leaves([tree], [0], config, tree_kind(config))
    assert selection.terminal_leaves == [(0, leaf.node_id)] and selection.expansions == []
    expansion = expand_leaves([tree], LetterPolicy(), [], config, tree_kind(config), wave=0)
    backup_wave([tree], selection, expansion, config)
    assert (leaf.visits, leaf.q) == (2, 1.0)
    assert (tree.root.visits, tree.root.value_sum) == (2, 1.0)


def plan_tree() -> Tree:
    tree = Tree.new(problem_id="p", question="q", tree_kind="plan")
    p1 = tree.add_child(0, kind="plan", text="Find the total.", num_tokens=4)
    end = tree.add_child(p1.node_id, kind="plan", text="Now solve.", num_tokens=3)
    s1 = tree.add_child(end.node_id, kind="step", text="2 + 3 = 5.", num_tokens=6)
    tree.add_child(s1.node_id, kind="step", text="So 5.", num_tokens=2)
    return tree


def test_tree_kinds_say_what_a_leaf_becomes_and_what_counts_against_the_limits():
    tree = plan_tree()
    plans = PlanTrees(max_plan_depth=3)
    assert [plans.child_kind(tree, i) for i in range(5)] == ["plan", "plan", "step", "step", "step"]
    assert [plans.path_budget(tree, i) for i in range(5)] == [(0, 0), (0, 0), (0, 0), (1, 6), (2, 8)]
    assert PlanTrees(max_plan_depth=1).child_kind(tree, 1) == "step"  # the plan is complete at depth 1
    steps = StepTrees()
    assert [steps.child_kind(tree, i) for i in range(5)] == ["step"] * 5
    assert [steps.path_budget(tree, i) for i in range(5)] == [(0, 0), (1, 4), (2, 7), (3, 13), (4, 15)]


def test_every_configurable_tree_kind_has_a_strategy_and_unknown_ones_are_named():
    assert set(TREE_KIND_STRATEGIES) == set(search_config.TREE_KINDS)
    assert tree_kind(SearchConfig(tree="plan", max_plan_depth=2)) == PlanTrees(max_plan_depth=2)
    assert tree_kind(SearchConfig()) == StepTrees()
    config = SearchConfig()
    config.tree = "forest"  # past validation
    with pytest.raises(ValueError, match="unknown tree kind 'forest'; valid: step, plan"):
        tree_kind(config)
