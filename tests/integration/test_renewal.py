"""Short-lived certificates and their renewal with the member's signing key: a requester's
SDK client renews a certificate near its end, an expired one is renewed on the public port, a
certificate from before URI identities is refused until renewed, a running node renews its own
in the background, and the directory replaces its own older certificate."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import socket
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from credex.directory import admin as directory_admin
from credex.directory.certificates import MAX_LIVE_CERTIFICATES, CertificateLog
from credex.directory.config import load_settings
from credex.directory.registry import MemberInfo, Registry
from credex.directory.schema import open_directory_storage
from credex.node import admin as node_admin
from credex.node.config import load_node_config
from credex.node.server import (
    certificate_renewal,
    keep_certificate_fresh,
    signing_key_source,
    tls_source,
)
from credex.protocol import pki
from credex.protocol.config import ConfigError
from credex.protocol.errors import PermissionDenied, Reason, ResourceExhausted, Unauthenticated
from credex.protocol.identity import certificate_identity, serial_hex
from credex.protocol.keys import SigningKey, write_private, write_public
from credex.protocol.tls import TlsIdentity
from credex.sdk.client import RequesterClient
from credex.sdk.member_home import MemberHome
from credex.sdk.renewal import renew_at
from credex.testing.federation import Federation, enroll_requester
from credex.v1.common_pb2 import Category
from credex.v1.member_pb2 import MemberRole


def ca_of(fed: Federation) -> pki.CertificateAuthority:
    settings = load_settings(fed.root / "directory")
    return pki.CertificateAuthority.load(settings.ca_key_path, settings.ca_cert_path)


def replace_certificate(home: MemberHome, cert: x509.Certificate, key: object) -> None:
    write_private(home.tls_key_path, pki.key_pem(key))  # type: ignore[arg-type]
    write_public(home.cert_path, pki.cert_pem(cert))


def new_requester(fed: Federation, tmp_path: Path, member_id: str) -> MemberHome:
    settings = load_settings(fed.root / "directory")
    return fed.loop.run(enroll_requester(settings, tmp_path, member_id, fed.directory))


def client(fed: Federation, home: MemberHome) -> RequesterClient:
    made = fed.loop.run(_client(fed, home))
    fed.clients.append(made)
    return made


async def _client(fed: Federation, home: MemberHome) -> RequesterClient:
    return RequesterClient(
        fed.address,
        home.member_id,
        home.signing_key(),
        tls=home.tls(),
        directory_key=home.directory_key(),
        renewal=home.renewal(),
    )


def test_a_new_certificate_lasts_a_day_and_names_its_holder(
    federation: Federation, tmp_path: Path
) -> None:
    home = new_requester(federation, tmp_path, "day-long")
    tls = home.tls()
    identity = tls.identity
    assert identity is not None and identity.member_id == "day-long" and not identity.directory
    assert tls.expires_at - time.time() == pytest.approx(86_400, abs=120)
    cert = tls.certificate()
    assert not cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)  # no CN fallback
    # renewal falls due in the last third of its life
    assert renew_at(tls) == pytest.approx(tls.expires_at - (tls.expires_at - tls.valid_from) / 3)


def test_the_sdk_renews_a_certificate_near_its_end(federation: Federation, tmp_path: Path) -> None:
    home = new_requester(federation, tmp_path, "near-end")
    key = pki.new_tls_key()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=100)
    cert = ca_of(federation).issue(
        pki.create_csr(key, "near-end"), "near-end", hosts=(), lifetime_s=120.0, not_before=start
    )
    replace_certificate(home, cert, key)
    assert home.tls().expires_at - time.time() < 30
    members = federation.loop.run(client(federation, home).members())
    assert any(m.member_id == "near-end" for m in members.members)
    renewed = home.tls()
    assert renewed.certificate().serial_number != cert.serial_number
    assert renewed.expires_at - time.time() > 86_000


def test_an_expired_certificate_is_renewed_on_the_public_port(
    federation: Federation, tmp_path: Path
) -> None:
    home = new_requester(federation, tmp_path, "expired")
    key = pki.new_tls_key()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    expired = ca_of(federation).issue(
        pki.create_csr(key, "expired"), "expired", hosts=(), lifetime_s=86_400.0, not_before=start
    )
    replace_certificate(home, expired, key)
    renewed = federation.loop.run(home.renewal().renew())
    assert renewed.expires_at > time.time()
    assert federation.loop.run(client(federation, home).members()).members


def old_form_certificate(
    ca: pki.CertificateAuthority, member_id: str, key: object
) -> x509.Certificate:
    """A certificate as credex issued them before identities were URI names: the member id as
    common name, no URI."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, member_id)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )


