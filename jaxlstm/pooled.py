"""One shared LSTM for every customer ("pooled"), so short histories train and get a learned answer.

Every interval of every customer but its last (the customer's question, see evaluate.py) is an
example. Its input is the up to `look_back` intervals before it, left-padded, each time step
carrying six features:
  0  log1p(days) minus the pooled centre (0 where padded)
  1  1 where an interval is present, 0 where padded: the model knows what is padding
  2  log1p(number of intervals before this one) / 4: how much history there is (the visit index)
  3  mean log1p of all intervals before this one, minus the centre (0 with none): the customer's level
  4  log1p(days from the first visit to the interval's start) / 4: the customer's age, so gaps that
     lengthen as customers age are learnable
  5  std of log1p of the intervals before this one (0 with fewer than two): how regular the customer is
So a customer with one visit still gets an answer (all padding: a learned constant), one with two
intervals a shrunk blend of its one gap and everyone's, a long one its recent pattern.

Trained for the question asked: predictions are one per customer, about its next gap, so each
customer's examples weigh 1 in total (train.pooled_recency^k for its k-th latest, normalised), not
1 per interval: heavy buyers' many short gaps do not decide everyone's answer, and the latest
gaps (closest to the next one) weigh most. Early stopping uses the selection customers' questions.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from jaxlstm.config import Config
from jaxlstm.data.batching import uniform
from jaxlstm.data.intervals import Histories, running_mean
from jaxlstm.data.windows import bin_values, decode, encode, to_bins
from jaxlstm.evaluate import Questions
from jaxlstm.placement import Placement
from jaxlstm.progress import bar as progress_bar
from jaxlstm.step import Compiled, compile_steps, stacked_state_shape

N_FEATURES = 6  # plus one per extra column (data.extra_cols)
SEED_PAIR = np.array([[0x706F6F6C, 0x6A61786C]], np.uint32)  # the pooled model's own "customer" seed


def pooled_config(config: Config) -> Config:
    """The config of the shared point model: the run's, at the shared model's own size (model.pooled_units,
    model.pooled_dense); in mode finetune the own models' size, since they start from its weights."""
    m = config.model
    if m.mode == "finetune" or (m.units, m.dense) == (m.pooled_units, m.pooled_dense):
        return config
    return dataclasses.replace(config, model=dataclasses.replace(m, units=m.pooled_units, dense=m.pooled_dense))


def n_features(config: Config) -> int:
    """Inputs per time step of the per-customer models: fine-tuned ones share the pooled inputs."""
    return pooled_features(config) if config.model.mode == "finetune" else 1 + n_extra(config)


def pooled_features(config: Config) -> int:
    """Inputs per time step of the shared models (pooled, survival)."""
    return N_FEATURES + n_extra(config)


def n_extra(config: Config) -> int:
    """Extra inputs per interval: the extra columns, and the summary features when asked."""
    return len(config.data.extra_cols) + (4 if config.data.summary_features else 0)


def window_features(hist: Histories, windows, look_back: int, center: float):
    """inputs(window indices, centers) for batching.pack_chunks: the pooled features of each window
    (window w of customer r predicts interval look_back + w of r)."""
    owner = np.repeat(np.arange(hist.n_customers), windows.counts)
    prefix = Prefix.of(hist)  # once, not once per chunk

    def inputs(g: np.ndarray, _centers: np.ndarray) -> np.ndarray:
        g = np.asarray(g, np.int64)
        return features(hist, owner[g], look_back + g - windows.offsets[owner[g]], look_back, center, prefix)

    return inputs


