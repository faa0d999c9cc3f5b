"""Progress of the trainers: a tqdm bar on a terminal, a log line every ~10 s anywhere else.

A bar redraws itself with carriage returns many times a second; in a log file (a job scheduler, `2> log`)
each redraw is one more line, thousands per run. Off a terminal, `bar` writes one plain line every
`JAXLSTM_PROGRESS_SECONDS` (default 10) seconds and one when it ends, with customers per second and the
time left at most (early stopping may end a run sooner):

    train: epoch 12/60, 1,088 customers/s, at most 1 min 04 s left (loss 0.3121, val 0.3304)

Use it as tqdm: `for epoch in bar(range(start, epochs), desc="train", unit="epoch", disable=not progress,
customers=n)`, `.set_postfix(...)`, `.close()`; `say(message)` prints a line without breaking a bar.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator

from tqdm.auto import tqdm

INTERVAL_S = 10.0


def on_terminal() -> bool:
    """Whether stderr is a terminal (where a redrawn bar is readable)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def say(message: str) -> None:
    """One line on stderr; on a terminal above any running bar."""
    if on_terminal():
        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


def bar(iterable: Iterable, desc: str = "", unit: str = "it", disable: bool = False, total: int | None = None,
        customers: int | None = None, **tqdm_kwargs: Any):
    """tqdm(iterable, ...) on a terminal, else a `LogLines` over it (see the module doc). `customers`: how many
    customers one step trains (an epoch of the per-customer trainer: all of them), for customers/s."""
    if disable or on_terminal():
        return tqdm(iterable, desc=desc, unit=unit, disable=disable, total=total, dynamic_ncols=True, **tqdm_kwargs)
    return LogLines(iterable, desc, unit, total, customers)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class LogLines:
    """tqdm's iterator interface writing a plain line at most every `interval` seconds, and one at the end."""

    def __init__(self, iterable: Iterable, desc: str, unit: str, total: int | None, customers: int | None,
                 interval: float | None = None, clock=time.monotonic):
        self.iterable, self.desc, self.unit, self.customers = iterable, desc, unit, customers
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.interval = float(os.environ.get("JAXLSTM_PROGRESS_SECONDS", INTERVAL_S)) if interval is None else interval
        self.clock = clock
        self.n, self.postfix, self.closed = 0, "", False
        self.start = self.last = clock()

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)

    def __len__(self) -> int:
        return self.total or 0

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.interval:
            self._write()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k} {v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def write(self, message: str, *args: Any, **kwargs: Any) -> None:
        say(message)

    def close(self) -> None:
        if not self.closed and self.n:
            self._write(end=True)
        self.closed = True

    def __enter__(self) -> "LogLines":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def line(self, end: bool = False) -> str:
        """The progress line as it stands (end: the closing line)."""
        elapsed = max(self.clock() - self.start, 1e-9)
        of = f"/{self.total}" if self.total else ""
        parts = [f"{self.desc}: {self.unit} {self.n}{of}" + (f" in {_duration(elapsed)}" if end else "")]
        if self.customers:
            parts.append(f"{self.customers * self.n / elapsed:,.0f} customers/s")
        else:
            parts.append(f"{self.n / elapsed:,.2f} {self.unit}s/s")
        if not end and self.total and self.n:
            parts.append(f"at most {_duration(elapsed / self.n * (self.total - self.n))} left")
        return ", ".join(parts) + (f" ({self.postfix})" if self.postfix else "")

    def _write(self, end: bool = False) -> None:
        self.last = self.clock()
        say(self.line(end))
