"""The run report: OUT/report.md with the scores against the baselines and three plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from jaxlstm.evaluate import BASELINES, BUCKETS, table


def write_report(out: Path, metrics: dict, holdout: pd.DataFrame) -> None:
    """Write out/report.md and out/plots/*.png from a run's metrics and its holdout answers."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    ev = metrics["evaluation"]
    names = {
        "scatter": _scatter(plt, holdout, plots / "predicted_vs_actual.png"),
        "buckets": _by_history(plt, ev, plots / "mae_by_history.png"),
        "curves": _curves(plt, metrics["history"], plots / "training_curves.png"),
    }
    mode = metrics["mode"]
    best = min((m for m in ev["overall"] if m in BASELINES and ev["overall"][m]["mae_days"] is not None),
               key=lambda m: ev["overall"][m]["mae_days"], default=None)
    ours = ev["overall"].get(mode, {}).get("mae_days")  # None: e.g. mode pooled with nothing to train on
    base = ev["overall"][best]["mae_days"] if best else None
    verdict = (f"Each customer's last visit, hidden and predicted from the visits before it: the answers (mode `{mode}`) "
               f"are off by **{ours:.2f} days** per customer; the best simple baseline, `{best}`, by {base:.2f} days "
               f"(skill {(1 - ours / base):+.1%}; on customers answered from 5+ visits: {_skill(ev, mode)})."
               if ours is not None and base else "No customer with two visits: the log is too short to score anything.")
    rows = metrics.get("rows", {})
    lines = [
        "# jaxlstm run report",
        "",
        f"{metrics['customers']:,} customers, mode `{mode}`; {metrics['customers_with_model']:,} with a model of their "
        f"own. Answered by: " + ", ".join(f"{k} {v:,}" for k, v in metrics["answers_by_model"].items()) + ".",
        "",
        verdict,
        "",
        "## Mean absolute error (days) per customer, by visits it is answered from",
        "",
        f"Headline: {ev['holdout']}; {ev['customers']:,} customers. "
        f"`{mode}` is what `predictions.parquet` answers. `auto`: per history length the best of the baselines and "
        "the shared model, and customers' own models where they beat that beyond noise, chosen on the other half of "
        "the customers. `per_customer`: every customer's own model where it has one (the classic recipe), else its "
        "median. `pooled`: one shared model for everyone. `finetune` (when run): own models started from the shared "
        "one, the shared one for the rest.",
        "",
        table(ev),
        "",
        f"The selection customers ({ev['selection']['customers']:,}; optimistic: who answers was chosen and the shared "
        "model stopped on them):",
        "",
        table(ev["selection"]),
        "",
        "Answering where no own model does (`auto`), by visits: "
        + ", ".join(f"{k}: `{v}`" for k, v in ev["fallback_by_history"].items()) + ".",
        "",
        f"![predicted vs actual](plots/{names['scatter']})",
        f"![MAE by history length](plots/{names['buckets']})",
        f"![training curves](plots/{names['curves']})",
        "",
        *_as_of_section(plt, metrics.get("as_of") or {}, plots),
        f"Training: {metrics['epochs_run']} epochs in {metrics['seconds_train']:.1f} s "
        f"(+{metrics['seconds_compile']:.1f} s compile); rows read {rows.get('read', 0):,}, "
        f"rejected {rows.get('rejected', 0):,}.",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))


def _skill(ev: dict, mode: str) -> str:
    s = ev.get("skill", {}).get("5+ visits", {})
    return f"{s[mode]:+.1%} against `{s['best_baseline']}`" if s.get(mode) is not None else "none scored"


def _as_of_section(plt, as_of: dict, plots: Path) -> list[str]:
    """The as-of backtest (jaxlstm/asof.py): who comes back first, and P(back within k days)."""
    bt = as_of.get("backtest")
    if not bt:
        return []
    head = [f"## As of {as_of['date']}: who comes back, and when", ""]
    if "skipped" in bt:
        return head + [f"No backtest: {bt['skipped']}.", ""]
    c = bt["concordance"]
    lines = head + [
        f"`predictions.parquet` answers as of {as_of['date']} (`--as-of`): `p_within_{{k}}d` is the chance of a visit "
        "within k days of it given none since the last visit, `predicted_next_visit` the median date of the next "
        "visit (empty where the customer is more likely gone than back), `expected_wait_days` the expected wait "
        "counting at most the horizon. Backtest: the same answers as of "
        f"{bt['cut']} from the log before it, scored on what followed ({bt['customers']:,} customers, "
        f"{bt['back_within_horizon']:.1%} came back within the horizon).",
        "",
        "| ranking of who comes back first | concordance |",
        "|---|---|",
        f"| jaxlstm (expected wait, survival model) | {c['model']:.3f} |",
        f"| days since last visit (most recent first) | {c['days_since_last_visit']:.3f} |",
        f"| last visit + median interval (the classic recipe's date) | {c['last_visit_plus_median_interval']:.3f} |",
        "",
        "| answer | Brier | base rate's Brier | share that came back |",
        "|---|---|---|---|",
        *[f"| `{k}` | {v['model']:.4f} | {v['base_rate']:.4f} | {v['rate']:.1%} |" for k, v in bt["brier"].items()],
        "",
    ]
    if bt["calibration"]:
        fig, ax = plt.subplots(figsize=(5, 5))
        for k, bins in bt["calibration"].items():
            ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], "o-", label=k)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlabel("predicted probability (deciles)")
        ax.set_ylabel("observed share")
        ax.set_title("backtest calibration")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plots / "calibration.png", dpi=110)
        plt.close(fig)
        lines += ["![calibration](plots/calibration.png)", ""]
    return lines


def _scatter(plt, holdout: pd.DataFrame, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(5, 5))
    if len(holdout):
        model = holdout["answered_by"] == "per_customer"
        for sel, label, color in ((~model, "baseline answered", "tab:gray"), (model, "own model answered", "tab:blue")):
            ax.scatter(holdout.loc[sel, "actual_days"] + 0.1, holdout.loc[sel, "auto_days"] + 0.1, s=6, alpha=0.4,
                       label=f"{label} ({int(sel.sum()):,})", color=color)
        top = float(max(holdout["actual_days"].max(), holdout["auto_days"].max())) + 1
        ax.plot([0.1, top], [0.1, top], "k--", lw=0.8)
        ax.set_xscale("log"), ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax.set_xlabel("actual interval (days + 0.1)")
    ax.set_ylabel("predicted interval (days + 0.1)")
    ax.set_title("holdout: predicted vs actual")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _by_history(plt, ev: dict, path: Path) -> str:
    buckets = [name for _, _, name in BUCKETS if ev["by_history"][name]["intervals"]]
    methods = [m for m in ev["overall"] if ev["overall"][m]["mae_days"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(buckets))
    for i, m in enumerate(methods):
        mae = [ev["by_history"][b][m]["mae_days"] or np.nan for b in buckets]
        ax.bar(x + i * width, mae, width, label=m)
    ax.set_xticks(x + 0.4 - width / 2, [f"{b}\n({ev['by_history'][b]['intervals']:,})" for b in buckets])
    ax.set_xlabel("visits per customer (held-out intervals)")
    ax.set_ylabel("MAE (days)")
    if methods and buckets:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _curves(plt, history: list[dict], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if history:
        epochs = [h["epoch"] for h in history]
        ax.plot(epochs, [h["train_loss"] for h in history], label="train")
        ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
        ax.legend()
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean loss over customers still training")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
