"""The purchase-log generator (issue 13): real-log statistics hold, and the truth is a future visit."""

import numpy as np
import pandas as pd
import pytest

from conftest import benchmark
from jaxlstm.synth import FAMILIES, make_iid_exponential, make_patterned, make_purchases

SEEDS = (0, 1, 2)


def _visit_days(log: pd.DataFrame) -> pd.DataFrame:
    """One row per customer and calendar day: its first row that day."""
    day = log["timestamp"].dt.floor("D")
    return log.assign(day=day).drop_duplicates(["customer_id", "day"])


@pytest.mark.parametrize("seed", SEEDS)
def test_purchase_logs_look_like_real_ones(seed):
    log, truth = make_purchases(3000, seed)
    days = _visit_days(log)
    n_days = days.groupby("customer_id").size().reindex(truth["customer_id"], fill_value=0)
    assert (n_days >= 1).all() and set(log["customer_id"]) == set(truth["customer_id"])
    assert 0.5 <= (n_days == 1).mean() <= 0.7  # most customers buy once
    assert n_days.max() >= 12  # ... and a few many times
    # same-day repeats: several rows on one day, some with identical timestamps
    rows_per_day = log.assign(day=log["timestamp"].dt.floor("D")).groupby(["customer_id", "day"]).size()
    assert 0.03 < (rows_per_day > 1).mean() < 0.3
    assert log.duplicated(["customer_id", "timestamp"]).sum() > 0
    assert (~log.duplicated(["customer_id", "timestamp"]) & (rows_per_day.reindex(
        pd.MultiIndex.from_arrays([log["customer_id"], log["timestamp"].dt.floor("D")])).to_numpy() > 1)).sum() > 0
    # gaps between visit days grow with the gap's index, and the latest gap is longer than a gap
    gap = days.groupby("customer_id")["timestamp"].diff().dt.total_seconds() / 86400
    days = days.assign(gap=gap).dropna(subset=["gap"])
    index = days.groupby("customer_id").cumcount()
    first, later = days["gap"][index == 0].median(), days["gap"][index.between(3, 5)].median()
    assert first < later, (first, later)
    assert days.groupby("customer_id")["gap"].last().median() > days["gap"].median()
    assert 15 < days["gap"].median() < 45  # weeks, as on real logs


@pytest.mark.parametrize("seed", SEEDS)
def test_the_truth_is_each_customers_first_visit_after_the_log(seed):
    days = 540.0
    log, truth = make_purchases(3000, seed, days=days)
    end = pd.Timestamp("2022-01-01") + pd.Timedelta(days=days)
    assert log["timestamp"].max() < end
    truth = truth.set_index("customer_id")
    assert (truth["last_visit"] == log.groupby("customer_id")["timestamp"].max()).all()
    assert (truth["first_visit"] == log.groupby("customer_id")["timestamp"].min()).all()
    back = truth["next_visit"].notna()
    assert 0.1 < back.mean() < 0.5  # many have dropped out or will not return within the horizon
    assert (truth.loc[back, "next_visit"] >= end).all()
    assert (truth.loc[back, "next_visit"] < end + pd.Timedelta(days=365)).all()
    gap = (truth["next_visit"] - truth["last_visit"]) / pd.Timedelta(days=1)
    np.testing.assert_array_equal(truth["next_gap_days"], gap)
    assert (truth.loc[back, "next_gap_days"] > 0).all()
    assert not (truth["dropped_out"] & back).any()  # a customer who dropped out never comes back
    assert truth["dropped_out"].mean() > 0.3


def test_date_only_logs_hold_dates():
    log, truth = make_purchases(1000, 0, date_only=True)
    assert (log["timestamp"] == log["timestamp"].dt.floor("D")).all()
    back = truth["next_visit"].notna()
    assert (truth.loc[back, "next_gap_days"] == truth.loc[back, "next_gap_days"].round()).all()
    assert log.duplicated(["customer_id", "timestamp"]).mean() > 0.05  # a day's rows are identical


def test_same_seed_same_log_other_seed_another():
    a, b, c = make_purchases(500, 7), make_purchases(500, 7), make_purchases(500, 8)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    assert not a[0]["timestamp"].equals(c[0]["timestamp"])
    for name, family in FAMILIES.items():
        (la, ta), (lb, tb) = family(200, 3), family(200, 3)
        pd.testing.assert_frame_equal(la, lb)
        pd.testing.assert_frame_equal(ta, tb)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_families_give_a_log_and_a_future_gap_per_customer(name):
    log, truth = FAMILIES[name](300, 0)
    assert list(log.columns[:2]) == ["customer_id", "timestamp"]
    assert truth["customer_id"].tolist() == sorted(log["customer_id"].unique())
    back = truth["next_gap_days"].notna()
    last = log.groupby("customer_id")["timestamp"].max().reindex(truth["customer_id"]).to_numpy()
    assert (truth.loc[back, "next_visit"].to_numpy() > last[back.to_numpy()]).all()


