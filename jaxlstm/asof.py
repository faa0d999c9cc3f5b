"""The as-of backtest: answer as of an earlier date from the log before it, then score against what
happened in the log after it.

    cut = as-of date - data.horizon_days
    train a survival model on the visits before `cut`, answer every customer seen before it
    truth: days from `cut` to the customer's first visit at or after it, observed if that visit is
    before the as-of date, else censored at the horizon

Scores:
  concordance (Harrell's C): among pairs whose order is known (one came back before the other
    came back or stopped being watched), the share the answer orders right; ties count one half;
    for the model's expected wait (expected_wait_days: the median is infinite, a tie, for everyone
    more likely gone than back), for "days since last visit" (recent first) and for "last visit +
    median interval" (the classic recipe's date: soonest due first);
  Brier score of each p_within_{k}d (k within the horizon) and of p_back_within_horizon against the base rate (the share of
    customers back within k days in the same backtest, i.e. the best constant in hindsight).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jaxlstm.config import Config
from jaxlstm.data.events import ID, TIME
from jaxlstm.data.intervals import histories
from jaxlstm.evaluate import customer_baselines
from jaxlstm.survival import default_as_of, fit_own, fit_survival, probability_columns


def truth_after(events: pd.DataFrame, keys: np.ndarray, cut: pd.Timestamp, end: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
    """(days [N], observed [N]) for customers `keys`: days from `cut` to their first visit in
    [cut, end), or (end - cut, False) when there is none."""
    later = events[(events[TIME] >= cut) & (events[TIME] < end)]
    first = later.groupby(later[ID].astype(str))[TIME].min()
    when = first.reindex(keys).to_numpy(dtype="datetime64[ns]")
    observed = ~np.isnat(when)
    window = (end - cut) / pd.Timedelta(days=1)
    days = np.where(observed, (when - np.datetime64(cut.as_unit("ns"))) / np.timedelta64(1, "D"), window)
    return days, observed


def concordance(pred: np.ndarray, days: np.ndarray, observed: np.ndarray, max_n: int = 20_000, seed: int = 0) -> float:
    """Harrell's C of predicted times `pred` (smaller: sooner; inf allowed) against (days, observed).
    Pair (i, j) counts when i came back (observed) strictly before j's time; concordant when
    pred_i < pred_j, one half when equal. Over a fixed random sample of max_n customers if more."""
    n = len(pred)
    if n > max_n:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_n, replace=False))
        pred, days, observed = pred[keep], days[keep], observed[keep]
    good = total = 0.0
    events = np.flatnonzero(observed)
    for s in range(0, len(events), 512):  # [512, n] blocks: memory stays small
        i = events[s : s + 512]
        comparable = days[i][:, None] < days[None, :]
        less = pred[i][:, None] < pred[None, :]
        equal = pred[i][:, None] == pred[None, :]
        good += float((comparable & less).sum() + 0.5 * (comparable & equal).sum())
        total += float(comparable.sum())
    return good / total if total else float("nan")


def brier(p: np.ndarray, hit: np.ndarray) -> float:
    return float(np.mean((p - hit) ** 2))


def brier_scores(p: np.ndarray, hit: np.ndarray) -> dict[str, float]:
    """The Brier score of probabilities p against outcomes hit (0/1), beside the base rate's (the share
    that happened, in hindsight the best constant) and that share."""
    return {"model": brier(p, hit), "base_rate": brier(np.full(len(hit), hit.mean()), hit), "rate": float(hit.mean())}


def backtest(events: pd.DataFrame, as_of: pd.Timestamp, config: Config, progress: bool = True) -> dict:
    """Train on the log before as_of - horizon and score the as-of answers on what followed (see module doc)."""
    d = config.data
    # what followed is known up to the log's end, not up to an as-of date beyond it
    as_of = min(as_of, default_as_of(events[TIME].to_numpy()))
    cut = as_of - pd.Timedelta(days=d.horizon_days)
    before = events[events[TIME] < cut]
    if before.empty or before[ID].nunique() < 2:
        return {"skipped": f"no visits before {cut:%Y-%m-%d} (the log's end {as_of:%Y-%m-%d} minus data.horizon_days "
                           f"{d.horizon_days:g}): the log is too short to backtest"}
    if not (events[TIME] >= cut).any():
        return {"skipped": f"no visits in the backtest window {cut:%Y-%m-%d} to {as_of:%Y-%m-%d}: nothing to score on"}
    hist = histories(before, floor_days=d.floor_days, extra_cols=d.extra_cols, summary=d.summary_features)
    model, history = fit_survival(hist, cut, config, progress, desc="backtest")
    own = None
    if config.model.mode in ("per_customer", "finetune"):  # answer as the run will: own survival models too
        own = fit_own(hist, cut, config, model, config.model.mode == "finetune", progress)
    ans = model.answer(hist, cut, own)
    days, observed = truth_after(events, hist.keys, cut, as_of)
    since = ans["days_since_last_visit"]
    median = customer_baselines(hist)["customer_median"]  # the population's for a customer without gaps
    due = np.nan_to_num(median) - since  # classic: last visit + usual gap - now
    out = {
        "cut": str(cut), "as_of": str(as_of), "customers": int(hist.n_customers),
        "back_within_horizon": float(observed.mean()),
        "concordance": {
            "model": concordance(ans["expected_wait_days"], days, observed),
            "days_since_last_visit": concordance(since, days, observed),
            "last_visit_plus_median_interval": concordance(due, days, observed),
        },
        "brier": {},
        "calibration": {},
        "history": history,
    }
    for name, k in probability_columns(config):
        if k > d.horizon_days:
            continue  # the outcome is not known within the backtest window
        hit = (observed & (days <= k)).astype(float)
        p = ans[name]
        out["brier"][name] = brier_scores(p, hit)
        edges = np.linspace(0, 1, 11)
        b = np.clip(np.digitize(p, edges) - 1, 0, 9)
        out["calibration"][name] = [
            {"predicted": float(p[b == i].mean()), "observed": float(hit[b == i].mean()), "n": int((b == i).sum())}
            for i in range(10) if (b == i).any()]
    return out


def score_later(predictions: pd.DataFrame, baselines: dict[str, np.ndarray], later: pd.DataFrame, as_of: pd.Timestamp,
                config: Config) -> dict:
    """The free backtest: a log with visits on or after the as-of date (left out of training) scores
    the run's answers on them. predictions: the run's table, its first N rows the customers of
    `baselines` ([N] days each) in the same order.

    point: customers who came back by the log's end, their actual gap from the last visit against
      `predicted_interval_days` and each baseline (only gaps shorter than the watch window can be
      seen, so the short gaps weigh more than in the long run);
    as_of: concordance of `expected_wait_days` and of days since the last visit with the days to
      each customer's first later visit (censored at the log's end), Brier of each p_within_{k}d
      whose k fits the window."""
    if later.empty:
        return {"skipped": "no visits on or after the as-of date"}
    N = len(next(iter(baselines.values())))
    frame = predictions.iloc[:N]
    end = later[TIME].max()
    days, observed = truth_after(later, frame["customer_id"].astype(str).to_numpy(), as_of, end + pd.Timedelta(seconds=1))
    window = float((end - as_of) / pd.Timedelta(days=1))
    last = frame["last_visit"].to_numpy("datetime64[ns]")
    gap = (np.datetime64(as_of.as_unit("ns")) - last) / np.timedelta64(1, "D") + days
    back = observed & np.isfinite(frame["predicted_interval_days"].to_numpy(float))
    point = {name: float(np.mean(np.abs(v[back] - gap[back]))) if back.any() else None
             for name, v in {"answer": frame["predicted_interval_days"].to_numpy(float), **baselines}.items()}
    out = {"window_days": window, "customers": int(N), "came_back": int(observed.sum()),
           "point_mae_days": point, "as_of": {}}
    if "expected_wait_days" in frame and frame["expected_wait_days"].notna().any() and observed.any():
        since = frame["days_since_last_visit"].to_numpy(float)
        out["as_of"]["concordance"] = {"model": concordance(frame["expected_wait_days"].to_numpy(float), days, observed),
                                       "days_since_last_visit": concordance(since, days, observed)}
        out["as_of"]["brier"] = {}
        for name, k in probability_columns(config):
            if k <= window:
                out["as_of"]["brier"][name] = brier_scores(frame[name].to_numpy(float), (observed & (days <= k)).astype(float))
    return out
