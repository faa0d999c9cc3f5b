"""Loss, train step, evaluation and epoch-end bookkeeping for ONE customer, then their vmapped,
jitted forms. This is the only module (with predict) where the customer axis appears.

Randomness is per customer: its key is the run seed folded with the customer's 64-bit seed (a hash
of its id), so a customer's training is the same whether it is trained alone or with thousands of
others, in any chunk.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlstm.config import Config
from jaxlstm.distribution import survival_nll
from jaxlstm.model import Forecaster, build_model, dropout_scales, flatten, forward, init_params, mix32, param_unravel
from jaxlstm.placement import Placement


class CustomerState(NamedTuple):
    """Everything training keeps per customer (a leading [C] axis once vmapped)."""

    params: Any
    opt_state: Any
    best_params: Any
    best_loss: jax.Array  # [] float32, best validation loss so far (inf before the first)
    best_epoch: jax.Array  # [] int32, epoch whose parameters are in best_params (-1: none yet)
    bad_epochs: jax.Array  # [] int32, epochs since the validation loss last improved
    stopped: jax.Array  # [] bool, early-stopped or diverged: later steps leave it unchanged
    diverged: jax.Array  # [] bool, a step gave a non-finite loss or parameters (rolled back)
    epochs_trained: jax.Array  # [] int32, epochs completed before it stopped (see end_epoch)


class Batch(NamedTuple):
    """B windows of one customer: x [B, L, F] float32, y [B] (float32 or int32 class), mask [B]."""

    x: jax.Array
    y: jax.Array
    mask: jax.Array


def kept_params(state: CustomerState, config: Config) -> Any:
    """The parameters a customer answers with (see train.restore_best)."""
    return state.best_params if config.train.restore_best else state.params


def optimizer(config: Config) -> optax.GradientTransformation:
    t = config.train
    return optax.rmsprop(t.learning_rate, decay=t.rmsprop_decay, eps=t.rmsprop_eps)


def customer_key(seed: jax.Array, seed_pair: jax.Array) -> jax.Array:
    """Key of one customer: run seed [] int, seed_pair [2] uint32 (hi, lo of its id hash)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), seed_pair[0]), seed_pair[1])


def init_state(model: Forecaster, tx, config: Config, seed: jax.Array, seed_pair: jax.Array, n_features: int = 1) -> CustomerState:
    key = customer_key(seed, seed_pair)
    params = flatten(init_params(model, key, config.data.look_back, n_features, config.model.forget_bias))
    return CustomerState(
        params=params,
        opt_state=tx.init(params),
        best_params=params,
        best_loss=jnp.array(jnp.inf, jnp.float32),
        best_epoch=jnp.array(-1, jnp.int32),
        bad_epochs=jnp.array(0, jnp.int32),
        stopped=jnp.array(False),
        diverged=jnp.array(False),
        epochs_trained=jnp.array(0, jnp.int32),
    )


def window_losses(out: jax.Array, y: jax.Array, loss: str | tuple[str, float]) -> jax.Array:
    """[B] loss per window: cross-entropy over classes; squared, absolute or pinball error on the
    log-space regression target (loss ("pinball", tau)); or the survival head's negative
    log-likelihood (y [B, 3]: target, censored, where 0 days lies on the target's scale)."""
    loss, quantile = (loss, 0.5) if isinstance(loss, str) else loss
    if loss == "cross_entropy":
        return optax.softmax_cross_entropy_with_integer_labels(out, y)
    if loss == "survival":
        if y.shape[-1] != 3:  # jnp indexing would clamp a missing column silently
            raise ValueError(f"survival targets need 3 columns (target, censored, lower bound), got {y.shape}")
        return survival_nll(out, y[:, 0], y[:, 1], y[:, 2])
    err = out[:, 0] - y
    if loss == "pinball":  # tau per day predicted too short, 1 - tau per day too long: the tau-quantile
        return jnp.maximum(-quantile * err, (1.0 - quantile) * err)
    return jnp.abs(err) if loss == "mae" else err**2


