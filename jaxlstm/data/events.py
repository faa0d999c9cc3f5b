"""Read and validate the visit log: one row per visit, a customer id and a timestamp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from jaxlstm.errors import InputError

ID, TIME = "customer_id", "timestamp"  # canonical column names after loading


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a parquet or CSV file, chosen by extension. Raises InputError with the file name."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
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


def _rows(index: np.ndarray, source: str) -> str:
    """Human row numbers: CSV line numbers (header is line 1), else 0-based row positions."""
    shown = [int(i) + 2 for i in index[:5]] if source.lower().endswith(".csv") else [int(i) for i in index[:5]]
    word = "lines" if source.lower().endswith(".csv") else "rows"
    more = f" (of {len(index)})" if len(index) > 5 else ""
    return f"{word} {', '.join(map(str, shown))}{more}"


def validate_events(
    df: pd.DataFrame, id_col: str = ID, time_col: str = TIME, source: str = "<DataFrame>"
) -> pd.DataFrame:
    """Check and normalise a raw visit table.

    Returns a new frame with exactly two columns, `customer_id` (original values) and `timestamp`
    (tz-naive datetime64[ns]; tz-aware input is converted to UTC), in input row order.
    Raises InputError naming `source`, the column and the first bad rows.
    """
    if len(df.columns) == 0 or len(df) == 0:
        raise InputError(f"{source}: no rows")
    for col, flag in ((id_col, "--id-col"), (time_col, "--time-col")):
        if col not in df.columns:
            cols = ", ".join(map(str, df.columns[:10]))
            raise InputError(f"{source}: missing column '{col}' (columns: {cols}; choose another with {flag})")
    ids = df[id_col].reset_index(drop=True)
    bad = np.flatnonzero(ids.isna().to_numpy())
    if len(bad):
        raise InputError(f"{source}: column '{id_col}' is empty at {_rows(bad, source)}")
    times = _parse_times(df[time_col].reset_index(drop=True), time_col, source)
    return pd.DataFrame({ID: ids, TIME: times})


def _parse_times(raw: pd.Series, col: str, source: str) -> pd.Series:
    missing = np.flatnonzero(raw.isna().to_numpy())
    if len(missing):
        raise InputError(f"{source}: column '{col}' is empty at {_rows(missing, source)}")
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
    if pd.api.types.is_datetime64_any_dtype(raw):
        return raw.astype("datetime64[ns]")
    if pd.api.types.is_numeric_dtype(raw):
        raise InputError(f"{source}: column '{col}' holds numbers, not timestamps (expected dates or ISO-8601 text)")
    text = raw.astype(str).str.strip()
    has_tz = text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True).to_numpy()
    if has_tz.any() and not has_tz.all():  # local times beside UTC offsets: no safe common clock
        naive = np.flatnonzero(~has_tz)
        raise InputError(
            f"{source}: column '{col}' mixes timestamps with and without a time zone; none at {_rows(naive, source)}"
        )
    try:
        parsed = pd.to_datetime(text, errors="coerce", format="mixed", utc=bool(has_tz.any()))
    except (ValueError, TypeError) as e:
        raise InputError(f"{source}: column '{col}' has timestamps that cannot be read: {e}") from None
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        raise InputError(
            f"{source}: column '{col}' has unparseable timestamps at {_rows(bad, source)}, e.g. {text.iloc[bad[0]]!r}"
        )
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.astype("datetime64[ns]")


def load_events(path: str | Path, id_col: str = ID, time_col: str = TIME) -> pd.DataFrame:
    """Read a visit log file and validate it (see `validate_events`)."""
    return validate_events(read_table(path), id_col, time_col, source=str(path))
