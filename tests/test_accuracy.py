"""Answers against simple baselines: the holdout and baselines by hand, and `auto` on a true future
interval (generated beyond the training log) where a baseline is optimal and where history has signal."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, script, visit_log
from jaxlstm import load_config, predict, train_all
from jaxlstm.data.batching import customer_seeds
from jaxlstm.data.events import validate_events
from jaxlstm.data.intervals import histories
from jaxlstm.errors import InputError
from jaxlstm.evaluate import BASELINES, baselines, beats, choose, customer_baselines, questions
from jaxlstm.synth import make_customers


def test_questions_and_baselines_by_hand():
    gaps = {"long": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], "short": [4, 6], "pair": [5], "single": []}
    hist = histories(validate_events(visit_log(gaps)))
    assert list(hist.keys) == ["long", "pair", "short", "single"]  # sorted ids
    q = questions(hist, customer_seeds(hist.keys))
    # one question per customer with an interval: its last one, answered from the ones before it
    assert q.owner.tolist() == [0, 1, 2] and q.pos.tolist() == [10, 0, 1] and q.target.tolist() == [11, 5, 6]
    assert q.visits(hist).tolist() == [11, 1, 2]
    b = baselines(hist, q)
    seen = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 4]  # every interval but the questions
    pop = float(np.median(seen))
    assert b["customer_mean"].tolist() == [5.5, pop, 4.0]
    assert b["customer_median"].tolist() == [5.5, pop, 4.0]
    assert b["customer_last"].tolist() == [10.0, pop, 4.0]
    assert b["population_median"].tolist() == [pop] * 3
    assert b["population_latest_median"].tolist() == [7.0] * 3  # the latest of long (10) and short (4)
    assert b["constant"][0] == pytest.approx(np.expm1(np.mean(np.log1p(seen))))
    full = customer_baselines(hist)
    assert full["customer_last"].tolist() == [11.0, 5.0, 6.0, float(np.median(hist.intervals))]
    # the selection half is a stable function of the id alone, about half of the customers
    keys = np.array([f"c{i}" for i in range(4000)])
    many = histories(validate_events(visit_log({k: [1.0] for k in keys})))
    sel = questions(many, customer_seeds(many.keys)).selection
    assert 0.45 < sel.mean() < 0.55
    assert (questions(many, customer_seeds(many.keys)).selection == sel).all()


def test_the_noise_test_lets_pure_noise_through_at_its_level():
    rng = np.random.default_rng(0)
    passed = {n: np.mean([beats(rng.normal(size=n), rng.normal(size=n)) for _ in range(2000)]) for n in (2, 3, 30)}
    assert all(p <= 0.035 for p in passed.values()), passed  # one-sided 2.5%: a normal quantile let ~15% through at n = 2
    assert beats(np.full(50, 1.0), np.full(50, 2.0)) and not beats(np.full(50, 2.0), np.full(50, 1.0))


def test_the_shared_model_answers_unless_the_population_median_beats_it_beyond_noise():
    rng = np.random.default_rng(0)
    visits = rng.integers(1, 20, 400)
    target = rng.exponential(10.0, 400)
    median = np.full(400, 7.0)
    close = np.exp(np.log(median) + rng.normal(0, 0.05, 400))  # as good as the median, within noise
    chosen, own = choose(visits, target, {"population_median": median, "pooled": close}, None)
    assert set(chosen.values()) == {"pooled"} and own == []
    far = np.full(400, 40.0)  # far worse than the median, beyond noise
    chosen, _ = choose(visits, target, {"population_median": median, "pooled": far}, None)
    assert set(chosen.values()) == {"population_median"}
    chosen, _ = choose(visits, target, {"population_median": median}, None)  # no shared model
    assert set(chosen.values()) == {"population_median"}
    broken = close.copy()
    broken[3] = np.nan  # a shared model with a NaN answer is nobody's default
    chosen, _ = choose(visits, target, {"population_median": median, "pooled": broken}, None)
    assert set(chosen.values()) == {"population_median"}


def test_own_models_are_rarely_chosen_on_pure_noise():
    rng = np.random.default_rng(1)
    noise, _ = _logs(rng, 300, (6, 30), exponential)
    cfg = load_config(ROOT / "configs" / "tiny.toml", {"train.epochs": 20, "train.pooled_epochs": 3, "train.survival_epochs": 0})
    pred = train_all(visit_log(noise), cfg, progress=False)
    assert (pred["model"] == "per_customer").mean() <= 0.05


def _logs(rng, n, visits, draw_gaps):
    """(training log, true next gap per customer): each customer's log plus one more gap after it."""
    gaps, future = {}, {}
    for i in range(n):
        g = draw_gaps(rng, int(rng.integers(*visits)))
        gaps[f"{draw_gaps.__name__}{i:03d}"], future[f"{draw_gaps.__name__}{i:03d}"] = g[:-1], g[-1]
    return gaps, future


