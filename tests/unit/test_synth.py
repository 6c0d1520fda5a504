"""The synthetic federation: reproducible, readable by its own adapters, and free of global ids."""

from __future__ import annotations

import csv
import re
import sqlite3
import tomllib
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path
from typing import Annotated, TypedDict

import pytest

from credex.lab import synth
from credex.lab.identities import requester_key, subject_key
from credex.lab.synth.base import Table

SUBJECTS = 1000
REQUIRED = ("local_id", "record_id", "kind", "value", "unit", "occurred_at")
SNAKE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
GLOBAL_ID = re.compile(r"S\d{7}")
EXPECTED_KINDS = {
    "volunteer_hours",
    "loan_opened",
    "loan_repaid_late",
    "loan_default",
    "enrollment",
    "degree",
    "judgment",
    "dishonest_debtor",
    "payment_on_time",
    "payment_late",
    "commendation",
    "traffic_violation",
    "employment_started",
}


BIG_NODES = 60


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> synth.Manifest:
    return synth.generate(tmp_path_factory.mktemp("fed") / "out", SUBJECTS, seed=7)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> synth.Manifest:
    return synth.generate(tmp_path_factory.mktemp("big") / "out", SUBJECTS, seed=7, nodes=BIG_NODES)


@pytest.fixture(params=["8 nodes", f"{BIG_NODES} nodes"])
def any_fed(request: pytest.FixtureRequest) -> synth.Manifest:
    """Both the default federation and a large one (city offices and lenders added)."""
    name = "fed" if request.param == "8 nodes" else "big"
    manifest: synth.Manifest = request.getfixturevalue(name)
    return manifest


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def connect(db: Path) -> sqlite3.Connection:
    """Open an operator database the way a node does: read-only."""
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def node_config(entry: synth.NodeEntry) -> dict[str, object]:
    with entry.config.open("rb") as fh:
        return tomllib.load(fh)


def adapters(entry: synth.NodeEntry) -> list[dict[str, str]]:
    raw = node_config(entry)["adapter"]
    assert isinstance(raw, list)
    return raw


def records_db(entry: synth.NodeEntry) -> Path:
    return entry.directory / "records.db"


def dump(db: Path) -> list[str]:
    with connect(db) as conn:
        return list(conn.iterdump())


