"""A backup taken while the federation serves, restored in another folder on new ports, serves
the same answers, and its audit chains verify."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from credex.lab.demo import pick_subject
from credex.lab.identities import subject_key
from credex.protocol.config import ConfigError
from credex.runtime.backup import write_backup
from credex.runtime.serving import read_ready_file
from credex.sdk.client import RequesterClient, SubjectClient
from credex.sdk.member_home import MemberHome
from credex.v1.common_pb2 import Category, Purpose
from tests.commands import BIN, cli

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
SEED = 9
NODE = "pboc-credit-reference"


def records_of(profile: object, node_id: str) -> set[tuple[str, float]]:
    return {(r.record_id, r.value) for r in profile.records if r.node_id == node_id}  # type: ignore[attr-defined]


def serve(args: list[str], ready: Path, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [*args, "--ready-file", str(ready)], stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{args[0]} never became ready"
        time.sleep(0.05)
    return process


def test_a_restored_backup_serves_the_same_answers(tmp_path: Path) -> None:
    root = tmp_path / "fed"
    cli("credex-lab", "up", "--dir", str(root), "--subjects", "100", "--seed", str(SEED),
        "--nodes", "3")  # fmt: skip
    state = json.loads((root / "run" / "federation.json").read_text())
    subject = pick_subject(root, {NODE})
    ca = (root / "directory" / "ca.crt").read_bytes()
    bank = MemberHome.load(root / "requesters" / "bank")

    async def profile(directory_address: str, consent_id: str | None = None) -> tuple[str, object]:
        if consent_id is None:
            async with SubjectClient(state["public_address"], subject,
                                     subject_key(SEED, subject), ca_pem=ca) as owner:  # fmt: skip
                consent_id = await owner.grant(
                    requester_id="bank", purpose=LOAN, max_uses=5,
                    categories=[Category.CATEGORY_FINANCIAL],
                )  # fmt: skip
        async with RequesterClient(
            directory_address,
            "bank",
            bank.signing_key(),
            tls=bank.tls(),
            directory_key=bank.directory_key(),
            timeout_s=15,
        ) as requester:
            got = await requester.get_profile(
                subject_id=subject, consent_id=consent_id, purpose=LOAN
            )
        return consent_id, got

    backups = tmp_path / "backups"
    try:
        consent_id, before = asyncio.run(profile(state["directory_address"]))
        assert records_of(before, NODE)
        node_config = root / "nodes" / NODE / "node.toml"
        taken = cli("credex-node", "backup", str(node_config), str(backups / NODE), "--json")
        files = json.loads(taken.stdout)["files"]
        assert "credex-node.db" in files and "node.key" in files and "records.db" not in files
        cli("credex-node", "backup", str(node_config), str(backups / "with-records"),
            "--include-records")  # fmt: skip
        assert (backups / "with-records" / "records.db").exists()
        cli("credex-directory", "backup", "--home", str(root / "directory"),
            str(backups / "directory"))  # fmt: skip
        refused = cli("credex-node", "backup", str(node_config), str(backups / NODE), ok=False)
        assert refused.returncode == 2 and "not empty" in refused.stderr
    finally:
        cli("credex-lab", "down", "--dir", str(root))

    # Elsewhere: the operator restores its own records database beside the node's backup.
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(backups / "directory", elsewhere / "directory")
    shutil.copytree(backups / NODE, elsewhere / NODE)
    shutil.copy(root / "nodes" / NODE / "records.db", elsewhere / NODE / "records.db")
    shutil.copytree(root / "requesters" / "bank", elsewhere / "bank")  # the bank's own home
    shutil.rmtree(root)  # nothing of the original is left to lean on
    bank = MemberHome.load(elsewhere / "bank")
    processes = []
    try:
        directory = serve(
            [str(BIN / "credex-directory"), "serve", "--home", str(elsewhere / "directory"),
             "--listen", "127.0.0.1:0", "--public-listen", "127.0.0.1:0"],
            elsewhere / "directory.ready", elsewhere / "directory.log",
        )  # fmt: skip
        processes.append(directory)
        address = read_ready_file(elsewhere / "directory.ready")["address"]
        processes.append(
            serve(
                [
                    str(BIN / "credex-node"),
                    "serve",
                    str(elsewhere / NODE / "node.toml"),
                    "--listen",
                    "127.0.0.1:0",
                    "--directory",
                    address,
                ],
                elsewhere / "node.ready",
                elsewhere / "node.log",
            )
        )
        _, after = asyncio.run(profile(address, consent_id))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            assert process.wait(timeout=30) == 0
    assert records_of(after, NODE) == records_of(before, NODE)
    for db, key in (
        (elsewhere / NODE / "credex-node.db", elsewhere / NODE / "node.pub"),
        (elsewhere / "directory" / "directory.db", elsewhere / "directory" / "directory.pub"),
    ):
        verified = cli("credex", "audit", "verify", str(db), "--key", str(key), "--json")
        assert json.loads(verified.stdout)["ok"] is True


def make_db(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("INSERT INTO t VALUES (?)", (value,))
    conn.commit()
    conn.close()


def test_a_folder_name_with_uri_characters_is_backed_up_whole(tmp_path: Path) -> None:
    base = tmp_path / "node #1 %20?x"
    make_db(base / "state.db", "kept")
    manifest = write_backup(base, tmp_path / "out", databases=[base / "state.db"], owner="n")
    assert "state.db" in manifest.files
    conn = sqlite3.connect(tmp_path / "out" / "state.db")
    assert conn.execute("SELECT v FROM t").fetchall() == [("kept",)]
    conn.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node #1 %20?x", "out"]


def test_a_linked_records_database_is_still_left_out(tmp_path: Path) -> None:
    make_db(tmp_path / "data" / "records.db", "SECRET-ROW")
    base = tmp_path / "node"
    make_db(base / "state.db", "state")
    (base / "records.db").symlink_to(tmp_path / "data" / "records.db")
    (base / "node.key").write_text("key")
    manifest = write_backup(
        base, tmp_path / "out", databases=[base / "state.db"],
        exclude=[base / "records.db"], owner="n",
    )  # fmt: skip
    assert sorted(manifest.files) == ["node.key", "state.db"]
    assert not (tmp_path / "out" / "records.db").exists()


def test_a_backup_may_not_go_inside_what_it_copies(tmp_path: Path) -> None:
    make_db(tmp_path / "node" / "state.db", "x")
    with pytest.raises(ConfigError, match="inside"):
        write_backup(tmp_path / "node", tmp_path / "node" / "b",
                     databases=[tmp_path / "node" / "state.db"], owner="n")  # fmt: skip
    with pytest.raises(ConfigError, match="outside"):
        write_backup(tmp_path / "node", tmp_path / "out",
                     databases=[tmp_path / "elsewhere.db"], owner="n")  # fmt: skip