def exponential(rng, n_visits):
    return rng.exponential(10.0, n_visits)  # n_visits - 1 gaps in the log, one in the future


def alternating(rng, n_visits):
    start = rng.integers(2)
    return np.resize([3.0, 10.0] if start else [10.0, 3.0], n_visits) + rng.uniform(-0.3, 0.3, n_visits)


def test_auto_never_loses_to_the_best_baseline_and_wins_where_history_has_signal(tmp_path):
    rng = np.random.default_rng(0)
    noise, noise_next = _logs(rng, 240, (2, 30), exponential)
    signal, signal_next = _logs(rng, 60, (25, 40), alternating)
    events = visit_log({**noise, **signal})
    truth = pd.Series({**noise_next, **signal_next})
    config = load_config(None, {"train.epochs": 60})
    pred = train_all(events, config, tmp_path / "run", progress=False).set_index("customer_id")
    assert set(pred.index) == set(truth.index)

    hist = histories(validate_events(events))
    base = pd.DataFrame(customer_baselines(hist), index=hist.keys)
    err = pd.DataFrame({"auto": pred["predicted_interval_days"], **base}).sub(truth, axis=0).abs()
    noisy, periodic = err.index.str.startswith("exponential"), err.index.str.startswith("alternating")
    mae_noise, mae_signal = err[noisy].mean(), err[periodic].mean()
    best_noise = mae_noise.drop("auto").min()
    best_signal = mae_signal.drop("auto").min()
    print(f"exponential: auto {mae_noise['auto']:.2f} vs best baseline {best_noise:.2f} ({mae_noise.drop('auto').idxmin()}); "
          f"alternating: auto {mae_signal['auto']:.2f} vs best baseline {best_signal:.2f} ({mae_signal.drop('auto').idxmin()})")
    assert mae_noise["auto"] <= 1.05 * best_noise
    assert mae_signal["auto"] <= 0.4 * best_signal
    assert pred.loc[periodic, "model"].isin(["per_customer", "pooled"]).mean() > 0.8  # a model answers them

    report = json.loads((tmp_path / "run" / "metrics.json").read_text())["evaluation"]
    assert set(report["overall"]) == {"auto", "per_customer", "pooled", "customer_mean", "customer_median",
                                      "customer_last", "population_median", "population_latest_median", "constant"}
    assert report["by_history"]["11+"]["customers"] > 0 and report["by_history"]["1"]["customers"] > 0
    # the headline customers: nothing was chosen on them, and auto still does not lose to a baseline
    best = min(v["mae_days"] for k, v in report["overall"].items() if k in BASELINES)
    assert report["overall"]["auto"]["mae_days"] <= 1.02 * best
    assert report["skill"]["all"]["auto"] == pytest.approx(1 - report["overall"]["auto"]["mae_days"] / best)
    md = (tmp_path / "run" / "report.md").read_text()
    assert f"| auto | {report['overall']['auto']['mae_days']:.2f} |" in md
    assert "## As of" in md and "| days since last visit (most recent first) |" in md  # the as-of backtest
    for name in ("predicted_vs_actual.png", "mae_by_history.png", "training_curves.png", "calibration.png"):
        assert (tmp_path / "run" / "plots" / name).read_bytes()[:4] == b"\x89PNG" and f"plots/{name}" in md
    holdout = pd.read_parquet(tmp_path / "run" / "holdout.parquet")
    headline = holdout[holdout["headline"]]
    assert len(headline) == report["customers"] and len(holdout) == report["customers"] + report["selection"]["customers"]
    assert abs(headline["auto_days"].sub(headline["actual_days"]).abs().mean() - report["overall"]["auto"]["mae_days"]) < 1e-9

    # one customer's picture from the saved run
    events.to_parquet(tmp_path / "visits.parquet")
    plot_customer = script("plot_customer")
    plot_customer.main(["--run", str(tmp_path / "run"), "--customers", str(tmp_path / "visits.parquet"),
                        "--customer", "alternating001", "--out", str(tmp_path / "c.png")])
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InputError, match="no customer 'nobody' in column 'customer_id'"):
        plot_customer.main(["--run", str(tmp_path / "run"), "--customers", str(tmp_path / "visits.parquet"), "--customer", "nobody"])


