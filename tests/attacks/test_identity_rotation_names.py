"""Item 8: a rotation must not widen a certificate.

A requester's certificate names no host (it only connects out); a node's names exactly the
hosts its operator granted. The attacker rotates its key and hopes the new certificate names
hosts it was never given (it could then serve as a node at those addresses).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from credex.protocol import pki
from credex.sdk.rotation import KeyFiles, rotate_key
from tests.attacks.conftest import Target
from tests.attacks.identity_tools import Member, enroll_member, removed_afterwards


def rotate(target: Target, member: Member) -> list[str]:
    """Rotate through the real RotateKey; the host names of the certificate it returns."""
    files = member.files
    asyncio.run(
        rotate_key(
            directory_address=target.address,
            member_id=member.member_id,
            current_key=member.key,
            tls=member.tls(),
            files=KeyFiles(member.folder / "signing.key", files.tls_key, files.cert),
        )
    )
    return pki.certificate_names(pki.load_cert(files.cert))


def test_a_rotated_requester_certificate_names_no_host(target: Target, tmp_path: Path) -> None:
    with removed_afterwards(target, "names-requester"):
        member = enroll_member(target, tmp_path, "names-requester")
        assert pki.certificate_names(pki.load_cert(member.files.cert)) == []
        assert rotate(target, member) == []


def test_a_rotated_node_certificate_names_exactly_its_granted_hosts(
    target: Target, tmp_path: Path
) -> None:
    granted = ["node-a.example", "10.1.2.3"]
    with removed_afterwards(target, "names-node"):
        member = enroll_member(target, tmp_path, "names-node", role="node", hosts=granted)
        assert sorted(pki.certificate_names(pki.load_cert(member.files.cert))) == sorted(granted)
        assert sorted(rotate(target, member)) == sorted(granted)
