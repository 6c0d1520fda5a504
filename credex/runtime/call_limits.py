"""Limits on the calls of every service of a server, health and reflection included: at most
`per_caller` calls in progress from one caller (a member by its certificate, or an address),
and a request message that must arrive within `read_timeout_s` of the call's start.

gRPC takes one of the server's `max_concurrent_calls` slots when a call's headers arrive and
starts a unary handler only once the whole request has arrived, so a caller that sends
headers (or half a message) and stalls would hold slots for as long as it likes, and a few
such callers would hold them all. Here every call is admitted first: over its caller's share
it is refused at once, and a unary request is read by us, under a deadline.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from credex.runtime.peers import caller_id

Context = grpc.aio.ServicerContext[Any, Any]


if TYPE_CHECKING:  # generic in the stubs only
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


class CallLimits(_Interceptor):
    """The server interceptor that admits every call; see the module doc."""

    def __init__(self, *, per_caller: int, read_timeout_s: float) -> None:
        self.per_caller = per_caller
        self.read_timeout_s = read_timeout_s
        self._calls: dict[str, int] = {}
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self.refused = 0

    @property
    def in_progress(self) -> int:
        return sum(self._calls.values())

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = str(details.method)
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            wrapped = self._wrapped[method] = self._wrap(handler)
        return wrapped

    # --- admission ------------------------------------------------------------------------

    async def _admit(self, context: Context) -> str:
        caller = caller_id(context)
        if self._calls.get(caller, 0) >= self.per_caller:
            self.refused += 1
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"more than {self.per_caller} calls in progress from this caller",
            )
        self._calls[caller] = self._calls.get(caller, 0) + 1
        return caller

    def _leave(self, caller: str) -> None:
        left = self._calls.get(caller, 1) - 1
        if left > 0:
            self._calls[caller] = left
        else:
            self._calls.pop(caller, None)

    async def _read_one(self, requests: AsyncIterator[Any], context: Context) -> Any:
        try:
            return await asyncio.wait_for(anext(requests), self.read_timeout_s)
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the request did not arrive within {self.read_timeout_s:g}s",
            )
        except StopAsyncIteration:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no request message")
        raise AssertionError("unreachable: abort raises")

    # --- wrapping each kind of handler ----------------------------------------------------

    def _wrap(self, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        """The same method, taking its requests as a stream (what is on the wire is the
        same), so that it is admitted before anything is read."""
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._admitted(handler.unary_unary, unary=True), **kwargs
            )
        if handler.unary_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._admitted(handler.unary_stream, unary=True), **kwargs
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._admitted(handler.stream_unary, unary=False), **kwargs
            )
        return grpc.stream_stream_rpc_method_handler(
            self._admitted(handler.stream_stream, unary=False), **kwargs
        )

    def _admitted(self, behaviour: Any, *, unary: bool) -> Any:
        """`behaviour` run once its call is admitted, given its one request read under the
        deadline (`unary`) or the stream of them; a generator of responses stays one (a
        behaviour that sends with context.write, as health's Watch does, stays a call)."""

        async def request(requests: AsyncIterator[Any], context: Context) -> Any:
            return await self._read_one(requests, context) if unary else requests

        if inspect.isasyncgenfunction(behaviour):

            async def generated(requests: AsyncIterator[Any], context: Context) -> Any:
                caller = await self._admit(context)
                try:
                    async for response in behaviour(await request(requests, context), context):
                        yield response
                finally:
                    self._leave(caller)

            return generated

        async def called(requests: AsyncIterator[Any], context: Context) -> Any:
            caller = await self._admit(context)
            try:
                return await behaviour(await request(requests, context), context)
            finally:
                self._leave(caller)

        return called
