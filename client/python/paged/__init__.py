"""paged: the Python client of a paged server (gRPC API paged.v1).

    import paged

    with paged.Client("unix:///tmp/paged.sock") as client:
        for chunk in client.generate("Once upon a time", max_tokens=64):
            print(chunk.text, end="", flush=True)

``paged.Client`` is synchronous; ``paged.aio.AsyncClient`` is the asyncio
twin. Results are the dataclasses of ``paged.types``; failures raise
``paged.PagedError`` (``code``: the grpc.StatusCode, ``details``: the
server's message) or its subclass for the code. The generated messages and
stubs are ``paged.v1.*_pb2`` / ``*_pb2_grpc``. See docs/client.md.
"""

from ._common import DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESUME_WITHIN, DEFAULT_TIMEOUT
from ._version import __version__
from .client import Client, Generation, connect
from .errors import (AbortedError, AlreadyExistsError, CancelledError, DataLossError,
                     DeadlineExceededError, FailedPreconditionError, InternalError,
                     InvalidArgumentError, NotFoundError, OutOfRangeError, PagedError,
                     PermissionDeniedError, ResourceExhaustedError, UnauthenticatedError,
                     UnavailableError, UnimplementedError, UnknownError, error_from_code,
                     error_from_rpc)
from .types import (ChatMessage, FinishReason, GenerateResult, MemoryPlan, ModelInfo,
                    SequenceInfo, ServiceStatus, SupervisedProcess, TlsOptions, TokenChunk,
                    Tokenization, Usage, WorkerCounters, WorkerInfo)

__all__ = [
    "__version__", "DEFAULT_TIMEOUT", "DEFAULT_CONNECT_TIMEOUT", "DEFAULT_RESUME_WITHIN",
    # clients (paged.AsyncClient / AsyncGeneration come from paged.aio)
    "Client", "Generation", "connect", "AsyncClient", "AsyncGeneration",
    # results
    "ChatMessage", "FinishReason", "GenerateResult", "MemoryPlan", "ModelInfo", "SequenceInfo",
    "ServiceStatus", "SupervisedProcess", "TlsOptions", "TokenChunk", "Tokenization", "Usage",
    "WorkerCounters", "WorkerInfo",
    # errors
    "PagedError", "AbortedError", "AlreadyExistsError", "CancelledError", "DataLossError",
    "DeadlineExceededError", "FailedPreconditionError", "InternalError", "InvalidArgumentError",
    "NotFoundError", "OutOfRangeError", "PermissionDeniedError", "ResourceExhaustedError",
    "UnauthenticatedError", "UnavailableError", "UnimplementedError", "UnknownError",
    "error_from_code", "error_from_rpc",
]


def __getattr__(name):  # paged.AsyncClient without importing paged.aio first
    if name in ("AsyncClient", "AsyncGeneration"):
        from . import aio

        return getattr(aio, name)
    raise AttributeError(f"module 'paged' has no attribute {name!r}")
