"""Two processes joined by jax.distributed on 127.0.0.1 (each trains its own chunks) give every
customer the same parameters as one process, and resume each other's checkpoints."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# 19 customers in chunks of 4: 5 chunks, process 0 trains 3 and process 1 trains 2
SCRIPT = textwrap.dedent("""
    import json, os, sys
    out, nproc, pid, port, epochs, resume = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6] == "resume"
    from jaxlstm import distributed
    if nproc > 1:
        assert distributed.initialize(f"127.0.0.1:{port}", nproc, pid)
    import jax, numpy as np
    from jaxlstm.config import load_config
    from jaxlstm.data.events import validate_events
    from jaxlstm.fit import fit, prepare
    from jaxlstm.synth import make_customers

    cfg = load_config("configs/tiny.toml", {"train.epochs": epochs, "train.chunk_customers": 4, "train.compilation_cache": False})
    events = validate_events(make_customers(19, seed=7, visits=(6, 40), one_off_share=0.0))
    prep = prepare(events, cfg)
    r = fit(prep, cfg, ckpt_dir=os.path.join(out, "ckpt"), resume=resume, progress=False)
    np.savez(os.path.join(out, f"p{pid}.npz"), keys=np.asarray(prep.hist.keys[prep.model_rows], str), params=r.state.params,
             best=r.state.best_params, epochs_trained=r.state.epochs_trained, val_days=r.val_days, val_sum=r.val_sum)
    json.dump({"processes": r.processes, "devices": r.devices, "chunks": len(prep.chunks), "mine": distributed.my_chunks(len(prep.chunks)),
               "epochs": [h["epoch"] for h in r.history]}, open(os.path.join(out, f"p{pid}.json"), "w"))
""")
FIELDS = ("params", "best", "epochs_trained", "val_days", "val_sum")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:  # held open together: n distinct ports
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _start(out: Path, n: int, epochs: int, port: int, resume: bool = False) -> list[subprocess.Popen]:
    out.mkdir(exist_ok=True)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    return [subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), str(n), str(i), str(port), str(epochs),
                              "resume" if resume else "fresh"], cwd=ROOT, env=env) for i in range(n)]


def _wait(procs: list[subprocess.Popen]) -> None:
    try:
        assert [p.wait(timeout=600) for p in procs] == [0] * len(procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def _results(out: Path, n: int) -> list[tuple[dict, dict]]:
    return [(json.loads((out / f"p{i}.json").read_text()), dict(np.load(out / f"p{i}.npz"))) for i in range(n)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The runs are independent but for the resume: they run side by side (each process mostly imports and
    compiles). One process for 3 epochs, two processes for 3 epochs, and one process for 2 epochs (killed after
    2 epochs, as it were) whose checkpoint two processes then resume."""
    one, two, resumed = (tmp_path_factory.mktemp(name) for name in ("one", "two", "resumed"))
    ports = _free_ports(2)
    first = _start(one, 1, 3, ports[0]) + _start(two, 2, 3, ports[1])
    try:
        _wait(_start(resumed, 1, 2, ports[0]))
        _wait(_start(resumed, 2, 3, ports[0], resume=True))
    finally:
        _wait(first)
    return {"one": _results(one, 1)[0], "two": _results(two, 2), "resumed": _results(resumed, 2), "resumed_dir": resumed}


def _same(a: dict, b: dict) -> None:
    np.testing.assert_array_equal(a["keys"], b["keys"])  # every customer once, in the same order
    for name in FIELDS:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_two_processes_train_what_one_process_trains(runs):
    (info1, a), two = runs["one"], runs["two"]
    assert [info["mine"] for info, _ in two] == [[0, 2, 4], [1, 3]]  # disjoint chunks, all of them
    assert all(info["processes"] == 2 and info["devices"] == 2 for info, _ in two)
    for _, b in two:  # both processes end with every customer's state
        _same(a, b)
    assert info1["epochs"] == two[0][0]["epochs"] == [1, 2, 3]
    assert a["epochs_trained"].max() == 3  # trained states are compared, not inits


def test_two_processes_resume_a_one_process_checkpoint(runs):
    two = runs["resumed"]
    assert two[0][0]["epochs"] == [1, 2, 3]  # the history of the first 2 epochs came from the checkpoint
    _same(runs["one"][1], two[0][1])
    assert (runs["resumed_dir"] / "ckpt" / "3").is_dir()  # the two processes wrote one checkpoint
