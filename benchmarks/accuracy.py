"""Per-customer accuracy of every answer mode against simple baselines (issue 13).

    python benchmarks/accuracy.py [--fast] [--families purchases,patterned,...] [--modes auto,pooled,...]
                                  [--protocol leave_last_out,next_gap,as_of] [--customers N] [--seed S]
                                  [--set section.key=value ...] [--json FILE] [--md FILE | --md -]

Primary protocol (`leave_last_out`), every family and the example log, as the product is judged on real
logs (issue 13): each customer's last visit day (all its rows of that calendar day) is hidden, and
`jaxlstm.train_all` trains on the rest. Its `predicted_interval_days` (the next gap after the last
visit, given the customer comes back) is scored against the hidden gap: days from the customer's
last remaining visit to the first row of the hidden day. Customers with a single visit day have
nothing left to train on; they are not judged, only counted. Every other customer is judged once.
Answers: train_all in each mode (matched by customer_id as text; a customer it leaves unanswered
gets the population median and is counted), and five simple baselines computed here from the
training log, after merging rows with the same customer and timestamp: the population median of all
gaps, the population median of each customer's latest gap, and the customer's median, mean and last
gap (a customer without a gap gets the population median). Scores, per group (all judged customers;
those with >= 5 distinct visit days in the training log): MAE in days per customer, and
skill = 1 - MAE / MAE of the group's best simple baseline.

Second protocol (`next_gap`), the generated families (their truth is known): every mode trains on the
whole log (as of its end, for the purchase families), and `predicted_interval_days` is scored against
each customer's true next gap, the generator's, from its last visit to its next one (customers who do not
come back within the horizon, or drop out, are not judged; neither are customers with a single visit day,
as above, so the two protocols judge alike). Same groups, baselines (from the whole log) and skill.

Third protocol (`as_of`), the purchase families (jaxlstm.synth.LOG_END: one log end for every
customer) and the example log: the as-of question. On a purchase family train_all trains on the whole
generated log, as of its end; the truth is the generator's: each customer's first purchase after the end
(none: not back within the horizon, or dropped out). On the example log it trains on the visits before
EXAMPLE_AS_OF, as of that date, and the truth is each of those customers' first visit after it, in the
rest of the log (none: not back by the log's end, the horizon). Judged:
  * `predicted_next_visit` (the date of the next visit given a return, as of the end; NaT only without a
    survival answer) in days from the log end, for the customers who come back: on the purchase families
    within LONG_HORIZON_DAYS, five years (the generator's first purchase after the end, from the same log
    generated with that horizon: judged only on those back within the one-year horizon, early dates would
    look best), on the example log by its end. MAE (and the median absolute error) and the share back by the
    date, beside the classic date (last visit + predicted_interval_days, or the log end where that date has
    passed) on the same customers; on the purchase families also the share back by the date among every
    customer who ever comes back (a truth of EVER_DAYS: the generator's ageing customers come back decades
    later too). The share depends on how far the truth looks: for a median date given a return it would
    be one half of *every* returner;
  * the ranking: concordance (jaxlstm.asof.concordance) of `expected_wait_days` with the days from
    the log end to the next visit (censored at the horizon), beside that of "days since last visit";
  * the probabilities: the Brier score of each `p_within_{k}d` (k within the horizon) against "back
    within k days", beside the base rate's (the share back, in hindsight the best constant).

Writes a markdown report (default benchmarks/ACCURACY.md, with the command and git commit) and,
with --json, every figure.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXAMPLE_CSV = ROOT / "tests" / "data" / "example_transactions.csv"
# the full run; purchase logs are mostly single-day customers, so 20,000 leave about 1,000 judged
# customers with >= 5 visit days per family
FAMILY_SIZES = {"purchases": 20000, "purchases_drift": 20000, "iid_exp": 3000, "patterned": 3000}
FAST_CUSTOMERS = 500
# the purchase families' truth for judging dates: the customers who come back within 5 years (the generator's
# ageing customers come back decades later too; a date's error in decades says nothing about a shop's question),
# and for the share back by the date also every customer who ever comes back
LONG_HORIZON_DAYS = 5 * 365.0
EVER_DAYS = 80_000.0
EXAMPLE_AS_OF = pd.Timestamp("2014-10-01")  # the example log runs through 2014: a quarter after it to score on
MODES = ("auto", "pooled", "per_customer")
PROTOCOLS = ("leave_last_out", "next_gap", "as_of")
BASELINES = ("population_median", "population_latest_median", "customer_median", "customer_mean", "customer_last")
MIN_DAYS = 5  # the "regular customers" group: at least this many distinct visit days
TARGETS = {"all": 0.10, f"{MIN_DAYS}+ days": 0.07}  # issue 13: skill against the best simple baseline


def merged_visits(log: pd.DataFrame) -> pd.DataFrame:
    """customer_id (text), timestamp; rows with the same customer and timestamp merged; sorted."""
    visits = pd.DataFrame({"customer_id": log["customer_id"].astype(str), "timestamp": pd.to_datetime(log["timestamp"])})
    return visits.drop_duplicates().sort_values(["customer_id", "timestamp"], kind="stable").reset_index(drop=True)


def simple_baselines(log: pd.DataFrame) -> pd.DataFrame:
    """Per customer (index: customer_id as text): the five baselines' answers in days, and n_days
    (distinct visit days), from a training log."""
    visits = merged_visits(log)
    gap = visits.groupby("customer_id")["timestamp"].diff().dt.total_seconds() / 86400
    by = visits.assign(gap=gap).dropna(subset=["gap"]).groupby("customer_id")["gap"]
    pop_all = float(np.median(gap.dropna())) if gap.notna().any() else 0.0
    latest = by.last()
    pop_latest = float(latest.median()) if len(latest) else pop_all
    ids = pd.Index(visits["customer_id"].unique(), name="customer_id")
    out = pd.DataFrame(index=ids)
    out["population_median"] = pop_all
    out["population_latest_median"] = pop_latest
    out["customer_median"] = by.median().reindex(ids).fillna(pop_all)
    out["customer_mean"] = by.mean().reindex(ids).fillna(pop_all)
    out["customer_last"] = latest.reindex(ids).fillna(pop_all)
    out["n_days"] = visits.assign(day=visits["timestamp"].dt.floor("D")).groupby("customer_id")["day"].nunique()
    return out


def leave_last_out(log: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, int]:
    """(training log, hidden gap in days per customer_id, customers with a single visit day).

    The log's rows are merged first (merged_visits). Every row on each customer's last calendar day
    is hidden; the rest is the training log. The hidden gap runs from the customer's last remaining
    visit to the first row of its hidden day. A customer with a single visit day has nothing left:
    it is neither in the training log nor judged, only counted."""
    visits = merged_visits(log)
    day = visits["timestamp"].dt.floor("D")
    last_day = day.groupby(visits["customer_id"]).transform("max")
    hidden = day == last_day
    train = visits[~hidden]
    back = visits[hidden].groupby("customer_id")["timestamp"].min()
    last = train.groupby("customer_id")["timestamp"].max()
    gap = ((back.reindex(last.index) - last).dt.total_seconds() / 86400).rename("hidden_gap_days")
    return train.reset_index(drop=True), gap, visits["customer_id"].nunique() - len(last)


def load_log(name: str, n: int | None, seed: int) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(the whole log: customer_id, timestamp; the generator's truth, None for the example log)."""
    if name == "example":
        raw = pd.read_csv(EXAMPLE_CSV)
        log = pd.DataFrame({"customer_id": raw["id"].astype(str), "timestamp": pd.to_datetime(raw["date"])})
        if n is not None:  # a sample of customers, the same for a seed
            ids = log["customer_id"].drop_duplicates().sample(min(n, log["customer_id"].nunique()), random_state=seed)
            log = log[log["customer_id"].isin(set(ids))]
        return log, None
    from jaxlstm.synth import FAMILIES

    log, truth = FAMILIES[name](FAMILY_SIZES[name] if n is None else n, seed)
    return log[["customer_id", "timestamp"]], truth


