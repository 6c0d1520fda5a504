"""Assemble a node from its config and run it: mutual TLS only, announced to the directory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from credex.cli.render import moment
from credex.node.config import NodeConfig
from credex.node.config_check import open_source
from credex.node.directory_sync import DirectorySync, SyncSettings
from credex.node.disputes import NodeDisputes
from credex.node.service import NodeService
from credex.node.ticket_uses import TicketUses
from credex.node.verify import QueryVerifier
from credex.node.witness import DirectoryCheckpoints, directory_witness
from credex.protocol.channels import open_directory_channel
from credex.protocol.clock import Clock, system_clock, to_timestamp
from credex.protocol.errors import CredexError, DeadlineExceeded, Unavailable, call_rpc
from credex.protocol.keys import SigningKey, load_public
from credex.protocol.pki import PkiError
from credex.protocol.signing import seal
from credex.protocol.tls import TlsIdentity
from credex.runtime.audit import AuditLog, checkpoint_every
from credex.runtime.db import open_database
from credex.runtime.freshness import NonceStore
from credex.runtime.gate import raise_descriptor_limit
from credex.runtime.group_commit import GroupCommit
from credex.runtime.handlers import RpcRuntime
from credex.runtime.health import HealthMonitor, enable_reflection
from credex.runtime.metrics import Metrics
from credex.runtime.ports import Binding, add_service, bind_reloading, create_server
from credex.runtime.ratelimit import RateLimiter
from credex.runtime.refusals import CallerGuard, RefusalRecorder
from credex.runtime.reloading import Reloading
from credex.runtime.serving import run_until_stopped
from credex.runtime.witness import CheckpointPublisher, WitnessStore
from credex.sdk.renewal import CertificateRenewal, renew_at
from credex.v1 import directory_pb2, node_pb2
from credex.v1.directory_pb2_grpc import DirectoryServiceStub

log = logging.getLogger(__name__)
SERVICE = node_pb2.DESCRIPTOR.services_by_name["NodeService"]
# The node's certificate is renewed in the last third of its life; this often at least it
# looks again (a certificate renewed by hand, a clock that jumped), and this soon at most it
# retries a renewal that failed.
RENEW_CHECK_S = 60.0
RENEW_RETRY_S = 30.0
ANNOUNCE_RETRY_S = 1.0
ANNOUNCE_EVERY_S = 60.0
# At start-up a directory that is busy or not up yet is waited for this long; a refusal is not.
FIRST_ANNOUNCE_WAIT_S = 30.0


@dataclass
class RunningNode:
    server: grpc.aio.Server
    address: str
    health: HealthMonitor | None = None
    metrics: Metrics | None = None
    metrics_address: str = ""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    binding: Binding | None = None

    async def stop(self, grace: float | None = None) -> None:
        if self.health is not None:
            await self.health.drain()
        await self.server.stop(grace)
        await self.stop_background()  # the last checkpoint covers the grace period too

    async def stop_background(self) -> None:
        """Stop taking connections, cancel the background tasks and run every closer, even
        after one has failed."""
        if self.binding is not None:
            await self.binding.close()
        for task in self.tasks:
            task.cancel()
        for result in await asyncio.gather(*self.tasks, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("a background task had failed: %r", result)
        for close in self.closers:
            try:
                await close()
            except Exception:
                log.exception("closing failed")


def tls_identity(config: NodeConfig) -> TlsIdentity:
    return TlsIdentity.load(config.ca_cert, config.tls_cert, config.tls_key)


def signing_key_source(config: NodeConfig) -> Callable[[], SigningKey]:
    """The node's signing key, re-read when `credex-node rotate-key` replaced the file."""
    return Reloading([config.signing_key], lambda: SigningKey.load(config.signing_key)).get


def tls_source(config: NodeConfig) -> Callable[[], TlsIdentity]:
    """The node's TLS identity, re-read when a rotation replaced the certificate."""
    paths = [config.ca_cert, config.tls_cert, config.tls_key]
    return Reloading(paths, lambda: tls_identity(config)).get


def certificate_renewal(
    config: NodeConfig, key: Callable[[], SigningKey], tls: Callable[[], TlsIdentity]
) -> CertificateRenewal:
    """How this node renews its certificate: on the directory's public port if the config
    names it (works with an expired certificate), else on the member port."""
    public = config.directory_public_address
    return CertificateRenewal(
        member_id=config.node_id,
        address=public or config.directory_address,
        signing_key=key,
        tls=tls,
        tls_key_path=config.tls_key,
        cert_path=config.tls_cert,
        member_port=not public,
    )


async def renew_certificate(renewal: CertificateRenewal, clock: Clock) -> bool:
    """Renew if due; False (logged) if that failed."""
    try:
        renewed = await renewal.renew_if_due(clock=clock)
    except (CredexError, PkiError, OSError) as err:
        log.warning("renewing the node's certificate failed: %s", err)
        return False
    if renewed is not None:
        log.info("renewed the node's certificate (valid until %s)", moment(renewed.expires_at))
    return True