def test_finetune_starts_from_the_pooled_model():
    """With no fine-tuning epochs, every fine-tuned model answers exactly what the pooled model does
    (in mode finetune the shared model has the own models' size: compared with a pooled run of that size);
    with some, they move away from it."""
    events = make_customers(40, seed=6, visits=(3, 30))
    cfg = load_config(ROOT / "configs" / "tiny.toml", {"train.pooled_epochs": 3, "train.epochs": 0, "model.mode": "finetune"})
    tuned0 = train_all(events, cfg, progress=False)
    same_size = dataclasses.replace(cfg.model, mode="pooled", pooled_units=cfg.model.units, pooled_dense=cfg.model.dense)
    pooled = train_all(events, dataclasses.replace(cfg, model=same_size), progress=False)
    own = tuned0["model"] == "finetuned"
    assert own.sum() > 10 and (tuned0.loc[~own, "model"] == "pooled").all()
    np.testing.assert_allclose(tuned0["predicted_interval_days"], pooled["predicted_interval_days"], rtol=2e-5)
    tuned = train_all(events, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=5)), progress=False)
    assert not np.allclose(tuned.loc[own, "predicted_interval_days"], pooled.loc[own, "predicted_interval_days"], rtol=1e-3)


def _basket_log(n, seed):
    """Customers whose gap after a visit follows that visit's amount: 3 days + amount / 4."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = int(rng.integers(15, 30))
        amount = rng.uniform(5, 100, k)
        gaps = 3 + amount[:-1] / 4 + rng.normal(0, 0.5, k - 1)
        t = pd.Timestamp("2023-01-01") + pd.to_timedelta(np.r_[0, np.cumsum(gaps)] + rng.uniform(0, 30), unit="D")
        rows.append(pd.DataFrame({"customer_id": f"c{i:03d}", "timestamp": t, "amount": amount}))
    return pd.concat(rows, ignore_index=True)


def test_an_extra_column_carries_its_signal_into_the_models(tmp_path):
    log = _basket_log(150, seed=0)
    mae = {}
    for extra, sequences in (([], "concat"), (["amount"], "concat"), (["amount"], "separate")):
        cfg = load_config(ROOT / "configs" / "tiny.toml", {"model.mode": "pooled", "data.extra_cols": extra,
                                                            "model.sequences": sequences,
                                                            "train.pooled_epochs": 10, "train.survival_epochs": 1})
        name = f"run{len(extra)}{sequences}"
        train_all(log, cfg, tmp_path / name, progress=False)
        ev = json.loads((tmp_path / name / "metrics.json").read_text())["evaluation"]["overall"]
        mae[name] = ev["pooled"]["mae_days"]
    print(f"per-customer MAE days, pooled: {mae}")
    # one stack over the joint inputs, or the amount in a stack of its own: both learn what the amount says
    assert mae["run1concat"] < 0.8 * mae["run0concat"] and mae["run1separate"] < 0.8 * mae["run0concat"]
    # predictions from the run folder read the column from the new log, and need it
    pred = predict(tmp_path / "run1concat", log)
    assert pred["predicted_interval_days"].notna().all()
    with pytest.raises(InputError, match="missing column 'amount'"):
        predict(tmp_path / "run1concat", log.drop(columns="amount"))
    bad = log.astype({"amount": object})
    bad.loc[3, "amount"] = "lots"
    with pytest.raises(InputError, match=r"column 'amount': missing or not a number at rows 3, e.g. 'lots'"):
        predict(tmp_path / "run1concat", bad)


def test_the_shared_model_has_its_own_size():
    """The shared model is one model for everyone: it gets model.pooled_units / pooled_dense, answers at that size
    when rebuilt from the run's config (as predict does), a run saved at the own models' size still answers at that
    size, and in mode finetune it keeps the own models' size (they start from its weights)."""
    from jaxlstm.pooled import PooledModel, fit_pooled, pooled_config

    events = make_customers(30, seed=5, visits=(2, 12))
    cfg = load_config(ROOT / "configs" / "tiny.toml", {"model.mode": "pooled", "train.pooled_epochs": 2,
                                                        "model.pooled_units": 6, "model.pooled_dense": [5]})
    hist = histories(validate_events(events))
    q = questions(hist, customer_seeds(hist.keys))
    ask = np.arange(hist.n_customers), np.diff(hist.offsets)
    model, _ = fit_pooled(hist, q, cfg, progress=False)
    assert (model.config.model.units, model.config.model.dense) == (6, (5,)) and cfg.model.units == 4
    again = PooledModel(cfg, model.params, model.center, scale=model.scale)
    assert again.config == model.config
    np.testing.assert_array_equal(again.answer(hist, *ask)[0], model.answer(hist, *ask)[0])
    own_size = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pooled_units=4, pooled_dense=(4,)))
    old, _ = fit_pooled(hist, q, own_size, progress=False)
    assert np.shape(old.params)[-1] < np.shape(model.params)[-1]
    restored = PooledModel(cfg, old.params, old.center, scale=old.scale)
    assert restored.config.model.units == 4
    np.testing.assert_array_equal(restored.answer(hist, *ask)[0], old.answer(hist, *ask)[0])
    finetune = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, mode="finetune"))
    assert pooled_config(finetune) is finetune
