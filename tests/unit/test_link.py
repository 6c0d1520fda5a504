"""credex.sdk.link: one channel per TLS identity, every channel closed with the link, and a
failed call raised as the CredexError of its status."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest

from credex.protocol.errors import Unavailable
from credex.protocol.tls import TlsIdentity
from credex.sdk.link import DirectoryLink
from credex.v1 import member_pb2


def test_a_link_dials_again_only_when_its_identity_changed_and_closes_every_channel() -> None:
    async def scenario() -> None:
        identity = [TlsIdentity(b"first")]
        link = DirectoryLink("127.0.0.1:1", lambda: identity[0])
        first = link.channel
        assert link.channel is first  # the same identity: the same channel
        identity[0] = TlsIdentity(b"renewed")
        second = link.channel
        assert second is not first
        assert link.channel is second
        await link.close()
        shut = grpc.ChannelConnectivity.SHUTDOWN
        assert first.get_state() == shut and second.get_state() == shut

    asyncio.run(scenario())


def test_a_call_nobody_answers_is_a_credex_unavailable_within_its_deadline() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def scenario() -> None:
        async with DirectoryLink(f"127.0.0.1:{port}", TlsIdentity(b"ca")) as link:
            with pytest.raises(Unavailable):
                await link.call(link.members.ListMembers, member_pb2.ListMembersRequest())

    asyncio.run(scenario())
