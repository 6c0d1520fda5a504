"""Who a certificate speaks for, in a form no host name can take.

Every certificate the federation CA issues carries its holder's identity as a URI name
(`credex:member:<id>`, or `credex:directory:<id>` for the directory's own certificate), which
TLS name matching never compares with a host name, and no common name: gRPC compares a
server's common name with the name a client expects whenever the certificate has no DNS name
(a requester's has none; URI and IP names do not prevent it), so a member id such as
`credex-directory` in a common name would pass for the directory. The directory's TLS name
DIRECTORY_NAME is a DNS name only the directory's certificate carries; the CA compares host
names with it normalised (case, trailing dot), so no spelling of it reaches a member.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509

# Every client of the directory checks the server's certificate for this DNS name.
DIRECTORY_NAME = "credex-directory"
MEMBER_URI_PREFIX = "credex:member:"
DIRECTORY_URI_PREFIX = "credex:directory:"
PEER_CACHE_SIZE = 1024


def member_uri(member_id: str) -> str:
    return MEMBER_URI_PREFIX + member_id


def directory_uri(directory_id: str) -> str:
    return DIRECTORY_URI_PREFIX + directory_id


def normalised_host(name: str) -> str:
    """A host name as TLS name matching compares it: case-folded, without trailing dots."""
    return name.strip().rstrip(".").lower()


def is_directory_name(name: str) -> bool:
    """Whether `name` (a host name or a member id) would match the directory's TLS name."""
    return normalised_host(name) == DIRECTORY_NAME


@dataclass(frozen=True)
class CertificateIdentity:
    """What a federation certificate says about its holder."""

    member_id: str
    # True for the directory's own certificate (`credex:directory:<id>`).
    directory: bool
    # The serial number as lowercase hex without leading zeros (as revocations list it).
    serial: str
    not_after: float


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def certificate_identity(cert: x509.Certificate) -> CertificateIdentity | None:
    """The credex identity in `cert`, or None if it has none (or more than one): a
    certificate issued before identities were URIs, or not by a credex CA."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    found = [
        uri
        for uri in sans.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith((MEMBER_URI_PREFIX, DIRECTORY_URI_PREFIX))
    ]
    if len(found) != 1:
        return None
    uri = found[0]
    directory = uri.startswith(DIRECTORY_URI_PREFIX)
    member_id = uri.removeprefix(DIRECTORY_URI_PREFIX if directory else MEMBER_URI_PREFIX)
    if not member_id:
        return None
    return CertificateIdentity(
        member_id=member_id,
        directory=directory,
        serial=serial_hex(cert),
        not_after=cert.not_valid_after_utc.timestamp(),
    )


class IdentityCache:
    """Parsed identities of PEM certificates, most recently used kept: servers look at the
    peer's certificate on every call, and a member reuses one certificate for many."""

    def __init__(self, size: int = PEER_CACHE_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[bytes, CertificateIdentity | None] = OrderedDict()

    def identity(self, pem: bytes) -> CertificateIdentity | None:
        if pem in self._entries:
            self._entries.move_to_end(pem)
            return self._entries[pem]
        try:
            found = certificate_identity(x509.load_pem_x509_certificate(pem))
        except ValueError:
            found = None
        self._entries[pem] = found
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return found


peer_identities = IdentityCache()
