"""Generate the Python gRPC code (and its mypy stubs) from ``proto/``.

One command regenerates everything; ``--check`` fails if the committed code
is stale. Output goes to ``client/papr/v1`` (import name ``papr.v1``), shared
by the server and the client library.

Example::

    python proto/generate.py          # rewrite client/papr/v1/*_pb2*.py(i)
    python proto/generate.py --check  # exit 1 and list stale files
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_ROOT = ROOT / "client"
PACKAGE_DIR = Path("papr") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    """Path of a protoc plugin installed next to this interpreter (mypy-protobuf)."""
    for directory in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = directory / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install the dev extra (mypy-protobuf)")
    return found


def generate(out_root: Path) -> None:
    """Run protoc (from grpcio-tools) over every .proto file into ``out_root``."""
    from grpc_tools import protoc  # imported late: a dev-only dependency

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def _generated_files(root: Path) -> dict[str, str]:
    folder = root / PACKAGE_DIR
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.name.endswith(GENERATED_SUFFIXES)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        scratch_root = Path(scratch)
        generate(scratch_root)
        fresh = _generated_files(scratch_root)
        target = OUT_ROOT / PACKAGE_DIR
        target.mkdir(parents=True, exist_ok=True)
        current = _generated_files(OUT_ROOT)
        if options.check:
            stale = sorted(set(fresh) ^ set(current) | {n for n in fresh if current.get(n) != fresh[n]})
            for name in stale:
                diff = difflib.unified_diff(
                    current.get(name, "").splitlines(),
                    fresh.get(name, "").splitlines(),
                    f"committed/{name}",
                    f"generated/{name}",
                    lineterm="",
                    n=1,
                )
                print("\n".join(list(diff)[:40]))
            if stale:
                print(f"stale generated code: {', '.join(stale)}; run: python proto/generate.py")
                return 1
            print(f"generated code is up to date ({len(fresh)} files)")
            return 0
        for name in set(current) - set(fresh):
            (target / name).unlink()
        for name, text in fresh.items():
            (target / name).write_text(text)
        print(f"wrote {len(fresh)} files to {target.relative_to(ROOT)}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
