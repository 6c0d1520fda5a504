"""Operator actions on a node: create its keys, enroll with the directory, check adapters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from credex.config import ConfigError
from credex.db import open_database, open_readonly
from credex.enrollment import EnrollmentFiles, enroll
from credex.freshness import NonceStore
from credex.keys import SigningKey
from credex.pki import PkiError
from nodes.adapters import RecordSource
from nodes.config import NodeConfig, load_node_config


@dataclass(frozen=True)
class Enrollment:
    """What the directory operator handed over: its public address, a token, the CA cert."""

    public_address: str
    token: str
    ca_cert: Path


def check_node(config: NodeConfig) -> RecordSource:
    """Open the operator database read-only and run every adapter once."""
    source = RecordSource(open_readonly(config.records_db), config.adapters)
    source.validate()
    return source


def init_node(
    config_path: Path, enrollment: Enrollment | None = None
) -> tuple[NodeConfig, SigningKey]:
    """Create the node's signing key (if missing) and state database, enroll with the directory
    if a token is given, and fail early on a broken adapter."""
    config = load_node_config(config_path)
    check_node(config)
    if config.signing_key.exists():
        key = SigningKey.load(config.signing_key)
    else:
        key = SigningKey.generate()
        key.save(config.signing_key)
    if enrollment is not None:
        if config.tls_cert.exists():
            raise ConfigError(f"{config.node_id} is already enrolled ({config.tls_cert} exists)")
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
    db = open_database(config.state_db)
    NonceStore(db)
    db.conn.close()
    return config, key
