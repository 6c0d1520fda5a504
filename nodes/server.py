"""Assemble a node from its config and run it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from credex.audit import AuditLog
from credex.clock import Clock, system_clock
from credex.db import open_database, open_readonly
from credex.freshness import NonceStore
from credex.keys import SigningKey, load_public
from credex.serving import run_until_stopped
from credex.transport import add_service, bind, create_server
from credex.v1 import node_pb2, node_pb2_grpc
from nodes.adapters import RecordSource
from nodes.config import NodeConfig
from nodes.service import NodeService
from nodes.verify import QueryVerifier


@dataclass
class RunningNode:
    server: grpc.aio.Server
    address: str

    async def stop(self, grace: float | None = None) -> None:
        await self.server.stop(grace)


def build_service(
    config: NodeConfig, *, clock: Clock = system_clock, key: SigningKey | None = None
) -> NodeService:
    """Open keys and databases and check every adapter; raises on any misconfiguration."""
    key = key or SigningKey.load(config.signing_key)
    directory_key = load_public(config.directory_key)
    source = RecordSource(open_readonly(config.records_db), config.adapters)
    source.validate()
    state = open_database(config.state_db)
    verifier = QueryVerifier(
        node_id=config.node_id,
        directory_key=directory_key,
        served=source.categories,
        nonces=NonceStore(state),
        clock=clock,
    )
    return NodeService(
        config=config,
        key=key,
        verifier=verifier,
        source=source,
        audit=AuditLog(state, clock),
        clock=clock,
    )


async def start_node(
    config: NodeConfig,
    listen: str = "127.0.0.1:0",
    *,
    clock: Clock = system_clock,
    service: node_pb2_grpc.NodeServiceServicer | None = None,
) -> RunningNode:
    server = create_server()
    add_service(
        server,
        service or build_service(config, clock=clock),
        node_pb2.DESCRIPTOR.services_by_name["NodeService"],
    )
    port = bind(server, listen)
    await server.start()
    host = listen.rsplit(":", 1)[0]
    return RunningNode(server=server, address=f"{host}:{port}")


async def serve(config: NodeConfig, listen: str, ready_file: Path | None) -> None:
    node = await start_node(config, listen)
    await run_until_stopped(node.server, ready_file, node.address, f"node {config.node_id}")