def run_mode(log: pd.DataFrame, mode: str, overrides: dict, as_of: pd.Timestamp | None = None) -> tuple[pd.DataFrame, float]:
    """train_all's predictions indexed by customer_id (text), and the run's seconds."""
    import jaxlstm

    config = jaxlstm.load_config(None, {**overrides, "model.mode": mode})
    t = time.perf_counter()
    pred = jaxlstm.train_all(log, config, out_dir=None, progress=False, as_of=as_of)
    seconds = time.perf_counter() - t
    pred = pred.set_index(pred["customer_id"].astype(str))
    return pred[~pred.index.duplicated()], seconds


def score(answers: pd.DataFrame, truth: pd.Series, answer_names: list[str]) -> dict:
    """MAE per answer, the best baseline and every answer's skill against it, on these customers."""
    err = answers[answer_names].sub(truth, axis=0).abs()
    mae = {k: float(err[k].mean()) for k in answer_names}
    best = min(BASELINES, key=lambda k: mae[k])
    skill = {k: 1.0 - mae[k] / mae[best] if mae[best] > 0 else float("nan") for k in answer_names}
    return {"customers": int(len(truth)), "mae": mae, "best_baseline": best, "skill": skill}


def bench_leave_last_out(name: str, log: pd.DataFrame, modes: list[str], overrides: dict) -> dict:
    train, gap, single_day = leave_last_out(log)
    base = simple_baselines(train)
    truth = gap.reindex(base.index)  # every customer of the training log has a hidden day
    answers = base[list(BASELINES)].copy()
    # predicted_interval_days never reads the survival model (it answers the as-of question), so
    # training it here would only cost time
    overrides = {**overrides, "train.survival_epochs": "0"}
    seconds, unanswered = {}, {}
    for mode in modes:
        pred, seconds[mode] = run_mode(train, mode, overrides)
        got = pred["predicted_interval_days"].astype(float).reindex(answers.index)
        unanswered[mode] = int(got.isna().sum())
        answers[mode] = got.fillna(answers["population_median"])
        print(f"  {name} leave-last-out: {mode} {seconds[mode]:.1f} s", file=sys.stderr, flush=True)
    names = list(modes) + list(BASELINES)
    regular = base["n_days"] >= MIN_DAYS
    return {
        "customers": int(len(base) + single_day), "rows": int(len(log)), "training_visits": int(len(train)),
        "single_day_not_judged": int(single_day), "judged": int(len(truth)), "unanswered": unanswered, "seconds": seconds,
        "median_hidden_gap_days": float(truth.median()) if len(truth) else float("nan"),
        "all": score(answers, truth, names),
        f"{MIN_DAYS}+ days": score(answers[regular], truth[regular], names) if regular.any() else None,
    }


