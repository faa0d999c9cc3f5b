"""A visit's input rows (a basket's items, a day's orders: rows merged into one visit) are an input of
the shared models: where they say how soon a customer comes back, the answers follow them, from a
customer's first visit on."""

import numpy as np
import pandas as pd

from conftest import ROOT
from jaxlstm import load_config
from jaxlstm.data.batching import customer_seeds
from jaxlstm.data.events import ROWS, validate_events
from jaxlstm.data.intervals import histories
from jaxlstm.evaluate import questions
from jaxlstm.pooled import fit_pooled


def _baskets(n: int = 500, seed: int = 0) -> pd.DataFrame:
    """Customers of 1 to 6 visit days; each visit is 1 row or 3 (at one timestamp); after a visit of 3
    rows the next comes ~2 days later, after one of 1 row ~30 days later."""
    rng = np.random.default_rng(seed)
    ids, times = [], []
    for c in range(n):
        t = pd.Timestamp("2023-01-01") + pd.Timedelta(days=float(rng.uniform(0, 30)))
        for _ in range(rng.integers(1, 7)):
            rows = 3 if rng.random() < 0.4 else 1
            ids += [f"c{c:04d}"] * rows
            times += [t] * rows
            t += pd.Timedelta(days=float((2.0 if rows == 3 else 30.0) * rng.lognormal(0, 0.2)))
    return pd.DataFrame({"customer_id": ids, "timestamp": times})


def test_the_shared_model_answers_by_the_visits_rows():
    events = validate_events(_baskets())
    hist = histories(events)
    assert sorted(set(events[ROWS])) == [1, 3] and hist.visit_rows.sum() == len(_baskets())
    cfg = load_config(ROOT / "configs" / "tiny.toml", {"model.mode": "pooled", "train.pooled_epochs": 4,
                                                        "model.pooled_units": 8, "model.pooled_dense": [8]})
    q = questions(hist, customer_seeds(hist.keys))
    model, _ = fit_pooled(hist, q, cfg, progress=False)
    # every customer's next gap after its latest visit, and after its first one alone (no gap seen yet)
    owner = np.arange(hist.n_customers)
    k = np.diff(hist.offsets)
    first_visit = hist.offsets[:-1] + owner
    for pos in (k, np.zeros_like(k)):
        days = model.heldout.answer(hist, owner, pos)[0]
        basket = hist.visit_rows[first_visit + pos] == 3
        short, long = np.median(days[basket]), np.median(days[~basket])
        print(f"median answer after a visit of 3 rows {short:.1f} days, of 1 row {long:.1f}")
        assert short < 0.4 * long
