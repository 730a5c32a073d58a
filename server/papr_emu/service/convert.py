"""Conversions between the platform model and the papr.v1 messages.

Every malformed field becomes an InvalidArgument naming it, so the services
stay thin: convert, call the model, convert back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from papr.v1 import connector_pb2, device_pb2, guest_pb2, hotplug_pb2, platform_pb2

from ..model import (
    CasOptions,
    ConnectorInfo,
    CpuCoreParams,
    DeviceAdded,
    DeviceDeleted,
    DeviceInfo,
    DeviceType,
    DimmParams,
    DimmRequest,
    DrcType,
    Event,
    Geometry,
    InvalidArgument,
    MemoryAction,
    MemoryModel,
    MemoryOutcome,
    MemoryRequestFinished,
    NvdimmParams,
    NvdimmRequest,
    PciFunctionParams,
    PciModel,
    PhbParams,
    PlatformInfo,
    PlugRequest,
    RefusalSignal,
    UnplugRejected,
    UnplugRequested,
    UnplugTimedOut,
    UnplugTimeouts,
    drc_type_by_shift,
    timeout_key,
)
from ..model.devices import device_class_for
from ..model.events import ConductFindingEvent, FaultFired
from ..model.rtas_log import HP_ID_DRC_COUNT, HP_ID_DRC_COUNT_INDEXED, HP_ID_DRC_INDEX
from .faults import fault_fired_to_pb, finding_to_pb

_DEVICE_TYPE_TO_PB: dict[DeviceType, device_pb2.DeviceType.ValueType] = {
    DeviceType.DIMM: device_pb2.DEVICE_TYPE_DIMM,
    DeviceType.CPU_CORE: device_pb2.DEVICE_TYPE_CPU_CORE,
    DeviceType.PCI_FUNCTION: device_pb2.DEVICE_TYPE_PCI_FUNCTION,
    DeviceType.PHB: device_pb2.DEVICE_TYPE_PHB,
    DeviceType.NVDIMM: device_pb2.DEVICE_TYPE_NVDIMM,
}
_DEVICE_TYPE_FROM_PB: dict[int, DeviceType] = {v: k for k, v in _DEVICE_TYPE_TO_PB.items()}
_PCI_MODEL_TO_PB = {
    PciModel.E1000: device_pb2.PCI_MODEL_E1000,
    PciModel.VIRTIO_NET: device_pb2.PCI_MODEL_VIRTIO_NET,
}
_PCI_MODEL_FROM_PB = {v: k for k, v in _PCI_MODEL_TO_PB.items()}


def drc_type_from_pb(value: int, field: str = "type") -> DrcType | None:
    """DRC_TYPE_UNSPECIFIED -> None (all types)."""
    if value == connector_pb2.DRC_TYPE_UNSPECIFIED:
        return None
    drc_type = drc_type_by_shift(value)  # DrcType values are the type shifts
    if drc_type is None:
        raise InvalidArgument(field, value, "unknown DrcType")
    return drc_type


def device_type_from_pb(value: int, field: str = "type") -> DeviceType | None:
    if value == device_pb2.DEVICE_TYPE_UNSPECIFIED:
        return None
    device_type = _DEVICE_TYPE_FROM_PB.get(value)
    if device_type is None:
        raise InvalidArgument(field, value, "unknown DeviceType")
    return device_type


def geometry_from_pb(message: platform_pb2.Geometry) -> Geometry:
    def opt(name: str) -> int | None:
        return int(getattr(message, name)) if message.HasField(name) else None  # type: ignore[arg-type]

    if message.memory_model and message.memory_model not in _MEMORY_MODEL_FROM_PB:
        raise InvalidArgument(
            "geometry.memory_model", message.memory_model, "must be MEMORY_MODEL_DIMM or MEMORY_MODEL_LMB"
        )
    return Geometry.build(
        memory=opt("memory_bytes"),
        max_memory=opt("max_memory_bytes"),
        slots=opt("memory_slots"),
        cpus=opt("cpus"),
        max_cpus=opt("max_cpus"),
        threads=opt("threads_per_core"),
        memory_model=_MEMORY_MODEL_FROM_PB.get(message.memory_model),
    )


_MEMORY_MODEL_TO_PB = {MemoryModel.DIMM: platform_pb2.MEMORY_MODEL_DIMM, MemoryModel.LMB: platform_pb2.MEMORY_MODEL_LMB}
_MEMORY_MODEL_FROM_PB = {v: k for k, v in _MEMORY_MODEL_TO_PB.items()}  # UNSPECIFIED: absent, the default
_MEMORY_ACTION_TO_PB = {
    MemoryAction.ADD: hotplug_pb2.MEMORY_ACTION_ADD,
    MemoryAction.REMOVE: hotplug_pb2.MEMORY_ACTION_REMOVE,
}
_MEMORY_ACTION_FROM_PB = {v: k for k, v in _MEMORY_ACTION_TO_PB.items()}
_MEMORY_OUTCOME_TO_PB = {
    MemoryOutcome.COMPLETED: hotplug_pb2.MEMORY_OUTCOME_COMPLETED,
    MemoryOutcome.REFUSED: hotplug_pb2.MEMORY_OUTCOME_REFUSED,
    MemoryOutcome.CANCELLED: hotplug_pb2.MEMORY_OUTCOME_CANCELLED,
}


def memory_request_from_pb(request: hotplug_pb2.RequestMemoryRequest) -> tuple[MemoryAction, int, int, int]:
    """(action, hotplug-log identifier type, count, first DRC index) of a RequestMemory call."""
    action = _MEMORY_ACTION_FROM_PB.get(request.action)
    if action is None:
        raise InvalidArgument("action", request.action, "must be MEMORY_ACTION_ADD or MEMORY_ACTION_REMOVE")
    target = request.WhichOneof("target")
    if target == "count":
        return action, HP_ID_DRC_COUNT, request.count, 0
    if target == "drc_index":
        return action, HP_ID_DRC_INDEX, 1, request.drc_index
    if target == "indexed_count":
        if request.indexed_count.count < 1:
            raise InvalidArgument("indexed_count.count", request.indexed_count.count, "must be at least 1")
        return action, HP_ID_DRC_COUNT_INDEXED, request.indexed_count.count, request.indexed_count.first_drc_index
    raise InvalidArgument("target", "", "must set one of count, drc_index, indexed_count")


#: The UnplugTimeouts field of each device type.
_TIMEOUT_FIELDS: dict[DeviceType, str] = {
    DeviceType.CPU_CORE: "cpu_core_seconds",
    DeviceType.DIMM: "dimm_seconds",
    DeviceType.PCI_FUNCTION: "pci_function_seconds",
    DeviceType.PHB: "phb_seconds",
    DeviceType.NVDIMM: "nvdimm_seconds",
}


def unplug_timeouts_from_pb(message: platform_pb2.UnplugTimeouts) -> UnplugTimeouts:
    seconds = {
        timeout_key(device_type): float(getattr(message, field))
        for device_type, field in _TIMEOUT_FIELDS.items()
        if message.HasField(field)  # type: ignore[arg-type]
    }
    try:
        return UnplugTimeouts(**seconds)
    except InvalidArgument as error:  # name the message's field, not the model's keyword
        field = next(f for t, f in _TIMEOUT_FIELDS.items() if timeout_key(t) == error.field)
        raise InvalidArgument(f"unplug_timeouts.{field}", error.value, error.reason) from None


def unplug_timeouts_to_pb(timeouts: UnplugTimeouts) -> platform_pb2.UnplugTimeouts:
    return platform_pb2.UnplugTimeouts(**{field: timeouts.for_type(t) for t, field in _TIMEOUT_FIELDS.items()})


def geometry_to_pb(geometry: Geometry) -> platform_pb2.Geometry:
    return platform_pb2.Geometry(
        memory_bytes=geometry.memory,
        max_memory_bytes=geometry.max_memory,
        memory_slots=geometry.slots,
        cpus=geometry.cpus,
        max_cpus=geometry.max_cpus,
        threads_per_core=geometry.threads,
        memory_model=_MEMORY_MODEL_TO_PB[geometry.memory_model],
    )


def plug_request_from_pb(spec: device_pb2.DeviceSpec, field: str = "spec") -> PlugRequest:
    kind = spec.WhichOneof("kind")
    if kind == "dimm":
        dimm = spec.dimm
        return DimmRequest(
            size=dimm.size_bytes,
            slot=dimm.slot if dimm.HasField("slot") else None,
            address=dimm.address if dimm.HasField("address") else None,
        )
    if kind == "cpu_core":
        return CpuCoreParams(spec.cpu_core.core_id)
    if kind == "pci_function":
        pci = spec.pci_function
        model = _PCI_MODEL_FROM_PB.get(pci.model)
        if model is None:
            raise InvalidArgument(
                f"{field}.pci_function.model", pci.model, "must be PCI_MODEL_E1000 or PCI_MODEL_VIRTIO_NET"
            )
        return PciFunctionParams(pci.phb_index, pci.slot, pci.function, model)
    if kind == "phb":
        return PhbParams(spec.phb.index)
    if kind == "nvdimm":
        nvdimm = spec.nvdimm
        return NvdimmRequest(
            size=nvdimm.size_bytes,
            label_size=nvdimm.label_size_bytes if nvdimm.HasField("label_size_bytes") else None,
            uuid=nvdimm.uuid,
            slot=nvdimm.slot if nvdimm.HasField("slot") else None,
            address=nvdimm.address if nvdimm.HasField("address") else None,
        )
    raise InvalidArgument(field, "", "must set one of dimm, cpu_core, pci_function, phb, nvdimm")


def plug_request_to_pb(request: PlugRequest) -> device_pb2.DeviceSpec:
    """A plug request (a config file's boot device) as the DeviceSpec that makes it; unset stays unset."""
    if isinstance(request, DimmRequest):
        return _dimm_spec(request)  # a request's unset slot and address stay unset
    if isinstance(request, NvdimmRequest):
        return _nvdimm_spec(request)
    # The other types' requests are their parameters, with nothing left to resolve.
    return _SPEC_TO_PB[device_class_for(request).type](request)


def _dimm_spec(params: DimmParams | DimmRequest) -> device_pb2.DeviceSpec:
    return device_pb2.DeviceSpec(
        dimm=device_pb2.DimmSpec(size_bytes=params.size, slot=params.slot, address=params.address)
    )


def _cpu_core_spec(params: CpuCoreParams) -> device_pb2.DeviceSpec:
    return device_pb2.DeviceSpec(cpu_core=device_pb2.CpuCoreSpec(core_id=params.core_id))


def _pci_function_spec(params: PciFunctionParams) -> device_pb2.DeviceSpec:
    return device_pb2.DeviceSpec(
        pci_function=device_pb2.PciFunctionSpec(
            phb_index=params.phb_index, slot=params.slot, function=params.function,
            model=_PCI_MODEL_TO_PB[params.model],
        )
    )  # fmt: skip


def _phb_spec(params: PhbParams) -> device_pb2.DeviceSpec:
    return device_pb2.DeviceSpec(phb=device_pb2.PhbSpec(index=params.index))


def _nvdimm_spec(params: NvdimmParams | NvdimmRequest) -> device_pb2.DeviceSpec:
    return device_pb2.DeviceSpec(
        nvdimm=device_pb2.NvdimmSpec(
            size_bytes=params.size, label_size_bytes=params.label_size, uuid=params.uuid,
            slot=params.slot, address=params.address,
        )
    )  # fmt: skip


#: Each device type's parameters as its DeviceSpec oneof member.
_SPEC_TO_PB: dict[DeviceType, Callable[[Any], device_pb2.DeviceSpec]] = {
    DeviceType.DIMM: _dimm_spec,
    DeviceType.CPU_CORE: _cpu_core_spec,
    DeviceType.PCI_FUNCTION: _pci_function_spec,
    DeviceType.PHB: _phb_spec,
    DeviceType.NVDIMM: _nvdimm_spec,
}


def device_spec_to_pb(info: DeviceInfo) -> device_pb2.DeviceSpec:
    return _SPEC_TO_PB[info.type](info.params)


def device_to_pb(info: DeviceInfo) -> device_pb2.Device:
    return device_pb2.Device(
        id=info.id,
        type=_DEVICE_TYPE_TO_PB[info.type],
        spec=device_spec_to_pb(info),
        drc_indexes=info.drc_indexes,
        hotplugged=info.hotplugged,
        unplug_pending=info.unplug_pending,
    )


def connector_to_pb(info: ConnectorInfo) -> connector_pb2.Connector:
    return connector_pb2.Connector(
        index=info.index,
        name=info.name,
        type=connector_pb2.DrcType.ValueType(info.type.type_shift),  # DrcType values are the type shifts
        type_name=info.type.type_string,
        physical=info.type.physical,
        state=connector_pb2.DrcState.ValueType(info.state),  # DrcState values are QEMU's numbers
        entity_sense=info.entity_sense,
        device_id=info.device_id,
        unplug_pending=info.unplug_pending,
        power_domain=info.power_domain,
        dr_indicator=info.dr_indicator,
        parent_path=info.parent_path,
        configure_in_progress=info.configure_in_progress,
    )


def options_to_pb(options: CasOptions) -> guest_pb2.NegotiatedOptions:
    return guest_pb2.NegotiatedOptions(
        negotiated=options.negotiated,
        hotplug_events=options.hotplug_events,
        drconf_memory=options.drconf_memory,
        dynamic_memory_v2=options.dynamic_memory_v2,
        drc_info=options.drc_info,
        option_vector_5=options.vector,
    )


def platform_to_pb(info: PlatformInfo) -> platform_pb2.Platform:
    return platform_pb2.Platform(
        name=info.name,
        geometry=geometry_to_pb(info.geometry),
        connector_counts=[
            platform_pb2.ConnectorCount(type=connector_pb2.DrcType.ValueType(t.type_shift), count=n)
            for t, n in info.connector_counts
        ],
        connector_total=sum(n for _, n in info.connector_counts),
        device_count=info.device_count,
        last_event_sequence=info.last_event_sequence,
        device_memory_base=info.geometry.device_memory_base,
        unplug_timeouts=unplug_timeouts_to_pb(info.unplug_timeouts),
        pending_rtas_events=info.pending_rtas_events,
        options=options_to_pb(info.options),
    )


def event_to_pb(event: Event) -> hotplug_pb2.Event:
    time = Timestamp()
    time.FromNanoseconds(int(event.time * 1e9))
    message = hotplug_pb2.Event(
        sequence=event.sequence, platform=event.platform, time=time, incarnation=event.incarnation
    )
    body = event.body
    if isinstance(body, DeviceAdded):
        message.device_added.device.CopyFrom(device_to_pb(body.device))
    elif isinstance(body, UnplugRequested):
        message.unplug_requested.CopyFrom(
            hotplug_pb2.UnplugRequested(
                device_id=body.device_id,
                device_type=_DEVICE_TYPE_TO_PB[body.device_type],
                drc_indexes=body.drc_indexes,
            )
        )
    elif isinstance(body, DeviceDeleted):
        message.device_deleted.CopyFrom(
            hotplug_pb2.DeviceDeleted(
                device_id=body.device_id,
                device_type=_DEVICE_TYPE_TO_PB[body.device_type],
                drc_indexes=body.drc_indexes,
                released_by_drc_index=body.released_by_drc_index,
            )
        )
    elif isinstance(body, UnplugRejected):
        message.unplug_rejected.CopyFrom(
            hotplug_pb2.UnplugRejected(
                device_id=body.device_id,
                device_type=_DEVICE_TYPE_TO_PB[body.device_type],
                signal=_SIGNAL_TO_PB[body.signal],
                drc_index=body.drc_index,
            )
        )
    elif isinstance(body, MemoryRequestFinished):
        message.memory_request_finished.CopyFrom(
            hotplug_pb2.MemoryRequestFinished(
                request_id=body.request_id,
                action=_MEMORY_ACTION_TO_PB[body.action],
                id_type=body.id_type,
                first_drc_index=body.first_index,
                count=body.count,
                outcome=_MEMORY_OUTCOME_TO_PB[body.outcome],
                lmbs_changed=body.lmbs_changed,
                signal=_SIGNAL_TO_PB[body.signal] if body.signal else hotplug_pb2.REFUSAL_SIGNAL_UNSPECIFIED,
                drc_index=body.drc_index,
            )
        )
    elif isinstance(body, FaultFired):
        message.fault_fired.CopyFrom(fault_fired_to_pb(body))
    elif isinstance(body, ConductFindingEvent):
        message.conduct_finding.CopyFrom(finding_to_pb(body.finding))
    elif isinstance(body, UnplugTimedOut):
        message.unplug_timed_out.CopyFrom(
            hotplug_pb2.UnplugTimedOut(
                device_id=body.device_id,
                device_type=_DEVICE_TYPE_TO_PB[body.device_type],
                timeout_seconds=body.timeout_seconds,
            )
        )
    return message


_SIGNAL_TO_PB = {
    RefusalSignal.CONFIGURE_CONNECTOR: hotplug_pb2.REFUSAL_SIGNAL_CONFIGURE_CONNECTOR,
    RefusalSignal.UNISOLATE: hotplug_pb2.REFUSAL_SIGNAL_UNISOLATE,
}