def whole_log_runs(name: str, log: pd.DataFrame, modes: list[str], overrides: dict,
                   end: pd.Timestamp | None) -> dict[str, tuple[pd.DataFrame, float]]:
    """{mode: (train_all's predictions, seconds)} on the whole log, as of `end` (None: the run's default)."""
    runs = {}
    for mode in modes:
        runs[mode] = run_mode(log, mode, overrides, as_of=end)
        print(f"  {name} whole log: {mode} {runs[mode][1]:.1f} s", file=sys.stderr, flush=True)
    return runs


def bench_next_gap(log: pd.DataFrame, truth: pd.DataFrame, runs: dict) -> dict:
    """predicted_interval_days of each whole-log run against the true next gap (see the module doc)."""
    base = simple_baselines(log)
    gap = truth.set_index(truth["customer_id"].astype(str))["next_gap_days"].astype(float).reindex(base.index)
    judged = gap.notna() & (base["n_days"] >= 2)
    answers = base.loc[judged, list(BASELINES)].copy()
    for mode, (pred, _) in runs.items():
        answers[mode] = pred["predicted_interval_days"].astype(float).reindex(answers.index).fillna(answers["population_median"])
    names = list(runs) + list(BASELINES)
    truth_j = gap[judged]
    regular = base.loc[judged, "n_days"] >= MIN_DAYS
    return {"customers": int(len(base)), "judged": int(judged.sum()), "not_back": int(gap.isna().sum()),
            "median_next_gap_days": float(truth_j.median()) if len(truth_j) else float("nan"),
            "all": score(answers, truth_j, names),
            f"{MIN_DAYS}+ days": score(answers[regular], truth_j[regular], names) if regular.any() else None}


