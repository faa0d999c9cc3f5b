"""Where a run's memory goes: a ledger of train_all's stages on a generated log.

Each stage (a function train.train_all calls) is wrapped: tracemalloc's traced bytes (numpy and
Python allocations; XLA's own buffers are not traced) held when it returns, more than before it,
and its peak above what was held when it started. Prints a table and JSON; --rss runs the same
train_all in a fresh process under /usr/bin/time -v for the true peak RSS (no tracemalloc).

    python benchmarks/memory.py --customers 20000 --epochs 2 [--json FILE] [--rss]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

STAGES = ("check_events", "histories", "make_windows", "before_last_visit", "prepare", "questions", "fit_pooled", "fit_groups",
          "question_answers", "evaluate_run", "backtest", "fit_survival", "predict_frame", "add_unanswered", "write_report")


def ledger(customers: int, epochs: int, visits: tuple[int, int], seed: int) -> dict:
    import numpy as np
    from jaxlstm import train as train_module
    from jaxlstm.config import load_config
    from jaxlstm.synth import make_customers

    events = make_customers(customers, seed=seed, visits=visits, one_off_share=0.0)
    events = events[["customer_id", "timestamp"]]
    config = load_config(None, {"train.epochs": epochs, "train.pooled_epochs": min(epochs, 20),
                                "train.survival_epochs": min(epochs, 20)})
    rows: list[dict] = []
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    log_mb = events.memory_usage(deep=True).sum() / 2**20

    def wrap(name, fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            now, peak = tracemalloc.get_traced_memory()
            rows.append({"stage": name, "held_after_mb": (now - before) / 2**20, "peak_above_start_mb": (peak - before) / 2**20,
                         "total_after_mb": (now - base) / 2**20, "seconds": time.perf_counter() - t0})
            return out
        return inner

    for name in STAGES:
        if hasattr(train_module, name):
            setattr(train_module, name, wrap(name, getattr(train_module, name)))
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        train_module.train_all(events, config, out, progress=False)
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"customers": customers, "visits": int(len(events)), "epochs": epochs, "log_frame_mb": float(log_mb),
            "traced_peak_mb": (peak - base) / 2**20, "seconds": seconds, "stages": rows, "numpy": np.__version__}


def peak_rss(customers: int, epochs: int, visits: tuple[int, int], seed: int) -> dict:
    """train_all.py on a parquet log of the same customers, in a fresh process under /usr/bin/time -v."""
    from jaxlstm.synth import make_customers

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.parquet"
        make_customers(customers, seed=seed, visits=visits, one_off_share=0.0)[["customer_id", "timestamp"]].to_parquet(path)
        cmd = ["/usr/bin/time", "-v", sys.executable, "scripts/train_all.py", "--customers", str(path), "--out", f"{tmp}/run",
               "--epochs", str(epochs)]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        wall = time.perf_counter() - t0
        kb = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
        return {"rc": done.returncode, "wall_s": wall, "peak_rss_mb": int(kb.group(1)) / 1024 if kb else None,
                "stderr_tail": done.stderr[-400:] if done.returncode else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--visits", type=int, nargs=2, default=(20, 100))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rss", action="store_true", help="also the peak RSS of train_all.py in a fresh process")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    result = ledger(a.customers, a.epochs, tuple(a.visits), a.seed)
    if a.rss:
        result["rss"] = peak_rss(a.customers, a.epochs, tuple(a.visits), a.seed)
    print(f"{a.customers:,} customers, {result['visits']:,} visits, {a.epochs} epochs; log frame {result['log_frame_mb']:.0f} MB; "
          f"traced peak {result['traced_peak_mb']:.0f} MB ({result['seconds']:.0f} s under tracemalloc)")
    print(f"{'stage':<18} {'held after MB':>14} {'peak above start MB':>20} {'total held MB':>14} {'s':>7}")
    for r in result["stages"]:
        print(f"{r['stage']:<18} {r['held_after_mb']:>14.1f} {r['peak_above_start_mb']:>20.1f} {r['total_after_mb']:>14.1f} {r['seconds']:>7.1f}")
    if "rss" in result:
        print(f"train_all.py in a fresh process: peak RSS {result['rss']['peak_rss_mb']} MB, wall {result['rss']['wall_s']:.0f} s")
    print(json.dumps({k: v for k, v in result.items() if k != "stages"}))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
