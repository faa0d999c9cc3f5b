"""Visit logs from databases: a real SQLite file (and DuckDB where installed) reads to the same validated
events as the CSV; queries, chunks, columns, text ids; every failure is one line with the password masked."""

import re
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import EXAMPLE_CSV, ROOT, SCRIPTS, cli_fails, script
from jaxlstm.data.events import check_events, read_table
from jaxlstm.data.sources import iter_source, mask, read_source, source_name
from jaxlstm.errors import InputError

pytest.importorskip("sqlalchemy")  # in the dev extra: skipped only outside it

TRAIN = script("train_all")


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The example log in a SQLite file, as pandas writes it: `id` INTEGER, `date` TEXT."""
    path = tmp_path_factory.mktemp("db") / "shop.db"
    with sqlite3.connect(path) as con:
        pd.read_csv(EXAMPLE_CSV).to_sql("visits", con, index=False)
    con.close()
    return path


@pytest.fixture(scope="module")
def csv_events():
    return check_events(read_table(EXAMPLE_CSV), "id", "date", str(EXAMPLE_CSV)).events


def test_sqlite_table_gives_the_csv_events(shop, csv_events):
    raw = read_source(f"sqlite:///{shop}", table="visits", columns=("id", "date"))
    assert raw["id"].dtype == np.int64 and raw["date"].iloc[0] == "2014-03-08 00:00:00"  # typed by the database
    events = check_events(raw, "id", "date", source_name(f"sqlite:///{shop}", "visits")).events
    pd.testing.assert_frame_equal(events, csv_events)  # same ids, same timestamps, same order, same dtypes
    chunked = list(iter_source(f"sqlite:///{shop}", table="visits", columns=("id", "date"), chunk_rows=4000))
    assert [len(c) for c in chunked] == [4000, 4000, 4000, 3273]
    pd.testing.assert_frame_equal(pd.concat(chunked, ignore_index=True), raw)


def test_query_with_where_reads_the_subset(shop, csv_events):
    raw = read_source(f"sqlite:///{shop}", query="select id, date from visits where id < 100 and date >= '2014-06-01'")
    events = check_events(raw, "id", "date").events
    want = csv_events[(csv_events["customer_id"] < 100) & (csv_events["timestamp"] >= "2014-06-01")].reset_index(drop=True)
    assert 0 < len(events) < 0.05 * len(csv_events)
    pd.testing.assert_frame_equal(events, want)
    # the query goes to the database as written: '%' and ':name' in it are SQL text, not parameters
    literal = "select id, date from visits where id < 100 and date like '201_-%' and ':x' = ':x' and date >= '2014-06-01'"
    pd.testing.assert_frame_equal(check_events(read_source(f"sqlite:///{shop}", query=literal), "id", "date").events, want)


def test_ids_of_any_stored_type_are_read_as_they_mean(tmp_path):
    # SQLite keeps each value's own type: integers, text with leading zeros, whole reals and NULLs in one column
    db = tmp_path / "mixed.db"
    with sqlite3.connect(db) as con:
        con.execute("create table v (cid, ts text, amount real)")
        con.executemany("insert into v values (?, ?, ?)", [(17, "2024-01-01", 1.5), ("007", "2024-01-02", 2.0),
                                                          (3.0, "2024-01-03", None), (None, "2024-01-04", 4.0),
                                                          (2**62, "2024-01-05T10:00:00", 5.0)])
        # an integer column with a NULL: a chunk holding the NULL reads as floats
        con.execute("create table w (cid integer, ts text)")
        con.executemany("insert into w values (?, ?)", [(17, "2024-01-01"), (None, "2024-01-02"), (18, "2024-01-03")])
    con.close()
    checked = check_events(read_source(f"sqlite:///{db}", table="v"), "cid", "ts", on_bad_rows="skip", extra_cols=("amount",))
    assert checked.events["customer_id"].tolist() == ["17", "007", str(2**62)]  # text where any id is text; no float rounding
    assert checked.rejected["reason"].tolist() == ["missing or not a number in 'amount'", "missing customer id"]
    chunks = list(iter_source(f"sqlite:///{db}", table="w", chunk_rows=2))
    assert [c["cid"].dtype for c in chunks] == [np.float64, np.int64]
    name = source_name(f"sqlite:///{db}", "w")
    checked = check_events(pd.concat(chunks, ignore_index=True), "cid", "ts", name, on_bad_rows="skip")
    assert checked.events["customer_id"].tolist() == [17, 18] and checked.events["customer_id"].dtype == np.int64  # 17, not 17.0
    # the NULL id is a bad row like a CSV's empty field, named by its row in the result
    with pytest.raises(InputError, match=r"\[table w\]: column 'cid': missing customer id at rows 1"):
        check_events(pd.concat(chunks, ignore_index=True), "cid", "ts", name)


def test_a_table_is_read_for_the_named_columns_only(shop, tmp_path):
    db = tmp_path / "wide.db"
    with sqlite3.connect(db) as con:
        con.execute("create table v (note text, customer_id integer, timestamp text, amount real)")
        con.execute("insert into v values ('x', 1, '2024-01-01', 2.5)")
    con.close()
    narrow = read_source(f"sqlite:///{db}", table="v", columns=("customer_id", "timestamp", "amount"))
    assert list(narrow.columns) == ["customer_id", "timestamp", "amount"]
    # a column the table lacks: every column is read, so the validation lists them
    raw = read_source(f"sqlite:///{db}", table="v", columns=("customer_id", "ts"))
    with pytest.raises(InputError, match=r"missing column 'ts' \(columns: note, customer_id, timestamp, amount;"):
        check_events(raw, "customer_id", "ts")
    assert len(read_source(f"sqlite:///{shop}", table="main.visits")) == 15273  # schema.table


def test_duckdb_typed_columns_give_the_csv_events(tmp_path, csv_events):
    duckdb = pytest.importorskip("duckdb")
    pytest.importorskip("duckdb_engine")
    path = tmp_path / "shop.duckdb"
    con = duckdb.connect(str(path))
    con.execute(f"create table visits as select id::bigint as id, date::timestamp as ts, date::date as day "
                f"from read_csv('{EXAMPLE_CSV}', all_varchar=true)")
    con.close()
    for col in ("ts", "day"):  # a TIMESTAMP column and a DATE column
        raw = read_source(f"duckdb:///{path}", table="visits", columns=("id", col))
        events = check_events(raw, "id", col).events
        pd.testing.assert_frame_equal(events, csv_events)


def test_password_is_masked_everywhere():
    assert mask("postgresql://me:p@ss:w0rd@db.example:5432/shop") == "postgresql://me:***@db.example:5432/shop"
    assert mask("postgresql://me@db/shop") == "postgresql://me@db/shop"
    assert mask("sqlite:///shop.db") == "sqlite:///shop.db"
    assert source_name("mysql://u:secret@h/db", query="select 1") == "mysql://u:***@h/db [query]"
    for url in ("postgresql://me:s3cret@127.0.0.1:1/shop", "postgresql+nosuchdriver://me:s3cret@h/shop"):
        with pytest.raises(InputError) as e:  # driver missing, unknown driver, or connection refused: all one line
            read_source(url, table="visits")
        assert "s3cret" not in str(e.value) and "me:***@" in str(e.value) and "\n" not in str(e.value)


def test_missing_sql_extra_is_named(monkeypatch, shop):
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(InputError, match=r'needs SQLAlchemy: pip install -e "\.\[sql\]"'):
        read_source(f"sqlite:///{shop}", table="visits")


def _cli_fails(args, capsys) -> str:
    return cli_fails(TRAIN, args, capsys)


@pytest.mark.parametrize("source, message", [
    (["--table", "no_such_table"], r"\[table no_such_table\]: no table 'no_such_table' \(tables: visits\)$"),
    (["--query", "selec id from visits"], r"\[query\]: OperationalError: near \"selec\": syntax error$"),
    (["--query", "select id, date from visits where nope = 1"], r"no such column: nope$"),
    (["--query", "select id, date from visits where id < 0"], r"\[query\]: no rows$"),
    (["--table", "visits", "--query", "select 1"], r"name a --table or a --query \(one of them\)$"),
    ([], r"\[query\]: name a --table or a --query"),
    (["--table", "visits", "--time-col", "day"], r"\[table visits\]: missing column 'day' \(columns: date, id;"),
])
def test_cli_database_errors_are_one_line_exit_2(shop, tmp_path, capsys, source, message):
    line = _cli_fails(["--customers", f"sqlite:///{shop}", "--id-col", "id", "--time-col", "date", *source,
                       "--out", tmp_path / "run", "--quiet"], capsys)  # (a later --time-col wins)
    assert line.startswith(f"error: sqlite:///{shop}"), line
    assert re.search(message, line), line


@pytest.mark.parametrize("customers, extra, message", [
    ("sqlite:///no/such.db", ["--table", "visits"], r"database file no/such\.db not found"),
    ("nosuchdb://me:pw@host/shop", ["--table", "visits"], r"^error: nosuchdb://me:\*\*\*@host/shop \[table visits\]: no SQLAlchemy dialect"),
    ("postgresql://me:pw@host:port/shop", ["--table", "visits"], r"not a database URL"),
    (EXAMPLE_CSV, ["--table", "visits"], r"--table and --query apply to a database URL"),
    (None, ["--query", "select 1"], r"^error: --table and --query need a database URL in --customers$"),
])
def test_cli_bad_urls_are_one_line_exit_2(tmp_path, capsys, customers, extra, message):
    args = (["--customers", customers] if customers else []) + extra + ["--out", tmp_path / "run", "--quiet"]
    line = _cli_fails(args, capsys)
    assert re.search(message, line), line


def _run(*args, cwd):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600)


def _start(*args, cwd):
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_train_on_a_query_and_predict_from_a_table_as_from_csv(shop, tmp_path):
    """End to end in real processes: train on a WHERE subset of the database; predicting from the database
    and from the same rows in a CSV file gives the same table."""
    subset = "select id, date from visits where id < 150"
    run = tmp_path / "run"
    r = _run(SCRIPTS / "train_all.py", "--customers", f"sqlite:///{shop}", "--query", subset, "--id-col", "id",
             "--time-col", "date", "--config", ROOT / "configs" / "tiny.toml", "--epochs", 1, "--set",
             "train.survival_epochs=1", "--out", run, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"sqlite:///{shop} [query]: " in r.stdout + r.stderr  # the source named in the run's log
    trained = pd.read_parquet(run / "predictions.parquet")
    csv_ids = pd.read_csv(EXAMPLE_CSV, dtype=str)["id"]
    assert trained["customer_id"].astype(str).tolist() == sorted(csv_ids[csv_ids.astype(int) < 150].unique(), key=int)
    sub_csv = tmp_path / "subset.csv"
    lines = EXAMPLE_CSV.read_text().splitlines()
    header = lines[0].split(",")
    keep = [line for line in lines[1:] if int(line.split(",")[header.index("id")]) < 150]
    sub_csv.write_text("\n".join([lines[0], *keep]) + "\n")
    # the two predictions are independent: side by side
    procs = [_start(SCRIPTS / "predict.py", "--run", run, "--customers", sub_csv, "--out", tmp_path / "csv.parquet", cwd=tmp_path),
             _start(SCRIPTS / "predict.py", "--run", run, "--customers", f"sqlite:///{shop}", "--query", subset,
                    "--out", tmp_path / "db.parquet", cwd=tmp_path)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    from_db, from_csv = pd.read_parquet(tmp_path / "db.parquet"), pd.read_parquet(tmp_path / "csv.parquet")
    pd.testing.assert_frame_equal(from_db, from_csv)
    pd.testing.assert_frame_equal(from_db, trained)
    np.testing.assert_array_equal(from_db["customer_id"], trained["customer_id"])
