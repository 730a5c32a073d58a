"""The bridge: the preload library's kernel requests, answered with a papr-emu server's RTAS calls.

Each process of the sandbox connects to a unix socket of the ``papr-emu sandbox``
process and sends one request at a time (the wire format is in ``preload.c``):

- an RTAS call (token, nargs, nret, argument cells). The buffers the call reads or
  writes, as the server's own dispatcher names them (``rtas_dispatch.FUNCTIONS``), are
  read from the ``/dev/mem`` stand-in at the guest addresses in the cells; they must lie
  in the rmo_buffer region, as Linux's ``sys_rtas`` filter requires (else EINVAL). The
  call goes to ``RtasService.Call``; the buffers come back into the file, the return
  cells to the caller. A gRPC error is EINVAL (INVALID_ARGUMENT) or EIO (anything else),
  which librtas reports as RTAS_IO_ASSERT (-1098).
- an ofdt write, applied to the device-tree directory (:class:`~.tree.DeviceTreeDir`), which
  is then refreshed (so a node the export has shows the export's properties). A node the
  tool adds that differs from the server's export at that path (what configure-connector
  handed out) is a finding: logged, and kept in :attr:`Bridge.findings`.

After every call that can change what the export shows (set-indicator, set-power-level,
a configure-connector walk's end) and every ofdt write, the directory is refreshed from
``PlatformService.GetDeviceTree``.

The bridge also fetches the platform's event logs as the guest kernel does, since a program
in the sandbox never sees an interrupt: Linux's ``ras_hotplug_interrupt`` and
``ras_epow_interrupt`` (arch/powerpc/platforms/pseries/ras.c) make one check-exception per
interrupt, so every log an interrupt announces is fetched before a tool acts on it (the kernel
does the CPU and memory DLPAR; PCI and PHB logs go to rtas_errd, which runs drmgr). The
bridge makes one check-exception per pulse of ``InterruptService.WatchInterrupts`` and, so
that no pulse still in flight can race a program's first call, fetches every pending log when
it starts and before a process's first request (the kernel's periodic event-scan would find
a log whose interrupt was withheld, too). The logs are kept in :attr:`Bridge.logs`.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import grpc
import structlog

from papr.v1 import connector_pb2, interrupt_pb2, rtas_pb2
from papr_emu.model import rtas
from papr_emu.model.rtas_dispatch import FUNCTIONS
from papr_emu_client import Client
from papr_emu_client.connectors import list_all
from papr_emu_client.errorlog import EVENT_CLASS_EPOW, EVENT_CLASS_HOTPLUG
from papr_emu_client.fdt import nodes_by_path, read_dtb

from .tree import DeviceTreeDir, OfdtError, comparable, parse_ofdt

KIND_RTAS: Final = 1
KIND_OFDT: Final = 2
MAX_REQUEST: Final = 1 << 20  # an ofdt write of a big node is a few KiB
#: Calls after which the export may show something new: refresh the directory.
CHANGING_TOKENS: Final = frozenset({rtas.TOKEN_SET_INDICATOR, rtas.TOKEN_SET_POWER_LEVEL})
#: configure-connector statuses that continue a walk (1-5) and ask to call again (-2, 990x).
WALK_GOES_ON: Final = frozenset({1, 2, 3, 4, 5, -2, *range(9900, 9906)})

CONFIGURED: Final = frozenset({connector_pb2.DRC_STATE_LOGICAL_CONFIGURED, connector_pb2.DRC_STATE_PHYSICAL_CONFIGURED})
#: The event classes whose interrupts the kernel handles with check-exception (ras.c), and its buffer.
KERNEL_EVENT_CLASSES: Final = EVENT_CLASS_EPOW | EVENT_CLASS_HOTPLUG
ERROR_LOG_MAX: Final = 2048  # rtas-error-log-max, as QEMU and Linux size the buffer
#: Logs fetched in one go at most (a platform's queue is bounded well below this).
MAX_FETCH: Final = 4096

log = structlog.get_logger("papr_emu_sandbox")


@dataclass(frozen=True)
class Region:
    """The rmo_buffer region: where librtas's work areas live in the /dev/mem stand-in."""

    address: int
    size: int

    def holds(self, address: int, length: int) -> bool:
        return self.address <= address and address + length <= self.address + self.size


