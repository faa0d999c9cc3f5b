"""Run configuration: frozen dataclasses loaded from TOML, with dotted overrides.

A config file has three tables, `[data]`, `[model]` and `[train]`; every key is optional and
falls back to the defaults below (which are `configs/default.toml`). Unknown keys are errors,
so a typo never silently becomes a default.
"""

from __future__ import annotations

import dataclasses
import numbers
import tomllib
from pathlib import Path
from typing import Any

from jaxlstm.errors import InputError


@dataclasses.dataclass(frozen=True)
class DataConfig:
    id_col: str = "customer_id"
    time_col: str = "timestamp"
    look_back: int = 3  # intervals per input window
    floor_days: bool = False  # True: whole calendar days between visits (the classic recipe)
    bins: tuple[float, ...] = ()  # interval bin edges in days; empty = regression
    split: str = "temporal"  # "temporal": each customer's last windows validate; "random": 4:1
    val_fraction: float = 0.2
    # p_within_{k}d columns: P(a visit within k days of the as-of date | none since the last visit)
    within_days: tuple[float, ...] = (7.0, 30.0)
    # numeric per-visit columns (e.g. an amount) fed to the models beside the intervals: each interval
    # carries the values of the visit that ended it, as sign(v) * log1p(|v|)
    extra_cols: tuple[str, ...] = ()
    # four more inputs per interval, from the customer's history up to it: log1p(intervals so far) / 4,
    # the mean and std of their log1p(days), log1p(days since the first visit) / 4
    summary_features: bool = False
    horizon_days: float = 90.0  # p_back_within_horizon: the churn signal; also the backtest's window
    time_format: str = ""  # strftime format of the time column; "" = one reading inferred for the whole column
    timezone: str = "UTC"  # zoned timestamps are converted to this clock before days are counted
    # rows of one customer at the identical timestamp (in a date-only log: the same day) are one visit,
    # extra columns summed; false: every row is a visit (the classic recipe: same-day repeats give 0-day gaps)
    merge_same_timestamp: bool = True
    # a visit is a day: rows of one customer on one calendar day are one visit (at its first timestamp), so
    # intervals are days between visit days, the unit of "when will they come back" (and of the as-of answers)
    merge_same_day: bool = True


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    lstm_layers: int = 2
    units: int = 8
    lstm_activation: str = "tanh"  # the classic recipe's code used "relu"
    dropout: float = 0.2  # on each LSTM layer's outputs, while training
    dense: tuple[int, ...] = (8,)  # hidden dense layers before the output layer
    dense_activation: str = "relu"
    forget_bias: float = 1.0  # added to the forget-gate bias at init, as Keras does
    cell: str = "fused"  # "fused": Flax's cell parameters, gates as one matmul (faster); "flax": nn.RNN
    # regression loss on log1p days: "mae" (predicts the median: won on the example log and on generated
    # logs, see README) or "mse" (the recipe's; predicts the mean log); with bins: cross-entropy
    loss: str = "mae"
    quantile: float = 0.5  # with loss "pinball": the quantile of the next interval the model predicts
    # "auto": the shared (pooled) model or a baseline answers, whichever scores best on the holdout
    # for customers of the same history length, and a customer's own model only where it clearly
    # beat that on its own validation windows; "per_customer": every own model answers (the classic
    # recipe); "pooled": the shared model answers everyone (no per-customer training); "finetune":
    # every customer's own model starts from the shared model's weights and answers
    mode: str = "auto"
    # with extra columns: "concat" feeds every sequence (the gaps, each extra column) to one LSTM stack;
    # "separate" gives each sequence its own stack and concatenates their last outputs into the dense layers
    # (the classic recipe's layout)
    sequences: str = "concat"
    # the shared point model's own size (modes auto and pooled): one model learns from every customer, so it gets
    # more units than a customer's own. 32 / [32] against 8 / [8]: leave-last-out skill all / 5+ of the pooled model,
    # mean of 3 seeds over 4 logs, +2.4% / +3.1% vs +1.7% / +1.7%; 16, 48, 64 units and deeper heads scored lower
    # (benchmarks/ACCURACY.md). In mode finetune it keeps the own models' size (units, dense): they start from its weights
    pooled_units: int = 32
    pooled_dense: tuple[int, ...] = (32,)
    # answers are fit to the latest gap (the yardstick's question) and asked of the next one: multiply every day
    # answer by the log's step from a customer's gap before its latest to its latest (evaluate.step_factor).
    # Mode auto, all customers: leave-last-out +4.4% -> +5.5% purchases, +4.5% -> +6.5% purchases_drift; true next gap
    # +1.8% -> +12.6%, +0.9% -> +15.2%; the example log and i.i.d. gaps take no step (benchmarks/ACCURACY.md).
    # Off in configs/classic.toml (the recipe's answers as its models give them)
    step_to_next: bool = True


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 32  # minibatch of one customer's own windows
    learning_rate: float = 0.01
    rmsprop_decay: float = 0.9
    rmsprop_eps: float = 1e-7  # Keras's value (optax's default is 1e-8)
    patience: int = 15  # epochs without validation improvement before a customer stops; 0 = never
    # False (Keras's default): keep the parameters a customer stopped with. True: its best
    # validation epoch's, which makes its validation score optimistic, so auto would trust it too much
    restore_best: bool = False
    seed: int = 0
    chunk_customers: int = 256  # customers per compiled call (256 was fastest on a 2-core CPU)
    pooled_epochs: int = 20  # the shared model (modes auto and pooled) sees every customer's windows each epoch
    pooled_batch: int = 512
    pooled_examples_per_epoch: int = 200_000  # a random subset of all intervals each epoch (big logs)
    # each customer's examples weigh 1 in total, its k-th latest recency ** k of it (normalised): the shared
    # model learns the next gap of a customer, not the typical gap of heavy buyers' past (1: all alike)
    pooled_recency: float = 0.5
    # after early stopping on the questions, train the answering shared model again on every interval (the
    # questions are the latest gaps) for the chosen number of epochs; the scores stay those of the held-out one.
    # Off: measured worse, leave-last-out skill (benchmarks/accuracy.py, 10k customers) example log +4.5% vs
    # +5.4% without, purchases -0.3% vs +0.5%, purchases_drift +1.0% vs -1.4%
    pooled_refit: bool = False
    survival_epochs: int = 20  # the survival model (as-of answers); 0: none, p_within_* columns are NaN
    checkpoint_every: int = 10  # epochs; the last epoch is always saved
    # customers per shard: a log with more is split by id hash and trained shard after shard, so memory
    # follows the shard, not the log (see jaxlstm/shards.py); the shared models learn from the first shard
    shard_customers: int = 50_000
    # mode auto: own models are first trained for this many customers (drawn by id hash) and judged on their
    # questions; the others are trained only in the history lengths where own models won (0: train everyone's)
    judge_customers: int = 4096
    compilation_cache: bool = True  # persistent XLA cache in ~/.cache/jaxlstm/xla


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    @property
    def loss(self) -> str:
        """The training loss: cross_entropy when binning, else model.loss."""
        return "cross_entropy" if self.data.bins else self.model.loss

    @property
    def n_classes(self) -> int:
        """0 for regression, else one class per bin: below the first edge, between edges, above."""
        return len(self.data.bins) + 1 if self.data.bins else 0

    @property
    def n_outputs(self) -> int:
        """Outputs of the model's head: one per class, three for the survival head (distribution.py), else one."""
        return self.n_classes or (3 if self.loss == "survival" else 1)

    @property
    def target_shape(self) -> tuple[int, ...]:
        """Trailing shape of one window's target: (3,) for the survival head (days, censored, where 0 days lies
        on the target's scale: the truncation point), else ()."""
        return (3,) if self.loss == "survival" else ()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {
            section: {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(getattr(self, section)).items()}
            for section in ("data", "model", "train")
        }

    def to_toml(self) -> str:
        lines = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
            lines.append("")
        return "\n".join(lines)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def _field(section: str, key: str) -> dataclasses.Field:
    fields = {f.name: f for f in dataclasses.fields(_SECTIONS[section])}
    if key not in fields:
        raise InputError(f"unknown config key '{section}.{key}' (known: {', '.join(sorted(fields))})")
    return fields[key]


