"""The command lines against a federation of real processes, as an operator would use them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.demo import pick_subject
from lab.identities import subject_key
from tests.harness import free_port

BIN = Path(sys.executable).parent
SEED = 3


def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=120
    )
    if ok:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("lab") / "fed"
    try:
        cli("credex-lab", "up", "--dir", str(root), "--subjects", "200", "--seed", str(SEED))
        state = json.loads((root / "run" / "federation.json").read_text())
        yield {"root": root, "state": state}
    finally:
        cli("credex-lab", "down", "--dir", str(root), ok=False)


def test_status_reports_every_process_serving(running: dict[str, Any]) -> None:
    out = cli("credex-lab", "status", "--dir", str(running["root"]), "--json").stdout
    rows = json.loads(out)
    assert {r["name"] for r in rows} >= {"directory", "volunteer-registry", "pboc-credit-reference"}
    assert len(rows) >= 6
    assert all(r["healthy"] for r in rows)


def test_consent_profile_revoke_through_the_cli(running: dict[str, Any], tmp_path: Path) -> None:
    root: Path = running["root"]
    address = running["state"]["directory_address"]
    subject = pick_subject(root, {"pboc-credit-reference", "volunteer-registry"})
    key = tmp_path / "subject.key"
    subject_key(SEED, subject).save(key)
    bank_key = str(root / "requesters" / "bank.key")
    common = ["--directory", address]

    granted = cli(
        "credex",
        "consent",
        "grant",
        *common,
        "--subject",
        subject,
        "--key",
        str(key),
        "--requester",
        "bank",
        "--purpose",
        "loan-application",
        "-c",
        "financial",
        "-c",
        "volunteering",
        "--max-uses",
        "2",
        "--json",
    )
    consent_id = json.loads(granted.stdout)["consent_id"]

    got = cli(
        "credex",
        "profile",
        "get",
        *common,
        "--requester",
        "bank",
        "--key",
        bank_key,
        "--subject",
        subject,
        "--consent",
        consent_id,
        "--purpose",
        "loan-application",
        "--json",
    )
    profile = json.loads(got.stdout)
    statuses = {n["node_id"]: n["status"] for n in profile["nodes"]}
    assert statuses == {"pboc-credit-reference": "OK", "volunteer-registry": "OK"}
    assert {r["category"] for r in profile["records"]} == {"financial", "volunteering"}

    table = cli(
        "credex",
        "profile",
        "get",
        *common,
        "--requester",
        "bank",
        "--key",
        bank_key,
        "--subject",
        subject,
        "--consent",
        consent_id,
        "--purpose",
        "loan-application",
    ).stdout
    assert "pboc-credit-reference" in table and "OK" in table

    listed = json.loads(
        cli(
            "credex", "consent", "list", *common, "--subject", subject, "--key", str(key), "--json"
        ).stdout
    )
    assert [(c["consent_id"], c["uses"], c["status"]) for c in listed] == [
        (consent_id, 2, "active")
    ]

    outside = cli(
        "credex",
        "profile",
        "get",
        *common,
        "--requester",
        "bank",
        "--key",
        bank_key,
        "--subject",
        subject,
        "--consent",
        consent_id,
        "--purpose",
        "loan-application",
        "-c",
        "education",
        ok=False,
    )
    assert outside.returncode == 3
    assert "CATEGORY_NOT_CONSENTED" in outside.stderr
    assert "Traceback" not in outside.stderr

    revoked = cli(
        "credex",
        "consent",
        "revoke",
        consent_id,
        *common,
        "--subject",
        subject,
        "--key",
        str(key),
        "--json",
    )
    assert json.loads(revoked.stdout)["status"] == "revoked"
    after = cli(
        "credex",
        "profile",
        "get",
        *common,
        "--requester",
        "bank",
        "--key",
        bank_key,
        "--subject",
        subject,
        "--consent",
        consent_id,
        "--purpose",
        "loan-application",
        ok=False,
    )
    assert after.returncode == 3 and "CONSENT_REVOKED" in after.stderr


def test_members_lists_nodes_and_requesters(running: dict[str, Any]) -> None:
    home = running["root"] / "directory"
    rows = json.loads(cli("credex-directory", "members", "--home", str(home), "--json").stdout)
    roles = {r["member_id"]: r["role"] for r in rows}
    assert roles["bank"] == "requester" and roles["pboc-credit-reference"] == "node"
    nodes = [r for r in rows if r["role"] == "node"]
    assert all(r["endpoint"].startswith("127.0.0.1:") for r in nodes)
    remote = json.loads(
        cli(
            "credex", "members", "--directory", running["state"]["directory_address"], "--json"
        ).stdout
    )
    assert {r["member_id"] for r in remote} == set(roles)


def test_second_up_in_same_dir_is_refused(running: dict[str, Any]) -> None:
    again = cli(
        "credex-lab",
        "up",
        "--dir",
        str(running["root"]),
        "--subjects",
        "200",
        "--seed",
        str(SEED),
        ok=False,
    )
    assert again.returncode == 2 and "already running" in again.stderr


def test_down_leaves_nothing_running(tmp_path: Path) -> None:
    root = tmp_path / "fed"
    cli("credex-lab", "up", "--dir", str(root), "--subjects", "50")
    pids = [
        p["pid"] for p in json.loads((root / "run" / "federation.json").read_text())["processes"]
    ]
    assert pids and all(alive(pid) for pid in pids)
    out = cli("credex-lab", "down", "--dir", str(root)).stdout
    assert f"stopped {len(pids)} processes" in out
    assert not any(alive(pid) for pid in pids)
    assert cli("credex-lab", "status", "--dir", str(root), ok=False).returncode == 1


def test_demo_runs_and_stops_everything(tmp_path: Path) -> None:
    result = cli("credex-lab", "demo", "--dir", str(tmp_path / "demo"), "--subjects", "300")
    out = result.stdout
    assert "CATEGORY_NOT_CONSENTED" in out
    assert "CONSENT_REVOKED" in out
    assert "nothing left running" in out
    assert not (tmp_path / "demo" / "run" / "federation.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "credex",
                "consent",
                "grant",
                "--directory",
                "127.0.0.1:1",
                "--subject",
                "S1",
                "--key",
                "/nonexistent.key",
                "--requester",
                "bank",
                "--purpose",
                "loan-application",
                "-c",
                "financial",
            ],
            "cannot read key",
        ),
        (
            [
                "credex",
                "profile",
                "get",
                "--directory",
                "127.0.0.1:1",
                "--requester",
                "bank",
                "--key",
                "KEY",
                "--subject",
                "S1",
                "--consent",
                "c",
                "--purpose",
                "bogus",
            ],
            "unknown purpose",
        ),
        (
            [
                "credex",
                "profile",
                "get",
                "--directory",
                "127.0.0.1:1",
                "--requester",
                "bank",
                "--key",
                "KEY",
                "--subject",
                "S1",
                "--consent",
                "c",
                "--purpose",
                "loan-application",
                "-c",
                "astrology",
            ],
            "unknown category",
        ),
        (["credex-node", "serve", "/nonexistent/node.toml"], "no such config file"),
        (["credex-directory", "serve", "--home", "/nonexistent/home"], "credex-directory init"),
        (["credex-lab", "down", "--dir", "CORRUPT"], "corrupt"),
    ],
)
def test_bad_input_gives_a_message_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    key = tmp_path / "k.key"
    cli("credex", "keygen", str(key))
    corrupt = tmp_path / "corrupt"
    (corrupt / "run").mkdir(parents=True)
    (corrupt / "run" / "federation.json").write_text("{not json")
    args = [str(key) if a == "KEY" else str(corrupt) if a == "CORRUPT" else a for a in args]
    result = cli(*args, ok=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_directory_is_a_refusal_not_a_traceback(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    cli("credex", "keygen", str(key))
    result = cli(
        "credex",
        "consent",
        "list",
        "--directory",
        f"127.0.0.1:{free_port()}",
        "--subject",
        "S1",
        "--key",
        str(key),
        ok=False,
    )
    assert result.returncode == 3
    assert "unavailable" in result.stderr.lower()
    assert "Traceback" not in result.stderr
