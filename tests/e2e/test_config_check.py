"""`credex-node check-config` and `init` without a config: problems name their config line, the
operator's database is only read, and the example config is a working one."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from credex.lab import synth
from credex.node.config import load_node_config
from credex.node.config_check import check_config, open_source, parameters, subject_problem
from credex.node.example_config import write_example
from credex.protocol.config import ConfigError
from tests.commands import cli

GOOD = """SELECT 'loan-' || loan_id AS record_id, 'loan' AS kind, amount AS value,
       'CNY' AS unit, opened_on AS occurred_at, customer_id AS local_id
FROM loans WHERE customer_id = :local_id"""


@pytest.fixture
def records(tmp_path: Path) -> Path:
    """The table the example config maps, indexed on the subject column, and an unindexed one."""
    path = tmp_path / "records.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE loans (loan_id INTEGER PRIMARY KEY, customer_id TEXT, amount REAL,
                            opened_on TEXT, status TEXT);
        CREATE INDEX loans_customer ON loans (customer_id);
        CREATE TABLE fines (fine_id INTEGER PRIMARY KEY, person TEXT, amount REAL, day TEXT);
        INSERT INTO loans VALUES (1, 'C-1', 5000, '2024-01-02', 'open');
        INSERT INTO fines VALUES (1, 'C-1', 200, '2024-02-03');
        """
    )
    conn.commit()
    conn.close()
    return path


def write_config(tmp_path: Path, *adapters: tuple[str, str], node: str = "") -> Path:
    lines = ["[node]", 'id = "agency"', 'records_db = "records.db"', node, ""]
    for category, sql in adapters:
        lines += ["[[adapter]]", f'category = "{category}"', f'sql = """\n{sql}\n"""', ""]
    path = tmp_path / "node.toml"
    path.write_text("\n".join(lines))
    return path


