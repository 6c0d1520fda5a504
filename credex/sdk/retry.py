"""Sending one identity request (enrollment, key rotation, renewal) until an answer arrives.

The directory answers the very same signed request with the very same answer, so a request
whose reply was lost, or that never got through, is simply sent again; a refusal is final.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from credex.protocol.errors import from_rpc_error

T = TypeVar("T")
ATTEMPTS = 4
FIRST_DELAY_S = 0.5
_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


async def send_until_answered(
    send: Callable[[], Awaitable[T]], *, attempts: int = ATTEMPTS, delay_s: float = FIRST_DELAY_S
) -> T:
    """`send()` (the same request each time) until it is answered, at most `attempts` times,
    backing off; the CredexError of a refusal or of the last failure otherwise."""
    for attempt in range(1, attempts + 1):
        try:
            return await send()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _TRANSIENT or attempt == attempts:
                raise from_rpc_error(exc) from None
        await asyncio.sleep(delay_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