def truth_after(log: pd.DataFrame, cut: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """(the log before `cut`, the truth bench_as_of reads for its customers: last_visit and next_visit,
    their first visit at or after `cut`, NaT where none; the horizon: days from `cut` to the day after
    the log's last visit)."""
    before, after = log[log["timestamp"] < cut], log[log["timestamp"] >= cut]
    truth = before.groupby("customer_id")["timestamp"].max().rename("last_visit").to_frame()
    truth["next_visit"] = after.groupby("customer_id")["timestamp"].min().reindex(truth.index)
    end = log["timestamp"].max().normalize() + pd.Timedelta(days=1)
    return before, truth.reset_index(), (end - cut) / pd.Timedelta(days=1)


def bench_as_of(truth: pd.DataFrame, end: pd.Timestamp, horizon: float, runs: dict,
                truth_any: pd.DataFrame | None = None, truth_ever: pd.DataFrame | None = None) -> dict:
    """The as-of answers of each run against `truth` (next_visit within the horizon); the dates against
    `truth_any` (next_visit within a longer one) where given, else `truth`; with `truth_ever` (every next
    visit) also the share back by the date among all who ever come back."""
    from jaxlstm.asof import brier_scores, concordance

    truth = truth.set_index(truth["customer_id"].astype(str))
    day = pd.Timedelta(days=1)
    back = truth["next_visit"].notna().to_numpy()
    true_days = ((truth["next_visit"] - end) / day).to_numpy(float)  # NaN: not back within the horizon
    censored = np.where(back, true_days, horizon)
    since = ((end - truth["last_visit"]) / day).to_numpy(float)
    later = truth if truth_any is None else truth_any.set_index(truth_any["customer_id"].astype(str)).reindex(truth.index)
    any_days = ((later["next_visit"] - end) / day).to_numpy(float)  # NaN: not back within its horizon
    back_any = np.isfinite(any_days)
    ever_days = None if truth_ever is None else (
        (truth_ever.set_index(truth_ever["customer_id"].astype(str))["next_visit"].reindex(truth.index) - end) / day).to_numpy(float)
    out = {"customers": int(len(truth)), "back": int(back.sum()), "back_ever": int(back_any.sum()),
           "dates_judged_on": "within the horizon" if truth_any is None else "within the long horizon", "horizon_days": horizon, "log_end": str(end),
           "median_days_to_next_visit": float(np.median(true_days[back])) if back.any() else float("nan"),
           "concordance_days_since_last_visit": concordance(since, censored, back), "modes": {}}
    for mode, (pred, seconds) in runs.items():
        pred = pred.reindex(truth.index)
        wait = pred["expected_wait_days"].to_numpy(float)
        if np.isnan(wait).all():  # no survival model (train.survival_epochs = 0): no as-of answers to judge
            out["modes"][mode] = None
            continue
        days = ((pd.to_datetime(pred["predicted_next_visit"]) - end) / day).to_numpy(float)  # NaN: no survival answer
        classic = pd.to_datetime(pred["last_visit"]) + pd.to_timedelta(pred["predicted_interval_days"].astype(float), unit="D")
        classic = np.maximum(((classic - end) / day).to_numpy(float), 0.0)  # a date already passed: the log end
        dated = np.isfinite(days)
        judged = back_any & dated
        err, err_classic = np.abs(days - any_days)[judged], np.abs(classic - any_days)[judged]
        some = bool(judged.any())
        out["modes"][mode] = {
            "seconds": seconds, "back_dated": int((back & dated).sum()), "back_gone": int((back & ~dated).sum()),
            "not_back_dated": int((~back & dated).sum()), "not_back_gone": int((~back & ~dated).sum()),
            "dates_judged": int(judged.sum()),
            "mae_days": float(err.mean()) if some else float("nan"),
            "mae_days_classic": float(err_classic.mean()) if some else float("nan"),
            # a few far-off median dates can carry the MAE: the median error shows the typical customer
            "median_abs_error_days": float(np.median(err)) if some else float("nan"),
            "median_abs_error_days_classic": float(np.median(err_classic)) if some else float("nan"),
            # how many of those who come back do so by the date (for a median date: half of *every* returner)
            "share_back_by_date": float((any_days <= days)[judged].mean()) if some else float("nan"),
            "share_back_by_date_classic": float((any_days <= classic)[judged].mean()) if some else float("nan"),
            **({} if ever_days is None else _ever_shares(ever_days, days, classic)),
            "concordance_expected_wait": concordance(wait, censored, back),
            "brier": {c: brier_scores(pred[c].to_numpy(float), (back & (true_days <= k)).astype(float))
                      for c, k in probability_columns(pred, horizon)},
        }
    return out


def _ever_shares(ever_days: np.ndarray, days: np.ndarray, classic: np.ndarray) -> dict:
    """The share back by each date among every customer who ever comes back (and gets a date)."""
    j = np.isfinite(ever_days) & np.isfinite(days)
    return {"back_ever_dated": int(j.sum()),
            "share_back_by_date_ever": float((ever_days <= days)[j].mean()) if j.any() else float("nan"),
            "share_back_by_date_ever_classic": float((ever_days <= classic)[j].mean()) if j.any() else float("nan")}


def probability_columns(pred: pd.DataFrame, horizon: float) -> list[tuple[str, float]]:
    """(column, k days) of the predictions' p_within_{k}d whose outcome is known within the horizon."""
    cols = [(c, float(c[len("p_within_"):-1])) for c in pred.columns if c.startswith("p_within_") and c.endswith("d")]
    return [(c, k) for c, k in cols if k <= horizon]


def _cell(x: float) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:+.1%}"


