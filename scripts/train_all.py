"""Train one next-visit LSTM per customer, all at once, and write per-customer predictions.

    python scripts/train_all.py --customers visits.parquet [--config configs/default.toml] [--out runs/NAME]
    python scripts/train_all.py --customers sqlite:///shop.db --table visits      # or --query "select ..."
    python scripts/train_all.py                # no file: trains on a generated sample of 2,000 customers
"""

from __future__ import annotations

import argparse
import json
import time

import _cli


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", help=_cli.SOURCE_HELP + "; omit for a generated sample")
    _cli.add_source_args(p)
    p.add_argument("--config", help="TOML config (default: built-in defaults = configs/default.toml)")
    p.add_argument("--out", help="run folder (default: runs/<date-time>)")
    p.add_argument("--id-col", help="customer id column (default: config data.id_col = customer_id)")
    p.add_argument("--time-col", help="timestamp column (default: config data.time_col = timestamp)")
    p.add_argument("--time-format", metavar="FORMAT",
                   help="strftime format of the time column, e.g. '%%d/%%m/%%Y' (data.time_format; default: one reading "
                        "inferred for the whole column, an error when day and month could be swapped)")
    p.add_argument("--timezone", metavar="ZONE",
                   help="count days on this clock, e.g. Europe/Berlin: zoned timestamps are converted to it (data.timezone; default UTC)")
    p.add_argument("--epochs", type=int,
                   help="epochs of the customers' own models (train.epochs, default 60; each stops earlier on its own); the shared "
                        "models: --pooled-epochs and train.survival_epochs. Mode pooled trains no own model: an error there")
    p.add_argument("--pooled-epochs", type=int, help="epochs of the shared (pooled) model (train.pooled_epochs, default 20)")
    p.add_argument("--seed", type=int, help="random seed of every model (train.seed, default 0): the same seed, data and config, the same run")
    p.add_argument("--shard-customers", type=int, metavar="N",
                   help="customers per shard (train.shard_customers, default 50,000): a log of more is read and trained "
                        "shard by shard, so memory follows N, not the log; the shared models learn from the first shard")
    p.add_argument("--extra-col", action="append", metavar="COLUMN",
                   help="a numeric per-visit column (e.g. amount) fed to the models beside the intervals "
                        "(data.extra_cols); repeat for several")
    p.add_argument("--mode", choices=("auto", "per_customer", "pooled", "finetune"),
                   help="who answers (model.mode): auto (default) picks per history length and per customer; "
                        "per_customer: every customer's own model (the classic recipe); pooled: one shared model; "
                        "finetune: own models started from the shared one")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config key; VALUE is TOML, e.g. 'data.bins=[7, 30, 90]', 'model.lstm_activation=\"relu\"', "
                        "train.epochs=20, data.floor_days=true (a string key also takes a bare word: model.mode=pooled)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint, with the same config (a larger --epochs "
                        "continues training); from scratch if the folder has no run yet")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out (without it, an error)")
    p.add_argument("--on-bad-rows", choices=("error", "skip"), default="error",
                   help="error (default): stop at bad rows; skip: set them aside in OUT/rejected_rows.parquet")
    p.add_argument("--as-of", metavar="DATE",
                   help="answer as of this date (default: the day after the latest visit): p_within_*d and "
                        "predicted_next_visit count from it, given no visit since the last; later visits are left out of "
                        "training and scored on")
    p.add_argument("--sample-customers", type=int, default=2000, help="size of the generated sample (no --customers; default 2000)")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="several processes (one per machine, or several on one): process 0's address; each process trains "
                        "its own chunks of customers and process 0 writes the outputs (default: $JAX_COORDINATOR_ADDRESS)")
    p.add_argument("--num-processes", type=int, metavar="N", help="how many processes join (default: $JAX_NUM_PROCESSES)")
    p.add_argument("--process-id", type=int, metavar="I", help="this process, 0 .. N-1 (default: $JAX_PROCESS_ID)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress (on a terminal a bar; otherwise one log line every ~10 s)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    from jaxlstm import distributed
    from jaxlstm.errors import InputError

    try:  # before anything touches a device
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    except ValueError as e:
        raise InputError(f"--coordinator, --num-processes, --process-id: {e}") from None
    from jaxlstm import load_config, train_all
    from jaxlstm.config import parse_set
    from jaxlstm.data.events import parse_as_of
    from jaxlstm.report import own_epochs
    from jaxlstm.synth import make_log
    from jaxlstm.errors import InputError
    from jaxlstm.train import check_out_dir, existing_run

    overrides = parse_set(args.set)
    flags = (("--epochs", "train.epochs", args.epochs), ("--pooled-epochs", "train.pooled_epochs", args.pooled_epochs),
             ("--seed", "train.seed", args.seed), ("--mode", "model.mode", args.mode),
             ("--shard-customers", "train.shard_customers", args.shard_customers),
             ("--id-col", "data.id_col", args.id_col), ("--time-col", "data.time_col", args.time_col),
             ("--extra-col", "data.extra_cols", args.extra_col), ("--time-format", "data.time_format", args.time_format),
             ("--timezone", "data.timezone", args.timezone))
    for flag, key, value in flags:
        if value is None:
            continue
        if key in overrides:
            raise InputError(f"{flag} and --set {key} both set {key}: give one of them")
        overrides[key] = value
    config = load_config(args.config, overrides)
    if config.train.compilation_cache:
        from jaxlstm.train import enable_compilation_cache

        enable_compilation_cache()
    if args.epochs is not None and config.model.mode == "pooled":
        raise InputError("--epochs sets the customers' own models' epochs, and mode pooled trains none: "
                         "use --pooled-epochs for the shared model")
    if args.resume and not args.out:
        raise InputError("--resume needs --out: the run folder to continue")
    if args.resume and args.overwrite:
        raise InputError("--resume continues the run in --out, --overwrite replaces it: give one of them")
    parse_as_of(args.as_of, config.data.timezone)  # a bad date is named before anything about the folder
    out = args.out or time.strftime("runs/%Y%m%d-%H%M%S")
    check_out_dir(out)
    earlier = existing_run(out)
    if earlier and not args.resume and not args.overwrite:
        raise InputError(f"--out {out} holds a run already ({', '.join(earlier[:3])}): --resume to continue it, "
                         "--overwrite to replace it, or another --out")
    if args.sample_customers < 1:
        raise InputError(f"--sample-customers must be >= 1, got {args.sample_customers}")
    run = {"resume": args.resume, "progress": not args.quiet, "on_bad_rows": args.on_bad_rows, "as_of": args.as_of}
    if args.customers or args.table is not None or args.query is not None:
        from jaxlstm.train_shards import train_source

        # read a batch at a time: a log of more than train.shard_customers customers is trained shard by shard
        predictions = train_source(args.customers, args.table, args.query, config, out, source=_cli.source_of(args), **run)
    else:
        events = make_log(args.sample_customers, seed=config.train.seed)
        events = events.rename(columns={"customer_id": config.data.id_col, "timestamp": config.data.time_col})
        predictions = train_all(events, config, out, source=f"generated sample of {args.sample_customers} customers", **run)
    if not distributed.is_main():  # process 0 wrote the outputs and says what they hold
        return
    with open(f"{out}/metrics.json") as f:
        m = json.load(f)
    mode = config.model.mode
    answered = ", ".join(f"{k} {v:,}" for k, v in m["answers_by_model"].items())
    status = ", ".join(f"{k} {v:,}" for k, v in m["status_counts"].items())
    trained = [f"{own_epochs(m)} (+{m['seconds_compile']:.1f} s compile)"
               if m["customers_with_model"] else "no own models",
               f"shared model {len(m.get('pooled_history') or [])} epochs",
               f"survival model {len((m.get('as_of') or {}).get('survival_history') or [])} epochs"]
    print(f"{m['customers']:,} customers (mode {mode}; {m['customers_with_model']:,} own models trained); answered by "
          f"{answered}; status {status}. Trained: {'; '.join(trained)}.")
    if m.get("step_factor") not in (None, 1.0):  # every day answer is multiplied by it: say so where it is seen
        print(f"predicted_interval_days x {m['step_factor']:.3f}, the step to the next gap: a customer's latest gap "
              "in this log is that many times the one before it (model.step_to_next)")
    if m["rows"]["rejected"]:
        reasons = ", ".join(f"{k}: {v:,}" for k, v in m["rows"]["rejected_by_reason"].items())
        print(f"rejected {m['rows']['rejected']:,} of {m['rows']['read']:,} rows ({reasons}): {out}/rejected_rows.parquet")
    bt = (m.get("as_of") or {}).get("backtest") or {}
    if "concordance" in bt:
        c, k = bt["concordance"], "p_within_30d" if "p_within_30d" in bt["brier"] else next(iter(bt["brier"]), None)
        brier = f"; {k} Brier {bt['brier'][k]['model']:.3f} (base rate {bt['brier'][k]['base_rate']:.3f})" if k else ""
        print(f"as of {m['as_of']['date']}; backtest from {bt['cut']}: concordance {c['model']:.3f} (days since last visit "
              f"{c['days_since_last_visit']:.3f}, last visit + median interval {c['last_visit_plus_median_interval']:.3f}){brier}")
    print(f"predictions: {out}/predictions.parquet ({len(predictions):,} rows); report: {out}/report.md")
    for line in m.get("verdict", []):  # the verdict and its warnings come last: what to read first
        print(line)
    for w in m.get("warnings", []):
        print(f"warning: {w}")


if __name__ == "__main__":
    _cli.run(main)
