"""SIGTERM drains a real server process: health turns NOT_SERVING while it still answers for
the drain delay, then no new calls, the call in flight finishes, a last audit checkpoint is
signed, and the process exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credex.lab.demo import pick_subject
from credex.lab.identities import subject_key
from credex.protocol.channels import open_directory_channel
from credex.protocol.errors import CredexError
from credex.protocol.keys import load_public
from credex.protocol.tls import TlsIdentity
from credex.runtime.audit import verify_log
from credex.sdk.client import RequesterClient, SubjectClient
from credex.sdk.member_home import MemberHome
from credex.v1.common_pb2 import Category, Purpose
from tests.commands import BIN, alive, cli

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
SEED = 5
NODE = "pboc-credit-reference"
DRAIN_DELAY_S = 1.5


def wait_for(predicate: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_sigterm_lets_the_call_in_flight_finish_and_exits_0(tmp_path: Path) -> None:
    root = tmp_path / "fed"
    cli("credex-lab", "up", "--dir", str(root), "--subjects", "100", "--seed", str(SEED),
        "--nodes", "3")  # fmt: skip
    state = json.loads((root / "run" / "federation.json").read_text())
    pids = {p["name"]: p["pid"] for p in state["processes"]}
    directory: subprocess.Popen[bytes] | None = None
    try:
        # Run the directory ourselves on the same addresses, to see how it ends.
        os.kill(pids["directory"], signal.SIGTERM)
        wait_for(lambda: not alive(pids["directory"]), 20, "the lab's directory to stop")
        ready = tmp_path / "directory.ready"
        log = (tmp_path / "directory.log").open("wb")
        directory = subprocess.Popen(
            [str(BIN / "credex-directory"), "serve", "--home", str(root / "directory"),
             "--listen", state["directory_address"], "--public-listen", state["public_address"],
             "--ready-file", str(ready)],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "CREDEX_DIRECTORY_DIRECTORY_NODE_DEADLINE_S": "8",
                 "CREDEX_DIRECTORY_SERVER_LOG_FORMAT": "json",
                 "CREDEX_DIRECTORY_SERVER_DRAIN_DELAY_S": str(DRAIN_DELAY_S)},
        )  # fmt: skip
        wait_for(ready.exists, 30, "the directory to serve")
        subject = pick_subject(root, {NODE})
        bank = MemberHome.load(root / "requesters" / "bank")
        ca = (root / "directory" / "ca.crt").read_bytes()
        process = directory

        async def public_health() -> Any:
            channel = open_directory_channel(state["public_address"], TlsIdentity(ca))
            try:
                stub = health_pb2_grpc.HealthStub(channel)
                return (await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)).status

            finally:
                await channel.close(None)

        async def scenario() -> tuple[dict[str, str], CredexError]:
            async with (
                SubjectClient(state["public_address"], subject, subject_key(SEED, subject),
                              ca_pem=ca) as owner,
                RequesterClient(bank.directory, "bank", bank.signing_key(), tls=bank.tls(),
                                directory_key=bank.directory_key(), timeout_s=15) as requester,
            ):  # fmt: skip
                consent_id = await owner.grant(
                    requester_id="bank", purpose=LOAN, max_uses=5,
                    categories=[Category.CATEGORY_FINANCIAL],
                )  # fmt: skip
                # A first profile connects the directory to the node; stopped, the node then
                # holds the next query on that connection until SIGCONT.
                await requester.get_profile(subject_id=subject, consent_id=consent_id, purpose=LOAN)
                os.kill(pids[NODE], signal.SIGSTOP)
                try:
                    in_flight = asyncio.create_task(
                        requester.get_profile(subject_id=subject, consent_id=consent_id,
                                              purpose=LOAN)
                    )  # fmt: skip
                    await asyncio.sleep(1.0)  # the directory is waiting on the stopped node
                    assert not in_flight.done()
                    process.send_signal(signal.SIGTERM)
                    await asyncio.sleep(0.4)
                    # Still answering during the drain delay, but telling load balancers to go.
                    assert await public_health() == health_pb2.HealthCheckResponse.NOT_SERVING
                    await asyncio.sleep(DRAIN_DELAY_S)
                    with pytest.raises(CredexError) as refused:  # then no new calls
                        await requester.get_profile(
                            subject_id=subject, consent_id=consent_id, purpose=LOAN
                        )
                finally:
                    os.kill(pids[NODE], signal.SIGCONT)
                profile = await in_flight
                return {n.node_id: n.status for n in profile.nodes}, refused.value

        statuses, refused = asyncio.run(scenario())
        assert statuses[NODE] == "OK"
        assert refused.code == grpc.StatusCode.UNAVAILABLE
        assert directory.wait(timeout=30) == 0
    finally:
        os.kill(pids[NODE], signal.SIGCONT) if alive(pids[NODE]) else None
        if directory is not None and directory.poll() is None:
            directory.kill()
            directory.wait()
        cli("credex-lab", "down", "--dir", str(root))

    events = [json.loads(line) for line in (tmp_path / "directory.log").read_text().splitlines()]
    assert any("draining" in str(e["message"]) for e in events)
    db = root / "directory" / "directory.db"
    assert verify_log(db, load_public(root / "directory" / "directory.pub")).ok
    conn = sqlite3.connect(db)
    try:
        last = conn.execute("SELECT max(seq) FROM audit_log").fetchone()[0]
        checkpointed = conn.execute("SELECT max(seq) FROM audit_checkpoints").fetchone()[0]
    finally:
        conn.close()
    assert checkpointed == last  # the last checkpoint covers the profile served while draining