def _head(columns: list[str], modes: list[str]) -> list[str]:
    """A skill table's header and rule: the columns, then each mode's 'all / 5+'."""
    names = columns + [f"{m} all / 5+" for m in modes]
    return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]


def _judged(r: dict) -> str:
    """'judged (5+ days)' of one family's scores."""
    reg = r[f"{MIN_DAYS}+ days"]
    return f"{r['judged']:,} ({reg['customers'] if reg else 0:,})"


def _skills(r: dict, modes: list[str]) -> str:
    """'best baseline all / 5+ | mode all / 5+ | ...' cells of one family's scores."""
    reg = r[f"{MIN_DAYS}+ days"]
    cells = [_cell(r["all"]["skill"][m]) + " / " + (_cell(reg["skill"][m]) if reg else "-") for m in modes]
    return f"{r['all']['best_baseline']} / {reg['best_baseline'] if reg else '-'} | " + " | ".join(cells)


def _skill_section(results: dict, protocol: str, title: str, about: str, columns: dict) -> list[str]:
    """One protocol's skill table (no lines when no family has its scores): the title, what it judges, and a row
    per family: the judged counts, a cell per `columns` entry (header -> cell of the family's scores), the skills."""
    scores = {f: r[protocol] for f, r in results["families"].items() if r.get(protocol)}
    if not scores:
        return []
    modes = results["modes"]
    lines = ["", title, "", about, "", *_head(["family", "judged (5+ days)", *columns, "best baseline all / 5+"], modes)]
    for fam, r in scores.items():
        lines.append(f"| {fam} | {_judged(r)} | " + "".join(f"{cell(r)} | " for cell in columns.values()) + f"{_skills(r, modes)} |")
    return lines


