"""Logs of more customers than one shard: customers split by a stable hash of their id, read shard by shard.

    pass 1: the id column, a batch of rows at a time -> N customers -> S = ceil(N / train.shard_customers)
    pass 2: every row, a batch at a time -> its shard (hash of the customer's id mod S) -> one parquet
            file per shard on disk (the log is spilled to disk, not held in RAM)
    then each shard is a visit log of its own: checked, trained and predicted, writing its part

Memory follows the batch (BATCH_ROWS rows) and the shard, not the log. The cost is reading the log
twice (the first time only its id column) and writing it once more to disk. A customer's rows all
land in one shard wherever they are in the file, so a log need not be sorted by customer.
The hash reads an id as `canonical_ids` does ("0042 " and 42 are one customer; "001" and "1" land in
one shard, where check_events calls them a collision), so the split never separates one customer.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jaxlstm.data.events import read_table
from jaxlstm.errors import InputError

BATCH_ROWS = 1_000_000
ROW = "__row__"  # the row's position in the log (0-based), kept so messages name the log's rows


def id_keys(ids: pd.Series) -> pd.Series:
    """Text of each id such that ids canonical_ids reads as one customer (or as a collision) are equal:
    whole numbers without a fractional part, text stripped, digits without leading zeros."""
    if pd.api.types.is_float_dtype(ids):
        whole = ids.notna() & (ids == np.floor(ids))
        text = ids.astype(object).where(~whole, ids.where(whole, 0).astype(np.int64)).astype(str)
    else:
        text = ids.astype(str).str.strip()
    digits = text.str.fullmatch(r"\d+").fillna(False).to_numpy(bool)
    stripped = text.str.lstrip("0")
    return text.where(~digits, stripped.where(stripped != "", "0"))


def shard_of(ids: pd.Series, n_shards: int) -> np.ndarray:
    """[n] the shard (0 .. n_shards - 1) of each id: a fixed hash of `id_keys`, the same on every machine."""
    h = pd.util.hash_pandas_object(id_keys(ids.reset_index(drop=True)), index=False).to_numpy(np.uint64)
    return (h % np.uint64(n_shards)).astype(np.int64)


def n_shards(n_customers: int, shard_customers: int) -> int:
    return max(1, -(-n_customers // shard_customers))


@dataclasses.dataclass(frozen=True)
class Source:
    """A visit log read a batch of rows at a time: a parquet or CSV file, a database (URL + table or
    query, see data/sources.py) or a DataFrame already in memory."""

    spec: str | Path | None = None
    table: str | None = None
    query: str | None = None
    frame: pd.DataFrame | None = None

    def batches(self, columns: tuple[str, ...], rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
        """The log's `columns` in frames of at most `rows` rows, in file order."""
        if self.frame is not None:
            missing = [c for c in columns if c not in self.frame.columns]
            if missing:  # check_events names the columns of a table that lacks one
                yield self.frame
                return
            for start in range(0, len(self.frame), rows):
                yield self.frame.iloc[start : start + rows][list(columns)]
            return
        from jaxlstm.data.sources import is_database, iter_source

        if is_database(self.spec):
            yield from iter_source(self.spec, self.table, self.query, columns=columns, chunk_rows=rows)
            return
        yield from _file_batches(Path(self.spec), columns, rows)


