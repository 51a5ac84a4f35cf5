"""The search driver: many trees at once, in waves, against a policy given as an object.

Pure: no torch, no vLLM, no prompts. The policy (`SearchPolicy`) proposes steps and
evaluates nodes in batches; `mcts_po.llm.policy.LLMSearchPolicy` implements it on a
real backend and `tests/` implement it with small deterministic fakes. What differs
between step trees and plan trees (which kind of node a leaf is expanded into, which part
of a path counts against the limits) is a tree-kind strategy (`mcts_po.search.tree_kinds`).

`run_search` repeats one wave, four named phases, until every tree has had
`num_simulations` simulations (one per selected leaf):
1. `select_leaves`: in every unfinished tree, up to `leaves_per_wave` leaves by PUCT/UCT;
   each selected leaf puts virtual loss on its path so the next selection goes elsewhere.
2. `expand_leaves`: all non-terminal leaves of all trees in ONE `policy.expand` call (k step
   samples each); identical sibling steps are merged; priors are set.
3. `evaluate_nodes`: all new children of all trees in ONE `policy.evaluate` call: terminal
   children get the verifier's +-1; others the weighted mean of (2 * self_eval - 1), the
   rollout's +-1 and the value model's score, with `SearchConfig.value_weights()` over the
   parts that exist (a source with weight 0 is never run).
4. `backup_wave`: each selected terminal leaf with its stored value, then each expanded
   leaf with the mean of its new children's values.

    from mcts_po.search.mcts import run_search
    run_search(trees, policy, SearchConfig(num_simulations=8))
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from mcts_po.search.backup import backup
from mcts_po.search.config import SearchConfig
from mcts_po.search.selection import VirtualLoss, length_normalised_prior, normalise_priors, select_leaf
from mcts_po.search.tree import Tree
from mcts_po.search.tree_kinds import TreeKind, tree_kind

# Finish reasons a policy reports for a proposed step.
STEP_CONTINUES = ""  # an ordinary step; the solution goes on
STEP_ANSWER = "answer"  # the step states a final answer
STEP_EOS = "eos"  # the model ended its output after this step


@dataclass(frozen=True)
class ExpansionRequest:
    tree_index: int
    node_id: int
    num_children: int
    kind: str = "step"  # the kind of node to propose ("plan" or "step")


@dataclass(frozen=True)
class StepProposal:
    text: str
    num_tokens: int
    logprob_sum: float
    finish: str = STEP_CONTINUES  # STEP_CONTINUES, STEP_ANSWER or STEP_EOS
    kind: str = "step"


@dataclass(frozen=True)
class EvaluationRequest:
    tree_index: int
    node_id: int
    terminal: bool


@dataclass
class NodeEvaluation:
    """What a policy found about a node; the driver turns it into a value."""

    answer: str | None = None  # terminal nodes: the extracted final answer
    correct: bool | None = None  # terminal nodes: the verifier's verdict
    self_eval: float | None = None  # P("correct") of the newest step, in [0, 1]
    rollout_value: float | None = None  # +1 / -1, the verifier on a rollout's answer
    rollout_text: str | None = None
    value_model: float | None = None  # the value model's score of the newest step, in [-1, 1]


class SearchPolicy(Protocol):
    """Proposes steps and evaluates nodes, each in one batched call per wave. A policy sees the
    trees as selection left them: the wave's backups come after both calls."""

    def expand(self, trees: Sequence[Tree], requests: Sequence[ExpansionRequest]) -> list[list[StepProposal]]:
        ...

    def evaluate(self, trees: Sequence[Tree], requests: Sequence[EvaluationRequest]) -> list[NodeEvaluation]:
        ...


@dataclass
class SearchProgress:
    trees: int = 0
    trees_done: int = 0
    simulations: int = 0
    simulations_total: int = 0
    waves: int = 0
    nodes: int = 0
    seconds: float = 0.0
    tree_finished: list = field(default_factory=list)  # per tree: has it had all its simulations
    extra: dict = field(default_factory=dict)


def normalise_step(text: str) -> str:
    return " ".join(text.split())