def markdown(results: dict) -> str:
    lines = ["# Per-customer accuracy (issue 13)", "",
             f"Command: `{results['command']}`  ", f"Commit: `{results['commit']}`  ",
             f"Seconds: {results['seconds']:.0f}", "",
             "Written by `benchmarks/accuracy.py` (its docstring has the full protocol)."]
    lines += _skill_section(
        results, "leave_last_out", "## Leave-last-out: `predicted_interval_days` (the primary protocol)",
        "Each customer's last visit day is hidden and every mode trains on the rest; "
        "`predicted_interval_days` is scored against the hidden gap (days from the last remaining visit to the "
        "hidden day's first row). Customers with a single visit day are not judged. MAE in days per customer; "
        "skill = 1 - MAE / MAE of the group's best simple baseline, for all judged customers and for those with "
        f">= {MIN_DAYS} distinct visit days in the training log. Targets (issue 13): skill >= "
        f"{TARGETS['all']:+.0%} for all, >= {TARGETS[f'{MIN_DAYS}+ days']:+.0%} for {MIN_DAYS}+ days.",
        {"single visit day, not judged": lambda r: f"{r['single_day_not_judged']:,}"})
    lines += _skill_section(
        results, "next_gap", "## True next gap: `predicted_interval_days` after the log's end (generated families)",
        "Every mode trains on the whole generated log; `predicted_interval_days` is scored against each "
        "customer's true next gap (the generator's: from its last visit to its next one). Customers who do not "
        "come back within the horizon (or drop out) and customers with a single visit day are not judged. Same "
        "groups, baselines (from the whole log) and skill as above.",
        {"not back": lambda r: f"{r['not_back']:,}", "median next gap, days": lambda r: f"{r['median_next_gap_days']:.1f}"})
    asof = {f: r["as_of"] for f, r in results["families"].items() if r.get("as_of")}
    if asof:
        lines += ["", "## As of a date: `predicted_next_visit`, the ranking and the probabilities (purchase families, example)", "",
                  "Every mode trains on the whole generated log, as of its end; the truth is each customer's first purchase "
                  "after the end (the generator's; none within the horizon or dropped out: not back). On the example log: "
                  f"the visits before {EXAMPLE_AS_OF:%Y-%m-%d}, as of that date, and the truth the rest of the log (the horizon: "
                  "to its end). "
                  "`predicted_next_visit` in days from the log end: MAE over the customers who come back (and the median absolute "
                  "error), and the share of them back by that date, beside the classic date (last visit + `predicted_interval_days`, "
                  "the log end where that has passed) on the same customers. Who comes back, for the dates: on the generated logs "
                  f"those back within {LONG_HORIZON_DAYS / 365:.0f} years (the same log generated with that horizon: judged only on "
                  "those back within the horizon, early dates would look best), on the example log those back by its end; the "
                  "share also among every customer who ever comes back (generated logs; their ageing customers come back decades "
                  "later too). The share depends on how far the truth looks: for a median date given a return it would be one half "
                  "of every returner. Concordance: `expected_wait_days` and days since the last visit against the days to the next "
                  "visit, censored at the horizon. Brier: `p_within_30d` against back within 30 days, beside the base rate's (the "
                  "share back, in hindsight).", "",
                  "| family | mode | customers (back within the horizon) | dates judged | MAE (median abs. error) days: model / classic | "
                  "share back by the date: model / classic | the same, every returner | concordance: expected_wait / days since last "
                  "visit | Brier `p_within_30d`: model / base rate |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for fam, r in asof.items():
            for m, a in r["modes"].items():
                if a is None:
                    lines.append(f"| {fam} | {m} | {r['customers']:,} ({r['back']:,}) | no survival model | | | | | |")
                    continue
                ever = (f"{a['share_back_by_date_ever']:.2f} / {a['share_back_by_date_ever_classic']:.2f} ({a['back_ever_dated']:,})"
                        if "share_back_by_date_ever" in a else "-")
                lines.append(f"| {fam} | {m} | {r['customers']:,} ({r['back']:,}) | {a['dates_judged']:,} ({r['dates_judged_on']}) | "
                             f"{a['mae_days']:.1f} ({a['median_abs_error_days']:.1f}) / "
                             f"{a['mae_days_classic']:.1f} ({a['median_abs_error_days_classic']:.1f}) | "
                             f"{a['share_back_by_date']:.2f} / {a['share_back_by_date_classic']:.2f} | {ever} | "
                             f"{a['concordance_expected_wait']:.3f} / {r['concordance_days_since_last_visit']:.3f} | "
                             + (f"{b['model']:.4f} / {b['base_rate']:.4f} |" if (b := a["brier"].get("p_within_30d")) else "- |"))
        lines += ["", "Log end, horizon and median days from the end to the next visit (of those back): "
                  + "; ".join(f"{fam} {r['log_end'][:10]}, {r['horizon_days']:.0f} days, {r['median_days_to_next_visit']:.1f}"
                              for fam, r in asof.items()) + "."]
    llo = {f: r["leave_last_out"] for f, r in results["families"].items() if r.get("leave_last_out")}
    for fam, r in llo.items():
        reg = r[f"{MIN_DAYS}+ days"]
        lines += ["", f"## Leave-last-out: {fam}", "",
                  f"{r['customers']:,} customers, {r['rows']:,} rows; {r['training_visits']:,} training visits (rows merged); "
                  f"judged {r['judged']:,}, {reg['customers'] if reg else 0:,} of them with >= {MIN_DAYS} visit days; "
                  f"{r['single_day_not_judged']:,} with a single visit day, not judged. "
                  f"Median hidden gap {r['median_hidden_gap_days']:.1f} days. Seconds per mode: "
                  + ", ".join(f"{m} {s:.0f}" for m, s in r["seconds"].items())
                  + (". Unanswered (population median used): " + ", ".join(f"{m} {u}" for m, u in r["unanswered"].items() if u)
                     if any(r["unanswered"].values()) else "") + ".", "",
                  "| answer | MAE all | skill all | MAE 5+ days | skill 5+ days |", "|---|---|---|---|---|"]
        for k in r["all"]["mae"]:
            best = " (best baseline)" if k == r["all"]["best_baseline"] else ""
            best5 = " (best)" if reg and k == reg["best_baseline"] else ""
            reg_cells = f"{reg['mae'][k]:.2f}{best5} | {_cell(reg['skill'][k])}" if reg else "- | -"
            lines.append(f"| {k}{best} | {r['all']['mae'][k]:.2f} | {_cell(r['all']['skill'][k])} | {reg_cells} |")
    return "\n".join(lines) + "\n"


def fail(message: str) -> None:
    """Bad options: one line on stderr, exit code 2 (no traceback)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            fail(f"--set {item!r}: expected SECTION.KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def main(argv=None) -> None:
    from jaxlstm.synth import FAMILIES, LOG_END

    families_all = [*FAMILIES, "example"]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default=",".join(families_all), help=f"comma-separated: {', '.join(families_all)}")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: auto, pooled, per_customer, finetune")
    p.add_argument("--protocol", default=",".join(PROTOCOLS),
                   help="comma-separated: leave_last_out (every family), next_gap (generated families), as_of (purchase families, example)")
    p.add_argument("--customers", type=int, help="customers per family (default: the full run's sizes; example: all 5,000)")
    p.add_argument("--fast", action="store_true", help=f"a smoke run: {FAST_CUSTOMERS} customers per family")
    p.add_argument("--seed", type=int, default=0, help="the generated logs' seed (the training seed is train.seed)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override, passed to every run")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--md", default=str(ROOT / "benchmarks" / "ACCURACY.md"), help="markdown report ('-': none)")
    args = p.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    modes = [m for m in args.modes.split(",") if m]
    protocols = [x for x in args.protocol.split(",") if x]
    bad = ([f for f in families if f not in families_all] + [m for m in modes if m not in (*MODES, "finetune")]
           + [x for x in protocols if x not in PROTOCOLS])
    if bad or not families or not modes or not protocols:
        fail(f"unknown family, mode or protocol: {', '.join(bad) or '(none given)'}")
    if args.customers is not None and args.customers < 1:
        fail("--customers must be >= 1")
    overrides = parse_sets(args.set)
    import jaxlstm

    try:
        jaxlstm.load_config(None, overrides)
    except jaxlstm.InputError as e:
        fail(f"--set: {e}")
    n = args.customers if args.customers is not None else (FAST_CUSTOMERS if args.fast else None)

    command = "python benchmarks/accuracy.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    results = {"command": command.strip(), "commit": commit, "overrides": overrides, "modes": modes, "protocols": protocols,
               "seed": args.seed, "families": {}}
    t = time.perf_counter()
    for fam in families:
        log, truth = load_log(fam, n, args.seed)
        r = results["families"][fam] = {}
        if "leave_last_out" in protocols:
            r["leave_last_out"] = bench_leave_last_out(fam, log, modes, overrides)
        next_gap, as_of = "next_gap" in protocols and truth is not None, "as_of" in protocols and fam in LOG_END
        if next_gap or as_of:  # one set of whole-log runs for both
            runs = whole_log_runs(fam, log, modes, overrides, LOG_END[fam][0] if fam in LOG_END else None)
            if next_gap:
                r["next_gap"] = bench_next_gap(log, truth, runs)
            if as_of:
                size = n if n is not None else FAMILY_SIZES[fam]
                ever = FAMILIES[fam](size, args.seed, horizon_days=EVER_DAYS)[1]  # the same log, a truth that looks further
                end, horizon = LOG_END[fam]
                within = ever.assign(next_visit=ever["next_visit"].where(ever["next_visit"] < end + pd.Timedelta(days=LONG_HORIZON_DAYS)))
                r["as_of"] = bench_as_of(truth, end, horizon, runs, within, ever)
        if fam == "example" and "as_of" in protocols:
            before, truth_ex, horizon = truth_after(log, EXAMPLE_AS_OF)
            runs = whole_log_runs(f"{fam} before {EXAMPLE_AS_OF:%Y-%m-%d}", before, modes, overrides, EXAMPLE_AS_OF)
            r["as_of"] = bench_as_of(truth_ex, EXAMPLE_AS_OF, horizon, runs)
    results["seconds"] = time.perf_counter() - t
    md = markdown(results)
    print(md)
    if args.md != "-":
        Path(args.md).write_text(md)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"{results['seconds']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
