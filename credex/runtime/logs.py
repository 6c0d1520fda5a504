"""Server logs: one event per line, JSON or readable text, and every line written while a
request is handled carries its request id (the directory passes its own to the nodes it asks,
so one profile can be followed across servers).

Nothing secret is ever handed to a logger: no key, no consent signature, no record value
disclosed to anyone. (A node's own log names what broke in its operator's adapter, quoting
the offending value of the operator's own row with its control characters escaped; rows of
subjects other than the one asked about are counted there, never quoted.)
The access line of a request names its method, status code, reason, duration and the caller.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar
from typing import Any

import grpc
from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_KEY = "x-request-id"
REQUEST_ID: ContextVar[str] = ContextVar("credex_request_id", default="-")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

access = logging.getLogger("credex.access")


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def setup_logging(log_format: str = "text", level: str = "info") -> None:
    """Route every logger to stderr in `log_format` at `level` (replacing earlier setup)."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestId())
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{request_id}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def incoming_request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's request id when it sent a well-formed one, else a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _SAFE_ID.match(value):
            return value
    return uuid.uuid4().hex[:16]


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata that carries the current request id to the server called next."""
    current = REQUEST_ID.get()
    return ((REQUEST_ID_KEY, current),) if current != "-" else ()


def log_access(method: str, code: grpc.StatusCode, reason: str, seconds: float, peer: str) -> None:
    ms = round(seconds * 1000, 2)
    access.info(
        "%s %s%s %.1fms from %s",
        method,
        code.name,
        f" {reason}" if reason else "",
        ms,
        peer,
        extra={"method": method, "code": code.name, "reason": reason, "ms": ms, "peer": peer},
    )
