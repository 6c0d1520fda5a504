"""Node config files and adapters over an operator's own SQLite tables (real files, no mocks)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from credex.node.adapters import AdapterError, AdapterLeak, RecordSource, parse_time, same_subject
from credex.node.config import AdapterSpec, load_node_config
from credex.node.config_check import adapter_problems, sample_problems
from credex.protocol.config import ConfigError
from credex.runtime.db import DatabaseError, open_readonly
from credex.v1.common_pb2 import Category as Cat

FIN = Cat.CATEGORY_FINANCIAL
VOL = Cat.CATEGORY_VOLUNTEERING
JUD = Cat.CATEGORY_JUDICIAL

MAR_1_2024 = 1_709_251_200  # 2024-03-01T00:00:00Z
NOV_14_2023 = 1_700_000_000  # 2023-11-14T22:13:20Z

LOANS_SQL = (
    "SELECT 'loan-' || loan_no AS record_id, kind, amount AS value, 'CNY' AS unit,"
    " opened AS occurred_at, branch, note, borrower AS local_id FROM loans"
    " WHERE borrower = :local_id"
)
HOURS_SQL = (
    "SELECT 'svc-' || entry AS record_id, 'volunteer_hours' AS kind, hours AS value,"
    " 'hours' AS unit, day AS occurred_at, vol_no AS local_id FROM service"
    " WHERE vol_no = :local_id"
)


@pytest.fixture
def operator_db(tmp_path: Path) -> Path:
    """An operator's own database, in its own schema."""
    path = tmp_path / "operator.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    conn.executescript(
        """
        CREATE TABLE loans (loan_no INTEGER PRIMARY KEY, borrower TEXT, kind TEXT,
                            amount REAL, opened, branch TEXT, note TEXT);
        CREATE TABLE service (entry INTEGER PRIMARY KEY, vol_no TEXT, hours REAL, day TEXT);
        CREATE INDEX loans_borrower ON loans (borrower);
        CREATE INDEX service_vol_no ON service (vol_no);
        """
    )
    conn.executemany(
        "INSERT INTO loans VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (1, "P-1", "loan_opened", 20000, "2024-03-01", "Nanjing", None),
            (2, "P-1", "loan_repaid", 500.5, NOV_14_2023, "Suzhou", "early"),
            (3, "P-1", "loan_default", None, "2024-03-01T08:00:00+08:00", "Wuxi", None),
            (4, "P-1", "loan_opened", 100, "2025-01-02 03:04:05", "Nanjing", None),
            (5, "P-2", "loan_opened", 999, "2024-05-05", "Nanjing", None),
        ],
    )
    conn.executemany(
        "INSERT INTO service (vol_no, hours, day) VALUES (?, ?, ?)",
        [("P-1", 3.5, "2024-06-01"), ("P-2", 1, "2024-06-02")],
    )
    conn.commit()
    conn.close()
    return path


def source(path: Path, *specs: AdapterSpec) -> RecordSource:
    return RecordSource(open_readonly(path), specs)


# --- config files ----------------------------------------------------------------------------

GOOD_NODE = """\
[node]
id = "pboc-test"
name = "Credit reference (test)"
jurisdiction = "CN-JS"
records_db = "operator.db"
state_db = "state/credex-node.db"
signing_key = "keys/node.key"
directory_key = "/etc/credex/directory.pub"
"""
GOOD_ADAPTER = f'''
[[adapter]]
category = "financial"
sql = """{LOANS_SQL}"""
'''


