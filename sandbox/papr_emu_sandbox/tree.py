"""The guest's /proc/device-tree as a directory, kept from the server's export, and the ofdt sink.

A Linux guest sees its device tree as a directory per node and a file per property
(raw bytes). The sandbox renders the platform's tree (PlatformService.GetDeviceTree,
the one source of truth) into such a directory when it boots, as the kernel unflattens
the boot tree: every node gets a ``name`` property when the DTB has none (Linux's
``populate_properties`` does that for DTB version 16 and later). The export holds every
attached device; the guest booting now has not configured those plugged since, so a
node whose ``ibm,my-drc-index`` names a connector not in a configured state is left
out (with the nodes under it), as the reference guest leaves it out of its view.

From then on the directory is the guest's view: nodes appear and disappear only through
``/proc/ppc64/ofdt`` (:meth:`DeviceTreeDir.ofdt`, which parses commands as the kernel's
``arch/powerpc/platforms/pseries/reconfig.c`` does), and :meth:`DeviceTreeDir.refresh`
brings the properties of every node the guest has up to date with the export (the
memory flags after an LMB's configure-connector, say). When the export's
``/chosen/ibm,architecture-vec-5`` changed (a CAS happened: the guest rebooted into a
new tree), the whole directory is rendered again.

Example::

    >>> import tempfile
    >>> root = FdtNode("", {"model": b"x\\0"}, {"cpus": FdtNode("cpus", {"#size-cells": b"\\0\\0\\0\\0"})})
    >>> tree = DeviceTreeDir(Path(tempfile.mkdtemp()) / "dt")
    >>> tree.render(root, configured=set())
    >>> sorted(tree.nodes())
    ['/', '/cpus']
    >>> tree.ofdt(b"add_node /cpus/cpu@8 reg 4 \\0\\0\\0\\x08")
    0
    >>> tree.nodes()["/cpus/cpu@8"]
    {'reg': b'\\x00\\x00\\x00\\x08'}
    >>> tree.ofdt(b"remove_node /cpus")  # it has a child: EBUSY, as the kernel answers
    16
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from papr_emu_client.fdt import FdtNode, nodes_by_path

CAS_VECTOR: Final = ("/chosen", "ibm,architecture-vec-5")
NodeMap = dict[str, dict[str, bytes]]


class OfdtError(Exception):
    """An ofdt command the kernel would refuse: ``errno`` is what write() fails with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code


@dataclass(frozen=True)
class OfdtCommand:
    """One write to /proc/ppc64/ofdt, parsed."""

    verb: str
    path: str
    properties: dict[str, bytes]


def parse_ofdt(data: bytes) -> OfdtCommand:
    """Parse a write as the kernel's ``ofdt_write`` / ``do_add_node`` / ``parse_next_property``.

    ``add_node PATH (NAME LEN BYTES )*``: LEN is decimal, BYTES raw, then a space (or the end).

    >>> parse_ofdt(b"add_node /a@1 name 2 a\\0 reg 4 \\0\\0\\0\\1")
    OfdtCommand(verb='add_node', path='/a@1', properties={'name': b'a\\x00', 'reg': b'\\x00\\x00\\x00\\x01'})
    >>> parse_ofdt(b"remove_node /a@1")
    OfdtCommand(verb='remove_node', path='/a@1', properties={})
    """
    verb, space, rest = data.partition(b" ")
    if not space:
        raise OfdtError(errno.EINVAL, f"no space after the command {verb[:32]!r}")
    if verb == b"remove_node":
        # The kernel takes everything up to the string's end as the path (drmgr writes no newline).
        return OfdtCommand("remove_node", rest.split(b"\0", 1)[0].decode("ascii", "replace"), {})
    if verb != b"add_node":
        raise OfdtError(errno.EINVAL, f"{verb[:32].decode('ascii', 'replace')}: not emulated (add_node, remove_node)")
    path, space, rest = rest.partition(b" ")
    if not space:
        raise OfdtError(errno.EINVAL, "add_node without properties")
    properties: dict[str, bytes] = {}
    offset = 0
    while offset < len(rest):
        name_end = rest.find(b" ", offset)
        if name_end < 0 or name_end + 1 >= len(rest):
            raise OfdtError(errno.EINVAL, f"property at byte {offset}: no length")
        length_end = rest.find(b" ", name_end + 1)
        digits = rest[name_end + 1 : length_end]
        if length_end < 0 or not digits.isdigit():
            raise OfdtError(errno.EINVAL, f"property {rest[offset:name_end]!r}: bad length {digits[:16]!r}")
        value_start = length_end + 1
        value_end = value_start + int(digits)
        if value_end > len(rest) or (value_end < len(rest) and rest[value_end] not in b" \0"):
            raise OfdtError(errno.EINVAL, f"property {rest[offset:name_end]!r}: value runs past its length")
        properties[rest[offset:name_end].decode("ascii", "replace")] = rest[value_start:value_end]
        offset = value_end + 1
    return OfdtCommand("add_node", path.decode("ascii", "replace"), properties)


def node_name(path: str) -> bytes:
    """The ``name`` property Linux gives a node without one: its name up to the ``@``, NUL-ended."""
    return path.rsplit("/", 1)[-1].split("@", 1)[0].encode() + b"\0"


def boot_view(root: FdtNode) -> NodeMap:
    """Every node of an exported tree, as a booted Linux shows it (``name`` added where missing)."""
    nodes = nodes_by_path(root)
    return {path: {**props} if "name" in props else {**props, "name": node_name(path)} for path, props in nodes.items()}


