"""Scenarios and a large local federation: `credex-lab up --nodes 50` starts fifty nodes as
processes, the shipped scenarios pass against it step by step, a failed expectation exits 1,
bad scenario files are refused with the step and field at fault, and `down` leaves nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from credex.lab.scenario import ScenarioError, load_scenario
from tests.commands import REPO, alive, cli, processes_mentioning

SHIPPED = sorted((REPO / "scenarios").glob("*.toml"))
NODES = 50
SUBJECTS = 600


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("scenario") / "fed"
    try:
        cli(
            "credex-lab", "up", "--dir", str(root), "--nodes", str(NODES),
            "--subjects", str(SUBJECTS),
        )  # fmt: skip
        yield root
    finally:
        cli("credex-lab", "down", "--dir", str(root), ok=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


def run(fed: Path, scenario: Path, ok: bool = True) -> dict[str, Any]:
    result = cli("credex-lab", "scenario", str(scenario), "--dir", str(fed), "--json", ok=ok)
    report: dict[str, Any] = json.loads(result.stdout)
    report["exit"] = result.returncode
    return report


# --------------------------------------------------------------------------- fifty nodes


def test_fifty_nodes_run_as_processes_and_all_serve(fed: Path) -> None:
    rows = json.loads(cli("credex-lab", "status", "--dir", str(fed), "--json").stdout)
    nodes = [r for r in rows if r["role"] == "node"]
    assert len(nodes) == NODES
    assert all(r["healthy"] for r in rows), [r["name"] for r in rows if not r["healthy"]]
    assert len({r["pid"] for r in rows}) == NODES + 1
    assert len({r["address"] for r in rows}) == NODES + 1
    for r in rows:
        assert Path(r["log"]).is_file()
    names = {r["name"] for r in nodes}
    assert {"civic-nanjing", "lender-mashang", "pboc-credit-reference"} <= names


def test_a_profile_gathers_records_from_city_offices_and_lenders(fed: Path, tmp_path: Path) -> None:
    scenario = write(
        tmp_path,
        """
name = "Many sources"
[subjects]
someone = { known_to = ["lender-haier-finance", "civic-shenzhen"] }
[[step]]
action = "grant"
subject = "someone"
requester = "bank"
purpose = "loan-application"
categories = ["financial", "civic"]
consent = "c"
[[step]]
action = "profile"
requester = "bank"
subject = "someone"
consent = "c"
check.node_status = { "lender-haier-finance" = "OK", "civic-shenzhen" = "OK" }
check.nodes_ok_at_least = 3
check.only_categories = ["financial", "civic"]
""",
    )
    report = run(fed, scenario)
    assert report["passed"] and report["exit"] == 0, report
    assert report["steps"][1]["detail"].startswith(tuple(f"{n} records" for n in range(1, 100)))


# --------------------------------------------------------------------------- shipped scenarios


@pytest.mark.parametrize("scenario", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenarios_pass(fed: Path, scenario: Path) -> None:
    report = run(fed, scenario)
    failed = [s for s in report["steps"] if not s["passed"]]
    assert not failed and report["exit"] == 0, failed
    refusals = [s["got"] for s in report["steps"] if s["expected"] != "ok"]
    assert refusals and all(got != "ok" for got in refusals)


def test_the_examples_cover_loan_school_and_employment() -> None:
    assert {p.stem for p in SHIPPED} >= {"loan", "school-enrollment", "employment"}
    for path in SHIPPED:
        scenario = load_scenario(path)
        assert scenario.description and len(scenario.steps) >= 5
        assert {s.action for s in scenario.steps} >= {"grant", "profile"}


# --------------------------------------------------------------------------- failures reported


def test_a_failed_expectation_is_reported_and_exits_1(fed: Path, tmp_path: Path) -> None:
    scenario = write(
        tmp_path,
        """