def node_value(evaluation: NodeEvaluation, terminal: bool, config: SearchConfig) -> float:
    """The value a new node starts with, in [-1, 1]."""
    if terminal:
        return 1.0 if evaluation.correct else -1.0
    # the configured weights over the parts the policy delivered (what runs is the policy's
    # business: it follows `config.value_weights()`)
    weights = {"self_eval": config.self_eval_weight, "rollout": config.rollout_weight,
               "value_model": config.value_model_weight}
    parts: list[tuple[float, float]] = []
    if evaluation.self_eval is not None:
        parts.append((weights.get("self_eval", 0.0), 2.0 * evaluation.self_eval - 1.0))
    if evaluation.rollout_value is not None:
        parts.append((weights.get("rollout", 0.0), evaluation.rollout_value))
    if evaluation.value_model is not None:
        parts.append((weights.get("value_model", 0.0), evaluation.value_model))
    total_weight = sum(w for w, _ in parts)
    if total_weight <= 0:
        # only parts whose source has weight 0 (a policy that ran one anyway): their plain mean
        return sum(v for _, v in parts) / len(parts) if parts else 0.0
    return sum(w * v for w, v in parts) / total_weight


def add_children(tree: Tree, parent_id: int, proposals: Sequence[StepProposal], config: SearchConfig, wave: int,
                 kind: TreeKind) -> list[int]:
    """Add proposals as children of `parent_id` (merging identical ones); return the new ids."""
    merged: dict[str, tuple[StepProposal, int]] = {}
    ordered: list[str] = []
    for index, proposal in enumerate(proposals):
        key = normalise_step(proposal.text) if config.merge_identical_siblings else str(index)
        if key in merged:
            merged[key] = (merged[key][0], merged[key][1] + 1)
        else:
            merged[key] = (proposal, 1)
            ordered.append(key)
    raw_priors = [
        length_normalised_prior(merged[k][0].logprob_sum, merged[k][0].num_tokens, config.prior_length_exponent) * merged[k][1]
        for k in ordered
    ]
    priors = normalise_priors(raw_priors) if ordered else []
    parent_depth, path_tokens = kind.path_budget(tree, parent_id)  # what counts against the limits
    new_ids = []
    for key, prior in zip(ordered, priors):
        proposal, count = merged[key]
        depth = parent_depth + 1
        reason = ""
        if proposal.kind == "plan":
            pass  # plan steps are never terminal: the plan ends at its marker or max_plan_depth
        elif proposal.finish == STEP_ANSWER:
            reason = "answer"
        elif proposal.finish == STEP_EOS:
            reason = "eos"
        elif depth >= config.max_depth:
            reason = "max_depth"
        elif path_tokens + proposal.num_tokens >= config.max_tokens:
            reason = "max_tokens"
        node = tree.add_child(
            parent_id,
            kind=proposal.kind,
            text=proposal.text,
            num_tokens=proposal.num_tokens,
            logprob_sum=proposal.logprob_sum,
            prior=prior,
            num_samples=count,
            terminal=bool(reason),
            terminal_reason=reason,
            wave=wave,
        )
        new_ids.append(node.node_id)
    return new_ids


# ---------------------------------------------------------------------------- one wave, four phases
@dataclass
class Selection:
    """Phase 1's result: the leaves to expand, and the terminal leaves reached (backed up as they are)."""

    expansions: list[ExpansionRequest] = field(default_factory=list)
    terminal_leaves: list[tuple[int, int]] = field(default_factory=list)  # (tree index, node id)


@dataclass
class Expansion:
    """Phase 2's result: each expanded leaf with its new children, and the nodes to evaluate."""

    children: list[tuple[ExpansionRequest, list[int]]] = field(default_factory=list)
    evaluations: list[EvaluationRequest] = field(default_factory=list)


def select_leaves(trees: Sequence[Tree], simulations_done: list[int], config: SearchConfig,
                  kind: TreeKind) -> Selection:
    """Phase 1: up to `leaves_per_wave` leaves per unfinished tree, kept apart by virtual loss;
    counts one simulation per selected leaf in `simulations_done`."""
    selection = Selection()
    for tree_index, tree in enumerate(trees):
        if simulations_done[tree_index] >= config.num_simulations:
            continue
        virtual = VirtualLoss(config.virtual_loss)
        budget = min(config.leaves_per_wave, config.num_simulations - simulations_done[tree_index])
        chosen: set[int] = set()
        for _ in range(budget):
            leaf_id = select_leaf(tree, config.selection, config.c_explore, virtual)
            if leaf_id in chosen:
                break  # virtual loss could not steer away: expand what we have
            chosen.add(leaf_id)
            virtual.add_path(tree, leaf_id)
            simulations_done[tree_index] += 1
            if tree.nodes[leaf_id].terminal:
                selection.terminal_leaves.append((tree_index, leaf_id))
            else:
                selection.expansions.append(
                    ExpansionRequest(tree_index, leaf_id, config.num_children, kind.child_kind(tree, leaf_id)))
    return selection


