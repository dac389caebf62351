"""What the sync and asyncio clients share: argument checks (the C++ SDK's
ValidateGenerateOptions), request building, channel options and credentials,
and the fold of a Generate stream into chunks and a result."""

from __future__ import annotations

import datetime
import math
import os
import secrets
import stat
import time
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

import grpc

from . import errors
from .types import ChatMessage, FinishReason, GenerateResult, TlsOptions, TokenChunk, Usage
from .v1 import inference_pb2

# How long a unary call (status, tokenize, ...) may take unless told.
DEFAULT_TIMEOUT = 10.0
# How long connecting waits for the server unless told (0: connect lazily).
DEFAULT_CONNECT_TIMEOUT = 5.0
# How long a broken generation stream is tried again unless told (0: never).
DEFAULT_RESUME_WITHIN = 30.0

Timeout = Union[float, int, datetime.timedelta, None]
Message = Union[ChatMessage, dict, Tuple[str, str]]

_INT32_MAX = 2**31 - 1
_UINT64_MAX = 2**64 - 1

# A client that finds the server restarting notices it is back soon.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", 64 << 20),
]


def seconds(timeout: Timeout, what: str = "timeout", allow_none: bool = True) -> Optional[float]:
    """`timeout` in seconds (None: no deadline); INVALID_ARGUMENT unless > 0."""
    if timeout is None:
        if allow_none:
            return None
        raise errors.invalid_argument(f"{what} is required")
    if isinstance(timeout, datetime.timedelta):
        t = timeout.total_seconds()
    elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        t = float(timeout)
    else:
        raise errors.invalid_argument(f"{what} must be a number of seconds (got {timeout!r})")
    if not t > 0 or math.isnan(t):
        raise errors.invalid_argument(f"{what} must be > 0 (got {timeout!r})")
    return None if math.isinf(t) else t


def resume_seconds(resume_within: Timeout) -> float:
    """`resume_within` in seconds: 0 (no resuming), > 0, or inf (as long as
    the call's timeout allows); INVALID_ARGUMENT otherwise."""
    if isinstance(resume_within, datetime.timedelta):
        t = resume_within.total_seconds()
    elif isinstance(resume_within, (int, float)) and not isinstance(resume_within, bool):
        t = float(resume_within)
    else:
        raise errors.invalid_argument(
            f"resume_within must be a number of seconds, 0 for no resuming (got {resume_within!r})")
    if not t >= 0:  # negative or NaN
        raise errors.invalid_argument(f"resume_within must be >= 0 (got {resume_within!r})")
    return t


def connect_seconds(connect_timeout: Timeout) -> float:
    if connect_timeout is None or connect_timeout == 0:
        return 0.0
    t = seconds(connect_timeout, "connect_timeout")
    return 0.0 if t is None else t


def check_target(target: Any) -> str:
    if not isinstance(target, str) or not target:
        raise errors.invalid_argument("empty server address (want unix:///path.sock or host:port)")
    return target


def unix_socket_path(target: str) -> str:
    """The file of a unix-socket target ("unix:///run/paged.sock",
    "unix:rel.sock"); "" for any other target."""
    if not target.startswith("unix:"):
        return ""
    path = target[len("unix:"):]
    return path[2:] if path.startswith("//") else path


def check_unix_socket(target: str) -> None:
    """A clear reason why a unix socket cannot be reached, as an exception."""
    path = unix_socket_path(target)
    if not path:
        return
    where = f"cannot reach paged at {target}: "
    try:
        st = os.stat(path)
    except OSError:
        raise errors.error_from_code(
            grpc.StatusCode.UNAVAILABLE,
            where + f"{path} does not exist (is the server running? paged-up starts one)") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise errors.error_from_code(grpc.StatusCode.UNAVAILABLE, where + f"{path} is not a socket")
    if not os.access(path, os.R_OK | os.W_OK):
        raise errors.error_from_code(grpc.StatusCode.PERMISSION_DENIED,
                                     where + f"no permission to use {path}")


def not_reachable(target: str, connect_timeout: float) -> errors.PagedError:
    return errors.error_from_code(
        grpc.StatusCode.UNAVAILABLE,
        f"cannot reach paged at {target} within {connect_timeout:g}s "
        "(is the server running and listening there?)")


