"""The public surface: the SDK's names re-exported from `credex`, pinned here so that a
change to them is deliberate; and an SDK install that works without any extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib

import credex
from credex.cli import OPTIONAL_MODULES
from tests.commands import REPO

PUBLIC = {
    "AccessLog",
    "AccessView",
    "AlreadyExists",
    "Clock",
    "ConsentView",
    "CredexError",
    "DeadlineExceeded",
    "DirectoryLink",
    "DisputeView",
    "FactorView",
    "FailedPrecondition",
    "HolderView",
    "Internal",
    "InvalidArgument",
    "KeyFileError",
    "MemberHome",
    "NodeOutcome",
    "NotFound",
    "PermissionDenied",
    "ProfileRecord",
    "ProfileVerificationError",
    "Reason",
    "RequesterClient",
    "ResourceExhausted",
    "ScoreView",
    "SigningKey",
    "SubjectClient",
    "TlsIdentity",
    "Unauthenticated",
    "Unavailable",
    "VerifiedProfile",
    "VerifyKey",
    "enroll_home",
    "rotate_key",
}

# Run with every extra's dependencies made unimportable, as in an SDK-only install.
_WITHOUT_EXTRAS = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    BLOCKED = {blocked!r}

    class NotInstalled(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    """
)


def _run_without_extras(code: str) -> subprocess.CompletedProcess[str]:
    script = _WITHOUT_EXTRAS.format(blocked=set(OPTIONAL_MODULES)) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_sdk_names_are_exactly_the_pinned_ones() -> None:
    assert set(credex.__all__) == PUBLIC
    assert len(credex.__all__) == len(PUBLIC)
    for name in credex.__all__:
        assert getattr(credex, name) is not None


def test_the_sdk_imports_without_any_extra() -> None:
    result = _run_without_extras(
        """
        import credex
        from credex import RequesterClient, SubjectClient, MemberHome
        from credex.protocol import channels, consents, signing, tickets
        loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED
                        or m.startswith(("credex.runtime", "credex.cli.", "credex.directory",
                                         "credex.node", "credex.lab")))
        print("loaded:", loaded)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded: []"


def test_a_command_line_without_its_extra_names_the_extra_to_install() -> None:
    result = _run_without_extras(
        """
        from credex.cli import credex_node
        credex_node()
        """
    )
    assert result.returncode == 2
    assert "credex-node: needs the 'server' extra" in result.stderr
    assert "pip install 'credex[server]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_optional_module_is_what_some_extra_installs() -> None:
    """The launcher names an extra only for modules an extra brings, and every dependency of
    an extra that an import can miss is one it recognises."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    installed_by_extras = {
        requirement.split(">")[0].split("=")[0].split("[")[0].strip()
        for name in ("cli", "server", "lab")
        for requirement in extras[name]
    } - {"credex"}
    import_names = {
        "typer": "typer",
        "rich": "rich",
        "sqlite-utils": "sqlite_utils",
        "grpcio-health-checking": "grpc_health",
        "grpcio-reflection": "grpc_reflection",
        "prometheus-client": "prometheus_client",
        "python-json-logger": "pythonjsonlogger",
        "matplotlib": "matplotlib",
    }
    assert installed_by_extras == set(import_names)
    assert set(import_names.values()) <= OPTIONAL_MODULES
