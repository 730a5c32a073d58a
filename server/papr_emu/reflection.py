"""gRPC server reflection, with the .proto comments, under both its names (v1 and v1alpha).

grpcio-reflection 1.85 serves ``grpc.reflection.v1alpha`` only, and from a
descriptor pool: it re-serializes each file with ``CopyToProto``, which drops the
source info (the comments), and the upb pool does not find method or field
symbols, so ``grpcurl describe papr.v1.RtasService.GetSensorState`` fails with
"Symbol not found". This servicer answers from the FileDescriptorSet that
``proto/generate.py`` writes beside the generated code (``papr/v1/descriptor_set.binpb``,
with source info and imports): each file goes out byte for byte as protoc made it,
and every symbol it declares (services, methods, messages, fields, enums and their
values, nested ones too) is indexed.

``grpc.reflection.v1`` and ``v1alpha`` are the same protocol under two package
names (same messages, same field numbers), so one handler serves both, parsing
and writing the v1alpha messages. The v1 file descriptor is derived from the
v1alpha one, so both reflection services can be described too.

Example::

    add_reflection(server, ["papr.v1.RtasService", "grpc.health.v1.Health"])
    # grpcurl -plaintext ADDR describe papr.v1.RtasService.GetSensorState
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterable, Sequence
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

#: The reflection service's two names: v1 (current clients, e.g. ``buf curl``) and v1alpha (grpcurl 1.8).
SERVICE_NAME_V1 = "grpc.reflection.v1.ServerReflection"
SERVICE_NAME_V1ALPHA = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name
SERVICE_NAMES = (SERVICE_NAME_V1, SERVICE_NAME_V1ALPHA)
#: The package data proto/generate.py writes: papr.v1's .proto files with comments and imports.
DESCRIPTOR_SET = "descriptor_set.binpb"


def _file_proto(descriptor: Any) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    descriptor.CopyToProto(proto)
    return proto


def _reflection_v1() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto: the v1alpha file under the v1 package (the protocol is the same)."""
    proto = _file_proto(reflection_pb2.DESCRIPTOR)
    old, new = "grpc.reflection.v1alpha", "grpc.reflection.v1"
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = new
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    proto.options.ClearField("deprecated")
    for message in proto.message_type:
        for field in message.field:
            field.type_name = field.type_name.replace(f".{old}.", f".{new}.")
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(f".{old}.", f".{new}.")
            method.output_type = method.output_type.replace(f".{old}.", f".{new}.")
    return proto


def _symbols(proto: descriptor_pb2.FileDescriptorProto) -> Iterable[str]:
    """Every fully qualified name ``proto`` declares."""
    prefix = f"{proto.package}." if proto.package else ""

    def message(m: descriptor_pb2.DescriptorProto, scope: str) -> Iterable[str]:
        name = f"{scope}{m.name}"
        yield name
        for field in (*m.field, *m.extension):
            yield f"{name}.{field.name}"
        for oneof in m.oneof_decl:
            yield f"{name}.{oneof.name}"
        for nested in m.nested_type:
            yield from message(nested, f"{name}.")
        for nested_enum in m.enum_type:
            yield from enum(nested_enum, f"{name}.")

    def enum(e: descriptor_pb2.EnumDescriptorProto, scope: str) -> Iterable[str]:
        yield f"{scope}{e.name}"
        for value in e.value:
            yield f"{scope}{value.name}"  # enum values are siblings of their enum, as in C++ scoping

    for m in proto.message_type:
        yield from message(m, prefix)
    for e in proto.enum_type:
        yield from enum(e, prefix)
    for extension in proto.extension:
        yield f"{prefix}{extension.name}"
    for service in proto.service:
        yield f"{prefix}{service.name}"
        for method in service.method:
            yield f"{prefix}{service.name}.{method.name}"


def _extensions(proto: descriptor_pb2.FileDescriptorProto) -> Iterable[tuple[str, int]]:
    """(extended message, field number) of every extension ``proto`` declares, top level or nested."""

    def walk(extensions: Iterable[descriptor_pb2.FieldDescriptorProto]) -> Iterable[tuple[str, int]]:
        for extension in extensions:
            yield extension.extendee.lstrip("."), extension.number

    def nested(m: descriptor_pb2.DescriptorProto) -> Iterable[tuple[str, int]]:
        yield from walk(m.extension)
        for inner in m.nested_type:
            yield from nested(inner)

    yield from walk(proto.extension)
    for m in proto.message_type:
        yield from nested(m)


