"""Input bounds under fire: hypothesis throws thousands of generated garbage, mutated, randomly
structured, large and oversized requests at a node and at the directory over (mutual) TLS.
Every answer must be a clean refusal — an expected status code with a `credex-reason` trailer,
as credex sent it — or an OK that the input justifies; and both servers keep serving.

Requests are raw bytes on one long-lived channel per party, a batch of them per hypothesis
example, sent concurrently on the federation's loop. Oracle violations are collected instead of
raised mid-run, so one run reports every class of failure (with the smallest input seen for it)
and still checks afterwards that the servers serve.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credex.directory import admin as directory_admin
from credex.directory.config import load_settings
from credex.node.config import load_node_config
from credex.node.server import tls_identity as node_tls_identity
from credex.protocol.channels import MAX_TRANSPORT_BYTES, open_channel
from credex.protocol.clock import to_timestamp
from credex.protocol.consents import create_consent
from credex.protocol.errors import REASON_KEY, Reason
from credex.protocol.keys import SigningKey
from credex.protocol.pki import create_csr, new_tls_key
from credex.protocol.signing import seal
from credex.protocol.tls import TlsIdentity
from credex.runtime.settings import DEFAULT_MAX_MESSAGE_BYTES as MAX_REQUEST_BYTES
from credex.testing.federation import Federation
from credex.v1 import (
    enrollment_pb2,
    federation_pb2,
    member_pb2,
    requester_pb2,
    subject_pb2,
)
from credex.v1.common_pb2 import Category as Cat
from credex.v1.common_pb2 import Purpose, Signed
from credex.v1.consent_pb2 import Consent, ConsentRevocation, ConsentTicket
from credex.v1.node_pb2 import (
    NodeAnswer,
    NodeQuery,
    QueryRecordsRequest,
    QueryRecordsResponse,
)
from tests.contract import contract_modules
from tests.integration.test_directory_refusals import grant
from tests.integration.test_node_refusals import (
    NODE,
    S9_LOCAL,
    S9_RECORDS,
    attestation_for,
    node_query,
    signed_request,
    subject_node_key,
    ticket_for,
)

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
FIN = Cat.CATEGORY_FINANCIAL
DAY = 86_400.0

BATCH = 20  # inputs per hypothesis example for the party's main methods, sent together
EXTRA = 4  # inputs per example for the node's other methods
EXAMPLES = 260  # hypothesis examples per fuzz test: 260 * 20 = 5,200 requests per party
MIN_REQUESTS = 5_000  # at the node's QueryRecords, and at the directory
# Long enough for a busy machine; an input that hangs a server still shows as DEADLINE_EXCEEDED.
CALL_TIMEOUT_S = 30.0
# Calls in flight at once: on a loaded machine a larger crowd of calls, served one by one on
# the servers' loop, could outlast the deadline of the last.
IN_FLIGHT = 8

REFUSAL_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)

# --- methods -----------------------------------------------------------------------------------

QUERY_RECORDS = "/credex.v1.NodeService/QueryRecords"
GET_PROFILE = "/credex.v1.RequesterService/GetProfile"
ANNOUNCE = "/credex.v1.FederationService/Announce"
GRANT = "/credex.v1.SubjectService/GrantConsent"
REVOKE = "/credex.v1.SubjectService/RevokeConsent"
LIST = "/credex.v1.SubjectService/ListConsents"
ENROLL = "/credex.v1.EnrollmentService/Enroll"

# Every service of the contract: the node's, and the directory's on its two ports.
SERVICES = [
    service
    for module in contract_modules()
    for service in module.DESCRIPTOR.services_by_name.values()
]
MEMBER_PORT = {
    "credex.v1.MemberService",
    "credex.v1.RequesterService",
    "credex.v1.FederationService",
}
# Every method the node and the directory serve, with its request type.
REQUEST_TYPES: dict[str, type[Message]] = {
    f"/{service.full_name}/{method.name}": GetMessageClass(method.input_type)
    for service in SERVICES
    for method in service.methods
}
# Methods with requests built (and signed) here; every other method gets generic inputs.
TAILORED = {QUERY_RECORDS, GET_PROFILE, ANNOUNCE, GRANT, REVOKE, LIST, ENROLL}
# The Signed field of each tailored request message, and the type signed inside it.
SIGNED_FIELD: dict[str, tuple[str, type[Message]]] = {
    QUERY_RECORDS: ("query", NodeQuery),
    GET_PROFILE: ("request", requester_pb2.ProfileRequest),
    ANNOUNCE: ("announcement", federation_pb2.NodeAnnouncement),
    GRANT: ("consent", Consent),
    REVOKE: ("revocation", ConsentRevocation),
    LIST: ("query", subject_pb2.ConsentListQuery),
    ENROLL: ("enrollment", enrollment_pb2.Enrollment),
}
# Methods whose requests carry a single-use nonce: at most one copy of a signed request is OK.
SINGLE_USE = {QUERY_RECORDS, GET_PROFILE, REVOKE, LIST}
# Methods that change nothing and answer any caller with a certificate: random requests that
# decode may well be served.
READ_ONLY = {
    "/credex.v1.NodeService/Describe",
    "/credex.v1.MemberService/ListMembers",
    "/credex.v1.MemberService/GetRegistry",
    "/credex.v1.FederationService/GetRevocations",
}


def channel_of(method: str) -> str:
    """The channel a method is called on: the node as the directory; the member port as the
    bank (Announce as the "down" node, whose announcements it signs, and GetRevocations as that
    node, whose feed it is); the public port."""
    if method.startswith("/credex.v1.NodeService/"):
        return "node"
    if method in (ANNOUNCE, "/credex.v1.FederationService/GetRevocations"):
        return "down"
    if method.split("/")[1] in MEMBER_PORT:
        return "members"
    return "public"


def carries_signature(descriptor: Any) -> bool:
    """True when a message holds a Signed anywhere: then only a real signer's request may pass."""
    seen: set[str] = set()

    def walk(d: Descriptor) -> bool:
        if d.full_name == Signed.DESCRIPTOR.full_name:
            return True
        seen.add(d.full_name)
        return any(
            walk(f.message_type)
            for f in d.fields
            if f.message_type is not None and f.message_type.full_name not in seen
        )

    return walk(descriptor)


