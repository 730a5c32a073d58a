"""The people's side of the ``papr-emu`` command: look at platforms, plug and unplug, watch, run a guest.

In the spirit of QMP and virsh. Every command talks to a running server
(``--server``, else ``$PAPR_EMU_HOST``, else 127.0.0.1:50051) about one platform
(``--platform``, default ``default``); these and the connection options below go before
or after the command. ``-o json`` prints JSON instead of text (one JSON line per event for
``watch``). Errors print one line and exit 1. A server
with TLS or tokens is reached with ``--ca``, ``--cert``, ``--key``, ``--token`` and
``--server-name``, else ``$PAPR_EMU_CA``, ``$PAPR_EMU_CERT``, ``$PAPR_EMU_KEY``,
``$PAPR_EMU_TOKEN`` and ``$PAPR_EMU_SERVER_NAME`` (see :func:`papr_emu_client.connect`).

Example::

    papr-emu connectors --type lmb --attached
    papr-emu plug dimm --size 1G --id dimm1
    papr-emu unplug dimm1 --wait --timeout 30   # exit 0 deleted, 3 refused by the guest, 4 timed out
    papr-emu -o json --platform p devices  # for scripts
    papr-emu guest --once                  # let the reference guest handle pending events (--unary: no session)
    papr-emu watch                         # events, live
    papr-emu dt > tree.dts                 # the device tree, through dtc
    papr-emu health                        # exit 0 iff the server is SERVING (no token needed)
    papr-emu token mint --role guest --platform p   # prints the new token (admin only)
    papr-emu fault add busy-lmbs --effect busy --drc-type lmb --times 3   # firmware answers -2 three times
    papr-emu fault list                    # the rules, how often each matched and fired
    papr-emu conduct --watch               # the guest's findings (LoPAR breaches), live
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO
from uuid import uuid4

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from papr.v1 import access_pb2, connector_pb2, device_pb2, fault_pb2, hotplug_pb2, platform_pb2

from .arguments import seconds_argument
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


# Exit statuses of ``unplug --wait`` (1 is any error, 2 a usage error, as everywhere).
EXIT_REJECTED = 3
EXIT_TIMEOUT = 4


class CliError(Exception):
    """A usage problem worth one line."""


class Given(int):
    """A number from the command line that remembers how it was written (``300M``, ``0x10``, ``16``).

    Messages echo it in the user's form: a server's ``0x12c00000`` is ``300M`` again.
    """

    text: str

    def __new__(cls, value: int, text: str) -> Given:
        given = super().__new__(cls, value)
        given.text = text.strip()
        return given


def size_argument(text: str) -> int:
    """An argparse type: ``"1G"`` -> 1073741824, as :func:`papr_emu_client.sizes.parse_size` reads it."""
    try:
        return Given(parse_size(text), text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_int(text: str, top: int = 0xFFFF_FFFF) -> int:
    """Decimal or 0x-prefixed hexadecimal (DRC indexes are usually written in hex), 0 to ``top``.

    ``top``: the largest the request's field holds (uint32 unless said; protobuf raises on more).
    """
    try:
        number = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= number <= top:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to {top}")
    return Given(number, text)


def parse_sequence(text: str) -> int:
    """An event sequence number (uint64)."""
    return parse_int(text, (1 << 64) - 1)


def as_given(message: str, options: argparse.Namespace) -> str:
    """``message`` with the numbers the user gave written as they were given.

    A server writes sizes and indexes in hex: ``0x12c00000`` becomes ``300M`` (or
    ``314572800``) when that is what was typed; a hex number typed for a decimal echo
    likewise (from 256 up, so that small counts in a message stay what they are).
    """
    numbers: list[Given] = []
    for value in vars(options).values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Given):
                numbers.append(item)
    for number in numbers:
        hex_form = re.compile(rf"(?<![\w.])0x0*{int(number):x}(?![\w.])", re.IGNORECASE)
        message = hex_form.sub(lambda _, text=number.text: text, message)  # type: ignore[misc]
        if int(number) >= 256 and number.text.lower().startswith("0x"):
            message = re.sub(rf"(?<![\w.]){int(number)}(?![\w.])", number.text, message)
    return message


def emit(value: object, out: TextIO) -> None:
    """One line of JSON (``-o json``)."""
    print(json.dumps(value), file=out, flush=True)


def _json(options: argparse.Namespace) -> bool:
    return getattr(options, "output", "text") == "json"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], out: TextIO) -> None:
    """A plain text table, columns as wide as their widest cell."""
    # Not rich (issue 15 proposed it), measured: once rich is installed, structlog imports
    # rich.traceback on its own import, so every papr-emu start, the server's and every command's,
    # lazy imports or not, paid for it (structlog's import: 50-110 ms without, 245-340 ms with).
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
    listed = client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms
    if _json(options):
        emit([{
            "name": p.name, "memory_bytes": p.geometry.memory_bytes, "memory_slots": p.geometry.memory_slots,
            "max_memory_bytes": p.geometry.max_memory_bytes, "cpus": p.geometry.cpus,
            "max_cpus": p.geometry.max_cpus, "threads_per_core": p.geometry.threads_per_core,
            "connectors": p.connector_total, "devices": p.device_count, "last_event_sequence": p.last_event_sequence,
            "negotiated": p.options.negotiated,
        } for p in listed], out)  # fmt: skip
        return 0
    for p in listed:
        g = p.geometry
        geometry = (
            f"-m {g.memory_bytes >> 20}M,slots={g.memory_slots},maxmem={g.max_memory_bytes >> 20}M "
            f"-smp {g.cpus},maxcpus={g.max_cpus},threads={g.threads_per_core}"
        )
        rows.append((p.name, geometry, p.connector_total, p.device_count, p.last_event_sequence,
                     "yes" if p.options.negotiated else "no"))  # fmt: skip
    table(("NAME", "GEOMETRY", "CONNECTORS", "DEVICES", "EVENTS", "CAS"), rows, out)
    return 0


DEFAULT_MEMORY = 1 << 30
DEFAULT_MAX_MEMORY = 4 << 30
DEFAULT_SLOTS = 4
DEFAULT_MAX_CPUS = 4


def cmd_create(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    """The default platform's geometry (``-m 1G,slots=4,maxmem=4G -smp 1,maxcpus=4``) for what is not given."""
    geometry = platform_pb2.Geometry()
    memory = DEFAULT_MEMORY if options.memory is None else options.memory
    cpus = 1 if options.cpus is None else options.cpus
    if options.max_memory is None:
        # The default platform's 3G of room for DIMMs, above --memory when that is 4G or more.
        options.max_memory = DEFAULT_MAX_MEMORY if memory < DEFAULT_MAX_MEMORY else memory + 3 * DEFAULT_MEMORY
    if options.max_cpus is None:
        options.max_cpus = max(DEFAULT_MAX_CPUS, cpus)
    options.memory, options.cpus = memory, cpus
    if options.slots is None:
        options.slots = DEFAULT_SLOTS
    for field, value in (
        ("memory_bytes", options.memory), ("max_memory_bytes", options.max_memory), ("memory_slots", options.slots),
        ("cpus", options.cpus), ("max_cpus", options.max_cpus), ("threads_per_core", options.threads),
    ):  # fmt: skip
        if value is not None:
            setattr(geometry, field, value)
    created = client.platforms.CreatePlatform(platform_pb2.CreatePlatformRequest(name=options.name, geometry=geometry))
    tokens = [t for t in (created.manager_token, created.guest_token) if t.token]
    if _json(options):
        emit({"name": created.platform.name, "connectors": created.platform.connector_total,
              "tokens": [{"role": _role_name(t.role), "token_id": t.token_id, "token": t.token} for t in tokens]},
             out)  # fmt: skip
        return 0
    print(f"created {created.platform.name}: {created.platform.connector_total} connectors", file=out)
    # A server that requires tokens returns the platform's own: shown once, here.
    for token in (created.manager_token, created.guest_token):
        if token.token:
            print(f"{_role_name(token.role)} token {token.token_id}: {token.token}", file=out)
    return 0


