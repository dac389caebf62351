"""Typed results: plain dataclasses, built from the paged.v1 messages.

Every field of proto/paged/v1/admin.proto and inference.proto that a client
sees is here under the same name; the raw message stays reachable where a
result comes from one (``ServiceStatus.proto``) for fields added later.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, List, Optional

from .v1 import admin_pb2, inference_pb2

__all__ = [
    "FinishReason",
    "ChatMessage",
    "TokenChunk",
    "Usage",
    "GenerateResult",
    "Tokenization",
    "MemoryPlan",
    "WorkerCounters",
    "WorkerInfo",
    "SupervisedProcess",
    "ServiceStatus",
    "SequenceInfo",
    "ModelInfo",
    "TlsOptions",
]


class FinishReason(str, enum.Enum):
    """Why a generation ended (common/finish_reason.h's names). A str, so
    ``result.finish_reason == "length"`` holds."""

    NONE = ""  # still running, or the stream ended without saying
    LENGTH = "length"  # max_tokens reached
    STOP = "stop"  # a stop token id or a stop string
    EOS = "eos"  # the model's end-of-sequence token
    CANCELLED = "cancelled"  # Admin cancel, or this client cancelled the stream
    ERROR = "error"  # the sequence failed

    def __str__(self) -> str:
        return self.value

    @classmethod
    def from_proto(cls, r: int) -> "FinishReason":
        G = inference_pb2.GenerateResponse
        return {
            G.LENGTH: cls.LENGTH,
            G.STOP: cls.STOP,
            G.EOS: cls.EOS,
            G.CANCELLED: cls.CANCELLED,
            G.ERROR: cls.ERROR,
        }.get(r, cls.NONE)


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation."""

    role: str  # "system", "user" or "assistant"
    content: str


@dataclass(frozen=True)
class TokenChunk:
    """One streamed message: the tokens the server committed since the last
    one, in order (each exactly once), and their text. The text may be empty
    when a token ends mid-character; it then comes with a later chunk."""

    token_ids: List[int]
    text: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    time_to_first_token_s: float = 0.0
    total_s: float = 0.0
    step_s: List[float] = field(default_factory=list)  # each step that produced a token
    cached_prompt_tokens: int = 0  # prompt tokens whose KV came from the prefix cache

    @classmethod
    def from_proto(cls, u: inference_pb2.Usage) -> "Usage":
        return cls(u.prompt_tokens, u.generated_tokens, u.time_to_first_token_s, u.total_s,
                   list(u.step_s), u.cached_prompt_tokens)


@dataclass(frozen=True)
class GenerateResult:
    """A whole generation: every token, the text (stop strings not included),
    why it ended, usage, the request id and the server's sequence id."""

    token_ids: List[int]
    text: str
    finish_reason: FinishReason
    usage: Usage
    request_id: str = ""
    sequence_id: int = 0  # Client.cancel() takes it


@dataclass(frozen=True)
class Tokenization:
    """The model's token ids for a text, and each token's piece."""

    ids: List[int]
    pieces: List[str]


@dataclass(frozen=True)
class MemoryPlan:
    """How a worker lays the model out on its device."""

    budget_bytes: int = 0
    planned_bytes: int = 0
    slots: int = 0
    resident_layers: int = 0
    paged_layers: int = 0
    kv_cache_blocks: int = 0
    paged_bytes_per_step: int = 0
    text: str = ""  # as the worker prints it
    link_h2d_bytes_per_s: float = 0.0  # measured host-to-device bandwidth; 0: not measured
    # Expert-level paging: the device expert cache's slots of all the experts
    # (0: whole layers are paged).
    expert_slots: int = 0
    total_experts: int = 0
    expert_cache_bytes: int = 0

    @classmethod
    def from_proto(cls, p: admin_pb2.MemoryPlan) -> "MemoryPlan":
        return cls(
            budget_bytes=p.budget_bytes, planned_bytes=p.planned_bytes, slots=p.slots,
            resident_layers=p.resident_layers, paged_layers=p.paged_layers,
            kv_cache_blocks=p.kv_cache_blocks, paged_bytes_per_step=p.paged_bytes_per_step,
            text=p.text, link_h2d_bytes_per_s=p.link_h2d_bytes_per_s,
            expert_slots=p.expert_slots, total_experts=p.total_experts,
            expert_cache_bytes=p.expert_cache_bytes)


@dataclass(frozen=True)
class WorkerCounters:
    steps: int = 0
    tokens: int = 0
    h2d_bytes: int = 0
    d2h_bytes: int = 0
    busy_s: float = 0.0  # time spent in steps
    # Expert-level paging: routed experts found in the expert cache (hits),
    # copied in over the link (misses) or computed by the host in place.
    expert_hits: int = 0
    expert_misses: int = 0
    expert_host: int = 0
    expert_evictions: int = 0
    expert_admitted: int = 0  # host-computed experts also copied in for later steps
    expert_prefetched: int = 0  # copied in ahead, on the next layer's predicted routing
    h2d_expert_bytes: int = 0  # of h2d_bytes: experts copied in
    host_expert_bytes: int = 0  # experts the host computed in place
    # The hybrid step (docs/hybrid.md): weight bytes the host read in place
    # (its rows of the paged matrices and its experts), and its current share
    # of each paged matrix at one token row (a gauge; 0 without the step).
    host_weight_bytes: int = 0
    host_share: float = 0.0

    @classmethod
    def from_proto(cls, c: admin_pb2.WorkerCounters) -> "WorkerCounters":
        return cls(
            steps=c.steps, tokens=c.tokens, h2d_bytes=c.h2d_bytes, d2h_bytes=c.d2h_bytes,
            busy_s=c.busy_s, expert_hits=c.expert_hits, expert_misses=c.expert_misses,
            expert_host=c.expert_host, expert_evictions=c.expert_evictions,
            expert_admitted=c.expert_admitted, expert_prefetched=c.expert_prefetched,
            h2d_expert_bytes=c.h2d_expert_bytes, host_expert_bytes=c.host_expert_bytes,
            host_weight_bytes=c.host_weight_bytes, host_share=c.host_share)


@dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    device: str
    state: str  # ATTACHED, DRAINING, DRAINED, GONE
    plan: MemoryPlan
    running_sequences: int
    counters: WorkerCounters
    restarts: int

    @classmethod
    def from_proto(cls, w: admin_pb2.WorkerInfo) -> "WorkerInfo":
        return cls(w.worker_id, w.device, w.state, MemoryPlan.from_proto(w.plan),
                   w.running_sequences, WorkerCounters.from_proto(w.counters), w.restarts)


@dataclass(frozen=True)
class SupervisedProcess:
    """One child of a supervisor (paged-up)."""

    name: str  # "store", "coordinator", "worker cpu:0"
    state: str  # RUNNING, RESTARTING, CRASH_LOOP, EXITED, FAILED
    pid: int = 0
    restarts: int = 0
    failures_in_a_row: int = 0
    last_exit: str = ""
    next_restart_s: float = 0.0

    @classmethod
    def from_proto(cls, p: admin_pb2.SupervisedProcess) -> "SupervisedProcess":
        return cls(p.name, p.state, p.pid, p.restarts, p.failures_in_a_row, p.last_exit,
                   p.next_restart_s)

    def to_proto(self) -> admin_pb2.SupervisedProcess:
        return admin_pb2.SupervisedProcess(
            name=self.name, state=self.state, pid=self.pid, restarts=self.restarts,
            failures_in_a_row=self.failures_in_a_row, last_exit=self.last_exit,
            next_restart_s=self.next_restart_s)


@dataclass(frozen=True)
class ServiceStatus:
    """The service as a whole (Admin.Status)."""

    model: str
    segment: str
    store_state: str  # READY, ...
    workers: List[WorkerInfo]
    queue_depth: int
    running_sequences: int
    tokens_per_s: float
    bytes_paged_per_s: float
    kv_blocks_total: int
    kv_blocks_used: int
    kv_blocks_cached: int  # published in the prefix cache
    waiting_for_kv: int  # preempted sequences waiting for blocks
    kv_preemptions: int
    prompt_tokens: int  # of the sequences that started
    cached_prompt_tokens: int  # of those, taken from the prefix cache
    kv_cache_evictions: int
    ready: bool
    not_ready_reason: str
    store_pid: int
    store_alive: bool
    supervised: List[SupervisedProcess]
    supervised_report_age_s: float
    proto: Any = field(default=None, repr=False, compare=False)  # the StatusResponse

    @classmethod
    def from_proto(cls, r: admin_pb2.StatusResponse) -> "ServiceStatus":
        return cls(
            model=r.model, segment=r.segment, store_state=r.store_state,
            workers=[WorkerInfo.from_proto(w) for w in r.workers],
            queue_depth=r.queue_depth, running_sequences=r.running_sequences,
            tokens_per_s=r.tokens_per_s, bytes_paged_per_s=r.bytes_paged_per_s,
            kv_blocks_total=r.kv_blocks_total, kv_blocks_used=r.kv_blocks_used,
            kv_blocks_cached=r.kv_blocks_cached, waiting_for_kv=r.waiting_for_kv,
            kv_preemptions=r.kv_preemptions, prompt_tokens=r.prompt_tokens,
            cached_prompt_tokens=r.cached_prompt_tokens,
            kv_cache_evictions=r.kv_cache_evictions,
            ready=r.ready, not_ready_reason=r.not_ready_reason,
            store_pid=r.store_pid, store_alive=r.store_alive,
            supervised=[SupervisedProcess.from_proto(p) for p in r.supervised],
            supervised_report_age_s=r.supervised_report_age_s, proto=r)


@dataclass(frozen=True)
class SequenceInfo:
    sequence_id: int
    request_id: str
    state: str  # QUEUED, RUNNING, FINISHED, HELD, PAUSED
    worker_id: str
    prompt_tokens: int
    generated_tokens: int

    @classmethod
    def from_proto(cls, s: admin_pb2.SequenceInfo) -> "SequenceInfo":
        return cls(s.sequence_id, s.request_id, s.state, s.worker_id, s.prompt_tokens,
                   s.generated_tokens)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    architecture: str
    n_layers: int
    hidden_size: int
    vocab_size: int
    max_context: int
    weight_format: str
    chat_template: str  # "chatml", "llama2", ...; "" when chat prompts are refused

    @classmethod
    def from_proto(cls, m: admin_pb2.ModelInfo) -> "ModelInfo":
        return cls(m.name, m.architecture, m.n_layers, m.hidden_size, m.vocab_size,
                   m.max_context, m.weight_format, m.chat_template)


@dataclass(frozen=True)
class TlsOptions:
    """TLS to the server (proto/channel.h's ClientTls): the server's CA
    (``ca``) or the system's roots (``enable``); a client certificate when the
    server asks for one (``cert`` and ``key``). All are PEM file paths."""

    enable: bool = False
    ca: Optional[str] = None
    cert: Optional[str] = None
    key: Optional[str] = None
    # The name the server's certificate must carry (None: the target's host).
    server_name: Optional[str] = None

    @property
    def enabled(self) -> bool:
        return bool(self.enable or self.ca or self.cert)
