"""What every member uses on the member port: the registry (listed, and signed for nodes and
requesters to work from) and its own key rotation. Only members in good standing are served."""

from __future__ import annotations

from typing import Any

import grpc

from credex.directory.identity import IdentityDesk
from credex.directory.publication import Publisher
from credex.directory.registry import Registry
from credex.protocol.errors import Reason, refused
from credex.protocol.keys import SigningKey
from credex.runtime.handlers import RpcRuntime, rpc_handler
from credex.runtime.peers import peer_identity
from credex.v1 import member_pb2, member_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def active_peer(context: Context, registry: Registry, directory_id: str) -> str:
    """The caller, who must be a member in good standing (a valid certificate is not enough
    once a member is suspended or removed) or the directory's own operator."""
    identity = peer_identity(context)
    peer = identity.member_id
    if identity.directory and peer == directory_id:
        return peer
    member = registry.get(peer)
    if member is None or not member.active:
        status = member.status_name if member else "not a member"
        raise refused(Reason.MEMBER_SUSPENDED, f"{peer!r} is {status}")
    return peer


class MemberService(member_pb2_grpc.MemberServiceServicer):
    def __init__(
        self,
        *,
        runtime: RpcRuntime,
        key: SigningKey,
        registry: Registry,
        publisher: Publisher,
        identity: IdentityDesk,
        directory_id: str,
    ) -> None:
        self.runtime = runtime  # see rpc_handler
        self._key = key
        self._registry = registry
        self._publisher = publisher
        self._identity = identity
        self._directory_id = directory_id

    @rpc_handler
    async def ListMembers(
        self, request: member_pb2.ListMembersRequest, context: Context
    ) -> member_pb2.ListMembersResponse:
        active_peer(context, self._registry, self._directory_id)
        return member_pb2.ListMembersResponse(
            members=[m.to_proto() for m in self._registry.all()],
            directory_public_key=self._key.public.raw,
        )

    @rpc_handler
    async def GetRegistry(
        self, request: member_pb2.GetRegistryRequest, context: Context
    ) -> member_pb2.GetRegistryResponse:
        active_peer(context, self._registry, self._directory_id)
        return self._publisher.registry(request.known_version)

    @rpc_handler
    async def RotateKey(
        self, request: member_pb2.RotateKeyRequest, context: Context
    ) -> member_pb2.RotateKeyResponse:
        """A new signing key and certificate for the caller (see IdentityDesk.rotate)."""
        return self._identity.rotate(request, context)
