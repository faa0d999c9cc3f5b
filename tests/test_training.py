"""Training: vmapped == alone, determinism, learning, divergence isolation, resume."""

import dataclasses

import jax
import numpy as np
import pytest

from conftest import ROOT, visit_log
from jaxlstm import train_all
from jaxlstm.config import load_config
from jaxlstm.data.events import validate_events
from jaxlstm.errors import InputError
from jaxlstm.synth import make_customers
from jaxlstm.fit import _masks, fit, prepare


def _params_by_key(prep, result):
    keys = prep.hist.keys[prep.model_rows]
    leaves = jax.tree_util.tree_leaves(result.state.best_params)
    return {k: [leaf[i] for leaf in leaves] for i, k in enumerate(keys)}


def test_vmapped_training_equals_training_each_customer_alone(tiny):
    cfg = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, epochs=4, chunk_customers=8))
    events = validate_events(make_customers(12, seed=3, visits=(6, 40), one_off_share=0.0))
    prep = prepare(events, cfg)
    assert len(prep.chunks) == 2  # 12 customers in chunks of 8: a padded chunk too
    together = _params_by_key(prep, fit(prep, cfg, progress=False))
    B = cfg.train.batch_size
    half_alone = []
    for key, params in together.items():
        alone_prep = prepare(events[events["customer_id"] == key], cfg)
        half_alone.append(_masks(alone_prep.chunks[0].n_train, B, B // 2)[-1].shape[1] < B)
        alone = _params_by_key(alone_prep, fit(alone_prep, cfg, progress=False))[key]
        for a, b in zip(params, alone):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    # some customers take the half-width last step alone but the full one with longer customers
    assert any(half_alone) and not all(half_alone)
    assert all(_masks(c.n_train, B, B // 2)[-1].shape[1] == B for c in prep.chunks[:1])
    # and training did move the parameters away from the init (the comparison is not trivial)
    init = _params_by_key(prep, fit(prep, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=0)), progress=False))
    assert max(np.abs(a - b).max() for k in together for a, b in zip(together[k], init[k])) > 1e-3


def test_same_seed_same_predictions_other_seed_differs(tiny):
    events = make_customers(30, seed=1, visits=(5, 30))
    assert train_all(events, tiny, progress=False).equals(train_all(events, tiny, progress=False))  # auto: pooled too
    tiny = dataclasses.replace(tiny, model=dataclasses.replace(tiny.model, mode="per_customer"))  # own models answer
    a = train_all(events, tiny, progress=False)
    b = train_all(events, tiny, progress=False)
    assert a.equals(b)
    other = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, seed=7))
    c = train_all(events, other, progress=False)
    model = a["model"] == "per_customer"
    assert model.sum() > 0
    assert not np.allclose(a.loc[model, "predicted_interval_days"], c.loc[model, "predicted_interval_days"])


def _cyclic_log(n_customers, cycle, jitter, seed, visits=(25, 50)):
    rng = np.random.default_rng(seed)
    gaps = {}
    for i in range(n_customers):
        n = int(rng.integers(*visits))
        gaps[f"c{i}"] = np.resize(np.asarray(cycle, float), n) + rng.uniform(-jitter, jitter, n)
    return visit_log(gaps)


def _holdout_mae(events, cfg, look_back=3):
    """Train on all but each customer's last visit; MAE of the predicted last interval (every
    customer's own model answering, as in the classic recipe)."""
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, mode="per_customer"))
    events = events.sort_values(["customer_id", "timestamp"])
    last = events.groupby("customer_id").tail(1)
    history = events.drop(last.index)
    pred = train_all(history, cfg, progress=False).set_index("customer_id")
    truth = (last.set_index("customer_id")["timestamp"] - pred["last_visit"]).dt.total_seconds() / 86400
    assert (pred["model"] == "per_customer").all()
    return float(np.abs(pred["predicted_interval_days"] - truth).mean())


# the learning tests train the tiny model (one LSTM layer of 4 units, the programs the other tests compiled):
# if it learns the pattern, the training does (measured: weekly 0.26 days, alternating 3.41 untrained -> 0.53)
TINY = ROOT / "configs" / "tiny.toml"


def test_learns_a_weekly_customer_within_a_day():
    cfg = load_config(TINY, {"train.epochs": 30})
    mae = _holdout_mae(_cyclic_log(40, [7.0], 0.5, seed=0), cfg)
    assert mae < 1.0


def test_learns_an_alternating_pattern_a_mean_cannot():
    # gaps 3, 10, 3, 10, ...: always answering the customer's typical gap is off by ~3.5 days
    events = _cyclic_log(40, [3.0, 10.0], 0.3, seed=1)
    untrained = _holdout_mae(events, load_config(TINY, {"train.epochs": 0}))
    trained = _holdout_mae(events, load_config(TINY, {"train.epochs": 60}))
    assert untrained > 2.5
    assert trained < 1.0


def test_a_diverging_customer_changes_no_other(tiny):
    cfg = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, epochs=3, chunk_customers=8))
    events = validate_events(make_customers(8, seed=5, visits=(8, 30), one_off_share=0.0))
    clean = prepare(events, cfg)
    poisoned = prepare(events, cfg)
    victim = 3
    poisoned.chunks[0].x_train[victim, 0, 0, 0] = np.nan  # a non-finite input reaches one customer only
    a, b = fit(clean, cfg, progress=False), fit(poisoned, cfg, progress=False)
    for la, lb in zip(jax.tree_util.tree_leaves(a.state.params), jax.tree_util.tree_leaves(b.state.params)):
        others = np.arange(la.shape[0]) != victim
        assert np.array_equal(la[others], lb[others])  # bit-identical
        assert np.isfinite(lb[victim]).all()  # rolled back, not NaN
    assert b.state.diverged.tolist() == [i == victim for i in range(8)]
    assert not a.state.diverged.any()


