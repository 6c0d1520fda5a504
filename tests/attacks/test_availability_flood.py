"""Availability from positions with no credentials: a flood of idle connections, more than the
server has descriptors, on the directory's public and member ports and on a node's mutual-TLS
port, must not stop a member's profile, nor make reads fail, nor spend a consent use; the
servers close the idle connections within seconds."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from credex.directory.consent_store import ConsentStore
from credex.directory.schema import open_directory_storage
from credex.lab import federation
from credex.v1.common_pb2 import Category, Purpose
from tests.attacks.conftest import Target, open_descriptors
from tests.commands import alive

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
VOLUNTEERING = Category.CATEGORY_VOLUNTEERING
LIMIT = 1024  # the servers' descriptor limit, as a service manager would set it
ATTACKER = "127.0.0.2"  # any 127.x address reaches loopback; the member calls from 127.0.0.1


class Flood:
    """Idle TCP connections from one address that never start TLS, held until closed."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sockets: list[socket.socket] = []

    def open(self, address: str, count: int) -> None:
        host, _, port = address.rpartition(":")
        for _ in range(count):
            s = socket.socket()
            s.setblocking(False)
            s.bind((self.source, 0))
            code = s.connect_ex((host, int(port)))
            assert code in (0, errno.EINPROGRESS), errno.errorcode.get(code)
            self.sockets.append(s)

    def still_open(self) -> int:
        """How many of the connections the servers have not closed (yet)."""
        open_ = 0
        for s in self.sockets:
            try:
                if s.recv(1) != b"":
                    open_ += 1
            except BlockingIOError:
                open_ += 1
            except OSError:
                pass  # reset or refused: closed
        return open_

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets.clear()


@contextlib.contextmanager
def flood(source: str) -> Iterator[Flood]:
    f = Flood(source)
    try:
        yield f
    finally:
        f.close()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A directory and one node (the volunteer registry) run with LIMIT descriptors each."""
    root = Path(tmp_path_factory.mktemp("flooded")) / "fed"
    fed = federation.start(root, subjects=60, seed=21, nodes=1, tied=True, descriptor_limit=LIMIT)
    try:
        yield Target(fed)
    finally:
        fed.stop()


def uses(target: Target, consent_id: str) -> int:
    with open_directory_storage(target.settings.db_path) as storage:
        return ConsentStore(storage.connection).get(consent_id, time.time()).uses


def test_idle_connections_beyond_the_descriptor_limit_do_not_stop_a_member(
    limited: Target,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    per_port = LIMIT + 100  # each port alone gets more connections than a server has files
    needed = 3 * per_port + 512
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= needed, "raise `ulimit -n`"
    node = limited.node_ids[0]
    subject_id, key = limited.subject({node})
    directory_pid = limited.pid("directory")

    async def before() -> str:
        async with limited.subject_client(subject_id, key) as owner:
            consent = await owner.grant(
                requester_id="bank", purpose=LOAN, categories=[VOLUNTEERING], max_uses=10
            )
        async with limited.requester_client() as bank:
            profile = await bank.get_profile(subject_id=subject_id, consent_id=consent,
                                             purpose=LOAN)  # fmt: skip
        assert [n.status for n in profile.nodes] == ["OK"]
        return consent

    consent = asyncio.run(before())
    baseline_descriptors = open_descriptors(directory_pid)

    async def during() -> list[str]:
        # New connections, made while the flood holds its connections: a requester with a
        # channel of its own, and a subject on the public port.
        async with limited.requester_client(timeout_s=20) as bank:
            profile = await bank.get_profile(subject_id=subject_id, consent_id=consent,
                                             purpose=LOAN)  # fmt: skip
        async with limited.subject_client(subject_id, key, timeout_s=20) as owner:
            states = await owner.consents()
        assert [c.consent_id for c in states] == [consent]
        return [n.status for n in profile.nodes]

    with flood(ATTACKER) as attack:
        for address in (limited.public_address, limited.address, limited.node_address(node)):
            attack.open(address, per_port)
        assert asyncio.run(during()) == ["OK"]
        # Idle connections that never start TLS are closed within seconds.
        deadline = time.monotonic() + 60
        while attack.still_open() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert attack.still_open() == 0

    assert uses(limited, consent) == 2  # both profiles served, nothing spent on a failure
    assert alive(directory_pid) and alive(limited.pid(node))
    deadline = time.monotonic() + 30
    while open_descriptors(directory_pid) > baseline_descriptors + 16:
        assert time.monotonic() < deadline, "the directory kept the flood's descriptors"
        time.sleep(0.5)
