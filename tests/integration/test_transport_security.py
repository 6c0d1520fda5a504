"""Mutual TLS and enrollment, with real TLS servers on loopback: who gets past the handshake,
who may sign as whom, and how a one-time token may (not) be used."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import grpc
import pytest

from credex.directory import admin as directory_admin
from credex.directory.config import load_settings
from credex.protocol import pki
from credex.protocol.channels import open_channel, open_directory_channel
from credex.protocol.errors import PermissionDenied, Reason
from credex.protocol.keys import SigningKey
from credex.protocol.tls import TlsIdentity
from credex.sdk.enrollment import EnrollmentFiles, enroll
from credex.testing.federation import Federation, enroll_requester
from credex.v1 import member_pb2, node_pb2
from credex.v1.common_pb2 import Category, Purpose
from credex.v1.member_pb2_grpc import MemberServiceStub
from credex.v1.node_pb2_grpc import NodeServiceStub

LOAN = Purpose.PURPOSE_LOAN_APPLICATION


def identity(
    ca: pki.CertificateAuthority | None, member_id: str, fed: Federation, **issue: Any
) -> TlsIdentity:
    """A TLS identity for `member_id` issued by `ca` (None: no certificate at all)."""
    if ca is None:
        return TlsIdentity(fed.ca_pem)
    key = pki.new_tls_key()
    cert = ca.issue(pki.create_csr(key, member_id), member_id, **issue)
    return TlsIdentity(fed.ca_pem, pki.cert_pem(cert), pki.key_pem(key))


def federation_ca(fed: Federation) -> pki.CertificateAuthority:
    settings = load_settings(fed.root / "directory")
    return pki.CertificateAuthority.load(settings.ca_key_path, settings.ca_cert_path)


def call_directory(fed: Federation, tls: TlsIdentity) -> grpc.StatusCode:
    async def call() -> grpc.StatusCode:
        async with open_directory_channel(fed.address, tls) as channel:
            try:
                await MemberServiceStub(channel).ListMembers(
                    member_pb2.ListMembersRequest(), timeout=5
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    return fed.loop.run(call())


def call_node(fed: Federation, tls: TlsIdentity) -> tuple[grpc.StatusCode, str]:
    async def call() -> tuple[grpc.StatusCode, str]:
        async with open_channel(fed.nodes["pboc"].address, tls) as channel:
            try:
                await NodeServiceStub(channel).QueryRecords(
                    node_pb2.QueryRecordsRequest(), timeout=5
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, ""

    return fed.loop.run(call())


def test_member_certificate_gets_through(federation: Federation) -> None:
    assert call_directory(federation, federation.requester_homes["bank"].tls()) == (
        grpc.StatusCode.OK
    )


def test_client_without_certificate_is_refused_at_the_handshake(federation: Federation) -> None:
    assert call_directory(federation, identity(None, "x", federation)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    assert call_node(federation, identity(None, "x", federation))[0] == (
        grpc.StatusCode.UNAVAILABLE
    )


def test_certificate_from_another_ca_is_refused(federation: Federation) -> None:
    other = pki.CertificateAuthority(*pki.create_ca("impostor CA"))
    assert call_directory(federation, identity(other, "bank", federation)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    assert call_node(federation, identity(other, "directory", federation))[0] == (
        grpc.StatusCode.UNAVAILABLE
    )


def test_expired_certificate_is_refused(federation: Federation) -> None:
    expired = identity(
        federation_ca(federation),
        "bank",
        federation,
        lifetime_s=86400.0,
        not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3),
    )
    assert call_directory(federation, expired) == grpc.StatusCode.UNAVAILABLE


def test_a_node_answers_only_the_directory(federation: Federation) -> None:
    """The bank holds a valid federation certificate, but only the directory may query nodes."""
    code, details = call_node(federation, federation.requester_homes["bank"].tls())
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details.startswith(Reason.PEER_MISMATCH)


def test_a_member_cannot_sign_as_another(federation: Federation) -> None:
    """School's signing key over the bank's TLS connection: the signer is not the peer."""
    consent_id = federation.loop.run(
        federation.subject("S1").grant(
            requester_id="school", purpose=Purpose.PURPOSE_SCHOOL_ENROLLMENT,
            categories=[Category.CATEGORY_VOLUNTEERING],
        )
    )  # fmt: skip
    school_over_bank = federation.requester("school", tls=federation.requester_homes["bank"].tls())
    with pytest.raises(PermissionDenied) as err:
        federation.loop.run(
            school_over_bank.get_profile(
                subject_id="S1", consent_id=consent_id, purpose=Purpose.PURPOSE_SCHOOL_ENROLLMENT
            )
        )
    assert err.value.reason == Reason.PEER_MISMATCH


def test_subjects_and_enrollment_need_no_client_certificate_but_members_port_does(
    federation: Federation,
) -> None:
    views = federation.loop.run(federation.subject("S2").consents())
    assert isinstance(views, list)
    no_cert = identity(None, "x", federation)

    async def call_members_port_without_cert() -> grpc.StatusCode:
        async with open_directory_channel(federation.address, no_cert) as channel:
            try:
                await MemberServiceStub(channel).ListMembers(
                    member_pb2.ListMembersRequest(), timeout=5
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    assert federation.loop.run(call_members_port_without_cert()) == grpc.StatusCode.UNAVAILABLE


# --- enrollment ---------------------------------------------------------------------------


def try_enroll(
    fed: Federation, tmp_path: Path, *, token: str, member_id: str, role: str = "requester"
) -> Any:
    files = EnrollmentFiles(
        tls_key=tmp_path / "tls.key",
        cert=tmp_path / "tls.crt",
        ca=tmp_path / "ca.crt",
        directory_key=tmp_path / "directory.pub",
    )
    return fed.loop.run(
        enroll(
            public_address=fed.public_address,
            ca_pem=fed.ca_pem,
            token=token,
            member_id=member_id,
            role=role,
            signing_key=SigningKey.generate(),
            name=member_id,
            files=files,
        )
    )


def refused(fed: Federation, tmp_path: Path, error: type[Exception], **kwargs: Any) -> Any:
    with pytest.raises(error) as info:
        try_enroll(fed, tmp_path, **kwargs)
    assert not (tmp_path / "tls.crt").exists()  # nothing written on refusal
    return info.value


def test_token_works_once(federation: Federation, tmp_path: Path) -> None:
    settings = load_settings(federation.root / "directory")
    token = directory_admin.create_enrollment_token(settings, member_id="once", role="requester")
    response = try_enroll(federation, tmp_path / "a", token=token, member_id="once")
    assert response.member.member_id == "once"
    assert oct((tmp_path / "a" / "tls.key").stat().st_mode & 0o777) == "0o600"
    err = refused(federation, tmp_path / "b", PermissionDenied, token=token, member_id="once")
    assert err.reason == Reason.ENROLLMENT_REFUSED


def test_unknown_token_is_refused(federation: Federation, tmp_path: Path) -> None:
    err = refused(federation, tmp_path, PermissionDenied, token="nope", member_id="nobody")
    assert err.reason == Reason.ENROLLMENT_REFUSED and "unknown" in err.message


def test_expired_token_is_refused(federation: Federation, tmp_path: Path) -> None:
    settings = load_settings(federation.root / "directory")
    token = directory_admin.create_enrollment_token(
        settings, member_id="late", role="requester", ttl_s=1.0
    )
    with federation.clock_moved(5):
        err = refused(federation, tmp_path, PermissionDenied, token=token, member_id="late")
    assert "expired" in err.message


def test_token_for_another_member_or_role_is_refused(
    federation: Federation, tmp_path: Path
) -> None:
    settings = load_settings(federation.root / "directory")
    token = directory_admin.create_enrollment_token(settings, member_id="mine", role="requester")
    err = refused(federation, tmp_path / "a", PermissionDenied, token=token, member_id="yours")
    assert err.reason == Reason.ENROLLMENT_REFUSED
    err = refused(
        federation, tmp_path / "b", PermissionDenied, token=token, member_id="mine", role="node"
    )
    assert "requester" in err.message
    # the token was not spent by the refusals
    assert try_enroll(federation, tmp_path / "c", token=token, member_id="mine").member


def test_existing_member_cannot_enroll_again(federation: Federation, tmp_path: Path) -> None:
    settings = load_settings(federation.root / "directory")
    federation.loop.run(
        enroll_requester(settings, tmp_path / "homes", "twice", federation.directory)
    )
    with pytest.raises(Exception, match="already a member"):
        directory_admin.create_enrollment_token(settings, member_id="twice", role="requester")


def test_a_member_certificate_cannot_pose_as_the_directory(federation: Federation) -> None:
    """A server with a node's perfectly valid certificate (for 127.0.0.1) is not the directory:
    clients of the directory check for the name only the directory's certificate has."""
    from credex.node.config import load_node_config
    from credex.node.server import tls_identity
    from credex.runtime.ports import bind, create_server
    from credex.runtime.settings import ServerSettings

    node_tls = tls_identity(load_node_config(federation.node_configs["pboc"]))

    async def impostor_and_call() -> grpc.StatusCode:
        limits = ServerSettings("127.0.0.1:0")
        server = create_server(limits)
        binding = bind(server, "127.0.0.1:0", node_tls, limits, require_client_auth=False)
        await server.start()
        address = await binding.open()
        try:
            bank_tls = federation.requester_homes["bank"].tls()
            async with open_directory_channel(address, bank_tls) as channel:
                try:
                    await MemberServiceStub(channel).ListMembers(
                        member_pb2.ListMembersRequest(), timeout=5
                    )
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
            return grpc.StatusCode.OK
        finally:
            await server.stop(0)
            await binding.close()

    assert federation.loop.run(impostor_and_call()) == grpc.StatusCode.UNAVAILABLE


