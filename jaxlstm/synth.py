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


# --- Purchase logs with a known future (issue 13): what real shop logs look like, and the truth to judge on ---

PURCHASE_START = "2022-01-01"  # make_purchases's defaults: the log runs PURCHASE_DAYS from PURCHASE_START,
PURCHASE_DAYS = 540.0  # and its truth is the first purchase within PURCHASE_HORIZON_DAYS after the end
PURCHASE_HORIZON_DAYS = 365.0


def _age_at(hazard: float, lam0: float, decay: float, decay_days: float) -> float:
    """The customer age (days since its first purchase) at which the cumulative purchase hazard
    reaches `hazard`, for the rate lam0 * (1 + age / decay_days) ** -decay (inf: never, when a
    decay > 1 leaves a finite total hazard). Inverting the cumulative hazard gives the exact event
    times of this inhomogeneous Poisson process from unit exponential draws."""
    scale = lam0 * decay_days
    if decay == 1.0:
        return decay_days * float(np.expm1(hazard / scale)) if hazard / scale < 700 else np.inf
    base = 1.0 + hazard * (1.0 - decay) / scale
    return decay_days * (base ** (1.0 / (1.0 - decay)) - 1.0) if base > 0 else np.inf


def make_purchases(
    n: int = 5000,
    seed: int = 0,
    days: float = PURCHASE_DAYS,
    start: str = PURCHASE_START,
    *,
    mean_gap: float = 40.0,
    rate_shape: float = 1.5,
    decay: float = 1.0,
    decay_days: float = 60.0,
    dropout: tuple[float, float] = (0.6, 0.9),
    cohort_share: float = 0.2,
    cohort_days: float = 60.0,
    repeat_share: float = 0.12,
    same_time_share: float = 0.5,
    date_only: bool = False,
    horizon_days: float = PURCHASE_HORIZON_DAYS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A shop's purchase log over `days` days, and each customer's true next visit after it.

    The process (BG/NBD / Pareto-NBD style, with ageing):
      * acquisition: a `cohort_share` of customers make their first purchase in the first
        `cohort_days` days (the launch cohort), the rest at a uniform time in the whole window;
      * purchases are Poisson with a customer rate lam0 ~ Gamma(shape `rate_shape`, mean
        1 / `mean_gap` per day) that decays with the customer's age a (days since its first
        purchase): lam0 * (1 + a / `decay_days`) ** -`decay`, so gaps lengthen as customers age;
      * after every purchase (the first included) the customer drops out for good with its own
        probability p ~ Beta(*`dropout`);
      * each purchase happens on its day at a uniform time between 08:00 and 21:00, and with
        probability `repeat_share` adds 1+ more rows that day (a geometric count): each a copy of
        the same timestamp with probability `same_time_share`, else later the same day;
      * `date_only`: timestamps are dates (midnight), so all of one day's rows are identical.
    The defaults give 50-60% customers with a single purchase day, 8-9% with 5 or more and the
    busiest with 15-25, a median gap of about 30 days that grows with the gap's index (about 28 days
    for the first, 33 for the fourth to sixth), and latest gaps longer still (about 45), as on real
    logs (issue 13); about a fifth of the customers come back within the horizon.

    Returns (log, truth):
      log: customer_id (str 'c000000'...), timestamp (datetime64[ns]); sorted by customer and time.
      truth: one row per customer: customer_id, first_visit, last_visit (its last row in the log),
        next_visit (its first purchase after the log ends at start + days; NaT when it dropped out
        after its last purchase or would not come back within `horizon_days` after the end),
        next_gap_days (next_visit - last_visit in days; NaN where next_visit is NaT), and
        dropped_out (bool).
    The same arguments give the same frames.
    """
    rng = np.random.default_rng(seed)
    t0 = np.datetime64(start, "s")
    a, b = dropout
    ids, times, rows = [], [], []
    for i in range(n):
        first = rng.uniform(0, cohort_days) if rng.random() < cohort_share else rng.uniform(0, days)
        lam0 = rng.gamma(rate_shape, 1.0 / (mean_gap * rate_shape))
        p_drop = rng.beta(a, b)
        visits, hazard, nxt, gone = [first], 0.0, np.nan, False
        while True:
            if rng.random() < p_drop:
                gone = True
                break
            hazard += rng.exponential()
            t = first + _age_at(hazard, lam0, decay, decay_days)
            if t >= days:  # the first purchase after the log's end, if within the horizon
                nxt = t if t < days + horizon_days else np.nan
                break
            visits.append(t)
        # time of day: the purchase's day, at a shop-hours time; then same-day repeat rows
        stamps = np.floor(np.r_[visits, nxt]) + rng.uniform(8, 21, len(visits) + 1) / 24
        log_t = []
        for s in stamps[:-1]:
            log_t.append(s)
            if rng.random() < repeat_share:
                for _ in range(rng.geometric(0.6)):
                    same = rng.random() < same_time_share
                    log_t.append(s if same else s + rng.uniform(0, np.floor(s) + 22 / 24 - s))
        log_t = np.sort(np.asarray(log_t))
        if date_only:
            log_t, stamps = np.floor(log_t), np.floor(stamps)
        ids += [f"c{i:06d}"] * len(log_t)
        times.append(log_t)
        rows.append((log_t[0], log_t[-1], stamps[-1] if np.isfinite(nxt) else np.nan, gone))
    def to_time(d):  # days from `start` -> datetime64[ns] (NaN -> NaT), whole seconds
        d = np.asarray(d, float)
        secs = np.round(np.nan_to_num(d) * 86400).astype("timedelta64[s]")
        return np.where(np.isfinite(d), t0 + secs, np.datetime64("NaT")).astype("datetime64[ns]")

    log = pd.DataFrame({"customer_id": ids, "timestamp": to_time(np.concatenate(times) if times else [])})
    first_d, last_d, next_d, gone = (list(c) for c in zip(*rows)) if rows else ([], [], [], [])
    truth = pd.DataFrame({"customer_id": [f"c{i:06d}" for i in range(n)], "first_visit": to_time(first_d),
                          "last_visit": to_time(last_d), "next_visit": to_time(next_d)})
    truth["next_gap_days"] = (truth["next_visit"] - truth["last_visit"]) / pd.Timedelta(days=1)
    truth["dropped_out"] = np.asarray(gone, bool)
    return log, truth


def _from_gaps(gaps: list[np.ndarray], next_gaps: np.ndarray, firsts: np.ndarray, start: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(log, truth) as make_purchases returns them, from each customer's gaps (days), its true next
    gap and its first visit (days from `start`)."""
    t0 = np.datetime64(start, "ns")
    ids = [f"c{i:06d}" for i in range(len(gaps))]
    offsets = [f + np.r_[0.0, np.cumsum(g)] for f, g in zip(firsts, gaps)]
    to_time = lambda d: t0 + np.round(np.asarray(d, float) * 86400e9).astype("timedelta64[ns]")  # noqa: E731
    log = pd.DataFrame({"customer_id": np.repeat(ids, [len(o) for o in offsets]),
                        "timestamp": to_time(np.concatenate(offsets) if offsets else [])})
    last = to_time([o[-1] for o in offsets])
    nxt = last + np.round(np.asarray(next_gaps, float) * 86400e9).astype("timedelta64[ns]")
    truth = pd.DataFrame({"customer_id": ids, "first_visit": to_time(firsts), "last_visit": last, "next_visit": nxt})
    truth["next_gap_days"] = (truth["next_visit"] - truth["last_visit"]) / pd.Timedelta(days=1)
    truth["dropped_out"] = False
    return log, truth


