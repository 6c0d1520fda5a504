"""Item 15: an adapter written too broadly must not disclose other people's records.

A careless operator maps their tables with a query that also returns other residents' rows
(an `OR`, a `UNION`, `OR 1=1`, a subquery over everyone, a join on the wrong key). Statically
visible mistakes stop the node at start (and `check-config` calls them fatal); a mistake only
the data shows (rows found by who reported them, each saying whose it is) is caught row by
row: every row carries its subject's local id, rows of anyone else are withheld, counted,
logged without their values, and the node stops serving.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest

from credex.lab.identities import subject_key
from credex.node.config_check import check_config
from credex.v1.common_pb2 import Category, Purpose
from tests.attacks.conftest import SEED, Target
from tests.attacks.nodedata_kit import (
    Adapter,
    ExtraNode,
    checked_config,
    config_text,
    prepare,
    serving,
    start_refused,
    subjects_of,
)
from tests.commands import cli

CIVIC = Category.CATEGORY_CIVIC
LOAN = Purpose.PURPOSE_LOAN_APPLICATION
NEIGHBOURS = 40

# Resident R-0 (our subject, the district's warden) and 40 neighbours in one district, each
# with marks; the warden reported every mark.
SCHEMA = (
    "CREATE TABLE residents (code TEXT PRIMARY KEY, district TEXT NOT NULL);"
    "CREATE INDEX residents_district ON residents (district);"
    "CREATE TABLE marks (mark_id INTEGER PRIMARY KEY, code TEXT NOT NULL, points REAL NOT NULL,"
    " day TEXT NOT NULL, note TEXT, reporter TEXT NOT NULL);"
    "CREATE INDEX marks_code ON marks (code);"
    "CREATE INDEX marks_points ON marks (points);"
    "CREATE INDEX marks_reporter ON marks (reporter);"
    "INSERT INTO residents VALUES ('R-0', 'D1');"
    "INSERT INTO marks (code, points, day, note, reporter) VALUES"
    " ('R-0', 5, '2024-01-02', 'mine', 'R-0'), ('R-0', 3, '2024-05-06', 'mine', 'R-0');"
    + "".join(
        f"INSERT INTO residents VALUES ('R-{i}', 'D1');"
        f"INSERT INTO marks (code, points, day, note, reporter)"
        f" VALUES ('R-{i}', -{i}, '2023-03-0{i % 9 + 1}', 'neighbour R-{i}', 'R-0');"
        for i in range(1, NEIGHBOURS + 1)
    )
)
COLUMNS = (
    "'mark-' || m.mark_id AS record_id, 'civic_merit' AS kind, m.points AS value,"
    " 'points' AS unit, m.day AS occurred_at, m.code AS local_id"
)
GOOD = f"SELECT {COLUMNS} FROM marks AS m WHERE m.code = :local_id"
# Each maps more than the subject's own rows, in a way the SQL and its query plan show.
STATIC_LEAKS = {
    "or": GOOD + " OR m.points < -5",
    "union": GOOD + f" UNION SELECT {COLUMNS} FROM marks AS m WHERE m.points < -30",
    "or-1=1": GOOD + " OR 1=1",
    "subquery": GOOD.replace(
        "FROM marks",
        ", (SELECT group_concat(code) FROM residents WHERE district = 'D1') AS neighbours"
        " FROM marks",
    ),
    # The row check trusts the local_id column: taking it from the parameter defeats it.
    "parameter-as-id": (
        f"SELECT {COLUMNS.replace('m.code AS local_id', ':local_id AS local_id')}"
        " FROM residents AS r JOIN residents AS n ON n.district = r.district"
        " JOIN marks AS m ON m.code = n.code WHERE r.code = :local_id"
    ),
}
STATIC_LEAKS["district-join"] = (
    f"SELECT {COLUMNS} FROM residents AS r JOIN residents AS n ON n.district = r.district"
    " JOIN marks AS m ON m.code = n.code WHERE r.code = :local_id"
)
# Only the data shows this one: the marks the subject reported, each saying whose it is.
ROW_LEAK = f"SELECT {COLUMNS} FROM marks AS m WHERE m.reporter = :local_id"
OWN_RECORDS = {"mark-1", "mark-2"}


async def civic_profile(target: Target, subject_id: str) -> object:
    async with target.subject_client(subject_id, subject_key(SEED, subject_id)) as subject:
        consent_id = await subject.grant(
            requester_id="bank", purpose=LOAN, categories=[CIVIC], max_uses=3
        )
    async with target.requester_client() as bank:
        return await bank.get_profile(subject_id=subject_id, consent_id=consent_id, purpose=LOAN)


def metrics_text(node: ExtraNode) -> str:
    with urllib.request.urlopen(f"http://{node.metrics_address}/metrics", timeout=10) as reply:
        text: str = reply.read().decode()
    return text


def sample(text: str, name: str) -> float:
    """The value of one metric sample (labels included in `name`), 0 if absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_check_config_calls_every_broad_query_fatal(tmp_path: Path) -> None:
    """Each query that can return other subjects is a fatal problem of `check-config`, on the
    line of its `sql`."""
    for name, sql in STATIC_LEAKS.items():
        config, sql_line = checked_config(
            tmp_path / name, SCHEMA, "careless", [Adapter("civic", sql)]
        )
        fatal = [p for p in check_config(config) if p.fatal]
        assert fatal, f"{name}: check-config let an adapter over other subjects pass"
        assert all(p.line == sql_line for p in fatal), (name, fatal)


