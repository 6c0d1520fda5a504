"""Refusals into the audit log without letting a caller's rate become disk writes.

A server hands every refusal it audits to a `RefusalRecorder`. Refusals are grouped by kind:
(actor, action, outcome, subject_ref, node_id). Within one window (`window_s`, 60 s by default)
of a kind:

- the first refusal is appended to the audit log at once, as it is (count 1), so it is as
  durable as any other entry (on disk before the refused caller hears back), as long as
  first refusals come at most `FIRST_WRITES_PER_S` a second (burst `FIRST_WRITES_BURST`);
- the others, and firsts past that rate, are only counted in memory, and are written as one
  entry carrying their count when the window closes: by `run()` (a background task), and at
  shutdown by `close()`.

At most `max_keys` kinds are held; refusals of a new kind beyond that are counted under one
kind of their action and outcome whose actor is OVERFLOW_ACTOR. So a flood costs at most
two audit entries a window per kind, whatever its rate, and a flood of new kinds (callers
rotating addresses) at most `max_keys` entries a window, written together.

Guarantee: what a crash (or SIGKILL) can lose is at most the counts of the windows still open,
and first refusals only past the rate above. The count entry keeps the fields its refusals
shared and blanks those that varied (a flood may vary the request id or consent id it claims);
its detail says how many refusals it stands for and over which span of time.

The audit log hashes `count` into its chain (when not 1), so counts are as tamper-evident as
every other field.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from credex.protocol.clock import Clock
from credex.protocol.errors import CredexError
from credex.runtime.audit import AuditEntry, AuditLog
from credex.runtime.ratelimit import RateLimiter
from credex.runtime.storage import Storage

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 60.0
DEFAULT_MAX_KEYS = 10_000
FIRST_WRITES_PER_S = 10.0
FIRST_WRITES_BURST = 100
OVERFLOW_ACTOR = "(callers past the count of kinds held)"
# Fields a count entry keeps only when every refusal it counts agrees on them.
_VARYING = ("request_id", "purpose", "consent_id", "categories", "detail", "link")

Key = tuple[str, str, str, str, str]


def refusal_key(entry: AuditEntry) -> Key:
    """The kind a refusal is counted under."""
    return (entry.actor, entry.action, entry.outcome, entry.subject_ref, entry.node_id)


@dataclass
class _Window:
    opened: float  # when the first refusal of this window was seen (and written)
    template: AuditEntry | None = None  # the first counted refusal, blanked where others vary
    count: int = 0  # refusals counted since the first
    first: float = 0.0
    last: float = 0.0


class RefusalRecorder:
    """Aggregates repeated refusals into audit entries with a count; see the module doc."""

    def __init__(
        self,
        audit: AuditLog,
        clock: Clock,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        max_keys: int = DEFAULT_MAX_KEYS,
        storage: Storage,
    ) -> None:
        """`storage`: the audit log's; each write is a unit of its own, and `run` and
        `close` make what they wrote durable."""
        if window_s <= 0 or max_keys < 1:
            raise ValueError("window_s must be positive and max_keys at least 1")
        self._audit = audit
        self._clock = clock
        self._storage = storage
        self.window_s = window_s
        self.max_keys = max_keys
        self._windows: dict[Key, _Window] = {}
        self._firsts = RateLimiter(FIRST_WRITES_PER_S, FIRST_WRITES_BURST, clock)

    @property
    def pending(self) -> int:
        """Refusals counted in memory and not yet written."""
        return sum(w.count for w in self._windows.values())

    def record(self, entry: AuditEntry) -> bool:
        """Audit one refusal; True when it was written now (the first of its window)."""
        entry = dataclasses.replace(entry, categories=tuple(entry.categories))
        now = self._clock()
        key = refusal_key(entry)
        window = self._windows.get(key)
        if window is not None and now - window.opened >= self.window_s:
            self._write(key, window)
            window = None
        if window is None and len(self._windows) >= self.max_keys:
            entry = dataclasses.replace(entry, actor=OVERFLOW_ACTOR, subject_ref="")
            key = refusal_key(entry)  # memory stays bounded: one kind per action and outcome
            window = self._windows.get(key)
            if window is not None and now - window.opened >= self.window_s:
                self._write(key, window)
                window = None
        if window is None:
            window = self._windows[key] = _Window(opened=now)
            if not self._firsts.take("first"):
                with self._storage.unit():
                    self._audit.append(dataclasses.replace(entry, count=1))
                return True
        if window.template is None:
            window.template, window.first = entry, now
        else:
            window.template = _merge(window.template, entry)
        window.count += 1
        window.last = now
        return False

    def flush(self, *, everything: bool = False) -> int:
        """Write the counts of every window that has closed (`everything`: of every window)
        and forget those windows; returns how many entries were written."""
        now = self._clock()
        written = 0
        for key, window in list(self._windows.items()):
            if everything or now - window.opened >= self.window_s:
                written += self._write(key, window)
        return written

    async def run(self, interval_s: float | None = None) -> None:
        """Write closed windows every `interval_s` (a quarter window by default) until
        cancelled; a failed write is logged and tried again next time."""
        interval = interval_s if interval_s is not None else min(self.window_s / 4, 15.0)
        while True:
            await asyncio.sleep(interval)
            try:
                if self.flush():
                    await self._storage.durable()
            except Exception:
                log.exception("writing counted refusals failed; retrying in %ss", interval)

    async def close(self) -> None:
        """Write every count still held (at shutdown) and make it durable."""
        if self.flush(everything=True):
            await self._storage.durable()

    def _write(self, key: Key, window: _Window) -> int:
        del self._windows[key]
        if window.count == 0 or window.template is None:
            return 0
        span = f"{_moment(window.first)} to {_moment(window.last)}"
        detail = window.template.detail
        summary = f"{window.count} more refusals like this, {span}"
        with self._storage.unit():
            self._audit.append(
                dataclasses.replace(
                    window.template,
                    count=window.count,
                    detail=f"{summary}: {detail}" if detail else summary,
                )
            )
        return 1


def _merge(template: AuditEntry, entry: AuditEntry) -> AuditEntry:
    """`template` with every field that `entry` does not share blanked."""
    changes: dict[str, Any] = {}
    for name in _VARYING:
        ours, theirs = getattr(template, name), getattr(entry, name)
        if name == "categories":
            ours, theirs = tuple(ours), tuple(theirs)
        if ours != theirs and ours:
            changes[name] = () if name == "categories" else ""
    return dataclasses.replace(template, **changes) if changes else template


def _moment(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CallerGuard:
    """What `rpc_handler` does about callers before it reads their requests: a budget of
    refusals per caller (a member by its certificate, else an address), past which a caller is
    turned away unread, and the audit of requests refused unread (undecodable, or turned
    away), counted by `recorder` so that a caller's rate never becomes disk writes.
    `exempt` callers (a node's directory) are never turned away."""

    def __init__(
        self,
        budget: RateLimiter,
        recorder: RefusalRecorder,
        *,
        node_id: str = "",
        exempt: Collection[str] = (),
    ) -> None:
        self.budget = budget
        self.recorder = recorder
        self._node_id = node_id
        self._exempt = frozenset(exempt)

    def wait(self, caller: str) -> float:
        """0.0 while `caller` may still be answered, else seconds until it may."""
        return 0.0 if caller in self._exempt else self.budget.wait(caller)

    def charge(self, caller: str) -> None:
        """Count one refusal against `caller`."""
        if caller not in self._exempt:
            self.budget.charge(caller)

    def refused_unread(self, method: str, err: CredexError, caller: str) -> bool:
        """Audit (counted) a request refused before it was read; True when this one was
        written at once (the first of its kind in a window)."""
        return self.recorder.record(
            AuditEntry(
                request_id="",
                actor=caller,
                action=method,
                outcome=f"refused:{err.reason}",
                node_id=self._node_id,
                detail=err.message,
            )
        )
