"""The synchronous client: ``paged.Client``.

    import paged

    with paged.Client("unix:///tmp/paged.sock") as client:
        with client.generate("Once upon a time", max_tokens=64) as stream:
            for chunk in stream:
                print(chunk.text, end="", flush=True)
            result = stream.result()
        print(f"\\n{result.usage.generated_tokens} tokens, finish: {result.finish_reason}")

A Client may be used from many threads at once (one channel; calls are
independent).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, List, Optional, Sequence, Union

import grpc

from . import _common, errors
from ._common import (DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESUME_WITHIN, DEFAULT_TIMEOUT, Message,
                      Timeout)
from .types import (GenerateResult, ModelInfo, SequenceInfo, ServiceStatus, SupervisedProcess,
                    TlsOptions, TokenChunk, Tokenization)
from .v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc

__all__ = ["Client", "Generation", "connect"]


class Generation:
    """A streaming generation: iterate it for TokenChunks as the server
    commits them; ``result()`` reads whatever is left and returns the whole
    GenerateResult. Leaving a ``with`` block, ``close()``, ``cancel()`` or
    dropping the object before the end cancels the call, and the server stops
    the sequence at its next step.

    A stream broken by UNAVAILABLE (the coordinator restarted) is resumed
    under its request_id from the tokens received, for up to the call's
    ``resume_within`` seconds: the iteration goes on and sees each token once
    (``Client.generate``).

    A generation the server ends with finish reason ``error`` raises
    AbortedError (as the server's status says); one this client cancelled
    ends quietly with finish reason ``cancelled``. A failed call raises its
    PagedError from the iteration (and again from ``result()``); chunks
    already returned stay returned.
    """

    def __init__(self, open_call: Callable[[inference_pb2.GenerateRequest, Optional[float]], Any],
                 resumer: _common.Resumer) -> None:
        self._open_call = open_call  # (request, timeout) -> the call's response iterator
        self._resumer = resumer
        self._fold = _common.StreamFold(resumer.request.request_id)
        self._lock = threading.Lock()  # guards _call and _cancelled against cancel()
        self._wake = threading.Event()  # set by cancel(): ends a wait to resume
        self._done = False
        self._cancelled = False
        self._error: Optional[errors.PagedError] = None
        self._call = open_call(resumer.request, resumer.call_timeout())

    def __iter__(self) -> Iterator[TokenChunk]:
        return self

    def __next__(self) -> TokenChunk:
        while True:
            if self._done:
                if self._error is not None:
                    raise self._error
                raise StopIteration
            try:
                msg = next(self._call)
            except StopIteration:
                self._done = True
                raise
            except grpc.RpcError as e:
                if not self._cancelled and self._resume(errors.error_from_rpc(e)):
                    continue
                self._done = True
                if self._cancelled:
                    self._fold.cancelled()
                    raise StopIteration from None
                raise self._error from None
            chunk = self._fold.add(msg)
            if chunk is not None:
                return chunk

    def _resume(self, error: errors.PagedError) -> bool:
        """After the call failed with `error`: True once a call that goes on
        with the stream is open; else False, with the error to raise in
        _error (or _cancelled set)."""
        try:
            wait = self._resumer.retry_in(error, self._fold)
        except errors.PagedError as final:
            self._error = final
            return False
        if wait > 0:
            self._wake.wait(wait)
        with self._lock:
            if self._cancelled:
                return False
            self._call = self._open_call(self._resumer.request, self._resumer.call_timeout())
        return True

    def result(self) -> GenerateResult:
        """Reads the rest of the stream; the whole generation."""
        for _ in self:
            pass
        return self._fold.result()

    @property
    def sequence_id(self) -> int:
        """The server's id of the sequence (0 before the first message)."""
        return self._fold.sequence_id

    @property
    def request_id(self) -> str:
        return self._fold.request_id

    @property
    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        """Cancels the call (the server stops the sequence); the iteration
        then ends with finish reason ``cancelled``. A no-op once it ended."""
        with self._lock:
            if self._done or self._cancelled:
                return
            self._cancelled = True
            call = self._call
        self._wake.set()
        call.cancel()

    close = cancel

    def __enter__(self) -> "Generation":
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()

    def __del__(self) -> None:
        try:
            if not self._done and not self._cancelled:
                self._call.cancel()
        except Exception:  # interpreter shutdown
            pass

    def __repr__(self) -> str:
        state = "done" if self._done else ("cancelled" if self._cancelled else "streaming")
        return f"<paged.Generation sequence {self.sequence_id} {state}>"


class Client:
    """A client of a paged server.

    ``target`` is a gRPC target: ``unix:///path/to.sock`` or ``host:port``. A
    non-empty ``token`` goes out as ``authorization: Bearer <token>`` with
    every call. ``tls``: ``True`` for TLS with the system's roots, or a
    TlsOptions (the server's CA, a client certificate). The constructor waits
    up to ``connect_timeout`` seconds for the connection and raises
    UnavailableError (saying why) when the server is not there; 0 connects
    lazily on the first call. Bad arguments raise InvalidArgumentError.
    """

    def __init__(self, target: str, token: Optional[str] = None, *,
                 tls: Union[TlsOptions, bool, None] = None,
                 connect_timeout: Timeout = DEFAULT_CONNECT_TIMEOUT) -> None:
        self._target = _common.check_target(target)
        self._metadata = _common.call_metadata(token)
        wait = _common.connect_seconds(connect_timeout)
        if wait > 0:
            _common.check_unix_socket(target)
        options = list(_common.CHANNEL_OPTIONS)
        t = _common.tls_options(tls)
        if t is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            creds, extra = _common.channel_credentials(t)
            self._channel = grpc.secure_channel(target, creds, options=options + extra)
        if wait > 0:
            try:
                grpc.channel_ready_future(self._channel).result(timeout=wait)
            except grpc.FutureTimeoutError:
                self._channel.close()
                raise _common.not_reachable(target, wait) from None
        self._inference = inference_pb2_grpc.InferenceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminStub(self._channel)

    @property
    def target(self) -> str:
        return self._target

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<paged.Client {self._target}>"

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
    ) -> Generation:
        """Starts a streaming generation. Give exactly one of ``prompt`` (text;
        the server tokenizes it and adds BOS), ``prompt_tokens`` (ids sent as
        they are) and ``messages`` (a chat, see ``chat()``). Temperature 0 is
        greedy; the same seed and request give the same tokens. ``timeout``
        (seconds) bounds the whole generation; None: no deadline.

        ``resume_within`` (seconds, default 30; 0: no resuming): when the
        stream breaks with UNAVAILABLE before it finished (the coordinator
        restarted), the call reconnects with its ``request_id`` and continues
        after the tokens it has (GenerateRequest.resume; the server's journal
        goes on with the sequence, docs/reliability.md), trying again after
        50 ms, doubling to 1 s, for up to this long after the break and within
        ``timeout``; the iteration sees each token once. A request that had
        received nothing and that the server does not know is sent again as
        new; one with tokens received fails with UnavailableError naming the
        resume that failed. When it gives up, the error is the break's.
        Without a ``request_id`` a resumable call makes up one ("req-" and
        32 hex digits; ``Generation.request_id``)."""
        req = _common.generate_request(
            prompt, prompt_tokens=prompt_tokens, messages=messages,
            add_generation_prompt=add_generation_prompt, max_tokens=max_tokens,
            stop_token_ids=stop_token_ids, stop_strings=stop_strings, ignore_eos=ignore_eos,
            temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, request_id=request_id)
        resumer = _common.Resumer(req, _common.seconds(timeout),
                                  _common.resume_seconds(resume_within))

        def open_call(request, t):
            return self._inference.Generate(request, timeout=t, metadata=self._metadata)

        return Generation(open_call, resumer)

    def chat(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
             **options) -> Generation:
        """A streaming reply to a conversation: ``messages`` are ChatMessages,
        ``{"role": ..., "content": ...}`` dicts or ``(role, content)`` pairs
        (roles ``system``, ``user``, ``assistant``). The server renders them
        with the model's chat template (FailedPreconditionError when it has
        none) and the reply stops at the format's end of turn. Takes
        ``generate()``'s other options."""
        if not messages:
            raise errors.invalid_argument("chat needs at least one message")
        return self.generate(messages=messages, add_generation_prompt=add_generation_prompt,
                             **options)

    def tokenize(self, text: str, add_bos: bool = True,
                 timeout: Timeout = DEFAULT_TIMEOUT) -> Tokenization:
        """The model's token ids for ``text`` (BOS first when add_bos) and
        their pieces."""
        if not isinstance(text, str):
            raise errors.invalid_argument(f"text must be a str (got {type(text).__name__})")
        r = self._unary(self._inference.Tokenize,
                        inference_pb2.TokenizeRequest(text=text, add_bos=bool(add_bos)), timeout)
        return Tokenization(list(r.ids), list(r.pieces))

    # ---- admin ---------------------------------------------------------------

    def status(self, timeout: Timeout = DEFAULT_TIMEOUT) -> ServiceStatus:
        """The service: model, store, queue, throughput, KV blocks, workers."""
        return ServiceStatus.from_proto(
            self._unary(self._admin.Status, admin_pb2.StatusRequest(), timeout))

    def sequences(self, timeout: Timeout = DEFAULT_TIMEOUT) -> List[SequenceInfo]:
        """The sequences the server knows."""
        r = self._unary(self._admin.ListSequences, admin_pb2.ListSequencesRequest(), timeout)
        return [SequenceInfo.from_proto(s) for s in r.sequences]

    def cancel(self, sequence_id: int, timeout: Timeout = DEFAULT_TIMEOUT) -> None:
        """Stops a sequence at its next step (its stream ends with finish
        reason ``cancelled``). NotFoundError for an unknown id."""
        if isinstance(sequence_id, bool) or not isinstance(sequence_id, int) or sequence_id < 0:
            raise errors.invalid_argument(f"bad sequence id {sequence_id!r}")
        self._unary(self._admin.CancelSequence,
                    admin_pb2.CancelSequenceRequest(sequence_id=sequence_id), timeout)

    def drain(self, worker_id: str, timeout: Timeout = DEFAULT_TIMEOUT) -> None:
        """The worker finishes its sequences and takes no new ones."""
        if not isinstance(worker_id, str) or not worker_id:
            raise errors.invalid_argument("empty worker id")
        self._unary(self._admin.DrainWorker, admin_pb2.DrainWorkerRequest(worker_id=worker_id),
                    timeout)

    def models(self, timeout: Timeout = DEFAULT_TIMEOUT) -> List[ModelInfo]:
        """The models the server serves."""
        r = self._unary(self._admin.ListModels, admin_pb2.ListModelsRequest(), timeout)
        return [ModelInfo.from_proto(m) for m in r.models]

    def report_supervision(self, supervisor: str, processes: Sequence[SupervisedProcess],
                           timeout: Timeout = DEFAULT_TIMEOUT) -> None:
        """For a supervisor (like paged-up): how its children are; status()
        shows it."""
        req = admin_pb2.ReportSupervisionRequest(
            supervisor=supervisor, processes=[p.to_proto() for p in processes])
        self._unary(self._admin.ReportSupervision, req, timeout)

    def _unary(self, method, request, timeout: Timeout):
        t = _common.seconds(timeout)
        try:
            return method(request, timeout=t, metadata=self._metadata)
        except grpc.RpcError as e:
            raise errors.error_from_rpc(e) from None


def connect(target: str, token: Optional[str] = None, **kwargs) -> Client:
    """``Client(target, token, **kwargs)``."""
    return Client(target, token, **kwargs)
