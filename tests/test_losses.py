"""Tests for mcts_po.train.losses and mcts_po.train.logprobs (fast: tiny tensors, a tiny random LM).

Expected numbers are computed by hand here with math.log/exp, never with the code under test.
The one-optimiser-step tests build a 2-layer, 32-wide random Llama (vocab 64) from a fixed
seed and feed it integer token ids, so no tokenizer or download is needed.

    PYTHONPATH=. .venv/bin/pytest tests/test_losses.py -q
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mcts_po.train.logprobs import (
    build_pair_batch,
    build_step_batch,
    sequence_logprobs,
    step_logprobs,
    token_logprobs_from_logits,
)
from mcts_po.train.losses import (
    adaptive_step_weights,
    conservative_label_smoothing,
    dpo_loss,
    fractional_ranks_by_value,
    pad_step_weights,
    step_apo_loss,
    tpo_listwise_loss,
    with_chosen_nll,
)

VOCAB = 64


def softplus(x: float) -> float:
    """−log σ(−x) = log(1 + e^x), by hand."""
    return math.log1p(math.exp(x))


def neg_log_sigmoid(x: float) -> float:
    return softplus(-x)


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# ---------------------------------------------------------------- DPO / conservative DPO


def test_dpo_loss_matches_hand_computed_value_and_rewards():
    # Δ = (−1.0 − −1.5) − (−2.0 − −1.5) = 0.5 + 0.5 = 1.0; β = 0.5 → βΔ = 0.5.
    out = dpo_loss(t([-1.0]), t([-2.0]), t([-1.5]), t([-1.5]), beta=0.5)
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-0.5)), abs=1e-6)
    assert out.chosen_rewards.tolist() == pytest.approx([0.25])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.25])
    assert not out.chosen_rewards.requires_grad


def test_dpo_loss_is_the_batch_mean():
    out = dpo_loss(t([0.0, 1.0]), t([0.0, 0.0]), t([0.0, 0.0]), t([0.0, 0.0]), beta=2.0)
    expected = (math.log(2.0) + math.log(1 + math.exp(-2.0))) / 2
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)


def test_label_smoothing_reproduces_the_conservative_formula():
    # βΔ = 0.5 as above; ε = 0.2: −0.8·log σ(0.5) − 0.2·log σ(−0.5).
    out = dpo_loss(t([-1.0]), t([-2.0]), t([-1.5]), t([-1.5]), beta=0.5, label_smoothing=0.2)
    expected = 0.8 * math.log(1 + math.exp(-0.5)) + 0.2 * math.log(1 + math.exp(0.5))
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)


def test_label_smoothing_per_example_tensor():
    policy_chosen, policy_rejected = t([1.0, 0.0]), t([0.0, 1.0])
    zeros = t([0.0, 0.0])
    out = dpo_loss(policy_chosen, policy_rejected, zeros, zeros, beta=1.0, label_smoothing=t([0.0, 0.5]))
    # Pair 0: Δ = 1, ε = 0 → log(1+e^-1). Pair 1: Δ = −1, ε = 0.5 → 0.5·(log(1+e^1) + log(1+e^-1)).
    first = math.log(1 + math.exp(-1.0))
    second = 0.5 * (math.log(1 + math.exp(1.0)) + math.log(1 + math.exp(-1.0)))
    assert out.loss.item() == pytest.approx((first + second) / 2, abs=1e-6)


def test_label_smoothing_half_gives_zero_gradient_at_equal_log_ratios():
    chosen = t([0.0]).requires_grad_()
    dpo_loss(chosen, t([0.0]), t([0.0]), t([0.0]), beta=1.0, label_smoothing=0.5).loss.backward()
    assert chosen.grad.item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("epsilon", [-0.1, 0.6])
def test_label_smoothing_out_of_range_is_refused(epsilon):
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 0.5\]"):
        dpo_loss(t([0.0]), t([0.0]), t([0.0]), t([0.0]), beta=1.0, label_smoothing=epsilon)


def test_mismatched_shapes_and_bad_beta_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(t([0.0, 1.0]), t([0.0]), t([0.0]), t([0.0]), beta=1.0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(t([0.0]), t([0.0]), t([0.0]), t([0.0]), beta=0.0)


def test_conservative_label_smoothing_from_visits():
    epsilon = conservative_label_smoothing([10, 1, 4, 0, 3], [5, 9, 4, 0, 0])
    assert epsilon.tolist() == pytest.approx([5 / 15, 0.5, 0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="visit counts must be >= 0"):
        conservative_label_smoothing([-1], [2])


# ---------------------------------------------------------------- gradient directions


def _pair_gradients(loss_fn, **extra):
    chosen = t([-3.0, -1.0]).requires_grad_()
    rejected = t([-2.0, -4.0]).requires_grad_()
    ref_chosen, ref_rejected = t([-2.5, -1.5]), t([-2.5, -3.0])
    loss_fn(chosen, rejected, ref_chosen, ref_rejected, **extra).loss.backward()
    return chosen.grad, rejected.grad


@pytest.mark.parametrize(
    "loss_fn, extra",
    [
        (dpo_loss, {"beta": 0.1}),
        (dpo_loss, {"beta": 0.5, "label_smoothing": 0.2}),
        (step_apo_loss, {"q_chosen": t([0.8, 0.5]), "q_rejected": t([-0.6, -0.2]), "beta": 0.3, "alpha": 1.0}),
    ],
)
def test_gradient_lowers_loss_by_raising_chosen_and_lowering_rejected(loss_fn, extra):
    chosen_grad, rejected_grad = _pair_gradients(loss_fn, **extra)
    assert (chosen_grad < 0).all(), chosen_grad
    assert (rejected_grad > 0).all(), rejected_grad


# ---------------------------------------------------------------- Step-APO


def test_step_apo_matches_hand_computed_value():
    # Δ = 1.0, β = 0.3, α = 1, Q_w − Q_l = 0.8 − (−0.4) = 1.2: logit = 0.3 − 1.2 = −0.9.
    out = step_apo_loss(t([-1.0]), t([-2.0]), t([-1.5]), t([-1.5]), t([0.8]), t([-0.4]), beta=0.3, alpha=1.0)
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(0.9)), abs=1e-6)
    assert out.chosen_rewards.tolist() == pytest.approx([0.15])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.15])


def test_step_apo_with_alpha_zero_is_dpo():
    args = (t([-1.0, -3.0]), t([-2.0, -1.0]), t([-1.5, -2.0]), t([-1.5, -2.2]))
    apo = step_apo_loss(*args, t([0.9, 0.1]), t([-0.9, 0.0]), beta=0.4, alpha=0.0)
    dpo = dpo_loss(*args, beta=0.4)
    assert apo.loss.item() == pytest.approx(dpo.loss.item(), abs=1e-7)


def test_step_apo_larger_advantage_gap_gives_larger_loss_and_gradient():
    losses, gradients = [], []
    for gap in (0.2, 1.5):
        chosen = t([-1.0]).requires_grad_()
        out = step_apo_loss(chosen, t([-2.0]), t([-1.5]), t([-1.5]), t([gap / 2]), t([-gap / 2]), beta=0.3, alpha=1.0)
        out.loss.backward()
        losses.append(out.loss.item())
        gradients.append(chosen.grad.abs().item())
    assert losses[1] > losses[0]
    assert gradients[1] > gradients[0]
    # |∂L/∂logπ(a_w)| = β·σ(α·gap − βΔ) with Δ = 1, by hand.
    expected = [0.3 / (1 + math.exp(-(gap - 0.3))) for gap in (0.2, 1.5)]
    assert gradients == pytest.approx(expected, abs=1e-6)


def test_step_apo_loss_is_log2_where_the_margin_equals_the_advantage_gap():
    # βΔ = α(Q_w − Q_l) → logit 0 → loss log 2 (the gap is a target margin, not a bonus).
    out = step_apo_loss(t([0.0]), t([-4.0]), t([0.0]), t([0.0]), t([0.6]), t([-0.6]), beta=0.3, alpha=1.0)
    assert out.loss.item() == pytest.approx(math.log(2.0), abs=1e-6)


# ---------------------------------------------------------------- TPO


def _tpo_hand_example():
    policy = t([[[-1.0, -2.0], [-1.5, -0.5], [-3.0, 7.0]]])  # 7.0 is a masked-out step
    ref = t([[[-1.2, -2.5], [-1.0, -1.0], [-2.0, -9.0]]])
    weights = t([[[1.0, 1.0], [0.5, 1.5], [1.0, 1.0]]])
    mask = torch.tensor([[[True, True], [True, True], [True, False]]])
    values = t([[1.0, 0.0, -1.0]])
    return policy, ref, weights, mask, values


def _tpo_hand_expected_loss(beta: float) -> float:
    # Weighted log-ratios: r0 = β(0.2 + 0.5), r1 = β(0.5·−0.5 + 1.5·0.5), r2 = β(−1.0).
    r = [beta * 0.7, beta * 0.5, beta * -1.0]
    gains = [2**1 - 1, 2**0 - 1, 2**-1 - 1]  # 1, 0, −0.5
    inv_discount = [1 / math.log2(2), 1 / math.log2(3), 1 / math.log2(4)]
    total = 0.0
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        lam = abs(gains[i] - gains[j]) * abs(inv_discount[i] - inv_discount[j])
        total += lam * neg_log_sigmoid(r[i] - r[j])
    return total


def test_tpo_matches_hand_computed_value():
    policy, ref, weights, mask, values = _tpo_hand_example()
    out = tpo_listwise_loss(policy, ref, weights, values, mask, beta=0.5)
    assert out.loss.item() == pytest.approx(_tpo_hand_expected_loss(0.5), abs=1e-6)
    assert out.chosen_rewards[0].tolist() == pytest.approx([0.35, 0.25, -0.5], abs=1e-6)
    assert out.rejected_rewards is None


def test_tpo_averages_over_lists_and_equal_value_lists_add_zero():
    policy, ref, weights, mask, values = _tpo_hand_example()
    flat = t([[0.5, 0.5, 0.5]])
    out = tpo_listwise_loss(
        torch.cat([policy, policy]), torch.cat([ref, ref]), torch.cat([weights, weights]),
        torch.cat([values, flat]), torch.cat([mask, mask]), beta=0.5,
    )
    assert out.loss.item() == pytest.approx(_tpo_hand_expected_loss(0.5) / 2, abs=1e-6)


def test_tpo_all_equal_values_give_zero_loss_and_zero_gradient():
    policy = t([[[-1.0], [-3.0], [-2.0]]]).requires_grad_()
    out = tpo_listwise_loss(policy, t([[[-2.0], [-2.0], [-2.0]]]), torch.ones(1, 3, 1), t([[0.3, 0.3, 0.3]]),
                            torch.ones(1, 3, 1, dtype=torch.bool), beta=1.0)
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert policy.grad.abs().sum().item() == 0.0


def test_tpo_loss_is_lower_when_the_policy_order_matches_the_value_order():
    values = t([[1.0, 0.0, -1.0]])
    ones, mask, zeros = torch.ones(1, 3, 1), torch.ones(1, 3, 1, dtype=torch.bool), torch.zeros(1, 3, 1)
    aligned = tpo_listwise_loss(t([[[2.0], [1.0], [0.0]]]), zeros, ones, values, mask, beta=1.0).loss
    reversed_ = tpo_listwise_loss(t([[[0.0], [1.0], [2.0]]]), zeros, ones, values, mask, beta=1.0).loss
    assert aligned.item() < reversed_.item()


@pytest.mark.parametrize("values", [[0.0, 1.0, -1.0], [0.0, 1.0, -1.0, 0.5]])
def test_tpo_gradient_raises_better_responses_relative_to_worse(values):
    count = len(values)
    policy = torch.zeros(1, count, 2).requires_grad_()
    out = tpo_listwise_loss(policy, torch.zeros(1, count, 2), torch.ones(1, count, 2), t([values]),
                            torch.ones(1, count, 2, dtype=torch.bool), beta=0.5)
    out.loss.backward()
    ascent = (-policy.grad[0].sum(-1)).tolist()  # how a descent step moves each response's log-prob
    by_value = [ascent[i] for i in sorted(range(count), key=lambda i: -values[i])]
    assert all(higher > lower for higher, lower in zip(by_value, by_value[1:])), by_value
    assert by_value[0] > 0 > by_value[-1]


def test_tpo_ignores_padded_responses_and_is_permutation_invariant():
    policy, ref, weights, mask, values = _tpo_hand_example()
    padded = tpo_listwise_loss(
        torch.cat([policy, t([[[5.0, 5.0]]])], dim=1), torch.cat([ref, t([[[0.0, 0.0]]])], dim=1),
        torch.cat([weights, torch.ones(1, 1, 2)], dim=1), torch.cat([values, t([[9.0]])], dim=1),
        torch.cat([mask, torch.zeros(1, 1, 2, dtype=torch.bool)], dim=1), beta=0.5,
    )
    assert padded.loss.item() == pytest.approx(_tpo_hand_expected_loss(0.5), abs=1e-6)
    order = [2, 0, 1]
    permuted = tpo_listwise_loss(policy[:, order], ref[:, order], weights[:, order], values[:, order],
                                 mask[:, order], beta=0.5)
    assert permuted.loss.item() == pytest.approx(_tpo_hand_expected_loss(0.5), abs=1e-6)


def test_tied_values_share_their_mean_rank():
    ranks = fractional_ranks_by_value(t([[0.5, 1.0, 0.5, -1.0, 0.0]]), torch.tensor([[True, True, True, True, False]]))
    assert ranks[0].tolist() == [2.5, 1.0, 2.5, 4.0, 0.0]


def test_tpo_tied_pair_contributes_nothing_but_ties_shift_discounts():
    # values [1, 0, 0]: pairs (0,1), (0,2) only; ranks 1, 2.5, 2.5; rewards all 0 → −log σ(0) = log 2.
    zeros = torch.zeros(1, 3, 1)
    out = tpo_listwise_loss(zeros, zeros, torch.ones(1, 3, 1), t([[1.0, 0.0, 0.0]]),
                            torch.ones(1, 3, 1, dtype=torch.bool), beta=1.0)
    lam = 1.0 * abs(1 / math.log2(2) - 1 / math.log2(3.5))
    assert out.loss.item() == pytest.approx(2 * lam * math.log(2), abs=1e-6)


# ---------------------------------------------------------------- adaptive step weights


def test_adaptive_step_weights_on_a_hand_made_list():
    responses = [
        ["a", "b", "c"],  # A, best: no better response → all 1
        ["a", "b", "d"],  # B: better = {A, E}; a shared by both → 0, b by A only → 1/2, d → 1
        ["a", "e"],  # C: better = {A, E, B}; a shared by all → 0, e → 1
        ["f"],  # D: nothing shared → 1
        ["a", "g"],  # E: better = {A}; a shared → 0, g → 1
    ]
    values = [1.0, 0.0, -1.0, -1.0, 0.5]
    weights = adaptive_step_weights(responses, values)
    # Raw weights rescaled so each response's weights sum to its step count.
    assert weights[0] == pytest.approx([1.0, 1.0, 1.0])
    assert weights[1] == pytest.approx([0.0, 0.5 * 3 / 1.5, 1.0 * 3 / 1.5])  # [0, 1, 2]
    assert weights[2] == pytest.approx([0.0, 2.0])
    assert weights[3] == pytest.approx([1.0])
    assert weights[4] == pytest.approx([0.0, 2.0])


def test_adaptive_step_weights_share_a_step_only_after_the_same_prefix():
    # "b" appears in both, but after different first steps: different tree nodes, not shared.
    weights = adaptive_step_weights([["a", "b"], ["x", "b"]], [1.0, -1.0])
    assert weights == [[1.0, 1.0], [1.0, 1.0]]


def test_adaptive_step_weights_equal_values_do_not_discount_each_other_and_duplicates_get_zero():
    assert adaptive_step_weights([["a", "b"], ["a", "c"]], [0.5, 0.5]) == [[1.0, 1.0], [1.0, 1.0]]
    assert adaptive_step_weights([["a", "b"], ["a", "b"]], [1.0, 0.0]) == [[1.0, 1.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="2 responses but 1 values"):
        adaptive_step_weights([["a"], ["b"]], [1.0])


def test_pad_step_weights_zero_pads():
    padded = pad_step_weights([[[1.0, 2.0], [3.0]], [[4.0]]], num_responses=2, num_steps=2)
    assert padded.tolist() == [[[1.0, 2.0], [3.0, 0.0]], [[4.0, 0.0], [0.0, 0.0]]]


# ---------------------------------------------------------------- log-probabilities


def tiny_causal_lm(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def test_token_logprobs_apply_the_causal_shift_on_fixed_logits():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = math.log(3.0)  # position 0 predicts token 1 (= 2): p = 3/6
    logits[0, 1, 1] = math.log(5.0)  # position 1 predicts token 2 (= 0): p = 1/8
    per_token = token_logprobs_from_logits(logits, torch.tensor([[3, 2, 0]]))
    assert per_token[0].tolist() == pytest.approx([0.0, math.log(3 / 6), math.log(1 / 8)], abs=1e-6)


def test_sequence_logprobs_equals_a_manual_loop_over_tokens():
    model = tiny_causal_lm()
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, VOCAB, (2, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    completion_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    completion_mask[:, 5:] = True
    with torch.no_grad():
        got = sequence_logprobs(model, input_ids, attention_mask, completion_mask)
        logits = model(input_ids=input_ids).logits
    for row in range(2):
        expected = 0.0
        for position in range(5, 9):
            log_probs = torch.log_softmax(logits[row, position - 1].double(), dim=-1)
            expected += log_probs[input_ids[row, position]].item()
        assert got[row].item() == pytest.approx(expected, abs=1e-4)


def test_left_and_right_padding_give_the_same_logprobs():
    model = tiny_causal_lm()
    tokens = [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14]]  # last 2 tokens of each are the completion
    width = 6
    right_ids, left_ids = torch.zeros(2, width, dtype=torch.long), torch.zeros(2, width, dtype=torch.long)
    right_mask, left_mask = torch.zeros_like(right_ids), torch.zeros_like(left_ids)
    right_completion = torch.zeros(2, width, dtype=torch.bool)
    left_completion = torch.zeros(2, width, dtype=torch.bool)
    for row, sequence in enumerate(tokens):
        n = len(sequence)
        right_ids[row, :n], right_mask[row, :n] = torch.tensor(sequence), 1
        right_completion[row, n - 2 : n] = True
        left_ids[row, width - n :], left_mask[row, width - n :] = torch.tensor(sequence), 1
        left_completion[row, width - 2 :] = True
    with torch.no_grad():
        right = sequence_logprobs(model, right_ids, right_mask, right_completion)
        left = sequence_logprobs(model, left_ids, left_mask, left_completion)
        alone = sequence_logprobs(model, torch.tensor([tokens[1]]), torch.ones(1, 4, dtype=torch.long),
                                  torch.tensor([[False, False, True, True]]))
    assert left.tolist() == pytest.approx(right.tolist(), abs=1e-5)
    assert right[1].item() == pytest.approx(alone[0].item(), abs=1e-5)


def test_step_logprobs_split_the_sequence_sum_by_step():
    model = tiny_causal_lm()
    input_ids = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]])
    step_ids = torch.tensor([[-1, -1, 0, 0, 1, 1, 1, -1]])
    with torch.no_grad():
        per_step = step_logprobs(model, input_ids, attention_mask, step_ids, num_steps=3)
        total = sequence_logprobs(model, input_ids, attention_mask, step_ids >= 0)
        logits = model(input_ids=input_ids[:, :7]).logits[0].double().log_softmax(-1)
    by_hand = [sum(logits[p - 1, input_ids[0, p]].item() for p in positions) for positions in ([2, 3], [4, 5, 6])]
    assert per_step[0, :2].tolist() == pytest.approx(by_hand, abs=1e-4)
    assert per_step[0, 2].item() == 0.0
    assert per_step.sum().item() == pytest.approx(total.item(), abs=1e-4)


def test_a_completion_at_position_zero_is_refused():
    model = tiny_causal_lm()
    ids = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="position 0"):
        sequence_logprobs(model, ids, torch.ones_like(ids), torch.tensor([[True, True]]))


# ---------------------------------------------------------------- tokenisation


def toy_tokenizer():
    """Character-level BPE with a few merges (one of them, " th", can straddle a boundary)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0}
    for character in "abcdefghijklmnopqrstuvwxyz0123456789 .\n=+?":
        vocab[character] = len(vocab)
    merges = [("\n", "\n"), (" ", "t"), ("t", "h"), (" t", "h")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab=vocab, merges=merges)), eos_token="<eos>")


