"""Read and validate the visit log: one row per visit, a customer id and a timestamp.

Bad rows (no id, no or unreadable timestamp, a time zone unlike the others, after the as-of date)
are an error by default; with on_bad_rows="skip" they are set aside with a reason each."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from jaxlstm.errors import InputError

ID, TIME = "customer_id", "timestamp"  # canonical column names after loading
ON_BAD_ROWS = ("error", "skip")
# reasons, in the order strict mode reports them
NO_ID, NO_TIME, UNREADABLE, OUT_OF_RANGE, NO_ZONE, ZONE, FUTURE, NOT_NUMBER = (
    "missing customer id", "missing timestamp", "unreadable timestamp", "timestamp outside 1677-2262",
    "no time zone (other rows have one)", "time zone (other rows have none)", "after the as-of date",
    "missing or not a number",
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


def parse_as_of(value: str | pd.Timestamp | None) -> pd.Timestamp | None:
    """An as-of date/time as a tz-naive UTC timestamp (a bare date means midnight at its start)."""
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise InputError(f"--as-of {value!r}: not a date (expected e.g. 2024-06-30 or 2024-06-30T12:00:00Z)") from None
    if ts is pd.NaT:
        raise InputError(f"--as-of {value!r}: not a date")
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


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
    """A validated visit log and the rows set aside.

    events: `customer_id` (original values) and `timestamp` (tz-naive datetime64[ns]; zoned input
      converted to UTC), good rows in input order.
    rejected: `row` (CSV line number, else 0-based row), `customer_id` and `timestamp` as given
      (text), `reason`; empty unless on_bad_rows="skip".
    orphans: ids (original values) of customers all of whose rows were rejected; they still get
      a row in the predictions, so no customer disappears.
    """

    events: pd.DataFrame
    rejected: pd.DataFrame
    orphans: np.ndarray


def check_events(
    df: pd.DataFrame,
    id_col: str = ID,
    time_col: str = TIME,
    source: str = "<DataFrame>",
    *,
    on_bad_rows: str = "error",
    as_of: str | pd.Timestamp | None = None,
    extra_cols: tuple[str, ...] = (),
) -> Checked:
    """Validate a raw visit table. Whole-table problems (no rows, a missing column, a numeric time
    column) always raise InputError; bad rows raise too unless on_bad_rows="skip". Every message
    names `source`, the column, the first bad rows and how many there are."""
    if on_bad_rows not in ON_BAD_ROWS:
        raise InputError(f"--on-bad-rows {on_bad_rows!r}: expected one of {', '.join(ON_BAD_ROWS)}")
    as_of = parse_as_of(as_of)
    if len(df.columns) == 0 or len(df) == 0:
        raise InputError(f"{source}: no rows")
    for col, flag in ((id_col, "--id-col"), (time_col, "--time-col"), *((c, "data.extra_cols") for c in extra_cols)):
        if col not in df.columns:
            cols = ", ".join(map(str, df.columns[:10]))
            raise InputError(f"{source}: missing column '{col}' (columns: {cols}; choose another with {flag})")
    ids = df[id_col].reset_index(drop=True)
    raw = df[time_col].reset_index(drop=True)
    reason = np.full(len(df), None, dtype=object)
    reason[ids.isna().to_numpy()] = NO_ID
    times = _parse_times(raw, time_col, source, reason)
    if as_of is not None:
        reason[(reason == None) & (times > as_of).to_numpy()] = FUTURE  # noqa: E711 (elementwise)
    extras, bad_col = {}, np.full(len(df), None, dtype=object)
    for col in extra_cols:
        if col in (ID, TIME):
            raise InputError(f"{source}: extra column '{col}' clashes with a canonical column name; rename it")
        raw_extra = df[col].reset_index(drop=True)
        extras[col] = pd.to_numeric(raw_extra, errors="coerce").astype(np.float64)
        odd = (~np.isfinite(extras[col].to_numpy())) & (reason == None)  # noqa: E711
        reason[odd], bad_col[odd] = NOT_NUMBER, col

    bad = reason != None  # noqa: E711
    if bad.any() and on_bad_rows == "error":
        for why in (NO_ID, NO_TIME, UNREADABLE, OUT_OF_RANGE, NO_ZONE, ZONE, FUTURE, NOT_NUMBER):
            at = np.flatnonzero(reason == why)
            if len(at):
                col = id_col if why == NO_ID else bad_col[at[0]] if why == NOT_NUMBER else time_col
                at = at[bad_col[at] == col] if why == NOT_NUMBER else at
                shown = df[col].reset_index(drop=True) if why == NOT_NUMBER else raw
                example = f", e.g. {str(shown.iloc[at[0]])!r}" if why not in (NO_ID, NO_TIME) else ""
                after = f" {as_of}" if why == FUTURE else ""
                raise InputError(
                    f"{source}: column '{col}': {why}{after} at {_rows(at, source)}{example}"
                    " (use --on-bad-rows skip to set bad rows aside)"
                )
    keep = ~bad
    if not keep.any():
        counts = pd.Series(reason[bad]).value_counts()
        raise InputError(f"{source}: every row is bad ({'; '.join(f'{k}: {v:,}' for k, v in counts.items())})")
    at = np.flatnonzero(bad)
    rejected = pd.DataFrame({
        "row": row_labels(at, source),
        ID: ids.iloc[at].astype(str).where(ids.iloc[at].notna(), None).to_numpy(dtype=object),
        TIME: raw.iloc[at].astype(str).where(raw.iloc[at].notna(), None).to_numpy(dtype=object),
        "reason": np.where(bad_col[at] != None, [f"{r} in '{c}'" for r, c in zip(reason[at], bad_col[at])],  # noqa: E711
                           reason[at]).astype(str) if len(at) else reason[at].astype(str),
    })
    events = pd.DataFrame({ID: _whole(ids[keep]).reset_index(drop=True), TIME: times[keep].reset_index(drop=True),
                           **{col: v[keep].reset_index(drop=True) for col, v in extras.items()}})
    orphans = np.zeros(0, dtype=object)
    if bad.any():  # (isin over millions of text ids is slow: only when rows were dropped, and on uniques)
        lost = _whole(ids[bad & ids.notna().to_numpy()].drop_duplicates())
        orphans = lost[~lost.isin(events[ID].drop_duplicates())].to_numpy()
    return Checked(events, rejected, orphans)


def _whole(ids: pd.Series) -> pd.Series:
    """Float ids that are all whole numbers back to int64: an integer id column with a null in it
    reads as float, and customer 17 must stay "17", not "17.0"."""
    if pd.api.types.is_float_dtype(ids) and bool(((ids % 1 == 0) & (ids.abs() < 2**53)).all()):
        return ids.astype(np.int64)
    return ids


def validate_events(
    df: pd.DataFrame, id_col: str = ID, time_col: str = TIME, source: str = "<DataFrame>",
    as_of: str | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Strict `check_events`: the validated events, or InputError at the first kind of bad row."""
    return check_events(df, id_col, time_col, source, as_of=as_of).events


