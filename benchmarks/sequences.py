"""Extra sequences: one LSTM stack over the joint inputs ("concat") against one stack per sequence
("separate", the classic recipe's layout), and against no extra column at all.

    python benchmarks/sequences.py [--customers N] [--modes pooled,auto] [--json FILE]

Data (each with one extra per-visit column):
  example: the bundled public log; its extra column is the number of rows of each visit (items bought
    that day: rows at one timestamp are one visit, their extra columns summed);
  basket_signal: generated; the gap after a visit is 3 days + amount / 4 (plus noise);
  basket_noise: generated; the same amounts, but gaps that ignore them (the column is noise).
Score: the run's own per-customer headline (each customer's last visit hidden and predicted from the
rest, on customers nothing was chosen on): MAE in days of the mode's answers, from metrics.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def basket(n: int, seed: int, signal: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = int(rng.integers(3, 30))
        amount = rng.lognormal(3.0, 0.8, k)
        base = 3 + amount[:-1] / 4 if signal else np.full(k - 1, 3 + np.exp(3.0 + 0.32) / 4)
        gaps = np.maximum(base * rng.lognormal(0, 0.3, k - 1), 0.1)
        t = pd.Timestamp("2023-01-01") + pd.to_timedelta(np.r_[0, np.cumsum(gaps)] + rng.uniform(0, 60), unit="D")
        rows.append(pd.DataFrame({"customer_id": f"c{i:05d}", "timestamp": t, "amount": amount}))
    return pd.concat(rows, ignore_index=True)


def example() -> pd.DataFrame:
    log = pd.read_csv(ROOT / "tests" / "data" / "example_transactions.csv")
    return log.rename(columns={"id": "customer_id", "date": "timestamp"}).assign(amount=1.0)


def score(log: pd.DataFrame, mode: str, extra: bool, sequences: str, workdir: Path) -> tuple[float, float]:
    """(headline MAE days of the mode's answers, seconds) of one run in a fresh process."""
    data = workdir / "log.parquet"
    log.to_parquet(data)
    out = workdir / f"run_{mode}_{extra}_{sequences}"
    cmd = [sys.executable, str(ROOT / "scripts" / "train_all.py"), "--customers", str(data), "--out", str(out), "--quiet",
           "--mode", mode, "--set", "train.survival_epochs=0", "--set", f"model.sequences={sequences}"]
    if extra:
        cmd += ["--extra-col", "amount"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    ev = json.loads((out / "metrics.json").read_text())["evaluation"]
    return ev["overall"][mode]["mae_days"], seconds


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=2000, help="customers per generated log")
    p.add_argument("--modes", default="pooled,auto")
    p.add_argument("--json")
    args = p.parse_args(argv)
    data = {"example": example(), "basket_signal": basket(args.customers, 0, True), "basket_noise": basket(args.customers, 1, False)}
    variants = [("no extra column", False, "concat"), ("concat", True, "concat"), ("separate", True, "separate")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, log in data.items():
            for mode in args.modes.split(","):
                row = {"data": name, "mode": mode}
                for label, extra, seq in variants:
                    row[label], row[f"{label} s"] = score(log, mode, extra, seq, Path(tmp))
                results.append(row)
                print(json.dumps(row), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    print(f"\nPer-customer headline MAE (days), commit {commit}:\n")
    print("| data | mode | no extra column | concat | separate |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['data']} | {r['mode']} | {r['no extra column']:.2f} | {r['concat']:.2f} | {r['separate']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"commit": commit, "results": results}, indent=2))


if __name__ == "__main__":
    main()
