"""Audit and disk as an amplifier: every undecodable request on the public port was its own
fsynced audit entry, and any certificate holder, even a removed member, wrote unlimited refused
entries into any node's log. Refusals from one caller are limited before any parsing or disk
work and counted into one entry per caller, reason and window."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from credex.directory import admin as directory_admin
from credex.lab import federation
from credex.node.config import load_node_config
from credex.protocol.channels import open_channel, open_directory_channel
from credex.protocol.tls import TlsIdentity
from credex.runtime.db import readonly_uri
from tests.attacks.conftest import Target

FLOOD = 2000
BATCH = 100


def audit_size(db: Path) -> int:
    conn = sqlite3.connect(readonly_uri(db), uri=True)
    try:
        return int(conn.execute("SELECT coalesce(max(seq), 0) FROM audit_log").fetchone()[0])
    finally:
        conn.close()


async def garbage(channel: grpc.aio.Channel, method: str) -> dict[str, int]:
    """FLOOD undecodable requests to `method`, BATCH at a time; the status codes they got."""
    call = channel.unary_unary(method, None, None)
    codes: dict[str, int] = {}

    async def one() -> None:
        try:
            await call(b"\xff" + os.urandom(31), timeout=20)
            codes["OK"] = codes.get("OK", 0) + 1
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] = codes.get(exc.code().name, 0) + 1

    for _ in range(FLOOD // BATCH):
        await asyncio.gather(*(one() for _ in range(BATCH)))
    return codes


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A federation of its own: the flood spends the refusal budget of 127.0.0.1, which every
    other attack's clients share on the shared target."""
    root = Path(tmp_path_factory.mktemp("garbage")) / "fed"
    fed = federation.start(root, subjects=20, seed=41, nodes=1, tied=True)
    try:
        yield Target(fed)
    finally:
        fed.stop()


def test_undecodable_requests_on_the_public_port_cost_no_disk_writes(own: Target) -> None:
    target = own
    db = target.settings.db_path
    before = audit_size(db)

    async def attack() -> dict[str, int]:
        channel = open_directory_channel(target.public_address, TlsIdentity(target.ca_pem))
        try:
            return await garbage(channel, "/credex.v1.SubjectService/GrantConsent")
        finally:
            await channel.close(None)

    codes = asyncio.run(attack())
    assert "OK" not in codes, codes
    # A few are read and refused as undecodable; the rest are turned away unread.
    assert codes.get("RESOURCE_EXHAUSTED", 0) >= FLOOD * 0.9, codes
    # The first of each kind is written at once; the rest are counted in memory.
    assert audit_size(db) - before <= 4


def test_a_removed_member_cannot_fill_a_nodes_log(target: Target) -> None:
    """A requester's certificate (before and after the member is removed) calls a node's
    QueryRecords with garbage thousands of times."""
    node = target.node_ids[0]
    state = load_node_config(target.fed.manifest.node(node).config).state_db
    home = asyncio.run(target.enroll_requester(f"flooder-{int(time.time() * 1000) % 10**8}"))
    tls = home.tls()

    async def attack() -> dict[str, int]:
        channel = open_channel(target.node_address(node), tls)
        try:
            return await garbage(channel, "/credex.v1.NodeService/QueryRecords")
        finally:
            await channel.close(None)

    before = audit_size(state)
    as_member = asyncio.run(attack())
    directory_admin.set_member_status(target.settings, home.member_id, "removed")
    as_removed = asyncio.run(attack())
    for codes in (as_member, as_removed):
        assert "OK" not in codes, codes
        assert sum(codes.values()) == FLOOD
    assert as_removed.get("RESOURCE_EXHAUSTED", 0) >= FLOOD * 0.9, as_removed
    assert audit_size(state) - before <= 4