def fuzzed(methods: list[str]) -> list[str]:
    """The methods to fuzz: those with requests built here, the read-only ones, and any other
    whose request carries a signature (which no random input can forge). An unsigned method
    that changes state is left to its own tests: a random request might be a valid one."""
    return [
        m
        for m in methods
        if m in TAILORED or m in READ_ONLY or carries_signature(REQUEST_TYPES[m].DESCRIPTOR)
    ]


NODE_METHODS = fuzzed([m for m in REQUEST_TYPES if m.startswith("/credex.v1.NodeService/")])
DIRECTORY_METHODS = fuzzed(
    [m for m in REQUEST_TYPES if not m.startswith("/credex.v1.NodeService/")]
)


# --- the fuzzing session: channels, keys, the oracle --------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One request to send: its method, raw bytes, how it was made, and whether OK may be the
    answer (for requests equivalent to a valid one, or built and signed with a real key)."""

    method: str
    kind: str
    data: bytes
    may_succeed: bool = False


@dataclass
class Violation:
    count: int
    smallest: Probe
    detail: str


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: dict[tuple[str, str, str], Violation] = field(default_factory=dict)


@dataclass(repr=False)
class Fuzz:
    fed: Federation
    channels: dict[str, grpc.aio.Channel]
    callables: dict[str, Any]
    subject_consent: str  # S1 → bank, LOAN, FIN, many uses: what fuzzed profile requests name
    sacrificial_consent: str  # S1's consent that fuzzed revocations may revoke
    enrollment_token: str  # a live token for "fuzz-enrollee" that fuzzed enrollments carry
    down_endpoint: str  # the "down" node's registered (unreachable) endpoint
    down_key: SigningKey
    csrs: dict[str, bytes]
    servers: tuple[grpc.aio.Server, ...]
    errors_logged: list[logging.LogRecord]
    tallies: dict[str, Tally] = field(default_factory=dict)
    successes: Counter[bytes] = field(default_factory=Counter)

    def send(self, probes: list[Probe], party: str) -> None:
        async def one(probe: Probe, in_flight: asyncio.Semaphore) -> tuple[Probe, Any]:
            async with in_flight:  # the deadline times one call, not a queue of them
                try:
                    answer = await self.callables[probe.method](probe.data, timeout=CALL_TIMEOUT_S)
                except grpc.aio.AioRpcError as err:
                    return probe, err
            return probe, answer

        async def all_of() -> list[tuple[Probe, Any]]:
            in_flight = asyncio.Semaphore(IN_FLIGHT)
            return list(await asyncio.gather(*(one(p, in_flight) for p in probes)))

        tally = self.tallies.setdefault(party, Tally())
        for probe, answer in self.fed.loop.run(all_of(), timeout=120):
            tally.sent[probe.method] += 1
            self.judge(tally, probe, answer)

    def judge(self, tally: Tally, probe: Probe, answer: Any) -> None:
        """The oracle: OK only when the probe justifies it; otherwise a refusal code, exactly one
        credex-reason trailer naming a known reason other than INTERNAL, and details that start
        with that reason (as credex sends them: nothing on the way replaced the status)."""
        method = probe.method.rsplit("/", 1)[1]
        if not isinstance(answer, grpc.aio.AioRpcError):
            tally.outcomes[f"{method} OK"] += 1
            if not probe.may_succeed:
                self.violate(tally, probe, "OK", "-", "a malformed or unsigned request was served")
            elif probe.method in SINGLE_USE:
                name, _ = SIGNED_FIELD[probe.method]
                request = REQUEST_TYPES[probe.method].FromString(probe.data)
                signature = getattr(request, name).signature
                self.successes[signature] += 1
                if self.successes[signature] > 1:
                    self.violate(tally, probe, "OK", "-", "a single-use request was served twice")
            return
        code, details = answer.code(), answer.details() or ""
        metadata: Any = answer.trailing_metadata() or ()
        reasons = [str(v) for k, v in metadata if str(k) == REASON_KEY]
        reason = reasons[0] if len(reasons) == 1 else "-"
        tally.outcomes[f"{method} {code.name}/{reason}"] += 1
        if (
            code not in REFUSAL_CODES
            or reason not in Reason.__members__
            or reason == Reason.INTERNAL
            or not details.startswith(f"{reason}: ")
        ):
            self.violate(tally, probe, code.name, reason, details)

    def violate(self, tally: Tally, probe: Probe, code: str, reason: str, details: str) -> None:
        key = (probe.method.rsplit("/", 1)[1], code, reason)
        seen = tally.violations.get(key)
        if seen is None:
            tally.violations[key] = Violation(1, probe, details[:300])
            return
        seen.count += 1
        if len(probe.data) < len(seen.smallest.data):
            seen.smallest, seen.detail = probe, details[:300]

    def check(self, party: str, prefix: str, logged_before: int) -> None:
        """At least MIN_REQUESTS were sent to methods starting with `prefix`, every answer
        passed the oracle, and the servers logged no error meanwhile."""
        tally = self.tallies[party]
        print(f"\n{party}: {sum(tally.sent.values())} requests {dict(tally.sent)}")
        print(f"{party} answers: {dict(sorted(tally.outcomes.items()))}")
        sent = sum(n for m, n in tally.sent.items() if m.startswith(prefix))
        assert sent >= MIN_REQUESTS, tally.sent
        lines = []
        for (method, code, reason), v in sorted(tally.violations.items()):
            data = v.smallest.data
            shown = data[:100].hex() + ("…" if len(data) > 100 else "")
            lines.append(
                f"{method}: {code} {reason} x{v.count}; smallest input ({v.smallest.kind}, "
                f"{len(data)} bytes): {shown}\n    details: {v.detail!r}"
            )
        logged = self.errors_logged[logged_before:]
        for record in logged[:5]:
            lines.append(f"server log {record.levelname} {record.name}: {record.getMessage()}")
        if lines:
            total = sum(v.count for v in tally.violations.values())
            pytest.fail(
                f"{total} of {sum(tally.sent.values())} answers were not clean refusals, "
                f"{len(logged)} errors logged:\n" + "\n".join(lines),
                pytrace=False,
            )


class _ErrorLog(logging.Handler):
    """Collects every ERROR a server logs (tracebacks of internal errors included)."""

    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self._into = into

    def emit(self, record: logging.LogRecord) -> None:
        self._into.append(record)


def _csrs() -> dict[str, bytes]:
    """CSRs for fuzzed enrollments, all for another member id than the token's, so that no
    enrollment can ever succeed: a good one, a P-384 and an Ed25519 one."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zz-not-the-enrollee")])
    p384 = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .sign(ec.generate_private_key(ec.SECP384R1()), hashes.SHA256())
    )
    ed = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .sign(ed25519.Ed25519PrivateKey.generate(), None)
    )
    return {
        "good": create_csr(new_tls_key(), "zz-not-the-enrollee"),
        "p384": p384.public_bytes(serialization.Encoding.PEM),
        "ed25519": ed.public_bytes(serialization.Encoding.PEM),
    }


