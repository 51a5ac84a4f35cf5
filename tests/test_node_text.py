"""The text a node continues, byte for byte: what the search sends and what extraction rebuilds.

A node's text (its state: the prompt its children are sampled from; and its rollout prompt)
is read here through the entry points that use it: `LLMSearchPolicy._state_text` and
`.rollout_prompt` (what the engine is sent) and `mcts_po.extract.tree_text.continuation_prompt`
(what training rows carry), on step and plan trees searched by the real policy on scripted
backends, on the hand-built plan trees of tests/test_plan_trees.py (with and without a stored
solution template) and on seeded synthetic trees. `GOLDEN_SHA256` is the sha256 of all those
texts as canonical JSON, recorded from the code before the texts were built in one module
(`mcts_po.llm.node_text`): any byte that changes changes the hash.

    .venv/bin/pytest -q tests/test_node_text.py
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Sequence

from mcts_po.backends.base import FINISH_EOS, FINISH_STOP, Completion, GenerationResult
from mcts_po.extract.tree_text import continuation_prompt
from mcts_po.graphs.synthetic_trees import synthetic_tree
from mcts_po.llm import node_text
from mcts_po.llm.config import SamplingConfig
from mcts_po.llm.policy import LLMSearchPolicy
from mcts_po.search.config import SearchConfig
from mcts_po.search.mcts import run_search
from mcts_po.search.tree import Tree
from mcts_po.tasks import get_task
from mcts_po.tasks.base import Problem

from test_plan_trees import SOLUTION_TEMPLATE, plan_tree_for_test, run_llm_plan_search

# sha256 of the canonical JSON of `all_texts()`, recorded from the code before the refactor.
GOLDEN_SHA256 = "e883340e7eb6093445d35061c7f18a28420d583eeaf4581f4787b3592cad6bb9"
GOLDEN_RECORDS = 270


class ScriptedStepBackend:
    """ChatML-like template; steps "n + 1 = m." (two per request, one of them an answer at depth 3);
    rollouts answer; verdicts 0.6 Yes."""

    name = "scripted-steps"
    model = "none"

    def __init__(self):
        self.requests = []

    def render_chat(self, messages, add_generation_prompt: bool = True) -> str:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def generate(self, requests) -> list[GenerationResult]:
        self.requests.extend(requests)
        out = []
        for r in requests:
            if r.top_logprobs:
                completions = [Completion(" Yes", 1, [math.log(0.6)],
                                          top_logprobs=[{" Yes": math.log(0.6), " No": math.log(0.4)}])]
            elif r.stop:
                depth = r.prompt.count(r.stop[0] + "Step") + 1
                completions = [Completion(f"Step {depth}: {depth} + 1 = {depth + 1}." + (" The answer is 4." if depth >= 3 else ""),
                                          6, [-0.2] * 6, FINISH_STOP, r.stop[0]),
                               Completion(f"Step {depth}: {depth} + 2 = {depth + 2}.", 6, [-0.7] * 6, FINISH_STOP, r.stop[0])][: r.n]
            else:
                completions = [Completion("So the answer is 4. The answer is 4.", 9, [-0.3] * 9, FINISH_EOS)]
            out.append(GenerationResult(completions=completions, prompt_tokens=len(r.prompt)))
        return out

    def close(self):
        pass


def searched_step_tree(delimiter: str, hint: bool) -> tuple[Tree, LLMSearchPolicy]:
    task = get_task("demo")
    problem = Problem(id="s1", question="What is 1 + 3?", answer="4", solution="1 + 3 = 4")
    backend = ScriptedStepBackend()
    search = SearchConfig(num_children=2, leaves_per_wave=2, num_simulations=6, max_depth=4)
    sampling = SamplingConfig(step_delimiter=delimiter, self_eval_hint=hint)
    policy = LLMSearchPolicy(backend, task, [problem], sampling, search)
    tree = Tree.new(problem_id="s1", question=problem.question, gold_answer="4", task="demo",
                    prompt=policy.root_prompts[0], sampling=sampling.to_dict(), search_config=search.to_dict())
    run_search([tree], policy, search)
    return tree, policy


def policy_texts(name: str, tree: Tree, policy: LLMSearchPolicy) -> list[dict]:
    records = []
    stored = Tree.from_json(tree.to_json())  # extraction reads the tree back from its file
    for node in tree.nodes:
        prompt, prefix = continuation_prompt(stored, node.node_id)
        records.append({"tree": name, "node": node.node_id,
                        "state": policy._state_text(tree, 0, node.node_id),
                        "rollout": policy.rollout_prompt(tree, 0, node.node_id),
                        "self_eval": policy.self_eval_prompt(tree, 0, node.node_id),
                        "extract_prompt": prompt, "extract_prefix": prefix})
    return records


def stored_texts(name: str, tree: Tree) -> list[dict]:
    records = []
    for node in tree.nodes:
        prompt, prefix = continuation_prompt(tree, node.node_id)
        records.append({"tree": name, "node": node.node_id, "extract_prompt": prompt, "extract_prefix": prefix})
    return records


def hand_built_plan_tree(with_template: bool, delimiter: str = "\n") -> Tree:
    """The plan tree of tests/test_plan_trees.py (plan depth 1), two plans, a marker and solutions."""
    tree = plan_tree_for_test()
    tree.sampling = {"step_delimiter": delimiter}
    if not with_template:
        tree.extra.clear()
        tree.prompt = ""
    p1 = tree.add_child(0, kind="plan", text="Find the total.")
    p2 = tree.add_child(0, kind="plan", text="  Add   both numbers. ")
    end = tree.add_child(0, kind="plan", text="Now solve.")
    s1 = tree.add_child(p1.node_id, kind="step", text="2 + 3 = 5.")
    tree.add_child(s1.node_id, kind="step", text="The answer is 5.", terminal=True)
    tree.add_child(p2.node_id, kind="step", text="3 + 2 = 5.")
    tree.add_child(end.node_id, kind="step", text="5.")
    return tree


def all_texts() -> list[dict]:
    records: list[dict] = []
    for delimiter in ("\n", "\n\n"):
        for hint in (False, True):
            tree, policy = searched_step_tree(delimiter, hint)
            records += policy_texts(f"step {delimiter!r} hint={hint}", tree, policy)
    for simulations in (6, 8):
        tree, _, policy = run_llm_plan_search(num_simulations=simulations)
        records += policy_texts(f"plan sims={simulations}", tree, policy)
    records += stored_texts("hand-built plan", hand_built_plan_tree(True))
    records += stored_texts("hand-built plan, no template", hand_built_plan_tree(False))
    records += stored_texts("hand-built plan, no template, ' / '", hand_built_plan_tree(False, " / "))
    for seed in (0, 1):
        tree = synthetic_tree(30, seed=seed, plan_share=0.5)
        records += stored_texts(f"synthetic {seed}", tree)  # no prompt, no sampling: the fallbacks
        tree.sampling = {"step_delimiter": " | "}
        records += stored_texts(f"synthetic {seed}, ' | ', no prompt", tree)
        tree.prompt = "<prompt>\n"
        records += stored_texts(f"synthetic {seed} with prompt", tree)
    return records


def digest(records: Sequence[dict]) -> str:
    canonical = json.dumps(list(records), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def test_node_texts_are_byte_identical_to_the_recorded_ones():
    records = all_texts()
    assert len(records) == GOLDEN_RECORDS
    assert digest(records) == GOLDEN_SHA256


def test_what_the_search_continues_is_what_extraction_rebuilds():
    for record in all_texts():
        if "state" in record:
            assert record["extract_prompt"] == record["state"], (record["tree"], record["node"])
            assert record["state"].endswith(record["extract_prefix"])


def test_the_fixtures_reach_every_branch_of_the_text():
    records = all_texts()
    by_tree = {}
    for r in records:
        by_tree.setdefault(r["tree"], []).append(r)
    step = by_tree["step '\\n\\n' hint=False"]
    assert any(r["extract_prefix"].count("\n\n") >= 2 for r in step), "paths of two steps and more"
    plan = by_tree["plan sims=8"]
    assert any(r["state"] != r["rollout"] for r in plan), "an open plan: its state is the plan prompt"
    assert any("Follow this plan" in r["state"] for r in plan), "a complete plan: the solution prompt"
    no_template = by_tree["hand-built plan, no template"]
    assert no_template[4]["extract_prompt"] == "q\nFind the total.\nNow solve.\n2 + 3 = 5.\n"
    with_template = by_tree["hand-built plan"]
    assert with_template[6]["extract_prompt"] == "SOLVE q WITH PLAN:\nAdd both numbers.\nSOLUTION:\n3 + 2 = 5.\n"
    assert SOLUTION_TEMPLATE.startswith("SOLVE q WITH PLAN:")
    # without a prompt a step tree's stands-in root ends with a newline, a plan tree's with its delimiter
    first_step = by_tree["synthetic 0, ' | ', no prompt"][1]
    assert first_step["extract_prompt"] == "Synthetic problem with 30 nodes (seed 0). What is the total?\n" + first_step["extract_prefix"]
    assert first_step["extract_prefix"].endswith(" = 131. | ")
    assert by_tree["hand-built plan, no template, ' / '"][1]["extract_prompt"] == "q / Find the total. / "


def test_extraction_and_the_policy_read_the_one_module():
    """Every record's extraction text is `node_text.stored_node_text` of the stored tree."""
    tree, policy = searched_step_tree("\n", hint=False)
    for node in tree.nodes:
        steps = tree.steps(node.node_id)
        assert policy._state_text(tree, 0, node.node_id) == node_text.state_text(policy.root_prompts[0], steps, "\n")
        assert continuation_prompt(tree, node.node_id) == node_text.stored_node_text(tree, node.node_id)
    assert node_text.steps_text(["a", "b"], " | ") == "a | b | " and node_text.steps_text([], "\n") == ""


def test_node_text_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, mcts_po.llm.node_text, mcts_po.extract.tree_text; assert 'torch' not in sys.modules; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "ok\n"
