"""The customer axis sharded over several devices (4 forced CPU devices, in a subprocess: the
device count is fixed when jax starts) trains every customer as one device does."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# trains 13 customers per customer (2 per device per call: 1 device packs 7 chunks of 2, 4 devices
# 2 chunks of 8, the last with 3 padding customers) and saves parameters, answers and placement facts
SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    import jax, numpy as np
    from jaxlstm import train_all
    from jaxlstm.config import load_config
    from jaxlstm.data.events import validate_events
    from jaxlstm.fit import fit, prepare
    from jaxlstm.synth import make_customers

    out = sys.argv[1]
    # survival_epochs 0: the answers compared below are the own models' (the survival columns are not compared)
    cfg = load_config("configs/tiny.toml", {"train.epochs": 3, "train.chunk_customers": 2, "model.mode": "per_customer",
                                            "train.survival_epochs": 0, "train.compilation_cache": False})
    events = validate_events(make_customers(13, seed=5, visits=(6, 40), one_off_share=0.0))
    prep = prepare(events, cfg)
    result = fit(prep, cfg, progress=False)
    pred = train_all(events, cfg, progress=False)
    params = result.compiled.init.out_info.params
    init = fit(prep, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=0)), progress=False)
    np.savez(out + ".npz", keys=np.asarray(prep.hist.keys[prep.model_rows], str), params=result.state.params,
             init=init.state.params,
             best=result.state.best_params, stopped=result.state.stopped, val_days=result.val_days,
             pred_ids=np.asarray(pred["customer_id"], str), pred=pred["predicted_interval_days"].to_numpy(float),
             model=np.asarray(pred["model"], str))
    json.dump({"devices": result.devices, "local_devices": len(jax.local_devices()), "chunks": len(prep.chunks),
               "chunk_customers": int(result.compiled.shape[0]),
               "params_sharding": str(params.sharding.spec), "mesh_devices": params.sharding.mesh.size},
              open(out + ".json", "w"))
""")


def _start(tmp: Path, devices: int) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp / f"d{devices}")], cwd=ROOT, env=env)


