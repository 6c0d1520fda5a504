"""Profile assembly judges each node's answer on its own: a bad one never sinks the profile."""

from __future__ import annotations

import hashlib

from credex.directory.assembly import disclosed, node_result, within_total
from credex.directory.registry import MemberInfo
from credex.directory.router import NodeCall, NodeReply
from credex.protocol.keys import SigningKey
from credex.protocol.signing import domain_tag, seal
from credex.v1.common_pb2 import Category, Record, Signed
from credex.v1.member_pb2 import MemberRole
from credex.v1.node_pb2 import NodeAnswer, QueryRecordsResponse
from credex.v1.requester_pb2 import NodeResult, NodeStatus

NODE_KEY = SigningKey.from_seed(b"assembly-node")
QUERY = Signed(body=b"the query bytes", signature=b"s", key_id="k")
CALL = NodeCall(
    node=MemberInfo(
        member_id="pboc",
        role=MemberRole.MEMBER_ROLE_NODE,
        name="pboc",
        jurisdiction="CN",
        categories=(Category.CATEGORY_FINANCIAL,),
        key=NODE_KEY.public,
    ),
    local_id="1001",
    categories=(Category.CATEGORY_FINANCIAL,),
    node_key=SigningKey.from_seed(b"assembly-subject").public.raw,
    ticket=Signed(body=b"the ticket bytes", signature=b"t", key_id="k"),
)


def reply_with(answer: Signed) -> NodeReply:
    return NodeReply(
        call=CALL,
        query_id="q-1",
        query=QUERY,
        status=NodeStatus.NODE_STATUS_OK,
        detail="",
        response=QueryRecordsResponse(answer=answer),
        elapsed_ms=1.0,
    )


def judge(answer: Signed) -> NodeResult:
    return node_result(reply_with(answer), 0.0)


def good_answer(**overrides: object) -> NodeAnswer:
    answer = NodeAnswer(
        request_id="q-1",
        node_id="pboc",
        query_digest=hashlib.sha256(QUERY.body).digest(),
        records=[Record(record_id="loan-1", category=Category.CATEGORY_FINANCIAL, kind="loan")],
    )
    for field, value in overrides.items():
        setattr(answer, field, value)
    return answer


def test_matching_signed_answer_is_ok() -> None:
    result = judge(seal(good_answer(), NODE_KEY))
    assert result.status == NodeStatus.NODE_STATUS_OK
    assert result.query_id == "q-1"


def test_signed_but_undecodable_answer_is_invalid_not_fatal() -> None:
    garbage = b"\xff\xff\xff\xff"
    signed = Signed(
        body=garbage,
        signature=NODE_KEY.sign(domain_tag(NodeAnswer) + garbage),
        key_id=NODE_KEY.key_id,
    )
    result = judge(signed)
    assert result.status == NodeStatus.NODE_STATUS_INVALID_ANSWER
    assert "decode" in result.detail


def test_answer_to_another_query_is_invalid() -> None:
    result = judge(seal(good_answer(request_id="q-2"), NODE_KEY))
    assert result.status == NodeStatus.NODE_STATUS_INVALID_ANSWER


def test_answer_with_categories_not_asked_is_invalid() -> None:
    answer = good_answer()
    answer.records.add(record_id="x", category=Category.CATEGORY_JUDICIAL, kind="judgment")
    result = judge(seal(answer, NODE_KEY))
    assert result.status == NodeStatus.NODE_STATUS_INVALID_ANSWER
    assert not result.HasField("answer")


def test_answer_by_another_key_is_invalid_signature() -> None:
    result = judge(seal(good_answer(), SigningKey.from_seed(b"other")))
    assert result.status == NodeStatus.NODE_STATUS_INVALID_SIGNATURE


def test_empty_answer_is_not_found() -> None:
    answer = good_answer()
    del answer.records[:]
    result = judge(seal(answer, NODE_KEY))
    assert result.status == NodeStatus.NODE_STATUS_NOT_FOUND


def test_a_signed_answer_with_an_unknown_field_is_invalid() -> None:
    """A node's answer padded with fields its type does not define is not passed on."""
    body = seal(good_answer(), NODE_KEY).body + b"\xa2\x06\x03pad"
    signed = Signed(
        body=body, signature=NODE_KEY.sign(domain_tag(NodeAnswer) + body), key_id=NODE_KEY.key_id
    )
    result = judge(signed)
    assert result.status == NodeStatus.NODE_STATUS_INVALID_ANSWER
    assert "unknown field" in result.detail


def ok_result(node_id: str, size: int) -> NodeResult:
    """A delivered answer of about `size` bytes."""
    return NodeResult(
        node_id=node_id,
        status=NodeStatus.NODE_STATUS_OK,
        answer=Signed(body=b"x" * size, signature=b"s" * 64, key_id="k"),
    )


def test_the_profile_total_keeps_as_many_answers_as_fit_smallest_first() -> None:
    results = [ok_result("big", 6000), ok_result("a", 1000), ok_result("b", 2000)]
    results.append(NodeResult(node_id="dead", status=NodeStatus.NODE_STATUS_TIMEOUT))
    within_total(results, 3200)
    statuses = {r.node_id: r.status for r in results}
    assert statuses == {
        "big": NodeStatus.NODE_STATUS_TOO_LARGE,
        "a": NodeStatus.NODE_STATUS_OK,
        "b": NodeStatus.NODE_STATUS_OK,
        "dead": NodeStatus.NODE_STATUS_TIMEOUT,
    }
    big = results[0]
    assert not big.HasField("answer") and "3200 bytes" in big.detail
    assert disclosed(results)


def test_a_profile_where_every_node_failed_disclosed_nothing() -> None:
    results = [ok_result("big", 6000)]
    within_total(results, 1000)
    assert results[0].status == NodeStatus.NODE_STATUS_TOO_LARGE
    assert not disclosed(results)
    assert not disclosed([])
    assert disclosed([NodeResult(node_id="n", status=NodeStatus.NODE_STATUS_NOT_FOUND)])
