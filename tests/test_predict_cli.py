"""Predictions (one row per customer, fallbacks, re-prediction from a saved run) and the CLI."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import EXAMPLE_CSV, ROOT
from jaxlstm import load_config, predict, train_all
from jaxlstm.data.events import validate_events
from jaxlstm.data.intervals import histories
from jaxlstm.data.windows import make_windows
from jaxlstm.errors import InputError
from jaxlstm.predict import load_run, predict_frame
from jaxlstm.evaluate import BASELINES, bucket_names
from jaxlstm.data.windows import to_bins
from jaxlstm.synth import make_customers

SCRIPTS = ROOT / "scripts"
COLUMNS = ["customer_id", "n_visits", "last_visit", "predicted_interval_days", "predicted_next_visit", "model", "status",
           "days_since_last_visit", "expected_wait_days", "p_gone", "p_within_7d", "p_within_30d", "p_back_within_horizon"]


def test_example_log_every_customer_exactly_once(tiny, tmp_path):
    raw = pd.read_csv(EXAMPLE_CSV)
    pred = train_all(raw.rename(columns={"id": "customer_id", "date": "timestamp"}), tiny, tmp_path / "run", progress=False)
    assert list(pred.columns) == COLUMNS
    assert len(pred) == raw["id"].nunique() == 5000
    assert sorted(pred["customer_id"].tolist()) == sorted(raw["id"].unique().tolist())
    assert pred["predicted_interval_days"].notna().all()
    as_of = pd.Timestamp("2015-01-01")  # the day after the log's last visit
    assert (pred["predicted_next_visit"].dropna() >= as_of).all() and pred["predicted_next_visit"].notna().any()
    assert pred["p_within_30d"].between(0, 1).all() and (pred["p_within_7d"] <= pred["p_within_30d"]).all()
    visits = raw.drop_duplicates().groupby("id").size()  # rows at one timestamp are one visit
    by_id = pred.set_index("customer_id")
    few = by_id["n_visits"] < 5  # look_back 3 needs 5 visits for one window of its own
    assert (by_id.loc[few, "status"].isin(["too_few_visits", "ok"])).all()
    assert (by_id.loc[few & (by_id["status"] == "ok"), "model"] == "pooled").all()  # the shared model answers some
    assert pred["customer_id"].tolist() == sorted(visits.index)  # numeric ids in numeric order
    assert (by_id["n_visits"] == visits).all()
    one_visit = pred[pred["n_visits"] == 1]
    assert one_visit["model"].isin(["population_median", "constant", "pooled"]).all()  # nothing of their own
    others = pred[pred["status"] != "ok"]
    assert others["model"].isin([*BASELINES, "pooled"]).all()
    assert others["status"].isin(["too_few_visits"]).all()  # status says whether an answer is healthy, not who gave it
    assert (pred.loc[pred["model"] == "per_customer", "status"] == "ok").all()
    assert pred.loc[pred["status"] == "ok", "model"].isin(["per_customer", "pooled", *BASELINES]).all()
    assert pred["p_gone"].between(0, 1).all() and pred["p_gone"].notna().all()
    assert not ((pred["model"] == "pooled") & (pred["status"] == "too_few_visits")).any()
    # own models learn from the visits before each customer's last (its question): 5 of them for a window
    assert len(pd.read_parquet(tmp_path / "run" / "customer_metrics.parquet")) == (visits >= 6).sum()
    # predict refuses a run whose per-customer choices belong to other customers, instead of trusting every own model
    metrics = pd.read_parquet(tmp_path / "run" / "customer_metrics.parquet")
    metrics.iloc[:-1].to_parquet(tmp_path / "run" / "customer_metrics.parquet")
    with pytest.raises(InputError, match="customer_metrics.parquet: its customers are not those of the checkpoint"):
        predict(tmp_path / "run", raw.rename(columns={"id": "customer_id", "date": "timestamp"}))


def test_fallback_values():
    events = pd.DataFrame({
        "customer_id": ["once", "twice", "twice", "thrice", "thrice", "thrice"],
        "timestamp": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-01-05", "2024-01-01", "2024-01-03", "2024-01-13"]),
    })
    cfg = load_config(None, {"model.mode": "per_customer", "train.survival_epochs": 0})  # the classic date
    pred = train_all(events, cfg, progress=False).set_index("customer_id")
    assert pred["p_within_30d"].isna().all()
    assert pred.loc["twice", "predicted_interval_days"] == 4.0
    assert pred.loc["thrice", "predicted_interval_days"] == 6.0  # median of 2 and 10
    assert pred.loc["once", "predicted_interval_days"] == 4.0  # median of all intervals 4, 2, 10
    assert pred.loc["twice", "predicted_next_visit"] == pd.Timestamp("2024-01-09")
    assert set(pred["status"]) == {"too_few_visits"}


def test_predict_from_a_saved_run_reproduces_and_handles_new_customers(tiny, tmp_path):
    events = make_customers(40, seed=8, visits=(5, 30))
    trained = train_all(events, tiny, tmp_path / "run", progress=False)
    again = predict(tmp_path / "run", events)
    pd.testing.assert_frame_equal(again, trained)
    newcomer = make_customers(3, seed=9, visits=(10, 12), one_off_share=0.0)
    newcomer["customer_id"] = ["new1", "new2", "new3"][: 1] * len(newcomer[newcomer.customer_id == "c000000"]) + \
        ["new2"] * int((newcomer.customer_id != "c000000").sum())
    mixed = pd.concat([events, newcomer], ignore_index=True)
    pred = predict(tmp_path / "run", mixed).set_index("customer_id")
    assert len(pred) == 42
    # auto: a newcomer gets its history length's answer; unknown_customer only where own models answer there
    own_in = set(json.loads((tmp_path / "run" / "answers.json").read_text())["own_models_answer_in"])
    for new in ("new1", "new2"):
        bucket = bucket_names(np.array([pred.loc[new, "n_visits"]]))[0]
        assert pred.loc[new, "status"] == ("unknown_customer" if bucket in own_in else "ok")
        assert pred.loc[new, "model"] in {*BASELINES, "pooled"}
    # per_customer: every newcomer with a window is one the run's own models would have answered
    cfg = load_config(ROOT / "configs" / "tiny.toml", {"model.mode": "per_customer", "train.survival_epochs": 0})
    train_all(events, cfg, tmp_path / "classic", progress=False)
    pred = predict(tmp_path / "classic", mixed).set_index("customer_id")
    assert (pred.loc[["new1", "new2"], "status"] == "unknown_customer").all()
    assert (pred.loc[["new1", "new2"], "model"] == "customer_median").all()


def test_pooled_mode_needs_no_own_models_to_predict_from_its_folder(tiny, tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny.toml", {"model.mode": "pooled", "train.pooled_epochs": 2})
    events = make_customers(30, seed=5, visits=(1, 12))
    trained = train_all(events, cfg, tmp_path / "run", progress=False)
    assert set(trained["model"]) == {"pooled"} and set(trained["status"]) == {"ok"}
    pd.testing.assert_frame_equal(predict(tmp_path / "run", events), trained)
    newcomer = make_customers(1, seed=9, visits=(10, 10), one_off_share=0.0).assign(customer_id="new")
    pred = predict(tmp_path / "run", pd.concat([events, newcomer])).set_index("customer_id")
    assert pred.loc["new", "model"] == "pooled" and pred.loc["new", "status"] == "ok"
    # nobody with a second visit: no interval to train the shared model on; still a row each and a report
    once = make_customers(5, seed=6, visits=(1, 1))
    alone = train_all(once, cfg, tmp_path / "once", progress=False)
    assert len(alone) == 5 and alone["predicted_interval_days"].isna().all()
    assert "too short to score" in (tmp_path / "once" / "report.md").read_text()
    pd.testing.assert_frame_equal(predict(tmp_path / "once", once), alone)


def test_the_shared_model_answering_keeps_the_reason_why_an_own_model_did_not(tiny, tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny.toml", {"model.mode": "pooled", "train.pooled_epochs": 1})
    events = make_customers(6, seed=7, visits=(8, 12), one_off_share=0.0)
    train_all(events, cfg, tmp_path / "run", progress=False)
    hist = histories(validate_events(events))
    # as in an auto run whose first three customers have own models: one diverged, two beaten
    # own models answering in every history bucket (own_buckets None)
    loaded = load_run(tmp_path / "run")
    auto = dataclasses.replace(loaded.config, model=dataclasses.replace(loaded.config.model, mode="auto"))
    run = dataclasses.replace(loaded, config=auto, keys=hist.keys[:3], center=np.zeros(3, np.float32), own_buckets=None,
                              diverged=np.array([False, True, False]), answers=np.zeros(3, bool))
    pred = predict_frame(run, hist, make_windows(hist, 3))
    assert (pred["model"] == "pooled").all()  # who answered; status: whether that answer is healthy
    assert pred["status"].tolist() == ["ok", "diverged", "ok"] + ["unknown_customer"] * 3


def test_classification_head_gives_probabilities(tiny):
    cfg = load_config(ROOT / "configs" / "tiny.toml", {"data.bins": [5, 15], "model.mode": "per_customer"})
    short = make_customers(3, seed=5, visits=(2, 3)).assign(customer_id=lambda f: "short-" + f["customer_id"])
    pred = train_all(pd.concat([make_customers(20, seed=4, visits=(8, 30)), short]), cfg, progress=False)
    probs = pred[[f"p_bin_{k}" for k in range(3)]].to_numpy()
    ok = pred["model"] == "per_customer"
    assert ok.any() and (~ok).any()
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)  # every customer, whoever answered
    assert (pred["predicted_bin"] == probs.argmax(1)).all()
    base = pred.loc[~ok]  # a baseline's answer is its bin, one-hot
    assert set(base["model"]) <= set(BASELINES)
    assert ((base[[f"p_bin_{k}" for k in range(3)]].to_numpy() == 1).sum(1) == 1).all()
    assert (base["predicted_bin"].to_numpy() == to_bins(base["predicted_interval_days"].to_numpy(), (5.0, 15.0))).all()
    # the shared model's probabilities are its softmax, not a one-hot
    cfg = load_config(ROOT / "configs" / "tiny.toml", {"data.bins": [5, 15], "model.mode": "pooled", "train.pooled_epochs": 1})
    pooled = train_all(make_customers(20, seed=4, visits=(2, 30)), cfg, progress=False)
    probs = pooled[[f"p_bin_{k}" for k in range(3)]].to_numpy()
    assert (pooled["model"] == "pooled").all() and (probs.max(1) < 1).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert set(pred.loc[ok, "predicted_interval_days"]) <= {2.5, 10.0, 20.0}  # bin midpoints


def _run(*args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_cli_end_to_end(tmp_path):
    data = tmp_path / "visits.parquet"
    r = _run(SCRIPTS / "make_customers.py", "--n", 25, "--visits", 5, 30, "--out", data, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "runs" / "tiny"
    r = _run(SCRIPTS / "train_all.py", "--customers", data, "--config", ROOT / "configs" / "tiny.toml", "--out", run,
             "--epochs", 2, "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "25 customers" in r.stdout
    trained = pd.read_parquet(run / "predictions.parquet")
    assert len(trained) == 25
    for name in ("metrics.json", "customer_metrics.parquet", "config.toml", "checkpoints"):
        assert (run / name).exists()
    r = _run(SCRIPTS / "predict.py", "--run", run, "--customers", data, "--out", tmp_path / "p.parquet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "p.parquet"), trained)


def test_cli_on_the_example_log_with_renamed_columns(tmp_path):
    run = tmp_path / "run"
    r = _run(SCRIPTS / "train_all.py", "--customers", EXAMPLE_CSV, "--id-col", "id", "--time-col", "date",
             "--config", ROOT / "configs" / "tiny.toml", "--epochs", 1, "--out", run, "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pred = pd.read_parquet(run / "predictions.parquet")
    assert len(pred) == pred["customer_id"].nunique() == 5000
    r = _run(SCRIPTS / "predict.py", "--run", run, "--customers", EXAMPLE_CSV, "--out", tmp_path / "p.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    again = pd.read_csv(tmp_path / "p.csv")
    assert len(again) == 5000
    np.testing.assert_allclose(again["predicted_interval_days"], pred["predicted_interval_days"], rtol=1e-6)


def test_cli_bad_input_is_one_line_exit_2_in_a_real_process(tmp_path):
    # every bad-input class is covered in-process by test_reliability.py; this checks the process boundary
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    train, predict_ = (subprocess.Popen([sys.executable, *map(str, args)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True) for args in (  # side by side
        (SCRIPTS / "train_all.py", "--customers", EXAMPLE_CSV, "--out", tmp_path / "run", "--quiet"),
        (SCRIPTS / "predict.py", "--run", tmp_path / "nope", "--customers", EXAMPLE_CSV, "--out", tmp_path / "p.parquet")))
    (_, train_err), (_, predict_err) = train.communicate(timeout=600), predict_.communicate(timeout=600)
    assert train.returncode == 2 and "Traceback" not in train_err
    assert train_err.strip().splitlines() == [f"error: {EXAMPLE_CSV}: missing column 'customer_id' (columns: date, id; choose another with --id-col)"]
    assert predict_.returncode == 2 and "no such run folder" in predict_err and "Traceback" not in predict_err


def test_summary_features_and_pinball_runs_reproduce_from_their_folder(tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny.toml", {"data.summary_features": True, "model.loss": "pinball",
                                                        "model.quantile": 0.3, "model.mode": "finetune",
                                                        "train.pooled_epochs": 1})
    events = make_customers(30, seed=4, visits=(3, 20))
    trained = train_all(events, cfg, tmp_path / "run", progress=False)
    assert (trained["model"] == "finetuned").any()
    pd.testing.assert_frame_equal(predict(tmp_path / "run", events), trained)


def test_one_visit_logs_with_extra_columns_and_summary_features(tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny.toml", {"data.extra_cols": ["amount", "items"], "data.summary_features": True,
                                                        "train.pooled_epochs": 1, "train.survival_epochs": 1})
    events = make_customers(20, seed=3, visits=(2, 12)).assign(amount=lambda f: np.arange(len(f)) % 7 * 10.0, items=2)
    train_all(events, cfg, tmp_path / "run", progress=False)
    # brand-new customers with one visit each: no interval anywhere in the log
    new = pd.DataFrame({"customer_id": ["n1", "n2"], "timestamp": pd.to_datetime(["2024-02-01", "2024-02-03"]),
                        "amount": [5.0, 50.0], "items": [1, 3]})
    pred = predict(tmp_path / "run", new)
    assert pred["customer_id"].tolist() == ["n1", "n2"] and pred["p_back_within_horizon"].between(0, 1).all()
    alone = train_all(new, cfg, tmp_path / "once", progress=False)
    pd.testing.assert_frame_equal(predict(tmp_path / "once", new), alone)


def test_a_new_run_in_an_old_folder_replaces_it_and_keeps_its_as_of_date(tmp_path):
    events = make_customers(30, seed=6, visits=(2, 15))
    first = load_config(ROOT / "configs" / "tiny.toml", {"model.mode": "per_customer", "train.survival_epochs": 1})
    train_all(events, first, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "survival_checkpoints").is_dir()
    second = load_config(ROOT / "configs" / "tiny.toml", {"train.seed": 5, "train.pooled_epochs": 1, "train.survival_epochs": 0})
    trained = train_all(events, second, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "survival_checkpoints").exists() and not (tmp_path / "run" / "survival").exists()
    pd.testing.assert_frame_equal(predict(tmp_path / "run", events), trained)
    # a run as of its export date (a week after the last visit) predicts as of that date by default
    export = (events["timestamp"].max() + pd.Timedelta(days=7)).normalize()
    third = load_config(ROOT / "configs" / "tiny.toml", {"train.pooled_epochs": 1, "train.survival_epochs": 1})
    trained = train_all(events, third, tmp_path / "run", progress=False, as_of=str(export.date()))
    assert trained["days_since_last_visit"].min() > 6  # not the default, the day after the last visit
    pd.testing.assert_frame_equal(predict(tmp_path / "run", events), trained)


def test_customers_of_the_run_are_never_unknown(tmp_path):
    # 5 visits give a window of the whole history but none before the last visit, where own models learn
    events = make_customers(30, seed=12, visits=(5, 9), one_off_share=0.0)
    cfg = load_config(ROOT / "configs" / "tiny.toml", {"model.mode": "per_customer", "train.survival_epochs": 0})
    pred = train_all(events, cfg, progress=False)
    assert "unknown_customer" not in set(pred["status"])
    five = pred["n_visits"] == 5
    assert five.any() and (pred.loc[five, "status"] == "too_few_visits").all()
    assert (pred.loc[pred["n_visits"] >= 6, "model"] == "per_customer").all()
