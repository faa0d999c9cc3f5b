"""Own survival models validate forward: each customer's open interval and its latest observed
intervals validate, the earlier ones train (survival.own_prepared)."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from conftest import visit_log
from jaxlstm.data.events import validate_events
from jaxlstm.data.intervals import histories
from jaxlstm.data.windows import encode
from jaxlstm.survival import own_prepared, survival_config


@pytest.mark.parametrize("split", ["temporal", "random"])
def test_the_latest_examples_validate(tiny, split):
    gaps = {"a": np.arange(1.0, 11.0), "b": [3.0, 4.0, 5.0, 6.0], "c": [2.0, 2.0]}  # 10, 4 and 2 intervals
    hist = histories(validate_events(visit_log(gaps)))
    as_of = pd.Timestamp("2024-06-01")
    cfg = survival_config(dataclasses.replace(tiny, data=dataclasses.replace(tiny.data, split=split, val_fraction=0.2)))
    center = 1.7
    prep = own_prepared(hist, as_of, cfg, center)
    k = np.diff(hist.offsets)
    by_customer = {key: prep.is_val[prep.windows.offsets[i]: prep.windows.offsets[i + 1]].tolist()
                   for i, key in enumerate(hist.keys)}
    # examples in time order: the observed intervals, then the open one (last visit -> as-of date)
    assert by_customer["a"] == [False] * 8 + [True, True] + [True]  # round(0.2 * 10) = 2 observed + the open one
    assert by_customer["b"] == [False] * 3 + [True] + [True]  # at least one observed validates
    assert sorted(prep.hist.keys[prep.model_rows]) == ["a", "b"]  # c: too short for an own model
    for chunk in prep.chunks:
        for i in np.flatnonzero(chunk.real):
            r = chunk.rows[i]
            n_train, n_val = chunk.n_train[i], chunk.n_val[i]
            train, val = chunk.y_train[i, :n_train], chunk.y_val[i, :n_val]
            assert n_train == k[r] - (2 if hist.keys[r] == "a" else 1) and (train[:, 1] == 0).all()  # nothing open trains
            assert val[:, 1].tolist() == [0.0] * (n_val - 1) + [1.0]  # the open interval validates, last
            gap = np.asarray(gaps[hist.keys[r]], np.float32)
            np.testing.assert_allclose(train[:, 0], encode(gap[:n_train]) - center, rtol=1e-6)  # the earliest train
            assert (np.r_[train[:, 2], val[:, 2]] == np.float32(-center)).all()  # 0 days on the centred scale


def test_without_a_validation_share_everything_trains(tiny):
    hist = histories(validate_events(visit_log({"a": np.arange(1.0, 11.0)})))
    cfg = survival_config(dataclasses.replace(tiny, data=dataclasses.replace(tiny.data, val_fraction=0.0)))
    prep = own_prepared(hist, pd.Timestamp("2024-06-01"), cfg, 1.0)
    assert not prep.is_val.any()
    chunk = prep.chunks[0]
    assert chunk.n_val[0] == 0 and chunk.n_train[0] == 11 and chunk.y_train[0, 10, 1] == 1.0  # the open one trains too
