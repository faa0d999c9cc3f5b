"""The run report: OUT/report.md with the scores against the baselines and three plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from jaxlstm.evaluate import BUCKETS, MAX_STEP, table


MIN_CUSTOMERS = 30  # headline customers below which no score is read as a verdict (a paired comparison of a few is noise)
UNIFORM_MARGIN = 0.1  # own models whose median top class probability is below 1/K + this are near-uniform
CONSTANT_SHARE = 0.5  # own models of which this share or more give the same answer (to 0.1 day) are near-constant


def write_report(out: Path, metrics: dict, holdout: pd.DataFrame, predictions: pd.DataFrame | None = None) -> None:
    """Write out/report.md and out/plots/*.png from a run's metrics (with its `verdict`), its holdout answers and
    its predictions (for the worked example). A plot with nothing to show is neither drawn nor linked."""
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    ev = metrics["evaluation"]
    mode = metrics["mode"]
    figures = {"predicted_vs_actual.png": ("predicted vs actual", scatter_figure(holdout, mode)),
               "mae_by_history.png": ("MAE by history length", by_history_figure(ev)),
               "training_curves.png": ("training curves", curves_figure(metrics))}
    links = []
    for name, (title, fig) in figures.items():
        if (plots / name).exists():
            (plots / name).unlink()  # an earlier run's plot must not stand in for a missing one
        if fig is not None:
            fig.savefig(plots / name, dpi=110)
            links.append(f"![{title}](plots/{name})")
    rows = metrics.get("rows", {})
    small = ev["customers"] < MIN_CUSTOMERS
    lines = [
        "# jaxlstm run report",
        "",
        "## Verdict",
        "",
        *metrics.get("verdict", []),
        "",
        *([f"- **warning**: {w}" for w in metrics["warnings"]] + [""] if metrics.get("warnings") else []),
        f"{metrics['customers']:,} customers, mode `{mode}`; {metrics['customers_with_model']:,} with a model of their "
        f"own trained ({metrics.get('customers_answered_by_own_model', 0):,} answered by it). Answered by (`model`): "
        + ", ".join(f"{k} {v:,}" for k, v in metrics["answers_by_model"].items()) + "; status: "
        + ", ".join(f"{k} {v:,}" for k, v in metrics["status_counts"].items()) + ".",
        "",
        *_reading_section(predictions, metrics),
        "## Mean absolute error (days) per customer, by visits it is answered from",
        "",
        f"Headline: {ev['holdout']}; {ev['customers']:,} customers"
        + (f" (too few to judge: {MIN_CUSTOMERS} or more needed; the table is shown for completeness)" if small else "")
        + f". `{mode}` is what `predictions.parquet` answers. `auto`: per history length the best of the baselines "
        "and the shared model, and customers' own models where they beat that beyond noise, chosen on the other half "
        "of the customers. `per_customer`: every customer's own model where it has one (the classic recipe), else its "
        "median. `pooled`: one shared model for everyone. `finetune` (when run): own models started from the shared "
        "one, the shared one for the rest.",
        "",
        *([table(ev), ""] if ev["customers"] else ["No customer with two visits: the log is too short to score anything.", ""]),
        *([f"The selection customers ({ev['selection']['customers']:,}; optimistic: who answers was chosen and the "
           "shared model stopped and scaled on them):", "", table(ev["selection"]), ""] if ev["selection"]["customers"] else []),
        "Answering where no own model does (`auto`), by visits: "
        + ", ".join(f"{k}: `{v}`" for k, v in ev["fallback_by_history"].items()) + ".",
        "",
        *_step_lines(metrics.get("step_factor")),
        *links,
        "",
        *_as_of_section(metrics.get("as_of") or {}, plots),
        f"Training: {own_epochs(metrics)} "
        f"(+{metrics['seconds_compile']:.1f} s compile); shared model {len(metrics.get('pooled_history') or [])} epochs"
        + (f" (its day answers x {metrics['pooled_scale']:.3f}: the factor that fits the selection customers' questions best)"
           if metrics.get("pooled_history") and "pooled_scale" in metrics else "") + ", "
        f"survival model {len((metrics.get('as_of') or {}).get('survival_history') or [])}; rows read "
        f"{rows.get('read', 0):,}, rejected {rows.get('rejected', 0):,}.",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))


def _step_lines(step: float | None) -> list[str]:
    """What the tables above do not score: the step from the latest gap to the next (evaluate.step_factor)."""
    if step is None:  # model.step_to_next off, class answers, or a run written before the step
        return []
    if step == 1.0:
        return ["`predicted_interval_days` is the answer these tables score: in the log the run trained on, a customer's "
                "latest gap is not longer than the one before it beyond noise (a sign test over the pairs, and their "
                "medians), so no step is taken to the next gap (only a step up is: see README).", ""]
    return [f"`predicted_interval_days` is the answer these tables score times **{step:.3f}**, the step to the next gap: "
            f"in the log the run trained on (a run in shards: its first shard), a customer's latest gap is {step:.3f} "
            f"times the one before it (median over median, customers with two or more, at most {MAX_STEP:g}; beyond "
            "noise by a sign test), and the next gap is one step on. The tables score the latest gap, so they cannot "
            "score the step; `model.step_to_next = false` turns it off.", ""]


def verdict(metrics: dict, predictions: pd.DataFrame, n_classes: int = 0) -> tuple[list[str], list[str]]:
    """(lines, warnings) judging a run: which answers beat which simple baseline by how much (skill on the
    headline customers, evaluate.report), and warnings where the run's answer is worse than a simple baseline,
    own models are near-constant or near-uniform, the as-of ranking is no better than days since the last visit,
    or the holdout is too small to judge."""
    ev, mode = metrics["evaluation"], metrics["mode"]
    lines, warnings = [], []
    n = ev["customers"]
    sk, sk5 = ev["skill"].get("all", {}), ev["skill"].get("5+ visits", {})
    best = sk.get("best_baseline")
    if n == 0 or best is None:
        lines.append("No customer with two visits: the log is too short to score anything.")
    elif n < MIN_CUSTOMERS:
        lines.append(f"The holdout has {n:,} headline customers: too few to judge which answer is better "
                     f"({MIN_CUSTOMERS} or more needed).")
        warnings.append(f"the holdout is too small to judge ({n:,} headline customers, {MIN_CUSTOMERS} needed): "
                        "no answer is shown to beat or lose to a baseline")
    else:
        lines.append(f"Each customer's last visit hidden and predicted from the visits before it, {n:,} headline "
                     f"customers; the best simple baseline is `{best}`, off by {sk['mae_days']:.2f} days per customer.")
        trained = [m for m in ("auto", "finetune", "per_customer", "pooled") if sk.get(m) is not None]
        for m in sorted(trained, key=lambda m: m != mode):
            mae = ev["overall"][m]["mae_days"]
            five = sk5.get(m)
            tail = (f"; from 5+ visits ({sk5.get('customers', 0):,} customers): {_better(five)} `{sk5['best_baseline']}`"
                    if five is not None else "")
            step = metrics.get("step_factor")
            stepped = step not in (None, 1.0)
            what = ((f" (this run's answer; predictions.parquet holds it times the step to the next gap, {step:.3f})" if stepped
                     else " (this run's answer, in predictions.parquet)") if m == mode else "")
            scored = ev["overall"][m].get("n", n)
            if scored < n:  # own models of a sample (train.judge_customers): scored where they are
                what += f" on the {scored:,} customers with an own model"
            lines.append(f"- `{m}`{what}: {mae:.2f} days, {_better(sk[m])} `{best}`{tail}.")
        if sk.get(mode) is not None and sk[mode] < 0:
            warnings.append(f"the run's answer (mode {mode}) is worse than the simple baseline `{best}` by "
                            f"{-sk[mode]:.1%} per customer: the baseline would answer better")
    warnings += _own_model_warnings(predictions, n_classes)
    c = ((metrics.get("as_of") or {}).get("backtest") or {}).get("concordance")
    if c and c.get("model") is not None and c.get("days_since_last_visit") is not None \
            and c["model"] < c["days_since_last_visit"]:
        warnings.append(f"the as-of ranking (concordance {c['model']:.3f}) is below ranking by days since the last "
                        f"visit ({c['days_since_last_visit']:.3f}): sort by days_since_last_visit instead of "
                        "expected_wait_days")
    return lines, warnings


def _better(skill: float) -> str:
    return f"{skill:.1%} better than" if skill >= 0 else f"{-skill:.1%} worse than"


def _own_model_warnings(predictions: pd.DataFrame, n_classes: int) -> list[str]:
    """Own models that answer alike for everyone (near-constant) or with class probabilities near 1/K."""
    own = predictions[predictions["model"].isin(("per_customer", "finetuned"))]
    if len(own) < 10:  # too few own answers to call their spread
        return []
    out = []
    if n_classes:
        probs = own[[f"p_bin_{k}" for k in range(n_classes)]].to_numpy(dtype=float)
        top = float(np.median(probs.max(1)))
        if top < 1 / n_classes + UNIFORM_MARGIN:
            out.append(f"own models are near-uniform: median top class probability {top:.3f} over {len(own):,} "
                       f"(uniform: {1 / n_classes:.3f}); they have learnt little beyond the class shares")
    days = own["predicted_interval_days"].round(1)
    counts = days.value_counts()
    if len(counts) and counts.iloc[0] >= CONSTANT_SHARE * len(own):
        out.append(f"own models are near-constant: {counts.iloc[0]:,} of {len(own):,} predict {counts.index[0]:g} days")
    return out


def _reading_section(predictions: pd.DataFrame | None, metrics: dict) -> list[str]:
    """How to read predictions.parquet's two dates and p_gone, on one customer of this run."""
    if predictions is None or "p_gone" not in predictions or not predictions["p_gone"].notna().any():
        return []
    as_of = pd.Timestamp((metrics.get("as_of") or {}).get("date"))
    ok = predictions[predictions["p_gone"].notna() & predictions["predicted_interval_days"].notna()
                     & predictions["predicted_next_visit"].notna()]
    if not len(ok):
        return []
    overdue = ok[ok["last_visit"] + pd.to_timedelta(ok["predicted_interval_days"], unit="D") < as_of]
    pool = overdue if len(overdue) else ok
    c = (pool[pool["n_visits"] >= 3] if (pool["n_visits"] >= 3).any() else pool).iloc[0]  # one with a history to read
    due = c["last_visit"] + pd.Timedelta(days=float(c["predicted_interval_days"]))
    return [
        "## Reading predictions.parquet",
        "",
        f"Customer `{c['customer_id']}` (model `{c['model']}`): last visit {c['last_visit']:%Y-%m-%d}. "
        f"`predicted_interval_days` {c['predicted_interval_days']:.1f} is the next gap *if it comes back*, from its "
        f"history: last visit + {c['predicted_interval_days']:.1f} days = {due:%Y-%m-%d}"
        + (f", already past on the as-of date {as_of:%Y-%m-%d} (overdue). `predicted_next_visit` "
           f"{c['predicted_next_visit']:%Y-%m-%d} is therefore the survival model's median date of the next visit given "
           "it comes back, counted from the as-of date."
           if due < as_of else
           f", on or after the as-of date {as_of:%Y-%m-%d}, so `predicted_next_visit` is that date."
           if c["predicted_next_visit"] <= due else
           f", on or after the as-of date {as_of:%Y-%m-%d}; given its silence since, the survival model's median date "
           f"of the next visit is later, {c['predicted_next_visit']:%Y-%m-%d}, and `predicted_next_visit` is that.")
        + f" `p_gone` {c['p_gone']:.3f}: the chance it never comes back, given no visit in the "
        f"{c['days_since_last_visit']:.0f} days since its last. The rule for every customer: `predicted_next_visit` "
        "is the later of last visit + `predicted_interval_days` and the as-of date + the median wait given a visit "
        "comes (what the silence so far says); `p_gone` says how likely none comes.",
        "",
    ]


def _skill(ev: dict, mode: str) -> str:
    s = ev.get("skill", {}).get("5+ visits", {})
    return f"{s[mode]:+.1%} against `{s['best_baseline']}`" if s.get(mode) is not None else "none scored"


def own_epochs(metrics: dict) -> str:
    """'own models N epochs in S s', with the epochs of this call apart after a --resume."""
    total, this = len(metrics.get("history") or []), metrics["epochs_run"]
    if total > this:  # resumed: the history holds the earlier calls' epochs too
        return f"own models {total} epochs ({this} of them in this call, {metrics['seconds_train']:.1f} s)"
    return f"own models {this} epochs in {metrics['seconds_train']:.1f} s"


def _as_of_section(as_of: dict, plots: Path) -> list[str]:
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
        "within k days of it given none since the last visit, `predicted_next_visit` the date of the next visit "
        "*if the customer comes back* (`p_gone` is the chance it does not: rank who comes back first by "
        "`expected_wait_days` or `p_within_{k}d`, not by this date), `expected_wait_days` the expected wait "
        "counting at most the horizon. Backtest: the same answers as of "
        f"{bt['cut']}, the horizon before {bt['as_of']} (the as-of date, or the day after the log's latest visit "
        "where that is earlier: what followed must be known), from the log before it, scored on what followed "
        f"({bt['customers']:,} customers, "
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
        from matplotlib.figure import Figure  # a figure of its own: no pyplot state, no backend switched

        fig = Figure(figsize=(5, 5))
        ax = fig.subplots()
        for k, bins in bt["calibration"].items():
            ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], "o-", label=k)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlabel("predicted probability (deciles)")
        ax.set_ylabel("observed share")
        ax.set_title("backtest calibration")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plots / "calibration.png", dpi=110)
        lines += ["![calibration](plots/calibration.png)", ""]
    return lines


def scatter_figure(holdout: pd.DataFrame, mode: str):
    """Predicted vs actual on the holdout for the run's answers (column f"{mode}_days"), one colour per `model`
    that answered; None when nothing was scored."""
    col = f"{mode}_days"
    if not len(holdout) or col not in holdout or not np.isfinite(holdout[col]).any():
        return None
    from matplotlib.figure import Figure  # a figure of its own: no pyplot state, no backend switched

    who = answered_by(holdout, mode)
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    for name in pd.Series(who).value_counts().index:  # the most common first
        sel = (who == name) & np.isfinite(holdout[col].to_numpy())
        ax.scatter(holdout.loc[sel, "actual_days"] + 0.1, holdout.loc[sel, col] + 0.1, s=6, alpha=0.4,
                   label=f"{name} ({int(sel.sum()):,})")
    top = float(max(holdout["actual_days"].max(), np.nanmax(holdout[col]))) + 1
    ax.plot([0.1, top], [0.1, top], "k--", lw=0.8)
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.legend(fontsize=8, title="model", title_fontsize=8)
    ax.set_xlabel("actual interval (days + 0.1)")
    ax.set_ylabel("predicted interval (days + 0.1)")
    ax.set_title(f"holdout: predicted vs actual (mode {mode})")
    fig.tight_layout()
    return fig


def answered_by(holdout: pd.DataFrame, mode: str) -> np.ndarray:
    """[Q] who answered each question in `mode`, as predictions.parquet's `model` names them."""
    if mode == "auto":
        return holdout["answered_by"].to_numpy(dtype=object)
    if mode == "pooled":
        return np.full(len(holdout), "pooled", dtype=object)
    # per_customer / finetune answer with the own model where a customer has one, else customer_median / pooled;
    # the holdout keeps only the answers, so an answer equal to the fallback's is the fallback's (floats: no ties)
    other, own = ("customer_median", "per_customer") if mode == "per_customer" else ("pooled", "finetuned")
    mine = holdout[f"{mode}_days"].to_numpy() != holdout.get(f"{other}_days", holdout[f"{mode}_days"]).to_numpy()
    return np.where(mine, own, other).astype(object)


def by_history_figure(ev: dict):
    """MAE per history bucket, one bar per method; None when no bucket was scored."""
    buckets = [name for _, _, name in BUCKETS if ev["by_history"][name]["intervals"]]
    methods = [m for m in ev["overall"] if ev["overall"][m]["mae_days"] is not None]
    if not buckets or not methods:
        return None
    from matplotlib.figure import Figure  # a figure of its own: no pyplot state, no backend switched

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    width = 0.8 / len(methods)
    x = np.arange(len(buckets))
    for i, m in enumerate(methods):
        mae = [ev["by_history"][b][m]["mae_days"] or np.nan for b in buckets]
        ax.bar(x + i * width, mae, width, label=m)
    ax.set_xticks(x + 0.4 - width / 2, [f"{b}\n({ev['by_history'][b]['intervals']:,})" for b in buckets])
    ax.set_xlabel("visits per customer (headline customers)")
    ax.set_ylabel("MAE (days)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def curves_figure(metrics: dict):
    """Train and validation loss per epoch of each model trained (own models, shared, survival); None when no
    model trained an epoch."""
    series = {"own models": metrics.get("history") or [], "shared (pooled) model": metrics.get("pooled_history") or [],
              "survival model": (metrics.get("as_of") or {}).get("survival_history") or []}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    from matplotlib.figure import Figure  # a figure of its own: no pyplot state, no backend switched

    fig = Figure(figsize=(4.5 * len(series), 3.5))
    axes = fig.subplots(1, len(series), squeeze=False)
    for ax, (name, history) in zip(axes[0], series.items()):
        epochs = [h["epoch"] for h in history]
        ax.plot(epochs, [h["train_loss"] for h in history], label="train")
        ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend()
    axes[0][0].set_ylabel("mean loss")
    fig.tight_layout()
    return fig