def _kind(section: str, key: str) -> tuple[str, type | None]:
    """(what the key takes, in words; the element type of a list key, else None)."""
    default = _field(section, key).default
    if isinstance(default, tuple):
        item = str if key == "extra_cols" else int if section == "model" else float
        return {str: "a list of strings", int: "a list of integers", float: "a list of numbers"}[item], item
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[type(default)], None


def _typed(value: Any, kind: type) -> Any:
    """value as `kind` where TOML's types allow it (an integer is a number; nothing else converts); else ValueError."""
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if kind is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    raise ValueError(value)


def _coerce(section: str, key: str, value: Any) -> Any:
    """A config value checked against its key's type, as a config file's are: no text is read as a number."""
    default = _field(section, key).default
    words, item = _kind(section, key)
    try:
        if item is not None:
            if not isinstance(value, (list, tuple)):
                raise ValueError(value)
            return tuple(_typed(x, item) for x in value)
        return _typed(value, type(default))
    except ValueError:
        raise InputError(f"config key '{section}.{key}' takes {words}, got {value!r}") from None


def read_value(dotted: str, text: str) -> Any:
    """The value of `section.key` written as TOML text (what `--set section.key=TEXT` gives): lists, strings,
    numbers, booleans, e.g. `[7, 30, 90]`, `"relu"`, `0.01`, `true`. A string key also takes its text bare
    (`model.mode=pooled`, `data.timezone=Europe/Berlin`): the key's type decides, nothing is guessed."""
    section, key = _split(dotted)
    words, item = _kind(section, key)
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if type(_field(section, key).default) is str:
            return text
        hint = f" (a TOML list, e.g. {dotted}=[{', '.join(x.strip() for x in text.split(','))}])" if item and "," in text else ""
        raise InputError(f"--set {dotted}={text}: '{dotted}' takes {words}, got {text!r}{hint}") from None
    if type(_field(section, key).default) is str and not isinstance(value, str):
        return text  # e.g. a column named 2024: the key takes text
    try:
        return _coerce(section, key, value)
    except InputError:
        raise InputError(f"--set {dotted}={text}: '{dotted}' takes {words}, got {text!r}") from None