@dataclasses.dataclass(frozen=True)
class Prefix:
    """What `features` reads of a Histories, computed once per Histories so that the features of a
    few examples cost O(examples), not O(intervals): the encoded intervals and the running sums over
    the flat interval array (float64 [M + 1], a leading 0) of the encoded intervals, of their squares
    and of the raw days. A customer's sum over its first n intervals is cum[start + n] - cum[start]."""

    enc: np.ndarray  # [M] float32, encode(intervals)
    cum_enc: np.ndarray  # [M + 1] float64
    cum_enc2: np.ndarray  # [M + 1] float64
    cum_days: np.ndarray  # [M + 1] float64

    @staticmethod
    def of(hist: Histories) -> Prefix:
        enc = encode(hist.intervals)
        enc64 = enc.astype(np.float64)
        # running sums over the whole flat array, as data.intervals.prefix_mean takes them (the values stay those
        # of the previous definition); in float64 a customer's sum, a difference of two, is off by ~1e-7 at 1e8
        # intervals (sums ~1e9): below the float32 resolution of the means
        return Prefix(enc, np.r_[0.0, np.cumsum(enc64)], np.r_[0.0, np.cumsum(enc64**2)],
                      np.r_[0.0, np.cumsum(hist.intervals, dtype=np.float64)])

    def mean(self, cum: np.ndarray, start: np.ndarray, n: np.ndarray) -> np.ndarray:
        """[P] float64 mean of the first n[p] values from flat index start[p]; NaN where n is 0."""
        return running_mean(cum, start, n)


def features(hist: Histories, owner: np.ndarray, pos: np.ndarray, look_back: int, center: float,
             prefix: Prefix | None = None) -> np.ndarray:
    """[P, L, N_FEATURES + extras] float32 inputs for predicting interval `pos` (index within its customer) of
    customer `owner` from the intervals before it; pos may equal the customer's interval count (the next,
    unseen one). `prefix`: Prefix.of(hist), computed here when not given; pass it when calling on slices.
    Each feature is computed in float64 over [P, L] (or [P]) and written into the float32 output, so no
    float64 [P, L, F] array exists; the values are those of float64 arithmetic rounded once to float32."""
    prefix = Prefix.of(hist) if prefix is None else prefix
    owner, pos = np.asarray(owner, np.int64), np.asarray(pos, np.int64)
    L, P, M = look_back, len(pos), len(hist.intervals)
    x = np.zeros((P, L, N_FEATURES + hist.n_extra), np.float32)
    start = hist.offsets[owner]
    back = pos[:, None] - L + np.arange(L)[None, :]  # interval index within the customer, per step
    present = back >= 0
    idx = np.clip(start[:, None] + back, 0, max(M - 1, 0))
    if M:
        x[..., 0] = np.where(present, prefix.enc[idx].astype(np.float64) - center, 0.0)
    x[..., 1] = present
    if M:
        mean = prefix.mean(prefix.cum_enc, start, pos)
        spread = np.sqrt(np.maximum(prefix.mean(prefix.cum_enc2, start, pos) - mean**2, 0.0))
        age = np.where(pos > 0, prefix.mean(prefix.cum_days, start, pos) * pos, 0.0)
    else:  # no intervals: every example has pos 0
        mean, spread, age = np.full(P, np.nan), np.full(P, np.nan), np.zeros(P)
    per_customer = [np.log1p(pos) / 4.0, np.where(pos > 0, mean - center, 0.0), np.log1p(np.maximum(age, 0.0)) / 4.0,
                    np.where(pos > 1, spread, 0.0)]
    for f, values in enumerate(per_customer, start=2):
        x[..., f] = values[:, None]
    if hist.n_extra and M:  # the extra columns of each present interval, 0 where padded
        x[..., N_FEATURES:] = np.where(present[..., None], hist.extras[idx], 0.0)
    return x


