"""Guest-side RTAS sequences, as the Linux pseries DLPAR code makes them.

Example::

    guest = Guest(connect().rtas, "default")
    guest.acquire_drc(0x80000004)           # sense 2 -> usable -> unisolate
    node = guest.configure_connector(0x80000004)
    guest.release_drc(0x80000004)           # sense 1 -> isolate -> unusable
"""

from __future__ import annotations

from papr.v1 import rtas_pb2, rtas_pb2_grpc

from .workarea import (
    COMPLETE,
    NEXT_CHILD,
    NEXT_PROPERTY,
    NEXT_SIBLING,
    PREVIOUS_PARENT,
    CcItem,
    DtNode,
    new_work_area,
    read_item,
)

ISOLATION_STATE, DR_INDICATOR, ALLOCATION_STATE, DR_ENTITY_SENSE = 9001, 9002, 9003, 9003
ISOLATE, UNISOLATE = 0, 1
UNUSABLE, USABLE = 0, 1
SENSE_EMPTY, SENSE_PRESENT, SENSE_UNUSABLE = 0, 1, 2


class RtasError(Exception):
    """An RTAS call in a guest sequence returned an unexpected status."""

    def __init__(self, call: str, drc_index: int, status: int) -> None:
        super().__init__(f"{call} on {drc_index:#x} returned {status}")
        self.call, self.drc_index, self.status = call, drc_index, status


class Guest:
    """RTAS helpers of a guest on one platform (the kernel's dlpar_* helpers)."""

    def __init__(self, rtas: rtas_pb2_grpc.RtasServiceStub, platform: str) -> None:
        self.rtas = rtas
        self.platform = platform

    def sense(self, drc_index: int) -> tuple[int, int]:
        reply = self.rtas.GetSensorState(
            rtas_pb2.GetSensorStateRequest(platform=self.platform, sensor_type=DR_ENTITY_SENSE, sensor_index=drc_index)
        )
        return reply.status, reply.state

    def set_indicator(self, indicator: int, drc_index: int, value: int) -> int:
        reply = self.rtas.SetIndicator(
            rtas_pb2.SetIndicatorRequest(
                platform=self.platform, indicator_type=indicator, indicator_index=drc_index, new_state=value
            )
        )
        return int(reply.status)

    def configure_step(self, area: bytes) -> tuple[int, bytes]:
        reply = self.rtas.ConfigureConnector(rtas_pb2.ConfigureConnectorRequest(platform=self.platform, work_area=area))
        return reply.status, reply.work_area

    def acquire_drc(self, drc_index: int) -> None:
        """dlpar_acquire_drc: sense must be 2; allocation usable; unisolate (undo on failure)."""
        status, state = self.sense(drc_index)
        if status != 0 or state != SENSE_UNUSABLE:
            raise RtasError("get-sensor-state", drc_index, status if status else -state)
        status = self.set_indicator(ALLOCATION_STATE, drc_index, USABLE)
        if status:
            raise RtasError("set-indicator(allocation usable)", drc_index, status)
        status = self.set_indicator(ISOLATION_STATE, drc_index, UNISOLATE)
        if status:
            self.set_indicator(ALLOCATION_STATE, drc_index, UNUSABLE)
            raise RtasError("set-indicator(unisolate)", drc_index, status)

    def release_drc(self, drc_index: int) -> None:
        """dlpar_release_drc: sense must be 1; isolate; allocation unusable (re-unisolate on failure)."""
        status, state = self.sense(drc_index)
        if status != 0 or state != SENSE_PRESENT:
            raise RtasError("get-sensor-state", drc_index, status if status else -state)
        status = self.set_indicator(ISOLATION_STATE, drc_index, ISOLATE)
        if status:
            raise RtasError("set-indicator(isolate)", drc_index, status)
        status = self.set_indicator(ALLOCATION_STATE, drc_index, UNUSABLE)
        if status:
            self.set_indicator(ISOLATION_STATE, drc_index, UNISOLATE)
            raise RtasError("set-indicator(allocation unusable)", drc_index, status)

    def configure_items(self, drc_index: int, max_calls: int = 100_000) -> list[CcItem]:
        """Call configure-connector until it completes; every item, in order."""
        area = new_work_area(drc_index)
        items: list[CcItem] = []
        for _ in range(max_calls):
            status, area = self.configure_step(area)
            item = read_item(status, area)
            items.append(item)
            if status == COMPLETE:
                return items
            if status not in (NEXT_SIBLING, NEXT_CHILD, NEXT_PROPERTY, PREVIOUS_PARENT):
                raise RtasError("ibm,configure-connector", drc_index, status)
        raise RtasError("ibm,configure-connector (no completion)", drc_index, -1)

    def configure_connector(self, drc_index: int) -> DtNode:
        """dlpar_configure_connector: build the node tree from the sequence."""
        root: DtNode | None = None
        stack: list[DtNode] = []
        last: DtNode | None = None
        for item in self.configure_items(drc_index):
            if item.status == NEXT_CHILD:
                node = DtNode(item.name)
                if stack:
                    stack[-1].children.append(node)
                else:
                    root = node
                stack.append(node)
                last = node
            elif item.status == NEXT_SIBLING:
                node = DtNode(item.name)
                stack.pop()
                if stack:
                    stack[-1].children.append(node)
                stack.append(node)
                last = node
            elif item.status == NEXT_PROPERTY:
                assert last is not None
                last.properties[item.name] = item.value
                last.property_order.append(item.name)
            elif item.status == PREVIOUS_PARENT:
                stack.pop()
                last = stack[-1] if stack else None
        assert root is not None
        return root
