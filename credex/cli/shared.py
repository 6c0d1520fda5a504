"""What every credex command line shares: one error-to-exit-code mapping and JSON output."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from credex.protocol.config import ConfigError
from credex.protocol.errors import CredexError, ProfileVerificationError
from credex.protocol.keys import KeyFileError
from credex.protocol.pki import PkiError
from credex.runtime.db import DatabaseError

EXIT_USAGE = 2
EXIT_REFUSED = 3
# What the server delivered does not verify (a profile's signatures): not a refusal.
EXIT_UNVERIFIED = 4

Listen = Annotated[str, typer.Option(help="host:port to listen on; port 0 picks a free one.")]
MetricsAddress = Annotated[
    str | None,
    typer.Option(
        "--metrics", help="host:port of the metrics endpoint (default: [server] metrics_listen)."
    ),
]
ReadyFile = Annotated[Path | None, typer.Option(help="Write the bound address here once serving.")]


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print `error: message` to stderr (a refusal quotes what a server or a file said: its
    control characters are shown escaped); return the Exit to raise."""
    from credex.cli.render import printable  # rich and the SDK load only when an error is shown

    typer.echo(f"error: {printable(message)}", err=True)
    return typer.Exit(code)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn expected failures into a one-line message and a non-zero exit, never a traceback."""
    try:
        yield
    except CredexError as err:
        raise fail(f"{err.code.name.lower()}: {err.reason}: {err.message}", EXIT_REFUSED) from None
    except ProfileVerificationError as err:
        raise fail(f"does not verify, not used: {err.message}", EXIT_UNVERIFIED) from None
    except (ConfigError, KeyFileError, DatabaseError, PkiError, ValueError) as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")) from None


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def print_json(value: Any) -> None:
    """Dataclasses, lists and dicts as indented JSON on stdout."""
    json.dump(_plain(value), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
