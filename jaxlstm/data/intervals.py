"""Visit events -> per-customer intervals (days between consecutive visits), stored flat with offsets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from jaxlstm.data.events import ID, TIME

DAY_US = 86_400 * 10**6


@dataclasses.dataclass(frozen=True)
class Histories:
    """Every customer's visit history; customer i owns intervals[offsets[i]:offsets[i + 1]].

    ids:         [N] original customer ids, sorted
    keys:        [N] str, the ids as text: how runs and predictions match customers
    n_visits:    [N] int64
    last_visit:  [N] datetime64[ns]
    offsets:     [N + 1] int64
    intervals:   [M] float64 days, in visit order (M = n_visits.sum() - N)
    extras:      [M, E] float64, the extra columns' values at the visit that ended each interval,
                 as sign(v) * log1p(|v|) (E = 0 without extra columns)
    """

    ids: np.ndarray
    keys: np.ndarray
    n_visits: np.ndarray
    last_visit: np.ndarray
    offsets: np.ndarray
    intervals: np.ndarray
    extras: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))

    @property
    def n_extra(self) -> int:
        return self.extras.shape[1] if self.extras.ndim == 2 and len(self.extras) == len(self.intervals) else 0

    @property
    def n_customers(self) -> int:
        return len(self.ids)

    def of(self, i: int) -> np.ndarray:
        return self.intervals[self.offsets[i] : self.offsets[i + 1]]


def histories(events: pd.DataFrame, floor_days: bool = False, extra_cols: tuple[str, ...] = (),
              summary: bool = False) -> Histories:
    """Intervals per customer from a validated events frame (see `events.validate_events`).

    floor_days: whole calendar days between visit dates, as the classic recipe counts
    (two visits on one day give 0); otherwise exact float days.
    extra_cols: numeric columns of `events` carried along each interval (see Histories.extras).
    summary: append four summary features of the history up to each interval to the extras (see
      config.DataConfig.summary_features).
    """
    try:  # customers in id order: numeric ids numerically, text ids alphabetically
        codes, uniques = pd.factorize(events[ID], sort=True)
    except TypeError:  # ids of mixed types: order by their text
        codes, uniques = pd.factorize(events[ID].astype(str), sort=True)
    times = events[TIME].to_numpy("datetime64[ns]")
    order = np.lexsort((times, codes))
    codes, times = codes[order], times[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.zeros(0, np.int64)
    ids = np.asarray(uniques, dtype=object)[codes[starts]]
    n_visits = np.diff(np.r_[starts, len(codes)])
    # microseconds, not nanoseconds: a gap of more than 292 years overflows int64 nanoseconds
    ticks = times.astype("datetime64[D]").astype(np.int64) * DAY_US if floor_days else times.astype("datetime64[us]").astype(np.int64)
    gaps = np.diff(ticks).astype(np.float64) / DAY_US
    same_customer = np.ones(len(codes), bool)
    same_customer[starts] = False  # the first visit of a customer starts no interval
    intervals = gaps[same_customer[1:]]
    offsets = np.r_[0, np.cumsum(n_visits - 1)].astype(np.int64)
    last = np.r_[starts[1:], len(codes)][: len(starts)] - 1
    values = events[list(extra_cols)].to_numpy(np.float64)[order] if extra_cols else np.zeros((len(codes), 0))
    values = np.sign(values) * np.log1p(np.abs(values))  # amounts span decades: compress like the intervals
    extras = values[1:][same_customer[1:]]
    if summary:
        extras = np.concatenate([extras, _summaries(intervals, offsets)], axis=1)
    return Histories(
        ids=ids,
        keys=np.asarray([str(i) for i in ids], dtype=str),
        n_visits=n_visits.astype(np.int64),
        last_visit=times[last],
        offsets=offsets,
        intervals=intervals,
        extras=extras,
    )


def prefix_mean(values: np.ndarray, offsets: np.ndarray, owner: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Mean of the first n[p] of customer owner[p]'s values (values [M] flat like the intervals);
    NaN where n is 0."""
    return running_mean(np.r_[0.0, np.cumsum(values, dtype=np.float64)], offsets[owner], n)


def running_mean(cum: np.ndarray, start: np.ndarray, n: np.ndarray) -> np.ndarray:
    """[P] mean of the n[p] values from flat index start[p], from their running sum cum (a leading 0);
    NaN where n is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (cum[start + n] - cum[start]) / n


def _summaries(intervals: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """[M, 4] per interval, over the customer's intervals up to and including it: log1p(count) / 4,
    mean and std of log1p(days), log1p(days since the first visit) / 4."""
    k = np.diff(offsets)
    owner = np.repeat(np.arange(len(k)), k)
    n = np.arange(len(intervals)) - offsets[:-1][owner] + 1
    z = np.log1p(intervals)
    mean = prefix_mean(z, offsets, owner, n)
    std = np.sqrt(np.maximum(prefix_mean(z**2, offsets, owner, n) - mean**2, 0.0))
    return np.stack([np.log1p(n) / 4, mean, std, np.log1p(prefix_mean(intervals, offsets, owner, n) * n) / 4], axis=1)