def dropout_seed(seed_pair: jax.Array, seed: jax.Array, epoch: jax.Array, k: jax.Array) -> jax.Array:
    """[] uint32 dropout seed of one customer's k-th step of an epoch: a hash chain, no threefry."""
    h = mix32(seed.astype(jnp.uint32) ^ jnp.uint32(0x2545F491))
    for part in (seed_pair[0], seed_pair[1], epoch.astype(jnp.uint32), k.astype(jnp.uint32)):
        h = mix32(h ^ part) * jnp.uint32(0x9E3779B1)
    return mix32(h)


def loss_fn(params, model: Forecaster, unravel, batch: Batch, loss: str, dropout: jax.Array | None):
    """Masked mean loss over the real windows of one batch; also returns (sum, count).
    params: the flat [P] vector (see model.flatten), unravel its inverse.
    dropout: the step's dropout multipliers while training (see model.dropout_scales), None to evaluate."""
    out = forward(model, unravel(params), batch.x, dropout)
    per_window = window_losses(out, batch.y, loss) * batch.mask
    n = batch.mask.sum()
    return per_window.sum() / jnp.maximum(n, 1.0), (per_window.sum(), n)


def _all_finite(tree) -> jax.Array:
    # one fused reduction: compiles ~1 s faster than a per-leaf isfinite; a norm that overflows
    # float32 (|params| ~ 1e19) counts as diverged too, which it is
    return jnp.isfinite(optax.global_norm(tree))


def step_dropout(model: Forecaster, batch_size: int, seed_pair, seed, epoch, k) -> jax.Array:
    """[lstm_layers, B, units] dropout multipliers of one customer's k-th step of an epoch.

    Drawn by its own compiled call, not inside train_step: XLA fused into the step, the same hash
    ran ~8 ms per call instead of ~0.2 ms, doubling the step time (benchmarks/NOTES.md).
    """
    return dropout_scales(dropout_seed(seed_pair, seed, epoch, k), model.lstm_layers, batch_size, model.units, model.dropout)


def train_step(model, unravel, tx, loss: str, state: CustomerState, batch: Batch, drop: jax.Array):
    """One RMSprop step on one minibatch of one customer's windows, with dropout multipliers
    `drop` [lstm_layers, B, units] from `step_dropout` (unused when the model has no dropout).

    A customer with no real window in the batch, or already stopped, is left exactly as it was
    (optimizer state included), so padding steps are no-ops. A step whose loss or new parameters
    are non-finite is not applied: the customer keeps its last good parameters and is flagged.
    Returns (state, (loss_sum, n_windows)) with the metrics of applied steps only.
    """
    drop = drop if model.dropout > 0 else None
    (_, (loss_sum, n)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, model, unravel, batch, loss, drop)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    active = (n > 0) & ~state.stopped
    finite = jnp.isfinite(loss_sum) & _all_finite(params)
    take = active & finite
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(take, a, b), new, old)
    diverged = state.diverged | (active & ~finite)
    state = state._replace(
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        diverged=diverged,
        stopped=state.stopped | diverged,
    )
    return state, (jnp.where(take, loss_sum, 0.0), jnp.where(take, n, 0.0))


def evaluate(model, unravel, loss: str, params, batch: Batch):
    """Deterministic forward pass: (loss_sum, n_windows, outputs [B, K])."""
    out = forward(model, unravel(params), batch.x)
    per_window = window_losses(out, batch.y, loss) * batch.mask
    return per_window.sum(), batch.mask.sum(), out


