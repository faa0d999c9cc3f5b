"""train_all on a log of more customers than one shard: memory follows the shard, not the log.

    pass 1, 2 (shards.py): customers counted, rows spilled to one file per shard (hash of the id)
    check:   each shard's rows checked (check_events), the canonical visits kept on disk; the as-of
             date is the whole log's
    shard 0: a whole run (train.train_one) into the run folder: the shared models (pooled, survival)
             learn from its customers, a random sample of the log by id hash; its questions choose who
             answers (evaluate.py) and are the run's evaluation; its own models in checkpoints/
    shard k: the customers' own models (shards/NNNNN/checkpoints/) and their answers, with shard 0's
             shared models and choice
    end:     predictions.parquet and customer_metrics.parquet hold every shard's customers, once;
             metrics.json and report.md count them all

--resume skips the shards that finished and continues the one that did not. With one shard (a
log of at most train.shard_customers customers) none of this happens: train_one reads it whole.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from jaxlstm import distributed
from jaxlstm.config import Config
from jaxlstm.data.events import ID, TIME, check_events, options, parse_as_of
from jaxlstm.data.intervals import histories
from jaxlstm.data.windows import make_windows
from jaxlstm.errors import InputError
from jaxlstm.fit import fit_groups, for_finetuning, packed, prepare, trainable
from jaxlstm.predict import RunModel, add_orphans, load_run, predict_frame, TOO_FEW
from jaxlstm.progress import say
from jaxlstm.report import verdict, write_report
from jaxlstm.shards import Source, checked_shards, count_customers, n_shards, release_memory
from jaxlstm.step import kept_params
from jaxlstm.survival import default_as_of, fit_own
from jaxlstm.train import (_write_atomic, before_last_visit, check_out_dir, customer_metrics, own_answers, resume_check,
                           row_counts, train_one, write_rejected)

SHARDS = "shards"  # the run folder's sub-folder of shard parts


def shard_dir(out: Path, k: int) -> Path:
    return out / SHARDS / f"{k:05d}"


def train_source(spec: str | Path, table: str | None = None, query: str | None = None, config: Config | None = None,
                 out_dir: str | Path | None = None, **kwargs) -> pd.DataFrame:
    """`train_all` on a file or database (see data/sources.py) without reading it whole first: its
    customers are counted from the id column, and a log of more than train.shard_customers is read
    shard by shard (`train_shards`). kwargs: those of `train_all`."""
    from jaxlstm.data.sources import read_source

    config = config or Config()
    d = config.data
    src = Source(spec, table, query)
    n = count_customers(src, d.id_col)
    if n <= config.train.shard_customers:  # one shard: read whole, as train_all does (-1: no id column, its error)
        return train_one(read_source(spec, table, query, columns=(d.id_col, d.time_col, *d.extra_cols)), config, out_dir,
                         **kwargs)
    return train_shards(src, config, out_dir, n_customers=n, **kwargs)


def train_shards(src: Source, config: Config, out_dir: str | Path | None, *, resume: bool = False, progress: bool = True,
                 source: str = "<DataFrame>", on_bad_rows: str = "error", as_of=None,
                 n_customers: int | None = None) -> pd.DataFrame:
    """`train_all` shard by shard (see the module doc); returns the predictions of every customer."""
    check_out_dir(out_dir)
    if out_dir is None:  # the shards need a folder: a temporary one, gone afterwards
        with tempfile.TemporaryDirectory(prefix="jaxlstm-shards-") as tmp:
            return train_shards(src, config, tmp, resume=False, progress=progress, source=source,
                                on_bad_rows=on_bad_rows, as_of=as_of, n_customers=n_customers)
    out = Path(out_dir)
    d = config.data
    t_start = time.perf_counter()
    if resume and (out / "config.toml").exists():
        resume_check(out, config)
    n = count_customers(src, d.id_col) if n_customers is None else n_customers
    S = n_shards(n, config.train.shard_customers)
    plan_path = out / SHARDS / "plan.json"
    plan = json.loads(plan_path.read_text()) if resume and plan_path.exists() else None
    if plan is None or plan.get("planned") != S:
        if distributed.is_main():  # process 0 splits the log; every process then trains every shard together
            _split(src, config, out, S, n, source, on_bad_rows, as_of, progress)
        distributed.barrier("jaxlstm: the log is split into shards")
        plan = json.loads(plan_path.read_text())
    as_of = pd.Timestamp(plan["as_of"])
    say_ = say if progress and distributed.is_main() else (lambda *_: None)
    say_(f"{source}: {n:,} customers in {S} shards of about {config.train.shard_customers:,} (by id hash); "
         f"as of {as_of:%Y-%m-%d %H:%M}")

    parts, seconds_later = [], 0.0
    for k in range(S):
        here = shard_dir(out, k)
        if not here.is_dir():  # no customer hashed to it
            continue
        if (here / "predictions.parquet").exists():  # finished before (--resume)
            say_(f"shard {k + 1}/{S}: done before, kept")
        elif k == 0:
            say_(f"shard 1/{S}: the shared models, the choice of answers and the evaluation learn from its customers")
            # with the visits after an explicit as-of date: shard 0's run scores its answers on them
            # (no name holds the visits here: train_one frees them once checked)
            predictions = train_one(_first_shard(here, config), config, out, resume=resume, progress=progress,
                                    source=f"{source} [shard 1 of {S}]", as_of=as_of)
            if (out / "customer_metrics.parquet").exists():  # out/'s becomes every shard's (_finish)
                shutil.copyfile(out / "customer_metrics.parquet", here / "customer_metrics.parquet")
            _write_atomic(here / "predictions.parquet", predictions.to_parquet)
        else:
            t_shard = time.perf_counter()
            _train_shard(k, S, config, out, as_of, resume, progress, source)
            seconds_later += time.perf_counter() - t_shard
        parts.append(here / "predictions.parquet")
        release_memory()
    return _finish(out, config, plan, parts, S, progress, time.perf_counter() - t_start, seconds_later)


def _first_shard(here: Path, config: Config) -> pd.DataFrame:
    """Shard 0's visits under the run's column names, with those after an explicit as-of date: its run
    scores its answers on them."""
    d = config.data
    both = [pd.read_parquet(here / "events.parquet"), pd.read_parquet(here / "later.parquet")]
    return pd.concat(both, ignore_index=True).rename(columns={ID: d.id_col, TIME: d.time_col})


def _split(src: Source, config: Config, out: Path, S: int, n: int, source: str, on_bad_rows: str, as_of, progress: bool) -> dict:
    """Spill the log to S shard files and check each: shards/NNNNN/events.parquet (the canonical visits),
    later.parquet (on or after an explicit as-of date), rejected.parquet, unanswered.json. Returns the plan."""
    d = config.data
    work = out / SHARDS
    if work.exists():  # an earlier split (another log, or killed while splitting)
        shutil.rmtree(work)
    say_ = say if progress else (lambda *_: None)
    columns = (d.id_col, d.time_col, *d.extra_cols)
    t0 = time.perf_counter()
    tmp = work / "spill"
    explicit = as_of is not None
    fixed = parse_as_of(as_of, d.timezone) if explicit else None
    fmt = [d.time_format]  # the first shard decides how the column reads: the others read it so

    def check(raw, positions):
        checked = check_events(raw, d.id_col, d.time_col, source, on_bad_rows=on_bad_rows, as_of=fixed,
                               positions=positions, **{**options(d), "time_format": fmt[0]})
        if not fmt[0] and checked.time_format not in ("datetime", "ISO8601"):
            fmt[0] = checked.time_format
        return checked, len(raw)

    latest, counts = None, {"read": 0, "used": 0, "merged_same_timestamp": 0, "after_as_of": 0, "rejected": 0,
                            "rejected_by_reason": {}, "customers_all_rows_rejected": 0, "customers_only_after_as_of": 0}
    n_files = 0
    # k: the shard of its customers' id hash (predict.py splits a log the same way)
    for k, (checked, n_read) in checked_shards(src, columns, S, tmp, check):
        n_files += 1
        here = shard_dir(out, k)
        here.mkdir(parents=True, exist_ok=True)
        checked.events.to_parquet(here / "events.parquet")
        checked.later.to_parquet(here / "later.parquet")
        checked.rejected.to_parquet(here / "rejected.parquet")
        (here / "unanswered.json").write_text(json.dumps({"orphans": checked.orphans.tolist(),
                                                          "after_as_of": checked.after_as_of.tolist()}))
        c = row_counts(checked, n_read)
        for key in counts:
            if key == "rejected_by_reason":
                for reason, v in c[key].items():
                    counts[key][reason] = counts[key].get(reason, 0) + v
            else:
                counts[key] += c[key]
        counts["time_format"] = checked.time_format
        top = checked.events[TIME].max()
        latest = top if latest is None else max(latest, top)
        say_(f"shard {k + 1}/{S} checked: {len(checked.events):,} visits of {checked.events[ID].nunique():,} customers")
        del checked
    shutil.rmtree(tmp, ignore_errors=True)
    as_of = fixed if explicit else default_as_of(np.array([latest]))
    plan = {"planned": S, "shards": S, "shards_with_customers": n_files, "customers": n, "as_of": str(as_of), "rows": counts,
            "seconds_split": time.perf_counter() - t0}
    (work / "plan.json").write_text(json.dumps(plan, indent=2))
    return plan


def _train_shard(k: int, S: int, config: Config, out: Path, as_of: pd.Timestamp, resume: bool, progress: bool,
                 source: str) -> None:
    """Shard k > 0: its customers' own models, and every customer's answer with shard 0's shared models
    and choice. Writes shards/NNNNN/predictions.parquet (last: the shard is done) and customer_metrics.parquet."""
    here = shard_dir(out, k)
    d, mode = config.data, config.model.mode
    shared = load_run(out, own=False)  # shard 0's run: its shared models and its choice of who answers
    events = pd.read_parquet(here / "events.parquet")  # checked and canonical (_split)
    hist = histories(events, floor_days=d.floor_days, extra_cols=d.extra_cols, summary=d.summary_features)
    windows = make_windows(hist, d.look_back)
    earlier = before_last_visit(events)
    prep = prepare(earlier if len(earlier) else events, config, pack=False)
    del events, earlier
    rows = trainable(prep) if mode != "pooled" else np.zeros(0, np.int64)  # pooled: the shared model answers all
    if mode == "auto":  # own models answer only in the history lengths where they won on shard 1: train only those
        rows = rows[own_answers(mode, prep.hist.n_visits[rows], shared.own_buckets or ())]
    start_from = None
    if mode == "finetune" and shared.pooled is not None:
        prep, start_from = for_finetuning(prep, config, shared.pooled), shared.pooled.params
    else:
        prep = packed(prep, config, rows)
    result = fit_groups(prep, config, ckpt_dir=here / "checkpoints", resume=resume, progress=progress, start_from=start_from,
                 desc=f"shard {k + 1}/{S}")
    rows = prep.model_rows
    diverged = result.state.diverged if result.state is not None else np.zeros(0, bool)
    params = kept_params(result.state, config) if result.state is not None else None
    own_survival = None
    if shared.survival is not None and mode in ("per_customer", "finetune"):
        own_survival = fit_own(hist, as_of, config, shared.survival, mode == "finetune", progress,
                               here / "survival_checkpoints", resume)
    run = RunModel(config, prep.hist.keys[rows], prep.center[rows], params, diverged,
                   own_answers(mode, prep.hist.n_visits[rows], shared.own_buckets or ()), shared.fallback_by,
                   shared.pooled, shared.survival, own_survival, as_of, shared.own_buckets, shared.population, shared.step)
    predictions = predict_frame(run, hist, windows, result.compiled, as_of)
    _write_atomic(here / "customer_metrics.parquet", customer_metrics(prep, result, run, config).to_parquet)
    _write_atomic(here / "fit.json", lambda p: p.write_text(json.dumps({  # summed over shards in metrics.json
        "seconds_train": result.seconds_train, "seconds_compile": result.seconds_compile, "epochs_run": result.epochs_run,
        "customers_with_model": int(len(rows)), "windows_train": int(sum(c.n_train.sum() for c in prep.chunks))})))
    _write_atomic(here / "predictions.parquet", predictions.to_parquet)


def _fit_totals(out: Path, first: dict, done: list[int]) -> dict:
    """The own models' training figures of metrics.json over every shard (the first shard's are in `first`)."""
    parts = [first] + [json.loads(p.read_text()) for k in done if k and (p := shard_dir(out, k) / "fit.json").exists()]
    seconds = sum(p["seconds_train"] for p in parts)
    n = sum(p["customers_with_model"] for p in parts)
    return {"seconds_train": seconds, "seconds_compile": sum(p["seconds_compile"] for p in parts),
            "epochs_run": max(p["epochs_run"] for p in parts), "windows_train": sum(p["windows_train"] for p in parts),
            "customers_per_s": n / seconds if seconds > 0 else None,
            "window_steps_per_s": None}  # (epochs differ by shard: see each shard's fit.json)


def _finish(out: Path, config: Config, plan: dict, parts: list[Path], S: int, progress: bool, seconds: float,
            seconds_later: float = 0.0) -> pd.DataFrame:
    """The run's outputs over every shard: predictions (with the customers no shard could answer),
    customer_metrics, metrics.json and report.md."""
    frames = [pd.read_parquet(p) for p in parts]
    predictions = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    orphans, after = [], []
    done = [k for k in range(S) if shard_dir(out, k).is_dir()]
    for k in done:
        un = json.loads((shard_dir(out, k) / "unanswered.json").read_text())
        orphans += un["orphans"]
        after += un["after_as_of"]
    known = set(predictions["customer_id"].tolist()) if orphans or after else set()
    predictions = add_orphans(predictions, np.array([i for i in orphans if i not in known], dtype=object))
    predictions = add_orphans(predictions, np.array([i for i in after if i not in known], dtype=object), TOO_FEW)
    if not predictions["customer_id"].is_unique:
        raise InputError("a customer landed in two shards: ids that read alike differ in type (report this as a bug)")
    if not distributed.is_main():
        return predictions
    own = [pd.read_parquet(p) for k in done if (p := shard_dir(out, k) / "customer_metrics.parquet").exists()]
    if own:
        _write_atomic(out / "customer_metrics.parquet", pd.concat(own, ignore_index=True).to_parquet)
    rejected = [pd.read_parquet(shard_dir(out, k) / "rejected.parquet") for k in done]
    rejected = pd.concat(rejected, ignore_index=True).sort_values("row", kind="stable") if rejected else None
    write_rejected(out, rejected if rejected is not None and len(rejected) else None)
    _write_atomic(out / "predictions.parquet", predictions.to_parquet)

    metrics = json.loads((out / "metrics.json").read_text())  # shard 0's, counted again over every shard below
    first = metrics["customers"]
    n_model = int(sum(len(f) for f in own)) if own else 0
    metrics.update({
        "customers": int(len(predictions)),
        "customers_with_model": n_model,
        "customers_fallback": int(len(predictions)) - n_model,
        "customers_answered_by_own_model": int(predictions["model"].isin(["per_customer", "finetuned"]).sum()),
        "answers_by_model": predictions["model"].value_counts().to_dict(),
        "status_counts": predictions["status"].value_counts().to_dict(),
        "rows": plan["rows"],
        "seconds_total": seconds,
        # shard 1's stages, the split, and the later shards (this call's: a resumed run's earlier calls are not counted)
        "seconds_by_stage": {"split": plan["seconds_split"], **metrics.get("seconds_by_stage", {}), "later_shards": seconds_later},
        **_fit_totals(out, metrics, done),
        "shards": {"shards": S, "customers_per_shard": config.train.shard_customers, "seconds_split": plan["seconds_split"],
                   "evaluated_on": f"shard 1: {first:,} of the {len(predictions):,} customers, drawn by id hash; "
                                   "the shared models and the choice of who answers learned from them"},
    })
    if "after_as_of" in metrics:
        metrics["after_as_of"]["customers_scored"] = f"shard 1's {first:,}"
    metrics["verdict"], judged = verdict(metrics, predictions, config.n_classes)
    metrics["warnings"] = list(dict.fromkeys(metrics.get("warnings", []) + judged))  # shard 1's input warnings first
    _write_atomic(out / "metrics.json", lambda p: p.write_text(json.dumps(metrics, indent=2)))
    holdout = pd.read_parquet(out / "holdout.parquet")
    write_report(out, metrics, holdout, predictions)
    for k in done:  # the spilled log: every shard has its answers now (a --resume keeps them)
        for name in ("events.parquet", "later.parquet"):
            (shard_dir(out, k) / name).unlink(missing_ok=True)
    if progress:
        say(f"{len(predictions):,} customers in {S} shards -> {out}/predictions.parquet")
    return predictions
