"""Profile assembly: check every node's signed answer and build the signed profile."""

from __future__ import annotations

from credex.directory.router import NodeReply
from credex.directory.scoring import Policy, ScoredRecord, score
from credex.directory.verify import AuthorizedProfileRequest
from credex.protocol.clock import from_timestamp, to_timestamp
from credex.protocol.errors import CredexError
from credex.protocol.keys import SigningKey
from credex.protocol.signing import digest, parse, seal, verify
from credex.v1.common_pb2 import Signed
from credex.v1.node_pb2 import NodeAnswer
from credex.v1.requester_pb2 import NodeResult, NodeStatus, Profile


def node_result(reply: NodeReply, now: float) -> NodeResult:
    """The profile's entry for one node; only a verified, matching answer is OK."""
    result = NodeResult(
        node_id=reply.call.node.member_id,
        categories=reply.call.categories,
        elapsed_ms=round(reply.elapsed_ms, 3),
        query_id=reply.query_id,
    )
    if reply.response is None:
        result.status, result.detail = reply.status, reply.detail
        return result
    signed = reply.response.answer
    if not any(verify(signed, NodeAnswer, key) for key in reply.call.node.keys_at(now)):
        result.status = NodeStatus.NODE_STATUS_INVALID_SIGNATURE
        result.detail = "answer is not signed by the node's registered key"
        return result
    try:
        answer = parse(signed.body, NodeAnswer, what="node answer")
    except CredexError as err:
        result.status, result.detail = NodeStatus.NODE_STATUS_INVALID_ANSWER, err.message
        return result
    problem = _mismatch(answer, reply)
    if problem:
        result.status, result.detail = NodeStatus.NODE_STATUS_INVALID_ANSWER, problem
        return result
    result.answer.CopyFrom(signed)
    if answer.records:
        result.status = NodeStatus.NODE_STATUS_OK
    else:
        result.status, result.detail = NodeStatus.NODE_STATUS_NOT_FOUND, "no records"
    return result


# An answer delivered to the requester: what it means for a profile to disclose something.
DELIVERED = (NodeStatus.NODE_STATUS_OK, NodeStatus.NODE_STATUS_NOT_FOUND)
# How the audit log records an authorised profile request that delivered no node's answer.
NOTHING_DISCLOSED = "nothing-disclosed"


def within_total(results: list[NodeResult], max_bytes: int) -> None:
    """Keep the answers of a profile within `max_bytes` together: as many as fit, smallest
    first (one large answer does not crowd out the rest); the others become TOO_LARGE."""
    total = 0
    delivered = [r for r in results if r.status in DELIVERED]
    for result in sorted(delivered, key=lambda r: (r.answer.ByteSize(), r.node_id)):
        size = result.answer.ByteSize()
        if total + size <= max_bytes:
            total += size
            continue
        result.ClearField("answer")
        result.status = NodeStatus.NODE_STATUS_TOO_LARGE
        result.detail = f"the profile's answers would exceed {max_bytes} bytes, its cap"


def disclosed(results: list[NodeResult]) -> bool:
    """Whether any node's answer reaches the requester (records, or that it holds none)."""
    return any(r.status in DELIVERED for r in results)


def _mismatch(answer: NodeAnswer, reply: NodeReply) -> str:
    if answer.request_id != reply.query_id or answer.query_digest != digest(reply.query):
        return "answer is for another query"
    if answer.node_id != reply.call.node.member_id:
        return "answer names another node"
    asked = set(reply.call.categories)
    if any(r.category not in asked for r in answer.records):
        return "answer holds categories that were not asked"
    return ""


def scored_records(results: list[NodeResult]) -> list[ScoredRecord]:
    """The records of every verified answer, as scoring sees them."""
    records: list[ScoredRecord] = []
    for result in results:
        if result.status != NodeStatus.NODE_STATUS_OK:
            continue
        answer = parse(result.answer.body, NodeAnswer, what="node answer")
        records.extend(
            ScoredRecord(
                node_id=result.node_id,
                record_id=r.record_id,
                kind=r.kind,
                value=r.value,
                occurred_at=from_timestamp(r.occurred_at),
            )
            for r in answer.records
        )
    return records


def assemble(
    authorized: AuthorizedProfileRequest,
    results: list[NodeResult],
    key: SigningKey,
    now: float,
    policy: Policy,
) -> Signed:
    """The directory-signed profile, scored under `policy` as of `now`; a profile that
    disclosed no record carries no score (a default score would rate the person on nothing)."""
    request = authorized.request
    records = scored_records(results)
    profile = Profile(
        request_id=request.request_id,
        subject_id=request.subject_id,
        requester_id=request.requester_id,
        consent_id=request.consent_id,
        purpose=request.purpose,
        categories=authorized.categories,
        assembled_at=to_timestamp(now),
        nodes=sorted(results, key=lambda r: r.node_id),
        consent=authorized.stored.signed,
    )
    if records:
        profile.score.CopyFrom(score(policy, records, now))
    return seal(profile, key)