def example_inputs(hist: Histories, owner: np.ndarray, pos: np.ndarray, look_back: int, center: float):
    """inputs(rows) -> [len(rows), L, F] float32: the features of examples (owner[rows], pos[rows]),
    built when asked (a minibatch at a time) from prefix statistics computed once here."""
    prefix = Prefix.of(hist)

    def inputs(rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        return features(hist, owner[rows], pos[rows], look_back, center, prefix)

    return inputs


@dataclasses.dataclass
class PooledModel:
    """The shared model: params with a leading axis of 1 (the step functions' customer axis). `config` may be
    the run's: the model answers at its own size (pooled_config), or, for a run saved before the shared model
    had one, at the size its saved parameters have."""

    config: Config
    params: Any
    center: float
    compiled: Compiled | None = None
    # the model trained without the questions (evaluate.py), which scores and chooses; None once restored
    heldout: PooledModel | None = None
    scale: float = 1.0  # the day answers' factor (question_scale; 1 for a refit model, or when binning)

    def __post_init__(self):
        sized = pooled_config(self.config)
        if sized is not self.config and _n_params(self.config) == np.shape(self.params)[-1] != _n_params(sized):
            return  # an older run's shared model, at the own models' size
        self.config = sized

    def answer(self, hist: Histories, owner: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(days [P], class probabilities [P, K] or None) for interval `pos` of customer `owner`."""
        cfg = self.config
        out = shared_outputs(self, hist, owner, pos)
        if cfg.n_classes:
            probs = np.asarray(jax.nn.softmax(out, axis=-1))
            return bin_values(cfg.data.bins)[probs.argmax(-1)].astype(float), probs
        return decode(out[:, 0] + self.center).astype(float) * self.scale, None


MIN_SCALE_QUESTIONS = 50  # fewer selection questions than this: no factor (1), too noisy to fit


def question_scale(model: PooledModel, hist: Histories, q: Questions) -> float:
    """The factor for `model`'s day answers (mae_scale) fit on the selection customers' questions; 1 when
    binning (class answers), or with fewer than MIN_SCALE_QUESTIONS of them. One number fit on thousands of
    questions: choosing on the same questions afterwards (evaluate.choose) gains nothing measurable from it;
    the headline customers' questions, never used here, score it honestly."""
    if model.config.n_classes:
        return 1.0
    s = np.flatnonzero(q.selection)
    days = dataclasses.replace(model, scale=1.0).answer(hist, q.owner[s], q.pos[s])[0]
    return mae_scale(q.target[s], days)


def mae_scale(target: np.ndarray, answer: np.ndarray) -> float:
    """The c >= 0 minimising sum |target - c * answer| over the answers > 0: the median of target / answer
    weighted by answer (sum answer * |target / answer - c|); 1 with fewer than MIN_SCALE_QUESTIONS of them."""
    ok = answer > 0
    if ok.sum() < MIN_SCALE_QUESTIONS:
        return 1.0
    ratio, weight = target[ok] / answer[ok], answer[ok]
    order = np.argsort(ratio, kind="stable")
    cum = np.cumsum(weight[order])
    return float(ratio[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _n_params(config: Config) -> int:
    """Parameters of one shared model of this config (its flat parameter vector's length)."""
    return int(stacked_state_shape(config, 1, pooled_features(config)).params.shape[-1])


def shared_outputs(model, hist: Histories, owner: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Head outputs [P, K] of a shared model (PooledModel or survival.SurvivalModel: config, params,
    center, compiled) for interval `pos` of customer `owner`, from the intervals before it."""
    cfg = model.config
    B = cfg.train.pooled_batch
    compiled = model.compiled or compile_steps(cfg, 1, B, only=("evaluate",), n_features=pooled_features(cfg))
    inputs = example_inputs(hist, owner, pos, cfg.data.look_back, model.center)
    return _outputs(compiled, model.params, inputs, len(pos), B, cfg)


def _outputs(compiled: Compiled, params, inputs: Callable[[np.ndarray], np.ndarray], P: int, B: int,
             cfg: Config) -> np.ndarray:
    """Forward pass over examples 0..P-1, inputs(rows) [len(rows), L, F] built per batch of B -> [P, K]."""
    y = np.zeros((1, B) + cfg.target_shape, np.int32 if cfg.n_classes else np.float32)
    mask = np.ones((1, B), np.float32)
    outs = []
    for s in range(0, P, B):
        xs = inputs(np.arange(s, min(s + B, P)))
        part = np.zeros((1, B) + xs.shape[1:], np.float32)
        part[0, : len(xs)] = xs
        outs.append(np.asarray(compiled.evaluate(params, part, y, mask)[2])[0, : min(B, P - s)])
    return np.concatenate(outs) if outs else np.zeros((0, cfg.n_outputs), np.float32)


def examples(hist: Histories, start: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(owner [P], pos [P], is_val [P]): every interval of every customer; validation from the
    customer's holdout start on."""
    k = np.diff(hist.offsets)
    owner = np.repeat(np.arange(hist.n_customers), k)
    pos = np.arange(len(hist.intervals)) - hist.offsets[owner]
    return owner, pos, pos >= start[owner]


def fit_pooled(hist: Histories, q: Questions, config: Config, progress: bool = True) -> tuple[PooledModel, list[dict]]:
    """Train the pooled model on every interval but the questions, each customer weighing 1 in total
    (see the module doc), early-stopped on the selection customers' questions; at its own size (pooled_config)."""
    config = pooled_config(config)
    d = config.data
    owner, pos, _ = examples(hist, np.diff(hist.offsets))
    train = q.train_intervals(hist)
    train_rows = np.flatnonzero(train)
    val_rows = (hist.offsets[q.owner] + q.pos)[q.selection]
    y_days = hist.intervals
    center = float(encode(y_days[train_rows]).mean()) if len(train_rows) else 0.0
    inputs = example_inputs(hist, owner, pos, d.look_back, center)
    y = to_bins(y_days, d.bins) if d.bins else (encode(y_days) - center).astype(np.float32)
    weight = customer_weights(owner, pos, train, config.train.pooled_recency)
    params, compiled, history = train_shared(config, inputs, y, train_rows, val_rows, config.train.pooled_epochs, "pooled",
                                             progress, weight)
    heldout = PooledModel(config, params, center, compiled)
    heldout.scale = question_scale(heldout, hist, q)
    if not config.train.pooled_refit or not len(val_rows) or not history:
        return dataclasses.replace(heldout, heldout=heldout), history
    # the questions are every customer's latest gaps, the closest to the next one: once the epoch count is
    # chosen on them, the model that answers learns from them too (the same epochs, every interval), so it
    # answers at its own scale
    epochs = int(np.argmin([h["val_loss"] for h in history])) + 1
    every = np.ones(len(owner), bool)
    final_cfg = dataclasses.replace(config, train=dataclasses.replace(config.train, patience=0))
    final, compiled_final, _ = train_shared(final_cfg, inputs, y, np.arange(len(owner)), val_rows, epochs, "pooled (all)",
                                            progress, customer_weights(owner, pos, every, config.train.pooled_recency), keep="last")
    return PooledModel(config, final, center, compiled_final, heldout=heldout), history


def customer_weights(owner: np.ndarray, pos: np.ndarray, train: np.ndarray, recency: float) -> np.ndarray:
    """[P] example weights: within each customer's training examples, recency ** (how many later ones
    it has), normalised so that each customer sums to 1; scaled so the mean training weight is 1
    (the loss is a weighted mean, the learning rate keeps its meaning). recency 1: every example of a
    customer alike; 0: only its latest."""
    later = np.zeros(len(owner), np.float64)
    if train.any():  # examples are in customer, then position order: count the training examples after each
        n_train = np.bincount(owner[train], minlength=int(owner.max()) + 1)
        rank = np.cumsum(train) - 1 - np.r_[0, np.cumsum(n_train)][owner]  # 0-based index among the customer's training examples
        later = n_train[owner] - 1 - rank
    w = np.where(train, np.power(float(recency), later), 0.0) if recency > 0 else np.where(train & (later == 0), 1.0, 0.0)
    totals = np.bincount(owner, weights=w)
    w = np.where(train, w / np.maximum(totals[owner], 1e-300), 0.0)
    return (w * train.sum() / max(w.sum(), 1e-300)).astype(np.float32)


def train_shared(config: Config, inputs: Callable[[np.ndarray], np.ndarray], y: np.ndarray, train_rows: np.ndarray,
                 val_rows: np.ndarray, epochs: int, desc: str, progress: bool = True, weight: np.ndarray | None = None,
                 keep: str = "best") -> tuple[Any, Compiled, list[dict]]:
    """One model over P examples, inputs(rows) -> [len(rows), L, F] float32 and y [P, ...]: minibatches of
    train.pooled_batch from a fresh random subset of `train_rows` each epoch (each example's loss times `weight` [P], default 1),
    early-stopped on `val_rows`. Returns (the parameters with the best validation loss, or with
    keep="last" those of the last epoch, leading axis 1; the compiled steps; the loss history).
    Each minibatch's inputs are built when it is taken (example_inputs): the [P, L, F] inputs of every
    example are never held at once. A point model (not the survival head) trains at the shared model's
    own size (pooled_config), whichever config it is given."""
    config = config if config.loss == "survival" else pooled_config(config)
    t = config.train
    B = t.pooled_batch
    compiled = compile_steps(config, 1, B, n_features=inputs(np.zeros(0, np.int64)).shape[-1],
                             **data_parallel(B))
    seed = np.int32(t.seed)
    state = compiled.init(seed, SEED_PAIR)
    history = []
    bar = progress_bar(range(epochs), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        u = uniform(SEED_PAIR[:, 1].astype(np.uint64), (t.seed << 20) + 2 * epoch + 1, len(train_rows))[0]
        # a fresh random subset each epoch: the shared model converges long before a million
        # customers' intervals have each been seen 20 times
        order = train_rows[np.argsort(u, kind="stable")][: t.pooled_examples_per_epoch]
        sums, ns = [], []
        for k, s in enumerate(range(0, len(order), B)):
            rows = order[s : s + B]
            xb, yb, mb = _padded(inputs, y, rows, B, weight)
            drop = compiled.dropout(SEED_PAIR, seed, np.int32(epoch), np.int32(k))
            state, (ls, n) = compiled.train(state, xb, yb, mb, drop)
            sums.append(ls), ns.append(n)
        vs, vn = np.zeros(1, np.float32), np.zeros(1, np.float32)
        for s in range(0, len(val_rows), B):
            xb, yb, mb = _padded(inputs, y, val_rows[s : s + B], B)
            a, b, _ = compiled.evaluate(state.params, xb, yb, mb)
            vs, vn = vs + np.asarray(a), vn + np.asarray(b)
        state = compiled.end_epoch(state, vs, vn, np.int32(epoch))
        row = {"epoch": epoch + 1, "train_loss": float(sum(np.asarray(a).sum() for a in sums) / max(sum(np.asarray(b).sum() for b in ns), 1)),
               "val_loss": float(vs[0] / max(vn[0], 1))}
        history.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val=f"{row['val_loss']:.4f}")
        if bool(np.asarray(state.stopped)[0]):
            break
    # many validation windows: picking the best epoch on them costs little optimism
    return jax.tree_util.tree_map(np.asarray, state.best_params if keep == "best" else state.params), compiled, history


def data_parallel(B: int) -> dict:
    """compile_steps' keywords for a shared model's step: on several GPUs / TPUs its minibatch of B is
    split over them (step.compile_steps(data_parallel=True): the same model to float tolerance,
    tests/test_devices.py); on CPU one device. Forced host devices share the same cores, so splitting
    gains nothing there, and the gradient all-reduce can deadlock when they outnumber the cores."""
    placement = Placement.local()
    if placement.n_devices > 1 and placement.devices[0].platform != "cpu" and B % placement.n_devices == 0:
        return {"placement": placement, "data_parallel": True}
    return {}


def _padded(inputs: Callable[[np.ndarray], np.ndarray], y: np.ndarray, rows: np.ndarray, B: int,
            weight: np.ndarray | None = None):
    """One minibatch [1, B, ...] of `rows`, zero-padded; the mask carries each example's weight."""
    x = inputs(rows)
    xb = np.zeros((1, B) + x.shape[1:], np.float32)
    yb = np.zeros((1, B) + y.shape[1:], y.dtype)
    mb = np.zeros((1, B), np.float32)
    xb[0, : len(rows)], yb[0, : len(rows)] = x, y[rows]
    mb[0, : len(rows)] = 1.0 if weight is None else weight[rows]
    return xb, yb, mb