def _number(dotted: str, text: str) -> Any:
    """One item of a comma-separated list given to `dotted` through the Python API, as TOML (e.g. 30 or 7.5)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        raise InputError(f"config key '{dotted}': cannot read {text!r} as a number") from None


def parse_set(items: list[str]) -> dict[str, Any]:
    """{"section.key": typed value} of `--set section.key=VALUE` arguments (VALUE as TOML, see read_value);
    a key set twice is an error."""
    out: dict[str, Any] = {}
    for item in items:
        dotted, eq, text = item.partition("=")
        dotted = dotted.strip()
        if not eq or not dotted:
            raise InputError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        if dotted in out:
            raise InputError(f"--set {dotted} given twice: give it once")
        out[dotted] = read_value(dotted, text.strip())
    return out


def _split(dotted: str) -> tuple[str, str]:
    section, _, key = dotted.partition(".")
    if section not in _SECTIONS or not key:
        raise InputError(f"override '{dotted}' must look like section.key with section in data, model, train")
    _field(section, key)
    return section, key


def from_dict(tree: dict[str, dict[str, Any]], base: Config | None = None) -> Config:
    """Build a Config from nested {section: {key: value}}, on top of `base` (default: defaults)."""
    base = base or Config()
    sections = {}
    for section, cls in _SECTIONS.items():
        values = tree.get(section, {}) or {}
        if not isinstance(values, dict):
            raise InputError(f"config section [{section}] must be a table")
        updates = {k: _coerce(section, k, v) for k, v in values.items()}
        sections[section] = dataclasses.replace(getattr(base, section), **updates)
    unknown = set(tree) - set(_SECTIONS)
    if unknown:
        raise InputError(f"unknown config section(s) {sorted(unknown)} (known: data, model, train)")
    config = Config(**sections)
    validate(config)
    return config


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load a TOML config (or the defaults), then apply {"section.key": value} overrides (a value of the key's
    type, or its TOML text, e.g. "[7, 30]" for data.bins). Every value is type-checked as a config file's is."""
    tree: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            tree = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InputError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"config file {path}: {e}") from None
    for dotted, value in (overrides or {}).items():
        section, key = _split(dotted)
        item = _kind(section, key)[1]
        if isinstance(value, str) and item is not None and not value.strip().startswith("["):
            # a Python caller's "7,30,90" for a list key (the API took it before TOML): unambiguous, items read one by one
            value = [x.strip() if item is str else _number(dotted, x.strip()) for x in value.split(",") if x.strip()]
        elif isinstance(value, str) and type(_field(section, key).default) is not str:
            value = read_value(dotted, value)  # text for a number, list or boolean: read as TOML, as --set does
        tree.setdefault(section, {})[key] = value
    return from_dict(tree)


# Two bin edges closer than this are one class in practice, and their classes' representative days
# (windows.bin_values: midpoints, float32) would come out equal, so a prediction could not tell them apart.
MIN_BIN_WIDTH = 0.01


