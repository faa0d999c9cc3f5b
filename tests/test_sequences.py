"""model.sequences = "separate": each extra column's sequence through its own LSTM stack, merged before
the dense layers (the classic recipe's layout), against the one-stack model."""

import dataclasses

import jax
import numpy as np

from conftest import ROOT
from jaxlstm import load_config
from jaxlstm.model import build_model, forward, init_params, sequence_columns


def _model(sequences: str, extra_cols=(), summary=False, cell="fused"):
    cfg = load_config(ROOT / "configs" / "tiny.toml", {"model.sequences": sequences, "model.cell": cell,
                                                       "data.extra_cols": list(extra_cols), "data.summary_features": summary})
    return build_model(cfg)


def test_one_sequence_is_the_single_stack_model():
    x = np.random.default_rng(0).normal(size=(5, 3, 1)).astype(np.float32)
    one, sep = _model("concat"), _model("separate")
    p_one, p_sep = (init_params(m, jax.random.key(3), 3, 1, 1.0) for m in (one, sep))
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: np.array_equal(a, b), p_one, p_sep))
    np.testing.assert_array_equal(forward(one, p_one, x), forward(sep, p_sep, x))


def test_separate_stacks_read_their_own_columns_and_match_flax():
    # per-customer inputs: [gap, amount, visits, 4 summary features]: gaps + summaries in one stack, each extra in its own
    assert [c.tolist() for c in sequence_columns(7, 2, 4)] == [[0, 3, 4, 5, 6], [1], [2]]
    x = np.random.default_rng(1).normal(size=(4, 3, 7)).astype(np.float32)
    fused, flax = _model("separate", ("amount", "items"), True), _model("separate", ("amount", "items"), True, "flax")
    params = init_params(fused, jax.random.key(0), 3, 7, 1.0)
    assert {"lstm_0", "seq1_lstm_0", "seq2_lstm_0"} <= set(params)
    assert params["seq1_lstm_0"]["ii"]["kernel"].shape[0] == 1 and params["lstm_0"]["ii"]["kernel"].shape[0] == 5
    np.testing.assert_allclose(forward(fused, params, x), forward(flax, params, x), rtol=1e-5, atol=1e-6)
    # the amount reaches the output only through its own stack
    moved = x.copy()
    moved[..., 1] += 1.0
    cut = jax.tree_util.tree_map(np.asarray, params)
    cut = {**cut, "dense_0": {**cut["dense_0"], "kernel": cut["dense_0"]["kernel"].copy()}}
    units = fused.units
    cut["dense_0"]["kernel"][units : 2 * units] = 0.0  # the amount stack's rows of the first dense layer
    np.testing.assert_allclose(forward(fused, cut, x), forward(fused, cut, moved), rtol=1e-6)
    assert not np.allclose(forward(fused, params, x), forward(fused, params, moved))
    assert dataclasses.replace(fused, separate_extra=0) == _model("concat", ("amount", "items"), True)
