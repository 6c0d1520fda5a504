"""The error catalog: each reason has one status code, built by `refused` and read back by
`from_rpc_error` with the original call kept, as a client sees it."""

from __future__ import annotations

import ast

import grpc
import pytest

from credex.protocol.errors import (
    CATALOG,
    UNAUTHENTICATED_REASONS,
    CredexError,
    Reason,
    from_rpc_error,
    refused,
)
from tests.commands import REPO

SUBCLASSES = {cls.__name__ for cls in CredexError.__subclasses__()}


def test_every_reason_has_one_entry() -> None:
    assert set(CATALOG) == set(Reason)


@pytest.mark.parametrize("reason", list(Reason))
def test_refused_builds_the_class_of_the_reasons_one_code(reason: Reason) -> None:
    err = refused(reason, "why", retry_after_s=1.5)
    assert err.code == CATALOG[reason].code
    assert (err.reason, err.message, err.retry_after_s) == (reason, "why", 1.5)
    assert err.retryable == CATALOG[reason].retryable


def test_refusals_decided_before_the_sender_is_proven_are_the_catalogs() -> None:
    assert {r for r, i in CATALOG.items() if not i.proves_sender} == UNAUTHENTICATED_REASONS
    assert Reason.BAD_SIGNATURE in UNAUTHENTICATED_REASONS
    assert Reason.CONSENT_REVOKED not in UNAUTHENTICATED_REASONS


def test_no_server_module_chooses_a_status_code_itself() -> None:
    """Outside credex/protocol/errors.py, refusals are raised with `refused(Reason.X, ...)`,
    never by naming a status class next to a reason."""
    found = []
    for path in (REPO / "credex").rglob("*.py"):
        if "v1" in path.parts or path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in SUBCLASSES
            ):
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.func.id}")
    assert found == []


class _FailedCall(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: tuple[tuple[str, str], ...]):
        super().__init__(
            code,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(*trailers),
            details=details,
            debug_error_string="",
        )


def test_from_rpc_error_keeps_the_call_and_reads_the_reason() -> None:
    call = _FailedCall(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED: slow down",
        (("credex-reason", "RATE_LIMITED"), ("credex-retry-after-ms", "250")),
    )
    err = from_rpc_error(call)
    assert err.call is call
    assert (err.code, err.reason, err.message) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        Reason.RATE_LIMITED,
        "slow down",
    )
    assert err.retry_after_s == 0.25 and err.retryable
