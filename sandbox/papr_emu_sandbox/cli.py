"""``papr-emu sandbox [--platform P] -- COMMAND...``: run a program as if inside platform P's guest.

The command runs under PRoot with the guest's kernel interfaces bound over the host's
paths (see :data:`BINDINGS` and docs/sandbox.md) and the preload library in
``LD_PRELOAD``; this process serves as the bridge to the papr-emu server
(``--server`` or $PAPR_EMU_HOST, with the usual TLS and token options).

Exit status: the command's (128+N when signal N ended it), or 125 when the sandbox
itself could not be set up (PRoot or a C compiler missing, no server, no such platform).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import grpc

from papr.v1 import platform_pb2
from papr_emu.logs import LOG_LEVELS, configure_logging
from papr_emu_client import Client, Credentials, connect_with, target_from_env
from papr_emu_client.cli import add_connection_options
from papr_emu_client.fdt import FdtNode, read_dtb

from .bridge import Bridge, Region, make_memory
from .preload import BuildError, preload_library
from .tree import DeviceTreeDir

EXIT_SANDBOX: Final = 125
PROOT_VARIABLE: Final = "PAPR_EMU_PROOT"
SOCKET_VARIABLE: Final = "PAPR_EMU_SANDBOX_SOCKET"
ENV: Final = "/usr/bin/env"  # coreutils; starts the command with LD_PRELOAD set, inside PRoot
#: Where librtas finds its work-area region ("ADDR SIZE" in hex, as the kernel prints it):
#: 64 KiB (the kernel's RTAS_USER_REGION_SIZE), just below 128 MiB, inside any guest's RMA.
RMO: Final = Region(0x07FF0000, 0x10000)
#: The sandbox directory's entries and the guest paths each one is bound over.
BINDINGS: Final = (
    ("device-tree", "/proc/device-tree"),
    ("device-tree", "/sys/firmware/devicetree/base"),
    ("ppc64", "/proc/ppc64"),  # rtas/rmo_buffer and the ofdt sink
    ("cpuinfo", "/proc/cpuinfo"),
    ("mem", "/dev/mem"),
    ("lock", "/var/lock"),  # librtas's LCK..librtas, drmgr's lock
    ("log", "/var/log"),  # drmgr's log
)


class SandboxError(Exception):
    """The sandbox cannot be set up; the message says why and what to do."""


def find_proot() -> str:
    """PRoot's path ($PAPR_EMU_PROOT, else proot on PATH); SandboxError when there is none."""
    wanted = os.environ.get(PROOT_VARIABLE) or "proot"
    found = shutil.which(wanted)
    if found is None:
        raise SandboxError(
            f"PRoot not found ({wanted}): the sandbox binds the guest's /proc paths with it. "
            f"Install it (Debian: apt-get install proot) or name it with ${PROOT_VARIABLE}"
        )
    return found


