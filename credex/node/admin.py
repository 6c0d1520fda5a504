"""Operator actions on a node: create its keys, enroll with the directory, check adapters."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from credex.node.config import NodeConfig, load_node_config
from credex.node.config_check import check_config, require_serviceable
from credex.node.disputes import OUTCOME_NAMES, NodeDispute, NodeDisputes
from credex.node.schema import open_node_storage
from credex.node.server import certificate_renewal
from credex.protocol.clock import Clock, system_clock, to_timestamp
from credex.protocol.config import ConfigError
from credex.protocol.keys import SigningKey
from credex.protocol.pki import PkiError
from credex.protocol.signing import seal
from credex.protocol.tls import TlsIdentity
from credex.runtime.backup import BackupManifest, write_backup
from credex.sdk.enrollment import EnrollmentFiles, enroll
from credex.sdk.link import DirectoryLink
from credex.v1 import dispute_pb2, federation_pb2


@dataclass(frozen=True)
class Enrollment:
    """What the directory operator handed over: its public address, a token, the CA cert."""

    public_address: str
    token: str
    ca_cert: Path


def init_node(
    config_path: Path, enrollment: Enrollment | None = None, *, reset: bool = False
) -> tuple[NodeConfig, SigningKey]:
    """Create the node's signing key (if missing) and state database, enroll with the directory
    if a token is given, and fail early on a broken adapter. With `reset` (the operator reset
    this node's keys and gave a token for it), new keys replace the old ones on enrollment."""
    config = load_node_config(config_path)
    require_serviceable(check_config(config_path), config_path)
    if reset and enrollment is None:
        raise ConfigError("--reset enrolls again: give --enroll, --token and --ca-cert")
    if config.signing_key.exists() and not reset:
        key = SigningKey.load(config.signing_key)
    else:
        key = SigningKey.generate()
        if not reset:
            key.save(config.signing_key)
    if enrollment is not None:
        if config.tls_cert.exists() and not reset:
            raise ConfigError(
                f"{config.node_id} is already enrolled ({config.tls_cert} exists; after "
                "`credex-directory reset-key`, enroll again with --reset)"
            )
        try:
            ca_pem = enrollment.ca_cert.read_bytes()
        except OSError as exc:
            raise PkiError(
                f"cannot read CA certificate {enrollment.ca_cert}: {exc.strerror}"
            ) from None
        asyncio.run(
            enroll(
                public_address=enrollment.public_address,
                ca_pem=ca_pem,
                token=enrollment.token,
                member_id=config.node_id,
                role="node",
                signing_key=key,
                name=config.name,
                files=EnrollmentFiles(
                    tls_key=config.tls_key,
                    cert=config.tls_cert,
                    ca=config.ca_cert,
                    directory_key=config.directory_key,
                ),
            )
        )
        if reset:  # the directory has the new key now: it replaces the old one here
            key.save(config.signing_key, overwrite=True)
    open_node_storage(config.state_db).close()  # its schema, before the node first serves
    return config, key


async def renew_node_certificate(
    config: NodeConfig, public_address: str = "", *, clock: Clock = system_clock
) -> float:
    """Renew the node's certificate now (a running node does so by itself); on the public
    port if given or configured (works with an expired certificate). Returns its expiry."""
    if public_address:
        config = dataclasses.replace(config, directory_public_address=public_address)
    if not (config.directory_public_address or config.directory_address):
        raise ConfigError("no directory address: set directory_address or pass --public")
    tls = TlsIdentity.load(config.ca_cert, config.tls_cert, config.tls_key)
    renewal = certificate_renewal(config, lambda: SigningKey.load(config.signing_key), lambda: tls)
    renewed = await renewal.renew(clock=clock)
    return renewed.expires_at


def list_disputes(config: NodeConfig, status: str | None = None) -> list[NodeDispute]:
    storage = open_node_storage(config.state_db)
    try:
        return NodeDisputes(storage.connection, system_clock).all(status)
    finally:
        storage.close()


async def resolve_dispute(
    config: NodeConfig, dispute_id: str, outcome: str, note: str, *, clock: Clock = system_clock
) -> dispute_pb2.DisputeState:
    """Decide a dispute: tell the directory (signed, over mutual TLS), then record it here.
    `deleted` holds the record back from every later answer; correct or delete it in your own
    database as well."""
    if outcome not in OUTCOME_NAMES:
        raise ConfigError(f"outcome must be one of {', '.join(OUTCOME_NAMES)}")
    if outcome == "rejected" and not note.strip():
        raise ConfigError("say why the record stands (--note)")
    if not config.directory_address:
        raise ConfigError("no directory_address in the node config")
    storage = open_node_storage(config.state_db)
    try:
        disputes = NodeDisputes(storage.connection, clock)
        dispute = disputes.get(dispute_id)
        if dispute is None:
            raise ConfigError(f"no dispute {dispute_id!r}")
        if dispute.status != "open":
            raise ConfigError(f"dispute {dispute_id} is already {dispute.status}")
        resolution = dispute_pb2.DisputeResolution(
            dispute_id=dispute_id,
            node_id=config.node_id,
            status=OUTCOME_NAMES[outcome],
            note=note,
            issued_at=to_timestamp(clock()),
        )
        tls = TlsIdentity.load(config.ca_cert, config.tls_cert, config.tls_key)
        async with DirectoryLink(config.directory_address, tls) as link:
            response = await link.call(
                link.federation.ResolveDispute,
                federation_pb2.ResolveDisputeRequest(
                    resolution=seal(resolution, SigningKey.load(config.signing_key))
                ),
                deadline_s=10.0,
            )
        with storage.unit():
            disputes.resolve(dispute_id, outcome, note)
        state: dispute_pb2.DisputeState = response.dispute
        return state
    finally:
        storage.close()


def backup_node(config: NodeConfig, dest: Path, *, include_records: bool = False) -> BackupManifest:
    """Everything needed to run this node elsewhere, taken while it serves: its folder with
    the config, keys, certificates, registry snapshot and a consistent copy of its state
    database (the audit log among it). The operator's records database is theirs to back up
    and is left out unless `include_records`."""
    return write_backup(
        config.path.parent,
        dest,
        databases=[config.state_db, *([config.records_db] if include_records else [])],
        needed=[config.signing_key, config.tls_key, config.tls_cert, config.ca_cert],
        exclude=[] if include_records else [config.records_db],
        owner=config.node_id,
    )