def line_of(path: Path, text: str, occurrence: int = 1) -> int:
    found = [n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    return found[occurrence - 1]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_parameters_outside_quotes_and_comments() -> None:
    sql = "SELECT ':x', \"@y\", [$z] -- :c\n FROM t /* ?9 */ WHERE a = :local_id AND b = ?2"
    assert parameters(sql) == [":local_id", "?2"]
    assert parameters("SELECT 'it''s :no' FROM t WHERE a = @who") == ["@who"]
    assert parameters("SELECT amount$usd FROM t WHERE a = :local_id") == [":local_id"]


@pytest.mark.parametrize(
    ("sql", "indexed", "detail"),
    [
        (GOOD.replace("WHERE customer_id", "WHERE status = 'open' AND customer_id"), False,
         "uses no index (finds rows of loans by other columns than customer_id)"),
        (GOOD.replace("FROM loans WHERE", "FROM loans JOIN notes ON cust = customer_id WHERE"),
         True, "uses no index (reads every row of notes)"),
        (GOOD.replace("customer_id = :local_id",
                      "customer_id = :local_id AND loan_id IN (SELECT loan_id FROM loans)"),
         False, "other subjects: loans is not found through the subject"),
        (GOOD.replace("amount AS value", "(SELECT sum(amount) FROM loans) AS value"), True,
         "other subjects: loans is not found through the subject"),
        (GOOD.replace("FROM loans WHERE customer_id",
                      "FROM loans INDEXED BY loans_status WHERE status = 'open' AND customer_id"),
         True,
         "uses no index (finds rows of loans by other columns than customer_id)"),
    ],
)  # fmt: skip
def test_a_lookup_not_through_the_subjects_index_is_fatal(
    tmp_path: Path, records: Path, sql: str, indexed: bool, detail: str
) -> None:
    """A full read is slow and a subquery over other rows may carry other people's data:
    neither serves; nor does a search by another column of a table tied to the subject."""
    conn = sqlite3.connect(records)
    if not indexed:
        conn.execute("DROP INDEX loans_customer")
    conn.execute("CREATE INDEX loans_status ON loans (status)")
    conn.execute("CREATE TABLE notes (note_id INTEGER PRIMARY KEY, cust TEXT)")
    conn.commit()
    conn.close()
    (problem,) = check_config(write_config(tmp_path, ("financial", sql)))
    assert detail in problem.message and problem.fatal


def test_a_good_config_has_no_problem(tmp_path: Path, records: Path) -> None:
    path = write_config(tmp_path, ("financial", GOOD))
    assert check_config(path) == []
    result = cli("credex-node", "check-config", str(path))
    assert "agency: 1 adapters OK" in result.stdout


def test_each_problem_names_the_line_of_its_adapter(tmp_path: Path, records: Path) -> None:
    unindexed = (
        "SELECT fine_id AS record_id, 'fine' AS kind, amount AS value, 'CNY' AS unit,"
        " day AS occurred_at, person AS local_id FROM fines WHERE person = :local_id"
    )
    extra = GOOD + " AND status = :status"
    positional = GOOD.replace(":local_id", "? OR customer_id = :local_id")
    quoted = GOOD.replace("= :local_id", "= ':local_id'")
    path = write_config(
        tmp_path,
        ("financial", GOOD),
        ("judicial", unindexed),
        ("financial", extra),
        ("financial", positional),
        ("financial", quoted),
        ("judicial", "DELETE FROM fines WHERE person = :local_id"),
    )
    problems = check_config(path)
    sql_lines = [line_of(path, 'sql = """', i) for i in range(1, 7)]
    assert [(p.line, p.fatal) for p in problems] == [
        (sql_lines[1], True),
        (sql_lines[2], True),
        (sql_lines[3], True),
        (sql_lines[4], True),
        (sql_lines[5], True),
    ]
    messages = [p.message for p in problems]
    assert "uses no index (reads every row of fines)" in messages[0]
    assert messages[1].endswith("only as the bound parameter :local_id; remove :status")
    assert messages[2].endswith("remove ?")
    assert ":local_id must be a bound parameter" in messages[3]
    assert messages[4] == "adapter for judicial: only a SELECT may be mapped, not DELETE"

    result = cli("credex-node", "check-config", str(path), ok=False)
    assert result.returncode == 1
    printed = result.stdout.splitlines()
    assert printed == [p.render(path) for p in problems]
    assert printed[0].startswith(f"{path}:{sql_lines[1]}: adapter for judicial: ")
    data = json.loads(cli("credex-node", "check-config", str(path), "--json", ok=False).stdout)
    assert data["ok"] is False and len(data["problems"]) == 5


def test_check_config_only_reads_the_operator_database(tmp_path: Path, records: Path) -> None:
    path = write_config(tmp_path, ("financial", GOOD), ("judicial", "DELETE FROM fines"))
    before, files = digest(records), sorted(p.name for p in tmp_path.iterdir())
    check_config(path)
    cli("credex-node", "check-config", str(path), ok=False)
    assert digest(records) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files  # no journal, no state file
    with sqlite3.connect(records) as conn:
        assert conn.execute("SELECT count(*) FROM fines").fetchone()[0] == 1


def test_unknown_settings_are_problems_with_a_hint(tmp_path: Path, records: Path) -> None:
    path = write_config(tmp_path, ("financial", GOOD), node="sync_interval = 5")
    text = path.read_text() + '\n[server]\nmetric_listen = "127.0.0.1:9464"\n\n[servr]\nx = 1\n'
    path.write_text(text.replace('category = "financial"', 'category = "financial"\nlimit = 5'))
    problems = check_config(path)
    assert sorted((p.line or 0, p.message) for p in problems) == [
        (line_of(path, "sync_interval"),
         "unknown setting 'sync_interval' in [node] (did you mean 'sync_interval_s'?)"),
        (line_of(path, "limit = 5"), "unknown setting 'limit' in [[adapter]]"),
        (line_of(path, "metric_listen"),
         "unknown setting 'metric_listen' in [server] (did you mean 'metrics_listen'?)"),
        (line_of(path, "[servr]"), "unknown table [servr]"),
    ]  # fmt: skip


def test_a_missing_database_names_the_records_db_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, ("financial", GOOD))
    (problem,) = check_config(path)
    assert problem.line == line_of(path, "records_db")
    assert "does not exist" in problem.message


def test_state_db_may_not_be_the_operator_database(tmp_path: Path, records: Path) -> None:
    path = write_config(tmp_path, ("financial", GOOD), node='state_db = "records.db"')
    (problem,) = check_config(path)
    assert problem.line == line_of(path, "state_db")
    assert "must not be the operator's database" in problem.message


