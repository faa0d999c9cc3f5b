"""Where a visit log comes from: a file (parquet / CSV) or a database URL with a table or a query.

    read_source("visits.parquet")
    read_source("sqlite:///shop.db", table="visits", columns=("customer_id", "timestamp"))
    read_source("postgresql://me@host/shop", query="select customer_id, ts from visits where ...")

Databases are read through SQLAlchemy (the `sql` extra) in chunks of `chunk_rows` rows
(`iter_source`), so memory follows the chunk, not the table, for whoever consumes chunks; files go
to `events.read_table` whole. The rows are raw: validation is `events.check_events`, as for files.

Columns come as the database types them (a CSV's are all text); `check_events` gives each its one
canonical meaning (ids: int64 when integers, else text; timestamps: datetime64), so the same log
gives the same events from a CSV file and from a database.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pandas as pd

from jaxlstm.data.events import read_table
from jaxlstm.errors import InputError

CHUNK_ROWS = 100_000
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:)(.*)@")  # up to the last '@': passwords may hold one
FILE_DIALECTS = ("sqlite", "duckdb")  # a missing file would be created empty by their drivers
DRIVERS = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient (or name another driver: mysql+pymysql://)",
           "pymysql": "pymysql", "duckdb": 'duckdb (pip install -e ".[sql]")'}  # missing module -> what to install
EXTRA = 'pip install -e ".[sql]"'


def is_database(spec: str | Path) -> bool:
    """A database URL (scheme://...) rather than a file path."""
    return isinstance(spec, str) and bool(URL.match(spec))


def mask(url: str) -> str:
    """The URL with its password, if any, shown as ***."""
    return PASSWORD.sub(r"\1***@", url)


def source_name(spec: str | Path, table: str | None = None, query: str | None = None) -> str:
    """The name messages give a source: the file path, or the masked URL and the table (or 'query')."""
    if not is_database(spec):
        return str(spec)
    return f"{mask(spec)} [table {table}]" if table else f"{mask(spec)} [query]"


def read_source(spec: str | Path, table: str | None = None, query: str | None = None, *,
                columns: tuple[str, ...] = (), chunk_rows: int = CHUNK_ROWS) -> pd.DataFrame:
    """The whole visit table of a file or a database (see `iter_source`). Raises InputError."""
    chunks = list(iter_source(spec, table, query, columns=columns, chunk_rows=chunk_rows))
    return chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)


