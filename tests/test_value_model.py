"""Tests of the value model (mcts_po/train/value_model.py): where the score is read, the value
regression and the ppm Bradley-Terry training on a tiny random Llama, LoRA, the CLI, bad input;
and one slow test on SmolLM2-135M scoring the paths of a real search tree.

    PYTHONPATH=. .venv/bin/pytest tests/test_value_model.py -q -m "not slow"
    flock /tmp/mcts_po_cpu.lock env PYTHONPATH=. .venv/bin/pytest tests/test_value_model.py -q -m slow
"""

from __future__ import annotations

import json

import pytest
import torch

from mcts_po.cli import main
from mcts_po.io_utils import UserError
from mcts_po.train.config import TrainConfig, ValueConfig
from mcts_po.train.value_model import (
    CONFIG_KEY,
    ValueScorer,
    build_path_batch,
    score_paths,
    tokenize_path,
    train_value_model,
    value_examples_from_rows,
    value_model_fingerprint,
    value_regression_loss,
)
from tiny_model import BRACKET_CHAT_TEMPLATE, byte_level_tokenizer, save_tiny_llama

PROMPT = "q: 1+1?\n"
VALUE_ROWS = [
    {"prompt": PROMPT, "completions": ["1+1=2", "so 2"], "labels": [0.8, 1.0], "tree_id": "t", "node_ids": [1, 2]},
    {"prompt": PROMPT, "completions": ["1+1=2", "so 3"], "labels": [0.8, -1.0], "tree_id": "t", "node_ids": [1, 3]},
    {"prompt": PROMPT, "completions": ["1+1=3"], "labels": [-0.7], "tree_id": "t", "node_ids": [4]},
]
PPM_ROWS = [
    {"prompt": PROMPT, "chosen": "1+1=2", "rejected": "1+1=3", "margin": 1.5},
    {"prompt": "q: 2+2?\n", "chosen": "2+2=4", "rejected": "2+2=5", "margin": 1.0},
]


# the regression with the backbone trained on Q (the hand rows hold labels, no outcome column)
TRAINED = ValueConfig(backbone="train", target="q")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "policy", byte_level_tokenizer())


def cpu_config(**options) -> TrainConfig:
    return TrainConfig(**{"device": "cpu", "progress": False, "batch_size": 4, **options})


def test_tokenize_path_marks_the_last_token_of_each_step():
    tokenizer = byte_level_tokenizer()  # one token per byte
    ids, ends = tokenize_path(tokenizer, "ab", ["cd", "e"], "\n")
    assert tokenizer.decode(ids) == "abcd\ne" and ends == [3, 5]
    assert tokenize_path(tokenizer, "ab", ["cd", "e"], "\n\n")[1] == [3, 6]
    batch = build_path_batch(tokenizer, ["ab", "x"], [["cd", "e"], ["y"]], "\n", max_length=3)
    assert batch.step_ends.tolist() == [[0, 2], [1, -1]]  # "abc" cut from the left of row 0
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    cut_step = build_path_batch(tokenizer, ["ab"], [["cd", "e"]], "\n", max_length=2)
    assert cut_step.step_ends.tolist() == [[-1, 1]]  # step 1 lost its last token: no score


def test_value_examples_count_each_node_once_and_check_rows():
    examples = value_examples_from_rows(VALUE_ROWS)
    assert [e.weights for e in examples] == [(0.5, 1.0), (0.5, 1.0), (1.0,)]
    assert [e.weights for e in value_examples_from_rows(VALUE_ROWS, count_steps_once=False)] == \
        [(1.0, 1.0), (1.0, 1.0), (1.0,)]
    with pytest.raises(UserError, match="row 0: 2 completions but 1 labels"):
        value_examples_from_rows([{"prompt": "p", "completions": ["a", "b"], "labels": [0.1]}])
    with pytest.raises(UserError, match="row 0: missing column 'labels'"):
        value_examples_from_rows([{"prompt": "p", "completions": ["a"]}])


