"""The federation's X.509 PKI: a CA run by the directory, member certificates from CSRs.

TLS keys are ECDSA P-256 (what every TLS stack accepts) and separate from members' Ed25519
signing keys: the certificate authenticates the connection, the signing key each message.
A certificate's common name is the member id; gRPC exposes it to servers as the peer identity.
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

from credex.keys import KeyFileError, read_private

DEFAULT_HOSTS = ("localhost", "127.0.0.1")
# Every client of the directory checks the server's certificate for this name, and the CA never
# puts it in a member's certificate: no member can pose as the directory.
DIRECTORY_NAME = "credex-directory"
CA_DAYS = 3650
MEMBER_DAYS = 365


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


def _sans(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


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
        days: float = MEMBER_DAYS,
        not_before: dt.datetime | None = None,
        directory: bool = False,
    ) -> x509.Certificate:
        """Sign a member certificate: CN must be `member_id`; the CSR must be self-consistent.
        `hosts` become the certificate's names (none: a client-only certificate); only the
        directory's own certificate (`directory=True`) may carry DIRECTORY_NAME."""
        hosts = list(dict.fromkeys(hosts))
        if DIRECTORY_NAME in hosts and not directory:
            raise PkiError(f"{DIRECTORY_NAME!r} is reserved for the directory")
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
        start = not_before or _now() - dt.timedelta(minutes=5)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(member_id))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
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
        )
        if hosts:
            builder = builder.add_extension(_sans(hosts), critical=False)
        return builder.sign(self.key, hashes.SHA256())


def common_name_of(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attrs) != 1:
        raise PkiError("name must have exactly one common name")
    return str(attrs[0].value)


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and addresses a certificate is valid for."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in sans]
