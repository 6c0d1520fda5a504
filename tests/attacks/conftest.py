"""The attack suite's target: a real federation of separate server processes on loopback (a
directory and three nodes, started by `credex.lab.federation.start`), shared by the attack tests.

Attacks that need a server of their own (a low descriptor limit, a process to kill) start it
themselves. Every server started here is tied to the test process: it stops when pytest
ends, however it ends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from credex.directory.config import DirectorySettings
from credex.lab import federation
from credex.lab.demo import pick_subject
from credex.lab.identities import subject_key
from credex.lab.synth import RequesterEntry
from credex.protocol.keys import SigningKey
from credex.protocol.tls import TlsIdentity
from credex.sdk.client import RequesterClient, SubjectClient
from credex.sdk.member_home import MemberHome

SEED = 12
NODES = 3


@dataclass
class Target:
    """The running federation as an attacker (and the test judging the attack) sees it."""

    fed: federation.RunningFederation

    @property
    def root(self) -> Path:
        return self.fed.root

    @property
    def address(self) -> str:
        """The directory's member port (mutual TLS)."""
        return self.fed.directory_address

    @property
    def public_address(self) -> str:
        """The directory's public port (server-side TLS: subjects and enrollment)."""
        return self.fed.public_address

    @property
    def ca_pem(self) -> bytes:
        return self.fed.ca_pem

    @property
    def settings(self) -> DirectorySettings:
        """The directory operator's view of its home (tokens, suspensions, the database)."""
        return DirectorySettings(home=federation.directory_home(self.root))

    def pid(self, name: str) -> int:
        """The process id of the directory ("directory") or of a node (its id)."""
        state = federation.FederationState.load(self.root)
        assert state is not None
        return next(p.pid for p in state.processes if p.name == name)

    def node_address(self, node_id: str) -> str:
        state = federation.FederationState.load(self.root)
        assert state is not None
        return next(p.address for p in state.processes if p.name == node_id)

    @property
    def node_ids(self) -> list[str]:
        return [n.id for n in self.fed.manifest.nodes]

    def subject(self, node_ids: set[str] | None = None) -> tuple[str, SigningKey]:
        """The subject known to the most of `node_ids` (default: every node), with its key."""
        subject_id = pick_subject(self.root, node_ids or set(self.node_ids))
        return subject_id, subject_key(self.fed.seed, subject_id)

    def requester_home(self, requester_id: str = "bank") -> MemberHome:
        return self.fed.requester(requester_id)

    def operator_tls(self) -> TlsIdentity:
        """The directory's own certificate: what the directory shows the nodes."""
        return federation.operator_tls(self.root)

    async def enroll_requester(self, requester_id: str) -> MemberHome:
        """A new requester, enrolled through the real enrollment service."""
        entry = RequesterEntry(id=requester_id, name=requester_id, jurisdiction="CN")
        return await federation.enroll_requester(
            self.root, entry, self.public_address, self.address
        )

    @contextlib.asynccontextmanager
    async def subject_client(
        self, subject_id: str, key: SigningKey, **kwargs: Any
    ) -> AsyncIterator[SubjectClient]:
        async with SubjectClient(
            self.public_address, subject_id, key, ca_pem=self.ca_pem, **kwargs
        ) as client:
            yield client

    @contextlib.asynccontextmanager
    async def requester_client(
        self, home: MemberHome | None = None, **kwargs: Any
    ) -> AsyncIterator[RequesterClient]:
        home = home or self.requester_home()
        async with RequesterClient(
            self.address,
            home.member_id,
            home.signing_key(),
            tls=home.tls(),
            directory_key=home.directory_key(),
            **kwargs,
        ) as client:
            yield client


def rss_bytes(pid: int) -> int:
    """Resident memory of a process now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture(scope="session")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = Path(tmp_path_factory.mktemp("attacked")) / "fed"
    fed = federation.start(root, subjects=200, seed=SEED, nodes=NODES, tied=True)
    try:
        yield Target(fed)
    finally:
        fed.stop()
