"""The notebook API: a real federation of processes in a few lines, profiles as plain rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from credex.lab.api import Lab
from credex.lab.demo import pick_subject
from credex.protocol.errors import PermissionDenied, Reason


def test_a_notebook_session(tmp_path: Path) -> None:
    with Lab.start(tmp_path / "nb", subjects=60, seed=4) as lab:
        subject = pick_subject(lab.federation.root, {"pboc-credit-reference", "volunteer-registry"})
        assert subject in lab.subjects
        consent = lab.grant(subject, "bank", "loan-application", ["financial", "volunteering"],
                            max_uses=2)  # fmt: skip
        rows = lab.profile_rows(subject, "bank", consent, "loan-application")
        assert rows and {r["category"] for r in rows} == {"financial", "volunteering"}
        assert all(r["subject_id"] == subject and r["record_id"] for r in rows)
        assert all(isinstance(r["value"], float) for r in rows)
        assert lab.revoke(subject, consent) == "revoked"
        with pytest.raises(PermissionDenied) as err:
            lab.profile(subject, "bank", consent, "loan-application")
        assert err.value.reason == Reason.CONSENT_REVOKED
        log = lab.access_log(subject)
        assert [r.outcome for r in log.records] == [
            "refused:CONSENT_REVOKED",
            "assembled",
        ]  # newest first
        pids = [p.pid for p in lab.federation.launcher.infos]
    assert pids and not any(Path(f"/proc/{pid}").exists() for pid in pids)
