"""Time as the servers see it: an injectable clock and protobuf Timestamp conversions."""

from __future__ import annotations

import time
from collections.abc import Callable

from google.protobuf.timestamp_pb2 import Timestamp

Clock = Callable[[], float]
system_clock: Clock = time.time


def to_timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1_000_000_000))
    return ts


def from_timestamp(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1_000_000_000
