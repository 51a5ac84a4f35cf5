"""Preference losses on log-probabilities: DPO / conservative DPO, Step-APO, TPO list ranking.

Each loss is a small pure function of per-sequence (or per-step) summed log-probabilities of
the policy and the frozen reference (see `mcts_po.train.logprobs`), never of models. All
return a `PreferenceLoss`: `loss` (a scalar, the mean over the batch — pairs or lists — ready
for `.backward()`), and detached implicit rewards `β·(log πθ − log πref)` for logging.

- `dpo_loss`: DPO (Rafailov et al. 2023, eq. 7); Step-DPO (Lai et al. 2024) is the same loss
  on a single step after a shared prefix. With `label_smoothing=ε` it is conservative DPO
  (Mitchell 2023), which MCTS-DPO (Xie et al. 2024) uses with ε from visit counts:
  `conservative_label_smoothing(N_w, N_l) = min(N_l / (N_w + N_l), 0.5)`.
- `step_apo_loss`: CPL's Step-APO (Wang et al. 2024): DPO with an advantage offset,
  `−log σ(β·Δ − α(Q_w − Q_l))`.
- `with_chosen_nll`: adds the length-normalised NLL of the chosen completions to a pairwise
  loss (RPO, Pang et al. 2024: `L_DPO + λ·NLL(y_w)/|y_w|`), which keeps the policy's likelihood
  of the preferred steps from falling while the margin grows.
- `tpo_listwise_loss` + `adaptive_step_weights`: TPO (Liao et al. 2024) Preference List
  Ranking with the Adaptive Step Reward, written from its definition (the paper's released
  code has a sign error and no causal shift).

The formulas, conventions and data columns are in docs/losses.md.

    from mcts_po.train.losses import dpo_loss
    out = dpo_loss(pol_w, pol_l, ref_w, ref_l, beta=0.1)
    out.loss.backward()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PreferenceLoss:
    """What every loss returns.

    loss: scalar mean over the batch (pairs, or lists for TPO).
    chosen_rewards / rejected_rewards: detached β·(log πθ − log πref), Tensor[B] for pairwise
    losses. For TPO, `chosen_rewards` is Tensor[B, K], the reward r̂ of every response of
    every list (padded responses hold 0), and `rejected_rewards` is None.
    """

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor | None


def _check_pair_shapes(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"log-probability tensors must have one shape, got {shapes}")


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float | torch.Tensor = 0.0,
) -> PreferenceLoss:
    """DPO, Rafailov et al. 2023 eq. 7, optionally conservative (label smoothing).

        Δ = (log πθ(y_w) − log πref(y_w)) − (log πθ(y_l) − log πref(y_l))
        L = −(1 − ε)·log σ(βΔ) − ε·log σ(−βΔ)

    ε = 0 is plain DPO. ε > 0 is conservative DPO (Mitchell 2023): the label is trusted with
    probability 1 − ε; MCTS-DPO (Xie et al. 2024) sets ε per pair from visit counts with
    `conservative_label_smoothing`. `label_smoothing` is a float or a Tensor[B] in [0, 0.5].
    Inputs are Tensor[B] summed log-probabilities of the completions (the step, for Step-DPO).
    """
    _check_pair_shapes(
        policy_chosen=policy_chosen, policy_rejected=policy_rejected, ref_chosen=ref_chosen, ref_rejected=ref_rejected
    )
    _check_beta(beta)
    epsilon = torch.as_tensor(label_smoothing, dtype=policy_chosen.dtype, device=policy_chosen.device)
    if epsilon.dim() > 0 and tuple(epsilon.shape) != tuple(policy_chosen.shape):
        raise ValueError(f"label_smoothing shape {tuple(epsilon.shape)} != batch shape {tuple(policy_chosen.shape)}")
    if bool((epsilon < 0).any()) or bool((epsilon > 0.5).any()):
        raise ValueError("label_smoothing must lie in [0, 0.5] (above 0.5 the preference would flip)")
    chosen_log_ratio = policy_chosen - ref_chosen
    rejected_log_ratio = policy_rejected - ref_rejected
    logits = beta * (chosen_log_ratio - rejected_log_ratio)
    per_pair = -(1 - epsilon) * F.logsigmoid(logits) - epsilon * F.logsigmoid(-logits)
    return PreferenceLoss(
        loss=per_pair.mean(),
        chosen_rewards=(beta * chosen_log_ratio).detach(),
        rejected_rewards=(beta * rejected_log_ratio).detach(),
    )


def conservative_label_smoothing(
    visits_chosen: torch.Tensor | Sequence[float] | float,
    visits_rejected: torch.Tensor | Sequence[float] | float,
) -> torch.Tensor:
    """MCTS-DPO's per-pair label smoothing ε = min(N_l / (N_w + N_l), 0.5) from MCTS visits.

    The more the search visited the rejected step relative to the chosen one, the less sure
    the preference, up to 0.5 (no preference). Pairs with N_w + N_l = 0 get ε = 0 (plain DPO).
    """
    chosen = torch.as_tensor(visits_chosen, dtype=torch.float32)
    rejected = torch.as_tensor(visits_rejected, dtype=torch.float32)
    if bool((chosen < 0).any()) or bool((rejected < 0).any()):
        raise ValueError("visit counts must be >= 0")
    total = chosen + rejected
    share = torch.where(total > 0, rejected / total.clamp(min=1e-12), torch.zeros_like(total))
    return share.clamp(max=0.5)


def step_apo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    q_chosen: torch.Tensor,
    q_rejected: torch.Tensor,
    beta: float = 0.3,
    alpha: float = 1.0,
) -> PreferenceLoss:
    """Step-APO, CPL (Wang et al. 2024), the loss of their code (β = 0.3, α = 1):

        L = −log σ( β[(log πθ/πref)(a_w|s) − (log πθ/πref)(a_l|s)] − α(Q_w − Q_l) )

    Both steps share the parent state s, so the advantage gap A_w − A_l equals Q_w − Q_l.
    The MINUS sign makes the gap a target margin: the loss is log 2 where βΔ = α(Q_w − Q_l),
    not where Δ = 0, so a pair whose Q values differ more must open a larger log-ratio margin
    before its loss gets small, and at any given margin its loss and its gradient
    |∂L/∂Δ| = β·σ(α(Q_w − Q_l) − βΔ) are larger: it pushes harder. α = 0 is DPO.
    Q values are data (detached); inputs are Tensor[B].
    """
    _check_pair_shapes(
        policy_chosen=policy_chosen,
        policy_rejected=policy_rejected,
        ref_chosen=ref_chosen,
        ref_rejected=ref_rejected,
        q_chosen=q_chosen,
        q_rejected=q_rejected,
    )
    _check_beta(beta)
    chosen_log_ratio = policy_chosen - ref_chosen
    rejected_log_ratio = policy_rejected - ref_rejected
    advantage_gap = (q_chosen - q_rejected).detach().to(chosen_log_ratio.dtype)
    logits = beta * (chosen_log_ratio - rejected_log_ratio) - alpha * advantage_gap
    return PreferenceLoss(
        loss=-F.logsigmoid(logits).mean(),
        chosen_rewards=(beta * chosen_log_ratio).detach(),
        rejected_rewards=(beta * rejected_log_ratio).detach(),
    )


def with_chosen_nll(
    out: PreferenceLoss,
    policy_chosen: torch.Tensor,
    chosen_token_counts: torch.Tensor,
    weight: float,
) -> tuple[PreferenceLoss, torch.Tensor]:
    """Add λ·mean_b(−log πθ(y_w,b) / |y_w,b|) to a pairwise loss (RPO, Pang et al. 2024).

    `policy_chosen` is Tensor[B] summed log-probs of the chosen completions (with gradient),
    `chosen_token_counts` Tensor[B] their token counts (> 0). Returns the new loss and the
    detached per-token NLL (its batch mean), for logging. λ = 0 gives `out` back unchanged.
    """
    _check_pair_shapes(policy_chosen=policy_chosen, chosen_token_counts=chosen_token_counts)
    if weight < 0:
        raise ValueError(f"the NLL weight must be >= 0, got {weight}")
    if bool((chosen_token_counts <= 0).any()):
        raise ValueError("every chosen completion needs at least one token for its NLL")
    nll = (-policy_chosen / chosen_token_counts.to(policy_chosen.dtype)).mean()
    if weight == 0:
        return out, nll.detach()
    return PreferenceLoss(out.loss + weight * nll, out.chosen_rewards, out.rejected_rewards), nll.detach()


def sft_nll_loss(completion_logps: torch.Tensor, token_counts: torch.Tensor) -> torch.Tensor:
    """Supervised fine-tuning: the negative log-likelihood of the completion tokens, averaged over
    all completion tokens of the batch, −Σ_b log πθ(y_b) / Σ_b |y_b| (a scalar).

    `completion_logps` is Tensor[B] summed log-probs of each completion (with gradient),
    `token_counts` Tensor[B] their token counts (> 0 each).
    """
    _check_pair_shapes(completion_logps=completion_logps, token_counts=token_counts)
    if bool((token_counts <= 0).any()):
        raise ValueError("every SFT completion needs at least one token")
    return -completion_logps.sum() / token_counts.sum().to(completion_logps.dtype)


def adaptive_step_weights(
    steps_per_response: Sequence[Sequence[Hashable]],
    values: Sequence[float],
) -> list[list[float]]:
    """TPO's Adaptive Step Reward weights for one list (Liao et al. 2024, Sec. "Adaptive Step
    Reward"): steps shared with better responses count less, discriminative steps count more.

    `steps_per_response[i]` identifies response i's steps (node ids or step texts); `values[i]`
    is its value. Step s of response i is *shared* with response j when j has the identical
    steps 0..s (the same tree node: same step after the same prefix). With
    H_i = {j : v_j > v_i} the strictly better responses,

        raw w_{i,s} = 1 − |{j ∈ H_i : j shares step s of i}| / |H_i|     (1 when H_i is empty)
        w_{i,s}     = raw w_{i,s} · n_i / Σ_s' raw w_{i,s'}               (n_i = steps of i)

    so a response's weights sum to its step count (its total reward scale is unchanged and
    only moves onto the steps where it departs from better responses). A response all of whose
    steps are shared with every better response (a duplicate or prefix of one) gets all zeros.
    The paper measures "shared" by embedding similarity to the best response; on a search
    tree identity of nodes is exact, so this uses that.
    """
    if len(steps_per_response) != len(values):
        raise ValueError(f"{len(steps_per_response)} responses but {len(values)} values")
    prefixes = [
        [tuple(steps[: position + 1]) for position in range(len(steps))] for steps in steps_per_response
    ]
    weights: list[list[float]] = []
    for index, own_prefixes in enumerate(prefixes):
        better = [other for other in range(len(values)) if values[other] > values[index]]
        if not better:
            weights.append([1.0] * len(own_prefixes))
            continue
        better_prefix_sets = [set(prefixes[other]) for other in better]
        raw = [
            1.0 - sum(prefix in prefix_set for prefix_set in better_prefix_sets) / len(better)
            for prefix in own_prefixes
        ]
        total = sum(raw)
        scale = len(raw) / total if total > 0 else 0.0
        weights.append([weight * scale for weight in raw])
    return weights


def fractional_ranks_by_value(values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Rank of each response within its list by value, 1 = best; ties share the mean rank.

    values, response_mask: Tensor[B, K]. Padded responses get rank 0 (never used).
    """
    valid = response_mask.bool()
    above = (values.unsqueeze(2) < values.unsqueeze(1)) & valid.unsqueeze(1)  # [b, i, j]: v_j > v_i
    tied = (values.unsqueeze(2) == values.unsqueeze(1)) & valid.unsqueeze(1)
    # Ranks of a tie group are n_above+1 .. n_above+n_tied; their mean is n_above + (n_tied+1)/2.
    ranks = above.sum(-1).to(values.dtype) + (tied.sum(-1).to(values.dtype) + 1) / 2
    return torch.where(valid, ranks, torch.zeros_like(ranks))


