"""Read and validate the visit log: one row per visit, a customer id and a timestamp.

Each column is read one way: ids in one canonical type, timestamps in one format decided for the
whole column (never guessed row by row), zoned times on one clock (data.timezone). Rows of one
customer at the same timestamp are one visit. Bad rows (no id, no or unreadable timestamp, a time
zone unlike the others) are an error by default; with on_bad_rows="skip" they are set aside with a
reason each. Visits at or after the as-of date are not bad: they are set apart, unused for training."""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from jaxlstm.errors import InputError

ID, TIME = "customer_id", "timestamp"  # canonical column names after loading
ON_BAD_ROWS = ("error", "skip")
# reasons, in the order strict mode reports them
NO_ID, NO_TIME, UNREADABLE, OUT_OF_RANGE, NO_ZONE, ZONE, NOT_NUMBER = (
    "missing customer id", "missing timestamp", "unreadable timestamp", "timestamp outside 1677-2262",
    "no time zone (other rows have one)", "time zone (other rows have none)", "missing or not a number",
)


ZONE_SUFFIX = r"\d:\d\d(?::\d\d(?:[.,]\d*)?)?\s*(?:Z|UTC|[+-]\d\d(?::?\d\d)?)$"


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a parquet or CSV file, chosen by extension. Raises InputError with the file name."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if suffixes.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        if suffixes.endswith((".csv", ".csv.gz", ".csv.zip", ".csv.bz2")):
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: file is empty") from None
    except Exception as e:  # pyarrow and the csv parser raise many kinds; all mean "unreadable"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: cannot read file: {first}") from None
    raise InputError(f"{path}: unknown file type (expected .parquet, .pq or .csv)")


def parse_as_of(value: str | pd.Timestamp | None, timezone: str = "UTC") -> pd.Timestamp | None:
    """An as-of date/time as a tz-naive timestamp on the clock the visits are counted in: a zoned value
    is converted to `timezone` (data.timezone), a bare one is taken as that clock's wall time (a bare
    date means midnight at its start)."""
    if value is None:
        return None
    swappable = re.match(r"\s*(\d{1,2})[/.-](\d{1,2})[/.-]\d{2,4}\b", value) if isinstance(value, str) else None
    if swappable and swappable[1] != swappable[2] and max(int(swappable[1]), int(swappable[2])) <= 12:
        # as with the time column (infer_format): a date whose day and month could be swapped is not guessed
        raise InputError(f"as_of={value!r}: day and month could be swapped; write it as YYYY-MM-DD")
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise InputError(f"as_of={value!r}: not a date (expected e.g. 2024-06-30 or 2024-06-30T12:00:00Z)") from None
    if ts is pd.NaT:
        raise InputError(f"as_of={value!r}: not a date")
    return ts.tz_convert(_zone(timezone)).tz_localize(None) if ts.tzinfo is not None else ts


def _zone(timezone: str):
    """The tz name of data.timezone, or InputError naming it."""
    try:
        pd.Timestamp("2000-01-01", tz=timezone)
    except Exception:  # pytz / zoneinfo raise several kinds for an unknown zone
        raise InputError(f"data.timezone {timezone!r}: unknown time zone (e.g. UTC, Europe/Berlin, America/New_York)") from None
    return timezone


def _is_csv(source: str) -> bool:
    return source.lower().split("?")[0].endswith((".csv", ".csv.gz", ".csv.zip", ".csv.bz2"))


def row_labels(index: np.ndarray, source: str) -> np.ndarray:
    """Human row numbers: CSV line numbers (the header is line 1), else 0-based row positions."""
    return np.asarray(index, np.int64) + (2 if _is_csv(source) else 0)


def _rows(index: np.ndarray, source: str) -> str:
    shown = row_labels(index[:5], source)
    word = "lines" if _is_csv(source) else "rows"
    more = f" (of {len(index):,})" if len(index) > 5 else ""
    return f"{word} {', '.join(map(str, shown))}{more}"


