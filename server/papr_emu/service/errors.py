"""Model errors -> gRPC statuses, with a google.rpc.BadRequest naming the field.

Example::

    try:
        platform = platforms.get(request.platform)
    except PlatformError as error:
        await abort(context, error)
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..model import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PlatformError,
    ResourceExhausted,
)

_CODES: dict[type[PlatformError], int] = {
    InvalidArgument: code_pb2.INVALID_ARGUMENT,
    NotFound: code_pb2.NOT_FOUND,
    AlreadyExists: code_pb2.ALREADY_EXISTS,
    FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    OutOfRange: code_pb2.OUT_OF_RANGE,
    ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
}

T = TypeVar("T")


def status_for(error: PlatformError) -> grpc.Status:
    """The rich gRPC status for a model error."""
    code = _CODES.get(type(error), code_pb2.FAILED_PRECONDITION)
    details: list[any_pb2.Any] = []
    if error.field:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)]
        )
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        details.append(packed)
    return rpc_status.to_status(status_pb2.Status(code=code, message=error.message, details=details))


async def abort(context: grpc.aio.ServicerContext, error: PlatformError) -> NoReturn:
    """End the RPC with the error's status (raises)."""
    await context.abort_with_status(status_for(error))
    raise AssertionError("unreachable: abort_with_status raises")


async def call_or_abort(context: grpc.aio.ServicerContext, action: Awaitable[T]) -> T:
    """Await a model call; a model error ends the RPC with its status."""
    try:
        return await action
    except PlatformError as error:
        await abort(context, error)