def _parse_times(raw: pd.Series, col: str, source: str, reason: np.ndarray) -> pd.Series:
    """Parse the time column to tz-naive UTC datetime64[ns]; mark bad rows in `reason` (NaT there)."""
    missing = raw.isna().to_numpy()
    reason[missing & (reason == None)] = NO_TIME  # noqa: E711
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return _to_ns(raw.dt.tz_convert("UTC").dt.tz_localize(None), reason)
    if pd.api.types.is_datetime64_any_dtype(raw):
        return _to_ns(raw, reason)
    if pd.api.types.is_numeric_dtype(raw) and not missing.all():
        raise InputError(f"{source}: column '{col}' holds numbers, not timestamps (expected dates or ISO-8601 text)")
    text = raw.astype(str).str.strip()
    # an offset counts only after a time of day: "01-02-2024" ends in "-2024" but has no zone
    has_tz = text.str.contains(ZONE_SUFFIX, regex=True).to_numpy() & ~missing
    n_tz, n_naive = int(has_tz.sum()), int((~has_tz & ~missing).sum())
    if n_tz and n_naive:  # local times beside UTC offsets: no safe common clock; the minority is bad
        odd = ~has_tz & ~missing if n_naive <= n_tz else has_tz
        reason[odd & (reason == None)] = NO_ZONE if n_naive <= n_tz else ZONE  # noqa: E711
    ok = ~missing & (reason == None)  # noqa: E711
    parsed = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
    if ok.any():
        zoned = bool(has_tz[ok].any())
        values = pd.to_datetime(text[ok], errors="coerce", format="mixed", utc=zoned)
        if zoned:
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        unread = np.zeros(len(raw), bool)
        unread[ok] = values.isna().to_numpy()
        reason[unread] = UNREADABLE
        parsed[ok] = _to_ns(values, reason, np.flatnonzero(ok))
    return parsed


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
