"""The papr-emu side: a fresh platform on a running server, driven through the public gRPC API only.

RTAS calls of the usual shape go through the typed RPCs (SetIndicator, GetSensorState,
ConfigureConnector, ...); calls with another shape (a wrong nargs or nret, a call outside
dynamic reconfiguration) through ``RtasService.Call`` with the token the platform's
``/rtas`` node advertises, as a guest's ``rtas_call()`` would. Management events come from
``HotplugService.WatchEvents`` and are mapped to the QMP events QEMU sends:

* ``device_deleted`` -> DEVICE_DELETED
* ``unplug_rejected`` -> DEVICE_UNPLUG_GUEST_ERROR, preceded by MEM_UNPLUG_ERROR for a DIMM
  (QEMU's order); QEMU's second DEVICE_UNPLUG_GUEST_ERROR for a DIMM refused by unisolate
  is docs/compat.md #3
* ``unplug_timed_out`` -> UNPLUG_TIMED_OUT (no QMP counterpart: QEMU has no timeouts, compat #10)
* ``device_added``, ``unplug_requested``: QEMU sends no event for these; not part of the trace.
"""

from __future__ import annotations

import itertools
import os
import struct
from typing import Any

import grpc

from papr.v1 import device_pb2, hotplug_pb2, platform_pb2, rtas_pb2
from papr_emu_client.connect import Client
from papr_emu_client.fdt import nodes_by_path, read_dtb
from papr_emu_client.pci import pci_model

from .scenario import CpuCoreSpec, DimmSpec, NvdimmSpec, PciSpec, Plug, Scenario, Unplug
from .side import BUF_ADDR, Outcome, Side, SideFailure, new_work_area

_names = itertools.count()


