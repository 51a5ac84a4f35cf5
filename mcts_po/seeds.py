"""One seed per job, the rest derived from it: `derive_seed(seed, purpose, index)`.

A loop (or a search job) takes one top-level seed. Every random stream under it gets its own
seed derived by hashing (top-level seed, purpose, index), so that changing the top-level seed
changes everything, the same seed gives the same run, and no two streams share a seed by
accident (as `seed + k` for round k and `seed` for the engine would for k = 0). Pure Python.

    from mcts_po.seeds import derive_seed, loop_round_seeds
    derive_seed(0, "search", 3)          # round 3's search seed
    loop_round_seeds(0, 3)               # {"search": ..., "train": ...} recorded per round
"""

from __future__ import annotations

import hashlib
import json

SEED_PURPOSES = ("search", "engine", "eval", "train", "value")


def derive_seed(seed: int, purpose: str, index: int = 0) -> int:
    """A 31-bit seed that depends only on (seed, purpose, index); purpose is one of SEED_PURPOSES."""
    if purpose not in SEED_PURPOSES:
        raise ValueError(f"seed purpose {purpose!r} is not one of: {', '.join(SEED_PURPOSES)}")
    digest = hashlib.sha256(json.dumps([int(seed), purpose, int(index)]).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def loop_seeds(seed: int) -> dict[str, int]:
    """The seeds a loop uses in every round: the engine's and the evaluation's."""
    return {"seed": int(seed), "engine": derive_seed(seed, "engine"), "eval": derive_seed(seed, "eval")}


def loop_round_seeds(seed: int, round_index: int) -> dict[str, int]:
    """The seeds of round `round_index` of a loop with top-level `seed`: its search's and its training's."""
    return {"search": derive_seed(seed, "search", round_index), "train": derive_seed(seed, "train", round_index)}
