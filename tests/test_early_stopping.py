"""Early stopping ends: exact patience and best epochs per customer, customers without validation
windows stop after `patience` epochs, padding never keeps a chunk training, stopped chunks take no
steps, and the run stops once every customer has."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from conftest import visit_log
from jaxlstm import fit as fit_module
from jaxlstm.data.events import validate_events
from jaxlstm.fit import _masks, fit, prepare
from jaxlstm.step import CustomerState, end_epoch


def _state(n: int) -> CustomerState:
    zero = jnp.zeros(n, jnp.int32)
    return CustomerState(params=jnp.zeros((n, 1)), opt_state=(), best_params=jnp.zeros((n, 1)),
                         best_loss=jnp.full(n, jnp.inf), best_epoch=zero - 1, bad_epochs=zero,
                         stopped=jnp.zeros(n, bool), diverged=jnp.zeros(n, bool), epochs_trained=zero)


def test_end_epoch_stops_exactly_patience_epochs_after_the_best():
    patience, epochs = 3, 12
    # validation loss per epoch of five customers (columns)
    k = 4  # customer 0 improves until epoch k, then gets worse
    losses = np.array([
        [5.0 - e if e <= k else 1.0 + e for e in range(epochs)],
        [5.0 - e for e in range(epochs)],  # always improves: never stops
        [2.0] * epochs,  # never improves after its first epoch (equal is no improvement)
        [0.0] * epochs,  # no validation windows (val_n = 0)
        [3.0, 1.0, 2.0, 1.5, 0.5, 0.6, 0.7, 0.8, 0.9, 0.4, 0.3, 0.2],  # improves again within patience
    ], np.float32).T
    val_n = np.array([2.0, 2.0, 2.0, 0.0, 2.0], np.float32)
    step = jax.jit(jax.vmap(lambda s, a, b, e: end_epoch(s, a, b, e, patience), in_axes=(0, 0, 0, None)))
    state = _state(5)
    for epoch in range(epochs):
        # this epoch's parameters: the epoch number, so best_params shows which epoch was kept
        state = state._replace(params=jnp.where(state.stopped[:, None], state.params, float(epoch)))
        state = step(state, jnp.asarray(losses[epoch] * val_n), jnp.asarray(val_n), jnp.int32(epoch))
    stopped, trained = np.asarray(state.stopped), np.asarray(state.epochs_trained)
    best_epoch, best_params = np.asarray(state.best_epoch), np.asarray(state.best_params)[:, 0]
    assert stopped.tolist() == [True, False, True, True, True]
    # best at epoch k: stops after epoch k + patience, having trained k + patience + 1 epochs
    assert best_epoch.tolist() == [k, epochs - 1, 0, patience - 1, 4]
    assert trained.tolist() == [k + patience + 1, epochs, patience + 1, patience, 4 + patience + 1]
    np.testing.assert_array_equal(best_params, best_epoch)  # the best epoch's parameters, exactly
    np.testing.assert_allclose(np.asarray(state.best_loss), [5.0 - k, 5.0 - (epochs - 1), 2.0, np.inf, 0.5])
    # patience 0: nobody stops, a customer without validation keeps its latest parameters
    never = jax.vmap(lambda s, a, b: end_epoch(s, a, b, jnp.int32(0), 0))(_state(5), jnp.asarray(losses[0] * val_n),
                                                                          jnp.asarray(val_n))
    assert not np.asarray(never.stopped).any()


def _log():
    """Three customers with 20 intervals (validation windows), one with 4 (one window, none to
    validate), and two more with 4 that will diverge: chunks of 4 put the last two, with two
    padding customers, in a chunk of their own."""
    rng = np.random.default_rng(0)
    gaps = {f"long{i}": rng.uniform(2, 9, 20) for i in range(3)}
    gaps |= {f"short{i}": rng.uniform(2, 9, 4) for i in range(3)}
    return validate_events(visit_log(gaps))


def test_the_run_ends_when_every_customer_has_stopped(tiny, monkeypatch, tmp_path):
    patience = 3
    # a learning rate so small the parameters never move: no validation loss ever improves on the first
    cfg = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, epochs=20, patience=patience, chunk_customers=4,
                                                              learning_rate=1e-30))
    prep = prepare(_log(), cfg)
    assert len(prep.chunks) == 2 and prep.chunks[1].real.tolist() == [True, True, False, False]
    keys = prep.hist.keys[prep.model_rows]
    poisoned = [i for i, r in enumerate(prep.chunks[1].rows) if r >= 0]
    for i in poisoned:  # every real customer of the second chunk diverges in its first step
        prep.chunks[1].x_train[i, 0, 0, 0] = np.nan

    calls = []  # per train step: (does it train the poisoned chunk: NaN inputs, stopped [C] before it)
    real_compile = fit_module.compile_steps

    def counting(*args, **kwargs):
        compiled = real_compile(*args, **kwargs)

        def wrap(train):
            def step(state, x, y, mask, drop):
                calls.append((bool(np.isnan(x).any()), np.array(state.stopped)))
                return train(state, x, y, mask, drop)
            return step

        return compiled._replace(train=wrap(compiled.train), train_half=wrap(compiled.train_half))

    monkeypatch.setattr(fit_module, "compile_steps", counting)
    result = fit(prep, cfg, ckpt_dir=tmp_path / "ckpt", progress=False)

    # customers with validation windows: best at epoch 0, stopped after epoch `patience`
    st = result.state
    has_val = result.val_n > 0
    assert has_val.sum() == 3 and (st.best_epoch[has_val] == 0).all()
    assert (st.epochs_trained[has_val] == patience + 1).all() and st.stopped.all()
    no_val = ~has_val & ~st.diverged
    assert no_val.sum() == 1 and st.epochs_trained[no_val].tolist() == [patience] and st.best_epoch[no_val].tolist() == [patience - 1]
    assert st.diverged.tolist() == [k.startswith("short") and i >= 4 for i, k in enumerate(keys)]
    assert (st.epochs_trained[st.diverged] == 0).all()
    # the run stopped with its last customer: patience + 1 epochs of 20, and said so
    assert result.epochs_run == patience + 1 and len(result.history) == patience + 1
    # the diverged chunk trained one epoch only (its padding stopped from the start), the other until it stopped
    B, Bv = cfg.train.batch_size, cfg.train.batch_size // 2
    steps = [len(_masks(c.n_train, B, Bv)) for c in prep.chunks]
    second = [stopped for poisoned, stopped in calls if poisoned]
    assert len(calls) == steps[0] * (patience + 1) + steps[1] * 1
    assert len(second) == steps[1] and all(stopped[2:].all() for stopped in second)
    # resuming a run that ended early runs nothing and keeps every customer as it was
    again = fit(prep, cfg, ckpt_dir=tmp_path / "ckpt", resume=True, progress=False)
    assert again.epochs_run == 0 and again.history == result.history
    for a, b in zip(jax.tree_util.tree_leaves(result.state), jax.tree_util.tree_leaves(again.state)):
        np.testing.assert_array_equal(a, b)
