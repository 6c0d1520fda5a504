"""Assemble a node from its config and run it: mutual TLS only, announced to the directory."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from credex.cli.render import moment
from credex.node.config import NodeConfig
from credex.node.config_check import open_source
from credex.node.directory_sync import DirectorySync, SyncSettings
from credex.node.disputes import NodeDisputes
from credex.node.schema import open_node_storage
from credex.node.service import NodeService
from credex.node.ticket_uses import TicketUses
from credex.node.verify import QueryVerifier
from credex.node.witness import DirectoryCheckpoints, directory_witness
from credex.protocol.clock import Clock, system_clock, to_timestamp
from credex.protocol.errors import CredexError, DeadlineExceeded, Unavailable
from credex.protocol.keys import SigningKey, load_public
from credex.protocol.pki import PkiError
from credex.protocol.signing import seal
from credex.protocol.tls import TlsIdentity
from credex.runtime.app import ServerApp
from credex.runtime.audit import AuditLog, checkpoint_every, checkpoint_now
from credex.runtime.freshness import NonceStore
from credex.runtime.handlers import RpcRuntime
from credex.runtime.health import HealthMonitor
from credex.runtime.metrics import Metrics
from credex.runtime.ports import bind_reloading
from credex.runtime.ratelimit import RateLimiter
from credex.runtime.refusals import CallerGuard, RefusalRecorder
from credex.runtime.reloading import Reloading
from credex.runtime.witness import CheckpointPublisher, WitnessStore
from credex.sdk.link import DirectoryLink
from credex.sdk.renewal import CertificateRenewal, renew_at
from credex.v1 import federation_pb2, node_pb2

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


@dataclass(kw_only=True)
class RunningNode(ServerApp):
    """A node serving: its one server and the address it listens on."""

    address: str = ""

    @property
    def server(self) -> grpc.aio.Server:
        return self.servers[0]


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
    storage = open_node_storage(config.state_db, serving=True)
    conn = storage.connection
    # the node's one link to the directory: sync, announcements and its log's witness
    directory = DirectoryLink(config.directory_address, tls_source(config))
    sync = DirectorySync(
        storage=storage,
        cache_path=config.registry_cache,
        directory_key=directory_key,
        link=directory,
        settings=SyncSettings(
            sync_interval_s=config.sync_interval_s,
            offline_grace_s=config.offline_grace_s,
        ),
        clock=clock,
        node_id=config.node_id,
    )
    uses = TicketUses(conn)
    verifier = QueryVerifier(
        node_id=config.node_id,
        directory_key=directory_key,
        served=source.categories,
        nonces=NonceStore(conn),
        sync=sync,
        uses=uses,
        clock=clock,
    )
    audit = AuditLog(conn, clock, log_id=config.node_id, key=keys)
    with storage.unit():
        audit.own()
    callers = CallerGuard(
        RateLimiter(config.server.refusals_per_s, config.server.refusal_burst, clock),
        RefusalRecorder(
            audit,
            clock,
            window_s=config.server.refusal_window_s,
            max_keys=config.server.refusal_max_keys,
            storage=storage,
        ),
        node_id=config.node_id,
        exempt={config.directory_id},  # its refusals are per query, for reconcile: see service
    )
    return NodeService(
        uses=uses,
        runtime=RpcRuntime(
            storage=storage,
            metrics=Metrics("node", config.node_id),
            callers=callers,
            check_peer=sync.check_peer,  # revoked certificates refused on every call
        ),
        config=config,
        key=keys,
        verifier=verifier,
        sync=sync,
        disputes=NodeDisputes(conn, clock),
        directory_key=directory_key,
        source=source,
        audit=audit,
        clock=clock,
        directory=directory,
        witness=DirectoryCheckpoints(WitnessStore(conn, clock), config.directory_id, directory_key),
        checkpoints=CheckpointPublisher(audit, directory_witness(directory), storage),
    )


async def announce(
    config: NodeConfig,
    key: Callable[[], SigningKey],
    directory: DirectoryLink,
    endpoint: str,
    clock: Clock,
) -> None:
    """Tell the directory where this node listens, signed and over mutual TLS."""
    announcement = federation_pb2.NodeAnnouncement(
        node_id=config.node_id, endpoint=endpoint, issued_at=to_timestamp(clock())
    )
    await directory.call(
        directory.federation.Announce,
        federation_pb2.AnnounceRequest(announcement=seal(announcement, key())),
        deadline_s=5.0,
    )


async def _first_announce(
    config: NodeConfig,
    key: Callable[[], SigningKey],
    directory: DirectoryLink,
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
            await announce(config, key, directory, endpoint, clock)
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
    directory: DirectoryLink,
    endpoint: str,
    clock: Clock,
) -> None:
    while True:
        try:
            await announce(config, key, directory, endpoint, clock)
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
    app = RunningNode(
        name=f"node {config.node_id}",
        settings=config.server,
        health=_health(config, service, tls),
        metrics=runtime.metrics,
    )
    server = app.add_server([(front or service, SERVICE)])
    await app.health.check()
    binding = bind_reloading(
        server, listen, tls, config.server, name=app.name, metrics=runtime.metrics
    )
    app.bindings.append(binding)
    await app.start()
    app.address = await binding.open()
    # counted refusals written on a timer, and before the last checkpoint
    app.spawn(runtime.callers.recorder.run())
    app.on_close(runtime.callers.recorder.close)
    audit = service.audit
    app.spawn(checkpoint_every(audit, runtime.storage, config.checkpoint_interval_s))
    app.on_close(functools.partial(checkpoint_now, audit, runtime.storage))
    if config.directory_address:  # a certificate expired or of an older form: renew first
        renewal = certificate_renewal(config, signing_key_source(config), tls)
        await renew_certificate(renewal, clock)
        app.spawn(keep_certificate_fresh(renewal, tls, clock))
        app.spawn(service.checkpoints.run(config.checkpoint_interval_s))  # the directory
        app.on_close(service.checkpoints.publish_final)  # witnesses our log
        try:
            await service.sync.sync_once()
        except CredexError as err:
            log.warning("first directory sync failed (serving from cache if fresh): %s", err)
            service.sync.last_error = err.message
        app.spawn(service.sync.run())
    app.on_close(runtime.storage.durable)  # the last checkpoint and snapshot, on disk
    app.on_close(service.directory.close)
    app.on_close(runtime.storage.close)
    if announce_to_directory and config.directory_address:
        key = signing_key_source(config)
        try:
            await _first_announce(config, key, service.directory, app.address, clock)
        except BaseException:
            await app.stop(0)  # the server, and the sync and checkpoint tasks begun above
            raise
        app.spawn(_keep_announcing(config, key, service.directory, app.address, clock))
    app.spawn(app.health.run())  # its first tick sees the state after the first sync
    return app


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


async def serve(config: NodeConfig, ready_file: Path | None) -> None:
    node = await start_node(config, config.server.listen)
    await node.serve_until_stopped(ready_file, {"address": node.address})
