"""Review of issue 12: the request id a requester chooses for a ProfileRequest was only checked
for length. It is kept in the directory's audit log and printed from there, so escape sequences
and forged line breaks reached an operator's terminal. The directory refuses (MALFORMED) a
request id outside [A-Za-z0-9_.:-]{1,128} before anything is spent, and never files the raw
value in its log."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import grpc

from credex.directory.consent_store import ConsentStore
from credex.directory.schema import open_directory_storage
from credex.lab.federation import wait_for_registry
from credex.protocol.errors import CredexError, Reason
from credex.protocol.keys import SigningKey
from credex.protocol.signing import seal
from credex.sdk.client import RequesterClient
from credex.v1 import requester_pb2
from credex.v1.common_pb2 import Category, Purpose
from tests.attacks.conftest import Target
from tests.attacks.profiles_common import own_subject

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
VOL = Category.CATEGORY_VOLUNTEERING
SAFE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
BAD_IDS = [
    "r-\x1b[2J\x1b[31mowned",  # clears the operator's screen, then paints it red
    "r-1\n2025-01-01 INFO credex.access forged line",
    "r-\r",
    "r 1",
    "r-\u00fc",
    "r-\u202etxt.exe",  # right-to-left override
    "r-1/2",
    "r-\x00",
    "",
    "r" * 129,
]
GOOD_IDS = ["a", "R_1.2:3-x", "r" * 128]


async def outcome(client: RequesterClient, key: SigningKey, request_id: str, **kwargs: Any) -> str:
    """ "served", or the reason the directory refused a request carrying `request_id`."""
    request = client.profile_request(purpose=LOAN, **kwargs)
    body = requester_pb2.ProfileRequest.FromString(request.request.body)
    body.request_id = request_id
    try:
        await client.send_profile_request(requester_pb2.GetProfileRequest(request=seal(body, key)))
    except CredexError as err:
        return f"{err.code.name} {err.reason}"
    except grpc.aio.AioRpcError as err:  # pragma: no cover - the SDK maps every refusal
        return err.code().name
    return "served"


def test_request_ids_outside_the_safe_alphabet_are_refused(target: Target) -> None:
    subject_id, subject_key = own_subject(target, 9)
    requester_id = f"ids-{int(time.time() * 1000) % 10**8}"

    async def attack() -> tuple[str, dict[str, str], dict[str, str]]:
        home = await target.enroll_requester(requester_id)
        await wait_for_registry(target.root)  # every node knows the new requester
        async with target.subject_client(subject_id, subject_key) as subject:
            consent_id = await subject.grant(
                requester_id=requester_id, purpose=LOAN, categories=[VOL], max_uses=20
            )
        key = home.signing_key()
        async with target.requester_client(home) as client:
            bad = {
                rid: await outcome(client, key, rid, subject_id=subject_id, consent_id=consent_id)
                for rid in BAD_IDS
            }
            good = {
                rid: await outcome(client, key, rid, subject_id=subject_id, consent_id=consent_id)
                for rid in GOOD_IDS
            }
        return consent_id, bad, good

    consent_id, bad, good = asyncio.run(attack())
    assert bad == {rid: f"INVALID_ARGUMENT {Reason.MALFORMED}" for rid in BAD_IDS}
    assert good == {rid: "served" for rid in GOOD_IDS}
    with open_directory_storage(target.settings.db_path) as storage:
        conn = storage.connection
        # only the served requests spent a use: a refused id is refused before the consent
        assert ConsentStore(conn).get(consent_id, time.time()).uses == len(GOOD_IDS)
        filed = [
            row[0]
            for row in conn.execute(
                "SELECT request_id FROM audit_log WHERE actor = ? OR link IN (?, ?, ?)",
                (requester_id, *GOOD_IDS),
            )
        ]
    assert filed, "nothing of the requester's was audited"
    assert [rid for rid in filed if rid and not SAFE.fullmatch(rid)] == []