def cpuinfo(root: FdtNode) -> str:
    """/proc/cpuinfo as a pseries guest shows it: one entry per thread of each CPU node, then the platform."""
    entries = []
    cpus = root.children.get("cpus")
    for node in cpus.children.values() if cpus else []:
        if node.properties.get("device_type") != b"cpu\0":
            continue
        servers = node.properties.get("ibm,ppc-interrupt-server#s", b"")
        for (thread,) in struct.iter_unpack(">I", servers[: len(servers) // 4 * 4]):
            entries.append(f"processor\t: {thread}\ncpu\t\t: POWER9 (architected), altivec supported\n")
    machine = "platform\t: pSeries\nmodel\t\t: IBM pSeries (emulated by qemu)\n"
    machine += "machine\t\t: CHRP IBM pSeries (emulated by qemu)\n"
    return "\n".join([*entries, machine])


@dataclass
class Sandbox:
    """A sandbox directory for one platform, its bridge, and how to run a command in it."""

    directory: Path
    bridge: Bridge
    preload: Path
    proot: str
    extra_bindings: list[tuple[str, str]] = field(default_factory=list)  # --bind HOST:GUEST

    def command(self, argv: list[str]) -> list[str]:
        """PRoot with the bindings, running ``argv`` with the preload library.

        The library goes in through ``env`` inside PRoot, so that PRoot itself runs without it.
        """
        binds = [f"--bind={self.directory / entry}:{guest}" for entry, guest in BINDINGS]
        binds += [f"--bind={host}:{guest}" for host, guest in self.extra_bindings]
        preload = " ".join(filter(None, [str(self.preload), os.environ.get("LD_PRELOAD")]))
        return [self.proot, "-0", f"--cwd={os.getcwd()}", *binds, ENV, f"LD_PRELOAD={preload}", *argv]

    def environment(self) -> dict[str, str]:
        """The environment for :meth:`command`: this one, with the bridge's socket."""
        return {**os.environ, SOCKET_VARIABLE: str(self.bridge.socket_path)}

    def run(self, argv: list[str]) -> int:
        """Run ``argv`` in the sandbox; its exit status (128+N for signal N)."""
        child = subprocess.Popen(self.command(argv), env=self.environment())
        forward = {
            sig: signal.signal(sig, lambda number, _: child.send_signal(number))
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            code = child.wait()
        finally:
            for sig, previous in forward.items():
                signal.signal(sig, previous)
        return 128 - code if code < 0 else code


@contextmanager
def open_sandbox(client: Client, platform: str, directory: Path | None = None) -> Iterator[Sandbox]:
    """Set up the sandbox for ``platform`` (in ``directory``, kept, or a temporary one) and start its bridge."""
    proot = find_proot()
    try:
        preload = preload_library()
    except BuildError as error:
        raise SandboxError(str(error)) from error
    try:
        client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=platform))
    except grpc.RpcError as error:
        raise SandboxError(f"platform {platform!r}: {error.details()}") from error
    temporary = directory is None
    # Absolute: the command may change directory, and still reaches the bridge's socket.
    where = Path(tempfile.mkdtemp(prefix="papr-emu-sandbox-")) if directory is None else directory.resolve()
    try:
        where.mkdir(parents=True, exist_ok=True)
        (where / "ppc64" / "rtas").mkdir(parents=True, exist_ok=True)
        (where / "ppc64" / "rtas" / "rmo_buffer").write_text(f"{RMO.address:016x} {RMO.size:x}\n")
        (where / "ppc64" / "ofdt").touch()  # the preload library turns its writes into requests
        (where / "lock").mkdir(exist_ok=True)
        (where / "log").mkdir(exist_ok=True)
        make_memory(where / "mem", RMO)
        socket_path = where / "bridge.sock"
        socket_path.unlink(missing_ok=True)
        bridge = Bridge(client, platform, DeviceTreeDir(where / "device-tree"), where / "mem", RMO, socket_path)
        bridge.boot()
        (where / "cpuinfo").write_text(cpuinfo(read_dtb(client.device_tree(platform))))
        bridge.start()
        try:
            yield Sandbox(where, bridge, preload, proot)
        finally:
            bridge.stop()
    finally:
        if temporary:
            shutil.rmtree(where, ignore_errors=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="papr-emu sandbox",
        description="Run an unmodified program (a librtas user, drmgr) as if inside a papr-emu platform's guest.",
        epilog="Exit status: the command's, or 125 when the sandbox could not be set up. See docs/sandbox.md.",
    )
    parser.add_argument(
        "--platform", default="default", help="the platform whose guest the command is in (default: default)"
    )
    parser.add_argument("--dir", type=Path, help="keep the sandbox's files (device tree, /dev/mem stand-in, logs) here")
    parser.add_argument(
        "--bind", action="append", default=[], metavar="HOST:GUEST",
        help="also bind HOST over GUEST (a stand-in for a kernel file the tool needs); repeatable",
    )  # fmt: skip
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="warning", help="the sandbox's own log (stderr)")
    add_connection_options(parser, before=True)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    return parser


def _binding(text: str) -> tuple[str, str]:
    host, colon, guest = text.partition(":")
    if not (colon and host and guest.startswith("/")):
        raise SandboxError(f"--bind {text}: not HOST:GUEST with an absolute GUEST path")
    return str(Path(host).resolve()), guest


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not command:
        parser.error("no command: papr-emu sandbox [--platform P] -- COMMAND [ARG...]")
    configure_logging("console", options.log_level, sys.stderr)
    target = target_from_env(options.server)
    try:
        credentials = Credentials.resolve(options.ca, options.cert, options.key, options.token, options.server_name)
        client = connect_with(credentials, target, timeout=5)
    except (ValueError, OSError) as error:
        print(f"papr-emu sandbox: {error}", file=sys.stderr)
        return EXIT_SANDBOX
    except grpc.FutureTimeoutError:
        print(f"papr-emu sandbox: cannot reach a server at {target} (is `papr-emu serve` running?)", file=sys.stderr)
        return EXIT_SANDBOX
    with client:
        try:
            with open_sandbox(client, options.platform, options.dir) as sandbox:
                sandbox.extra_bindings = [_binding(text) for text in options.bind]
                code = sandbox.run(command)
                for finding in sandbox.bridge.findings:
                    print(f"papr-emu sandbox: {finding}", file=sys.stderr)
                return code
        except SandboxError as error:
            print(f"papr-emu sandbox: {error}", file=sys.stderr)
            return EXIT_SANDBOX