def test_patterned_truth_continues_the_cycle():
    """The next gap is the one the customer's cycle (2 or 3 gaps) gives: the gap 2 or 3 back."""
    log, truth = make_patterned(300, 0, noise=0.0)
    gaps = log.groupby("customer_id")["timestamp"].apply(lambda t: t.diff().dt.total_seconds().dropna().to_numpy() / 86400)
    hits = [np.isclose(g[-2], t, atol=1e-6) or np.isclose(g[-3], t, atol=1e-6)
            for g, t in zip(gaps, truth.set_index("customer_id").loc[gaps.index, "next_gap_days"])]
    assert np.mean(hits) == 1.0
    # median per customer is far from the truth (the cycle's spread), the pattern exact
    med = np.array([np.median(g) for g in gaps])
    assert np.mean(np.abs(med - truth["next_gap_days"].to_numpy())) > 2.0


def test_iid_exponential_truth_matches_the_customers_mean():
    log, truth = make_iid_exponential(2000, 0, visits=(40, 40), mean_gap=(10.0, 10.0))
    gaps = log.groupby("customer_id")["timestamp"].diff().dt.total_seconds().dropna() / 86400
    assert gaps.mean() == pytest.approx(10.0, rel=0.02) and truth["next_gap_days"].mean() == pytest.approx(10.0, rel=0.08)



@pytest.mark.parametrize("date_only", [False, True])
def test_leave_last_out_hides_each_customers_last_day(date_only):
    accuracy = benchmark("accuracy")
    log, _ = make_purchases(800, 0, date_only=date_only)
    train, gap, single_day = accuracy.leave_last_out(log)
    merged = accuracy.merged_visits(log)  # identical customer+timestamp rows are one visit
    day = merged["timestamp"].dt.floor("D")
    last_day = day.groupby(merged["customer_id"]).transform("max")
    # hidden: exactly the rows of each customer's last calendar day; the training log is the rest
    hidden = merged[day == last_day]
    kept = merged[day < last_day].reset_index(drop=True)
    pd.testing.assert_frame_equal(train, kept)
    assert len(train) + len(hidden) == len(merged)
    rows_on_last_day = hidden.groupby("customer_id").size()
    if date_only:  # a day's rows are identical: one visit once merged
        assert (rows_on_last_day == 1).all() and log.duplicated(["customer_id", "timestamp"]).any()
    else:  # some last days hold several visits, all hidden
        assert (rows_on_last_day > 1).any()
    # customers with a single visit day: nothing left to train on, not judged, counted
    n_days = day.groupby(merged["customer_id"]).nunique()
    assert single_day == int((n_days == 1).sum()) > 0
    assert set(train["customer_id"]) == set(n_days.index[n_days > 1]) == set(gap.index)
    # the truth: days from the last remaining visit to the first row of the hidden day
    first_hidden = hidden.groupby("customer_id")["timestamp"].min()
    last_kept = train.groupby("customer_id")["timestamp"].max()
    expected = (first_hidden.reindex(last_kept.index) - last_kept) / pd.Timedelta(days=1)
    np.testing.assert_allclose(gap.reindex(expected.index).to_numpy(), expected.to_numpy())
    assert (gap > 0).all()


def test_leave_last_out_by_hand():
    accuracy = benchmark("accuracy")
    t = pd.Timestamp
    log = pd.DataFrame({
        "customer_id": ["a", "a", "a", "a", "a", "b", "b", "c", "c"],
        "timestamp": [t("2023-01-01 09:00"), t("2023-01-05 10:00"), t("2023-01-11 08:00"), t("2023-01-11 08:00"),
                      t("2023-01-11 17:00"), t("2023-02-01 12:00"), t("2023-02-01 13:00"), t("2023-03-01"), t("2023-03-04")],
    })
    train, gap, single_day = accuracy.leave_last_out(log)
    assert single_day == 1  # b: both rows on one day
    assert train["customer_id"].tolist() == ["a", "a", "c"]
    assert train["timestamp"].tolist() == [t("2023-01-01 09:00"), t("2023-01-05 10:00"), t("2023-03-01")]
    # a: from 01-05 10:00 to the hidden day's first row, 01-11 08:00; c: 3 days
    assert gap.to_dict() == pytest.approx({"a": 5 + 22 / 24, "c": 3.0})
    # the baselines see only the training log: a's one gap, c has none (the population median)
    base = accuracy.simple_baselines(train)
    assert base.loc["a", "customer_last"] == pytest.approx(4 + 1 / 24)
    assert base.loc["c", "customer_median"] == pytest.approx(4 + 1 / 24)
    assert base["n_days"].to_dict() == {"a": 2, "c": 1}


