"""Request ids are claimed once, for good, including those served before claims existed."""

from __future__ import annotations

from pathlib import Path

import pytest

from credex.directory.request_claims import RequestClaims
from credex.protocol.errors import PermissionDenied, Reason
from credex.runtime.audit import AuditEntry, AuditLog
from credex.runtime.db import open_database, transaction


def test_an_id_is_claimed_once_and_a_rolled_back_claim_leaves_it_free(tmp_path: Path) -> None:
    db = open_database(tmp_path / "directory.db")
    claims = RequestClaims(db)
    with pytest.raises(RuntimeError), transaction(db):
        claims.claim("r-1", "bank", 1.0)
        raise RuntimeError("a later check refused the request")
    claims.claim("r-1", "bank", 2.0)  # the refused request did not take it
    with pytest.raises(PermissionDenied) as err:
        claims.claim("r-1", "school", 3.0)
    assert err.value.reason == Reason.REPLAY


def test_ids_served_before_the_upgrade_stay_taken(tmp_path: Path) -> None:
    db = open_database(tmp_path / "directory.db")
    audit = AuditLog(db, lambda: 1.0)
    audit.append(
        AuditEntry(request_id="r-old", actor="bank", action="profile", outcome="assembled")
    )
    audit.append(
        AuditEntry(request_id="r-refused", actor="bank", action="profile", outcome="refused:REPLAY")
    )
    claims = RequestClaims(db)
    with pytest.raises(PermissionDenied):
        claims.claim("r-old", "bank", 2.0)
    claims.claim("r-refused", "bank", 2.0)  # a refused request never held its id
    RequestClaims(db)  # opening again changes nothing
    with pytest.raises(PermissionDenied):
        claims.claim("r-refused", "bank", 3.0)
