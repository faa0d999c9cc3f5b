"""Per-customer accuracy of every answer mode against simple baselines (issue 13).

    python benchmarks/accuracy.py [--fast] [--families purchases,patterned,...] [--modes auto,pooled,...]
                                  [--customers N] [--seed S] [--set section.key=value ...]
                                  [--json FILE] [--md FILE | --md -]

Predictions are one per customer, so each customer is judged once, on one gap:
  * generated families (jaxlstm.synth.FAMILIES): train on the whole log, judge on each customer's
    true next gap from its last visit, generated past the log; customers without one (dropped out,
    or not back within the horizon) are skipped and counted;
  * `example` (tests/data/example_transactions.csv, columns id,date): leave-last-out: each
    customer's last visit day (all its rows of that date) is hidden, the models train on the rest,
    and the judged gap runs from the last remaining visit to the hidden day; customers with nothing
    left are dropped and counted.
Answers: `jaxlstm.train_all` in each mode (its `predicted_interval_days`, matched by customer_id as
text; a customer it leaves unanswered gets the population median and is counted), and five simple
baselines computed here from the training log, after merging rows with the same customer and
timestamp: the population median of all gaps, the population median of each customer's latest gap,
and the customer's median, mean and last gap (a customer without a gap gets the population median).
Scores, per group (all judged customers; those with >= 5 distinct visit days in the training log):
MAE in days per customer, and skill = 1 - MAE / MAE of the group's best simple baseline.
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
FAMILY_SIZES = {"purchases": 5000, "purchases_drift": 5000, "iid_exp": 3000, "patterned": 3000}  # full run
FAST_CUSTOMERS = 500
MODES = ("auto", "pooled", "per_customer")
BASELINES = ("population_median", "population_latest_median", "customer_median", "customer_mean", "customer_last")
MIN_DAYS = 5  # the "regular customers" group: at least this many distinct visit days


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
    """(training log, hidden gap in days per customer_id, customers dropped): each customer's last
    visit day hidden; the gap runs from its last remaining visit to the hidden day's first row."""
    visits = merged_visits(log)
    day = visits["timestamp"].dt.floor("D")
    last_day = day.groupby(visits["customer_id"]).transform("max")
    hidden = day == last_day
    train = visits[~hidden]
    back = visits[hidden].groupby("customer_id")["timestamp"].min()
    last = train.groupby("customer_id")["timestamp"].max()
    gap = ((back.reindex(last.index) - last).dt.total_seconds() / 86400).rename("next_gap_days")
    return train.reset_index(drop=True), gap, visits["customer_id"].nunique() - len(last)


def load_family(name: str, n: int | None, seed: int) -> tuple[pd.DataFrame, pd.Series, int]:
    """(training log, judged gap per customer_id, customers dropped before training)."""
    if name == "example":
        raw = pd.read_csv(EXAMPLE_CSV)
        log = pd.DataFrame({"customer_id": raw["id"].astype(str), "timestamp": pd.to_datetime(raw["date"])})
        if n is not None:  # a sample of customers, the same for a seed
            ids = log["customer_id"].drop_duplicates().sample(min(n, log["customer_id"].nunique()), random_state=seed)
            log = log[log["customer_id"].isin(set(ids))]
        return leave_last_out(log)
    from jaxlstm.synth import FAMILIES

    log, truth = FAMILIES[name](FAMILY_SIZES[name] if n is None else n, seed)
    gap = truth.set_index(truth["customer_id"].astype(str))["next_gap_days"]
    return log[["customer_id", "timestamp"]], gap, 0


def run_mode(log: pd.DataFrame, mode: str, overrides: dict) -> tuple[pd.Series, float]:
    """train_all's predicted_interval_days per customer_id (text), and the run's seconds."""
    import jaxlstm

    config = jaxlstm.load_config(None, {**overrides, "model.mode": mode})
    t = time.perf_counter()
    pred = jaxlstm.train_all(log, config, out_dir=None, progress=False)
    seconds = time.perf_counter() - t
    answer = pd.Series(pred["predicted_interval_days"].to_numpy(float), index=pred["customer_id"].astype(str))
    return answer[~answer.index.duplicated()], seconds


def score(answers: pd.DataFrame, truth: pd.Series, answer_names: list[str]) -> dict:
    """MAE per answer, the best baseline and every answer's skill against it, on these customers."""
    err = answers[answer_names].sub(truth, axis=0).abs()
    mae = {k: float(err[k].mean()) for k in answer_names}
    best = min(BASELINES, key=lambda k: mae[k])
    skill = {k: 1.0 - mae[k] / mae[best] if mae[best] > 0 else float("nan") for k in answer_names}
    return {"customers": int(len(truth)), "mae": mae, "best_baseline": best, "skill": skill}


def bench_family(name: str, n: int | None, seed: int, modes: list[str], overrides: dict) -> dict:
    log, gap, dropped = load_family(name, n, seed)
    base = simple_baselines(log)
    judged = gap.reindex(base.index)
    has_truth = judged.notna()
    answers = base.loc[has_truth, list(BASELINES)].copy()
    truth = judged[has_truth]
    seconds, unanswered = {}, {}
    for mode in modes:
        pred, seconds[mode] = run_mode(log, mode, overrides)
        got = pred.reindex(answers.index)
        unanswered[mode] = int(got.isna().sum())
        answers[mode] = got.fillna(answers["population_median"])
        print(f"  {name}: {mode} {seconds[mode]:.1f} s", file=sys.stderr, flush=True)
    names = list(modes) + list(BASELINES)
    regular = base.loc[has_truth, "n_days"] >= MIN_DAYS
    return {
        "customers": int(len(base) + dropped), "trained_customers": int(len(base)), "visits": int(len(log)),
        "dropped_before_training": int(dropped), "judged": int(has_truth.sum()), "skipped_no_truth": int((~has_truth).sum()),
        "unanswered": unanswered, "seconds": seconds,
        "median_true_gap_days": float(truth.median()) if len(truth) else float("nan"),
        "all": score(answers, truth, names),
        f"{MIN_DAYS}+ days": score(answers[regular], truth[regular], names) if regular.any() else None,
    }


