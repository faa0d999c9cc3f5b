"""The survival model: one shared LSTM with the distribution head (see distribution.py), trained on
every observed interval and on every customer's still-open interval, answering "as of" a date.

Examples:
- every interval of every customer, observed;
- each customer's open interval, censored: from its last visit to the as-of date, e days so far.
The classic recipe throws this one away; it is the only evidence of who is gone.
Inputs are the pooled model's features of the intervals before (pooled.features), so a customer
with one visit still trains and answers: its window is all padding. Elapsed time is not an input.
The answer conditions on it exactly: P(back within k days | no visit in e days) = 1 - S(e+k)/S(e).
Validation: the examples of one customer in ten (by id hash), for early stopping.

Own survival models (modes per_customer and finetune): every customer with enough history for an
own point model also gets its own survival model, trained like the point models (vmapped, early
stopped, checkpointed). per_customer trains them from scratch (the classic recipe's spirit: the
customer's own data only), finetune starts each from the shared survival model. Everyone else is
answered by the shared one.
Their validation looks forward, whatever data.split says: each customer validates on its latest
examples, its open interval (the latest evidence there is) and its latest round(val_fraction * k)
observed intervals (at least one, and at least one left to train on), and trains on the earlier
ones. An answer is a forecast from the end of the history, so early stopping must judge a model on
what came after what it learnt from; validating on earlier intervals while training on the open
one would reward a model for knowing the future. With data.val_fraction = 0 nothing validates and
every example trains, the open interval included.
Targets are (log1p days minus the centre, censored, minus the centre: where 0 days lies on that
scale), the three columns distribution.survival_nll reads.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from jaxlstm.config import Config
from jaxlstm.data import batching
from jaxlstm.data.batching import customer_seeds, uniform
from jaxlstm.data.intervals import Histories
from jaxlstm.data.windows import Windows, encode
from jaxlstm.distribution import expected_wait, gone_and_wait, head_params, p_back_within, remaining_median
from jaxlstm.fit import Prepared, fit, forward_each
from jaxlstm.pooled import examples as interval_examples
from jaxlstm.pooled import example_inputs, features, shared_outputs, train_shared
from jaxlstm.step import Compiled, kept_params

VAL_SHARE = 0.1


def survival_config(config: Config) -> Config:
    """The run's config with the survival head (no bins: the distribution covers every interval)."""
    return dataclasses.replace(config, data=dataclasses.replace(config.data, bins=()),
                               model=dataclasses.replace(config.model, loss="survival"))


def probability_columns(config: Config) -> list[tuple[str, float]]:
    """(column, k days) of each as-of probability: p_within_{k}d for data.within_days, and
    p_back_within_horizon for data.horizon_days (the churn signal)."""
    d = config.data
    return [(f"p_within_{k:g}d", k) for k in sorted(d.within_days)] + [("p_back_within_horizon", d.horizon_days)]


def default_as_of(last_visits: np.ndarray) -> pd.Timestamp:
    """The day after the latest visit in the log (midnight): "now", for a log exported today."""
    return pd.Timestamp(np.max(last_visits)).normalize() + pd.Timedelta(days=1)


def elapsed_days(hist: Histories, as_of: pd.Timestamp, floor_days: bool = False) -> np.ndarray:
    """[N] days from each customer's last visit to `as_of` (0 if it is later); with floor_days
    whole calendar days, as the intervals were counted."""
    unit = "datetime64[D]" if floor_days else "datetime64[us]"
    now = np.datetime64(as_of.as_unit("us")).astype(unit)
    e = (now - hist.last_visit.astype(unit)) / np.timedelta64(1, "D")
    return np.maximum(e.astype(np.float64), 0.0)


@dataclasses.dataclass
class SurvivalModel:
    """The shared survival model: params with a leading axis of 1, its centre (log1p days)."""

    config: Config  # survival_config(run config)
    params: Any
    center: float
    compiled: Compiled | None = None

    def head(self, hist: Histories, owner: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mu, sigma, logit gone) of the next, unseen interval of customers `owner` (default all)."""
        owner = np.arange(hist.n_customers) if owner is None else owner
        return head_params(shared_outputs(self, hist, owner, np.diff(hist.offsets)[owner]), self.center)

    def answer(self, hist: Histories, as_of: pd.Timestamp, own: OwnSurvival | None = None) -> dict[str, np.ndarray]:
        """Per customer, as of `as_of`: days since the last visit, the median days until the next
        visit given none so far (inf: more likely gone than back), P(gone) and the median wait given a
        return, the expected days until it
        counting at most the horizon (what ranks customers), and P(visit within k days) for each
        data.within_days and the horizon. Customers with a healthy model in `own` get its answer."""
        d = self.config.data
        e = elapsed_days(hist, as_of, d.floor_days)
        mu, sigma, g = self.head(hist)
        if own is not None:
            row = pd.Index(own.keys).get_indexer(hist.keys)
            idx = np.flatnonzero(row >= 0)
            idx = idx[~own.diverged[row[idx]]]
            if len(idx):
                mu[idx], sigma[idx], g[idx] = own.head(hist, idx, row[idx])
        out = {"days_since_last_visit": e, "remaining_days": remaining_median(e, mu, sigma, g),
               "expected_wait_days": expected_wait(e, d.horizon_days, mu, sigma, g), **gone_and_wait(e, mu, sigma, g)}
        for name, k in probability_columns(self.config):
            out[name] = p_back_within(e, k, mu, sigma, g)
        return out


@dataclasses.dataclass
class OwnSurvival:
    """Customers' own survival models: keys [n] str, params with a leading [n], diverged [n] bool."""

    config: Config  # survival_config(run config)
    keys: np.ndarray
    params: Any
    center: float  # the inputs' shift: the shared model's centre
    diverged: np.ndarray

    def head(self, hist: Histories, owner: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mu, sigma, logit gone) of the next interval of customers `owner` of hist, whose models are `rows`."""
        x = features(hist, owner, np.diff(hist.offsets)[owner], self.config.data.look_back, self.center)
        return head_params(forward_each(self.config, self.params, rows, x), self.center)


def examples(hist: Histories, as_of: pd.Timestamp, floor_days: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(owner [P], pos [P], days [P], censored [P]): every observed interval, then each customer's
    open interval (pos = its interval count, days elapsed by `as_of`)."""
    N, k = hist.n_customers, np.diff(hist.offsets)
    seen_owner, seen_pos, _ = interval_examples(hist, k)
    owner, pos = np.r_[seen_owner, np.arange(N)], np.r_[seen_pos, k]
    days = np.r_[hist.intervals, elapsed_days(hist, as_of, floor_days)]
    censored = np.r_[np.zeros(len(hist.intervals)), np.ones(N)].astype(np.float32)
    return owner, pos, days, censored