@dataclasses.dataclass(frozen=True)
class Checked:
    """A validated visit log, the rows set aside, and what was left out on purpose.

    events: `customer_id` (one canonical type, see `canonical_ids`) and `timestamp` (tz-naive
      datetime64[ns] on the data.timezone clock), one row per visit, strictly before the as-of date.
    rejected: `row` (CSV line number, else 0-based row), `customer_id` and `timestamp` as given
      (text), `reason`; empty unless on_bad_rows="skip".
    orphans: ids of customers all of whose rows were rejected; they still get a row in the
      predictions, so no customer disappears.
    later: visits at or after the as-of date (same columns as events): not training data, the
      future the as-of answers are about; a run scores its answers on them when there are any.
    after_as_of: ids of customers whose every visit is in `later` (they get a row too).
    merged: rows folded into another row of the same customer and timestamp (one visit).
    time_format: how the time column was read: "datetime" (a typed column), "ISO8601" or a strftime
      format with its day/month order decided once for the whole column.
    rows: [len(events)] the input row label (CSV line, else 0-based row) of each visit's first row.
    """

    events: pd.DataFrame
    rejected: pd.DataFrame
    orphans: np.ndarray
    later: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame({ID: [], TIME: []}))
    after_as_of: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=object))
    merged: int = 0
    time_format: str = "datetime"
    rows: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))


def options(data) -> dict:
    """check_events' reading options from a DataConfig: train and predict read a log the same way."""
    return {"extra_cols": tuple(data.extra_cols), "time_format": data.time_format, "timezone": data.timezone,
            "merge_same_timestamp": data.merge_same_timestamp, "merge_same_day": data.merge_same_day}


