"""The per-customer trainer: a run's data packed into chunks, then every customer's model trained
at once (vmapped, jitted steps; per-customer early stopping; Orbax checkpoints and resume).

    events -> histories -> windows -> split -> chunks of C customers
    -> for each epoch, for each chunk: minibatch steps, validation, best-keeping -> checkpoints
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd
from jaxlstm.progress import LogLines, bar as progress_bar, say

from jaxlstm import checkpoint, distributed
from jaxlstm.config import Config
from jaxlstm.data import batching
from jaxlstm.data.intervals import Histories, histories
from jaxlstm.data.windows import Windows, bin_values, decode, make_windows, to_bins
from jaxlstm.errors import InputError
from jaxlstm.placement import Placement
from jaxlstm.pooled import PooledModel, window_features
from jaxlstm.shards import release_memory
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


def prepare(events: pd.DataFrame, config: Config, pack: bool = True) -> Prepared:
    """The run's data; its chunks hold every customer with a training window (none with pack=False: see `packed`)."""
    d, t = config.data, config.train
    hist = histories(events, floor_days=d.floor_days, extra_cols=d.extra_cols, summary=d.summary_features)
    windows = make_windows(hist, d.look_back)
    seeds = batching.customer_seeds(hist.keys)
    is_val = batching.split_windows(windows.offsets, seeds, d.split, d.val_fraction, t.seed)
    center = batching.centers(windows, is_val)
    prep = Prepared(hist, windows, is_val, center, seeds, [])
    return _packed(prep, config) if pack else prep


def trainable(prep: Prepared) -> np.ndarray:
    """Customers with a training window: those that can have a model."""
    return np.flatnonzero(prep.windows.counts > 0)


def packed(prep: Prepared, config: Config, rows: np.ndarray) -> Prepared:
    """`prep` with chunks for customers `rows` only (each with a training window)."""
    return _packed(prep, config, rows=rows)


def _packed(prep: Prepared, config: Config, inputs=None, rows: np.ndarray | None = None) -> Prepared:
    rows = trainable(prep) if rows is None else rows
    C = Placement.local().chunk_size(config.train.chunk_customers, len(rows))
    chunks = batching.pack_chunks(prep.windows, prep.is_val, prep.center, prep.seeds, rows, C, config.train.batch_size,
                                  config.data.bins, inputs)
    return dataclasses.replace(prep, chunks=chunks)


def for_finetuning(prep: Prepared, config: Config, pooled: PooledModel) -> Prepared:
    """The same customers repacked for fine-tuning the pooled model: its inputs and its centre."""
    center = np.full(prep.hist.n_customers, pooled.center, np.float32)
    inputs = window_features(prep.hist, prep.windows, config.data.look_back, pooled.center)
    return _packed(dataclasses.replace(prep, center=center), config, inputs)


def _shuffled(chunk: batching.Chunk, run_seed: int, epoch: int, B: int) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's training windows in a fresh random order (padding stays last), laid out as
    [steps, C, B, ...] so that each step's minibatch is one contiguous array (no copy per step)."""
    seeds = (chunk.seeds[:, 0].astype(np.uint64) << np.uint64(32)) | chunk.seeds[:, 1].astype(np.uint64)
    C, W = chunk.x_train.shape[:2]
    u = batching.uniform(seeds, (run_seed << 20) + 2 * epoch + 2, W)
    u[np.arange(W)[None, :] >= chunk.n_train[:, None]] = 2.0
    order = np.argsort(u, axis=1, kind="stable")[:, : _n_steps(chunk.n_train, B) * B]
    order = order.reshape(C, -1, B).swapaxes(0, 1)  # [steps, C, B]
    customer = np.arange(C)[None, :, None]
    return chunk.x_train[customer, order], chunk.y_train[customer, order]