def test_outcome_target_reads_the_share_of_correct_terminals_and_skips_unverified_steps():
    rows = [{**VALUE_ROWS[0], "outcome": [0.5, 1.0]}, {**VALUE_ROWS[1], "outcome": [0.5, 0.0]},
            {**VALUE_ROWS[2], "outcome": [None]}]
    examples = value_examples_from_rows(rows, target="outcome")
    assert [e.labels for e in examples] == [(0.0, 1.0), (0.0, -1.0)]   # 2 s - 1; row 2 has no verified step: dropped
    assert [e.weights for e in examples] == [(0.5, 1.0), (0.5, 1.0)]
    partly = value_examples_from_rows([{**VALUE_ROWS[0], "outcome": [None, 1.0]}], target="outcome")
    assert partly[0].weights == (0.0, 1.0) and partly[0].labels == (0.0, 1.0)
    with pytest.raises(UserError, match=r"row 0: outcome targets must be finite shares in \[0, 1\]"):
        value_examples_from_rows([{**VALUE_ROWS[2], "outcome": [1.5]}], target="outcome")
    with pytest.raises(UserError, match="row 0: missing column 'outcome'"):
        value_examples_from_rows(VALUE_ROWS[:1], target="outcome")
    with pytest.raises(UserError, match="unknown value target 'rollout'"):
        value_examples_from_rows(VALUE_ROWS, target="rollout")
    with pytest.raises(ValueError, match="ValueConfig.backbone = 'half'"):
        ValueConfig(backbone="half")


def test_regression_loss_is_the_weighted_mean_squared_error_of_tanh():
    raw = torch.tensor([[0.0, 100.0], [torch.atanh(torch.tensor(0.5)).item(), 0.0]])
    labels = torch.tensor([[1.0, 1.0], [0.0, 0.3]])
    weights = torch.tensor([[0.5, 1.0], [1.0, 0.0]])
    # (0.5 * 1 + 1 * 0 + 1 * 0.25) / 2.5
    assert value_regression_loss(raw, labels, weights).item() == pytest.approx(0.3, abs=1e-6)


def test_scores_sit_at_each_steps_last_token_whatever_the_batch(tiny, tmp_path):
    """An untrained value model: a step's score equals the score of the path cut after that step,
    equals the HF model's own pooled score of that text, and does not depend on batch padding."""
    from transformers import AutoModelForSequenceClassification

    out = train_value_model(tiny, VALUE_ROWS[:1], "value", cpu_config(max_steps=1, learning_rate=1e-9), tmp_path / "v",
                            TRAINED)
    scorer = ValueScorer(out, device="cpu", batch_size=8)
    full, short, other = scorer.score_paths([PROMPT, PROMPT, "z"], [["1+1=2", "so 2"], ["1+1=2"], ["a"]], raw=True)
    assert scorer.forward_calls == 1 and len(full) == 2 and len(short) == 1
    assert short[0] == pytest.approx(full[0], abs=1e-5)
    alone = ValueScorer(out, device="cpu", batch_size=1).score_paths([PROMPT], [["1+1=2", "so 2"]], raw=True)[0]
    assert alone == pytest.approx(full, abs=1e-5)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = scorer.tokenizer
    with torch.no_grad():
        pooled = model(**tokenizer(PROMPT + "1+1=2\nso 2", return_tensors="pt")).logits.item()
    assert pooled == pytest.approx(full[1], abs=1e-5)
    assert scorer.score_paths([PROMPT], [["1+1=2", "so 2"]])[0] == pytest.approx([torch.tanh(torch.tensor(v)).item()
                                                                                 for v in full], abs=1e-6)
    assert getattr(model.config, CONFIG_KEY)["method"] == "value"


def test_value_regression_moves_scores_to_their_targets(tiny, tmp_path):
    config = cpu_config(learning_rate=3e-3, num_epochs=40, max_steps=40)
    out = train_value_model(tiny, VALUE_ROWS, "value", config, tmp_path / "value-1", TRAINED)
    log = json.loads((out / "training_log.json").read_text())
    losses = [h["loss"] for h in log["history"]]
    assert log["optimizer_steps"] == 40 and log["method"] == "value" and log["steps_trained"] == 5
    assert losses[-1] < 0.1 * losses[0], losses
    targets = [row["labels"] for row in VALUE_ROWS]
    scores = score_paths(out, [r["prompt"] for r in VALUE_ROWS], [r["completions"] for r in VALUE_ROWS], device="cpu")
    error_after = max(abs(s - t) for ss, ts in zip(scores, targets) for s, t in zip(ss, ts))
    assert log["history"][0]["mean_abs_error"] > 0.5 and error_after < 0.25, (scores, targets)
    assert scores[0][1] > 0.5 > -0.5 > scores[1][1]  # same prefix, the two endings told apart