name = "Wrong expectations"
[subjects]
p = "S0000001"
[[step]]
name = "grant"
action = "grant"
subject = "p"
requester = "school"
purpose = "school-enrollment"
categories = ["education"]
consent = "c"
[[step]]
name = "expects a refusal that does not come"
action = "profile"
requester = "school"
subject = "p"
consent = "c"
expect = "CONSENT_REVOKED"
[[step]]
name = "expects success but is refused"
action = "profile"
requester = "school"
subject = "p"
consent = "c"
[[step]]
name = "a check that fails"
action = "consents"
subject = "p"
check.status = { c = "revoked" }
[[step]]
name = "still runs after failures"
action = "revoke"
subject = "p"
consent = "c"
""",
    )
    report = run(fed, scenario, ok=False)
    assert report["exit"] == 1 and not report["passed"]
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["grant"]["passed"]
    wrong = steps["expects a refusal that does not come"]
    assert not wrong["passed"] and wrong["got"] == "ok"
    assert wrong["failures"] == ["expected CONSENT_REVOKED, but the step succeeded"]
    refused = steps["expects success but is refused"]
    assert not refused["passed"] and refused["got"] == "CONSENT_USED_UP"
    check = steps["a check that fails"]
    assert not check["passed"] and check["got"] == "ok"
    assert check["failures"] == ["consent 'c' has status active, expected revoked"]
    assert steps["still runs after failures"]["passed"]

    text = cli("credex-lab", "scenario", str(scenario), "--dir", str(fed), ok=False)
    assert text.returncode == 1
    assert "FAIL" in text.stdout and "PASS" in text.stdout
    assert "2 of 5 steps as expected" in text.stdout


def test_steps_depending_on_a_refused_grant_are_skipped_and_fail(fed: Path, tmp_path: Path) -> None:
    scenario = write(
        tmp_path,
        """
name = "Skips"
[subjects]
p = "S0000002"
[[step]]
action = "grant"
subject = "p"
requester = "bank"
purpose = "school-enrollment"
categories = ["financial"]
consent = "c"
[[step]]
action = "profile"
requester = "bank"
subject = "p"
consent = "c"
[[step]]
action = "suspend"
member = "no-such-member"
""",
    )
    report = run(fed, scenario, ok=False)
    grant, profile, suspend = report["steps"]
    assert grant["got"] == "CONSENT_EXCEEDS_PURPOSE" and not grant["passed"]
    assert profile["got"] == "skipped" and not profile["passed"]
    assert "was not granted" in profile["detail"]
    assert suspend["got"] == "error" and "no member 'no-such-member'" in suspend["detail"]


def test_gRPC_status_names_match_as_expectations(fed: Path, tmp_path: Path) -> None:
    scenario = write(
        tmp_path,
        """
name = "Status names"
[subjects]
a = "S0000003"
b = "S0000004"
[[step]]
action = "grant"
subject = "a"
requester = "employer"
purpose = "employment-screening"
categories = ["employment"]
consent = "c"
[[step]]
action = "profile"
requester = "employer"
subject = "b"
consent = "c"
expect = "PERMISSION_DENIED"
[[step]]
action = "revoke"
subject = "b"
consent = "c"
expect = "PERMISSION_DENIED"
""",
    )
    report = run(fed, scenario)
    assert [s["got"] for s in report["steps"]][1] == "SUBJECT_MISMATCH"
    assert report["passed"], report["steps"]


def test_unknown_requester_without_declaration_is_an_error_step(fed: Path, tmp_path: Path) -> None:
    scenario = write(
        tmp_path,
        """
name = "Undeclared requester"
[subjects]
a = "S0000005"
[[step]]
action = "grant"
subject = "a"
requester = "ghost"
purpose = "research"
categories = ["education"]
consent = "c"
expect = "REQUESTER_NOT_FOUND"
[[step]]
action = "profile"
requester = "ghost"
subject = "a"
consent = "c"
""",
    )
    report = run(fed, scenario, ok=False)
    grant, profile = report["steps"]
    assert grant["passed"], grant
    assert profile["got"] == "skipped"


def test_no_federation_is_a_clear_error(tmp_path: Path) -> None:
    result = cli(
        "credex-lab", "scenario", str(SHIPPED[0]), "--dir", str(tmp_path / "none"), ok=False
    )
    assert result.returncode == 2
    assert "no federation is running" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_subject_pick_nobody_matches_is_a_clear_error(fed: Path, tmp_path: Path) -> None:
    scenario = write(
        tmp_path,
        """
