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
from pathlib import Path

import _cli


def _write(frame, name: str) -> None:
    Path(name).parent.mkdir(parents=True, exist_ok=True)
    if name.lower().endswith(".csv"):
        frame.to_csv(name, index=False)
    else:
        frame.to_parquet(name)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="customers (default 2000)")
    p.add_argument("--visits", type=int, nargs=2, metavar=("MIN", "MAX"),
                   help="visits per customer, uniform in [MIN, MAX] (default 20 120; not with --days or --purchases)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed, the same log (default 0)")
    p.add_argument("--one-off-share", type=float,
                   help="share of customers with a single visit (default 0.05; not with --purchases)")
    p.add_argument("--period", type=float, help="make every customer regular with this period (days; not with --days or --purchases)")
    p.add_argument("--jitter", type=float, help="with --period: uniform +- jitter days (default 0)")
    p.add_argument("--days", type=float, help="a calendar log over this many days (with --purchases its length, default 540)")
    p.add_argument("--churn-share", type=float, help="with --days: share of customers who stop coming (default 0.3)")
    p.add_argument("--purchases", action="store_true", help="a purchase log like real ones (make_purchases)")
    p.add_argument("--date-only", action="store_true", help="with --purchases: timestamps are dates")
    p.add_argument("--truth-out", help="with --purchases: write each customer's true next visit here (.parquet or .csv)")
    p.add_argument("--out", required=True, help=".parquet or .csv (its folder is made if missing)")
    args = p.parse_args(argv)

    from jaxlstm.errors import InputError
    from jaxlstm.synth import make_customers, make_log, make_purchases

    # an option the chosen generator does not read is an error, not silently ignored
    kind = "--purchases" if args.purchases else "--days" if args.days is not None else None
    unread = {"--purchases": ("--visits", "--one-off-share", "--period", "--jitter", "--churn-share"),
              "--days": ("--visits", "--period", "--jitter"), None: ("--churn-share",)}[kind]
    given = [f for f in unread if getattr(args, f[2:].replace("-", "_")) is not None]
    if given:
        raise InputError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply "
                         + (f"with {kind}" if kind else "without --days"))
    if args.jitter is not None and args.period is None:
        raise InputError("--jitter goes with --period")
    if (args.date_only or args.truth_out) and not args.purchases:
        raise InputError("--date-only and --truth-out go with --purchases")
    visits = tuple(args.visits or (20, 120))
    one_off = 0.05 if args.one_off_share is None else args.one_off_share
    churn = 0.3 if args.churn_share is None else args.churn_share
    if args.n < 0 or visits[0] < 1 or visits[0] > visits[1]:
        raise InputError("--n must be >= 0 and --visits MIN MAX with 1 <= MIN <= MAX")
    if not 0 <= one_off <= 1 or not 0 <= churn <= 1:
        raise InputError("--one-off-share and --churn-share must be in [0, 1]")
    if args.days is not None and args.days <= 0:
        raise InputError("--days must be > 0")
    for name in [args.out] + ([args.truth_out] if args.truth_out else []):
        if not name.lower().endswith((".csv", ".parquet", ".pq")):
            raise InputError(f"{name}: expected a .parquet or .csv file name")
    truth = None
    if args.purchases:
        frame, truth = make_purchases(args.n, args.seed, 540.0 if args.days is None else args.days, date_only=args.date_only)
    elif args.days is not None:
        frame = make_log(args.n, args.seed, args.days, churn, one_off_share=one_off)
    else:
        frame = make_customers(args.n, args.seed, visits, one_off_share=one_off, period=args.period, jitter=args.jitter or 0.0)
    _write(frame, args.out)
    if truth is not None and args.truth_out:
        _write(truth, args.truth_out)
    print(f"{args.n:,} customers, {len(frame):,} visits -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    _cli.run(main)