def test_resume_equals_an_uninterrupted_run(tiny, tmp_path):
    events = make_customers(20, seed=2, visits=(6, 30))
    four = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, epochs=4))
    two = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, epochs=2))
    straight = train_all(events, four, tmp_path / "straight", progress=False)
    train_all(events, two, tmp_path / "split", progress=False)
    resumed = train_all(events, four, tmp_path / "split", resume=True, progress=False)
    assert resumed.equals(straight)
    with pytest.raises(InputError, match="other data or another config"):
        train_all(events.iloc[:-3], four, tmp_path / "split", resume=True, progress=False)
    # --resume where no run is yet starts from scratch (as --help says) and gives the same answers
    assert train_all(events, four, tmp_path / "empty", resume=True, progress=False).equals(straight)


@pytest.mark.parametrize("restore_best", [True, False])
def test_early_stopping_keeps_the_best_or_the_last_parameters(tiny, restore_best):
    cfg = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, epochs=12, patience=2, learning_rate=0.05,
                                                              restore_best=restore_best))
    events = validate_events(make_customers(16, seed=4, visits=(15, 40), one_off_share=0.0))
    prep = prepare(events, cfg)
    result = fit(prep, cfg, progress=False)
    # restore_best: the kept parameters score exactly the best validation loss recorded for each
    # customer; else they are the ones it stopped with, which score worse where it stopped early
    has_val = result.val_n > 0
    assert has_val.any()
    kept = result.val_sum[has_val] / result.val_n[has_val]
    assert result.state.stopped.any()  # patience 2 with a high learning rate stops someone
    assert (result.state.best_epoch[result.state.stopped] < 11).all()
    if restore_best:
        np.testing.assert_allclose(kept, result.state.best_loss[has_val], rtol=1e-5)
    else:
        stopped = result.state.stopped[has_val]
        assert (kept[stopped] > result.state.best_loss[has_val][stopped] * (1 + 1e-6)).all()


def test_window_losses_match_closed_forms():
    import jax.numpy as jnp

    from jaxlstm.step import window_losses

    out = jnp.array([[1.0], [-2.0]])
    y = jnp.array([0.5, 1.0])
    np.testing.assert_allclose(window_losses(out, y, "mse"), [0.25, 9.0])
    np.testing.assert_allclose(window_losses(out, y, "mae"), [0.5, 3.0])
    # pinball at tau = 0.25: predicting 0.5 too long costs 0.75 * 0.5, 3 too short costs 0.25 * 3
    np.testing.assert_allclose(window_losses(out, y, ("pinball", 0.25)), [0.375, 0.75])
    logits = jnp.array([[0.0, np.log(3.0)]])
    np.testing.assert_allclose(window_losses(logits, jnp.array([1]), "cross_entropy"), [-np.log(0.75)], rtol=1e-6)


def test_summary_features_by_hand():
    from jaxlstm.data.events import validate_events
    from jaxlstm.data.intervals import histories

    from conftest import visit_log

    hist = histories(validate_events(visit_log({"a": [1.0, 3.0], "b": [7.0]})), summary=True)
    z = np.log1p([1.0, 3.0, 7.0])
    expected = [
        [np.log1p(1) / 4, z[0], 0.0, np.log1p(1.0) / 4],
        [np.log1p(2) / 4, z[:2].mean(), z[:2].std(), np.log1p(4.0) / 4],
        [np.log1p(1) / 4, z[2], 0.0, np.log1p(7.0) / 4],
    ]
    np.testing.assert_allclose(hist.extras, expected, rtol=1e-6, atol=1e-7)


def test_pinball_quantiles_order_the_answers(tiny):
    from jaxlstm import load_config, train_all
    from jaxlstm.synth import make_customers

    from conftest import ROOT

    events = make_customers(60, seed=2, visits=(8, 20), kinds=("bursty",), one_off_share=0.0)
    answers = {}
    for q in (0.2, 0.8):
        cfg = load_config(ROOT / "configs" / "tiny.toml", {"model.mode": "pooled", "model.loss": "pinball",
                                                            "model.quantile": q, "train.pooled_epochs": 8,
                                                            "train.survival_epochs": 0})
        answers[q] = train_all(events, cfg, progress=False)["predicted_interval_days"].to_numpy()
    # bursty gaps (same-day bursts, long pauses): the 80% quantile sits far above the 20% one
    assert np.median(answers[0.8]) > 3 * np.median(answers[0.2])


def test_default_toml_states_the_code_defaults():
    from jaxlstm.config import Config, load_config

    from conftest import ROOT

    assert load_config(ROOT / "configs" / "default.toml") == Config()


def test_customer_seeds_are_blake2b_of_the_id_text():
    from jaxlstm.data.batching import customer_seeds

    # BLAKE2b, 8-byte digest, read little-endian: `printf c0 | b2sum -l 64` prints 7a981e556bd5d63f
    seeds = customer_seeds(np.array(["c0", "42", "Zoë", ""]))
    assert seeds.dtype == np.uint64
    assert [int(s) for s in seeds] == [0x3FD6D56B551E987A, 0x7A686626F03CB457, 0x9A89EF9506B79F78, 0xB4B2797457A0A6E4]
