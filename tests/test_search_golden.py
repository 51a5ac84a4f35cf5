"""Whole searches against golden values: fixed fake policies, exact trees, exact batching.

mctx-style: each scenario grows a few trees with a deterministic fake policy
(tests/fake_policy.py's `LetterPolicy`, tests/test_plan_trees.py's `PlanLetterPolicy`, and
variants that propose nothing or end with EOS), and the canonical JSON of everything the
search produced (every tree's `to_dict()`, the requests of every `expand`/`evaluate` call in
order, the progress reported after each wave, seconds left out) is hashed. `GOLDEN` holds
the sha256 per scenario, recorded from the search before `run_search` was split into named
wave phases: a refactor of the driver that changes one value, one node id or the order of one
request changes a hash.

    .venv/bin/pytest -q tests/test_search_golden.py
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Sequence

import pytest

from mcts_po.search.config import SearchConfig
from mcts_po.search.mcts import STEP_EOS, ExpansionRequest, StepProposal, run_search
from mcts_po.search.tree import Tree

from fake_policy import LetterPolicy
from test_plan_trees import PlanLetterPolicy, plan_tree_for_test


class SparseLetterPolicy(LetterPolicy):
    """LetterPolicy that proposes nothing below a "b" step and ends steps below a "c" step with EOS."""

    def expand(self, trees: Sequence[Tree], requests: Sequence[ExpansionRequest]) -> list[list[StepProposal]]:
        out = super().expand(trees, requests)
        for i, request in enumerate(requests):
            steps = trees[request.tree_index].steps(request.node_id)
            if steps and steps[-1].startswith("b"):
                out[i] = []
            elif steps and steps[-1].startswith("c"):
                out[i] = [dataclasses.replace(p, finish=STEP_EOS) for p in out[i]]
        return out


def step_trees(count: int) -> list[Tree]:
    return [Tree.new(problem_id=f"p{i}", question=f"q{i}", gold_answer="2") for i in range(count)]


def plan_trees(count: int) -> list[Tree]:
    trees = []
    for i in range(count):
        tree = plan_tree_for_test()
        tree.problem_id = tree.tree_id = f"plan{i}"
        trees.append(tree)
    return trees


SCENARIOS = {
    "puct mean": (lambda: LetterPolicy(answer_depth=3), lambda: step_trees(3),
                  dict(num_simulations=9, num_children=3, leaves_per_wave=2)),
    "uct visit-weighted gamma": (lambda: LetterPolicy(answer_depth=3), lambda: step_trees(2),
                                 dict(num_simulations=10, num_children=2, leaves_per_wave=3, selection="uct",
                                      backup="visit_weighted", gamma=0.9, c_explore=1.5)),
    "merged duplicates, no rollout": (lambda: LetterPolicy(answer_depth=2, duplicate_first=True), lambda: step_trees(2),
                                      dict(num_simulations=7, num_children=3, use_rollout=False)),
    "depth and token limits": (lambda: LetterPolicy(answer_depth=9), lambda: step_trees(2),
                               dict(num_simulations=12, num_children=2, max_depth=3, max_tokens=5, leaves_per_wave=1)),
    "empty and eos proposals": (lambda: SparseLetterPolicy(answer_depth=4), lambda: step_trees(2),
                                dict(num_simulations=14, num_children=3, leaves_per_wave=2, self_eval_weight=0.3, rollout_weight=0.7,
                                     c_explore=2.0)),
    "plan trees": (lambda: PlanLetterPolicy(answer_steps=2, marker_depth=2), lambda: plan_trees(2),
                   dict(tree="plan", num_simulations=12, num_children=2, leaves_per_wave=2, use_self_eval=False,
                        max_plan_depth=3, max_depth=4)),
    "plan trees, depth 1, visit-weighted": (lambda: PlanLetterPolicy(answer_steps=3), lambda: plan_trees(1),
                                            dict(tree="plan", num_simulations=8, num_children=3, leaves_per_wave=1,
                                                 backup="visit_weighted", max_plan_depth=1, max_depth=2)),
}

# sha256 of `record(name)`, recorded before run_search was split into wave phases.
GOLDEN = {
    'puct mean': '03fa823219bbcd68edd53e4fd3c45e155a4af63358151f29c55a0b495ea91074',
    'uct visit-weighted gamma': 'ae37a807918e2ec712acb0e69abbb8337ec134d4bff35f1b8fea743f5429f2ec',
    'merged duplicates, no rollout': 'f8f5b788667ff94ce35d7718ba733da90034dac594c5b790291b73021908f2d0',
    'depth and token limits': 'a485c125bb729c2a7a42475c18217a5aa8d7a8a8db1480ac5f524f0b10904c32',
    'empty and eos proposals': 'e58befe8b73177762f3fd454a09b69f6d05e4b6d80b0940f491d9b5d79bd7004',
    'plan trees': '1ff0748cbef44ba7fa5b15c3ce6e734f7c363b0398dcfde9c05a72c5e7951bab',
    'plan trees, depth 1, visit-weighted': '199d5534f7c07ae46b55c6eb2fc858bc31f6668eeece07472417a52a53614e6d',
}


class Recording:
    """Wraps a policy and records every call's requests, in order."""

    def __init__(self, policy):
        self.policy = policy
        self.calls: list[list] = []

    def expand(self, trees, requests):
        self.calls.append(["expand", [dataclasses.astuple(r) for r in requests]])
        return self.policy.expand(trees, requests)

    def evaluate(self, trees, requests):
        self.calls.append(["evaluate", [dataclasses.astuple(r) for r in requests]])
        return self.policy.evaluate(trees, requests)