def test_a_certificate_from_before_uri_identities_is_refused_until_renewed(
    federation: Federation, tmp_path: Path
) -> None:
    home = new_requester(federation, tmp_path, "upgraded")
    key = pki.new_tls_key()
    replace_certificate(home, old_form_certificate(ca_of(federation), "upgraded", key), key)
    assert home.tls().identity is None
    plain = federation.requester("bank", key=home.signing_key(), tls=home.tls())
    with pytest.raises(Unauthenticated) as err:
        federation.loop.run(plain.members())
    assert err.value.reason == Reason.UNKNOWN_SIGNER and "renew" in err.value.message
    # the SDK with a renewal (as every `credex` command has) upgrades it first
    assert federation.loop.run(client(federation, home).members()).members
    identity = home.tls().identity
    assert identity is not None and identity.member_id == "upgraded"


def test_renewal_refusals(federation: Federation, tmp_path: Path) -> None:
    home = new_requester(federation, tmp_path, "renew-refused")
    settings = load_settings(federation.root / "directory")
    # another member's key renews nothing (only the member's current key does)
    other = new_requester(federation, tmp_path, "renew-other")
    wrong_key = dataclasses.replace(home.renewal(), signing_key=other.signing_key)
    with pytest.raises(Unauthenticated) as err:
        federation.loop.run(wrong_key.renew())
    assert err.value.reason == Reason.BAD_SIGNATURE
    # a member holds at most MAX_LIVE_CERTIFICATES at once
    renewal = home.renewal()
    with pytest.raises(ResourceExhausted) as limit:
        for _ in range(MAX_LIVE_CERTIFICATES + 1):
            federation.loop.run(renewal.renew())
    assert limit.value.retry_after_s is not None and limit.value.retry_after_s > 0
    # a suspended member renews nothing
    directory_admin.set_member_status(settings, "renew-other", "suspended")
    with pytest.raises(PermissionDenied) as err2:
        federation.loop.run(other.renewal().renew())
    assert err2.value.reason == Reason.MEMBER_SUSPENDED


def served_serial(address: str, fed: Federation) -> int:
    """The serial of the certificate a node shows a new connection."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cadata=fed.ca_pem.decode())
    context.check_hostname = False
    tls = fed.directory_tls
    assert tls.cert_pem and tls.key_pem
    scratch = fed.root / "scratch"
    scratch.mkdir(exist_ok=True)
    write_private(scratch / "d.key", tls.key_pem)
    (scratch / "d.crt").write_bytes(tls.cert_pem)
    context.load_cert_chain(scratch / "d.crt", scratch / "d.key")
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port))) as sock, context.wrap_socket(sock) as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_a_running_node_renews_its_certificate_in_the_background(federation: Federation) -> None:
    """A node whose certificate is in its last third renews it by itself; the running server
    shows the new certificate to new connections, with exactly the node's names."""
    config = load_node_config(federation.node_configs["education"])
    ca = ca_of(federation)
    names = pki.certificate_names(pki.load_cert(config.tls_cert))
    key = pki.new_tls_key()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=300)
    ending = ca.issue(
        pki.create_csr(key, "education"), "education", hosts=names, lifetime_s=400.0,
        not_before=start,
    )  # fmt: skip
    write_private(config.tls_key, pki.key_pem(key))
    write_public(config.tls_cert, pki.cert_pem(ending))
    address = federation.nodes["education"].address
    tls = tls_source(config)
    renewal = certificate_renewal(config, signing_key_source(config), tls)

    async def run_until_renewed() -> None:
        task = asyncio.create_task(keep_certificate_fresh(renewal, tls, federation.clock))
        try:
            deadline = time.monotonic() + 30
            while pki.load_cert(config.tls_cert).serial_number == ending.serial_number:
                assert time.monotonic() < deadline, "the node never renewed its certificate"
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    federation.loop.run(run_until_renewed())
    renewed = pki.load_cert(config.tls_cert)
    assert pki.certificate_names(renewed) == names
    assert renewed.not_valid_after_utc.timestamp() - time.time() > 86_000
    deadline = time.monotonic() + 30
    while served_serial(address, federation) != renewed.serial_number:
        assert time.monotonic() < deadline, "the running node kept its old certificate"
        time.sleep(0.05)


