"""Exact tests of the pure search core: selection, backup, virtual loss, terminals, merging, JSON.

    pytest tests/test_search_core.py -q
"""

from __future__ import annotations

import math
import sys

import pytest

from fake_policy import LetterPolicy, expected_prior
from mcts_po.search.backup import backup
from mcts_po.search.config import SearchConfig
from mcts_po.search.mcts import run_search
from mcts_po.search.selection import VirtualLoss, select_child, select_leaf
from mcts_po.search.tree import Tree


def two_child_tree(q1=0.5, p1=0.2, n1=2, q2=0.0, p2=0.8, n2=1, root_visits=4) -> Tree:
    tree = Tree.new(problem_id="p", question="q")
    tree.root.visits = root_visits
    tree.add_child(0, text="x", q=q1, prior=p1, visits=n1, value_sum=q1 * n1)
    tree.add_child(0, text="y", q=q2, prior=p2, visits=n2, value_sum=q2 * n2)
    return tree


def test_puct_choice_depends_on_exploration_constant():
    tree = two_child_tree()
    # c=1: x = 0.5 + 0.2*2/3 = 0.633, y = 0 + 0.8*2/2 = 0.8
    assert select_child(tree, 0, "puct", 1.0) == 2
    # c=0.1: x = 0.513, y = 0.08
    assert select_child(tree, 0, "puct", 0.1) == 1


def test_uct_choice_depends_on_exploration_constant():
    tree = two_child_tree()
    # c=1: x = 0.5 + sqrt(ln 4 / 2) = 1.333, y = sqrt(ln 4) = 1.177
    assert select_child(tree, 0, "uct", 1.0) == 1
    # c=2: x = 2.165, y = 2.355
    assert select_child(tree, 0, "uct", 2.0) == 2


def test_selection_ties_go_to_lowest_id_and_unknown_rule_is_named():
    tree = two_child_tree(q1=0.0, p1=0.5, n1=1, q2=0.0, p2=0.5, n2=1)
    assert select_child(tree, 0, "puct", 1.0) == 1
    with pytest.raises(ValueError, match="valid: puct, uct"):
        select_child(tree, 0, "ucb9", 1.0)


def test_mean_backup_values():
    tree = Tree.new(problem_id="p", question="q")
    a = tree.add_child(0, text="a", visits=1, value_sum=0.5, q=0.5)
    b = tree.add_child(a.node_id, text="b", visits=1, value_sum=-1.0, q=-1.0)
    backup(tree, b.node_id, 1.0, "mean")
    assert (b.visits, b.value_sum, b.q) == (2, 0.0, 0.0)
    assert (a.visits, a.value_sum, a.q) == (2, 1.5, 0.75)
    assert (tree.root.visits, tree.root.q) == (1, 1.0)


def test_visit_weighted_backup_values():
    tree = Tree.new(problem_id="p", question="q")
    a = tree.add_child(0, text="a", visits=3, value_sum=0.0, q=0.0)
    b = tree.add_child(a.node_id, text="b", visits=2, value_sum=1.0, q=0.5, terminal=True)
    tree.add_child(a.node_id, text="c", visits=0, value_sum=0.0, q=-1.0)
    backup(tree, b.node_id, 1.0, "visit_weighted", gamma=0.9)
    assert b.visits == 3 and b.q == pytest.approx(2 / 3)
    # V(a) = (3 * 2/3 + max(1, 0) * -1) / (3 + 1) = 0.25; Q = 0.9 * 0.25
    assert a.visits == 4 and a.q == pytest.approx(0.225)
    assert a.value_sum == pytest.approx(0.225 * 4)
    assert tree.root.visits == 1 and tree.root.q == pytest.approx(0.9 * 0.225)
    with pytest.raises(ValueError, match="valid: mean, visit_weighted"):
        backup(tree, b.node_id, 1.0, "max")


def test_virtual_loss_steers_second_selection_of_a_wave():
    tree = two_child_tree(q1=0.0, p1=0.5, n1=1, q2=0.0, p2=0.5, n2=1, root_visits=2)
    virtual = VirtualLoss(1.0)
    first = select_leaf(tree, "puct", 1.0, virtual)
    virtual.add_path(tree, first)
    second = select_leaf(tree, "puct", 1.0, virtual)
    assert (first, second) == (1, 2)
    # without virtual loss the same leaf would be chosen twice
    assert select_leaf(tree, "puct", 1.0) == select_leaf(tree, "puct", 1.0) == 1
    # the tree itself carries no virtual state
    assert tree.nodes[1].visits == 1 and tree.root.visits == 2


def search_one(num_simulations: int, **overrides) -> tuple[Tree, LetterPolicy]:
    config = SearchConfig(num_simulations=num_simulations, num_children=2, leaves_per_wave=1,
                          selection="puct", c_explore=1.0, self_eval_weight=0.5, **overrides)
    tree = Tree.new(problem_id="p", question="q")
    policy = LetterPolicy(answer_depth=2)
    run_search([tree], policy, config)
    return tree, policy


