"""Assemble the directory from its home folder and run it: the member port (mutual TLS) and the
public port (TLS; subjects and enrollment)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from credex.directory.certificates import CertificateLog
from credex.directory.config import DirectorySettings
from credex.directory.consent_store import ConsentStore
from credex.directory.dialing import GuardedChannels
from credex.directory.disputes import DisputeDesk
from credex.directory.enrollment import EnrollmentService, TokenStore
from credex.directory.federation_service import FederationService
from credex.directory.identity import IdentityDesk
from credex.directory.locator import Locator
from credex.directory.member_service import MemberService
from credex.directory.publication import Publisher
from credex.directory.quotas import PurposeQuota
from credex.directory.registry import Registry
from credex.directory.request_claims import RequestClaims
from credex.directory.requester_service import RequesterService
from credex.directory.router import ANSWER_ENVELOPE_BYTES, Router
from credex.directory.schema import open_directory_storage
from credex.directory.scoring import load_policy
from credex.directory.subject_service import SubjectService
from credex.directory.verify import RequestVerifier
from credex.directory.witness import NodeCheckpoints, node_witnesses
from credex.protocol.clock import Clock, system_clock
from credex.protocol.keys import SigningKey
from credex.protocol.pki import CertificateAuthority
from credex.protocol.tls import TlsIdentity
from credex.runtime.app import ServerApp
from credex.runtime.audit import AuditLog, checkpoint_every, checkpoint_now
from credex.runtime.freshness import NonceStore
from credex.runtime.handlers import RpcRuntime
from credex.runtime.health import HealthMonitor
from credex.runtime.metrics import Metrics
from credex.runtime.ports import bind
from credex.runtime.ratelimit import RateLimiter
from credex.runtime.refusals import CallerGuard, RefusalRecorder
from credex.runtime.storage import SqliteStorage
from credex.runtime.witness import CheckpointPublisher, WitnessStore
from credex.v1 import enrollment_pb2, federation_pb2, member_pb2, requester_pb2, subject_pb2

ENROLLMENT = enrollment_pb2.DESCRIPTOR.services_by_name["EnrollmentService"]


@dataclass(kw_only=True)
class RunningDirectory(ServerApp):
    """The directory serving: its member port (mutual TLS), its public port, and the
    services behind them."""

    address: str = ""
    public_address: str = ""
    services: DirectoryServices

    @property
    def members_server(self) -> grpc.aio.Server:
        return self.servers[0]

    @property
    def public_server(self) -> grpc.aio.Server:
        return self.servers[1]


@dataclass
class DirectoryServices:
    """The directory's services by audience, and what they share."""

    members: MemberService
    requesters: RequesterService
    federation: FederationService
    subjects: SubjectService
    enrollment: EnrollmentService
    storage: SqliteStorage
    router: Router
    publisher: Publisher
    audit: AuditLog
    metrics: Metrics
    tls: TlsIdentity
    checkpoints: CheckpointPublisher
    refusals: RefusalRecorder

    def health_problem(self) -> str | None:
        """Why the directory should not be sent requests now: its database is unusable or
        the disk failed to sync it."""
        if self.storage.failure is not None:
            return self.storage.failure
        problem = self.storage.problem()
        return f"directory database unusable: {problem}" if problem else None

    def on_member_port(self) -> list[tuple[object, ServiceDescriptor]]:
        """Mutual TLS: members, requesters and nodes; renewal over a member's own connection
        too (the public port serves it without one)."""
        return [
            (self.members, member_pb2.DESCRIPTOR.services_by_name["MemberService"]),
            (self.requesters, requester_pb2.DESCRIPTOR.services_by_name["RequesterService"]),
            (self.federation, federation_pb2.DESCRIPTOR.services_by_name["FederationService"]),
            (self.enrollment, ENROLLMENT),
        ]

    def on_public_port(self) -> list[tuple[object, ServiceDescriptor]]:
        """Server-side TLS: subjects, who hold no certificate, and enrollment."""
        return [
            (self.subjects, subject_pb2.DESCRIPTOR.services_by_name["SubjectService"]),
            (self.enrollment, ENROLLMENT),
        ]


def tls_identity(settings: DirectorySettings) -> TlsIdentity:
    return TlsIdentity.load(settings.ca_cert_path, settings.tls_cert_path, settings.tls_key_path)


