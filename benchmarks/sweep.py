"""Sweep the throughput benchmark over customers and hidden size; write benchmarks/RESULTS.md and a plot.

    python benchmarks/sweep.py [--customers 1000 10000 100000] [--hidden 8 16 32 64] [--epochs 10]

Each point runs `benchmarks/throughput.py` in its own process (so peak memory is per point) and
appends its JSON line to benchmarks/results.jsonl; RESULTS.md and customers_per_s.png are rebuilt
from all points of this sweep.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def point(customers: int, hidden: int, epochs: int, visits: tuple[int, int], loop_sample: int) -> dict:
    out = HERE / f".point-{customers}-{hidden}.json"
    cmd = [sys.executable, str(HERE / "throughput.py"), "--customers", str(customers), "--epochs", str(epochs),
           "--visits", *map(str, visits), "--hidden", str(hidden), "--loop-sample", str(loop_sample), "--json", str(out)]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    result = json.loads(out.read_text())
    out.unlink()
    result["command"] = "python benchmarks/throughput.py " + " ".join(cmd[2:-2])
    return result


def write_report(points: list[dict], path: Path, plot: Path | None) -> None:
    head = ("| customers | hidden | windows x epochs | compile s | train s | customers/s | window-steps/s | "
            "GFLOP/s (peak) | vs per-customer loop | peak RSS MB |")
    lines = [
        "# Throughput results",
        "",
        f"Machine: {points[0]['device']}, {platform.machine()}; jax {points[0]['jax']}. "
        f"Generated with `python benchmarks/sweep.py` on {time.strftime('%Y-%m-%d')}; visits per customer "
        f"{points[0]['visits'][0]}-{points[0]['visits'][1]}, 2 LSTM layers + 1 dense layer of the given width, "
        "patience off (every customer trains every epoch). Compile times use the persistent cache where warm.",
        "",
        head,
        "|---" * (head.count("|") - 1) + "|",
    ]
    for r in points:
        loop = f"{r['speedup_vs_loop']:.1f}x ({r['loop_customers_per_s']:.0f}/s)" if "speedup_vs_loop" in r else "-"
        lines.append(
            f"| {r['customers']:,} | {r['hidden']} | {r['windows']:,} x {r['epochs']} | {r['seconds_compile']:.1f} | "
            f"{r['seconds_train']:.1f} | {r['customers_per_s']:,.0f} | {r['window_steps_per_s']:,.0f} | "
            f"{r['gflops_achieved']:.1f} ({r['gflops_peak_measured']:.0f}) | {loop} | {r['peak_rss_mb']:,.0f} |"
        )
    lines += ["", "Commands:", "", *[f"    {r['command']}" for r in points], ""]
    if plot is not None:
        lines += [f"![customers/s against customers]({plot.name})", ""]
    path.write_text("\n".join(lines))


def draw(points: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e .): no plot", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for hidden in sorted({r["hidden"] for r in points}):
        rs = sorted((r for r in points if r["hidden"] == hidden), key=lambda r: r["customers"])
        ax.plot([r["customers"] for r in rs], [r["customers_per_s"] for r in rs], "o-", label=f"hidden {hidden}")
    ax.set_xscale("log")
    ax.set_xlabel("customers")
    ax.set_ylabel("customers / s (training, 10 epochs)")
    ax.set_title(points[0]["device"], fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, nargs="+", default=[1000, 10_000, 100_000])
    p.add_argument("--hidden", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--hidden-customers", type=int, default=2000, help="customers for the hidden-size points")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--visits", type=int, nargs=2, default=(10, 200))
    p.add_argument("--loop-sample", type=int, default=100)
    p.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = p.parse_args(argv)
    plan = [(n, args.hidden[0]) for n in args.customers] + [(args.hidden_customers, h) for h in args.hidden[1:]]
    points = []
    for n, h in plan:
        points.append(point(n, h, args.epochs, tuple(args.visits), args.loop_sample))
        with open(HERE / "results.jsonl", "a") as f:  # each point as it finishes: a long sweep can be cut short
            f.write(json.dumps(points[-1]) + "\n")
    plot = HERE / "customers_per_s.png"
    write_report(points, Path(args.out), plot if draw(points, plot) else None)
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
