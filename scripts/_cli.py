"""Shared CLI plumbing: bad input or options end in one line on stderr and exit code 2."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from jaxlstm.errors import InputError  # noqa: E402


# the library's messages name its parameters (for Python callers); on the command line, the flags
_FLAGS = (("on_bad_rows='skip'", "--on-bad-rows skip"), ("on_bad_rows=", "--on-bad-rows "), ("as_of=", "--as-of "),
          ("time_format=", "--time-format "), ("out_dir ", "--out "), ("id_col=", "--id-col"), ("time_col=", "--time-col"))


def as_flags(message: str) -> str:
    """An error message with the API's parameter names replaced by the CLI's flags."""
    for api, flag in _FLAGS:
        message = message.replace(api, flag)
    return message.replace("--time-format  (", "--time-format (")


def few_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives threads (XLA's, Orbax's writers) heaps of their own and seldom returns what they
    free: with 2 heaps a 100,000-customer run peaked at 2.5 GB RSS against 3.3 GB (benchmarks/NOTES.md).
    A process-wide setting, so the scripts make it, before any thread starts; the library does not."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc
        pass


def run(main, argv: list[str] | None = None) -> None:
    few_malloc_arenas()
    try:
        main(argv)
    except InputError as e:
        print(f"error: {as_flags(str(e))}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


SOURCE_HELP = ("visit log, one row per visit: a .parquet or .csv file, or a database URL with --table or --query "
               "(sqlite:///shop.db, duckdb:///shop.duckdb, postgresql://user@host/db, mysql+pymysql://user@host/db)")


def add_source_args(p) -> None:
    """--table / --query beside --customers: what to read from a database URL."""
    p.add_argument("--table", help="with a database URL in --customers: the table of visits (schema.table also)")
    p.add_argument("--query", help="with a database URL in --customers: an SQL query whose rows are the visits")


def source_of(args) -> str:
    """The name messages give --customers with --table / --query (a password masked); checks the flags agree."""
    from jaxlstm.data.sources import source_name

    if (args.table is not None or args.query is not None) and not args.customers:
        raise InputError("--table and --query need a database URL in --customers")
    return source_name(args.customers, args.table, args.query)


def read_customers(args, id_col: str, time_col: str, extra_cols: tuple[str, ...] = ()):
    """(raw visit table, name for messages) of --customers with --table / --query; the name masks a password.
    A database table is read for these columns only."""
    from jaxlstm.data.sources import read_source

    name = source_of(args)
    return read_source(args.customers, args.table, args.query, columns=(id_col, time_col, *extra_cols)), name