def test_config_errors_name_their_line(tmp_path: Path, records: Path) -> None:
    path = write_config(tmp_path, ("financial", GOOD), ("gossip", GOOD))
    (problem,) = check_config(path)
    assert problem.line == line_of(path, "[[adapter]]", 2)
    assert "gossip" in problem.message
    path.write_text(path.read_text().replace('id = "agency"', 'id = "agency'))
    (problem,) = check_config(path)
    assert problem.line == 2 and problem.message.startswith("invalid TOML")


def test_a_node_refuses_to_start_on_a_fatal_problem(tmp_path: Path, records: Path) -> None:
    source, problems = open_source(load_node_config(write_config(tmp_path, ("financial", GOOD))))
    assert problems == [] and source.categories
    slow = GOOD.replace("FROM loans WHERE customer_id", "FROM loans WHERE status")
    for sql in (slow, GOOD + " AND 1 = ?"):
        path = write_config(tmp_path, ("financial", sql))
        with pytest.raises(ConfigError) as err:
            open_source(load_node_config(path))
        assert str(err.value).startswith(f"{path}:{line_of(path, 'sql = ')}: adapter for financial")


def test_an_adapter_without_the_subjects_id_column_is_one_clear_error(
    tmp_path: Path, records: Path
) -> None:
    """A config written before rows had to say whose they are: one line, naming the file and
    the line of the adapter, saying what to add."""
    path = write_config(tmp_path, ("financial", GOOD.replace(", customer_id AS local_id", "")))
    with pytest.raises(ConfigError) as err:
        open_source(load_node_config(path))
    (line,) = str(err.value).splitlines()
    assert line.startswith(f"{path}:{line_of(path, 'sql = ')}: adapter for financial: ")
    assert "AS local_id" in line
    result = cli("credex-node", "check-config", str(path), ok=False)
    assert result.stdout.splitlines() == [line]


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        ("WHERE l.customer_id = :local_id", None),
        ("WHERE :local_id = l.customer_id AND l.status = 'open'", None),
        ("WHERE l.customer_id IN (:local_id)", None),
        ("WHERE l.customer_id == :local_id AND (l.status = 'a' OR l.status = 'b')", None),
        ("WHERE l.customer_id = :local_id AND CASE WHEN l.amount > 1 OR l.amount < 0 THEN 1 END",
         None),
        ("WHERE l.customer_id = :local_id AND l.opened_on BETWEEN '2020' AND '2030'", None),
        ("WHERE l.loan_id IN (SELECT loan_id FROM loans WHERE customer_id = :local_id)", None),
        ("WHERE l.customer_id = :local_id OR l.amount > 100", "with OR"),
        ("WHERE l.amount > 100 OR l.customer_id = :local_id", "with OR"),
        ("WHERE l.customer_id = :local_id OR 1=1", "with OR"),
        ("WHERE (l.customer_id = :local_id OR 1)", "must be compared"),
        ("WHERE NOT l.customer_id = :local_id", "must be compared"),
        ("WHERE l.customer_id IN ('C-9', :local_id)", "must be compared"),
        ("WHERE l.customer_id > :local_id", "must be compared"),
        ("WHERE l.amount > 0 OR l.loan_id IN (SELECT loan_id FROM loans WHERE customer_id ="
         " :local_id)", "with OR"),
        ("JOIN loans AS o ON o.customer_id = :local_id", "outside a WHERE"),
        ("WHERE l.customer_id = :local_id UNION SELECT * FROM loans", "compound SELECT (UNION)"),
    ],
)  # fmt: skip
def test_the_subject_must_be_a_condition_every_row_meets(where: str, problem: str | None) -> None:
    found = subject_problem(f"SELECT * FROM loans AS l {where}")
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_a_result_column_taken_from_the_parameter_is_refused() -> None:
    found = subject_problem("SELECT :local_id AS local_id FROM loans WHERE customer_id = :local_id")
    assert found is not None and "outside a WHERE" in found