def generated_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def locals_by_node(fed: synth.Manifest) -> dict[str, dict[str, str]]:
    """node id -> {local id: subject id}."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for row in read_csv(fed.locator_csv):
        out[row["node_id"]][row["local_id"]] = row["subject_id"]
    return out


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_gives_identical_files_and_tables(fed: synth.Manifest, tmp_path: Path) -> None:
    again = synth.generate(tmp_path / "again", SUBJECTS, seed=7)
    ours, theirs = generated_files(fed.out), generated_files(again.out)
    assert ours.keys() == theirs.keys()
    for name in ours:
        if not name.endswith(".db"):
            assert ours[name] == theirs[name], name
    for entry in fed.nodes:
        assert dump(records_db(entry)) == dump(records_db(again.node(entry.id))), entry.id


def test_different_seed_gives_different_data(fed: synth.Manifest, tmp_path: Path) -> None:
    other = synth.generate(tmp_path / "other", SUBJECTS, seed=8)
    assert other.subjects_csv.read_bytes() != fed.subjects_csv.read_bytes()
    assert other.locator_csv.read_bytes() != fed.locator_csv.read_bytes()
    for entry in fed.nodes:
        assert dump(records_db(entry)) != dump(records_db(other.node(entry.id))), entry.id


def test_a_smaller_generation_is_a_prefix_of_a_larger_one(
    fed: synth.Manifest, tmp_path: Path
) -> None:
    small = synth.generate(tmp_path / "small", 200, seed=7)
    big_lines = fed.subjects_csv.read_text().splitlines()
    assert small.subjects_csv.read_text().splitlines() == big_lines[:201]
    small_locator = small.locator_csv.read_text().splitlines()
    assert small_locator == fed.locator_csv.read_text().splitlines()[: len(small_locator)]


# --------------------------------------------------------------------------- manifest and configs


def test_manifest_lists_nodes_requesters_and_reads_back(fed: synth.Manifest) -> None:
    assert synth.load_manifest(fed.out) == fed
    assert (fed.seed, fed.subjects) == (7, SUBJECTS)
    ids = [n.id for n in fed.nodes]
    assert ids == list(synth.NODE_IDS)
    for required in (
        "volunteer-registry",
        "pboc-credit-reference",
        "education-ministry",
        "court-enforcement",
        "zhima-commercial",
        "jiangsu-pilot",
    ):
        assert required in ids
    assert fed.node("jiangsu-pilot").jurisdiction == "CN-JS"
    assert fed.node("court-enforcement").categories == ("judicial",)
    requesters = {r.id: r for r in fed.requesters}
    assert requesters["bank"].name == "Bank of Jiangsu"
    assert requesters["bank"].jurisdiction == "CN-JS"
    assert requesters["school"].name == "Nanjing University"
    assert requesters["employer"].name == "Huawei Technologies"
    raw = tomllib.loads(fed.federation_toml.read_text())
    assert raw["node"][0]["config"] == "nodes/volunteer-registry/node.toml"


def test_node_configs_follow_the_adapter_contract(any_fed: synth.Manifest) -> None:
    for entry in any_fed.nodes:
        config = node_config(entry)
        node = config["node"]
        assert isinstance(node, dict)
        assert node["id"] == entry.id
        assert node["name"] == entry.name
        assert node["jurisdiction"] == entry.jurisdiction
        assert node["records_db"] == "records.db"
        assert node["state_db"] == "credex-node.db"
        assert node["signing_key"] == "node.key"
        assert node["directory_key"] == "directory.pub"
        seen = []
        for adapter in adapters(entry):
            assert adapter["category"] in synth.CATEGORIES
            sql = adapter["sql"]
            assert sql.lstrip().upper().startswith("SELECT")
            assert sqlite3.complete_statement(sql + ";") and ";" not in sql
            assert re.findall(r"[:@$](\w+)", sql) == ["local_id"], entry.id
            seen.append(adapter["category"])
        assert tuple(dict.fromkeys(seen)) == entry.categories


def test_node_specs_are_available_without_generating() -> None:
    spec = synth.node_spec("jiangsu-pilot")
    assert spec.regions == ("Jiangsu",)
    assert spec.jurisdiction == "CN-JS"
    assert synth.node_spec("pboc-credit-reference").categories == ("financial",)
    with pytest.raises(KeyError, match="known"):
        synth.node_spec("nope")
    assert "[[adapter]]" in synth.node_toml(spec)


# --------------------------------------------------------------------------- node databases


def test_every_adapter_yields_well_formed_records(any_fed: synth.Manifest) -> None:
    located = locals_by_node(any_fed)
    first, last = synth.FIRST_DAY.isoformat(), synth.LAST_DAY.isoformat()
    all_kinds: set[str] = set()
    for entry in any_fed.nodes:
        record_ids: set[str] = set()
        kinds: Counter[str] = Counter()
        with connect(records_db(entry)) as conn:
            for local_id in located[entry.id]:
                per_category: Counter[str] = Counter()
                for adapter in adapters(entry):
                    cursor = conn.execute(adapter["sql"], {"local_id": local_id})
                    names = [d[0] for d in cursor.description]
                    assert set(REQUIRED) <= set(names), entry.id
                    for values in cursor:
                        row = dict(zip(names, values, strict=True))
                        assert None not in values, (entry.id, row)
                        assert str(row["local_id"]) == local_id, (entry.id, row)
                        record_id = str(row["record_id"])
                        assert record_id not in record_ids, (entry.id, record_id)
                        record_ids.add(record_id)
                        assert SNAKE.fullmatch(str(row["kind"])), row
                        assert isinstance(row["value"], int | float), row
                        assert isinstance(row["unit"], str), row
                        when = row["occurred_at"]
                        assert isinstance(when, str), row
                        assert date.fromisoformat(when).isoformat() == when, row
                        assert first <= when <= last, row
                        kinds[str(row["kind"])] += 1
                        per_category[adapter["category"]] += 1
                for category in entry.categories:
                    assert 1 <= per_category[category] <= synth.MAX_RECORDS_PER_CATEGORY, (
                        entry.id,
                        local_id,
                        per_category,
                    )
        if len(located[entry.id]) >= 20:  # a small city's office may know one person
            assert len(kinds) >= 2, (entry.id, kinds)
        all_kinds |= set(kinds)
    assert not EXPECTED_KINDS - all_kinds, EXPECTED_KINDS - all_kinds


def test_located_ids_are_exactly_the_people_each_node_holds(any_fed: synth.Manifest) -> None:
    located = locals_by_node(any_fed)
    for entry in any_fed.nodes:
        spec = synth.node_spec(entry.id)
        people = spec.tables[0]
        key = people.columns[0].split()[0]
        with connect(records_db(entry)) as conn:
            held = {str(r[0]) for r in conn.execute(f"SELECT {key} FROM {people.name}")}
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert held == set(located[entry.id]), entry.id


def test_node_databases_hold_no_global_subject_ids(any_fed: synth.Manifest) -> None:
    for entry in any_fed.nodes:
        with connect(records_db(entry)) as conn:
            tables = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            for table in tables:
                for row in conn.execute(f"SELECT * FROM {table}"):
                    for value in row:
                        if isinstance(value, str):
                            assert not GLOBAL_ID.search(value), (entry.id, table, value)
    for row in read_csv(any_fed.locator_csv):
        assert row["local_id"] != row["subject_id"]
        assert not GLOBAL_ID.search(row["local_id"])


def test_local_ids_are_unique_per_node(any_fed: synth.Manifest) -> None:
    rows = read_csv(any_fed.locator_csv)
    pairs = Counter((r["node_id"], r["local_id"]) for r in rows)
    assert max(pairs.values()) == 1
    assert len({(r["subject_id"], r["node_id"]) for r in rows}) == len(rows)


# --------------------------------------------------------------------------- population


def test_subjects_csv_has_regions_ages_and_matching_keys(fed: synth.Manifest) -> None:
    rows = read_csv(fed.subjects_csv)
    assert [r["subject_id"] for r in rows] == [f"S{n:07d}" for n in range(1, SUBJECTS + 1)]
    regions = Counter(r["region"] for r in rows)
    assert set(regions) <= {r.name for r in synth.REGIONS}
    assert regions["Guangdong"] > regions["Jiangsu"] > regions["Beijing"] > regions["Ningxia"]
    ages = {2026 - int(r["birth_year"]) for r in rows}
    assert min(ages) == 14 and max(ages) == 35
    for row in rows[:: SUBJECTS // 20]:
        assert row["public_key"] == subject_key(7, row["subject_id"]).public.raw.hex()
    assert len({r["public_key"] for r in rows}) == SUBJECTS


def test_coverage_is_roughly_as_specified(fed: synth.Manifest) -> None:
    subjects = {r["subject_id"]: r for r in read_csv(fed.subjects_csv)}
    known = {node: set(ids.values()) for node, ids in locals_by_node(fed).items()}
    share = {node: len(ids) / SUBJECTS for node, ids in known.items()}
    assert 0.50 <= share["volunteer-registry"] <= 0.70
    assert 0.35 <= share["pboc-credit-reference"] <= 0.55
    assert 0.85 <= share["education-ministry"] <= 0.95
    assert 0.02 <= share["court-enforcement"] <= 0.09
    assert 0.45 <= share["zhima-commercial"] <= 0.65
    jiangsu = {s for s, r in subjects.items() if r["region"] == "Jiangsu"}
    assert known["jiangsu-pilot"] <= jiangsu
    assert 0.7 <= len(known["jiangsu-pilot"]) / len(jiangsu) <= 0.95
    guangdong = {s for s, r in subjects.items() if r["region"] == "Guangdong"}
    assert known["guangdong-pilot"] <= guangdong
    # Older subjects are more likely to have a credit file.
    age = {s: 2026 - int(r["birth_year"]) for s, r in subjects.items()}
    older = [s for s in subjects if age[s] >= 28]
    younger = [s for s in subjects if 18 <= age[s] < 25]
    credit = known["pboc-credit-reference"]

    def rate(group: list[str]) -> float:
        return sum(s in credit for s in group) / len(group)

    assert rate(older) > rate(younger) + 0.1


def test_reliability_correlates_records_across_nodes(fed: synth.Manifest) -> None:
    """Court-listed subjects pay late more often at the commercial node than everyone else."""
    located = locals_by_node(fed)
    court = set(located["court-enforcement"].values())
    late: dict[bool, list[int]] = {True: [0, 0], False: [0, 0]}
    with connect(records_db(fed.node("zhima-commercial"))) as conn:
        for uid, subject in located["zhima-commercial"].items():
            for (days_late,) in conn.execute(
                "SELECT days_late FROM payment_events WHERE uid = ?", (uid,)
            ):
                late[subject in court][0] += days_late > 0
                late[subject in court][1] += 1
    court_rate = late[True][0] / late[True][1]
    other_rate = late[False][0] / late[False][1]
    assert court_rate > other_rate * 1.5


# --------------------------------------------------------------------------- output directory


def test_regenerates_in_place_and_keeps_foreign_node_files(tmp_path: Path) -> None:
    out = tmp_path / "fed"
    synth.generate(out, 120, seed=3)
    node_dir = out / "nodes" / "volunteer-registry"
    (node_dir / "node.key").write_text("key")
    (node_dir / "credex-node.db").write_text("state")
    calls: list[int] = []
    manifest = synth.generate(out, 60, seed=4, progress=calls.append)
    assert manifest.subjects == 60 and manifest.seed == 4
    assert calls and calls[-1] == 60 and calls == sorted(calls)
    assert len(read_csv(manifest.subjects_csv)) == 60
    assert {r["subject_id"] for r in read_csv(manifest.locator_csv)} <= {
        f"S{n:07d}" for n in range(1, 61)
    }
    assert (node_dir / "node.key").read_text() == "key"
    assert (node_dir / "credex-node.db").read_text() == "state"
    assert not list(out.rglob("*.partial"))
    fresh = synth.generate(tmp_path / "fresh", 60, seed=4)
    for entry in manifest.nodes:
        assert dump(records_db(entry)) == dump(records_db(fresh.node(entry.id)))


@pytest.mark.parametrize("subjects", [0, -5])
def test_refuses_too_few_subjects(tmp_path: Path, subjects: int) -> None:
    with pytest.raises(ValueError, match="subjects"):
        synth.generate(tmp_path / "out", subjects)
    assert not (tmp_path / "out").exists()


def test_refuses_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        synth.generate(tmp_path, 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]

    (tmp_path / "federation.toml").write_text("this is [not toml")
    with pytest.raises(ValueError, match="not a credex-lab generation"):
        synth.generate(tmp_path, 10)

    a_file = tmp_path / "notes.txt"
    with pytest.raises(ValueError, match="not a directory"):
        synth.generate(a_file, 10)


def test_load_manifest_reports_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no federation manifest"):
        synth.load_manifest(tmp_path)
    (tmp_path / "federation.toml").write_text("seed = 7\n")
    with pytest.raises(ValueError, match="subjects"):
        synth.load_manifest(tmp_path)
    (tmp_path / "federation.toml").write_text('seed = 7\nsubjects = 3\n[[node]]\nid = "x"\n')
    with pytest.raises(ValueError, match="categories"):
        synth.load_manifest(tmp_path)


def test_identities_are_deterministic_and_distinct() -> None:
    assert subject_key(7, "S0000001").public == subject_key(7, "S0000001").public
    assert subject_key(7, "S0000001").public != subject_key(8, "S0000001").public
    assert requester_key(7, "bank").public == requester_key(7, "bank").public
    assert requester_key(7, "bank").public != subject_key(7, "bank").public


# --------------------------------------------------------------------------- larger federations


def test_node_specs_grow_with_city_offices_and_lenders() -> None:
    assert synth.node_specs() == synth.NODE_SPECS
    assert synth.node_specs(3) == synth.NODE_SPECS[:3]
    specs = synth.node_specs(synth.MAX_NODES)
    assert len({s.id for s in specs}) == synth.MAX_NODES
    cities = [s for s in specs if s.kind == "city-civic"]
    assert len(cities) == sum(len(r.cities) for r in synth.REGIONS)
    assert synth.node_spec("civic-suzhou").cities == ("Suzhou",)
    assert synth.node_spec("civic-suzhou").jurisdiction == "CN-JS"
    assert synth.node_spec("lender-mashang").categories == ("financial",)
    for bad in (0, synth.MAX_NODES + 1):
        with pytest.raises(ValueError, match="nodes must be"):
            synth.node_specs(bad)


def test_more_nodes_leave_the_first_eight_unchanged(
    fed: synth.Manifest, big: synth.Manifest
) -> None:
    assert [n.id for n in big.nodes] == [s.id for s in synth.node_specs(BIG_NODES)]
    for entry in fed.nodes:
        assert dump(records_db(entry)) == dump(records_db(big.node(entry.id))), entry.id
    ours = {(r["subject_id"], r["node_id"]) for r in read_csv(fed.locator_csv)}
    theirs = {(r["subject_id"], r["node_id"]) for r in read_csv(big.locator_csv)}
    assert ours == {pair for pair in theirs if pair[1] in synth.NODE_IDS}


def test_city_offices_know_only_their_residents_and_lenders_a_few_adults(
    big: synth.Manifest,
) -> None:
    subjects = {r["subject_id"]: r for r in read_csv(big.subjects_csv)}
    known = {node: set(ids.values()) for node, ids in locals_by_node(big).items()}
    # subjects.csv has no city, so check the city office's own residents table instead
    with connect(records_db(big.node("civic-nanjing"))) as conn:
        districts = {r[0] for r in conn.execute("SELECT district FROM residents")}
    assert districts and all(d.startswith("Nanjing District ") for d in districts)
    assert {subjects[s]["region"] for s in known["civic-nanjing"]} == {"Jiangsu"}
    lenders = [n.id for n in big.nodes if n.id.startswith("lender-")]
    assert len(lenders) >= 20
    for lender in lenders:
        share = len(known.get(lender, ())) / SUBJECTS
        assert 0.005 <= share <= 0.08, (lender, share)
        assert all(2026 - int(subjects[s]["birth_year"]) >= 18 for s in known.get(lender, ()))


def test_everywhere_subjects_are_known_to_every_node_with_records(tmp_path: Path) -> None:
    manifest = synth.generate(tmp_path / "out", 200, seed=5, nodes=20, everywhere=3)
    assert len(manifest.everywhere) == 3
    assert synth.load_manifest(manifest.out).everywhere == manifest.everywhere
    subjects = {r["subject_id"]: r for r in read_csv(manifest.subjects_csv)}
    located = locals_by_node(manifest)
    for subject_id in manifest.everywhere:
        assert 2026 - int(subjects[subject_id]["birth_year"]) >= 25
        for entry in manifest.nodes:
            local_ids = [lid for lid, sid in located[entry.id].items() if sid == subject_id]
            assert len(local_ids) == 1, (entry.id, subject_id)
            per_category: Counter[str] = Counter()
            with connect(records_db(entry)) as conn:
                for adapter in adapters(entry):
                    rows = conn.execute(adapter["sql"], {"local_id": local_ids[0]}).fetchall()
                    per_category[adapter["category"]] += len(rows)
            assert all(per_category[c] >= 1 for c in entry.categories), (entry.id, per_category)
    with pytest.raises(ValueError, match="everywhere"):
        synth.generate(tmp_path / "bad", 10, everywhere=-1)


# --------------------------------------------------------------------------- table declarations


class _PairsRow(TypedDict):
    pair_id: Annotated[int, "INTEGER PRIMARY KEY"]
    note: Annotated[str | None, "TEXT"]


def test_rows_are_added_by_column_name_in_column_order() -> None:
    table = Table("pairs", _PairsRow, ("note",))
    assert (
        table.create_sql()
        == "CREATE TABLE pairs (\n    pair_id INTEGER PRIMARY KEY,\n    note TEXT\n)"
    )
    rows: list[tuple[object, ...]] = []
    add = table.appender(rows.append)
    add(note="x", pair_id=1)
    add(pair_id=2, note=None)
    assert rows == [(1, "x"), (2, None)]
    assert all(type(row) is tuple for row in rows)  # what sqlite3 binds fastest
    with pytest.raises(TypeError):
        add(pair_id=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        add(pair_id=3, note="y", extra=1)  # type: ignore[call-arg]


def test_a_table_refuses_columns_whose_type_does_not_fit_their_sql() -> None:
    class TextAsInteger(TypedDict):
        n: Annotated[str, "INTEGER NOT NULL"]

    class NullableNotNull(TypedDict):
        n: Annotated[str | None, "TEXT NOT NULL"]

    class NotNullNullable(TypedDict):
        n: Annotated[str, "TEXT"]

    class Undeclared(TypedDict):
        n: int

    for shape in (TextAsInteger, NullableNotNull, NotNullNullable, Undeclared):
        with pytest.raises(TypeError, match=r"^t\.n: "):
            Table("t", shape)
    with pytest.raises(ValueError, match="indexes"):
        Table("pairs", _PairsRow, ("missing",))
