"""InterruptService: the platform's event interrupts as a server stream."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from papr.v1 import interrupt_pb2, interrupt_pb2_grpc

from ..model import Platforms, SubscriptionClosed
from ..model.rtas_log import EVENT_CLASS_HOTPLUG, IRQ_EPOW, IRQ_HOTPLUG
from .errors import abort_closed, call_or_abort
from .hotplug import POLL_SECONDS


class InterruptServicer(interrupt_pb2_grpc.InterruptServiceServicer):
    def __init__(self, platforms: Platforms) -> None:
        self._platforms = platforms

    def WatchInterrupts(
        self, request: interrupt_pb2.WatchInterruptsRequest, context: grpc.ServicerContext
    ) -> Iterator[interrupt_pb2.WatchInterruptsResponse]:
        platform = call_or_abort(context, lambda: self._platforms.get(request.platform))
        with platform.lock:
            line = platform.rtas_events.interrupts
            subscription = line.subscribe(platform.rtas_events.pending_classes())
        try:
            context.send_initial_metadata(())
            while context.is_active():
                try:
                    event_class = subscription.next(timeout=POLL_SECONDS)
                except SubscriptionClosed as closed:
                    abort_closed(context, closed, request.platform)
                if event_class is not None:
                    irq = IRQ_HOTPLUG if event_class == EVENT_CLASS_HOTPLUG else IRQ_EPOW
                    yield interrupt_pb2.WatchInterruptsResponse(irq=irq, event_class=event_class)
        finally:
            with platform.lock:
                line.unsubscribe(subscription)
