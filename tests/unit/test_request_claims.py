"""Request ids are claimed once, for good, including those served before claims existed."""

from __future__ import annotations

from pathlib import Path

import pytest

from credex.directory.request_claims import RequestClaims
from credex.directory.schema import open_directory_storage
from credex.protocol.errors import PermissionDenied, Reason
from credex.runtime.audit import AuditEntry, AuditLog
from credex.runtime.db import open_database
from credex.runtime.schema import runtime_tables
from credex.runtime.storage import SqliteStorage


def test_an_id_is_claimed_once_and_a_rolled_back_claim_leaves_it_free(tmp_path: Path) -> None:
    storage = open_directory_storage(tmp_path / "directory.db")
    claims = RequestClaims(storage.connection)
    with pytest.raises(RuntimeError), storage.unit():
        claims.claim("r-1", "bank", 1.0)
        raise RuntimeError("a later check refused the request")
    with storage.unit():
        claims.claim("r-1", "bank", 2.0)  # the refused request did not take it
    with pytest.raises(PermissionDenied) as err, storage.unit():
        claims.claim("r-1", "school", 3.0)
    assert err.value.reason == Reason.REPLAY


def test_ids_served_before_the_upgrade_stay_taken(tmp_path: Path) -> None:
    """A directory database from before request claims (and before numbered migrations):
    the ids of the profiles it served stay taken once it is migrated."""
    path = tmp_path / "directory.db"
    old = SqliteStorage(open_database(path), serving=False)
    runtime_tables(old.connection)  # what it had: an audit log, at schema version 0
    audit = AuditLog(old.connection, lambda: 1.0)
    with old.unit():
        audit.append(
            AuditEntry(request_id="r-old", actor="bank", action="profile", outcome="assembled")
        )
        audit.append(
            AuditEntry(
                request_id="r-refused", actor="bank", action="profile", outcome="refused:REPLAY"
            )
        )
    old.close()
    storage = open_directory_storage(path)
    claims = RequestClaims(storage.connection)
    with pytest.raises(PermissionDenied), storage.unit():
        claims.claim("r-old", "bank", 2.0)
    with storage.unit():
        claims.claim("r-refused", "bank", 2.0)  # a refused request never held its id
    again = open_directory_storage(path)  # migrated once: nothing changes
    with pytest.raises(PermissionDenied), again.unit():
        RequestClaims(again.connection).claim("r-refused", "bank", 3.0)
