"""The shared models' inputs built a minibatch at a time (pooled.example_inputs) are the inputs
built for every example at once, bit for bit, and train the same model."""

import jax
import numpy as np
import pandas as pd

from conftest import ROOT
from jaxlstm import load_config
from jaxlstm.data.batching import customer_seeds
from jaxlstm.data.events import validate_events
from jaxlstm.data.intervals import Histories, histories, prefix_mean
from jaxlstm.data.windows import encode, to_bins
from jaxlstm.evaluate import questions
from jaxlstm import pooled
from jaxlstm.pooled import N_FEATURES, Prefix, customer_weights, example_inputs, features, fit_pooled, train_shared
from jaxlstm.synth import make_customers


def features_at_once(hist: Histories, owner, pos, look_back, center):
    """The definition before this change (commit d50ec35), kept as the reference: every feature of
    every example in float64, stacked, then cast."""
    L = look_back
    enc = encode(hist.intervals).astype(np.float64)
    start = hist.offsets[owner]
    back = pos[:, None] - L + np.arange(L)[None, :]
    present = back >= 0
    idx = np.clip(start[:, None] + back, 0, max(len(enc) - 1, 0))
    values = np.where(present, (enc[idx] if len(enc) else 0.0) - center, 0.0)
    mean = prefix_mean(enc, hist.offsets, owner, pos) if len(enc) else np.full(len(pos), np.nan)
    level = np.where(pos > 0, mean - center, 0.0)
    spread = np.sqrt(np.maximum(prefix_mean(enc**2, hist.offsets, owner, pos) - mean**2, 0.0)) if len(enc) else mean
    spread = np.where(pos > 1, spread, 0.0)
    age = np.where(pos > 0, prefix_mean(hist.intervals, hist.offsets, owner, pos) * pos, 0.0) if len(enc) else np.zeros(len(pos))
    per_customer = [np.log1p(pos) / 4.0, level, np.log1p(np.maximum(age, 0.0)) / 4.0, spread]
    x = np.stack([values, present.astype(np.float64), *(np.broadcast_to(f[:, None], (len(pos), L)) for f in per_customer)], -1)
    if hist.n_extra:
        extra = np.where(present[..., None], hist.extras[idx], 0.0) if len(enc) else np.zeros((len(pos), L, hist.n_extra))
        x = np.concatenate([x, extra], -1)
    return x.astype(np.float32)


def _log(n=60, seed=3) -> pd.DataFrame:
    """Synthetic customers with an extra column, plus a one-visit and a two-visit customer."""
    events = make_customers(n, seed=seed, visits=(2, 40))
    events["amount"] = np.random.default_rng(seed).uniform(-50, 500, len(events))
    t = pd.Timestamp("2023-03-01")
    few = pd.DataFrame({"customer_id": ["zz_one", "zz_two", "zz_two"], "timestamp": [t, t, t + pd.Timedelta(days=9)],
                        "amount": [1.0, 2.0, 3.0]})
    few["customer_id"] = few["customer_id"].astype(events["customer_id"].dtype)
    return pd.concat([events[["customer_id", "timestamp", "amount"]], few], ignore_index=True)


def _every_example(hist: Histories):
    """(owner, pos) of every interval and every customer's next, unseen one (pos = its count)."""
    k = np.diff(hist.offsets)
    owner = np.repeat(np.arange(hist.n_customers), k + 1)
    pos = np.arange(len(owner)) - np.r_[0, np.cumsum(k + 1)][owner]
    return owner, pos


def test_features_on_slices_equal_the_features_of_every_example_at_once():
    for extra in ((), ("amount",)):
        hist = histories(validate_events(_log(), extra_cols=extra), extra_cols=extra, summary=bool(extra))
        owner, pos = _every_example(hist)
        assert pos.max() >= 30 and (pos == 0).any() and hist.n_extra == (len(extra) + 4 if extra else 0)
        for look_back, center in ((3, 2.1), (8, np.float32(1.7))):
            ref = features_at_once(hist, owner, pos, look_back, center)
            assert ref.shape == (len(owner), look_back, N_FEATURES + hist.n_extra)
            whole = features(hist, owner, pos, look_back, center)
            assert whole.dtype == np.float32
            np.testing.assert_array_equal(whole, ref)
            # the minibatch path: shuffled slices of rows, one Prefix for all of them
            rows = np.random.default_rng(0).permutation(len(owner))
            inputs = example_inputs(hist, owner, pos, look_back, center)
            parts = np.concatenate([inputs(rows[s : s + 37]) for s in range(0, len(rows), 37)])
            np.testing.assert_array_equal(parts, ref[rows])
            assert inputs(np.zeros(0, np.int64)).shape == (0, look_back, ref.shape[-1])


def test_features_without_intervals():
    hist = histories(validate_events(pd.DataFrame({"customer_id": ["a", "b"],
                                                   "timestamp": pd.to_datetime(["2023-01-01", "2023-01-05"])})))
    owner, pos = np.arange(2), np.zeros(2, np.int64)
    np.testing.assert_array_equal(features(hist, owner, pos, 3, 1.5), features_at_once(hist, owner, pos, 3, 1.5))
    prefix = Prefix.of(hist)
    assert prefix.cum_enc.shape == (1,) and features(hist, owner, pos, 3, 1.5, prefix)[..., 1].sum() == 0


def test_fit_pooled_trains_as_on_the_inputs_built_at_once():
    cfg = load_config(ROOT / "configs" / "tiny.toml", {"model.mode": "pooled", "train.pooled_epochs": 3,
                                                       "train.pooled_batch": 64, "data.bins": [3, 7, 14, 30]})
    hist = histories(validate_events(_log(40, seed=5)))
    q = questions(hist, customer_seeds(hist.keys))
    model, history = fit_pooled(hist, q, cfg, progress=False)
    # the path before: every example's inputs first, minibatches indexed out of them (fit_pooled's own setup)
    owner, pos, _ = pooled.examples(hist, np.diff(hist.offsets))
    train = q.train_intervals(hist)
    train_rows = np.flatnonzero(train)
    val_rows = (hist.offsets[q.owner] + q.pos)[q.selection]
    center = float(encode(hist.intervals[train_rows]).mean())
    assert model.center == center
    x = features_at_once(hist, owner, pos, cfg.data.look_back, center)
    y = to_bins(hist.intervals, cfg.data.bins)
    weight = customer_weights(owner, pos, train, cfg.train.pooled_recency)
    params, _, history_before = train_shared(cfg, lambda rows: x[rows], y, train_rows, val_rows,
                                             cfg.train.pooled_epochs, "before", False, weight)
    assert len(history) == len(history_before) == 3 and history == history_before
    leaves_new = jax.tree_util.tree_leaves(model.params)
    leaves_old = jax.tree_util.tree_leaves(params)
    assert len(leaves_new) == len(leaves_old) > 0
    for a, b in zip(leaves_new, leaves_old):
        np.testing.assert_array_equal(a, b)
    # and the answers: built per forward batch against the inputs of every example at once
    ask_owner, ask_pos = np.arange(hist.n_customers), np.diff(hist.offsets)
    out = pooled.shared_outputs(model, hist, ask_owner, ask_pos)
    x_ask = features_at_once(hist, ask_owner, ask_pos, cfg.data.look_back, center)
    compiled = model.compiled
    out_before = pooled._outputs(compiled, model.params, lambda rows: x_ask[rows], len(ask_pos), cfg.train.pooled_batch, cfg)
    assert out.shape == (hist.n_customers, len(cfg.data.bins) + 1)
    np.testing.assert_array_equal(out, out_before)
