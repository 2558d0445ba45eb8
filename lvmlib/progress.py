"""Progress for people and for logs: a tqdm bar when stderr is a terminal; elsewhere (a pipe, CI, a papermill kernel)
no carriage-return frames, only one plain line per unit that matters (a shard, an epoch), with its rate and ETA."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


def on_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", None) and sys.stderr.isatty())


def bar(iterable=None, *, disable: bool = False, **kw) -> tqdm:
    """A tqdm bar on stderr, drawn only on a terminal."""
    return tqdm(iterable, file=sys.stderr, disable=disable or not on_terminal(), **kw)


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def eta_text(seconds: float | None) -> str:
    return "ETA ?" if seconds is None else f"ETA {duration_text(seconds)}"


class Lines:
    """`desc: done/total unit (pct), rate, ETA` on stderr at each update, off a terminal: a bar's content as lines.
    The rate counts from `start()` (called where the work begins, after loading a model)."""

    def __init__(self, desc: str, total: int, unit: str, initial: int = 0, enabled: bool = True):
        self.desc, self.total, self.unit, self.enabled = desc, total, unit, enabled and not on_terminal()
        self.done = self.first = initial
        self.start()

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        if self.enabled:
            rate = (self.done - self.first) / max(time.perf_counter() - self.t0, 1e-9)
            print(f"{self.desc}: {self.done:,}/{self.total:,}{self.unit} ({100 * self.done / max(self.total, 1):.0f} %), "
                  f"{rate:.1f}{self.unit}/s, {eta_text((self.total - self.done) / rate if rate > 0 else None)}",
                  file=sys.stderr, flush=True)
