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
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from jaxlstm import checkpoint
from jaxlstm.config import Config
from jaxlstm.data import batching
from jaxlstm.data.events import check_events, parse_as_of
from jaxlstm.data.intervals import Histories, histories
from jaxlstm.data.windows import Windows, bin_values, decode, make_windows, to_bins
from jaxlstm.errors import InputError
from jaxlstm.asof import backtest
from jaxlstm.evaluate import evaluate_run, holdout
from jaxlstm.report import write_report
from jaxlstm.pooled import PooledModel, fit_pooled, window_features
from jaxlstm.survival import default_as_of, fit_survival
from jaxlstm.predict import CLASSIC_FALLBACK, RunModel, add_orphans, checkpoint_tree, predict_frame
from jaxlstm.step import Compiled, CustomerState, compile_steps, kept_params


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The data of a run, ready for the trainer (all numpy; see the data layer for shapes)."""

    hist: Histories
    windows: Windows
    is_val: np.ndarray  # [M] bool
    center: np.ndarray  # [N] float32
    seeds: np.ndarray  # [N] uint64
    chunks: list[batching.Chunk]

    @property
    def model_rows(self) -> np.ndarray:
        """Customers that get a model, in chunk order (the order of every saved per-customer array)."""
        return np.concatenate([c.rows[c.real] for c in self.chunks]) if self.chunks else np.zeros(0, np.int64)


def prepare(events: pd.DataFrame, config: Config) -> Prepared:
    d, t = config.data, config.train
    hist = histories(events, floor_days=d.floor_days)
    windows = make_windows(hist, d.look_back)
    seeds = batching.customer_seeds(hist.keys)
    is_val = batching.split_windows(windows.offsets, seeds, d.split, d.val_fraction, t.seed)
    center = batching.centers(windows, is_val)
    return _packed(Prepared(hist, windows, is_val, center, seeds, []), config)


def _packed(prep: Prepared, config: Config, inputs=None) -> Prepared:
    rows = np.flatnonzero(prep.windows.counts > 0)
    C = max(1, min(config.train.chunk_customers, len(rows)))
    chunks = batching.pack_chunks(prep.windows, prep.is_val, prep.center, prep.seeds, rows, C, config.train.batch_size,
                                  config.data.bins, inputs)
    return dataclasses.replace(prep, chunks=chunks)


def for_finetuning(prep: Prepared, config: Config, pooled: PooledModel) -> Prepared:
    """The same customers repacked for fine-tuning the pooled model: its inputs and its centre."""
    center = np.full(prep.hist.n_customers, pooled.center, np.float32)
    inputs = window_features(prep.hist, prep.windows, config.data.look_back, pooled.center)
    return _packed(dataclasses.replace(prep, center=center), config, inputs)


def _shuffled(chunk: batching.Chunk, run_seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's training windows in a fresh random order (padding stays last)."""
    seeds = (chunk.seeds[:, 0].astype(np.uint64) << np.uint64(32)) | chunk.seeds[:, 1].astype(np.uint64)
    W = chunk.x_train.shape[1]
    u = batching.uniform(seeds, (run_seed << 20) + 2 * epoch + 2, W)
    u[np.arange(W)[None, :] >= chunk.n_train[:, None]] = 2.0
    order = np.argsort(u, axis=1, kind="stable")
    return np.take_along_axis(chunk.x_train, order[:, :, None, None], 1), np.take_along_axis(chunk.y_train, order, 1)