async def keep_certificate_fresh(
    renewal: CertificateRenewal, tls: Callable[[], TlsIdentity], clock: Clock
) -> None:
    """Renew the node's certificate in the last third of its life, until cancelled: the new
    key and certificate replace the files, which the server and its clients re-read."""
    while True:
        wait = renew_at(tls()) - clock()
        if wait > 0:
            await asyncio.sleep(min(wait, RENEW_CHECK_S))
        elif await renew_certificate(renewal, clock):
            await asyncio.sleep(1.0)  # the files are read again before the next look
        else:
            left = tls().expires_at - clock()
            await asyncio.sleep(min(RENEW_RETRY_S, max(1.0, left / 10)))


def build_service(
    config: NodeConfig, *, clock: Clock = system_clock, key: SigningKey | None = None
) -> NodeService:
    """Open keys and databases and check every adapter; raises on any misconfiguration.
    A fixed `key` replaces the key file (tests use it to make a node sign wrongly)."""
    keys = signing_key_source(config) if key is None else (lambda: key)
    directory_key = load_public(config.directory_key)
    source, slow = open_source(config)
    for problem in slow:
        log.warning("%s", problem.render(config.path))
    state = open_database(config.state_db)
    tls = tls_source(config)
    sync = DirectorySync(
        db=state,
        cache_path=config.registry_cache,
        directory_key=directory_key,
        tls=tls,
        settings=SyncSettings(
            directory_address=config.directory_address,
            sync_interval_s=config.sync_interval_s,
            offline_grace_s=config.offline_grace_s,
        ),
        clock=clock,
        node_id=config.node_id,
    )
    uses = TicketUses(state)
    verifier = QueryVerifier(
        node_id=config.node_id,
        directory_key=directory_key,
        served=source.categories,
        nonces=NonceStore(state),
        sync=sync,
        uses=uses,
        clock=clock,
    )
    audit = AuditLog(state, clock, log_id=config.node_id, key=keys)
    commits = GroupCommit(state)
    callers = CallerGuard(
        RateLimiter(config.server.refusals_per_s, config.server.refusal_burst, clock),
        RefusalRecorder(
            audit,
            clock,
            window_s=config.server.refusal_window_s,
            max_keys=config.server.refusal_max_keys,
            durable=commits.flush,
        ),
        node_id=config.node_id,
        exempt={config.directory_id},  # its refusals are per query, for reconcile: see service
    )
    return NodeService(
        uses=uses,
        runtime=RpcRuntime(
            commits=commits,
            metrics=Metrics("node", config.node_id),
            callers=callers,
            check_peer=sync.check_peer,  # revoked certificates refused on every call
        ),
        config=config,
        key=keys,
        verifier=verifier,
        sync=sync,
        disputes=NodeDisputes(state, clock),
        directory_key=directory_key,
        source=source,
        audit=audit,
        clock=clock,
        witness=DirectoryCheckpoints(
            WitnessStore(state, clock), config.directory_id, directory_key
        ),
        checkpoints=CheckpointPublisher(
            audit, directory_witness(config.directory_address, tls), commits.flush
        ),
    )


async def announce(
    config: NodeConfig,
    key: Callable[[], SigningKey],
    tls: Callable[[], TlsIdentity],
    endpoint: str,
    clock: Clock,
) -> None:
    """Tell the directory where this node listens, signed and over mutual TLS."""
    announcement = directory_pb2.NodeAnnouncement(
        node_id=config.node_id, endpoint=endpoint, issued_at=to_timestamp(clock())
    )
    channel = open_directory_channel(config.directory_address, tls())
    try:
        await call_rpc(
            DirectoryServiceStub(channel).Announce,
            directory_pb2.AnnounceRequest(announcement=seal(announcement, key())),
            deadline_s=5.0,
        )
    finally:
        await channel.close(None)


