"""Honest scores, one per customer: every customer's latest visit is a question.

The question of a customer with at least one interval is its last interval, predicted from the
intervals before it ("hide the last visit, predict it from the rest"). Predictions are one per
customer, so every yardstick that chooses or stops anything scores each customer once, here: a
customer with 60 short gaps weighs as much as one with a single gap.

No model trains on a question: the shared models train on every other interval, own models on the
history before it. Customers are split in two by a stable hash of their id:
- selection customers: their questions stop the shared model (its best epoch), scale its answers
  (pooled.question_scale) and choose, per history length, who answers (see `choose`);
- headline customers: their questions are scored only, never selected on. The headline table is
  this run's honest score, reported first; the selection customers' table (optimistic: the choices
  were made on it) comes beside it, labelled.

Baselines (days), from the intervals before each question:
  customer_mean / customer_median / customer_last: of the customer's earlier intervals; with none,
    the population median (what the fallback answers too);
  population_median: median of every pre-question interval (interval-weighted: heavy buyers' many
    short gaps pull it down);
  population_latest_median: median of each customer's latest pre-question interval (one per customer);
  constant: expm1(mean(log1p(pre-question intervals))).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy import stats

from jaxlstm.data.intervals import Histories
from jaxlstm.data.windows import to_bins

BUCKETS = ((1, 1, "1"), (2, 2, "2"), (3, 3, "3"), (4, 5, "4-5"), (6, 10, "6-10"), (11, np.iinfo(np.int64).max, "11+"))
BASELINES = ("customer_mean", "customer_median", "customer_last", "population_median", "population_latest_median", "constant")
SELECTION_SHARE = 0.5
ALPHA = 0.025  # one-sided: an answer replaces the bucket's default only when it wins at this level


@dataclasses.dataclass(frozen=True)
class Questions:
    """Q questions, one per customer with an interval: owner [Q] customer index, pos [Q] index of its
    last interval (= intervals before it), target [Q] days, selection [Q] bool (else headline)."""

    owner: np.ndarray
    pos: np.ndarray
    target: np.ndarray
    selection: np.ndarray

    def train_intervals(self, hist: Histories) -> np.ndarray:
        """[M] bool over hist.intervals: every interval but each customer's last (the questions)."""
        last = np.zeros(len(hist.intervals), bool)
        last[hist.offsets[self.owner] + self.pos] = True
        return ~last

    def visits(self, hist: Histories) -> np.ndarray:
        """[Q] visits each question is answered from (the customer's visits but its last)."""
        return hist.n_visits[self.owner] - 1


def questions(hist: Histories, seeds: np.ndarray, share: float = SELECTION_SHARE) -> Questions:
    """Every customer's last interval; `seeds` [N] (batching.customer_seeds) split the customers."""
    k = np.diff(hist.offsets)
    owner = np.flatnonzero(k >= 1)
    pos = k[owner] - 1
    selection = (seeds[owner] % np.uint64(1_000_003)).astype(np.float64) / 1_000_003 < share
    return Questions(owner, pos, hist.intervals[hist.offsets[owner] + pos], selection)


STEP_ALPHA = 0.025  # one-sided: a step is taken only where the latest gaps are longer beyond noise
MAX_STEP = 2.0  # the generated purchase logs measure 1.35-1.97; beyond 2 a log's shape speaks, not ageing


def step_factor(hist: Histories, alpha: float = STEP_ALPHA) -> float:
    """How much longer the gap after a customer's latest visit is than its latest gap, for the whole log:
    the median of the customers' latest intervals over the median of the intervals just before them,
    among customers with two or more, at most MAX_STEP. 1 unless the latest gaps are longer than the
    ones before beyond noise: a one-sided sign test over those customers' pairs at level `alpha` (with
    gaps exchangeable within a customer, as when they are i.i.d., either is longer half of the time),
    and the medians agree.

    Only a step up: a log cut at a date shortens its latest gaps (a gap must end inside the log), while
    the next gap, the one that spans the cut, is if anything longer than usual; on the quickstart's
    sample of steady customers a step of 0.88-0.96 made answers worse against the true next visit. A
    ratio beyond MAX_STEP (e.g. 1,650 on sessions minutes apart with data.merge_same_day off) says more
    about a bimodal log than about how customers age.

    Why: every answer here is fit to the yardstick's question, a customer's latest gap answered from the
    visits before it (the shared model's scale, the choice of answer). The question users ask is the gap
    after it, one step on. Gaps lengthen towards the end of a history (customers age and slow down before
    they stop), and this is the log's own measure of one such step. On the generated purchase logs it is
    1.35-1.43 with each customer's last visit hidden, where a factor fit on the hidden gaps themselves (an
    oracle) is 1.29-1.46; on the example log and i.i.d. gaps the sign test does not pass (the oracle: 1.00-1.05).
    benchmarks/ACCURACY.md has the measurements."""
    end = hist.offsets[1:][np.diff(hist.offsets) >= 2]
    latest, before = hist.intervals[end - 1], hist.intervals[end - 2]
    longer, shorter = int((latest > before).sum()), int((latest < before).sum())
    if longer + shorter == 0 or stats.binomtest(longer, longer + shorter, alternative="greater").pvalue >= alpha:
        return 1.0
    top, bottom = float(np.median(latest)), float(np.median(before))
    if top <= bottom or bottom <= 0:  # the medians disagree with the pairs
        return 1.0
    return min(top / bottom, MAX_STEP)


