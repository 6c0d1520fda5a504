"""Running a credex gRPC server as a process: readiness file, clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import grpc

STOP_GRACE_S = 2.0

log = logging.getLogger(__name__)


def write_ready_file(path: Path, address: str) -> None:
    """Atomically publish the bound address so a launcher knows the server is ready."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(address + "\n")
    os.replace(tmp, path)


def remove_ready_file(path: Path) -> None:
    path.unlink(missing_ok=True)


async def run_until_stopped(
    server: grpc.aio.Server, ready_file: Path | None, address: str, name: str
) -> None:
    """Serve until SIGTERM or SIGINT, then stop with a short grace period."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready_file is not None:
        write_ready_file(ready_file, address)
    log.info("%s serving on %s", name, address)
    try:
        await stop.wait()
        log.info("%s stopping", name)
    finally:
        if ready_file is not None:
            remove_ready_file(ready_file)
        await server.stop(STOP_GRACE_S)