def record(name: str) -> dict:
    make_policy, make_trees, overrides = SCENARIOS[name]
    trees, policy = make_trees(), Recording(make_policy())
    progress = []
    final = run_search(trees, policy, SearchConfig(**overrides), on_progress=lambda p: progress.append(
        [p.trees, p.trees_done, p.simulations, p.simulations_total, p.waves, p.nodes]))
    return {"trees": [t.to_dict() for t in trees], "calls": policy.calls, "progress": progress,
            "final": [final.waves, final.simulations, final.trees_done, final.nodes]}


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_search_reproduces_the_golden_trees_and_calls(name):
    assert digest(record(name)) == GOLDEN[name]


def test_the_scenarios_reach_the_branches_they_are_named_for():
    """The golden hashes only guard what the scenarios exercise: check that they do."""
    def reasons(name: str) -> set[str]:
        return {n["terminal_reason"] for t in record(name)["trees"] for n in t["nodes"]}

    assert {"max_depth", "max_tokens"} <= reasons("depth and token limits")
    sparse = [t["nodes"] for t in record("empty and eos proposals")["trees"]]
    eos = [(n, nodes[n["parent"]]) for nodes in sparse for n in nodes if n["terminal_reason"] == "eos"]
    assert any(n["text"].startswith("b") and not n["children"] for n, _ in eos), "a leaf that got no proposals"
    assert any(parent["text"].startswith("c") for _, parent in eos), "a step the model ended with EOS"
    assert any(n["num_samples"] > 1 for t in record("merged duplicates, no rollout")["trees"] for n in t["nodes"])
    plan = record("plan trees")["trees"]
    assert {n["kind"] for t in plan for n in t["nodes"]} == {"root", "plan", "step"}
    assert any(n["text"] == "Now solve." for t in plan for n in t["nodes"])
    # plan trees count solution steps only against max_depth (2): the plan step is not counted
    [nodes] = [t["nodes"] for t in record("plan trees, depth 1, visit-weighted")["trees"]]
    limited = [n for n in nodes if n["terminal_reason"] == "max_depth"]
    assert limited and all(n["depth"] == 3 and n["kind"] == "step" for n in limited)
    calls = record("puct mean")["calls"]
    assert [c[0] for c in calls[:2]] == ["expand", "evaluate"] and len(calls[0][1]) == 3  # one call for 3 trees
