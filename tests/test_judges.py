"""Mode auto trains own models for a sample of judges first (train.judge_customers), and the other
customers only where those won: the answers must be those of training everyone's own model."""
import dataclasses
import json

import numpy as np
import pandas as pd

from jaxlstm import load_config, predict, train_all
from jaxlstm.fit import group_dirs
from jaxlstm.synth import make_patterned

from conftest import EXAMPLE_CSV, ROOT


def _config(judges: int):
    return load_config(ROOT / "configs" / "tiny.toml", {"train.judge_customers": judges, "train.epochs": 15,
                                                        "train.pooled_epochs": 1, "train.survival_epochs": 0})


def test_judged_own_models_answer_as_training_everyone(tmp_path):
    # each customer repeats its own cycle of gaps: own models beat every shared answer from 6 visits on
    log, _ = make_patterned(240, seed=3, visits=(5, 18))
    everyone = train_all(log, _config(0), None, progress=False).set_index("customer_id").sort_index()
    judged = train_all(log, _config(80), tmp_path / "run", progress=False).set_index("customer_id").sort_index()

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["evaluation"]["own_models_answer_in"], "own models should win on cycles of gaps"
    # a customer's own model is the same whoever it trained beside: the judges' and the rest's answer as if
    # every customer's were trained (the choice of where they answer may differ: 80 judges show less)
    mine = judged["model"] == "per_customer"
    assert mine.sum() > 40 and (everyone.loc[mine, "model"] == "per_customer").all()
    np.testing.assert_allclose(judged.loc[mine, "predicted_interval_days"], everyone.loc[mine, "predicted_interval_days"],
                               rtol=1e-5)
    # trained: the 80 judges first, then the customers of the history lengths own models won, and no one else
    trained = pd.read_parquet(tmp_path / "run" / "customer_metrics.parquet")["customer_id"]
    assert len(trained) == metrics["customers_with_model"] > 80
    assert set(judged.index[mine]) <= set(trained) and len(trained) < len(judged)
    # the two calls' checkpoints are numbered groups a saved run reads back in order
    assert len(group_dirs(tmp_path / "run" / "checkpoints")) >= 2
    again = predict(tmp_path / "run", log).set_index("customer_id").sort_index()
    np.testing.assert_array_equal(again["predicted_interval_days"], judged["predicted_interval_days"])
    # per_customer is scored on the customers that have an own model only, and says so
    assert "scored on those customers only" in metrics["evaluation"]["methods"]["per_customer"]


def test_where_own_models_lose_only_the_judges_are_trained(tmp_path):
    # a real shop's log: short histories, where own models lose to the shared model and the baselines
    raw = pd.read_csv(EXAMPLE_CSV).rename(columns={"id": "customer_id", "date": "timestamp"})
    pred = train_all(raw, _config(150), tmp_path / "run", progress=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["evaluation"]["own_models_answer_in"] == []
    assert metrics["customers_with_model"] == 150
    assert (pred["model"] != "per_customer").all()
    assert sorted(pred["customer_id"].astype(str)) == sorted(raw["customer_id"].astype(str).unique())


def test_a_resumed_run_that_trains_longer_answers_as_one_trained_so_from_the_start(tmp_path):
    # 2 epochs, then resumed to 15: the judges train on, and where own models win may change, so the
    # customers trained after them may too (their checkpoints were saved for others: trained afresh)
    log, _ = make_patterned(160, seed=5, visits=(5, 18))
    short = dataclasses.replace(_config(60), train=dataclasses.replace(_config(60).train, epochs=2))
    train_all(log, short, tmp_path / "run", progress=False)
    resumed = train_all(log, _config(60), tmp_path / "run", resume=True, progress=False).set_index("customer_id").sort_index()
    straight = train_all(log, _config(60), tmp_path / "straight", progress=False).set_index("customer_id").sort_index()
    assert (resumed["model"] == straight["model"]).all() and (straight["model"] == "per_customer").any()
    np.testing.assert_allclose(resumed["predicted_interval_days"], straight["predicted_interval_days"], rtol=1e-6)
    trained = [pd.read_parquet(run / "customer_metrics.parquet")["customer_id"].tolist() for run in (tmp_path / "run", tmp_path / "straight")]
    assert trained[0] == trained[1]
    assert len(group_dirs(tmp_path / "run" / "checkpoints")) == len(group_dirs(tmp_path / "straight" / "checkpoints"))
