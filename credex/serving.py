"""Running a credex gRPC server as a process: readiness file, clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


def write_ready_file(path: Path, info: dict[str, str]) -> None:
    """Atomically publish the bound addresses (JSON) so a launcher knows the server is ready."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info) + "\n")
    os.replace(tmp, path)


def read_ready_file(path: Path) -> dict[str, str]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a ready file")
    return {str(k): str(v) for k, v in data.items()}


def remove_ready_file(path: Path) -> None:
    path.unlink(missing_ok=True)


async def run_until_stopped(
    servers: Sequence[grpc.aio.Server],
    ready_file: Path | None,
    info: dict[str, str],
    name: str,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    drain: Callable[[], Awaitable[None]] | None = None,
    grace_s: float = 10.0,
    drain_delay_s: float = 0.0,
) -> None:
    """Serve until SIGTERM or SIGINT; then `drain` (health turns NOT_SERVING), keep serving
    `drain_delay_s` so load balancers notice, refuse new calls, let those in flight finish
    within the grace period, and `on_stop`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready_file is not None:
        write_ready_file(ready_file, info)
    log.info("%s serving on %s", name, ", ".join(f"{k}={v}" for k, v in info.items()))
    try:
        await stop.wait()
        log.info("%s stopping", name)
    finally:
        if ready_file is not None:
            remove_ready_file(ready_file)
        if drain is not None:
            try:
                await drain()
            except Exception:  # stopping must go on whatever the health service does
                log.exception("draining failed")
        if drain_delay_s > 0:
            log.info("%s still serving for %gs while health is NOT_SERVING", name, drain_delay_s)
            await asyncio.sleep(drain_delay_s)
        await asyncio.gather(*(server.stop(grace_s) for server in servers))
        if on_stop is not None:
            await on_stop()
