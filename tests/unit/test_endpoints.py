"""What an endpoint may be (host:port with a DNS name or an IP address), and how the
directory operator narrows it down (networks, domains) in directory.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from credex.directory import admin as directory_admin
from credex.directory.config import load_settings
from credex.protocol.config import ConfigError
from credex.protocol.endpoints import EndpointError, EndpointPolicy

OPEN = EndpointPolicy()


@pytest.mark.parametrize(
    "endpoint",
    ["127.0.0.1:7101", "10.1.2.3:443", "[::1]:7101", "[2001:db8::1]:7101", "localhost:1",
     "node-a.pboc.example:7101", "x1.example:65535"],
)  # fmt: skip
def test_plain_host_and_port_is_accepted(endpoint: str) -> None:
    assert OPEN.check(endpoint) == endpoint


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [
        ("unix:/run/x.sock:1", "not host:port"),
        ("dns:///node.example:443", "not host:port"),
        ("node.example", "port"),
        ("node.example:", "port"),
        ("node.example:+80", "port"),
        ("::1:7101", "not host:port"),
        ("[node.example]:7101", "brackets"),
        ("[127.0.0.1]:7101", "brackets"),
        ("*.example:7101", "not host:port"),
        ("node.example.:7101", "not host:port"),
        ("n\u00f6de.example:7101", "not host:port"),
        ("node.123:7101", "not host:port"),
        ("0177.0.0.1:7101", "not host:port"),
        ("255.255.255.255:7101", "reserved"),
        ("240.0.0.1:7101", "reserved"),
        ("169.254.0.1:7101", "link-local"),
        ("[::ffff:0.0.0.0]:7101", "unspecified"),
        ("[ff05::2]:7101", "multicast"),
        ("a" * 64 + ".example:7101", "not host:port"),
        ("example:" + "1" * 300, "not host:port"),
    ],
)
def test_anything_else_is_refused_with_a_reason(endpoint: str, why: str) -> None:
    with pytest.raises(EndpointError, match=why):
        OPEN.check(endpoint)


def test_the_operator_narrows_networks_and_domains() -> None:
    networks_only = EndpointPolicy.parse(["10.20.0.0/16", "fd00::/8"], [])
    assert networks_only.check("10.20.3.4:7101")
    assert networks_only.check("[fd00::7]:7101")
    for outside in ("10.21.0.1:7101", "127.0.0.1:7101", "node.example:7101"):
        with pytest.raises(EndpointError, match="allowed"):
            networks_only.check(outside)
    with_domains = EndpointPolicy.parse(["10.20.0.0/16"], ["nodes.example"])
    assert with_domains.check("pboc.nodes.example:7101")
    assert with_domains.check("nodes.example:7101")
    for outside in ("evilnodes.example:7101", "nodes.example.evil:7101"):
        with pytest.raises(EndpointError, match="allowed domains"):
            with_domains.check(outside)


def test_endpoint_settings_are_checked(tmp_path: Path) -> None:
    home = tmp_path / "directory"
    directory_admin.init_home(home)
    settings_file = home / "directory.toml"
    text = settings_file.read_text()
    for bad, message in (
        ('endpoint_networks = ["10.0.0.1/8"]', "host bits set"),
        ('endpoint_networks = "10.0.0.0/8"', "list of strings"),
        ('endpoint_domains = ["*.example"]', "not a DNS name"),
        ("cert_lifetime_s = 1.0", "between"),
        ("cert_lifetime_s = 9e9", "between"),
        ("key_overlap_s = 0", "positive"),
    ):
        key = bad.split(" =")[0]
        settings_file.write_text(
            "\n".join(bad if line.startswith(key + " =") else line for line in text.splitlines())
        )
        with pytest.raises(ConfigError, match=message):
            load_settings(home)
    settings_file.write_text(
        text.replace("endpoint_networks = []", 'endpoint_networks = ["10.0.0.0/8"]')
    )
    settings = load_settings(home)
    assert settings.cert_lifetime_s == 86_400.0 and settings.key_overlap_s == 600.0
    with pytest.raises(ConfigError, match="allowed networks"):
        directory_admin.set_endpoint(settings, "anyone", "127.0.0.1:7101")