class DeviceTreeDir:
    """The device-tree directory: rendered from the export, changed by ofdt commands and refreshes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _dir(self, path: str) -> Path:
        return self.directory / path.strip("/") if path != "/" else self.directory

    def exists(self) -> bool:
        """Whether a guest booted here already (a sandbox directory used again)."""
        return self.directory.is_dir()

    def render(self, root: FdtNode, configured: set[int]) -> None:
        """Replace the directory with the exported tree (a boot), without the devices not configured."""
        if self.directory.exists():
            shutil.rmtree(self.directory)
        left_out: list[str] = []
        for path, props in boot_view(root).items():
            drc = props.get("ibm,my-drc-index")
            if drc is not None and len(drc) == 4 and int.from_bytes(drc, "big") not in configured:
                left_out.append(path + "/")
            if not any((path + "/").startswith(prefix) for prefix in left_out):
                self._write_node(path, props)

    def cas_vector(self) -> bytes | None:
        """The guest's /chosen/ibm,architecture-vec-5 (what the CAS it booted with negotiated)."""
        where = self._dir(CAS_VECTOR[0]) / CAS_VECTOR[1]
        return where.read_bytes() if where.is_file() else None

    def _write_node(self, path: str, props: dict[str, bytes]) -> None:
        where = self._dir(path)
        where.mkdir(parents=True, exist_ok=True)
        for name, value in props.items():
            (where / name).write_bytes(value)

    def nodes(self) -> NodeMap:
        """The directory read back: every node's properties by path."""
        found: NodeMap = {}
        for where in [self.directory, *sorted(p for p in self.directory.rglob("*") if p.is_dir())]:
            relative = where.relative_to(self.directory).as_posix()
            path = "/" if relative == "." else "/" + relative
            found[path] = {f.name: f.read_bytes() for f in sorted(where.iterdir()) if f.is_file()}
        return found

    def refresh(self, root: FdtNode, configured: Callable[[], set[int]]) -> bool:
        """Bring the guest's nodes up to date with the export; boot again after a CAS.

        Returns True when the whole tree was rendered again (``configured()`` as for
        :meth:`render`). Nodes the guest has and the export lacks (a device being
        unplugged whose node the guest has not removed yet) stay as they are; nodes the
        export has and the guest lacks stay absent.
        """
        exported = nodes_by_path(root)
        if exported.get(CAS_VECTOR[0], {}).get(CAS_VECTOR[1]) != self.cas_vector():
            self.render(root, configured())
            return True
        for path, props in self.nodes().items():
            if path not in exported:
                continue
            wanted = exported[path]
            if "name" not in wanted and "name" in props:
                wanted = {**wanted, "name": props["name"]}
            where = self._dir(path)
            for name in props.keys() - wanted.keys():
                (where / name).unlink()
            for name, value in wanted.items():
                if props.get(name) != value:
                    (where / name).write_bytes(value)
        return False

    def ofdt(self, data: bytes) -> int:
        """Apply one ofdt write; 0, or the errno the kernel's write() would fail with."""
        try:
            self.apply(parse_ofdt(data))
        except OfdtError as error:
            return error.errno
        return 0

    def apply(self, command: OfdtCommand) -> None:
        """Apply a parsed command; raise OfdtError as the kernel would refuse it."""
        path = "/" + command.path.strip("/")
        where = self._dir(path)
        if command.verb == "remove_node":
            if path == "/" or not where.is_dir():
                raise OfdtError(errno.ENODEV, f"remove_node {path}: no such node")
            if any(child.is_dir() for child in where.iterdir()):
                raise OfdtError(errno.EBUSY, f"remove_node {path}: the node has children")
            shutil.rmtree(where)
            return
        if path == "/" or where.exists():
            raise OfdtError(errno.EINVAL, f"add_node {path}: the node exists")
        if not where.parent.is_dir():
            raise OfdtError(errno.EINVAL, f"add_node {path}: no parent node")
        self._write_node(path, command.properties)


def comparable(node: dict[str, bytes], exported: dict[str, bytes] | None) -> dict[str, bytes]:
    """A node's properties as compared with the export's node: ``name`` only where the export has one.

    Linux adds a ``name`` to every boot node without one, and QEMU's hotplug fragments carry
    one (a CPU core's is its full name, ``PowerPC,POWER9@2``) that its boot tree leaves out.
    """
    if exported is not None and "name" in exported:
        return node
    return {key: value for key, value in node.items() if key != "name"}


def differences(guest: NodeMap, exported: NodeMap) -> list[str]:
    """Where the guest's tree differs from an export (``nodes_by_path`` of its DTB), one line each.

    >>> differences({"/": {"a": b"1", "name": b"\\0"}, "/x": {}}, {"/": {"a": b"2"}, "/y": {}})
    ['/: a differs', '/x: only in the guest', '/y: only in the export']
    """
    lines = []
    for path in sorted(guest.keys() | exported.keys()):
        if path not in exported:
            lines.append(f"{path}: only in the guest")
        elif path not in guest:
            lines.append(f"{path}: only in the export")
        else:
            mine, theirs = comparable(guest[path], exported[path]), exported[path]
            for name in sorted(mine.keys() | theirs.keys()):
                if mine.get(name) != theirs.get(name):
                    where = (
                        "differs"
                        if name in mine and name in theirs
                        else f"only in the {'guest' if name in mine else 'export'}"
                    )
                    lines.append(f"{path}: {name} {where}")
    return lines