def test_sample_id_checks_every_row(tmp_path: Path, records: Path) -> None:
    """--sample-id runs each adapter for a real id: another subject's row, a date out of range,
    a value that is no number, a blob and a repeated record id are each a problem on the
    adapter's line; a subject without rows checks nothing and says so."""
    conn = sqlite3.connect(records)
    conn.executescript(
        """
        INSERT INTO loans VALUES (2, 'C-2', 100, '1850-01-01', 'open');
        INSERT INTO loans VALUES (3, 'C-2', 'lots', '2024-01-01', 'open');
        INSERT INTO loans VALUES (4, 'C-2', 5, '2024-01-01', X'00ff');
        CREATE TABLE branches (name TEXT PRIMARY KEY, region TEXT);
        CREATE INDEX branches_region ON branches (region);
        """
    )
    conn.commit()
    conn.close()
    with_status = GOOD.replace("local_id\n", "local_id, status\n")
    same_ids = GOOD.replace("'loan-' || loan_id", "'loan-' || (loan_id / 10)")
    path = write_config(tmp_path, ("financial", with_status), ("judicial", same_ids))
    assert check_config(path) == []
    problems = check_config(path, "C-2")
    assert {p.line for p in problems} == {line_of(path, 'sql = """', 1), line_of(path, "sql", 2)}
    text = "\n".join(p.message for p in problems)
    for expected in (
        "'1850-01-01' is not between 1900 and 2200",
        "value 'lots' is not a number",
        "column status is a blob",
        "record id 'loan-0' is returned twice",
    ):
        assert expected in text, text
    assert all(p.fatal for p in problems)
    assert check_config(path, "C-1") == []
    (none,) = check_config(path, "nobody")
    assert "no adapter returned a row" in none.message and not none.fatal
    result = cli("credex-node", "check-config", str(path), "--sample-id", "C-2", ok=False)
    assert result.returncode == 1 and len(result.stdout.splitlines()) == len(problems)


def test_sample_id_finds_rows_of_other_subjects(tmp_path: Path, records: Path) -> None:
    """Loans found by their co-signer while each row says its borrower: every table is found
    through the subject, so the SQL passes; the sample shows the rows are someone else's."""
    conn = sqlite3.connect(records)
    conn.executescript(
        """
        ALTER TABLE loans ADD COLUMN co_signer TEXT;
        INSERT INTO loans VALUES (5, 'C-3', 70, '2024-01-02', 'open', 'C-1');
        CREATE INDEX loans_co_signer ON loans (co_signer);
        """
    )
    conn.commit()
    conn.close()
    sql = GOOD.replace("WHERE customer_id", "WHERE co_signer")
    path = write_config(tmp_path, ("financial", sql))
    assert check_config(path) == []
    (problem,) = check_config(path, "C-1")
    assert "returns 1 row(s) of another subject" in problem.message and problem.fatal


def test_init_writes_an_example_config_that_works(tmp_path: Path, records: Path) -> None:
    path = tmp_path / "node.toml"
    result = cli("credex-node", "init", str(path), "--id", "agency")
    assert "wrote an example config" in result.stdout
    config = load_node_config(path)
    assert config.node_id == "agency" and config.records_db == records
    assert check_config(path) == []  # the example maps the fixture's loans table
    assert not config.signing_key.exists()  # keys only once the operator has edited it
    again = cli("credex-node", "init", str(path))  # now it sets the node up
    assert "node agency ready" in again.stdout and config.signing_key.exists()


