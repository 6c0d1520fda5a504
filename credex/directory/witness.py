"""The directory as the witness of every node's audit checkpoints, and the nodes as witnesses
of the directory's (see credex.runtime.witness)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from credex.directory.registry import Registry
from credex.protocol.channels import ChannelPool
from credex.protocol.clock import Clock
from credex.protocol.errors import Reason, call_rpc, refused
from credex.runtime.peers import peer_member_id
from credex.runtime.witness import Send, WitnessStore
from credex.v1 import federation_pb2, member_pb2, node_pb2
from credex.v1.common_pb2 import Signed
from credex.v1.node_pb2_grpc import NodeServiceStub

Context = grpc.aio.ServicerContext[Any, Any]


class NodeCheckpoints:
    """Keeps each node's newest audit checkpoints, handed over by that node alone."""

    def __init__(self, store: WitnessStore, registry: Registry, clock: Clock) -> None:
        self.store = store
        self._registry = registry
        self._clock = clock

    def accept(
        self, request: federation_pb2.WitnessNodeCheckpointRequest, context: Context
    ) -> federation_pb2.WitnessNodeCheckpointResponse:
        """The caller's own checkpoint, checked against its registered keys (a retired one
        only within its overlap); RATE_LIMITED, PEER_MISMATCH, CHECKPOINT_STALE and the like
        otherwise."""
        peer = peer_member_id(context)
        self.store.throttle(peer)
        node = self._registry.get(peer)
        if node is None or node.role != member_pb2.MemberRole.MEMBER_ROLE_NODE:
            raise refused(
                Reason.WRONG_ROLE, f"{peer!r} is not a node: only nodes' logs are witnessed"
            )
        if not node.active:
            raise refused(Reason.MEMBER_SUSPENDED, f"{node.member_id} is {node.status_name}")
        seq = self.store.keep(request.checkpoint, node.member_id, node.keys_at(self._clock()))
        return federation_pb2.WitnessNodeCheckpointResponse(witnessed_seq=seq)


def node_witnesses(registry: Registry, channels: ChannelPool) -> Callable[[], dict[str, Send]]:
    """Every active node with an address, as a witness of the directory's log."""

    def current() -> dict[str, Send]:
        return {
            node.member_id: _sender(channels, node.endpoint)
            for node in registry.nodes()
            if node.active and node.endpoint
        }

    return current


def _sender(channels: ChannelPool, endpoint: str) -> Send:
    async def send(signed: Signed, deadline_s: float) -> int:
        stub = NodeServiceStub(channels.get(endpoint))
        response = await call_rpc(
            stub.WitnessDirectoryCheckpoint,
            node_pb2.WitnessDirectoryCheckpointRequest(checkpoint=signed),
            deadline_s=deadline_s,
        )
        return int(response.witnessed_seq)

    return send