def end_epoch(state: CustomerState, val_sum, val_n, epoch, patience: int) -> CustomerState:
    """Keep the best-validation parameters; stop a customer after `patience` epochs without
    improvement (0: never): one whose loss last improved at epoch k stops after epoch k + patience,
    having trained k + patience + 1 epochs. A stopped customer is left exactly as it is.

    A customer without validation windows (val_n == 0) has no evidence that an epoch helped: its
    best parameters are its latest, and it stops after `patience` epochs, as if its first epoch had
    been its best. Why this rule: it depends on the customer alone, so a customer trains the same
    alone or in any chunk (a rule borrowed from other customers, such as the run's median stopping
    epoch, would not); `patience` epochs is the least any validating customer trains, the
    conservative choice for histories too short to hold a window out (a model on one or two
    windows memorises them); and the compute it keeps a chunk alive for is bounded by `patience`."""
    active = ~state.stopped
    has_val = val_n > 0
    val_loss = val_sum / jnp.maximum(val_n, 1.0)
    improved = active & has_val & (val_loss < state.best_loss)
    take = improved | (active & ~has_val)  # parameters kept as this customer's best
    best_params = jax.tree_util.tree_map(lambda a, b: jnp.where(take, a, b), state.params, state.best_params)
    bad = jnp.where(improved, 0, state.bad_epochs + jnp.where(active, 1, 0))
    out_of_patience = active & (patience > 0) & (bad >= patience)
    return state._replace(
        best_params=best_params,
        best_loss=jnp.where(improved, val_loss, state.best_loss),
        best_epoch=jnp.where(take, epoch, state.best_epoch),
        bad_epochs=bad,
        stopped=state.stopped | out_of_patience,
        epochs_trained=state.epochs_trained + jnp.where(active, 1, 0).astype(jnp.int32),
    )


class Compiled(NamedTuple):
    """The vmapped, ahead-of-time compiled functions for one (C, B, L) shape."""

    init: Callable  # (seed [], seeds [C, 2]) -> CustomerState [C]
    dropout: Callable  # (seeds [C, 2], seed, epoch, k) -> drop [C, layers, B, units]
    train: Callable  # (state, x [C,B,L,F], y [C,B], mask [C,B], drop) -> state, (loss_sum [C], n [C])
    evaluate: Callable  # (params [C], x [C,Bv,L,F], y, mask) -> loss_sum [C], n [C], out [C, Bv, K]
    end_epoch: Callable  # (state, val_sum [C], val_n [C], epoch) -> state
    seconds: dict[str, float]  # compile time of each
    shape: tuple[int, int]  # (C customers, B windows) per call of train
    eval_batch: int  # Bv, windows per customer in one call of evaluate (B, or B / 2 with `half`)
    # with `half`: the same step on the first B / 2 windows of a minibatch (and the first B / 2 rows
    # of its dropout masks), for a chunk's last minibatch when no customer has more left than that
    train_half: Callable | None = None
    dropout_half: Callable | None = None


def stacked_state_shape(config: Config, n: int, n_features: int = 1) -> CustomerState:
    """Shapes and dtypes (no data) of the state of n customers: the abstract restore target."""
    model, tx = build_model(config), optimizer(config)
    v_init = jax.vmap(lambda s, p: init_state(model, tx, config, s, p, n_features), in_axes=(None, 0))
    return jax.eval_shape(v_init, jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((n, 2), jnp.uint32))


ALL = ("init", "dropout", "train", "evaluate", "end_epoch")
LIGHT = ("init", "dropout", "end_epoch", "dropout_half")  # compiled at a lower optimisation level


# Config fields no compiled program reads (their values come in as arguments, e.g. the seed and the
# batch size, or are used outside the programs). program_key sets them to their defaults, so runs
# that differ only in these share programs; every other field, a new one included, is part of the
# key, so a field that the step starts to read can never reuse a stale program (at worst a field
# listed here by mistake would be read at its default: tests/test_step_cache.py traces the
# programs with a config that records what is read and checks that none of these is).
NOT_READ_BY_PROGRAMS = {
    "data": ("id_col", "time_col", "floor_days", "split", "val_fraction", "within_days", "horizon_days", "time_format",
             "timezone", "merge_same_timestamp", "merge_same_day"),
    "model": ("mode",),
    "train": ("epochs", "batch_size", "restore_best", "seed", "chunk_customers", "pooled_epochs", "pooled_batch",
              "pooled_examples_per_epoch", "survival_epochs", "checkpoint_every", "compilation_cache", "shard_customers",
              "judge_customers", "pooled_recency", "pooled_refit"),
}


def program_key(config: Config) -> Config:
    """The config with every field that no compiled program reads set to its default: what the
    compiled programs depend on (with the shapes and devices, see compile_steps)."""
    def neutral(section: str):
        part = getattr(config, section)
        default = type(part)()
        return dataclasses.replace(part, **{k: getattr(default, k) for k in NOT_READ_BY_PROGRAMS[section]})

    return Config(data=neutral("data"), model=neutral("model"), train=neutral("train"))