class Descriptors:
    """Serialized file descriptors by file name, and the file declaring each symbol and extension."""

    def __init__(self, files: Iterable[bytes]) -> None:
        self._files: dict[str, bytes] = {}
        self._dependencies: dict[str, list[str]] = {}
        self._symbols: dict[str, str] = {}
        self._extensions: dict[tuple[str, int], str] = {}
        for serialized in files:
            proto = descriptor_pb2.FileDescriptorProto.FromString(serialized)
            if proto.name in self._files:
                continue  # the first one wins: the descriptor set's, with its comments
            self._files[proto.name] = serialized
            self._dependencies[proto.name] = list(proto.dependency)
            for symbol in _symbols(proto):
                self._symbols.setdefault(symbol, proto.name)
            for key in _extensions(proto):
                self._extensions.setdefault(key, proto.name)

    @classmethod
    def of_server(cls) -> Descriptors:
        """papr.v1 from the packaged descriptor set (with comments), plus health and both reflections."""
        packaged = resources.files("papr.v1").joinpath(DESCRIPTOR_SET).read_bytes()
        files = [f.SerializeToString() for f in descriptor_pb2.FileDescriptorSet.FromString(packaged).file]
        extra = (_file_proto(health_pb2.DESCRIPTOR), _file_proto(reflection_pb2.DESCRIPTOR), _reflection_v1())
        return cls([*files, *(f.SerializeToString() for f in extra)])

    def file_names(self) -> list[str]:
        return sorted(self._files)

    def with_dependencies(self, name: str) -> list[bytes] | None:
        """The file ``name`` and every file it imports, transitively (``name`` first); None if unknown."""
        if name not in self._files:
            return None
        order: list[str] = []
        pending = [name]
        while pending:
            current = pending.pop()
            if current in order or current not in self._files:
                continue
            order.append(current)
            pending.extend(reversed(self._dependencies[current]))
        return [self._files[n] for n in order]

    def file_of_symbol(self, symbol: str) -> str | None:
        return self._symbols.get(symbol.lstrip("."))

    def file_of_extension(self, extendee: str, number: int) -> str | None:
        return self._extensions.get((extendee.lstrip("."), number))

    def extension_numbers(self, extendee: str) -> list[int] | None:
        """The extension numbers of message ``extendee``, None if no such message."""
        extendee = extendee.lstrip(".")
        if extendee not in self._symbols:
            return None
        return sorted(number for (message, number) in self._extensions if message == extendee)


def _error(request: Any, code: grpc.StatusCode, message: str) -> Any:
    return reflection_pb2.ServerReflectionResponse(
        original_request=request,
        error_response=reflection_pb2.ErrorResponse(error_code=code.value[0], error_message=message),
    )


class ReflectionServicer:
    """ServerReflectionInfo over :class:`Descriptors` (for the v1 and v1alpha services alike)."""

    def __init__(self, descriptors: Descriptors, service_names: Iterable[str]) -> None:
        self._descriptors = descriptors
        self._service_names = sorted(set(service_names))

    def _files(self, request: Any, name: str | None, what: str) -> Any:
        files = None if name is None else self._descriptors.with_dependencies(name)
        if files is None:
            return _error(request, grpc.StatusCode.NOT_FOUND, f"{what} not found")
        return reflection_pb2.ServerReflectionResponse(
            original_request=request,
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(file_descriptor_proto=files),
        )

    def answer(self, request: Any) -> Any:
        """The response to one ServerReflectionRequest."""
        kind = request.WhichOneof("message_request")
        d = self._descriptors
        if kind == "file_by_filename":
            return self._files(request, request.file_by_filename, f"file {request.file_by_filename!r}")
        if kind == "file_containing_symbol":
            symbol = request.file_containing_symbol
            return self._files(request, d.file_of_symbol(symbol), f"symbol {symbol!r}")
        if kind == "file_containing_extension":
            ext = request.file_containing_extension
            return self._files(
                request,
                d.file_of_extension(ext.containing_type, ext.extension_number),
                f"extension {ext.extension_number} of {ext.containing_type!r}",
            )
        if kind == "all_extension_numbers_of_type":
            numbers = d.extension_numbers(request.all_extension_numbers_of_type)
            if numbers is None:
                return _error(request, grpc.StatusCode.NOT_FOUND, f"type {request.all_extension_numbers_of_type!r}")
            return reflection_pb2.ServerReflectionResponse(
                original_request=request,
                all_extension_numbers_response=reflection_pb2.ExtensionNumberResponse(
                    base_type_name=request.all_extension_numbers_of_type.lstrip("."), extension_number=numbers
                ),
            )
        if kind == "list_services":
            return reflection_pb2.ServerReflectionResponse(
                original_request=request,
                list_services_response=reflection_pb2.ListServiceResponse(
                    service=[reflection_pb2.ServiceResponse(name=name) for name in self._service_names]
                ),
            )
        return _error(request, grpc.StatusCode.INVALID_ARGUMENT, "empty ServerReflectionRequest")

    async def ServerReflectionInfo(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for request in requests:
            yield self.answer(request)


@functools.cache
def server_descriptors() -> Descriptors:
    """The server's descriptors, read once per process."""
    return Descriptors.of_server()


def add_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Serve reflection on ``server`` as v1 and v1alpha, listing ``service_names`` and both reflection services."""
    servicer = ReflectionServicer(server_descriptors(), (*service_names, *SERVICE_NAMES))
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}) for name in SERVICE_NAMES]
    )
