"""Per-customer training of 1,000,000 generated customers on whatever devices jax sees (made for a
GPU session: the issue's target is under 60 s of training there). Prints a table and one JSON line.

    python benchmarks/gpu_1m.py                       # 1,000,000 customers, 20-100 visits, 10 epochs
    python benchmarks/gpu_1m.py --customers 2000      # proves it works on a CPU
    python benchmarks/gpu_1m.py --per-device 64 256   # chunk sizes to compare (train.chunk_customers)

What is timed: `fit` (the vmapped, jitted per-customer trainer; chunks of
placement.chunk_size(train.chunk_customers) customers per call: ACCELERATOR_SCALE times that per
GPU) after a one-epoch warm-up run of the same shapes, so compile time is reported apart. The log
is generated with numpy (no Python loop per customer) and fed to `fit.prepare` as a validated
events frame. --budget-s caps the timed run: epochs are cut (and the JSON says so) when the
warm-up epoch predicts more than that.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def generate(n: int, visits: tuple[int, int], seed: int) -> pd.DataFrame:
    """A validated-shape visit log (customer_id int64, timestamp datetime64[ns], sorted): three kinds
    of customers, regular (gamma gaps around a personal mean), periodic (7/14/30 days, jitter) and
    bursty (same-day repeats between long gaps)."""
    rng = np.random.default_rng(seed)
    k = rng.integers(visits[0], visits[1] + 1, n)
    owner = np.repeat(np.arange(n), k)
    kind = (np.arange(n) % 3)[owner]
    mean = rng.uniform(3.0, 30.0, n)[owner]
    period = rng.choice([7.0, 14.0, 30.0], n)[owner]
    m = len(owner)
    gaps = np.where(kind == 0, rng.gamma(4.0, mean / 4.0, m),
                    np.where(kind == 1, period + rng.normal(0.0, 1.0, m),
                             np.where(rng.random(m) < 0.4, rng.uniform(0.0, 0.3, m), rng.exponential(mean, m))))
    gaps = np.clip(gaps, 0.01, None)
    gaps[np.r_[0, np.cumsum(k)[:-1]]] = rng.uniform(0.0, 30.0, n)  # each customer's first visit: its start
    t = np.cumsum(gaps)
    starts = np.r_[0, np.cumsum(k)[:-1]]
    t = t - np.repeat(t[starts] - gaps[starts], k)  # restart the clock per customer
    ts = np.datetime64("2020-01-01", "ns") + (t * 86400e9).astype("timedelta64[ns]")
    return pd.DataFrame({"customer_id": owner.astype(np.int64), "timestamp": ts})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--visits", type=int, nargs=2, default=(20, 100))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--per-device", type=int, nargs="+", default=[256],
                    help="train.chunk_customers values to time (customers per CPU device; x ACCELERATOR_SCALE per GPU)")
    ap.add_argument("--budget-s", type=float, default=240.0, help="most seconds of timed training per chunk size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    import jax

    from jaxlstm.config import load_config
    from jaxlstm.fit import fit, prepare
    from jaxlstm.placement import ACCELERATOR_SCALE, Placement

    cache = Path.home() / ".cache" / "jaxlstm" / "xla"
    jax.config.update("jax_compilation_cache_dir", str(cache))
    placement = Placement.local()
    t0 = time.perf_counter()
    events = generate(a.customers, tuple(a.visits), a.seed)
    seconds_generate = time.perf_counter() - t0
    results = []
    for per_device in a.per_device:
        config = load_config(None, {"train.epochs": a.epochs, "train.chunk_customers": per_device, "model.mode": "per_customer"})
        t0 = time.perf_counter()
        prep = prepare(events, config)
        seconds_prepare = time.perf_counter() - t0
        warm = fit(prep, dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=1)), progress=False)
        epoch_s = warm.seconds_train
        epochs = a.epochs
        if epoch_s * epochs > a.budget_s:
            epochs = max(1, int(a.budget_s // max(epoch_s, 1e-9)))
        timed = fit(prep, dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs)), progress=False)
        n_model = len(prep.model_rows)
        windows = int(sum(int(c.n_train.sum()) for c in prep.chunks))
        stats = {}
        try:
            stats = jax.local_devices()[0].memory_stats() or {}
        except Exception:  # CPU devices have none
            pass
        results.append({
            "per_device": per_device,
            "chunk_customers": int(timed.compiled.shape[0]),
            "chunks": len(prep.chunks),
            "seconds_prepare": seconds_prepare,
            "seconds_compile_first": warm.seconds_compile,
            "seconds_warm_epoch": epoch_s,
            "epochs_asked": a.epochs,
            "epochs_run": timed.epochs_run,
            "epochs_cut_by_budget": epochs < a.epochs,
            "seconds_train": timed.seconds_train,
            "customers_per_s_per_epoch": n_model * timed.epochs_run / timed.seconds_train if timed.seconds_train else None,
            "window_steps_per_s": windows * timed.epochs_run / timed.seconds_train if timed.seconds_train else None,
            "seconds_train_10_epochs_est": timed.seconds_train / max(timed.epochs_run, 1) * 10,
            "device_peak_bytes": stats.get("peak_bytes_in_use"),
            "val_loss_last": timed.history[-1]["val_loss"] if timed.history else None,
        })
    out = {
        "customers": a.customers, "visits": int(len(events)), "customers_with_model": int(len(prep.model_rows)),
        "devices": placement.n_devices, "device_kind": str(jax.devices()[0].device_kind), "platform": jax.devices()[0].platform,
        "accelerator_scale": ACCELERATOR_SCALE, "seconds_generate": seconds_generate,
        "host_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "runs": results,
    }
    print(f"{a.customers:,} customers, {out['visits']:,} visits on {out['devices']} x {out['device_kind']} "
          f"(generate {seconds_generate:.1f} s, host peak RSS {out['host_peak_rss_mb']:.0f} MB)")
    print(f"{'per dev':>7} {'chunk':>7} {'chunks':>6} {'prep s':>7} {'compile s':>9} {'epochs':>6} {'train s':>8} "
          f"{'cust-epochs/s':>13} {'10 ep est s':>11}")
    for r in results:
        print(f"{r['per_device']:>7} {r['chunk_customers']:>7} {r['chunks']:>6} {r['seconds_prepare']:>7.1f} "
              f"{r['seconds_compile_first']:>9.1f} {r['epochs_run']:>6} {r['seconds_train']:>8.1f} "
              f"{r['customers_per_s_per_epoch']:>13,.0f} {r['seconds_train_10_epochs_est']:>11.1f}")
    print(json.dumps(out))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
