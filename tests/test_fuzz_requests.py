"""No request crashes the server: random field values for every unary RPC get either an answer
or a clear error code, never UNKNOWN or INTERNAL, and the server keeps serving."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor, message_factory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import new_platform
from papr.v1 import guest_pb2, hotplug_pb2, platform_pb2, rtas_pb2
from papr_emu_client import Client

ACCEPTABLE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
    # A limit refused it (e.g. a batch whose results could outgrow a message): well-formed, named limit.
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
F = descriptor.FieldDescriptor
CELLS = st.one_of(
    st.sampled_from([0, 1, 2, 3, 4, 9001, 9002, 9003, 0x10000001, 0x20000001, 0x40000018, 0x80000004, 0x201A, 0x201E]),
    st.integers(0, 0xFFFFFFFF),
)


def value_strategy(field: descriptor.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE:
        return message_strategy(field.message_type, depth + 1)
    if field.type == F.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values] + [99])
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type == F.TYPE_STRING:
        return st.one_of(st.sampled_from(["", "PLATFORM", "dimm1", "core0", "phb0"]), st.text(max_size=12))
    if field.type == F.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.binary(min_size=4096, max_size=4096))
    if field.type == F.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if field.type in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32):
        return st.integers(-(2**31), 2**31 - 1)
    if field.type in (F.TYPE_UINT64, F.TYPE_FIXED64):
        return st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 256 << 20, 1 << 30, 3 << 30]))
    return CELLS


WORK_AREAS = st.builds(
    lambda index, tail: index.to_bytes(4, "big") + tail, CELLS, st.sampled_from([bytes(4092), b"\xff" * 4092])
)
OPTION_VECTORS = st.builds(lambda body: bytes([len(body) - 1]) + body, st.binary(min_size=1, max_size=30))


def message_strategy(message: descriptor.Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    required: dict[str, st.SearchStrategy[Any]] = {}
    if "platform" in message.fields_by_name:  # mostly the fuzzed platform, so calls get past the lookup
        required["platform"] = st.sampled_from(["PLATFORM"] * 9 + ["nope"])
    if "work_area" in message.fields_by_name:
        required["work_area"] = st.one_of(WORK_AREAS, st.binary(max_size=64))
    if "option_vector_5" in message.fields_by_name:
        required["option_vector_5"] = st.one_of(OPTION_VECTORS, st.binary(max_size=8))
    fields = {}
    for field in message.fields:
        if field.name in required:
            continue
        if depth > 2 and field.type == F.TYPE_MESSAGE:
            continue
        strategy = value_strategy(field, depth)
        if field.is_repeated:
            strategy = st.lists(strategy, max_size=8)
        fields[field.name] = strategy
    return st.fixed_dictionaries(required, optional=fields)


def build(message_class: Any, values: dict[str, Any], platform: str) -> Any:
    message = message_class()
    for name, value in values.items():
        if value == "PLATFORM":
            value = platform
        field = message.DESCRIPTOR.fields_by_name[name]
        if field.type == F.TYPE_MESSAGE:
            if field.is_repeated:
                for item in value:
                    getattr(message, name).add().CopyFrom(
                        build(message_factory.GetMessageClass(field.message_type), item, platform)
                    )
            else:
                getattr(message, name).CopyFrom(
                    build(message_factory.GetMessageClass(field.message_type), value, platform)
                )
        elif field.is_repeated:
            getattr(message, name).extend(v if v != "PLATFORM" else platform for v in value)
        else:
            try:
                setattr(message, name, value)
            except ValueError:
                pass  # e.g. a oneof member that takes no such value
    return message


UNARY = (
    [(rtas_pb2, "RtasService", m.name) for m in rtas_pb2.DESCRIPTOR.services_by_name["RtasService"].methods]
    + [
        (platform_pb2, "PlatformService", m.name)
        for m in platform_pb2.DESCRIPTOR.services_by_name["PlatformService"].methods
        if not m.server_streaming
    ]
    + [
        (hotplug_pb2, "HotplugService", m.name)
        for m in hotplug_pb2.DESCRIPTOR.services_by_name["HotplugService"].methods
        if not m.server_streaming
    ]
    + [(guest_pb2, "GuestService", m.name) for m in guest_pb2.DESCRIPTOR.services_by_name["GuestService"].methods]
)


def call(client: Client, module: Any, service: str, method: str, request: Any) -> grpc.StatusCode:
    descriptor_ = module.DESCRIPTOR.services_by_name[service].methods_by_name[method]
    response_class = getattr(module, descriptor_.output_type.name, None) or getattr(
        __import__(f"papr.v1.{descriptor_.output_type.file.name.split('/')[-1][:-6]}_pb2", fromlist=["x"]),
        descriptor_.output_type.name,
    )
    stub = client.channel.unary_unary(
        f"/papr.v1.{service}/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    try:
        stub(request, timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data())
def test_random_requests_get_clear_answers(client: Client, data: st.DataObject) -> None:
    platform = FUZZ_PLATFORM.get("name", "")
    try:
        client.platforms.GetPlatform(platform_pb2.GetPlatformRequest(platform=platform))
    except grpc.RpcError:  # first example, or a fuzzed DeletePlatform removed it
        platform = FUZZ_PLATFORM["name"] = new_platform(client)
    module, service, method = data.draw(st.sampled_from(UNARY))
    descriptor_ = module.DESCRIPTOR.services_by_name[service].methods_by_name[method]
    request_class = getattr(module, descriptor_.input_type.name)
    values = data.draw(message_strategy(descriptor_.input_type))
    code = call(client, module, service, method, build(request_class, values, platform))
    assert code in ACCEPTABLE, (service, method, values, code)


FUZZ_PLATFORM: dict[str, str] = {}


def test_server_still_serves_after_fuzzing(client: Client) -> None:
    listed = client.platforms.ListPlatforms(platform_pb2.ListPlatformsRequest()).platforms
    assert "default" in [p.name for p in listed]