def test_init_without_a_config_refuses_to_enroll(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    result = cli(
        "credex-node", "init", str(path), "--enroll", "localhost:1", "--token", "t",
        "--ca-cert", str(tmp_path / "ca.crt"), ok=False,
    )  # fmt: skip
    assert result.returncode != 0 and "does not exist" in result.stderr
    assert not path.exists()
    bad = cli("credex-node", "init", str(path), "--id", "../x", ok=False)
    assert bad.returncode != 0 and "--id" in bad.stderr and not path.exists()


def test_example_refuses_to_replace_a_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("mine")
    with pytest.raises(FileExistsError):
        write_example(path, node_id="agency", records_db="records.db")
    assert path.read_text() == "mine"


def test_every_synthetic_node_passes(tmp_path: Path) -> None:
    manifest = synth.generate(tmp_path / "data", subjects=200, nodes=12)
    for node in manifest.nodes:
        assert check_config(node.config) == [], node.id


TIES = """
CREATE TABLE people (code TEXT PRIMARY KEY, district TEXT, guardian TEXT);
CREATE INDEX people_district ON people (district);
CREATE TABLE loans (loan_id INTEGER PRIMARY KEY, code TEXT, amount REAL, day TEXT, ref TEXT);
CREATE INDEX loans_code ON loans (code);
CREATE UNIQUE INDEX loans_ref ON loans (ref) WHERE ref IS NOT NULL;
CREATE TABLE payments (payment_id INTEGER PRIMARY KEY, loan_id INTEGER, loan_ref TEXT,
                       code_nc TEXT COLLATE NOCASE, amount REAL, day TEXT);
CREATE INDEX payments_loan ON payments (loan_id);
CREATE INDEX payments_ref ON payments (loan_ref);
CREATE INDEX payments_code ON payments (code_nc);
CREATE VIEW my_loans AS SELECT * FROM loans;
"""


def cols(alias: str, local: str, key: str = "rowid") -> str:
    return (
        f"SELECT 'r-' || {alias}.{key} AS record_id, 'loan' AS kind, {alias}.amount AS value,"
        f" 'CNY' AS unit, {alias}.day AS occurred_at, {local} AS local_id"
    )


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        # tied: the key of the subject's loan, an equal subject column (ON, USING, LEFT JOIN),
        # a CTE and a correlated subquery found through the subject, a final semicolon
        (cols("p", "l.code") + " FROM payments AS p JOIN loans AS l ON l.loan_id = p.loan_id"
         " WHERE l.code = :local_id", None),
        (cols("l", "l.code") + ", g.district FROM loans AS l LEFT JOIN people AS g"
         " ON g.code = l.code WHERE l.code = :local_id", None),
        (cols("l", "l.code") + " FROM loans AS l JOIN people AS g USING (code)"
         " WHERE l.code = :local_id", None),
        ("WITH mine AS (SELECT * FROM loans WHERE code = :local_id) "
         + cols("mine", "mine.code", "loan_id") + " FROM mine", None),
        (cols("l", "l.code") + ", (SELECT sum(q.amount) FROM loans AS q WHERE q.code = l.code)"
         " AS total FROM loans AS l WHERE l.code = :local_id", None),
        (cols("l", "l.code") + " FROM loans AS l WHERE l.code = :local_id;  -- the end", None),
        # untied: someone else's loan through the subject's payment, a key that is only
        # unique where it is set, a column compared without case or as another type, a join
        # on a shared district, a view, a RIGHT join
        (cols("p", "p.code_nc") + " FROM payments AS p JOIN loans AS l ON l.loan_id = p.loan_id"
         " WHERE p.code_nc = :local_id", "l (loans) is not found through the subject"),
        (cols("p", "l.code") + " FROM payments AS p JOIN loans AS l ON l.ref = p.loan_ref"
         " WHERE l.code = :local_id", "p (payments) is not found through the subject"),
        (cols("p", "l.code") + " FROM loans AS l JOIN payments AS p ON p.code_nc = l.code"
         " WHERE l.code = :local_id", "p (payments) is not found through the subject"),
        (cols("p", "l.code") + " FROM loans AS l JOIN payments AS p ON p.loan_ref = l.loan_id"
         " WHERE l.code = :local_id", "p (payments) is not found through the subject"),
        (cols("l", "a.code") + " FROM people AS a JOIN people AS n ON n.district = a.district"
         " JOIN loans AS l ON l.code = n.code WHERE a.code = :local_id",
         "n (people), l (loans) are not found through the subject"),
        (cols("l", "l.code") + ", (SELECT 1 FROM loans AS q WHERE q.code = :local_id"
         " AND q.code = l.code) AS mine FROM loans AS l WHERE l.code IN ('C-1', 'C-2')",
         "l (loans) is not found through the subject"),  # a subquery filters only its rows
        (cols("my_loans", "code") + " FROM my_loans WHERE code = :local_id",
         "it reads the view my_loans"),
        (cols("l", "l.code") + " FROM people AS g RIGHT JOIN loans AS l ON l.code = g.code"
         " WHERE l.code = :local_id", "a NATURAL, RIGHT or FULL join"),
    ],
)  # fmt: skip
def test_every_table_must_be_found_through_the_subject(
    tmp_path: Path, sql: str, problem: str | None
) -> None:
    """Each table reference is tied to the subject through a column compared with :local_id,
    a like column equal to one, or the unique key of a row so tied; anything else can
    return other subjects' rows and is fatal."""
    conn = sqlite3.connect(tmp_path / "records.db")
    conn.executescript(TIES)
    conn.close()
    problems = check_config(write_config(tmp_path, ("financial", sql)))
    if problem is None:
        assert problems == []
    else:
        (found,) = problems
        assert found.fatal and problem in found.message and "other subjects" in found.message
