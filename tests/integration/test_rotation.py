"""Key rotation without downtime: a requester's and a running node's signing key and TLS
certificate are replaced; the old key verifies for an overlap and is refused after it."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from credex.directory.config import load_settings
from credex.directory.identity import KEY_OVERLAP_S
from credex.node.config import load_node_config
from credex.node.server import tls_identity
from credex.protocol import pki
from credex.protocol.channels import open_channel
from credex.protocol.errors import ProfileVerificationError, Reason, Unauthenticated
from credex.protocol.keys import SigningKey, write_private
from credex.protocol.signing import open_signed, seal
from credex.protocol.tls import TlsIdentity
from credex.sdk.rotation import KeyFiles, rotate_key
from credex.testing.federation import Federation, enroll_requester
from credex.v1 import member_pb2, requester_pb2
from credex.v1.common_pb2 import Category, Purpose
from credex.v1.member_pb2_grpc import MemberServiceStub
from credex.v1.node_pb2 import NodeAnswer
from credex.v1.requester_pb2_grpc import RequesterServiceStub
from tests.harness import trailer_map

LOAN = Purpose.PURPOSE_LOAN_APPLICATION


def files_of(home: Any) -> KeyFiles:
    return KeyFiles(
        signing_key=home.signing_key_path, tls_key=home.tls_key_path, cert=home.cert_path
    )


def consent_for(fed: Federation, requester_id: str) -> str:
    return fed.loop.run(
        fed.subject("S1").grant(
            requester_id=requester_id, purpose=LOAN, categories=[Category.CATEGORY_FINANCIAL],
            max_uses=20,
        )
    )  # fmt: skip


def test_requester_rotates_and_the_old_key_lapses_after_the_overlap(
    federation: Federation, tmp_path: Path
) -> None:
    settings = load_settings(federation.root / "directory")
    home = federation.loop.run(
        enroll_requester(settings, tmp_path, "rotator", federation.directory)
    )
    consent_id = consent_for(federation, "rotator")
    old_key, old_tls = home.signing_key(), home.tls()

    valid_until = federation.loop.run(
        rotate_key(
            directory_address=federation.address, member_id="rotator", current_key=old_key,
            tls=old_tls, files=home.key_files(), clock=federation.clock,
        )
    )  # fmt: skip
    assert valid_until == pytest.approx(federation.clock() + KEY_OVERLAP_S, abs=5)
    new_key = home.signing_key()
    assert new_key.key_id != old_key.key_id
    assert oct(home.signing_key_path.stat().st_mode & 0o777) == "0o600"

    def profile(key: SigningKey, tls: TlsIdentity) -> Any:
        client = federation.requester("bank", key=key, tls=tls)
        client.requester_id = "rotator"
        return federation.loop.run(
            client.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN)
        )

    # nodes learn of the new member "rotator" at their next registry pull (every 0.2 s here)
    deadline = time.monotonic() + 5
    while not profile(new_key, home.tls()).records:  # new key, new certificate
        assert time.monotonic() < deadline, "nodes never learned of the new member"
        time.sleep(0.05)
    assert profile(old_key, old_tls).records  # old key and certificate, within the overlap
    with federation.clock_moved(KEY_OVERLAP_S + 1):
        with pytest.raises(Unauthenticated) as err:  # the old certificate lapsed with its key
            profile(old_key, old_tls)
        assert err.value.reason == Reason.CERTIFICATE_REVOKED
        with pytest.raises(Unauthenticated) as err:  # and the old key, over the new certificate
            profile(old_key, home.tls())
        assert err.value.reason == Reason.UNKNOWN_REQUESTER
        # the directory still serves the new key (nodes, 10 min on, wait for their next sync)
        assert profile(new_key, home.tls()).requester_id == "rotator"


def raw_rotate(fed: Federation, tls: TlsIdentity, request: member_pb2.RotateKeyRequest) -> Any:
    async def call() -> Any:
        async with open_channel(fed.address, tls) as channel:
            try:
                await MemberServiceStub(channel).RotateKey(request, timeout=5)
            except grpc.aio.AioRpcError as exc:
                return trailer_map(exc).get("credex-reason"), exc.code()
        return "OK", grpc.StatusCode.OK

    return fed.loop.run(call())


def rotation_request(
    member_id: str, current: SigningKey, new: SigningKey, prover: SigningKey, clock: float
) -> member_pb2.RotateKeyRequest:
    rotation = member_pb2.KeyRotation(
        member_id=member_id,
        new_signing_key=new.public.raw,
        csr_pem=pki.create_csr(pki.new_tls_key(), member_id),
        issued_at=Timestamp(seconds=int(clock)),
    )
    return member_pb2.RotateKeyRequest(
        rotation=seal(rotation, current), proof=seal(rotation, prover)
    )


def test_rotation_refusals(federation: Federation, tmp_path: Path) -> None:
    settings = load_settings(federation.root / "directory")
    home = federation.loop.run(
        enroll_requester(settings, tmp_path, "careful", federation.directory)
    )
    key, tls, now = home.signing_key(), home.tls(), federation.clock()
    new = SigningKey.generate()
    # the proof is not by the new key
    assert raw_rotate(
        federation, tls, rotation_request("careful", key, new, SigningKey.generate(), now)
    ) == (Reason.BAD_SIGNATURE, grpc.StatusCode.UNAUTHENTICATED)
    # signed by someone else's key
    assert raw_rotate(
        federation, tls, rotation_request("careful", SigningKey.generate(), new, new, now)
    ) == (Reason.BAD_SIGNATURE, grpc.StatusCode.UNAUTHENTICATED)
    # over another member's connection
    assert raw_rotate(
        federation, federation.requester_homes["bank"].tls(),
        rotation_request("careful", key, new, new, now),
    ) == (Reason.PEER_MISMATCH, grpc.StatusCode.PERMISSION_DENIED)  # fmt: skip
    # a key someone already used
    bank_key = federation.requester_homes["bank"].signing_key()
    assert raw_rotate(
        federation, tls, rotation_request("careful", key, bank_key, bank_key, now)
    ) == (Reason.KEY_IN_USE, grpc.StatusCode.ALREADY_EXISTS)
    # stale
    assert raw_rotate(federation, tls, rotation_request("careful", key, new, new, now - 3600)) == (
        Reason.REQUEST_EXPIRED,
        grpc.StatusCode.PERMISSION_DENIED,
    )


def served_certificate(address: str, tls: TlsIdentity, scratch: Path) -> bytes:
    """The certificate a server presents to a new connection (DER)."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cadata=tls.ca_pem.decode())
    context.check_hostname = False
    key_file, cert_file = Path("/tmp") / "rot.key", Path("/tmp") / "rot.crt"
    assert tls.key_pem and tls.cert_pem
    write_private(key_file, tls.key_pem)
    cert_file.write_bytes(tls.cert_pem)
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port))) as sock, context.wrap_socket(sock) as tls_sock:
        der = tls_sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_running_node_rotates_without_a_restart(federation: Federation, tmp_path: Path) -> None:
    config = load_node_config(federation.node_configs["courts"])
    address = federation.nodes["courts"].address
    before_cert = served_certificate(address, federation.directory_tls, tmp_path)
    old_key = SigningKey.load(config.signing_key)
    federation.loop.run(
        rotate_key(
            directory_address=federation.address, member_id="courts", current_key=old_key,
            tls=tls_identity(config), files=KeyFiles(config.signing_key, config.tls_key,
                                                      config.tls_cert),
            clock=federation.clock,
        )
    )  # fmt: skip
    new_key = SigningKey.load(config.signing_key)
    assert new_key.key_id != old_key.key_id
    # the running node serves the new certificate to new connections...
    after_cert = served_certificate(address, federation.directory_tls, tmp_path)
    assert after_cert != before_cert
    assert after_cert == ssl.PEM_cert_to_DER_cert(config.tls_cert.read_text())
    # ...and signs its answers with the new key, which the directory and requesters accept
    judicial_consent = federation.loop.run(
        federation.subject("S1").grant(
            requester_id="bank", purpose=LOAN, categories=[Category.CATEGORY_JUDICIAL]
        )
    )
    signed = _raw_profile(federation, judicial_consent)
    courts = next(
        r for r in requester_pb2.Profile.FromString(signed.body).nodes if r.node_id == "courts"
    )
    assert courts.status == requester_pb2.NodeStatus.NODE_STATUS_OK
    assert courts.answer.key_id == new_key.key_id
    open_signed(courts.answer, NodeAnswer, new_key.public, what="answer")
    # and the SDK, checking node keys from the registry, accepts the answer too
    profile = federation.loop.run(federation.requester("bank").verify_profile(signed))
    assert "courts" in {r.node_id for r in profile.records}