def test_the_directory_name_and_id_are_never_given_to_a_member(federation: Federation) -> None:
    from credex.protocol.config import ConfigError

    settings = load_settings(federation.root / "directory")
    with pytest.raises(ConfigError, match="reserved"):
        directory_admin.create_enrollment_token(
            settings, member_id="sneaky", role="node", categories=["financial"],
            hosts=[pki.DIRECTORY_NAME],
        )  # fmt: skip
    with pytest.raises(ConfigError, match="directory's own id"):
        directory_admin.create_enrollment_token(settings, member_id="directory", role="node")
    ca = federation_ca(federation)
    key = pki.new_tls_key()
    with pytest.raises(pki.PkiError, match="reserved"):
        ca.issue(pki.create_csr(key, "sneaky"), "sneaky", hosts=[pki.DIRECTORY_NAME])
    requester_cert = pki.load_cert(federation.requester_homes["bank"].cert_path)
    assert pki.certificate_names(requester_cert) == []  # client-only


def test_expired_certificate_is_refused_by_a_node_too(federation: Federation) -> None:
    expired = identity(
        federation_ca(federation),
        "directory",
        federation,
        lifetime_s=86400.0,
        not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3),
    )
    assert call_node(federation, expired)[0] == grpc.StatusCode.UNAVAILABLE


def test_a_suspended_member_gets_nothing_past_the_handshake(
    federation: Federation, tmp_path: Path
) -> None:
    settings = load_settings(federation.root / "directory")
    home = federation.loop.run(
        enroll_requester(settings, tmp_path, "benched", federation.directory)
    )
    tls = home.tls()
    assert call_directory(federation, tls) == grpc.StatusCode.OK

    async def registry() -> grpc.StatusCode:
        async with open_directory_channel(federation.address, tls) as channel:
            try:
                await MemberServiceStub(channel).GetRegistry(
                    member_pb2.GetRegistryRequest(), timeout=5
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    directory_admin.set_member_status(settings, "benched", "suspended")
    try:  # its certificate is refused while it is suspended, before anything else
        assert call_directory(federation, tls) == grpc.StatusCode.PERMISSION_DENIED
        assert federation.loop.run(registry()) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        directory_admin.set_member_status(settings, "benched", "removed")
    assert call_directory(federation, tls) == grpc.StatusCode.PERMISSION_DENIED
