"""The next-visit forecaster for ONE customer: stacked Flax LSTM cells scanned over the window,
dropout while training, dense layers, then a regression or classification head. With
model.sequences = "separate", each extra column's sequence has its own LSTM stack and the stacks'
last outputs are concatenated before the dense layers (the classic recipe's layout).

No customer axis here: `step.py` vmaps these functions over customers.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxlstm.config import Config

_ACT = {"tanh": jnp.tanh, "relu": nn.relu, "sigmoid": nn.sigmoid, "linear": lambda x: x}


def mix32(x: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser: a cheap, well-mixing integer hash (uint32 -> uint32)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def dropout_scales(seed: jax.Array, n_layers: int, batch: int, units: int, rate: float) -> jax.Array:
    """[n_layers, batch, units] inverted-dropout multipliers (0 or 1 / (1 - rate)), one mask per window
    and layer, shared over the window's time steps as Keras does.

    The mask is a hash of (seed, element index): a few integer ops instead of a threefry draw. That
    and drawing it apart from the forward pass (see step.train_step) made the train step ~2x faster
    and its compile ~1 s shorter than nn.Dropout on this CPU (benchmarks/NOTES.md).
    """
    idx = jnp.arange(n_layers * batch * units, dtype=jnp.uint32).reshape(n_layers, batch, units)
    bits = mix32(idx * jnp.uint32(0x9E3779B9) + mix32(seed))
    u = (bits >> 8).astype(jnp.float32) * jnp.float32(1.0 / (1 << 24))  # uniform in [0, 1)
    return jnp.where(u >= rate, jnp.float32(1.0 / (1.0 - rate)), jnp.float32(0.0))


class Forecaster(nn.Module):
    """x: [B, L, F] windows -> [B, K] outputs (K = 1 for regression, else class logits).

    dropout: [lstm_layers, B, units] multipliers from `dropout_scales` while training, None for inference.
    """

    lstm_layers: int
    units: int
    lstm_activation: str
    dropout: float
    dense: tuple[int, ...]
    dense_activation: str
    n_out: int
    fused: bool = True  # forward() computes each layer's gates as one matmul (same parameters)
    # model.sequences = "separate": each extra column's sequence runs through its own LSTM stack
    separate_extra: int = 0  # how many extra columns (data.extra_cols) get a stack of their own
    summary: int = 0  # summary features (data.summary_features) travel with the gaps, last in x

    @nn.compact
    def __call__(self, x: jax.Array, dropout: jax.Array | None = None) -> jax.Array:
        outs = []
        for s, cols in enumerate(sequence_columns(x.shape[-1], self.separate_extra, self.summary)):
            h = x[..., cols] if s or len(cols) < x.shape[-1] else x
            for i in range(self.lstm_layers):
                name = f"lstm_{i}" if s == 0 else f"seq{s}_lstm_{i}"
                cell = nn.OptimizedLSTMCell(self.units, activation_fn=_ACT[self.lstm_activation], name=name)
                # windows are a few steps long: unrolling the scan fully runs ~15% faster on CPU
                h = nn.RNN(cell, unroll=x.shape[1], name=name.replace("lstm", "rnn"))(h)  # [B, L, units]
                if i == self.lstm_layers - 1:
                    h = h[:, -1]  # the last LSTM layer returns its final output only: [B, units]
                if dropout is not None:
                    h = h * (dropout[i][:, None, :] if h.ndim == 3 else dropout[i])
            outs.append(h)
        h = outs[0] if len(outs) == 1 else jnp.concatenate(outs, -1)  # the stacks' last outputs, side by side
        for j, width in enumerate(self.dense):
            h = _ACT[self.dense_activation](nn.Dense(width, name=f"dense_{j}")(h))
        return nn.Dense(self.n_out, name="head")(h)


def build_model(config: Config) -> Forecaster:
    m = config.model
    return Forecaster(
        lstm_layers=m.lstm_layers,
        units=m.units,
        lstm_activation=m.lstm_activation,
        dropout=m.dropout,
        dense=tuple(m.dense),
        dense_activation=m.dense_activation,
        n_out=config.n_outputs,
        fused=m.cell == "fused",
        separate_extra=len(config.data.extra_cols) if m.sequences == "separate" else 0,
        summary=4 if config.data.summary_features else 0,
    )


def sequence_columns(n_features: int, separate_extra: int, summary: int) -> list[np.ndarray]:
    """The input columns of each LSTM stack: the gaps' features (with the summary features, which
    describe the gaps) first, then one stack per separate extra column. Inputs are laid out
    [gap features..., extra columns..., summary features...] (data/batching.py, pooled.features)."""
    base = n_features - separate_extra - summary
    gaps = np.r_[np.arange(base), np.arange(base + separate_extra, n_features)]
    return [gaps] + [np.array([base + j]) for j in range(separate_extra)]


_GATES = ("i", "f", "g", "o")  # OptimizedLSTMCell's gate order: input, forget, cell, output


def forward(model: Forecaster, params, x: jax.Array, dropout: jax.Array | None = None) -> jax.Array:
    """`model.apply` for one customer's windows x [B, L, F] -> [B, K].

    With `model.fused` the same function is computed from the same Flax OptimizedLSTMCell
    parameters, but each layer's four input and four recurrent gate kernels are stacked (a time
    step is one matmul of [x_t, h] instead of eight small ones) and the layer's backward pass is
    written out (`lstm_layer`): the vmapped train step takes 6.0 ms on CPU where Flax's own takes
    7.9 (256 customers x 32 windows; benchmarks/NOTES.md). Tested equal to the Flax cell, values
    and gradients.
    """
    if not model.fused:
        return model.apply({"params": params}, x, dropout)
    outs = []
    for s, cols in enumerate(sequence_columns(x.shape[-1], model.separate_extra, model.summary)):
        h_seq = x[..., cols] if s or len(cols) < x.shape[-1] else x
        for i in range(model.lstm_layers):
            p = params[f"lstm_{i}" if s == 0 else f"seq{s}_lstm_{i}"]
            w_in = jnp.concatenate([p[f"i{g}"]["kernel"] for g in _GATES], axis=1)  # [I, 4H]
            w_h = jnp.concatenate([p[f"h{g}"]["kernel"] for g in _GATES], axis=1)  # [H, 4H]
            bias = jnp.concatenate([p[f"h{g}"]["bias"] for g in _GATES])
            h_seq = lstm_layer(model.lstm_activation, w_in, w_h, bias, h_seq)  # [B, L, H]
            if i == model.lstm_layers - 1:
                h_seq = h_seq[:, -1]  # the last LSTM layer returns its final output only: [B, H]
            if dropout is not None:
                h_seq = h_seq * (dropout[i][:, None, :] if h_seq.ndim == 3 else dropout[i])
        outs.append(h_seq)
    out = outs[0] if len(outs) == 1 else jnp.concatenate(outs, -1)
    for j in range(len(model.dense)):
        d = params[f"dense_{j}"]
        out = _ACT[model.dense_activation](_matmul(out, d["kernel"]) + d["bias"])
    return _matmul(out, params["head"]["kernel"]) + params["head"]["bias"]


# each activation's derivative from its output y = f(x): the backward pass needs no forward values
_DACT = {"tanh": lambda y: 1.0 - y * y, "relu": lambda y: (y > 0).astype(y.dtype),
         "sigmoid": lambda y: y * (1.0 - y), "linear": lambda y: jnp.ones_like(y)}


def _gates(act: str, z: jax.Array, H: int) -> tuple[jax.Array, ...]:
    """Activated gates (input, forget, cell, output) of pre-activations z [B, 4H]."""
    return nn.sigmoid(z[:, :H]), nn.sigmoid(z[:, H : 2 * H]), _ACT[act](z[:, 2 * H : 3 * H]), nn.sigmoid(z[:, 3 * H :])


def _lstm_scan(act: str, w_in, w_h, bias, xs):
    """The layer over a window: xs [B, L, I] -> hs [B, L, H], and per step the activated gates
    [B, 4H], the incoming cell and f(cell out) that the backward pass reuses."""
    B, L, H = xs.shape[0], xs.shape[1], w_h.shape[0]
    f = _ACT[act]
    z_in = _matmul(xs, w_in) + bias  # every time step's input part in one matmul
    h = c = jnp.zeros((B, H), xs.dtype)
    hs, gates, cs, fcs = [], [], [], []
    for t in range(L):
        z = z_in[:, t] if t == 0 else z_in[:, t] + _matmul(h, w_h)  # h starts at zero
        i, fg, g, o = _gates(act, z, H)
        cs.append(c)
        c = fg * c + i * g
        fc = f(c)
        h = o * fc
        hs.append(h), gates.append((i, fg, g, o)), fcs.append(fc)
    return jnp.stack(hs, 1), (gates, cs, fcs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def lstm_layer(act: str, w_in: jax.Array, w_h: jax.Array, bias: jax.Array, xs: jax.Array) -> jax.Array:
    """An LSTM layer over windows xs [B, L, I] -> hs [B, L, H] (gates as Flax's OptimizedLSTMCell:
    input, forget, cell, output; kernels w_in [I, 4H], w_h [H, 4H], one bias [4H]).

    The backward pass is written out: each weight gradient is ONE matmul over all time steps
    ([L * B, I + H]^T @ [L * B, 4H]) where autodiff makes one per step (at 8 units the step is bound
    by the count of tiny per-customer matmuls, not their size), and the gate derivatives come from
    the saved activations instead of recomputed sigmoids (benchmarks/NOTES.md). Tested equal to
    Flax's cell, values and gradients."""
    # without a gradient (evaluation, prediction) one matmul of [x_t, h] per step runs faster
    f, H = _ACT[act], w_h.shape[0]
    kernel = jnp.concatenate([w_in, w_h], 0)
    h = c = jnp.zeros((xs.shape[0], H), xs.dtype)
    hs = []
    for t in range(xs.shape[1]):
        i, fg, g, o = _gates(act, _matmul(jnp.concatenate([xs[:, t], h], axis=-1), kernel) + bias, H)
        c = fg * c + i * g
        h = o * f(c)
        hs.append(h)
    return jnp.stack(hs, 1)


