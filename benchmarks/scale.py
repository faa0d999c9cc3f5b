"""Peak memory and wall time of whole runs as the log grows (issue 16): does memory follow the shard?

    python benchmarks/scale.py --customers 100000 300000 [--shard-customers 50000] [--epochs 2] [--json FILE]

For each size: a generated log (`jaxlstm.synth.make_customers`, 20-100 visits, rows shuffled) written
to parquet, then `scripts/train_all.py --customers FILE` in a fresh process under `/usr/bin/time -v`
(peak RSS), then `scripts/predict.py` on the same log (its peak too). Prints a table and JSON; the
figures of this machine are in benchmarks/NOTES.md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(cmd: list[str]) -> dict:
    """Run `cmd` under /usr/bin/time -v: peak RSS (GiB) and wall seconds; raises on failure."""
    t = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return {"peak_rss_gib": peak / 2**20, "seconds": wall}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, nargs="+", default=[100_000, 300_000])
    p.add_argument("--shard-customers", type=int, default=50_000)
    p.add_argument("--epochs", type=int, default=2, help="own models' epochs (0: the config's, the default run)")
    p.add_argument("--visits", type=int, nargs=2, default=(20, 100))
    p.add_argument("--no-predict", action="store_true")
    p.add_argument("--json", help="write the figures here too")
    args = p.parse_args(argv)

    from jaxlstm.synth import make_customers

    rows = []
    with tempfile.TemporaryDirectory(prefix="jaxlstm-scale-") as tmp:
        for n in args.customers:
            log = Path(tmp) / f"c{n}.parquet"
            t = time.perf_counter()
            frame = make_customers(n, seed=13, visits=tuple(args.visits), one_off_share=0.0).drop(columns="kind")
            frame.sample(frac=1.0, random_state=1).to_parquet(log, index=False)  # unsorted, as exports are
            visits = len(frame)
            del frame
            generated = time.perf_counter() - t
            run = Path(tmp) / f"run{n}"
            cmd = [sys.executable, "scripts/train_all.py", "--customers", str(log), "--out", str(run), "--seed", "0",
                   "--shard-customers", str(args.shard_customers), "--quiet"]
            row = {"customers": n, "visits": visits, "seconds_generate": generated,
                   "train": timed(cmd + (["--epochs", str(args.epochs)] if args.epochs else []))}
            if not args.no_predict:
                row["predict"] = timed([sys.executable, "scripts/predict.py", "--run", str(run), "--customers", str(log),
                                        "--out", str(Path(tmp) / f"p{n}.parquet")])
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nshards of {args.shard_customers:,} customers, own models {args.epochs or 'the config'} epochs\n")
    print("| customers | visits | train: peak RSS | train: wall | predict: peak RSS | predict: wall |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        pr = r.get("predict") or {"peak_rss_gib": float("nan"), "seconds": float("nan")}
        print(f"| {r['customers']:,} | {r['visits']:,} | {r['train']['peak_rss_gib']:.2f} GiB | {r['train']['seconds']:.0f} s "
              f"| {pr['peak_rss_gib']:.2f} GiB | {pr['seconds']:.0f} s |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
