"""HotplugService: device_add / device_del, devices, and the event stream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from papr.v1 import hotplug_pb2, hotplug_pb2_grpc

from ..model import Platforms, SubscriptionClosed, SubscriptionOverflow
from . import convert
from .errors import call_or_abort
from .running import Runner, inline
from .streams import AsyncReader, StreamSlots, abort_closed, stream_metadata

#: Initial-metadata key: the sequence the stream starts after (resume from it after a reconnect).


class HotplugServicer(hotplug_pb2_grpc.HotplugServiceServicer):
    def __init__(self, platforms: Platforms, slots: StreamSlots | None = None, runner: Runner | None = None) -> None:
        self._platforms = platforms
        self._slots = slots or StreamSlots(platforms.limits)
        self._run = runner or Runner()

    async def PlugDevice(
        self, request: hotplug_pb2.PlugDeviceRequest, context: grpc.aio.ServicerContext
    ) -> hotplug_pb2.PlugDeviceResponse:
        def plug() -> hotplug_pb2.PlugDeviceResponse:
            platform = self._platforms.get(request.platform)
            plug_request = convert.plug_request_from_pb(request.spec)
            return hotplug_pb2.PlugDeviceResponse(device=convert.device_to_pb(platform.plug(request.id, plug_request)))

        return await call_or_abort(context, self._run.blocking(plug))

    async def UnplugDevice(
        self, request: hotplug_pb2.UnplugDeviceRequest, context: grpc.aio.ServicerContext
    ) -> hotplug_pb2.UnplugDeviceResponse:
        outcome = await call_or_abort(
            context, self._run.blocking(lambda: self._platforms.get(request.platform).unplug(request.id))
        )
        return hotplug_pb2.UnplugDeviceResponse(deleted=outcome.deleted, device=convert.device_to_pb(outcome.device))

    async def RequestMemory(
        self, request: hotplug_pb2.RequestMemoryRequest, context: grpc.aio.ServicerContext
    ) -> hotplug_pb2.RequestMemoryResponse:
        def ask() -> hotplug_pb2.RequestMemoryResponse:
            platform = self._platforms.get(request.platform)
            action, id_type, count, first_index = convert.memory_request_from_pb(request)
            queued = platform.request_memory(action, id_type, count, first_index)
            return hotplug_pb2.RequestMemoryResponse(
                request_id=queued.id, target_lmbs=queued.target, description=queued.describe()
            )

        return await call_or_abort(context, self._run.blocking(ask))

    async def GetDevice(
        self, request: hotplug_pb2.GetDeviceRequest, context: grpc.aio.ServicerContext
    ) -> hotplug_pb2.GetDeviceResponse:
        info = await call_or_abort(
            context, self._run.blocking(lambda: self._platforms.get(request.platform).device(request.id))
        )
        return hotplug_pb2.GetDeviceResponse(device=convert.device_to_pb(info))

    async def ListDevices(
        self, request: hotplug_pb2.ListDevicesRequest, context: grpc.aio.ServicerContext
    ) -> hotplug_pb2.ListDevicesResponse:
        def devices() -> hotplug_pb2.ListDevicesResponse:
            platform = self._platforms.get(request.platform)
            infos = platform.devices(convert.device_type_from_pb(request.type))
            return hotplug_pb2.ListDevicesResponse(devices=[convert.device_to_pb(i) for i in infos])

        return await call_or_abort(context, self._run.blocking(devices))

    async def WatchEvents(
        self, request: hotplug_pb2.WatchEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[hotplug_pb2.WatchEventsResponse]:
        with contextlib.ExitStack() as stack:
            await call_or_abort(context, inline(lambda: stack.enter_context(self._slots.hold(request.platform))))
            platform = await call_or_abort(context, inline(lambda: self._platforms.get(request.platform)))
            after = request.after_sequence if request.HasField("after_sequence") else None
            subscription, subscribed_after = await call_or_abort(
                context, self._run.quick(platform, lambda: platform.subscribe_events(after))
            )
            stack.callback(platform.unsubscribe_events, subscription)
            reader = AsyncReader(subscription)
            stack.callback(reader.close)
            await context.send_initial_metadata(stream_metadata(subscribed_after, platform.incarnation))
            while True:
                try:
                    event = await reader.next()
                except SubscriptionOverflow as overflow:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"watcher fell behind by more than the queue limit; last sequence sent: "
                        f"{overflow.last_sequence}; resume with after_sequence={overflow.last_sequence}",
                    )
                except SubscriptionClosed as closed:
                    await abort_closed(context, closed, request.platform)
                yield hotplug_pb2.WatchEventsResponse(event=convert.event_to_pb(event))
