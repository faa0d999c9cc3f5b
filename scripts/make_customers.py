"""Write a synthetic visit log: regular, periodic, bursty and one-off customers.

    python scripts/make_customers.py --n 2000 --visits 20 120 --seed 0 --out customers.parquet
    python scripts/make_customers.py --n 2000 --days 730 --churn-share 0.3 --out calendar.parquet

With --days: a calendar log over that many days in which a share of customers stop coming for good
at a random time (column churn_day); visit counts then follow from each customer's gaps.

    python scripts/make_customers.py --n 5000 --purchases --out purchases.parquet --truth-out truth.parquet

With --purchases: a shop's purchase log like real ones (jaxlstm.synth.make_purchases: most customers
buy once, gaps lengthen with age, same-day repeats; --days sets its length, default 540; --date-only
writes dates), and with --truth-out each customer's true next visit after the log.
"""

from __future__ import annotations

import argparse
import sys

import _cli


def _write(frame, name: str) -> None:
    if name.lower().endswith(".csv"):
        frame.to_csv(name, index=False)
    else:
        frame.to_parquet(name)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="customers")
    p.add_argument("--visits", type=int, nargs=2, default=(20, 120), metavar=("MIN", "MAX"), help="visits per customer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--one-off-share", type=float, default=0.05, help="share of customers with a single visit")
    p.add_argument("--period", type=float, help="make every customer regular with this period (days)")
    p.add_argument("--jitter", type=float, default=0.0, help="with --period: uniform +- jitter days")
    p.add_argument("--days", type=float, help="a calendar log over this many days (--visits is then ignored)")
    p.add_argument("--churn-share", type=float, default=0.3, help="with --days: share of customers who stop coming")
    p.add_argument("--purchases", action="store_true", help="a purchase log like real ones (make_purchases)")
    p.add_argument("--date-only", action="store_true", help="with --purchases: timestamps are dates")
    p.add_argument("--truth-out", help="with --purchases: write each customer's true next visit here (.parquet or .csv)")
    p.add_argument("--out", required=True, help=".parquet or .csv")
    args = p.parse_args(argv)

    from jaxlstm.errors import InputError
    from jaxlstm.synth import make_customers, make_log, make_purchases

    if args.n < 0 or args.visits[0] < 1 or args.visits[0] > args.visits[1]:
        raise InputError("--n must be >= 0 and --visits MIN MAX with 1 <= MIN <= MAX")
    if (args.date_only or args.truth_out) and not args.purchases:
        raise InputError("--date-only and --truth-out go with --purchases")
    truth = None
    if args.purchases:
        if args.n < 0 or (args.days is not None and args.days <= 0):
            raise InputError("--n must be >= 0 and --days > 0")
        frame, truth = make_purchases(args.n, args.seed, 540.0 if args.days is None else args.days, date_only=args.date_only)
    elif args.days is not None:
        if args.days <= 0 or not 0 <= args.churn_share <= 1:
            raise InputError("--days must be > 0 and --churn-share in [0, 1]")
        frame = make_log(args.n, args.seed, args.days, args.churn_share, one_off_share=args.one_off_share)
    else:
        frame = make_customers(args.n, args.seed, tuple(args.visits), one_off_share=args.one_off_share,
                               period=args.period, jitter=args.jitter)
    for name in [args.out] + ([args.truth_out] if truth is not None and args.truth_out else []):
        if not name.lower().endswith((".csv", ".parquet", ".pq")):
            raise InputError(f"{name}: expected a .parquet or .csv file name")
    _write(frame, args.out)
    if truth is not None and args.truth_out:
        _write(truth, args.truth_out)
    print(f"{args.n:,} customers, {len(frame):,} visits -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    _cli.run(main)