def _read_pem(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        data = b""
    if not data:
        raise errors.invalid_argument(f"{what} {path}: cannot read it")
    return data


def tls_options(tls: Union[TlsOptions, bool, None]) -> Optional[TlsOptions]:
    if tls is None or tls is False:
        return None
    if tls is True:
        return TlsOptions(enable=True)
    if not isinstance(tls, TlsOptions):
        raise errors.invalid_argument(f"tls must be a paged.TlsOptions or a bool (got {tls!r})")
    return tls if tls.enabled else None


def channel_credentials(tls: TlsOptions) -> Tuple[grpc.ChannelCredentials, List[tuple]]:
    """Credentials and extra channel options for a TLS channel."""
    if bool(tls.cert) != bool(tls.key):
        raise errors.invalid_argument("a TLS client certificate needs its key (and the reverse)")
    root = _read_pem(tls.ca, "TLS CA") if tls.ca else None
    cert = _read_pem(tls.cert, "TLS certificate") if tls.cert else None
    key = _read_pem(tls.key, "TLS key") if tls.key else None
    creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key,
                                         certificate_chain=cert)
    extra = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    return creds, extra


def call_metadata(token: Optional[str]) -> Tuple[Tuple[str, str], ...]:
    if token is None or token == "":
        return ()
    if not isinstance(token, str):
        raise errors.invalid_argument("the token must be a str")
    return (("authorization", "Bearer " + token),)


def _int_list(values: Iterable[Any], what: str) -> List[int]:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int):
            raise errors.invalid_argument(f"{what} {i} is not an int ({v!r})")
        if v < 0:
            raise errors.invalid_argument(f"{what} {i} is negative ({v})")
        if v > _INT32_MAX:
            raise errors.invalid_argument(f"{what} {i} is out of range ({v})")
        out.append(v)
    return out


def _chat_message(m: Message, i: int) -> ChatMessage:
    if isinstance(m, ChatMessage):
        msg = m
    elif isinstance(m, dict):
        msg = ChatMessage(m.get("role", ""), m.get("content", ""))
    elif isinstance(m, (tuple, list)) and len(m) == 2:
        msg = ChatMessage(m[0], m[1])
    else:
        raise errors.invalid_argument(
            f"chat message {i} must be a ChatMessage, a {{'role', 'content'}} dict or a "
            f"(role, content) pair (got {m!r})")
    if not isinstance(msg.role, str) or not isinstance(msg.content, str):
        raise errors.invalid_argument(f"chat message {i}: role and content must be str")
    if not msg.role:
        raise errors.invalid_argument(f"chat message {i} has no role")
    return msg


def generate_request(
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
) -> inference_pb2.GenerateRequest:
    """The GenerateRequest for these options, checked the way the server
    would check it (INVALID_ARGUMENT before anything is sent)."""
    if prompt is not None and not isinstance(prompt, str):
        raise errors.invalid_argument(
            f"prompt must be a str (got {type(prompt).__name__}); token ids go in prompt_tokens")
    tokens = _int_list(prompt_tokens or (), "prompt token")
    chat = [_chat_message(m, i) for i, m in enumerate(messages or ())]
    kinds = int(bool(prompt)) + int(bool(tokens)) + int(bool(chat))
    if kinds == 0:
        raise errors.invalid_argument(
            "no prompt: give prompt (text), prompt_tokens (token ids) or messages (chat)")
    if kinds > 1:
        raise errors.invalid_argument(
            "give only one of a text prompt, prompt token ids and chat messages")
    stop_ids = _int_list(stop_token_ids, "stop token id")
    if isinstance(stop_strings, str):
        stop_strings = [stop_strings]
    for s in stop_strings:
        if not isinstance(s, str):
            raise errors.invalid_argument(f"a stop string must be a str (got {s!r})")
        if not s:
            raise errors.invalid_argument("a stop string is empty")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
        raise errors.invalid_argument(f"max_tokens must be > 0 (got {max_tokens!r})")
    if max_tokens > _INT32_MAX:
        raise errors.invalid_argument(f"max_tokens is out of range ({max_tokens})")
    if (not isinstance(temperature, (int, float)) or isinstance(temperature, bool)
            or not math.isfinite(temperature) or temperature < 0):
        raise errors.invalid_argument(f"temperature must be >= 0 (got {temperature!r})")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0 or top_k > _INT32_MAX:
        raise errors.invalid_argument(f"top_k must be >= 0 (got {top_k!r})")
    if (not isinstance(top_p, (int, float)) or isinstance(top_p, bool)
            or not (0.0 < top_p <= 1.0)):
        raise errors.invalid_argument(f"top_p must be in (0, 1] (got {top_p!r})")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _UINT64_MAX:
        raise errors.invalid_argument(f"seed must be an int in [0, 2^64) (got {seed!r})")
    if not isinstance(request_id, str):
        raise errors.invalid_argument(f"request_id must be a str (got {request_id!r})")

    req = inference_pb2.GenerateRequest(
        max_tokens=max_tokens, stop_token_ids=stop_ids, stop_strings=list(stop_strings),
        ignore_eos=bool(ignore_eos), request_id=request_id,
        sampling=inference_pb2.SamplingParams(temperature=float(temperature), top_k=top_k,
                                              top_p=float(top_p), seed=seed))
    if prompt:
        req.text = prompt
    elif chat:
        req.chat.messages.extend(
            inference_pb2.ChatMessage(role=m.role, content=m.content) for m in chat)
        req.chat.add_generation_prompt = bool(add_generation_prompt)
    else:
        req.tokens.ids.extend(tokens)
    return req


