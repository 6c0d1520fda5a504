"""Kill -9 in the middle of load: everything the directory and nodes acknowledged is still on
disk, the audit chains verify, and a restarted federation serves it again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from credex.lab.demo import pick_subject
from credex.lab.identities import subject_key
from credex.protocol.errors import CredexError
from credex.protocol.keys import load_public
from credex.runtime.audit import verify_log
from credex.sdk.client import RequesterClient, SubjectClient
from credex.sdk.member_home import MemberHome
from credex.v1.common_pb2 import Category, Purpose

BIN = Path(sys.executable).parent
LOAN = Purpose.PURPOSE_LOAN_APPLICATION
SEED = 11


# One subject grants and revokes as fast as it can: above the per-subject rate a directory
# allows by default (that limit is proven in tests/attacks/test_subjects_flood.py).
UNLIMITED_SUBJECT = {
    "CREDEX_DIRECTORY_SUBJECTS_RATE_PER_S": "100000.0",
    "CREDEX_DIRECTORY_SUBJECTS_BURST": "100000",
}


def lab(*args: str) -> None:
    result = subprocess.run([str(BIN / "credex-lab"), *args], capture_output=True, text=True,
                            timeout=120, env={**os.environ, **UNLIMITED_SUBJECT})  # fmt: skip
    assert result.returncode == 0, result.stderr


class Load:
    """Grants, profiles and revocations as fast as they go, recording what was acknowledged."""

    def __init__(self, root: Path, state: dict[str, Any], subject: str) -> None:
        self.root, self.state, self.subject = root, state, subject
        self.granted: list[str] = []
        self.revoked: list[str] = []
        self.profiles: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        bank = MemberHome.load(self.root / "requesters" / "bank")
        ca = (self.root / "directory" / "ca.crt").read_bytes()
        async with (
            SubjectClient(self.state["public_address"], self.subject,
                          subject_key(SEED, self.subject), ca_pem=ca, timeout_s=2) as subject,
            RequesterClient(bank.directory, "bank", bank.signing_key(), tls=bank.tls(),
                            directory_key=bank.directory_key(), timeout_s=2) as requester,
        ):  # fmt: skip
            while not self.stop.is_set():
                try:
                    consent_id = await subject.grant(
                        requester_id="bank", purpose=LOAN, max_uses=5,
                        categories=[Category.CATEGORY_FINANCIAL, Category.CATEGORY_VOLUNTEERING],
                    )  # fmt: skip
                    self.granted.append(consent_id)
                    profile = await requester.get_profile(
                        subject_id=self.subject, consent_id=consent_id, purpose=LOAN
                    )
                    self.profiles.append(profile.request_id)
                    await subject.revoke(consent_id)
                    self.revoked.append(consent_id)
                except CredexError:
                    return  # the directory is gone


def test_kill_minus_nine_loses_nothing_acknowledged(tmp_path: Path) -> None:
    root = tmp_path / "fed"
    lab("up", "--dir", str(root), "--subjects", "100", "--seed", str(SEED))
    try:
        state = json.loads((root / "run" / "federation.json").read_text())
        pids = {p["name"]: p["pid"] for p in state["processes"]}
        subject = pick_subject(root, {"pboc-credit-reference", "volunteer-registry"})
        load = Load(root, state, subject)
        load.thread.start()
        deadline = time.monotonic() + 30
        while len(load.revoked) < 15 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(pids["directory"], signal.SIGKILL)
        os.kill(pids["pboc-credit-reference"], signal.SIGKILL)
        load.stop.set()
        load.thread.join(30)
        assert len(load.revoked) >= 15, "the load never got going"
    finally:
        lab("down", "--dir", str(root))

    directory_db = root / "directory" / "directory.db"
    node_db = root / "nodes" / "pboc-credit-reference" / "credex-node.db"
    conn = sqlite3.connect(directory_db)
    statuses = dict(conn.execute("SELECT consent_id, status FROM consents").fetchall())
    audited = {
        r[0] for r in conn.execute("SELECT request_id FROM audit_log WHERE action='profile'")
    }
    conn.close()
    assert set(load.granted) <= set(statuses)
    assert all(statuses[c] == "revoked" for c in load.revoked)
    assert set(load.profiles) <= audited
    directory_key = load_public(root / "directory" / "directory.pub")
    assert verify_log(directory_db, directory_key).ok
    node_report = verify_log(
        node_db, load_public(root / "nodes" / "pboc-credit-reference" / "node.pub")
    )
    assert node_report.ok, node_report.problem

    # Restarted, the federation still knows every acknowledged consent and its state.
    lab("up", "--dir", str(root), "--subjects", "100", "--seed", str(SEED))
    try:
        state = json.loads((root / "run" / "federation.json").read_text())

        async def listed() -> dict[str, str]:
            async with SubjectClient(
                state["public_address"], subject, subject_key(SEED, subject),
                ca_pem=(root / "directory" / "ca.crt").read_bytes(),
            ) as client:  # fmt: skip
                return {v.consent_id: v.status for v in await client.consents()}

        after = asyncio.run(listed())
        assert set(load.granted) <= set(after)
        assert all(after[c] == "revoked" for c in load.revoked)
    finally:
        lab("down", "--dir", str(root))
