#!/usr/bin/python3
"""python_sdk_test: the Python SDK (client/python/paged) against a real stack.

paged-up starts paged-store (stories260K, f32), the coordinator (llama2 chat
template, a bearer token) and one CPU worker on a unix socket in a temporary
directory. The package under test is the one `cmake --install --component
python` installs (into a temporary prefix) when PAGED_CMAKE_COMMAND and
PAGED_BINARY_DIR are set, as ctest sets them; else whatever `import paged`
finds (PYTHONPATH=build/client/python).

Checked, sync (paged.Client) and asyncio (paged.aio.AsyncClient): streamed
greedy generation equal to the model's known transcript
(../shared/models/README.md), chunk by chunk; a text prompt equal to its
tokenization; chat; stop strings; tokenize; status, sequences, models,
cancel and drain; server errors (INVALID_ARGUMENT, NOT_FOUND,
UNAUTHENTICATED, DEADLINE_EXCEEDED) as PagedError subclasses carrying the
gRPC code; client-side validation; cancellation by leaving a stream; and
the Admin types (MemoryPlan, WorkerCounters, ...) field for field against
admin.proto, the expert-cache fields included.
Against a fake Inference server (grpc's Python server on a unix socket),
both clients resume a stream broken by UNAVAILABLE (a coordinator restart)
the way the C++ SDK does (tests/unit/client_sdk_test.cc).

Exit 77 (ctest: skipped) when grpc, the fixture or the binaries are missing;
under CI (CI set and not "false") that is a failure instead.
"""

import asyncio
import concurrent.futures
import dataclasses
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SKIP = 77
TRANSCRIPT_TOKENS = 200
FIRST_TOKENS = [403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421]
TOKEN = "py-sdk-test-token"
HERE = os.path.dirname(os.path.abspath(__file__))


def under_ci():
    ci = os.environ.get("CI", "")
    return ci != "" and ci != "false"


def missing(what):
    """A missing prerequisite: skip, or fail under CI."""
    if under_ci():
        print(f"python_sdk_test: {what} (required under CI)", file=sys.stderr)
        sys.exit(1)
    print(f"python_sdk_test: skipped: {what}", file=sys.stderr)
    sys.exit(SKIP)


