"""Throughput of the real trainer (the same `train_all` as scripts/train_all.py) on a generated log,
against the same JAX model trained one customer at a time, and against the machine's matmul rate.

    python benchmarks/throughput.py --customers 10000 --epochs 10 [--visits 20 120] [--hidden 8]
                                    [--loop-sample 100] [--repeats 3] [--with-keras] [--json out.json]

Prints one JSON object and a table. Timing rules: compile is measured apart (ahead-of-time compile);
the trainer's clock runs from the first step to block_until_ready after the last epoch; the loop
baseline compiles on a first customer, then times `--loop-sample` others and extrapolates. The
machine is shared, and a run's speed swings by +-30% within minutes: the trainer and the loop are
each measured `--repeats` times in the same process and the fastest is reported (noise only ever
adds time), every trainer run's seconds beside it (`seconds_train_runs`); the matmul rate is timed
just before each trainer run, and the one beside the fastest run is its peak (`gflops_peak_runs`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name() -> str:
    import jax

    d = jax.devices()[0]
    return f"{d.platform}: {cpu_name()}" if d.platform == "cpu" else f"{d.platform}: {d.device_kind}"


def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    """fp32 n x n matmul rate of the default JAX device, after a warm-up call."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(reps):
        out = f(a)
    out.block_until_ready()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def _customer_groups(events, sample: int, seed: int, look_back: int):
    """`sample` customers with at least one training window, and their rows."""
    import numpy as np

    counts = events.groupby("customer_id").size()
    eligible = counts[counts >= look_back + 2].index.to_numpy()
    rng = np.random.default_rng(seed)
    chosen = rng.choice(eligible, size=min(sample + 1, len(eligible)), replace=False)
    groups = dict(tuple(events[events["customer_id"].isin(chosen)].groupby("customer_id")))
    return [groups[c] for c in chosen]


def loop_seconds_per_customer(events, config, sample: int, repeats: int = 1) -> float:
    """The same JAX model and code path, one customer per call (chunk of 1): what a user gets by
    looping over customers with the jitted step reused. The first customer pays the compile; the
    fastest of `repeats` passes over the others counts."""
    from jaxlstm.fit import fit, prepare

    cfg = dataclasses.replace(config, train=dataclasses.replace(config.train, chunk_customers=1))
    groups = _customer_groups(events, sample, 1, cfg.data.look_back)
    fit(prepare(groups[0], cfg), cfg, progress=False)  # compile
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for g in groups[1:]:
            fit(prepare(g, cfg), cfg, progress=False)
        best = min(best, time.perf_counter() - t0)
    return best / max(len(groups) - 1, 1)


