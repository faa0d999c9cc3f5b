"""A gradient-boosted reference for the leave-last-out question (issue 13): how much do a customer's own
gaps say, read by a strong tabular learner instead of the shared LSTM?

    pip install -e ".[bench]"    # scikit-learn
    python benchmarks/gbm_reference.py [--families example,purchases,...] [--customers N] [--seed S] [--as-of] [--json FILE]

The protocol is benchmarks/accuracy.py's `leave_last_out` (its functions: the same hidden gaps, the same
judged customers, baselines and skill). Visits are visit days (a customer's rows of one calendar day are
one visit at its first time, as `data.merge_same_day` does in a run). For the gap after visit k of a
customer, the inputs are read from its visits up to k only: the visit index k, the customer's age (days
from its first visit to visit k), and of log1p of its gaps so far the mean, median, std, first, last,
second-to-last, largest, smallest and the OLS slope over their index (missing where there are too few).
No calendar date and nothing about the log's end: where a gap ends inside the log says how long it can be
(a gap that starts near the end is short or not yet seen), which is true of a log cut for the benchmark and
false of the next visit asked in production. A HistGradientBoostingRegressor with the absolute-error loss
on log1p days (it predicts the median, in days too) learns from the training log two ways:
  latest: each customer's latest training gap, from the visits before it (what the question asks);
  every:  every training gap, each customer weighing 1 in total, its k-th latest 0.5^k of it (as the
          shared model's `train.pooled_recency` default);
  hidden: a reference, not a candidate: the benchmark's hidden gaps themselves, cross-fitted (the judged
          customers in two random halves, each half answered by a model fit on the other's questions and
          hidden gaps). No run can train on the answers; it shows how much these inputs say about the very
          question scored, as far as half the judged customers can teach it (few on the small logs, where
          `every`, learning from all intervals, does better).
Beside them, `median_per_length`: each judged customer answered by the median hidden gap of the judged
customers with as many visit days (1, 2, ..., 7, 8 or more): the best single number per history length in
hindsight, which knows the level of the next gap and nothing else.

The as-of question gets a hindsight reference too (`--as-of`, the purchase families and the example log:
accuracy.py's `as_of` protocol, the same log ends, truth and horizons): gradient-boosted classifiers of
"back within 30 days" and "back within the horizon" on the same 11 inputs plus the days since the last visit,
cross-fitted on the customers' true outcomes (two random halves). Their concordance (customers ranked by the
chance, the likelier first) and Brier score are what a tabular learner fit on half the answers gets: a
reference, not a ceiling (its P(30d) ranks below days since the last visit, one of its own inputs, on these
logs: the few customers back within 30 days are little to learn a ranking from). The run's own
`expected_wait_days` and `p_within_30d` are in accuracy.py's `as_of` table.
Prints a table (markdown) and, with --json, every figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # noqa: E402  (benchmarks/accuracy.py: the protocol)

FEATURES = ("n", "age", "mean", "median", "std", "first", "last", "last2", "max", "min", "slope")
FAMILIES = ("example", "purchases", "purchases_drift", "iid_exp", "patterned")
AS_OF_FAMILIES = ("example", "purchases", "purchases_drift")  # one log end (or cutoff) for every customer


def visit_days(log: pd.DataFrame) -> dict[str, np.ndarray]:
    """{customer_id: its visit days' first times, in days, ascending}."""
    visits = accuracy.merged_visits(log)
    visits = visits[~visits.assign(day=visits["timestamp"].dt.floor("D")).duplicated(["customer_id", "day"])]
    days = (visits["timestamp"] - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
    return {c: d.to_numpy(float) for c, d in days.groupby(visits["customer_id"])}


def features(times: np.ndarray, k: int) -> list[float]:
    """The inputs for the gap after visit k (0-based), from times[: k + 1]."""
    lg = np.log1p(np.diff(times[: k + 1]))
    nan = float("nan")
    return [k, times[k] - times[0],
            lg.mean() if k else nan, np.median(lg) if k else nan, lg.std() if k > 1 else nan,
            lg[0] if k else nan, lg[-1] if k else nan, lg[-2] if k > 1 else nan,
            lg.max() if k else nan, lg.min() if k else nan,
            np.polyfit(np.arange(k), lg, 1)[0] if k > 2 else nan]


def examples(days: dict[str, np.ndarray], kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, log1p target, weight) from every customer's training visits."""
    X, y, w = [], [], []
    for t in days.values():
        n = len(t) - 1  # gaps
        if n < 1:
            continue
        ks = [n - 1] if kind == "latest" else list(range(n))
        weight = 0.5 ** (n - 1 - np.asarray(ks, float))
        for k, wk in zip(ks, weight / weight.sum()):
            X.append(features(t, k)), y.append(np.log1p(t[k + 1] - t[k])), w.append(wk)
    return np.asarray(X, float), np.asarray(y, float), np.asarray(w, float)


def regressor(seed: int):
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(loss="absolute_error", max_iter=300, learning_rate=0.05, max_leaf_nodes=15,
                                         min_samples_leaf=50, random_state=seed)


def classifier(seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=50,
                                          random_state=seed)


def cross_fitted(fit_predict, X: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Answers for every row of X, each from fit_predict(X_train, y_train, X_answer) on the other half of
    the rows (two random halves, the same for a seed)."""
    half = np.random.default_rng(seed).permutation(len(y)) % 2
    out = np.empty(len(y))
    for h in (0, 1):
        out[half == h] = fit_predict(X[half != h], y[half != h], X[half == h])
    return out


def bench(name: str, log: pd.DataFrame, seed: int) -> dict:
    train, gap, single_day = accuracy.leave_last_out(log)
    base = accuracy.simple_baselines(train)
    truth = gap.reindex(base.index)
    days = visit_days(train)
    ask = np.asarray([features(days[c], len(days[c]) - 1) for c in base.index], float)
    answers = base[list(accuracy.BASELINES)].copy()
    seconds = {}
    for kind in ("latest", "every"):
        t = time.perf_counter()
        X, y, w = examples(days, kind)
        answers[f"gbm_{kind}"] = np.expm1(regressor(seed).fit(X, y, sample_weight=w).predict(ask))
        seconds[kind] = time.perf_counter() - t
        print(f"  {name}: gbm_{kind} {seconds[kind]:.1f} s ({len(y):,} examples)", file=sys.stderr, flush=True)
    t = time.perf_counter()
    answers["gbm_hidden"] = np.expm1(cross_fitted(lambda X, y, Z: regressor(seed).fit(X, y).predict(Z),
                                                  ask, np.log1p(truth.to_numpy(float)), seed))
    seconds["hidden"] = time.perf_counter() - t
    length = np.minimum(base["n_days"].to_numpy(), 8)
    answers["median_per_length"] = truth.groupby(length).transform("median")
    names = ["gbm_latest", "gbm_every", "gbm_hidden", "median_per_length", *accuracy.BASELINES]
    regular = base["n_days"] >= accuracy.MIN_DAYS
    return {"judged": int(len(truth)), "single_day_not_judged": int(single_day), "seconds": seconds,
            "all": accuracy.score(answers, truth, names),
            f"{accuracy.MIN_DAYS}+ days": accuracy.score(answers[regular], truth[regular], names) if regular.any() else None}


def bench_as_of(name: str, log: pd.DataFrame, truth: pd.DataFrame | None, seed: int) -> dict:
    from jaxlstm.asof import brier, concordance
    from jaxlstm.synth import LOG_END

    if name == "example":
        end = accuracy.EXAMPLE_AS_OF
        log, truth, horizon = accuracy.truth_after(log, end)
    else:
        end, horizon = LOG_END[name]
    days = visit_days(log)
    truth = truth.set_index(truth["customer_id"].astype(str)).loc[list(days)]
    now = (end - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
    X = np.asarray([features(t, len(t) - 1) + [now - t[-1]] for t in days.values()], float)
    back = truth["next_visit"].notna().to_numpy()
    to_next = ((truth["next_visit"] - end) / pd.Timedelta(days=1)).to_numpy(float)
    censored = np.where(back, to_next, horizon)
    out = {"customers": len(X), "horizon_days": horizon, "concordance_days_since_last_visit": concordance(X[:, -1], censored, back)}
    for label, k in (("30d", 30.0), ("horizon", horizon)):
        hit = (back & (to_next <= k)).astype(int)
        p = cross_fitted(lambda X, y, Z: classifier(seed).fit(X, y).predict_proba(Z)[:, 1], X, hit, seed)
        out[f"within_{label}"] = {"concordance": concordance(-p, censored, back), "brier": brier(p, hit),
                                  "base_rate_brier": brier(np.full(len(hit), hit.mean()), hit)}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated: {', '.join(FAMILIES)}")
    p.add_argument("--customers", type=int, help="customers per family (default: accuracy.py's full sizes)")
    p.add_argument("--seed", type=int, default=0, help="the generated logs' seed")
    p.add_argument("--as-of", action="store_true", help="also the as-of reference (purchase families, example)")
    p.add_argument("--json", help="write every figure here")
    args = p.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    if not families or any(f not in FAMILIES for f in families):
        accuracy.fail(f"unknown family in {args.families!r}: choose from {', '.join(FAMILIES)}")
    if importlib.util.find_spec("sklearn") is None:
        accuracy.fail("scikit-learn is not installed: pip install -e \".[bench]\"")
    logs = {f: accuracy.load_log(f, args.customers, args.seed) for f in families}
    results = {f: bench(f, log, args.seed) for f, (log, _) in logs.items()}
    reg = f"{accuracy.MIN_DAYS}+ days"
    print("| family | judged (5+ days) | best baseline all / 5+ | gbm_latest all / 5+ | gbm_every all / 5+ | "
          "gbm_hidden (trained on the answers) all / 5+ | median_per_length (hindsight) all / 5+ |")
    print("|---|---|---|---|---|---|---|")
    for fam, r in results.items():
        cell = lambda g, k: f"{r[g]['skill'][k]:+.1%}" if r[g] else "-"  # noqa: E731
        print(f"| {fam} | {r['judged']:,} ({r[reg]['customers'] if r[reg] else 0:,}) | {r['all']['best_baseline']} / "
              f"{r[reg]['best_baseline'] if r[reg] else '-'} | {cell('all', 'gbm_latest')} / {cell(reg, 'gbm_latest')} | "
              f"{cell('all', 'gbm_every')} / {cell(reg, 'gbm_every')} | {cell('all', 'gbm_hidden')} / {cell(reg, 'gbm_hidden')} | "
              f"{cell('all', 'median_per_length')} / {cell(reg, 'median_per_length')} |")
    asof = {f: bench_as_of(f, *logs[f], args.seed) for f in families if args.as_of and f in AS_OF_FAMILIES}
    if asof:
        print("\n| family | customers | concordance: days since last visit / hindsight P(30d) / hindsight P(horizon) | "
              "Brier of P(30d): hindsight / base rate |")
        print("|---|---|---|---|")
        for fam, r in asof.items():
            a, b = r["within_30d"], r["within_horizon"]
            print(f"| {fam} | {r['customers']:,} | {r['concordance_days_since_last_visit']:.3f} / {a['concordance']:.3f} / "
                  f"{b['concordance']:.3f} | {a['brier']:.4f} / {a['base_rate_brier']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"leave_last_out": results, "as_of": asof}, indent=1))


if __name__ == "__main__":
    main()