class PaprSide(Side):
    """A papr-emu platform created for one scenario (and deleted after it)."""

    name = "papr"

    def __init__(self, scenario: Scenario, client: Client, platform: str | None = None) -> None:
        super().__init__(scenario)
        self.client = client
        self.platform = platform or f"conf-{os.getpid()}-{next(_names)}"
        self._seen = 0
        self._tokens: dict[str, int] = {}
        self._work_area = new_work_area(0)

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        g = self.scenario.geometry
        geometry = platform_pb2.Geometry(
            memory_bytes=g.memory, max_memory_bytes=g.max_memory, memory_slots=g.slots, cpus=g.cpus, max_cpus=g.max_cpus
        )
        created = self.client.platforms.CreatePlatform(
            platform_pb2.CreatePlatformRequest(name=self.platform, geometry=geometry)
        ).platform
        self._seen = created.last_event_sequence  # coldplug device_added events: not part of the trace
        return {"platform": self.platform, "geometry": " ".join(g.qemu_args())}

    def stop(self) -> None:
        try:
            self.client.platforms.DeletePlatform(platform_pb2.DeletePlatformRequest(platform=self.platform))
        except grpc.RpcError:
            pass

    # ---- hotplug ------------------------------------------------------------------------

    def plug(self, step: Plug) -> Outcome:
        spec = step.spec
        if isinstance(spec, DimmSpec):
            dimm = device_pb2.DimmSpec(size_bytes=spec.size)
            if spec.slot is not None:
                dimm.slot = spec.slot
            if spec.address is not None:
                dimm.address = spec.address
            device_spec = device_pb2.DeviceSpec(dimm=dimm)
        elif isinstance(spec, CpuCoreSpec):
            device_spec = device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=spec.core_id))
        elif isinstance(spec, PciSpec):
            device_spec = device_pb2.DeviceSpec(
                pci_function=device_pb2.PciFunctionSpec(
                    phb_index=spec.phb, slot=spec.slot, function=spec.function, model=pci_model(spec.model)
                )
            )
        elif isinstance(spec, NvdimmSpec):
            nvdimm = device_pb2.NvdimmSpec(size_bytes=spec.size, label_size_bytes=spec.label_size, uuid=spec.uuid)
            if spec.slot is not None:
                nvdimm.slot = spec.slot
            if spec.address is not None:
                nvdimm.address = spec.address
            device_spec = device_pb2.DeviceSpec(nvdimm=nvdimm)
        else:
            device_spec = device_pb2.DeviceSpec(phb=device_pb2.PhbSpec(index=spec.index))
        request = hotplug_pb2.PlugDeviceRequest(
            platform=self.platform, id=self.scenario.device_id(step.device_id, self.name), spec=device_spec
        )
        try:
            device = self.client.hotplug.PlugDevice(request).device
        except grpc.RpcError as error:
            return _failed(error)
        return Outcome(True, drc_indexes=tuple(device.drc_indexes))

    def unplug(self, step: Unplug) -> Outcome:
        request = hotplug_pb2.UnplugDeviceRequest(
            platform=self.platform, id=self.scenario.device_id(step.device_id, self.name)
        )
        try:
            self.client.hotplug.UnplugDevice(request)
        except grpc.RpcError as error:
            return _failed(error)
        return Outcome(True)

    # ---- RTAS ---------------------------------------------------------------------------

    def call(self, name: str, args: list[int], nret: int) -> list[int]:
        p = self.platform
        rtas = self.client.rtas
        shape = (name, len(args), nret)
        try:
            if shape == ("set-indicator", 3, 1):
                reply = rtas.SetIndicator(
                    rtas_pb2.SetIndicatorRequest(
                        platform=p, indicator_type=args[0], indicator_index=args[1], new_state=args[2]
                    )
                )
                return [reply.status]
            if shape == ("get-sensor-state", 2, 2):
                sense = rtas.GetSensorState(
                    rtas_pb2.GetSensorStateRequest(platform=p, sensor_type=args[0], sensor_index=args[1])
                )
                return [sense.status, sense.state]
            if shape == ("set-power-level", 2, 2):
                set_level = rtas.SetPowerLevel(
                    rtas_pb2.SetPowerLevelRequest(platform=p, power_domain=_signed(args[0]), level=args[1])
                )
                return [set_level.status, set_level.level]
            if shape == ("get-power-level", 1, 2):
                get_level = rtas.GetPowerLevel(rtas_pb2.GetPowerLevelRequest(platform=p, power_domain=_signed(args[0])))
                return [get_level.status, get_level.level]
            if shape == ("event-scan", 4, 1):
                scan = rtas.EventScan(
                    rtas_pb2.EventScanRequest(platform=p, event_mask=args[0], critical=args[1], buffer_length=args[3])
                )
                return [scan.status]
            # Any other shape points at no buffer the call would use: the raw ABI, no buffers.
            raw = rtas.Call(
                rtas_pb2.CallRequest(platform=p, token=self._token(name), nargs=len(args), nret=nret, args=args)
            )
            return list(raw.rets)
        except grpc.RpcError as error:
            raise SideFailure("grpc-error", f"{name}: {error.code().name}: {error.details()}") from error

    def _token(self, name: str) -> int:
        """The call's token from the platform's /rtas node, as a guest finds it."""
        if not self._tokens:
            rtas_node = nodes_by_path(read_dtb(self.client.device_tree(self.platform))).get("/rtas", {})
            self._tokens = {k: struct.unpack(">I", v)[0] for k, v in rtas_node.items() if len(v) == 4}
        token = self._tokens.get(name)
        if token is None:
            raise SideFailure("grpc-error", f"/rtas has no token for {name!r}")
        return token

    def reset_work_area(self, index: int) -> None:
        self._work_area = new_work_area(index)

    def configure_call(self, extent: int) -> tuple[int, bytes]:
        try:
            reply = self.client.rtas.ConfigureConnector(
                rtas_pb2.ConfigureConnectorRequest(
                    platform=self.platform, work_area=self._work_area, memory_extent=extent
                )
            )
        except grpc.RpcError as error:
            raise SideFailure("grpc-error", f"configure-connector: {error.code().name}: {error.details()}") from error
        self._work_area = reply.work_area
        return reply.status, reply.work_area

    def check_exception_call(self, args: list[int]) -> tuple[int, bytes, int]:
        # The gRPC API hands back only the buffer: nothing can be written past it.
        try:
            if len(args) == 6:
                reply = self.client.rtas.CheckException(
                    rtas_pb2.CheckExceptionRequest(
                        platform=self.platform,
                        vector_offset=args[0],
                        additional_info=args[1],
                        event_mask=args[2],
                        critical=args[3],
                        buffer_length=args[5],
                    )
                )
                return reply.status, reply.buffer, 0
            buffer = rtas_pb2.GuestBuffer(address=BUF_ADDR, data=bytes(args[5]))
            raw = self.client.rtas.Call(
                rtas_pb2.CallRequest(
                    platform=self.platform,
                    token=self._token("check-exception"),
                    nargs=len(args),
                    nret=1,
                    args=args,
                    buffers=[buffer],
                )
            )
        except grpc.RpcError as error:
            raise SideFailure("grpc-error", f"check-exception: {error.code().name}: {error.details()}") from error
        status = raw.rets[0]
        data = raw.buffers[0].data if raw.buffers else b""
        if status != 0 or len(data) < 8:
            return status, data if status == 0 else b"", 0
        return status, data[: 8 + struct.unpack_from(">I", data, 4)[0]], 0

    def device_tree(self) -> bytes:
        return self.client.device_tree(self.platform)

    # ---- events -------------------------------------------------------------------------

    def take_events(self, flush: bool) -> list[str]:
        info = self.client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=self.platform)).platform
        wanted = info.last_event_sequence - self._seen
        if wanted <= 0:
            return []
        stream = self.client.hotplug.WatchEvents(
            hotplug_pb2.WatchEventsRequest(platform=self.platform, after_sequence=self._seen)
        )
        events: list[str] = []
        try:
            for response in stream:
                event = response.event
                self._seen = event.sequence
                events.extend(self._qmp_events(event))
                if self._seen >= info.last_event_sequence:
                    break
        finally:
            stream.cancel()
        return events

    def _qmp_events(self, event: hotplug_pb2.Event) -> list[str]:
        kind = event.WhichOneof("kind")
        if kind == "device_deleted":
            return [f"DEVICE_DELETED:{self.alias_of(event.device_deleted.device_id)}"]
        if kind == "unplug_rejected":
            rejected = event.unplug_rejected
            alias = self.alias_of(rejected.device_id)
            mem = [f"MEM_UNPLUG_ERROR:{alias}"] if rejected.device_type == device_pb2.DEVICE_TYPE_DIMM else []
            return [*mem, f"DEVICE_UNPLUG_GUEST_ERROR:{alias}"]
        if kind == "unplug_timed_out":
            return [f"UNPLUG_TIMED_OUT:{self.alias_of(event.unplug_timed_out.device_id)}"]
        return []


def _failed(error: grpc.RpcError) -> Outcome:
    kind = "not-found" if error.code() == grpc.StatusCode.NOT_FOUND else "refused"
    return Outcome(False, kind, f"{error.code().name}: {error.details()}")


def _signed(cell: int) -> int:
    return cell - (1 << 32) if cell & 0x8000_0000 else cell
