"""The shared model's day answers are scaled to the question (pooled.question_scale): one factor, the
MAE-optimal one on the selection customers' questions, ~1 where a customer's latest gap is like its
earlier ones and above 1 where customers slow down, scoring better on the headline customers there."""

import json

import numpy as np
import pytest

from conftest import ROOT
from jaxlstm import load_config, predict, train_all
from jaxlstm.data.batching import customer_seeds
from jaxlstm.data.events import validate_events
from jaxlstm.data.intervals import histories
from jaxlstm.evaluate import questions
from jaxlstm.pooled import MIN_SCALE_QUESTIONS, fit_pooled, mae_scale
from jaxlstm.synth import make_iid_exponential, make_purchases


def test_mae_scale_is_the_minimiser():
    rng = np.random.default_rng(0)
    for _ in range(20):
        answer = rng.lognormal(2, 1, 200)
        target = answer * rng.lognormal(0.3, 0.8, 200)
        c = mae_scale(target, answer)
        # the minimum of a sum of |t - c a| lies at one of the ratios t / a: try them all
        grid = target / answer
        cost = np.abs(target[None, :] - grid[:, None] * answer[None, :]).sum(1)
        assert np.abs(target - c * answer).sum() == pytest.approx(cost.min(), rel=1e-12)
    answer = np.r_[np.ones(MIN_SCALE_QUESTIONS - 1), np.zeros(100)]  # too few answers > 0 to fit
    assert mae_scale(3 * np.ones_like(answer), answer) == 1.0


def _scaled_vs_not(log, cfg):
    hist = histories(validate_events(log))
    q = questions(hist, customer_seeds(hist.keys))
    model, _ = fit_pooled(hist, q, cfg, progress=False)
    h = ~q.selection
    scaled = model.answer(hist, q.owner[h], q.pos[h])[0]
    mae = lambda days: float(np.abs(days - q.target[h]).mean())  # noqa: E731
    return model.scale, mae(scaled), mae(scaled / model.scale)


def test_the_scale_follows_the_question():
    cfg = load_config(ROOT / "configs" / "tiny.toml", {"model.mode": "pooled", "train.pooled_epochs": 4,
                                                        "model.pooled_units": 8, "model.pooled_dense": [8]})
    # i.i.d. gaps: a customer's latest gap is like its earlier ones
    log, _ = make_iid_exponential(600, seed=3, visits=(3, 12))
    scale, _, _ = _scaled_vs_not(log, cfg)
    assert 0.85 < scale < 1.15, scale
    # customers who slow down as they age: the latest gap is longer than the model learned from the earlier ones
    log, _ = make_purchases(4000, seed=3, decay=1.5, mean_gap=25.0)
    scale, mae_scaled, mae_unscaled = _scaled_vs_not(log, cfg)
    print(f"purchases_drift: scale {scale:.2f}, headline MAE {mae_unscaled:.2f} -> {mae_scaled:.2f} days")
    assert scale > 1.2 and mae_scaled < 0.995 * mae_unscaled


def test_a_saved_run_answers_with_its_scale(tmp_path):
    log, _ = make_purchases(1500, seed=4, decay=1.5, mean_gap=25.0)
    cfg = load_config(ROOT / "configs" / "tiny.toml", {"model.mode": "pooled", "train.pooled_epochs": 2,
                                                        "train.survival_epochs": 0})
    pred = train_all(log, cfg, tmp_path / "run", progress=False)
    scale = json.loads((tmp_path / "run" / "answers.json").read_text())["pooled_scale"]
    assert scale != 1.0  # this log has enough questions to fit one
    again = predict(tmp_path / "run", log)
    np.testing.assert_allclose(again["predicted_interval_days"], pred["predicted_interval_days"], rtol=1e-6)