def compile_steps(config: Config, C: int, B: int, only: tuple[str, ...] = ALL, n_features: int = 1,
                  half: bool = False, placement: Placement | None = None, data_parallel: bool = False) -> Compiled:
    """vmap the one-customer functions over C customers, jit and compile them ahead of time, so
    compile time is measured apart and a shape mismatch fails loudly instead of recompiling.
    Programs are reused within a process for configs that differ only in what they do not read
    (program_key), on the same visible devices and placement.

    placement: the devices the C customers are split over (C a multiple of their count; every
    per-customer argument and output sharded over them); default this process's first device.
    data_parallel (C = 1, a shared model): the minibatch is split over the placement's devices
    instead (B and the half width multiples of their count), the model's state is on every device
    and XLA sums the gradient across them: one model trained on all devices. Meant for GPUs: on
    CPU devices forced with --xla_force_host_platform_device_count that all-reduce can deadlock
    when the devices outnumber the cores (seen: 4 devices on 2 cores), so CPUs train it on one.

    half (B even): also compile the train step and dropout for B / 2 windows, and evaluate B / 2
    windows per call. A half step costs ~60% of a full one, and validation holds ~20% of a
    customer's windows, usually under half a batch (benchmarks/NOTES.md)."""
    half = half and B % 2 == 0
    only = tuple(only) + (("train_half", "dropout_half") if half and "train" in only else ())
    if data_parallel and C != 1:
        raise ValueError(f"data_parallel trains one model (C = 1), not {C}")
    return _compile_steps(program_key(config), C, B, only, n_features, B // 2 if half else B, tuple(jax.devices()),
                          placement or Placement.single(), data_parallel)


