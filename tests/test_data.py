"""Data layer: events validation, intervals, windows, bins, split and padding."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import EXAMPLE_CSV, visit_log
from jaxlstm.config import MIN_BIN_WIDTH, load_config
from jaxlstm.data import batching
from jaxlstm.data.events import check_events, load_events, validate_events
from jaxlstm.data.intervals import histories
from jaxlstm.data.windows import bin_values, decode, encode, make_windows, to_bins
from jaxlstm.errors import InputError


def test_classic_recipe_intervals_in_whole_days():
    # RECIPE.md's example: visits -> intervals 0, 44, 18, 0, 54
    stamps = ["2015-05-15 14:03:51", "2015-05-15 15:32:46", "2015-06-28 18:00:17",
              "2015-07-16 21:27:18", "2015-07-16 22:04:51", "2015-09-08 14:59:56"]
    ev = validate_events(pd.DataFrame({"customer_id": 1, "timestamp": stamps}))
    assert histories(ev, floor_days=True).intervals.tolist() == [0, 44, 18, 0, 54]
    exact = histories(ev).intervals
    assert exact[0] == pytest.approx((3600 + 28 * 60 + 55) / 86400)  # 14:03:51 -> 15:32:46
    w = make_windows(histories(ev, floor_days=True), 3)
    assert w.x.tolist() == [[0, 44, 18], [44, 18, 0]] and w.y.tolist() == [0, 54]
    assert w.last.tolist() == [[18, 0, 54]] and w.has_last.tolist() == [True]


def test_unsorted_input_is_sorted_per_customer():
    ev = validate_events(pd.DataFrame({
        "customer_id": ["b", "a", "b", "a", "b"],
        "timestamp": ["2024-01-10", "2024-01-05", "2024-01-01", "2024-01-01", "2024-01-04"],
    }))
    h = histories(ev)
    assert h.keys.tolist() == ["a", "b"]
    assert h.of(0).tolist() == [4.0] and h.of(1).tolist() == [3.0, 6.0]
    assert list(h.last_visit) == [np.datetime64("2024-01-05"), np.datetime64("2024-01-10")]


@st.composite
def logs(draw):
    n = draw(st.integers(1, 8))
    counts = draw(st.lists(st.integers(1, 12), min_size=n, max_size=n))
    gaps = {f"id{i}": draw(st.lists(st.floats(0, 400, allow_nan=False), min_size=c - 1, max_size=c - 1))
            for i, c in enumerate(counts)}
    return gaps, draw(st.integers(1, 4))


@settings(max_examples=60, deadline=None)
@given(logs())
def test_windows_follow_intervals(case):
    gaps, L = case
    ev = visit_log(gaps).sample(frac=1.0, random_state=0)  # order must not matter
    h = histories(validate_events(ev, merge_same_timestamp=False))  # 0-day gaps stay: the window arithmetic is tested
    w = make_windows(h, L)
    assert h.n_customers == len(gaps)
    for i, key in enumerate(h.keys):
        ref = np.asarray(gaps[key])
        got = h.of(i)
        assert np.allclose(got, ref, atol=2e-5)  # timestamps hold whole seconds
        n = max(len(ref) - L, 0)
        assert w.counts[i] == n
        xs, ys = w.x[w.offsets[i]:w.offsets[i + 1]], w.y[w.offsets[i]:w.offsets[i + 1]]
        for j in range(n):
            assert np.allclose(xs[j], got[j:j + L]) and np.isclose(ys[j], got[j + L])
        assert w.has_last[i] == (len(ref) >= L)
        if w.has_last[i]:
            assert np.allclose(w.last[i], got[-L:])


# the edges a config accepts: from 1 day up, each at least MIN_BIN_WIDTH above the one before (the
# narrowest spacing drawn often, where the classes' representative days are closest)
_steps = st.one_of(st.just(MIN_BIN_WIDTH), st.floats(MIN_BIN_WIDTH, 200, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=50),
       st.floats(1, 500, allow_nan=False), st.lists(_steps, max_size=5))
def test_bins_cover_every_interval(days, first, steps):
    edges = tuple(first + np.r_[0.0, np.cumsum(steps)])
    load_config(None, {"data.bins": [float(e) for e in edges]})  # a config accepts them
    cls = to_bins(np.asarray(days), edges)
    lo = np.r_[-np.inf, edges][cls]
    hi = np.r_[edges, np.inf][cls]
    assert ((lo <= days) & (days < hi)).all()
    assert len(bin_values(edges)) == len(edges) + 1
    assert np.all(np.diff(bin_values(edges)) > 0)


@pytest.mark.parametrize("edges", [(30.0, 30.0), (500.0, 500.0 + 1e-13), (7.0, 7.001, 30.0), (30.0, 7.0)])
def test_bins_closer_than_the_minimum_width_are_refused(edges):
    with pytest.raises(InputError, match="data.bins must increase by at least 0.01 days"):
        load_config(None, {"data.bins": list(edges)})


def test_encode_decode_roundtrip():
    d = np.array([0.0, 0.5, 7.0, 365.0])
    assert np.allclose(decode(encode(d)), d, rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=30), st.sampled_from(["temporal", "random"]), st.integers(0, 3))
def test_split_keeps_a_training_window(counts, how, seed):
    offsets = np.r_[0, np.cumsum(counts)]
    seeds = batching.customer_seeds(np.array([f"k{i}" for i in range(len(counts))]))
    is_val = batching.split_windows(offsets, seeds, how, 0.2, seed)
    for i, c in enumerate(counts):
        v = is_val[offsets[i]:offsets[i + 1]]
        if c:
            assert (~v).sum() >= 1
        if how == "temporal" and c:
            n_val = v.sum()
            assert n_val == min(max(int(np.floor(c * 0.2 + 0.5)), 1), c - 1)
            assert not v[: c - n_val].any() and v[c - n_val:].all()  # the latest windows validate


@settings(max_examples=30, deadline=None)
@given(logs(), st.integers(1, 5), st.integers(1, 6))
def test_packing_conserves_windows(case, chunk, batch):
    gaps, L = case
    h = histories(validate_events(visit_log(gaps)))
    w = make_windows(h, L)
    seeds = batching.customer_seeds(h.keys)
    is_val = batching.split_windows(w.offsets, seeds, "temporal", 0.2, 0)
    center = batching.centers(w, is_val)
    rows = np.flatnonzero(w.counts > 0)
    chunks = batching.pack_chunks(w, is_val, center, seeds, rows, chunk, batch)
    seen = np.concatenate([c.rows[c.real] for c in chunks]) if chunks else np.zeros(0, int)
    assert sorted(seen.tolist()) == rows.tolist()  # every customer with a window, once
    for c in chunks:
        assert c.x_train.shape[1] % batch == 0 and c.x_val.shape[1] % batch == 0
        assert c.x_train.shape[0] == chunk
        for i, r in enumerate(c.rows):
            if r < 0:
                assert c.n_train[i] == 0 and c.n_val[i] == 0
                continue
            sel = np.arange(w.offsets[r], w.offsets[r + 1])
            tr = sel[~is_val[sel]]
            assert c.n_train[i] == len(tr) and c.n_val[i] == len(sel) - len(tr)
            assert np.allclose(decode(c.x_train[i, : len(tr), :, 0] + c.center[i]), w.x[tr], rtol=1e-4, atol=1e-4)
            assert np.all(c.x_train[i, len(tr):] == 0)  # padding is zero (and masked by n_train)


def test_customer_seeds_depend_on_id_only():
    a = batching.customer_seeds(np.array(["x", "y", "z"]))
    b = batching.customer_seeds(np.array(["z", "x"]))
    assert a[0] == b[1] and a[2] == b[0] and len(set(a.tolist())) == 3


def test_example_transactions_loads():
    ev = load_events(EXAMPLE_CSV, "id", "date")
    # 15,273 rows, 1,003 of which repeat a customer and a date: in a date-only log, one visit
    assert len(ev) == 15273 - 1003 and ev["customer_id"].nunique() == 5000 and ev["customer_id"].dtype == np.int64
    assert len(load_events(EXAMPLE_CSV, "id", "date", merge_same_timestamp=False)) == 15273


@pytest.mark.parametrize("frame, cols, message", [
    (pd.DataFrame({"customer_id": [1], "when": ["2024-01-01"]}), ("customer_id", "timestamp"), "missing column 'timestamp'"),
    (pd.DataFrame({"customer_id": [1, None], "timestamp": ["2024-01-01", "2024-01-02"]}), ("customer_id", "timestamp"),
     "column 'customer_id': missing customer id at rows 1"),
    (pd.DataFrame({"customer_id": [1, 2, 3], "timestamp": ["2024-01-01", "yesterday", "2024-13-45"]}),
     ("customer_id", "timestamp"), "column 'timestamp': unreadable timestamp at rows 1, 2, e.g. 'yesterday' \\(use on_bad_rows='skip'"),
    (pd.DataFrame({"customer_id": [], "timestamp": []}), ("customer_id", "timestamp"), "no rows"),
])
def test_bad_events_name_the_problem(frame, cols, message):
    with pytest.raises(InputError, match=message):
        validate_events(frame, *cols, source="visits.parquet")


def test_csv_errors_give_line_numbers(tmp_path):
    p = tmp_path / "v.csv"
    p.write_text("customer_id,timestamp\n1,2024-01-01\n2,not a date\n")
    with pytest.raises(InputError, match=r"v.csv: column 'timestamp': unreadable timestamp at lines 3, e.g. 'not a date'"):
        load_events(p)
    with pytest.raises(InputError, match="file not found"):
        load_events(tmp_path / "missing.parquet")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="bad.parquet: cannot read file"):
        load_events(tmp_path / "bad.parquet")


def test_timezones_become_utc():
    ev = validate_events(pd.DataFrame({"customer_id": [1, 1], "timestamp": ["2024-01-01T10:00:00+02:00", "2024-01-02T08:00:00Z"]}))
    assert ev["timestamp"].tolist() == [pd.Timestamp("2024-01-01 08:00"), pd.Timestamp("2024-01-02 08:00")]
    with pytest.raises(InputError, match=r"no time zone \(other rows have one\) at rows 1"):
        validate_events(pd.DataFrame({"customer_id": [1, 1], "timestamp": ["2024-01-01T10:00:00+02:00", "2024-01-02 08:00"]}))


def test_day_first_dates_are_not_taken_for_zones_and_float_ids_stay_whole():
    # "13-02-2024" ends in "-2024", which is not a UTC offset; an int id column with a null reads as float
    raw = pd.DataFrame({"customer_id": [17.0, 17.0, None, 2.0], "timestamp": ["13-02-2024", "01-09-2024", "01-10-2024", "05-01-2024"]})
    checked = check_events(raw, on_bad_rows="skip")
    assert checked.time_format == "%d-%m-%Y"  # 13 can only be a day: the whole column reads day-first
    assert checked.events["timestamp"].tolist() == [pd.Timestamp("2024-02-13"), pd.Timestamp("2024-09-01"), pd.Timestamp("2024-01-05")]
    assert checked.events["customer_id"].tolist() == [17, 17, 2] and checked.events["customer_id"].dtype == np.int64
    assert checked.rejected["reason"].tolist() == ["missing customer id"]
    assert histories(checked.events).keys.tolist() == ["2", "17"]