@pytest.fixture(scope="module")
def fuzz(federation: Federation) -> Iterator[Fuzz]:
    fed = federation
    subject_consent = grant(fed, categories=[FIN], max_uses=1_000_000)
    sacrificial = grant(fed, categories=[FIN], max_uses=1)
    token = directory_admin.create_enrollment_token(
        load_settings(fed.root / "directory"), member_id="fuzz-enrollee", role="requester"
    )
    down_config = load_node_config(fed.node_configs["down"])
    members = fed.loop.run(fed.requester("bank").members())
    (down,) = [m for m in members.members if m.member_id == "down"]

    async def connect() -> dict[str, grpc.aio.Channel]:
        return {
            "node": open_channel(fed.nodes[NODE].address, fed.directory_tls),
            "members": open_channel(fed.address, fed.requester_homes["bank"].tls()),
            "down": open_channel(fed.address, node_tls_identity(down_config)),
            "public": open_channel(fed.public_address, TlsIdentity(fed.ca_pem)),
        }

    channels = fed.loop.run(connect())
    errors: list[logging.LogRecord] = []
    handler = _ErrorLog(errors)
    logging.getLogger().addHandler(handler)
    try:
        yield Fuzz(
            fed=fed,
            channels=channels,
            callables={
                method: channels[channel_of(method)].unary_unary(
                    method, request_serializer=None, response_deserializer=None
                )
                for method in REQUEST_TYPES
            },
            subject_consent=subject_consent,
            sacrificial_consent=sacrificial,
            enrollment_token=token,
            down_endpoint=down.endpoint,
            down_key=SigningKey.load(down_config.signing_key),
            csrs=_csrs(),
            servers=(
                fed.directory.members_server,
                fed.directory.public_server,
                fed.nodes[NODE].server,
            ),
            errors_logged=errors,
        )
    finally:
        logging.getLogger().removeHandler(handler)

        async def close() -> None:
            for channel in channels.values():
                await channel.close(None)

        fed.loop.run(close())


# --- valid requests, built fresh: what mutations start from -----------------------------------


def profile_request(fz: Fuzz) -> requester_pb2.ProfileRequest:
    now = fz.fed.clock()
    return requester_pb2.ProfileRequest(
        request_id=f"r-fuzz-{os.urandom(8).hex()}",
        nonce=os.urandom(16),
        issued_at=to_timestamp(now),
        expires_at=to_timestamp(now + 60),
        requester_id="bank",
        subject_id="S1",
        consent_id=fz.subject_consent,
        purpose=LOAN,
        categories=[FIN],
    )


def signed_enrollment(fz: Fuzz, fields: dict[str, Any]) -> Signed:
    """Signed by the key it carries, with the live token, but with a CSR for another member:
    never redeemable, while every check up to the CSR's runs."""
    key = SigningKey.generate()
    enrollment = enrollment_pb2.Enrollment(
        token=fz.enrollment_token,
        member_id="fuzz-enrollee",
        role=member_pb2.MemberRole.MEMBER_ROLE_REQUESTER,
        signing_key=key.public.raw,
        csr_pem=fz.csrs["good"],
        name="fuzz",
        issued_at=to_timestamp(fz.fed.clock()),
    )
    apply(enrollment, fields, fz.fed.clock())
    return seal(enrollment, key)


def valid_request(fz: Fuzz, method: str) -> bytes:
    """A request that passes every check (but Enroll's, whose CSR is for another member)."""
    fed = fz.fed
    now = fed.clock()
    message: Message
    if method == QUERY_RECORDS:
        message = signed_request(fed, node_query(fed, lifetime=120))
    elif method == GET_PROFILE:
        message = requester_pb2.GetProfileRequest(
            request=seal(profile_request(fz), fed.requester_keys["bank"])
        )
    elif method == ANNOUNCE:  # the endpoint it has: the "down" node stays unreachable
        announcement = federation_pb2.NodeAnnouncement(
            node_id="down", endpoint=fz.down_endpoint, issued_at=to_timestamp(now)
        )
        message = federation_pb2.AnnounceRequest(announcement=seal(announcement, fz.down_key))
    elif method == GRANT:
        consent = create_consent(
            fed.subject_keys["S2"],
            requester_id="bank",
            purpose=LOAN,
            categories=[Cat.CATEGORY_VOLUNTEERING],
            not_before=now - 60,
            not_after=now + DAY,
            max_uses=1,
        )
        message = subject_pb2.GrantConsentRequest(consent=consent, subject_id="S2")
    elif method == REVOKE:
        revocation = ConsentRevocation(
            consent_id=fz.sacrificial_consent,
            subject_id="S1",
            issued_at=to_timestamp(now),
            nonce=os.urandom(16),
        )
        message = subject_pb2.RevokeConsentRequest(
            revocation=seal(revocation, fed.subject_keys["S1"])
        )
    elif method == LIST:
        query = subject_pb2.ConsentListQuery(
            subject_id="S1", issued_at=to_timestamp(now), nonce=os.urandom(16)
        )
        message = subject_pb2.ListConsentsRequest(query=seal(query, fed.subject_keys["S1"]))
    else:
        message = enrollment_pb2.EnrollRequest(enrollment=signed_enrollment(fz, {}))
    return message.SerializeToString()


def equivalent(method: str, data: bytes, base: bytes) -> bool:
    """True when `data` decodes to the same request as `base` (unknown fields aside)."""
    request_type = REQUEST_TYPES[method]
    try:
        message = request_type.FromString(data)
    except DecodeError:
        return False
    message.DiscardUnknownFields()
    return bool(message == request_type.FromString(base))


# --- strategies: values ------------------------------------------------------------------------

