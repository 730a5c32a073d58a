"""Model errors -> gRPC statuses, with a google.rpc.BadRequest naming the field.

Example::

    try:
        platform = platforms.get(request.platform)
    except PlatformError as error:
        abort(context, error)
"""

from __future__ import annotations

from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..model import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, OutOfRange, PlatformError

_CODES: dict[type[PlatformError], tuple[grpc.StatusCode, int]] = {
    InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    NotFound: (grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND),
    AlreadyExists: (grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
    FailedPrecondition: (grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    OutOfRange: (grpc.StatusCode.OUT_OF_RANGE, code_pb2.OUT_OF_RANGE),
}


def status_for(error: PlatformError) -> grpc.Status:
    """The rich gRPC status for a model error."""
    _, code = _CODES.get(type(error), (grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION))
    details: list[any_pb2.Any] = []
    if error.field:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)]
        )
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        details.append(packed)
    return rpc_status.to_status(status_pb2.Status(code=code, message=error.message, details=details))


def abort(context: grpc.ServicerContext, error: PlatformError) -> NoReturn:
    """End the RPC with the error's status (raises)."""
    context.abort_with_status(status_for(error))
    raise AssertionError("unreachable: abort_with_status raises")