async def _first_announce(
    config: NodeConfig,
    key: Callable[[], SigningKey],
    tls: Callable[[], TlsIdentity],
    endpoint: str,
    clock: Clock,
) -> None:
    """Announce, retrying while the directory is unreachable or slow (as when many nodes start
    at once), for up to FIRST_ANNOUNCE_WAIT_S; a refusal fails at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FIRST_ANNOUNCE_WAIT_S
    delay = 0.25
    while True:
        try:
            await announce(config, key, tls, endpoint, clock)
            return
        except (Unavailable, DeadlineExceeded) as err:
            if loop.time() + delay > deadline:
                raise
            log.warning("directory not reachable yet, retrying in %.2g s: %s", delay, err)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 4.0)


async def _keep_announcing(
    config: NodeConfig,
    key: Callable[[], SigningKey],
    tls: Callable[[], TlsIdentity],
    endpoint: str,
    clock: Clock,
) -> None:
    while True:
        try:
            await announce(config, key, tls, endpoint, clock)
        except CredexError as err:
            log.warning("announcing to the directory failed: %s", err)
            await asyncio.sleep(ANNOUNCE_RETRY_S)
            continue
        await asyncio.sleep(ANNOUNCE_EVERY_S)


async def start_node(
    config: NodeConfig,
    listen: str = "127.0.0.1:0",
    *,
    clock: Clock = system_clock,
    service: NodeService | None = None,
    front: object | None = None,
    announce_to_directory: bool = True,
) -> RunningNode:
    """Serve. When the config names the directory's address: sync the registry and the
    revocations once and then every `sync_interval_s`, announce this node's address once
    (failing if the directory refuses) and keep re-announcing in the background. `front`
    answers the calls in the service's place (tests put one in front to watch or slow it);
    everything else (health, metrics, audit, sync) is the service's."""
    tls = tls_source(config)
    service = service or build_service(config, clock=clock)
    runtime = service.runtime
    raise_descriptor_limit()
    server = create_server(config.server)
    add_service(server, front or service, SERVICE)
    health = _health(config, service, tls)
    health.add_to(server)
    await health.check()
    if config.server.reflection:
        enable_reflection(server, [SERVICE.full_name])
    binding = bind_reloading(
        server,
        listen,
        tls,
        config.server,
        name=f"node {config.node_id}",
        metrics=runtime.metrics,
    )
    metrics = runtime.metrics
    metrics_address = ""
    if config.server.metrics_listen:  # a busy port fails before serving
        metrics_address = metrics.serve(config.server.metrics_listen)
    await server.start()
    node = RunningNode(
        server=server,
        address=await binding.open(),
        binding=binding,
        health=health,
        metrics=metrics,
        metrics_address=metrics_address,
    )
    node.closers.append(_closer(metrics.close))
    # counted refusals written on a timer, and before the last checkpoint
    node.tasks.append(asyncio.create_task(runtime.callers.recorder.run()))
    node.closers.append(runtime.callers.recorder.close)
    audit = service.audit
    node.tasks.append(asyncio.create_task(checkpoint_every(audit, config.checkpoint_interval_s)))
    node.closers.append(_closer(audit.checkpoint))
    if config.directory_address:  # a certificate expired or of an older form: renew first
        renewal = certificate_renewal(config, signing_key_source(config), tls)
        await renew_certificate(renewal, clock)
        node.tasks.append(asyncio.create_task(keep_certificate_fresh(renewal, tls, clock)))
    if config.directory_address:  # the directory witnesses our log
        publisher = service.checkpoints
        node.tasks.append(asyncio.create_task(publisher.run(config.checkpoint_interval_s)))
        node.closers.append(publisher.publish_final)
    sync = service.sync
    if config.directory_address:
        try:
            await sync.sync_once()
        except CredexError as err:
            log.warning("first directory sync failed (serving from cache if fresh): %s", err)
            sync.last_error = err.message
        node.tasks.append(asyncio.create_task(sync.run()))
        node.closers.append(sync.close)
    node.closers.append(runtime.commits.flush)  # the last checkpoint and snapshot, on disk
    node.closers.append(_closer(runtime.commits.close))
    if announce_to_directory and config.directory_address:
        key = signing_key_source(config)
        try:
            await _first_announce(config, key, tls, node.address, clock)
        except BaseException:
            await node.stop(0)  # the server, and the sync and checkpoint tasks begun above
            raise
        node.tasks.append(
            asyncio.create_task(_keep_announcing(config, key, tls, node.address, clock))
        )
    node.tasks.append(asyncio.create_task(health.run()))  # its first tick: after the first sync
    return node


def _health(
    config: NodeConfig, service: NodeService, tls: Callable[[], TlsIdentity]
) -> HealthMonitor:
    """Health from the service's own probe; the tick also refreshes the gauges that read the
    database or the certificate."""
    metrics, audit = service.runtime.metrics, service.audit
    return HealthMonitor(
        [SERVICE.full_name],
        service.health_problem,
        interval_s=config.server.health_interval_s,
        max_watches=config.server.max_health_watches,
        metrics=metrics,
        refresh=metrics.gauges(
            audit_entries=lambda: audit.size, expires_at=lambda: tls().expires_at
        ),
    )


def _closer(close: Callable[[], object]) -> Callable[[], Awaitable[None]]:
    """A synchronous close step (metrics server, last checkpoint) as a node closer."""

    async def run() -> None:
        close()

    return run


async def serve(config: NodeConfig, ready_file: Path | None) -> None:
    node = await start_node(config, config.server.listen)
    info = {"address": node.address}
    if node.metrics_address:
        info["metrics_address"] = node.metrics_address
    await run_until_stopped(
        [node.server],
        ready_file,
        info,
        f"node {config.node_id}",
        node.stop_background,
        drain=node.health.drain if node.health is not None else None,
        grace_s=config.server.stop_grace_s,
        drain_delay_s=config.server.drain_delay_s,
    )
