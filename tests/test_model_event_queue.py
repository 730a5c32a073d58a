"""The RTAS event-log queue, in-process: one FIFO across event classes, whatever its inner layout."""

from __future__ import annotations

from papr_emu.model.rtas_events import RtasEventQueue
from papr_emu.model.rtas_log import (
    EVENT_CLASS_EPOW,
    EVENT_CLASS_HOTPLUG,
    HP_ACTION_ADD,
    HP_ID_DRC_INDEX,
    HP_RESOURCE_CPU,
    HotplugLog,
)
from papr_emu_client.errorlog import parse_hotplug_event


def log(index: int) -> HotplugLog:
    return HotplugLog(HP_RESOURCE_CPU, HP_ACTION_ADD, HP_ID_DRC_INDEX, index)


def drc_of(blob: bytes) -> int:
    """The DRC index a hotplug log names, decoded by the client library."""
    return parse_hotplug_event(blob).index


def test_first_in_first_out_across_classes_with_masks() -> None:
    queue = RtasEventQueue(clock=lambda: 0.0)
    order = [(EVENT_CLASS_EPOW, 1), (EVENT_CLASS_HOTPLUG, 2), (EVENT_CLASS_EPOW, 3), (EVENT_CLASS_HOTPLUG, 4)]
    plids = [queue.push(log(index), event_class).plid for event_class, index in order]
    assert plids == [0, 1, 2, 3] and len(queue) == 4
    assert queue.pending_classes() == [EVENT_CLASS_EPOW, EVENT_CLASS_HOTPLUG]
    watch = queue.watch_interrupts()  # a late watcher learns of both classes, oldest first
    assert [watch.next(timeout=0).event_class, watch.next(timeout=0).event_class] == [  # type: ignore[union-attr]
        EVENT_CLASS_EPOW,
        EVENT_CLASS_HOTPLUG,
    ]
    status, first_hotplug = queue.pop(EVENT_CLASS_HOTPLUG, 2048)
    assert status == 0 and len(queue) == 3
    status, oldest = queue.pop(0xFFFFFFFF, 2048)
    status2, next_oldest = queue.pop(0xFFFFFFFF, 2048)
    assert (status, status2) == (0, 0)
    assert queue.pending_classes() == [EVENT_CLASS_HOTPLUG]
    assert queue.pop(EVENT_CLASS_EPOW, 2048) == (1, b"")
    assert queue.pop(0xFFFFFFFF, 0)[0] == 0 and len(queue) == 0
    assert queue.pop(0xFFFFFFFF, 2048) == (1, b"")
    # The masked pop took the oldest hotplug log; the unmasked ones the oldest left of any class.
    assert [drc_of(first_hotplug), drc_of(oldest), drc_of(next_oldest)] == [2, 1, 3]


def test_drop_empties_every_class() -> None:
    queue = RtasEventQueue(clock=lambda: 0.0)
    queue.push(log(1), EVENT_CLASS_EPOW)
    queue.push(log(2), EVENT_CLASS_HOTPLUG)
    assert queue.drop() == 2 and len(queue) == 0 and queue.pending_classes() == []