TEXT = st.text(max_size=40)
INT32 = st.integers(-(1 << 31), (1 << 31) - 1)
ENUM = st.one_of(st.integers(-2, 12), INT32)
# A timestamp: ("rel", seconds from now), ("abs", any int64 seconds, any int32 nanos), unset.
TIMESTAMP = st.one_of(
    st.tuples(st.just("rel"), st.floats(-1e8, 1e8, allow_nan=False)),
    st.tuples(st.just("abs"), st.integers(-(1 << 63), (1 << 63) - 1), INT32),
    st.just(("unset",)),
)
RANDOM_SIGNED = st.builds(
    Signed, body=st.binary(max_size=300), signature=st.binary(max_size=80), key_id=TEXT
)

INT64 = st.one_of(
    st.sampled_from([-(1 << 63), -1, (1 << 31), (1 << 63) - 1]),
    st.integers(-(1 << 63), (1 << 63) - 1),
)
UINT64 = st.one_of(
    st.sampled_from([(1 << 63) - 1, 1 << 63, (1 << 64) - 1]), st.integers(0, (1 << 64) - 1)
)
_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_DOUBLE: st.floats(),
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32),
    FieldDescriptor.TYPE_INT64: INT64,
    FieldDescriptor.TYPE_SINT64: INT64,
    FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT64: UINT64,
    FieldDescriptor.TYPE_FIXED64: UINT64,
    FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_SINT32: INT32,
    FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_UINT32: st.integers(0, (1 << 32) - 1),
    FieldDescriptor.TYPE_FIXED32: st.integers(0, (1 << 32) - 1),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_STRING: TEXT,
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=64),
    FieldDescriptor.TYPE_ENUM: ENUM,
}


@cache
def random_message(descriptor: Descriptor, depth: int = 2) -> st.SearchStrategy[Message]:
    """Any message of this type with random values in a few of its fields (nested messages
    down to `depth`); structurally valid protobuf, meaningless content."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in descriptor.fields:
        if f.message_type is not None:
            if depth == 0 or f.message_type.GetOptions().map_entry:
                continue
            value = random_message(f.message_type, depth - 1)
        else:
            value = _SCALARS[f.type]
        fields[f.name] = st.lists(value, max_size=6) if f.is_repeated else value
    message_class = GetMessageClass(descriptor)

    def build(values: dict[str, Any]) -> Message:
        message = message_class()
        for name, value in values.items():
            f = descriptor.fields_by_name[name]
            if f.is_repeated and f.message_type is not None:
                for item in value:
                    getattr(message, name).add().CopyFrom(item)
            elif f.is_repeated:
                getattr(message, name).extend(value)
            elif f.message_type is not None:
                getattr(message, name).CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return overrides(**fields).map(build)


def overrides(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Values for up to three of these fields: a valid base stays mostly valid, so checks
    deep inside a handler get reached too."""
    if not fields:
        return st.just({})
    return st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({n: fields[n] for n in names})
    )


def apply(message: Message, values: dict[str, Any], now: float) -> None:
    """Set fields of `message` from drawn values (timestamps as TIMESTAMP draws them)."""
    for name, value in values.items():
        fd = message.DESCRIPTOR.fields_by_name[name]
        if fd.message_type is not None and fd.message_type.full_name.endswith(".Timestamp"):
            ts = getattr(message, name)
            if value[0] == "unset":
                message.ClearField(name)
            elif value[0] == "rel":
                ts.CopyFrom(to_timestamp(now + value[1]))
            else:
                ts.seconds, ts.nanos = value[1], value[2]
        elif fd.message_type is not None:
            getattr(message, name).CopyFrom(value)
        elif fd.is_repeated:
            message.ClearField(name)
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)


# --- strategies: mutations ---------------------------------------------------------------------

# (operator, position, argument, chunk)
MUTATION = st.tuples(
    st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate", "overwrite", "set"]),
    st.integers(0, 1 << 16),
    st.integers(0, 1 << 16),
    st.binary(min_size=1, max_size=16),
)
MUTATIONS = st.lists(MUTATION, min_size=1, max_size=4)


def mutate(data: bytes, ops: list[tuple[str, int, int, bytes]]) -> bytes:
    """Bit flips, deletions, insertions, truncation, duplication (of a slice or the whole
    message, which protobuf merges), overwrites and boundary bytes."""
    buf = bytearray(data)
    for op, drawn, arg, chunk in ops:
        pos = drawn * 0x9E3779B1  # spread small drawn numbers over the whole message
        n = len(buf)
        at = pos % (n + 1)
        if op == "flip" and n:
            buf[pos % n] ^= 1 << (arg % 8)
        elif op == "delete":
            del buf[at : at + 1 + arg % 64]
        elif op == "insert":
            buf[at:at] = chunk
        elif op == "truncate":
            del buf[at:]
        elif op == "duplicate":
            if arg % 4 == 0:
                buf.extend(bytes(buf))
            else:
                end = min(n, at + 1 + arg % 256)
                buf[end:end] = buf[at:end]
        elif op == "overwrite":
            buf[at : at + len(chunk)] = chunk
        elif op == "set" and n:
            buf[pos % n] = (0x00, 0xFF, 0x7F, 0x80, 0x0A, 0x12)[arg % 6]
    return bytes(buf)


def mutate_csr(pem: bytes, ops: list[tuple[str, int, int, bytes]], der_level: bool) -> bytes:
    """A CSR damaged in its DER (then armoured again as PEM) or in its PEM text."""
    if not der_level:
        return mutate(pem, ops)
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    return _csr_pem(mutate(der, ops))


def damage_csr_key(pem: bytes, offset: int, bit: int) -> bytes:
    """A CSR with one bit of its P-256 public point flipped: well-formed, but not a point."""
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    point = der.index(b"\x03\x42\x00\x04") + 4  # the uncompressed point's coordinates
    der[point + offset] ^= 1 << bit
    return _csr_pem(bytes(der))


def _csr_pem(der: bytes) -> bytes:
    return (
        b"-----BEGIN CERTIFICATE REQUEST-----\n"
        + base64.encodebytes(der)
        + b"-----END CERTIFICATE REQUEST-----\n"
    )


# --- strategies: requests signed with real keys, fields at random ------------------------------


