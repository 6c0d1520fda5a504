"""Server logs: one JSON event per line (or readable text), the request id on every line of a
request and carried from the directory to the nodes it asks, and nothing secret in them."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
from collections.abc import Iterator

import pytest

from credex.runtime.logs import REQUEST_ID, setup_logging
from credex.testing.federation import Federation
from credex.v1.common_pb2 import Category as Cat
from credex.v1.common_pb2 import Purpose, Signed

LOAN = Purpose.PURPOSE_LOAN_APPLICATION


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def events(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_carry_the_request_id(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    setup_logging("json", "info")
    token = REQUEST_ID.set("abc123")
    try:
        logging.getLogger("credex.test").info("hello %s", "world", extra={"n": 3})
    finally:
        REQUEST_ID.reset(token)
    logging.getLogger("credex.test").debug("not at info")
    logging.getLogger("credex.test").warning("outside any request")
    first, second = events(capsys.readouterr().err)
    assert first["message"] == "hello world" and first["request_id"] == "abc123"
    assert first["level"] == "INFO" and first["logger"] == "credex.test" and first["n"] == 3
    assert "time" in first
    assert second["request_id"] == "-" and second["level"] == "WARNING"


def test_text_lines_are_readable(capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    setup_logging("text", "warning")
    logging.getLogger("credex.test").info("hidden")
    logging.getLogger("credex.test").warning("shown")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("WARNING credex.test [-] shown")


def test_a_profile_is_followed_across_servers_and_leaks_nothing(
    federation: Federation, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    fed = federation
    subject = fed.subject("S1")
    consent_id = fed.loop.run(
        subject.grant(
            requester_id="bank",
            purpose=LOAN,
            categories=[Cat.CATEGORY_FINANCIAL, Cat.CATEGORY_JUDICIAL],
            max_uses=2,
        )
    )
    setup_logging("json", "debug")
    bank = fed.requester("bank")
    profile = fed.loop.run(bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN))
    logged = capsys.readouterr().err
    lines = events(logged)  # every line is one JSON event

    access = [e for e in lines if e["logger"] == "credex.access"]
    (get_profile,) = [e for e in access if e["method"] == "GetProfile"]
    assert get_profile["code"] == "OK" and get_profile["peer"] == "bank"
    queries = [e for e in access if e["method"] == "QueryRecords"]
    assert len(queries) == 2 and {e["peer"] for e in queries} == {"directory"}
    # each node logs under its own query id, which the directory's log ties to the profile:
    # followed across servers, with no id two nodes' logs share
    conn = sqlite3.connect(fed.root / "directory" / "directory.db")
    try:
        sent = {
            row[0]
            for row in conn.execute(
                "SELECT request_id FROM audit_log WHERE action = 'query' AND link = ?",
                (profile.request_id,),
            )
        }
    finally:
        conn.close()
    assert {e["request_id"] for e in queries} == sent and len(sent) == 2
    assert get_profile["request_id"] not in sent

    conn = sqlite3.connect(fed.root / "directory" / "directory.db")
    try:
        (blob,) = conn.execute(
            "SELECT signed FROM consents WHERE consent_id = ?", (consent_id,)
        ).fetchone()
    finally:
        conn.close()
    signature = Signed.FromString(blob).signature
    secrets = [signature.hex(), base64.b64encode(signature).decode()]
    for key in (fed.requester_keys["bank"], fed.subject_keys["S1"]):
        secrets.append(key.to_pem().decode().splitlines()[1])  # the PEM body
    for record in profile.records:
        secrets += [record.record_id, f"{record.value:g}"]
    assert len(secrets) >= 6
    for secret in secrets:
        assert secret not in logged, secret