def markdown(results: dict, command: str, commit: str) -> str:
    lines = ["# Per-customer accuracy (issue 13)", "",
             f"Command: `{command}`  ", f"Commit: `{commit}`", "",
             "Each customer is judged once, on its next gap (generated families: the true next gap after the "
             "log; `example`: leave-last-out). MAE in days per customer; skill = 1 - MAE / MAE of the group's "
             f"best simple baseline (in the group of all judged customers, or of those with >= {MIN_DAYS} "
             "distinct visit days). Written by `benchmarks/accuracy.py`.", "",
             "## Summary: skill of each mode against the best simple baseline", ""]
    modes = results["modes"]
    head = "| family | judged (5+ days) | best baseline | " + " | ".join(f"{m} all / 5+" for m in modes) + " |"
    lines += [head, "|" + "---|" * (3 + len(modes))]
    for fam, r in results["families"].items():
        reg = r[f"{MIN_DAYS}+ days"]
        cells = [f"{r['all']['skill'][m]:+.1%} / " + (f"{reg['skill'][m]:+.1%}" if reg else "-") for m in modes]
        lines.append(f"| {fam} | {r['judged']:,} ({reg['customers'] if reg else 0:,}) | {r['all']['best_baseline']}"
                     + (f" / {reg['best_baseline']}" if reg else "") + " | " + " | ".join(cells) + " |")
    for fam, r in results["families"].items():
        reg = r[f"{MIN_DAYS}+ days"]
        lines += ["", f"## {fam}", "",
                  f"{r['customers']:,} customers, {r['visits']:,} training rows; judged {r['judged']:,} "
                  f"(skipped without a true next gap: {r['skipped_no_truth']:,}; dropped before training: "
                  f"{r['dropped_before_training']:,}); {reg['customers'] if reg else 0:,} judged with >= {MIN_DAYS} "
                  f"visit days. Median judged gap {r['median_true_gap_days']:.1f} days. Seconds per mode: "
                  + ", ".join(f"{m} {s:.0f}" for m, s in r["seconds"].items())
                  + (". Unanswered (population median used): " + ", ".join(f"{m} {u}" for m, u in r["unanswered"].items() if u)
                     if any(r["unanswered"].values()) else "") + ".", "",
                  "| answer | MAE all | skill all | MAE 5+ days | skill 5+ days |", "|---|---|---|---|---|"]
        for k in r["all"]["mae"]:
            best = " (best baseline)" if k == r["all"]["best_baseline"] else ""
            reg_cells = f"{reg['mae'][k]:.2f} | {reg['skill'][k]:+.1%}" if reg else "- | -"
            lines.append(f"| {k}{best} | {r['all']['mae'][k]:.2f} | {r['all']['skill'][k]:+.1%} | {reg_cells} |")
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
    from jaxlstm.synth import FAMILIES

    families_all = [*FAMILIES, "example"]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default=",".join(families_all), help=f"comma-separated: {', '.join(families_all)}")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: auto, pooled, per_customer, finetune")
    p.add_argument("--customers", type=int, help="customers per family (default: the full run's sizes; example: all 5,000)")
    p.add_argument("--fast", action="store_true", help=f"a smoke run: {FAST_CUSTOMERS} customers per family, train.survival_epochs=0 unless --set")
    p.add_argument("--seed", type=int, default=0, help="the generated logs' seed (the training seed is train.seed)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override, passed to every run")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--md", default=str(ROOT / "benchmarks" / "ACCURACY.md"), help="markdown report ('-': none)")
    args = p.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    modes = [m for m in args.modes.split(",") if m]
    bad = [f for f in families if f not in families_all] + [m for m in modes if m not in (*MODES, "finetune")]
    if bad or not families or not modes:
        fail(f"unknown family or mode: {', '.join(bad) or '(none given)'}")
    if args.customers is not None and args.customers < 1:
        fail("--customers must be >= 1")
    overrides = parse_sets(args.set)
    if args.fast:  # compiling the survival model is a third of a small run; predicted_interval_days does not read it
        overrides.setdefault("train.survival_epochs", "0")
    import jaxlstm

    try:
        jaxlstm.load_config(None, overrides)
    except jaxlstm.InputError as e:
        fail(f"--set: {e}")
    n = args.customers if args.customers is not None else (FAST_CUSTOMERS if args.fast else None)

    command = "python benchmarks/accuracy.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    results = {"command": command.strip(), "commit": commit, "overrides": overrides, "modes": modes, "seed": args.seed, "families": {}}
    t = time.perf_counter()
    for fam in families:
        results["families"][fam] = bench_family(fam, n, args.seed, modes, overrides)
    results["seconds"] = time.perf_counter() - t
    md = markdown(results, results["command"], commit)
    print(md)
    if args.md != "-":
        Path(args.md).write_text(md)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"{results['seconds']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
