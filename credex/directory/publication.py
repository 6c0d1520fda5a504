"""What the directory publishes to members: the signed registry snapshot, and to each node the
signed feed of changes to its own tickets, pulled by the node and pushed to it the moment a
consent is revoked, paused or resumed."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable

import grpc
from prometheus_client import Gauge

from credex.directory.certificates import CertificateLog
from credex.directory.consent_store import ConsentStore
from credex.directory.registry import Registry
from credex.protocol.channels import ChannelPool
from credex.protocol.clock import Clock, to_timestamp
from credex.protocol.errors import CredexError
from credex.protocol.keys import SigningKey
from credex.protocol.signing import seal
from credex.v1 import federation_pb2, member_pb2
from credex.v1.common_pb2 import Signed
from credex.v1.node_pb2 import NotifyRevocationsRequest
from credex.v1.node_pb2_grpc import NodeServiceStub

log = logging.getLogger(__name__)
FEED_PAGE = 1000
PUSH_TIMEOUT_S = 2.0


class Publisher:
    def __init__(
        self,
        *,
        key: SigningKey,
        directory_id: str,
        registry: Registry,
        certificates: CertificateLog,
        consents: ConsentStore,
        channels: ChannelPool,
        clock: Clock,
        durable: Callable[[], Awaitable[None]],
        key_overlap_s: float,
        in_flight: Gauge | None = None,
    ) -> None:
        """`key_overlap_s`: how long a rotated key stays valid (stated in the snapshot);
        `in_flight`: a gauge that reports the pushes under way (read when scraped)."""
        self._key_overlap_s = key_overlap_s
        self._durable = durable  # a change is on disk before any node hears of it
        self._key = key
        self._directory_id = directory_id
        self._registry = registry
        self._certificates = certificates
        self._consents = consents
        self._channels = channels
        self._clock = clock
        self._signed_snapshot: tuple[int, Signed] | None = None
        # At most one push under way per node (node id -> its task), and the first feed
        # sequence number each node is still to be sent: changes made while a push is under
        # way go with the next one (the feed is cumulative), so tasks stay bounded by nodes.
        self._pushes: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, int] = {}
        if in_flight is not None:
            in_flight.set_function(lambda: len(self._pushes))

    async def close(self) -> None:
        """Cancel pushes still under way (their nodes will pull instead)."""
        tasks = list(self._pushes.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def registry(self, known_version: int) -> member_pb2.GetRegistryResponse:
        """The signed snapshot, or just the version when the caller is current. A snapshot is
        signed once per version and re-signed when it is older than a minute, so its
        issue time tells nodes how fresh it is."""
        version = self._registry.version
        if known_version == version:
            return member_pb2.GetRegistryResponse(version=version)
        cached = self._signed_snapshot
        now = self._clock()
        if cached is None or cached[0] != version:
            snapshot = self._registry.snapshot(
                self._directory_id,
                now,
                self._certificates.revoked(now),
                key_overlap_s=self._key_overlap_s,
            )
            self._signed_snapshot = (version, seal(snapshot, self._key))
        assert self._signed_snapshot is not None
        return member_pb2.GetRegistryResponse(snapshot=self._signed_snapshot[1], version=version)

    def feed(self, node_id: str, after_seq: int) -> Signed:
        """`node_id`'s feed after `after_seq`, signed; it holds only that node's tickets."""
        changes, latest = self._consents.changes_after(node_id, after_seq, FEED_PAGE)
        return seal(
            federation_pb2.RevocationFeed(
                after_seq=after_seq,
                latest_seq=latest,
                changes=changes,
                issued_at=to_timestamp(self._clock()),
                node_id=node_id,
            ),
            self._key,
        )

    def push(self, seqs: dict[str, int]) -> None:
        """Send each node its changes from its `seqs` entry on, without waiting: at once to a
        node with no push under way, else with its next push. Nodes that miss one pull the
        changes within their sync interval."""
        for node_id, seq in seqs.items():
            node = self._registry.get(node_id)
            if node is None or not (node.active and node.endpoint):
                continue
            self._pending[node_id] = min(seq, self._pending.get(node_id, seq))
            if node_id not in self._pushes:
                self._pushes[node_id] = asyncio.create_task(self._push_to(node_id))

    async def _push_to(self, node_id: str) -> None:
        """Push to one node until nothing is pending for it: each push carries every change
        from the first one pending (up to a feed page)."""
        try:
            while (first := self._pending.pop(node_id, None)) is not None:
                node = self._registry.get(node_id)
                if node is None or not node.active or not node.endpoint:
                    continue
                try:
                    feed = NotifyRevocationsRequest(feed=self.feed(node_id, first - 1))
                except sqlite3.Error as exc:  # the node pulls instead
                    log.error("not pushing to %s: cannot read the feed: %s", node_id, exc)
                    continue
                await self._push_one(node_id, node.endpoint, feed)
        finally:  # no await between the last look at pending and this: nothing is stranded
            self._pushes.pop(node_id, None)

    async def _push_one(self, node_id: str, endpoint: str, feed: NotifyRevocationsRequest) -> None:
        try:
            stub = NodeServiceStub(self._channels.get(endpoint))
            await self._durable()
            await stub.NotifyRevocations(feed, timeout=PUSH_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            log.info("push to %s failed (%s); it will pull", node_id, exc.code().name)
        except OSError as exc:  # the change could not be made durable: nothing is sent
            log.error("not pushing to %s: %s", node_id, exc)
        except CredexError as err:  # an endpoint the directory does not dial
            log.info("not pushing to %s: %s", node_id, err.message)