def _completion_text(tokenizer, batch, row):
    ids = batch.input_ids[row][batch.completion_mask[row]].tolist()
    return "".join(tokenizer.convert_ids_to_tokens(ids))


def test_build_pair_batch_marks_the_completion_and_appends_eos_only_where_asked():
    tokenizer = toy_tokenizer()
    batch = build_pair_batch(tokenizer, ["q 1+1?\n\n", "q 2+2?\n\n"], ["2 is it\n\n", "so 4."],
                             append_eos=[False, True], max_length=32)
    assert _completion_text(tokenizer, batch, 0) == "2 is it\n\n"
    assert _completion_text(tokenizer, batch, 1) == "so 4.<eos>"
    eos = tokenizer.eos_token_id
    assert eos not in batch.input_ids[0][batch.attention_mask[0].bool()].tolist()
    # Right padding: pads (EOS as pad) after the real tokens, masks agree.
    lengths = batch.attention_mask.sum(-1).tolist()
    assert lengths == [len("q 1+1?\n\n") - 1 + len("2 is it\n\n") - 1, len("q 2+2?\n\n") - 1 + len("so 4.") + 1]
    assert batch.attention_mask[0, : lengths[0]].all() and not batch.attention_mask[0, lengths[0]:].any()
    assert batch.num_steps.tolist() == [1, 1]


