"""A node as the witness of the directory's audit checkpoints, and the directory as the
witness of the node's (see credex.runtime.witness)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from credex.protocol.keys import VerifyKey
from credex.runtime.peers import require_directory
from credex.runtime.witness import Send, WitnessStore
from credex.sdk.link import DirectoryLink
from credex.v1 import federation_pb2, node_pb2
from credex.v1.common_pb2 import Signed

Context = grpc.aio.ServicerContext[Any, Any]


class DirectoryCheckpoints:
    """Keeps the directory's newest audit checkpoints, handed over by the directory alone."""

    def __init__(self, store: WitnessStore, directory_id: str, directory_key: VerifyKey) -> None:
        self.store = store
        self._directory_id = directory_id
        self._directory_key = directory_key

    def accept(
        self, request: node_pb2.WitnessDirectoryCheckpointRequest, context: Context
    ) -> node_pb2.WitnessDirectoryCheckpointResponse:
        require_directory(context, self._directory_id)
        self.store.throttle(self._directory_id)
        seq = self.store.keep(request.checkpoint, self._directory_id, [self._directory_key])
        return node_pb2.WitnessDirectoryCheckpointResponse(witnessed_seq=seq)


def directory_witness(link: DirectoryLink) -> Callable[[], dict[str, Send]]:
    """The directory, over the node's link to it, as the witness of this node's log."""

    async def send(signed: Signed, deadline_s: float) -> int:
        response = await link.call(
            link.federation.WitnessNodeCheckpoint,
            federation_pb2.WitnessNodeCheckpointRequest(checkpoint=signed),
            deadline_s=deadline_s,
        )
        return int(response.witnessed_seq)

    return lambda: {"directory": send}
