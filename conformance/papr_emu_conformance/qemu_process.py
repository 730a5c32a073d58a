"""One QEMU 7.2 ``pseries`` process driven without a guest: qtest for RTAS and guest RAM, QMP for hotplug.

Adapted from, and used by, ``docs/qemu-7.2/capture.py``. Facts it relies on (see docs/qemu-7.2/README.md):

* Debian's build has no qtest accelerator: with ``-qtest`` the machine runs under TCG and the
  SLOF firmware executes on vCPU 0. A failing ``device_add`` then waits for an RCU grace period
  that a spinning vCPU can delay for minutes. QMP ``stop`` right after the handshake pauses the
  vCPU, which makes every call deterministic and keeps failing ``device_add`` from hanging.
* RTAS calls go through the qtest ``rtas NAME NARGS ARGS NRET RETS`` line command, with the
  argument and return cells big-endian in guest RAM.

QMP goes through ``qemu.qmp``, QEMU's own client library (asyncio: each process has its own
event loop, run only while a command waits for its answer). Measured against the hand-written
JSON-lines client it replaced: a scenario on the QEMU side takes 0.2-0.3 s longer (dimm-cycle
1.68 s against 1.48 s; its import and the loop per QEMU), for a client that QEMU maintains
with its protocol (greeting, negotiation, ids, events). Every read from QEMU, qtest or QMP,
is bounded by ``io_timeout``; a QEMU that does not answer is killed (by its own pid) and
reported as :class:`QemuHung`; one that exits is :class:`QemuExited`.

Example::

    with QemuProcess("qemu-system-ppc64", ["-m", "1G,slots=4,maxmem=4G", "-smp", "1,maxcpus=4"]) as q:
        q.rtas("get-sensor-state", [9003, 0x10000000], 2)   # [0, 1]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import IO, Any, TypeVar

from qemu.qmp import ConnectError, ExecuteError, QMPClient, QMPError

T = TypeVar("T")

MACHINE = "pseries,cap-cfpc=broken,cap-sbbc=broken,cap-ibs=broken,cap-ccf-assist=off"
COMMON_ARGS = ("-display", "none", "-nodefaults", "-nographic", "-serial", "none", "-monitor", "none")
DEFAULT_BINARY = "qemu-system-ppc64"
IO_TIMEOUT = 10.0

# Guest-physical scratch memory (clear of SLOF at 0 and of the FDT/RTAS blob near the RMA top).
ARGS_ADDR = 0x0100_0000
RETS_ADDR = 0x0100_0100


class QemuError(Exception):
    """QEMU did not behave as a process we can drive (start failure, hang, exit)."""


class QemuStartError(QemuError):
    """QEMU exited or did not connect during start-up; the message holds its stderr."""


class QemuHung(QemuError):
    """QEMU did not answer within the I/O timeout (it has been killed)."""


class QemuExited(QemuError):
    """QEMU exited while being driven (e.g. an assertion); the message holds its stderr."""


class QmpError(Exception):
    """A QMP command failed: the error class and description QEMU gave."""

    def __init__(self, error_class: str, desc: str) -> None:
        super().__init__(f"{error_class}: {desc}")
        self.error_class = error_class
        self.desc = desc


def find_qemu(binary: str | None = None) -> str | None:
    """The QEMU binary to use ($PAPR_EMU_QEMU, else qemu-system-ppc64 on PATH), or None."""
    name = binary or os.environ.get("PAPR_EMU_QEMU") or DEFAULT_BINARY
    return shutil.which(name)


def qemu_version(binary: str) -> str:
    """The first line of ``qemu --version``."""
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=IO_TIMEOUT, check=False)
    return done.stdout.splitlines()[0] if done.stdout else ""


def machine_argv(binary: str, qtest: str, qmp: str, geometry: list[str], extra_machine: str = "") -> list[str]:
    """The command line of every run (the one capture.py used)."""
    machine = MACHINE + ("," + extra_machine if extra_machine else "")
    return [
        binary,
        "-machine",
        machine,
        "-qtest",
        f"unix:{qtest}",
        "-qmp",
        f"unix:{qmp},server=on,wait=off",
        *COMMON_ARGS,
        *geometry,
    ]


def _s32(value: int) -> int:
    return value - (1 << 32) if value & 0x8000_0000 else value


class QemuProcess:
    """One QEMU process with its qtest and QMP connections. Use as a context manager."""

    def __init__(self, binary: str, geometry: list[str], io_timeout: float = IO_TIMEOUT) -> None:
        self.binary = binary
        self.geometry = geometry
        self.io_timeout = io_timeout
        self.events: list[dict[str, Any]] = []
        self._tmp = Path(tempfile.mkdtemp(prefix="papr-conf-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._qtest: IO[str] | None = None
        self._loop = asyncio.new_event_loop()  # QMPClient's; runs only inside _wait
        self._qmp: QMPClient | None = None
        self._sockets: list[socket.socket] = []
        self.dead = False

    # ---- lifecycle ----------------------------------------------------------------------

    def argv(self) -> list[str]:
        return machine_argv(self.binary, str(self._tmp / "Q"), str(self._tmp / "M"), self.geometry)

    def __enter__(self) -> QemuProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start QEMU, accept its qtest connection, connect QMP and pause the vCPU."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self._tmp / "Q"))
        listener.listen(1)
        listener.settimeout(self.io_timeout)
        self._stderr = open(self._tmp / "stderr", "wb")  # noqa: SIM115 (closed in close())
        # cwd: a QEMU that crashes (see docs/qemu-7.2/README.md) drops any core file there, not in the checkout.
        self._proc = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr, cwd=self._tmp
        )
        try:
            try:
                conn, _ = listener.accept()
            except TimeoutError as error:
                raise QemuStartError(f"QEMU did not connect to qtest: {self.stderr_text()}") from error
            finally:
                listener.close()
            conn.settimeout(self.io_timeout)
            self._sockets.append(conn)
            self._qtest = conn.makefile("rw", encoding="ascii", newline="\n")
            self._connect_qmp()
            self.qmp("stop")  # pause vCPU 0 (SLOF under TCG); see the module docstring
            self.events = [e for e in self.events if e.get("event") != "STOP"]
        except (OSError, QemuError) as error:
            time.sleep(0.1)
            text = self.stderr_text()
            self.close()
            if isinstance(error, QemuStartError):
                raise
            raise QemuStartError(text or str(error)) from error

    def _connect_qmp(self) -> None:
        """Connect QMP (qemu.qmp reads the greeting and negotiates capabilities), retrying until QEMU listens."""
        deadline = time.monotonic() + self.io_timeout
        while True:
            client = QMPClient(f"qemu-{os.getpid()}")
            try:
                self._wait(client.connect(str(self._tmp / "M")), "QMP connect")
                break
            except ConnectError:
                if self._proc is not None and self._proc.poll() is not None:
                    raise QemuStartError(self.stderr_text() or f"QEMU exited with {self._proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self._qmp = client

    def _wait(self, step: Awaitable[T], what: str) -> T:
        """Run a qemu.qmp coroutine on this process's loop, for at most ``io_timeout`` seconds."""
        try:
            return self._loop.run_until_complete(asyncio.wait_for(step, self.io_timeout))
        except TimeoutError as error:
            raise self._hung(what) from error

    def close(self) -> None:
        """Quit QEMU (kill it, by pid, if it does not quit) and remove the sockets."""
        proc = self._proc
        if proc is not None and proc.poll() is None and not self.dead and self._qmp is not None:
            try:
                self._wait(self._qmp.execute("quit"), "QMP quit")
            except (QemuError, QMPError):
                pass  # QEMU may close the connection before it answers
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        if self._qmp is not None:
            try:
                self._loop.run_until_complete(self._qmp.disconnect())
            except (QMPError, OSError, EOFError):
                pass  # the connection ended with QEMU; disconnect() re-raises why
            self._qmp = None
        self._loop.close()
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def stderr_text(self) -> str:
        """QEMU's stderr without the qtest protocol log lines."""
        try:
            text = (self._tmp / "stderr").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(ln for ln in text.splitlines() if not ln.startswith(("[R ", "[S ", "[I ")))

    def _lost(self, what: str) -> QemuError:
        """The error for a connection that ended: QEMU exited (say how) or hung (kill it)."""
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        if proc is not None and proc.poll() is not None:
            self.dead = True
            return QemuExited(f"QEMU exited ({proc.returncode}) during {what}: {self.stderr_text().strip()}")
        return self._hung(what)

    def _hung(self, what: str) -> QemuHung:
        self.dead = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5)
        return QemuHung(f"QEMU did not answer within {self.io_timeout:g} s during {what}")

    # ---- qtest --------------------------------------------------------------------------

    def qtest(self, line: str) -> str:
        """Send one qtest line command; return its OK reply (IRQ notices are skipped)."""
        if self.dead or self._qtest is None:
            raise QemuExited("QEMU is gone")
        try:
            self._qtest.write(line + "\n")
            self._qtest.flush()
            while True:
                reply = self._qtest.readline()
                if not reply:
                    raise self._lost(f"qtest {line.split()[0]}")
                reply = reply.strip()
                if reply.startswith("IRQ"):
                    continue
                if not reply.startswith("OK"):
                    raise QemuError(f"qtest {line!r} -> {reply}")
                return reply
        except TimeoutError as error:
            raise self._hung(f"qtest {line.split()[0]}") from error
        except (BrokenPipeError, ConnectionResetError) as error:
            raise self._lost(f"qtest {line.split()[0]}") from error

    def write(self, address: int, data: bytes) -> None:
        for offset in range(0, len(data), 4096):
            chunk = data[offset : offset + 4096]
            self.qtest(f"write 0x{address + offset:x} {len(chunk)} 0x{chunk.hex()}")

    def read(self, address: int, size: int) -> bytes:
        reply = self.qtest(f"read 0x{address:x} {size}")
        return bytes.fromhex(reply.split()[1][2:])

    def memset(self, address: int, size: int, value: int = 0) -> None:
        self.qtest(f"memset 0x{address:x} {size} 0x{value:x}")

    def rtas(self, name: str, args: list[int], nret: int) -> list[int]:
        """One RTAS call; returns the nret return cells, signed."""
        if args:
            self.write(ARGS_ADDR, b"".join(struct.pack(">I", a & 0xFFFF_FFFF) for a in args))
        if nret:
            self.memset(RETS_ADDR, 4 * nret, 0)
        reply = self.qtest(f"rtas {name} {len(args)} 0x{ARGS_ADDR:x} {nret} 0x{RETS_ADDR:x}")
        if reply != "OK 0":
            raise QemuError(f"qtest rtas {name}: {reply!r} (no such RTAS call in QEMU)")
        if not nret:
            return []
        return [_s32(v) for v in struct.unpack(f">{nret}I", self.read(RETS_ADDR, 4 * nret))]

    # ---- QMP ----------------------------------------------------------------------------

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Run a QMP command; events that arrive meanwhile are appended to ``events``."""
        if self.dead or self._qmp is None:
            raise QemuExited("QEMU is gone")
        try:
            return self._wait(self._qmp.execute(command, arguments or None), f"QMP {command}")
        except ExecuteError as error:
            raise QmpError(error.error_class, error.error.error.desc) from None
        except (QMPError, OSError, EOFError) as error:  # the connection ended (ExecInterruptedError, StateError)
            raise self._lost(f"QMP {command}") from error
        finally:
            self.events.extend(dict(event) for event in self._qmp.events.clear())

    def take_events(self) -> list[dict[str, Any]]:
        """Every QMP event QEMU sent so far (a ``query-status`` round trip flushes them), then forget them."""
        self.qmp("query-status")
        events = [{"event": e["event"], "data": e.get("data", {})} for e in self.events]
        self.events.clear()
        return events


def run_dumpdtb(
    binary: str, geometry: list[str], dtb: Path, timeout: float = 30.0
) -> subprocess.CompletedProcess[bytes]:
    """Run QEMU with ``-machine ...,dumpdtb=DTB`` (it writes the boot device tree and exits).

    Returns the finished process (its return code and stderr); whether DTB was written is the caller's to check.
    """
    dtb = Path(os.path.abspath(dtb))  # QEMU runs in a scratch directory
    with tempfile.TemporaryDirectory(prefix="papr-conf-dtb-") as tmp:
        argv = machine_argv(binary, os.path.join(tmp, "Q"), os.path.join(tmp, "M"), geometry, f"dumpdtb={dtb}")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # -qtest needs a peer to connect to
        listener.bind(os.path.join(tmp, "Q"))
        listener.listen(1)
        try:
            return subprocess.run(argv, capture_output=True, timeout=timeout, check=False, cwd=tmp)
        except subprocess.TimeoutExpired as error:
            raise QemuHung(f"dumpdtb did not finish within {timeout:g} s") from error
        finally:
            listener.close()


def dump_dtb(binary: str, geometry: list[str], timeout: float = 30.0) -> bytes:
    """The boot device tree of a geometry (``-machine ...,dumpdtb=FILE``: QEMU writes it and exits)."""
    with tempfile.TemporaryDirectory(prefix="papr-conf-dtb-") as tmp:
        dtb = Path(tmp) / "machine.dtb"
        done = run_dumpdtb(binary, geometry, dtb, timeout)
        if not dtb.exists():
            stderr = done.stderr.decode(errors="replace")
            raise QemuStartError(f"dumpdtb wrote nothing (exit {done.returncode}): {stderr.strip()}")
        return dtb.read_bytes()
