"""Progress bars of mcts_po: one rule for when a bar shows, how bars nest, and a rate meter.

Every bar of the package (search, evaluation, the loop, training, reading trees) is made here,
so they all follow one rule:

- a bar shows only when the caller's `progress` option is on (`--no-progress` turns it off)
  AND its stream (stderr) is a terminal — tqdm's `disable=None` rule: a log file, a pipe or a
  CI job gets no bar. In a Jupyter notebook (where `tqdm.auto` draws widgets, not text on
  stderr) bars show whenever `progress` is on.
- a bar made while others are open goes below them (`position` = bars open) and is erased
  when it closes (`leave=False`); the outermost bar stays. So the loop's bar (round, phase)
  sits on top and the search, evaluation or training bar of the current phase under it.
- `write_line` prints a log line above the open bars instead of through them.
- `quiet_library_bars(progress)`, called by each command at start, applies the same rule to
  the libraries' own bars (huggingface_hub downloads, transformers' weight loading, vLLM's
  checkpoint loading): off with `--no-progress` or when stderr is not a terminal.
- `StageBar` is a bar over named stages (the loop: one step per phase, "loop round 1 train").

`Rate` turns a cumulative count (generated tokens) into a mean rate since it was started, on
a clock the tests can replace.

    from mcts_po.progress import Rate, progress_bar
    bar = progress_bar(job.progress, total=100, desc="search", unit="sim")
    rate = Rate()
    bar.update(10); bar.set_postfix(tok_s=rate.format(tokens_so_far))
    bar.close()

Imports no torch; tqdm is imported when a bar is made.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, TextIO

_open_bars: list[Any] = []  # bars made here and not closed yet, outermost first


def _in_notebook() -> bool:
    """tqdm.auto picked its notebook (widget) bar: a Jupyter kernel, not a terminal."""
    from tqdm.asyncio import tqdm as text_tqdm
    from tqdm.auto import tqdm as auto_tqdm

    return auto_tqdm is not text_tqdm  # tqdm.auto is tqdm.asyncio's text bar outside notebooks


def bars_enabled(progress: bool, stream: TextIO | None = None) -> bool:
    """Whether a bar shows: `progress` is on and `stream` (default stderr) is a terminal (or a notebook)."""
    if not progress:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        if stream is not None and stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
    return _in_notebook()


def progress_bar(progress: bool, *, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
                 stream: TextIO | None = None, **options: Any) -> Any:
    """A tqdm bar on `stream` (default stderr), disabled (writes nothing, methods do nothing) unless
    `bars_enabled(progress, stream)`; nested below the bars already open. `options` go to tqdm."""
    from tqdm.auto import tqdm

    stream = sys.stderr if stream is None else stream
    if not bars_enabled(progress, stream):
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=True)
    position = len(_open_bars)
    bar = _nested_class()(total=total, initial=initial, desc=desc, unit=unit, file=stream, dynamic_ncols=True,
                          position=position, leave=position == 0, **options)
    _open_bars.append(bar)
    return bar


_NESTED: list[type] = []


def _nested_class() -> type:
    """tqdm.auto's bar class, forgetting itself from the open bars when it closes."""
    if not _NESTED:
        from tqdm.auto import tqdm

        class NestedBar(tqdm):  # type: ignore[misc, valid-type]
            def close(self) -> None:
                try:
                    super().close()
                finally:
                    if self in _open_bars:
                        _open_bars.remove(self)

        _NESTED.append(NestedBar)
    return _NESTED[0]


_LIBRARY_BARS = [True]  # False once quiet_library_bars turned them off


def quiet_library_bars(progress: bool, stream: TextIO | None = None) -> bool:
    """Turn the libraries' progress bars off unless `bars_enabled(progress, stream)`; returns
    whether they stay on. huggingface_hub's switch also governs transformers' bars (transformers
    reads it at import; when already imported it is switched too); the vLLM backend reads
    `library_bars_enabled()` for its checkpoint-loading bar."""
    if bars_enabled(progress, stream):
        return True
    _LIBRARY_BARS[0] = False
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # for processes started from here (engine workers)
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    return False


def library_bars_enabled() -> bool:
    """False once `quiet_library_bars` turned the libraries' bars off."""
    return _LIBRARY_BARS[0]


def bars_open() -> int:
    """How many bars made here are showing now."""
    return len(_open_bars)


def write_line(message: str, stream: TextIO | None = None) -> None:
    """Print one line to `stream` (default stderr), above the open bars when there are any."""
    stream = sys.stderr if stream is None else stream
    if _open_bars:
        from tqdm.auto import tqdm

        tqdm.write(message, file=stream)
    else:
        print(message, file=stream, flush=True)


class StageBar:
    """A bar over named stages (the loop's phases): `begin(label)` as each stage starts (the one
    before it counts as done), `finish()` after the last; the label is shown after `desc`. It shows
    stages done and the time so far, no rate or ETA (stages differ too much in length)."""

    def __init__(self, progress: bool, *, total: int, desc: str, stream: TextIO | None = None):
        self.desc = desc
        self.bar = progress_bar(progress, total=total, desc=desc, unit="phase", stream=stream,
                                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} phases [{elapsed}]")
        self.current: str | None = None

    def begin(self, label: str) -> None:
        if self.current is not None:
            self.bar.update(1)
        self.current = label
        self.bar.set_description(f"{self.desc} {label}")

    def finish(self) -> None:
        if self.current is not None:
            self.bar.update(1)
        self.current = None
        self.bar.set_description(self.desc)

    def close(self) -> None:
        self.bar.close()


def now() -> float:
    """The clock of `Rate` (time.monotonic); tests replace this function."""
    return time.monotonic()


class Rate:
    """Mean units per second since it was made, from a cumulative count.

    `clock` is `now` (time.monotonic) unless given; tests pass or patch in a fake one."""

    def __init__(self, clock: Callable[[], float] | None = None):
        self.clock = clock if clock is not None else now
        self.started = self.clock()

    def per_second(self, count: float) -> float | None:
        """`count` (what was done since the start) over the seconds since the start; None before any time passed."""
        elapsed = self.clock() - self.started
        return count / elapsed if elapsed > 0 else None

    def format(self, count: float) -> str:
        """The rate as a short number for a bar's postfix ("-" before any time passed)."""
        rate = self.per_second(count)
        if rate is None:
            return "-"
        return f"{rate:.0f}" if rate >= 100 else f"{rate:.1f}"