def _n_steps(n: np.ndarray, B: int) -> int:
    return -(-int(n.max()) // B) if len(n) else 0


def _masks(n: np.ndarray, B: int, half: int | None = None) -> list[np.ndarray]:
    """[C, B] float32 masks of the real windows of each minibatch position over counts n [C];
    with `half`, the last one is [C, half] when no customer has more windows left than that."""
    masks = [((k * B + np.arange(B))[None, :] < n[:, None]).astype(np.float32) for k in range(_n_steps(n, B))]
    if half and masks and not masks[-1][:, half:].any():
        masks[-1] = np.ascontiguousarray(masks[-1][:, :half])
    return masks


def _validate(compiled: Compiled, params, chunk: batching.Chunk, outputs: bool = False):
    """Per-customer validation with `params`: (loss_sum [C], n [C]) as device arrays, plus the
    outputs [C, Wv, K] (numpy) when asked; fetching them waits for the device, so training doesn't."""
    sums, ns, outs = [], [], []
    B = compiled.eval_batch
    for k, mask in enumerate(_masks(chunk.n_val, B)):
        sl = slice(k * B, (k + 1) * B)
        s, n, out = compiled.evaluate(params, chunk.x_val[:, sl], chunk.y_val[:, sl], mask)
        sums.append(s), ns.append(n), outs.append(out)
    C = len(chunk.rows)
    zero = np.zeros(C, np.float32)
    # functools.reduce, not sum(): sum() starts from 0 and dispatches one more device add
    result = (functools.reduce(operator.add, sums) if sums else zero, functools.reduce(operator.add, ns) if ns else zero)
    if outputs:
        K = compiled.evaluate.out_info[2].shape[-1]
        result += (np.concatenate([np.asarray(o) for o in outs], axis=1) if outs else np.zeros((C, 0, K), np.float32),)
    return result


def _stop_padding(state: CustomerState, chunk: batching.Chunk, placement: Placement) -> CustomerState:
    return state._replace(stopped=placement.put(np.asarray(state.stopped) | ~chunk.real))


def _gather(states: list, chunks: list[batching.Chunk]) -> Any:
    """Every chunk's state (numpy, see distributed.gather_chunks) -> one numpy tree over all model
    customers in chunk order (padding dropped)."""
    return jax.tree_util.tree_map(
        lambda *xs: np.concatenate([np.asarray(x)[c.real] for x, c in zip(xs, chunks)]), *states
    )


def _scatter(tree: Any, states: dict[int, Any], chunks: list[batching.Chunk], placement: Placement) -> dict[int, Any]:
    """Inverse of _gather for the chunks this process trains (`states`: chunk index -> state): put
    their restored rows back into each chunk's state, on the devices."""
    starts = np.r_[0, np.cumsum([int(c.real.sum()) for c in chunks])]
    out = {}
    for ci, st in states.items():
        real, start = chunks[ci].real, starts[ci]

        def put(full, cur, start=start, n=int(real.sum()), real=real):
            cur = np.array(cur)
            cur[real] = full[start : start + n]
            return cur

        out[ci] = placement.put(jax.tree_util.tree_map(put, tree, st))
    return out


@dataclasses.dataclass
class Fit:
    state: Any  # CustomerState over all model customers (numpy, chunk order), without opt_state (() here:
    # needed only to go on training, which resumes from the checkpoint); params and best_params are both the
    # kept parameters (kept_params), one array
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
    devices: int = 1  # devices the customers were trained on, over all processes
    processes: int = 1


def fit(prep: Prepared, config: Config, ckpt_dir: Path | None = None, resume: bool = False, progress: bool = True,
        start_from: Any = None, desc: str = "train") -> Fit:
    """Train every customer's model. Resumes from the latest checkpoint in `ckpt_dir` if asked.
    start_from: parameters (leading axis 1) every customer starts from instead of its own init.

    Each chunk's customers are split over this process's devices (placement.py). With several
    processes (distributed.py) each trains its own chunks; every process calls fit with the same
    data and gets the same Fit (states gathered at checkpoints and at the end)."""
    t = config.train
    B = t.batch_size
    keys = prep.hist.keys[prep.model_rows]
    center = prep.center[prep.model_rows]
    if not prep.chunks:
        M = len(prep.windows.y)
        return Fit(None, None, [], 0.0, 0.0, 0, np.zeros(0), np.zeros(0), np.zeros(0), np.full(M, np.nan), np.full(M, -1))
    placement = Placement.local()
    # chunks packed for another device count (a caller's own chunk size) are padded to a multiple of it
    chunks = [batching.pad_customers(c, placement.round_up(len(c.rows))) for c in prep.chunks]
    C = len(chunks[0].rows)
    t_compile = time.perf_counter()
    compiled = compile_steps(config, C, B, n_features=chunks[0].x_train.shape[-1], half=True, placement=placement)
    Bv = compiled.eval_batch
    seconds_compile = time.perf_counter() - t_compile  # ~0 when this process compiled it before
    seed = np.int32(t.seed)
    mine = distributed.my_chunks(len(chunks))  # all of them in a one-process run
    template = compiled.init.out_info  # one chunk's state: shapes and dtypes
    # padding customers are stopped from the start: they take no steps and never keep a chunk training
    states = {ci: _stop_padding(compiled.init(seed, chunks[ci].seeds), chunks[ci], placement) for ci in mine}
    if start_from is not None:  # RMSprop's state starts at zero whatever the parameters: keep it
        tiled = jax.tree_util.tree_map(lambda a: np.repeat(np.asarray(a), C, axis=0), start_from)
        # a buffer of its own for every use: the train step donates its state, and one buffer donated twice fails
        states = {ci: st._replace(params=placement.put(tiled), best_params=placement.put(tiled)) for ci, st in states.items()}
    print_ = _say if progress and distributed.is_main() else (lambda *_: None)
    kind = placement.devices[0].platform
    print_(f"{desc}: {len(keys):,} customers in {len(chunks)} chunks of {C} on {jax.device_count()} {kind} device(s)"
           + (f" of {jax.process_count()} processes" if jax.process_count() > 1 else ""))

    def everyone() -> list:  # every chunk's state, numpy, on every process (a collective with several)
        return distributed.gather_chunks(states, len(chunks), template)

    extra = (prep.hist.extras,) if prep.hist.n_extra else ()
    fp = checkpoint.fingerprint(config, prep.windows.x, prep.windows.y, prep.windows.offsets, prep.hist.keys, *extra)
    meta = {
        "config": config.to_dict(),
        "customer_ids": keys.tolist(),
        "fingerprint": fp,
        "n_features": int(chunks[0].x_train.shape[-1]),  # 4 for models fine-tuned from the pooled one
        # all randomness is counter-based, a pure function of these: nothing else to carry
        "rng": {"seed": t.seed, "streams": "hash(seed, customer id) -> init key; hash(seed, id, epoch, step) -> dropout, order"},
    }
    start = 0
    found = checkpoint.read_meta(ckpt_dir) if resume and ckpt_dir is not None else None
    if found is not None and found[1]["fingerprint"] == fp \
            and found[1].get("customer_ids", meta["customer_ids"]) != meta["customer_ids"]:
        # the same data and config, other customers: mode auto's customers after the judges (a resumed run that
        # trains longer may judge own models to win elsewhere). Other data or config is refused below.
        print_(f"{ckpt_dir}: saved for other customers than this run trains there: training them from epoch 0")
        if distributed.is_main():
            shutil.rmtree(ckpt_dir)
        distributed.barrier("jaxlstm: stale checkpoint removed")
        found = None
    mngr = checkpoint.manager(ckpt_dir) if ckpt_dir is not None else None
    if resume and found is None:  # killed before the first checkpoint: nothing to keep
        print_(f"no checkpoint in {ckpt_dir} yet: starting from epoch 0")
    elif resume:
        start, saved = found
        if saved["fingerprint"] != fp:
            raise InputError(f"--resume: {ckpt_dir} was trained on other data or another config; start a new run or drop --resume")
        full = jax.tree_util.tree_map(lambda a: np.zeros((len(keys),) + a.shape[1:], a.dtype), template)
        restored = checkpoint.restore(ckpt_dir, start, checkpoint_tree(full, center, 0))
        states = _scatter(CustomerState(**restored["customers"]), states, chunks, placement)
        print_(f"resumed from {ckpt_dir} after epoch {start}")
    history: list[dict[str, float]] = list(found[1].get("history", [])) if resume and found else []
    n_model = len(keys)
    t0 = time.perf_counter()
    done = {ci: bool(np.asarray(st.stopped).all()) for ci, st in states.items()}
    all_done = distributed.all_processes(all(done.values()))
    masks = {ci: _masks(chunks[ci].n_train, B, Bv if compiled.train_half else None) for ci in mine}  # the same every epoch
    bar = progress_bar(range(start, t.epochs), desc=desc, unit="epoch", disable=not progress or not distributed.is_main(),
                       customers=len(keys))
    epochs_run = 0  # epochs this call ran: fewer than asked once every customer has stopped
    for epoch in bar:
        if all_done:  # every customer (of every process) has stopped: the remaining epochs would change nothing
            break
        epochs_run += 1
        tr_sum, tr_n, va_sum, va_n = [], [], [], []
        for ci in mine:
            if done[ci]:
                continue
            st, chunk = states[ci], chunks[ci]
            xs, ys = _shuffled(chunk, t.seed, epoch, B)
            for k, mask in enumerate(masks[ci]):
                if mask.shape[1] < B:  # the last minibatch fits the half step
                    drop = compiled.dropout_half(chunk.seeds, seed, np.int32(epoch), np.int32(k))
                    st, (s, n) = compiled.train_half(st, xs[k][:, :Bv], ys[k][:, :Bv], mask, drop)
                else:
                    drop = compiled.dropout(chunk.seeds, seed, np.int32(epoch), np.int32(k))
                    st, (s, n) = compiled.train(st, xs[k], ys[k], mask, drop)
                tr_sum.append(s), tr_n.append(n)
            vs, vn = _validate(compiled, st.params, chunk)
            va_sum.append(vs), va_n.append(vn)
            states[ci] = compiled.end_epoch(st, vs, vn, np.int32(epoch))
        done = {ci: bool(np.asarray(st.stopped).all()) for ci, st in states.items()}  # one wait per epoch, not per chunk
        # this epoch's loss sums over every process, and how many processes still train
        totals = distributed.sum_over_processes(np.array(
            [sum(float(np.asarray(x).sum()) for x in part) for part in (tr_sum, tr_n, va_sum, va_n)] + [not all(done.values())]))
        all_done = totals[4] == 0
        row = {
            "epoch": epoch + 1,
            "train_loss": float(totals[0] / max(totals[1], 1)),
            "val_loss": float(totals[2] / max(totals[3], 1)),
            "train_windows": float(totals[1]),  # (what the losses average over: groups' losses combine exactly)
            "val_windows": float(totals[3]),
            "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        rate = {} if isinstance(bar, LogLines) else {  # a log line says customers/s itself; tqdm's bar counts epochs
            "customers/s": f"{n_model * (epoch + 1 - start) / max(row['seconds'], 1e-9):,.0f}"}
        bar.set_postfix({"loss": f"{row['train_loss']:.4f}", "val": f"{row['val_loss']:.4f}", **rate})
        last = epoch + 1 == t.epochs or all_done
        if mngr is not None and ((epoch + 1) % t.checkpoint_every == 0 or last):
            # every process saves the same gathered tree; Orbax writes it once (process 0)
            checkpoint.save(mngr, epoch + 1, checkpoint_tree(_gather(everyone(), chunks), center, epoch + 1), {**meta, "history": history})
    bar.close()
    jax.block_until_ready(list(states.values()))
    seconds = time.perf_counter() - t0
    all_states = everyone()  # on CPU, views of the device buffers: no copy
    states.clear()
    if mngr is not None:
        if mngr.latest_step() is None:  # e.g. epochs = 0: still leave a run that predict.py can read
            checkpoint.save(mngr, start, checkpoint_tree(_gather(all_states, chunks), center, start), meta)
        mngr.wait_until_finished()

    # what the parameters each customer keeps answer on its validation windows (every process, every
    # chunk: a forward pass over a fifth of the windows, cheaper than gathering the answers)
    M = len(prep.windows.y)
    val_days, val_class = np.full(M, np.nan), np.full(M, -1, np.int64)
    val_sum, val_n = [], []
    for st, chunk in zip(all_states, chunks):
        s, n, out = _validate(compiled, kept_params(st, config), chunk, outputs=True)
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
    # the parameters each customer keeps, once (both names: kept_params reads either)
    kept = [st._replace(opt_state=(), params=kept_params(st, config), best_params=()) for st in all_states]
    del all_states
    state = _gather(kept, chunks)
    return Fit(state._replace(best_params=state.params), compiled, history, seconds_compile, seconds, epochs_run,
               np.concatenate(val_sum), np.concatenate(val_n), val_error, val_days, val_class,
               devices=jax.device_count(), processes=jax.process_count())


GROUP_CUSTOMERS = 8192  # customers whose training state is held at once (fit_groups)


def group_dirs(ckpt_dir: Path) -> list[Path]:
    """The checkpoint folders of a run's groups of customers (fit_groups): ckpt_dir itself with one group."""
    groups = sorted(ckpt_dir.glob("group-*")) if ckpt_dir.is_dir() else []
    return groups or [ckpt_dir]


def fit_groups(prep: Prepared, config: Config, ckpt_dir: Path | None = None, resume: bool = False, progress: bool = True,
               start_from: Any = None, desc: str = "train", group_customers: int | None = None,
               first_group: int | None = None) -> Fit:
    """`fit` on consecutive groups of chunks of about `group_customers` customers, one group after the
    other, each with its own checkpoints (ckpt_dir/group-NNN; ckpt_dir itself when there is one group).
    Customers train independently, so this gives the same models as one `fit` over every chunk; what
    changes is memory: a group's training state (parameters, RMSprop's, the best-keeping, and their copies
    at a checkpoint: ~36 KB a customer at 8 units) is held for that group only, not for every customer.
    history: per epoch, the losses over every group still training (each runs until its customers stop).
    first_group: number the groups' folders from it, even a single group's (a run that trains its customers
    in several calls, each after the last one's groups: predict.load_run reads every group-* folder)."""
    chunks = prep.chunks
    if not chunks:
        return fit(prep, config, ckpt_dir, resume, progress, start_from, desc)
    per = _per_group(prep, group_customers)
    groups = [chunks[i : i + per] for i in range(0, len(chunks), per)]
    if len(groups) == 1 and first_group is None:
        return fit(prep, config, ckpt_dir, resume, progress, start_from, desc)
    parts, val_days, val_class = [], None, None
    for g, part in enumerate(groups):
        where = ckpt_dir / f"group-{(first_group or 0) + g:03d}" if ckpt_dir is not None else None
        f = fit(dataclasses.replace(prep, chunks=part), config, where, resume, progress, start_from,
                f"{desc} {g + 1}/{len(groups)}" if len(groups) > 1 else desc)
        if val_days is None:
            val_days, val_class = f.val_days, f.val_class
        else:  # [M] over every window: each group's answers where it has them (not one [M] array per group)
            _put_answers(val_days, val_class, f)
        parts.append(dataclasses.replace(f, val_days=None, val_class=None))
        del f
        release_memory()  # the group's training state, freed: back to the system before the next group
    return _joined(parts, val_days, val_class)


def n_groups(prep: Prepared, group_customers: int | None = None) -> int:
    """How many groups fit_groups trains `prep`'s chunks in."""
    return -(-len(prep.chunks) // _per_group(prep, group_customers)) if prep.chunks else 0


def _per_group(prep: Prepared, group_customers: int | None) -> int:
    """Chunks per group: about `group_customers` customers (default GROUP_CUSTOMERS), at least one chunk."""
    return max(1, (group_customers or GROUP_CUSTOMERS) // len(prep.chunks[0].rows))


def joined(first: Fit, then: Fit) -> Fit:
    """One Fit of two calls' Fits over disjoint customers of one Prepared, in that order (as fit_groups joins groups)."""
    if first.state is None or then.state is None:
        return then if first.state is None else first
    val_days, val_class = first.val_days.copy(), first.val_class.copy()
    _put_answers(val_days, val_class, then)
    return _joined([first, then], val_days, val_class)


def _put_answers(val_days: np.ndarray, val_class: np.ndarray, f: Fit) -> None:
    has = ~np.isnan(f.val_days)
    val_days[has], val_class[has] = f.val_days[has], f.val_class[has]


def _joined(parts: list[Fit], val_days: np.ndarray, val_class: np.ndarray) -> Fit:
    """One Fit of consecutive groups' Fits (see fit_groups) and the validation answers of them all."""
    history = []
    for e in range(max(len(f.history) for f in parts)):
        rows = [f.history[e] for f in parts if e < len(f.history)]
        row = {"epoch": rows[0]["epoch"]}
        for loss, n in (("train_loss", "train_windows"), ("val_loss", "val_windows")):
            row[n] = sum(r.get(n, 1.0) for r in rows)  # (a checkpoint of an older version: each group alike)
            row[loss] = float(sum(r[loss] * r.get(n, 1.0) for r in rows) / max(row[n], 1))
        # the groups train one after another: the epoch ended in the last group that ran it
        last = max(i for i, f in enumerate(parts) if e < len(f.history))
        row["seconds"] = float(sum(f.seconds_train for f in parts[:last]) + parts[last].history[e]["seconds"])
        history.append(row)
    state = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *[f.state for f in parts])
    cat = lambda name: np.concatenate([getattr(f, name) for f in parts])  # noqa: E731
    return Fit(state, parts[-1].compiled, history, sum(f.seconds_compile for f in parts), sum(f.seconds_train for f in parts),
               max(f.epochs_run for f in parts), cat("val_sum"), cat("val_n"), cat("val_error"), val_days, val_class,
               parts[0].devices, parts[0].processes)


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


def checkpoint_tree(state: CustomerState, center: np.ndarray, epoch: int) -> dict[str, Any]:
    """The pytree a checkpoint holds (numpy leaves)."""
    return {"customers": state._asdict(), "center": center, "epoch": np.array(epoch)}


def _say(message: str) -> None:
    say(message)


def forward_each(config: Config, params: Any, rows: np.ndarray, x: np.ndarray, compiled: Compiled | None = None) -> np.ndarray:
    """Model outputs [n, K] of customers `rows` of `params` (leading customer axis), each on its own
    input window x [n, L, F]: C customers per compiled call."""
    if len(rows) == 0:
        return np.zeros((0, config.n_outputs), np.float32)
    if compiled is None:
        placement = Placement.local()
        compiled = compile_steps(config, placement.chunk_size(config.train.chunk_customers, len(rows)), config.train.batch_size,
                                 only=("evaluate",), n_features=x.shape[-1], half=True, placement=placement)
    C, B = compiled.shape[0], compiled.eval_batch
    pad = (-len(rows)) % C  # the last call is filled up with copies of the first customer
    rows, x = np.r_[rows, np.repeat(rows[:1], pad)], np.concatenate([x, np.repeat(x[:1], pad, 0)])
    y, mask = np.zeros((C, B) + config.target_shape, np.int32 if config.n_classes else np.float32), np.zeros((C, B), np.float32)
    outs = []
    for start in range(0, len(rows), C):
        part = rows[start : start + C]
        chunk_params = jax.tree_util.tree_map(lambda a: a[part], params)
        xb = np.zeros((C, B) + x.shape[1:], np.float32)
        xb[:, 0] = x[start : start + C]
        outs.append(np.asarray(compiled.evaluate(chunk_params, xb, y, mask)[2])[:, 0])
    return np.concatenate(outs)[: len(rows) - pad]
