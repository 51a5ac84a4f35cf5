"""Training on preference data from trees: log-probabilities (`logprobs`), losses (`losses`).

    from mcts_po.train.losses import dpo_loss, step_apo_loss, tpo_listwise_loss
    from mcts_po.train.logprobs import build_pair_batch, sequence_logprobs
"""