def cmd_delete(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=options.name))
    if _json(options):
        emit({"deleted": options.name}, out)
        return 0
    print(f"deleted {options.name}", file=out)
    return 0


def cmd_connectors(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    drc_type = _DRC_TYPES[options.type] if options.type else connector_pb2.DRC_TYPE_UNSPECIFIED
    if _json(options):
        emit([{
            "index": c.index, "name": c.name, "type": c.type_name, "state": _state_name(c.state),
            "entity_sense": c.entity_sense, "device_id": c.device_id or None, "unplug_pending": c.unplug_pending,
        } for c in list_all(client.platforms, options.platform, type=drc_type, attached_only=options.attached)],
            out)  # fmt: skip
        return 0
    rows = [
        (f"{c.index:#010x}", c.name, c.type_name, _state_name(c.state), c.entity_sense, c.device_id or "-",
         "yes" if c.unplug_pending else "")
        for c in list_all(client.platforms, options.platform, type=drc_type, attached_only=options.attached)
    ]  # fmt: skip
    table(("INDEX", "NAME", "TYPE", "STATE", "SENSE", "DEVICE", "UNPLUG"), rows, out)
    return 0


def cmd_devices(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    devices = client.hotplug.ListDevices(hotplug_pb2.ListDevicesRequest(platform=options.platform)).devices
    if _json(options):
        emit([_device_json(d) for d in devices], out)
        return 0
    rows = []
    for d in devices:
        indexes = list(d.drc_indexes)
        where = f"{indexes[0]:#010x}" + (f"..{indexes[-1]:#010x} ({len(indexes)})" if len(indexes) > 1 else "")
        rows.append(
            (d.id, _device_kind(d), where, "hot" if d.hotplugged else "boot", "yes" if d.unplug_pending else "")
        )
    table(("ID", "TYPE", "CONNECTORS", "PLUGGED", "UNPLUG"), rows, out)
    return 0


def _device_json(device: device_pb2.Device) -> dict[str, object]:
    return {
        "id": device.id, "type": _device_kind(device), "drc_indexes": list(device.drc_indexes),
        "hotplugged": device.hotplugged, "unplug_pending": device.unplug_pending,
    }  # fmt: skip


def _spec(options: argparse.Namespace) -> device_pb2.DeviceSpec:
    if options.kind == "dimm":
        dimm = device_pb2.DimmSpec(size_bytes=options.size)
        if options.slot is not None:
            dimm.slot = options.slot
        if options.address is not None:
            dimm.address = options.address
        return device_pb2.DeviceSpec(dimm=dimm)
    if options.kind == "nvdimm":
        nvdimm = device_pb2.NvdimmSpec(
            size_bytes=options.size, label_size_bytes=options.label_size, uuid=options.uuid or str(uuid4())
        )
        if options.slot is not None:
            nvdimm.slot = options.slot
        if options.address is not None:
            nvdimm.address = options.address
        return device_pb2.DeviceSpec(nvdimm=nvdimm)
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
    if _json(options):
        emit(_device_json(device), out)
        return 0
    indexes = list(device.drc_indexes)
    print(f"plugged {device.id} ({_device_kind(device)}) on {len(indexes)} connector(s) from {indexes[0]:#010x}",
          file=out)  # fmt: skip
    return 0


def cmd_unplug(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    """Request the unplug; with ``--wait``, also its outcome: exit 0 deleted, 3 refused, 4 timed out."""
    if not options.wait:
        if options.timeout is not None:
            raise CliError("--timeout is for --wait")
        reply = client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=options.platform, id=options.id))
        _unplug_report(options, out, "deleted" if reply.deleted else "requested")
        return 0
    # Subscribe before asking: WatchEvents sends its headers once subscribed, so the outcome
    # cannot happen between the request and the watch.
    stream = client.hotplug.WatchEvents(hotplug_pb2.WatchEventsRequest(platform=options.platform),
                                        timeout=options.timeout)  # fmt: skip
    try:
        stream.initial_metadata()
        reply = client.hotplug.UnplugDevice(hotplug_pb2.UnplugDeviceRequest(platform=options.platform, id=options.id))
        if reply.deleted:
            _unplug_report(options, out, "deleted")
            return 0
        try:
            for response in stream:
                event = response.event
                kind = event.WhichOneof("kind")
                if kind in ("device_deleted", "unplug_rejected", "unplug_timed_out"):
                    if getattr(event, kind).device_id != options.id:
                        continue
                    if kind == "device_deleted":
                        _unplug_report(options, out, "deleted", event)
                        return 0
                    _unplug_report(options, out, "rejected" if kind == "unplug_rejected" else "timeout", event)
                    return EXIT_REJECTED if kind == "unplug_rejected" else EXIT_TIMEOUT
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            _unplug_report(options, out, "timeout")
            return EXIT_TIMEOUT
        raise CliError(f"the event stream of {options.platform} ended before {options.id}'s unplug did")
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise CliError(f"no answer within {options.timeout:g} s") from None
        raise
    finally:
        stream.cancel()


_UNPLUG_TEXT = {
    "deleted": "deleted",
    "requested": "unplug requested, waiting for the guest",
    "rejected": "the guest refused the unplug",
    "timeout": "still not unplugged",
}


def _unplug_report(options: argparse.Namespace, out: TextIO, outcome: str, event: Any = None) -> None:
    if _json(options):
        emit({"id": options.id, "outcome": outcome, "event": None if event is None else event_json(event)}, out)
        return
    text = _UNPLUG_TEXT[outcome]
    if event is not None and outcome != "deleted":
        # "#7 unplug_rejected mem: the guest refused by ...", "#8 unplug_timed_out mem after 12 s"
        text = describe_event(event).split(" ", 2)[2].removeprefix(options.id).removeprefix(":").strip()
        text = text if outcome == "rejected" else f"the unplug timed out on the server {text}"
    elif outcome == "timeout":
        text += f" after {options.timeout:g} s"
    print(f"{options.id}: {text}", file=out)


def event_json(event: hotplug_pb2.Event) -> dict[str, Any]:
    """An event as JSON: sequence, kind, platform, time and the kind's fields (enums by name)."""
    kind = event.WhichOneof("kind") or ""
    return {
        "sequence": event.sequence, "kind": kind, "platform": event.platform,
        "time": event.time.ToJsonString() if event.HasField("time") else None,
        **(message_json(getattr(event, kind)) if kind else {}),
    }  # fmt: skip


def message_json(message: Message) -> dict[str, Any]:
    """Every field of ``message``, defaults included, 64-bit integers as numbers (unlike MessageToDict)."""
    result: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if repeated:
                result[field.name] = [message_json(v) for v in value]
            else:
                result[field.name] = message_json(value) if message.HasField(field.name) else None
        elif field.type == FieldDescriptor.TYPE_ENUM:
            names = field.enum_type.values_by_number if field.enum_type else {}
            result[field.name] = [names[v].name if v in names else v for v in value] if repeated else (
                names[value].name if value in names else value)  # fmt: skip
        else:
            result[field.name] = list(value) if repeated else value
    return result


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
            if _json(options):
                emit(event_json(response.event), out)
            else:
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
    """A one-line progress bar on a terminal (nothing when stderr is not one).

    Not rich.progress, for the reason given in :func:`table`.
    """

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
        if _json(options):
            emit({"resource": event.resource, "action": event.action, "result": outcome.result,
                  "drc_indexes": list(indexes), "detail": outcome.detail}, out)  # fmt: skip
            return
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
    if _json(options):
        emit({"token": minted.token, "token_id": minted.token_id, "role": _role_name(minted.role),
              "platform": platform or None}, out)  # fmt: skip
        return 0
    print(minted.token, file=out)
    print(f"minted {_role_name(minted.role)} token {minted.token_id}" + (f" of {platform}" if platform else ""),
          file=sys.stderr)  # fmt: skip
    return 0


def cmd_token_revoke(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    client.access.RevokeToken(access_pb2.RevokeTokenRequest(token_id=options.token_id))
    if _json(options):
        emit({"revoked": options.token_id}, out)
        return 0
    print(f"revoked {options.token_id}", file=out)
    return 0


def cmd_token_list(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    tokens = client.access.ListTokens(access_pb2.ListTokensRequest(platform=options.platform or "")).tokens
    if _json(options):
        emit(
            [{"token_id": t.token_id, "role": _role_name(t.role), "platform": t.platform or None} for t in tokens], out
        )
        return 0
    table(("TOKEN_ID", "ROLE", "PLATFORM"), [(t.token_id, _role_name(t.role), t.platform or "-") for t in tokens], out)
    return 0


# --- fault rules and the conduct report (FaultService) ---------------------------------------


def _enum_words(enum_type: Any, prefix: str) -> dict[str, Any]:
    """A proto enum's values as command-line words: FAULT_EFFECT_EXTENDED_DELAY -> extended-delay (0 left out)."""
    return {
        value.name.removeprefix(prefix).lower().replace("_", "-"): value.number
        for value in enum_type.DESCRIPTOR.values
        if value.number
    }


_FAULT_EFFECTS: dict[str, fault_pb2.FaultEffect.ValueType] = _enum_words(fault_pb2.FaultEffect, "FAULT_EFFECT_")
#: The calls by FaultCall's names, and configure-connector by its RTAS name too (as findings write it).
_FAULT_CALLS: dict[str, fault_pb2.FaultCall.ValueType] = _enum_words(fault_pb2.FaultCall, "FAULT_CALL_") | {
    "ibm,configure-connector": fault_pb2.FAULT_CALL_CONFIGURE_CONNECTOR
}


def _word(words: Mapping[str, int], number: int) -> str:
    """The word of an enum value; a value this client does not know (a newer server's) as its number."""
    return next((word for word, n in words.items() if n == number), str(number))


def _finding_kind(kind: int) -> str:
    """CONDUCT_FINDING_KIND_RETRY_TOO_SOON -> RETRY_TOO_SOON; any kind, a newer server's too (its number)."""
    value = fault_pb2.ConductFindingKind.DESCRIPTOR.values_by_number.get(kind)
    return value.name.removeprefix("CONDUCT_FINDING_KIND_") if value is not None else str(kind)


def rule_json(rule: fault_pb2.FaultRule) -> dict[str, Any]:
    """A rule under the config file's keys (a ``[[platform.fault]]`` table), its counters too; unset: None."""
    return {
        "name": rule.name, "effect": _word(_FAULT_EFFECTS, rule.effect),
        "call": _word(_FAULT_CALLS, rule.call) if rule.call else None, "drc_index": rule.drc_index or None,
        "drc_type": _word(_DRC_TYPES, rule.drc_type) if rule.drc_type else None, "device_id": rule.device_id or None,
        "status": rule.status, "times": rule.times, "probability": rule.probability, "seed": rule.seed,
        "matched": rule.matched, "fired": rule.fired,
    }  # fmt: skip


def _rule_flag(field: str) -> str:
    """How ``fault add`` spells a FaultRule field: drc_index -> --drc-index, name -> NAME."""
    return "NAME" if field == "name" else "--" + field.replace("_", "-")


def cmd_fault_add(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    rule = fault_pb2.FaultRule(
        name=options.name, effect=_FAULT_EFFECTS[options.effect],
        call=_FAULT_CALLS.get(options.call or "", fault_pb2.FAULT_CALL_UNSPECIFIED),
        drc_index=options.drc_index, device_id=options.device_id,
        drc_type=_DRC_TYPES.get(options.drc_type or "", connector_pb2.DRC_TYPE_UNSPECIFIED),
        status=options.status, times=options.times, seed=options.seed,
    )  # fmt: skip
    if options.probability is not None:
        rule.probability = options.probability
    try:
        added = client.faults.AddFaultRule(fault_pb2.AddFaultRuleRequest(platform=options.platform, rule=rule)).rule
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        # "rule.drc_type: 7: ..." names the message's field: name the option instead.
        details = re.sub(r"^rule\.(\w+)", lambda match: _rule_flag(match[1]), error.details() or "")
        raise CliError(f"{error.code().name}: {details}") from None
    if _json(options):
        emit(rule_json(added), out)
        return 0
    fields = rule_json(added)
    where = " ".join(
        f"{key}={fields[key]:#010x}" if key == "drc_index" else f"{key}={fields[key]}"
        for key in ("call", "drc_index", "drc_type", "device_id")
        if fields[key] is not None
    )
    how = f"{added.times} time(s)" if added.times else "every time"
    if added.probability < 1:
        how += f" with probability {added.probability:g} (seed {added.seed})"
    print(f"added {added.name}: {fields['effect']} (status {added.status}) on {where or 'any call'}, {how}", file=out)
    return 0


def cmd_fault_list(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    rules = client.faults.ListFaultRules(fault_pb2.ListFaultRulesRequest(platform=options.platform)).rules
    if _json(options):
        emit([rule_json(r) for r in rules], out)
        return 0
    rows = []
    for rule in rules:
        fields = rule_json(rule)
        rows.append((
            rule.name, fields["effect"], fields["call"] or "-", f"{rule.drc_index:#010x}" if rule.drc_index else "-",
            fields["drc_type"] or "-", rule.device_id or "-", rule.status, rule.times or "-", f"{rule.probability:g}",
            rule.seed, rule.matched, rule.fired,
        ))  # fmt: skip
    headers = ("NAME", "EFFECT", "CALL", "INDEX", "TYPE", "DEVICE", "STATUS", "TIMES", "PROBABILITY", "SEED",
               "MATCHED", "FIRED")  # fmt: skip
    table(headers, rows, out)
    return 0


def cmd_fault_clear(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    request = fault_pb2.ClearFaultRulesRequest(platform=options.platform, names=options.names)
    removed = client.faults.ClearFaultRules(request).removed
    if _json(options):
        emit({"removed": removed}, out)
        return 0
    print(f"removed {removed} fault rule(s)", file=out)
    return 0


def _time(stamp: Timestamp) -> str:
    """``2026-12-02T21:31:52.123Z`` (UTC, milliseconds)."""
    return stamp.ToDatetime(tzinfo=datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def finding_json(finding: fault_pb2.ConductFinding) -> dict[str, Any]:
    return {
        "time": _time(finding.time), "requirement": finding.requirement, "kind": _finding_kind(finding.kind),
        "call": finding.call, "drc_index": finding.drc_index or None, "detail": finding.detail,
        "explanation": finding.explanation,
    }  # fmt: skip


def _finding_row(finding: fault_pb2.ConductFinding) -> tuple[str, ...]:
    index = f"{finding.drc_index:#010x}" if finding.drc_index else "-"
    return (_time(finding.time), finding.requirement, _finding_kind(finding.kind), finding.call, index,
            finding.detail or "-", finding.explanation)  # fmt: skip


_FINDING_HEADERS = ("TIME", "REQUIREMENT", "KIND", "CALL", "INDEX", "DETAIL", "EXPLANATION")


def cmd_conduct(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    """The findings the platform retains (a table), or with ``--watch`` each finding as it is made."""
    if options.watch:
        return _watch_conduct(client, options, out)
    if options.after is not None or options.count is not None:
        raise CliError("--after and --count are for --watch")
    reply = client.faults.GetConduct(fault_pb2.GetConductRequest(platform=options.platform))
    if _json(options):
        emit({"findings": [finding_json(f) for f in reply.findings], "total": reply.total}, out)
        return 0
    table(_FINDING_HEADERS, [_finding_row(f) for f in reply.findings], out)
    if reply.total > len(reply.findings):
        print(f"({reply.total - len(reply.findings)} older finding(s) no longer retained)", file=out)
    return 0


def _watch_conduct(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    """Follow WatchConduct until Ctrl-C (or ``--count`` findings): the retained findings first (or
    those after ``--after``), one line each, ``#SEQUENCE`` then the table's columns."""
    request = fault_pb2.WatchConductRequest(platform=options.platform)
    request.after_sequence = 0 if options.after is None else options.after
    stream = client.faults.WatchConduct(request)
    seen = 0
    try:
        for response in stream:
            if _json(options):
                emit({"sequence": response.sequence, **finding_json(response.finding)}, out)
            else:
                print(f"#{response.sequence}  " + "  ".join(_finding_row(response.finding)), file=out, flush=True)
            seen += 1
            if options.count is not None and seen >= options.count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        stream.cancel()
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
    if _json(options):
        emit({"status": status if status.isupper() else None, "serving": status == "SERVING",
              "error": None if status.isupper() else status}, out)  # fmt: skip
        return 0 if status == "SERVING" else 1
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
        name: str,
        handler: Command | None,
        help: str,
        platform: bool = True,
        parent: Any = commands,
        output: bool = True,
        epilog: str | None = None,
    ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(
            name, help=help, description=help, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        add_connection_options(parser, before=False)
        if platform:
            add_platform_option(parser)
        if output:
            add_output_option(parser)
        parser.set_defaults(client_command=handler, default_platform=platform)
        return parser

    command("platforms", cmd_platforms, "list platforms")
    health = command("health", None, "exit 0 iff the server's health service says SERVING (needs no token)", False)
    health.add_argument("--service", default="", help="a service's status instead of the server's")
    health.add_argument(
        "--timeout", type=seconds_argument, default=5.0, help="seconds to wait for an answer (default 5)"
    )
    health.epilog = "-o json prints {status, serving, error}, with the same exit status."
    health.set_defaults(health_command=True)
    token = commands.add_parser("token", help="mint, revoke and list bearer tokens (admin token needed)")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    mint = command("mint", cmd_token_mint, "mint a token; prints the secret alone", False, token_commands)
    mint.add_argument("--role", choices=sorted(_ROLES), required=True, help="what the token may do")
    mint.add_argument("--platform", default=argparse.SUPPRESS, help="its platform (guest, manager; default: default)")
    revoke = command("revoke", cmd_token_revoke, "revoke a token by its id", False, token_commands)
    revoke.add_argument("token_id", metavar="ID", help="the token's id (token list shows them)")
    listing = command("list", cmd_token_list, "list the tokens in force (ids, never secrets)", False, token_commands)
    listing.add_argument("--platform", default=argparse.SUPPRESS, help="only this platform's tokens")
    add_fault_commands(commands, command)
    create = command(
        "create", cmd_create, "create a platform (QEMU-like geometry)", False,
        epilog="Without options: the default platform's geometry, -m 1G,slots=4,maxmem=4G -smp 1,maxcpus=4.\n"
        "Sizes as QEMU writes them: 512M, 1.5G, 4GiB, or bytes.",
    )  # fmt: skip
    create.add_argument("name", help="lower-case letters, digits and dashes")
    create.add_argument("--memory", type=size_argument, metavar="SIZE", help="boot memory, -m SIZE (default 1G)")
    create.add_argument(
        "--max-memory",
        type=size_argument,
        metavar="SIZE",
        help="-m maxmem=SIZE: memory hot-plug reaches up to it (default 4G; --memory + 3G from --memory 4G on)",
    )
    create.add_argument("--slots", type=parse_int, metavar="N", help="-m slots=N: DIMM slots (default 4)")
    create.add_argument("--cpus", type=parse_int, metavar="N", help="-smp N: boot CPU cores (default 1)")
    create.add_argument(
        "--max-cpus",
        type=parse_int,
        metavar="N",
        help="-smp maxcpus=N: CPU hot-plug reaches up to it (default 4, or --cpus if more)",
    )
    create.add_argument("--threads", type=parse_int, metavar="N", help="-smp threads=N: threads per core (default 1)")
    delete = command("delete", cmd_delete, "delete a platform", False)
    delete.add_argument("name", help="the platform")
    connectors = command("connectors", cmd_connectors, "list a platform's connectors")
    connectors.add_argument("--type", choices=sorted(_DRC_TYPES), help="only connectors of this type")
    connectors.add_argument("--attached", action="store_true", help="only connectors with a device")
    command("devices", cmd_devices, "list a platform's devices")
    plug = command("plug", cmd_plug, "hot-plug a device (device_add)")
    kinds = plug.add_subparsers(dest="kind", required=True)
    dimm = kinds.add_parser("dimm", help="a DIMM")
    dimm.add_argument("--size", type=size_argument, required=True, metavar="SIZE",
                      help="a multiple of 256M, as QEMU writes sizes (512M, 1.5G, bytes)")  # fmt: skip
    dimm.add_argument("--slot", type=parse_int, metavar="N", help="the DIMM slot (default: the first free one)")
    dimm.add_argument("--address", type=size_argument, metavar="ADDR",
                      help="guest physical address (default: the first free one)")  # fmt: skip
    nvdimm = kinds.add_parser("nvdimm", help="an NVDIMM (persistent memory)")
    nvdimm.add_argument("--size", type=size_argument, required=True, metavar="SIZE",
                        help="without the label area; a multiple of 256M (256M, 1G, bytes)")  # fmt: skip
    nvdimm.add_argument("--label-size", type=size_argument, default=128 << 10, metavar="SIZE",
                        help="the namespace label area, at least 128K (default 128K)")  # fmt: skip
    nvdimm.add_argument("--uuid", default=None, metavar="UUID",
                        help="the NVDIMM's UUID, its ibm,unit-guid (default: a new random one)")  # fmt: skip
    nvdimm.add_argument("--slot", type=parse_int, metavar="N", help="the memory slot (default: the first free one)")
    nvdimm.add_argument("--address", type=size_argument, metavar="ADDR",
                        help="guest physical address (default: the first free one)")  # fmt: skip
    cpu = kinds.add_parser("cpu", help="a CPU core")
    cpu.add_argument("--core-id", type=parse_int, required=True, metavar="N", help="the core's id (QEMU's core-id)")
    pci = kinds.add_parser("pci", help="a PCI function")
    pci.add_argument("--slot", type=parse_int, required=True, metavar="N", help="the slot on the PHB's bus")
    pci.add_argument("--function", type=parse_int, default=0, metavar="N", help="the function (default 0)")
    pci.add_argument("--phb", type=parse_int, default=0, metavar="N", help="the PHB's index (default 0)")
    pci.add_argument("--model", choices=PCI_MODEL_NAMES, default="e1000", help="the device model (default e1000)")
    phb = kinds.add_parser("phb", help="a PCI host bridge")
    phb.add_argument("--index", type=parse_int, required=True, metavar="N", help="the PHB's index")
    for kind in (dimm, nvdimm, cpu, pci, phb):
        kind.add_argument("--id", help="device id (default: papr-emu picks one)")
        # Also accepted after the device kind; SUPPRESS keeps the plug command's values otherwise.
        add_platform_option(kind, hidden=True)
        add_output_option(kind, hidden=True)
        add_connection_options(kind, hidden=True)
    unplug = command(
        "unplug", cmd_unplug, "request a hot-unplug (device_del); --wait for its outcome",
        epilog=f"Exit status: 0 requested (with --wait: the device is deleted), {EXIT_REJECTED} the guest refused "
        f"the unplug,\n{EXIT_TIMEOUT} no outcome within --timeout (or the server's unplug timeout), 1 any error.",
    )  # fmt: skip
    unplug.add_argument("id", help="the device's id")
    unplug.add_argument("--wait", action="store_true", help="wait until the device is deleted or the guest refuses")
    unplug.add_argument(
        "--timeout", type=seconds_argument, metavar="S", help="with --wait: give up after S seconds (exit 4)"
    )
    watch = command("watch", cmd_watch, "print a platform's events as they happen (-o json: one JSON line each)")
    watch.add_argument("--after", type=parse_sequence, metavar="N",
                       help="replay retained events after this sequence number first")  # fmt: skip
    watch.add_argument("--count", type=parse_int, metavar="N", help="stop after this many events")
    dt = command("dt", cmd_dt, "dump the device tree (DTS through dtc, or the DTB)", output=False)
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


def parse_seed(text: str) -> int:
    """A fault rule's seed (uint64)."""
    return parse_int(text, (1 << 64) - 1)


def signed_int32(text: str) -> int:
    """An RTAS status: decimal or 0x hex, negative too (int32)."""
    try:
        number = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not -(1 << 31) <= number < 1 << 31:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from {-(1 << 31)} to {(1 << 31) - 1}")
    return Given(number, text)


def add_fault_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], command: Callable[..., argparse.ArgumentParser]
) -> None:
    """``fault add|list|clear`` and ``conduct`` (FaultService; a manager's token on a server with tokens)."""
    fault = commands.add_parser("fault", help="add, list and clear a platform's fault rules (firmware that fails)")
    fault_commands = fault.add_subparsers(dest="fault_command", required=True, metavar="{add,list,clear}")
    add = command(
        "add", cmd_fault_add, "add a fault rule: matching RTAS calls answer as real firmware can fail",
        parent=fault_commands,
        epilog="Rules are tried in the order they were added; the first that fires answers the call.\n"
        "The same fields as a config file's [[platform.fault]] table (docs/config.md); see docs/faults.md.\n"
        "Example: papr-emu fault add slow --effect extended-delay --call configure-connector --status 9902 --times 1",
    )  # fmt: skip
    add.add_argument("name", metavar="NAME", help="the rule's name: 1 to 64 letters, digits, '-' or '_'")
    add.add_argument("--effect", choices=list(_FAULT_EFFECTS), required=True, metavar="EFFECT",
                     help=f"what a firing rule does: {', '.join(_FAULT_EFFECTS)}")  # fmt: skip
    add.add_argument("--call", choices=list(_FAULT_CALLS), metavar="CALL",
                     help=f"only this call, one the effect is allowed on (default: each it is allowed on): "
                     f"{', '.join(_FAULT_CALLS)}")  # fmt: skip
    add.add_argument("--drc-index", type=parse_int, default=0, metavar="INDEX",
                     help="only calls on (or logs about) this connector, e.g. 0x80000004")  # fmt: skip
    add.add_argument("--drc-type", choices=sorted(_DRC_TYPES), help="only connectors of this type")
    add.add_argument("--device-id", default="", metavar="ID", help="only connectors (or logs) of this device")
    add.add_argument("--status", type=signed_int32, default=0, metavar="N",
                     help="extended-delay: 9900..9905 (default 9901); refuse-hot-add: a negative status "
                     "(default -9005); others: fixed")  # fmt: skip
    add.add_argument("--times", type=parse_int, default=0, metavar="N",
                     help="fire on this many matching calls, then never again (default 0: no limit)")  # fmt: skip
    add.add_argument("--probability", type=float, metavar="P",
                     help="fire on each matching call with this probability, in (0, 1] (default 1)")  # fmt: skip
    add.add_argument("--seed", type=parse_seed, default=0, metavar="N",
                     help="the rule's random seed: same seed, same calls, same firings (default 0)")  # fmt: skip
    command("list", cmd_fault_list, "list the fault rules, how many calls each matched and how often it fired",
            parent=fault_commands, epilog="-: any (a match field), no limit (TIMES).")  # fmt: skip
    clear = command("clear", cmd_fault_clear, "remove the named fault rules, or all of them", parent=fault_commands)
    clear.add_argument("names", nargs="*", metavar="NAME",
                       help="a rule to remove (repeatable; none: all); an unknown name removes nothing")  # fmt: skip
    conduct = command(
        "conduct", cmd_conduct, "the guest's conduct report: each call that broke a LoPAR requirement",
        epilog="--watch prints one line per finding, #SEQUENCE first (-o json: one JSON line each), until Ctrl-C.",
    )  # fmt: skip
    conduct.add_argument("--watch", action="store_true",
                         help="follow the findings as they are made (the retained ones first)")  # fmt: skip
    conduct.add_argument("--after", type=parse_sequence, metavar="N",
                         help="with --watch: only findings after this event sequence number")  # fmt: skip
    conduct.add_argument("--count", type=parse_int, metavar="N", help="with --watch: stop after this many findings")


_CONNECTION_OPTIONS = (
    ("--ca", "PEM", f"TLS: the CA of the server's certificate (default: ${CA_VARIABLE}; none: plain text)"),
    ("--cert", "PEM", f"mTLS: this client's certificate (default: ${CERT_VARIABLE})"),
    ("--key", "PEM", f"mTLS: the key of --cert (default: ${KEY_VARIABLE})"),
    ("--token", "TOKEN", f"bearer token (default: ${TOKEN_VARIABLE}, which, unlike an option, ps does not show)"),
    ("--server-name", "NAME", f"the name the server's certificate must have (default: ${SERVER_NAME_VARIABLE})"),
)


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """The options every client command takes, on the ``papr-emu`` parser itself: given before the command.

    Each command accepts them after its name too (without overriding a value given before).
    """
    group = parser.add_argument_group("client options (before or after a command)")
    add_connection_options(group, before=True)  # type: ignore[arg-type]
    add_platform_option(group, before=True)  # type: ignore[arg-type]
    add_output_option(group, before=True)  # type: ignore[arg-type]


def add_platform_option(parser: argparse.ArgumentParser, hidden: bool = False, before: bool = False) -> None:
    parser.add_argument(
        "--platform", default=None if before else argparse.SUPPRESS,
        help=argparse.SUPPRESS if hidden else "platform name (default: default)",
    )  # fmt: skip


def add_output_option(parser: argparse.ArgumentParser, hidden: bool = False, before: bool = False) -> None:
    parser.add_argument(
        "-o", "--output", choices=("text", "json"), default="text" if before else argparse.SUPPRESS,
        help=argparse.SUPPRESS if hidden else "text (default) or json, for scripts",
    )  # fmt: skip


def add_connection_options(parser: argparse.ArgumentParser, hidden: bool = False, before: bool = False) -> None:
    """``--server`` and the TLS and token options (each defaulting to its ``PAPR_EMU_*`` variable).

    ``before``: on the ``papr-emu`` parser, where they hold the defaults. Otherwise on a command
    (``hidden``: a sub-command such as ``plug dimm``, without help), where they override the
    value given before the command only when given.
    """
    default: Any = None if before else argparse.SUPPRESS
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
    if getattr(options, "default_platform", False) and options.platform is None:
        options.platform = "default"
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
        print(as_given(f"papr-emu: {error.code().name}: {error.details()}", options), file=err)
        return 1
    except (CliError, OSError) as error:
        print(as_given(f"papr-emu: {error}", options), file=err)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()
