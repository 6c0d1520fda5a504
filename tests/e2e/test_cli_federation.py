"""The command lines against a federation of real processes, as operators, members and
subjects use them: enrollment, consents, profiles, refusals, start and stop."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from credex.lab.demo import pick_subject
from credex.lab.identities import subject_key
from credex.node.schema import open_node_storage
from credex.protocol import pki
from credex.runtime.audit import AuditEntry, AuditLog
from credex.runtime.serving import STOP_WITH_ENV
from credex.testing.federation import free_port
from tests.commands import BIN, alive, cli, processes_mentioning

SEED = 3
STATE = Path("run") / "federation.json"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("lab") / "fed"
    try:
        cli("credex-lab", "up", "--dir", str(root), "--subjects", "200", "--seed", str(SEED))
        state = json.loads((root / "run" / "federation.json").read_text())
        subject_args = [
            "--directory", state["public_address"],
            "--ca-cert", str(root / "directory" / "ca.crt"),
        ]  # fmt: skip
        yield {"root": root, "state": state, "subject_args": subject_args}
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
    subject = pick_subject(root, {"pboc-credit-reference", "volunteer-registry"})
    key = tmp_path / "subject.key"
    subject_key(SEED, subject).save(key)
    me = [*running["subject_args"], "--subject", subject, "--key", str(key)]
    bank = ["--home", str(root / "requesters" / "bank")]

    def profile(*extra: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return cli(
            "credex", "profile", "get", *bank, "--subject", subject, "--consent", consent_id,
            "--purpose", "loan-application", *extra, ok=ok,
        )  # fmt: skip

    granted = cli(
        "credex", "consent", "grant", *me, "--requester", "bank", "--purpose", "loan-application",
        "-c", "financial", "-c", "volunteering", "--max-uses", "2", "--json",
    )  # fmt: skip
    consent_id = json.loads(granted.stdout)["consent_id"]

    data = json.loads(profile("--json").stdout)
    statuses = {n["node_id"]: n["status"] for n in data["nodes"]}
    assert statuses == {"pboc-credit-reference": "OK", "volunteer-registry": "OK"}
    assert {r["category"] for r in data["records"]} == {"financial", "volunteering"}

    table = profile().stdout
    assert "pboc-credit-reference" in table and "OK" in table

    listed = json.loads(cli("credex", "consent", "list", *me, "--json").stdout)
    assert [(c["consent_id"], c["uses"], c["status"]) for c in listed] == [
        (consent_id, 2, "active")
    ]

    outside = profile("-c", "education", ok=False)
    assert outside.returncode == 3
    assert "CATEGORY_NOT_CONSENTED" in outside.stderr
    assert "Traceback" not in outside.stderr

    revoked = cli("credex", "consent", "revoke", consent_id, *me, "--json")
    assert json.loads(revoked.stdout)["status"] == "revoked"
    after = profile(ok=False)
    assert after.returncode == 3 and "CONSENT_REVOKED" in after.stderr

    log = json.loads(cli("credex", "access-log", *me, "--limit", "2", "--json").stdout)
    assert [(r["outcome"], r["count"]) for r in log["records"]] == [
        ("refused:CONSENT_REVOKED", 1),
        ("refused:CATEGORY_NOT_CONSENTED", 1),
    ]  # newest first
    assert log["more"] is True
    table = cli("credex", "access-log", *me, "--limit", "2").stdout
    assert "times" in table and "older requests not shown" in table


def test_audit_logs_verify_and_reconcile(running: dict[str, Any], tmp_path: Path) -> None:
    """After the CLI flow above, every log's chain and checkpoints hold, and every query the
    directory sent matches an entry at its node; a node-only entry is unexplained."""
    root: Path = running["root"]
    # a profile of its own, over two nodes, so that the test passes alone too (and another
    # subject than the other tests', so that it passes in any order)
    both = {"pboc-credit-reference", "volunteer-registry"}
    held: dict[str, set[str]] = {}
    with (root / "locator.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            held.setdefault(row["subject_id"], set()).add(row["node_id"])
    subject = sorted(s for s, nodes in held.items() if both <= nodes)[-1]
    assert subject != pick_subject(root, both)
    key = tmp_path / "subject.key"
    subject_key(SEED, subject).save(key)
    me = [*running["subject_args"], "--subject", subject, "--key", str(key)]
    granted = cli(
        "credex", "consent", "grant", *me, "--requester", "bank", "--purpose", "loan-application",
        "-c", "financial", "-c", "volunteering", "--json",
    )  # fmt: skip
    cli(
        "credex", "profile", "get", "--home", str(root / "requesters" / "bank"),
        "--subject", subject, "--consent", json.loads(granted.stdout)["consent_id"],
        "--purpose", "loan-application", "--json",
    )  # fmt: skip
    directory_db = root / "directory" / "directory.db"
    node_dbs = sorted((root / "nodes").glob("*/credex-node.db"))
    out = cli("credex", "audit", "verify", str(directory_db),
              "--key", str(root / "directory" / "directory.pub")).stdout  # fmt: skip
    assert "OK" in out
    for db in node_dbs:
        assert "OK" in cli("credex", "audit", "verify", str(db),
                           "--key", str(db.parent / "node.pub")).stdout  # fmt: skip
    report = json.loads(
        cli("credex", "audit", "reconcile", str(directory_db), *map(str, node_dbs), "--json").stdout
    )
    assert report["ok"] and report["matched"] >= 2 and report["unexplained"] == []

    forged = tmp_path / "pboc.db"
    forged.write_bytes((root / "nodes" / "pboc-credit-reference" / "credex-node.db").read_bytes())
    with open_node_storage(forged) as storage, storage.unit() as conn:
        log = AuditLog(conn, time.time, log_id="pboc-credit-reference")
        log.append(AuditEntry(request_id="q-phantom", actor="bank", action="query",
                              outcome="disclosed", node_id="pboc-credit-reference"))  # fmt: skip
    bad = cli("credex", "audit", "reconcile", str(directory_db), str(forged), ok=False)
    assert bad.returncode == 1 and "q-phantom" in bad.stdout


def test_members_lists_nodes_and_requesters(running: dict[str, Any]) -> None:
    home = running["root"] / "directory"
    rows = json.loads(cli("credex-directory", "members", "--home", str(home), "--json").stdout)
    roles = {r["member_id"]: r["role"] for r in rows}
    assert roles["bank"] == "requester" and roles["pboc-credit-reference"] == "node"
    nodes = [r for r in rows if r["role"] == "node"]
    assert all(r["endpoint"].startswith("127.0.0.1:") for r in nodes)
    bank_home = str(running["root"] / "requesters" / "bank")
    remote = json.loads(cli("credex", "members", "--home", bank_home, "--json").stdout)
    assert {r["member_id"] for r in remote} == set(roles)


def test_enrollment_token_works_once(running: dict[str, Any], tmp_path: Path) -> None:
    root: Path = running["root"]
    state = running["state"]
    token = json.loads(
        cli(
            "credex-directory",
            "enroll",
            "insurer",
            "--home",
            str(root / "directory"),
            "--role",
            "requester",
            "--name",
            "Ping An",
            "--json",
        ).stdout
    )["token"]
    enroll = [
        "--id", "insurer", "--directory", state["directory_address"],
        "--public", state["public_address"], "--token", token,
        "--ca-cert", str(root / "directory" / "ca.crt"),
    ]  # fmt: skip
    home = tmp_path / "insurer"
    cli("credex", "init", "--home", str(home), *enroll)
    assert oct((home / "tls.key").stat().st_mode & 0o777) == "0o600"
    assert oct((home / "signing.key").stat().st_mode & 0o777) == "0o600"
    members = json.loads(cli("credex", "members", "--home", str(home), "--json").stdout)
    assert "insurer" in {m["member_id"] for m in members}

    again = cli("credex", "init", "--home", str(tmp_path / "again"), *enroll, ok=False)
    assert again.returncode == 3 and "ENROLLMENT_REFUSED" in again.stderr


def test_renew_reset_key_and_enroll_again_through_the_cli(
    running: dict[str, Any], tmp_path: Path
) -> None:
    """A requester renews its certificate; after the operator resets its lost keys, the old
    certificate is refused and the member enrolls again under its id with new keys."""
    root: Path = running["root"]
    state = running["state"]
    directory = ["--home", str(root / "directory")]

    def token(*args: str) -> str:
        return str(json.loads(cli("credex-directory", *args, *directory, "--json").stdout)["token"])

    home = tmp_path / "careless"
    enroll = [
        "--home", str(home), "--id", "careless", "--directory", state["directory_address"],
        "--public", state["public_address"], "--ca-cert", str(root / "directory" / "ca.crt"),
    ]  # fmt: skip
    cli("credex", "init", *enroll, "--token", token("enroll", "careless", "--role", "requester"))
    before = (home / "tls.crt").read_bytes()
    renewed = json.loads(cli("credex", "renew", "--home", str(home), "--json").stdout)
    assert (home / "tls.crt").read_bytes() != before
    assert renewed["expires_at"] > time.time() + 86_000

    reset = token("reset-key", "careless")
    refused = cli("credex", "members", "--home", str(home), ok=False)
    assert refused.returncode == 3 and "CERTIFICATE_REVOKED" in refused.stderr
    plain_init = cli("credex", "init", *enroll, "--token", reset, ok=False)
    assert plain_init.returncode == 2 and "--reset" in plain_init.stderr
    old_key = (home / "signing.key").read_bytes()
    cli("credex", "init", *enroll, "--token", reset, "--reset")
    assert (home / "signing.key").read_bytes() != old_key
    members = json.loads(cli("credex", "members", "--home", str(home), "--json").stdout)
    assert "careless" in {m["member_id"] for m in members}


def test_operator_commands_refuse_what_the_directory_must_never_use(
    running: dict[str, Any],
) -> None:
    directory = ["--home", str(running["root"] / "directory")]
    for endpoint in ("dns:///attacker.example:443", "169.254.169.254:80", "unix:/x:1"):
        bad = cli("credex-directory", "set-endpoint", *directory, "--id", "volunteer-registry",
                  "--endpoint", endpoint, ok=False)  # fmt: skip
        assert bad.returncode == 2 and "endpoint" in bad.stderr and "Traceback" not in bad.stderr
    for member_id, host in (("credex-directory.", None), ("sneaky", "CREDEX-DIRECTORY")):
        args = ["credex-directory", "enroll", member_id, *directory, "--role", "node", "-c",
                "financial", *(("--host", host) if host else ())]  # fmt: skip
        bad = cli(*args, ok=False)
        assert bad.returncode == 2 and "reserved" in bad.stderr, bad.stderr


def test_second_up_in_same_dir_is_refused(running: dict[str, Any]) -> None:
    again = cli(
        "credex-lab", "up", "--dir", str(running["root"]), "--subjects", "200",
        "--seed", str(SEED), ok=False,
    )  # fmt: skip
    assert again.returncode == 2 and "already running" in again.stderr


def test_down_leaves_nothing_running(tmp_path: Path) -> None:
    root = tmp_path / "fed"
    cli("credex-lab", "up", "--dir", str(root), "--subjects", "50")
    state = json.loads((root / "run" / "federation.json").read_text())
    pids = [p["pid"] for p in state["processes"]]
    assert pids and all(alive(pid) for pid in pids)
    out = cli("credex-lab", "down", "--dir", str(root)).stdout
    assert f"stopped {len(pids)} processes" in out
    assert not any(alive(pid) for pid in pids)
    assert processes_mentioning(str(root)) == []
    assert cli("credex-lab", "status", "--dir", str(root), ok=False).returncode == 1


def test_servers_stop_when_the_process_they_are_tied_to_is_killed(tmp_path: Path) -> None:
    """A server started under CREDEX_STOP_WITH_PID does not outlive that process, even when it
    is killed with SIGKILL and nobody runs `down`."""
    root = tmp_path / "fed"
    owner = subprocess.Popen(["sleep", "600"])
    try:
        env = {**os.environ, STOP_WITH_ENV: str(owner.pid)}
        up = subprocess.run(
            [str(BIN / "credex-lab"), "up", "--dir", str(root), "--subjects", "50",
             "--nodes", "1"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        pids = [p["pid"] for p in json.loads((root / STATE).read_text())["processes"]]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in pids)
    finally:
        owner.kill()
        owner.wait()
        cli("credex-lab", "down", "--dir", str(root), ok=False)


def test_demo_runs_and_stops_everything(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    result = cli("credex-lab", "demo", "--dir", str(root), "--subjects", "300")
    out = result.stdout
    assert "CATEGORY_NOT_CONSENTED" in out
    assert "CONSENT_REVOKED" in out
    assert "nothing left running" in out
    assert not (root / "run" / "federation.json").exists()
    assert processes_mentioning(str(root)) == []


def test_sigterm_to_the_demo_still_stops_everything(tmp_path: Path) -> None:
    """A demo killed with SIGTERM mid-way runs its cleanup: no process of it survives."""
    root = tmp_path / "demo"
    proc = subprocess.Popen(
        [str(BIN / "credex-lab"), "demo", "--dir", str(root), "--subjects", "50"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = root / "run" / "federation.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if state.exists() and len(json.loads(state.read_text() or "{}").get("processes", [])) >= 3:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the demo never started its processes")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) != 0
    left = processes_mentioning(str(root))
    assert left == [], [Path(f"/proc/{p}/cmdline").read_bytes() for p in left]
    assert cli("credex-lab", "down", "--dir", str(root)).stdout.strip() == "stopped 0 processes"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["credex", "consent", "grant", "--directory", "127.0.0.1:1", "--ca-cert", "CA",
             "--subject", "S1", "--key", "/nonexistent.key", "--requester", "bank",
             "--purpose", "loan-application", "-c", "financial"],
            "cannot read key",
        ),
        (
            ["credex", "consent", "grant", "--directory", "127.0.0.1:1", "--ca-cert", "CA",
             "--subject", "S1", "--key", "KEY", "--requester", "bank", "--purpose", "bogus",
             "-c", "financial"],
            "unknown purpose",
        ),
        (
            ["credex", "consent", "grant", "--directory", "127.0.0.1:1", "--ca-cert", "CA",
             "--subject", "S1", "--key", "KEY", "--requester", "bank",
             "--purpose", "loan-application", "-c", "astrology"],
            "unknown category",
        ),
        (
            ["credex", "consent", "list", "--directory", "127.0.0.1:1",
             "--ca-cert", "/nonexistent/ca.crt", "--subject", "S1", "--key", "KEY"],
            "cannot read CA certificate",
        ),
        (
            ["credex", "profile", "get", "--home", "/nonexistent/home", "--subject", "S1",
             "--consent", "c", "--purpose", "loan-application"],
            "not a member home",
        ),
        (["credex-node", "serve", "/nonexistent/node.toml"], "no such config file"),
        (["credex-directory", "serve", "--home", "/nonexistent/home"], "credex-directory init"),
        (["credex-lab", "down", "--dir", "CORRUPT"], "corrupt"),
    ],
)  # fmt: skip
def test_bad_input_gives_a_message_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    key = tmp_path / "k.key"
    cli("credex", "keygen", str(key))
    ca = tmp_path / "ca.crt"
    ca.write_bytes(pki.cert_pem(pki.create_ca()[1]))
    corrupt = tmp_path / "corrupt"
    (corrupt / "run").mkdir(parents=True)
    (corrupt / "run" / "federation.json").write_text("{not json")
    swap = {"KEY": str(key), "CA": str(ca), "CORRUPT": str(corrupt)}
    result = cli(*[swap.get(a, a) for a in args], ok=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_directory_is_a_refusal_not_a_traceback(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    cli("credex", "keygen", str(key))
    ca = tmp_path / "ca.crt"
    ca.write_bytes(pki.cert_pem(pki.create_ca()[1]))
    result = cli(
        "credex", "consent", "list", "--directory", f"127.0.0.1:{free_port()}",
        "--ca-cert", str(ca), "--subject", "S1", "--key", str(key), ok=False,
    )  # fmt: skip
    assert result.returncode == 3
    assert "unavailable" in result.stderr.lower()
    assert "Traceback" not in result.stderr
