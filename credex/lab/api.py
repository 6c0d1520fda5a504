"""A few lines from a notebook to a running federation: start it, act as subjects and
requesters, get profiles as plain rows, stop everything.

    from credex.lab.api import Lab
    with Lab.start("var/nb", subjects=1000) as lab:
        consent = lab.grant("S0000001", "bank", "loan-application", ["financial", "volunteering"])
        rows = lab.profile_rows("S0000001", "bank", consent, "loan-application")
        # pandas.DataFrame(rows)
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from credex.lab.federation import RunningFederation, start
from credex.lab.identities import subject_key
from credex.protocol import vocab
from credex.sdk.client import AccessLog, RequesterClient, SubjectClient, VerifiedProfile

T = TypeVar("T")


class Lab:
    """A local federation of real processes (directory and every node), used synchronously."""

    def __init__(self, federation: RunningFederation) -> None:
        self.federation = federation

    @classmethod
    def start(cls, root: str | Path, *, subjects: int = 1000, seed: int = 7, nodes: int = 8) -> Lab:
        """Generate (or reuse) data in `root` and start the federation of `nodes` nodes."""
        return cls(start(Path(root), subjects=subjects, seed=seed, nodes=nodes))

    def stop(self) -> int:
        """Stop every process; returns how many."""
        return self.federation.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def subjects(self) -> list[str]:
        return [f"S{i:07d}" for i in range(1, self.federation.manifest.subjects + 1)]

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(coro)

    def _subject(self, subject_id: str) -> SubjectClient:
        fed = self.federation
        return SubjectClient(
            fed.public_address, subject_id, subject_key(fed.seed, subject_id), ca_pem=fed.ca_pem
        )

    def _requester(self, requester_id: str) -> RequesterClient:
        home = self.federation.requester(requester_id)
        return RequesterClient(
            self.federation.directory_address,
            requester_id,
            home.signing_key(),
            tls=home.tls(),
            directory_key=home.directory_key(),
            renewal=home.renewal(),  # a lab left running for days renews its certificates
        )

    def grant(
        self,
        subject_id: str,
        requester_id: str,
        purpose: str,
        categories: Sequence[str],
        *,
        max_uses: int = 1,
        valid_days: float = 30.0,
    ) -> str:
        """The subject grants a consent; returns its id."""

        async def go() -> str:
            async with self._subject(subject_id) as client:
                return await client.grant(
                    requester_id=requester_id,
                    purpose=vocab.parse_purpose(purpose),
                    categories=[vocab.parse_category(c) for c in categories],
                    max_uses=max_uses,
                    valid_days=valid_days,
                )

        return self._run(go())

    def revoke(self, subject_id: str, consent_id: str) -> str:
        async def go() -> str:
            async with self._subject(subject_id) as client:
                return await client.revoke(consent_id)

        return self._run(go())

    def profile(
        self,
        subject_id: str,
        requester_id: str,
        consent_id: str,
        purpose: str,
        categories: Sequence[str] = (),
    ) -> VerifiedProfile:
        """The requester obtains the profile; every signature in it is verified."""

        async def go() -> VerifiedProfile:
            async with self._requester(requester_id) as client:
                return await client.get_profile(
                    subject_id=subject_id,
                    consent_id=consent_id,
                    purpose=vocab.parse_purpose(purpose),
                    categories=[vocab.parse_category(c) for c in categories],
                )

        return self._run(go())

    def profile_rows(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """The profile's records as flat rows (one per record), ready for pandas.DataFrame."""
        profile = self.profile(*args, **kwargs)
        rows = []
        for record in profile.records:
            row = asdict(record)
            attributes = row.pop("attributes")
            row.update({f"attr_{k}": v for k, v in attributes.items()})
            row.update(subject_id=profile.subject_id, request_id=profile.request_id)
            rows.append(row)
        return rows

    def access_log(self, subject_id: str, limit: int | None = None) -> AccessLog:
        """The subject's access log, newest first (at most `limit` records)."""

        async def go() -> AccessLog:
            async with self._subject(subject_id) as client:
                return await client.access_log(limit=limit)

        return self._run(go())