def _batches(n: np.ndarray, width: int, B: int):
    """(k, slice, mask [C, B]) for each minibatch position k over `width` padded windows."""
    for k in range(-(-int(n.max()) // B) if len(n) and n.max() > 0 else 0):
        mask = ((k * B + np.arange(B))[None, :] < n[:, None]).astype(np.float32)
        yield k, slice(k * B, (k + 1) * B), mask


def _validate(compiled: Compiled, params, chunk: batching.Chunk, B: int, outputs: bool = False):
    """Per-customer validation with `params`: (loss_sum [C], n [C]) as device arrays, plus the
    outputs [C, Wv, K] (numpy) when asked; fetching them waits for the device, so training doesn't."""
    sums, ns, outs = [], [], []
    for _, sl, mask in _batches(chunk.n_val, chunk.x_val.shape[1], B):
        s, n, out = compiled.evaluate(params, chunk.x_val[:, sl], chunk.y_val[:, sl], mask)
        sums.append(s), ns.append(n), outs.append(out)
    C = len(chunk.rows)
    zero = np.zeros(C, np.float32)
    result = (sum(sums) if sums else zero, sum(ns) if ns else zero)
    if outputs:
        K = compiled.evaluate.out_info[2].shape[-1]
        result += (np.concatenate([np.asarray(o) for o in outs], axis=1) if outs else np.zeros((C, 0, K), np.float32),)
    return result


def _gather(states: list, chunks: list[batching.Chunk]) -> Any:
    """Per-chunk device states -> one numpy tree over all model customers (padding dropped)."""
    return jax.tree_util.tree_map(
        lambda *xs: np.concatenate([np.asarray(x)[c.real] for x, c in zip(xs, chunks)]), *states
    )


def _scatter(tree: Any, states: list, chunks: list[batching.Chunk]) -> list:
    """Inverse of _gather: put restored rows back into each chunk's state."""
    out, start = [], 0
    for st, c in zip(states, chunks):
        n = int(c.real.sum())

        def put(full, cur, start=start, n=n, real=c.real):
            cur = np.array(cur)
            cur[real] = full[start : start + n]
            return cur

        out.append(jax.tree_util.tree_map(put, tree, st))
        start += n
    return out


@dataclasses.dataclass
class Fit:
    state: Any  # CustomerState over all model customers (numpy, chunk order)
    compiled: Compiled | None
    history: list[dict[str, float]]
    seconds_compile: float
    seconds_train: float
    epochs_run: int
    val_sum: np.ndarray  # [N_model] best-params validation metrics
    val_n: np.ndarray
    val_error: np.ndarray  # [N_model] MAE days (regression) or error rate (classification)
    val_days: np.ndarray  # [M windows] the kept parameters' answer in days on validation windows, else NaN
    val_class: np.ndarray  # [M] its class when binning, else -1


def fit(prep: Prepared, config: Config, ckpt_dir: Path | None = None, resume: bool = False, progress: bool = True,
        start_from: Any = None) -> Fit:
    """Train every customer's model. Resumes from the latest checkpoint in `ckpt_dir` if asked.
    start_from: parameters (leading axis 1) every customer starts from instead of its own init."""
    t = config.train
    chunks, B = prep.chunks, t.batch_size
    keys = prep.hist.keys[prep.model_rows]
    center = prep.center[prep.model_rows]
    if not chunks:
        M = len(prep.windows.y)
        return Fit(None, None, [], 0.0, 0.0, 0, np.zeros(0), np.zeros(0), np.zeros(0), np.full(M, np.nan), np.full(M, -1))
    C = len(chunks[0].rows)
    t_compile = time.perf_counter()
    compiled = compile_steps(config, C, B, n_features=chunks[0].x_train.shape[-1])
    seconds_compile = time.perf_counter() - t_compile  # ~0 when this process compiled it before
    seed = np.int32(t.seed)
    states = [compiled.init(seed, c.seeds) for c in chunks]
    if start_from is not None:  # RMSprop's state starts at zero whatever the parameters: keep it
        tiled = jax.tree_util.tree_map(lambda a: np.repeat(np.asarray(a), C, axis=0), start_from)
        states = [st._replace(params=tiled, best_params=tiled) for st in states]
    print_ = _say if progress else (lambda *_: None)

    fp = checkpoint.fingerprint(config, prep.windows.x, prep.windows.y, prep.windows.offsets, prep.hist.keys)
    meta = {
        "config": config.to_dict(),
        "customer_ids": keys.tolist(),
        "fingerprint": fp,
        "n_features": int(chunks[0].x_train.shape[-1]),  # 4 for models fine-tuned from the pooled one
        # all randomness is counter-based, a pure function of these: nothing else to carry
        "rng": {"seed": t.seed, "streams": "hash(seed, customer id) -> init key; hash(seed, id, epoch, step) -> dropout, order"},
    }
    start = 0
    mngr = checkpoint.manager(ckpt_dir) if ckpt_dir is not None else None
    found = checkpoint.read_meta(ckpt_dir) if resume and ckpt_dir is not None else None
    if resume and found is None:  # killed before the first checkpoint: nothing to keep
        print_(f"no checkpoint in {ckpt_dir} yet: starting from epoch 0")
    elif resume:
        start, saved = found
        if saved["fingerprint"] != fp:
            raise InputError(f"--resume: {ckpt_dir} was trained on other data or another config; start a new run or drop --resume")
        restored = checkpoint.restore(ckpt_dir, start, checkpoint_tree(_gather(states, chunks), center, 0))
        states = _scatter(CustomerState(**restored["customers"]), states, chunks)
        print_(f"resumed from {ckpt_dir} after epoch {start}")
    history: list[dict[str, float]] = list(found[1].get("history", [])) if resume and found else []
    n_model = len(keys)
    t0 = time.perf_counter()
    done = [bool(np.asarray(st.stopped).all()) for st in states]
    bar = tqdm(range(start, t.epochs), desc="train", unit="epoch", disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        tr_sum, tr_n, va_sum, va_n = [], [], [], []
        for ci, chunk in enumerate(chunks):
            st = states[ci]
            if done[ci]:
                continue
            xs, ys = _shuffled(chunk, t.seed, epoch)
            for k, sl, mask in _batches(chunk.n_train, xs.shape[1], B):
                drop = compiled.dropout(chunk.seeds, seed, np.int32(epoch), np.int32(k))
                st, (s, n) = compiled.train(st, xs[:, sl], ys[:, sl], mask, drop)
                tr_sum.append(s), tr_n.append(n)
            vs, vn = _validate(compiled, st.params, chunk, B)
            va_sum.append(vs), va_n.append(vn)
            states[ci] = compiled.end_epoch(st, vs, vn, np.int32(epoch))
        done = [bool(np.asarray(st.stopped).all()) for st in states]  # one wait per epoch, not per chunk
        row = {
            "epoch": epoch + 1,
            "train_loss": float(sum(np.asarray(x).sum() for x in tr_sum) / max(sum(np.asarray(x).sum() for x in tr_n), 1)),
            "val_loss": float(sum(np.asarray(x).sum() for x in va_sum) / max(sum(np.asarray(x).sum() for x in va_n), 1)),
            "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val=f"{row['val_loss']:.4f}",
                        customer_epochs_s=f"{n_model * (epoch + 1 - start) / max(row['seconds'], 1e-9):,.0f}")
        if mngr is not None and ((epoch + 1) % t.checkpoint_every == 0 or epoch + 1 == t.epochs):
            checkpoint.save(mngr, epoch + 1, checkpoint_tree(_gather(states, chunks), center, epoch + 1), {**meta, "history": history})
    jax.block_until_ready(states)
    seconds = time.perf_counter() - t0
    if mngr is not None:
        if mngr.latest_step() is None:  # e.g. epochs = 0: still leave a run that predict.py can read
            checkpoint.save(mngr, start, checkpoint_tree(_gather(states, chunks), center, start), meta)
        mngr.wait_until_finished()

    # what the parameters each customer keeps answer on its validation windows
    M = len(prep.windows.y)
    val_days, val_class = np.full(M, np.nan), np.full(M, -1, np.int64)
    val_sum, val_n = [], []
    for st, chunk in zip(states, chunks):
        s, n, out = _validate(compiled, kept_params(st, config), chunk, B, outputs=True)
        val_sum.append(np.asarray(s)[chunk.real]), val_n.append(np.asarray(n)[chunk.real])
        _put_val_answers(out, chunk, prep, config, val_days, val_class)
    rows = prep.model_rows
    owner = np.repeat(np.arange(prep.hist.n_customers), prep.windows.counts)
    wrong = (val_class != to_bins(prep.windows.y, config.data.bins)) if config.n_classes else np.abs(val_days - prep.windows.y)
    has = ~np.isnan(val_days)
    n_val = np.bincount(owner[has], minlength=prep.hist.n_customers)[rows]
    err_sum = np.bincount(owner[has], weights=wrong[has], minlength=prep.hist.n_customers)[rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        val_error = np.where(n_val > 0, err_sum / n_val, np.nan)
    return Fit(_gather(states, chunks), compiled, history, seconds_compile, seconds, t.epochs - start,
               np.concatenate(val_sum), np.concatenate(val_n), val_error, val_days, val_class)


def _put_val_answers(out: np.ndarray, chunk: batching.Chunk, prep: Prepared, config: Config,
                     val_days: np.ndarray, val_class: np.ndarray) -> None:
    """Write a chunk's validation outputs [C, Wv, K] into the flat per-window answers (days, class)."""
    offsets = prep.windows.offsets
    for i, r in enumerate(chunk.rows):
        n = int(chunk.n_val[i])
        if r < 0 or n == 0:
            continue
        idx = offsets[r] + np.flatnonzero(prep.is_val[offsets[r] : offsets[r + 1]])
        if config.n_classes:
            val_class[idx] = out[i, :n].argmax(-1)
            val_days[idx] = bin_values(config.data.bins)[val_class[idx]]
        else:
            val_days[idx] = decode(out[i, :n, 0] + chunk.center[i])


def _say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def _write_atomic(path: Path, write) -> None:
    """Write through a temporary name and rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def enable_compilation_cache() -> None:
    """Persist compiled XLA programs across processes (a second run compiles in ~1 s, see PERF.md)."""
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
        after it are bad rows (e.g. clock errors in the export).
    Returns:
      the predictions table: exactly one row per customer in `events` (see DESIGN.md); customers
      all of whose rows were rejected come last, with status "all_rows_rejected".
    """
    config = config or Config()
    if config.train.compilation_cache:
        enable_compilation_cache()
    t_start = time.perf_counter()
    checked = check_events(events, config.data.id_col, config.data.time_col, source, on_bad_rows=on_bad_rows, as_of=as_of)
    prep = prepare(checked.events, config)
    mode = config.model.mode
    if mode == "pooled":  # the shared model answers everyone: no per-customer models to train
        prep = dataclasses.replace(prep, chunks=[])
    t_prep = time.perf_counter() - t_start
    if progress:
        skipped = f", {len(checked.rejected):,} bad rows set aside" if len(checked.rejected) else ""
        _say(f"{source}: {len(checked.events):,} visits of {prep.hist.n_customers:,} customers{skipped}; "
             f"{len(prep.model_rows):,} have enough history for a model" + (f" -> {out_dir}" if out_dir is not None else ""))
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        if resume and not (out / "config.toml").exists():
            raise InputError(f"--resume: no run in {out} (no config.toml); start one without --resume")
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_text(config.to_toml())
    rows = prep.model_rows
    hold = holdout(prep.hist, prep.windows, prep.is_val, config.data.look_back)
    pooled, pooled_history = None, []
    if mode in ("auto", "pooled", "finetune") and config.train.pooled_epochs > 0 and len(prep.hist.intervals):
        pooled, pooled_history = fit_pooled(prep.hist, hold.start, config, progress)
    start_from = None
    if mode == "finetune" and pooled is not None:
        prep, start_from = for_finetuning(prep, config, pooled), pooled.params
        rows = prep.model_rows
    result = fit(prep, config, ckpt_dir=out / "checkpoints" if out is not None else None, resume=resume, progress=progress,
                 start_from=start_from)
    diverged = result.state.diverged if result.state is not None else np.zeros(0, bool)
    has_model = np.zeros(prep.hist.n_customers, bool)
    has_model[rows] = ~diverged
    pooled_days = pooled.answer(prep.hist, hold.owner, hold.pos)[0] if pooled is not None else None
    chosen, fallback_by, evaluation, holdout_frame = evaluate_run(
        prep.hist, hold, config.data.bins, has_model, result.val_days, result.val_class, pooled_days, mode)
    as_of = parse_as_of(as_of) if as_of is not None else default_as_of(prep.hist.last_visit)
    survival, survival_history, asof_scores = None, [], None
    if config.train.survival_epochs > 0:
        asof_scores = backtest(checked.events, as_of, config, progress) if out is not None else None  # for the report
        survival, survival_history = fit_survival(prep.hist, as_of, config, progress)
    if mode == "per_customer":
        answers, fallback_by = np.ones(len(rows), bool), None
    elif mode == "pooled":
        answers, fallback_by = np.zeros(len(rows), bool), {b: "pooled" for b in fallback_by} if pooled else None
    elif mode == "finetune":  # every fine-tuned model answers; the pooled model the others
        answers, fallback_by = np.ones(len(rows), bool), {b: "pooled" for b in fallback_by} if pooled else None
    else:
        answers = chosen[rows]
    if result.state is not None:
        run = RunModel(config, prep.hist.keys[rows], prep.center[rows], kept_params(result.state, config), diverged, answers,
                       fallback_by, pooled, survival)
    else:
        run = RunModel(config, np.zeros(0, str), np.zeros(0, np.float32), None, np.zeros(0, bool), np.zeros(0, bool),
                       fallback_by, pooled, survival)
    predictions = add_orphans(predict_frame(run, prep.hist, prep.windows, result.compiled, as_of), checked.orphans)
    if out is None:
        return predictions

    counts = prep.windows.counts
    per_customer = pd.DataFrame(
        {
            "customer_id": prep.hist.ids[rows],
            "n_windows": counts[rows],
            "n_val": result.val_n.astype(np.int64),
            "best_epoch": (result.state.best_epoch + 1) if result.state is not None else np.zeros(0, int),
            "val_loss": result.val_sum / np.where(result.val_n > 0, result.val_n, np.nan),
            ("val_error_rate" if config.n_classes else "val_mae_days"): result.val_error,
            "stopped_early": result.state.stopped & ~result.state.diverged if result.state is not None else np.zeros(0, bool),
            "diverged": run.diverged,
            "model_answers": run.answers,  # read back by predict.py
        }
    )
    _write_atomic(out / "customer_metrics.parquet", per_customer.to_parquet)
    _write_atomic(out / "answers.json", lambda p: p.write_text(json.dumps(
        {"mode": mode, "fallback_by_history": fallback_by or CLASSIC_FALLBACK, "as_of": str(as_of)}, indent=2)))
    if pooled is not None:
        checkpoint.save_shared(out / "pooled", pooled.params, pooled.center)
    if survival is not None:
        checkpoint.save_shared(out / "survival", survival.params, survival.center)
    if on_bad_rows == "skip":
        _write_atomic(out / "rejected_rows.parquet", checked.rejected.to_parquet)
    _write_atomic(out / "predictions.parquet", predictions.to_parquet)
    metrics = run_metrics(prep, config, result, predictions, per_customer, seconds_prepare=t_prep,
                          seconds_total=time.perf_counter() - t_start)
    metrics["evaluation"] = evaluation
    metrics["pooled_history"] = pooled_history
    metrics["as_of"] = {"date": str(as_of), "backtest": asof_scores, "survival_history": survival_history}
    _write_atomic(out / "holdout.parquet", holdout_frame.to_parquet)
    metrics["rows"] = {"read": len(events), "used": len(checked.events), "rejected": len(checked.rejected),
                       "rejected_by_reason": checked.rejected["reason"].value_counts().to_dict(),
                       "customers_all_rows_rejected": len(checked.orphans)}
    _write_atomic(out / "metrics.json", lambda p: p.write_text(json.dumps(metrics, indent=2)))
    write_report(out, metrics, holdout_frame)
    return predictions


def run_metrics(prep: Prepared, config: Config, result: Fit, predictions: pd.DataFrame, per_customer: pd.DataFrame,
                seconds_prepare: float, seconds_total: float) -> dict[str, Any]:
    """The run summary written to metrics.json."""
    n_model = len(prep.model_rows)
    err = per_customer["val_error_rate" if config.n_classes else "val_mae_days"].to_numpy(dtype=float)
    windows_trained = int(sum(c.n_train.sum() for c in prep.chunks))
    return {
        "customers": int(len(predictions)),
        "mode": config.model.mode,
        "customers_with_model": n_model,
        "customers_fallback": int((~predictions["model"].isin(["per_customer", "finetuned"])).sum()),
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
        "customers_per_s": n_model * result.epochs_run / config.train.epochs / result.seconds_train
        if result.seconds_train > 0 and config.train.epochs else None,
        "window_steps_per_s": windows_trained * result.epochs_run / result.seconds_train if result.seconds_train > 0 else None,
        "device": str(jax.devices()[0].device_kind),
        "chunk_shape": list(result.compiled.shape) if result.compiled else None,
    }