def check_events(
    df: pd.DataFrame,
    id_col: str = ID,
    time_col: str = TIME,
    source: str = "<DataFrame>",
    *,
    on_bad_rows: str = "error",
    as_of: str | pd.Timestamp | None = None,
    extra_cols: tuple[str, ...] = (),
    time_format: str = "",
    timezone: str = "UTC",
    merge_same_timestamp: bool = True,
    merge_same_day: bool = False,
    positions: np.ndarray | None = None,
) -> Checked:
    """Validate a raw visit table. Whole-table and whole-column problems (no rows, a missing column,
    a time column of numbers, dates whose day/month order cannot be decided, an extra column of text,
    ids that collide) always raise InputError; bad rows raise too unless on_bad_rows="skip". Every
    message names `source`, the column, the first bad rows and how many there are.

    time_format: a strftime format for the time column ("" infers one reading for the whole column);
    timezone: the clock days are counted on: zoned timestamps are converted to it;
    merge_same_timestamp: rows of one customer at the identical timestamp (in a date-only log: the
      same day) are one visit, their extra columns summed;
    merge_same_day: rows of one customer on one calendar day (of `timezone`) are one visit, at the day's
      earliest timestamp, their extra columns summed;
    as_of: visits at or after it are set apart in `later`, not rejected;
    positions: [len(df)] each row's 0-based position in the whole log, when `df` is a part of it (a
      shard, see shards.py): messages and `rows` name the log's rows."""
    if on_bad_rows not in ON_BAD_ROWS:
        raise InputError(f"on_bad_rows={on_bad_rows!r}: expected one of {', '.join(ON_BAD_ROWS)}")
    tz = _zone(timezone)
    as_of = parse_as_of(as_of, tz)
    if len(df.columns) == 0 or len(df) == 0:
        raise InputError(f"{source}: no rows")
    for col, flag in ((id_col, "id_col="), (time_col, "time_col="), *((c, "data.extra_cols") for c in extra_cols)):
        if col not in df.columns:
            cols = ", ".join(map(str, df.columns[:10]))
            sep = next((c for c in (";", "\t", "|") if len(df.columns) == 1 and c in str(df.columns[0])), None)
            hint = f"; the file looks {'tab' if sep == chr(9) else repr(sep)}-separated: write it with commas" if sep else ""
            raise InputError(f"{source}: missing column '{col}' (columns: {cols}; choose another with {flag}{hint})")
    pos = np.arange(len(df)) if positions is None else np.asarray(positions, np.int64)
    raw_ids = df[id_col].reset_index(drop=True)
    raw = df[time_col].reset_index(drop=True)
    reason = np.full(len(df), None, dtype=object)
    ids, no_id = canonical_ids(raw_ids, id_col, source)
    reason[no_id] = NO_ID
    times, fmt = _parse_times(raw, time_col, source, reason, time_format, tz)
    extras, bad_col = {}, np.full(len(df), None, dtype=object)
    for col in extra_cols:
        if col in (ID, TIME):
            raise InputError(f"{source}: extra column '{col}' clashes with a canonical column name; rename it")
        raw_extra = df[col].reset_index(drop=True)
        extras[col] = pd.to_numeric(raw_extra, errors="coerce").astype(np.float64)
        given = raw_extra.notna().to_numpy()
        if given.any() and not np.isfinite(extras[col].to_numpy()[given]).any():
            examples = ", ".join(repr(str(v)) for v in raw_extra[given].drop_duplicates().head(2))
            raise InputError(f"{source}: column '{col}' holds {raw_extra.dtype} values, not numbers (e.g. {examples}); "
                             "extra columns must be numeric")
        odd = (~np.isfinite(extras[col].to_numpy())) & (reason == None)  # noqa: E711
        reason[odd], bad_col[odd] = NOT_NUMBER, col

    bad = reason != None  # noqa: E711
    if bad.any() and on_bad_rows == "error":
        for why in (NO_ID, NO_TIME, UNREADABLE, OUT_OF_RANGE, NO_ZONE, ZONE, NOT_NUMBER):
            at = np.flatnonzero(reason == why)
            if len(at):
                col = id_col if why == NO_ID else bad_col[at[0]] if why == NOT_NUMBER else time_col
                at = at[bad_col[at] == col] if why == NOT_NUMBER else at
                shown = df[col].reset_index(drop=True) if why == NOT_NUMBER else raw
                example = f", e.g. {str(shown.iloc[at[0]])!r}" if why not in (NO_ID, NO_TIME) else ""
                reading = f"; the column reads as {fmt}" if why == UNREADABLE else ""
                raise InputError(
                    f"{source}: column '{col}': {why} at {_rows(pos[at], source)}{example}"
                    f" (use on_bad_rows='skip' to set bad rows aside{reading})"
                )
    keep = ~bad
    if not keep.any():
        counts = pd.Series(reason[bad]).value_counts()
        raise InputError(f"{source}: every row is bad ({'; '.join(f'{k}: {v:,}' for k, v in counts.items())})")
    at = np.flatnonzero(bad)
    rejected = pd.DataFrame({
        "row": row_labels(pos[at], source),
        ID: raw_ids.iloc[at].astype(str).where(raw_ids.iloc[at].notna(), None).to_numpy(dtype=object),
        TIME: raw.iloc[at].astype(str).where(raw.iloc[at].notna(), None).to_numpy(dtype=object),
        "reason": np.where(bad_col[at] != None, [f"{r} in '{c}'" for r, c in zip(reason[at], bad_col[at])],  # noqa: E711
                           reason[at]).astype(str) if len(at) else reason[at].astype(str),
    })
    events = pd.DataFrame({ID: ids[keep].reset_index(drop=True), TIME: times[keep].reset_index(drop=True),
                           **{col: v[keep].reset_index(drop=True) for col, v in extras.items()}})
    rows = row_labels(pos[keep], source)
    later = events.iloc[:0]
    if as_of is not None:  # strictly before the as-of date counts: a bare date is the start of that day
        late = (events[TIME] >= as_of).to_numpy()
        if late.any():
            later, events, rows = events[late].reset_index(drop=True), events[~late].reset_index(drop=True), rows[~late]
    if events.empty:
        raise InputError(f"{source}: no visit before the as-of date {as_of} (the first is {later[TIME].min()})")
    merged = 0
    if merge_same_timestamp or merge_same_day:
        events, rows, merged = _merge_visits(events, rows, tuple(extra_cols), by_day=merge_same_day)
    seen = events[ID].drop_duplicates()
    orphans = np.zeros(0, dtype=object)
    if bad.any():  # (isin over millions of text ids is slow: only when rows were dropped, and on uniques)
        lost = ids[bad & ~no_id].drop_duplicates()
        orphans = lost[~lost.isin(seen) & ~lost.isin(later[ID])].to_numpy()
    after = later[ID].drop_duplicates()
    after = after[~after.isin(seen)].to_numpy() if len(after) else np.zeros(0, dtype=object)
    return Checked(events, rejected, orphans, later, after, merged, fmt, rows)


