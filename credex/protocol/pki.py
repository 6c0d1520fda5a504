"""The federation's X.509 PKI: a CA run by the directory, member certificates from CSRs.

TLS keys are ECDSA P-256 (what every TLS stack accepts) and separate from members' Ed25519
signing keys: the certificate authenticates the connection, the signing key each message.
A certificate names its holder as the URI `credex:member:<id>` (see credex.protocol.identity),
which servers read as the peer's identity, and has no common name. Member certificates
are short-lived (a day by default) and renewed by their holders with their signing key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from credex.protocol.endpoints import ip_literal, is_dns_name
from credex.protocol.identity import (
    DIRECTORY_NAME,
    directory_uri,
    is_directory_name,
    member_uri,
)
from credex.protocol.keys import KeyFileError, read_private

__all__ = ["DIRECTORY_NAME"]  # re-exported: every client of the directory pins it

DEFAULT_HOSTS = ("localhost", "127.0.0.1")
CA_DAYS = 3650
# How long a member certificate lasts unless the directory's settings say otherwise.
MEMBER_CERT_LIFETIME_S = 86_400.0
# How far back a certificate's validity starts, for clocks a little behind (at most a tenth of
# its lifetime, so that a short-lived certificate is not half spent when issued).
MAX_BACKDATE_S = 300.0
MAX_HOSTS = 32


class PkiError(Exception):
    """A certificate, request or TLS key is missing, malformed or not acceptable."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_tls_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_tls_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(read_private(path), password=None)
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"{path} is not an EC key")
    return key


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise PkiError(f"cannot read certificate {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise PkiError(f"{path} is not a PEM certificate") from exc


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _subject(member_id: str, *, directory: bool) -> x509.Name:
    """A certificate's subject without a common name: gRPC compares a common name with the
    name a client expects when the certificate has no DNS name, so none is given. The
    member id is there for people reading it (as UID); servers read the URI name."""
    return x509.Name(
        [
            x509.NameAttribute(
                NameOID.ORGANIZATIONAL_UNIT_NAME,
                "credex directory" if directory else "credex member",
            ),
            x509.NameAttribute(NameOID.USER_ID, member_id),
        ]
    )


def _sans(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def create_ca(
    name: str = "credex federation CA",
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = new_tls_key()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def create_csr(key: ec.EllipticCurvePrivateKey, member_id: str) -> bytes:
    """A PEM certificate signing request for `member_id`; the CA decides the host names."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(member_id))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def load(cls, key_path: Path, cert_path: Path) -> CertificateAuthority:
        return cls(load_tls_key(key_path), load_cert(cert_path))

    def issue(
        self,
        csr_pem: bytes,
        member_id: str,
        *,
        hosts: Iterable[str] = DEFAULT_HOSTS,
        lifetime_s: float = MEMBER_CERT_LIFETIME_S,
        not_before: dt.datetime | None = None,
        directory: bool = False,
    ) -> x509.Certificate:
        """Sign a certificate for `member_id`, whose CSR must be self-consistent and for it.
        It names its holder `credex:member:<id>` (`credex:directory:<id>` with `directory`) and
        the host names in `hosts` (none: a client-only certificate). No spelling of
        DIRECTORY_NAME is ever given to a member, as a host name or as its id; only the
        directory's own certificate carries it."""
        hosts = check_hosts(h for h in hosts if not (directory and is_directory_name(h)))
        if not directory and is_directory_name(member_id):
            raise PkiError(f"{member_id!r} is reserved for the directory")
        if directory:
            hosts.append(DIRECTORY_NAME)
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise PkiError("not a PEM certificate signing request") from exc
        try:
            valid = csr.is_signature_valid
            public_key = csr.public_key()
        except Exception as exc:  # a damaged CSR fails in many ways inside cryptography
            raise PkiError(f"certificate signing request is damaged: {exc}") from None
        if not valid:
            raise PkiError("certificate signing request signature does not verify")
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise PkiError("certificate signing request must carry an EC P-256 key")
        if common_name_of(csr.subject) != member_id:
            raise PkiError(f"certificate signing request is not for {member_id!r}")
        identity = directory_uri(member_id) if directory else member_uri(member_id)
        now = _now()
        start = not_before or now - dt.timedelta(seconds=min(MAX_BACKDATE_S, lifetime_s / 10))
        names: list[x509.GeneralName] = [*_sans(hosts), x509.UniformResourceIdentifier(identity)]
        return (
            x509.CertificateBuilder()
            .subject_name(_subject(member_id, directory=directory))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after((not_before or now) + dt.timedelta(seconds=lifetime_s))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(self.key, hashes.SHA256())
        )


def check_hosts(hosts: Iterable[str]) -> list[str]:
    """Host names a member certificate may carry: DNS names and IP addresses only (no
    wildcard, no URI), none a spelling of DIRECTORY_NAME, at most MAX_HOSTS."""
    checked = list(dict.fromkeys(hosts))
    if len(checked) > MAX_HOSTS:
        raise PkiError(f"at most {MAX_HOSTS} host names")
    for host in checked:
        if is_directory_name(host):
            raise PkiError(f"{DIRECTORY_NAME!r} is reserved for the directory (given {host!r})")
        if ip_literal(host) is None and not is_dns_name(host):
            raise PkiError(f"host {host[:80]!r} is neither a DNS name nor an IP address")
    return checked


def common_name_of(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attrs) != 1:
        raise PkiError("name must have exactly one common name")
    return str(attrs[0].value)


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and addresses a certificate is valid for (not its credex identity)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in sans if isinstance(name, x509.DNSName | x509.IPAddress)]
