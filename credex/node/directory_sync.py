"""A node's view of the directory: the signed registry snapshot (cached on disk) and the changes
to its own tickets it has learned from its feed, by push or by pull. A node that has not heard
from the directory for `offline_grace_s` refuses every query until it has: revocations reach it
in bounded time."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from credex.protocol.clock import Clock
from credex.protocol.errors import CredexError, Reason, refused
from credex.protocol.keys import VerifyKey
from credex.protocol.registry_view import RegistryView
from credex.protocol.revocation import refuse_revoked
from credex.protocol.signing import open_signed, parse
from credex.runtime.peers import peer_identity
from credex.runtime.storage import Storage, require_unit
from credex.sdk.link import DirectoryLink
from credex.v1 import federation_pb2, member_pb2
from credex.v1.common_pb2 import Signed
from credex.v1.consent_pb2 import ConsentStatus

log = logging.getLogger(__name__)
SYNC_TIMEOUT_S = 5.0
RETRY_S = 0.5


@dataclass(frozen=True)
class SyncSettings:
    sync_interval_s: float
    offline_grace_s: float


class DirectorySync:
    def __init__(
        self,
        *,
        storage: Storage,
        cache_path: Path,
        directory_key: VerifyKey,
        link: DirectoryLink,
        settings: SyncSettings,
        clock: Clock,
        node_id: str,
    ) -> None:
        self._node_id = node_id
        self._storage = storage
        self._conn = storage.connection
        self._cache_path = cache_path
        self._directory_key = directory_key
        self._link = link
        self._settings = settings
        self._clock = clock
        row = self._conn.execute("SELECT synced_seq, last_sync FROM directory_sync").fetchone()
        self.synced_seq: int = int(row[0])
        self.last_sync: float = float(row[1])
        self.version = 0
        self._requesters: frozenset[str] = frozenset()
        # Serials of revoked certificates (from the signed snapshot): from when each is
        # refused, and why.
        self._revoked: dict[str, tuple[float, str]] = {}
        self.last_error = ""  # why the latest sync failed ("" once one succeeds)
        self._load_cache()

    # --- what the verifier asks --------------------------------------------------------------

    def stale(self) -> str | None:
        """Why the registry snapshot is too old to answer on, if it is."""
        now = self._clock()
        if self.last_sync > now:  # the clock stepped back: count the grace from now, once
            self.last_sync = now
        if now - self.last_sync > self._settings.offline_grace_s:
            why = f" (last attempt: {self.last_error})" if self.last_error else ""
            return f"no word from the directory for over {self._settings.offline_grace_s:g}s{why}"
        return None

    def check(self, requester_id: str, ticket_id: str) -> None:
        """Refuse when out of touch with the directory, for a requester that is not an active
        member, or for a ticket whose consent the subject revoked or paused."""
        stale = self.stale()
        if stale is not None:
            raise refused(Reason.REGISTRY_STALE, stale)
        if requester_id not in self._requesters:
            raise refused(Reason.MEMBER_SUSPENDED, f"{requester_id!r} is not an active requester")
        row = self._conn.execute(
            "SELECT status FROM ticket_status WHERE ticket_id = ?", (ticket_id,)
        ).fetchone()
        if row is None or row[0] == ConsentStatus.CONSENT_STATUS_ACTIVE:
            return
        if row[0] == ConsentStatus.CONSENT_STATUS_PAUSED:
            raise refused(Reason.CONSENT_PAUSED, "consent is paused")
        raise refused(Reason.CONSENT_REVOKED, "consent has been revoked")

    def check_peer(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Refuse a caller whose certificate the directory's snapshot lists as revoked (called
        by `rpc_handler` before every call)."""
        peer = peer_identity(context)
        refuse_revoked(peer, self._revoked.get(peer.serial), self._clock())

    # --- learning from the directory ------------------------------------------------------

    def apply_feed(self, signed: Signed) -> int:
        """Record the ticket changes of a directory-signed feed for this node (pushed or
        pulled); another node's feed is refused."""
        feed = open_signed(
            signed, federation_pb2.RevocationFeed, self._directory_key, what="revocation feed"
        )
        if feed.node_id != self._node_id:
            raise refused(Reason.WRONG_NODE, f"feed is for node {feed.node_id[:64]!r}")
        # The latest change per ticket wins, whatever order pushes and pulls arrive in; a
        # resumption is kept (as ACTIVE) so that an older pause arriving late cannot win.
        synced = self.synced_seq
        # Contiguous from what we hold: we now hold everything up to the feed's last change.
        if feed.after_seq <= synced and feed.changes:
            synced = max(synced, max(c.seq for c in feed.changes))
        with self._storage.unit():
            self._conn.executemany(
                "INSERT INTO ticket_status VALUES (?, ?, ?) ON CONFLICT DO UPDATE "
                "SET status = excluded.status, seq = excluded.seq WHERE excluded.seq > seq",
                [(c.ticket_id, int(c.status), c.seq) for c in feed.changes],
            )
            self._save_progress(synced, self.last_sync)
        self.synced_seq = synced
        return synced

    def _apply_snapshot(self, signed: Signed) -> None:
        view = RegistryView.open(signed, self._directory_key)
        if view.version < self.version:
            return
        self.version = view.version
        self._requesters = view.active_ids(member_pb2.MemberRole.MEMBER_ROLE_REQUESTER)
        self._revoked = view.revoked
        tmp = self._cache_path.with_name(self._cache_path.name + ".tmp")
        tmp.write_bytes(signed.SerializeToString())
        tmp.replace(self._cache_path)

    def _load_cache(self) -> None:
        """Start from the snapshot cached on disk, if it is there and verifies."""
        try:
            signed = parse(self._cache_path.read_bytes(), Signed, what="cached snapshot")
            self._apply_snapshot(signed)
        except FileNotFoundError:
            return
        except CredexError as err:
            log.warning("ignoring cached registry snapshot %s: %s", self._cache_path, err)

    def _save_progress(self, synced_seq: int, last_sync: float) -> None:
        require_unit(self._conn)
        self._conn.execute(
            "UPDATE directory_sync SET synced_seq = ?, last_sync = ?", (synced_seq, last_sync)
        )

    async def sync_once(self) -> None:
        """Pull the registry (if changed) and every revocation after what we hold."""
        link = self._link
        registry = await link.call(
            link.members.GetRegistry,
            member_pb2.GetRegistryRequest(known_version=self.version),
            deadline_s=SYNC_TIMEOUT_S,
        )
        if registry.HasField("snapshot"):
            self._apply_snapshot(registry.snapshot)
        while True:
            asked = self.synced_seq
            response = await link.call(
                link.federation.GetRevocations,
                federation_pb2.GetRevocationsRequest(after_seq=asked),
                deadline_s=SYNC_TIMEOUT_S,
            )
            feed = parse(response.feed.body, federation_pb2.RevocationFeed, what="revocation feed")
            if feed.after_seq != asked:
                raise refused(Reason.REGISTRY_STALE, "feed does not answer our request")
            self.apply_feed(response.feed)
            if not feed.changes:
                self.synced_seq = max(self.synced_seq, feed.latest_seq)
            if self.synced_seq >= feed.latest_seq:
                break
        now = self._clock()
        with self._storage.unit():
            self._save_progress(self.synced_seq, now)
        self.last_sync = now
        self.last_error = ""

    async def run(self) -> None:
        """Sync every `sync_interval_s` until cancelled; after a failure, try again sooner
        (from RETRY_S, doubling up to the interval), so that a directory busy when the node
        started (many nodes starting at once) costs seconds, not an interval each time."""
        retry = RETRY_S
        while True:
            try:
                await self.sync_once()
            except Exception as exc:  # never a silent stop: the node would go stale unseen
                message = exc.message if isinstance(exc, CredexError) else f"{exc!r}"
                if message != self.last_error:  # one line per kind of failure, not per try
                    if isinstance(exc, CredexError):
                        log.warning("directory sync failed: %s", exc)
                    else:
                        log.exception("directory sync failed unexpectedly; trying again")
                self.last_error = message
                await asyncio.sleep(min(retry, self._settings.sync_interval_s))
                retry *= 2
                continue
            retry = RETRY_S
            await asyncio.sleep(self._settings.sync_interval_s)