def _merge_visits(events: pd.DataFrame, rows: np.ndarray, extra_cols: tuple[str, ...], by_day: bool = False):
    """(events with one row per customer and timestamp (by_day: calendar day, kept at its earliest
    timestamp), the row label of each kept row, rows merged). Extra columns are summed: two baskets at
    one checkout, or one day's purchases, are one visit with their total."""
    key = events[TIME].dt.floor("D") if by_day else events[TIME]
    first = np.argsort(events[TIME].to_numpy(), kind="stable")  # a group's earliest row comes first
    dup = np.empty(len(events), bool)
    dup[first] = pd.DataFrame({ID: events[ID].to_numpy()[first], "k": key.to_numpy()[first]}).duplicated().to_numpy()
    n = int(dup.sum())
    if not n:
        return events, rows, 0
    kept = events[~dup].reset_index(drop=True)
    if extra_cols:
        groups = pd.DataFrame({ID: events[ID].to_numpy(), "k": key.to_numpy(), **{c: events[c] for c in extra_cols}})
        sums = groups.groupby([ID, "k"], sort=False)[list(extra_cols)].sum()
        kept[list(extra_cols)] = sums.reindex(pd.MultiIndex.from_arrays([kept[ID], key.to_numpy()[~dup]])).to_numpy()
    return kept, rows[~dup], n


_INTEGER = r"[+-]?\d{1,18}"


def canonical_ids(raw: pd.Series, col: str = ID, source: str = "<DataFrame>") -> tuple[pd.Series, np.ndarray]:
    """(ids in one canonical type, missing [N] bool). Missing rows hold a placeholder.

    Integer columns stay int64, float columns of whole numbers become int64 (an int column with a
    null reads as float: customer 17 stays 17, not 17.0). A column with any text in it is text, every
    value stripped of surrounding whitespace (4744 and "4744 " are one customer). A CSV has no types:
    its ids are int64 when every one is an integer, else text. Two different texts that name the same
    number ("001" and "1") are an error: they could be one customer or two."""
    if isinstance(raw.dtype, pd.CategoricalDtype):
        raw = raw.astype(object)
    missing = raw.isna().to_numpy().copy()
    if pd.api.types.is_bool_dtype(raw):
        return raw.astype(str), missing
    if pd.api.types.is_integer_dtype(raw):
        return raw.fillna(0).astype(np.int64), missing
    if pd.api.types.is_float_dtype(raw):
        values = raw.fillna(0.0)
        if bool(((values % 1 == 0) & (values.abs() < 2**53)).all()):
            return values.astype(np.int64), missing
        return values.astype(np.float64), missing
    present = raw[~missing]
    is_text = present.map(lambda v: isinstance(v, str)).to_numpy(bool)
    if not is_text.any():  # python numbers in an object column
        numbers = pd.to_numeric(raw, errors="coerce")
        if numbers[~missing].notna().all():
            return canonical_ids(numbers, col, source)
    text = raw.map(_id_text).astype(object)
    text = text.where(~missing, "")
    missing = missing | (text == "").to_numpy()
    present = text[~missing]
    if _is_csv(source) and len(present) and bool(present.str.fullmatch(_INTEGER).all()):
        numbers = present.astype(np.int64)
        pairs = pd.DataFrame({"text": present, "n": numbers}).drop_duplicates()
        clash = pairs[pairs["n"].duplicated(keep=False)]
        if len(clash):
            a, b = clash.sort_values("n")["text"].head(2)
            raise InputError(f"{source}: column '{col}': ids {a!r} and {b!r} are the same number; are they one customer "
                             "or two? Make the ids unambiguous (e.g. drop or keep leading zeros everywhere)")
        out = pd.Series(np.zeros(len(raw), np.int64), index=raw.index)
        out[~missing] = numbers
        return out, missing
    return text.astype("str"), missing  # Arrow-backed text: ~20 bytes an id, not a Python object each


