"""Synthetic visit logs for demos, tests and benchmarks: regular, periodic, bursty and one-off
customers (make_customers), and calendar logs where some customers stop coming (make_log)."""

from __future__ import annotations

import numpy as np
import pandas as pd

KINDS = ("regular", "periodic", "bursty", "one_off")


def _gaps(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "regular":  # every `period` days, a little jitter
        period = rng.uniform(3, 30)
        return np.maximum(period + rng.normal(0, 0.1 * period, n), 0.0)
    if kind == "periodic":  # a repeating cycle of gaps, e.g. weekday/weekend shopper: 2, 5, 2, 5, ...
        cycle = rng.uniform(1, 20, size=rng.integers(2, 4))
        return np.maximum(np.resize(cycle, n + len(cycle))[rng.integers(len(cycle)) :][:n] + rng.normal(0, 0.3, n), 0.0)
    if kind == "bursty":  # same-day or next-day bursts separated by long pauses
        long = rng.uniform(20, 90)
        burst = rng.random(n) < 0.6
        return np.where(burst, rng.exponential(0.5, n), rng.exponential(long, n))
    return rng.exponential(rng.uniform(20, 120), n)  # one_off customers only get one visit anyway


def make_customers(
    n: int = 1000,
    seed: int = 0,
    visits: tuple[int, int] = (20, 120),
    kinds: tuple[str, ...] = KINDS,
    one_off_share: float = 0.05,
    start: str = "2022-01-01",
    period: float | None = None,
    jitter: float | None = None,
) -> pd.DataFrame:
    """A visit log with columns customer_id (str 'c000001'...), timestamp, kind.

    n customers; each gets a kind from `kinds` (one_off at `one_off_share`, the rest evenly) and a
    visit count uniform in `visits` (one_off: 1 visit). `period`/`jitter` (days) force every
    customer to be regular with that period and uniform +-jitter (e.g. the 7 +- 0.5 learning test).
    """
    rng = np.random.default_rng(seed)
    regular_kinds = [k for k in kinds if k != "one_off"] or ["regular"]
    ids, times, labels = [], [], []
    t0 = np.datetime64(start, "s")
    for i in range(n):
        if period is not None:
            kind, count = "regular", int(rng.integers(visits[0], visits[1] + 1))
            gaps = period + rng.uniform(-(jitter or 0.0), jitter or 0.0, count - 1)
        else:
            kind = "one_off" if ("one_off" in kinds and rng.random() < one_off_share) else regular_kinds[rng.integers(len(regular_kinds))]
            count = 1 if kind == "one_off" else int(rng.integers(visits[0], visits[1] + 1))
            gaps = _gaps(kind, count - 1, rng)
        first = rng.uniform(0, 365)
        offsets = first + np.r_[0.0, np.cumsum(gaps)]
        ids += [f"c{i:06d}"] * count
        times.append(t0 + (offsets * 86400).astype("timedelta64[s]"))
        labels += [kind] * count
    return pd.DataFrame(
        {"customer_id": ids, "timestamp": np.concatenate(times).astype("datetime64[ns]") if times else [], "kind": labels}
    )


def make_log(
    n: int = 1000,
    seed: int = 0,
    days: float = 730.0,
    churn_share: float = 0.3,
    kinds: tuple[str, ...] = KINDS,
    one_off_share: float = 0.05,
    start: str = "2022-01-01",
) -> pd.DataFrame:
    """A calendar visit log over `days` days with columns customer_id, timestamp, kind, churn_day.

    Each customer first visits at a uniform time in the first 80% of the window, then keeps its
    kind's gaps (see make_customers) until the window ends, unless it churns: a `churn_share` of
    customers stop for good at a uniform time between their first visit and the end of the window
    (churn_day, days from `start`; NaN for those who never churn). one_off customers visit once.
    """
    rng = np.random.default_rng(seed)
    regular_kinds = [k for k in kinds if k != "one_off"] or ["regular"]
    ids, times, labels, churns = [], [], [], []
    t0 = np.datetime64(start, "s")
    for i in range(n):
        kind = "one_off" if ("one_off" in kinds and rng.random() < one_off_share) else regular_kinds[rng.integers(len(regular_kinds))]
        first = rng.uniform(0, 0.8 * days)
        churn = rng.uniform(first, days) if rng.random() < churn_share else np.nan
        stop = days if np.isnan(churn) else churn
        offsets = [first]
        while kind != "one_off":
            gaps = _gaps(kind, 64, rng)
            more = offsets[-1] + np.cumsum(gaps)
            offsets += more[more < stop].tolist()
            if (more >= stop).any():
                break
        ids += [f"c{i:06d}"] * len(offsets)
        times.append(t0 + (np.asarray(offsets) * 86400).astype("timedelta64[s]"))
        labels += [kind] * len(offsets)
        churns += [churn] * len(offsets)
    return pd.DataFrame({"customer_id": ids, "timestamp": np.concatenate(times).astype("datetime64[ns]"),
                         "kind": labels, "churn_day": churns})
