"""Intervals -> sliding windows of `look_back` intervals with the next interval as target (numpy)."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxlstm.data.intervals import Histories


@dataclasses.dataclass(frozen=True)
class Windows:
    """All customers' windows, flat; customer i owns rows offsets[i]:offsets[i + 1].

    x:        [M, L] float32 days, L = look_back consecutive intervals
    y:        [M] float32 days, the interval that followed
    offsets:  [N + 1] int64
    last:     [N, L] float32 days, each customer's latest L intervals (the input for the next visit)
    has_last: [N] bool, whether the customer has L intervals at all
    x_extra:  [M, L, E] float32, the extra columns of each window's intervals (Histories.extras)
    last_extra: [N, L, E] float32, those of `last`
    """

    x: np.ndarray
    y: np.ndarray
    offsets: np.ndarray
    last: np.ndarray
    has_last: np.ndarray
    x_extra: np.ndarray | None = None
    last_extra: np.ndarray | None = None

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)


def make_windows(hist: Histories, look_back: int) -> Windows:
    """Cut each customer's intervals into windows; a customer with k intervals gets max(0, k - L)."""
    L = look_back
    k = np.diff(hist.offsets)
    counts = np.maximum(k - L, 0)
    # window s (flat start index) is valid when its target, s + L, is still the same customer's
    w_offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
    starts = np.repeat(hist.offsets[:-1] - w_offsets[:-1], counts) + np.arange(w_offsets[-1])
    idx = starts[:, None] + np.arange(L)[None, :]
    x = hist.intervals[idx].astype(np.float32).reshape(-1, L)
    y = hist.intervals[starts + L].astype(np.float32)
    has_last = k >= L
    last_idx = np.clip(hist.offsets[1:, None] - L + np.arange(L)[None, :], 0, max(len(hist.intervals) - 1, 0))
    last = np.zeros((len(k), L), np.float32)  # [N, L] even when the log has no interval at all
    if len(hist.intervals):
        last[:] = np.where(has_last[:, None], hist.intervals[last_idx], 0.0)
    E = hist.n_extra
    extras = hist.extras if len(hist.intervals) else np.zeros((1, E))
    x_extra = extras[idx].astype(np.float32).reshape(-1, L, E) if E else None
    last_extra = np.where(has_last[:, None, None], extras[last_idx], 0.0).astype(np.float32) if E else None
    return Windows(x=x, y=y, offsets=w_offsets, last=last, has_last=has_last, x_extra=x_extra, last_extra=last_extra)


def to_bins(days: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Class id of each interval: 0 below edges[0], i for edges[i-1] <= d < edges[i], K-1 above the last."""
    return np.searchsorted(np.asarray(edges, np.float64), days, side="right").astype(np.int32)


def bin_values(edges: tuple[float, ...]) -> np.ndarray:
    """A representative interval (days) for each class: bin midpoints; the open last bin gets its
    lower edge plus half the previous bin's width."""
    e = np.asarray((0.0, *edges), np.float64)
    mids = (e[:-1] + e[1:]) / 2
    top = e[-1] + (e[-1] - e[-2]) / 2
    return np.r_[mids, top].astype(np.float32)


def encode(days: np.ndarray) -> np.ndarray:
    """Days -> model space: log1p, so a 1-day error at 3 days weighs more than at 300."""
    return np.log1p(np.maximum(days, 0.0)).astype(np.float32)


def decode(z: np.ndarray) -> np.ndarray:
    return np.maximum(np.expm1(z), 0.0)
