"""train_all: visit log in, one LSTM per customer trained all at once, predictions out.

    events -> histories -> windows -> split -> chunks of C customers
    -> (modes auto, pooled, finetune) the shared model over every customer's intervals
    -> for each epoch, for each chunk: minibatch steps (vmapped, jitted), validation, best-keeping
    -> Orbax checkpoints every N epochs
    -> holdout scores against baselines, the choice of who answers
    -> the survival model (observed + open intervals) and its as-of backtest -> per-customer predictions
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from jaxlstm import checkpoint, distributed
from jaxlstm.asof import backtest, score_later
from jaxlstm.config import Config
from jaxlstm.data.events import Checked, check_events, options, parse_as_of
from jaxlstm.errors import InputError
from jaxlstm.data.batching import customer_seeds
from jaxlstm.data.events import ID, TIME
from jaxlstm.data.intervals import Histories, histories
from jaxlstm.data.windows import make_windows
from jaxlstm.evaluate import BUCKETS, Questions, bucket_names, choice, customer_baselines, evaluate_run, questions, step_factor
from jaxlstm.fit import (Fit, Prepared, fit_groups, for_finetuning, group_dirs, joined, n_groups, packed, prepare,
                         trainable)
from jaxlstm.progress import say
from jaxlstm.shards import release_memory
from jaxlstm.pooled import fit_pooled
from jaxlstm.predict import CLASSIC_FALLBACK, FINETUNED, PER_CUSTOMER, RunModel, add_unanswered, predict_frame
from jaxlstm.report import verdict, write_report
from jaxlstm.step import kept_params
from jaxlstm.survival import default_as_of, fit_own, fit_survival


MODEL_DIRS = ("checkpoints", "survival_checkpoints", "pooled", "survival")


def _write_atomic(path: Path, write) -> None:
    """Write through a temporary name and rename, so a reader never sees half a file. With several
    processes only process 0 writes (they all hold the same answers)."""
    if not distributed.is_main():
        return
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def enable_compilation_cache() -> None:
    """Persist compiled XLA programs across processes (a second run compiles in ~1 s, see PERF.md).
    A process-wide JAX setting: the scripts call it (train.compilation_cache); the library never
    changes global settings behind its caller's back."""
    cache = os.environ.get("JAXLSTM_CACHE_DIR") or str(Path.home() / ".cache" / "jaxlstm" / "xla")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def train_all(
    events: pd.DataFrame,
    config: Config | None = None,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    source: str = "<DataFrame>",
    on_bad_rows: str = "error",
    as_of: str | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Train one next-visit model per customer, all at once, and predict each customer's next visit.

    Args:
      events: visit table, one row per visit, with the columns `config.data.id_col` and
        `config.data.time_col` (timestamps, dates or ISO-8601 text).
      config: a `Config` (default: `Config()`, i.e. configs/default.toml).
      out_dir: where to write predictions.parquet, metrics.json, report.md + plots/,
        holdout.parquet, customer_metrics.parquet, answers.json, config.toml, checkpoints/,
        pooled/ and survival/ (None: write nothing, no checkpoints, no as-of backtest).
      resume: continue from the latest checkpoint in out_dir (same data and config required).
      progress: show a progress bar on stderr.
      source: the name bad-input errors give the table (e.g. its file name).
      on_bad_rows: "error" (default): a bad row raises InputError; "skip": bad rows are set aside,
        written to out_dir/rejected_rows.parquet with a reason each and counted in metrics.json.
      as_of: the date the answers are as of (default: the day after the latest visit): p_within_{k}d
        and predicted_next_visit condition on no visit between a customer's last visit and it. Visits
        on or after it are not trained on: the run scores its answers on them (metrics.json after_as_of).
    A log of more than `config.train.shard_customers` customers is trained shard by shard
    (train_shards.py: the shared models learn from the first shard), so memory follows the shard.
    Returns:
      the predictions table: exactly one row per customer in `events` (see DESIGN.md); customers
      all of whose rows were rejected come last, with status "all_rows_rejected".
    """
    if not isinstance(events, pd.DataFrame):
        raise InputError(f"events must be a pandas DataFrame of visits, got {type(events).__name__} "
                         "(a file: pandas.read_parquet / read_csv it, or use scripts/train_all.py --customers)")
    if config is not None and not isinstance(config, Config):
        raise InputError(f"config must be a Config, got {type(config).__name__} (a TOML file: jaxlstm.load_config(path))")
    if resume and out_dir is None:
        raise InputError("resume=True needs out_dir: the run folder to continue")
    config = config or Config()
    n = events[config.data.id_col].nunique() if config.data.id_col in events.columns else 0
    if n > config.train.shard_customers:  # shard by shard, so memory follows the shard (shards.py)
        from jaxlstm.shards import Source
        from jaxlstm.train_shards import train_shards

        return train_shards(Source(frame=events), config, out_dir, resume=resume, progress=progress, source=source,
                            on_bad_rows=on_bad_rows, as_of=as_of)
    return train_one(events, config, out_dir, resume=resume, progress=progress, source=source, on_bad_rows=on_bad_rows,
                     as_of=as_of)


def train_one(events: pd.DataFrame, config: Config | None = None, out_dir: str | Path | None = None, *, resume: bool = False,
              progress: bool = True, source: str = "<DataFrame>", on_bad_rows: str = "error", as_of=None) -> pd.DataFrame:
    """`train_all` on a log of one shard (every log that fits `train.shard_customers`): the whole run in memory."""
    config = config or Config()
    check_out_dir(out_dir)
    if resume and out_dir is not None:  # before any work: a changed config is refused at once
        if not (Path(out_dir) / "config.toml").exists():  # nothing saved yet (or killed at once): start afresh
            if progress:
                say(f"{out_dir}: no run to resume there yet: starting from scratch")
        else:
            extended = resume_check(Path(out_dir), config)
            if extended and progress:
                say(extended)
    t_start = time.perf_counter()
    checked = check_events(events, config.data.id_col, config.data.time_col, source, on_bad_rows=on_bad_rows, as_of=as_of,
                           **options(config.data))
    n_read = len(events)
    del events  # (the caller may hold it still; train_shards does not)
    d = config.data
    hist = histories(checked.events, floor_days=d.floor_days, extra_cols=d.extra_cols, summary=d.summary_features)
    windows = make_windows(hist, d.look_back)
    explicit = as_of is not None
    as_of = parse_as_of(as_of, d.timezone) if explicit else default_as_of(hist.last_visit)
    warnings = input_warnings(checked, as_of, d.horizon_days, source, explicit)
    mode = config.model.mode
    # own models learn from the visits before each customer's last one: the last is its question (evaluate.py)
    earlier = before_last_visit(checked.events)
    # every customer with one visit: nothing earlier, and no window to train on in the whole log either
    prep = prepare(earlier if len(earlier) else checked.events, config, pack=False)  # packed by own_models
    del earlier
    release_memory()  # the raw table and the stages' temporaries: a log's peak should not stay its floor
    t_prep = time.perf_counter() - t_start
    if progress:
        say(f"{source}: {len(checked.events):,} visits of {hist.n_customers:,} customers{input_summary(checked, as_of, 'day' if d.merge_same_day else 'timestamp')}; "
             f"{len(trainable(prep)):,} have enough history for a model" + (f" -> {out_dir}" if out_dir is not None else ""))
    for message in warnings:
        say(f"warning: {message}")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        distributed.barrier("jaxlstm: every process has read the run folder")
        if distributed.is_main():  # process 0 prepares the folder; Orbax checkpoints are written by all together
            out.mkdir(parents=True, exist_ok=True)
            stale = [out / name for name in MODEL_DIRS + ("answers.json",) if (out / name).exists()]
            if stale and not resume:  # a new run: no model of an earlier run in this folder may answer for it
                if progress:
                    say(f"{out}: replacing the earlier run there (use --resume to continue it instead)")
                for path in stale:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            (out / "config.toml").write_text(config.to_toml())
        distributed.barrier("jaxlstm: run folder ready")
    q = questions(hist, customer_seeds(hist.keys))
    seconds_by_stage, mark = {"prepare": t_prep}, time.perf_counter()

    def lap(stage: str) -> None:  # metrics.json: where the run's time went
        nonlocal mark
        seconds_by_stage[stage] = seconds_by_stage.get(stage, 0.0) + time.perf_counter() - mark
        mark = time.perf_counter()

    pooled, pooled_history = None, []
    if mode in ("auto", "pooled", "finetune") and config.train.pooled_epochs > 0 and q.train_intervals(hist).any():
        pooled, pooled_history = fit_pooled(hist, q, config, progress)
    lap("pooled")
    # the survival model and its backtest before the own models: their peaks then do not stack on the own
    # models' state (a 50,000-customer shard peaked 0.4 GB lower so)
    survival, survival_history, asof_scores = None, [], None
    if config.train.survival_epochs > 0:
        release_memory()
        asof_scores = backtest(checked.events, as_of, config, progress) if out is not None else None  # for the report
        lap("backtest")
        release_memory()
        survival, survival_history = fit_survival(hist, as_of, config, progress)
        release_memory()
        lap("survival")
    pooled_days = pooled.heldout.answer(hist, q.owner, q.pos)[0] if pooled is not None else None  # no question seen
    prep, result, own, own_days, judged = own_models(prep, hist, q, pooled, pooled_days, config, out, resume, progress)
    lap("own_models")
    rows = prep.model_rows
    fallback_by, own_buckets, evaluation, holdout_frame = evaluate_run(hist, q, d.bins, pooled_days, own_days, mode, **judged)
    own_survival = None
    if survival is not None and mode in ("per_customer", "finetune"):  # own survival models too
        own_survival = fit_own(hist, as_of, config, survival, mode == "finetune", progress,
                               out / "survival_checkpoints" if out is not None else None, resume)
        lap("own_survival")
    answers = own_answers(mode, prep.hist.n_visits[rows], own_buckets)
    if mode in ("per_customer", "finetune"):  # every own model answers; in finetune the pooled model the others
        fallback_by = {b: "pooled" for b in fallback_by} if mode == "finetune" and pooled else None
    elif mode == "pooled":
        fallback_by = {b: "pooled" for b in fallback_by} if pooled else None
    answer_buckets = (tuple(own_buckets) if mode == "auto" else () if mode == "pooled"
                      else tuple(name for _, _, name in BUCKETS))
    stepped = config.model.step_to_next and not config.n_classes  # a class answer is its bin's value: no step
    step = step_factor(hist) if stepped else 1.0
    run = dataclasses.replace(own, answers=answers, fallback_by=fallback_by, survival=survival, own_survival=own_survival,
                              own_buckets=answer_buckets, step=step)
    predictions = add_unanswered(predict_frame(run, hist, windows, result.compiled, as_of), checked)
    lap("predict")
    if out is None:
        return predictions

    pooled_scale = pooled.scale if pooled is not None else 1.0  # the shared model's day factor (pooled.question_scale)
    per_customer = customer_metrics(prep, result, run, config)
    _write_atomic(out / "customer_metrics.parquet", per_customer.to_parquet)
    _write_atomic(out / "answers.json", lambda p: p.write_text(json.dumps(
        {"schema_version": checkpoint.SCHEMA_VERSION, "mode": mode, "fallback_by_history": fallback_by or CLASSIC_FALLBACK, "as_of": str(as_of),
         "population": population_answers(hist),
         "own_models_answer_in": list(answer_buckets),
         "pooled_scale": pooled_scale,
         "step_factor": step,
         "models": {"pooled": pooled is not None, "survival": survival is not None, "own_survival": own_survival is not None}},
        indent=2)))
    if pooled is not None:
        checkpoint.save_shared(out / "pooled", pooled.params, pooled.center)
    if survival is not None:
        checkpoint.save_shared(out / "survival", survival.params, survival.center)
    write_rejected(out, checked.rejected if on_bad_rows == "skip" else None)
    _write_atomic(out / "predictions.parquet", predictions.to_parquet)
    metrics = run_metrics(prep, config, result, predictions, per_customer, seconds_prepare=t_prep,
                          seconds_total=time.perf_counter() - t_start)
    metrics["evaluation"] = evaluation
    lap("write")
    metrics["seconds_by_stage"] = seconds_by_stage
    metrics["pooled_history"] = pooled_history
    metrics["pooled_scale"] = pooled_scale
    metrics["step_factor"] = step if stepped else None  # None: off
    metrics["as_of"] = {"date": str(as_of), "backtest": asof_scores, "survival_history": survival_history}
    _write_atomic(out / "holdout.parquet", holdout_frame.to_parquet)
    metrics["rows"] = row_counts(checked, n_read)
    if len(checked.later):  # the log goes on past the as-of date: score the answers on what followed
        metrics["after_as_of"] = score_later(predictions, customer_baselines(hist), checked.later, as_of, config)
    metrics["verdict"], judged = verdict(metrics, predictions, config.n_classes)
    metrics["warnings"] = warnings + judged  # input warnings first, then what judging the answers found
    _write_atomic(out / "metrics.json", lambda p: p.write_text(json.dumps(metrics, indent=2)))
    if distributed.is_main():
        write_report(out, metrics, holdout_frame, predictions)
    return predictions


def own_models(prep: Prepared, hist: Histories, q: Questions, pooled, pooled_days: np.ndarray | None, config: Config,
               out: Path | None, resume: bool, progress: bool) -> tuple[Prepared, Fit, RunModel, np.ndarray | None, dict]:
    """Train the customers' own models (none in mode pooled). Returns (prep with their chunks, the Fit, a
    RunModel of them answering everywhere, their answers [Q] to the questions (NaN where a customer has
    none; None without any), evaluate_run's keywords for a judged run).

    Mode auto with more customers that can have a model than train.judge_customers: own models answer only in
    the history lengths where they beat the shared model and the baselines, and on most logs that is
    nowhere, so training one for every customer mostly wastes the run's time. The judges (that many
    customers, drawn by id hash) are trained first and judged on their questions (evaluate.choose); the
    others are trained only in the history lengths own models won, as a run's later shards are
    (train_shards.py). The trained customers are in that order: the judges, then the rest."""
    mode, J = config.model.mode, config.train.judge_customers
    ckpt = out / "checkpoints" if out is not None else None
    everyone = trainable(prep) if mode != "pooled" else np.zeros(0, np.int64)  # pooled: the shared model answers all
    if mode == "finetune" and pooled is not None:
        prep = for_finetuning(prep, config, pooled)
        result = fit_groups(prep, config, ckpt, resume, progress, start_from=pooled.params)
    elif mode != "auto" or not 0 < J < len(everyone):
        prep = packed(prep, config, everyone)
        result = fit_groups(prep, config, ckpt, resume, progress)
    else:
        # by id hash: the quotient, as questions() splits selection from headline on the remainder
        judges = everyone[np.argsort(prep.seeds[everyone] // np.uint64(1_000_003), kind="stable")[:J]]
        if progress:
            say(f"own models: {J:,} of the {len(everyone):,} customers that can have one first (drawn by id hash), "
                "to judge where own models answer")
        first = packed(prep, config, np.sort(judges))
        result = fit_groups(first, config, ckpt, resume, progress, desc="train (judges)", first_group=0)
        days = _own_answers(first, result, hist, q, pooled, config)[1]
        fallback_by, won = choice(hist, q, config.data.bins, pooled_days, days)
        n = prep.hist.n_visits  # (visits before the last: a question is answered from n, the next visit from n + 1)
        wins = np.isin(bucket_names(n), won) | np.isin(bucket_names(n + 1), won)
        rest = np.setdiff1d(everyone[wins[everyone]], judges)
        if progress:
            say(f"own models won in history lengths {', '.join(won)}: {len(rest):,} more customers to train" if won else
                "own models won in no history length: the judges' are the only ones")
        then = packed(prep, config, rest)
        if ckpt is not None and distributed.is_main():  # a resumed run's groups of customers no longer trained
            for stale in group_dirs(ckpt)[n_groups(first) + n_groups(then):]:
                shutil.rmtree(stale)
        if len(rest):
            more = fit_groups(then, config, ckpt, resume, progress, first_group=n_groups(first))
            days_rest = _own_answers(then, more, hist, q, pooled, config)[1]
            days = np.where(np.isnan(days), days_rest, days)
            prep, result = dataclasses.replace(prep, chunks=first.chunks + then.chunks), joined(result, more)
        else:
            prep = first
        asked = hist.keys[q.owner]  # customers with a question that could have had a model and were not trained
        untrained = np.isin(asked, prep.hist.keys[everyone]) & ~np.isin(asked, prep.hist.keys[prep.model_rows])
        own, _ = _own_answers(prep, result, hist, q, pooled, config, answers=False)
        release_memory()
        return prep, result, own, days, {"chosen": (fallback_by, won), "untrained": untrained, "judges": J}
    own, days = _own_answers(prep, result, hist, q, pooled, config)
    release_memory()
    return prep, result, own, days, {}


def _own_answers(prep: Prepared, result: Fit, hist: Histories, q: Questions, pooled, config: Config,
                 answers: bool = True) -> tuple[RunModel, np.ndarray | None]:
    """(a RunModel of the trained own models, answering everywhere; their answers [Q] to the questions, or None)."""
    rows = prep.model_rows
    diverged = result.state.diverged if result.state is not None else np.zeros(0, bool)
    params = kept_params(result.state, config) if result.state is not None else None  # None: nobody has an own model
    own = RunModel(config, prep.hist.keys[rows], prep.center[rows], params, diverged, np.ones(len(rows), bool), None, pooled)
    return own, question_answers(own, prep, hist, q, result.compiled) if answers and len(rows) else None


def own_answers(mode: str, n_visits: np.ndarray, own_buckets: list[str] | tuple[str, ...]) -> np.ndarray:
    """[n] whether each modelled customer's own model answers: in mode auto where its history length (the
    full history: one visit more than its model learned from) is a bucket own models won; in modes
    per_customer and finetune always."""
    if mode in ("per_customer", "finetune"):
        return np.ones(len(n_visits), bool)
    return np.isin(bucket_names(n_visits + 1), own_buckets)


def population_answers(hist: Histories) -> dict[str, float]:
    """The baselines that are one number for everybody, from every interval of the run: a run in shards
    answers every shard with these (its first shard's), not each shard's own."""
    values = customer_baselines(hist)
    return {name: float(values[name][0]) if hist.n_customers else float("nan")
            for name in ("population_median", "population_latest_median", "constant")}


def customer_metrics(prep: Prepared, result: Fit, run: RunModel, config: Config) -> pd.DataFrame:
    """customer_metrics.parquet: one row per customer with an own model, in the order of its parameters."""
    rows = prep.model_rows
    state = result.state
    return pd.DataFrame(
        {
            "customer_id": prep.hist.ids[rows],
            "n_windows": prep.windows.counts[rows],
            "n_val": result.val_n.astype(np.int64),
            "best_epoch": (state.best_epoch + 1) if state is not None else np.zeros(0, int),
            "epochs_trained": state.epochs_trained if state is not None else np.zeros(0, int),
            "val_loss": result.val_sum / np.where(result.val_n > 0, result.val_n, np.nan),
            ("val_error_rate" if config.n_classes else "val_mae_days"): result.val_error,
            "stopped_early": state.stopped & ~state.diverged if state is not None else np.zeros(0, bool),
            "diverged": run.diverged,
            "model_answers": run.answers,  # read back by predict.py
        }
    )


# keys a resumed run may change without changing what was trained (a larger train.epochs continues training)
RESUME_FREE = ("train.checkpoint_every", "train.compilation_cache")


def write_rejected(out: Path, rejected: pd.DataFrame | None) -> None:
    """out/rejected_rows.parquet holds `rejected`; with None there is none, not even an earlier run's in this
    folder, which would describe rows this run never saw."""
    if rejected is not None:
        _write_atomic(out / "rejected_rows.parquet", rejected.to_parquet)
    else:
        (out / "rejected_rows.parquet").unlink(missing_ok=True)


def check_out_dir(out_dir: str | Path | None) -> None:
    """Refuse a run folder that is a file, before any work."""
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise InputError(f"out_dir {out_dir} is a file: a run folder is a folder (a new one, or an earlier run's)")


def existing_run(out: str | Path) -> list[str]:
    """The files of an earlier run in `out` (empty: no run there, e.g. a new or empty folder)."""
    out = Path(out)
    names = ("config.toml", "predictions.parquet", "metrics.json", *MODEL_DIRS, "answers.json")
    return [name for name in names if (out / name).exists()]


def config_changes(before: Config, after: Config) -> dict[str, tuple[Any, Any]]:
    """{"section.key": (before, after)} of every key that differs."""
    a, b = before.to_dict(), after.to_dict()
    return {f"{sec}.{k}": (a[sec][k], b[sec][k]) for sec in a for k in a[sec] if a[sec][k] != b[sec][k]}


def resume_check(out: Path, config: Config) -> str | None:
    """Refuse to resume the run in `out` with a changed config (naming the keys); a larger train.epochs is
    allowed: returns the line saying training continues (None when nothing changed)."""
    from jaxlstm.config import load_config

    changes = config_changes(load_config(out / "config.toml"), config)
    epochs = changes.pop("train.epochs", None)
    for key in RESUME_FREE:
        changes.pop(key, None)
    if changes:
        shown = "; ".join(f"{k}: {v[0]!r} in the run, {v[1]!r} now" for k, v in changes.items())
        raise InputError(f"--resume {out}: the config differs from the run's ({shown}): resume with the run's settings, "
                         "or start a new run (another --out, or --overwrite)")
    if epochs is None:
        return None
    if epochs[1] < epochs[0]:
        raise InputError(f"--resume {out}: train.epochs is {epochs[1]} but the run was set to {epochs[0]} "
                         f"(--epochs {epochs[0]} or more continues it; fewer would leave its models trained beyond the "
                         "setting): give --epochs >= the run's, or start a new run")
    return (f"{out}: continuing the run to {epochs[1]} epochs (it was set to {epochs[0]}); customers that stopped early "
            "stay stopped")


def before_last_visit(events: pd.DataFrame) -> pd.DataFrame:
    """The visit log without each customer's last visit: what own models learn from, so that no model
    has seen the question it is judged and chosen on."""
    order = events.sort_values([ID, TIME], kind="stable")
    return events.drop(order.groupby(ID, sort=False).tail(1).index).reset_index(drop=True)


def question_answers(own: RunModel, prep: Prepared, hist: Histories, q: Questions, compiled) -> np.ndarray:
    """[Q] the customers' own models' answers to their questions (NaN where a customer has none):
    each model predicts the next interval of the history before the question, which it trained on."""
    frame = predict_frame(own, prep.hist, prep.windows, compiled)
    mine = frame["model"].isin([PER_CUSTOMER, FINETUNED]).to_numpy()
    days = pd.Series(frame["predicted_interval_days"].to_numpy()[mine], index=prep.hist.keys[mine])
    return days.reindex(hist.keys[q.owner]).to_numpy(dtype=float)


def input_summary(checked: Checked, as_of: pd.Timestamp, unit: str = "timestamp") -> str:
    """What reading the log left out or folded together, for the first log line ('' when nothing)."""
    parts = []
    if checked.merged:
        parts.append(f"{checked.merged:,} rows merged into a visit of the same customer and {unit}")
    if len(checked.later):
        parts.append(f"{len(checked.later):,} visits on or after the as-of date {as_of:%Y-%m-%d %H:%M} left out of training")
    if len(checked.rejected):
        parts.append(f"{len(checked.rejected):,} bad rows set aside")
    return f" ({'; '.join(parts)})" if parts else ""


def input_warnings(checked: Checked, as_of: pd.Timestamp, horizon_days: float, source: str, explicit: bool) -> list[str]:
    """Warnings about dates that would make every as-of answer misleading without an error: a
    latest visit far beyond the bulk of the log (one mistyped year moves the default as-of date for
    everyone), or an as-of date after today."""
    out = []
    times = checked.events["timestamp"]
    bulk = times.quantile(0.999)
    far = (times > bulk + pd.Timedelta(days=horizon_days)).to_numpy()
    if far.any():
        where = np.argsort(times.to_numpy()[far])[::-1][:5]
        shown = ", ".join(str(r) for r in checked.rows[far][where])
        out.append(f"{source}: {int(far.sum()):,} visits lie more than {horizon_days:g} days after 99.9% of the log "
                   f"(latest {times.max():%Y-%m-%d}, at rows/lines {shown}); "
                   + ("the as-of date follows them" if not explicit else "check them") + ": a typo in a year?")
    late = after_today(as_of)
    return out + ([late] if late else [])


def after_today(as_of: pd.Timestamp) -> str | None:
    """The warning for an as-of date after today (train_all.py and predict.py), else None."""
    if as_of > pd.Timestamp.now() + pd.Timedelta(days=1):
        return f"the as-of date {as_of:%Y-%m-%d} is after today: answers count time that has not passed yet"
    return None


def row_counts(checked: Checked, n_read: int) -> dict[str, Any]:
    """metrics.json's rows: every input row is used, merged, after the as-of date or rejected."""
    return {"read": n_read, "used": len(checked.events), "merged_same_timestamp": checked.merged,
            "after_as_of": len(checked.later), "rejected": len(checked.rejected),
            "rejected_by_reason": checked.rejected["reason"].value_counts().to_dict(),
            "customers_all_rows_rejected": len(checked.orphans), "customers_only_after_as_of": len(checked.after_as_of),
            "time_format": checked.time_format}


def run_metrics(prep: Prepared, config: Config, result: Fit, predictions: pd.DataFrame, per_customer: pd.DataFrame,
                seconds_prepare: float, seconds_total: float) -> dict[str, Any]:
    """The run summary written to metrics.json."""
    n_model = len(prep.model_rows)
    err = per_customer["val_error_rate" if config.n_classes else "val_mae_days"].to_numpy(dtype=float)
    windows_trained = int(sum(c.n_train.sum() for c in prep.chunks))
    return {
        "customers": int(len(predictions)),
        "mode": config.model.mode,
        # customers_with_model + customers_fallback == customers: with an own model trained, or without one
        "customers_with_model": n_model,
        "customers_fallback": int(len(predictions)) - n_model,
        "customers_answered_by_own_model": int(predictions["model"].isin([PER_CUSTOMER, FINETUNED]).sum()),
        "answers_by_model": predictions["model"].value_counts().to_dict(),
        "status_counts": predictions["status"].value_counts().to_dict(),
        "diverged": int(per_customer["diverged"].sum()),
        "stopped_early": int(per_customer["stopped_early"].sum()),
        "windows_train": windows_trained,
        "windows_val": int(prep.is_val.sum()),
        "epochs": config.train.epochs,
        "epochs_run": result.epochs_run,
        "history": result.history,
        ("val_error_rate" if config.n_classes else "val_mae_days"): float(np.nanmean(err)) if np.isfinite(err).any() else None,
        "seconds_prepare": seconds_prepare,
        "seconds_compile": result.seconds_compile,
        "seconds_compile_by_function": result.compiled.seconds if result.compiled else {},  # when first compiled
        "seconds_train": result.seconds_train,
        "seconds_total": seconds_total,
        # customers trained per second, the whole run (which ends once every customer has stopped)
        "customers_per_s": n_model / result.seconds_train if result.seconds_train > 0 and result.epochs_run else None,
        "window_steps_per_s": windows_trained * result.epochs_run / result.seconds_train if result.seconds_train > 0 else None,
        "device": str(jax.devices()[0].device_kind),
        "devices": result.devices,  # the own models' customers were split over them (all processes')
        "processes": result.processes,
        "chunk_shape": list(result.compiled.shape) if result.compiled else None,
    }
