"""Where members may be reached: `host:port` with a DNS name or an IP literal, nothing else.

gRPC reads a target string as much more than an address: `unix:/path`, `dns:///name`,
`ipv4:…`, `xds:///…`, user-info, and numeric spellings that the system resolver turns into
addresses they do not look like (`127.1`, `0x7f000001`). The directory dials what nodes
announce, so an announced endpoint is parsed strictly here and re-checked before every dial.
Addresses no node can have (unspecified, link-local, multicast, reserved) are refused; the
operator may further allow only some networks and domains.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

MAX_ENDPOINT_CHARS = 255
MAX_NAME_CHARS = 253
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class EndpointError(ValueError):
    """An endpoint that is not host:port, or not one the directory may dial."""


def is_dns_name(name: str) -> bool:
    """A plain DNS host name: letters, digits and inner hyphens in dot-separated labels, no
    wildcard, no trailing dot, and a last label that is not all digits (so that nothing a
    resolver would read as an IPv4 address passes as a name)."""
    labels = name.lower().split(".")
    return (
        0 < len(name) <= MAX_NAME_CHARS
        and all(_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
        and not _inet_aton_accepts(name)
    )


def _inet_aton_accepts(name: str) -> bool:
    """Whether the C resolver would take `name` for an IPv4 address (e.g. 0x7f000001)."""
    try:
        socket.inet_aton(name)
    except OSError:
        return False
    return True


def ip_literal(host: str) -> IPAddress | None:
    """The address if `host` is an IP literal (IPv6 without brackets), else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def unusable_address(address: IPAddress) -> str | None:
    """Why no member can be reached at `address`, or None if it may be."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return unusable_address(address.ipv4_mapped)
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved and not address.is_loopback:
        return "a reserved address"
    return None


def split_endpoint(endpoint: str) -> tuple[str, IPAddress | None, int]:
    """(host, its address if an IP literal, port) of a well-formed `host:port`; IPv6 in
    brackets. Raises EndpointError on anything else."""
    shown = repr(endpoint[:80])
    if not endpoint or len(endpoint) > MAX_ENDPOINT_CHARS or not endpoint.isascii():
        raise EndpointError(f"endpoint {shown} is not host:port")
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit() or len(port) > 5 or not 0 < int(port) < 65536:
        raise EndpointError(f"endpoint {shown} is not host:port with a port 1-65535")
    if host.startswith("[") and host.endswith("]"):
        address = ip_literal(host[1:-1])
        if not isinstance(address, ipaddress.IPv6Address) or "%" in host:
            raise EndpointError(f"endpoint {shown}: brackets hold only an IPv6 address")
        return host, address, int(port)
    address = ip_literal(host)
    if isinstance(address, ipaddress.IPv4Address):
        return host, address, int(port)
    if address is None and is_dns_name(host):
        return host, None, int(port)
    raise EndpointError(
        f"endpoint {shown} is not host:port with a DNS name or an IP address "
        "(no scheme, user-info, path or spaces; IPv6 in brackets)"
    )


@dataclass(frozen=True)
class EndpointPolicy:
    """Which endpoints the directory accepts and dials. With no networks and no domains,
    any DNS name and any usable address; with networks, IP literals must lie in one of them;
    with domains, names must be one of them or below one. Restricting networks without
    naming domains refuses names (a name could point anywhere)."""

    networks: tuple[IPNetwork, ...] = ()
    domains: tuple[str, ...] = ()

    @classmethod
    def parse(cls, networks: Iterable[str], domains: Iterable[str]) -> EndpointPolicy:
        """From settings; EndpointError names a bad network or domain."""
        parsed = []
        for text in networks:
            try:
                parsed.append(ipaddress.ip_network(text, strict=True))
            except ValueError as exc:
                raise EndpointError(f"network {text!r}: {exc}") from None
        names = []
        for domain in domains:
            if not is_dns_name(domain):
                raise EndpointError(f"domain {domain!r} is not a DNS name")
            names.append(domain.lower())
        return cls(tuple(parsed), tuple(names))

    def check(self, endpoint: str) -> str:
        """`endpoint` if the directory may dial it; EndpointError saying why not."""
        host, address, _port = split_endpoint(endpoint)
        if address is not None:
            problem = unusable_address(address)
            if problem is not None:
                raise EndpointError(f"endpoint {endpoint!r} is {problem}")
            if self.networks and not any(address in net for net in self.networks):
                raise EndpointError(f"endpoint {endpoint!r} is outside the allowed networks")
            return endpoint
        name = host.lower()
        if self.domains:
            if not any(name == d or name.endswith("." + d) for d in self.domains):
                raise EndpointError(f"endpoint {endpoint!r} is outside the allowed domains")
        elif self.networks:
            raise EndpointError(
                f"endpoint {endpoint!r}: only addresses in the allowed networks are accepted"
            )
        return endpoint
