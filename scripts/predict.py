"""Predict every customer's next visit with the models of a saved run.

    python scripts/predict.py --run runs/NAME --customers visits.parquet --out predictions.parquet
    python scripts/predict.py --run runs/NAME --customers sqlite:///shop.db --table visits --out predictions.parquet

Every customer gets one row: `model` says who answered (an own model, the shared one, or a baseline),
`status` whether the answer is healthy (see README, Outputs).
"""

from __future__ import annotations

import argparse
import sys

import _cli


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder written by train_all.py (--out)")
    p.add_argument("--customers", required=True, help=_cli.SOURCE_HELP + "; possibly newer than the run's")
    _cli.add_source_args(p)
    p.add_argument("--out", required=True, help="predictions file (.parquet or .csv)")
    p.add_argument("--id-col", help="customer id column (default: the run's)")
    p.add_argument("--time-col", help="timestamp column (default: the run's)")
    p.add_argument("--time-format", metavar="FORMAT",
                   help="strftime format of this log's time column, e.g. '%%d/%%m/%%Y' (default: the run's data.time_format)")
    p.add_argument("--on-bad-rows", choices=("error", "skip"), default="error",
                   help="error (default): stop at bad rows; skip: set them aside in OUT_STEM.rejected_rows.parquet")
    p.add_argument("--as-of", metavar="DATE",
                   help="answer as of this date (default: the run's as-of date, or the day after the latest visit if later): p_within_*d and "
                        "predicted_next_visit count from it, given no visit since the last; later visits are left out (and counted)")
    args = p.parse_args(argv)

    from pathlib import Path

    from jaxlstm.errors import InputError
    from jaxlstm.predict import in_shards, load_run, predict_source

    if not args.out.lower().endswith((".parquet", ".pq", ".csv")):
        raise InputError(f"--out {args.out}: expected a .parquet or .csv file name")
    if not Path(args.run).is_dir():
        raise InputError(f"--run {args.run}: no such run folder")
    run = load_run(args.run, own=not in_shards(args.run))  # in shards: the shared parts (own models: shard by shard)
    if run.config.train.compilation_cache:
        from jaxlstm.train import enable_compilation_cache

        enable_compilation_cache()
    if args.as_of is not None:  # allowed, but not without a word: both make every as-of answer misleading
        from jaxlstm.data.events import parse_as_of
        from jaxlstm.train import after_today

        when = parse_as_of(args.as_of, run.config.data.timezone)
        if run.as_of is not None and when < run.as_of:
            print(f"warning: --as-of {when:%Y-%m-%d} is before the run's as-of date {run.as_of:%Y-%m-%d}: its models "
                  "learned from visits after it", file=sys.stderr)
        late = after_today(when)
        if late:
            print(f"warning: {late}", file=sys.stderr)
    # a run trained in shards predicts shard by shard (memory follows the shard); else the log is read whole
    predictions, rejected, later = predict_source(args.run, args.customers, args.table, args.query, id_col=args.id_col,
                                           time_col=args.time_col, source=_cli.source_of(args),
                                           on_bad_rows=args.on_bad_rows, as_of=args.as_of, run=run,
                                           time_format=args.time_format)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if later:  # not an error: the as-of date was asked for; but nothing leaves silently
        print(f"{later:,} visits on or after the as-of date {args.as_of} left out (not in n_visits)", file=sys.stderr)
    if args.on_bad_rows == "skip":
        stem = args.out.rsplit(".", 1)[0]
        rejected.to_parquet(f"{stem}.rejected_rows.parquet")
        print(f"rejected {len(rejected):,} rows -> {stem}.rejected_rows.parquet", file=sys.stderr)
    if args.out.lower().endswith(".csv"):
        predictions.to_csv(args.out, index=False)
    else:
        predictions.to_parquet(args.out)
    counts = predictions["model"].value_counts().to_dict()
    status = predictions["status"].value_counts().to_dict()
    print(f"{len(predictions):,} predictions -> {args.out} (answered by {', '.join(f'{k}: {v:,}' for k, v in counts.items())}; "
          f"status {', '.join(f'{k}: {v:,}' for k, v in status.items())})", file=sys.stderr)


if __name__ == "__main__":
    _cli.run(main)