def write(tmp_path: Path, text: str, name: str = "node.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_config_loads_and_resolves_paths_beside_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_NODE + GOOD_ADAPTER + GOOD_ADAPTER.replace("financial", "JUDICIAL"))
    config = load_node_config(path)
    assert config.node_id == "pboc-test"
    assert config.name == "Credit reference (test)"
    assert config.jurisdiction == "CN-JS"
    base = tmp_path.resolve()
    assert config.records_db == base / "operator.db"
    assert config.state_db == base / "state" / "credex-node.db"
    assert config.signing_key == base / "keys" / "node.key"
    assert config.directory_key == Path("/etc/credex/directory.pub")
    assert [a.category for a in config.adapters] == [FIN, JUD]
    assert config.categories == (FIN, JUD)
    assert ":local_id" in config.adapters[0].sql


def test_config_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, '[node]\nid = "n1"\nrecords_db = "r.db"\n' + GOOD_ADAPTER)
    config = load_node_config(path)
    assert config.name == "n1"
    assert config.jurisdiction == "CN"
    assert config.state_db.name == "credex-node.db"
    assert config.signing_key.name == "node.key"
    assert config.directory_key.name == "directory.pub"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD_ADAPTER, "missing [node] table"),
        ('node = "pboc"\n' + GOOD_ADAPTER, "missing [node] table"),
        (GOOD_NODE, "at least one [[adapter]]"),
        ("adapter = []\n" + GOOD_NODE, "at least one [[adapter]]"),
        ('adapter = ["SELECT 1"]\n' + GOOD_NODE, "[[adapter]] #1: must be a table"),
        (
            GOOD_NODE + GOOD_ADAPTER + GOOD_ADAPTER.replace("financial", "astrology"),
            "[[adapter]] #2: unknown category 'astrology'",
        ),
        (GOOD_NODE + '[[adapter]]\nsql = "SELECT 1 WHERE :local_id"\n', "'category'"),
        (GOOD_NODE + '[[adapter]]\ncategory = "financial"\n', "'sql'"),
        (
            GOOD_NODE + '[[adapter]]\ncategory = "financial"\nsql = "SELECT * FROM loans"\n',
            ":local_id",
        ),
        (GOOD_NODE.replace('id = "pboc-test"', 'id = "PBOC Test"') + GOOD_ADAPTER, "id 'PBOC"),
        (GOOD_NODE.replace('records_db = "operator.db"\n', "") + GOOD_ADAPTER, "'records_db'"),
        (GOOD_NODE.replace('id = "pboc-test"\n', "") + GOOD_ADAPTER, "'id'"),
        ("[node\nid = 1\n", "invalid TOML"),
    ],
    ids=[
        "no-node",
        "node-not-a-table",
        "no-adapters",
        "empty-adapters",
        "adapter-not-a-table",
        "unknown-category",
        "no-category",
        "no-sql",
        "sql-without-local-id",
        "bad-node-id",
        "no-records-db",
        "no-id",
        "bad-toml",
    ],
)
def test_config_errors_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_node_config(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as err:
        load_node_config(path)
    assert str(err.value) == f"{path}: no such config file"


def test_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_node_config(tmp_path)  # a folder, not a file
    assert str(tmp_path) in str(err.value)


# --- adapter checks (the full check-config is in test_config_check) -------------------------


def problems(operator_db: Path, *specs: AdapterSpec) -> list[str]:
    db = open_readonly(operator_db)
    try:
        return [p.message for p in adapter_problems(db.conn, specs)]
    finally:
        db.conn.close()


def test_working_adapters_have_no_problem(operator_db: Path) -> None:
    assert problems(operator_db, AdapterSpec(FIN, LOANS_SQL), AdapterSpec(VOL, HOURS_SQL)) == []


def test_sql_over_a_missing_table_is_a_problem(operator_db: Path) -> None:
    spec = AdapterSpec(JUD, HOURS_SQL.replace("FROM service", "FROM judgments"))
    assert problems(operator_db, AdapterSpec(FIN, LOANS_SQL), spec) == [
        "adapter for judicial: query fails: no such table: judgments"
    ]


def test_sql_with_a_syntax_error_is_a_problem(operator_db: Path) -> None:
    found = problems(operator_db, AdapterSpec(FIN, "SELECT record_id FROM loans WHER :local_id"))
    assert len(found) == 1 and found[0].startswith("adapter for financial: query fails: ")


@pytest.mark.parametrize("column", ["record_id", "kind", "value", "unit", "occurred_at"])
def test_a_query_lacking_a_required_column_is_a_problem(operator_db: Path, column: str) -> None:
    columns = {
        "local_id": "vol_no AS local_id",
        "record_id": "'svc-' || entry AS record_id",
        "kind": "'volunteer_hours' AS kind",
        "value": "hours AS value",
        "unit": "'hours' AS unit",
        "occurred_at": "day AS occurred_at",
    }
    del columns[column]
    sql = f"SELECT {', '.join(columns.values())} FROM service WHERE vol_no = :local_id"
    assert problems(operator_db, AdapterSpec(VOL, sql)) == [
        f"adapter for volunteering: query lacks column(s) {column}"
    ]


# --- fetch -----------------------------------------------------------------------------------


def test_fetch_maps_rows_to_records(operator_db: Path) -> None:
    records = source(operator_db, AdapterSpec(FIN, LOANS_SQL)).fetch("P-1", [FIN])
    by_id = {r.record_id: r for r in records}
    assert sorted(by_id) == ["loan-1", "loan-2", "loan-3", "loan-4"]
    assert all(r.category == FIN and r.unit == "CNY" for r in records)

    first = by_id["loan-1"]
    assert (first.kind, first.value) == ("loan_opened", 20000.0)
    assert first.occurred_at.seconds == MAR_1_2024  # ISO date: midnight UTC
    assert dict(first.attributes) == {"branch": "Nanjing"}  # NULL note left out

    epoch = by_id["loan-2"]
    assert epoch.occurred_at.seconds == NOV_14_2023  # epoch seconds
    assert epoch.value == 500.5
    assert dict(epoch.attributes) == {"branch": "Suzhou", "note": "early"}

    zoned = by_id["loan-3"]
    assert zoned.occurred_at.seconds == MAR_1_2024  # 08:00 at +08:00 is midnight UTC
    assert zoned.value == 0.0  # NULL amount

    naive = by_id["loan-4"]
    assert naive.occurred_at.seconds == 1_735_787_045  # naive datetime read as UTC


def test_extra_columns_become_string_attributes(operator_db: Path) -> None:
    sql = (
        "SELECT 'svc-' || entry AS record_id, 'volunteer_hours' AS kind, hours AS value,"
        " 'hours' AS unit, day AS occurred_at, entry AS entry_no, hours * 2 AS doubled,"
        " NULL AS empty, vol_no AS local_id FROM service WHERE vol_no = :local_id"
    )
    (record,) = source(operator_db, AdapterSpec(VOL, sql)).fetch("P-1", [VOL])
    assert dict(record.attributes) == {"entry_no": "1", "doubled": "7.0"}


def test_fetch_reads_only_the_asked_categories_and_subject(operator_db: Path) -> None:
    src = source(operator_db, AdapterSpec(FIN, LOANS_SQL), AdapterSpec(VOL, HOURS_SQL))
    assert {r.record_id for r in src.fetch("P-1", [VOL])} == {"svc-1"}
    assert {r.record_id for r in src.fetch("P-2", [FIN])} == {"loan-5"}
    assert {r.record_id for r in src.fetch("P-2", [FIN, VOL])} == {"loan-5", "svc-2"}
    assert src.fetch("P-1", [JUD]) == []
    assert src.fetch("nobody", [FIN, VOL]) == []


def test_local_id_is_a_bound_parameter(operator_db: Path) -> None:
    src = source(operator_db, AdapterSpec(FIN, LOANS_SQL))
    assert src.fetch("P-1' OR '1'='1", [FIN]) == []


def test_two_adapters_for_one_category_are_combined(operator_db: Path) -> None:
    extra = (
        "SELECT 'svc-as-fin-' || entry AS record_id, 'k' AS kind, 1 AS value, '' AS unit,"
        " day AS occurred_at, vol_no AS local_id FROM service WHERE vol_no = :local_id"
    )
    src = source(operator_db, AdapterSpec(FIN, LOANS_SQL), AdapterSpec(FIN, extra))
    ids = {r.record_id for r in src.fetch("P-2", [FIN])}
    assert ids == {"loan-5", "svc-as-fin-2"}


def test_fetch_filters_by_data_range(operator_db: Path) -> None:
    src = source(operator_db, AdapterSpec(FIN, LOANS_SQL))

    def ids(**kwargs: float) -> set[str]:
        return {r.record_id for r in src.fetch("P-1", [FIN], **kwargs)}

    assert ids() == {"loan-1", "loan-2", "loan-3", "loan-4"}
    # [from, to): a record exactly at data_from is in, one exactly at data_to is out.
    assert ids(data_from=MAR_1_2024) == {"loan-1", "loan-3", "loan-4"}
    assert ids(data_to=MAR_1_2024) == {"loan-2"}
    assert ids(data_from=MAR_1_2024, data_to=MAR_1_2024 + 1) == {"loan-1", "loan-3"}
    assert ids(data_from=MAR_1_2024 + 1) == {"loan-4"}
    assert ids(data_from=2_000_000_000) == set()


@pytest.fixture
def subsecond_source(tmp_path: Path) -> RecordSource:
    """One record that occurred at 1000.7 s after the epoch."""
    path = tmp_path / "ops.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE ev (who TEXT, at REAL)")
    conn.execute("INSERT INTO ev VALUES ('P-1', 1000.7)")
    conn.commit()
    conn.close()
    sql = (
        "SELECT 'ev' AS record_id, 'k' AS kind, 1 AS value, '' AS unit, at AS occurred_at,"
        " who AS local_id FROM ev WHERE who = :local_id"
    )
    src = source(path, AdapterSpec(FIN, sql))
    (record,) = src.fetch("P-1", [FIN])
    assert record.occurred_at.ToNanoseconds() == 1_000_700_000_000
    return src