def test_fit_tanh_head_weighs_points_and_refuses_mismatched_input():
    from mcts_po.train.value_model import fit_tanh_head

    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    w, error, iterations = fit_tanh_head(x, [0.5, -0.5, 0.9], [1.0, 1.0, 0.0], l2=0.0)
    assert torch.tanh(x @ w).tolist()[:2] == pytest.approx([0.5, -0.5], abs=1e-3)   # the weight-0 point is ignored
    assert error < 1e-6 and iterations >= 1
    both, _, _ = fit_tanh_head(x, [0.5, -0.5, 0.9], None, l2=0.0)
    assert torch.tanh(both[1]).item() == pytest.approx(0.2, abs=1e-2)   # equal weights: the two targets' mean
    with pytest.raises(ValueError, match="3 features, 2 targets"):
        fit_tanh_head(x, [0.5, -0.5])


def test_frozen_backbone_fits_only_the_head_toward_the_targets(tiny, tmp_path):
    from safetensors.torch import load_file

    rows = [{**VALUE_ROWS[0], "outcome": [0.5, 1.0]}, {**VALUE_ROWS[1], "outcome": [0.5, 0.0]},
            {**VALUE_ROWS[2], "outcome": [0.0]}]
    out = train_value_model(tiny, rows, "value", cpu_config(), tmp_path / "frozen",
                            ValueConfig(backbone="frozen", target="outcome", head_l2=1e-4))
    log = json.loads((out / "training_log.json").read_text())
    assert log["trainer"].startswith("mcts_po frozen backbone") and log["steps_trained"] == 4   # node 1 read once
    assert log["value_config"]["backbone"] == "frozen" and log["history"][0]["loss"] < 0.05
    policy, after = load_file(f"{tiny}/model.safetensors"), load_file(out / "model.safetensors")
    backbone = [name for name in after if name != "score.weight"]
    assert len(backbone) > 10 and all(torch.equal(policy[name], after[name]) for name in backbone)   # bit for bit
    assert after["score.weight"].abs().sum() > 0
    scores = score_paths(out, [r["prompt"] for r in rows], [r["completions"] for r in rows], device="cpu")
    assert scores[0][1] > 0.6 and scores[1][1] < -0.6 and scores[2][0] < -0.6, scores   # targets 1, -1, -1
    assert abs(scores[0][0]) < 0.4   # the shared first step: target 2 * 0.5 - 1 = 0
    strong = train_value_model(tiny, rows, "value", cpu_config(), tmp_path / "l2",
                               ValueConfig(backbone="frozen", target="outcome", head_l2=10.0))
    weight = lambda folder: load_file(folder / "model.safetensors")["score.weight"].norm().item()
    assert weight(strong) < 0.2 * weight(out)
    with pytest.raises(UserError, match="LoRA adapters would not be trained"):
        train_value_model(tiny, rows, "value", cpu_config(lora=True), tmp_path / "x", ValueConfig(backbone="frozen"))
    with pytest.raises(UserError, match="none of the 1 value rows has a step with a outcome target"):
        train_value_model(tiny, [{**VALUE_ROWS[2], "outcome": [None]}], "value", cpu_config(), tmp_path / "y",
                          ValueConfig(target="outcome"))