def _raw_profile(fed: Federation, consent_id: str) -> Any:
    bank = fed.requester("bank")
    request = bank.profile_request(subject_id="S1", consent_id=consent_id, purpose=LOAN)

    async def call() -> Any:
        async with open_channel(fed.address, fed.requester_homes["bank"].tls()) as channel:
            return (await RequesterServiceStub(channel).GetProfile(request, timeout=10)).profile

    return fed.loop.run(call())


def _judicial_consent(fed: Federation) -> str:
    return fed.loop.run(
        fed.subject("S1").grant(
            requester_id="bank", purpose=LOAN, categories=[Category.CATEGORY_JUDICIAL],
            max_uses=10,
        )
    )  # fmt: skip


def _rotate_courts(fed: Federation) -> tuple[SigningKey, float]:
    """Rotate the running courts node's key: its old key and until when that still counts."""
    config = load_node_config(fed.node_configs["courts"])
    old_key = SigningKey.load(config.signing_key)
    valid_until = fed.loop.run(
        rotate_key(
            directory_address=fed.address, member_id="courts", current_key=old_key,
            tls=tls_identity(config), files=KeyFiles(config.signing_key, config.tls_key,
                                                      config.tls_cert),
            clock=fed.clock,
        )
    )  # fmt: skip
    return old_key, valid_until


