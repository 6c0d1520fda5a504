"""Item 12: announced endpoints.

A node announces where the directory should reach it, and the directory dials that. The
attacker, holding a node's certificate and key, announces gRPC targets that are not a host and
a port (a Unix socket, another resolver, user-info), addresses no node can have (unspecified,
link-local such as a cloud metadata service, multicast), and spellings that resolve to
something other than they look. Only host:port with a DNS name or an IP literal is accepted,
within what the operator allows; the directory never dials anything else, whoever stored it.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import grpc
import pytest

from credex.directory import admin as directory_admin
from credex.protocol.clock import to_timestamp
from credex.protocol.config import ConfigError
from credex.protocol.signing import seal
from credex.runtime.db import open_database
from credex.v1 import federation_pb2
from credex.v1.common_pb2 import Category, Purpose
from tests.attacks.conftest import Target
from tests.attacks.identity_tools import (
    OK,
    Member,
    directory_call,
    enroll_member,
    poll,
    removed_afterwards,
)

REFUSED = [
    "unix:/tmp/credex-attack.sock:7101",  # a Unix socket on the directory's machine
    "unix-abstract:credex:7101",
    "dns:///attacker.example:443",  # another resolver
    "ipv4:127.0.0.1:7101",
    "ipv6:[::1]:7101",
    "xds:///node:7101",
    "user@127.0.0.1:7101",  # user-info
    "127.0.0.1 :7101",
    " 127.0.0.1:7101",
    "node.example:7101/path",
    "169.254.169.254:80",  # link-local: a cloud metadata service
    "[fe80::1]:7101",
    "[fe80::1%eth0]:7101",
    "0.0.0.0:7101",  # unspecified
    "[::]:7101",
    "224.0.0.1:7101",  # multicast
    "[ff02::1]:7101",
    "[::ffff:169.254.169.254]:80",  # link-local dressed as IPv6
    "127.1:7101",  # resolves to 127.0.0.1 but is not an address literal
    "0x7f000001:7101",
    "node.example:0",
    "node.example:65536",
    "node..example:7101",
    "-node.example:7101",
    "node_1.example:7101",
]
ACCEPTED = ["127.0.0.1:7101", "node-a.example:7101", "localhost:7101", "[::1]:7101"]


def announce(target: Target, node: Member, endpoint: str) -> tuple[str, grpc.StatusCode]:
    announcement = federation_pb2.NodeAnnouncement(
        node_id=node.member_id, endpoint=endpoint, issued_at=to_timestamp(time.time())
    )
    request = federation_pb2.AnnounceRequest(announcement=seal(announcement, node.key))
    return asyncio.run(
        directory_call(
            target.address, node.tls(), lambda link: link.federation.Announce(request, timeout=10)
        )
    )


def endpoint_of(target: Target, member_id: str) -> str:
    return next(
        m.endpoint
        for m in directory_admin.list_members(target.settings)
        if m.member_id == member_id
    )


@pytest.fixture(scope="module")
def rogue_node(target: Target, tmp_path_factory: pytest.TempPathFactory) -> Member:
    """A node member of the attack's own (no process runs it; it holds no subject)."""
    folder = Path(tmp_path_factory.mktemp("rogue"))
    return enroll_member(target, folder, "rogue-node", role="node", hosts=["127.0.0.1"])


def test_announced_endpoints_are_host_and_port_only(target: Target, rogue_node: Member) -> None:
    accepted = []
    for endpoint in REFUSED:
        reason, code = announce(target, rogue_node, endpoint)
        if code != grpc.StatusCode.INVALID_ARGUMENT or endpoint_of(target, "rogue-node") != "":
            accepted.append((endpoint, reason, code.name))
    assert not accepted, f"accepted or mis-refused: {accepted}"
    for endpoint in ACCEPTED:
        assert announce(target, rogue_node, endpoint) == OK
        assert endpoint_of(target, "rogue-node") == endpoint
    directory_admin.set_endpoint(target.settings, "rogue-node", "")


def test_the_operator_cannot_set_such_an_endpoint_either(
    target: Target, rogue_node: Member
) -> None:
    for endpoint in REFUSED:
        with pytest.raises(ConfigError):
            directory_admin.set_endpoint(target.settings, "rogue-node", endpoint)
    assert endpoint_of(target, "rogue-node") == ""


def test_the_directory_never_dials_a_refused_endpoint(
    target: Target, rogue_node: Member, tmp_path: Path
) -> None:
    """An endpoint stored before these checks existed (written straight into the database)
    is never dialed: a consent revocation, pushed to every node at once, skips it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    bad = f"ipv4:127.0.0.1:{port}"
    db = open_database(target.settings.db_path)
    try:
        with db.conn:
            db.conn.execute(
                "UPDATE members SET endpoint = ? WHERE member_id = 'rogue-node'", (bad,)
            )
            db.conn.execute("UPDATE registry_version SET version = version + 1")
    finally:
        db.conn.close()
    subject_id, subject_key = target.subject()

    async def revoke_one() -> None:
        async with target.subject_client(subject_id, subject_key) as subject:
            consent_id = await subject.grant(
                requester_id="bank",
                purpose=Purpose.PURPOSE_LOAN_APPLICATION,
                categories=[Category.CATEGORY_FINANCIAL],
            )
            await subject.revoke(consent_id)

    log = Path(target.root / "logs" / "directory.log")
    with removed_afterwards(target, "rogue-node"):
        asyncio.run(revoke_one())

        def dialed() -> bool:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                return False
            conn.close()
            return True

        attempts: list[bool] = []

        def tried() -> bool:
            attempts.append(dialed())
            return any(attempts) or bad in log.read_text()

        poll(
            tried,
            "the directory dials the endpoint or logs that it refused to",
        )
    listener.close()
    assert not any(attempts), f"the directory dialed {bad}"