def keras_seconds_per_customer(events, config, sample: int) -> float:
    """The classic recipe: build, compile and fit one Keras model per customer (TensorFlow CPU),
    with this run's architecture, epochs and batch size, on the same windows and split."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import keras
    except ImportError:
        raise SystemExit("--with-keras needs TensorFlow: pip install -e '.[bench]'") from None
    from jaxlstm.fit import prepare

    m, t = config.model, config.train
    groups = _customer_groups(events, sample, 2, config.data.look_back)

    def one(g):
        chunk = prepare(g, config).chunks[0]
        n, v = int(chunk.n_train[0]), int(chunk.n_val[0])
        x, y = chunk.x_train[0, :n], chunk.y_train[0, :n]
        layers = [keras.Input((config.data.look_back, 1))]
        for i in range(m.lstm_layers):
            layers.append(keras.layers.LSTM(m.units, activation=m.lstm_activation, recurrent_dropout=m.dropout,
                                            return_sequences=i < m.lstm_layers - 1))
        layers += [keras.layers.Dense(w, activation=m.dense_activation) for w in m.dense]
        layers.append(keras.layers.Dense(1))
        model = keras.Sequential(layers)
        model.compile(optimizer=keras.optimizers.RMSprop(t.learning_rate), loss="mse")
        val = (chunk.x_val[0, :v], chunk.y_val[0, :v]) if v else None
        model.fit(x, y, epochs=t.epochs, batch_size=t.batch_size, validation_data=val, verbose=0)

    one(groups[0])  # TensorFlow's own start-up
    t0 = time.perf_counter()
    for g in groups[1:]:
        one(g)
    return (time.perf_counter() - t0) / max(len(groups) - 1, 1)


def run(customers: int, epochs: int, visits=(20, 120), hidden: int = 8, config_path: str | None = None,
        cache: bool = True, loop_sample: int = 100, keras_sample: int = 0, seed: int = 0, repeats: int = 3) -> dict:
    import jax

    from jaxlstm import load_config, make_customers, train_all
    from jaxlstm.flops import train_flops

    # mode per_customer and no survival model: time the vmapped per-customer trainer alone (auto also
    # trains the pooled model; the survival model, its backtest and, in per_customer, own survival
    # models are the as-of answers' cost, measured in the README's 100k-customer run)
    overrides = {"train.epochs": epochs, "model.units": hidden, "model.dense": str(hidden), "train.patience": 0,
                 "train.compilation_cache": cache, "model.mode": "per_customer", "train.survival_epochs": 0}
    config = load_config(config_path, overrides)
    if cache:
        from jaxlstm.train import enable_compilation_cache

        enable_compilation_cache()
    events = make_customers(customers, seed=seed, visits=tuple(visits))
    # (metrics.json, wall seconds, matmul rate timed just before) of each run; the first compiles, the others reuse
    # its programs. The shared machine has slow spells of minutes: a run is set against the matmul rate of its spell
    runs = []
    for _ in range(max(repeats, 1)):
        peak = matmul_gflops()
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            train_all(events, config, out, progress=False)
            runs.append((json.loads((Path(out) / "metrics.json").read_text()), time.perf_counter() - t0, peak))
    first, wall, _ = runs[0]
    m, _, peak = min(runs, key=lambda r: r[0]["seconds_train"])
    hist = m["history"]
    window_steps = m["windows_train"] * m["epochs_run"]
    flops = train_flops(config)
    result = {
        "customers": m["customers"],
        "customers_with_model": m["customers_with_model"],
        "epochs": epochs,
        "repeats": len(runs),
        "windows": m["windows_train"],
        "visits": list(visits),
        "hidden": hidden,
        "seconds_wall": wall,
        "seconds_prepare": m["seconds_prepare"],
        "seconds_compile": first["seconds_compile"],
        "seconds_train": m["seconds_train"],
        "seconds_train_runs": [r["seconds_train"] for r, _, _ in runs],
        "seconds_first_epoch": hist[0]["seconds"] if hist else None,
        "seconds_steady_epoch": (hist[-1]["seconds"] - hist[0]["seconds"]) / (len(hist) - 1) if len(hist) > 1 else None,
        "customers_per_s": m["customers_with_model"] / m["seconds_train"],
        "window_steps_per_s": window_steps / m["seconds_train"],
        "flops_per_window_step": flops,
        "gflops_achieved": flops * window_steps / m["seconds_train"] / 1e9,
        "gflops_peak_measured": peak,  # timed just before the fastest run
        "gflops_peak_runs": [g for _, _, g in runs],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": device_name(),
        "jax": jax.__version__,
        "compilation_cache": cache,
    }
    result["share_of_peak"] = result["gflops_achieved"] / result["gflops_peak_measured"]
    # the epochs after the first: the first also runs the models' init (~0.4 s per 10k customers,
    # dispatched before the clock starts) and the first touch of every buffer
    steady = result["seconds_steady_epoch"]
    result["customers_per_s_steady"] = m["customers_with_model"] / (epochs * steady) if steady else None
    if loop_sample:
        per = loop_seconds_per_customer(events, config, loop_sample, max(repeats, 1))
        result["loop_seconds_per_customer"] = per
        result["loop_customers_per_s"] = 1 / per
        result["speedup_vs_loop"] = result["customers_per_s"] * per
    if keras_sample:
        per = keras_seconds_per_customer(events, config, keras_sample)
        result["keras_seconds_per_customer"] = per
        result["speedup_vs_keras"] = result["customers_per_s"] * per
    return result


def table(r: dict) -> str:
    rows = [
        ("device", r["device"]),
        ("customers (with a model)", f"{r['customers']:,} ({r['customers_with_model']:,})"),
        ("epochs x training windows", f"{r['epochs']} x {r['windows']:,}"),
        ("wall, all in (the first run)", f"{r['seconds_wall']:.1f} s"),
        ("compile", f"{r['seconds_compile']:.1f} s"),
        ("training (fastest of the runs)", f"{r['seconds_train']:.1f} s of " + ", ".join(f"{x:.1f}" for x in r["seconds_train_runs"])),
        ("customers/s (all / after 1st epoch)", f"{r['customers_per_s']:,.0f} / {r['customers_per_s_steady'] or 0:,.0f}"),
        ("window-steps/s", f"{r['window_steps_per_s']:,.0f}"),
        ("GFLOP/s achieved / fp32 matmul peak", f"{r['gflops_achieved']:.1f} / {r['gflops_peak_measured']:.0f} ({r['share_of_peak']:.1%})"),
        ("peak RSS", f"{r['peak_rss_mb']:,.0f} MB"),
    ]
    if "speedup_vs_loop" in r:
        rows.append(("per-customer JAX loop", f"{r['loop_customers_per_s']:,.1f} customers/s -> {r['speedup_vs_loop']:.1f}x"))
    if "speedup_vs_keras" in r:
        rows.append(("classic Keras loop", f"{r['keras_seconds_per_customer']:.2f} s/customer -> {r['speedup_vs_keras']:,.0f}x"))
    return "\n".join(f"| {a:<36} | {b:>44} |" for a, b in rows)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--visits", type=int, nargs=2, default=(20, 120), metavar=("MIN", "MAX"))
    p.add_argument("--hidden", type=int, default=8, help="LSTM units per layer (and the hidden dense layer)")
    p.add_argument("--config", help="base TOML config (default: built-in defaults)")
    p.add_argument("--no-cache", action="store_true", help="disable the persistent compilation cache (cold compile)")
    p.add_argument("--loop-sample", type=int, default=100, help="customers timed in the one-by-one baseline (0: skip)")
    p.add_argument("--repeats", type=int, default=3, help="runs of the trainer, the loop and the matmul; the fastest counts")
    p.add_argument("--with-keras", action="store_true", help="also time the classic Keras loop (needs .[bench])")
    p.add_argument("--keras-sample", type=int, default=5)
    p.add_argument("--json", help="also write the JSON object to this file")
    args = p.parse_args(argv)
    r = run(args.customers, args.epochs, tuple(args.visits), args.hidden, args.config, not args.no_cache,
            args.loop_sample, args.keras_sample if args.with_keras else 0, repeats=args.repeats)
    print(json.dumps(r, indent=2))
    print(table(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return r


if __name__ == "__main__":
    main()
