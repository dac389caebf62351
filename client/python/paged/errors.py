"""Errors: every failed call raises a PagedError carrying the gRPC status.

``PagedError.code`` is the server's ``grpc.StatusCode`` and ``details`` its
message, unchanged. Each code has its subclass, so callers can catch what they
can act on (absl/status/status.h says which code means what):

- ``ResourceExhaustedError``: the queue is full; retry later.
- ``InvalidArgumentError``: fix the request (also raised before anything is
  sent for arguments the server would reject; it is a ``ValueError`` too).
- ``UnavailableError``: no server, or no worker; retry.
- ``DeadlineExceededError``: the call's timeout passed.
- ``UnauthenticatedError``: the bearer token is missing or wrong.
- ``FailedPreconditionError``: fix the server's state first (e.g. chat on a
  model without a chat template).
- ``NotFoundError``: no such sequence or worker.
"""

from __future__ import annotations

import grpc

__all__ = [
    "PagedError",
    "CancelledError",
    "UnknownError",
    "InvalidArgumentError",
    "DeadlineExceededError",
    "NotFoundError",
    "AlreadyExistsError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "FailedPreconditionError",
    "AbortedError",
    "OutOfRangeError",
    "UnimplementedError",
    "InternalError",
    "UnavailableError",
    "DataLossError",
    "UnauthenticatedError",
    "error_from_code",
    "error_from_rpc",
]


class PagedError(Exception):
    """A failed call: ``code`` (grpc.StatusCode) and ``details`` (the message)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.details!r})"


class CancelledError(PagedError):
    pass


class UnknownError(PagedError):
    pass


class InvalidArgumentError(PagedError, ValueError):
    pass


class DeadlineExceededError(PagedError):
    pass


class NotFoundError(PagedError):
    pass


class AlreadyExistsError(PagedError):
    pass


class PermissionDeniedError(PagedError):
    pass


class ResourceExhaustedError(PagedError):
    pass


class FailedPreconditionError(PagedError):
    pass


class AbortedError(PagedError):
    pass


class OutOfRangeError(PagedError):
    pass


class UnimplementedError(PagedError):
    pass


class InternalError(PagedError):
    pass


class UnavailableError(PagedError):
    pass


class DataLossError(PagedError):
    pass


class UnauthenticatedError(PagedError):
    pass


_BY_CODE = {
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.UNKNOWN: UnknownError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRangeError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DATA_LOSS: DataLossError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
}


def error_from_code(code: grpc.StatusCode, details: str) -> PagedError:
    """The PagedError subclass for ``code``, carrying ``details``."""
    return _BY_CODE.get(code, PagedError)(code, details)


def error_from_rpc(e: grpc.RpcError) -> PagedError:
    """A failed gRPC call (sync or asyncio) as a PagedError."""
    code = e.code() if hasattr(e, "code") else None
    details = e.details() if hasattr(e, "details") else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return error_from_code(code, details or str(e))


def invalid_argument(details: str) -> InvalidArgumentError:
    return InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT, details)