def test_record_after_data_to_by_a_fraction_of_a_second_is_not_disclosed(
    subsecond_source: RecordSource,
) -> None:
    """[data_from, data_to): a record at 1000.7 is outside a range ending at 1000.5."""
    assert subsecond_source.fetch("P-1", [FIN], data_to=1000.5) == []


def test_record_after_data_from_by_a_fraction_of_a_second_is_disclosed(
    subsecond_source: RecordSource,
) -> None:
    """[data_from, data_to): a record at 1000.7 is inside a range starting at 1000.5."""
    assert len(subsecond_source.fetch("P-1", [FIN], data_from=1000.5)) == 1


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2024-03-01", MAR_1_2024),
        ("2024-03-01T00:00:00Z", MAR_1_2024),
        ("2024-03-01T08:00:00+08:00", MAR_1_2024),
        ("2024-03-01 00:00:30", MAR_1_2024 + 30),
        (" 2024-03-01 ", MAR_1_2024),
        (NOV_14_2023, NOV_14_2023),
        (1_700_000_000.25, 1_700_000_000.25),
        (0, 0.0),
    ],
)
def test_parse_time(value: object, seconds: float) -> None:
    assert parse_time(value) == seconds


@pytest.mark.parametrize("value", ["yesterday", "", "2024-13-01", None, b"2024-03-01"])
def test_parse_time_refuses_what_is_not_a_time(value: object) -> None:
    with pytest.raises(AdapterError, match="occurred_at"):
        parse_time(value)