def _file_batches(path: Path, columns: tuple[str, ...], rows: int) -> Iterator[pd.DataFrame]:
    suffix = "".join(path.suffixes[-2:]).lower()
    if not path.is_file() or path.stat().st_size == 0 or not suffix.endswith((".parquet", ".pq", ".csv")):
        yield read_table(path)  # raises the InputError of a missing, empty or unknown file
        return
    try:
        if suffix.endswith((".parquet", ".pq")):
            f = pq.ParquetFile(path)
            if not set(columns) <= set(f.schema_arrow.names):  # check_events names the missing column
                yield f.read_row_group(0).slice(0, 1).to_pandas()
                return
            for batch in f.iter_batches(batch_size=rows, columns=list(columns)):
                yield batch.to_pandas()
            return
        import pyarrow.csv as pcsv

        # every column as text, "" as missing: what events.read_table does with pandas
        header = pd.read_csv(path, nrows=0, dtype=str).columns
        if not set(columns) <= set(header):
            yield pd.DataFrame(columns=header, index=[0])
            return
        reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=64 << 20),
                               convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                                                   include_columns=list(columns), strings_can_be_null=True,
                                                                   null_values=[""], quoted_strings_can_be_null=True))
        for batch in reader:
            yield batch.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: cannot read file: {first}") from None


def count_customers(source: Source, id_col: str) -> int:
    """Customers in the log (pass 1: its id column only; ids hashed, so memory is 8 bytes a customer)."""
    seen = np.zeros(0, np.uint64)
    for batch in source.batches((id_col,)):
        if id_col not in batch.columns:
            return -1  # the caller's check_events reports the missing column
        ids = batch[id_col].dropna()
        h = pd.util.hash_pandas_object(id_keys(ids.reset_index(drop=True)), index=False).to_numpy(np.uint64)
        seen = np.union1d(seen, np.unique(h))
    return len(seen)


def spill(source: Source, columns: tuple[str, ...], shards: int, folder: Path) -> list[Path]:
    """Pass 2: every row of the log to the parquet file of its customer's shard, with its position in
    the log (column ROW). Returns the files (a shard no customer hashed to has none: fewer files)."""
    folder.mkdir(parents=True, exist_ok=True)
    writers: dict[int, pq.ParquetWriter] = {}
    paths = [folder / f"raw-{k:05d}.parquet" for k in range(shards)]
    start = 0
    try:
        for batch in source.batches(columns):
            batch = batch.reset_index(drop=True)
            batch[ROW] = np.arange(start, start + len(batch), dtype=np.int64)
            start += len(batch)
            # rows without an id go to shard 0, where check_events reports (or sets aside) them
            shard = np.zeros(len(batch), np.int64)
            has = batch[columns[0]].notna().to_numpy()
            shard[has] = shard_of(batch[columns[0]][has], shards)
            for k in np.unique(shard):
                part = pa.Table.from_pandas(batch[shard == k], preserve_index=False)
                if k not in writers:
                    writers[k] = pq.ParquetWriter(paths[k], part.schema)
                elif not part.schema.equals(writers[k].schema):
                    part = _conform(part, writers[k].schema)
                writers[k].write_table(part)
    finally:
        for w in writers.values():
            w.close()
    return [paths[k] for k in sorted(writers)]


def _conform(part: pa.Table, schema: pa.Schema) -> pa.Table:
    """A batch in the types of the shard file's first batch (a database chunk of all-missing values
    comes typed otherwise); text where the types cannot agree."""
    try:
        return part.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputError(f"column types change within the log ({part.schema} after {schema}): "
                         "export it with one type per column") from None


def checked_shards(source: Source, columns: tuple[str, ...], shards: int, folder: Path, check) -> Iterator[tuple[int, object]]:
    """Spill the log (`spill`), then each shard's rows in turn: (the shard's number, check(rows, their positions
    in the log)); a shard's spilled file is removed once checked. Train and predict split a log this way."""
    for path in spill(source, columns, shards, folder):
        raw, positions = read_shard(path)
        yield int(path.stem.split("-")[1]), check(raw, positions)
        del raw
        path.unlink()


def read_shard(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """(the shard's rows without the ROW column, their positions in the log)."""
    frame = pd.read_parquet(path)
    positions = frame.pop(ROW).to_numpy(np.int64)
    return frame, positions


def release_memory() -> None:
    """Give the memory freed by a finished shard or group back to the operating system: glibc keeps
    freed blocks in its heaps, so without this the peak of every shard would add up in RSS."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        pass