@st.composite
def consent_signed(draw: st.DrawFn, fz: Fuzz, subject: str) -> Signed:
    """A consent with a few random fields, signed by the subject's key or by a fresh key."""
    fed = fz.fed
    now = fed.clock()
    key = draw(st.sampled_from([fed.subject_keys[subject], SigningKey.generate()]))
    consent = Consent.FromString(
        create_consent(
            key,
            requester_id="bank",
            purpose=LOAN,
            categories=[FIN],
            not_before=now - 60,
            not_after=now + DAY,
            max_uses=3,
        ).body
    )
    fields = overrides(
        consent_id=st.one_of(TEXT, st.text(min_size=120, max_size=140)),
        subject_key=st.binary(max_size=40),
        requester_id=st.one_of(st.sampled_from(["school", "pboc", ""]), TEXT),
        purpose=ENUM,
        categories=st.lists(ENUM, max_size=20),
        data_from=TIMESTAMP,
        data_to=TIMESTAMP,
        not_before=TIMESTAMP,
        not_after=TIMESTAMP,
        max_uses=st.integers(0, (1 << 32) - 1),
        issued_at=TIMESTAMP,
    )
    apply(consent, draw(fields), now)
    return seal(consent, key)


@st.composite
def ticket_signed(draw: st.DrawFn, fz: Fuzz) -> Signed:
    """S9's ticket for the node with a few random fields, signed by S9's key for the node or
    by a fresh key."""
    fed = fz.fed
    now = fed.clock()
    key = draw(st.sampled_from([subject_node_key(fed), SigningKey.generate()]))
    ticket = ConsentTicket.FromString(ticket_for(fed, key=key).body)
    fields = overrides(
        ticket_id=st.one_of(TEXT, st.text(min_size=30, max_size=40)),
        node_id=st.one_of(st.sampled_from(["volunteers", "", NODE]), TEXT),
        requester_id=st.one_of(st.sampled_from(["school", "pboc", ""]), TEXT),
        purpose=ENUM,
        categories=st.lists(ENUM, max_size=20),
        data_from=TIMESTAMP,
        data_to=TIMESTAMP,
        not_before=TIMESTAMP,
        not_after=TIMESTAMP,
        max_uses=st.integers(0, (1 << 32) - 1),
    )
    apply(ticket, draw(fields), now)
    return seal(ticket, key)


@st.composite
def node_signed(draw: st.DrawFn, fz: Fuzz) -> Probe:
    """A directory-signed query (so every check runs) with a few fields replaced at random."""
    fed = fz.fed
    now = fed.clock()
    query = node_query(fed, lifetime=60)
    attestation = st.builds(
        lambda local, node, ttl, shift, real_key: attestation_for(
            fed,
            local_id=local,
            node_id=node,
            ttl=ttl,
            issued_at=now + shift,
            key=None if real_key else SigningKey.generate(),
        ),
        st.one_of(st.just(S9_LOCAL), TEXT),
        st.one_of(st.just(NODE), TEXT),
        st.floats(-1e6, 1e7, allow_nan=False),
        st.floats(-1e6, 1e6, allow_nan=False),
        st.booleans(),
    )
    fields = overrides(
        request_id=st.one_of(TEXT, st.text(min_size=100, max_size=300)),
        nonce=st.binary(max_size=80),
        issued_at=TIMESTAMP,
        expires_at=TIMESTAMP,
        node_id=st.one_of(st.sampled_from(["volunteers", "", "PBOC"]), TEXT),
        requester_id=st.one_of(st.sampled_from(["school", "", "pboc"]), TEXT),
        purpose=ENUM,
        local_subject_id=st.one_of(st.sampled_from(["1001", "1009", "", "V-1"]), TEXT),
        categories=st.lists(st.one_of(st.just(int(FIN)), ENUM), max_size=20),
        ticket=st.one_of(ticket_signed(fz), RANDOM_SIGNED),
        attestation=st.one_of(attestation, RANDOM_SIGNED),
    )
    apply(query, draw(fields), now)
    key = draw(st.sampled_from([fed.directory_key, fed.directory_key, SigningKey.generate()]))
    data = QueryRecordsRequest(query=seal(query, key)).SerializeToString()
    return Probe(QUERY_RECORDS, "signed-random", data, may_succeed=True)


# Endpoints the directory must refuse; the "down" node has to stay where it is.
BAD_ENDPOINTS = [
    "",
    ":",
    "127.0.0.1",
    "127.0.0.1:",
    ":50051",
    "127.0.0.1:0",
    "127.0.0.1:65536",
    "127.0.0.1:-1",
    "127.0.0.1:+80",
    "127.0.0.1: 80",
    "127.0.0.1:\u00b2",
    "127.0.0.1:\u00b9\u00b2",
    "127.0.0.1:\u2460",
    "[::1]:\u00b3",
    "x" * 300 + ":1",
]