def test_row_with_a_bad_time_or_value_is_an_adapter_error(operator_db: Path) -> None:
    bad_time = LOANS_SQL.replace("opened AS occurred_at", "'soon' AS occurred_at")
    with pytest.raises(AdapterError, match="occurred_at 'soon'"):
        source(operator_db, AdapterSpec(FIN, bad_time)).fetch("P-1", [FIN])
    bad_value = LOANS_SQL.replace("amount AS value", "'lots' AS value")
    with pytest.raises(AdapterError, match="value is not a number"):
        source(operator_db, AdapterSpec(FIN, bad_value)).fetch("P-1", [FIN])


# --- read-only access ------------------------------------------------------------------------


def loan_count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM loans").fetchone()[0])
    finally:
        conn.close()


def test_adapter_cannot_write_to_the_operator_database(operator_db: Path) -> None:
    deleting = (
        "DELETE FROM loans WHERE borrower = :local_id RETURNING 'loan-' || loan_no AS record_id,"
        " kind, amount AS value, 'CNY' AS unit, opened AS occurred_at"
    )
    assert problems(operator_db, AdapterSpec(FIN, deleting)) == [
        "adapter for financial: only a SELECT may be mapped, not DELETE"
    ]
    # The node runs an adapter only as a subquery of its own SELECT, where a DELETE is a
    # syntax error (and the connection is read-only besides: the tests below).
    with pytest.raises(sqlite3.OperationalError, match="syntax error"):
        source(operator_db, AdapterSpec(FIN, deleting)).fetch("P-1", [FIN])
    assert loan_count(operator_db) == 5