def survival_targets(days: np.ndarray, censored: np.ndarray, center: np.ndarray) -> np.ndarray:
    """[P, 3] float32 targets of the survival head: log1p(days) minus the centre, censored (0 or 1),
    and 0 days on the same scale (minus the centre), where the returning part is truncated."""
    center = np.broadcast_to(np.asarray(center, np.float32), np.shape(days))
    return np.stack([encode(days) - center, censored, -center], -1).astype(np.float32)


def fit_survival(hist: Histories, as_of: pd.Timestamp, config: Config, progress: bool = True,
                 desc: str = "survival") -> tuple[SurvivalModel, list[dict]]:
    """Train the survival model on a log whose visits all lie before `as_of`."""
    cfg = survival_config(config)
    owner, pos, days, censored = examples(hist, as_of, config.data.floor_days)
    val_customer = uniform(customer_seeds(hist.keys), 0x5E1F, 1)[:, 0] < VAL_SHARE
    is_val = val_customer[owner]
    observed = censored == 0
    center = float(encode(days[observed & ~is_val]).mean()) if (observed & ~is_val).any() else 0.0
    inputs = example_inputs(hist, owner, pos, cfg.data.look_back, center)
    y = survival_targets(days, censored, np.float32(center))
    params, compiled, history = train_shared(cfg, inputs, y, np.flatnonzero(~is_val), np.flatnonzero(is_val),
                                             config.train.survival_epochs, desc, progress)
    return SurvivalModel(cfg, params, center, compiled), history


def own_prepared(hist: Histories, as_of: pd.Timestamp, config: Config, center: float) -> Prepared:
    """The survival examples of every customer with an own point model's history (look_back + 1
    intervals), packed for the per-customer trainer: its observed intervals and its open one
    (censored); the open one and the latest val_fraction of the observed ones validate (see the
    module doc)."""
    d, t = config.data, config.train
    owner, pos, days, censored = examples(hist, as_of, config.data.floor_days)
    order = np.lexsort((pos, owner))  # per customer: its intervals, then its open one
    owner, pos, days, censored = owner[order], pos[order], days[order], censored[order]
    N, k = hist.n_customers, np.diff(hist.offsets)
    offsets = np.r_[0, np.cumsum(k + 1)]
    seeds = customer_seeds(hist.keys)
    obs_offsets = np.r_[0, np.cumsum(k)]
    obs_val = batching.split_windows(obs_offsets, seeds, "temporal", d.val_fraction, t.seed)
    is_val = np.zeros(len(owner), bool)
    is_val[censored == 0] = obs_val  # in (customer, position) order, as the observed examples are
    is_val[censored > 0] = d.val_fraction > 0
    windows = Windows(np.zeros((len(owner), d.look_back), np.float32), days.astype(np.float32), offsets,
                      np.zeros((N, d.look_back), np.float32), np.zeros(N, bool))
    rows = np.flatnonzero(k >= d.look_back + 1)
    C = max(1, min(t.chunk_customers, len(rows)))
    inputs = example_inputs(hist, owner, pos, d.look_back, center)  # the prefix statistics once, not per chunk
    chunks = batching.pack_chunks(
        windows, is_val, np.full(N, center, np.float32), seeds, rows, C, t.batch_size,
        inputs=lambda g, _c: inputs(g),
        targets=lambda g, c: survival_targets(days[g], censored[g], c))
    return Prepared(hist, windows, is_val, np.full(N, center, np.float32), seeds, chunks)


def fit_own(hist: Histories, as_of: pd.Timestamp, config: Config, shared: SurvivalModel, from_shared: bool,
            progress: bool = True, ckpt_dir=None, resume: bool = False) -> OwnSurvival | None:
    """Train the customers' own survival models (see the module doc); None when nobody qualifies."""
    cfg = survival_config(config)
    prep = own_prepared(hist, as_of, cfg, shared.center)
    if not prep.chunks:
        return None
    result = fit(prep, cfg, ckpt_dir=ckpt_dir, resume=resume, progress=progress,
                 start_from=shared.params if from_shared else None, desc="own survival")
    return OwnSurvival(cfg, hist.keys[prep.model_rows], kept_params(result.state, cfg), shared.center,
                       np.asarray(result.state.diverged))