def lambdarank_pair_weights(values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """λ_ij = |G_i − G_j|·|1/D_i − 1/D_j| for pairs with v_i > v_j, else 0: Tensor[B, K, K].

    G = 2^v − 1 (the exponential NDCG gain of LambdaRank, Burges 2010, also LiPO-λ's);
    D = log2(1 + rank), rank 1 = best by value, ties sharing their mean rank.
    """
    valid = response_mask.bool()
    gains = torch.pow(2.0, values) - 1
    discounts = torch.log2(1 + fractional_ranks_by_value(values, response_mask).clamp(min=1))
    inverse = 1 / discounts
    weights = (gains.unsqueeze(2) - gains.unsqueeze(1)).abs() * (inverse.unsqueeze(2) - inverse.unsqueeze(1)).abs()
    ordered = values.unsqueeze(2) > values.unsqueeze(1)
    counted = ordered & valid.unsqueeze(2) & valid.unsqueeze(1)
    return torch.where(counted, weights, torch.zeros_like(weights))


def tpo_listwise_loss(
    policy_step_logps: torch.Tensor,
    ref_step_logps: torch.Tensor,
    step_weights: torch.Tensor,
    values: torch.Tensor,
    step_mask: torch.Tensor,
    beta: float,
) -> PreferenceLoss:
    """TPO Preference List Ranking with the Adaptive Step Reward (Liao et al. 2024).

        r̂_i = β Σ_s w_{i,s}·(log πθ(step s) − log πref(step s))    (adaptive step reward)
        L   = −Σ_{v_i > v_j} λ_ij · log σ(r̂_i − r̂_j)                (λ from `lambdarank_pair_weights`)

    averaged over the B lists of the batch (each list's pair sum divided by B; a list whose
    values are all equal has no pairs and adds 0). The gradient raises r̂ of the better
    response of each pair relative to the worse one; λ weighs pairs that swap top ranks most.

    Shapes: policy/ref_step_logps, step_weights, step_mask: [B, K, S] (list, response, step);
    values: [B, K]. A padded response is one whose step_mask is all False.
    """
    _check_pair_shapes(
        policy_step_logps=policy_step_logps, ref_step_logps=ref_step_logps, step_weights=step_weights, step_mask=step_mask
    )
    _check_beta(beta)
    if tuple(values.shape) != tuple(policy_step_logps.shape[:2]):
        raise ValueError(f"values {tuple(values.shape)} != [lists, responses] {tuple(policy_step_logps.shape[:2])}")
    counted_steps = step_mask.to(policy_step_logps.dtype)
    weighted_log_ratios = step_weights.detach() * (policy_step_logps - ref_step_logps) * counted_steps
    rewards = beta * weighted_log_ratios.sum(-1)  # [B, K]
    response_mask = step_mask.bool().any(-1)
    pair_weights = lambdarank_pair_weights(values.detach().to(rewards.dtype), response_mask)
    margins = rewards.unsqueeze(2) - rewards.unsqueeze(1)  # [b, i, j] = r̂_i − r̂_j
    per_list = (pair_weights * -F.logsigmoid(margins)).sum(dim=(1, 2))
    return PreferenceLoss(loss=per_list.mean(), chosen_rewards=rewards.detach(), rejected_rewards=None)


def pad_step_weights(weights: Sequence[Sequence[Sequence[float]]], num_responses: int, num_steps: int) -> torch.Tensor:
    """Lists of per-response step weights (from `adaptive_step_weights`) -> Tensor[B, K, S], 0-padded."""
    padded = torch.zeros(len(weights), num_responses, num_steps)
    for list_index, responses in enumerate(weights):
        for response_index, steps in enumerate(responses):
            if len(steps) > num_steps:
                raise ValueError(f"list {list_index} response {response_index} has {len(steps)} > {num_steps} steps")
            padded[list_index, response_index, : len(steps)] = torch.tensor(steps, dtype=torch.float32)
    return padded


__all__ = [
    "PreferenceLoss",
    "adaptive_step_weights",
    "conservative_label_smoothing",
    "dpo_loss",
    "fractional_ranks_by_value",
    "lambdarank_pair_weights",
    "pad_step_weights",
    "step_apo_loss",
    "tpo_listwise_loss",
]

