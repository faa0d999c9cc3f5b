"""Time and peak memory of reading one visit log from parquet, SQLite (and DuckDB where installed).

    python benchmarks/read_sources.py [--visits 1000000] [--customers 20000] [--repeats 3] [--json FILE]

Generates the log once (int ids, timestamps to the second; parquet holds datetime64, SQLite holds
the text "YYYY-MM-DD HH:MM:SS" as shops' SQLite tables do, DuckDB a TIMESTAMP), then reads each
source in a fresh process, as train_all.py does: `read_source` (raw rows) and `check_events`
(validated events). Each process runs under /usr/bin/time -v for its maximum resident set size;
`import_rss_mb` is the same process's peak before reading (Python, pandas, SQLAlchemy, JAX) and
`read_rss_mb` its peak once the rows are read, before validation. Times are medians over --repeats
runs; peak RSS the largest.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate(n_visits: int, n_customers: int, folder: Path, seed: int = 0) -> dict[str, tuple]:
    """Write the log to every source; {name: (spec, table)}."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    start = np.datetime64("2022-01-01T00:00:00", "s")
    log = pd.DataFrame({
        "customer_id": rng.integers(0, n_customers, n_visits, dtype=np.int64),
        "timestamp": start + rng.integers(0, 730 * 86400, n_visits).astype("timedelta64[s]"),
    })
    sources = {}
    log.to_parquet(folder / "visits.parquet", index=False)
    sources["parquet"] = (str(folder / "visits.parquet"), None)
    db = folder / "visits.db"
    with sqlite3.connect(db) as con:
        con.execute("create table visits (customer_id integer, timestamp text)")
        text = log["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")
        con.executemany("insert into visits values (?, ?)", zip(log["customer_id"].tolist(), text.tolist()))
    con.close()
    sources["sqlite"] = (f"sqlite:///{db}", "visits")
    if importlib.util.find_spec("duckdb") is None or importlib.util.find_spec("duckdb_engine") is None:
        print("duckdb / duckdb-engine not installed: no DuckDB row", file=sys.stderr)
    else:
        import duckdb

        con = duckdb.connect(str(folder / "visits.duckdb"))
        con.register("log", log)
        con.execute("create table visits as select * from log")
        con.close()
        sources["duckdb"] = (f"duckdb:///{folder / 'visits.duckdb'}", "visits")
    return sources


def read_once(spec: str, table: str | None, chunk_rows: int) -> dict:
    """In this (fresh) process: read and validate; timings and this process's peak RSS before reading."""
    for module in ("pandas", "sqlalchemy"):  # imported before measuring: the read's cost, not the imports'
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    from jaxlstm.data.events import check_events
    from jaxlstm.data.sources import read_source

    import_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    raw = read_source(spec, table, columns=("customer_id", "timestamp"), chunk_rows=chunk_rows)
    t1 = time.perf_counter()
    read_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    events = check_events(raw, source=spec).events
    t2 = time.perf_counter()
    return {"rows": len(raw), "events": len(events), "read_s": t1 - t0, "check_s": t2 - t1,
            "import_rss_mb": import_rss, "read_rss_mb": read_rss, "self_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(spec: str, table: str | None, chunk_rows: int) -> dict:
    """One read in a fresh process, under /usr/bin/time -v where there is one."""
    cmd = [sys.executable, __file__, "--read", spec, "--chunk-rows", str(chunk_rows)] + (["--table", table] if table else [])
    timer = Path("/usr/bin/time").exists()
    r = subprocess.run((["/usr/bin/time", "-v"] if timer else []) + cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"read of {spec} failed:\n{r.stderr[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr) if timer else None
    out["max_rss_mb"] = int(found.group(1)) / 1024 if found else out["self_max_rss_mb"]
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--visits", type=int, default=1_000_000)
    p.add_argument("--customers", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk-rows", type=int, default=100_000, help="rows per database fetch (read_source's chunk_rows)")
    p.add_argument("--dir", help="where to write the generated sources (default: a temporary folder, removed)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--read", help=argparse.SUPPRESS)  # internal: one measured read in this process
    p.add_argument("--table", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.read:
        print(json.dumps(read_once(args.read, args.table, args.chunk_rows)))
        return

    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="read-sources-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        sources = generate(args.visits, args.customers, folder)
        print(f"generated {args.visits:,} visits of {args.customers:,} customers in {time.perf_counter() - t:.1f} s "
              f"({', '.join(f'{k} {_size(v[0]):.0f} MB' for k, v in sources.items())})", file=sys.stderr)
        results = []
        for name, (spec, table) in sources.items():
            runs = [measure(spec, table, args.chunk_rows) for _ in range(args.repeats)]
            assert all(r["rows"] == args.visits for r in runs), f"{name}: rows lost"
            results.append({
                "source": name, "rows": args.visits, "chunk_rows": args.chunk_rows if table else None,
                "file_mb": round(_size(spec), 1),
                "read_s": round(statistics.median(r["read_s"] for r in runs), 3),
                "read_and_check_s": round(statistics.median(r["read_s"] + r["check_s"] for r in runs), 3),
                "max_rss_mb": round(max(r["max_rss_mb"] for r in runs), 1),
                "read_rss_mb": round(max(r["read_rss_mb"] for r in runs), 1),
                "import_rss_mb": round(max(r["import_rss_mb"] for r in runs), 1),
                "repeats": args.repeats,
            })
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"{'source':8} {'rows':>10} {'file MB':>8} {'read s':>7} {'+check s':>9} {'max RSS MB':>11} "
          f"{'after read':>11} {'imports':>8}")
    for r in results:
        print(f"{r['source']:8} {r['rows']:>10,} {r['file_mb']:>8.1f} {r['read_s']:>7.2f} {r['read_and_check_s']:>9.2f} "
              f"{r['max_rss_mb']:>11.0f} {r['read_rss_mb']:>11.0f} {r['import_rss_mb']:>8.0f}")
    text = json.dumps({"benchmark": "read_sources", "cpus": os.cpu_count(), "results": results}, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


def _size(spec: str) -> float:
    return Path(spec.split(":///", 1)[-1]).stat().st_size / 2**20


if __name__ == "__main__":
    main()