def test_three_simulations_hand_computed():
    tree, _ = search_one(3)
    root, a, b, aa, ab = tree.nodes
    assert [n.text for n in tree.nodes[1:]] == ["a", "b", "a The answer is 2.", "b The answer is 2."]
    # priors: length-normalised, normalised over siblings
    assert [a.prior, b.prior] == pytest.approx(expected_prior([-1.0, -3.0], [2, 3]))
    # values: lambda * (2 * self_eval - 1) + (1 - lambda) * rollout
    assert a.initial_value == pytest.approx(0.5 * 0.8 + 0.5 * 1.0)
    assert b.initial_value == pytest.approx(0.5 * -0.2 + 0.5 * -1.0)
    # terminals: verifier +-1, no self-eval
    assert (aa.terminal, aa.terminal_reason, aa.correct, aa.initial_value) == (True, "answer", True, 1.0)
    assert (ab.correct, ab.initial_value, ab.self_eval) == (False, -1.0, None)
    # sim 1: root <- mean(0.9, -0.6) = 0.15; sim 2: a <- mean(1, -1) = 0; sim 3: aa re-selected, +1
    assert (aa.visits, aa.q) == (2, 1.0)
    assert a.visits == 3 and a.value_sum == pytest.approx(0.9 + 0.0 + 1.0)
    assert root.visits == 3 and root.value_sum == pytest.approx(0.15 + 0.0 + 1.0)
    assert (b.visits, ab.visits) == (1, 1)
    assert [n.wave for n in tree.nodes] == [-1, 0, 0, 1, 1]


def test_root_visits_equal_simulations_and_json_round_trip():
    tree, _ = search_one(12, backup="visit_weighted", gamma=0.95)
    assert tree.root.visits == 12
    text = tree.to_json()
    again = Tree.from_json(text)
    assert again == tree
    assert again.to_json() == text


def test_one_engine_call_per_wave_for_all_trees():
    config = SearchConfig(num_simulations=4, num_children=2, leaves_per_wave=2)
    trees = [Tree.new(problem_id=f"p{i}", question="q") for i in range(3)]
    policy = LetterPolicy(answer_depth=3)
    progress = run_search(trees, policy, config)
    assert len(policy.expand_calls) <= progress.waves  # a wave of terminal re-selections calls nothing
    # wave 0 expands each root; wave 1 expands two leaves per tree (virtual loss keeps them apart)
    assert [sorted((r.tree_index, r.node_id) for r in call) for call in policy.expand_calls[:2]] == [
        [(0, 0), (1, 0), (2, 0)],
        [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)],
    ]
    assert all(t.root.visits == 4 for t in trees)


def test_terminal_leaf_is_backed_up_without_expansion():
    config = SearchConfig(num_simulations=5, num_children=2, leaves_per_wave=1)
    tree = Tree.new(problem_id="p", question="q")
    policy = LetterPolicy(answer_depth=1)
    run_search([tree], policy, config)
    assert len(tree) == 3  # only the root was ever expanded
    assert len(policy.expand_calls) == 1
    assert tree.root.visits == 5
    assert sum(c.visits for c in tree.children(0)) == 2 + 4  # two creations + four re-selections


def test_max_depth_and_max_tokens_make_terminals():
    config = SearchConfig(num_simulations=3, num_children=2, leaves_per_wave=1, max_depth=1)
    tree = Tree.new(problem_id="p", question="q")
    run_search([tree], LetterPolicy(answer_depth=9), config)
    assert {n.terminal_reason for n in tree.nodes[1:]} == {"max_depth"}
    config = SearchConfig(num_simulations=3, num_children=2, leaves_per_wave=1, max_tokens=5)
    tree = Tree.new(problem_id="p", question="q")
    run_search([tree], LetterPolicy(answer_depth=9), config)
    # "a" has 2 tokens, "b" 3: depth-2 children reach 5 tokens on a path through a when the child has >= 3
    reasons = {(n.depth, n.text): n.terminal_reason for n in tree.nodes[1:]}
    assert reasons[(1, "a")] == "" and reasons[(1, "b")] == ""
    assert reasons[(2, "b")] == "max_tokens"


def test_identical_siblings_are_merged():
    config = SearchConfig(num_simulations=1, num_children=3, leaves_per_wave=1)
    tree = Tree.new(problem_id="p", question="q")
    run_search([tree], LetterPolicy(answer_depth=5, duplicate_first=True), config)
    children = tree.children(0)
    assert [(c.text, c.num_samples) for c in children] == [("a", 2), ("b", 1)]
    raw_a = 2 * math.exp(-1.0 / 2 ** 1.25)
    raw_b = math.exp(-6.0 / 4 ** 1.25)
    assert children[0].prior == pytest.approx(raw_a / (raw_a + raw_b))


def test_tree_json_rejects_bad_input():
    tree, _ = search_one(2)
    data = tree.to_dict()
    with pytest.raises(ValueError, match="schema_version"):
        Tree.from_dict({**data, "schema_version": 99})
    broken = tree.to_dict()
    broken["nodes"][1]["parent"] = 2
    with pytest.raises(ValueError, match="child 1 whose parent differs"):
        Tree.from_dict(broken)
    with pytest.raises(ValueError, match="invalid JSON"):
        Tree.from_json("{not json")


def test_search_core_imports_no_torch():
    import subprocess

    code = "import sys, mcts_po.search.mcts, mcts_po.search.tree; print('torch' in sys.modules, 'vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
