"""What the profile and subject attack tests share: subjects of their own, raw signed messages
(the bytes an attacker captured or crafted) and raw stubs on the directory's ports."""

from __future__ import annotations

import contextlib
import csv
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from credex.lab.identities import subject_key
from credex.protocol.channels import open_directory_channel
from credex.protocol.clock import to_timestamp
from credex.protocol.errors import REASON_KEY
from credex.protocol.keys import SigningKey
from credex.protocol.signing import domain_tag
from credex.protocol.tls import TlsIdentity
from credex.sdk.link import DirectoryLink
from credex.sdk.member_home import MemberHome
from credex.v1.common_pb2 import Signed
from credex.v1.subject_pb2_grpc import SubjectServiceStub
from tests.attacks.conftest import SEED, Target


def own_subject(
    target: Target, index: int, nodes: set[str] | None = None
) -> tuple[str, SigningKey]:
    """A subject known to every node in `nodes` (default: all), counted from the end of the
    list so that it is not the subject other attack tests pick (`Target.subject` takes the
    first); each `index` gives another one."""
    wanted = nodes or set(target.node_ids)
    known: dict[str, set[str]] = {}
    with (target.root / "locator.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            known.setdefault(row["subject_id"], set()).add(row["node_id"])
    candidates = sorted(s for s, held in known.items() if wanted <= held)
    subject_id = candidates[-1 - index]
    return subject_id, subject_key(SEED, subject_id)


def local_id(root: Path, subject_id: str, node_id: str) -> str:
    """The node's own id for the subject, from the synthetic data's locator."""
    with (root / "locator.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["subject_id"] == subject_id and row["node_id"] == node_id:
                return row["local_id"]
    raise AssertionError(f"{node_id} does not know {subject_id}")


def sign_body(body: bytes, message_type: type[Message], key: SigningKey) -> Signed:
    """`body` signed as a `message_type` exactly as credex signs: whatever bytes it holds."""
    return Signed(body=body, signature=key.sign(domain_tag(message_type) + body), key_id=key.key_id)


def unknown_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field `number` that no credex message defines."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def now_ts() -> Any:
    return to_timestamp(time.time())


def nonce() -> bytes:
    return os.urandom(16)


def refusal(err: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    """The status code and credex reason of a refused call."""
    metadata: Any = err.trailing_metadata() or ()
    reasons = [str(v) for k, v in metadata if k == REASON_KEY]
    return err.code(), reasons[0] if reasons else ""


def public_stub(target: Target) -> contextlib.AbstractAsyncContextManager[Any]:
    """The subject service as anyone on the network reaches it: TLS, no certificate."""
    return subject_service(target.public_address, target.ca_pem)


@contextlib.asynccontextmanager
async def subject_service(address: str, ca_pem: bytes) -> AsyncIterator[Any]:
    # Any: grpc-stubs types the generated stubs as synchronous, the aio channel's are awaited
    """A raw stub on the directory's public port at `address`."""
    channel = open_directory_channel(address, TlsIdentity(ca_pem))
    try:
        yield SubjectServiceStub(channel)
    finally:
        await channel.close(None)


@contextlib.asynccontextmanager
async def requester_stub(target: Target, home: MemberHome) -> AsyncIterator[Any]:
    """The requester service on the member port as the member of `home` (its own
    certificate)."""
    async with DirectoryLink(target.address, home.tls()) as link:
        yield link.requesters
