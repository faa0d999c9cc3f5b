"""Loss, train step, evaluation and epoch-end bookkeeping for ONE customer, then their vmapped,
jitted forms. This is the only module (with predict) where the customer axis appears.

Randomness is per customer: its key is the run seed folded with the customer's 64-bit seed (a hash
of its id), so a customer's training is the same whether it is trained alone or with thousands of
others, in any chunk.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlstm.config import Config
from jaxlstm.model import Forecaster, build_model, init_params

_INIT, _DROPOUT = 0, 1  # salts: which stream of a customer's randomness


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


class Batch(NamedTuple):
    """B windows of one customer: x [B, L, F] float32, y [B] (float32 or int32 class), mask [B]."""

    x: jax.Array
    y: jax.Array
    mask: jax.Array


def optimizer(config: Config) -> optax.GradientTransformation:
    t = config.train
    return optax.rmsprop(t.learning_rate, decay=t.rmsprop_decay, eps=t.rmsprop_eps)


def customer_key(seed: jax.Array, seed_pair: jax.Array) -> jax.Array:
    """Key of one customer: run seed [] int, seed_pair [2] uint32 (hi, lo of its id hash)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), seed_pair[0]), seed_pair[1])


def init_state(model: Forecaster, tx, config: Config, seed: jax.Array, seed_pair: jax.Array) -> CustomerState:
    key = jax.random.fold_in(customer_key(seed, seed_pair), _INIT)
    params = init_params(model, key, config.data.look_back, 1, config.model.forget_bias)
    return CustomerState(
        params=params,
        opt_state=tx.init(params),
        best_params=params,
        best_loss=jnp.array(jnp.inf, jnp.float32),
        best_epoch=jnp.array(-1, jnp.int32),
        bad_epochs=jnp.array(0, jnp.int32),
        stopped=jnp.array(False),
        diverged=jnp.array(False),
    )


def window_losses(out: jax.Array, y: jax.Array, n_classes: int) -> jax.Array:
    """[B] loss per window: squared error on the (log-space) regression target, or cross-entropy."""
    if n_classes:
        return optax.softmax_cross_entropy_with_integer_labels(out, y)
    return (out[:, 0] - y) ** 2


def loss_fn(params, model: Forecaster, batch: Batch, n_classes: int, key: jax.Array | None):
    """Masked mean loss over the real windows of one batch; also returns (sum, count)."""
    train = key is not None
    out = model.apply({"params": params}, batch.x, train=train, rngs={"dropout": key} if train else None)
    per_window = window_losses(out, batch.y, n_classes) * batch.mask
    n = batch.mask.sum()
    return per_window.sum() / jnp.maximum(n, 1.0), (per_window.sum(), n)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)]))


def train_step(model, tx, n_classes, state: CustomerState, batch: Batch, seed_pair, seed, epoch, k):
    """One RMSprop step on one minibatch of one customer's windows.

    A customer with no real window in the batch, or already stopped, is left exactly as it was
    (optimizer state included), so padding steps are no-ops. A step whose loss or new parameters
    are non-finite is not applied: the customer keeps its last good parameters and is flagged.
    Returns (state, (loss_sum, n_windows)) with the metrics of applied steps only.
    """
    key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(customer_key(seed, seed_pair), _DROPOUT), epoch), k)
    (_, (loss_sum, n)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, model, batch, n_classes, key)
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


def evaluate(model, n_classes, params, batch: Batch):
    """Deterministic forward pass: (loss_sum, n_windows, outputs [B, K])."""
    out = model.apply({"params": params}, batch.x, train=False)
    per_window = window_losses(out, batch.y, n_classes) * batch.mask
    return per_window.sum(), batch.mask.sum(), out


def end_epoch(state: CustomerState, val_sum, val_n, epoch, patience: int) -> CustomerState:
    """Keep the best-validation parameters; stop a customer after `patience` epochs without
    improvement (0: never). A customer without validation windows keeps its latest parameters."""
    val_loss = val_sum / jnp.maximum(val_n, 1.0)
    improved = ~state.stopped & ((val_n == 0) | (val_loss < state.best_loss))
    best_params = jax.tree_util.tree_map(lambda a, b: jnp.where(improved, a, b), state.params, state.best_params)
    bad = jnp.where(improved, 0, state.bad_epochs + jnp.where(state.stopped, 0, 1))
    out_of_patience = (patience > 0) & (bad >= patience)
    return state._replace(
        best_params=best_params,
        best_loss=jnp.where(improved & (val_n > 0), val_loss, state.best_loss),
        best_epoch=jnp.where(improved, epoch, state.best_epoch),
        bad_epochs=bad,
        stopped=state.stopped | out_of_patience,
    )