def _id_text(v) -> str:
    """One id value as canonical text: stripped; whole floats without '.0'."""
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip()


def validate_events(
    df: pd.DataFrame, id_col: str = ID, time_col: str = TIME, source: str = "<DataFrame>",
    as_of: str | pd.Timestamp | None = None, **kwargs,
) -> pd.DataFrame:
    """Strict `check_events`: the validated events, or InputError at the first kind of bad row."""
    return check_events(df, id_col, time_col, source, as_of=as_of, **kwargs).events


def _parse_times(raw: pd.Series, col: str, source: str, reason: np.ndarray, time_format: str = "",
                 timezone: str = "UTC") -> tuple[pd.Series, str]:
    """(times as tz-naive datetime64[ns] on the `timezone` clock, how the column was read); bad rows
    are marked in `reason` (NaT there)."""
    missing = raw.isna().to_numpy().copy()
    reason[missing & (reason == None)] = NO_TIME  # noqa: E711
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return _to_ns(raw.dt.tz_convert(timezone).dt.tz_localize(None), reason), "datetime"
    if pd.api.types.is_datetime64_any_dtype(raw):
        return _to_ns(raw, reason), "datetime"
    if pd.api.types.is_numeric_dtype(raw) and not missing.all():
        raise InputError(f"{source}: column '{col}' holds numbers, not timestamps (expected dates or ISO-8601 text)")
    text = raw.astype(str).str.strip()
    blank = (text == "").to_numpy() & ~missing
    reason[blank & (reason == None)] = NO_TIME  # noqa: E711
    missing |= blank
    # an offset counts only after a time of day: "01-02-2024" ends in "-2024" but has no zone
    has_tz = text.str.contains(ZONE_SUFFIX, regex=True).to_numpy() & ~missing
    n_tz, n_naive = int(has_tz.sum()), int((~has_tz & ~missing).sum())
    if n_tz and n_naive:  # local times beside UTC offsets: no safe common clock; the minority is bad
        odd = ~has_tz & ~missing if n_naive <= n_tz else has_tz
        reason[odd & (reason == None)] = NO_ZONE if n_naive <= n_tz else ZONE  # noqa: E711
    ok = ~missing & (reason == None)  # noqa: E711
    parsed = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
    fmt = time_format or "ISO8601"
    if ok.any():
        zoned = bool(has_tz[ok].any())
        uniques = pd.Series(pd.unique(text[ok]))  # dates repeat: read each distinct text once
        fmt, read = _read_column(uniques, col, source, time_format, zoned)
        if zoned:
            read = read.dt.tz_convert(timezone).dt.tz_localize(None)
        if read.isna().all():
            numbers = bool(uniques.str.fullmatch(r"[+-]?\d+(\.\d*)?").all())
            examples = ", ".join(repr(v) for v in uniques.head(2))
            what = ("holds numbers, not timestamps" if numbers and not time_format else
                    f"has no value matching time_format={time_format!r}" if time_format else "has no value that reads as a date or time")
            raise InputError(f"{source}: column '{col}' {what} (e.g. {examples}); is time_col= the right column?")
        values = pd.Series(read.to_numpy()[pd.Index(uniques).get_indexer(text[ok])], index=text[ok].index)
        unread = np.zeros(len(raw), bool)
        unread[ok] = values.isna().to_numpy()
        reason[unread] = UNREADABLE
        parsed[ok] = _to_ns(values, reason, np.flatnonzero(ok))
    return parsed, fmt