def build_services(
    settings: DirectorySettings, *, clock: Clock = system_clock
) -> DirectoryServices:
    key = SigningKey.load(settings.key_path)
    tls = tls_identity(settings)
    storage = open_directory_storage(settings.db_path, serving=True)
    conn = storage.connection
    metrics = Metrics("directory", settings.directory_id)
    budget = RateLimiter(settings.server.refusals_per_s, settings.server.refusal_burst, clock)
    registry, locator, consents = Registry(conn), Locator(conn), ConsentStore(conn)
    audit = AuditLog(conn, clock, log_id=settings.directory_id, key=lambda: key)
    with storage.unit():
        audit.own()
    refusals = RefusalRecorder(
        audit,
        clock,
        window_s=settings.server.refusal_window_s,
        max_keys=settings.server.refusal_max_keys,
        storage=storage,
    )
    callers = CallerGuard(budget, refusals)
    # Only to endpoints the policy allows; nodes' replies are small but for their answers,
    # capped per node.
    channels = GuardedChannels(
        tls,
        settings.endpoints,
        max_receive_bytes=settings.max_node_answer_bytes + ANSWER_ENVELOPE_BYTES,
    )
    ca = CertificateAuthority.load(settings.ca_key_path, settings.ca_cert_path)
    certificates = CertificateLog(conn)
    identity = IdentityDesk(
        ca=ca,
        registry=registry,
        certificates=certificates,
        audit=audit,
        storage=storage,
        clock=clock,
        cert_lifetime_s=settings.cert_lifetime_s,
        key_overlap_s=settings.key_overlap_s,
    )
    publisher = Publisher(
        key=key,
        directory_id=settings.directory_id,
        registry=registry,
        certificates=certificates,
        consents=consents,
        channels=channels,
        clock=clock,
        durable=storage.durable,
        key_overlap_s=settings.key_overlap_s,
        in_flight=metrics.pushes_in_flight,
    )
    disputes = DisputeDesk(
        storage=storage, locator=locator, registry=registry, channels=channels, key=key,
        clock=clock,
        limits=settings.disputes,
    )  # fmt: skip
    router = Router(
        key=key,
        channels=channels,
        clock=clock,
        deadline_s=settings.node_deadline_s,
        attestation_ttl_s=settings.attestation_ttl_s,
        max_answer_bytes=settings.max_node_answer_bytes,
    )
    verifier = RequestVerifier(
        registry=registry,
        locator=locator,
        consents=consents,
        quotas=PurposeQuota(conn, settings.purpose_limits),
        nonces=NonceStore(conn),
        subject_nonces=NonceStore(conn, "subject_nonces"),
        storage=storage,
        clock=clock,
        max_request_lifetime_s=settings.max_request_lifetime_s,
        claims=RequestClaims(conn),
    )
    runtime = RpcRuntime(storage=storage, metrics=metrics, callers=callers)
    # revoked certificates refused on every call of the member port
    member_port = dataclasses.replace(runtime, check_peer=identity.check_peer)
    return DirectoryServices(
        members=MemberService(
            runtime=member_port,
            key=key,
            registry=registry,
            publisher=publisher,
            identity=identity,
            directory_id=settings.directory_id,
        ),
        requesters=RequesterService(
            runtime=member_port,
            key=key,
            registry=registry,
            locator=locator,
            verifier=verifier,
            router=router,
            audit=audit,
            clock=clock,
            limiter=RateLimiter(settings.requester_rate_per_s, settings.requester_burst, clock),
            policy=load_policy(settings.policy_path),
            max_profile_bytes=settings.max_profile_bytes,
        ),
        federation=FederationService(
            runtime=member_port,
            registry=registry,
            publisher=publisher,
            disputes=disputes,
            witness=NodeCheckpoints(WitnessStore(conn, clock), registry, clock),
            endpoints=settings.endpoints,
            audit=audit,
            clock=clock,
            directory_id=settings.directory_id,
        ),
        subjects=SubjectService(
            limits=settings.subjects,
            runtime=runtime,
            consents=consents,
            verifier=verifier,
            audit=audit,
            clock=clock,
            publisher=publisher,
            disputes=disputes,
            locator=locator,
            registry=registry,
        ),
        enrollment=EnrollmentService(
            runtime=runtime,
            tokens=TokenStore(conn),
            registry=registry,
            identity=identity,
            ca_cert=ca.cert,
            directory_key=key,
            directory_id=settings.directory_id,
            clock=clock,
        ),
        storage=storage,
        router=router,
        publisher=publisher,
        audit=audit,
        metrics=metrics,
        tls=tls,
        checkpoints=CheckpointPublisher(audit, node_witnesses(registry, channels), storage),
        refusals=refusals,
    )


async def start_directory(
    settings: DirectorySettings,
    listen: str = "127.0.0.1:0",
    public_listen: str = "127.0.0.1:0",
    *,
    clock: Clock = system_clock,
) -> RunningDirectory:
    services = build_services(settings, clock=clock)
    limits = settings.server
    app = RunningDirectory(
        name="directory",
        settings=limits,
        services=services,
        metrics=services.metrics,
        health=HealthMonitor(
            [d.full_name for _, d in services.on_member_port() + services.on_public_port()],
            services.health_problem,
            interval_s=limits.health_interval_s,
            max_watches=limits.max_health_watches,
            metrics=services.metrics,
            refresh=services.metrics.gauges(
                audit_entries=lambda: services.audit.size,
                expires_at=lambda: services.tls.expires_at,
            ),
        ),
    )
    await app.health.check()
    members_server = app.add_server(services.on_member_port(), ports=2)
    public_server = app.add_server(
        services.on_public_port(),
        ports=2,
        idle_timeout_s=min(limits.idle_timeout_s, settings.server.public_idle_timeout_s),
    )
    members = bind(
        members_server,
        listen,
        services.tls,
        limits,
        ports=2,
        name="directory member port",
        metrics=services.metrics,
    )
    public = bind(
        public_server,
        public_listen,
        services.tls,
        limits,
        require_client_auth=False,
        ports=2,
        name="directory public port",
        metrics=services.metrics,
    )
    app.bindings.extend([members, public])
    await app.start()
    app.address = await members.open()
    app.public_address = await public.open()
    app.spawn(checkpoint_every(services.audit, services.storage, settings.checkpoint_interval_s))
    app.spawn(app.health.run())
    app.spawn(services.checkpoints.run(settings.checkpoint_interval_s))
    app.spawn(services.refusals.run())
    # at the end: the last checkpoint to the nodes that witness it, pushes under way ended,
    # channels to nodes closed, the refusals still counted written, a last checkpoint signed
    for closer in (
        services.checkpoints.publish_final,
        services.publisher.close,
        services.router.close,
        services.refusals.close,
        functools.partial(checkpoint_now, services.audit, services.storage),
        services.storage.durable,
        services.storage.close,
    ):
        app.on_close(closer)
    return app


async def serve(settings: DirectorySettings, ready_file: Path | None) -> None:
    directory = await start_directory(
        settings, settings.server.listen, settings.server.public_listen
    )
    info = {"address": directory.address, "public_address": directory.public_address}
    await directory.serve_until_stopped(ready_file, info)
