"""InterruptService: the platform's event interrupts as a server stream."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc

from papr.v1 import interrupt_pb2, interrupt_pb2_grpc

from ..model import Platforms, SubscriptionClosed
from .errors import call_or_abort
from .streams import POLL_SECONDS, StreamSlots, abort_closed


class InterruptServicer(interrupt_pb2_grpc.InterruptServiceServicer):
    def __init__(self, platforms: Platforms, slots: StreamSlots | None = None) -> None:
        self._platforms = platforms
        self._slots = slots or StreamSlots(platforms.limits)

    def WatchInterrupts(
        self, request: interrupt_pb2.WatchInterruptsRequest, context: grpc.ServicerContext
    ) -> Iterator[interrupt_pb2.WatchInterruptsResponse]:
        with contextlib.ExitStack() as stack:
            call_or_abort(context, lambda: stack.enter_context(self._slots.hold(request.platform)))
            platform = call_or_abort(context, lambda: self._platforms.get(request.platform))
            watch = platform.watch_interrupts()
            try:
                context.send_initial_metadata(())
                while context.is_active():
                    try:
                        interrupt = watch.next(timeout=POLL_SECONDS)
                    except SubscriptionClosed as closed:
                        abort_closed(context, closed, request.platform)
                    if interrupt is not None:
                        yield interrupt_pb2.WatchInterruptsResponse(
                            irq=interrupt.irq, event_class=interrupt.event_class
                        )
            finally:
                platform.unwatch_interrupts(watch)
