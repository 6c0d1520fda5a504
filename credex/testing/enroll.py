"""Enrolling members as their operators do, through the directory's real enrollment service:
the directory's operator issues a one-time token, the member makes its keys on its own side
and redeems it. Used by the test federation and the lab alike."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from credex.directory import admin as directory_admin
from credex.directory.config import DirectorySettings
from credex.node import admin as node_admin
from credex.node.config import load_node_config
from credex.sdk.member_home import MemberHome, enroll_home


def enroll_node(
    settings: DirectorySettings,
    config_path: Path,
    public_address: str,
    *,
    categories: Sequence[str],
    name: str = "",
    jurisdiction: str = "CN",
    hosts: Sequence[str] | None = None,
) -> None:
    """Enroll the node of `config_path`: a token for its id, then `init_node` with it. Its
    certificate names `hosts` (default: localhost and 127.0.0.1)."""
    config = load_node_config(config_path)
    token = directory_admin.create_enrollment_token(
        settings,
        member_id=config.node_id,
        role="node",
        name=name or config.name,
        jurisdiction=jurisdiction,
        categories=list(categories),
        hosts=hosts,
    )
    node_admin.init_node(
        config_path,
        node_admin.Enrollment(
            public_address=public_address, token=token, ca_cert=settings.ca_cert_path
        ),
    )


async def enroll_requester(
    settings: DirectorySettings,
    home_path: Path,
    requester_id: str,
    *,
    public_address: str,
    directory_address: str,
    name: str = "",
    jurisdiction: str = "CN",
) -> MemberHome:
    """Enroll a requester and keep its home (keys, certificate, addresses) at `home_path`."""
    token = directory_admin.create_enrollment_token(
        settings,
        member_id=requester_id,
        role="requester",
        name=name,
        jurisdiction=jurisdiction,
    )
    home = MemberHome(
        path=home_path,
        member_id=requester_id,
        directory=directory_address,
        directory_public=public_address,
    )
    await enroll_home(home, token=token, ca_pem=settings.ca_cert_path.read_bytes(), name=name)
    return home