def iter_source(spec: str | Path, table: str | None = None, query: str | None = None, *,
                columns: tuple[str, ...] = (), chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Raw rows in chunks of at most `chunk_rows` (a file: one chunk, as `read_table` reads it).

    A database needs `table` or `query` (one of them). With a table, only `columns` are selected
    when the table has them all (else every column, so the missing one is reported with the
    table's columns); a query selects what it says.
    Every failure (bad URL, missing driver or file, failed login, missing table, query error) is
    an InputError of one line naming the source, with the password masked."""
    if not is_database(spec):
        if table is not None or query is not None:
            raise InputError(f"{spec}: --table and --query apply to a database URL (e.g. sqlite:///shop.db), not a file")
        yield read_table(spec)
        return
    name = source_name(spec, table, query)
    if (table is None) == (query is None):
        raise InputError(f"{name}: name a --table or a --query (one of them)")
    if chunk_rows < 1:
        raise InputError(f"chunk_rows must be >= 1, got {chunk_rows}")
    try:
        import sqlalchemy as sa
    except ImportError:
        raise InputError(f"{name}: reading a database needs SQLAlchemy: {EXTRA}") from None
    engine = _engine(sa, spec, name)
    # the driver's own errors where rows are fetched past SQLAlchemy; pandas wraps a failed query in its own
    errors = (sa.exc.SQLAlchemyError, pd.errors.DatabaseError, engine.dialect.loaded_dbapi.Error)
    try:
        with engine.connect() as conn:
            # a query goes to the driver as written (no ':name' bind parameters parsed out of it)
            sql = _select_table(sa, conn, table, columns, name) if table is not None else query
            yield from _fetch(conn, sql, chunk_rows)
    except errors as e:
        raise InputError(f"{name}: {_why(e, spec)}") from None
    finally:
        engine.dispose()


def _fetch(conn, sql: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The rows of `sql` in frames of `chunk_rows`. SQLAlchemy makes a Python object per value and
    processes every row; where the driver has a faster bulk path, the rows take that instead."""
    kind = conn.dialect.name
    if kind == "duckdb":  # Arrow batches straight from DuckDB (1M rows: 3.8 s through SQLAlchemy, ~1 s so)
        rows = conn.connection.driver_connection.sql(sql)
        reader = rows.to_arrow_reader if hasattr(rows, "to_arrow_reader") else rows.fetch_arrow_reader  # 2.x, 1.x
        for batch in reader(chunk_rows):
            yield batch.to_pandas()
        return
    if kind == "sqlite":  # pandas reads sqlite3 itself, without SQLAlchemy's per-row processing (2x faster)
        yield from pd.read_sql(sql, conn.connection.driver_connection, chunksize=chunk_rows)
        return
    # stream_results: a server-side cursor where the driver has one, so rows arrive per chunk
    conn = conn.execution_options(stream_results=True, max_row_buffer=chunk_rows)
    yield from pd.read_sql(sql, conn, chunksize=chunk_rows)


def _engine(sa, spec: str, name: str):
    """An engine for the URL, or InputError: unparseable URL, unknown database, missing driver or file."""
    try:
        url = sa.make_url(spec)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise InputError(f"{name}: not a database URL (expected e.g. sqlite:///shop.db or postgresql://user@host/db)") from None
    kind = url.get_backend_name()
    in_file = kind in FILE_DIALECTS and url.database not in (None, "", ":memory:") and "uri" not in url.query
    if in_file and not Path(url.database).is_file():
        raise InputError(f"{name}: database file {url.database} not found")
    # DuckDB locks a file it opens for writing; a reader needs no lock
    connect_args = {"read_only": True} if kind == "duckdb" else {}
    try:
        return sa.create_engine(url, connect_args=connect_args)
    except sa.exc.NoSuchModuleError:
        hint = f" (install it: {EXTRA})" if kind == "duckdb" else " (e.g. sqlite, postgresql, mysql, duckdb)"
        raise InputError(f"{name}: no SQLAlchemy dialect for '{url.drivername}'{hint}") from None
    except ImportError as e:
        hint = DRIVERS.get(e.name, f"the Python driver for {url.drivername}")
        raise InputError(f"{name}: the database driver is not installed ({e}); install {hint}") from None


def _select_table(sa, conn, table: str, columns: tuple[str, ...], name: str) -> str:
    """SQL to SELECT the named columns (or all) of `table` ('schema.table' also), names quoted as the
    database needs. Only names are looked up, not column types: type reflection differs by driver
    (duckdb-engine's fails on DuckDB 2) and reading rows needs none."""
    schema, _, bare = table.rpartition(".")
    schema = schema or None
    inspector = sa.inspect(conn)
    if not inspector.has_table(bare, schema=schema):
        try:
            known = inspector.get_table_names(schema=schema)
        except sa.exc.SQLAlchemyError:
            known = []
        listed = f" (tables: {', '.join(known[:10])}{', ...' if len(known) > 10 else ''})" if known else " (it has no tables)"
        raise InputError(f"{name}: no table '{table}'{listed}")
    t = sa.table(bare, schema=schema)
    present = set(conn.execute(sa.select(sa.text("*")).select_from(t).limit(0)).keys())
    wanted = [sa.column(c) for c in dict.fromkeys(columns)] if columns and present.issuperset(columns) else [sa.text("*")]
    return str(sa.select(*wanted).select_from(t).compile(conn))


def _why(e: Exception, spec: str) -> str:
    """The driver's own first line of a database error (no SQL echo, no links), password removed."""
    e = e.__cause__ if isinstance(e, pd.errors.DatabaseError) and e.__cause__ is not None else e
    orig = getattr(e, "orig", None) or e
    lines = [s for s in str(orig).strip().splitlines() if s.strip()]
    why = f"{type(orig).__name__}: {lines[0].strip()}" if lines else type(orig).__name__
    password = PASSWORD.match(spec)
    if password and password.group(2):
        why = why.replace(password.group(2), "***")
    return why
