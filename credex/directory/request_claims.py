"""Request ids of authorised profile requests, each claimed once and for good.

A requester chooses its request ids; the directory's log and the subject's access log link a
profile's node queries to it by that id. The id is claimed when the request is authorised, in
the unit of work that records its nonce and counts the consent's use, so that no two requests,
served or still in flight, ever share one.
"""

from __future__ import annotations

import sqlite3

from credex.directory.schema import PROFILE_REQUESTS
from credex.protocol.errors import Reason, refused
from credex.runtime.storage import Connection, require_unit


class RequestClaims:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def claim(self, request_id: str, requester_id: str, now: float) -> None:
        """Take `request_id` for this request; PermissionDenied(REPLAY) if it was taken.
        Call inside the unit of work that records the nonce and the consent's use."""
        require_unit(self._conn)
        try:
            self._conn.execute(
                f"INSERT INTO {PROFILE_REQUESTS} (request_id, requester_id, claimed_at) "
                "VALUES (?, ?, ?)",
                (request_id, requester_id, now),
            )
        except sqlite3.IntegrityError:
            raise refused(
                Reason.REPLAY, f"request id {request_id!r} was used by an earlier request"
            ) from None
