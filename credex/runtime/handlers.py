"""What every RPC handler gets: refusals mapped to their gRPC status (see credex.protocol.errors), a
request id for its log lines, its writes on disk before the answer leaves, and one access line
and metrics sample per call."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError

from credex.protocol.errors import (
    REASON_KEY,
    RETRY_KEY,
    CredexError,
    Reason,
    ResourceExhausted,
    bounded,
    refused,
)
from credex.runtime.logs import REQUEST_ID, incoming_request_id, log_access
from credex.runtime.metrics import Metrics
from credex.runtime.peers import caller_id, peer_or_unknown
from credex.runtime.ports import UnreadRequest
from credex.runtime.refusals import CallerGuard
from credex.runtime.storage import Storage

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class RpcRuntime:
    """What every call of a service relies on, given to the service explicitly: `storage` has
    its writes on disk before the answer leaves, `metrics` counts each answer by method, code
    and reason, `callers` turns away a caller refused too often (and audits requests refused
    unread), `check_peer` (if set) refuses a caller's certificate, e.g. a revoked one."""

    storage: Storage
    metrics: Metrics
    callers: CallerGuard
    check_peer: Callable[[Context], None] | None = None


class Served(Protocol):
    """A servicer whose methods `rpc_handler` wraps: it names its runtime."""

    @property
    def runtime(self) -> RpcRuntime: ...


S = TypeVar("S", bound=Served)
Q = TypeVar("Q")
T = TypeVar("T")


def rpc_handler(
    handler: Callable[[S, Q, Context], Awaitable[T]],
) -> Callable[[S, Q, Context], Awaitable[T]]:
    """Wrap a servicer method: CredexError → its status; undecodable body → INVALID_ARGUMENT;
    anything else → INTERNAL without leaking internals. With the servicer's RpcRuntime: a
    caller refused too often is turned away before its request is even parsed, the caller's
    certificate is judged next, the writes are on disk before the answer leaves, and the
    answer is counted. Every call gets a request id (the caller's x-request-id if it sent
    one) and one access log line. A servicer without a runtime does not type-check."""

    @functools.wraps(handler)
    async def wrapper(self: S, request: Q, context: Context) -> T:
        started = time.perf_counter()
        code, reason = grpc.StatusCode.OK, ""
        token = REQUEST_ID.set(incoming_request_id(context))
        runtime = self.runtime
        callers = runtime.callers
        caller = caller_id(context)
        logged = True  # a turned-away call gets an access line once a window, not every time
        try:
            try:
                wait = callers.wait(caller)
                if wait:
                    turned = _TurnedAway(
                        Reason.RATE_LIMITED,
                        "too many of this caller's requests were refused; slow down",
                        retry_after_s=wait,
                    )
                    callers.charge(caller)
                    logged = callers.refused_unread(handler.__name__, turned, caller)
                    raise turned
                if runtime.check_peer is not None:  # a revoked certificate, on every call
                    runtime.check_peer(context)
                if isinstance(request, UnreadRequest):
                    request = _read(callers, handler.__name__, request, caller)
                return await handler(self, request, context)
            finally:  # nothing a reply or refusal reports (audit entries too) is left volatile
                try:
                    await runtime.storage.durable()
                except OSError:  # the disk failed (health says so): promise nothing
                    raise refused(
                        Reason.UNAVAILABLE, "the server cannot make its writes durable"
                    ) from None
        except CredexError as err:
            code, reason = err.code, str(err.reason)
            if not isinstance(err, _TurnedAway):
                callers.charge(caller)
            await _abort(context, err)
        except DecodeError as exc:
            code, reason = grpc.StatusCode.INVALID_ARGUMENT, str(Reason.MALFORMED)
            await _abort(context, refused(Reason.MALFORMED, f"undecodable message: {exc}"))
        except grpc.aio.AbortError:
            code = grpc.StatusCode.UNKNOWN
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code, reason = grpc.StatusCode.INTERNAL, str(Reason.INTERNAL)
            log.exception("internal error in %s", handler.__name__)
            await _abort(context, refused(Reason.INTERNAL, "internal error"))
        finally:
            seconds = time.perf_counter() - started
            runtime.metrics.observe(handler.__name__, code, reason, seconds)
            if logged:
                log_access(handler.__name__, code, reason, seconds, peer_or_unknown(context))
            REQUEST_ID.reset(token)
        raise AssertionError("unreachable: abort raises")

    return wrapper


class _TurnedAway(ResourceExhausted):
    """A caller over its refusal budget, sent away unread."""


def _read(callers: CallerGuard, method: str, request: UnreadRequest, caller: str) -> Any:
    try:
        return request.read()
    except DecodeError as exc:
        err = refused(Reason.MALFORMED, f"undecodable request: {exc}")
        callers.refused_unread(method, err, caller)  # refused before any handler: audited too
        raise err from None


async def _abort(context: Context, err: CredexError) -> None:
    trailers: list[tuple[str, str]] = [(REASON_KEY, str(err.reason))]
    if err.retry_after_s is not None:
        trailers.append((RETRY_KEY, str(max(1, round(err.retry_after_s * 1000)))))
    await context.abort(
        err.code, f"{err.reason}: {bounded(err.message)}", trailing_metadata=tuple(trailers)
    )
