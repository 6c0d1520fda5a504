"""A clock a test can move: every server and client of a test federation reads it, so that
expiry, grace periods and key overlaps are tested without waiting."""

from __future__ import annotations

import time


class MovableClock:
    """Wall-clock time plus an offset that a test may change (see Federation.clock_moved,
    which puts it back)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset
