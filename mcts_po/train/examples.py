"""Extracted rows -> training examples: the completion text exactly as trained, the EOS decision.

An intermediate step is trained followed by the step delimiter the search recorded in its tree
(the rows' `step_delimiter` column, written by `mcts-po extract`); a step that finishes the
solution is trained as is and EOS follows. TPO lists are sorted best first, cut to
`max_list_size` and given TPO's adaptive step weights.

    from mcts_po.train.examples import pair_examples_from_rows
    examples = pair_examples_from_rows(rows, "step-dpo", TrainConfig())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from mcts_po.io_utils import UserError
from mcts_po.train.config import METHODS, TrainConfig
from mcts_po.train.losses import adaptive_step_weights


@dataclass(frozen=True)
class PairExample:
    prompt: str
    chosen: str  # completion text as trained (an intermediate step ends with the delimiter)
    rejected: str
    chosen_eos: bool
    rejected_eos: bool
    q_chosen: float = 0.0
    q_rejected: float = 0.0
    visits_chosen: float = 0.0
    visits_rejected: float = 0.0


@dataclass(frozen=True)
class ListExample:
    prompt: str
    segments: tuple[tuple[str, ...], ...]  # per response, its step texts as trained
    ends_solution: tuple[bool, ...]
    values: tuple[float, ...]
    step_weights: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class SftExample:
    prompt: str
    completion: str  # trained whole, followed by EOS


def sft_examples_from_rows(rows: Sequence[dict[str, Any]]) -> list[SftExample]:
    """SFT rows (prompt, completion: the `sft` extraction's columns) -> SftExample; empty completions skipped."""
    examples = []
    for index, row in enumerate(rows):
        completion = str(_column(row, "completion", index))
        if completion:
            examples.append(SftExample(prompt=str(_column(row, "prompt", index)), completion=completion))
    return examples


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UserError(f"unknown training method {method!r}; valid: {', '.join(METHODS)}")
    return method


def step_completion(text: str, ends_solution: bool, delimiter: str) -> str:
    """The completion as trained: a finishing step as is (EOS follows), an intermediate step
    followed by the delimiter the model emitted to end it."""
    if ends_solution or text.endswith(delimiter):
        return text
    return text + delimiter


def row_step_delimiter(row: dict[str, Any], index: int) -> str:
    """The delimiter that ends the row's intermediate steps: its `step_delimiter` column, which
    `mcts-po extract` copies from the tree (the search's `sampling.step_delimiter`)."""
    delimiter = row.get("step_delimiter")
    if not isinstance(delimiter, str) or not delimiter:
        raise UserError(f"row {index}: an intermediate step (a *ends_solution flag false, or a TPO response of "
                        "several steps) is trained followed by the search's step delimiter, but the row has no "
                        "`step_delimiter` column; rows from `mcts-po extract` carry it (re-extract older data, or "
                        "add the column)")
    return delimiter


def _column(row: dict[str, Any], name: str, index: int) -> Any:
    if name not in row or row[name] is None:
        raise UserError(f"row {index}: missing column {name!r} (have: {', '.join(sorted(row))})")
    return row[name]


def pair_examples_from_rows(rows: Sequence[dict[str, Any]], method: str, config: TrainConfig) -> list[PairExample]:
    """Rows with prompt/chosen/rejected (+ q_*, visits_*, *_ends_solution) -> PairExample."""
    examples = []
    for index, row in enumerate(rows):
        prompt = str(_column(row, "prompt", index))
        chosen_ends = bool(row.get("chosen_ends_solution", True))
        rejected_ends = bool(row.get("rejected_ends_solution", True))
        delimiter = "" if chosen_ends and rejected_ends else row_step_delimiter(row, index)
        example = PairExample(
            prompt=prompt,
            chosen=step_completion(str(_column(row, "chosen", index)), chosen_ends, delimiter),
            rejected=step_completion(str(_column(row, "rejected", index)), rejected_ends, delimiter),
            chosen_eos=chosen_ends,
            rejected_eos=rejected_ends,
            q_chosen=float(_column(row, "q_chosen", index)) if method == "step-apo" else 0.0,
            q_rejected=float(_column(row, "q_rejected", index)) if method == "step-apo" else 0.0,
            visits_chosen=float(_column(row, "visits_chosen", index)) if config.conservative else 0.0,
            visits_rejected=float(_column(row, "visits_rejected", index)) if config.conservative else 0.0,
        )
        examples.append(example)
    return examples


def spread_indices(count: int, keep: int) -> list[int]:
    """`keep` indices out of range(count): first, last and evenly spaced between."""
    if count <= keep:
        return list(range(count))
    return sorted({round(i * (count - 1) / (keep - 1)) for i in range(keep)})


def list_examples_from_rows(rows: Sequence[dict[str, Any]], config: TrainConfig) -> list[ListExample]:
    """TPO rows (prompt, steps, values[, ends_solution]) -> ListExample with adaptive step weights.

    Each list is sorted best first and cut to `max_list_size` responses spread over the ranks;
    lists with fewer than two responses are skipped (nothing to rank).
    """
    examples = []
    for index, row in enumerate(rows):
        prompt = str(_column(row, "prompt", index))
        steps = _column(row, "steps", index)
        values = [float(v) for v in _column(row, "values", index)]
        ends = row.get("ends_solution") or [True] * len(steps)
        if not (len(steps) == len(values) == len(ends)):
            raise UserError(f"row {index}: {len(steps)} step lists, {len(values)} values, {len(ends)} ends_solution flags")
        for response, response_steps in enumerate(steps):
            if not response_steps:
                raise UserError(f"row {index}: response {response} has no steps")
        needs_delimiter = any(len(s) > 1 or not e for s, e in zip(steps, ends))
        delimiter = row_step_delimiter(row, index) if needs_delimiter else ""
        order = sorted(range(len(values)), key=lambda i: -values[i])
        kept = [order[i] for i in spread_indices(len(order), config.max_list_size)]
        if len(kept) < 2:
            continue
        kept_steps = [list(map(str, steps[i])) for i in kept]
        kept_values = [values[i] for i in kept]
        weights = adaptive_step_weights(kept_steps, kept_values)
        segments = []
        for i, response_steps in zip(kept, kept_steps):
            texts = [step_completion(text, False, delimiter) for text in response_steps[:-1]]
            texts.append(step_completion(response_steps[-1], bool(ends[i]), delimiter))
            segments.append(tuple(texts))
        examples.append(ListExample(
            prompt=prompt,
            segments=tuple(segments),
            ends_solution=tuple(bool(ends[i]) for i in kept),
            values=tuple(kept_values),
            step_weights=tuple(tuple(w) for w in weights),
        ))
    return examples