def test_frozen_fit_reads_a_shared_node_once_with_the_same_objective(tiny, tmp_path):
    """Node 1 is on three rows (weight 1/3 each): the fit reads it once, from the longest row, at
    weight 1, skips the row that brings nothing new, and lands on the head that the per-row
    objective (every occurrence at its own weight) has."""
    from safetensors.torch import load_file

    from mcts_po.train.value_model import fit_tanh_head, head_and_backbone, last_hidden_states, load_value_model

    rows = [{**VALUE_ROWS[0], "outcome": [0.5, 1.0]}, {**VALUE_ROWS[1], "outcome": [0.5, 0.0]},
            {"prompt": PROMPT, "completions": ["1+1=2"], "outcome": [0.5], "tree_id": "t", "node_ids": [1]},
            {**VALUE_ROWS[2], "outcome": [0.0]}]
    out = train_value_model(tiny, rows, "value", cpu_config(batch_size=1, bf16="false"), tmp_path / "once",
                            ValueConfig(backbone="frozen", target="outcome", head_l2=1e-3))
    log = json.loads((out / "training_log.json").read_text())
    assert (log["steps_trained"], log["rows_forwarded"]) == (4, 3)
    # the per-row objective by hand: every (row, step) with weight 1 / (rows holding its node)
    model = load_value_model(str(out), device="cpu")
    _, backbone = head_and_backbone(model)
    occurrences = {1: 3, 2: 1, 3: 1, 4: 1}
    features, targets, weights = [], [], []
    for row in rows:
        batch = build_path_batch(byte_level_tokenizer(), [row["prompt"]], [row["completions"]], "\n")
        with torch.no_grad():
            hidden = last_hidden_states(backbone, batch.input_ids, batch.attention_mask).float()
        for step, node in enumerate(row["node_ids"]):
            features.append(hidden[0, int(batch.step_ends[0, step])])
            targets.append(2 * row["outcome"][step] - 1)
            weights.append(1 / occurrences[node])
    expected, _, _ = fit_tanh_head(torch.stack(features), targets, weights, 1e-3)
    head = load_file(out / "model.safetensors")["score.weight"].view(-1)
    assert torch.allclose(head, expected.view(-1).to(head.dtype), atol=1e-4), (head - expected.view(-1)).abs().max()


def test_ppm_with_reward_trainer_orders_chosen_above_rejected(tiny, tmp_path):
    out = train_value_model(tiny, PPM_ROWS, "ppm", cpu_config(learning_rate=3e-3, num_epochs=20), tmp_path / "ppm-1")
    log = json.loads((out / "training_log.json").read_text())
    assert log["trainer"] == "trl RewardTrainer" and log["optimizer_steps"] == 20
    assert log["history"][-1]["loss"] < 0.1 < log["history"][0]["loss"]
    assert log["history"][-1]["reward_accuracy"] == 1.0
    chosen = score_paths(out, [r["prompt"] for r in PPM_ROWS], [[r["chosen"]] for r in PPM_ROWS], device="cpu")
    rejected = score_paths(out, [r["prompt"] for r in PPM_ROWS], [[r["rejected"]] for r in PPM_ROWS], device="cpu")
    assert all(c[0] > 0.5 and r[0] < -0.5 for c, r in zip(chosen, rejected)), (chosen, rejected)