def _result(tmp: Path, devices: int) -> tuple[dict, dict]:
    out = tmp / f"d{devices}"
    return json.loads(Path(f"{out}.json").read_text()), dict(np.load(f"{out}.npz"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("devices")
    procs = [_start(tmp, 1), _start(tmp, 4)]  # two independent processes: side by side (import and compile overlap)
    try:
        assert [p.wait(timeout=600) for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return _result(tmp, 1), _result(tmp, 4)


def test_four_devices_shard_the_customer_axis(runs):
    (one, _), (four, _) = runs
    assert one["devices"] == 1 and four["devices"] == 4 == four["local_devices"]
    # 2 customers per device per call: chunks of 2 on one device, 8 on four (13 customers: 7 and 2 chunks)
    assert (one["chunk_customers"], one["chunks"]) == (2, 7)
    assert (four["chunk_customers"], four["chunks"]) == (8, 2)
    assert four["mesh_devices"] == 4 and "customers" in four["params_sharding"]


def test_four_devices_train_every_customer_as_one_device_does(runs):
    (_, a), (_, b) = runs
    order_a, order_b = np.argsort(a["keys"]), np.argsort(b["keys"])
    np.testing.assert_array_equal(a["keys"][order_a], b["keys"][order_b])  # every customer, once
    for name in ("params", "best"):
        np.testing.assert_allclose(a[name][order_a], b[name][order_b], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(a["stopped"][order_a], b["stopped"][order_b])
    np.testing.assert_allclose(a["val_days"], b["val_days"], rtol=1e-5, atol=1e-5)  # flat, in window order
    # whole runs: the same answers, from the customers' own models (not a fallback that hides them)
    np.testing.assert_array_equal(a["pred_ids"], b["pred_ids"])
    assert (a["model"] == "per_customer").sum() >= 10
    np.testing.assert_allclose(a["pred"], b["pred"], rtol=1e-5, atol=1e-5)
    # and training moved the parameters: the comparison is not between two inits
    assert np.abs(a["params"] - a["init"]).max() > 1e-3


class _Device:  # what Placement reads of a device: its platform
    def __init__(self, platform):
        self.platform = platform


def test_chunk_size_follows_the_device_kind_and_count():
    from jaxlstm.placement import ACCELERATOR_SCALE, Placement

    cpu4, gpu2 = Placement(tuple(_Device("cpu") for _ in range(4))), Placement(tuple(_Device("gpu") for _ in range(2)))
    assert cpu4.chunk_size(256, 10**6) == 1024  # 256 per CPU device
    assert gpu2.chunk_size(256, 10**7) == 2 * 256 * ACCELERATOR_SCALE  # thousands per GPU
    assert cpu4.chunk_size(256, 13) == 16  # never more than the customers, rounded up to the device count
    assert cpu4.chunk_size(256, 0) == 4 and cpu4.round_up(8) == 8 and cpu4.round_up(9) == 12


def test_padding_customers_have_nothing_to_train():
    from jaxlstm.data import batching

    C, W, L = 3, 8, 2
    rng = np.random.default_rng(0)
    chunk = batching.Chunk(np.arange(C), rng.integers(0, 9, (C, 2)).astype(np.uint32), np.ones(C, np.float32),
                           rng.normal(size=(C, W, L, 1)).astype(np.float32), rng.normal(size=(C, W)).astype(np.float32),
                           np.full(C, 5, np.int32), np.zeros((C, W, L, 1), np.float32), np.zeros((C, W), np.float32),
                           np.full(C, 2, np.int32))
    padded = batching.pad_customers(chunk, 4)
    assert padded.real.tolist() == [True, True, True, False]
    assert padded.n_train[3] == 0 and padded.n_val[3] == 0 and not padded.x_train[3].any()
    np.testing.assert_array_equal(padded.x_train[:C], chunk.x_train)
    assert batching.pad_customers(chunk, C) is chunk
    with pytest.raises(ValueError):
        batching.pad_customers(chunk, 2)


# one shared model (C = 1, the pooled and survival models' shape) trained data-parallel over 4
# devices, its minibatch split over them, and on one device: 6 steps, validation, epoch end
SHARED = textwrap.dedent("""
    import jax, numpy as np
    from jaxlstm.config import load_config
    from jaxlstm.placement import Placement
    from jaxlstm.step import compile_steps

    cfg = load_config("configs/tiny.toml", {"train.compilation_cache": False})
    B, F = 64, 6
    rng = np.random.default_rng(0)
    seeds = np.array([[1, 2]], np.uint32)
    results = {}
    for name, placement, dp in (("one", Placement.single(), False), ("four", Placement.local(), True)):
        c = compile_steps(cfg, 1, B, n_features=F, half=True, placement=placement, data_parallel=dp)
        st = c.init(np.int32(0), seeds)
        data = np.random.default_rng(1)
        for k in range(6):
            x = data.normal(size=(1, B, 3, F)).astype(np.float32)
            y = data.normal(size=(1, B)).astype(np.float32)
            m = data.uniform(size=(1, B)).astype(np.float32)
            st, _ = c.train(st, x, y, m, c.dropout(seeds, np.int32(0), np.int32(0), np.int32(k)))
        half = B // 2
        st, _ = c.train_half(st, x[:, :half], y[:, :half], m[:, :half], c.dropout_half(seeds, np.int32(0), np.int32(0), np.int32(6)))
        s, n, out = c.evaluate(st.params, x[:, :half], y[:, :half], m[:, :half])
        st = c.end_epoch(st, s, n, np.int32(0))
        results[name] = (np.asarray(st.params), np.asarray(st.best_params), np.asarray(out), float(np.asarray(s)[0]),
                         out.sharding.mesh.size if hasattr(out.sharding, "mesh") else 1)
    (p1, b1, o1, s1, d1), (p4, b4, o4, s4, d4) = results["one"], results["four"]
    assert (d1, d4) == (1, 4), (d1, d4)
    np.testing.assert_allclose(p4, p1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b4, b1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(o4, o1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s4, s1, rtol=1e-4)
    init = compile_steps(cfg, 1, B, n_features=F, half=True).init(np.int32(0), seeds)
    assert np.abs(p1 - np.asarray(init.params)).max() > 1e-3  # it trained
    print("ok", np.abs(p4 - p1).max())
""")


@pytest.mark.skipif((os.cpu_count() or 1) < 4, reason="the data-parallel step sums gradients across devices; 4 forced CPU "
                    "devices on fewer cores can deadlock in that all-reduce (seen on 2 cores: 2 of 4 threads arrived)")
def test_a_shared_model_trains_data_parallel_as_on_one_device():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run([sys.executable, "-c", SHARED], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")