def random_request_id() -> str:
    """A request id for a call that gives none and may resume: "req-" and
    128 random bits in hex (the C++ SDK's)."""
    return "req-" + secrets.token_hex(16)


class Resumer:
    """The request of a streaming Generate and when to send it again (the
    C++ SDK's Client::Generate): a stream broken by UNAVAILABLE (the
    coordinator restarted) before its finish reason is sent again under the
    same request_id with ``resume.received`` = the tokens already received,
    after 50 ms, doubling to 1 s, for up to ``resume_within`` seconds from the
    first break (and never past the call's timeout). NOT_FOUND to a resume
    that had received nothing sends the request again as new; with tokens
    received the call fails UNAVAILABLE naming the resume that failed. The
    sync and asyncio generations do the waiting and the calling."""

    FIRST_BACKOFF = 0.05
    MAX_BACKOFF = 1.0

    def __init__(self, request: inference_pb2.GenerateRequest, timeout: Optional[float],
                 resume_within: float) -> None:
        self.request = request
        self.resume_within = resume_within
        if resume_within > 0 and not request.request_id:
            request.request_id = random_request_id()
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._give_up = math.inf  # set at the first break
        self._broke: Optional[errors.PagedError] = None  # why the stream first broke
        self._backoff = self.FIRST_BACKOFF

    def call_timeout(self) -> Optional[float]:
        """The timeout of the next call: what is left of the generation's."""
        if self._deadline is None:
            return None
        return max(self._deadline - time.monotonic(), 1e-3)

    def retry_in(self, error: errors.PagedError, fold: "StreamFold") -> float:
        """After a call that failed with `error`, having folded `fold`: the
        seconds to wait before the next call (its request updated), or raises
        the error the generation fails with."""
        if self.resume_within <= 0 or fold.finish_reason != FinishReason.NONE:
            raise self._broke or error
        if self.request.HasField("resume") and error.code == grpc.StatusCode.NOT_FOUND:
            # No journaled sequence under the id. Nothing received: it never
            # started for us, so it is sent again; else the tokens are lost.
            if fold.token_ids:
                broke = self._broke.details if self._broke is not None else "the stream broke"
                raise errors.error_from_code(
                    grpc.StatusCode.UNAVAILABLE,
                    f"{broke}; resuming request_id '{self.request.request_id}' failed: "
                    f"{error.details}")
            self.request.ClearField("resume")
            return 0.0
        if error.code != grpc.StatusCode.UNAVAILABLE:
            raise self._broke or error
        now = time.monotonic()
        if self._broke is None:
            self._broke = error
            self._give_up = now + self.resume_within
            if self._deadline is not None:
                self._give_up = min(self._give_up, self._deadline)
        wait = self._backoff
        if now + wait > self._give_up:
            raise self._broke
        self._backoff = min(self._backoff * 2, self.MAX_BACKOFF)
        self.request.resume.received = len(fold.token_ids)
        return wait


class StreamFold:
    """Folds GenerateResponse messages into TokenChunks and a GenerateResult
    (as the C++ SDK's Generate does)."""

    def __init__(self, request_id: str) -> None:
        self.token_ids: List[int] = []
        self.texts: List[str] = []
        self.finish_reason = FinishReason.NONE
        self.usage = Usage()
        self.request_id = request_id
        self.sequence_id = 0

    def add(self, msg: inference_pb2.GenerateResponse) -> Optional[TokenChunk]:
        """The chunk `msg` carries (None when it carries no tokens or text)."""
        if msg.sequence_id:
            self.sequence_id = msg.sequence_id
        if msg.request_id:
            self.request_id = msg.request_id
        if msg.finish_reason:
            self.finish_reason = FinishReason.from_proto(msg.finish_reason)
        if msg.HasField("usage"):
            self.usage = Usage.from_proto(msg.usage)
        if not msg.token_ids and not msg.text:
            return None
        chunk = TokenChunk(list(msg.token_ids), msg.text)
        self.token_ids.extend(chunk.token_ids)
        self.texts.append(chunk.text)
        return chunk

    def cancelled(self) -> None:
        """This client cancelled the stream before the server ended it."""
        if self.finish_reason == FinishReason.NONE:
            self.finish_reason = FinishReason.CANCELLED

    def result(self) -> GenerateResult:
        return GenerateResult(list(self.token_ids), "".join(self.texts), self.finish_reason,
                              self.usage, self.request_id, self.sequence_id)