def _lstm_fwd(act, w_in, w_h, bias, xs):
    hs, saved = _lstm_scan(act, w_in, w_h, bias, xs)
    return hs, (w_in, w_h, xs, hs, saved)


def _lstm_bwd(act, res, d_hs):
    w_in, w_h, xs, hs, (gates, cs, fcs) = res
    df = _DACT[act]
    L = xs.shape[1]
    dh, dc = jnp.zeros_like(d_hs[:, 0]), jnp.zeros_like(cs[0])
    dzs = [None] * L
    for t in reversed(range(L)):
        i, f, g, o = gates[t]
        dh = d_hs[:, t] + dh
        dc = dc + dh * o * df(fcs[t])
        dzs[t] = jnp.concatenate([dc * g * i * (1 - i), dc * cs[t] * f * (1 - f), dc * i * df(g), dh * fcs[t] * o * (1 - o)], -1)
        dc = dc * f  # to the incoming cell
        if t > 0:
            dh = _matmul(dzs[t], w_h.T)
    dz = jnp.stack(dzs, 1)  # [B, L, 4H]
    h_prev = jnp.concatenate([jnp.zeros_like(hs[:, :1]), hs[:, :-1]], 1)  # the h each step saw
    d_w_in = jnp.einsum("bli,blg->ig", xs, dz)
    d_w_h = jnp.einsum("blh,blg->hg", h_prev, dz)
    return d_w_in, d_w_h, dz.sum((0, 1)), _matmul(dz, w_in.T)


lstm_layer.defvjp(_lstm_fwd, _lstm_bwd)


def _matmul(a: jax.Array, w: jax.Array) -> jax.Array:
    return a @ w


def init_params(model: Forecaster, key: jax.Array, look_back: int, n_features: int, forget_bias: float):
    """Parameters for one customer. Adds `forget_bias` to each LSTM forget gate, as Keras does."""
    params = model.init(key, jnp.zeros((1, look_back, n_features)))["params"]
    for name in params:
        if "lstm_" in name:
            hf = params[name]["hf"]  # nn.RNN hoists its cell's parameters to this level
            hf["bias"] = hf["bias"] + forget_bias
    return params


def flatten(params) -> jax.Array:
    """One customer's parameter tree as one [P] vector, the form the trainer keeps: the optimizer
    update, the finiteness check and best-keeping are then one fused op each, not one per leaf."""
    return ravel_pytree(params)[0]


def param_unravel(model: Forecaster, look_back: int, n_features: int):
    """The inverse of `flatten` for this model and input width: [P] -> parameter tree."""
    shapes = jax.eval_shape(lambda k: init_params(model, k, look_back, n_features, 0.0), jax.random.key(0))
    return ravel_pytree(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes))[1]
