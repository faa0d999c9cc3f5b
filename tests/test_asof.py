"""As-of answers: the survival head's likelihood against closed forms, the conditional answers, and
on a generated log with customers who stop coming, answers as of a date scored on what followed."""

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import ROOT
from jaxlstm import load_config, predict, train_all
from jaxlstm.asof import concordance
from jaxlstm.distribution import SIGMA_MIN, head_params, log_survival, p_back_within, remaining_median, survival_nll
from jaxlstm.synth import make_log

OUT = np.array([[0.3, -0.4, -1.2], [0.3, -0.4, -1.2], [-1.0, 1.5, 2.0], [2.0, 0.1, -4.0]], np.float32)


def _by_hand(out, y, censored, lower):
    mu, sigma, pi = out[:, 0], np.log1p(np.exp(out[:, 1])) + SIGMA_MIN, 1 / (1 + np.exp(-out[:, 2]))
    z, q0 = (y - mu) / sigma, stats.norm.sf((lower - mu) / sigma)  # truncated at 0 days (y = lower)
    observed = -np.log(1 - pi) - stats.norm.logpdf(z) + np.log(sigma) + np.log(q0)
    open_ = -np.log(pi + (1 - pi) * stats.norm.sf(z) / q0)
    return np.where(censored > 0, open_, observed)


def test_survival_likelihood_matches_closed_forms():
    y = np.array([0.5, 0.5, 3.0, -0.2], np.float32)
    censored = np.array([0.0, 1.0, 1.0, 0.0], np.float32)
    lower = np.full(4, -0.5, np.float32)  # a centre of 0.5 log1p days
    got = np.asarray(survival_nll(jnp.asarray(OUT), jnp.asarray(y), jnp.asarray(censored), jnp.asarray(lower)))
    np.testing.assert_allclose(got, _by_hand(OUT.astype(np.float64), y, censored, lower), rtol=1e-5, atol=1e-5)
    assert (got[[1, 2]] >= 0).all()  # a censored term is minus the log of a probability


def test_conditional_answers_agree_with_the_survival_function():
    mu, sigma, g = head_params(OUT, center=2.0)
    e = np.array([0.0, 20.0, 3.0, 400.0, 5.0])
    mu, sigma, g = np.r_[mu, 3.0], np.r_[sigma, 1.0], np.r_[g, -3.0]
    s = lambda t, at=slice(None): np.exp(log_survival(t, mu[at], sigma[at], g[at]))  # noqa: E731
    np.testing.assert_allclose(p_back_within(e, 30.0, mu, sigma, g), 1 - s(e + 30) / s(e), rtol=1e-9)
    r = remaining_median(e, mu, sigma, g)
    finite = np.isfinite(r)
    np.testing.assert_allclose(s(e[finite] + r[finite], finite), s(e[finite], finite) / 2, rtol=1e-6)
    # infinite exactly where "gone" outweighs half of what survives: pi >= S(e) / 2
    pi = 1 / (1 + np.exp(-g))
    assert (~finite == (pi >= s(e) / 2)).all() and (~finite).any() and finite.any()
    # a customer long overdue is less likely back next month than one just seen
    early, late = p_back_within(np.array([2.0, 300.0]), 30.0, mu[[0, 0]], sigma[[0, 0]], g[[0, 0]])
    assert late < early


def test_concordance_by_hand():
    days = np.array([1.0, 2.0, 3.0, 5.0])
    observed = np.array([True, True, False, True])
    # comparable pairs: (0,1) (0,2) (0,3) (1,2) (1,3); customer 2 is censored at 3: only later ones
    assert concordance(np.array([1.0, 2.0, 3.0, 4.0]), days, observed) == 1.0
    assert concordance(np.array([4.0, 3.0, 2.0, 1.0]), days, observed) == 0.0
    assert concordance(np.array([1.0, 1.0, np.inf, np.inf]), days, observed) == pytest.approx(4.5 / 5)