def expand_leaves(trees: Sequence[Tree], policy: SearchPolicy, requests: list[ExpansionRequest],
                  config: SearchConfig, kind: TreeKind, wave: int) -> Expansion:
    """Phase 2: one `policy.expand` call for every leaf; the proposals become children. A leaf
    that got nothing usable (e.g. only empty steps) ends there and is evaluated as terminal."""
    proposals = policy.expand(trees, requests) if requests else []
    if len(proposals) != len(requests):
        raise RuntimeError(f"policy.expand returned {len(proposals)} results for {len(requests)} requests")
    expansion = Expansion()
    for request, steps in zip(requests, proposals):
        tree = trees[request.tree_index]
        child_ids = add_children(tree, request.node_id, steps, config, wave, kind)
        if not child_ids:
            leaf = tree.nodes[request.node_id]
            leaf.terminal, leaf.terminal_reason = True, "eos"
            expansion.evaluations.append(EvaluationRequest(request.tree_index, request.node_id, True))
        expansion.children.append((request, child_ids))
        for child_id in child_ids:
            expansion.evaluations.append(EvaluationRequest(request.tree_index, child_id, tree.nodes[child_id].terminal))
    return expansion


def evaluate_nodes(trees: Sequence[Tree], policy: SearchPolicy, requests: list[EvaluationRequest],
                   config: SearchConfig) -> None:
    """Phase 3: one `policy.evaluate` call for every new node; each gets its value (`node_value`),
    and a new child's evaluation is its first visit."""
    results = policy.evaluate(trees, requests) if requests else []
    if len(results) != len(requests):
        raise RuntimeError(f"policy.evaluate returned {len(results)} results for {len(requests)} requests")
    for request, evaluation in zip(requests, results):
        node = trees[request.tree_index].nodes[request.node_id]
        value = node_value(evaluation, node.terminal, config)
        node.answer, node.correct = evaluation.answer, evaluation.correct
        node.self_eval = evaluation.self_eval
        node.rollout_value, node.rollout_text = evaluation.rollout_value, evaluation.rollout_text
        node.initial_value = value
        if node.visits == 0 and not node.children:  # a new child: its first visit is its evaluation
            node.visits, node.value_sum, node.q = 1, value, value


def backup_wave(trees: Sequence[Tree], selection: Selection, expansion: Expansion, config: SearchConfig) -> None:
    """Phase 4: back up each selected terminal leaf with its stored value, then each expanded
    leaf with the mean of its new children's values (its own value when it got none)."""
    for tree_index, leaf_id in selection.terminal_leaves:
        leaf = trees[tree_index].nodes[leaf_id]
        value = leaf.initial_value if leaf.initial_value is not None else leaf.q
        backup(trees[tree_index], leaf_id, value, config.backup, config.gamma)
    for request, child_ids in expansion.children:
        tree = trees[request.tree_index]
        if child_ids:
            value = sum(tree.nodes[c].initial_value for c in child_ids) / len(child_ids)
        else:
            value = tree.nodes[request.node_id].initial_value
        backup(tree, request.node_id, value, config.backup, config.gamma)


def run_search(
    trees: Sequence[Tree],
    policy: SearchPolicy,
    config: SearchConfig,
    on_progress: Callable[[SearchProgress], None] | None = None,
) -> SearchProgress:
    """Grow every tree in `trees` in place until each has had `config.num_simulations` simulations."""
    start = time.perf_counter()
    kind = tree_kind(config)
    simulations_done = [0] * len(trees)
    progress = SearchProgress(trees=len(trees), simulations_total=config.num_simulations * len(trees))
    wave = 0
    while any(done < config.num_simulations for done in simulations_done):
        selection = select_leaves(trees, simulations_done, config, kind)
        expansion = expand_leaves(trees, policy, selection.expansions, config, kind, wave)
        evaluate_nodes(trees, policy, expansion.evaluations, config)
        backup_wave(trees, selection, expansion, config)
        wave += 1
        progress.waves = wave
        progress.simulations = sum(simulations_done)
        progress.tree_finished = [d >= config.num_simulations for d in simulations_done]
        progress.trees_done = sum(progress.tree_finished)
        progress.nodes = sum(len(t) for t in trees)
        progress.seconds = time.perf_counter() - start
        if on_progress is not None:
            on_progress(progress)
    return progress
