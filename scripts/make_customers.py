"""Write a synthetic visit log: regular, periodic, bursty and one-off customers.

    python scripts/make_customers.py --n 2000 --visits 20 120 --seed 0 --out customers.parquet
    python scripts/make_customers.py --n 2000 --days 730 --churn-share 0.3 --out calendar.parquet

With --days: a calendar log over that many days in which a share of customers stop coming for good
at a random time (column churn_day); visit counts then follow from each customer's gaps.
"""

from __future__ import annotations

import argparse
import sys

import _cli


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
    p.add_argument("--out", required=True, help=".parquet or .csv")
    args = p.parse_args(argv)

    from jaxlstm.errors import InputError
    from jaxlstm.synth import make_customers, make_log

    if args.n < 0 or args.visits[0] < 1 or args.visits[0] > args.visits[1]:
        raise InputError("--n must be >= 0 and --visits MIN MAX with 1 <= MIN <= MAX")
    if args.days is not None:
        if args.days <= 0 or not 0 <= args.churn_share <= 1:
            raise InputError("--days must be > 0 and --churn-share in [0, 1]")
        frame = make_log(args.n, args.seed, args.days, args.churn_share, one_off_share=args.one_off_share)
    else:
        frame = make_customers(args.n, args.seed, tuple(args.visits), one_off_share=args.one_off_share,
                               period=args.period, jitter=args.jitter)
    if args.out.lower().endswith(".csv"):
        frame.to_csv(args.out, index=False)
    elif args.out.lower().endswith((".parquet", ".pq")):
        frame.to_parquet(args.out)
    else:
        raise InputError(f"--out {args.out}: expected a .parquet or .csv file name")
    print(f"{args.n:,} customers, {len(frame):,} visits -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    _cli.run(main)