def _resigned(fed: Federation, signed: Any, key: SigningKey, answered_at: float) -> Any:
    """`signed` with courts' answer re-dated and signed by `key`, the profile re-signed by the
    directory: what a holder of that key and a dishonest directory could send."""
    profile = requester_pb2.Profile.FromString(signed.body)
    courts = next(r for r in profile.nodes if r.node_id == "courts")
    answer = NodeAnswer.FromString(courts.answer.body)
    answer.answered_at.FromSeconds(int(answered_at))
    courts.answer.CopyFrom(seal(answer, key))
    return seal(profile, fed.directory_key)


def test_a_long_lived_client_verifies_answers_with_the_key_valid_when_signed(
    federation: Federation,
) -> None:
    """A requester client made before a node rotates keeps verifying its answers (it fetches
    the registry again on meeting the new key), accepts an answer signed by the retired key
    while that key was valid, and refuses one signed after."""
    bank = federation.requester("bank")
    consent_id = _judicial_consent(federation)

    def courts_records() -> int:
        profile = federation.loop.run(
            bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN)
        )
        return sum(r.node_id == "courts" for r in profile.records)

    assert courts_records()  # the client holds the registry now
    old_key, valid_until = _rotate_courts(federation)
    assert courts_records()  # signed with the new key, unknown to the registry held

    signed = _raw_profile(federation, consent_id)
    within = _resigned(federation, signed, old_key, valid_until - 60)
    assert any(
        r.node_id == "courts" for r in federation.loop.run(bank.verify_profile(within)).records
    )
    after = _resigned(federation, signed, old_key, valid_until + 60)
    with pytest.raises(ProfileVerificationError, match="retired"):
        federation.loop.run(bank.verify_profile(after))


def test_a_client_holding_the_registry_from_before_a_rotation_refuses_the_old_key_after_it(
    federation: Federation,
) -> None:
    """A requester client that last read the registry before a node rotated, and has seen no
    answer under the new key since, still refuses an answer signed by the retired key after
    its overlap: its registry vouches for the then-current key only up to the overlap after
    it was last known current, so it asks again and learns of the retirement."""
    bank = federation.requester("bank")
    signed = _raw_profile(federation, _judicial_consent(federation))  # under the current key
    federation.loop.run(bank.verify_profile(signed))  # the client now holds the registry
    old_key, valid_until = _rotate_courts(federation)
    with pytest.raises(ProfileVerificationError, match="retired"):
        federation.loop.run(
            bank.verify_profile(_resigned(federation, signed, old_key, valid_until + 60))
        )


def test_an_answer_dated_past_what_even_a_fresh_registry_vouches_for_is_refused(
    federation: Federation,
) -> None:
    """An answer under a node's current key, dated beyond the overlap after the registry was
    last known current (a node's clock far ahead, or a forged date): the client asks the
    registry again, and still cannot vouch for the key then."""
    bank = federation.requester("bank")
    signed = _raw_profile(federation, _judicial_consent(federation))
    current = SigningKey.load(load_node_config(federation.node_configs["courts"]).signing_key)
    far = federation.clock() + KEY_OVERLAP_S + 3600
    with pytest.raises(ProfileVerificationError, match="dated after the registry vouches"):
        federation.loop.run(bank.verify_profile(_resigned(federation, signed, current, far)))
