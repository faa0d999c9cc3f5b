"""Inputs read one way: a date format per column, one visit per timestamp, canonical ids, the as-of
date splitting the log (not rejecting it), whole-column errors, time zones."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import EXAMPLE_CSV, ROOT
from jaxlstm import load_config, train_all
from jaxlstm.asof import backtest
from jaxlstm.data.events import canonical_ids, check_events, parse_as_of
from jaxlstm.data.intervals import histories
from jaxlstm.errors import InputError
from jaxlstm.train import input_warnings


@pytest.fixture(scope="module")
def example():
    return pd.read_csv(EXAMPLE_CSV, dtype=str)


def _events(frame, **kw):
    return check_events(frame, "id", "date", "log.csv", **kw)


@pytest.mark.parametrize("fmt", ["%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d", "%d-%m-%Y %H:%M"])
def test_a_reformatted_example_log_reads_as_the_iso_one(example, fmt):
    iso = _events(example)
    other = _events(example.assign(date=pd.to_datetime(example["date"]).dt.strftime(fmt)))
    assert other.time_format == ("ISO8601" if fmt == "%Y/%m/%d" else fmt)  # pandas' ISO reader takes '/' too
    pd.testing.assert_frame_equal(other.events, iso.events)


def test_a_column_whose_day_month_order_cannot_be_decided_is_an_error(example):
    early = example[pd.to_datetime(example["date"]).dt.day <= 12]  # every date reads both ways
    text = early.assign(date=pd.to_datetime(early["date"]).dt.strftime("%d/%m/%Y"))
    with pytest.raises(InputError, match=r"log.csv: column 'date': dates can be read day-first or month-first "
                                         r"\(e.g. '\d\d/\d\d/2014' and '\d\d/\d\d/2014'\); give the format with time_format="):
        _events(text)
    given = _events(text, time_format="%d/%m/%Y")  # the user decides
    assert given.events["timestamp"].tolist() == _events(early).events["timestamp"].tolist()


def test_a_row_in_another_format_is_a_bad_row_not_a_guess(example):
    odd = example.copy()
    odd.loc[5, "date"] = "03/04/2014"  # in an ISO log: neither 3 April nor 4 March, a bad row
    with pytest.raises(InputError, match=r"unreadable timestamp at lines 7, e.g. '03/04/2014' \(use on_bad_rows='skip' "
                                         r"to set bad rows aside; the column reads as ISO8601\)"):
        _events(odd)
    skipped = _events(odd, on_bad_rows="skip")
    assert skipped.rejected["row"].tolist() == [7] and skipped.rejected["reason"].tolist() == ["unreadable timestamp"]
    with pytest.raises(InputError, match="has no value matching time_format='%Y'"):
        _events(example, time_format="%Y")


def test_repeated_rows_are_one_visit(example):
    plain = _events(example)
    repeated = _events(pd.concat([example, example.sample(3000, random_state=0)], ignore_index=True))
    pd.testing.assert_frame_equal(repeated.events, plain.events)
    assert plain.merged == 1003 and repeated.merged == 1003 + 3000
    classic = _events(example, merge_same_timestamp=False)
    assert len(classic.events) == len(example) and classic.merged == 0


def test_merged_visits_sum_their_extra_columns():
    raw = pd.DataFrame({"customer_id": ["a", "a", "a", "b"], "timestamp": ["2024-01-01", "2024-01-01", "2024-01-03", "2024-01-01"],
                        "amount": [2.0, 3.5, 1.0, 4.0]})
    checked = check_events(raw, extra_cols=("amount",))
    assert checked.events.values.tolist() == [["a", pd.Timestamp("2024-01-01"), 5.5], ["a", pd.Timestamp("2024-01-03"), 1.0],
                                              ["b", pd.Timestamp("2024-01-01"), 4.0]]
    assert checked.merged == 1 and checked.rows.tolist() == [0, 2, 3]


def test_a_visit_is_a_day_by_default():
    raw = pd.DataFrame({"customer_id": ["a", "a", "a", "a", "b"],
                        "timestamp": ["2024-01-01 18:00", "2024-01-01 09:30", "2024-01-01 23:59", "2024-01-02 00:01",
                                      "2024-01-01 12:00"],
                        "amount": [1.0, 2.0, 4.0, 8.0, 16.0]})
    days = check_events(raw, extra_cols=("amount",), **_options(None))
    # one visit a customer and day, at the day's first time, its purchases summed; midnight starts a new day
    assert days.events.values.tolist() == [["a", pd.Timestamp("2024-01-01 09:30"), 7.0],
                                           ["a", pd.Timestamp("2024-01-02 00:01"), 8.0],
                                           ["b", pd.Timestamp("2024-01-01 12:00"), 16.0]]
    assert days.merged == 2 and days.rows.tolist() == [1, 3, 4]  # (each visit's row: its earliest)
    times = check_events(raw, extra_cols=("amount",), merge_same_day=False)
    assert len(times.events) == 5 and times.merged == 0
    classic = load_config(ROOT / "configs" / "classic.toml")
    assert not classic.data.merge_same_day and not classic.data.merge_same_timestamp
    with pytest.raises(InputError, match="data.merge_same_day = true merges what data.merge_same_timestamp = false keeps"):
        load_config(None, {"data.merge_same_timestamp": False})


def _options(path):
    from jaxlstm.data.events import options

    return {k: v for k, v in options(load_config(path).data).items() if k.startswith("merge")}


def test_ids_have_one_canonical_type():
    mixed = pd.Series([4744, "4744", " 4744 ", 17.0, "x "], dtype=object)  # any text: all text, stripped
    ids, missing = canonical_ids(mixed)
    assert ids.tolist() == ["4744", "4744", "4744", "17", "x"] and not missing.any()
    ids, _ = canonical_ids(pd.Series(["1", " 1", "2"]), source="v.csv")  # a CSV of integers: int64
    assert ids.tolist() == [1, 1, 2] and ids.dtype == np.int64
    ids, _ = canonical_ids(pd.Series(["1", " 1", "2"]), source="v.parquet")  # typed text stays text
    assert ids.tolist() == ["1", "1", "2"]
    with pytest.raises(InputError, match="v.csv: column 'id': ids '001' and '1' are the same number"):
        canonical_ids(pd.Series(["001", "1"]), "id", "v.csv")
    _, missing = canonical_ids(pd.Series(["a", "  ", None]))
    assert missing.tolist() == [False, True, True]


def test_mixed_id_types_train_and_predict_through_the_api(tmp_path):
    base = pd.DataFrame({"customer_id": [4744] * 6 + ["4744 "] * 2 + ["b"] * 8,
                         "timestamp": pd.date_range("2024-01-01", periods=8, freq="5D").tolist() * 2})
    cfg = load_config(None, {"model.mode": "pooled", "train.pooled_epochs": 1, "train.survival_epochs": 0, "train.epochs": 1})
    shuffled = base.sample(frac=1.0, random_state=1).astype(object)
    a = train_all(base.astype(object), cfg, tmp_path / "a", progress=False)
    b = train_all(shuffled, cfg, tmp_path / "b", progress=False)
    assert a["customer_id"].tolist() == b["customer_id"].tolist() == ["4744", "b"]  # one customer, order-independent
    assert a["n_visits"].tolist() == [8, 8]


def test_visits_on_or_after_the_as_of_date_are_left_out_not_rejected():
    raw = pd.DataFrame({"customer_id": ["a", "a", "a", "b"],
                        "timestamp": ["2024-01-01", "2024-02-29 23:59:59", "2024-03-01", "2024-03-05"]})
    checked = check_events(raw, as_of="2024-03-01")  # a bare date is the start of its day: strictly before counts
    assert checked.events["timestamp"].max() == pd.Timestamp("2024-02-29 23:59:59")
    assert checked.later["timestamp"].tolist() == [pd.Timestamp("2024-03-01"), pd.Timestamp("2024-03-05")]
    assert checked.rejected.empty and checked.after_as_of.tolist() == ["b"]
    with pytest.raises(InputError, match="no visit before the as-of date 2024-01-01"):
        check_events(raw, as_of="2024-01-01")


def test_as_of_inside_the_log_trains_on_the_past_and_scores_on_the_rest(example, tmp_path):
    cfg = load_config(None, {"model.mode": "pooled", "train.pooled_epochs": 2, "train.survival_epochs": 0,
                             "data.id_col": "id", "data.time_col": "date"})
    log = example.head(4000)
    train_all(log, cfg, tmp_path / "run", progress=False, as_of="2014-10-01", source="log.csv")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    later = (pd.to_datetime(log["date"]) >= "2014-10-01").sum()
    assert m["rows"]["after_as_of"] == later > 0 and m["rows"]["rejected"] == 0
    assert m["rows"]["used"] + m["rows"]["merged_same_timestamp"] + later == len(log)
    score = m["after_as_of"]
    assert score["came_back"] > 0 and set(score["point_mae_days"]) >= {"answer", "customer_median", "population_median"}


def test_a_far_future_row_warns_and_names_its_row(example):
    log = pd.concat([example, pd.DataFrame({"id": ["1"], "date": ["2099-01-01"]})], ignore_index=True)
    checked = _events(log)
    as_of = pd.Timestamp("2099-01-02")
    messages = input_warnings(checked, as_of, 90.0, "log.csv", explicit=False)
    assert len(messages) == 2
    assert "1 visits lie more than 90 days after 99.9% of the log (latest 2099-01-01, at rows/lines 15275)" in messages[0]
    assert "after today" in messages[1]
    assert input_warnings(_events(example), pd.Timestamp("2015-01-01"), 90.0, "log.csv", explicit=False) == []


def test_a_backtest_window_without_data_says_so(example):
    events = _events(example).events
    cfg = load_config(None, {"train.survival_epochs": 1})
    short = events[events["timestamp"] < events["timestamp"].min() + pd.Timedelta(days=30)]
    assert "too short to backtest" in backtest(short, pd.Timestamp("2016-01-01"), cfg, progress=False)["skipped"]


def test_whole_column_problems_are_one_line():
    epoch = pd.DataFrame({"customer_id": ["a", "a"], "timestamp": ["1704067200", "1704412800"]})
    with pytest.raises(InputError, match=r"v.csv: column 'timestamp' holds numbers, not timestamps \(e.g. '1704067200', '1704412800'\)"):
        check_events(epoch, source="v.csv")
    words = pd.DataFrame({"customer_id": ["a", "a"], "timestamp": ["2024-01-01", "2024-01-02"], "amount": ["lots", "few"]})
    with pytest.raises(InputError, match="column 'amount' holds .* values, not numbers"):
        check_events(words, source="v.csv", extra_cols=("amount",))


def test_zoned_times_are_counted_on_the_configured_clock():
    raw = pd.DataFrame({"customer_id": ["a", "a"], "timestamp": ["2024-01-01T00:30:00+01:00", "2024-01-03T23:30:00+01:00"]})
    utc = check_events(raw)
    berlin = check_events(raw, timezone="Europe/Berlin")
    assert utc.events["timestamp"].tolist() == [pd.Timestamp("2023-12-31 23:30"), pd.Timestamp("2024-01-03 22:30")]
    assert berlin.events["timestamp"].tolist() == [pd.Timestamp("2024-01-01 00:30"), pd.Timestamp("2024-01-03 23:30")]
    assert histories(berlin.events, floor_days=True).intervals.tolist() == [2.0]  # 1 Jan -> 3 Jan, local days
    assert histories(utc.events, floor_days=True).intervals.tolist() == [3.0]
    assert parse_as_of("2024-03-01T00:00:00Z", "Europe/Berlin") == pd.Timestamp("2024-03-01 01:00")
    typed = pd.DataFrame({"customer_id": ["a"], "timestamp": pd.to_datetime(["2024-01-01T00:30:00+01:00"])})
    assert check_events(typed, timezone="Europe/Berlin").events["timestamp"].tolist() == [pd.Timestamp("2024-01-01 00:30")]


def test_api_errors_name_parameters_and_the_cli_names_flags():
    import sys

    from conftest import ROOT
    sys.path.insert(0, str(ROOT / "scripts"))
    import _cli

    with pytest.raises(InputError) as e:
        check_events(pd.DataFrame({"customer_id": [1], "when": ["2024-01-01"]}), source="v.csv")
    assert "choose another with time_col=" in str(e.value)
    assert _cli.as_flags(str(e.value)).endswith("choose another with --time-col)")
    with pytest.raises(InputError, match=r"as_of='someday': not a date"):
        parse_as_of("someday")
    assert _cli.as_flags("as_of='someday': not a date") == "--as-of 'someday': not a date"