def _read_column(values: pd.Series, col: str, source: str, time_format: str, zoned: bool) -> tuple[str, pd.Series]:
    """(the column's reading, the values read with it: NaT where a value does not match).

    One reading for the whole column, never a guess per row: ISO 8601 when every value is ISO;
    otherwise the formats pandas guesses for a sample of values are grouped by their order of day,
    month and year, and the order that reads the most values wins. Another order that reads as many
    values differently ("01/02/2014": 1 February or 2 January) makes the column ambiguous: an error
    naming two values, not a guess."""
    def read(formats: list[str]) -> pd.Series:
        # microseconds: years up to 294,000 fit, so a date past 2262 is reported as such (see _to_ns), not as unreadable
        out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]" if zoned else "datetime64[us]")
        for f in formats:  # a value takes the first format that reads it (e.g. with and without a time)
            todo = out.isna()
            if not todo.any():
                break
            got = pd.to_datetime(values[todo], format=f, errors="coerce", utc=zoned)
            out[todo] = got.dt.as_unit("us")
        return out

    if time_format:
        return time_format, read([time_format])
    iso = read(["ISO8601"])
    if iso.notna().all():
        return "ISO8601", iso
    step = max(1, len(values) // 500)
    groups: dict[str, set[str]] = {"ymd": {"ISO8601"}}
    for v in values.iloc[::step]:
        for dayfirst in (False, True):
            with warnings.catch_warnings():  # "parsing in %d/%m/%Y when dayfirst=False": asking both is the point
                warnings.simplefilter("ignore", UserWarning)
                guess = guess_datetime_format(v, dayfirst=dayfirst)
            order = _order(guess) if guess else None
            if order and order != "ydm":  # nobody writes year-day-month; dayfirst guesses it for ISO dates
                groups.setdefault(order, set()).add(guess)
    readings = {order: read(sorted(formats, key=lambda f: f != "ISO8601")) for order, formats in groups.items()}
    counts = {order: int(r.notna().sum()) for order, r in readings.items()}
    best = max(counts, key=lambda o: (counts[o], o == "ymd"))
    for order, reading in readings.items():
        both = reading.notna() & readings[best].notna()
        differ = both & (reading != readings[best])
        if order != best and counts[order] == counts[best] and differ.any():
            shown = " and ".join(repr(v) for v in values[differ].head(2))
            raise InputError(
                f"{source}: column '{col}': dates can be read day-first or month-first (e.g. {shown}); "
                f"give the format with time_format= (e.g. '{_example_format(groups[best])}' or '{_example_format(groups[order])}')")
    label = "ISO8601" if best == "ymd" else " or ".join(sorted(groups[best]))
    return label, readings[best]


def _order(fmt: str) -> str | None:
    """'dmy', 'mdy', 'ymd', ... of a strftime format; None without a full date."""
    seen = [{"d": "d", "m": "m", "b": "m", "B": "m", "Y": "y", "y": "y"}[c] for c in re.findall(r"%([dmbBYy])", fmt)]
    return "".join(seen) if sorted(seen) == ["d", "m", "y"] else None


def _example_format(formats: set[str]) -> str:
    return next((f for f in sorted(formats) if f != "ISO8601"), "ISO8601")


def _to_ns(values: pd.Series, reason: np.ndarray, at: np.ndarray | None = None) -> pd.Series:
    """datetime64 of any unit -> datetime64[ns]; values outside its range (years 1677-2262) become
    NaT and are marked in `reason` (rows `at` of it; all rows when None)."""
    at = np.arange(len(values)) if at is None else at
    if values.dtype != "datetime64[ns]":
        lo, hi = pd.Timestamp.min.as_unit("us"), pd.Timestamp.max.as_unit("us")
        wide = values.astype("datetime64[us]") if np.datetime_data(values.dtype)[0] in ("s", "ms") else values
        outside = (wide.notna() & ((wide < lo) | (wide > hi))).to_numpy()
        reason[at[outside]] = OUT_OF_RANGE
        values = values.where(~outside)
    return values.astype("datetime64[ns]")


def load_events(path: str | Path, id_col: str = ID, time_col: str = TIME, **kwargs) -> pd.DataFrame:
    """Read a visit log file and validate it strictly (see `validate_events`)."""
    return validate_events(read_table(path), id_col, time_col, source=str(path), **kwargs)
