"""Deterministic keys of synthetic subjects and requesters, rebuilt from the lab seed."""

from __future__ import annotations

from credex.protocol.keys import SigningKey


def subject_key(seed: int, subject_id: str) -> SigningKey:
    """The signing key of synthetic subject `subject_id` in the federation from `seed`."""
    return SigningKey.from_seed(f"credex-lab/{seed}/subject/{subject_id}".encode())


def requester_key(seed: int, requester_id: str) -> SigningKey:
    """The signing key of synthetic requester `requester_id` in the federation from `seed`."""
    return SigningKey.from_seed(f"credex-lab/{seed}/requester/{requester_id}".encode())