def source_dir():
    return os.environ.get("PAGED_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))


def binary_dir():
    return os.environ.get("PAGED_BINARY_DIR") or os.path.join(source_dir(), "build")


def models_dir():
    return os.environ.get("PAGED_SHARED_MODELS") or os.path.join(source_dir(), "..", "shared",
                                                                 "models")


def known_transcript():
    """The greedy transcript of ../shared/models/README.md ("" when absent)."""
    try:
        with open(os.path.join(models_dir(), "README.md"), encoding="utf-8") as f:
            readme = f.read()
    except OSError:
        return ""
    at = readme.find("Known output")
    start = readme.find("```\n", at)
    end = readme.find("\n```", start + 4)
    if at < 0 or start < 0 or end < 0:
        return ""
    return readme[start + 4:end]


def install_package(prefix):
    """`cmake --install BUILD --component python --prefix PREFIX`, then that
    copy first on sys.path."""
    cmake = os.environ.get("PAGED_CMAKE_COMMAND")
    if not cmake:
        return None
    r = subprocess.run([cmake, "--install", binary_dir(), "--component", "python", "--prefix",
                        prefix], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout + r.stderr, file=sys.stderr)
        sys.exit(1)
    inits = glob.glob(os.path.join(prefix, "**", "paged", "__init__.py"), recursive=True)
    if len(inits) != 1:
        print(f"python_sdk_test: cmake --install put no single paged/ under {prefix}: {inits}",
              file=sys.stderr)
        sys.exit(1)
    site = os.path.dirname(os.path.dirname(inits[0]))
    sys.path.insert(0, site)
    return site


class Stack:
    """paged-up: store + coordinator + one CPU worker."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.target = "unix://" + os.path.join(tmp, "paged.sock")
        self.segment = f"paged-test-pysdk-{os.getpid()}"
        token_file = os.path.join(tmp, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        self.lines = []
        self._up = threading.Event()
        self.proc = subprocess.Popen(
            [os.path.join(binary_dir(), "launcher", "paged-up"),
             "--model=" + os.path.join(models_dir(), "stories260K.gguf"),
             "--segment=" + self.segment, "--weight-format=f32", "--kv-gib=0.05",
             "--device=cpu", "--workers=1", "--gpu-budget=200MiB", "--listen=" + self.target,
             "--token-file=" + token_file, "--coordinator-args=--chat-template=llama2",
             "--remove-segment", "--start-timeout=60", "--stop-timeout=5"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, errors="replace")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("paged is up: " + self.target):
                self._up.set()

    def wait_up(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self._up.wait(0.1):
                return True
        return False

    def output(self):
        return "".join(self.lines)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        shutil.rmtree(self.tmp, ignore_errors=True)


STACK = None
TRANSCRIPT = known_transcript()


def setUpModule():
    global STACK
    STACK = Stack(tempfile.mkdtemp(prefix="paged-py-", dir="/tmp"))
    if not STACK.wait_up(90):
        out = STACK.output()
        STACK.stop()
        raise RuntimeError("the stack did not come up:\n" + out)


def tearDownModule():
    if STACK is not None:
        STACK.stop()


def finished_early(client, sequence_id, max_tokens, timeout=10.0):
    """The server's record of the sequence once FINISHED (None if it is not
    within `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for s in client.sequences():
            if s.sequence_id == sequence_id and s.state == "FINISHED":
                return s
        time.sleep(0.02)
    return None


def assert_converted(test, value, message):
    """`value` (a paged.types dataclass) has every field of `message` (its
    paged.v1 message) under the same name with the same value."""
    for f in message.DESCRIPTOR.fields:
        if f.message_type is None:
            test.assertEqual(getattr(value, f.name), getattr(message, f.name),
                             f"{type(value).__name__}.{f.name}")


class ConversionTest(unittest.TestCase):
    """The Admin answers' types mirror proto/paged/v1/admin.proto field for
    field, as the C++ SDK's structs do (client/sdk/include/paged/client.h)."""

    PAIRS = [("MemoryPlan", "MemoryPlan"), ("WorkerCounters", "WorkerCounters"),
             ("WorkerInfo", "WorkerInfo"), ("SupervisedProcess", "SupervisedProcess"),
             ("ServiceStatus", "StatusResponse"), ("SequenceInfo", "SequenceInfo"),
             ("ModelInfo", "ModelInfo")]

    def test_every_field_of_the_messages_under_the_same_name(self):
        for py, pb in self.PAIRS:
            names = [f.name for f in dataclasses.fields(getattr(paged, py)) if f.name != "proto"]
            wire = [f.name for f in getattr(admin_pb2, pb).DESCRIPTOR.fields]
            self.assertCountEqual(names, wire, f"{py} vs paged.v1.{pb}")

    def test_every_scalar_field_is_converted_to_its_own(self):
        # A distinct value in every field, so a field read from another fails.
        for py, pb in self.PAIRS:
            m = getattr(admin_pb2, pb)()
            for i, f in enumerate(m.DESCRIPTOR.fields, 1):
                if f.message_type is not None:
                    continue
                if f.type == f.TYPE_STRING:
                    setattr(m, f.name, f"{f.name}-{i}")
                elif f.type == f.TYPE_BOOL:
                    setattr(m, f.name, True)
                elif f.type == f.TYPE_DOUBLE:
                    setattr(m, f.name, i + 0.5)
                else:
                    setattr(m, f.name, 1000 + i)
            assert_converted(self, getattr(paged, py).from_proto(m), m)

    def test_an_expert_paging_worker(self):
        # client_sdk_test.cc's FakeAdmin's cpu:0: 148 of 200 routed experts from its cache.
        w = admin_pb2.WorkerInfo(worker_id="cuda:0", device="cuda", state="ATTACHED",
                                 running_sequences=1, restarts=0)
        w.plan.budget_bytes = 200 << 20
        w.plan.slots = 2
        w.plan.resident_layers = 2
        w.plan.paged_layers = 3
        w.plan.expert_slots = 18
        w.plan.total_experts = 32
        w.plan.expert_cache_bytes = 18 << 20
        c = w.counters
        c.steps, c.tokens, c.h2d_bytes = 40, 900, 50 << 20
        c.expert_hits, c.expert_misses, c.expert_host = 148, 40, 12
        c.expert_evictions, c.expert_admitted, c.expert_prefetched = 30, 5, 0
        c.h2d_expert_bytes, c.host_expert_bytes = 40 << 20, 12 << 20
        c.host_weight_bytes, c.host_share = 30 << 20, 0.84  # and the hybrid step
        info = paged.WorkerInfo.from_proto(w)
        self.assertEqual(info.plan, paged.MemoryPlan(
            budget_bytes=200 << 20, slots=2, resident_layers=2, paged_layers=3,
            expert_slots=18, total_experts=32, expert_cache_bytes=18 << 20))
        self.assertEqual(info.counters, paged.WorkerCounters(
            steps=40, tokens=900, h2d_bytes=50 << 20, expert_hits=148, expert_misses=40,
            expert_host=12, expert_evictions=30, expert_admitted=5, expert_prefetched=0,
            h2d_expert_bytes=40 << 20, host_expert_bytes=12 << 20,
            host_weight_bytes=30 << 20, host_share=0.84))
        status = paged.ServiceStatus.from_proto(admin_pb2.StatusResponse(workers=[w]))
        self.assertEqual(status.workers, [info])


class SyncTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = paged.Client(STACK.target, TOKEN)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def test_streamed_greedy_generation_is_the_known_transcript(self):
        self.assertTrue(TRANSCRIPT)
        with self.client.generate(prompt_tokens=[1], max_tokens=TRANSCRIPT_TOKENS,
                                  request_id="py-sync") as stream:
            chunks = list(stream)
            self.assertGreater(stream.sequence_id, 0)
            r = stream.result()
        self.assertGreater(len(chunks), 1)
        self.assertTrue(all(isinstance(c, paged.TokenChunk) for c in chunks))
        self.assertEqual("".join(c.text for c in chunks), TRANSCRIPT)
        self.assertEqual([t for c in chunks for t in c.token_ids], r.token_ids)
        self.assertEqual(r.text, TRANSCRIPT)
        self.assertEqual(len(r.token_ids), TRANSCRIPT_TOKENS)
        self.assertEqual(r.token_ids[:len(FIRST_TOKENS)], FIRST_TOKENS)
        self.assertIs(r.finish_reason, paged.FinishReason.LENGTH)
        self.assertEqual(r.finish_reason, "length")
        self.assertEqual(r.request_id, "py-sync")
        self.assertEqual(r.usage.prompt_tokens, 1)
        self.assertEqual(r.usage.generated_tokens, TRANSCRIPT_TOKENS)
        self.assertEqual(len(r.usage.step_s), TRANSCRIPT_TOKENS)
        self.assertGreater(r.usage.time_to_first_token_s, 0)
        self.assertGreaterEqual(r.usage.total_s, r.usage.time_to_first_token_s)

    def test_a_text_prompt_generates_what_its_token_ids_do(self):
        tok = self.client.tokenize("Once upon a time")
        self.assertEqual(tok.ids, [1] + FIRST_TOKENS[:4])  # BOS, then the transcript's start
        self.assertEqual(len(tok.pieces), len(tok.ids))
        self.assertEqual(self.client.tokenize("Once upon a time", add_bos=False).ids,
                         FIRST_TOKENS[:4])
        by_text = self.client.generate("Once upon a time", max_tokens=20).result()
        by_ids = self.client.generate(prompt_tokens=tok.ids, max_tokens=20).result()
        self.assertEqual(by_text.token_ids, by_ids.token_ids)
        self.assertEqual(by_text.text, by_ids.text)
        self.assertEqual(by_text.usage.prompt_tokens, len(tok.ids))
        # Greedy after the transcript's first words: the transcript goes on.
        self.assertEqual(by_text.token_ids[:8], FIRST_TOKENS[4:12])

    def test_stop_strings_end_the_text_before_them(self):
        r = self.client.generate(prompt_tokens=[1], max_tokens=60, stop_strings=["Lily"]).result()
        self.assertIs(r.finish_reason, paged.FinishReason.STOP)
        self.assertEqual(r.text, TRANSCRIPT[:TRANSCRIPT.index("Lily")])

    def test_chat(self):
        self.assertEqual(self.client.models()[0].chat_template, "llama2")
        forms = [
            [("user", "Once upon a time")],
            [{"role": "user", "content": "Once upon a time"}],
            [paged.ChatMessage("user", "Once upon a time")],
        ]
        results = [self.client.chat(m, max_tokens=24).result() for m in forms]
        r = results[0]
        self.assertTrue(r.token_ids)
        self.assertTrue(r.text)
        self.assertIn(r.finish_reason, (paged.FinishReason.LENGTH, paged.FinishReason.EOS,
                                        paged.FinishReason.STOP))
        self.assertGreater(r.usage.prompt_tokens, 5)  # [INST] ... [/INST] around the text
        for other in results[1:]:  # greedy: the same reply however the messages are given
            self.assertEqual(other.token_ids, r.token_ids)
        # Through generate(messages=...) too.
        again = self.client.generate(messages=forms[0], max_tokens=24).result()
        self.assertEqual(again.token_ids, r.token_ids)

    def test_server_errors_are_exceptions_with_the_grpc_code(self):
        with self.assertRaises(paged.InvalidArgumentError) as e:
            self.client.chat([("robot", "beep")]).result()
        self.assertIsInstance(e.exception, paged.PagedError)
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("role 'robot'", e.exception.details)
        self.assertTrue(str(e.exception).startswith("INVALID_ARGUMENT: "))

        stream = self.client.generate(prompt_tokens=[1, 100000], max_tokens=3)
        with self.assertRaises(paged.InvalidArgumentError) as e:
            next(stream)
        self.assertIn("outside the vocabulary", e.exception.details)
        with self.assertRaises(paged.InvalidArgumentError):  # and again from result()
            stream.result()

        with self.assertRaises(paged.NotFoundError) as e:
            self.client.cancel(10**12)
        self.assertEqual(e.exception.code, grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(paged.NotFoundError):
            self.client.drain("no-such-worker")

    def test_deadline(self):
        with self.assertRaises(paged.DeadlineExceededError) as e:
            self.client.generate(prompt_tokens=[1], max_tokens=2000, ignore_eos=True,
                                 timeout=0.05).result()
        self.assertEqual(e.exception.code, grpc.StatusCode.DEADLINE_EXCEEDED)

    def test_bearer_token(self):
        with paged.Client(STACK.target) as anonymous:
            with self.assertRaises(paged.UnauthenticatedError) as e:
                anonymous.status()
            self.assertIn("bearer token is required", e.exception.details)
            with self.assertRaises(paged.UnauthenticatedError):
                anonymous.generate(prompt_tokens=[1], max_tokens=2).result()
        with paged.Client(STACK.target, "wrong") as wrong:
            with self.assertRaises(paged.UnauthenticatedError) as e:
                wrong.tokenize("x")
            self.assertIn("wrong", e.exception.details)

    def test_bad_arguments_are_refused_before_anything_is_sent(self):
        before = len(self.client.sequences())
        bad = [
            dict(),
            dict(prompt=""),
            dict(prompt="x", prompt_tokens=[1]),
            dict(prompt="x", messages=[("user", "y")]),
            dict(prompt=[1, 2]),
            dict(prompt_tokens=[1, -2]),
            dict(prompt_tokens=[1, "2"]),
            dict(prompt_tokens=[1], max_tokens=0),
            dict(prompt_tokens=[1], temperature=-1.0),
            dict(prompt_tokens=[1], temperature=float("nan")),
            dict(prompt_tokens=[1], top_k=-1),
            dict(prompt_tokens=[1], top_p=0.0),
            dict(prompt_tokens=[1], top_p=1.5),
            dict(prompt_tokens=[1], stop_strings=[""]),
            dict(prompt_tokens=[1], stop_token_ids=[-1]),
            dict(prompt_tokens=[1], seed=-1),
            dict(prompt_tokens=[1], timeout=0),
            dict(messages=[("", "no role")]),
        ]
        for kwargs in bad:
            with self.subTest(kwargs=kwargs):
                with self.assertRaises(paged.InvalidArgumentError) as e:
                    self.client.generate(**kwargs)
                self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIsInstance(e.exception, ValueError)
        for call in (lambda: self.client.chat([]), lambda: self.client.status(timeout=-1),
                     lambda: self.client.drain(""), lambda: self.client.cancel(-1),
                     lambda: self.client.tokenize(b"bytes")):
            with self.assertRaises(paged.InvalidArgumentError):
                call()
        self.assertEqual(len(self.client.sequences()), before)

    def test_connecting(self):
        with self.assertRaises(paged.InvalidArgumentError):
            paged.Client("")
        with self.assertRaises(paged.UnavailableError) as e:
            paged.Client("unix:///nonexistent/paged.sock")
        self.assertIn("does not exist", e.exception.details)
        with self.assertRaises(paged.UnavailableError) as e:
            paged.Client("127.0.0.1:1", connect_timeout=0.3)
        self.assertIn("cannot reach paged at 127.0.0.1:1", e.exception.details)
        with self.assertRaises(paged.InvalidArgumentError) as e:
            paged.Client(STACK.target, tls=paged.TlsOptions(cert="/etc/hostname"))
        self.assertIn("needs its key", e.exception.details)
        with self.assertRaises(paged.InvalidArgumentError) as e:
            paged.Client(STACK.target, tls=paged.TlsOptions(ca="/nonexistent/ca.pem"))
        self.assertIn("TLS CA /nonexistent/ca.pem: cannot read it", e.exception.details)
        lazy = paged.connect(STACK.target, TOKEN, connect_timeout=0)
        self.assertTrue(lazy.status().ready)
        lazy.close()

    def test_admin_calls(self):
        s = self.client.status()
        self.assertIsInstance(s, paged.ServiceStatus)
        self.assertTrue(s.ready, s.not_ready_reason)
        self.assertEqual(s.store_state, "READY")
        self.assertTrue(s.store_alive)
        self.assertGreater(s.store_pid, 0)
        self.assertIn("llama", s.model)
        self.assertGreater(s.kv_blocks_total, 0)
        self.assertEqual([(w.worker_id, w.state) for w in s.workers], [("cpu:0", "ATTACHED")])
        self.assertGreater(s.workers[0].plan.budget_bytes, 0)
        self.assertEqual(s.proto.workers[0].worker_id, "cpu:0")
        # The conversion of the server's answer, field for field.
        assert_converted(self, s.workers[0].plan, s.proto.workers[0].plan)
        assert_converted(self, s.workers[0].counters, s.proto.workers[0].counters)
        # A dense model's worker pages whole layers: no expert cache.
        plan = s.workers[0].plan
        self.assertEqual((plan.expert_slots, plan.total_experts, plan.expert_cache_bytes),
                         (0, 0, 0))
        m = self.client.models()
        self.assertEqual(len(m), 1)
        self.assertEqual((m[0].architecture, m[0].vocab_size, m[0].n_layers), ("llama", 512, 5))

        r = self.client.generate(prompt_tokens=[1], max_tokens=8, request_id="py-seq").result()
        seqs = {q.sequence_id: q for q in self.client.sequences()}
        self.assertIn(r.sequence_id, seqs)
        q = seqs[r.sequence_id]
        self.assertEqual((q.request_id, q.state, q.prompt_tokens, q.generated_tokens),
                         ("py-seq", "FINISHED", 1, 8))
        counters = self.client.status().workers[0].counters
        self.assertGreater(counters.tokens, 0)
        self.assertEqual(counters.expert_hits + counters.expert_misses + counters.expert_host, 0)
        self.assertEqual(counters.h2d_expert_bytes, 0)
        self.assertEqual((counters.host_weight_bytes, counters.host_share), (0, 0.0))

    def test_admin_cancel_ends_a_stream_with_cancelled(self):
        with self.client.generate(prompt_tokens=[1], max_tokens=2000, ignore_eos=True) as stream:
            next(stream)
            self.client.cancel(stream.sequence_id)
            r = stream.result()
        self.assertIs(r.finish_reason, paged.FinishReason.CANCELLED)
        self.assertLess(len(r.token_ids), 2000)

    def test_leaving_a_stream_cancels_its_sequence(self):
        max_tokens = 2000
        with self.client.generate(prompt_tokens=[1], max_tokens=max_tokens,
                                  ignore_eos=True) as stream:
            for i, _ in enumerate(stream):
                if i == 2:
                    break
            sid = stream.sequence_id
        self.assertIs(stream.result().finish_reason, paged.FinishReason.CANCELLED)
        # Not cancelled, it would run on or be PAUSED for its unread tokens.
        q = finished_early(self.client, sid, max_tokens)
        self.assertIsNotNone(q, f"sequence {sid} still not finished")
        self.assertLess(q.generated_tokens, max_tokens)

        # A plain break, the stream then dropped.
        stream = self.client.generate(prompt_tokens=[1], max_tokens=max_tokens, ignore_eos=True)
        for _ in stream:
            break
        sid = stream.sequence_id
        del stream
        q = finished_early(self.client, sid, max_tokens)
        self.assertIsNotNone(q, f"sequence {sid} still not finished")
        self.assertLess(q.generated_tokens, max_tokens)


class AsyncTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.client = await paged.aio.AsyncClient.connect(STACK.target, TOKEN)

    async def asyncTearDown(self):
        await self.client.close()

    async def transcript(self, request_id=""):
        async with self.client.generate(prompt_tokens=[1], max_tokens=TRANSCRIPT_TOKENS,
                                        request_id=request_id) as stream:
            texts = [c.text async for c in stream]
            return texts, await stream.result()

    async def test_streamed_greedy_generation_is_the_known_transcript(self):
        texts, r = await self.transcript("py-async")
        self.assertGreater(len(texts), 1)
        self.assertEqual("".join(texts), TRANSCRIPT)
        self.assertEqual(r.text, TRANSCRIPT)
        self.assertEqual(r.token_ids[:len(FIRST_TOKENS)], FIRST_TOKENS)
        self.assertIs(r.finish_reason, paged.FinishReason.LENGTH)
        self.assertEqual(r.request_id, "py-async")
        self.assertEqual(r.usage.generated_tokens, TRANSCRIPT_TOKENS)

    async def test_concurrent_streams_on_one_client(self):
        results = await asyncio.gather(*(self.transcript() for _ in range(4)))
        for texts, r in results:
            self.assertEqual(r.text, TRANSCRIPT)
        self.assertEqual(len({r.sequence_id for _, r in results}), 4)

    async def test_unary_calls(self):
        tok = await self.client.tokenize("Once upon a time")
        self.assertEqual(tok.ids, [1] + FIRST_TOKENS[:4])
        s = await self.client.status()
        self.assertTrue(s.ready)
        self.assertEqual(s.workers[0].worker_id, "cpu:0")
        self.assertEqual((await self.client.models())[0].chat_template, "llama2")
        self.assertIsInstance(await self.client.sequences(), list)
        with self.assertRaises(paged.NotFoundError):
            await self.client.cancel(10**12)

    async def test_chat_equals_the_sync_reply(self):
        r = await self.client.chat([("user", "Once upon a time")], max_tokens=24).result()

        def sync_reply():
            with paged.Client(STACK.target, TOKEN) as sync:
                return sync.chat([("user", "Once upon a time")], max_tokens=24).result()

        want = await asyncio.to_thread(sync_reply)
        self.assertEqual(r.token_ids, want.token_ids)
        self.assertEqual(r.text, want.text)

    async def test_errors(self):
        with self.assertRaises(paged.InvalidArgumentError) as e:
            async for _ in self.client.chat([("robot", "beep")]):
                pass
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(paged.InvalidArgumentError):
            self.client.generate(prompt_tokens=[1], max_tokens=0)
        async with paged.AsyncClient(STACK.target) as anonymous:  # lazy import via paged
            with self.assertRaises(paged.UnauthenticatedError):
                await anonymous.status()
        with self.assertRaises(paged.UnavailableError):
            await paged.aio.connect("unix:///nonexistent/paged.sock")
        with self.assertRaises(paged.DeadlineExceededError):
            await self.client.generate(prompt_tokens=[1], max_tokens=2000, ignore_eos=True,
                                       timeout=0.05).result()

    async def test_leaving_a_stream_cancels_its_sequence(self):
        async with self.client.generate(prompt_tokens=[1], max_tokens=2000,
                                        ignore_eos=True) as stream:
            n = 0
            async for _ in stream:
                n += 1
                if n == 3:
                    break
            sid = stream.sequence_id
        r = await stream.result()
        self.assertIs(r.finish_reason, paged.FinishReason.CANCELLED)

        def server_record():
            with paged.Client(STACK.target, TOKEN) as sync:
                return finished_early(sync, sid, 2000)

        q = await asyncio.to_thread(server_record)
        self.assertIsNotNone(q, f"sequence {sid} still not finished")
        self.assertLess(q.generated_tokens, 2000)


class FakeInference:
    """An Inference server standing in for a restarting coordinator (the C++
    SDK test's FakeInference): a request with text "fail-midway" breaks with
    UNAVAILABLE after two tokens and a resume continues it; "forgotten" breaks
    the same way and a resume is answered NOT_FOUND (no journal); "early"
    breaks before any token, a resume is NOT_FOUND and the request sent again
    as new is served; "down" is always UNAVAILABLE. Token i is 100 + i, text
    "t<i> " (token 1 ends mid-character: no text), max_tokens of them, the
    last with finish LENGTH and usage."""

    BROKE = "worker lost and no other worker"

    def __init__(self, tmp):
        self.calls = []  # each Generate's (request_id, resume.received or -1)
        self._mu = threading.Lock()
        self._seen = {}  # request_id -> Generates without resume
        self.target = "unix://" + os.path.join(tmp, "fake.sock")
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.unary_stream_rpc_method_handler(
            self._generate, request_deserializer=inference_pb2.GenerateRequest.FromString,
            response_serializer=inference_pb2.GenerateResponse.SerializeToString)
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "paged.v1.Inference", {"Generate": handler}),))
        self.server.add_insecure_port(self.target)
        self.server.start()

    def stop(self):
        self.server.stop(0).wait()

    def take_calls(self):
        with self._mu:
            calls, self.calls = self.calls, []
        return calls

    def _generate(self, req, context):
        resuming = req.HasField("resume")
        with self._mu:
            self.calls.append((req.request_id, req.resume.received if resuming else -1))
            if not resuming:
                self._seen[req.request_id] = self._seen.get(req.request_id, 0) + 1
            first = self._seen.get(req.request_id, 0) == 1
        if req.text == "down":
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection refused")
        if resuming and req.text in ("forgotten", "early"):
            context.abort(grpc.StatusCode.NOT_FOUND, "no sequence to resume")
        if req.text == "early" and first:
            context.abort(grpc.StatusCode.UNAVAILABLE, self.BROKE)
        n = req.max_tokens
        for i in range(req.resume.received if resuming else 0, n):
            if req.text in ("fail-midway", "forgotten") and not resuming and i == 2:
                context.abort(grpc.StatusCode.UNAVAILABLE, self.BROKE)
            m = inference_pb2.GenerateResponse(token_ids=[100 + i], sequence_id=7,
                                               request_id=req.request_id)
            if i != 1:
                m.text = f"t{i} "
            if i == n - 1:
                m.finish_reason = inference_pb2.GenerateResponse.LENGTH
                m.usage.prompt_tokens = len(req.text)
                m.usage.generated_tokens = n
            yield m


WHOLE = [100, 101, 102, 103, 104]


class ResumeTest(unittest.TestCase):
    """paged.Client resumes a broken stream (the C++ SDK's
    ABrokenStreamIsResumedWhereItBroke)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="paged-py-fake-", dir="/tmp")
        cls.fake = FakeInference(cls.tmp)
        cls.client = paged.Client(cls.fake.target)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.fake.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.fake.take_calls()

    def test_a_broken_stream_is_resumed_where_it_broke(self):
        with self.client.generate("fail-midway", max_tokens=5) as stream:
            seen = [t for c in stream for t in c.token_ids]
            r = stream.result()
        self.assertEqual(seen, WHOLE)  # each token once
        self.assertEqual(r.token_ids, WHOLE)
        self.assertEqual(r.text, "t0 t2 t3 t4 ")
        self.assertIs(r.finish_reason, paged.FinishReason.LENGTH)
        self.assertEqual(r.usage.generated_tokens, 5)
        calls = self.fake.take_calls()
        self.assertEqual(len(calls), 2, calls)
        rid = calls[0][0]
        self.assertRegex(rid, r"^req-[0-9a-f]{32}$")  # made up: none given
        self.assertEqual(calls, [(rid, -1), (rid, 2)])
        self.assertEqual(r.request_id, rid)
        self.assertEqual(stream.request_id, rid)

        # The whole-result form, and chat's options, the same way.
        r = self.client.generate("fail-midway", max_tokens=5, request_id="mine").result()
        self.assertEqual(r.token_ids, WHOLE)
        self.assertEqual(self.fake.take_calls(), [("mine", -1), ("mine", 2)])

    def test_a_stream_the_server_forgot_fails_naming_the_resume(self):
        stream = self.client.generate("forgotten", max_tokens=5, request_id="mine")
        chunks = []
        with self.assertRaises(paged.UnavailableError) as e:
            for c in stream:
                chunks.append(c)
        self.assertEqual([t for c in chunks for t in c.token_ids], [100, 101])
        self.assertEqual(e.exception.code, grpc.StatusCode.UNAVAILABLE)
        self.assertIn("resuming request_id 'mine' failed", e.exception.details)
        self.assertIn("no sequence to resume", e.exception.details)
        self.assertIn(FakeInference.BROKE, e.exception.details)
        with self.assertRaises(paged.UnavailableError):  # and again from result()
            stream.result()
        self.assertEqual(self.fake.take_calls(), [("mine", -1), ("mine", 2)])

    def test_a_request_that_received_nothing_is_sent_again_when_unknown(self):
        r = self.client.generate("early", max_tokens=3).result()
        self.assertEqual(r.token_ids, [100, 101, 102])
        calls = self.fake.take_calls()
        rid = calls[0][0]
        self.assertEqual(calls, [(rid, -1), (rid, 0), (rid, -1)])

    def test_resume_within_zero_raises_at_once(self):
        stream = self.client.generate("fail-midway", max_tokens=5, resume_within=0)
        chunks = []
        with self.assertRaises(paged.UnavailableError) as e:
            for c in stream:
                chunks.append(c)
        self.assertEqual(e.exception.details, FakeInference.BROKE)
        self.assertEqual(len(chunks), 2)  # what came before the error stays returned
        self.assertEqual(self.fake.take_calls(), [("", -1)])  # no id made up, no retry

    def test_giving_up_raises_the_break(self):
        with self.assertRaises(paged.UnavailableError) as e:
            self.client.generate("down", max_tokens=3, resume_within=0.2).result()
        self.assertEqual(e.exception.details, "connection refused")
        calls = self.fake.take_calls()
        self.assertGreater(len(calls), 1)
        self.assertEqual(calls[1:], [(calls[0][0], 0)] * (len(calls) - 1))

    def test_cancelling_while_waiting_to_resume_ends_the_stream(self):
        stream = self.client.generate("down", max_tokens=3, resume_within=60)
        timer = threading.Timer(0.2, stream.cancel)
        timer.start()
        r = stream.result()  # not 60 s
        timer.join()
        self.assertIs(r.finish_reason, paged.FinishReason.CANCELLED)

    def test_bad_resume_within_is_refused(self):
        for bad in (-1, float("nan"), "30", None, True):
            with self.subTest(resume_within=bad):
                with self.assertRaises(paged.InvalidArgumentError):
                    self.client.generate("fail-midway", resume_within=bad)
        self.assertEqual(self.fake.take_calls(), [])


class AsyncResumeTest(unittest.IsolatedAsyncioTestCase):
    """paged.aio.AsyncClient resumes a broken stream as paged.Client does."""

    async def asyncSetUp(self):
        self.tmp = tempfile.mkdtemp(prefix="paged-py-fake-", dir="/tmp")
        self.fake = FakeInference(self.tmp)
        self.client = await paged.aio.AsyncClient.connect(self.fake.target)

    async def asyncTearDown(self):
        await self.client.close()
        self.fake.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    async def test_a_broken_stream_is_resumed_where_it_broke(self):
        async with self.client.generate("fail-midway", max_tokens=5) as stream:
            seen = [t async for c in stream for t in c.token_ids]
            r = await stream.result()
        self.assertEqual(seen, WHOLE)
        self.assertEqual(r.token_ids, WHOLE)
        self.assertIs(r.finish_reason, paged.FinishReason.LENGTH)
        calls = self.fake.take_calls()
        rid = calls[0][0]
        self.assertRegex(rid, r"^req-[0-9a-f]{32}$")
        self.assertEqual(calls, [(rid, -1), (rid, 2)])
        self.assertEqual(r.request_id, rid)

        r = await self.client.generate("early", max_tokens=3).result()
        self.assertEqual(r.token_ids, [100, 101, 102])
        calls = self.fake.take_calls()
        self.assertEqual(calls, [(calls[0][0], -1), (calls[0][0], 0), (calls[0][0], -1)])

    async def test_a_stream_the_server_forgot_fails_naming_the_resume(self):
        chunks = []
        with self.assertRaises(paged.UnavailableError) as e:
            async for c in self.client.generate("forgotten", max_tokens=5, request_id="mine"):
                chunks.append(c)
        self.assertEqual(len(chunks), 2)
        self.assertIn("resuming request_id 'mine' failed", e.exception.details)
        self.assertEqual(self.fake.take_calls(), [("mine", -1), ("mine", 2)])

    async def test_resume_within_zero_raises_at_once(self):
        with self.assertRaises(paged.UnavailableError) as e:
            await self.client.generate("fail-midway", max_tokens=5, resume_within=0).result()
        self.assertEqual(e.exception.details, FakeInference.BROKE)
        self.assertEqual(self.fake.take_calls(), [("", -1)])

    async def test_cancelling_while_waiting_to_resume_ends_the_stream(self):
        stream = self.client.generate("down", max_tokens=3, resume_within=60)
        asyncio.get_running_loop().call_later(0.2, stream.cancel)
        r = await stream.result()
        self.assertIs(r.finish_reason, paged.FinishReason.CANCELLED)


def main():
    global paged, grpc, admin_pb2, inference_pb2
    try:
        import grpc  # noqa: F401
        import grpc.aio  # noqa: F401
    except ImportError as e:
        missing(f"no grpc module in {sys.executable} ({e}; bash scripts/install-deps.sh)")
    if not os.path.exists(os.path.join(models_dir(), "stories260K.gguf")) or not TRANSCRIPT:
        missing("../shared/models/stories260K.gguf (and its README.md) not present")
    if not os.access(os.path.join(binary_dir(), "launcher", "paged-up"), os.X_OK):
        missing(f"no {binary_dir()}/launcher/paged-up (build it)")
    with tempfile.TemporaryDirectory(prefix="paged-py-install-") as prefix:
        site = install_package(prefix)
        import grpc
        import paged
        import paged.aio
        from paged.v1 import admin_pb2, inference_pb2
        print(f"python_sdk_test: paged {paged.__version__} from {os.path.dirname(paged.__file__)}"
              f" on python {sys.version.split()[0]}, grpc {grpc.__version__}", file=sys.stderr)
        if site is not None and not paged.__file__.startswith(site):
            print(f"python_sdk_test: imported {paged.__file__}, not the installed copy",
                  file=sys.stderr)
            return 1
        prog = unittest.main(module=__name__, argv=[sys.argv[0]] + sys.argv[1:], exit=False,
                             verbosity=2)
        return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
