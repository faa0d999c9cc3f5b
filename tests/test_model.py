"""The forecaster: the fused-gate forward pass equals Flax's own nn.RNN(OptimizedLSTMCell)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.config import load_config
from jaxlstm.model import build_model, dropout_scales, forward, init_params


@pytest.mark.parametrize("over", [
    {},
    {"model.lstm_activation": "relu", "model.lstm_layers": 3, "model.units": 5},
    {"data.bins": "5,10,20", "model.dense": "6,4", "data.look_back": 6},
    {"model.lstm_layers": 1, "model.dense": ""},
    {"data.look_back": 1, "model.lstm_activation": "sigmoid"},
    {"model.lstm_activation": "linear", "model.units": 3},
])
def test_fused_forward_equals_flax_cell(over):
    config = load_config(None, over)
    fused = build_model(config)
    flax = dataclasses.replace(fused, fused=False)
    L = config.data.look_back
    params = init_params(fused, jax.random.key(1), L, 1, 1.0)
    # perturb so no gate sits at a symmetric default, then compare values and gradients
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree_util.tree_unflatten(tree, [a + 0.3 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])
    x = jax.random.normal(jax.random.key(3), (16, L, 1))
    drop = dropout_scales(jnp.uint32(7), config.model.lstm_layers, 16, config.model.units, 0.2)
    for d in (None, drop):
        np.testing.assert_allclose(forward(fused, params, x, d), forward(flax, params, x, d), rtol=1e-5, atol=1e-6)
    loss = lambda m: (lambda p: jnp.sum(forward(m, p, x, drop) ** 2))
    g1, g2 = jax.grad(loss(fused))(params), jax.grad(loss(flax))(params)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_dropout_scales_keep_the_expected_share():
    s = np.asarray(dropout_scales(jnp.uint32(3), 2, 500, 8, 0.2))
    assert set(np.unique(s).round(4)) == {0.0, 1.25}
    assert abs((s == 0).mean() - 0.2) < 0.02
    other = np.asarray(dropout_scales(jnp.uint32(4), 2, 500, 8, 0.2))
    assert (s != other).mean() > 0.2  # another seed, another mask


def test_forget_bias_added_at_init():
    config = load_config(None, {})
    params = init_params(build_model(config), jax.random.key(0), 3, 1, 1.0)
    assert np.all(params["lstm_0"]["hf"]["bias"] == 1.0) and np.all(params["lstm_0"]["hi"]["bias"] == 0.0)