def test_readonly_connection_refuses_direct_writes(operator_db: Path) -> None:
    db = open_readonly(operator_db)
    for statement in (
        "DELETE FROM loans",
        "UPDATE loans SET amount = 0",
        "INSERT INTO loans (borrower) VALUES ('x')",
        "CREATE TABLE credex_was_here (x)",
        "DROP TABLE loans",
    ):
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            db.conn.execute(statement)
    db.conn.close()
    assert loan_count(operator_db) == 5


def test_readonly_is_enforced_twice(operator_db: Path) -> None:
    """The connection is query-only, and the file itself is opened read-only: turning
    query_only off does not make it writable."""
    db = open_readonly(operator_db)
    assert db.conn.execute("PRAGMA query_only").fetchone()[0] == 1
    db.conn.execute("PRAGMA query_only=OFF")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        db.conn.execute("DELETE FROM loans")
    db.conn.close()
    assert loan_count(operator_db) == 5


def test_open_readonly_of_a_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with pytest.raises(DatabaseError, match="does not exist"):
        open_readonly(missing)
    assert not missing.exists()  # and it was not created


def test_open_readonly_of_a_folder_or_a_non_database(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError):
        open_readonly(tmp_path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database file" * 100)
    with pytest.raises(DatabaseError, match="read-only"):
        open_readonly(junk)


def test_open_readonly_handles_odd_file_names(tmp_path: Path, operator_db: Path) -> None:
    odd = tmp_path / "ops #1 ?mode=rw%20.db"
    odd.write_bytes(operator_db.read_bytes())
    db = open_readonly(odd)
    assert db.conn.execute("SELECT count(*) FROM loans").fetchone()[0] == 5
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        db.conn.execute("DELETE FROM loans")
    db.conn.close()


# --- rows of other subjects --------------------------------------------------------------------


def test_rows_of_other_subjects_are_withheld_and_stop_the_source(operator_db: Path) -> None:
    """An adapter that also returns P-2's loan: nothing is returned, the rows are counted
    per adapter, and the source refuses every later fetch, for any subject."""
    broad = LOANS_SQL.replace("WHERE borrower = :local_id", "WHERE borrower >= :local_id")
    src = source(operator_db, AdapterSpec(VOL, HOURS_SQL), AdapterSpec(FIN, broad))
    assert len(src.fetch("P-2", [FIN])) == 1  # the last borrower: only their own rows
    assert src.leak is None
    with pytest.raises(AdapterLeak) as err:
        src.fetch("P-1", [FIN, VOL])
    assert [(f.adapter, f.category, f.rows) for f in err.value.found] == [(2, FIN, 1)]
    assert "P-2" not in str(err.value) and "999" not in str(err.value)
    assert src.leak is not None
    with pytest.raises(AdapterError, match="other subjects"):
        src.fetch("P-2", [VOL])


@pytest.mark.parametrize(
    ("column", "local_id", "own"),
    [
        ("borrower", "P-1", True),
        ("'P-1 '", "P-1", False),
        ("NULL", "P-1", False),
        ("loan_no", "1", True),  # an INTEGER column and its decimal text
        ("loan_no * 1.0", "1", False),
        ("CAST(borrower AS BLOB)", "P-1", False),
    ],
)
def test_whose_row_it_is_is_compared_exactly(column: str, local_id: str, own: bool) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE loans (loan_no INTEGER PRIMARY KEY, borrower TEXT)")
    conn.execute("INSERT INTO loans VALUES (1, 'P-1')")
    (value,) = conn.execute(f"SELECT {column} FROM loans").fetchone()
    assert same_subject(value, local_id) is own


def test_a_record_id_returned_twice_in_a_category_is_an_adapter_error(operator_db: Path) -> None:
    twice = LOANS_SQL.replace("'loan-' || loan_no", "'loan'")
    with pytest.raises(AdapterError, match="'loan' is returned twice in financial"):
        source(operator_db, AdapterSpec(FIN, twice)).fetch("P-1", [FIN])
    # The same id in two categories is two records: disputes name (category, record id).
    same = HOURS_SQL.replace("'svc-' || entry", "'loan-' || entry")
    records = source(operator_db, AdapterSpec(FIN, LOANS_SQL), AdapterSpec(VOL, same))
    ids = [(r.category, r.record_id) for r in records.fetch("P-1", [FIN, VOL])]
    assert (FIN, "loan-1") in ids and (VOL, "loan-1") in ids


@pytest.fixture
def quirky_db(tmp_path: Path) -> Path:
    """Marks kept under a code compared without case and a member number kept as an INTEGER:
    'r-7' is R-7 to SQLite, and so is member 7 asked for as '007'."""
    path = tmp_path / "quirky.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE marks (mark_id INTEGER PRIMARY KEY, code TEXT COLLATE NOCASE,
                            member_no INTEGER, points REAL, day TEXT);
        CREATE INDEX marks_code ON marks (code);
        CREATE INDEX marks_member ON marks (member_no);
        INSERT INTO marks VALUES (1, 'R-7', 7, 5, '2024-01-02');
        INSERT INTO marks VALUES (2, 'r-7', 7, 3, '2024-02-03');
        INSERT INTO marks VALUES (3, 'R-8', 8, 1, '2024-03-04');
        """
    )
    conn.commit()
    conn.close()
    return path


MARKS = (
    "SELECT 'mark-' || mark_id AS record_id, 'civic_merit' AS kind, points AS value,"
    " 'points' AS unit, day AS occurred_at, {id} AS local_id FROM marks WHERE {by} = :local_id"
)
CIV = Cat.CATEGORY_CIVIC


@pytest.mark.parametrize(
    ("column", "asked"),
    [("code", "R-7"), ("code", "r-7"), ("member_no", "007"), ("member_no", "7")],
)
def test_whose_row_it_is_follows_the_columns_own_equality(
    quirky_db: Path, column: str, asked: str
) -> None:
    """A row the adapter found by the subject's column, whose local id SQLite calls equal to
    the asked id (a NOCASE column, an INTEGER column and an id with leading zeros), is the
    subject's: it is served, the source keeps answering, and check-config's sample agrees."""
    spec = AdapterSpec(CIV, MARKS.format(id=column, by=column))
    src = source(quirky_db, spec)
    assert sorted(r.record_id for r in src.fetch(asked, [CIV])) == ["mark-1", "mark-2"]
    assert src.leak is None
    assert src.fetch("R-8" if column == "code" else "8", [CIV])[0].record_id == "mark-3"
    db = open_readonly(quirky_db)
    try:
        assert sample_problems(db.conn, [spec], asked) == []
    finally:
        db.conn.close()


def test_a_row_of_another_subject_is_still_withheld_whatever_the_column(quirky_db: Path) -> None:
    """Found by member number, each row says its code: '7' is no code of SQLite's either, so
    the rows are withheld and the source stops (the column's own equality decides, not a
    looser one)."""
    spec = AdapterSpec(CIV, MARKS.format(id="code", by="member_no"))
    with pytest.raises(AdapterLeak):
        source(quirky_db, spec).fetch("7", [CIV])
    db = open_readonly(quirky_db)
    try:
        (problem,) = sample_problems(db.conn, [spec], "7")
    finally:
        db.conn.close()
    assert "returns 2 row(s) of another subject" in problem.message
