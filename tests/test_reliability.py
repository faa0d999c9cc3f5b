"""Nothing lost: kill -9 then --resume, bad-input classes at the CLI, bad rows set aside, conservation."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import EXAMPLE_CSV, ROOT, SCRIPTS, _cli, cli_fails, script
from jaxlstm import train_all
from jaxlstm.config import Config
from jaxlstm.data.events import canonical_ids, check_events
from jaxlstm.data.intervals import histories
from jaxlstm.data.windows import make_windows
from jaxlstm.errors import InputError
from jaxlstm.predict import RunModel, add_unanswered, load_run, predict_frame
from jaxlstm.synth import make_customers

TRAIN, PREDICT, MAKE = script("train_all"), script("predict"), script("make_customers")
_cli_fails = cli_fails


def _files(tmp_path):
    """One file per bad-input class."""
    good = "customer_id,timestamp\na,2024-01-01\na,2024-01-05\nb,2024-01-02\n"
    files = {
        "empty.csv": "",
        "header_only.csv": "customer_id,timestamp\n",
        "no_time.csv": "customer_id,when\na,2024-01-01\n",
        "unreadable.csv": good + "b,2024-02-30\nc,soon\n",
        "null_id.csv": good + ",2024-01-09\n",
        "null_time.csv": good + "c,\n",
        "mixed_zones.csv": "customer_id,timestamp\na,2024-01-01T10:00:00Z\na,2024-01-05T10:00:00+02:00\nb,2024-01-07 10:00\n",
        "good.csv": good,
        "future.csv": good + "b,2031-01-01\n",
        "ambiguous.csv": "customer_id,timestamp\na,01/02/2024\na,03/04/2024\nb,05/06/2024\n",
        "numbers.csv": "customer_id,timestamp\na,1704067200\na,1704412800\nb,1704153600\n",
        "text_amount.csv": "customer_id,timestamp,amount\na,2024-01-01,lots\na,2024-01-05,few\n",
        "zero_ids.csv": "customer_id,timestamp\n001,2024-01-01\n1,2024-01-05\n",
        "semicolons.csv": "customer_id;timestamp\na;2024-01-01\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 this is not really parquet")
    (tmp_path / "visits.json").write_text("{}")
    return tmp_path


BAD_TRAIN = [
    (["--customers", "missing.parquet"], "error: missing.parquet: file not found"),
    (["--customers", "corrupt.parquet"], "corrupt.parquet: cannot read file"),
    (["--customers", "visits.json"], "visits.json: unknown file type"),
    (["--customers", "empty.csv"], "empty.csv: file is empty"),
    (["--customers", "header_only.csv"], "header_only.csv: no rows"),
    (["--customers", "no_time.csv"], "no_time.csv: missing column 'timestamp' (columns: customer_id, when; choose another with --time-col)"),
    (["--customers", "unreadable.csv"], "unreadable.csv: column 'timestamp': unreadable timestamp at lines 5, 6, e.g. '2024-02-30'"),
    (["--customers", "null_id.csv"], "null_id.csv: column 'customer_id': missing customer id at lines 5"),
    (["--customers", "null_time.csv"], "null_time.csv: column 'timestamp': missing timestamp at lines 5"),
    (["--customers", "mixed_zones.csv"], "mixed_zones.csv: column 'timestamp': no time zone (other rows have one) at lines 4"),
    (["--customers", "future.csv", "--as-of", "2023-06-30"],
     "future.csv: no visit before the as-of date 2023-06-30 00:00:00 (the first is 2024-01-01 00:00:00)"),
    (["--customers", "ambiguous.csv"], "ambiguous.csv: column 'timestamp': dates can be read day-first or month-first "
                                       "(e.g. '01/02/2024' and '03/04/2024'); give the format with --time-format"),
    (["--customers", "numbers.csv"], "numbers.csv: column 'timestamp' holds numbers, not timestamps (e.g. '1704067200', "
                                     "'1704412800')"),
    (["--customers", "text_amount.csv", "--extra-col", "amount"],
     "text_amount.csv: column 'amount' holds str values, not numbers (e.g. 'lots', 'few')"),
    (["--customers", "semicolons.csv"], "semicolons.csv: missing column 'customer_id' (columns: customer_id;timestamp; choose "
                                        "another with --id-col; the file looks ';'-separated: write it with commas)"),
    (["--customers", "zero_ids.csv"], "zero_ids.csv: column 'customer_id': ids '001' and '1' are the same number"),
    (["--customers", "good.csv", "--set", "data.timezone=Mars/Olympus"], "data.timezone 'Mars/Olympus': unknown time zone"),
    (["--customers", "future.csv", "--as-of", "someday"], "--as-of 'someday': not a date"),
    (["--customers", "good.csv", "--as-of", "01-02-2024"], "--as-of '01-02-2024': day and month could be swapped; write it as YYYY-MM-DD"),
    (["--customers", "good.csv", "--out", "good.csv"], "--out good.csv is a file: a run folder is a folder"),
    (["--epochs", "-1"], "train.epochs must be >= 0, got -1"),
    (["--set", "data.look_back=0"], "data.look_back must be >= 1, got 0"),
    (["--set", "train.nonsense=1"], "unknown config key 'train.nonsense'"),
    (["--set", "train.epochs=ten"], "--set train.epochs=ten: 'train.epochs' takes an integer, got 'ten'"),
    (["--set", "train.epochs=abc", "--epochs", "1"], "--set train.epochs=abc: 'train.epochs' takes an integer"),
    (["--set", "train.epochs=2", "--epochs", "1"], "--epochs and --set train.epochs both set train.epochs: give one of them"),
    (["--set", "data.bins=7,30,90"], "(a TOML list, e.g. data.bins=[7, 30, 90])"),
    (["--set", "data.floor_days=yes"], "'data.floor_days' takes true or false, got 'yes'"),
    (["--mode", "pooled", "--epochs", "3"], "mode pooled trains none: use --pooled-epochs for the shared model"),
    (["--out", "x", "--resume", "--overwrite"], "--resume continues the run in --out, --overwrite replaces it"),
    (["--set", "epochs"], "--set 'epochs': expected SECTION.KEY=VALUE"),
    (["--config", "nowhere.toml"], "config file not found: nowhere.toml"),
    (["--sample-customers", "0"], "--sample-customers must be >= 1, got 0"),
    (["--resume"], "--resume needs --out"),
    (["--seed", "-1"], "train.seed must be in [0, 2**31), got -1"),
    (["--mode", "finetune", "--set", "train.pooled_epochs=0"],
     "model.mode finetune trains the shared model first: train.pooled_epochs must be >= 1"),
]


@pytest.mark.parametrize("args, message", BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_every_bad_input_class_is_one_line_and_exit_2(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(_files(tmp_path))
    out = [] if "--resume" in args or "--out" in args else ["--out", tmp_path / "run"]
    line = _cli_fails(TRAIN, [*args, *out, "--quiet"], capsys)
    assert line.startswith("error: ") and message in line, line
    assert not (tmp_path / "run" / "predictions.parquet").exists()


BAD_MAKE = [
    (["--jitter", "3"], "--jitter goes with --period"),
    (["--one-off-share", "2"], "--one-off-share and --churn-share must be in [0, 1]"),
    (["--purchases", "--visits", "3", "5"], "--visits does not apply with --purchases"),
    (["--days", "30", "--period", "7"], "--period does not apply with --days"),
    (["--churn-share", "0.2"], "--churn-share does not apply without --days"),
    (["--date-only"], "--date-only and --truth-out go with --purchases"),
]


@pytest.mark.parametrize("args, message", BAD_MAKE, ids=[" ".join(a) for a, _ in BAD_MAKE])
def test_make_customers_refuses_options_it_would_ignore(args, message, tmp_path, capsys):
    line = _cli_fails(MAKE, ["--n", "5", *args, "--out", tmp_path / "x.csv"], capsys)
    assert line == f"error: {message}" and not (tmp_path / "x.csv").exists()


def test_make_customers_makes_the_output_folder(tmp_path):
    _cli.run(MAKE.main, ["--n", "5", "--days", "60", "--out", str(tmp_path / "new" / "log.parquet")])
    assert pd.read_parquet(tmp_path / "new" / "log.parquet")["customer_id"].nunique() == 5


def test_predict_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, tiny):
    monkeypatch.chdir(_files(tmp_path))
    assert "no such run folder" in _cli_fails(PREDICT, ["--run", "nope", "--customers", "x.csv", "--out", "p.parquet"], capsys)
    (tmp_path / "not_a_run").mkdir()
    assert "no checkpoint found" in _cli_fails(PREDICT, ["--run", "not_a_run", "--customers", "x.csv", "--out", "p.parquet"], capsys)
    assert "expected a .parquet or .csv" in _cli_fails(PREDICT, ["--run", "nope", "--customers", "x.csv", "--out", "p.txt"], capsys)
    train_all(make_customers(6, seed=1, visits=(6, 9)), tiny, tmp_path / "run", progress=False)
    line = _cli_fails(PREDICT, ["--run", "run", "--customers", "null_time.csv", "--out", "p.parquet"], capsys)
    assert "null_time.csv: column 'timestamp': missing timestamp at lines 5" in line
    # the same file with --on-bad-rows skip: customer c (only a bad row) is kept, with a reason
    _cli.run(PREDICT.main, ["--run", "run", "--customers", "null_time.csv", "--out", "p.parquet", "--on-bad-rows", "skip"])
    pred = pd.read_parquet(tmp_path / "p.parquet").set_index("customer_id")
    assert sorted(pred.index) == ["a", "b", "c"] and pred.loc["c", "status"] == "all_rows_rejected"
    rejected = pd.read_parquet(tmp_path / "p.rejected_rows.parquet")
    assert rejected[["row", "customer_id", "reason"]].values.tolist() == [[5, "c", "missing timestamp"]]
    # a log written day-first, read with predict's own --time-format; visits after --as-of are left out and counted
    capsys.readouterr()
    _cli.run(PREDICT.main, ["--run", "run", "--customers", "ambiguous.csv", "--out", "p.parquet", "--time-format", "%d/%m/%Y",
                            "--as-of", "2024-03-01"])
    assert "2 visits on or after the as-of date 2024-03-01 left out (not in n_visits)" in capsys.readouterr().err
    pred = pd.read_parquet(tmp_path / "p.parquet").set_index("customer_id")
    assert pred.loc["a", "last_visit"] == pd.Timestamp("2024-02-01") and pred.loc["a", "n_visits"] == 1
    assert pred.loc["b", "status"] == "too_few_visits"
    # an as-of date before the run's own: its models learned from later visits, which predict.py says
    logged = make_customers(6, seed=1, visits=(6, 9))
    logged.to_csv(tmp_path / "trained.csv", index=False)
    early = load_run(tmp_path / "run").as_of - pd.Timedelta(days=30)
    _cli.run(PREDICT.main, ["--run", "run", "--customers", "trained.csv", "--out", "p.parquet", "--as-of", f"{early:%Y-%m-%d}"])
    assert f"warning: --as-of {early:%Y-%m-%d} is before the run's as-of date" in capsys.readouterr().err
    # a run folder written by a jaxlstm with another parameter layout is refused, not misread
    capsys.readouterr()
    answers = tmp_path / "run" / "answers.json"
    answers.write_text(json.dumps({**json.loads(answers.read_text()), "schema_version": 1}))
    line = _cli_fails(PREDICT, ["--run", "run", "--customers", "x.csv", "--out", "p.parquet"], capsys)
    assert "answers.json: written by another jaxlstm version (schema 1; this one reads 3): train it again" in line


def test_skip_sets_bad_rows_aside_with_reasons_and_keeps_every_customer(tmp_path, tiny, capsys):
    events = make_customers(12, seed=3, visits=(8, 20), one_off_share=0.0)
    raw = events.assign(timestamp=events["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")).astype(object)
    raw.loc[2, "timestamp"] = "garbage"
    raw.loc[5, "customer_id"] = None
    raw.loc[7, "timestamp"] = None
    raw.loc[9, "timestamp"] = "2099-01-01"
    n = len(raw)
    raw = pd.concat([raw, pd.DataFrame({"customer_id": ["ghost", "ghost"], "timestamp": ["nope", "2099-05-05"]})], ignore_index=True)
    path = tmp_path / "v.csv"
    raw.to_csv(path, index=False)
    with pytest.raises(InputError, match=r"column 'customer_id': missing customer id at lines 7 \(use on_bad_rows='skip'"):
        train_all(pd.read_csv(path, dtype=str), tiny, progress=False, source=str(path), as_of="2030-01-01")

    run = tmp_path / "run"
    _cli.run(TRAIN.main, ["--customers", str(path), "--config", str(ROOT / "configs" / "tiny.toml"), "--out", str(run),
                          "--on-bad-rows", "skip", "--as-of", "2030-01-01", "--quiet"])
    assert f"rejected 4 of {n + 2:,} rows" in capsys.readouterr().out
    rejected = pd.read_parquet(run / "rejected_rows.parquet")
    assert rejected["row"].tolist() == [4, 7, 9, n + 2]  # CSV line numbers
    assert rejected["reason"].tolist() == ["unreadable timestamp", "missing customer id", "missing timestamp",
                                           "unreadable timestamp"]
    assert rejected["timestamp"].tolist()[:2] == ["garbage", events["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")[5]]
    metrics = json.loads((run / "metrics.json").read_text())
    # visits after the as-of date are not bad rows: left out of training, counted; rows of one customer and day are
    # one visit (data.merge_same_day): every row is used, merged, after the as-of date or rejected
    good = raw.drop(index=[2, 5, 7, 9, n, n + 1])
    days = good.assign(day=pd.to_datetime(good["timestamp"]).dt.floor("D"))[["customer_id", "day"]]
    merged = len(good) - len(days.drop_duplicates())
    assert merged > 0
    assert metrics["rows"] == {"read": len(raw), "used": len(raw) - 6 - merged, "merged_same_timestamp": merged, "after_as_of": 2,
                               "rejected": 4, "customers_all_rows_rejected": 0, "customers_only_after_as_of": 1,
                               "rejected_by_reason": {"unreadable timestamp": 2, "missing customer id": 1, "missing timestamp": 1},
                               "time_format": "ISO8601"}
    pred = pd.read_parquet(run / "predictions.parquet")
    assert sorted(pred["customer_id"]) == sorted(set(raw["customer_id"].dropna()))  # ghost included
    ghost = pred.set_index("customer_id").loc["ghost"]  # its only readable visit is after the as-of date
    assert ghost["status"] == "too_few_visits" and np.isnan(ghost["predicted_interval_days"]) and ghost["n_visits"] == 0
    assert metrics["customers"] == len(pred) == 13
    # the same folder overwritten by a run of a clean log: no rejected rows of the earlier run are left behind
    train_all(events, tiny, run, progress=False)
    assert not (run / "rejected_rows.parquet").exists()


def test_api_misuse_is_an_input_error_naming_the_parameter(tiny):
    with pytest.raises(InputError, match="events must be a pandas DataFrame of visits, got str"):
        train_all("visits.csv", tiny)
    with pytest.raises(InputError, match=r"config must be a Config, got str \(a TOML file: jaxlstm.load_config\(path\)\)"):
        train_all(make_customers(3, seed=0), "configs/tiny.toml")
    with pytest.raises(InputError, match="resume=True needs out_dir"):
        train_all(make_customers(3, seed=0), tiny, resume=True)


# --- conservation under random input -------------------------------------------------------------

STAMPS = st.one_of(
    st.datetimes(min_value=pd.Timestamp("2000-01-01").to_pydatetime(), max_value=pd.Timestamp("2040-01-01").to_pydatetime())
    .map(lambda d: d.isoformat(sep=" ")),
    st.dates().map(str),
    st.sampled_from(["", "not a date", "2024-02-30", "2024-01-01T00:00:00Z", "2024-03-01T12:00:00+05:30", "31/12/2024"]),
    st.none(),
)


@st.composite
def raw_logs(draw):
    n = draw(st.integers(1, 40))
    if draw(st.booleans()):
        pool = draw(st.lists(st.integers(-5, 10**12), min_size=1, max_size=8))
    else:
        pool = draw(st.lists(st.text(min_size=0, max_size=4), min_size=1, max_size=8))
    ids = [draw(st.one_of(st.sampled_from(pool), st.none())) if draw(st.integers(0, 9)) == 0 else draw(st.sampled_from(pool))
           for _ in range(n)]
    stamps = [draw(STAMPS) for _ in range(n)]
    return pd.DataFrame({"customer_id": pd.Series(ids, dtype=object), "timestamp": pd.Series(stamps, dtype=object)})


@settings(max_examples=150, deadline=None)
@given(raw_logs(), st.sampled_from([None, "2025-01-01"]), st.integers(1, 4))
def test_skip_conserves_rows_and_customers(raw, as_of, look_back):
    try:
        checked = check_events(raw, source="fuzz.parquet", on_bad_rows="skip", as_of=as_of)
    except InputError as e:  # allowed only when nothing usable is left, or a whole column is unreadable
        assert any(m in str(e) for m in ("every row is bad", "no visit before the as-of date", "no value that reads as",
                                         "day-first or month-first")), str(e)
        return
    # every row is used, merged into a visit at the same timestamp, after the as-of date, or rejected
    assert len(checked.events) + checked.merged + len(checked.later) + len(checked.rejected) == len(raw)
    assert checked.rejected["reason"].notna().all()
    assert not checked.events.duplicated(["customer_id", "timestamp"]).any()
    kept = set(checked.events["customer_id"])
    assert not kept & set(checked.orphans) and not kept & set(checked.after_as_of)
    ids, missing = canonical_ids(raw["customer_id"])
    assert kept | set(checked.orphans) | set(checked.after_as_of) == set(ids[~missing])
    if as_of is not None:
        assert (checked.events["timestamp"] < pd.Timestamp(as_of)).all()
        assert (checked.later["timestamp"] >= pd.Timestamp(as_of)).all()
    # and every customer comes out of prediction exactly once, with a value or a reason
    config = Config()
    hist = histories(checked.events)
    empty = RunModel(config, np.zeros(0, str), np.zeros(0, np.float32), None, np.zeros(0, bool), np.zeros(0, bool))
    pred = add_unanswered(predict_frame(empty, hist, make_windows(hist, look_back)), checked)
    assert len(pred) == len(kept) + len(checked.orphans) + len(checked.after_as_of) == pred["customer_id"].nunique()
    has_value = pred["predicted_interval_days"].notna()
    rejected = pred["status"] == "all_rows_rejected"
    if len(hist.intervals):  # else there is no interval at all to fall back on: NaN, status too_few_visits
        assert (has_value | rejected | pred["customer_id"].isin(checked.after_as_of)).all()
    assert pred.loc[~has_value, "status"].isin(["all_rows_rejected", "too_few_visits"]).all()
    assert (pred.loc[has_value, "predicted_interval_days"] >= 0).all()


# --- kill -9 mid-training, then --resume ---------------------------------------------------------

def _train_cmd(data, out, *extra):
    # one epoch of the shared models: what is killed and resumed is the own models' training
    return [sys.executable, str(SCRIPTS / "train_all.py"), "--customers", str(data), "--config",
            str(ROOT / "configs" / "tiny.toml"), "--out", str(out), "--epochs", "40", "--set", "train.patience=0",
            "--set", "train.pooled_epochs=1", "--set", "train.survival_epochs=1", *extra]


def _committed_steps(ckpt):
    return [int(p.name) for p in ckpt.glob("*") if p.name.isdigit()] if ckpt.is_dir() else []


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    data = tmp_path / "visits.parquet"
    make_customers(300, seed=11, visits=(6, 60)).to_parquet(data)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # the uninterrupted run beside the one that is killed
    straight = subprocess.Popen(_train_cmd(data, tmp_path / "straight", "--quiet"), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        run = tmp_path / "killed"
        proc = subprocess.Popen(_train_cmd(data, run, "--quiet"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while max(_committed_steps(run / "checkpoints"), default=0) < 3 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "training finished before it could be killed: make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        _, straight_err = straight.communicate(timeout=600)
    assert straight.returncode == 0, straight_err
    assert not (run / "predictions.parquet").exists()

    resumed = subprocess.run(_train_cmd(data, run, "--resume"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    done = int(resumed.stderr.split("after epoch ")[1].split()[0])
    assert 3 <= done < 40
    pd.testing.assert_frame_equal(pd.read_parquet(run / "predictions.parquet"),
                                  pd.read_parquet(tmp_path / "straight" / "predictions.parquet"))
    m = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == list(range(1, 41))  # history survives the kill
    assert m["epochs_run"] == 40 - done


def test_resume_refuses_other_data_or_config(tmp_path, tiny, capsys):
    data = tmp_path / "v.csv"
    pd.read_csv(EXAMPLE_CSV).head(3000).to_csv(data, index=False)
    base = ["--customers", data, "--id-col", "id", "--time-col", "date", "--config", ROOT / "configs" / "tiny.toml",
            "--set", "train.pooled_epochs=1", "--set", "train.survival_epochs=1", "--out", tmp_path / "run", "--quiet"]
    _cli.run(TRAIN.main, [str(a) for a in base])
    capsys.readouterr()
    assert ("the config differs from the run's (train.seed: 0 in the run, 5 now)"
            in _cli_fails(TRAIN, [*base, "--resume", "--seed", "5"], capsys))
    pd.read_csv(EXAMPLE_CSV).head(2000).to_csv(data, index=False)
    assert "other data or another config" in _cli_fails(TRAIN, [*base, "--resume"], capsys)