def customer_baselines(hist: Histories, seen: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Each baseline's answer [N] (days) per customer from the intervals marked `seen` (default all)."""
    seen = np.ones(len(hist.intervals), bool) if seen is None else seen
    N = hist.n_customers
    owner = np.repeat(np.arange(N), np.diff(hist.offsets))
    before = pd.Series(hist.intervals[seen]).groupby(owner[seen])
    population = float(np.median(hist.intervals[seen])) if seen.any() else np.nan
    constant = float(np.expm1(np.mean(np.log1p(hist.intervals[seen])))) if seen.any() else np.nan
    latest = float(before.last().median()) if seen.any() else np.nan

    def per_customer(stat):
        values = stat.reindex(range(N)).to_numpy(dtype=float)
        return np.where(np.isnan(values), population, values)  # no interval of its own: the population's

    return {
        "customer_mean": per_customer(before.mean()),
        "customer_median": per_customer(before.median()),
        "customer_last": per_customer(before.last()),
        "population_median": np.full(N, population),
        "population_latest_median": np.full(N, latest),
        "constant": np.full(N, constant),
    }


def baselines(hist: Histories, q: Questions) -> dict[str, np.ndarray]:
    """Each baseline's answer [Q] (days) to every question, from the pre-question intervals."""
    return {name: v[q.owner] for name, v in customer_baselines(hist, q.train_intervals(hist)).items()}


def bucket_names(n_visits: np.ndarray) -> np.ndarray:
    """History-length bucket name of each visit count."""
    out = np.empty(len(n_visits), dtype=object)
    for lo, hi, name in BUCKETS:
        out[(n_visits >= lo) & (n_visits <= hi)] = name
    return out


def fallback_kind(n_visits: np.ndarray, fallback_by: dict[str, str]) -> np.ndarray:
    """[N] the baseline that answers for each customer, by its history bucket."""
    return np.array([fallback_by[b] for b in bucket_names(n_visits)], dtype=object)


def pick(values: dict[str, np.ndarray], kind: np.ndarray) -> np.ndarray:
    """values[kind[i]][i] for each i."""
    out = np.full(len(kind), np.nan)
    for name, v in values.items():
        out[kind == name] = v[kind == name]
    return out


def scores(pred: np.ndarray, target: np.ndarray, bins: tuple[float, ...] = ()) -> dict[str, float | int | None]:
    """MAE and RMSE in days (and accuracy of the bin when binning) over finite predictions."""
    ok = np.isfinite(pred)
    err = pred[ok] - target[ok]
    out: dict[str, float | int | None] = {
        "n": int(ok.sum()),
        "mae_days": float(np.abs(err).mean()) if ok.any() else None,
        "rmse_days": float(np.sqrt((err**2).mean())) if ok.any() else None,
    }
    if bins:
        out["accuracy"] = float((to_bins(pred[ok], bins) == to_bins(target[ok], bins)).mean()) if ok.any() else None
    return out


def report(hist: Histories, q: Questions, answers: dict[str, np.ndarray], bins: tuple[float, ...] = (),
           which: np.ndarray | None = None, label: str = "") -> dict:
    """Per-customer scores of each method's answers [Q] on the questions `which` (default all):
    {"overall": {method: scores}, "by_history": {bucket: {...}}, "skill": {method: ...}}. History
    length is the number of visits a question is answered from. Skill = 1 - MAE / MAE of the best
    simple baseline, over all scored customers and over those answered from >= 5 visits."""
    which = np.ones(len(q.target), bool) if which is None else which
    visits, target = q.visits(hist)[which], q.target[which]
    answers = {m: a[which] for m, a in answers.items()}
    by = {}
    for lo, hi, name in BUCKETS:
        sel = (visits >= lo) & (visits <= hi)
        by[name] = {"customers": int(sel.sum()), "customers_evaluated": int(sel.sum()), "intervals": int(sel.sum()),
                    **{m: scores(a[sel], target[sel], bins) for m, a in answers.items()}}
    overall = {m: scores(a, target, bins) for m, a in answers.items()}
    return {
        "holdout": label or "each customer's last visit, predicted from the visits before it (see jaxlstm/evaluate.py)",
        "intervals": int(which.sum()),
        "customers": int(which.sum()),
        "overall": overall,
        "by_history": by,
        "skill": {"all": skill(answers, target, bins), "5+ visits": skill({m: a[visits >= 5] for m, a in answers.items()},
                                                                          target[visits >= 5], bins)},
    }


def skill(answers: dict[str, np.ndarray], target: np.ndarray, bins: tuple[float, ...] = ()) -> dict:
    """{"best_baseline": name, "mae_days": its MAE, method: 1 - MAE / that} (None without data). A method
    that answers some customers only (NaN elsewhere) is compared with the baseline on those customers."""
    mae = {m: scores(a, target, bins)["mae_days"] for m, a in answers.items()}
    simple = {m: v for m, v in mae.items() if m in BASELINES and v is not None}
    if not simple:
        return {"best_baseline": None}
    best = min(simple, key=simple.get)
    out = {"best_baseline": best, "mae_days": simple[best], "customers": int(len(target))}
    for m, v in mae.items():
        if m in BASELINES:
            continue
        ok = np.isfinite(answers[m])
        ref = simple[best] if ok.all() else scores(answers[best][ok], target[ok], bins)["mae_days"]
        out[m] = (1.0 - v / ref) if v is not None and ref else None
    return out


def losses(answer: np.ndarray, target: np.ndarray, bins: tuple[float, ...] = ()) -> np.ndarray:
    """Per-question loss: absolute days, or a 0/1 miss of the bin when binning."""
    if bins:
        return (to_bins(answer, bins) != to_bins(target, bins)).astype(float)
    return np.abs(answer - target)


def beats(loss: np.ndarray, reference: np.ndarray, alpha: float = ALPHA) -> bool:
    """Whether `loss` is below `reference` beyond noise: a paired one-sided t test over customers
    (one question each, so the pairs are independent), at level alpha with n - 1 degrees of freedom.
    A normal quantile with 2 or 3 customers would let about 1 in 7 pure-noise answers through."""
    d = loss - reference
    n = len(d)
    if n < 2 or d.mean() >= 0:
        return False
    sd = d.std(ddof=1)
    return bool(sd == 0 or d.mean() + stats.t.ppf(1 - alpha, n - 1) * sd / np.sqrt(n) < 0)


def choose(visits: np.ndarray, target: np.ndarray, candidates: dict[str, np.ndarray], own: np.ndarray | None,
           bins: tuple[float, ...] = (), alpha: float = ALPHA) -> tuple[dict[str, str], list[str]]:
    """Who answers, per history bucket, judged on the selection customers' questions.

    candidates: {name: [S] answers} (baselines, and "pooled" when trained); own: [S] the customers'
    own models' answers (NaN where a customer has none) or None. A bucket keeps its default (below)
    unless a candidate beats it beyond noise (`beats`), then the lowest-MAE of those that do; own
    models answer in a bucket only where they beat that choice beyond noise on the customers that
    have one. Returns ({bucket: candidate}, [buckets where own models answer]).

    The default of every bucket is the shared model (trained, stopped and scaled for this question),
    unless the population median beats it beyond noise over all selection customers; the population
    median where there is no shared model. Decided over all selection customers: a small bucket (a few
    hundred customers) rarely shows a real difference of a few percent beyond noise, while all buckets
    together do. Why the shared model unless shown worse, not the median unless shown better: on small
    logs (a few hundred customers) neither shows beyond noise, and the shared model was the better of the
    two on every generated family and the example log (benchmarks/ACCURACY.md)."""
    bucket = bucket_names(visits)
    all_loss = {m: losses(a, target, bins) for m, a in candidates.items()}
    default = "population_median"
    if ("pooled" in candidates and np.isfinite(all_loss["pooled"]).all()  # a NaN answer is no default
            and not beats(all_loss[default], all_loss["pooled"], alpha)):
        default = "pooled"
    chosen, own_buckets = {}, []
    for _, _, name in BUCKETS:
        sel = bucket == name
        loss = {m: v[sel] for m, v in all_loss.items()}
        winners = [m for m in candidates if m != default and beats(loss[m], loss[default], alpha)]
        chosen[name] = min(winners, key=lambda m: loss[m].mean()) if winners else default
        if own is not None:
            has = np.isfinite(own[sel])
            if beats(losses(own[sel][has], target[sel][has], bins), loss[chosen[name]][has], alpha):
                own_buckets.append(name)
    return chosen, own_buckets


def choice(hist: Histories, q: Questions, bins: tuple[float, ...], pooled: np.ndarray | None,
           own: np.ndarray | None) -> tuple[dict[str, str], list[str]]:
    """evaluate_run's choice alone (`choose` on the selection customers' questions), without scoring."""
    base = baselines(hist, q)
    return _choice(q.visits(hist), q, bins, base if pooled is None else {**base, "pooled": pooled}, own)


def _choice(visits: np.ndarray, q: Questions, bins: tuple[float, ...], candidates: dict[str, np.ndarray],
            own: np.ndarray | None) -> tuple[dict[str, str], list[str]]:
    s = q.selection
    return choose(visits[s], q.target[s], {m: a[s] for m, a in candidates.items()}, None if own is None else own[s], bins)


def evaluate_run(hist: Histories, q: Questions, bins: tuple[float, ...], pooled: np.ndarray | None,
                 own: np.ndarray | None, mode: str = "auto", chosen: tuple[dict, list] | None = None,
                 untrained: np.ndarray | None = None, judges: int | None = None):
    """Choose who answers (on the selection customers) and score every mode and baseline (on the
    headline customers first). pooled / own: [Q] answers of the shared model and of the customers'
    own models (NaN where a customer has none). Returns ({bucket: fallback}, [buckets own models
    answer in], the evaluation for metrics.json, one row per question with every answer).
    A run whose own models were judged on a sample (train.judge_customers): `chosen` is the choice made on the
    `judges` customers, `untrained` [Q] the customers that could have had an own model and were not
    trained one (mode per_customer is scored without them)."""
    base = baselines(hist, q)
    candidates = base if pooled is None else {**base, "pooled": pooled}
    s = q.selection
    visits = q.visits(hist)
    fallback_by, own_buckets = chosen or _choice(visits, q, bins, candidates, own)
    fallback = pick(candidates, fallback_kind(visits, fallback_by))
    has_own = np.isfinite(own) if own is not None else np.zeros(len(q.target), bool)
    use_own = has_own & np.isin(bucket_names(visits), own_buckets)
    answers = {"auto": np.where(use_own, own if own is not None else np.nan, fallback)}
    if own is not None:
        answers["per_customer"] = np.where(has_own, own, base["customer_median"])
        if untrained is not None:
            answers["per_customer"][untrained] = np.nan  # (scores() skips them)
        if mode == "finetune":
            answers = {"finetune": np.where(has_own, own, pooled if pooled is not None else base["customer_median"]), **answers}
    if pooled is not None:
        answers["pooled"] = pooled
    answers.update(base)
    rep = report(hist, q, answers, bins, ~s)
    rep["protocol"] = ("each customer's last visit, predicted from the visits before it; the headline customers "
                       f"(a {1 - SELECTION_SHARE:.0%} share by id hash), on which nothing was chosen or stopped")
    rep["selection"] = report(hist, q, answers, bins, s, "the selection customers: who answers was chosen, and the "
                              "shared model stopped, on their questions (optimistic)")
    rep["methods"] = {
        "auto": "per history length the best of the baselines and the pooled model, and customers' own models "
                "where they beat that beyond noise (paired t test, one-sided 2.5%) on the selection customers",
        "per_customer": "each customer's own model where it has one, else the customer's median (the classic recipe)"
                        + (f"; own models were trained for {judges:,} customers drawn by id hash and where they won, "
                           "so this is scored on those customers only" if judges else ""),
        "pooled": "one shared LSTM trained on every customer's earlier intervals (jaxlstm/pooled.py)",
        **{b: "see jaxlstm/evaluate.py" for b in BASELINES},
    }
    rep["fallback_by_history"] = fallback_by
    rep["own_models_answer_in"] = own_buckets
    rep["customers_model_chosen"] = int(use_own.sum())
    frame = pd.DataFrame({
        "customer_id": hist.ids[q.owner],
        "visits_before": visits,  # the visits the question is answered from (not predictions' n_visits: one more)
        "actual_days": q.target,
        "headline": ~s,
        "answered_by": np.where(use_own, "per_customer", fallback_kind(visits, fallback_by)),
        **{f"{m}_days": a for m, a in answers.items()},
    })
    return fallback_by, own_buckets, rep, frame


def table(rep: dict, methods: list[str] | None = None) -> str:
    """The report as a markdown table of MAE days: one row per method, overall then each bucket."""
    methods = methods or list(rep["overall"])
    cols = ["overall"] + [name for _, _, name in BUCKETS if rep["by_history"][name]["intervals"]]
    head = "| method | " + " | ".join(f"{c} visits" if c != "overall" else "all" for c in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    n_row = ["customers"] + [f"{rep['customers']:,}"] + [f"{rep['by_history'][c]['customers']:,}" for c in cols[1:]]
    lines.append("| " + " | ".join(n_row) + " |")
    for m in methods:
        cells = [rep["overall"][m]] + [rep["by_history"][c][m] for c in cols[1:]]
        lines.append(f"| {m} | " + " | ".join("-" if s["mae_days"] is None else f"{s['mae_days']:.2f}" for s in cells) + " |")
    return "\n".join(lines)


