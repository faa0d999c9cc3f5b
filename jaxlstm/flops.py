"""Analytic FLOP counts of the forecaster, for throughput reports (GFLOP/s achieved)."""

from __future__ import annotations

from jaxlstm.config import Config


def forward_flops(config: Config, n_features: int = 1) -> int:
    """FLOPs of one window's forward pass (a multiply-add counts 2).

    Per LSTM layer and time step: the gate pre-activations x @ W_i (I x 4H) and h @ W_h (H x 4H)
    -> 2 * 4H * (I + H), plus the 4H gate biases, 4H gate nonlinearities, the cell update
    c = f * c + i * g (3H), the output h = o * act(c) (2H) -> 4H + 4H + 5H = 13H elementwise.
    Dense layers: 2 * in * out + out (bias) + out (activation). Softmax / loss are left out.
    """
    m, L = config.model, config.data.look_back
    H, inputs, total = m.units, n_features, 0
    for _ in range(m.lstm_layers):
        total += L * (2 * 4 * H * (inputs + H) + 13 * H)
        inputs = H
    for width in m.dense:
        total += 2 * inputs * width + 2 * width
        inputs = width
    return total + 2 * inputs * (config.n_classes or 1) + (config.n_classes or 1)


def train_flops(config: Config, n_features: int = 1) -> int:
    """FLOPs of one window in one training step: forward + backward, the backward counted as twice
    the forward (gradients with respect to activations and to weights). The optimizer update is per
    step, not per window, and left out."""
    return 3 * forward_flops(config, n_features)
