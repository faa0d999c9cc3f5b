"""Honest scores: the trained answers against simple baselines on one per-customer temporal holdout.

The holdout of a customer is the tail of its intervals that no model trained on:
- a customer with validation windows: the targets of those windows (the latest ones);
- a customer with no window at all (too few visits for a model): its last interval;
- a customer with windows but none validating (a single window): nothing, since its model saw it all.
Every method answers each held-out interval from the intervals before it: the models from their
input window, the customer baselines from all of the customer's earlier intervals (one step ahead,
as predictions answer); whatever is fitted (models, population median, constant) is fitted on
intervals before the holdout only. With split = "random" only the validation windows' targets are
held out.

Baselines (days):
  customer_mean / customer_median / customer_last: of the customer's intervals before the held-out one;
    with none, the population median (what our fallback answers too);
  population_median: median of every customer's pre-holdout intervals;
  constant: expm1(mean(log1p(pre-holdout intervals))), the single value the default loss (MSE on
    log1p days) would learn.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from jaxlstm.data.intervals import Histories, prefix_mean
from jaxlstm.data.windows import Windows, to_bins

BUCKETS = ((1, 1, "1"), (2, 2, "2"), (3, 3, "3"), (4, 5, "4-5"), (6, 10, "6-10"), (11, np.iinfo(np.int64).max, "11+"))
BASELINES = ("customer_mean", "customer_median", "customer_last", "population_median", "constant")
MODES = ("auto", "per_customer", "pooled", "finetune")  # answers of the trained modes in a report


@dataclasses.dataclass(frozen=True)
class Holdout:
    """T held-out intervals. owner [T] customer index; pos, target [T] days; window [T] flat window index
    whose target it is (-1 for a customer without windows); start [N] index (within the customer's
    intervals) of its first held-out interval (= its interval count when it has none)."""

    owner: np.ndarray
    pos: np.ndarray  # [T] index of the interval within its customer's intervals
    target: np.ndarray
    window: np.ndarray
    start: np.ndarray

    def train_intervals(self, hist: Histories) -> np.ndarray:
        """[I] bool over hist.intervals: before its customer's holdout."""
        owner = np.repeat(np.arange(hist.n_customers), np.diff(hist.offsets))
        return (np.arange(len(hist.intervals)) - hist.offsets[owner]) < self.start[owner]


def holdout(hist: Histories, windows: Windows, is_val: np.ndarray, look_back: int) -> Holdout:
    N = hist.n_customers
    k = np.diff(hist.offsets)
    w_counts = windows.counts
    w_owner = np.repeat(np.arange(N), w_counts)
    first_val = np.full(N, np.iinfo(np.int64).max)
    np.minimum.at(first_val, w_owner[is_val], np.flatnonzero(is_val) - windows.offsets[w_owner[is_val]])
    start = k.copy()
    has_val = first_val < np.iinfo(np.int64).max
    start[has_val] = first_val[has_val] + look_back
    no_windows = (w_counts == 0) & (k >= 1)
    start[no_windows] = k[no_windows] - 1
    n_hold = k - start
    owner = np.repeat(np.arange(N), n_hold)
    pos = np.arange(n_hold.sum()) - np.repeat(np.r_[0, np.cumsum(n_hold)[:-1]], n_hold) + start[owner]
    target = hist.intervals[hist.offsets[owner] + pos]
    window = np.where(w_counts[owner] > 0, windows.offsets[owner] + pos - look_back, -1)
    # with split = "random", training windows lie among the validation ones: only the latter are held out
    held = (window < 0) | is_val[np.maximum(window, 0)] if len(is_val) else np.ones(len(window), bool)
    return Holdout(owner[held], pos[held], target[held], window[held], start)


