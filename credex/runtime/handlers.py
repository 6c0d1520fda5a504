"""What every RPC handler gets: refusals mapped to their gRPC status (see credex.protocol.errors), a
request id for its log lines, its writes on disk before the answer leaves, and one access line
and metrics sample per call."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

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
from credex.runtime.peers import caller_id, peer_or_unknown
from credex.runtime.ports import UnreadRequest
from credex.runtime.refusals import CallerGuard

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[..., Awaitable[T]]


def rpc_handler(handler: Handler[T]) -> Handler[T]:
    """Wrap a servicer method: CredexError → its status; undecodable body → INVALID_ARGUMENT;
    anything else → INTERNAL without leaking internals. A servicer with `callers` (a
    CallerGuard) turns away a caller refused too often before its request is even parsed,
    and audits requests refused unread in counted entries; one with `check_peer` has it judge
    the caller's certificate next (revoked ones are refused). One with `commits` (a
    GroupCommit) has its writes on disk before the answer leaves; one with `metrics` counts
    the answer by method, status code and refusal reason. Every call gets a request id (the
    caller's x-request-id if it sent one) and one access log line."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> T:
        started = time.perf_counter()
        code, reason = grpc.StatusCode.OK, ""
        token = REQUEST_ID.set(incoming_request_id(context))
        callers: CallerGuard | None = getattr(self, "callers", None)
        caller = caller_id(context) if callers is not None else ""
        logged = True  # a turned-away call gets an access line once a window, not every time
        try:
            try:
                if callers is not None:
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
                check_peer = getattr(self, "check_peer", None)
                if check_peer is not None:  # a revoked certificate is refused on every call
                    check_peer(context)
                if isinstance(request, UnreadRequest):
                    request = _read(callers, handler.__name__, request, caller)
                return await handler(self, request, context)
            finally:  # nothing a reply or refusal reports (audit entries too) is left volatile
                commits = getattr(self, "commits", None)
                if commits is not None:
                    try:
                        await commits.flush()
                    except OSError:  # the disk failed (health says so): promise nothing
                        raise refused(
                            Reason.UNAVAILABLE, "the server cannot make its writes durable"
                        ) from None
        except CredexError as err:
            code, reason = err.code, str(err.reason)
            if callers is not None and not isinstance(err, _TurnedAway):
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
            metrics = getattr(self, "metrics", None)
            if metrics is not None:
                metrics.observe(handler.__name__, code, reason, seconds)
            if logged:
                log_access(handler.__name__, code, reason, seconds, peer_or_unknown(context))
            REQUEST_ID.reset(token)
        raise AssertionError("unreachable: abort raises")

    return wrapper


class _TurnedAway(ResourceExhausted):
    """A caller over its refusal budget, sent away unread."""


def _read(callers: CallerGuard | None, method: str, request: UnreadRequest, caller: str) -> Any:
    try:
        return request.read()
    except DecodeError as exc:
        err = refused(Reason.MALFORMED, f"undecodable request: {exc}")
        if callers is not None:  # refusals before any handler ran are audited too (counted)
            callers.refused_unread(method, err, caller)
        raise err from None


async def _abort(context: grpc.aio.ServicerContext[Any, Any], err: CredexError) -> None:
    trailers: list[tuple[str, str]] = [(REASON_KEY, str(err.reason))]
    if err.retry_after_s is not None:
        trailers.append((RETRY_KEY, str(max(1, round(err.retry_after_s * 1000)))))
    await context.abort(
        err.code, f"{err.reason}: {bounded(err.message)}", trailing_metadata=tuple(trailers)
    )
