"""Item 7: a member posing as the directory.

Clients recognise the directory by the TLS name only its certificate may carry. The attacker
gets the operator to enroll it under that name in some spelling (as its member id, where a
certificate without host names falls back to the common name, or as a host name in another
case or with a trailing dot), then runs a server with the certificate it obtained and waits for
a new member's enrollment token. The CA must never issue such a certificate, and whatever it
did issue must not satisfy a client of the directory.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import grpc
import pytest

from credex.directory import admin as directory_admin
from credex.protocol import pki
from credex.protocol.config import ConfigError
from credex.protocol.errors import CredexError
from credex.protocol.keys import SigningKey
from credex.protocol.tls import TlsIdentity
from credex.runtime.ports import bind, create_server
from credex.runtime.settings import ServerSettings
from credex.sdk.enrollment import EnrollmentFiles, enroll
from credex.v1 import enrollment_pb2
from tests.attacks.conftest import Target
from tests.attacks.identity_tools import enroll_member, removed_afterwards

# The reserved name as a member id (a requester's certificate names no host) ...
AS_MEMBER_ID = ["credex-directory", "credex-directory."]
# ... and as a node's host name, in spellings TLS name matching treats as the same name.
AS_HOST = ["credex-directory", "CREDEX-DIRECTORY", "credex-directory.", "Credex-Directory."]
_serial = itertools.count(1)


def obtain(target: Target, folder: Path, member_id: str, hosts: list[str] | None) -> Any:
    """A certificate through the real token-and-enrollment path, or None when refused."""
    role = "node" if hosts else "requester"
    try:
        member = enroll_member(target, folder, member_id, role=role, hosts=hosts)
    except (ConfigError, CredexError, pki.PkiError):
        return None
    return member.tls()


class Impostor:
    """The attacker's server: answers as EnrollmentService and keeps whatever arrives."""

    def __init__(self) -> None:
        self.stolen: list[enrollment_pb2.EnrollRequest] = []

    async def Enroll(
        self, request: enrollment_pb2.EnrollRequest, context: Any
    ) -> enrollment_pb2.EnrollResponse:
        self.stolen.append(request)
        return enrollment_pb2.EnrollResponse()


async def victim_enrolls_at_impostor(target: Target, tls: TlsIdentity, folder: Path) -> Any:
    """A new member, given a real token, dials the impostor's address (say, by DNS spoofing)."""
    impostor = Impostor()
    limits = ServerSettings("127.0.0.1:0")
    server = create_server(limits)
    handler = grpc.unary_unary_rpc_method_handler(
        impostor.Enroll,
        request_deserializer=enrollment_pb2.EnrollRequest.FromString,
        response_serializer=enrollment_pb2.EnrollResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("credex.v1.EnrollmentService", {"Enroll": handler}),)
    )
    binding = bind(server, "127.0.0.1:0", tls, limits, require_client_auth=False)
    await server.start()
    address = await binding.open()
    victim_id = f"victim-{next(_serial)}"
    token = directory_admin.create_enrollment_token(
        target.settings, member_id=victim_id, role="requester"
    )
    try:
        await enroll(
            public_address=address,
            ca_pem=target.ca_pem,
            token=token,
            member_id=victim_id,
            role="requester",
            signing_key=SigningKey.generate(),
            name=victim_id,
            files=EnrollmentFiles(
                folder / "v.key", folder / "v.crt", folder / "v-ca.crt", folder / "v-dir.pub"
            ),
        )
        refused: Exception | None = None
    except Exception as exc:  # the handshake failing is the defence
        refused = exc
    finally:
        await server.stop(0)
        await binding.close()
    return impostor.stolen, refused


@pytest.mark.parametrize(
    ("member_id", "hosts"),
    [(m, None) for m in AS_MEMBER_ID]
    + [(f"impostor-host-{i}", [h]) for i, h in enumerate(AS_HOST)]
    # an ordinary member's certificate, which the CA does issue, must not satisfy clients either
    + [("impostor-plain", None)],
)
def test_no_member_certificate_poses_as_the_directory(
    target: Target, tmp_path: Path, member_id: str, hosts: list[str] | None
) -> None:
    with removed_afterwards(target, member_id):
        tls = obtain(target, tmp_path / "attacker", member_id, hosts)
        if tls is None:
            return  # the operator's tools or the CA refused the name: nothing to pose with
        stolen, refused = asyncio.run(victim_enrolls_at_impostor(target, tls, tmp_path))
    assert not stolen, f"the impostor ({member_id}, hosts {hosts}) received an enrollment token"
    assert isinstance(refused, CredexError)


@pytest.mark.parametrize("name", AS_HOST)
def test_the_ca_never_issues_the_directory_name_in_any_spelling(target: Target, name: str) -> None:
    """Even called directly (the directory's own code path), the CA refuses the reserved name
    as a member id or a host name."""
    ca = pki.CertificateAuthority.load(target.settings.ca_key_path, target.settings.ca_cert_path)
    key = pki.new_tls_key()
    with pytest.raises(pki.PkiError):
        ca.issue(pki.create_csr(key, "sneaky"), "sneaky", hosts=[name])
    member_id = name.lower()
    with pytest.raises(pki.PkiError):
        ca.issue(pki.create_csr(key, member_id), member_id, hosts=())
