"""Outputs that explain themselves (issue 17): plot legends follow `model`, counts that add up, the verdict's
warnings, p_gone and the rule between the two dates, --set as TOML, --resume refusing a changed config, and
progress off a terminal as a few log lines."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special

from conftest import ROOT, _cli, cli_fails, script
from jaxlstm import load_config, train_all
from jaxlstm.config import parse_set
from jaxlstm.errors import InputError
from jaxlstm.distribution import gone_and_wait
from jaxlstm.predict import next_visit, probability
from jaxlstm.progress import LogLines
from jaxlstm.report import _reading_section, curves_figure, scatter_figure, verdict
from jaxlstm.synth import make_customers

TINY = ROOT / "configs" / "tiny.toml"
TRAIN = ROOT / "scripts" / "train_all.py"
TRAIN_MODULE = script("train_all")


# --- plots: legends follow `model`, nothing drawn empty ----------------------------------------------------------

def _holdout():
    return pd.DataFrame({"actual_days": [3.0, 5.0, 8.0, 13.0], "answered_by": ["pooled", "pooled", "per_customer", "customer_last"],
                         "auto_days": [4.0, 4.5, 7.0, 12.0], "pooled_days": [4.0, 4.5, 6.0, 9.0]})


def test_scatter_legend_names_who_answered_in_the_runs_mode():
    fig = scatter_figure(_holdout(), "auto")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["pooled (2)", "per_customer (1)", "customer_last (1)"]
    fig = scatter_figure(_holdout(), "pooled")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["pooled (4)"]
    assert scatter_figure(_holdout().iloc[:0], "auto") is None


def test_curves_show_each_trained_model_and_none_when_nothing_trained():
    h = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1}, {"epoch": 2, "train_loss": 0.9, "val_loss": 1.0}]
    fig = curves_figure({"history": [], "pooled_history": h, "as_of": {"survival_history": h}})
    assert [ax.get_title() for ax in fig.axes] == ["shared (pooled) model", "survival model"]
    assert curves_figure({"history": [], "pooled_history": [], "as_of": {}}) is None


def test_a_run_with_nothing_to_plot_links_no_plot(tmp_path):
    once = make_customers(5, seed=6, visits=(1, 1))
    train_all(once, load_config(TINY, {"train.survival_epochs": 0}), tmp_path / "run", progress=False)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "plots/" not in report and not list((tmp_path / "run" / "plots").glob("*.png"))
    assert "too short to score" in report


# --- counts that add up, healthy statuses, class probabilities for everyone ---------------------------------------

def test_metrics_counts_add_up_and_every_customer_gets_class_probabilities(tmp_path):
    events = pd.concat([make_customers(30, seed=1, visits=(6, 20)), make_customers(10, seed=2, visits=(1, 3))
                        .assign(customer_id=lambda f: "s" + f["customer_id"])], ignore_index=True)
    cfg = load_config(TINY, parse_set(["data.bins=[7, 30, 90]", "train.pooled_epochs=1"]))
    pred = train_all(events, cfg, tmp_path / "run", progress=False)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    n = m["customers"]
    assert n == len(pred) == events["customer_id"].nunique()
    assert m["customers_with_model"] + m["customers_fallback"] == n
    assert sum(m["status_counts"].values()) == n and sum(m["answers_by_model"].values()) == n
    assert m["customers_answered_by_own_model"] == pred["model"].isin(["per_customer", "finetuned"]).sum()
    r = m["rows"]
    assert r["read"] == r["used"] + r["merged_same_timestamp"] + r["after_as_of"] + r["rejected"]
    assert set(pred["status"]) <= {"ok", "too_few_visits"}
    probs = pred[[f"p_bin_{k}" for k in range(4)]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert ((probs >= 0) & (probs <= 1)).all() and not np.signbit(probs).any()  # no -0.0
    for col in ("p_gone", "p_within_7d", "p_within_30d", "p_back_within_horizon"):
        assert pred[col].between(0, 1).all() and not np.signbit(pred[col]).any(), col


# --- p_gone and the rule between predicted_interval_days and predicted_next_visit ----------------------------------

def test_p_gone_and_the_wait_given_a_return_match_the_truncated_log_normal():
    mu, sigma, g = np.array([2.0, 2.0, 3.0]), np.array([0.5, 0.5, 0.8]), np.array([-1.0, -1.0, 0.5])
    e = np.array([0.0, 20.0, 45.0])
    out = gone_and_wait(e, mu, sigma, g)
    pi = special.expit(g)

    def returning_tail(t, i):  # P(T > t | back), truncated at 0 days
        return special.ndtr(-(np.log1p(t) - mu[i]) / sigma[i]) / special.ndtr(mu[i] / sigma[i])

    for i in range(3):
        s_e = pi[i] + (1 - pi[i]) * returning_tail(e[i], i)
        assert out["p_gone"][i] == pytest.approx(pi[i] / s_e, rel=1e-9)
        t = optimize.brentq(lambda t: returning_tail(t, i) - returning_tail(e[i], i) / 2, e[i], 1e6, xtol=1e-10)
        assert out["remaining_days_if_back"][i] == pytest.approx(t - e[i], rel=1e-6)
    assert out["p_gone"][0] == pytest.approx(pi[0])  # S(0) = 1: no silence yet, the prior share


def test_next_visit_is_the_later_of_the_interval_and_the_wait_from_the_as_of_date():
    as_of = pd.Timestamp("2024-03-01")
    last = np.array(["2024-02-20", "2024-01-01", "2024-02-25", "2024-02-20", "2024-02-28"], dtype="datetime64[ns]")
    interval = np.array([15.0, 10.0, np.nan, 15.0, 5.0])
    wait = np.array([3.0, 40.0, 7.0, 9.0, np.nan])
    got = list(pd.to_datetime(next_visit(last, interval, as_of, wait)))
    day = pd.Timedelta(days=1)
    assert got[0] == pd.Timestamp("2024-03-06")  # due on 03-06; the silence says 03-04: the history's date
    assert got[1] == as_of + 40 * day  # overdue: the wait from the as-of date
    assert got[2] == as_of + 7 * day  # no interval answer
    assert got[3] == as_of + 9 * day  # due on 03-06, but the silence says later: 03-10
    assert got[4] == pd.Timestamp("2024-03-04")  # no wait answer: the history's date


@pytest.mark.parametrize("next_day, says", [
    ("2024-03-20", "already past on the as-of date 2024-03-01 (overdue)"),
    ("2024-03-06", "on or after the as-of date 2024-03-01, so `predicted_next_visit` is that date."),
    ("2024-03-10", "given its silence since, the survival model's median date of the next visit is later, 2024-03-10"),
])
def test_report_reads_one_customers_dates_by_the_rule_that_gave_them(next_day, says):
    last, interval = pd.Timestamp("2024-02-20"), 15.0 if next_day != "2024-03-20" else 5.0  # due 03-06 (or 02-25)
    predictions = pd.DataFrame({"customer_id": ["a"], "model": ["pooled"], "n_visits": [4], "last_visit": [last],
                                "predicted_interval_days": [interval], "predicted_next_visit": [pd.Timestamp(next_day)],
                                "p_gone": [0.2], "days_since_last_visit": [10.0]})
    text = " ".join(_reading_section(predictions, {"as_of": {"date": "2024-03-01"}}))
    assert says in text and "is the later of last visit + `predicted_interval_days`" in text


def test_probability_clips_and_never_gives_negative_zero():
    p = probability(np.array([-1e-9, -0.0, 0.3, 1.0000001, np.nan]))
    assert p[:4].tolist() == [0.0, 0.0, 0.3, 1.0] and not np.signbit(p[:2]).any() and np.isnan(p[4])


# --- the verdict ---------------------------------------------------------------------------------------------------

def _metrics(customers=200, skill_mode=-0.1, concordance=(0.80, 0.85)):
    scores = {"auto": {"mae_days": 11.0}, "customer_median": {"mae_days": 10.0}}
    return {"mode": "auto", "evaluation": {
        "customers": customers, "overall": scores,
        "skill": {"all": {"best_baseline": "customer_median", "mae_days": 10.0, "customers": customers, "auto": skill_mode},
                  "5+ visits": {"best_baseline": None}}},
        "as_of": {"backtest": {"concordance": {"model": concordance[0], "days_since_last_visit": concordance[1]}}}}


def test_verdict_warns_where_the_answer_loses_own_models_are_flat_or_the_ranking_is_weak():
    own = pd.DataFrame({"model": ["per_customer"] * 12, "predicted_interval_days": [20.0] * 9 + [5.0, 7.0, 9.0],
                        "p_bin_0": 0.3, "p_bin_1": 0.25, "p_bin_2": 0.25, "p_bin_3": 0.2})
    lines, warnings = verdict(_metrics(), own, n_classes=4)
    assert "- `auto` (this run's answer, in predictions.parquet): 11.00 days, 10.0% worse than `customer_median`." in lines
    assert any("worse than the simple baseline `customer_median` by 10.0%" in w for w in warnings)
    assert any("near-constant: 9 of 12 predict 20 days" in w for w in warnings)
    assert any("near-uniform: median top class probability 0.300" in w for w in warnings)
    assert any("as-of ranking (concordance 0.800) is below ranking by days since the last visit (0.850)" in w for w in warnings)
    lines, warnings = verdict(_metrics(skill_mode=0.05, concordance=(0.9, 0.85)), own.iloc[:0], n_classes=0)
    assert warnings == [] and "5.0% better than `customer_median`" in lines[1]


def test_verdict_says_a_tiny_holdout_cannot_judge_instead_of_printing_a_score():
    lines, warnings = verdict(_metrics(customers=3), pd.DataFrame({"model": []}), 0)
    assert lines == ["The holdout has 3 headline customers: too few to judge which answer is better (30 or more needed)."]
    assert any("too small to judge" in w for w in warnings)


# --- --set as TOML ---------------------------------------------------------------------------------------------

def test_set_values_are_toml_and_round_trip_through_the_saved_config(tmp_path):
    items = ["data.bins=[7, 30, 90]", "data.within_days=[3]", 'model.lstm_activation="relu"', "model.mode=pooled",
             "data.timezone=Europe/Berlin", "data.time_format=%d/%m/%Y", "train.learning_rate=1e-3", "train.epochs=7",
             "data.floor_days=true", 'data.extra_cols=["amount"]', "model.dense=[16, 8]"]
    cfg = load_config(None, parse_set(items))
    assert cfg.data.bins == (7.0, 30.0, 90.0) and cfg.data.within_days == (3.0,) and cfg.model.lstm_activation == "relu"
    assert cfg.model.mode == "pooled" and cfg.data.timezone == "Europe/Berlin" and cfg.data.time_format == "%d/%m/%Y"
    assert cfg.train.learning_rate == 1e-3 and cfg.train.epochs == 7 and cfg.data.floor_days is True
    assert cfg.data.extra_cols == ("amount",) and cfg.model.dense == (16, 8)
    (tmp_path / "c.toml").write_text(cfg.to_toml())
    assert load_config(tmp_path / "c.toml") == cfg
    assert load_config(None, parse_set(["data.bins=[]"])).data.bins == ()


@pytest.mark.parametrize("item, message", [
    ("train.epochs=abc", "--set train.epochs=abc: 'train.epochs' takes an integer, got 'abc'"),
    ("train.epochs=2.5", "'train.epochs' takes an integer, got '2.5'"),
    ("data.bins=7,30", "'data.bins' takes a list of numbers, got '7,30' (a TOML list, e.g. data.bins=[7, 30])"),
    ('data.bins=["a"]', "'data.bins' takes a list of numbers"),
    ("data.floor_days=1", "'data.floor_days' takes true or false, got '1'"),
    ("train.nope=1", "unknown config key 'train.nope'"),
])
def test_set_type_checks_like_a_config_file(item, message):
    with pytest.raises(InputError, match=None) as e:
        load_config(None, parse_set([item]))
    assert message in str(e.value)


def test_a_config_file_is_type_checked_too(tmp_path):
    (tmp_path / "c.toml").write_text('[train]\nepochs = "5"\n')
    with pytest.raises(InputError, match="config key 'train.epochs' takes an integer, got '5'"):
        load_config(tmp_path / "c.toml")


# --- resume and overwrite; progress off a terminal ----------------------------------------------------------------

def _train(data, out, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "JAXLSTM_PROGRESS_SECONDS": "0.5"}
    cmd = [sys.executable, str(TRAIN), "--customers", str(data), "--config", str(TINY), "--out", str(out),
           "--set", "train.pooled_epochs=1", "--set", "train.survival_epochs=1", "--set", "train.patience=0", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_resume_refuses_a_changed_config_and_continues_a_larger_epoch_count(tmp_path, capsys):
    # in this process (the refusals come before any training): one compile for every run
    data = tmp_path / "v.parquet"
    make_customers(40, seed=3, visits=(6, 20)).to_parquet(data)
    run = tmp_path / "run"
    base = ["--customers", data, "--config", TINY, "--set", "train.pooled_epochs=1", "--set", "train.survival_epochs=1",
            "--set", "train.patience=0"]

    def ok(out, *extra) -> str:
        _cli.run(TRAIN_MODULE.main, [str(a) for a in [*base, "--out", out, *extra]])
        return capsys.readouterr().err

    first = ok(tmp_path / "fresh" / "run", "--epochs", "2", "--resume")  # no run there yet: from scratch
    assert "no run to resume there yet: starting from scratch" in first
    ok(run, "--epochs", "2")
    assert cli_fails(TRAIN_MODULE, [*base, "--out", run, "--epochs", "2"], capsys) == (
        f"error: --out {run} holds a run already (config.toml, predictions.parquet, metrics.json): --resume to continue "
        "it, --overwrite to replace it, or another --out")
    fewer = cli_fails(TRAIN_MODULE, [*base, "--out", run, "--epochs", "1", "--resume"], capsys)
    assert "train.epochs is 1 but the run was set to 2" in fewer
    changed = cli_fails(TRAIN_MODULE, [*base, "--out", run, "--epochs", "2", "--resume", "--set", "model.units=3"], capsys)
    assert "model.units: 4 in the run, 3 now" in changed
    more = ok(run, "--epochs", "3", "--resume")
    assert "continuing the run to 3 epochs (it was set to 2)" in more
    m = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3] and m["epochs_run"] == 1
    ok(run, "--epochs", "2", "--overwrite")


def test_log_lines_every_interval_and_one_at_the_end(capsys):
    now = [0.0]
    lines = LogLines(range(100), "train", "epoch", None, customers=50, interval=10.0, clock=lambda: now[0])
    for _ in lines:
        now[0] += 1.0  # one epoch a second: 100 s in all
    lines.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 11 and "\r" not in "".join(err)
    assert err[0] == "train: epoch 10/100, 50 customers/s, at most 1 min 30 s left"
    assert err[-1] == "train: epoch 100/100 in 1 min 40 s, 50 customers/s"


def test_a_short_run_off_a_terminal_writes_a_few_lines(tmp_path):
    data = tmp_path / "v.parquet"
    make_customers(40, seed=3, visits=(6, 20)).to_parquet(data)
    r = _train(data, tmp_path / "run", "--epochs", "3")
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and len(r.stderr.splitlines()) < 40, r.stderr


def test_a_run_leaves_global_jax_and_matplotlib_settings_alone(tmp_path):
    import jax
    import matplotlib

    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs", "jax_enable_x64")
    saved_dir, saved_backend = jax.config.jax_compilation_cache_dir, matplotlib.get_backend()
    # settings a caller chose, unlike the ones the library would pick (a cache dir of its own, the Agg backend)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "callers-cache"))
    matplotlib.use("pdf")
    try:
        before = {k: getattr(jax.config, k) for k in keys}, matplotlib.get_backend(), dict(matplotlib.rcParams)
        cfg = load_config(TINY, {"train.compilation_cache": True, "train.survival_epochs": 1, "train.pooled_epochs": 1})
        train_all(make_customers(20, seed=2, visits=(6, 12)), cfg, tmp_path / "run", progress=False)
        assert (tmp_path / "run" / "report.md").exists() and list((tmp_path / "run" / "plots").glob("*.png"))
        after = {k: getattr(jax.config, k) for k in keys}, matplotlib.get_backend(), dict(matplotlib.rcParams)
        assert after == before
    finally:
        jax.config.update("jax_compilation_cache_dir", saved_dir)
        matplotlib.use(saved_backend)


def test_training_line_counts_every_epoch_and_this_calls_after_a_resume():
    from jaxlstm.report import own_epochs

    fresh = {"history": [{}] * 3, "epochs_run": 3, "seconds_train": 1.25}
    assert own_epochs(fresh) == "own models 3 epochs in 1.2 s"
    assert own_epochs({**fresh, "history": [{}] * 5, "epochs_run": 2}) == "own models 5 epochs (2 of them in this call, 1.2 s)"
