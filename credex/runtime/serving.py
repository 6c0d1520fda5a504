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
# The pid of a process (a test run, a launcher) that this server must not outlive, however
# that process ends; inherited by every server it starts, directly or through other commands.
STOP_WITH_ENV = "CREDEX_STOP_WITH_PID"
STOP_WITH_CHECK_S = 0.5


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
    watch = asyncio.create_task(_stop_with(stop, os.environ.get(STOP_WITH_ENV, "")))
    if ready_file is not None:
        write_ready_file(ready_file, info)
    log.info("%s serving on %s", name, ", ".join(f"{k}={v}" for k, v in info.items()))
    try:
        await stop.wait()
        log.info("%s stopping", name)
    finally:
        watch.cancel()
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


def _started(pid: int) -> str | None:
    """A process's start time in clock ticks since boot, None once it is gone or a zombie:
    with the pid it names one process, so a recycled pid is never mistaken for it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


async def _stop_with(stop: asyncio.Event, pid_text: str) -> None:
    """With CREDEX_STOP_WITH_PID set, stop once that process has ended (even by SIGKILL)."""
    if not pid_text.isdigit() or _started(os.getpid()) is None:
        return  # nothing to watch, or no /proc to watch it through (not Linux)
    pid = int(pid_text)
    started = _started(pid)
    while started is not None:
        await asyncio.sleep(STOP_WITH_CHECK_S)
        if _started(pid) != started:
            break
    log.warning("process %d, which this server must not outlive, has ended; stopping", pid)
    stop.set()
