"""Values read from files that are re-read when the files change: a rotated key or certificate
takes effect in a running server without a restart."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class Reloading(Generic[T]):
    def __init__(self, paths: Sequence[Path], load: Callable[[], T]) -> None:
        self._paths = list(paths)
        self._load = load
        self._stamp = self._stamps()
        self._value = load()

    def _stamps(self) -> tuple[int, ...]:
        stamps = []
        for path in self._paths:
            try:
                stamps.append(os.stat(path).st_mtime_ns)
            except OSError:
                stamps.append(-1)
        return tuple(stamps)

    def get(self) -> T:
        """The current value; reloaded when a file changed (the old value is kept if the new
        files cannot be loaded, e.g. half-written)."""
        stamp = self._stamps()
        if stamp != self._stamp:
            try:
                self._value = self._load()
                self._stamp = stamp
            except Exception:
                log.warning(
                    "keeping the previous value: %s did not load", self._paths, exc_info=True
                )
        return self._value
