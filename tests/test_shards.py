"""Streaming shards (jaxlstm/shards.py, train_shards.py) and groups of customers trained in turn (fit.fit_groups):
every customer answered once, own models equal to training without shards, resume by shard, predict by shard."""

import json

import numpy as np
import pandas as pd
import pytest

import jaxlstm.fit as fit_module
from conftest import EXAMPLE_CSV, ROOT, _cli, cli_fails, script
from jaxlstm.config import load_config
from jaxlstm.errors import InputError
from jaxlstm.evaluate import bucket_names
from jaxlstm.predict import load_run, predict_source
from jaxlstm.shards import Source, count_customers, id_keys, shard_of
from jaxlstm.synth import make_customers
from jaxlstm.train import train_all


def test_ids_that_read_as_one_customer_land_in_one_shard():
    text = pd.Series(["001", "1", " 1 ", "42", "0042", "abc", " abc"])
    assert list(id_keys(text)) == ["1", "1", "1", "42", "42", "abc", "abc"]
    assert list(id_keys(pd.Series([1.0, 42.0]))) == ["1", "42"]
    for n in (2, 3, 7):
        s = shard_of(text, n)
        assert s[0] == s[1] == s[2] and s[3] == s[4] and s[5] == s[6]
        assert shard_of(pd.Series([42, 1], dtype=np.int64), n).tolist() == [s[3], s[0]]
    # the split does not depend on the order of the rows, and spreads customers evenly
    ids = pd.Series([f"c{i}" for i in range(20_000)])
    assert (shard_of(ids, 4) == shard_of(ids[::-1].reset_index(drop=True), 4)[::-1]).all()
    counts = np.bincount(shard_of(ids, 4), minlength=4)
    assert counts.min() > 4_600, counts


def test_customers_are_counted_from_the_id_column_a_batch_at_a_time():
    log = pd.read_csv(EXAMPLE_CSV)
    whole = log["id"].nunique()
    assert count_customers(Source(EXAMPLE_CSV), "id") == whole
    small = Source(frame=log)
    assert sum(len(b) for b in small.batches(("id", "date"), rows=1000)) == len(log)
    assert count_customers(Source(frame=log), "id") == whole


def tiny_with(**overrides):
    return load_config(ROOT / "configs" / "tiny.toml", {k.replace("__", "."): v for k, v in overrides.items()})


@pytest.fixture(scope="module")
def log():
    return make_customers(150, seed=3, visits=(2, 25)).drop(columns="kind")


def test_sharded_run_answers_every_customer_once_with_the_same_own_models(log, tmp_path, monkeypatch):
    cfg = tiny_with(model__mode="per_customer")
    whole = train_all(log, cfg, tmp_path / "whole", progress=False)
    monkeypatch.setattr(fit_module, "GROUP_CUSTOMERS", 32)  # several groups in each shard too
    sharded = train_all(log, tiny_with(model__mode="per_customer", train__shard_customers=45), tmp_path / "sharded", progress=False)
    plan = json.loads((tmp_path / "sharded" / "shards" / "plan.json").read_text())
    assert plan["shards"] == 4 and plan["customers"] == 150
    assert len(sharded) == 150 and sharded["customer_id"].is_unique
    assert set(sharded["customer_id"]) == set(log["customer_id"])
    a = whole.set_index("customer_id").loc[sharded["customer_id"]]
    own = (sharded["model"] == "per_customer").to_numpy()
    assert own.sum() > 100
    # a customer's own model depends on its own visits, seed and config only: the same in any shard
    np.testing.assert_array_equal(sharded["predicted_interval_days"].to_numpy()[own], a["predicted_interval_days"].to_numpy()[own])
    assert (a["model"].to_numpy()[own] == "per_customer").all()
    metrics = json.loads((tmp_path / "sharded" / "metrics.json").read_text())
    assert metrics["customers"] == 150 and metrics["shards"]["shards"] == 4
    assert metrics["customers_with_model"] == len(pd.read_parquet(tmp_path / "sharded" / "customer_metrics.parquet"))
    assert metrics["rows"]["read"] == len(log)
    later = [json.loads((tmp_path / "sharded" / "shards" / f"{k:05d}" / "fit.json").read_text()) for k in (1, 2, 3)]
    assert metrics["seconds_train"] > sum(f["seconds_train"] for f in later) > 0  # every shard's training counted
    assert metrics["windows_train"] > sum(f["windows_train"] for f in later) > 0


def test_resume_skips_finished_shards_and_finishes_the_others_identically(log, tmp_path, capsys, monkeypatch):
    import jaxlstm.train_shards as ts

    cfg = tiny_with(train__shard_customers=60)
    first = train_all(log, cfg, tmp_path / "whole", progress=False)
    train_shard = ts._train_shard

    def killed_in_shard_3(k, *args):
        if k == 2:
            raise KeyboardInterrupt
        train_shard(k, *args)

    monkeypatch.setattr(ts, "_train_shard", killed_in_shard_3)
    with pytest.raises(KeyboardInterrupt):
        train_all(log, cfg, tmp_path / "run", progress=False)
    monkeypatch.setattr(ts, "_train_shard", train_shard)
    again = train_all(log, cfg, tmp_path / "run", resume=True, progress=True)
    err = capsys.readouterr().err
    assert "shard 1/3: done before, kept" in err and "shard 2/3: done before, kept" in err
    assert "shard 3/3: done before" not in err
    pd.testing.assert_frame_equal(first, again)
    # mode auto: shards after the first train own models only where they answer (the history lengths they won)
    won = json.loads((tmp_path / "run" / "answers.json").read_text())["own_models_answer_in"]
    n_visits = again.set_index("customer_id")["n_visits"]
    for k in (1, 2):
        trained = load_run(tmp_path / "run", shard=k).keys
        assert np.isin(bucket_names(n_visits.loc[pd.Index(trained).astype(n_visits.index.dtype)].to_numpy()), won).all()
    assert len(load_run(tmp_path / "run").keys) > 0  # the first shard trains everyone's: they are judged there


def test_cli_trains_and_predicts_shard_by_shard(tmp_path, capsys):
    log = pd.read_csv(EXAMPLE_CSV).head(6000)
    path = tmp_path / "log.csv"
    log.to_csv(path, index=False)
    run = tmp_path / "run"
    args = ["--customers", path, "--out", run, "--id-col", "id", "--time-col", "date", "--config", "configs/tiny.toml",
            "--shard-customers", "400", "--quiet"]
    _cli.run(script("train_all").main, [str(a) for a in args])
    trained = pd.read_parquet(run / "predictions.parquet")
    n = log["id"].nunique()
    assert len(trained) == n and trained["customer_id"].is_unique
    for name in ("population_median", "population_latest_median"):  # one number for everybody, in every shard
        answered = trained.loc[trained["model"] == name, "predicted_interval_days"]
        assert answered.nunique() <= 1, answered.value_counts()
    population = json.loads((run / "answers.json").read_text())["population"]
    assert population["population_median"] > 0
    assert load_run(run, shard=2, own=False).population == population  # every shard answers with shard 1's
    out = tmp_path / "p.parquet"
    _cli.run(script("predict").main, ["--run", str(run), "--customers", str(path), "--out", str(out)])
    predicted = pd.read_parquet(out).set_index("customer_id").loc[trained["customer_id"]]
    np.testing.assert_allclose(predicted["predicted_interval_days"].to_numpy(), trained["predicted_interval_days"].to_numpy(),
                               rtol=1e-6)
    assert (predicted["model"].to_numpy() == trained["model"].to_numpy()).all()
    # a bad row in a later shard is named by its line in the file, not in the shard
    bad = log.copy()
    bad.loc[4000, "date"] = "not a date"
    bad.to_csv(path, index=False)
    capsys.readouterr()
    line = cli_fails(script("train_all"), args[:3] + [tmp_path / "run2"] + args[4:], capsys)
    assert "lines 4002" in line and "not a date" in line


def test_predict_source_on_an_unsharded_run_reads_the_log_whole(tiny, log, tmp_path):
    path = tmp_path / "log.parquet"
    log.to_parquet(path)
    trained = train_all(log, tiny, tmp_path / "run", progress=False)
    predicted, rejected, _ = predict_source(tmp_path / "run", path)
    assert len(rejected) == 0
    pd.testing.assert_series_equal(predicted["predicted_interval_days"], trained["predicted_interval_days"])


def test_fit_in_groups_equals_one_fit(log, tmp_path, monkeypatch):
    cfg = tiny_with(model__mode="per_customer", train__epochs=4)
    one = train_all(log, cfg, tmp_path / "one", progress=False)
    monkeypatch.setattr(fit_module, "GROUP_CUSTOMERS", 40)
    groups = train_all(log, cfg, tmp_path / "groups", progress=False)
    assert len(list((tmp_path / "groups" / "checkpoints").glob("group-*"))) > 3
    pd.testing.assert_frame_equal(one, groups)
    h1 = json.loads((tmp_path / "one" / "metrics.json").read_text())["history"]
    h2 = json.loads((tmp_path / "groups" / "metrics.json").read_text())["history"]
    for a, b in zip(h1, h2, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)
    with pytest.raises(InputError):  # a run's own models are read back from every group (predict.load_run)
        predict_source(tmp_path / "nothing", tmp_path / "missing.parquet")


def test_a_shard_no_customer_hashed_to_is_skipped(tmp_path):
    ids = pd.Series([f"c{i}" for i in range(200)])
    s = shard_of(ids, 3)
    chosen = [ids[s == 0].iloc[0], ids[s == 0].iloc[1], ids[s == 1].iloc[0]]  # shard 2 gets nobody
    log = make_customers(3, seed=5, visits=(8, 12)).drop(columns="kind")
    log["customer_id"] = log["customer_id"].map(dict(zip(sorted(log["customer_id"].unique()), chosen)))
    out = train_all(log, tiny_with(train__shard_customers=1), tmp_path, progress=False)
    assert sorted(out["customer_id"]) == sorted(chosen)
    assert not (tmp_path / "shards" / "00002").exists()
    predicted, _, _ = predict_source(tmp_path, _parquet(log, tmp_path / "log.parquet"))
    np.testing.assert_allclose(predicted.set_index("customer_id").loc[out["customer_id"], "predicted_interval_days"],
                               out["predicted_interval_days"], rtol=1e-6)


def _parquet(frame: pd.DataFrame, path):
    frame.to_parquet(path)
    return path