def test_next_gap_scores_the_true_next_gap_by_hand():
    accuracy = benchmark("accuracy")
    t = pd.Timestamp
    log = pd.DataFrame({"customer_id": ["a", "a", "a", "b", "b", "c", "d", "d"],
                        "timestamp": [t("2023-01-01"), t("2023-01-03"), t("2023-01-07"), t("2023-01-01"), t("2023-01-11"),
                                      t("2023-01-05"), t("2023-01-02"), t("2023-01-09")]})
    # a and b come back, c has a single visit day (not judged), d does not come back (not judged)
    truth = pd.DataFrame({"customer_id": ["a", "b", "c", "d"], "next_gap_days": [6.0, 20.0, 3.0, np.nan]})
    pred = pd.DataFrame({"predicted_interval_days": [5.0, 10.0, 1.0, 1.0]}, index=["a", "b", "c", "d"])
    r = accuracy.bench_next_gap(log, truth, {"auto": (pred, 0.0)})
    assert (r["customers"], r["judged"], r["not_back"]) == (4, 2, 1)
    assert r["all"]["mae"]["auto"] == pytest.approx((1 + 10) / 2)
    # baselines from the whole log: a's gaps 2, 4 (median 3, last 4); b's 10; all gaps 2, 4, 10, 7
    assert r["all"]["mae"]["customer_last"] == pytest.approx((2 + 10) / 2)
    assert r["all"]["mae"]["population_median"] == pytest.approx((0.5 + 14.5) / 2)  # median 5.5
    assert r["median_next_gap_days"] == pytest.approx(13.0) and r["5+ days"] is None


def test_as_of_truth_and_brier_by_hand():
    accuracy = benchmark("accuracy")
    t = pd.Timestamp
    cut = t("2023-02-01")
    log = pd.DataFrame({"customer_id": ["a", "a", "b", "b", "c", "e"],
                        "timestamp": [t("2023-01-01"), t("2023-02-10"), t("2023-01-05"), t("2023-03-20"), t("2023-01-20"),
                                      t("2023-03-31 10:00")]})
    before, truth, horizon = accuracy.truth_after(log, cut)
    assert set(before["customer_id"]) == {"a", "b", "c"}  # e is first seen after the cut: not asked about
    truth = truth.set_index("customer_id")
    assert horizon == 59.0  # to the day after the log's last visit, 2023-04-01
    assert truth.loc["a", "next_visit"] == t("2023-02-10") and truth.loc["b", "next_visit"] == t("2023-03-20")
    assert pd.isna(truth.loc["c", "next_visit"]) and truth.loc["c", "last_visit"] == t("2023-01-20")
    # a back in 9 days, b in 47, c not within the horizon; p_within_90d's outcome is not known in 59 days
    pred = pd.DataFrame({"expected_wait_days": [5.0, 20.0, 50.0], "p_within_30d": [0.8, 0.5, 0.1],
                         "p_within_90d": [0.9, 0.9, 0.9], "predicted_next_visit": [t("2023-02-06"), t("2023-02-21"), pd.NaT],
                         "last_visit": [t("2023-01-01"), t("2023-01-05"), t("2023-01-20")],
                         "predicted_interval_days": [10.0, 10.0, 10.0]}, index=["a", "b", "c"])
    r = accuracy.bench_as_of(truth.reset_index(), cut, horizon, {"auto": (pred, 0.0)})
    b = r["modes"]["auto"]["brier"]
    assert list(b) == ["p_within_30d"]
    assert b["p_within_30d"]["model"] == pytest.approx(((0.8 - 1) ** 2 + 0.5 ** 2 + 0.1 ** 2) / 3)
    assert b["p_within_30d"]["base_rate"] == pytest.approx(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 3)
    assert r["modes"]["auto"]["concordance_expected_wait"] == 1.0  # a before b before c, and so ordered
    # dates: a predicted 5 days after the cut (back in 9), b 20 (47), c no date; classic: both already passed (0)
    m = r["modes"]["auto"]
    assert (m["dates_judged"], m["mae_days"], m["mae_days_classic"]) == (2, pytest.approx((4 + 27) / 2), pytest.approx((9 + 47) / 2))
    assert m["share_back_by_date"] == 0.0 and m["share_back_by_date_classic"] == 0.0
    # judged on a truth that looks further (c back after the horizon): the dates read it, the ranking does not
    later = truth.reset_index().assign(next_visit=[t("2023-02-10"), t("2023-02-15"), t("2023-06-01")])
    pred.loc["c", "predicted_next_visit"] = t("2023-05-01")
    ever = later.assign(next_visit=[t("2023-02-10"), t("2023-02-15"), t("2030-01-01")])
    r2 = accuracy.bench_as_of(truth.reset_index(), cut, horizon, {"auto": (pred, 0.0)}, later, ever)
    m2 = r2["modes"]["auto"]
    assert (m2["back_ever_dated"], m2["share_back_by_date_ever"], m2["share_back_by_date_ever_classic"]) == (3, 1 / 3, 0.0)
    assert (r2["back"], r2["back_ever"], m2["dates_judged"]) == (2, 3, 3)
    assert m2["mae_days"] == pytest.approx((4 + 6 + 31) / 3) and m2["share_back_by_date"] == pytest.approx(1 / 3)  # b only
    assert m2["concordance_expected_wait"] == 1.0 and m2["brier"] == b
