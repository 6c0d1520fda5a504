"""The one way a member, a subject or a node talks to the directory: one channel that only the
directory's certificate satisfies, a typed stub per service of the contract, and every call
under a deadline with its failure raised as the CredexError of its status.

A link that is given a function for its TLS identity dials again, with the new identity, the
first time a call finds the identity changed (a renewed or rotated certificate); calls under
way finish on the channel they started on, which closes once they have (within the link's
deadline), so that a link never holds more than the one channel in use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar

import grpc

from credex.protocol.channels import open_directory_channel
from credex.protocol.errors import call_rpc
from credex.protocol.tls import TlsIdentity
from credex.sdk.retry import send_until_answered
from credex.v1.enrollment_pb2_grpc import EnrollmentServiceStub
from credex.v1.federation_pb2_grpc import FederationServiceStub
from credex.v1.member_pb2_grpc import MemberServiceStub
from credex.v1.requester_pb2_grpc import RequesterServiceStub
from credex.v1.subject_pb2_grpc import SubjectServiceStub

if TYPE_CHECKING:
    from credex.v1.enrollment_pb2_grpc import EnrollmentServiceAsyncStub
    from credex.v1.federation_pb2_grpc import FederationServiceAsyncStub
    from credex.v1.member_pb2_grpc import MemberServiceAsyncStub
    from credex.v1.requester_pb2_grpc import RequesterServiceAsyncStub
    from credex.v1.subject_pb2_grpc import SubjectServiceAsyncStub

Q = TypeVar("Q")
A = TypeVar("A")

DEFAULT_DEADLINE_S = 30.0


class AsyncClosing:
    """`async with` closes it, however the block ends."""

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class DirectoryLink(AsyncClosing):
    """A channel to the directory at `target` and the contract's services over it.

    The member port serves `members`, `requesters`, `federation` and `enrollment` (renewal);
    the public port serves `subjects` and `enrollment`, and needs only the CA certificate
    (`TlsIdentity(ca_pem)`)."""

    def __init__(
        self,
        target: str,
        tls: TlsIdentity | Callable[[], TlsIdentity],
        *,
        deadline_s: float = DEFAULT_DEADLINE_S,
    ) -> None:
        self.target = target
        self.deadline_s = deadline_s
        self._tls = tls if callable(tls) else (lambda: tls)
        self._open: tuple[TlsIdentity, grpc.aio.Channel] | None = None
        self._closing: set[asyncio.Task[None]] = set()  # retired channels, closing

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel for the current TLS identity, dialled again when the identity changed."""
        tls = self._tls()
        if self._open is None or self._open[0] is not tls:
            if self._open is not None:  # calls under way get their deadline to finish
                retired = self._open[1].close(grace=self.deadline_s)
                task = asyncio.get_running_loop().create_task(retired)
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            self._open = (tls, open_directory_channel(self.target, tls))
        return self._open[1]

    @property
    def members(self) -> MemberServiceAsyncStub:
        return MemberServiceStub(self.channel)

    @property
    def requesters(self) -> RequesterServiceAsyncStub:
        return RequesterServiceStub(self.channel)

    @property
    def federation(self) -> FederationServiceAsyncStub:
        return FederationServiceStub(self.channel)

    @property
    def subjects(self) -> SubjectServiceAsyncStub:
        return SubjectServiceStub(self.channel)

    @property
    def enrollment(self) -> EnrollmentServiceAsyncStub:
        return EnrollmentServiceStub(self.channel)

    async def call(
        self,
        rpc: grpc.aio.UnaryUnaryMultiCallable[Q, A],
        request: Q,
        *,
        deadline_s: float | None = None,
        until_answered: bool = False,
    ) -> A:
        """`rpc(request)` within `deadline_s` (the link's default if None). With
        `until_answered`, the very same request is sent again while the directory is
        unreachable or slow (for requests the directory answers alike each time)."""
        deadline = self.deadline_s if deadline_s is None else deadline_s
        if until_answered:
            return await send_until_answered(lambda: rpc(request, timeout=deadline))
        return await call_rpc(rpc, request, deadline_s=deadline)

    async def close(self) -> None:
        current, self._open = self._open, None
        if current is not None:
            await current[1].close(None)
        await asyncio.gather(*self._closing, return_exceptions=True)
