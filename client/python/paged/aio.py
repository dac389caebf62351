"""The asyncio client: ``paged.aio.AsyncClient`` (on grpc.aio).

    import asyncio
    import paged.aio

    async def main():
        async with paged.aio.AsyncClient("unix:///tmp/paged.sock") as client:
            async with client.generate("Once upon a time", max_tokens=64) as stream:
                async for chunk in stream:
                    print(chunk.text, end="", flush=True)
                result = await stream.result()
            print(f"\\n{result.finish_reason}")

    asyncio.run(main())

Create the client inside the event loop that uses it (grpc.aio channels
belong to one loop). The arguments, results and errors are the sync
client's (paged.Client).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, List, Optional, Sequence, Union

import grpc
import grpc.aio

from . import _common, errors
from ._common import (DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESUME_WITHIN, DEFAULT_TIMEOUT, Message,
                      Timeout)
from .types import (GenerateResult, ModelInfo, SequenceInfo, ServiceStatus, SupervisedProcess,
                    TlsOptions, TokenChunk, Tokenization)
from .v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc

__all__ = ["AsyncClient", "AsyncGeneration", "connect"]


class AsyncGeneration:
    """A streaming generation: ``async for`` it for TokenChunks; ``await
    result()`` reads the rest and returns the GenerateResult. Leaving an
    ``async with`` block, ``cancel()`` or dropping the object before the end
    cancels the call (breaking out of ``async for`` alone does not until the
    object is dropped: prefer ``async with``). A stream broken by UNAVAILABLE
    is resumed as paged.Generation's is (``resume_within``)."""

    def __init__(self, open_call: Callable[[inference_pb2.GenerateRequest, Optional[float]], Any],
                 resumer: _common.Resumer) -> None:
        self._open_call = open_call  # (request, timeout) -> a grpc.aio stream call
        self._resumer = resumer
        self._fold = _common.StreamFold(resumer.request.request_id)
        self._wake = asyncio.Event()  # set by cancel(): ends a wait to resume
        self._done = False
        self._cancelled = False
        self._error: Optional[errors.PagedError] = None
        self._call = open_call(resumer.request, resumer.call_timeout())

    def __aiter__(self) -> "AsyncGeneration":
        return self

    async def __anext__(self) -> TokenChunk:
        while True:
            if self._done:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            try:
                msg = await self._call.read()
            except asyncio.CancelledError:
                if not self._cancelled:
                    raise  # this task was cancelled, not the call
                self._done = True
                self._fold.cancelled()
                raise StopAsyncIteration from None
            except grpc.RpcError as e:
                if not self._cancelled and await self._resume(errors.error_from_rpc(e)):
                    continue
                self._done = True
                if self._cancelled:
                    self._fold.cancelled()
                    raise StopAsyncIteration from None
                raise self._error from None
            if msg is grpc.aio.EOF:
                self._done = True
                raise StopAsyncIteration
            chunk = self._fold.add(msg)
            if chunk is not None:
                return chunk

    async def _resume(self, error: errors.PagedError) -> bool:
        """After the call failed with `error`: True once a call that goes on
        with the stream is open; else False, with the error to raise in
        _error (or _cancelled set)."""
        try:
            wait = self._resumer.retry_in(error, self._fold)
        except errors.PagedError as final:
            self._error = final
            return False
        if wait > 0:
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                pass
        if self._cancelled:
            return False
        self._call = self._open_call(self._resumer.request, self._resumer.call_timeout())
        return True

    async def result(self) -> GenerateResult:
        """Reads the rest of the stream; the whole generation."""
        async for _ in self:
            pass
        return self._fold.result()

    @property
    def sequence_id(self) -> int:
        return self._fold.sequence_id

    @property
    def request_id(self) -> str:
        return self._fold.request_id

    @property
    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        """Cancels the call; the iteration then ends with finish reason
        ``cancelled``. A no-op once it ended."""
        if self._done or self._cancelled:
            return
        self._cancelled = True
        self._wake.set()
        self._call.cancel()

    async def __aenter__(self) -> "AsyncGeneration":
        return self

    async def __aexit__(self, *exc) -> None:
        self.cancel()

    def __del__(self) -> None:
        try:
            if not self._done and not self._cancelled:
                self._call.cancel()
        except Exception:  # loop closed, interpreter shutdown
            pass

    def __repr__(self) -> str:
        state = "done" if self._done else ("cancelled" if self._cancelled else "streaming")
        return f"<paged.aio.AsyncGeneration sequence {self.sequence_id} {state}>"