name = "Impossible"
[subjects]
x = { known_to = ["jiangsu-pilot", "guangdong-pilot"] }
[[step]]
action = "consents"
subject = "x"
""",
    )
    result = cli("credex-lab", "scenario", str(scenario), "--dir", str(fed), ok=False)
    assert result.returncode == 2
    assert "no subject in" in result.stderr and "jiangsu-pilot, guangdong-pilot" in result.stderr


# --------------------------------------------------------------------------- invalid files

GOOD_STEP = """
[[step]]
action = "consents"
subject = "a"
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name = [", "invalid TOML"),
        ('name = "x"\n', "at least one [[step]]"),
        ('name = "x"\nsubjects = 3\n' + GOOD_STEP, "[subjects] must be a table"),
        ('name = "x"\nextra = 1\n' + GOOD_STEP, "unknown top-level keys: extra"),
        (
            'name = "x"\n[subjects]\na = "S1"\n[[step]]\naction = "fly"\n',
            "step 1: 'action' must be one of",
        ),
        (
            'name = "x"\n[subjects]\na = "S1"\n[[step]]\naction = "grant"\nsubject = "a"\n',
            "step 1: grant needs categories, consent, purpose, requester",
        ),
        (
            'name = "x"\n[subjects]\na = "S1"\n[[step]]\naction = "consents"\nsubject = "b"\n',
            "subject 'b' is not declared",
        ),
        (
            'name = "x"\n[subjects]\na = "S1"\n[[step]]\naction = "revoke"\nsubject = "a"\n'
            'consent = "nope"\n',
            "consent 'nope' is not granted by an earlier step",
        ),
        (
            'name = "x"\n[subjects]\na = "S1"\n' + GOOD_STEP + 'expect = "MAYBE"\n',
            "'expect' must be",
        ),
        (
            'name = "x"\n[subjects]\na = "S1"\n' + GOOD_STEP + 'colour = "red"\n',
            "consents takes no colour",
        ),
        (
            'name = "x"\n[subjects]\na = "S1"\n' + GOOD_STEP + "check.records_at_least = 1\n",
            "consents cannot check records_at_least (it can check status, uses)",
        ),
        (
            'name = "x"\n[subjects]\na = "S1"\n' + GOOD_STEP + "check.status = { c = 1 }\n",
            "check 'status' must map names to str values",
        ),
        (
            'name = "x"\n[subjects]\na = "S1"\n'
            + GOOD_STEP
            + 'expect = "NOT_FOUND"\ncheck.status = {}\n',
            "checks apply only to a step expected to succeed",
        ),
        (
            'name = "x"\n[subjects]\na = { region = "Atlantis" }\n' + GOOD_STEP,
            "unknown region 'Atlantis'",
        ),
        (
            'name = "x"\n[subjects]\na = { categories = ["gossip"] }\n' + GOOD_STEP,
            "gossip",
        ),
        (
            'name = "x"\n[subjects]\na = { age = 3 }\n' + GOOD_STEP,
            "give a subject id, or a table of categories, known_to, region",
        ),
        (
            'name = "x"\n[subjects]\na = "S1"\n[[step]]\naction = "grant"\nsubject = "a"\n'
            'requester = "bank"\npurpose = "gambling"\ncategories = ["financial"]\n'
            'consent = "c"\n',
            "gambling",
        ),
        (
            'name = "x"\n[subjects]\na = "S1"\n[[step]]\naction = "grant"\nsubject = "a"\n'
            'requester = "bank"\npurpose = "research"\ncategories = ["financial"]\n'
            'consent = "c"\nmax_uses = 0\n',
            "'max_uses' must be an integer from 1 to",
        ),
        (
            'name = "x"\n[subjects]\na = "S1"\n'
            + '[[step]]\naction = "grant"\nsubject = "a"\nrequester = "bank"\n'
            'purpose = "research"\ncategories = ["financial"]\nconsent = "c"\n' * 2,
            "step 2 (grant #2): consent name 'c' is already used",
        ),
        ('name = "x"\n[[requester]]\nid = "r"\n' + GOOD_STEP, "'name' must be a non-empty"),
        (
            'name = "x"\n[[requester]]\nid = ".."\nname = "Up"\n' + GOOD_STEP,
            "must be 1-64 of a-z 0-9 - _ . and not start with a dot",
        ),
        (
            'name = "x"\n[[requester]]\nid = "r"\nname = "R"\njurisdication = "CN"\n' + GOOD_STEP,
            "unknown keys jurisdication",
        ),
        (
            'name = "x"\n[[requester]]\nid = "r"\nname = "R"\njurisdiction = ["a"]\n' + GOOD_STEP,
            "'jurisdiction' must be a non-empty string",
        ),
        ('name = "x"\n[[step]]\naction = ["grant"]\n', "'action' must be one of"),
        (
            'name = "x"\n[subjects]\na = "S1"\n' + GOOD_STEP + 'expect = ["ok"]\n',
            "'expect' must be",
        ),
        ('name = "x"\n[subjects]\na = "S1"\n' + GOOD_STEP + 'expect = "OK"\n', "'expect' must be"),
        ('name = "x"\n[subjects]\na = { region = ["Jiangsu"] }\n' + GOOD_STEP, "'region' must be"),
        (
            'name = "x"\n[subjects]\na = "S1"\n[[step]]\naction = "grant"\nsubject = "a"\n'
            'requester = "bank"\npurpose = "research"\ncategories = ["financial"]\n'
            'consent = "c"\nvalid_days = nan\n',
            "'valid_days' must be a number above 0 and at most 3650",
        ),
        (
            'name = "x"\n[subjects]\na = "S1"\n[[step]]\naction = "grant"\nsubject = "a"\n'
            'requester = "bank"\npurpose = "research"\ncategories = ["financial"]\n'
            'consent = "c"\nvalid_days = inf\n',
            "'valid_days' must be a number above 0 and at most 3650",
        ),
        (
            'name = "x"\n[subjects]\na = "S1"\n[[step]]\naction = "grant"\nsubject = "a"\n'
            'requester = "bank"\npurpose = "research"\ncategories = ["financial"]\n'
            'consent = "c"\nmax_uses = 1099511627776\n',
            "'max_uses' must be an integer from 1 to 4294967295",
        ),
        (
            'name = "x"\n[subjects]\na = "S1"\n[[step]]\naction = "grant"\nsubject = "a"\n'
            'requester = "bank"\npurpose = "research"\ncategories = ["financial"]\n'
            'consent = "c"\n[[step]]\naction = "profile"\nrequester = "bank"\nsubject = "a"\n'
            'consent = "c"\ncheck.only_categories = ["gossip"]\n',
            "gossip",
        ),
    ],
)
def test_invalid_scenarios_are_refused_with_the_place_at_fault(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    result = cli("credex-lab", "scenario", str(path), "--dir", str(tmp_path), ok=False)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_scenario_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(tmp_path / "absent.toml")


def test_down_stops_everything_and_a_smaller_up_suspends_the_extra_nodes(
    tmp_path: Path,
) -> None:
    """A separate 20-node federation: `down` stops all 21 processes; `up` again with 8 nodes
    in the same folder leaves only those 8 active in the registry."""
    root = tmp_path / "big"
    cli("credex-lab", "up", "--dir", str(root), "--nodes", "20", "--subjects", "100")
    state = json.loads((root / "run" / "federation.json").read_text())
    pids = [p["pid"] for p in state["processes"]]
    assert len(pids) == 21 and all(alive(pid) for pid in pids)
    assert "stopped 21 processes" in cli("credex-lab", "down", "--dir", str(root)).stdout
    assert not any(alive(pid) for pid in pids)
    assert processes_mentioning(str(root)) == []
    try:
        cli("credex-lab", "up", "--dir", str(root), "--nodes", "8", "--subjects", "100")
        members = json.loads(
            cli("credex-directory", "members", "--home", str(root / "directory"), "--json").stdout
        )
        nodes = {m["member_id"]: m["role"] for m in members if m["role"].startswith("node")}
        assert len(nodes) == 20
        assert sum(role == "node" for role in nodes.values()) == 8
        assert nodes["lender-mashang"] == "node (suspended)"
    finally:
        cli("credex-lab", "down", "--dir", str(root), ok=False)
    assert processes_mentioning(str(root)) == []


def test_access_log_checks_count_only_this_runs_requests(fed: Path, tmp_path: Path) -> None:
    first = write(
        tmp_path,
        """
name = "Makes a request"
[subjects]
p = "S0000010"
[[step]]
action = "grant"
subject = "p"
requester = "research"
purpose = "research"
categories = ["education"]
consent = "c"
[[step]]
action = "profile"
requester = "research"
subject = "p"
consent = "c"
""",
    )
    assert run(fed, first)["passed"]
    second = tmp_path / "second.toml"
    second.write_text(
        """
name = "Only reads the log"
[subjects]
p = "S0000010"
[[step]]
action = "access-log"
subject = "p"
check.entries_at_least = 1
"""
    )
    report = run(fed, second, ok=False)
    (step,) = report["steps"]
    assert not step["passed"]
    assert step["failures"] == ["0 entries, expected at least 1"]


def test_a_run_reinstates_whom_it_suspended_and_left_suspended(fed: Path, tmp_path: Path) -> None:
    scenario = write(
        tmp_path,
        """
name = "Suspends and forgets"
[subjects]
p = "S0000011"
[[step]]
action = "grant"
subject = "p"
requester = "research"
purpose = "research"
categories = ["education"]
consent = "c"
[[step]]
action = "suspend"
member = "research"
[[step]]
action = "profile"
requester = "research"
subject = "p"
consent = "c"
expect = "MEMBER_SUSPENDED"
""",
    )
    report = run(fed, scenario)
    assert report["passed"], report["steps"]
    assert "every node had it after" in report["steps"][1]["detail"]
    members = json.loads(
        cli("credex-directory", "members", "--home", str(fed / "directory"), "--json").stdout
    )
    assert {m["member_id"]: m["role"] for m in members}["research"] == "requester"