@st.composite
def directory_signed(draw: st.DrawFn, fz: Fuzz, method: str) -> Probe:
    """A request signed with a real key (so checks past the signature run), a few fields at
    random. Built and signed like a real client's request, so OK is a legitimate answer."""
    fed = fz.fed
    now = fed.clock()
    message: Message
    if method == GET_PROFILE:
        request = profile_request(fz)
        fields = overrides(
            request_id=st.one_of(TEXT, st.text(min_size=120, max_size=140)),
            nonce=st.binary(max_size=80),
            issued_at=TIMESTAMP,
            expires_at=TIMESTAMP,
            requester_id=st.one_of(st.sampled_from(["school", "pboc", ""]), TEXT),
            subject_id=st.one_of(st.sampled_from(["S2", "S9", "S404", ""]), TEXT),
            consent_id=st.one_of(st.just(fz.sacrificial_consent), TEXT),
            purpose=ENUM,
            categories=st.lists(st.one_of(st.just(int(FIN)), ENUM), max_size=20),
        )
        apply(request, draw(fields), now)
        signer = draw(st.sampled_from(["bank", "bank", "school"]))
        message = requester_pb2.GetProfileRequest(request=seal(request, fed.requester_keys[signer]))
    elif method == ANNOUNCE:
        # Its own endpoint or one that must be refused; the other fields at random less often.
        endpoint = draw(st.sampled_from([fz.down_endpoint, *BAD_ENDPOINTS]))
        announcement = federation_pb2.NodeAnnouncement(
            node_id="down", endpoint=endpoint, issued_at=to_timestamp(now)
        )
        fields = overrides(
            node_id=st.one_of(st.sampled_from(["pboc", "bank", ""]), TEXT),
            issued_at=TIMESTAMP,
        )
        apply(announcement, draw(st.one_of(st.just({}), fields)), now)
        message = federation_pb2.AnnounceRequest(announcement=seal(announcement, fz.down_key))
    elif method == GRANT:
        subject = draw(st.sampled_from(["S2", "S1", "S404", ""]))
        consent = draw(consent_signed(fz, subject if subject in ("S1", "S2") else "S2"))
        message = subject_pb2.GrantConsentRequest(consent=consent, subject_id=subject)
    elif method == REVOKE:
        revocation = ConsentRevocation(
            consent_id=fz.sacrificial_consent,
            subject_id="S1",
            issued_at=to_timestamp(now),
            nonce=os.urandom(16),
        )
        fields = overrides(
            consent_id=st.one_of(st.just(fz.subject_consent), TEXT),
            subject_id=st.one_of(st.sampled_from(["S2", "S404", ""]), TEXT),
            issued_at=TIMESTAMP,
            nonce=st.binary(max_size=80),
        )
        apply(revocation, draw(fields), now)
        key = draw(st.sampled_from([fed.subject_keys["S1"], SigningKey.generate()]))
        if revocation.consent_id == fz.subject_consent:
            key = fed.subject_keys["S2"]  # the profile fuzzing's consent must stay active
        message = subject_pb2.RevokeConsentRequest(revocation=seal(revocation, key))
    elif method == LIST:
        query = subject_pb2.ConsentListQuery(
            subject_id="S1", issued_at=to_timestamp(now), nonce=os.urandom(16)
        )
        fields = overrides(
            subject_id=st.one_of(st.sampled_from(["S2", "S404", ""]), TEXT),
            issued_at=TIMESTAMP,
            nonce=st.binary(max_size=80),
        )
        apply(query, draw(fields), now)
        key = draw(st.sampled_from([fed.subject_keys["S1"], SigningKey.generate()]))
        message = subject_pb2.ListConsentsRequest(query=seal(query, key))
    else:
        csr = st.one_of(
            st.sampled_from(sorted(fz.csrs.values())),
            st.builds(mutate_csr, st.just(fz.csrs["good"]), MUTATIONS, st.booleans()),
            st.builds(
                damage_csr_key, st.just(fz.csrs["good"]), st.integers(0, 63), st.integers(0, 7)
            ),
            st.binary(max_size=300),
        )
        # The CSR always, the token's grant (member id, role) less often: past it, the CA.
        grant_fields = overrides(
            token=st.one_of(st.just(""), TEXT),
            member_id=st.one_of(st.sampled_from(["bank", "pboc", ""]), TEXT),
            role=ENUM,
        )
        fields = st.fixed_dictionaries(
            {"csr_pem": csr},
            optional={"name": TEXT, "issued_at": TIMESTAMP},
        ).flatmap(
            lambda f: st.one_of(st.just(f), st.just(f), grant_fields.map(lambda g: {**f, **g}))
        )
        message = enrollment_pb2.EnrollRequest(enrollment=signed_enrollment(fz, draw(fields)))
    return Probe(method, "signed-random", message.SerializeToString(), may_succeed=True)


# --- strategies: unsigned structure, large requests, and the mix --------------------------------


def key_ids(fz: Fuzz) -> list[str]:
    fed = fz.fed
    return [
        fed.directory_key.key_id,
        *(k.key_id for k in fed.requester_keys.values()),
        *(k.key_id for k in fed.subject_keys.values()),
        fz.down_key.key_id,
    ]


@st.composite
def structured(draw: st.DrawFn, fz: Fuzz, method: str) -> Probe:
    """The request message with random field values. For tailored methods: around a Signed
    whose body is a random message of the right type (or bytes), with a random signature and a
    real or random key id. Only read-only methods may serve such a request."""
    request_type = REQUEST_TYPES[method]
    if method not in TAILORED:
        message = draw(random_message(request_type.DESCRIPTOR))
        may = method in READ_ONLY
        return Probe(method, "structured", message.SerializeToString(), may_succeed=may)
    name, inner = SIGNED_FIELD[method]
    body = draw(
        st.one_of(
            random_message(inner.DESCRIPTOR).map(lambda m: m.SerializeToString()),
            st.binary(max_size=400),
        )
    )
    message = request_type()
    getattr(message, name).CopyFrom(
        Signed(
            body=body,
            signature=draw(st.one_of(st.binary(min_size=64, max_size=64), st.binary(max_size=99))),
            key_id=draw(st.one_of(st.sampled_from(key_ids(fz)), TEXT)),
        )
    )
    if isinstance(message, subject_pb2.GrantConsentRequest):
        message.subject_id = draw(st.one_of(st.sampled_from(["S1", "S2", "S404"]), TEXT))
    return Probe(method, "structured", message.SerializeToString())


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _unknown_field(size: int) -> bytes:
    """Field 1023 (never used by credex), length-delimited, `size` bytes in all (the length is
    a 4-byte varint, which protobuf allows)."""
    payload = size - 6
    length = bytes(((payload >> (7 * i)) & 0x7F) | (0x80 if i < 3 else 0) for i in range(4))
    return b"\xfa\x3f" + length + bytes(payload)


