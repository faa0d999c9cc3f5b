"""Mode auto trains own models for a sample of judges first (train.judge_customers), and the other
customers only where those won: the answers must be those of training everyone's own model."""
import json

import numpy as np
import pandas as pd

from jaxlstm import load_config, predict, train_all
from jaxlstm.fit import group_dirs
from jaxlstm.synth import make_patterned

from conftest import EXAMPLE_CSV, ROOT


def _config(judges: int, epochs: int = 15):
    return load_config(ROOT / "configs" / "tiny.toml", {"train.judge_customers": judges, "train.epochs": epochs,
                                                        "train.pooled_epochs": 1, "train.survival_epochs": 0})


def _frame(pred: pd.DataFrame) -> pd.DataFrame:
    return pred.set_index("customer_id").sort_index()


def test_judged_own_models_answer_as_training_everyone_and_resume_to_more_epochs(tmp_path):
    # each customer repeats its own cycle of gaps: own models beat every shared answer in long histories
    log, _ = make_patterned(160, seed=5, visits=(5, 18))
    everyone = _frame(train_all(log, _config(0), None, progress=False))
    judged = _frame(train_all(log, _config(60), tmp_path / "straight", progress=False))

    metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert metrics["evaluation"]["own_models_answer_in"], "own models should win on cycles of gaps"
    # a customer's own model is the same whoever it trained beside: the judges' and the rest's answer as if
    # every customer's were trained (where they answer may differ: 60 judges show less than 142)
    mine = judged["model"] == "per_customer"
    assert mine.sum() > 30 and (everyone.loc[mine, "model"] == "per_customer").all()
    np.testing.assert_allclose(judged.loc[mine, "predicted_interval_days"], everyone.loc[mine, "predicted_interval_days"],
                               rtol=1e-5)
    # trained: the 60 judges first, then the customers of the history lengths own models won, and no one else
    trained = pd.read_parquet(tmp_path / "straight" / "customer_metrics.parquet")["customer_id"]
    assert len(trained) == metrics["customers_with_model"] > 60
    assert set(judged.index[mine]) <= set(trained) and len(trained) < len(judged)
    # the two calls' checkpoints are numbered groups a saved run reads back in order
    assert len(group_dirs(tmp_path / "straight" / "checkpoints")) == 2
    again = _frame(predict(tmp_path / "straight", log))
    np.testing.assert_array_equal(again["predicted_interval_days"], judged["predicted_interval_days"])
    # per_customer is scored on the customers that have an own model only, and says so
    assert "scored on those customers only" in metrics["evaluation"]["methods"]["per_customer"]

    # 2 epochs, then resumed to 15: the judges train on, and where own models win changes (on this log), so the
    # customers trained after them do too (their checkpoints were saved for others: trained afresh)
    train_all(log, _config(60, epochs=2), tmp_path / "run", progress=False)
    resumed = _frame(train_all(log, _config(60), tmp_path / "run", resume=True, progress=False))
    assert (resumed["model"] == judged["model"]).all()
    np.testing.assert_allclose(resumed["predicted_interval_days"], judged["predicted_interval_days"], rtol=1e-6)
    assert (pd.read_parquet(tmp_path / "run" / "customer_metrics.parquet")["customer_id"] == trained).all()
    assert len(group_dirs(tmp_path / "run" / "checkpoints")) == 2


def test_where_own_models_lose_only_the_judges_are_trained(tmp_path):
    # a real shop's log: short histories, where own models lose to the shared model and the baselines
    raw = pd.read_csv(EXAMPLE_CSV).rename(columns={"id": "customer_id", "date": "timestamp"})
    pred = train_all(raw, _config(150, epochs=3), tmp_path / "run", progress=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["evaluation"]["own_models_answer_in"] == []
    assert metrics["customers_with_model"] == 150
    assert (pred["model"] != "per_customer").all()
    assert sorted(pred["customer_id"].astype(str)) == sorted(raw["customer_id"].astype(str).unique())
