"""The people's side of the ``papr-emu`` command: look at platforms, plug and unplug, watch, run a guest.

In the spirit of QMP and virsh. Every command talks to a running server
(``--server``, else ``$PAPR_EMU_HOST``, else 127.0.0.1:50051) about one platform
(``--platform``, default ``default``). Errors print one line and exit 1. A server
with TLS or tokens is reached with ``--ca``, ``--cert``, ``--key``, ``--token`` and
``--server-name``, else ``$PAPR_EMU_CA``, ``$PAPR_EMU_CERT``, ``$PAPR_EMU_KEY``,
``$PAPR_EMU_TOKEN`` and ``$PAPR_EMU_SERVER_NAME`` (see :func:`papr_emu_client.connect`).

Example::

    papr-emu connectors --type lmb --attached
    papr-emu plug dimm --size 1G --id dimm1
    papr-emu guest --once                  # let the reference guest handle pending events (--unary: no session)
    papr-emu watch                         # events, live
    papr-emu dt > tree.dts                 # the device tree, through dtc
    papr-emu health                        # exit 0 iff the server is SERVING (no token needed)
    papr-emu token mint --role guest --platform p   # prints the new token (admin only)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from papr.v1 import access_pb2, connector_pb2, device_pb2, hotplug_pb2, platform_pb2

from .connect import (
    CA_VARIABLE,
    CERT_VARIABLE,
    KEY_VARIABLE,
    SERVER_NAME_VARIABLE,
    TOKEN_VARIABLE,
    Client,
    Credentials,
    connect_with,
    target_from_env,
)
from .connectors import list_all
from .pci import PCI_MODEL_NAMES, pci_model
from .reference_guest import Outcome, ReferenceGuest, RefusalPolicy
from .sizes import parse_size

_DRC_TYPES = {
    "cpu": connector_pb2.DRC_TYPE_CPU,
    "phb": connector_pb2.DRC_TYPE_PHB,
    "pci": connector_pb2.DRC_TYPE_PCI,
    "lmb": connector_pb2.DRC_TYPE_LMB,
    "pmem": connector_pb2.DRC_TYPE_PMEM,
}


class CliError(Exception):
    """A usage problem worth one line."""


def size_argument(text: str) -> int:
    """An argparse type: ``"1G"`` -> 1073741824, as :func:`papr_emu_client.sizes.parse_size` reads it."""
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_int(text: str) -> int:
    """Decimal or 0x-prefixed hexadecimal (DRC indexes are usually written in hex)."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], out: TextIO) -> None:
    """A plain text table, columns as wide as their widest cell."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[n]) for r in cells)]) for n, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


def _state_name(state: int) -> str:
    return connector_pb2.DrcState.Name(state).removeprefix("DRC_STATE_")  # type: ignore[arg-type]


def _device_kind(device: device_pb2.Device) -> str:
    return device_pb2.DeviceType.Name(device.type).removeprefix("DEVICE_TYPE_").lower()


# --- commands ---------------------------------------------------------------------------------


def cmd_platforms(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    rows = []
    for p in client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms:
        g = p.geometry
        geometry = (
            f"-m {g.memory_bytes >> 20}M,slots={g.memory_slots},maxmem={g.max_memory_bytes >> 20}M "
            f"-smp {g.cpus},maxcpus={g.max_cpus},threads={g.threads_per_core}"
        )
        rows.append((p.name, geometry, p.connector_total, p.device_count, p.last_event_sequence,
                     "yes" if p.options.negotiated else "no"))  # fmt: skip
    table(("NAME", "GEOMETRY", "CONNECTORS", "DEVICES", "EVENTS", "CAS"), rows, out)
    return 0


def cmd_create(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    geometry = platform_pb2.Geometry()
    for field, value in (
        ("memory_bytes", options.memory), ("max_memory_bytes", options.max_memory), ("memory_slots", options.slots),
        ("cpus", options.cpus), ("max_cpus", options.max_cpus), ("threads_per_core", options.threads),
    ):  # fmt: skip
        if value is not None:
            setattr(geometry, field, value)
    created = client.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name=options.name, geometry=geometry))
    print(f"created {created.platform.name}: {created.platform.connector_total} connectors", file=out)
    # A server that requires tokens returns the platform's own: shown once, here.
    for token in (created.manager_token, created.guest_token):
        if token.token:
            print(f"{_role_name(token.role)} token {token.token_id}: {token.token}", file=out)
    return 0


def cmd_delete(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=options.name))
    print(f"deleted {options.name}", file=out)
    return 0


def cmd_connectors(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    drc_type = _DRC_TYPES[options.type] if options.type else connector_pb2.DRC_TYPE_UNSPECIFIED
    rows = [
        (f"{c.index:#010x}", c.name, c.type_name, _state_name(c.state), c.entity_sense, c.device_id or "-",
         "yes" if c.unplug_pending else "")
        for c in list_all(client.platforms, options.platform, type=drc_type, attached_only=options.attached)
    ]  # fmt: skip
    table(("INDEX", "NAME", "TYPE", "STATE", "SENSE", "DEVICE", "UNPLUG"), rows, out)
    return 0


def cmd_devices(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    devices = client.hotplug.ListDevices(hotplug_pb2.ListDevicesRequest(platform=options.platform)).devices
    rows = []
    for d in devices:
        indexes = list(d.drc_indexes)
        where = f"{indexes[0]:#010x}" + (f"..{indexes[-1]:#010x} ({len(indexes)})" if len(indexes) > 1 else "")
        rows.append(
            (d.id, _device_kind(d), where, "hot" if d.hotplugged else "boot", "yes" if d.unplug_pending else "")
        )
    table(("ID", "TYPE", "CONNECTORS", "PLUGGED", "UNPLUG"), rows, out)
    return 0


def _spec(options: argparse.Namespace) -> device_pb2.DeviceSpec:
    if options.kind == "dimm":
        dimm = device_pb2.DimmSpec(size_bytes=options.size)
        if options.slot is not None:
            dimm.slot = options.slot
        if options.address is not None:
            dimm.address = options.address
        return device_pb2.DeviceSpec(dimm=dimm)
    if options.kind == "cpu":
        return device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=options.core_id))
    if options.kind == "pci":
        return device_pb2.DeviceSpec(
            pci_function=device_pb2.PciFunctionSpec(
                phb_index=options.phb, slot=options.slot, function=options.function, model=pci_model(options.model)
            )
        )
    return device_pb2.DeviceSpec(phb=device_pb2.PhbSpec(index=options.index))


def cmd_plug(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    device = client.hotplug.PlugDevice(
        hotplug_pb2.PlugDeviceRequest(platform=options.platform, id=options.id or "", spec=_spec(options))
    ).device
    indexes = list(device.drc_indexes)
    print(f"plugged {device.id} ({_device_kind(device)}) on {len(indexes)} connector(s) from {indexes[0]:#010x}",
          file=out)  # fmt: skip
    return 0


def cmd_unplug(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    reply = client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=options.platform, id=options.id))
    print(f"{options.id}: {'deleted' if reply.deleted else 'unplug requested, waiting for the guest'}", file=out)
    return 0


def describe_event(event: hotplug_pb2.Event) -> str:
    kind = event.WhichOneof("kind")
    if kind == "device_added":
        d = event.device_added.device
        detail = f"{d.id} ({_device_kind(d)}) on {len(d.drc_indexes)} connector(s) from {d.drc_indexes[0]:#010x}"
    elif kind == "unplug_requested":
        detail = (
            f"{event.unplug_requested.device_id}, waiting on {len(event.unplug_requested.drc_indexes)} connector(s)"
        )
    elif kind == "device_deleted":
        deleted = event.device_deleted
        by = deleted.released_by_drc_index
        detail = deleted.device_id + (f" (released by {by:#010x})" if by else "")
    elif kind == "unplug_rejected":
        rejected = event.unplug_rejected
        signal = hotplug_pb2.RefusalSignal.Name(rejected.signal).removeprefix("REFUSAL_SIGNAL_").lower()
        detail = f"{rejected.device_id}: the guest refused by {signal} on {rejected.drc_index:#010x}"
    elif kind == "unplug_timed_out":
        detail = f"{event.unplug_timed_out.device_id} after {event.unplug_timed_out.timeout_seconds:g} s"
    else:
        detail = ""
    return f"#{event.sequence} {kind} {detail}".rstrip()


def cmd_watch(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    request = hotplug_pb2.WatchEventsRequest(platform=options.platform)
    if options.after is not None:
        request.after_sequence = options.after
    stream = client.hotplug.WatchEvents(request)
    seen = 0
    try:
        for response in stream:
            print(describe_event(response.event), file=out, flush=True)
            seen += 1
            if options.count is not None and seen >= options.count:
                stream.cancel()
                break
    except KeyboardInterrupt:
        stream.cancel()
    return 0


def cmd_dt(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    blob = client.device_tree(options.platform)
    if options.dtb is not None:
        if options.dtb == "-":
            sys.stdout.buffer.write(blob)
        else:
            with open(options.dtb, "wb") as file:
                file.write(blob)
        return 0
    dtc = shutil.which("dtc")
    if dtc is None:
        raise CliError("dtc is not installed (Debian: device-tree-compiler); use --dtb FILE for the binary tree")
    result = subprocess.run([dtc, "-q", "-I", "dtb", "-O", "dts", "-o", "-", "-"], input=blob, capture_output=True)
    if result.returncode != 0:
        raise CliError(f"dtc failed: {result.stderr.decode().strip()}")
    out.write(result.stdout.decode())
    return 0


class ProgressBar:
    """A one-line progress bar on a terminal (nothing when stderr is not one)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()

    def __call__(self, label: str, done: int, total: int) -> None:
        if not self.enabled or total < 8 or (done % max(1, total // 128) and done != total):
            return  # redraw about 128 times, not once per LMB
        width = 30
        filled = width * done // total
        end = "\n" if done == total else ""
        self.stream.write(f"\r{label:<16} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}{end}")
        self.stream.flush()


def cmd_guest(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    policy = RefusalPolicy(set(options.refuse_lmb), set(options.busy_cpu), options.signal)

    def report(outcome: Outcome) -> None:
        event = outcome.event
        indexes = outcome.drc_indexes
        span = f" {indexes[0]:#010x}" + (f"..{indexes[-1]:#010x}" if len(indexes) > 1 else "") if indexes else ""
        print(f"resource {event.resource} action {event.action}: {outcome.result}{span} {outcome.detail}".rstrip(),
              file=out, flush=True)  # fmt: skip

    guest = ReferenceGuest(
        client,
        options.platform,
        policy,
        progress=report,
        step=ProgressBar(sys.stderr),
        transport="unary" if options.unary else "session",
    )
    if options.once:
        try:
            guest.handle_pending()
        finally:
            guest.close()
        return 0
    guest.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        guest.stop()
    return 0


def _role_name(role: int) -> str:
    return access_pb2.Role.Name(role).removeprefix("ROLE_").lower()  # type: ignore[arg-type]


_ROLES = {"admin": access_pb2.ROLE_ADMIN, "manager": access_pb2.ROLE_MANAGER, "guest": access_pb2.ROLE_GUEST}


def cmd_token_mint(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    """The secret alone on standard output (``TOKEN=$(papr-emu token mint ...)``), what it is on stderr."""
    platform = "" if options.role == "admin" else options.platform or "default"
    if options.role == "admin" and options.platform:
        raise CliError("an admin token is for every platform: drop --platform")
    minted = client.access.MintToken(access_pb2.MintTokenRequest(role=_ROLES[options.role], platform=platform)).token
    print(minted.token, file=out)
    print(f"minted {_role_name(minted.role)} token {minted.token_id}" + (f" of {platform}" if platform else ""),
          file=sys.stderr)  # fmt: skip
    return 0


def cmd_token_revoke(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    client.access.RevokeToken(access_pb2.RevokeTokenRequest(token_id=options.token_id))
    print(f"revoked {options.token_id}", file=out)
    return 0


def cmd_token_list(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    tokens = client.access.ListTokens(access_pb2.ListTokensRequest(platform=options.platform or "")).tokens
    table(("TOKEN_ID", "ROLE", "PLATFORM"), [(t.token_id, _role_name(t.role), t.platform or "-") for t in tokens], out)
    return 0


def check_health(credentials: Credentials, target: str, service: str, timeout: float) -> str:
    """The health service's status of ``service`` at ``target`` (``SERVING``, ...), or why there is none.

    Needs no token (health is open), but honours TLS.

    Example::

        check_health(Credentials.resolve(), "127.0.0.1:50051", "", 5.0)   # 'SERVING'
    """
    with credentials.channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout, wait_for_ready=True
            )
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return f"no answer from {target} within {timeout:g} s (not running, or a TLS handshake failing?)"
            return f"{error.code().name}: {error.details()}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def cmd_health(options: argparse.Namespace, credentials: Credentials, target: str, out: TextIO, err: TextIO) -> int:
    """Exit 0 iff the server says SERVING (for container HEALTHCHECKs); the status, or why not, on one line."""
    status = check_health(credentials, target, options.service, options.timeout)
    if status == "SERVING":
        print(status, file=out)
        return 0
    print(f"papr-emu: {status}", file=err)
    return 1


# --- wiring -----------------------------------------------------------------------------------

Command = Callable[[Client, argparse.Namespace, TextIO], int]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client commands to the ``papr-emu`` parser (next to ``serve``)."""

    def command(
        name: str, handler: Command | None, help: str, platform: bool = True, parent: Any = commands
    ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        add_connection_options(parser)
        if platform:
            parser.add_argument("--platform", default="default", help="platform name (default: default)")
        parser.set_defaults(client_command=handler)
        return parser

    command("platforms", cmd_platforms, "list platforms")
    health = command("health", None, "exit 0 iff the server's health service says SERVING (needs no token)", False)
    health.add_argument("--service", default="", help="a service's status instead of the server's")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer (default 5)")
    health.set_defaults(health_command=True)
    token = commands.add_parser("token", help="mint, revoke and list bearer tokens (admin token needed)")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    mint = command("mint", cmd_token_mint, "mint a token; prints the secret alone", False, token_commands)
    mint.add_argument("--role", choices=sorted(_ROLES), required=True)
    mint.add_argument("--platform", help="its platform (guest, manager; default: default)")
    revoke = command("revoke", cmd_token_revoke, "revoke a token by its id", False, token_commands)
    revoke.add_argument("token_id", metavar="ID")
    listing = command("list", cmd_token_list, "list the tokens in force (ids, never secrets)", False, token_commands)
    listing.add_argument("--platform", help="only this platform's tokens")
    create = command("create", cmd_create, "create a platform (QEMU-like geometry)")
    create.add_argument("name")
    create.add_argument("--memory", type=size_argument)
    create.add_argument("--max-memory", type=size_argument)
    create.add_argument("--slots", type=int)
    create.add_argument("--cpus", type=int)
    create.add_argument("--max-cpus", type=int)
    create.add_argument("--threads", type=int)
    delete = command("delete", cmd_delete, "delete a platform")
    delete.add_argument("name")
    connectors = command("connectors", cmd_connectors, "list a platform's connectors")
    connectors.add_argument("--type", choices=sorted(_DRC_TYPES))
    connectors.add_argument("--attached", action="store_true", help="only connectors with a device")
    command("devices", cmd_devices, "list a platform's devices")
    plug = command("plug", cmd_plug, "hot-plug a device (device_add)")
    kinds = plug.add_subparsers(dest="kind", required=True)
    dimm = kinds.add_parser("dimm", help="a DIMM")
    dimm.add_argument("--size", type=size_argument, required=True)
    dimm.add_argument("--slot", type=int)
    dimm.add_argument("--address", type=size_argument)
    cpu = kinds.add_parser("cpu", help="a CPU core")
    cpu.add_argument("--core-id", type=int, required=True)
    pci = kinds.add_parser("pci", help="a PCI function")
    pci.add_argument("--slot", type=int, required=True)
    pci.add_argument("--function", type=int, default=0)
    pci.add_argument("--phb", type=int, default=0)
    pci.add_argument("--model", choices=PCI_MODEL_NAMES, default="e1000")
    phb = kinds.add_parser("phb", help="a PCI host bridge")
    phb.add_argument("--index", type=int, required=True)
    for kind in (dimm, cpu, pci, phb):
        kind.add_argument("--id", help="device id (default: papr-emu picks one)")
        # Also accepted after the device kind; SUPPRESS keeps the plug command's values otherwise.
        kind.add_argument("--platform", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        add_connection_options(kind, hidden=True)
    unplug = command("unplug", cmd_unplug, "request a hot-unplug (device_del)")
    unplug.add_argument("id")
    watch = command("watch", cmd_watch, "print a platform's events as they happen")
    watch.add_argument("--after", type=int, help="replay retained events after this sequence number first")
    watch.add_argument("--count", type=int, help="stop after this many events")
    dt = command("dt", cmd_dt, "dump the device tree (DTS through dtc, or the DTB)")
    dt.add_argument("--dtb", metavar="FILE", help="write the binary DTB to FILE ('-': standard output)")
    guest = command("guest", cmd_guest, "run the reference guest (Linux-like DLPAR) against a platform")
    guest.add_argument("--once", action="store_true", help="handle the pending events, then exit")
    guest.add_argument("--refuse-lmb", type=parse_int, action="append", default=[], metavar="INDEX",
                       help="an LMB that cannot be offlined (repeatable)")  # fmt: skip
    guest.add_argument("--busy-cpu", type=parse_int, action="append", default=[], metavar="INDEX",
                       help="a CPU core DRC that is busy (repeatable)")  # fmt: skip
    guest.add_argument("--signal", choices=("unisolate", "configure-connector"), default="unisolate",
                       help="how to refuse a memory unplug (kernel 5.13+: unisolate)")  # fmt: skip
    guest.add_argument("--unary", action="store_true",
                       help="one unary RPC per RTAS call (default: one Session stream, calls batched)")  # fmt: skip


_CONNECTION_OPTIONS = (
    ("--ca", "PEM", f"TLS: the CA of the server's certificate (default: ${CA_VARIABLE}; none: plain text)"),
    ("--cert", "PEM", f"mTLS: this client's certificate (default: ${CERT_VARIABLE})"),
    ("--key", "PEM", f"mTLS: the key of --cert (default: ${KEY_VARIABLE})"),
    ("--token", "TOKEN", f"bearer token (default: ${TOKEN_VARIABLE}, which, unlike an option, ps does not show)"),
    ("--server-name", "NAME", f"the name the server's certificate must have (default: ${SERVER_NAME_VARIABLE})"),
)


def add_connection_options(parser: argparse.ArgumentParser, hidden: bool = False) -> None:
    """``--server`` and the TLS and token options (each defaulting to its ``PAPR_EMU_*`` variable).

    ``hidden``: also accepted after a sub-command (``plug dimm --token ...``), without help, and
    without overriding the value given before it.
    """
    default: Any = argparse.SUPPRESS if hidden else None
    parser.add_argument(
        "--server", default=default,
        help=argparse.SUPPRESS if hidden else "host:port or unix:PATH (default: $PAPR_EMU_HOST, else 127.0.0.1:50051)",
    )  # fmt: skip
    for flag, metavar, text in _CONNECTION_OPTIONS:
        parser.add_argument(flag, metavar=metavar, default=default, help=argparse.SUPPRESS if hidden else text)


def run(options: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run a parsed client command; gRPC and usage errors become one line on ``err`` (default stderr)."""
    out = out or sys.stdout
    err = err or sys.stderr
    target = target_from_env(options.server)
    try:
        credentials = Credentials.resolve(options.ca, options.cert, options.key, options.token, options.server_name)
    except (ValueError, OSError) as error:
        print(f"papr-emu: {error}", file=err)
        return 1
    if getattr(options, "health_command", False):
        return cmd_health(options, credentials, target, out, err)
    try:
        client = connect_with(credentials, target, timeout=5)
    except grpc.FutureTimeoutError:
        hint = " (is `papr-emu serve` running?" + (
            " does it trust this client, and this client it?)" if credentials.tls else ")"
        )
        print(f"papr-emu: cannot reach a server at {target}{hint}", file=err)
        return 1
    try:
        handler: Command = options.client_command
        return handler(client, options, out)
    except grpc.RpcError as error:
        print(f"papr-emu: {error.code().name}: {error.details()}", file=err)
        return 1
    except (CliError, OSError) as error:
        print(f"papr-emu: {error}", file=err)
        return 1
    finally:
        client.close()