def test_the_directory_replaces_its_own_older_certificate(tmp_path: Path) -> None:
    """Upgrading a directory home: its certificate without the URI identity is issued anew
    (with the reserved name and `credex:directory:<id>`), and the old one is revoked."""
    settings = directory_admin.init_home(tmp_path / "directory")
    ca = pki.CertificateAuthority.load(settings.ca_key_path, settings.ca_cert_path)
    key = pki.new_tls_key()
    old = old_form_certificate(ca, settings.directory_id, key)
    write_private(settings.tls_key_path, pki.key_pem(key))
    write_public(settings.tls_cert_path, pki.cert_pem(old))
    directory_admin.init_home(tmp_path / "directory")
    new = pki.load_cert(settings.tls_cert_path)
    identity = certificate_identity(new)
    assert identity is not None and identity.directory
    assert identity.member_id == settings.directory_id
    assert pki.DIRECTORY_NAME in pki.certificate_names(new)
    TlsIdentity.load(settings.ca_cert_path, settings.tls_cert_path, settings.tls_key_path)
    with open_directory_storage(settings.db_path) as storage:
        log = CertificateLog(storage.connection)
        revoked = {r.serial: r.reason for r in log.revoked(time.time())}
    assert revoked == {serial_hex(old): "replaced"}
    assert not directory_admin.ensure_directory_certificate(settings)  # current: kept
    # a member an older version enrolled under the directory's name is pointed out
    assert directory_admin.reserved_name_holders(settings) == []
    with open_directory_storage(settings.db_path) as storage, storage.unit() as conn:
        Registry(conn).put(
            MemberInfo(
                member_id="credex-directory",
                role=MemberRole.MEMBER_ROLE_REQUESTER,
                name="enrolled by an older version",
                jurisdiction="CN",
                categories=(),
                key=SigningKey.generate().public,
            )
        )
    assert directory_admin.reserved_name_holders(settings) == ["credex-directory"]


def test_member_port_refuses_a_revoked_certificate_but_not_health(
    federation: Federation, tmp_path: Path
) -> None:
    """The health service is outside the revocation check (it tells nothing but whether the
    server serves); every credex service refuses."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from credex.protocol.channels import open_directory_channel

    home = new_requester(federation, tmp_path, "health-only")
    settings = load_settings(federation.root / "directory")
    directory_admin.set_member_status(settings, "health-only", "removed")

    async def health() -> int:
        async with open_directory_channel(federation.address, home.tls()) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        return int(reply.status)

    assert federation.loop.run(health()) == health_pb2.HealthCheckResponse.SERVING
    plain = federation.requester("bank", key=home.signing_key(), tls=home.tls())
    with pytest.raises(PermissionDenied) as err:
        federation.loop.run(plain.members())
    assert err.value.reason == Reason.MEMBER_SUSPENDED and "removed" in err.value.message


def test_a_node_enrolls_again_after_the_operator_resets_its_key(federation: Federation) -> None:
    """The operator resets a node's keys (lost, stolen, or an enrollment reply that never
    arrived): the old key stops verifying at once, and the node enrolls again under its id,
    names and categories with keys made anew."""
    settings = load_settings(federation.root / "directory")
    config_path = federation.node_configs["down"]  # enrolled, never started
    config = load_node_config(config_path)
    old_key = SigningKey.load(config.signing_key)
    names = pki.certificate_names(pki.load_cert(config.tls_cert))
    token = directory_admin.reset_member_key(settings, "down")
    enrollment = node_admin.Enrollment(
        public_address=federation.public_address, token=token, ca_cert=settings.ca_cert_path
    )
    with pytest.raises(ConfigError, match="--reset"):
        node_admin.init_node(config_path, enrollment)
    member = next(m for m in directory_admin.list_members(settings) if m.member_id == "down")
    assert old_key.public not in member.keys_at(time.time())  # refused at once
    node_admin.init_node(config_path, enrollment, reset=True)
    new_key = SigningKey.load(config.signing_key)
    member = next(m for m in directory_admin.list_members(settings) if m.member_id == "down")
    assert member.key == new_key.public != old_key.public
    assert member.categories == (Category.CATEGORY_FINANCIAL,)
    assert pki.certificate_names(pki.load_cert(config.tls_cert)) == names
    with pytest.raises(PermissionDenied, match="already used"):
        node_admin.init_node(config_path, enrollment, reset=True)  # the token works once