class Compiled(NamedTuple):
    """The vmapped, ahead-of-time compiled functions for one (C, B, L) shape."""

    init: Callable  # (seed [], seeds [C, 2]) -> CustomerState [C]
    train: Callable  # (state, x [C,B,L,F], y [C,B], mask [C,B], seeds, seed, epoch, k) -> state, metrics
    evaluate: Callable  # (params [C], x, y, mask) -> loss_sum [C], n [C], out [C, B, K]
    end_epoch: Callable  # (state, val_sum [C], val_n [C], epoch) -> state
    seconds: dict[str, float]  # compile time of each
    shape: tuple[int, int]  # (C customers, B windows) per call


def stacked_state_shape(config: Config, n: int) -> CustomerState:
    """Shapes and dtypes (no data) of the state of n customers: the abstract restore target."""
    model, tx = build_model(config), optimizer(config)
    v_init = jax.vmap(lambda s, p: init_state(model, tx, config, s, p), in_axes=(None, 0))
    return jax.eval_shape(v_init, jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((n, 2), jnp.uint32))


ALL = ("init", "train", "evaluate", "end_epoch")


def compile_steps(config: Config, C: int, B: int, only: tuple[str, ...] = ALL) -> Compiled:
    """vmap the one-customer functions over C customers, jit and compile them ahead of time, so
    compile time is measured apart and a shape mismatch fails loudly instead of recompiling.
    Programs are reused within a process for configs that differ only in what they do not depend on."""
    d, t = config.data, config.train
    key = Config(
        data=type(d)(look_back=d.look_back, bins=d.bins),
        model=config.model,
        train=type(t)(learning_rate=t.learning_rate, rmsprop_decay=t.rmsprop_decay, rmsprop_eps=t.rmsprop_eps, patience=t.patience),
    )
    return _compile_steps(key, C, B, tuple(only))


@functools.lru_cache(maxsize=8)  # repeated runs in one process (tests, notebooks) reuse programs
def _compile_steps(config: Config, C: int, B: int, only: tuple[str, ...]) -> Compiled:
    model, tx, K = build_model(config), optimizer(config), config.n_classes
    L, F = config.data.look_back, 1
    y_dtype = jnp.int32 if K else jnp.float32
    seed = jax.ShapeDtypeStruct((), jnp.int32)
    seeds = jax.ShapeDtypeStruct((C, 2), jnp.uint32)
    scalar = jax.ShapeDtypeStruct((), jnp.int32)
    x = jax.ShapeDtypeStruct((C, B, L, F), jnp.float32)
    y = jax.ShapeDtypeStruct((C, B), y_dtype)
    mask = jax.ShapeDtypeStruct((C, B), jnp.float32)
    vec = jax.ShapeDtypeStruct((C,), jnp.float32)

    v_init = jax.vmap(lambda s, p: init_state(model, tx, config, s, p), in_axes=(None, 0))
    state = jax.eval_shape(v_init, seed, seeds)

    def v_train(state, x, y, mask, seeds, seed, epoch, k):
        step = lambda st, b, sp: train_step(model, tx, K, st, b, sp, seed, epoch, k)
        return jax.vmap(step)(state, Batch(x, y, mask), seeds)

    def v_eval(params, x, y, mask):
        return jax.vmap(lambda p, b: evaluate(model, K, p, b))(params, Batch(x, y, mask))

    def v_end(state, val_sum, val_n, epoch):
        return jax.vmap(lambda s, a, b: end_epoch(s, a, b, epoch, config.train.patience))(state, val_sum, val_n)

    seconds, out = {}, dict.fromkeys(ALL)
    for name, fn, args, donate in (
        ("init", v_init, (seed, seeds), ()),
        ("train", v_train, (state, x, y, mask, seeds, seed, scalar, scalar), (0,)),
        ("evaluate", v_eval, (state.params, x, y, mask), ()),
        ("end_epoch", v_end, (state, vec, vec, scalar), (0,)),
    ):
        if name not in only:
            continue
        t0 = time.perf_counter()
        out[name] = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
        seconds[name] = time.perf_counter() - t0
    return Compiled(**out, seconds=seconds, shape=(C, B))