def test_lora_value_model_is_merged_into_a_plain_folder(tiny, tmp_path):
    from transformers import AutoModelForSequenceClassification

    config = cpu_config(lora=True, lora_r=4, learning_rate=1e-2, num_epochs=30, max_steps=30)
    out = train_value_model(tiny, VALUE_ROWS, "value", config, tmp_path / "lora", TRAINED)
    assert not (out / "adapter_config.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1 and not any("lora" in name for name, _ in model.named_parameters())
    log = json.loads((out / "training_log.json").read_text())
    assert log["history"][-1]["loss"] < 0.5 * log["history"][0]["loss"]
    assert len(value_model_fingerprint(out)) == 64


def test_other_tokenizer_and_empty_data_are_refused(tiny, tmp_path):
    other = save_tiny_llama(tmp_path / "other", byte_level_tokenizer(BRACKET_CHAT_TEMPLATE))
    other_tokens = byte_level_tokenizer()
    other_tokens.add_tokens(["<step>"])
    different = save_tiny_llama(tmp_path / "different", other_tokens)
    with pytest.raises(UserError, match=r"has another tokenizer than the policy .*258 and 257 tokens, 1 entries differ"):
        train_value_model(tiny, VALUE_ROWS, "value", cpu_config(max_steps=1), tmp_path / "o",
                          ValueConfig(value_init=different, backbone="train", target="q"))
    out = train_value_model(tiny, VALUE_ROWS, "value", cpu_config(max_steps=1), tmp_path / "same",
                            ValueConfig(value_init=other, backbone="train", target="q"))  # same vocabulary, other chat template: fine
    assert json.loads((out / "training_log.json").read_text())["value_init"] == other
    for method in ("value", "ppm"):
        with pytest.raises(UserError, match=f"no {method} rows to train a value model on \\(an empty value dataset\\)"):
            train_value_model(tiny, [], method, cpu_config(), tmp_path / "empty")
    with pytest.raises(UserError, match="unknown value-model method 'prm'"):
        train_value_model(tiny, VALUE_ROWS, "prm", cpu_config(), tmp_path / "x", TRAINED)


def test_cli_trains_a_value_model_from_an_extract_folder(tiny, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "value.jsonl").write_text("".join(json.dumps(r) + "\n" for r in VALUE_ROWS), encoding="utf-8")
    assert main(["train", "--data", str(data), "--method", "value", "--model", tiny, "--out", str(tmp_path / "v"),
                 "--max-steps", "2", "--device", "cpu", "--no-progress", "--no-count-steps-once",
                 "--backbone", "train", "--target", "q"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["optimizer_steps"] == 2 and printed["rows"] == 3
    log = json.loads((tmp_path / "v" / "training_log.json").read_text())
    assert log["value_config"]["count_steps_once"] is False
    (data / "ppm.jsonl").write_text("", encoding="utf-8")
    assert main(["train", "--data", str(data), "--method", "ppm", "--model", tiny, "--out", str(tmp_path / "p")]) == 2
    assert "ppm.jsonl: no rows to train on" in capsys.readouterr().err


@pytest.mark.slow
def test_smollm2_value_model_trains_and_scores_a_real_tree(real_gsm8k_run, tmp_path):
    """SmolLM2-135M as the value backbone: value rows from a real search tree, 2 training steps on
    short sequences, then every path of that tree scored (one forward per batch)."""
    from mcts_po.extract import ExtractConfig, extract_rows
    from mcts_po.models import resolve_model
    from mcts_po.tree_io import read_trees

    trees = read_trees(real_gsm8k_run.out)
    tree = max(trees, key=lambda t: (t.has_correct_terminal(), len(t.nodes)))
    rows = extract_rows([tree], "value", ExtractConfig())
    assert rows and all(len(r["labels"]) == len(r["completions"]) for r in rows)
    base = resolve_model("smollm2-135m")
    config = TrainConfig(device="cpu", progress=False, batch_size=2, max_steps=2, max_length=96, learning_rate=1e-5)
    frozen = train_value_model(base, rows, "value", config, tmp_path / "frozen")   # the default: frozen, outcome
    frozen_log = json.loads((frozen / "training_log.json").read_text())
    examples = value_examples_from_rows(rows, target="outcome")
    weights = [w for e in examples for w in e.weights]
    zero_head_error = sum(w * v * v for e in examples for w, v in zip(e.weights, e.labels)) / sum(weights)
    assert frozen_log["value_config"]["backbone"] == "frozen" and frozen_log["steps_trained"] > 0
    assert frozen_log["history"][0]["loss"] < 0.9 * zero_head_error   # the head beats scoring every step 0
    out = train_value_model(base, rows[:4], "value", config, tmp_path / "value-1", TRAINED)
    log = json.loads((out / "training_log.json").read_text())
    assert log["optimizer_steps"] == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in log["history"])
    scorer = ValueScorer(out, device="cpu", batch_size=8)
    scores = scorer.score_paths([r["prompt"] for r in rows], [r["completions"] for r in rows])
    assert scorer.forward_calls == -(-len(rows) // 8)
    assert [len(s) for s in scores] == [len(r["completions"]) for r in rows]
    assert all(-1.0 <= v <= 1.0 for s in scores for v in s)
    # a shared prefix step gets the same score on every path through it
    by_node: dict[int, list[float]] = {}
    for row, row_scores in zip(rows, scores):
        for node_id, value in zip(row["node_ids"], row_scores):
            by_node.setdefault(node_id, []).append(value)
    assert all(max(v) - min(v) < 1e-4 for v in by_node.values())
    print(f"\nvalue model on tree {tree.tree_id}: {len(rows)} paths, loss {[h['loss'] for h in log['history']]}")
