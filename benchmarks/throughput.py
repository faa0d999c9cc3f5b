"""Throughput of the real trainer (the same `train_all` as scripts/train_all.py) on a generated log.

    python benchmarks/throughput.py --customers 10000 --epochs 10 [--visits 20 120] [--json out.json]

Prints one JSON object and a small table: wall, compile and steady training seconds, customers/s,
window-steps/s, peak RSS. Compile time is measured apart (ahead-of-time compile), and the first
epoch is reported apart from the steady-state epochs after it.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--visits", type=int, nargs=2, default=(20, 120), metavar=("MIN", "MAX"))
    p.add_argument("--hidden", type=int, default=8, help="LSTM units per layer")
    p.add_argument("--config", help="base TOML config (default: built-in defaults)")
    p.add_argument("--no-cache", action="store_true", help="disable the persistent compilation cache (cold compile)")
    p.add_argument("--json", help="also write the JSON object to this file")
    args = p.parse_args(argv)

    import jax

    from jaxlstm import load_config, make_customers, train_all

    overrides = {"train.epochs": args.epochs, "model.units": args.hidden, "train.patience": 0}
    if args.no_cache:
        overrides["train.compilation_cache"] = False
    config = load_config(args.config, overrides)
    events = make_customers(args.customers, seed=0, visits=tuple(args.visits))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        train_all(events, config, out, progress=False)
        wall = time.perf_counter() - t0
        m = json.loads((Path(out) / "metrics.json").read_text())
    hist = m["history"]
    steady = (hist[-1]["seconds"] - hist[0]["seconds"]) / max(len(hist) - 1, 1) if len(hist) > 1 else None
    result = {
        "customers": m["customers"],
        "customers_with_model": m["customers_with_model"],
        "epochs": args.epochs,
        "windows": m["windows_train"],
        "hidden": args.hidden,
        "seconds_wall": wall,
        "seconds_prepare": m["seconds_prepare"],
        "seconds_compile": m["seconds_compile"],
        "seconds_train": m["seconds_train"],
        "seconds_first_epoch": hist[0]["seconds"] if hist else None,
        "seconds_steady_epoch": steady,
        "customers_per_s": m["customers_per_s"],
        "window_steps_per_s": m["window_steps_per_s"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": m["device"],
        "jax": jax.__version__,
        "compilation_cache": not args.no_cache,
    }
    print(json.dumps(result, indent=2))
    rows = [("customers (with a model)", f"{result['customers']:,} ({result['customers_with_model']:,})"),
            ("epochs x training windows", f"{args.epochs} x {result['windows']:,}"),
            ("wall, all in", f"{wall:.1f} s"), ("compile", f"{result['seconds_compile']:.1f} s"),
            ("training", f"{result['seconds_train']:.1f} s"), ("customers/s (all epochs)", f"{result['customers_per_s']:,.0f}"),
            ("window-steps/s", f"{result['window_steps_per_s']:,.0f}"), ("peak RSS", f"{result['peak_rss_mb']:,.0f} MB")]
    print("\n".join(f"| {a:<28} | {b:>18} |" for a, b in rows))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