@st.composite
def huge(draw: st.DrawFn, fz: Fuzz, method: str) -> Probe:
    """A large request within the message limit — thousands of repeated fields or a long
    string — built from a drawn size (not drawn bytes)."""
    fed = fz.fed
    size = draw(st.integers(20_000, MAX_REQUEST_BYTES - 4096))
    shape = draw(st.sampled_from(["repeated-unknown", "long-string", "repeated-enum"]))
    text, may = "x" * size, False
    if method not in TAILORED or shape == "repeated-unknown":
        # A valid (or empty) request followed by thousands of unknown varint fields.
        base = valid_request(fz, method) if method in TAILORED else b""
        data = base + b"\xf8\x3f\x01" * ((size - len(base)) // 3)
        may = method in TAILORED or method in READ_ONLY
    elif method == QUERY_RECORDS:
        query = node_query(fed)
        if shape == "long-string":
            query.node_id = text
        else:  # thousands of distinct category values nobody knows
            query.categories[:] = [Cat.ValueType(c) for c in range(100, 100 + size // 4)]
        data = QueryRecordsRequest(query=seal(query, fed.directory_key)).SerializeToString()
    elif method == GET_PROFILE:
        request = profile_request(fz)
        if shape == "long-string":
            request.consent_id = text
        else:
            request.categories[:] = [Cat.ValueType(c) for c in range(100, 100 + size // 4)]
        data = requester_pb2.GetProfileRequest(
            request=seal(request, fed.requester_keys["bank"])
        ).SerializeToString()
    elif shape == "repeated-enum":  # a self-consistent consent with thousands of categories
        now = fed.clock()
        consent = Consent.FromString(
            create_consent(
                fed.subject_keys["S2"],
                requester_id="bank",
                purpose=LOAN,
                categories=[FIN],
                not_before=now,
                not_after=now + DAY,
                max_uses=1,
            ).body
        )
        consent.categories[:] = [Cat.ValueType(c) for c in range(100, 100 + size // 4)]
        method = GRANT
        data = subject_pb2.GrantConsentRequest(
            consent=seal(consent, fed.subject_keys["S2"]), subject_id="S2"
        ).SerializeToString()
    elif method == GRANT:
        data = subject_pb2.GrantConsentRequest(subject_id=text).SerializeToString()
    elif method in (REVOKE, LIST):  # an unsigned body naming a subject with a long id
        name, inner = SIGNED_FIELD[method]
        message = REQUEST_TYPES[method]()
        getattr(message, name).CopyFrom(
            Signed(
                body=inner(subject_id=text).SerializeToString(),  # type: ignore[call-arg]
                signature=bytes(64),
                key_id="k",
            )
        )
        data = message.SerializeToString()
    else:  # field 1 (the Signed) as a long run of random bytes
        data = b"\x0a" + _varint(size) + os.urandom(size)
    assert len(data) <= MAX_REQUEST_BYTES, len(data)
    return Probe(method, f"huge-{shape}", data, may_succeed=may)


@st.composite
def probe_for(draw: st.DrawFn, fz: Fuzz, method: str) -> Probe:
    kind = draw(st.sampled_from(["garbage", "mutation", "mutation", "structured", "signed"]))
    request_type = REQUEST_TYPES[method]
    if kind == "garbage":
        data = draw(st.one_of(st.binary(max_size=2048), st.binary(max_size=8)))
        # Random bytes may decode as a request to a read-only method (e.g. "list members"):
        # a fine one to serve.
        may = method in READ_ONLY and _decodes(request_type, data)
        return Probe(method, kind, data, may_succeed=may)
    if kind == "mutation":
        if method in TAILORED:
            base = valid_request(fz, method)
        else:
            base = draw(random_message(request_type.DESCRIPTOR)).SerializeToString()
        data = mutate(base, draw(MUTATIONS))
        if method in TAILORED:
            may = equivalent(method, data, base)
        else:
            may = method in READ_ONLY and _decodes(request_type, data)
        return Probe(method, kind, data, may_succeed=may)
    if kind == "structured" or method not in TAILORED:
        return draw(structured(fz, method))
    if method == QUERY_RECORDS:
        return draw(node_signed(fz))
    return draw(directory_signed(fz, method))


def _decodes(request_type: type[Message], data: bytes) -> bool:
    try:
        request_type.FromString(data)
    except DecodeError:
        return False
    return True


@st.composite
def batch(draw: st.DrawFn, fz: Fuzz, main: list[str], extra: list[str]) -> list[Probe]:
    """BATCH inputs for the main methods (about one batch in four has a large one among them)
    and EXTRA for the others."""
    probes = [draw(probe_for(fz, draw(st.sampled_from(main)))) for _ in range(BATCH - 1)]
    last = draw(st.sampled_from(main))
    probes.append(draw(huge(fz, last) if draw(st.integers(0, 3)) == 3 else probe_for(fz, last)))
    probes += [
        draw(probe_for(fz, draw(st.sampled_from(extra)))) for _ in range(len(extra) and EXTRA)
    ]
    return probes


# --- the tests ---------------------------------------------------------------------------------


def test_node_refuses_thousands_of_malformed_queries_cleanly(fuzz: Fuzz) -> None:
    """5,200 garbage, mutated, random-structured, directory-signed-random and large queries
    at QueryRecords (and some at the node's other methods), called as the directory."""
    logged_before = len(fuzz.errors_logged)
    others = [m for m in NODE_METHODS if m != QUERY_RECORDS]

    @FUZZ_SETTINGS
    @given(st.data())
    def run(data: st.DataObject) -> None:
        fuzz.send(data.draw(batch(fuzz, [QUERY_RECORDS], others)), "node")

    run()
    fuzz.check("node", QUERY_RECORDS, logged_before)


def test_directory_refuses_thousands_of_malformed_requests_cleanly(fuzz: Fuzz) -> None:
    """5,200 such requests spread over the directory's methods: GetProfile and the other
    member-port methods as the bank (Announce as the "down" node), SubjectService and
    EnrollmentService on the public port."""
    logged_before = len(fuzz.errors_logged)

    @FUZZ_SETTINGS
    @given(st.data())
    def run(data: st.DataObject) -> None:
        fuzz.send(data.draw(batch(fuzz, DIRECTORY_METHODS, [])), "directory")

    run()
    fuzz.check("directory", "/credex.v1.", logged_before)


@pytest.mark.parametrize("method", list(REQUEST_TYPES))
@pytest.mark.parametrize("size", [MAX_REQUEST_BYTES + 1, MAX_TRANSPORT_BYTES - 4096])
def test_oversized_request_is_refused_before_it_is_read(fuzz: Fuzz, method: str, size: int) -> None:
    """Over the message limit, a well-formed message (one long unknown field) is refused by
    the transport with RESOURCE_EXHAUSTED as soon as its length is known, before any
    handler (or disk write) sees it."""
    err = _call_raw(fuzz, method, _unknown_field(size))
    assert isinstance(err, grpc.aio.AioRpcError), "an oversized request was served"
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (err.code(), err.details())
    assert "larger than max" in (err.details() or ""), err.details()


def test_request_of_exactly_the_limit_is_decoded_and_served(fuzz: Fuzz) -> None:
    """The bound is inclusive: a valid request padded with an unknown field to exactly the
    message limit is answered as usual."""
    base = valid_request(fuzz, LIST)
    data = base + _unknown_field(MAX_REQUEST_BYTES - len(base))
    assert len(data) == MAX_REQUEST_BYTES
    answer = _call_raw(fuzz, LIST, data)
    assert not isinstance(answer, grpc.aio.AioRpcError), (answer.code(), answer.details())
    response = subject_pb2.ListConsentsResponse.FromString(answer)
    granted = {Consent.FromString(s.consent.body).consent_id for s in response.consents}
    assert fuzz.subject_consent in granted


def test_announced_port_with_a_non_ascii_digit_is_refused(fuzz: Fuzz) -> None:
    """'²'.isdigit() is true but int('²') raises: the endpoint check must refuse such a port as
    ENDPOINT_REFUSED, not fail with INTERNAL."""
    announcement = federation_pb2.NodeAnnouncement(
        node_id="down", endpoint="127.0.0.1:\u00b2", issued_at=to_timestamp(fuzz.fed.clock())
    )
    data = federation_pb2.AnnounceRequest(
        announcement=seal(announcement, fuzz.down_key)
    ).SerializeToString()
    err = _call_raw(fuzz, ANNOUNCE, data)
    assert isinstance(err, grpc.aio.AioRpcError), "an invalid endpoint was accepted"
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert (REASON_KEY, str(Reason.ENDPOINT_REFUSED)) in _trailers(err)


def test_enrollment_with_a_damaged_csr_is_refused(fuzz: Fuzz) -> None:
    """A token holder's CSR whose public key is not a point on the curve: MALFORMED, not
    INTERNAL."""
    pem = damage_csr_key(fuzz.csrs["good"], 5, 0)
    data = enrollment_pb2.EnrollRequest(
        enrollment=signed_enrollment(fuzz, {"csr_pem": pem})
    ).SerializeToString()
    err = _call_raw(fuzz, ENROLL, data)
    assert isinstance(err, grpc.aio.AioRpcError), "a damaged CSR was accepted"
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert (REASON_KEY, str(Reason.MALFORMED)) in _trailers(err)


def _long_grant(fz: Fuzz, text: str) -> Message:
    return subject_pb2.GrantConsentRequest(subject_id=text)


def _long_list(fz: Fuzz, text: str) -> Message:
    body = subject_pb2.ConsentListQuery(subject_id=text).SerializeToString()
    return subject_pb2.ListConsentsRequest(query=Signed(body=body, signature=bytes(64), key_id="k"))


def _long_node_id(fz: Fuzz, text: str) -> Message:
    return QueryRecordsRequest(query=seal(node_query(fz.fed, node_id=text), fz.fed.directory_key))


@pytest.mark.parametrize(
    ("method", "build"),
    [(GRANT, _long_grant), (LIST, _long_list), (QUERY_RECORDS, _long_node_id)],
    ids=["grant-subject-id", "list-subject-id", "node-query-node-id"],
)
def test_refusal_naming_a_long_id_keeps_its_status(
    fuzz: Fuzz, method: str, build: Callable[[Fuzz, str], Message]
) -> None:
    """A refusal of a request with a 100 kB id must still arrive as credex sent it — its code
    and its reason trailer — not as gRPC's 'metadata too large' RESOURCE_EXHAUSTED."""
    err = _call_raw(fuzz, method, build(fuzz, "x" * 100_000).SerializeToString())
    assert isinstance(err, grpc.aio.AioRpcError), "the request was served"
    shown = (err.code(), (err.details() or "")[:200])
    reasons = [v for k, v in _trailers(err) if k == REASON_KEY]
    assert len(reasons) == 1 and reasons[0] in Reason.__members__, shown
    assert err.code() in REFUSAL_CODES - {grpc.StatusCode.RESOURCE_EXHAUSTED}, shown


def test_revocation_feed_after_any_sequence_number_is_served_or_refused(fuzz: Fuzz) -> None:
    """after_seq is a uint64: the largest values must not overflow the directory's database
    query into INTERNAL."""
    for after_seq in ((1 << 63) - 1, 1 << 63, (1 << 64) - 1):
        data = federation_pb2.GetRevocationsRequest(after_seq=after_seq).SerializeToString()
        answer = _call_raw(fuzz, "/credex.v1.FederationService/GetRevocations", data)
        if isinstance(answer, grpc.aio.AioRpcError):
            assert answer.code() == grpc.StatusCode.INVALID_ARGUMENT, (
                after_seq,
                answer.code(),
                answer.details(),
            )
            assert (REASON_KEY, str(Reason.MALFORMED)) in _trailers(answer)


def test_both_servers_still_serve_after_the_fuzzing(fuzz: Fuzz) -> None:
    fed = fuzz.fed
    # The same server objects as before the fuzzing: nothing was restarted.
    assert fuzz.servers == (
        fed.directory.members_server,
        fed.directory.public_server,
        fed.nodes[NODE].server,
    )
    # A fresh consent and a normal profile through the SDK: verified, with records.
    consent_id = grant(fed, categories=[FIN])
    bank = fed.requester("bank")
    profile = fed.loop.run(bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN))
    assert [n.status for n in profile.nodes] == ["OK"]
    assert {r.record_id for r in profile.records} == {"loan-1", "loan-2"}
    # The consent the profile fuzzing named is still active: no refused request used it up.
    views = {v.consent_id: v for v in fed.loop.run(fed.subject("S1").consents())}
    assert views[fuzz.subject_consent].status == "active"
    # A well-formed query straight to the node is answered with the subject's records.
    request = signed_request(fed, node_query(fed, ticket=ticket_for(fed), lifetime=60))
    answer = _call_raw(fuzz, QUERY_RECORDS, request.SerializeToString())
    assert not isinstance(answer, grpc.aio.AioRpcError), (answer.code(), answer.details())
    signed = QueryRecordsResponse.FromString(answer).answer
    assert {r.record_id for r in NodeAnswer.FromString(signed.body).records} == S9_RECORDS


# --- helpers -----------------------------------------------------------------------------------


def _call_raw(fz: Fuzz, method: str, data: bytes) -> Any:
    async def call() -> Any:
        try:
            return await fz.callables[method](data, timeout=30)
        except grpc.aio.AioRpcError as err:
            return err

    return fz.fed.loop.run(call())


def _trailers(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    metadata: Any = err.trailing_metadata() or ()
    return [(str(k), str(v)) for k, v in metadata]