def customer_baselines(hist: Histories, seen: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Each baseline's answer [N] (days) per customer from the intervals marked `seen` (default all)."""
    seen = np.ones(len(hist.intervals), bool) if seen is None else seen
    N = hist.n_customers
    owner = np.repeat(np.arange(N), np.diff(hist.offsets))
    before = pd.Series(hist.intervals[seen]).groupby(owner[seen])
    population = float(np.median(hist.intervals[seen])) if seen.any() else np.nan
    constant = float(np.expm1(np.mean(np.log1p(hist.intervals[seen])))) if seen.any() else np.nan

    def per_customer(stat):
        values = stat.reindex(range(N)).to_numpy(dtype=float)
        return np.where(np.isnan(values), population, values)  # no interval of its own: the population's

    return {
        "customer_mean": per_customer(before.mean()),
        "customer_median": per_customer(before.median()),
        "customer_last": per_customer(before.last()),
        "population_median": np.full(N, population),
        "constant": np.full(N, constant),
    }


def baselines(hist: Histories, hold: Holdout) -> dict[str, np.ndarray]:
    """Each baseline's answer [T] (days) for every held-out interval, one step ahead: a customer's
    mean, median and last from its intervals before that one (earlier held-out ones included, as
    the models see them and as predictions use every interval); the population median and the
    constant from pre-holdout intervals only."""
    population = customer_baselines(hist, hold.train_intervals(hist))
    pop = population["population_median"][hold.owner]
    start, n = hist.offsets[hold.owner], hold.pos
    has = n > 0
    owner = np.repeat(np.arange(hist.n_customers), np.diff(hist.offsets))
    # median of each customer's intervals 0..i, for every interval i (one pass, pandas' skiplist)
    running_median = pd.Series(hist.intervals).groupby(owner).expanding().median().to_numpy()
    last = np.clip(start + n - 1, 0, max(len(hist.intervals) - 1, 0))
    return {
        "customer_mean": np.where(has, prefix_mean(hist.intervals, hist.offsets, hold.owner, n), pop),
        "customer_median": np.where(has, running_median[last] if len(running_median) else pop, pop),
        "customer_last": np.where(has, hist.intervals[last] if len(hist.intervals) else pop, pop),
        "population_median": pop,
        "constant": population["constant"][hold.owner],
    }


def bucket_names(n_visits: np.ndarray) -> np.ndarray:
    """History-length bucket name of each visit count."""
    out = np.empty(len(n_visits), dtype=object)
    for lo, hi, name in BUCKETS:
        out[(n_visits >= lo) & (n_visits <= hi)] = name
    return out


def fallback_kind(n_visits: np.ndarray, fallback_by: dict[str, str]) -> np.ndarray:
    """[N] the baseline that answers for each customer, by its history bucket."""
    return np.array([fallback_by[b] for b in bucket_names(n_visits)], dtype=object)


def pick(values: dict[str, np.ndarray], kind: np.ndarray) -> np.ndarray:
    """values[kind[i]][i] for each i."""
    out = np.full(len(kind), np.nan)
    for name, v in values.items():
        out[kind == name] = v[kind == name]
    return out


def best_baselines(hist: Histories, hold: Holdout, base: dict[str, np.ndarray], bins: tuple[float, ...] = (),
                   z: float = 2.0) -> dict[str, str]:
    """The answer for each history bucket among `base` (baselines, and the pooled model if trained):
    the population median, unless another beats it on the bucket's held-out intervals by more than
    `z` standard errors of the paired difference (a 2-visit bucket of 30 customers must not pick
    "their one gap" by luck). Losses are absolute days, or 0/1 bin misses when binning."""
    if bins:
        truth = to_bins(hold.target, bins)
        loss = {b: (to_bins(v, bins) != truth).astype(float) for b, v in base.items()}
    else:
        loss = {b: np.abs(v - hold.target) for b, v in base.items()}
    bucket = bucket_names(hist.n_visits)[hold.owner]
    chosen = {}
    for _, _, name in BUCKETS:
        sel = bucket == name
        best, best_gain = "population_median", 0.0
        if sel.sum() >= 2:
            for b in base:
                d = loss[b][sel] - loss["population_median"][sel]
                gain = -d.mean()
                if gain > z * d.std(ddof=1) / np.sqrt(sel.sum()) and gain > best_gain:
                    best, best_gain = b, gain
        chosen[name] = best
    return chosen


def scores(pred: np.ndarray, target: np.ndarray, bins: tuple[float, ...] = ()) -> dict[str, float | int | None]:
    """MAE and RMSE in days (and accuracy of the bin when binning) over finite predictions."""
    ok = np.isfinite(pred)
    err = pred[ok] - target[ok]
    out: dict[str, float | int | None] = {
        "n": int(ok.sum()),
        "mae_days": float(np.abs(err).mean()) if ok.any() else None,
        "rmse_days": float(np.sqrt((err**2).mean())) if ok.any() else None,
    }
    if bins:
        out["accuracy"] = float((to_bins(pred[ok], bins) == to_bins(target[ok], bins)).mean()) if ok.any() else None
    return out


def report(hist: Histories, hold: Holdout, answers: dict[str, np.ndarray], bins: tuple[float, ...] = ()) -> dict:
    """{"overall": {method: scores}, "by_history": {bucket: {"customers", "intervals", method: scores}}}.
    History length is the customer's visit count in the training log."""
    visits = hist.n_visits[hold.owner]
    by = {}
    for lo, hi, name in BUCKETS:
        sel = (visits >= lo) & (visits <= hi)
        by[name] = {
            "customers": int(((hist.n_visits >= lo) & (hist.n_visits <= hi)).sum()),
            "customers_evaluated": int(len(np.unique(hold.owner[sel]))),
            "intervals": int(sel.sum()),
            **{m: scores(a[sel], hold.target[sel], bins) for m, a in answers.items()},
        }
    return {
        "holdout": "each customer's latest intervals that no model trained on (see jaxlstm/evaluate.py)",
        "intervals": int(len(hold.target)),
        "customers": int(len(np.unique(hold.owner))),
        "overall": {m: scores(a, hold.target, bins) for m, a in answers.items()},
        "by_history": by,
    }


def table(rep: dict, methods: list[str] | None = None) -> str:
    """The report as a markdown table of MAE days: one row per method, overall then each bucket."""
    methods = methods or list(rep["overall"])
    cols = ["overall"] + [name for _, _, name in BUCKETS if rep["by_history"][name]["intervals"]]
    head = "| method | " + " | ".join(f"{c} visits" if c != "overall" else "all" for c in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    n_row = ["intervals (customers)"] + [f"{rep['intervals']:,} ({rep['customers']:,})"] + [
        f"{rep['by_history'][c]['intervals']:,} ({rep['by_history'][c]['customers_evaluated']:,})" for c in cols[1:]]
    lines.append("| " + " | ".join(n_row) + " |")
    for m in methods:
        cells = [rep["overall"][m]] + [rep["by_history"][c][m] for c in cols[1:]]
        lines.append(f"| {m} | " + " | ".join("-" if s["mae_days"] is None else f"{s['mae_days']:.2f}" for s in cells) + " |")
    return "\n".join(lines)


def choose(owner: np.ndarray, model_loss: np.ndarray, base_loss: np.ndarray, n_customers: int, z: float = 2.0) -> np.ndarray:
    """[N] bool: customers whose own model beat the alternative on their own held-out intervals
    beyond noise: the mean paired difference (model - alternative) must be below -z standard errors.

    With two or three windows "the model won" is often luck (on pure noise about half the models
    win), and the model's epoch was chosen on these windows, so a plain "lower error" test would
    trust many memorising models. A customer with fewer than two answered intervals keeps the
    alternative: one interval is no evidence.
    """
    ok = np.isfinite(model_loss)
    d = np.where(ok, model_loss - base_loss, 0.0)
    n = np.bincount(owner[ok], minlength=n_customers).astype(float)
    s1 = np.bincount(owner[ok], weights=d[ok], minlength=n_customers)
    s2 = np.bincount(owner[ok], weights=d[ok] ** 2, minlength=n_customers)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        var = np.maximum(s2 - n * mean**2, 0.0) / (n - 1)
        return (n >= 2) & (mean < 0) & (mean + z * np.sqrt(var / n) < 0)


def evaluate_run(hist: Histories, hold: Holdout, bins: tuple[float, ...],
                 has_model: np.ndarray, val_days: np.ndarray, val_class: np.ndarray, pooled_days: np.ndarray | None = None,
                 mode: str = "auto"):
    """Score a trained run against the baselines, pick each history bucket's answer (a baseline or
    the pooled model), and choose per customer between its own model and that answer.

    has_model: [N] bool, customers with a healthy trained model; val_days / val_class: [M] its answer
    on each validation window (NaN / -1 elsewhere). Returns (chosen [N] bool: the model beat the
    bucket's baseline on the customer's own held-out intervals; {bucket: baseline}; the report;
    one row per held-out interval with every method's answer).
    """
    base = baselines(hist, hold)
    candidates = base if pooled_days is None else {**base, "pooled": pooled_days}
    fallback_by = best_baselines(hist, hold, candidates, bins)
    fallback = pick(candidates, fallback_kind(hist.n_visits, fallback_by)[hold.owner])
    T, w = len(hold.target), hold.window
    lstm, cls = np.full(T, np.nan), np.full(T, -1)
    at = (w >= 0) & has_model[hold.owner]
    lstm[at], cls[at] = val_days[w[at]], val_class[w[at]]
    if bins:
        truth = to_bins(hold.target, bins)
        model_loss = np.where(np.isfinite(lstm), (cls != truth).astype(float), np.nan)
        base_loss = (to_bins(fallback, bins) != truth).astype(float)
    else:
        model_loss, base_loss = np.abs(lstm - hold.target), np.abs(fallback - hold.target)
    chosen = choose(hold.owner, model_loss, base_loss, hist.n_customers)
    answers = {
        "auto": np.where(chosen[hold.owner] & np.isfinite(lstm), lstm, fallback),
        "per_customer": np.where(np.isfinite(lstm), lstm, base["customer_median"]),
        **({} if pooled_days is None else {"pooled": pooled_days}),
        **base,
    }
    if mode == "finetune":  # own models started from the pooled one; the pooled one answers the rest
        answers = {"finetune": np.where(np.isfinite(lstm), lstm, pooled_days if pooled_days is not None else base["customer_median"]),
                   **answers}
    rep = report(hist, hold, answers, bins)
    rep["methods"] = {
        "auto": "per history length the best of the baselines and the pooled model (see best_baselines); a "
                "customer's own model where it beat that beyond noise on these same intervals (see choose): choices "
                "made on the data they are scored on, so somewhat optimistic",
        "per_customer": "each customer's own model where it has one, else the customer's median (the classic recipe "
                        "plus the classic fallback)",
        "pooled": "one shared LSTM trained on every customer's intervals (jaxlstm/pooled.py)",
        **{b: "see jaxlstm/evaluate.py" for b in BASELINES},
    }
    rep["fallback_by_history"] = fallback_by
    rep["customers_model_chosen"] = int(chosen.sum())
    rep["customers_with_model_evaluated"] = int(len(np.unique(hold.owner[np.isfinite(lstm)])))
    frame = pd.DataFrame({
        "customer_id": hist.ids[hold.owner],
        "n_visits": hist.n_visits[hold.owner],
        "actual_days": hold.target,
        "answered_by": np.where(chosen[hold.owner] & np.isfinite(lstm), "per_customer", fallback_kind(hist.n_visits, fallback_by)[hold.owner]),
        **{f"{m}_days": a for m, a in answers.items()},
    })
    return chosen, fallback_by, rep, frame
