"""Per-customer predictions: restore a run's models, run the vmapped forward pass on each customer's
latest window, and give exactly one row per input customer (a labelled fallback where no model
can answer)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import pandas as pd

from jaxlstm import checkpoint
from jaxlstm.config import Config, from_dict, load_config
from jaxlstm.data.batching import model_inputs
from jaxlstm.data.events import TIME, Checked, check_events, options, parse_as_of
from jaxlstm.data.intervals import Histories, histories
from jaxlstm.data.windows import Windows, bin_values, decode, make_windows, to_bins
from jaxlstm.errors import InputError
from jaxlstm.fit import checkpoint_tree, forward_each, group_dirs
from jaxlstm.evaluate import BUCKETS, bucket_names, customer_baselines, fallback_kind, pick
from jaxlstm.pooled import PooledModel, features, n_features, pooled_config, pooled_features
from jaxlstm.survival import OwnSurvival, SurvivalModel, default_as_of, probability_columns, survival_config
from jaxlstm.step import Compiled, CustomerState, kept_params, stacked_state_shape

# `model` column values (who answered): PER_CUSTOMER, FINETUNED, "pooled", a baseline name (evaluate.BASELINES)
# or NONE
PER_CUSTOMER, FINETUNED, NONE = "per_customer", "finetuned", "none"
OWN = (PER_CUSTOMER, FINETUNED)
# `status` column values: only whether the answer is healthy (who answered is `model`):
# ok; too_few_visits (no interval to answer from, or mode per_customer without enough visits for an own model);
# unknown_customer (predict.py: no own model in the run, new to it or too short a history then, where the run's own
# models would answer now);
# diverged (the customer's own model went non-finite); all_rows_rejected
OK, TOO_FEW, UNKNOWN, DIVERGED, REJECTED = "ok", "too_few_visits", "unknown_customer", "diverged", "all_rows_rejected"
STATUSES = (OK, TOO_FEW, UNKNOWN, DIVERGED, REJECTED)
# without a run's choice of baseline per history length (mode per_customer, or an older run)
CLASSIC_FALLBACK = {name: "customer_median" for _, _, name in BUCKETS}


@dataclasses.dataclass(frozen=True)
class RunModel:
    """What prediction needs from a trained run: each modelled customer's kept parameters.

    keys: [N] str customer ids; center: [N] float32; params: tree with leading [N];
    diverged: [N] bool (those customers get a fallback with status 'diverged');
    answers: [N] bool, False where the customer's own model does not answer (mode auto: its history
      length is one where own models did not beat the chosen answer); those get that answer, status ok;
    fallback_by: {history bucket: baseline name or "pooled"} answering where no own model does
      (None: the customer's median, else the population median);
    pooled: the shared model, when the run trained one;
    survival: the survival model behind the as-of answers (p_within_*d, predicted_next_visit), if trained;
    own_survival: customers' own survival models (modes per_customer, finetune), answering for them;
    as_of: the run's as-of date: predict's default when no later visit is in the log;
    own_buckets: history buckets (evaluate.BUCKETS) in which own models answer (None: every bucket);
    step: every day answer's factor from the latest gap to the next (evaluate.step_factor; 1: none).
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
    own_buckets: tuple[str, ...] | None = None
    population: dict[str, float] | None = None  # one-number baselines of a run in shards (else from the log predicted)
    step: float = 1.0


def load_run(run_dir: str | Path, shard: int = 0, own: bool = True) -> RunModel:
    """Restore a run directory written by `train_all`: the latest checkpoint of the customers' own
    models, the choice of answers, the shared model. A run trained in shards (train_shards.py) keeps
    each shard's own models apart: `shard` picks whose; own=False restores none (the shared parts only)."""
    run_dir = Path(run_dir)
    part = run_dir if shard == 0 else run_dir / "shards" / f"{shard:05d}"
    ckpt = part / "checkpoints"
    groups = group_dirs(ckpt)  # one folder, or one per group of customers trained in turn (fit.fit_groups)
    found = checkpoint.read_meta(groups[0]) if own else None
    saved = json.loads((run_dir / "answers.json").read_text()) if (run_dir / "answers.json").exists() else None
    if saved is not None:  # its shared models are read with this version's layout
        checkpoint.check_schema(run_dir / "answers.json", saved.get("schema_version", 1))
    if found is None and own and (saved is None or not (run_dir / "config.toml").exists()):
        raise InputError(f"{run_dir}: no checkpoint found (expected {ckpt}; is this a train_all.py --out folder?)")
    if found is None:  # a finished run with no model of anyone's own (mode pooled, or all histories short)
        config = load_config(run_dir / "config.toml")
        keys, center, params, diverged = np.zeros(0, str), np.zeros(0, np.float32), None, np.zeros(0, bool)
    else:
        config = from_dict(found[1]["config"])
        parts = []
        for g, where in enumerate(groups):
            step, meta = found if g == 0 else checkpoint.read_meta(where)
            ids = np.asarray(meta["customer_ids"], dtype=str)
            state, center = _restore_customers(where, step, config, len(ids), meta.get("n_features", n_features(config)))
            parts.append((ids, center, kept_params(state, config), np.asarray(state.diverged)))
            del state  # (RMSprop's state and the best-keeping: not needed to answer)
        keys, center, diverged = (np.concatenate([p[i] for p in parts]) for i in (0, 1, 3))
        params = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *[p[2] for p in parts])
    answers, fallback_by = np.ones(len(keys), bool), None
    chosen = run_dir / "customer_metrics.parquet"
    if chosen.exists() and len(keys):  # written after training, with the per-customer choice of answer
        table = pd.read_parquet(chosen, columns=["customer_id", "model_answers"])
        ids = table["customer_id"].astype(str).to_numpy()
        # one shard: the checkpoint's customers in its order; in shards every shard's, this shard's among them
        whole = not (run_dir / "shards").exists()
        if (len(ids) != len(keys) or not (ids == keys).all()) if whole else not pd.Index(keys).isin(ids).all():
            raise InputError(f"{chosen}: its customers are not those of the checkpoint in {ckpt} (a file from another "
                             "run?): train the run again")
        answers = pd.Series(table["model_answers"].to_numpy(bool), index=ids).reindex(keys).to_numpy(bool)
    if saved is not None:
        fallback_by = saved["fallback_by_history"]
    pooled = survival = own_survival = None
    # which shared models this run wrote (a run stopped before answers.json: whatever is there)
    has = (saved or {}).get("models", {"pooled": True, "survival": True, "own_survival": True})
    if has["pooled"] and (run_dir / "pooled").exists():
        shape = stacked_state_shape(pooled_config(config), 1, pooled_features(config)).params  # at the shared model's size
        params_p, center_p = checkpoint.restore_shared(run_dir / "pooled", shape)
        pooled = PooledModel(config, params_p, center_p, scale=float((saved or {}).get("pooled_scale", 1.0)))  # older runs: none
    if has["survival"] and (run_dir / "survival").exists():
        s_cfg = survival_config(config)
        params_s, center_s = checkpoint.restore_shared(run_dir / "survival", stacked_state_shape(s_cfg, 1, pooled_features(config)).params)
        survival = SurvivalModel(s_cfg, params_s, center_s)
        found_own = checkpoint.read_meta(part / "survival_checkpoints") if has["own_survival"] and own else None
        if found_own is not None:
            step_o, meta_o = found_own
            own_keys = np.asarray(meta_o["customer_ids"], dtype=str)
            state_o, _ = _restore_customers(part / "survival_checkpoints", step_o, s_cfg, len(own_keys), pooled_features(config))
            own_survival = OwnSurvival(s_cfg, own_keys, kept_params(state_o, s_cfg), center_s, np.asarray(state_o.diverged))
    run_as_of = pd.Timestamp(saved["as_of"]) if saved and saved.get("as_of") else None
    own_buckets = tuple(saved["own_models_answer_in"]) if saved and "own_models_answer_in" in saved else None
    population = saved.get("population") if saved and (run_dir / "shards" / "plan.json").exists() else None
    return RunModel(config, keys, center, params, diverged, answers, fallback_by, pooled, survival, own_survival, run_as_of,
                    own_buckets, population, float((saved or {}).get("step_factor", 1.0)))  # older runs: none


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
    """One row per customer of `hist` (see DESIGN.md, outputs, and README's table). Customers the run has a
    healthy, chosen model for get the model's answer; the others the run's answer for their history length
    (`run.fallback_by`: the shared model or a baseline, from all of their intervals in `hist`). `model` says
    who answered, `status` whether the answer is healthy. With a survival model, the as-of answers (default as
    of the run's as-of date, or the day after the latest visit if that is later): p_gone, p_within_{k}d and
    predicted_next_visit (see `next_visit`)."""
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
    for name, value in (run.population or {}).items():  # a run in shards: its first shard's, for every shard
        values[name] = np.full(N, value)
    probs = np.full((N, cfg.n_classes), np.nan, np.float64)
    need = np.flatnonzero((kind == "pooled") & ~use)
    if len(need) and run.pooled is not None:
        values["pooled"] = np.full(N, np.nan)
        values["pooled"][need], pooled_probs = run.pooled.answer(hist, need, np.diff(hist.offsets)[need])
        if cfg.n_classes:
            probs[need] = pooled_probs
    else:
        kind[kind == "pooled"] = "population_median"  # an older run, or no interval to train on
    fallback_days = pick(values, kind)
    model = kind.copy()

    if cfg.model.mode == "finetune":  # fine-tuned models read the pooled inputs of the next, unseen interval
        x = features(hist, idx, np.diff(hist.offsets)[idx], cfg.data.look_back, float(run.center[0]) if len(run.center) else 0.0)
    else:
        x = model_inputs(windows.last[idx], run.center[row[idx]], None if windows.last_extra is None else windows.last_extra[idx])
    out = forward_each(cfg, run.params, row[idx], x, compiled)
    if cfg.n_classes:
        probs[idx] = np.asarray(jax.nn.softmax(out, axis=-1))
        days[idx] = bin_values(cfg.data.bins)[probs[idx].argmax(-1)]
    else:
        days[idx] = decode(out[:, 0] + run.center[row[idx]])
    days = np.where(use, days, fallback_days)
    if not cfg.n_classes:  # a class answer is its bin's value; a day answer is asked of the next gap
        days = days * run.step
    model[use] = FINETUNED if cfg.model.mode == "finetune" else PER_CUSTOMER
    status = answer_status(run, hist, windows, model, days, known, diverged)
    if cfg.n_classes:  # a baseline's answer is its bin, with certainty
        base = ~use & ~(model == "pooled") & np.isfinite(days)
        probs[base] = np.eye(cfg.n_classes)[to_bins(days[base], cfg.data.bins)]

    frame = pd.DataFrame(
        {
            "customer_id": ids_column(hist.ids),
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
        frame["predicted_next_visit"] = next_visit(hist.last_visit, days, as_of, asof["remaining_days_if_back"])
        frame["days_since_last_visit"] = asof["days_since_last_visit"]
        frame["expected_wait_days"] = asof["expected_wait_days"]
        frame["p_gone"] = probability(asof["p_gone"])
        for name in columns:
            frame[name] = probability(asof[name])
    else:
        frame["days_since_last_visit"] = frame["expected_wait_days"] = frame["p_gone"] = np.nan
        for name in columns:
            frame[name] = np.nan
    if cfg.n_classes:
        for k in range(cfg.n_classes):
            frame[f"p_bin_{k}"] = probability(probs[:, k])
        frame["predicted_bin"] = np.where(np.isfinite(probs).all(-1), np.nan_to_num(probs).argmax(-1) if N else 0, -1)
    return frame


def answer_status(run: RunModel, hist: Histories, windows: Windows, model: np.ndarray, days: np.ndarray,
                  known: np.ndarray, diverged: np.ndarray) -> np.ndarray:
    """[N] the `status` of each answer (see STATUSES): diverged over unknown_customer over too_few_visits over ok."""
    mode = run.config.model.mode
    buckets = bucket_names(hist.n_visits)
    own_here = np.isin(buckets, run.own_buckets) if run.own_buckets is not None else np.ones(len(buckets), bool)
    # own models learn from a customer's visits before its last (its question, evaluate.py): they need a window
    # there, i.e. two in the whole history
    could_have_own = np.diff(windows.offsets) >= 2
    # a customer the run's own models would answer, had the run given it one (new to the run, or too short then)
    unknown = ~known & could_have_own & (len(run.keys) > 0) & own_here & (mode != "pooled")
    too_few = ~np.isfinite(days) | ((mode == "per_customer") & ~np.isin(model, OWN))
    status = np.full(len(days), OK, dtype=object)
    status[too_few] = TOO_FEW
    status[unknown] = UNKNOWN
    status[known & diverged] = DIVERGED
    return status


def probability(p: np.ndarray) -> np.ndarray:
    """Probabilities clipped to [0, 1] (rounding can step outside) and without a -0.0."""
    return np.clip(np.asarray(p, np.float64), 0.0, 1.0) + 0.0


def next_visit(last_visit: np.ndarray, interval_days: np.ndarray, as_of: pd.Timestamp, wait_if_back: np.ndarray) -> np.ndarray:
    """predicted_next_visit, given the customer comes back, as of `as_of`: the later of last_visit +
    predicted_interval_days (what its history says) and as_of + the survival model's median wait given a visit
    still comes (what the silence since its last visit says); the latter alone where the former has passed
    (overdue) or is missing. So it is never before the as-of date nor before last_visit + predicted_interval_days.
    Why the later of the two: the point answer is the next gap as seen from the last visit and ignores the days
    already passed without one; a customer silent for much of its usual gap comes back later than that date
    (benchmarks/ACCURACY.md: on the generated purchase logs fewer of those who come back came by the dates of the
    earlier rule, the history's date unless overdue, than by these, the later, and these err less on average)."""
    classic = add_days(last_visit, interval_days)
    now = np.datetime64(as_of.as_unit("ns"))
    later = add_days(np.full(len(last_visit), now, "datetime64[ns]"), np.where(np.isfinite(wait_if_back), wait_if_back, np.nan))
    due = ~np.isnat(classic) & (classic >= now)
    return np.where(due & ~np.isnat(later) & (later > classic), later, np.where(due, classic, later))


def add_orphans(frame: pd.DataFrame, orphans: np.ndarray, status: str = REJECTED) -> pd.DataFrame:
    """Append a row without a prediction for each of `orphans` (default: customers all of whose rows
    were rejected)."""
    if len(orphans) == 0:
        return frame
    extra = pd.DataFrame({"customer_id": orphans, "n_visits": 0, "model": NONE, "status": status})
    out = pd.concat([frame, extra.astype({"n_visits": frame["n_visits"].dtype})], ignore_index=True)
    out["customer_id"] = ids_column(out["customer_id"].to_numpy(object))
    return out[frame.columns]


def ids_column(ids: np.ndarray) -> pd.Series:
    """The customer ids as the log had them: integer ids as int64, text as text (not a column of
    Python objects), the type a parquet file of the predictions has too."""
    return pd.Series(ids, dtype=object).infer_objects()


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


def in_shards(run_dir: str | Path) -> bool:
    """Whether the run in `run_dir` was trained in shards (train_shards.py)."""
    return (Path(run_dir) / "shards" / "plan.json").exists()


class Predicted(NamedTuple):
    predictions: pd.DataFrame
    rejected: pd.DataFrame  # rows set aside (on_bad_rows="skip"), with a reason each
    later: int  # visits on or after the as-of date: left out, they are the future the answers are about


def predict_source(run_dir: str | Path, spec: str | Path, table: str | None = None, query: str | None = None, *,
                   id_col: str | None = None, time_col: str | None = None, source: str | None = None,
                   on_bad_rows: str = "error", as_of: str | pd.Timestamp | None = None,
                   run: RunModel | None = None, time_format: str | None = None) -> Predicted:
    """Predicted (predictions, rejected rows, visits left out as on or after the as-of date) of every customer
    of a file or database with a saved run's models. A run
    trained in shards (train_shards.py) predicts shard by shard: the log is split by the run's id hash, so
    each customer meets its own model, and memory follows the shard, not the log; as of one date for all
    (default: the run's, or the day after the log's latest visit if that is later). run: `load_run(run_dir,
    own=not in_shards(run_dir))`, when the caller has it. time_format: how this log's time column is written
    (default: the run's data.time_format); the days are counted on the run's clock all the same."""
    import shutil
    import tempfile

    from jaxlstm.data.sources import read_source
    from jaxlstm.shards import Source, checked_shards, release_memory

    run_dir = Path(run_dir)
    plan_path = run_dir / "shards" / "plan.json"
    run = run or load_run(run_dir, own=not in_shards(run_dir))
    d = run.config.data
    id_col, time_col = id_col or d.id_col, time_col or d.time_col
    source = source or str(spec)
    read = options(d if time_format is None else dataclasses.replace(d, time_format=time_format))
    if not plan_path.exists():  # one shard: the whole log at once
        raw = read_source(spec, table, query, columns=(id_col, time_col, *d.extra_cols))
        checked = check_events(raw, id_col, time_col, source, on_bad_rows=on_bad_rows, as_of=as_of, **read)
        return Predicted(predict_checked(run, checked, as_of), checked.rejected, len(checked.later))
    S = json.loads(plan_path.read_text())["planned"]
    fixed = parse_as_of(as_of, d.timezone)
    with tempfile.TemporaryDirectory(prefix="jaxlstm-predict-") as tmp:
        def check(raw, positions):
            return check_events(raw, id_col, time_col, source, on_bad_rows=on_bad_rows, as_of=fixed, positions=positions, **read)

        checked_parts, latest, rejected, later = {}, None, [], 0
        # every shard checked first (its visits back to disk): the default as-of date is the whole log's
        for k, c in checked_shards(Source(spec, table, query), (id_col, time_col, *d.extra_cols), S, Path(tmp), check):
            c.events.to_parquet(Path(tmp) / f"raw-{k:05d}.events.parquet")
            checked_parts[k] = dataclasses.replace(c, events=None, later=c.later.iloc[:0])
            rejected.append(c.rejected)
            later += len(c.later)
            top = c.events[TIME].max()
            latest = top if latest is None else max(latest, top)
            del c
        when = fixed if fixed is not None else max(default_as_of(np.array([latest])), run.as_of or pd.Timestamp.min)
        frames = []
        for k, checked in sorted(checked_parts.items()):
            events = pd.read_parquet(Path(tmp) / f"raw-{k:05d}.events.parquet")
            frames.append(predict_checked(load_run(run_dir, shard=k), dataclasses.replace(checked, events=events), when))
            del events
            release_memory()
        shutil.rmtree(tmp, ignore_errors=True)
    return Predicted(pd.concat(frames, ignore_index=True), pd.concat(rejected, ignore_index=True).sort_values("row", kind="stable"),
                     later)
