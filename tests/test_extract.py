"""Exact tests of preference-data extraction (`mcts_po.extract`) on hand-built trees. No model.

Five small trees are built by hand with explicit Q, visits and verdicts; every format and
every selection rule is checked against the rows worked out by hand (full rows for one
case per format, key columns elsewhere). Also: saving and reloading, the CLI, errors.

    PYTHONPATH=. .venv/bin/pytest tests/test_extract.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mcts_po.cli import main
from mcts_po.extract import FORMATS, ExtractConfig, extract_rows, get_format, read_trees
from mcts_po.extract.selection import near_duplicate, normalise_text
from mcts_po.extract.stats import extraction_stats, format_stats, margin_histogram
from mcts_po.io_utils import InputError, UserError
from mcts_po.search.tree import Tree

REPO = Path(__file__).resolve().parents[1]
CHAT_PROMPT = "<|im_start|>user\nWhat is 2 + 3 * 4?<|im_end|>\n<|im_start|>assistant\n"


def rules(**options) -> ExtractConfig:
    """The selection rules with `same_ending` off (it is on by default): the hand-built trees below
    check each pairing rule on its own; `same_ending` has its own tests."""
    return ExtractConfig(**{"same_ending": False, **options})


def terminal(tree: Tree, parent: int, text: str, q: float, visits: int, correct: bool | None,
             answer: str | None = None, reason: str = "answer"):
    return tree.add_child(parent, text=text, q=q, visits=visits, value_sum=q * visits, terminal=True,
                          terminal_reason=reason, correct=correct, answer=answer)


def step(tree: Tree, parent: int, text: str, q: float, visits: int, kind: str = "step"):
    return tree.add_child(parent, text=text, q=q, visits=visits, value_sum=q * visits, kind=kind)


def tree_arithmetic() -> Tree:
    """T1 (rendered chat prompt):
    0 root q=.25
    |-1 "First, 3 * 4 = 12."   q=.5  v6
    |  |-4 "...2 + 12 = 14..." q=1  v3 correct
    |  |-5 "...2 + 12 = 15..." q=-1 v1 wrong
    |  `-6 "Adding 2 gives 14" q=1  v2 correct
    |-2 "First, 2 + 3 = 5."    q=-.6 v4
    |  |-7 "Then 5 * 4 = 20"   q=-1 v2 wrong
    |  `-8 "Multiply by 4."    q=-.2 v1
    |     `-9 "5 * 4 = 20"     q=-1 v1 wrong   (single child)
    `-3 "Start with 3*4=12."   q=.1  v1 (unexpanded)
    """
    t = Tree.new(problem_id="p1", tree_id="t1", question="What is 2 + 3 * 4?", gold_answer="14",
                 task="demo", prompt=CHAT_PROMPT)
    t.root.q, t.root.visits = 0.25, 12
    step(t, 0, "First, 3 * 4 = 12.", 0.5, 6)
    step(t, 0, "First, 2 + 3 = 5.", -0.6, 4)
    step(t, 0, "Start with 3*4=12.", 0.1, 1)
    terminal(t, 1, "Now we add them: 2 + 12 = 14. The answer is 14.", 1.0, 3, True, "14")
    terminal(t, 1, "Now we add them: 2 + 12 = 15. The answer is 15.", -1.0, 1, False, "15")
    terminal(t, 1, "Adding 2 gives 14. The answer is 14.", 1.0, 2, True, "14")
    terminal(t, 2, "Then 5 * 4 = 20. The answer is 20.", -1.0, 2, False, "20")
    step(t, 2, "Multiply by 4.", -0.2, 1)
    terminal(t, 8, "5 * 4 = 20. The answer is 20.", -1.0, 1, False, "20")
    return t


def tree_near_duplicates() -> Tree:
    """T2 (no rendered prompt): near-duplicate root steps, a Q tie, a single child.
    0 root q=0
    |-1 "Subtract first: 10 - 4 = 6."  q=.5 v3
    |  |-3 "Then 6 + 1 = 7..."         q=1 v2 correct
    |  `-4 "Adding 1 gives 7..."       q=1 v1 correct   (tie with 3)
    `-2 "Subtract first, 10 - 4 = 6."  q=-.5 v2
       `-5 "6 + 1 = 8..."              q=-1 v1 wrong
    """
    t = Tree.new(problem_id="p2", tree_id="t2", question="What is 10 - 4 + 1?", gold_answer="7", task="demo")
    step(t, 0, "Subtract first: 10 - 4 = 6.", 0.5, 3)
    step(t, 0, "Subtract first, 10 - 4 = 6.", -0.5, 2)
    terminal(t, 1, "Then 6 + 1 = 7. The answer is 7.", 1.0, 2, True, "7")
    terminal(t, 1, "Adding 1 gives 7. The answer is 7.", 1.0, 1, True, "7")
    terminal(t, 2, "6 + 1 = 8. The answer is 8.", -1.0, 1, False, "8")
    return t


def tree_plan() -> Tree:
    """T3, a plan tree: plan steps at depth 1, solution steps below.
    0 root
    |-1 plan "compute the total cost, then subtract"  q=.6 v4
    |  |-3 "Total cost: 3 * 5 = 15."  q=.8 v2
    |  |  `-5 "20 - 15 = 5 ..."       q=1 correct
    |  `-4 "Total cost: 3 + 5 = 8."   q=-.4 v2
    |     `-6 "20 - 8 = 12 ..."       q=-1 wrong
    `-2 plan "guess the answer"       q=-.7 v3
       `-7 "The answer is 10."        q=-1 wrong
    """
    t = Tree.new(problem_id="p3", tree_id="t3", question="Pens cost 3 dollars each. Ann buys 5 and pays with 20 dollars. "
                 "What change does she get?", gold_answer="5", task="demo", tree_kind="plan")
    step(t, 0, "Plan: compute the total cost, then subtract it from 20.", 0.6, 4, kind="plan")
    step(t, 0, "Plan: guess the answer.", -0.7, 3, kind="plan")
    step(t, 1, "Total cost: 3 * 5 = 15.", 0.8, 2)
    step(t, 1, "Total cost: 3 + 5 = 8.", -0.4, 2)
    terminal(t, 3, "20 - 15 = 5. The answer is 5.", 1.0, 1, True, "5")
    terminal(t, 4, "20 - 8 = 12. The answer is 12.", -1.0, 1, False, "12")
    terminal(t, 2, "The answer is 10.", -1.0, 1, False, "10")
    return t


def tree_duplicate_answers() -> Tree:
    """T4: two root steps equal after normalisation (both correct) and a wrong one."""
    t = Tree.new(problem_id="p4", tree_id="t4", question="What is 1 + 1?", gold_answer="2", task="demo")
    terminal(t, 0, "1 + 1 = 2. The answer is 2.", 1.0, 1, True, "2")
    terminal(t, 0, "1+1 = 2.  The answer is 2.", 1.0, 1, True, "2")
    terminal(t, 0, "1 + 1 = 3. The answer is 3.", -1.0, 1, False, "3")
    return t


def tree_all_wrong() -> Tree:
    """T5: no correct terminal; node 1 is a truncated terminal (max_depth, no answer)."""
    t = Tree.new(problem_id="p5", tree_id="t5", question="What is 9 - 3?", gold_answer="6", task="demo")
    t.root.q, t.root.visits = -0.5, 3
    terminal(t, 0, "9 - 3 = 5 and then", -1.0, 1, False, None, reason="max_depth")
    step(t, 0, "Take away 3 from 9.", 0.2, 1)
    return t


def all_trees() -> list[Tree]:
    return [tree_arithmetic(), tree_near_duplicates(), tree_plan(), tree_duplicate_answers(), tree_all_wrong()]


def keys(rows: list[dict]) -> list[tuple]:
    return [(r["tree_id"], r["parent_id"], r["chosen_id"], r["rejected_id"]) for r in rows]


def pairs(trees, format="step-dpo", **options) -> list[tuple]:
    return keys(extract_rows(trees, format, rules(**options)))


# ---------------------------------------------------------------------------- step-dpo
def test_step_dpo_full_rows_of_one_tree():
    rows = extract_rows([tree_arithmetic()], "step-dpo", rules())
    common = {"question": "What is 2 + 3 * 4?", "answer": "14", "dataset": "demo", "tree_id": "t1", "problem_id": "p1",
              "level": "step"}
    assert rows == [
        {"prompt": CHAT_PROMPT, "chosen": "First, 3 * 4 = 12.", "rejected": "First, 2 + 3 = 5.",
         **{k: common[k] for k in ("question",)},
         "initial_reason_steps": "",
         "full_chosen": "First, 3 * 4 = 12.\nNow we add them: 2 + 12 = 14. The answer is 14.",
         "full_rejected": "First, 2 + 3 = 5.\nThen 5 * 4 = 20. The answer is 20.",
         "answer": "14", "dataset": "demo", "tree_id": "t1", "problem_id": "p1",
         "parent_id": 0, "chosen_id": 1, "rejected_id": 2, "q_chosen": 0.5, "q_rejected": -0.6,
         "visits_chosen": 6, "visits_rejected": 4, "depth": 1, "level": "step",
         "chosen_is_terminal": False, "rejected_is_terminal": False,
         "chosen_ends_solution": False, "rejected_ends_solution": False, "step_delimiter": "\n"},
        {"prompt": CHAT_PROMPT + "First, 3 * 4 = 12.\n",
         "chosen": "Now we add them: 2 + 12 = 14. The answer is 14.",
         "rejected": "Now we add them: 2 + 12 = 15. The answer is 15.",
         "question": "What is 2 + 3 * 4?", "initial_reason_steps": "First, 3 * 4 = 12.\n",
         "full_chosen": "Now we add them: 2 + 12 = 14. The answer is 14.",
         "full_rejected": "Now we add them: 2 + 12 = 15. The answer is 15.",
         "answer": "14", "dataset": "demo", "tree_id": "t1", "problem_id": "p1",
         "parent_id": 1, "chosen_id": 4, "rejected_id": 5, "q_chosen": 1.0, "q_rejected": -1.0,
         "visits_chosen": 3, "visits_rejected": 1, "depth": 2, "level": "step",
         "chosen_is_terminal": True, "rejected_is_terminal": True,
         "chosen_ends_solution": True, "rejected_ends_solution": True, "step_delimiter": "\n"},
        {"prompt": CHAT_PROMPT + "First, 2 + 3 = 5.\n", "chosen": "Multiply by 4.",
         "rejected": "Then 5 * 4 = 20. The answer is 20.",
         "question": "What is 2 + 3 * 4?", "initial_reason_steps": "First, 2 + 3 = 5.\n",
         "full_chosen": "Multiply by 4.\n5 * 4 = 20. The answer is 20.",
         "full_rejected": "Then 5 * 4 = 20. The answer is 20.",
         "answer": "14", "dataset": "demo", "tree_id": "t1", "problem_id": "p1",
         "parent_id": 2, "chosen_id": 8, "rejected_id": 7, "q_chosen": -0.2, "q_rejected": -1.0,
         "visits_chosen": 1, "visits_rejected": 2, "depth": 2, "level": "step",
         "chosen_is_terminal": False, "rejected_is_terminal": True,
         "chosen_ends_solution": False, "rejected_ends_solution": True, "step_delimiter": "\n"},
    ]
    assert list(rows[0]) == list(FORMATS["step-dpo"].columns)


def test_step_dpo_prompt_falls_back_to_question_and_truncated_terminal_does_not_end_solution():
    rows = extract_rows([tree_all_wrong()], "step-dpo")
    assert len(rows) == 1
    row = rows[0]
    assert (row["prompt"], row["chosen"], row["rejected"]) == ("What is 9 - 3?\n", "Take away 3 from 9.", "9 - 3 = 5 and then")
    assert (row["rejected_is_terminal"], row["rejected_ends_solution"]) == (True, False)


def test_step_dpo_every_tree_default_rules():
    # T2: root pair near-duplicate, parent 1 a Q tie, parent 2 a single child -> nothing.
    # T4: root steps 1 and 2 tie at q=1 with equal visits -> the lower id is chosen.
    assert pairs(all_trees()) == [
        ("t1", 0, 1, 2), ("t1", 1, 4, 5), ("t1", 2, 8, 7),
        ("t3", 0, 1, 2), ("t3", 1, 3, 4),
        ("t4", 0, 1, 3),
        ("t5", 0, 2, 1),
    ]


def test_equal_q_gives_no_pair_and_single_child_gives_no_pair():
    t = tree_near_duplicates()
    assert pairs([t], dedup_threshold=1.0) == [("t2", 0, 1, 2)]  # parent 1 tied, parent 2 single child
    t.nodes[4].q = 0.999
    assert pairs([t], dedup_threshold=1.0) == [("t2", 0, 1, 2), ("t2", 1, 3, 4)]


def test_min_visits_filters_steps_before_choosing():
    t1 = tree_arithmetic()
    # min_visits=2 leaves {4 (q 1, v3), 6 (q 1, v2)} under parent 1: a tie, no pair; under
    # parent 2 node 8 (v1) goes, leaving one child; the root keeps 1 (v6) vs 2 (v4).
    assert pairs([t1], min_visits=2) == [("t1", 0, 1, 2)]
    assert pairs([t1], min_visits=5) == []
    # min_visits=0 admits everything; visits only break Q ties
    assert pairs([t1], min_visits=0) == pairs([t1])


def test_min_q_margin_is_inclusive_and_zero_means_strict():
    t1 = tree_arithmetic()
    # margins: root 0.5 - (-0.6) = 1.1, parent 1: 2.0, parent 2: 0.8
    assert pairs([t1], min_q_margin=0.8) == [("t1", 0, 1, 2), ("t1", 1, 4, 5), ("t1", 2, 8, 7)]
    assert pairs([t1], min_q_margin=0.81) == [("t1", 0, 1, 2), ("t1", 1, 4, 5)]
    assert pairs([t1], min_q_margin=1.1) == [("t1", 0, 1, 2), ("t1", 1, 4, 5)]  # 0.5 - -0.6 in floats
    assert pairs([t1], min_q_margin=2.0) == [("t1", 1, 4, 5)]


def test_scope_correct_paths_keeps_only_parents_above_a_correct_answer():
    trees = all_trees()
    assert pairs(trees, scope="correct_paths") == [
        ("t1", 0, 1, 2), ("t1", 1, 4, 5),  # parent 2's subtree has no correct answer
        ("t3", 0, 1, 2), ("t3", 1, 3, 4),
        ("t4", 0, 1, 3),  # t5 has no correct answer at all
    ]
    assert pairs(trees, scope="anywhere") == pairs(trees)


def test_max_pairs_per_tree_keeps_the_largest_margins_in_tree_order():
    t1 = tree_arithmetic()
    assert pairs([t1], max_pairs_per_tree=2) == [("t1", 0, 1, 2), ("t1", 1, 4, 5)]
    assert pairs([t1], max_pairs_per_tree=1) == [("t1", 1, 4, 5)]
    assert pairs([t1], max_pairs_per_tree=0) == pairs([t1])
    counters: dict = {}
    extract_rows([t1], "step-dpo", rules(max_pairs_per_tree=1), counters)
    assert counters == {"pairs_over_max_pairs_per_tree": 2}


def test_dedup_drops_near_identical_steps_but_not_different_numbers():
    t2 = tree_near_duplicates()
    # "Subtract first: 10 - 4 = 6." vs "Subtract first, 10 - 4 = 6.": ratio 0.9545 after normalising
    assert pairs([t2]) == []
    assert pairs([t2], dedup_threshold=0.95) == []
    assert pairs([t2], dedup_threshold=0.96) == [("t2", 0, 1, 2)]
    # T1's terminal pair differs by one digit: ratio 0.95 but never a duplicate
    assert ("t1", 1, 4, 5) in pairs([tree_arithmetic()], dedup_threshold=0.5)
    counters: dict = {}
    extract_rows([t2], "step-dpo", rules(), counters)
    assert counters == {"pairs_near_duplicate": 1, "pairs_tied": 1}


def test_same_ending_drops_pairs_where_only_one_step_finishes_the_solution():
    t1 = tree_arithmetic()
    # parent 2: "Multiply by 4." (unfinished) preferred to the wrong final "Then 5 * 4 = 20": dropped;
    # parent 1's pair (two final answers) and the root's (two unfinished steps) stay
    assert pairs([t1], same_ending=True) == [("t1", 0, 1, 2), ("t1", 1, 4, 5)]
    counters: dict = {}
    extract_rows([t1], "step-dpo", ExtractConfig(same_ending=True), counters)
    assert counters == {"pairs_ending_differently": 1}
    assert [r[:3] for r in apo([t1], apo_rule="margin", same_ending=True)] == [
        (0, 1, 2), (0, 1, 3), (0, 3, 2), (1, 4, 5), (1, 6, 5)]
    # a terminal cut off by max_depth does not finish the solution: it pairs with an unfinished step
    t = Tree.new(problem_id="p9", tree_id="t9", question="q", gold_answer="1", task="demo", prompt=CHAT_PROMPT)
    step(t, 0, "Keep going.", 0.5, 2)
    terminal(t, 0, "Still going", -0.5, 1, None, reason="max_depth")
    terminal(t, 0, "The answer is 2.", -1.0, 1, False, "2")
    assert pairs([t], same_ending=True) == [("t9", 0, 1, 2)]
    assert pairs([t]) == [("t9", 0, 1, 3)]
    with pytest.raises(ValueError, match="same_ending"):
        ExtractConfig(same_ending="yes")


def test_near_duplicate_and_normalisation():
    assert normalise_text("  Then 2 +  12 =14 .\n") == "then2+12=14."
    assert near_duplicate("3 + 4 = 7", "3+4=7", 1.0)
    assert near_duplicate("So 3 + 4 = 7.", "so 3+4 = 7 .", 1.0)
    assert not near_duplicate("The sum is 14.", "The sum is 15.", 0.5)
    assert not near_duplicate("Add the two numbers.", "Multiply both numbers.", 0.9)


def test_level_filter_on_a_plan_tree():
    t3 = tree_plan()
    assert pairs([t3], level="plan") == [("t3", 0, 1, 2)]
    assert pairs([t3], level="step") == [("t3", 1, 3, 4)]
    assert pairs([t3], level="all") == [("t3", 0, 1, 2), ("t3", 1, 3, 4)]
    levels = [r["level"] for r in extract_rows([t3], "step-dpo")]
    assert levels == ["plan", "step"]
    # the step pair's prompt holds the plan step as its prefix
    assert extract_rows([t3], "step-dpo", rules(level="step"))[0]["initial_reason_steps"] == \
        "Plan: compute the total cost, then subtract it from 20.\n"


# ---------------------------------------------------------------------------- step-apo
def apo(trees, **options) -> list[tuple]:
    rows = extract_rows(trees, "step-apo", rules(**options))
    return [(r["parent_id"], r["chosen_id"], r["rejected_id"], r["q_parent"], r["q_baseline"]) for r in rows]


def test_step_apo_cpl_parent_baseline():
    # root q=.25: above {1 (.5)}, below {2 (-.6), 3 (.1)}; parent 1 q=.5: above {4, 6}, below {5};
    # parent 2 q=-.6: above {8 (-.2)}, below {7 (-1)}
    assert apo([tree_arithmetic()]) == [
        (0, 1, 2, 0.25, 0.25), (0, 1, 3, 0.25, 0.25),
        (1, 4, 5, 0.5, 0.5), (1, 6, 5, 0.5, 0.5),
        (2, 8, 7, -0.6, -0.6),
    ]


def test_step_apo_cpl_zero_baseline():
    # root: above 0 {1, 3}, below {2}; parent 2: no sibling above 0 -> no pair
    assert apo([tree_arithmetic()], apo_baseline="zero") == [
        (0, 1, 2, 0.25, 0.0), (0, 3, 2, 0.25, 0.0),
        (1, 4, 5, 0.5, 0.0), (1, 6, 5, 0.5, 0.0),
    ]


def test_step_apo_margin_rule():
    t1 = tree_arithmetic()
    # all sibling pairs with a gap > 0: root (1,2) 1.1, (1,3) .4, (3,2) .7; parent 1 (4,5), (6,5)
    # (4,6 tie dropped); parent 2 (8,7) .8
    assert apo([t1], apo_rule="margin") == [
        (0, 1, 2, 0.25, 0.25), (0, 1, 3, 0.25, 0.25), (0, 3, 2, 0.25, 0.25),
        (1, 4, 5, 0.5, 0.5), (1, 6, 5, 0.5, 0.5),
        (2, 8, 7, -0.6, -0.6),
    ]
    assert [r[:3] for r in apo([t1], apo_rule="margin", min_q_margin=0.5)] == [
        (0, 1, 2), (0, 3, 2), (1, 4, 5), (1, 6, 5), (2, 8, 7)]
    assert [r[:3] for r in apo([t1], apo_rule="margin", min_q_margin=1.0)] == [(0, 1, 2), (1, 4, 5), (1, 6, 5)]


def test_step_apo_shares_the_rules_and_the_pair_columns():
    t1 = tree_arithmetic()
    assert [r[:3] for r in apo([t1], scope="correct_paths")] == [(0, 1, 2), (0, 1, 3), (1, 4, 5), (1, 6, 5)]
    assert [r[:3] for r in apo([t1], min_visits=2)] == [(0, 1, 2)]
    assert [r[:3] for r in apo([t1], max_pairs_per_tree=2)] == [(1, 4, 5), (1, 6, 5)]
    assert [r[:3] for r in apo([tree_plan()], level="plan")] == [(0, 1, 2)]
    row = extract_rows([t1], "step-apo")[0]
    dpo_row = extract_rows([t1], "step-dpo")[0]
    assert {k: row[k] for k in dpo_row} == dpo_row
    assert list(row) == list(FORMATS["step-apo"].columns)


# ---------------------------------------------------------------------------- tpo
def test_tpo_full_row():
    rows = extract_rows([tree_arithmetic()], "tpo")
    a, b, c = "First, 3 * 4 = 12.", "First, 2 + 3 = 5.", "Multiply by 4."
    s4, s5, s6 = ("Now we add them: 2 + 12 = 14. The answer is 14.", "Now we add them: 2 + 12 = 15. The answer is 15.",
                  "Adding 2 gives 14. The answer is 14.")
    s7, s9 = "Then 5 * 4 = 20. The answer is 20.", "5 * 4 = 20. The answer is 20."
    # ranked by value, then mean step Q: 4 (.75), 6 (.75, higher id), 5 (-.25), 9 (-.6), 7 (-.8)
    assert rows == [{
        "prompt": CHAT_PROMPT, "question": "What is 2 + 3 * 4?", "answer": "14", "dataset": "demo",
        "tree_id": "t1", "problem_id": "p1",
        "responses": [f"{a}\n{s4}", f"{a}\n{s6}", f"{a}\n{s5}", f"{b}\n{c}\n{s9}", f"{b}\n{s7}"],
        "values": [1.0, 1.0, -1.0, -1.0, -1.0],
        "ends_solution": [True] * 5,
        "terminal_ids": [4, 6, 5, 9, 7],
        "steps": [[a, s4], [a, s6], [a, s5], [b, c, s9], [b, s7]],
        "step_values": [[0.5, 1.0], [0.5, 1.0], [0.5, -1.0], [-0.6, -0.2, -1.0], [-0.6, -1.0]],
        "step_node_ids": [[1, 4], [1, 6], [1, 5], [2, 8, 9], [2, 7]],
        "step_levels": [["step"] * 2, ["step"] * 2, ["step"] * 2, ["step"] * 3, ["step"] * 2],
        "num_trajectories": 5, "step_delimiter": "\n",
    }]


def test_tpo_list_size_prefers_distinct_values():
    t1 = tree_arithmetic()

    def ids(size):
        return extract_rows([t1], "tpo", rules(max_list_size=size))[0]["terminal_ids"]

    assert ids(2) == [4, 5]  # one per value first, not the two best (+1, +1)
    assert ids(3) == [4, 6, 5]
    assert ids(4) == [4, 6, 5, 9]
    assert ids(9) == [4, 6, 5, 9, 7]


def test_tpo_skips_duplicates_and_trees_without_distinct_values():
    rows = extract_rows(all_trees(), "tpo")
    assert [(r["tree_id"], r["terminal_ids"], r["values"]) for r in rows] == [
        ("t1", [4, 6, 5, 9, 7], [1.0, 1.0, -1.0, -1.0, -1.0]),
        ("t2", [3, 4, 5], [1.0, 1.0, -1.0]),
        ("t3", [5, 6, 7], [1.0, -1.0, -1.0]),
        ("t4", [1, 3], [1.0, -1.0]),  # 2 is 1's text after normalisation
        # t5: a single trajectory -> no list
    ]
    assert rows[2]["step_levels"] == [["plan", "step", "step"], ["plan", "step", "step"], ["plan", "step"]]


def test_tpo_value_without_verdict_is_the_terminal_q():
    t = Tree.new(problem_id="p", question="q?")
    terminal(t, 0, "A. The answer is 1.", 0.4, 2, None, "1")
    terminal(t, 0, "B. The answer is 2.", -0.3, 2, None, "2")
    row = extract_rows([t], "tpo")[0]
    assert (row["terminal_ids"], row["values"]) == ([1, 2], [0.4, -0.3])
    assert extract_rows([t], "dpo") == [] and extract_rows([t], "sft") == []


# ---------------------------------------------------------------------------- dpo
def test_dpo_full_row_and_pair_order():
    rows = extract_rows([tree_arithmetic()], "dpo")
    a = "First, 3 * 4 = 12."
    # correct ranked [4, 6]; wrong ranked [5, 9, 7]; anti-diagonals (0,0) (0,1) (1,0) (0,2) (1,1) (1,2)
    assert [(r["chosen_id"], r["rejected_id"]) for r in rows] == [(4, 5), (4, 9), (6, 5), (4, 7), (6, 9), (6, 7)]
    assert rows[0] == {
        "prompt": CHAT_PROMPT, "chosen": f"{a}\nNow we add them: 2 + 12 = 14. The answer is 14.",
        "rejected": f"{a}\nNow we add them: 2 + 12 = 15. The answer is 15.",
        "question": "What is 2 + 3 * 4?", "answer": "14", "dataset": "demo", "tree_id": "t1", "problem_id": "p1",
        "chosen_id": 4, "rejected_id": 5, "q_chosen": 1.0, "q_rejected": -1.0, "value_chosen": 1.0,
        "value_rejected": -1.0, "num_steps_chosen": 2, "num_steps_rejected": 2, "chosen_answer": "14",
        "rejected_answer": "15", "chosen_ends_solution": True, "rejected_ends_solution": True, "step_delimiter": "\n",
    }


def test_dpo_rules():
    trees = all_trees()
    assert [(r["tree_id"], r["chosen_id"], r["rejected_id"]) for r in extract_rows(trees, "dpo", rules(max_pairs_per_tree=2))] == [
        ("t1", 4, 5), ("t1", 4, 9), ("t2", 3, 5), ("t2", 4, 5), ("t3", 5, 6), ("t3", 5, 7), ("t4", 1, 3)]
    # pairs are compared from the step where they part: a shared prefix does not make them duplicates
    t = Tree.new(problem_id="p", tree_id="t", question="Q?")
    shared = step(t, 0, "A long shared first step with many words in it, 3 + 4 = 7.", 0.0, 2)
    terminal(t, shared.node_id, "So it is 7. The answer is 7.", 1.0, 1, True, "7")
    terminal(t, shared.node_id, "so it is 7 . The answer is 7.", -1.0, 1, False, "7")
    terminal(t, shared.node_id, "Hence we get 9. The answer is 9.", -1.0, 1, False, "9")
    assert [(r["chosen_id"], r["rejected_id"]) for r in extract_rows([t], "dpo")] == [(2, 4)]


# ---------------------------------------------------------------------------- sft
def test_sft_rows_and_dedup_across_trees():
    rows = extract_rows(all_trees() + [tree_arithmetic()], "sft")  # t1 read twice (two runs)
    assert [(r["tree_id"], r["node_id"]) for r in rows] == [("t1", 4), ("t1", 6), ("t2", 3), ("t2", 4), ("t3", 5), ("t4", 1)]
    assert rows[0] == {
        "prompt": CHAT_PROMPT, "completion": "First, 3 * 4 = 12.\nNow we add them: 2 + 12 = 14. The answer is 14.",
        "messages": [{"role": "user", "content": "What is 2 + 3 * 4?"},
                     {"role": "assistant", "content": "First, 3 * 4 = 12.\nNow we add them: 2 + 12 = 14. The answer is 14."}],
        "question": "What is 2 + 3 * 4?", "answer": "14", "dataset": "demo", "tree_id": "t1", "problem_id": "p1",
        "node_id": 4, "num_steps": 2, "q": 1.0, "mean_step_q": 0.75, "predicted_answer": "14", "ends_solution": True,
    }
    counters: dict = {}
    extract_rows(all_trees() + [tree_arithmetic()], "sft", None, counters)
    assert counters == {"traces_duplicate": 3}


# ---------------------------------------------------------------------------- registry and config
def test_unknown_format_lists_valid_names():
    with pytest.raises(UserError, match="unknown extraction format 'tpo-lists'; valid: step-dpo, step-dpo-repo, step-apo, tpo, dpo, sft"):
        extract_rows([], "tpo-lists")
    assert get_format("tpo").description.startswith("Tree Preference Optimization ranked lists (Liao et al. 2024)")


@pytest.mark.parametrize("options, message", [
    ({"scope": "everywhere"}, "ExtractConfig.scope = 'everywhere' is not one of: anywhere, correct_paths"),
    ({"level": "plans"}, "ExtractConfig.level = 'plans' is not one of: all, step, plan"),
    ({"apo_rule": "sign"}, "ExtractConfig.apo_rule = 'sign' is not one of: cpl, margin"),
    ({"apo_baseline": "mean"}, "ExtractConfig.apo_baseline = 'mean' is not one of: parent, zero"),
    ({"min_q_margin": -0.1}, "ExtractConfig.min_q_margin must be in [0, 2]"),
    ({"dedup_threshold": 0.0}, "ExtractConfig.dedup_threshold must be in (0, 1]"),
    ({"min_visits": -1}, "ExtractConfig.min_visits must be >= 0"),
    ({"max_pairs_per_tree": 1.5}, "ExtractConfig.max_pairs_per_tree must be an integer"),
    ({"max_list_size": 1}, "ExtractConfig.max_list_size must be >= 2"),
])
def test_config_validation_names_field_and_choices(options, message):
    with pytest.raises(ValueError) as info:
        rules(**options)
    assert message in str(info.value)


# ---------------------------------------------------------------------------- stats
def test_stats_report():
    trees = all_trees()
    rows = {name: extract_rows(trees, name, rules()) for name in ("step-dpo", "tpo")}
    stats = extraction_stats(trees, rows, {"step-dpo": {"pairs_tied": 1}})
    assert stats["trees_read"] == 5 and stats["problems_read"] == 5 and stats["trees_with_correct_answer"] == 4
    step = stats["formats"]["step-dpo"]
    assert (step["rows"], step["rows_per_100_trees"], step["problems_contributing"], step["share_of_problems"]) == (7, 140.0, 4, 0.8)
    assert step["pairs_per_depth"] == {"1": 4, "2": 3}
    # margins: t1 1.1, 2.0, 0.8; t3 1.3, 1.2; t4 2.0; t5 1.2
    assert [b["count"] for b in step["q_margin_histogram"]] == [0, 0, 0, 1, 3, 1, 0, 2]
    assert step["dropped"] == {"pairs_tied": 1}
    assert stats["formats"]["tpo"]["problems_contributing"] == 4 and "q_margin_histogram" not in stats["formats"]["tpo"]
    text = format_stats(stats)
    assert "step-dpo: 7 rows (140.0 per 100 trees); problems contributing: 4 (80.0%)" in text
    assert "pairs per depth: 1: 4, 2: 3" in text
    assert "[1.00, 1.25)       3  ########################################" in text
    assert "[1.75, 2.00]       2  ###########################" in text


def test_margin_histogram_edges():
    counts = [b["count"] for b in margin_histogram([0.0, 0.2499, 0.25, 1.9999, 2.0])]
    assert counts == [2, 1, 0, 0, 0, 0, 0, 2]


# ---------------------------------------------------------------------------- reading
def write_trees(path: Path, trees: list[Tree]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(t.to_json() + "\n" for t in trees), encoding="utf-8")
    return path


def test_read_trees_from_run_dirs_and_files(tmp_path):
    write_trees(tmp_path / "run_a" / "trees.jsonl", all_trees()[:2])
    file_b = write_trees(tmp_path / "b.jsonl", all_trees()[2:])
    trees = read_trees([tmp_path / "run_a", file_b])
    assert [t.tree_id for t in trees] == ["t1", "t2", "t3", "t4", "t5"]
    assert extract_rows(trees, "step-dpo") == extract_rows(all_trees(), "step-dpo")
    # one path alone (a str is not iterated character by character)
    assert [t.tree_id for t in read_trees(str(tmp_path / "run_a"))] == ["t1", "t2"]
    assert [t.tree_id for t in read_trees(file_b)] == ["t3", "t4", "t5"]


def test_bad_tree_lines_name_file_and_line(tmp_path):
    good = tree_arithmetic().to_json()
    bad_json = write_trees(tmp_path / "bad.jsonl", [])
    bad_json.write_text(good + "\n\n{not json\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.jsonl:3: invalid JSON"):
        read_trees([bad_json])
    broken = json.loads(good)
    broken["nodes"][2]["parent"] = 1  # node 2 listed under the root but says its parent is 1
    bad_tree = tmp_path / "run" / "trees.jsonl"
    bad_tree.parent.mkdir()
    bad_tree.write_text(good + "\n" + json.dumps(broken) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_trees([tmp_path / "run"])
    assert f"{bad_tree}:2: not a valid tree: " in str(info.value)
    with pytest.raises(InputError, match="not a run directory: it has no trees.jsonl"):
        read_trees([tmp_path])
    with pytest.raises(InputError, match="no such run directory or trees file"):
        read_trees([tmp_path / "missing"])


# ---------------------------------------------------------------------------- saving
@pytest.mark.parametrize("name", list(FORMATS))
def test_saved_dataset_reloads_with_identical_rows(tmp_path, name):
    import datasets

    from mcts_po.extract.saving import save_dataset

    rows = extract_rows(all_trees(), name)
    assert rows, "every format has rows from the hand-built trees"
    paths = save_dataset(rows, tmp_path / "out", name, FORMATS[name].columns)
    assert paths == {"dataset": str(tmp_path / "out" / name), "jsonl": str(tmp_path / "out" / f"{name}.jsonl"),
                     "parquet": str(tmp_path / "out" / f"{name}.parquet")}
    reloaded = datasets.load_from_disk(paths["dataset"])
    assert reloaded.to_list() == rows
    assert list(reloaded.features) == list(FORMATS[name].columns)
    jsonl_rows = [json.loads(line) for line in Path(paths["jsonl"]).read_text(encoding="utf-8").splitlines()]
    assert jsonl_rows == rows
    assert datasets.Dataset.from_parquet(paths["parquet"]).to_list() == rows
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([name, f"{name}.jsonl", f"{name}.parquet"])


def test_tpo_saved_with_list_features(tmp_path):
    import datasets

    from mcts_po.extract.saving import save_dataset

    paths = save_dataset(extract_rows(all_trees(), "tpo"), tmp_path, "tpo", FORMATS["tpo"].columns)
    features = datasets.load_from_disk(paths["dataset"]).features
    assert isinstance(features["values"], datasets.List) and features["values"].feature == datasets.Value("float64")
    assert isinstance(features["step_values"].feature, datasets.List)


def test_empty_rows_and_overwrite(tmp_path):
    import datasets

    from mcts_po.extract.saving import save_dataset

    columns = FORMATS["dpo"].columns
    save_dataset(extract_rows(all_trees(), "dpo"), tmp_path, "dpo", columns)
    save_dataset([], tmp_path, "dpo", columns)  # replaces the earlier one
    reloaded = datasets.load_from_disk(str(tmp_path / "dpo"))
    assert len(reloaded) == 0 and list(reloaded.features) == list(columns)
    assert (tmp_path / "dpo.jsonl").read_text() == ""
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp leftovers


def test_push_to_hub_without_token_is_a_clear_error(tmp_path, monkeypatch):
    from mcts_po.extract.saving import push_dataset

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no_token"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with pytest.raises(UserError, match="--push-to-hub needs a Hugging Face token"):
        push_dataset(extract_rows(all_trees(), "sft"), "me/steps", "sft", FORMATS["sft"].columns)


# ---------------------------------------------------------------------------- CLI
def test_cli_extracts_several_formats_and_writes_stats(tmp_path, capsys):
    import datasets

    write_trees(tmp_path / "run" / "trees.jsonl", all_trees()[:3])
    extra = write_trees(tmp_path / "more.jsonl", all_trees()[3:])
    out = tmp_path / "data"
    rc = main(["extract", "--trees", str(tmp_path / "run"), str(extra), "--format", "step-dpo", "--format", "tpo",
               "--out", str(out), "--scope", "correct_paths", "--max-pairs-per-tree", "1", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "trees read: 5  problems: 5" in printed
    assert "step-dpo: 3 rows (60.0 per 100 trees); problems contributing: 3 (60.0%)" in printed
    stats = json.loads((out / "stats.json").read_text())
    assert stats["config"]["scope"] == "correct_paths" and stats["config"]["max_pairs_per_tree"] == 1
    assert {k: v["rows"] for k, v in stats["formats"].items()} == {"step-dpo": 3, "tpo": 4}
    expected = extract_rows(all_trees(), "step-dpo", rules(scope="correct_paths", max_pairs_per_tree=1))
    assert [(r["tree_id"], r["parent_id"]) for r in expected] == [("t1", 1), ("t3", 0), ("t4", 0)]
    assert datasets.load_from_disk(str(out / "step-dpo")).to_list() == expected
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["stats.json", "step-dpo", "step-dpo.jsonl", "step-dpo.parquet", "tpo", "tpo.jsonl", "tpo.parquet"])


def test_cli_yaml_config_and_flag_override(tmp_path):
    trees = write_trees(tmp_path / "t.jsonl", [tree_arithmetic()])
    config = tmp_path / "extract.yaml"
    config.write_text("extract:\n  min_q_margin: 0.81\n  min_visits: 2\n", encoding="utf-8")
    assert main(["extract", "--trees", str(trees), "--format", "step-dpo", "--out", str(tmp_path / "o"),
                 "--config", str(config), "--min-visits", "1", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "o" / "step-dpo.jsonl").read_text().splitlines()]
    assert [(r["parent_id"], r["chosen_id"], r["rejected_id"]) for r in rows] == [(0, 1, 2), (1, 4, 5)]


def test_cli_errors_are_one_line(tmp_path, capsys):
    trees = write_trees(tmp_path / "t.jsonl", [tree_arithmetic()])
    assert main(["extract", "--trees", str(trees), "--format", "tpo-list", "--out", str(tmp_path / "o")]) == 2
    assert "mcts-po extract: error: unknown extraction format 'tpo-list'; valid: step-dpo, step-dpo-repo, step-apo, tpo, dpo, sft, value, ppm, all" \
        in capsys.readouterr().err
    assert main(["extract", "--trees", str(trees), "--format", "dpo", "--out", str(tmp_path / "o"), "--level", "plans"]) == 2
    assert "ExtractConfig.level = 'plans' is not one of: all, step, plan" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(tree_arithmetic().to_json() + "\n" + '{"tree_id": "x"}\n', encoding="utf-8")
    assert main(["extract", "--trees", str(bad), "--format", "sft", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert f"{bad}:2: not a valid tree: unsupported tree schema_version None" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_extraction_imports_no_torch():
    code = ("import sys; from mcts_po.extract import extract_rows, FORMATS; import mcts_po.commands.extract; "
            "import mcts_po.extract.pipeline; assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_whole_solutions_join_steps_with_the_trees_own_delimiter():
    """A search run with --step-delimiter '\\n\\n' gets '\\n\\n' between steps in every whole
    solution (sft completions, step-dpo full_chosen; dpo and tpo use the same join); the default is '\\n'."""
    newline_tree = tree_arithmetic()
    paragraph_tree = tree_arithmetic()
    paragraph_tree.sampling = {"step_delimiter": "\n\n"}
    expected_sft = "First, 3 * 4 = 12.{}Now we add them: 2 + 12 = 14. The answer is 14."
    for tree, delimiter in ((newline_tree, "\n"), (paragraph_tree, "\n\n")):
        sft = extract_rows([tree], "sft", rules())
        assert sft[0]["completion"] == expected_sft.format(delimiter)
        step_dpo = extract_rows([tree], "step-dpo", rules())
        root_pair = next(row for row in step_dpo if row["initial_reason_steps"] == "")
        assert root_pair["full_chosen"] == expected_sft.format(delimiter)


def test_rows_carry_the_trees_delimiter_and_training_appends_exactly_it():
    """Extraction copies the tree's step delimiter into every trainable row; the trainer appends
    that delimiter (and no other) to an intermediate step, so nothing is re-supplied at training."""
    from mcts_po.train.config import TrainConfig
    from mcts_po.train.examples import list_examples_from_rows, pair_examples_from_rows

    paragraph_tree = tree_arithmetic()
    paragraph_tree.sampling = {"step_delimiter": "\n\n"}
    for name in ("step-dpo", "step-apo", "dpo", "tpo"):
        rows = extract_rows([paragraph_tree], name, rules())
        assert rows and all(row["step_delimiter"] == "\n\n" for row in rows), name
    step_dpo = extract_rows([paragraph_tree], "step-dpo", rules())
    (root_pair,) = [row for row in step_dpo if row["initial_reason_steps"] == ""]
    (example,) = pair_examples_from_rows([root_pair], "step-dpo", TrainConfig())
    assert example.chosen == "First, 3 * 4 = 12.\n\n" and not example.chosen_eos
    (tpo,) = extract_rows([paragraph_tree], "tpo", rules())
    (listed,) = list_examples_from_rows([tpo], TrainConfig(max_list_size=8))
    assert all(text.endswith("\n\n") for segments in listed.segments for text in segments[:-1])