@dataclass
class Bridge:
    """Serves the preload library's requests for one platform (see the module docstring)."""

    client: Client
    platform: str
    tree: DeviceTreeDir
    memory: Path
    rmo: Region
    socket_path: Path
    findings: list[str] = field(default_factory=list)
    logs: list[bytes] = field(default_factory=list)  # event logs fetched in the kernel's stead, in order
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _listener: socket.socket | None = None
    _interrupts: grpc.Future | None = None
    _last_dtb: bytes = b""

    def configured(self) -> set[int]:
        """The connectors the guest has configured (what a boot now shows it)."""
        return {c.index for c in list_all(self.client.platforms, self.platform) if c.state in CONFIGURED}

    def boot(self) -> None:
        """Render the tree the guest boots with now; or, when a guest booted in this directory before, refresh it."""
        if self.tree.exists():
            self.refresh(force=True)
        else:
            self._last_dtb = self.client.device_tree(self.platform)
            self.tree.render(read_dtb(self._last_dtb), self.configured())

    def refresh(self, force: bool = False) -> None:
        """Bring the directory up to date with the export (GetDeviceTree).

        Without ``force`` nothing is done when the export is the one the directory was last
        brought up to date with; an ofdt write changed the directory, so it forces.
        """
        dtb = self.client.device_tree(self.platform)
        if dtb != self._last_dtb or force:
            self._last_dtb = dtb
            if self.tree.refresh(read_dtb(dtb), self.configured):
                log.info("sandbox.tree_rendered_again", reason="the export's CAS vector changed")

    # ---- serving ----

    def start(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))
        listener.listen(16)
        self._listener = listener
        interrupts = self.client.interrupts.WatchInterrupts(
            interrupt_pb2.WatchInterruptsRequest(platform=self.platform)
        )
        interrupts.initial_metadata()  # subscribed: a pulse from here on is seen, an earlier log fetched now
        self._interrupts = interrupts
        threading.Thread(
            target=self._watch_interrupts, args=(interrupts,), name="papr-sandbox-irq", daemon=True
        ).start()
        with self._lock:
            self.fetch_logs()
        threading.Thread(target=self._accept, name="papr-sandbox-bridge", daemon=True).start()

    def stop(self) -> None:
        if self._interrupts is not None:
            self._interrupts.cancel()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # stopped
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            with self._lock:
                self.fetch_logs()  # a new process: whatever an interrupt announced, the kernel has fetched
            while True:
                header = _receive(connection, 8)
                if header is None:
                    return
                kind, length = struct.unpack("=II", header)
                payload = _receive(connection, length) if length <= MAX_REQUEST else None
                if payload is None:
                    return
                with self._lock:
                    try:
                        error, cells = self.handle(kind, payload)
                    except grpc.RpcError as failure:  # the export behind a refresh (the platform deleted, say)
                        log.error("sandbox.request_failed", code=failure.code().name, details=failure.details())
                        error, cells = errno.EIO, []
                connection.sendall(struct.pack(f"=iI{len(cells)}I", error, len(cells), *cells))

    def handle(self, kind: int, payload: bytes) -> tuple[int, list[int]]:
        """One request: (0 or an errno, the reply cells)."""
        if kind == KIND_RTAS and len(payload) >= 12:
            token, nargs, nret = struct.unpack_from("=III", payload)
            if len(payload) != 12 + 4 * nargs:
                return errno.EINVAL, []
            args = list(struct.unpack_from(f"={nargs}I", payload, 12))
            return self.rtas_call(token, nret, args)
        if kind == KIND_OFDT:
            return self.ofdt(payload), []
        return errno.EINVAL, []

    # ---- the kernel's interrupt handlers ----

    def fetch_logs(self, event_classes: int = KERNEL_EVENT_CLASSES, limit: int = MAX_FETCH) -> int:
        """check-exception until no log is pending (or ``limit`` logs); how many were fetched. Call with the lock."""
        request = rtas_pb2.CheckExceptionRequest(
            platform=self.platform, vector_offset=0x500, event_mask=event_classes, buffer_length=ERROR_LOG_MAX
        )
        for fetched in range(limit):
            try:
                reply = self.client.rtas.CheckException(request)
            except grpc.RpcError as error:  # the platform deleted, say: the program's own calls will tell
                log.warning("sandbox.check_exception_failed", code=error.code().name, details=error.details())
                return fetched
            if reply.status != 0:
                return fetched
            self.logs.append(reply.buffer)
            log.info("sandbox.event_log_fetched", length=len(reply.buffer))
        return limit

    def _watch_interrupts(self, call: grpc.Future) -> None:
        """ras_hotplug_interrupt / ras_epow_interrupt: one check-exception per pulse, of the pulse's class."""
        try:
            for pulse in call:
                if pulse.event_class & KERNEL_EVENT_CLASSES:
                    with self._lock:
                        self.fetch_logs(pulse.event_class, limit=1)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                log.warning("sandbox.interrupts_ended", code=error.code().name, details=error.details())

    # ---- RTAS ----

    def rtas_call(self, token: int, nret: int, args: list[int]) -> tuple[int, list[int]]:
        """Make one raw call; (0, rets as unsigned cells) or (errno, [])."""
        function = FUNCTIONS.get(token)
        wanted = function.needs(args) if function is not None and len(args) in function.nargs else []
        for address, length, what in wanted:
            if not self.rmo.holds(address, length):
                log.warning("sandbox.rtas_blocked", token=token, address=address, length=length, buffer=what)
                return errno.EINVAL, []  # Linux's sys_rtas filter: buffers must be in the RMO region
        buffers = [rtas_pb2.GuestBuffer(address=a, data=self._read(a, length)) for a, length, _ in wanted]
        request = rtas_pb2.CallRequest(
            platform=self.platform, token=token, nargs=len(args), nret=nret, args=args, buffers=buffers
        )
        try:
            response = self.client.rtas.Call(request)
        except grpc.RpcError as error:
            code = error.code()
            log.error("sandbox.rtas_call_failed", token=token, code=code.name, details=error.details())
            return (errno.EINVAL if code == grpc.StatusCode.INVALID_ARGUMENT else errno.EIO), []
        for buffer in response.buffers:
            self._write(buffer.address, buffer.data)
        rets = [ret & 0xFFFFFFFF for ret in response.rets]
        status = response.rets[0] if response.rets else 0
        if token in CHANGING_TOKENS or (token == rtas.TOKEN_IBM_CONFIGURE_CONNECTOR and status not in WALK_GOES_ON):
            self.refresh()
        return 0, rets

    def _read(self, address: int, length: int) -> bytes:
        """Guest memory: the /dev/mem stand-in's bytes (the page cache librtas's mapping shares)."""
        fd = os.open(self.memory, os.O_RDONLY)
        try:
            return os.pread(fd, length, address)
        finally:
            os.close(fd)

    def _write(self, address: int, data: bytes) -> None:
        fd = os.open(self.memory, os.O_WRONLY)
        try:
            os.pwrite(fd, data, address)
        finally:
            os.close(fd)

    # ---- ofdt ----

    def ofdt(self, data: bytes) -> int:
        """Apply one ofdt write; 0 or the errno write() fails with."""
        try:
            command = parse_ofdt(data)
            self.tree.apply(command)
        except OfdtError as error:
            log.warning("sandbox.ofdt_refused", errno=errno.errorcode.get(error.errno), reason=str(error))
            return error.errno
        log.info("sandbox.ofdt", verb=command.verb, path=command.path)
        self.refresh(force=True)
        if command.verb == "add_node":
            self._check_added(command.path, command.properties)
        return 0

    def _check_added(self, path: str, properties: dict[str, bytes]) -> None:
        exported = nodes_by_path(read_dtb(self._last_dtb)).get("/" + path.strip("/"))
        if exported is None:
            finding = f"add_node {path}: the platform's tree has no such node"
        else:
            mine = comparable(properties, exported)
            changed = sorted(name for name in mine.keys() | exported.keys() if mine.get(name) != exported.get(name))
            if not changed:
                return
            finding = f"add_node {path}: differs from what configure-connector handed out in {', '.join(changed)}"
        self.findings.append(finding)
        log.warning("sandbox.ofdt_node_differs", finding=finding)


def _receive(connection: socket.socket, length: int) -> bytes | None:
    """Exactly ``length`` bytes, or None when the peer went away."""
    chunks = []
    while length:
        chunk = connection.recv(min(length, 1 << 16))
        if not chunk:
            return None
        chunks.append(chunk)
        length -= len(chunk)
    return b"".join(chunks)


def make_memory(path: Path, rmo: Region) -> None:
    """The /dev/mem stand-in: a sparse file reaching just past the rmo_buffer region."""
    with path.open("wb") as memory:
        memory.truncate(rmo.address + rmo.size)
    os.chmod(path, 0o600)
