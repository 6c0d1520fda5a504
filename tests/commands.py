"""Run the installed command lines as a user would, and find the processes they leave."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
# The repository the tests run from (its README, pyproject.toml, docs/ and tools/).
REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=120
    )
    if ok:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text` (e.g. a federation's folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and alive(int(proc.name)):
            found.append(int(proc.name))
    return found
