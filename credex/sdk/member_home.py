"""A member's own folder: its id, the directory's addresses, its keys and certificates.

member.toml     id, directory (member port), directory_public (public port)
signing.key     Ed25519 signing key (0600) and signing.pub
tls.key         TLS private key (0600); tls.crt its certificate from the federation CA
ca.crt          the federation CA certificate
directory.pub   the directory's signing key
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from credex.protocol.config import ConfigError, load_toml, require_str
from credex.protocol.keys import SigningKey, VerifyKey, load_public
from credex.protocol.tls import TlsIdentity
from credex.sdk.enrollment import EnrollmentFiles, enroll
from credex.sdk.renewal import CertificateRenewal
from credex.sdk.rotation import KeyFiles
from credex.v1 import enrollment_pb2

MEMBER_FILE = "member.toml"


@dataclass(frozen=True)
class MemberHome:
    path: Path
    member_id: str
    directory: str
    directory_public: str = ""

    @property
    def signing_key_path(self) -> Path:
        return self.path / "signing.key"

    @property
    def tls_key_path(self) -> Path:
        return self.path / "tls.key"

    @property
    def cert_path(self) -> Path:
        return self.path / "tls.crt"

    @property
    def ca_path(self) -> Path:
        return self.path / "ca.crt"

    @property
    def directory_key_path(self) -> Path:
        return self.path / "directory.pub"

    def signing_key(self) -> SigningKey:
        return SigningKey.load(self.signing_key_path)

    def tls(self) -> TlsIdentity:
        return TlsIdentity.load(self.ca_path, self.cert_path, self.tls_key_path)

    def directory_key(self) -> VerifyKey:
        return load_public(self.directory_key_path)

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / MEMBER_FILE).write_text(
            f'id = "{self.member_id}"\n'
            f'directory = "{self.directory}"\n'
            f'directory_public = "{self.directory_public}"\n'
        )

    @classmethod
    def load(cls, path: Path) -> MemberHome:
        file = path / MEMBER_FILE
        if not file.is_file():
            raise ConfigError(f"{path} is not a member home (no {MEMBER_FILE}); run `credex init`")
        data = load_toml(file)
        return cls(
            path=path,
            member_id=require_str(data, "id", str(file)),
            directory=require_str(data, "directory", str(file)),
            directory_public=str(data.get("directory_public", "")),
        )

    def enrollment_files(self) -> EnrollmentFiles:
        return EnrollmentFiles(
            tls_key=self.tls_key_path,
            cert=self.cert_path,
            ca=self.ca_path,
            directory_key=self.directory_key_path,
        )

    def renewal(self) -> CertificateRenewal:
        """How this member renews its certificate: on the directory's public port (no
        certificate needed, so an expired one is renewed too), or on the member port for a
        home that does not record the public address."""
        return CertificateRenewal(
            member_id=self.member_id,
            address=self.directory_public or self.directory,
            signing_key=self.signing_key,
            tls=self.tls,
            tls_key_path=self.tls_key_path,
            cert_path=self.cert_path,
            member_port=not self.directory_public,
        )

    def key_files(self) -> KeyFiles:
        return KeyFiles(
            signing_key=self.signing_key_path, tls_key=self.tls_key_path, cert=self.cert_path
        )


async def enroll_home(
    home: MemberHome, *, token: str, ca_pem: bytes, name: str = "", reset: bool = False
) -> enrollment_pb2.EnrollResponse:
    """Enroll a requester into a new member home: keys are made here, then saved with the
    certificate the directory issues and the home's member.toml. With `reset` (the operator
    reset this member's keys and gave a token for it), new keys replace an existing home's."""
    exists = (home.path / MEMBER_FILE).exists()
    if exists and not reset:
        raise ConfigError(
            f"{home.path} is already a member home (after `credex-directory reset-key`, "
            "enroll again with --reset)"
        )
    if reset and not exists:
        raise ConfigError(f"{home.path} is not a member home to reset")
    key = SigningKey.generate()
    if not reset:
        key.save(home.signing_key_path, overwrite=True)
    response = await enroll(
        public_address=home.directory_public,
        ca_pem=ca_pem,
        token=token,
        member_id=home.member_id,
        role="requester",
        signing_key=key,
        name=name or home.member_id,
        files=home.enrollment_files(),
    )
    if reset:  # the directory has the new key now: it replaces the old one here
        key.save(home.signing_key_path, overwrite=True)
    home.save()
    return response