@functools.lru_cache(maxsize=8)  # repeated runs in one process (tests, notebooks) reuse programs
def _compile_steps(config: Config, C: int, B: int, only: tuple[str, ...], n_features: int, Bv: int,
                   devices: tuple = (), placement: Placement | None = None, data_parallel: bool = False) -> Compiled:
    """Bv: the half width (B / 2) or B; the half programs and evaluate use it. devices: every
    visible device (all processes'), part of the cache key only; placement: where the programs run."""
    placement = placement or Placement.single()
    spec = placement.spec if not data_parallel else (lambda shape, dtype, per_customer=True: jax.ShapeDtypeStruct(tuple(shape), dtype))
    model, tx, K, loss = build_model(config), optimizer(config), config.n_classes, config.loss
    loss = (loss, config.model.quantile) if loss == "pinball" else loss
    L, F = config.data.look_back, n_features
    unravel = param_unravel(model, L, F)
    y_dtype = jnp.int32 if K else jnp.float32
    seed = spec((), jnp.int32, per_customer=False)
    seeds = spec((C, 2), jnp.uint32)
    scalar = spec((), jnp.int32, per_customer=False)
    x = spec((C, B, L, F), jnp.float32)
    y = spec((C, B) + config.target_shape, y_dtype)
    mask = spec((C, B), jnp.float32)
    vec = spec((C,), jnp.float32)
    drop = spec((C, config.model.lstm_layers, B, config.model.units), jnp.float32)
    x_v = spec((C, Bv, L, F), jnp.float32)
    y_v = spec((C, Bv) + config.target_shape, y_dtype)
    mask_v = spec((C, Bv), jnp.float32)
    drop_v = spec((C, config.model.lstm_layers, Bv, config.model.units), jnp.float32)

    def v_init(seed, seeds):
        # lax.map, not vmap: a vmapped orthogonal init is one batched QR, and XLA:CPU's batched
        # LAPACK kernel can deadlock its own thread pool on a 2-core machine (seen at 256
        # customers x 16 units: all threads parked in ParallelBatchMap). One QR at a time is safe,
        # and init runs once per chunk.
        return jax.lax.map(lambda p: init_state(model, tx, config, seed, p, F), seeds)

    state = jax.tree_util.tree_map(lambda a: spec(a.shape, a.dtype), jax.eval_shape(v_init, seed, seeds))

    def v_dropout(seeds, seed, epoch, k):
        return jax.vmap(lambda sp: step_dropout(model, B, sp, seed, epoch, k))(seeds)

    def v_dropout_half(seeds, seed, epoch, k):
        # a window's mask depends on its position in the full minibatch only: the same mask whether
        # its customer's chunk takes the half step or the full one
        return v_dropout(seeds, seed, epoch, k)[:, :, :Bv]

    def v_train(state, x, y, mask, drop):
        return jax.vmap(lambda st, b, d: train_step(model, unravel, tx, loss, st, b, d))(state, Batch(x, y, mask), drop)

    def v_eval(params, x, y, mask):
        return jax.vmap(lambda p, b: evaluate(model, unravel, loss, p, b))(params, Batch(x, y, mask))

    def v_end(state, val_sum, val_n, epoch):
        return jax.vmap(lambda s, a, b: end_epoch(s, a, b, epoch, config.train.patience))(state, val_sum, val_n)

    # (function, abstract arguments, which are split over customers, donated arguments)
    jobs = {
        "init": (v_init, (seed, seeds), (False, True), ()),
        "dropout": (v_dropout, (seeds, seed, scalar, scalar), (True, False, False, False), ()),
        "train": (v_train, (state, x, y, mask, drop), (True,) * 5, (0,)),
        "evaluate": (v_eval, (state.params, x_v, y_v, mask_v), (True,) * 4, ()),
        "end_epoch": (v_end, (state, vec, vec, scalar), (True, True, True, False), (0,)),
        "train_half": (v_train, (state, x_v, y_v, mask_v, drop_v), (True,) * 5, (0,)),
        "dropout_half": (v_dropout_half, (seeds, seed, scalar, scalar), (True, False, False, False), ()),
    }
    seconds: dict[str, float] = {}

    # data_parallel: where each program's arguments and outputs put the minibatch axis (None: on
    # every device whole, e.g. the state; 1 for x [1, B, L, F], y, mask, outputs; 2 for dropout masks)
    batch_axes = {
        "init": ((None, None), None), "dropout": ((None,) * 4, 2), "dropout_half": ((None,) * 4, 2),
        "train": ((None, 1, 1, 1, 2), None), "train_half": ((None, 1, 1, 1, 2), None),
        "evaluate": ((None, 1, 1, 1), (None, None, 1)), "end_epoch": ((None,) * 4, None),
    }

    def build(name):
        fn, args, split, donate = jobs[name]
        t0 = time.perf_counter()
        if data_parallel:
            ins, outs = batch_axes[name]
            shard = lambda axis: placement.replicated if axis is None else placement.split(axis)  # noqa: E731
            plain = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)
            out_shardings = tuple(map(shard, outs)) if isinstance(outs, tuple) else shard(outs)
            lowered = jax.jit(fn, donate_argnums=donate, in_shardings=tuple(map(shard, ins)),
                              out_shardings=out_shardings).lower(*plain)
            return name, lowered, t0
        # each device runs the vmapped function on its own customers: the same program per device
        # whatever the device count, and no collectives
        fn = placement.shard_map(fn, split)
        lowered = jax.jit(fn, donate_argnums=donate, out_shardings=placement.sharding).lower(*args)  # tracing holds the GIL: one by one
        return name, lowered, t0

    def compile_(item):
        name, lowered, t0 = item
        # XLA compiles outside the GIL: the functions compile in parallel. The small ones and init
        # (once per chunk) run as fast at backend optimisation level 1 and compile ~30% faster
        light = {"xla_backend_optimization_level": 1} if name in LIGHT else None
        compiled = lowered.compile(compiler_options=light)
        seconds[name] = time.perf_counter() - t0
        return name, compiled

    lowered = [build(name) for name in jobs if name in only]
    with ThreadPoolExecutor(max_workers=len(lowered) or 1) as pool:
        out = dict.fromkeys(jobs) | dict(pool.map(compile_, lowered))
    return Compiled(**out, seconds=seconds, shape=(C, B), eval_batch=Bv)
