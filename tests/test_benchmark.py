"""The throughput benchmark's JSON on a tiny size: keys, and figures consistent with each other and
with the run they describe (no timing thresholds: speed targets live in benchmarks/)."""

import json

import pytest

from conftest import benchmark
from jaxlstm import load_config
from jaxlstm.flops import train_flops

throughput = benchmark("throughput")

REQUIRED = {"customers", "epochs", "windows", "seconds_compile", "seconds_train", "customers_per_s", "speedup_vs_loop",
            "gflops_achieved", "gflops_peak_measured", "peak_rss_mb", "device"}


def test_throughput_json_schema_and_arithmetic(tmp_path, capsys):
    out = tmp_path / "out.json"
    printed = throughput.main(["--customers", "40", "--epochs", "2", "--visits", "8", "20", "--hidden", "4",
                               "--loop-sample", "2", "--repeats", "2", "--json", str(out)])
    r = json.loads(out.read_text())
    assert r == json.loads(json.dumps(printed))
    assert REQUIRED <= set(r)
    assert r["customers"] == 40 and r["epochs"] == 2 and r["hidden"] == 4
    assert 0 < r["customers_with_model"] <= 40 and r["windows"] > 0
    for key in ("seconds_compile", "seconds_train", "customers_per_s", "gflops_achieved", "gflops_peak_measured",
                "peak_rss_mb", "loop_seconds_per_customer"):
        assert r[key] > 0, key
    assert r["repeats"] == 2 and r["seconds_train"] == min(r["seconds_train_runs"]) and len(r["seconds_train_runs"]) == 2
    fastest = r["seconds_train_runs"].index(r["seconds_train"])
    assert r["gflops_peak_measured"] == r["gflops_peak_runs"][fastest]  # the matmul rate timed beside that run
    assert r["customers_per_s"] == pytest.approx(r["customers_with_model"] / r["seconds_train"])
    assert r["customers_per_s_steady"] == pytest.approx(r["customers_with_model"] / (r["epochs"] * r["seconds_steady_epoch"]))
    assert r["window_steps_per_s"] == pytest.approx(r["windows"] * r["epochs"] / r["seconds_train"])
    flops = train_flops(load_config(None, {"model.units": 4, "model.dense": "4"}))
    assert r["flops_per_window_step"] == flops
    assert r["gflops_achieved"] == pytest.approx(flops * r["window_steps_per_s"] / 1e9)
    assert r["speedup_vs_loop"] == pytest.approx(r["customers_per_s"] * r["loop_seconds_per_customer"])
    assert r["share_of_peak"] == pytest.approx(r["gflops_achieved"] / r["gflops_peak_measured"])
    assert r["device"].startswith("cpu")
    assert "customers/s" in capsys.readouterr().out  # the table
