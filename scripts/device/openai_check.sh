#!/usr/bin/env bash
# The official OpenAI Python client against `paged --http` on the GPU machine
# (bundle carried): stories260K, one CUDA worker. Prints the client's checks.
set -uo pipefail
out=${OUT:-/tmp/out}
bdir=${BUNDLE:-bundle}
B=$bdir/run
mkdir -p "$out"
$B paged-store --model=$bdir/models/stories260K.gguf --segment=oa --kv-gib=0.5 --quiet >"$out/oa-store.log" 2>&1 &
for _ in $(seq 100); do grep -q ready "$out/oa-store.log" && break; sleep 0.1; done
$B paged --segment=oa --listen=unix:///tmp/oa.sock --http=127.0.0.1:8089 --chat-template=chatml >"$out/oa-coord.log" 2>&1 &
for _ in $(seq 100); do grep -q "http listening" "$out/oa-coord.log" && break; sleep 0.1; done
$B paged-worker --segment=oa --coordinator=unix:///tmp/oa.sock --device=cuda:0 --gpu-budget=1GiB >"$out/oa-worker.log" 2>&1 &
for _ in $(seq 100); do grep -q attached "$out/oa-worker.log" && break; sleep 0.1; done
python3 scripts/openai_client_check.py http://127.0.0.1:8089/v1
rc=$?
# Whatever the Python side had: a completion and a streamed chat with curl.
curl -s http://127.0.0.1:8089/v1/completions -H 'Content-Type: application/json' \
  -d '{"model":"stories260K","prompt":"Once upon a time","max_tokens":24,"temperature":0}'; echo
curl -sN http://127.0.0.1:8089/v1/chat/completions -H 'Content-Type: application/json' \
  -d '{"messages":[{"role":"user","content":"Tell me a story."}],"max_tokens":8,"temperature":0,"stream":true}' | tail -3
curl -s http://127.0.0.1:8089/metrics | grep -E "^paged_(generated_tokens_total|requests_total|worker_pcie_bound_fraction|worker_link_h2d)" | head
kill -TERM %3 %2 %1 2>/dev/null; wait
exit $rc
