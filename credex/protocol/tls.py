"""A party's TLS material: the federation CA it trusts and, for members, its own certificate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from credex.protocol.identity import CertificateIdentity, certificate_identity
from credex.protocol.keys import read_private
from credex.protocol.pki import PkiError


@dataclass(frozen=True)
class TlsIdentity:
    """PEM bytes; `cert_pem`/`key_pem` are None for a party without a certificate (a subject)."""

    ca_pem: bytes
    cert_pem: bytes | None = None
    key_pem: bytes | None = None

    @classmethod
    def load(cls, ca: Path, cert: Path | None = None, key: Path | None = None) -> TlsIdentity:
        try:
            ca_pem = ca.read_bytes()
            cert_pem = cert.read_bytes() if cert is not None else None
        except OSError as exc:
            raise PkiError(f"cannot read {exc.filename}: {exc.strerror}") from None
        key_pem = read_private(key) if key is not None else None
        identity = cls(ca_pem, cert_pem, key_pem)
        identity.ca_certificate()
        if cert_pem is not None:
            identity.certificate()  # validates the certificate early
        if cert_pem is not None and key_pem is not None:
            identity.check_pair()
        return identity

    def check_pair(self) -> None:
        """The certificate must be for this key (not so half-way through a rotation)."""
        assert self.cert_pem is not None and self.key_pem is not None
        try:
            cert = x509.load_pem_x509_certificate(self.cert_pem)
            key = serialization.load_pem_private_key(self.key_pem, password=None)
        except ValueError as exc:
            raise PkiError(f"unreadable certificate or key: {exc}") from None
        if cert.public_key() != key.public_key():
            raise PkiError("the certificate is not for this TLS key")

    def ca_certificate(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self.ca_pem)
        except ValueError as exc:
            raise PkiError("the federation CA certificate is not PEM") from exc

    def certificate(self) -> x509.Certificate:
        """This party's own certificate."""
        if self.cert_pem is None:
            raise PkiError("this party has no certificate")
        try:
            return x509.load_pem_x509_certificate(self.cert_pem)
        except ValueError as exc:
            raise PkiError("the certificate is not PEM") from exc

    @property
    def identity(self) -> CertificateIdentity | None:
        """Who this party's certificate says it is; None for a certificate issued before
        identities were URI names (it must be renewed before servers accept it)."""
        return certificate_identity(self.certificate())

    @property
    def valid_from(self) -> float:
        """When this party's own certificate became valid (seconds since the epoch)."""
        return self.certificate().not_valid_before_utc.timestamp()

    @property
    def expires_at(self) -> float:
        """When this party's own certificate stops being valid (seconds since the epoch)."""
        return self.certificate().not_valid_after_utc.timestamp()

    def server_credentials(self, *, require_client_auth: bool) -> grpc.ServerCredentials:
        if self.cert_pem is None or self.key_pem is None:
            raise PkiError("a server needs a certificate and its key")
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)],
            root_certificates=self.ca_pem,
            require_client_auth=require_client_auth,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.key_pem,
            certificate_chain=self.cert_pem,
        )