def test_a_node_refuses_to_serve_an_adapter_that_selects_other_subjects(
    target: Target, tmp_path: Path
) -> None:
    """The operator enrolls with a good adapter, then widens it with an OR: the node does not
    start, and says which line of which file is wrong."""
    (subject_id,) = subjects_of(target, 0, 1)
    node = prepare(
        target,
        tmp_path,
        "careless-district",
        schema=SCHEMA,
        adapters=[Adapter("civic", GOOD)],
        locations={subject_id: "R-0"},
    )
    node.config.write_text(
        config_text(node.node_id, [Adapter("civic", STATIC_LEAKS["or"])], target.address)
    )
    refused = start_refused(target, node)
    if refused is None:  # it served: show what the attack obtained
        with serving(target, node):
            profile = asyncio.run(civic_profile(target, subject_id))
        leaked = [r for r in profile.records if r.record_id not in OWN_RECORDS]  # type: ignore[attr-defined]
        pytest.fail(f"the node served a broad adapter: {len(leaked)} other people's records")
    sql_line = next(
        n for n, line in enumerate(node.config.read_text().splitlines(), 1) if "sql =" in line
    )
    assert f"{node.config}:{sql_line}: adapter for civic" in refused
    assert "other subjects" in refused


def test_rows_of_other_subjects_are_withheld_counted_and_stop_the_node(
    target: Target, tmp_path: Path
) -> None:
    """Marks found by their reporter pass every static check (the table is found through a
    column compared with the subject's id); the node still never discloses a neighbour's row:
    it withholds them, counts them, logs the fact without their values, and fails closed
    (NOT_SERVING, every later query refused) until the operator fixes it."""
    (subject_id,) = subjects_of(target, 1, 1)
    node = prepare(
        target,
        tmp_path,
        "wrong-column",
        schema=SCHEMA,
        adapters=[Adapter("civic", GOOD)],
        locations={subject_id: "R-0"},
    )
    node.config.write_text(config_text(node.node_id, [Adapter("civic", ROW_LEAK)], target.address))
    with serving(target, node):
        profile = asyncio.run(civic_profile(target, subject_id))
        disclosed = {r.record_id for r in profile.records}  # type: ignore[attr-defined]
        assert disclosed <= OWN_RECORDS, f"{len(disclosed - OWN_RECORDS)} neighbours' records"
        (outcome,) = [n for n in profile.nodes if n.node_id == node.node_id]  # type: ignore[attr-defined]
        assert outcome.status != "OK"
        assert "R-" not in outcome.detail and "neighbour" not in outcome.detail

        deadline = time.monotonic() + 30
        while True:
            metrics = metrics_text(node)
            withheld = sample(metrics, 'credex_adapter_rows_withheld_total{category="civic"}')
            if withheld >= NEIGHBOURS and sample(metrics, "credex_serving") == 0:
                break
            assert time.monotonic() < deadline, metrics
            time.sleep(0.2)

        again = asyncio.run(civic_profile(target, subject_id))  # fail closed: nothing now
        assert not again.records  # type: ignore[attr-defined]

        log = node.log_text()
        assert "withheld" in log and "other subjects" in log
        assert "R-17" not in log and "neighbour R-" not in log
        status = cli(
            "credex-node", "status", str(node.config), "--metrics", node.metrics_address
        ).stdout  # fmt: skip
        assert "NOT_SERVING" in status and "rows of other subjects withheld" in status

    result = cli("credex-node", "check-config", str(node.config), "--sample-id", "R-0", ok=False)
    assert result.returncode == 1
    assert "another subject" in result.stdout
