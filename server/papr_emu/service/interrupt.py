"""InterruptService: the platform's event interrupts as a server stream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from papr.v1 import interrupt_pb2, interrupt_pb2_grpc

from ..model import Platforms, SubscriptionClosed
from .errors import call_or_abort
from .running import Runner, inline
from .streams import AsyncReader, StreamSlots, abort_closed


class InterruptServicer(interrupt_pb2_grpc.InterruptServiceServicer):
    def __init__(self, platforms: Platforms, slots: StreamSlots | None = None, runner: Runner | None = None) -> None:
        self._platforms = platforms
        self._slots = slots or StreamSlots(platforms.limits)
        self._run = runner or Runner()

    async def WatchInterrupts(
        self, request: interrupt_pb2.WatchInterruptsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[interrupt_pb2.WatchInterruptsResponse]:
        with contextlib.ExitStack() as stack:
            await call_or_abort(context, inline(lambda: stack.enter_context(self._slots.hold(request.platform))))
            platform = await call_or_abort(context, inline(lambda: self._platforms.get(request.platform)))
            watch = await self._run.quick(platform, platform.watch_interrupts)
            stack.callback(platform.unwatch_interrupts, watch)
            reader = AsyncReader(watch)
            stack.callback(reader.close)
            await context.send_initial_metadata(())
            while True:
                try:
                    interrupt = await reader.next()
                except SubscriptionClosed as closed:
                    await abort_closed(context, closed, request.platform)
                yield interrupt_pb2.WatchInterruptsResponse(irq=interrupt.irq, event_class=interrupt.event_class)