class AsyncClient:
    """An asyncio client of a paged server; the arguments are paged.Client's.

    The constructor connects lazily; ``async with AsyncClient(...)`` and
    ``await AsyncClient.connect(...)`` first wait up to ``connect_timeout``
    seconds for the server (UnavailableError, saying why, when it is not
    there)."""

    def __init__(self, target: str, token: Optional[str] = None, *,
                 tls: Union[TlsOptions, bool, None] = None,
                 connect_timeout: Timeout = DEFAULT_CONNECT_TIMEOUT) -> None:
        self._target = _common.check_target(target)
        self._metadata = _common.call_metadata(token)
        self._connect_timeout = _common.connect_seconds(connect_timeout)
        options = list(_common.CHANNEL_OPTIONS)
        t = _common.tls_options(tls)
        if t is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            creds, extra = _common.channel_credentials(t)
            self._channel = grpc.aio.secure_channel(target, creds, options=options + extra)
        self._inference = inference_pb2_grpc.InferenceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminStub(self._channel)

    @classmethod
    async def connect(cls, target: str, token: Optional[str] = None,
                      **kwargs) -> "AsyncClient":
        """A client whose server answered within connect_timeout."""
        client = cls(target, token, **kwargs)
        try:
            await client.wait_ready()
        except BaseException:
            await client.close()
            raise
        return client

    async def wait_ready(self, timeout: Timeout = None) -> None:
        """Waits for the connection (``timeout`` seconds; None: the
        connect_timeout, when that is 0 nothing is awaited)."""
        wait = self._connect_timeout if timeout is None else _common.connect_seconds(timeout)
        if wait <= 0:
            return
        _common.check_unix_socket(self._target)
        try:
            await asyncio.wait_for(self._channel.channel_ready(), wait)
        except asyncio.TimeoutError:
            raise _common.not_reachable(self._target, wait) from None

    @property
    def target(self) -> str:
        return self._target

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        try:
            await self.wait_ready()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<paged.aio.AsyncClient {self._target}>"

    # ---- generation ----------------------------------------------------------

    def generate(
        self,
        prompt: Optional[str] = None,
        *,
        prompt_tokens: Optional[Sequence[int]] = None,
        messages: Optional[Sequence[Message]] = None,
        add_generation_prompt: bool = True,
        max_tokens: int = 128,
        stop_token_ids: Sequence[int] = (),
        stop_strings: Sequence[str] = (),
        ignore_eos: bool = False,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        request_id: str = "",
        timeout: Timeout = None,
        resume_within: Timeout = DEFAULT_RESUME_WITHIN,
    ) -> AsyncGeneration:
        """Starts a streaming generation (paged.Client.generate): a stream
        broken by UNAVAILABLE is resumed under its request_id for up to
        ``resume_within`` seconds (default 30; 0: no resuming)."""
        req = _common.generate_request(
            prompt, prompt_tokens=prompt_tokens, messages=messages,
            add_generation_prompt=add_generation_prompt, max_tokens=max_tokens,
            stop_token_ids=stop_token_ids, stop_strings=stop_strings, ignore_eos=ignore_eos,
            temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, request_id=request_id)
        resumer = _common.Resumer(req, _common.seconds(timeout),
                                  _common.resume_seconds(resume_within))

        def open_call(request, t):
            return self._inference.Generate(request, timeout=t, metadata=self._metadata)

        return AsyncGeneration(open_call, resumer)

    def chat(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
             **options) -> AsyncGeneration:
        """A streaming reply to a conversation (paged.Client.chat)."""
        if not messages:
            raise errors.invalid_argument("chat needs at least one message")
        return self.generate(messages=messages, add_generation_prompt=add_generation_prompt,
                             **options)

    async def tokenize(self, text: str, add_bos: bool = True,
                       timeout: Timeout = DEFAULT_TIMEOUT) -> Tokenization:
        if not isinstance(text, str):
            raise errors.invalid_argument(f"text must be a str (got {type(text).__name__})")
        r = await self._unary(self._inference.Tokenize,
                              inference_pb2.TokenizeRequest(text=text, add_bos=bool(add_bos)),
                              timeout)
        return Tokenization(list(r.ids), list(r.pieces))

    # ---- admin ---------------------------------------------------------------

    async def status(self, timeout: Timeout = DEFAULT_TIMEOUT) -> ServiceStatus:
        return ServiceStatus.from_proto(
            await self._unary(self._admin.Status, admin_pb2.StatusRequest(), timeout))

    async def sequences(self, timeout: Timeout = DEFAULT_TIMEOUT) -> List[SequenceInfo]:
        r = await self._unary(self._admin.ListSequences, admin_pb2.ListSequencesRequest(),
                              timeout)
        return [SequenceInfo.from_proto(s) for s in r.sequences]

    async def cancel(self, sequence_id: int, timeout: Timeout = DEFAULT_TIMEOUT) -> None:
        if isinstance(sequence_id, bool) or not isinstance(sequence_id, int) or sequence_id < 0:
            raise errors.invalid_argument(f"bad sequence id {sequence_id!r}")
        await self._unary(self._admin.CancelSequence,
                          admin_pb2.CancelSequenceRequest(sequence_id=sequence_id), timeout)

    async def drain(self, worker_id: str, timeout: Timeout = DEFAULT_TIMEOUT) -> None:
        if not isinstance(worker_id, str) or not worker_id:
            raise errors.invalid_argument("empty worker id")
        await self._unary(self._admin.DrainWorker,
                          admin_pb2.DrainWorkerRequest(worker_id=worker_id), timeout)

    async def models(self, timeout: Timeout = DEFAULT_TIMEOUT) -> List[ModelInfo]:
        r = await self._unary(self._admin.ListModels, admin_pb2.ListModelsRequest(), timeout)
        return [ModelInfo.from_proto(m) for m in r.models]

    async def report_supervision(self, supervisor: str, processes: Sequence[SupervisedProcess],
                                 timeout: Timeout = DEFAULT_TIMEOUT) -> None:
        req = admin_pb2.ReportSupervisionRequest(
            supervisor=supervisor, processes=[p.to_proto() for p in processes])
        await self._unary(self._admin.ReportSupervision, req, timeout)

    async def _unary(self, method, request, timeout: Timeout):
        t = _common.seconds(timeout)
        try:
            return await method(request, timeout=t, metadata=self._metadata)
        except grpc.RpcError as e:
            raise errors.error_from_rpc(e) from None


async def connect(target: str, token: Optional[str] = None, **kwargs) -> AsyncClient:
    """``await AsyncClient.connect(target, token, **kwargs)``."""
    return await AsyncClient.connect(target, token, **kwargs)
