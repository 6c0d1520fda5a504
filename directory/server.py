"""Assemble the directory from its home folder and run it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from credex.audit import AuditLog
from credex.clock import Clock, system_clock
from credex.db import open_database
from credex.freshness import NonceStore
from credex.keys import SigningKey
from credex.serving import run_until_stopped
from credex.transport import add_service, bind, create_server
from credex.v1 import directory_pb2
from directory.config import DirectorySettings
from directory.consent_store import ConsentStore
from directory.locator import Locator
from directory.registry import Registry
from directory.router import Router
from directory.service import DirectoryService
from directory.verify import RequestVerifier


@dataclass
class RunningDirectory:
    server: grpc.aio.Server
    address: str
    router: Router

    async def stop(self, grace: float | None = None) -> None:
        await self.server.stop(grace)
        await self.router.close()


def build_service(
    settings: DirectorySettings, *, clock: Clock = system_clock
) -> tuple[DirectoryService, Router]:
    key = SigningKey.load(settings.key_path)
    db = open_database(settings.db_path)
    registry, locator, consents = Registry(db), Locator(db), ConsentStore(db)
    router = Router(
        key=key,
        clock=clock,
        deadline_s=settings.node_deadline_s,
        attestation_ttl_s=settings.attestation_ttl_s,
    )
    verifier = RequestVerifier(
        registry=registry,
        locator=locator,
        consents=consents,
        nonces=NonceStore(db),
        clock=clock,
        max_request_lifetime_s=settings.max_request_lifetime_s,
    )
    service = DirectoryService(
        key=key,
        registry=registry,
        locator=locator,
        consents=consents,
        verifier=verifier,
        router=router,
        audit=AuditLog(db, clock),
        clock=clock,
    )
    return service, router


async def start_directory(
    settings: DirectorySettings, listen: str = "127.0.0.1:0", *, clock: Clock = system_clock
) -> RunningDirectory:
    service, router = build_service(settings, clock=clock)
    server = create_server()
    add_service(server, service, directory_pb2.DESCRIPTOR.services_by_name["DirectoryService"])
    port = bind(server, listen)
    await server.start()
    host = listen.rsplit(":", 1)[0]
    return RunningDirectory(server=server, address=f"{host}:{port}", router=router)


async def serve(settings: DirectorySettings, listen: str, ready_file: Path | None) -> None:
    directory = await start_directory(settings, listen)
    try:
        await run_until_stopped(directory.server, ready_file, directory.address, "directory")
    finally:
        await directory.router.close()