def validate(config: Config) -> None:
    d, m, t = config.data, config.model, config.train
    checks = [
        (d.look_back >= 1, f"data.look_back must be >= 1, got {d.look_back}"),
        (d.merge_same_timestamp or not d.merge_same_day,
         "data.merge_same_day = true merges what data.merge_same_timestamp = false keeps apart: set both false to keep "
         "every row, or merge_same_timestamp true"),
        (d.split in ("temporal", "random"), f"data.split must be 'temporal' or 'random', got '{d.split}'"),
        (0.0 <= d.val_fraction < 1.0, f"data.val_fraction must be in [0, 1), got {d.val_fraction}"),
        (all(b > 0 for b in d.bins), f"data.bins must be positive day counts, got {list(d.bins)}"),
        (all(k > 0 for k in d.within_days), f"data.within_days must be positive day counts, got {list(d.within_days)}"),
        (all(b - a >= MIN_BIN_WIDTH * (1 - 1e-9) for a, b in zip(d.bins, d.bins[1:])),  # 1.3 to 1.31 is 0.0099999...
         f"data.bins must increase by at least {MIN_BIN_WIDTH:g} days (about 15 minutes) from one edge to the next, "
         f"got {list(d.bins)}"),
        (m.lstm_layers >= 1 and m.units >= 1, "model.lstm_layers and model.units must be >= 1"),
        (m.pooled_units >= 1, f"model.pooled_units must be >= 1, got {m.pooled_units}"),
        (all(n >= 1 for n in m.pooled_dense), f"model.pooled_dense sizes must be >= 1, got {list(m.pooled_dense)}"),
        (0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1), got {m.dropout}"),
        (all(n >= 1 for n in m.dense), f"model.dense sizes must be >= 1, got {list(m.dense)}"),
        (m.lstm_activation in ACTIVATIONS, f"model.lstm_activation must be one of {sorted(ACTIVATIONS)}"),
        (m.dense_activation in ACTIVATIONS, f"model.dense_activation must be one of {sorted(ACTIVATIONS)}"),
        (m.cell in ("fused", "flax"), f"model.cell must be 'fused' or 'flax', got '{m.cell}'"),
        (m.loss in ("mse", "mae", "pinball"), f"model.loss must be 'mse', 'mae' or 'pinball', got '{m.loss}'"),
        (0.0 < m.quantile < 1.0, f"model.quantile must be in (0, 1), got {m.quantile}"),
        (m.mode in MODES, f"model.mode must be one of {', '.join(MODES)}, got '{m.mode}'"),
        (m.sequences in ("concat", "separate"), f"model.sequences must be 'concat' or 'separate', got '{m.sequences}'"),
        (t.epochs >= 0, f"train.epochs must be >= 0, got {t.epochs}"),
        (t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}"),
        (t.learning_rate > 0, f"train.learning_rate must be > 0, got {t.learning_rate}"),
        (t.patience >= 0, f"train.patience must be >= 0, got {t.patience}"),
        (t.chunk_customers >= 1, f"train.chunk_customers must be >= 1, got {t.chunk_customers}"),
        (t.shard_customers >= 1, f"train.shard_customers must be >= 1, got {t.shard_customers}"),
        (t.judge_customers >= 0, f"train.judge_customers must be >= 0, got {t.judge_customers}"),
        (t.checkpoint_every >= 1, f"train.checkpoint_every must be >= 1, got {t.checkpoint_every}"),
        (t.pooled_epochs >= 0, f"train.pooled_epochs must be >= 0, got {t.pooled_epochs}"),
        (t.pooled_epochs >= 1 or m.mode not in ("pooled", "finetune"),
         f"model.mode {m.mode} trains the shared model first: train.pooled_epochs must be >= 1"),
        (0 <= t.seed < 2**31, f"train.seed must be in [0, 2**31), got {t.seed}"),
        (len(set(d.extra_cols)) == len(d.extra_cols) and not {d.id_col, d.time_col} & set(d.extra_cols),
         f"data.extra_cols must be distinct columns other than the id and time, got {list(d.extra_cols)}"),
        (d.horizon_days > 0, f"data.horizon_days must be > 0, got {d.horizon_days}"),
        (t.survival_epochs >= 0, f"train.survival_epochs must be >= 0, got {t.survival_epochs}"),
        (t.pooled_batch >= 1, f"train.pooled_batch must be >= 1, got {t.pooled_batch}"),
        (0.0 <= t.pooled_recency <= 1.0, f"train.pooled_recency must be in [0, 1], got {t.pooled_recency}"),
        (t.pooled_examples_per_epoch >= 1, f"train.pooled_examples_per_epoch must be >= 1, got {t.pooled_examples_per_epoch}"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(message)


ACTIVATIONS = ("tanh", "relu", "sigmoid", "linear")
MODES = ("auto", "per_customer", "pooled", "finetune")