def test_as_of_answers_beat_both_classic_rankings_on_a_log_with_churners(tmp_path):
    log = make_log(800, seed=21, days=730, churn_share=0.3)[["customer_id", "timestamp"]]
    as_of = pd.Timestamp("2022-01-01") + pd.Timedelta(days=640)
    before, after = log[log["timestamp"] < as_of], log[log["timestamp"] >= as_of]
    cfg = load_config(ROOT / "configs" / "tiny.toml", {"model.mode": "pooled", "train.pooled_epochs": 1,
                                                        "train.survival_epochs": 15})
    pred = train_all(before, cfg, tmp_path / "run", progress=False, as_of=str(as_of.date()))
    assert (pred["predicted_next_visit"].dropna() >= as_of).all()  # never a date in the past
    assert (pred["p_gone"] > 0.5).any()  # some are more likely gone than back (their date: if they come back)

    horizon = (pd.Timestamp("2022-01-01") + pd.Timedelta(days=730) - as_of) / pd.Timedelta(days=1)  # 90: the default
    nxt = after.groupby("customer_id")["timestamp"].min().reindex(pred["customer_id"])
    observed = nxt.notna().to_numpy()
    days = np.where(observed, (nxt - as_of).dt.total_seconds().to_numpy() / 86400, horizon)
    wait = pred["expected_wait_days"].to_numpy()
    median_wait = ((pred["predicted_next_visit"] - as_of).dt.total_seconds() / 86400).fillna(np.inf).to_numpy()
    assert (np.fmin(median_wait, horizon) >= 0).all() and (wait <= horizon + 1e-9).all()
    since = pred["days_since_last_visit"].to_numpy()
    ordered = before.sort_values(["customer_id", "timestamp"])
    gaps = ordered.groupby("customer_id")["timestamp"].diff().dt.total_seconds() / 86400
    median = gaps.groupby(ordered["customer_id"]).median().reindex(pred["customer_id"]).fillna(gaps.median()).to_numpy()
    usual = since * -1.0 + median  # the classic date, last visit + median interval, minus the as-of date
    c_model, c_since, c_due = (concordance(x, days, observed) for x in (wait, since, usual))
    print(f"concordance: model {c_model:.3f}, days since last visit {c_since:.3f}, last visit + usual interval {c_due:.3f}")
    assert c_model > c_since + 0.05 and c_model > c_due + 0.2

    hit = (observed & (days <= 30)).astype(float)
    b_model, b_base = np.mean((pred["p_within_30d"] - hit) ** 2), np.mean((hit.mean() - hit) ** 2)
    print(f"p_within_30d Brier {b_model:.3f} vs base rate {b_base:.3f}")
    assert b_model < 0.7 * b_base
    # the run folder answers the same as of the same date
    again = predict(tmp_path / "run", before, as_of=str(as_of.date()))
    pd.testing.assert_frame_equal(again, pred)


def test_own_survival_models_start_from_the_shared_one_or_from_scratch(tmp_path):
    log = make_log(120, seed=5, days=400, churn_share=0.3)[["customer_id", "timestamp"]]
    cols = ["p_within_7d", "p_within_30d", "p_back_within_horizon", "expected_wait_days"]

    def run(mode, epochs):
        cfg = load_config(ROOT / "configs" / "tiny.toml", {"model.mode": mode, "train.epochs": epochs,
                                                            "train.pooled_epochs": 1, "train.survival_epochs": 3})
        return train_all(log, cfg, tmp_path / f"{mode}{epochs}", progress=False).set_index("customer_id")

    shared = run("auto", 3)  # the shared survival model answers everyone
    # finetune with 0 epochs: every own survival model is the shared one, so the answers are too
    tuned = run("finetune", 0)
    np.testing.assert_allclose(tuned[cols].to_numpy(), shared[cols].to_numpy(), rtol=1e-4, atol=1e-6)
    # per_customer: own survival models trained from scratch answer for customers with enough history
    own = run("per_customer", 3)
    enough = own["n_visits"] >= 3 + 2
    assert enough.any() and (~enough).any()
    np.testing.assert_allclose(own.loc[~enough, cols].to_numpy(), shared.loc[~enough, cols].to_numpy(), rtol=1e-6)
    same = np.isclose(own.loc[enough, cols].to_numpy(), shared.loc[enough, cols].to_numpy(), rtol=1e-3).all(1)
    assert same.mean() < 0.05
    assert (tmp_path / "per_customer3" / "survival_checkpoints").is_dir()
    pd.testing.assert_frame_equal(predict(tmp_path / "per_customer3", log).set_index("customer_id"), own)


def test_elapsed_days_count_like_the_intervals():
    from jaxlstm.data.events import validate_events
    from jaxlstm.data.intervals import histories
    from jaxlstm.survival import elapsed_days

    log = pd.DataFrame({"customer_id": ["a", "a"], "timestamp": pd.to_datetime(["2024-01-01 08:00", "2024-01-03 23:00"])})
    as_of = pd.Timestamp("2024-01-04")
    exact, whole = histories(validate_events(log)), histories(validate_events(log), floor_days=True)
    assert elapsed_days(exact, as_of)[0] == pytest.approx(1 / 24) and whole.intervals.tolist() == [2.0]
    assert elapsed_days(whole, as_of, floor_days=True).tolist() == [1.0]
