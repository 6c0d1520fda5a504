"""What the identity attacks share: members of their own obtained through the target's real
enrollment service, and raw calls that report the status and reason a server answered."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from credex.directory import admin as directory_admin
from credex.protocol.channels import open_channel, open_directory_channel
from credex.protocol.keys import SigningKey
from credex.protocol.tls import TlsIdentity
from credex.sdk.enrollment import EnrollmentFiles, enroll
from credex.sdk.link import DirectoryLink
from credex.v1 import member_pb2, node_pb2
from credex.v1.member_pb2_grpc import MemberServiceStub
from credex.v1.node_pb2_grpc import NodeServiceStub
from tests.attacks.conftest import Target
from tests.harness import trailer_map

OK = ("OK", grpc.StatusCode.OK)


@dataclass
class Member:
    """A member the attack enrolled for itself: its keys and certificate on disk."""

    member_id: str
    key: SigningKey
    folder: Path

    @property
    def files(self) -> EnrollmentFiles:
        return EnrollmentFiles(
            tls_key=self.folder / "tls.key",
            cert=self.folder / "tls.crt",
            ca=self.folder / "ca.crt",
            directory_key=self.folder / "directory.pub",
        )

    def tls(self) -> TlsIdentity:
        files = self.files
        return TlsIdentity.load(files.ca, files.cert, files.tls_key)


def enroll_member(
    target: Target,
    folder: Path,
    member_id: str,
    *,
    role: str = "requester",
    hosts: list[str] | None = None,
    categories: tuple[str, ...] = ("financial",),
) -> Member:
    """The operator issues a token for `member_id` (and, for a node, `hosts`); the member
    makes its keys and redeems the token at the directory's public port."""
    token = directory_admin.create_enrollment_token(
        target.settings,
        member_id=member_id,
        role=role,
        categories=categories if role == "node" else (),
        hosts=hosts,
    )
    member = Member(member_id, SigningKey.generate(), folder)
    folder.mkdir(parents=True, exist_ok=True)
    asyncio.run(
        enroll(
            public_address=target.public_address,
            ca_pem=target.ca_pem,
            token=token,
            member_id=member_id,
            role=role,
            signing_key=member.key,
            name=member_id,
            files=member.files,
        )
    )
    return member


def outcome(exc: grpc.aio.AioRpcError) -> tuple[str, grpc.StatusCode]:
    """The credex reason (or "-") and the status code of a failed call."""
    return trailer_map(exc).get("credex-reason", "-"), exc.code()


async def directory_call(
    address: str, tls: TlsIdentity, call: Callable[[DirectoryLink], Any]
) -> tuple[str, grpc.StatusCode]:
    async with DirectoryLink(address, tls) as link:
        try:
            await call(link)
        except grpc.aio.AioRpcError as exc:
            return outcome(exc)
    return OK


def list_members(target: Target, tls: TlsIdentity) -> tuple[str, grpc.StatusCode]:
    return asyncio.run(
        directory_call(
            target.address,
            tls,
            lambda link: link.members.ListMembers(member_pb2.ListMembersRequest(), timeout=10),
        )
    )


def describe_node(target: Target, node_id: str, tls: TlsIdentity) -> tuple[str, grpc.StatusCode]:
    """Call a node directly with `tls` (nodes answer only the directory)."""

    async def call() -> tuple[str, grpc.StatusCode]:
        async with open_channel(target.node_address(node_id), tls) as channel:
            try:
                await NodeServiceStub(channel).Describe(node_pb2.DescribeRequest(), timeout=10)
            except grpc.aio.AioRpcError as exc:
                return outcome(exc)
        return OK

    return asyncio.run(call())


def registry_snapshot(target: Target) -> member_pb2.RegistrySnapshot:
    """The directory-signed registry as a node fetches it (asked with the bank's certificate)."""

    async def call() -> member_pb2.RegistrySnapshot:
        async with open_directory_channel(target.address, target.requester_home().tls()) as ch:
            response = await MemberServiceStub(ch).GetRegistry(
                member_pb2.GetRegistryRequest(), timeout=10
            )
        return member_pb2.RegistrySnapshot.FromString(response.snapshot.body)

    return asyncio.run(call())


def poll(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Wait until `check()` holds; fail naming `what` after a generous deadline."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s:g}s: {what}"
        time.sleep(0.2)


@contextlib.contextmanager
def removed_afterwards(target: Target, *member_ids: str) -> Iterator[None]:
    """Members an attack enrolled are removed when it ends, however it ends."""
    try:
        yield
    finally:
        for member_id in member_ids:
            with contextlib.suppress(Exception):
                directory_admin.set_member_status(target.settings, member_id, "removed")
