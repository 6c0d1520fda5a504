"""Item 11: the SDK and node key rotation.

A long-lived requester client cached the member list once and checked every node answer
against the node's key of that moment: after any node rotated its key, every profile failed
to verify. And a profile that does not verify (here: forged by a compromised directory) was
reported as if the server had refused the request.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from credex.lab.federation import wait_for_registry
from credex.node.config import load_node_config
from credex.node.server import tls_identity
from credex.protocol.channels import open_directory_channel
from credex.protocol.errors import CredexError
from credex.protocol.keys import SigningKey
from credex.protocol.signing import seal
from credex.sdk.rotation import KeyFiles, rotate_key
from credex.v1 import requester_pb2
from credex.v1.common_pb2 import Category, Purpose
from credex.v1.requester_pb2_grpc import RequesterServiceStub
from tests.attacks.conftest import Target

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
NODE = "volunteer-registry"
CATEGORY = Category.CATEGORY_VOLUNTEERING


async def consented_requester(target: Target, requester_id: str) -> tuple[str, str]:
    """A new requester known to every node, and the subject's consent for it."""
    await target.enroll_requester(requester_id)
    subject_id, subject_key = target.subject({NODE})
    async with target.subject_client(subject_id, subject_key) as subject:
        consent_id = await subject.grant(
            requester_id=requester_id, purpose=LOAN, categories=[CATEGORY], max_uses=20
        )
    await wait_for_registry(target.root)
    return subject_id, consent_id


async def rotate_node(target: Target, node_id: str) -> None:
    node = next(n for n in target.fed.manifest.nodes if n.id == node_id)
    config = load_node_config(node.config)
    await rotate_key(
        directory_address=target.address,
        member_id=node_id,
        current_key=SigningKey.load(config.signing_key),
        tls=tls_identity(config),
        files=KeyFiles(config.signing_key, config.tls_key, config.tls_cert),
    )


def node_status(profile: object) -> str:
    return str(next(n.status for n in profile.nodes if n.node_id == NODE))  # type: ignore[attr-defined]


def test_a_long_lived_client_verifies_profiles_after_a_node_rotates(target: Target) -> None:
    async def attack() -> tuple[str, str, int]:
        subject_id, consent_id = await consented_requester(target, "sdk-long-lived")
        home = target.fed.requester("sdk-long-lived")
        async with target.requester_client(home) as client:
            before = await client.get_profile(
                subject_id=subject_id, consent_id=consent_id, purpose=LOAN, categories=[CATEGORY]
            )
            await rotate_node(target, NODE)  # the node signs with its new key from now on
            after = await client.get_profile(
                subject_id=subject_id, consent_id=consent_id, purpose=LOAN, categories=[CATEGORY]
            )
        return node_status(before), node_status(after), len(after.records)

    before, after, records = asyncio.run(attack())
    assert before == "OK" and after == "OK" and records > 0


def test_a_profile_that_does_not_verify_is_not_reported_as_a_refusal(
    target: Target, tmp_path: Path
) -> None:
    """A compromised directory (it holds the directory key) swaps a node's answer for one
    the node never signed: the SDK raises a verification error, distinct from any refusal."""
    from credex.protocol.errors import ProfileVerificationError

    async def attack() -> BaseException | None:
        subject_id, consent_id = await consented_requester(target, "sdk-forged")
        home = target.fed.requester("sdk-forged")
        async with target.requester_client(home) as client:
            request = client.profile_request(
                subject_id=subject_id, consent_id=consent_id, purpose=LOAN, categories=[CATEGORY]
            )
            async with open_directory_channel(target.address, home.tls()) as channel:
                response = await RequesterServiceStub(channel).GetProfile(request, timeout=30)
            profile = requester_pb2.Profile.FromString(response.profile.body)
            node = next(n for n in profile.nodes if n.node_id == NODE)
            assert node.status == requester_pb2.NodeStatus.NODE_STATUS_OK
            node.answer.signature = bytes(64)  # not the node's signature
            forged = seal(profile, SigningKey.load(target.settings.key_path))
            sent = requester_pb2.ProfileRequest.FromString(request.request.body)
            try:
                await client.verify_profile(forged, sent)
            except Exception as exc:
                return exc
        return None

    raised = asyncio.run(attack())
    assert isinstance(raised, ProfileVerificationError), repr(raised)
    assert not isinstance(raised, CredexError)