def test_a_token_straddling_prompt_and_completion_counts_for_the_completion():
    tokenizer = toy_tokenizer()
    batch = build_pair_batch(tokenizer, ["say "], ["the end"], append_eos=[False], max_length=16)
    tokens = tokenizer.convert_ids_to_tokens(batch.input_ids[0].tolist())
    assert tokens == ["s", "a", "y", " th", "e", " ", "e", "n", "d"]
    assert batch.completion_mask[0].tolist() == [False] * 3 + [True] * 6


def test_the_prompt_is_cut_from_the_left_never_the_completion():
    tokenizer = toy_tokenizer()
    batch = build_pair_batch(tokenizer, ["abcdefgh"], ["xyz"], append_eos=[True], max_length=6)
    assert "".join(tokenizer.convert_ids_to_tokens(batch.input_ids[0].tolist())) == "ghxyz<eos>"
    assert batch.completion_mask[0].tolist() == [False, False, True, True, True, True]
    with pytest.raises(ValueError, match=r"example 0: the completion has 4 tokens \(with EOS\).*max_length=4"):
        build_pair_batch(tokenizer, ["ab"], ["xyz"], append_eos=[True], max_length=4)


def test_left_padding_aligns_sequences_on_the_right():
    tokenizer = toy_tokenizer()
    right = build_pair_batch(tokenizer, ["ab", "abcd"], ["x", "y"], [True, False], max_length=10)
    left = build_pair_batch(tokenizer, ["ab", "abcd"], ["x", "y"], [True, False], max_length=10, padding_side="left")
    # "ab" + "x" + EOS = 4 tokens, "abcd" + "y" = 5.
    assert left.attention_mask.tolist() == [[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert left.input_ids[0, 1:].tolist() == right.input_ids[0, :4].tolist()
    assert left.completion_mask[0].tolist() == [False, False, False, True, True]
    assert left.completion_mask[1].tolist() == right.completion_mask[1].tolist()


def test_build_step_batch_numbers_the_steps_and_gives_eos_to_the_last_step():
    tokenizer = toy_tokenizer()
    batch = build_step_batch(tokenizer, ["q?\n\n"], [["a=1\n\n", "b=2\n\n", "so 3."]], [True], max_length=32)
    step_ids = batch.step_ids[0].tolist()
    tokens = tokenizer.convert_ids_to_tokens(batch.input_ids[0].tolist())
    assert tokens[:3] == ["q", "?", "\n\n"] and step_ids[:3] == [-1, -1, -1]
    assert step_ids[3:] == [0] * 4 + [1] * 4 + [2] * 6
    assert tokens[-1] == "<eos>"
    assert batch.num_steps.tolist() == [3]


def test_build_batch_input_errors_name_the_example():
    tokenizer = toy_tokenizer()
    with pytest.raises(ValueError, match="example 1: empty prompt"):
        build_pair_batch(tokenizer, ["a", ""], ["b", "c"], [False, False], max_length=8)
    with pytest.raises(ValueError, match="must have the same length"):
        build_pair_batch(tokenizer, ["a"], ["b", "c"], [False], max_length=8)
    with pytest.raises(ValueError, match="padding_side"):
        build_pair_batch(tokenizer, ["a"], ["b"], [False], max_length=8, padding_side="middle")


# ---------------------------------------------------------------- one optimiser step on a tiny LM


def _pair_inputs(prompt, chosen, rejected):
    """Right-padded [2, T] batch: row 0 = prompt + chosen, row 1 = prompt + rejected."""
    rows = [prompt + chosen, prompt + rejected]
    width = max(len(row) for row in rows)
    input_ids = torch.zeros(2, width, dtype=torch.long)
    attention_mask = torch.zeros(2, width, dtype=torch.long)
    completion_mask = torch.zeros(2, width, dtype=torch.bool)
    for index, (row, completion) in enumerate(zip(rows, (chosen, rejected))):
        input_ids[index, : len(row)] = torch.tensor(row)
        attention_mask[index, : len(row)] = 1
        completion_mask[index, len(prompt) : len(row)] = True
    return input_ids, attention_mask, completion_mask


def _margin(policy, reference, inputs):
    with torch.no_grad():
        policy_logps = sequence_logprobs(policy, *inputs)
        ref_logps = sequence_logprobs(reference, *inputs)
    log_ratio = policy_logps - ref_logps
    return (log_ratio[0] - log_ratio[1]).item()


def _one_step(policy, reference, inputs, loss_of, optimizer):
    policy.train()
    logps = sequence_logprobs(policy, *inputs)
    with torch.no_grad():
        ref_logps = sequence_logprobs(reference, *inputs)
    loss = loss_of(logps[0:1], logps[1:2], ref_logps[0:1], ref_logps[1:2])
    optimizer.zero_grad()
    loss.loss.backward()
    optimizer.step()
    policy.eval()


EOS_ID = 1


@pytest.mark.parametrize(
    "name, prompt, chosen, rejected, loss_of",
    [
        ("dpo", [2, 10, 11, 12], [20, 21, 22, EOS_ID], [30, 31, EOS_ID],
         lambda *lp: dpo_loss(*lp, beta=0.1)),
        # Step-DPO: prompt = question + shared correct prefix; one intermediate step, no EOS.
        ("step-dpo", [2, 10, 11, 12, 40, 41, 42, 3], [20, 21, 22, 3], [30, 31, 32, 33, 3],
         lambda *lp: dpo_loss(*lp, beta=0.4)),
        ("conservative-dpo", [2, 10, 11], [20, 21], [30, 31],
         lambda *lp: dpo_loss(*lp, beta=0.1, label_smoothing=conservative_label_smoothing(8, 2))),
    ],
)
def test_one_adam_step_raises_chosen_minus_rejected_log_ratio(name, prompt, chosen, rejected, loss_of):
    policy = tiny_causal_lm(seed=3)
    reference = copy.deepcopy(policy).requires_grad_(False)
    inputs = _pair_inputs(prompt, chosen, rejected)
    assert _margin(policy, reference, inputs) == 0.0
    _one_step(policy, reference, inputs, loss_of, torch.optim.Adam(policy.parameters(), lr=1e-2))
    assert _margin(policy, reference, inputs) > 0.05, name


def test_one_sgd_step_moves_a_larger_advantage_gap_further():
    # SGD (not Adam, whose first step is sign-like): the step is proportional to the gradient.
    inputs = _pair_inputs([2, 10, 11, 12], [20, 21, 22], [30, 31, 32])
    margins = {}
    for gap in (0.1, 1.6):
        policy = tiny_causal_lm(seed=4)
        reference = copy.deepcopy(policy).requires_grad_(False)
        loss_of = lambda *lp, gap=gap: step_apo_loss(*lp, t([gap / 2]), t([-gap / 2]), beta=0.3, alpha=1.0)
        _one_step(policy, reference, inputs, loss_of, torch.optim.SGD(policy.parameters(), lr=0.002))
        margins[gap] = _margin(policy, reference, inputs)
    assert margins[0.1] > 0
    # For a small step the margin moves in proportion to |∂L/∂Δ| = β·σ(α·gap − βΔ), Δ = 0 at the
    # start: the ratio should be close to σ(1.6)/σ(0.1) ≈ 1.585.
    expected_ratio = (1 / (1 + math.exp(-1.6))) / (1 / (1 + math.exp(-0.1)))
    assert margins[1.6] / margins[0.1] == pytest.approx(expected_ratio, rel=0.05), margins


def test_a_few_tpo_steps_put_the_policy_log_ratios_in_value_order():
    prompt = [2, 10, 11, 12]
    shared_good, shared_bad = [40, 41, 3], [50, 51, 3]
    step_tokens = {
        "A": [shared_good, [20, 21, EOS_ID]],
        "B": [shared_good, [22, 23, EOS_ID]],
        "C": [shared_bad, [24, 25, EOS_ID]],
        "D": [shared_bad, [26, 27, EOS_ID]],
    }
    values = [1.0, 0.5, -0.5, -1.0]
    names = list(step_tokens)
    input_ids = torch.tensor([prompt + sum(step_tokens[name], []) for name in names])
    step_ids = torch.tensor([[-1] * len(prompt) + [0] * 3 + [1] * 3] * len(names))
    attention_mask = torch.ones_like(input_ids)
    keys = [[tuple(step) for step in step_tokens[name]] for name in names]
    weights = pad_step_weights([adaptive_step_weights(keys, values)], num_responses=4, num_steps=2)
    # D: better = {A, B, C}; its first step is shared with C only -> raw [2/3, 1] -> [0.8, 1.2].
    assert weights[0].flatten().tolist() == pytest.approx([1.0, 1.0, 0.0, 2.0, 1.0, 1.0, 0.8, 1.2])
    step_mask = torch.ones(1, 4, 2, dtype=torch.bool)
    policy = tiny_causal_lm(seed=5)
    reference = copy.deepcopy(policy).requires_grad_(False)
    with torch.no_grad():
        ref_steps = step_logprobs(reference, input_ids, attention_mask, step_ids).unsqueeze(0)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    policy.train()
    for _ in range(8):
        policy_steps = step_logprobs(policy, input_ids, attention_mask, step_ids).unsqueeze(0)
        out = tpo_listwise_loss(policy_steps, ref_steps, weights, t([values]), step_mask, beta=0.5)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    policy.eval()
    with torch.no_grad():
        policy_steps = step_logprobs(policy, input_ids, attention_mask, step_ids).unsqueeze(0)
        final = tpo_listwise_loss(policy_steps, ref_steps, weights, t([values]), step_mask, beta=0.5)
    sequence_log_ratios = (policy_steps - ref_steps)[0].sum(-1).tolist()
    assert sequence_log_ratios == sorted(sequence_log_ratios, reverse=True), sequence_log_ratios
    rewards = final.chosen_rewards[0].tolist()
    assert rewards == sorted(rewards, reverse=True), rewards
    assert final.loss.item() < out.loss.item()


def test_chosen_nll_adds_the_length_normalised_nll_of_the_chosen_steps():
    policy_chosen = torch.tensor([-4.0, -6.0], requires_grad=True)
    base = dpo_loss(policy_chosen, torch.tensor([-5.0, -5.0]), torch.tensor([-4.5, -6.0]), torch.tensor([-5.0, -4.0]),
                    beta=0.5)
    counts = torch.tensor([2, 3])
    out, nll = with_chosen_nll(base, policy_chosen, counts, weight=0.5)
    assert nll.item() == pytest.approx((4.0 / 2 + 6.0 / 3) / 2)  # = 2.0
    assert out.loss.item() == pytest.approx(base.loss.item() + 0.5 * 2.0)
    assert torch.equal(out.chosen_rewards, base.chosen_rewards)
    # The NLL part of the gradient is -weight / (count * batch) on each chosen log-prob.
    (grad_with,) = torch.autograd.grad(out.loss, policy_chosen, retain_graph=True)
    (grad_without,) = torch.autograd.grad(base.loss, policy_chosen)
    assert (grad_with - grad_without).tolist() == pytest.approx([-0.5 / (2 * 2), -0.5 / (3 * 2)])


def test_chosen_nll_with_weight_zero_leaves_the_loss_and_refuses_bad_input():
    policy_chosen = torch.tensor([-3.0])
    base = dpo_loss(policy_chosen, torch.tensor([-3.0]), torch.tensor([-3.0]), torch.tensor([-3.0]), beta=0.1)
    out, nll = with_chosen_nll(base, policy_chosen, torch.tensor([3]), weight=0.0)
    assert out is base and nll.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one token"):
        with_chosen_nll(base, policy_chosen, torch.tensor([0]), weight=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        with_chosen_nll(base, policy_chosen, torch.tensor([3]), weight=-1.0)
    with pytest.raises(ValueError, match="one shape"):
        with_chosen_nll(base, policy_chosen, torch.tensor([3, 4]), weight=1.0)
