"""Per-customer predictions: restore a run's models, run the vmapped forward pass on each customer's
latest window, and give exactly one row per input customer (a labelled fallback where no model
can answer)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from jaxlstm import checkpoint
from jaxlstm.config import Config, from_dict, load_config
from jaxlstm.data.batching import model_inputs
from jaxlstm.data.events import Checked, check_events, options, parse_as_of
from jaxlstm.data.intervals import Histories, histories
from jaxlstm.data.windows import Windows, bin_values, decode, make_windows, to_bins
from jaxlstm.errors import InputError
from jaxlstm.fit import checkpoint_tree, forward_each
from jaxlstm.evaluate import BUCKETS, customer_baselines, fallback_kind, pick
from jaxlstm.pooled import PooledModel, features, n_features, pooled_features
from jaxlstm.survival import OwnSurvival, SurvivalModel, default_as_of, probability_columns, survival_config
from jaxlstm.step import Compiled, CustomerState, kept_params, stacked_state_shape

# `model` column values: PER_CUSTOMER, a baseline name (see evaluate.BASELINES) or NONE
PER_CUSTOMER, FINETUNED, NONE = "per_customer", "finetuned", "none"
# `status` column values
OK, TOO_FEW, UNKNOWN, DIVERGED, REJECTED = "ok", "too_few_visits", "unknown_customer", "diverged", "all_rows_rejected"
BASELINE_WON = "baseline_beat_model"
# without a run's choice of baseline per history length (mode per_customer, or an older run)
CLASSIC_FALLBACK = {name: "customer_median" for _, _, name in BUCKETS}


@dataclasses.dataclass(frozen=True)
class RunModel:
    """What prediction needs from a trained run: each modelled customer's kept parameters.

    keys: [N] str customer ids; center: [N] float32; params: tree with leading [N];
    diverged: [N] bool (those customers get a fallback with status 'diverged');
    answers: [N] bool, False where a baseline beat the customer's model on its validation windows
      (mode auto): those get the baseline with status 'baseline_beat_model';
    fallback_by: {history bucket: baseline name or "pooled"} answering where no own model does
      (None: the customer's median, else the population median);
    pooled: the shared model, when the run trained one;
    survival: the survival model behind the as-of answers (p_within_*d, predicted_next_visit), if trained;
    own_survival: customers' own survival models (modes per_customer, finetune), answering for them;
    as_of: the run's as-of date: predict's default when no later visit is in the log.
    """

    config: Config
    keys: np.ndarray
    center: np.ndarray
    params: Any
    diverged: np.ndarray
    answers: np.ndarray
    fallback_by: dict[str, str] | None = None
    pooled: PooledModel | None = None
    survival: SurvivalModel | None = None
    own_survival: OwnSurvival | None = None
    as_of: pd.Timestamp | None = None  # the date the run answered as of


def load_run(run_dir: str | Path) -> RunModel:
    """Restore a run directory written by `train_all`: the latest checkpoint of the customers' own
    models, the choice of answers, the shared model."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints"
    found = checkpoint.read_meta(ckpt)
    saved = json.loads((run_dir / "answers.json").read_text()) if (run_dir / "answers.json").exists() else None
    if saved is not None:  # its shared models are read with this version's layout
        checkpoint.check_schema(run_dir / "answers.json", saved.get("schema_version", 1))
    if found is None and (saved is None or not (run_dir / "config.toml").exists()):
        raise InputError(f"{run_dir}: no checkpoint found (expected {ckpt}; is this a train_all.py --out folder?)")
    if found is None:  # a finished run with no model of anyone's own (mode pooled, or all histories short)
        config = load_config(run_dir / "config.toml")
        keys, center, params, diverged = np.zeros(0, str), np.zeros(0, np.float32), None, np.zeros(0, bool)
    else:
        step, meta = found
        config = from_dict(meta["config"])
        keys = np.asarray(meta["customer_ids"], dtype=str)
        state, center = _restore_customers(ckpt, step, config, len(keys), meta.get("n_features", n_features(config)))
        params, diverged = kept_params(state, config), np.asarray(state.diverged)
    answers, fallback_by = np.ones(len(keys), bool), None
    chosen = run_dir / "customer_metrics.parquet"
    if chosen.exists():  # written after training, with the per-customer choice of answer
        table = pd.read_parquet(chosen, columns=["customer_id", "model_answers"])
        if len(table) != len(keys) or not (table["customer_id"].astype(str).to_numpy() == keys).all():
            raise InputError(f"{chosen}: its customers are not those of the checkpoint in {ckpt} (a file from another "
                             "run?): train the run again")
        answers = table["model_answers"].to_numpy(bool)
    if saved is not None:
        fallback_by = saved["fallback_by_history"]
    pooled = survival = own_survival = None
    # which shared models this run wrote (a run stopped before answers.json: whatever is there)
    has = (saved or {}).get("models", {"pooled": True, "survival": True, "own_survival": True})
    if has["pooled"] and (run_dir / "pooled").exists():
        params_p, center_p = checkpoint.restore_shared(run_dir / "pooled", stacked_state_shape(config, 1, pooled_features(config)).params)
        pooled = PooledModel(config, params_p, center_p)
    if has["survival"] and (run_dir / "survival").exists():
        s_cfg = survival_config(config)
        params_s, center_s = checkpoint.restore_shared(run_dir / "survival", stacked_state_shape(s_cfg, 1, pooled_features(config)).params)
        survival = SurvivalModel(s_cfg, params_s, center_s)
        found_own = checkpoint.read_meta(run_dir / "survival_checkpoints") if has["own_survival"] else None
        if found_own is not None:
            step_o, meta_o = found_own
            own_keys = np.asarray(meta_o["customer_ids"], dtype=str)
            state_o, _ = _restore_customers(run_dir / "survival_checkpoints", step_o, s_cfg, len(own_keys), pooled_features(config))
            own_survival = OwnSurvival(s_cfg, own_keys, kept_params(state_o, s_cfg), center_s, np.asarray(state_o.diverged))
    run_as_of = pd.Timestamp(saved["as_of"]) if saved and saved.get("as_of") else None
    return RunModel(config, keys, center, params, diverged, answers, fallback_by, pooled, survival, own_survival, run_as_of)


def _restore_customers(directory: Path, step: int, config: Config, n: int, n_feat: int) -> tuple[CustomerState, np.ndarray]:
    """(training state, centre) of the n customers saved at `step` by the per-customer trainer."""
    abstract = checkpoint_tree(stacked_state_shape(config, n, n_feat), np.zeros(n, np.float32), 0)
    restored = checkpoint.restore(directory, step, abstract)
    return CustomerState(**restored["customers"]), restored["center"]


def add_days(when: np.ndarray, days: np.ndarray) -> np.ndarray:
    """datetime64[ns] + float days; NaT where days is NaN or the date would pass the year 2262."""
    out = np.full(len(when), np.datetime64("NaT"), "datetime64[ns]")
    room = (np.datetime64(pd.Timestamp.max) - when.astype("datetime64[ns]")) / np.timedelta64(1, "D")
    ok = np.isfinite(days) & (days < room)
    out[ok] = when[ok] + (days[ok] * 86_400e6).astype("timedelta64[us]")
    return out


def predict_frame(run: RunModel, hist: Histories, windows: Windows, compiled: Compiled | None = None,
                  as_of: pd.Timestamp | None = None) -> pd.DataFrame:
    """One row per customer of `hist` (see DESIGN.md, outputs). Customers the run has a healthy,
    chosen model for get the model's answer; the others a labelled baseline (`run.fallback_by`),
    computed from all of their intervals in `hist`. With a survival model, the as-of answers
    (default as of the run's as-of date, or the day after the latest visit if that is later): predicted_next_visit is the median date of
    the next visit given none so far (NaT: more likely gone than back), p_within_{k}d the chance
    of a visit within k days of `as_of`."""
    cfg = run.config
    N = hist.n_customers
    row = pd.Index(run.keys).get_indexer(hist.keys)  # -1: not in the run
    known = row >= 0
    diverged, answers = np.zeros(N, bool), np.zeros(N, bool)
    diverged[known] = run.diverged[row[known]]
    answers[known] = run.answers[row[known]]
    healthy = known & ~diverged
    use = healthy & answers & windows.has_last
    idx = np.flatnonzero(use)

    days = np.full(N, np.nan)
    kind = fallback_kind(hist.n_visits, run.fallback_by or CLASSIC_FALLBACK)
    no_own = np.diff(hist.offsets) == 0  # a customer baseline without intervals is the population's
    kind[no_own & np.char.startswith(kind.astype(str), "customer_")] = "population_median"
    values = customer_baselines(hist)
    need = np.flatnonzero((kind == "pooled") & ~(healthy & answers & windows.has_last))
    if len(need) and run.pooled is not None:
        values["pooled"] = np.full(N, np.nan)
        values["pooled"][need] = run.pooled.answer(hist, need, np.diff(hist.offsets)[need])[0]
    else:
        kind[kind == "pooled"] = "population_median"  # an older run, or no interval to train on
    fallback_days = pick(values, kind)
    model = kind.copy()
    has_window = np.diff(windows.offsets) > 0
    status = np.where(known & ~healthy, DIVERGED, np.where(~known & has_window, UNKNOWN, TOO_FEW)).astype(object)
    status[healthy & ~answers] = BASELINE_WON

    if cfg.model.mode == "finetune":  # fine-tuned models read the pooled inputs of the next, unseen interval
        x = features(hist, idx, np.diff(hist.offsets)[idx], cfg.data.look_back, float(run.center[0]) if len(run.center) else 0.0)
    else:
        x = model_inputs(windows.last[idx], run.center[row[idx]], None if windows.last_extra is None else windows.last_extra[idx])
    out = forward_each(cfg, run.params, row[idx], x, compiled)
    if cfg.n_classes:
        probs = np.full((N, cfg.n_classes), np.nan, np.float32)
        probs[idx] = np.asarray(jax.nn.softmax(out, axis=-1))
        days[idx] = bin_values(cfg.data.bins)[probs[idx].argmax(-1)]
    else:
        days[idx] = decode(out[:, 0] + run.center[row[idx]])
    days = np.where(use, days, fallback_days)
    model[use], status[use] = FINETUNED if cfg.model.mode == "finetune" else PER_CUSTOMER, OK
    # the shared model answered (the `model` column says so); other reasons (diverged, a baseline beat
    # the customer's model, not in a run that has own models) stay
    status[(model == "pooled") & ((status == TOO_FEW) | ((status == UNKNOWN) & (len(run.keys) == 0)))] = OK

    frame = pd.DataFrame(
        {
            "customer_id": hist.ids,
            "n_visits": hist.n_visits,
            "last_visit": hist.last_visit,
            "predicted_interval_days": days,
            "predicted_next_visit": add_days(hist.last_visit, days),  # the classic date, without a survival model
            "model": model,
            "status": status,
        }
    )
    columns = [name for name, _ in probability_columns(cfg)]
    if run.survival is not None and N:
        if as_of is None:  # the run's date (e.g. the export date), unless the log has visits after it
            as_of = default_as_of(hist.last_visit)
            as_of = max(as_of, run.as_of) if run.as_of is not None else as_of
        asof = run.survival.answer(hist, as_of, run.own_survival)
        when = np.full(N, np.datetime64(as_of.as_unit("ns")), "datetime64[ns]")
        frame["predicted_next_visit"] = add_days(when, np.where(np.isfinite(asof["remaining_days"]), asof["remaining_days"], np.nan))
        frame["days_since_last_visit"] = asof["days_since_last_visit"]
        frame["expected_wait_days"] = asof["expected_wait_days"]
        for name in columns:
            frame[name] = asof[name]
    else:
        frame["days_since_last_visit"] = frame["expected_wait_days"] = np.nan
        for name in columns:
            frame[name] = np.nan
    if cfg.n_classes:
        for k in range(cfg.n_classes):
            frame[f"p_bin_{k}"] = probs[:, k]
        frame["predicted_bin"] = np.where(use, probs.argmax(-1) if N else 0, to_bins(np.nan_to_num(fallback_days), cfg.data.bins))
    return frame


def add_orphans(frame: pd.DataFrame, orphans: np.ndarray, status: str = REJECTED) -> pd.DataFrame:
    """Append a row without a prediction for each of `orphans` (default: customers all of whose rows
    were rejected)."""
    if len(orphans) == 0:
        return frame
    extra = pd.DataFrame({"customer_id": orphans, "n_visits": 0, "model": NONE, "status": status})
    out = pd.concat([frame, extra.astype({"n_visits": frame["n_visits"].dtype})], ignore_index=True)
    return out[frame.columns]


def add_unanswered(frame: pd.DataFrame, checked: Checked) -> pd.DataFrame:
    """Every customer of a checked log in the table: those all of whose rows were rejected, and
    those whose every visit is on or after the as-of date (no visit to answer from: too few visits)."""
    return add_orphans(add_orphans(frame, checked.orphans), checked.after_as_of, TOO_FEW)


def predict_checked(run: RunModel, checked: Checked, as_of: str | pd.Timestamp | None = None) -> pd.DataFrame:
    """Predict every customer of a checked visit log (see `events.check_events`), including those
    all of whose rows were rejected (status "all_rows_rejected"), as of `as_of` (default: the day
    after the latest visit)."""
    d = run.config.data
    as_of = parse_as_of(as_of, d.timezone)
    hist = histories(checked.events, floor_days=d.floor_days, extra_cols=d.extra_cols, summary=d.summary_features)
    return add_unanswered(predict_frame(run, hist, make_windows(hist, d.look_back), as_of=as_of), checked)


def predict(
    run_dir: str | Path, events: pd.DataFrame, id_col: str | None = None, time_col: str | None = None,
    source: str = "<DataFrame>", as_of: str | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Predict every customer of `events` (a visit table) with the models of a saved run.

    Columns are the run's `data.id_col` / `data.time_col` unless given. Returns one row per customer.
    A bad row raises InputError (to set bad rows aside, use `check_events` + `predict_checked`).
    """
    run = load_run(run_dir)
    d = run.config.data
    checked = check_events(events, id_col or d.id_col, time_col or d.time_col, source, as_of=as_of, **options(d))
    return predict_checked(run, checked, as_of)
