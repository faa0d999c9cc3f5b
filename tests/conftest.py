import importlib.util
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# keep the persistent XLA cache of test runs out of the user's home
os.environ.setdefault("JAXLSTM_CACHE_DIR", os.path.join(tempfile.gettempdir(), "jaxlstm-test-xla-cache"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")  # no silent float64 / int promotion

from jaxlstm.config import load_config  # noqa: E402
from jaxlstm.train import enable_compilation_cache  # noqa: E402

enable_compilation_cache()  # the library leaves global settings alone; the tests, like the scripts, opt in

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CSV = ROOT / "tests" / "data" / "example_transactions.csv"
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))
import _cli  # noqa: E402  (scripts/_cli.py: the scripts' one-line errors)


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script(name: str):
    """scripts/NAME.py as a module, to run its main() in this process."""
    return _module(name, SCRIPTS / f"{name}.py")


def benchmark(name: str):
    """benchmarks/NAME.py as a module (benchmarks/ is not a package), to call its functions."""
    return _module(f"{name}_benchmark", ROOT / "benchmarks" / f"{name}.py")


def cli_fails(module, args, capsys) -> str:
    """Run a script's main in this process; it must exit 2 with exactly one stderr line, no traceback."""
    with pytest.raises(SystemExit) as e:
        _cli.run(module.main, [str(a) for a in args])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def tiny():
    return load_config(ROOT / "configs" / "tiny.toml")


def visit_log(gaps_by_customer: dict, start="2023-01-01") -> pd.DataFrame:
    """A visit table from {customer_id: [gap days, ...]} (first visit at `start`)."""
    frames = []
    for cid, gaps in gaps_by_customer.items():
        offsets = np.r_[0.0, np.cumsum(np.asarray(gaps, float))]
        t = np.datetime64(start, "s") + (offsets * 86400).astype("timedelta64[s]")
        frames.append(pd.DataFrame({"customer_id": cid, "timestamp": t}))
    return pd.concat(frames, ignore_index=True)
