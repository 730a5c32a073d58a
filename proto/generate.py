"""Generate the Python gRPC code (and its mypy stubs) and the API reference from ``proto/``.

One command regenerates everything; ``--check`` fails if anything committed is
stale. Code goes to ``proto/gen/papr/v1`` (import name ``papr.v1``), beside the
.proto files it comes from: the server and the client library both depend on it,
neither owns it. The API reference, rendered from the comments in the .proto
files, goes to ``docs/api.md``. A FileDescriptorSet of the .proto files with their
comments (source info) and imports goes beside the code as package data,
``papr/v1/descriptor_set.binpb``: server reflection serves it, so ``grpcurl describe``
shows the comments.

Example::

    python proto/generate.py          # rewrite proto/gen/papr/v1/*_pb2*.py(i), descriptor_set.binpb, docs/api.md
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
OUT_ROOT = PROTO_ROOT / "gen"
PACKAGE_DIR = Path("papr") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
#: The FileDescriptorSet (with source info and imports) that server reflection serves.
DESCRIPTOR_SET = "descriptor_set.binpb"


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


API_DOC = ROOT / "docs" / "api.md"


def _comment(locations: dict[tuple[int, ...], str], path: tuple[int, ...]) -> str:
    """A comment as one table cell: lines joined, pipes escaped."""
    return " ".join(line.strip() for line in locations.get(path, "").strip().splitlines() if line.strip()).replace(
        "|", "\\|"
    )


def _paragraphs(locations: dict[tuple[int, ...], str], path: tuple[int, ...]) -> str:
    """A comment as markdown: lines joined, blank lines kept as paragraph breaks."""
    text = locations.get(path, "").strip()
    return "\n\n".join(" ".join(line.strip() for line in block.splitlines()) for block in text.split("\n\n"))


def _type_name(field: object) -> str:
    from google.protobuf import descriptor_pb2

    f = field  # a FieldDescriptorProto
    assert isinstance(f, descriptor_pb2.FieldDescriptorProto)
    if f.type_name:
        name = f.type_name.lstrip(".").removeprefix("papr.v1.")
        return f"[{name}](#{name.lower().replace('.', '')})" if "." not in name else f"`{name}`"
    return descriptor_pb2.FieldDescriptorProto.Type.Name(f.type).removeprefix("TYPE_").lower()


def render_api_doc(descriptor_set: bytes) -> str:
    """docs/api.md from a FileDescriptorSet with source info: services, messages, enums, with comments."""
    from google.protobuf import descriptor_pb2

    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file
    out = [
        "# papr.v1 API reference",
        "",
        "Generated from the comments in `proto/papr/v1/*.proto` by `python proto/generate.py`; do not edit.",
        "",
    ]
    for proto in sorted((f for f in files if f.package == "papr.v1"), key=lambda f: f.name):
        locations = {tuple(loc.path): loc.leading_comments for loc in proto.source_code_info.location}
        out += [f"## {proto.name.removeprefix('papr/v1/')}", ""]
        for s_index, service in enumerate(proto.service):
            out += [f"### {service.name}", "", _paragraphs(locations, (6, s_index)), ""]
            out += ["| RPC | Request | Response | Description |", "|---|---|---|---|"]
            for m_index, method in enumerate(service.method):
                stream = "stream " if method.server_streaming else ""
                request, response = method.input_type.split(".")[-1], method.output_type.split(".")[-1]
                links = f"[{request}](#{request.lower()}) | {stream}[{response}](#{response.lower()})"
                out.append(f"| `{method.name}` | {links} | {_comment(locations, (6, s_index, 2, m_index))} |")
            out.append("")
        for m_index, message in enumerate(proto.message_type):
            out += [f"### {message.name}", "", _paragraphs(locations, (4, m_index)), ""]
            if message.field:
                out += ["| Field | Type | Description |", "|---|---|---|"]
                for f_index, field in enumerate(message.field):
                    label = "repeated " if field.label == field.LABEL_REPEATED else ""
                    if field.proto3_optional:
                        label = "optional "
                    description = _comment(locations, (4, m_index, 2, f_index))
                    out.append(f"| `{field.name}` | {label}{_type_name(field)} | {description} |")
                out.append("")
        for e_index, enum in enumerate(proto.enum_type):
            out += [f"### {enum.name}", "", _paragraphs(locations, (5, e_index)), ""]
            out += ["| Value | Number | Description |", "|---|---|---|"]
            for v_index, value in enumerate(enum.value):
                out.append(f"| `{value.name}` | {value.number} | {_comment(locations, (5, e_index, 2, v_index))} |")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def descriptor_set(out_root: Path) -> bytes:
    """A FileDescriptorSet of every .proto file, with comments (source info) and the files they import."""
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    target = out_root / DESCRIPTOR_SET
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        "--include_source_info",
        "--include_imports",
        f"--descriptor_set_out={target}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed (descriptor set)")
    return target.read_bytes()


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
        descriptors = descriptor_set(scratch_root)
        api_doc = render_api_doc(descriptors)
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
            if not (target / DESCRIPTOR_SET).exists() or (target / DESCRIPTOR_SET).read_bytes() != descriptors:
                stale.append(DESCRIPTOR_SET)
            if not API_DOC.exists() or API_DOC.read_text() != api_doc:
                stale.append(str(API_DOC.relative_to(ROOT)))
            if stale:
                print(f"stale generated code: {', '.join(stale)}; run: python proto/generate.py")
                return 1
            print(f"generated code is up to date ({len(fresh)} files)")
            return 0
        for name in set(current) - set(fresh):
            (target / name).unlink()
        for name, text in fresh.items():
            (target / name).write_text(text)
        (target / DESCRIPTOR_SET).write_bytes(descriptors)
        API_DOC.write_text(api_doc)
        print(f"wrote {len(fresh) + 1} files to {target.relative_to(ROOT)} and {API_DOC.relative_to(ROOT)}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