def make_iid_exponential(n: int = 4000, seed: int = 0, visits: tuple[int, int] = (3, 40),
                         mean_gap: tuple[float, float] = (5.0, 60.0), start: str = "2022-01-01") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each customer's gaps are i.i.d. exponential around its own mean (log-uniform in `mean_gap`
    days), `visits` uniform in the range; the truth is one more draw after its last visit. No
    history pattern: the best answer is the customer's median gap, which its median or mean (times
    ln 2) estimate. Returns (log, truth) as make_purchases does; each history ends at the customer's
    own last visit (there is no common log end here)."""
    rng = np.random.default_rng(seed)
    mean = np.exp(rng.uniform(np.log(mean_gap[0]), np.log(mean_gap[1]), n))
    count = rng.integers(visits[0], visits[1] + 1, n)
    gaps = [rng.exponential(m, k) for m, k in zip(mean, count)]  # k - 1 in the log, the last one is the truth
    return _from_gaps([g[:-1] for g in gaps], np.array([g[-1] for g in gaps]), rng.uniform(0, 60, n), start)


def make_patterned(n: int = 4000, seed: int = 0, visits: tuple[int, int] = (6, 40),
                   gap_range: tuple[float, float] = (2.0, 21.0), noise: float = 0.05,
                   start: str = "2022-01-01") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each customer repeats its own cycle of 2 or 3 gaps (each uniform in `gap_range` days, e.g.
    3, 10, 3, 10, ...) from a random phase, each gap times 1 + N(0, `noise`); the truth is the
    cycle's next gap. A model that reads the latest gaps can be nearly exact where a customer's
    median or mean is off by the cycle's spread. Returns (log, truth) as make_iid_exponential."""
    rng = np.random.default_rng(seed)
    gaps, nxt = [], np.empty(n)
    for i in range(n):
        cycle = rng.uniform(*gap_range, size=rng.integers(2, 4))
        k = int(rng.integers(visits[0], visits[1] + 1))
        g = np.resize(np.roll(cycle, -int(rng.integers(len(cycle)))), k) * (1 + rng.normal(0, noise, k))
        gaps.append(np.maximum(g[:-1], 0.0))
        nxt[i] = max(g[-1], 0.0)
    return _from_gaps(gaps, nxt, rng.uniform(0, 60, n), start)


# Benchmark families (benchmarks/accuracy.py): name -> f(n, seed) -> (log, truth), truth with
# customer_id, next_visit and next_gap_days (the true next visit after the customer's last one; NaT/NaN: none).
# The purchase families also take make_purchases' horizon_days (the same log, a truth that looks further).
FAMILIES = {
    "purchases": lambda n, seed, **kw: make_purchases(n, seed, **kw),
    # customers slow down fast as they age: the latest gaps say more than the customer's median
    "purchases_drift": lambda n, seed, **kw: make_purchases(n, seed, decay=1.5, mean_gap=25.0, **kw),
    "iid_exp": lambda n, seed: make_iid_exponential(n, seed),
    "patterned": lambda n, seed: make_patterned(n, seed),
}

# The families whose customers share one log end, so that the truth (each customer's first purchase
# after it, NaT when none within the horizon) answers the as-of question "who comes back, and when,
# as of the end": name -> (the log's end, the truth's horizon in days).
LOG_END = {name: (pd.Timestamp(PURCHASE_START) + pd.Timedelta(days=PURCHASE_DAYS), PURCHASE_HORIZON_DAYS)
           for name in ("purchases", "purchases_drift")}
