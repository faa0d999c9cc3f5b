"""The analytic FLOP count used by the throughput benchmark, checked against XLA's own count."""

import jax
import jax.numpy as jnp
import pytest

from jaxlstm.config import load_config
from jaxlstm.flops import forward_flops, train_flops
from jaxlstm.model import build_model


@pytest.mark.parametrize("over", [{}, {"model.units": 16, "model.lstm_layers": 3}, {"data.bins": "10,20,40", "data.look_back": 5}])
def test_forward_flops_match_xla_cost_analysis(over):
    config = load_config(None, over)
    model = build_model(config)
    B, L = 64, config.data.look_back
    x = jnp.ones((B, L, 1))
    params = model.init(jax.random.key(0), x)
    cost = jax.jit(lambda p, x: model.apply(p, x)).lower(params, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    xla_per_window = cost["flops"] / B
    assert forward_flops(config) == pytest.approx(xla_per_window, rel=0.15)


def test_classic_model_count():
    # PERF.md: 2 x LSTM(8) + Dense(8) + Dense(5), look_back 3: ~5.8 kFLOP forward, ~17.3 kFLOP training
    config = load_config(None, {"data.bins": "40,60,80,100"})
    assert 5_000 < forward_flops(config) < 6_500
    assert train_flops(config) == 3 * forward_flops(config)
