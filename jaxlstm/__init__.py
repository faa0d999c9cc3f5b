"""jaxlstm: a next-visit LSTM for every customer at once (JAX + Flax + Optax + Orbax).

Public API:
    train_all(events_df, config=None, out_dir=None, resume=False) -> predictions DataFrame
    predict(run_dir, events_df) -> predictions DataFrame
    load_config(path=None, overrides=None) -> Config
    load_events(path, id_col, time_col) -> validated events DataFrame
    make_customers(n, seed) -> synthetic visit log
    make_log(n, seed, days, churn_share) -> synthetic calendar log with customers who stop coming
"""

from jaxlstm.config import Config, load_config
from jaxlstm.data.events import load_events
from jaxlstm.errors import InputError
from jaxlstm.predict import predict
from jaxlstm.synth import make_customers, make_log
from jaxlstm.train import train_all

__all__ = ["Config", "InputError", "load_config", "load_events", "make_customers", "make_log", "predict", "train_all"]
__version__ = "0.1.0"
