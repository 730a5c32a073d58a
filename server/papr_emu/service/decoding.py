"""Request bytes are parsed in the handler, so undecodable ones get INVALID_ARGUMENT.

grpcio's own deserializer path answers a request that does not parse with INTERNAL
("Exception deserializing request!") and keeps about 16.5 KB of server memory per such
request (measured on a bare grpcio 1.85 server too, 2026-12). This interceptor hands
each handler the raw bytes instead (no request_deserializer) and parses them itself,
with the message type's own parser: a request that does not parse ends with
INVALID_ARGUMENT naming the message type, like any other malformed request.

Example::

    server = grpc.server(executor, interceptors=[DecodeInHandler()])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

Decode = Callable[[bytes], Any]


def _type_name(decode: Decode, method: str) -> str:
    """``papr.v1.GetPlatformRequest`` for a generated message's FromString; else the method's request."""
    descriptor = getattr(getattr(decode, "__self__", None), "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", f"request of {method}"))


def _decoder(decode: Decode, type_name: str) -> Callable[[bytes, grpc.ServicerContext], Any]:
    def parse(raw: bytes, context: grpc.ServicerContext) -> Any:
        try:
            return decode(raw)
        except Exception:  # DecodeError, or whatever a custom deserializer raises
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {type_name} message ({len(raw)} bytes)"
            )

    return parse


def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    parse = _decoder(handler.request_deserializer, _type_name(handler.request_deserializer, method))
    if handler.unary_unary is not None:
        unary_unary = handler.unary_unary

        def unary(raw: bytes, context: grpc.ServicerContext) -> Any:
            return unary_unary(parse(raw, context), context)

        return handler._replace(request_deserializer=None, unary_unary=unary)
    if handler.unary_stream is not None:
        unary_stream = handler.unary_stream

        def server_stream(raw: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
            request = parse(raw, context)  # before the first response: a bad request sends none
            yield from unary_stream(request, context)

        return handler._replace(request_deserializer=None, unary_stream=server_stream)

    def requests(raw_requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
        for raw in raw_requests:
            yield parse(raw, context)

    if handler.stream_unary is not None:
        stream_unary = handler.stream_unary
        return handler._replace(
            request_deserializer=None, stream_unary=lambda raw, context: stream_unary(requests(raw, context), context)
        )
    stream_stream = handler.stream_stream
    return handler._replace(
        request_deserializer=None, stream_stream=lambda raw, context: stream_stream(requests(raw, context), context)
    )


class DecodeInHandler(grpc.ServerInterceptor):  # type: ignore[misc]
    """Parses every request in its handler (see the module docstring); wrapped handlers are cached."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = continuation(handler_call_details)
            if handler is None or handler.request_deserializer is None:
                return handler  # unknown method (UNIMPLEMENTED), or one that takes bytes already
            wrapped = self._wrapped.setdefault(method, _wrap(handler, method))
        return wrapped
