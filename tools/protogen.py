"""Generate credex/v1 Python code (messages, gRPC stubs, typed stubs) from protos/.

`make protos` writes into the repository; tests write into a temporary directory and
compare, so a stale committed copy fails the build.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def generate(out: Path) -> list[Path]:
    """Run protoc over every .proto file; returns the generated files."""
    protos = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_ROOT.rglob("*.proto"))
    target = out / "credex" / "v1"
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*_pb2*.py*"):  # a removed or renamed .proto leaves nothing behind
        old.unlink()
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    init = target / "__init__.py"
    init.write_text('"""Generated from protos/credex/v1 by `make protos`; never edit by hand."""\n')
    return sorted(p for p in target.iterdir() if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT)
    args = parser.parse_args()
    for path in generate(args.out.resolve()):
        print(path)


if __name__ == "__main__":
    main()
