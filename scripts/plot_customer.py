"""Draw one customer: its visits, the gaps between them, its held-out intervals with every method's
answer, and the run's prediction of its next visit.

    python scripts/plot_customer.py --run runs/NAME --customers visits.parquet --customer ID [--out FILE.png]
"""

from __future__ import annotations

import argparse
import sys

import _cli


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder written by train_all.py (--out)")
    p.add_argument("--customers", required=True, help="the visit log the run was trained on (or a newer one): " + _cli.SOURCE_HELP)
    _cli.add_source_args(p)
    p.add_argument("--customer", required=True, help="the customer id (as text)")
    p.add_argument("--out", help="PNG file (default: RUN/plots/customer_ID.png)")
    p.add_argument("--id-col", help="customer id column (default: the run's)")
    p.add_argument("--time-col", help="timestamp column (default: the run's)")
    p.add_argument("--as-of", metavar="DATE", help="answer as of this date (default: the run's as-of date, or the day after the latest visit if later)")
    args = p.parse_args(argv)

    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from jaxlstm.data.events import check_events, options
    from jaxlstm.errors import InputError
    from jaxlstm.predict import load_run, predict_checked

    if not Path(args.run).is_dir():
        raise InputError(f"--run {args.run}: no such run folder")
    run = load_run(args.run)
    d = run.config.data
    id_col, time_col = args.id_col or d.id_col, args.time_col or d.time_col
    raw, source = _cli.read_customers(args, id_col, time_col, d.extra_cols)
    checked = check_events(raw, id_col, time_col, source,
                           as_of=args.as_of, **options(d))
    events = checked.events[checked.events["customer_id"].astype(str) == args.customer].sort_values("timestamp")
    if events.empty:
        raise InputError(f"{source}: no customer '{args.customer}' in column '{id_col}'")
    pred = predict_checked(run, checked, args.as_of)
    row = pred[pred["customer_id"].astype(str) == args.customer].iloc[0]
    holdout_path = Path(args.run) / "holdout.parquet"
    held = pd.read_parquet(holdout_path) if holdout_path.exists() else pd.DataFrame()
    held = held[held["customer_id"].astype(str) == args.customer] if len(held) else held

    times = events["timestamp"].to_numpy()
    gaps = np.diff(times).astype("timedelta64[s]").astype(float) / 86400
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), height_ratios=(1, 2))
    top.eventplot(times, lineoffsets=0, colors="tab:blue")
    if pd.notna(row["predicted_next_visit"]):
        top.axvline(row["predicted_next_visit"], color="tab:red", ls="--", label="predicted next visit")
    if pd.notna(row.get("days_since_last_visit")):
        top.axvline(row["last_visit"] + pd.Timedelta(days=float(row["days_since_last_visit"])), color="k", ls=":", label="as of")
    if top.get_legend_handles_labels()[0]:
        top.legend(loc="upper left", fontsize=8)
    top.set_yticks([])
    top.tick_params(axis="x", labelrotation=20, labelsize=7)
    title = f"customer {args.customer}: {len(times)} visits; answered by {row['model']} ({row['status']})"
    if pd.notna(row.get("p_back_within_horizon")):  # the as-of answers of the survival model
        title += (f"\n{row['days_since_last_visit']:.0f} days since the last visit; P(back within "
                  f"{d.horizon_days:g} days) {row['p_back_within_horizon']:.0%}"
                  + ("" if pd.notna(row["predicted_next_visit"]) else "; no next-visit date"))
    top.set_title(title, fontsize=9)

    x = np.arange(1, len(gaps) + 1)
    bottom.plot(x, gaps, "o-", color="tab:blue", label="gap between visits")
    start = len(gaps) - len(held)
    for col, style in (("auto_days", "s"), ("per_customer_days", "^"), ("pooled_days", "v"), ("customer_median_days", "x")):
        if len(held) and col in held:
            bottom.plot(x[start:], held[col].to_numpy(), style, label=f"holdout: {col[:-5]}")
    if len(held):
        bottom.axvspan(start + 0.5, len(gaps) + 0.5, color="0.9", label="held out")
    if pd.notna(row["predicted_interval_days"]):
        bottom.plot([len(gaps) + 1], [row["predicted_interval_days"]], "*", ms=14, color="tab:red", label="next (prediction)")
    bottom.set_xlabel("interval number")
    bottom.set_ylabel("days")
    bottom.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out = Path(args.out or Path(args.run) / "plots" / f"customer_{args.customer}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"{out}", file=sys.stderr)


if __name__ == "__main__":
    _cli.run(main)
