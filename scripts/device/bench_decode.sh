#!/usr/bin/env bash
# Batch-1 decode on the GPU machine, hybrid vs paged, in our formats and in
# llama.cpp's Q4_K_M read as stored: the CPU executor's decode kernels at
# DECODE_ROWS_LIST (1 4) weight rows per tile (PAGED_CPU_EXEC_DECODE_ROWS), then a
# llama-7b-shaped model (LAYERS=32) on a 4 GiB budget. Carry .device with
# bundle.tar.xz (make_bundle.sh) and llama-tools.tar.xz: llama-quantize and a
# CPU llama-bench packed by ../shared/tools/device-bundle.sh, with gguf-py
# (baselines and converters only, never part of the product). Logs under
# $OUT, a table last.
set -uo pipefail
# Logs go to a scratch folder and come back as $OUT/logs.tgz (the device
# returns a few files only); the table is printed and kept as $OUT/table.txt.
final=${OUT:-/tmp/out}
out=$(mktemp -d)
B=bundle/run
L=${LAYERS:-32}
M=/tmp/d$L
[[ -d bundle ]] || tar -xJf .device/bundle.tar.xz
[[ -d lt ]] || tar -xJf .device/llama-tools.tar.xz
export PAGED_SOURCE_DIR=$PWD PAGED_SHARED_MODELS=$PWD/bundle/models
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/gpu.txt"
# The CPU executor alone at 1 and 8 token rows, by decode rows per tile.
for d in ${DECODE_ROWS_LIST:-1 4}; do
  PAGED_CPU_EXEC_DECODE_ROWS=$d timeout 100 $B cpu_matmul_bench --threads=16 --seconds=0.15 \
    --dtypes=f16,int8,int4,q4_k,q6_k --batches=1,8 --reference=false \
    --shapes=4096x4096,11008x4096 >"$out/cpu_rows$d.txt" 2>&1
done
# A machine whose memory is busy with someone else's work gives figures of
# nothing: MIN_READ_GBS=N stops here when the streaming read is below N GB/s.
read_gbs=$(grep -o "read bandwidth [0-9.]*" "$out"/cpu_rows*.txt | head -1 | awk '{print $3}')
if [[ -n ${MIN_READ_GBS:-} ]] && awk -v r="${read_gbs:-0}" -v m="$MIN_READ_GBS" 'BEGIN{exit !(r < m)}'; then
  echo "host read bandwidth ${read_gbs} GB/s < ${MIN_READ_GBS}: a busy machine, no benchmarks"
  tar -czf "$final/logs.tgz" -C "$out" .; exit 3
fi
$B pagectl make-model --preset=llama-7b --layers=$L --dtype=f16 --out=$M >"$out/make.log" 2>&1 ||
  { tail "$out/make.log"; exit 1; }
PYTHONPATH=lt/gguf-py python3 scripts/hf_to_gguf.py $M $M.gguf >"$out/gguf.log" 2>&1 &&
  lt/run llama-quantize $M.gguf $M-q4km.gguf Q4_K_M 16 >"$out/quantize.log" 2>&1 ||
  tail -5 "$out/gguf.log" "$out/quantize.log"
sync  # the GGUF files' write-back would compete with the benchmarks for memory bandwidth
for f in ${FORMATS:-f16 int8 int4 q4km}; do
  if [[ $f == q4km ]]; then src="--model=$M-q4km.gguf --weight-format=native"
  else src="--model=$M --weight-format=$f"; fi
  $B paged-store $src --segment=d-$f --kv-gib=1.6 --quiet >"$out/store-$f.log" 2>&1 &
  for _ in $(seq 900); do grep -q ready "$out/store-$f.log" && break; sleep 0.2; done
  timeout 200 $B paged-bench --segment=d-$f --device=cuda:0 --gpu-budget=4GiB --batch=1 \
    --prompt-len=32 --gen-len=24 --mode=all >"$out/$f-b1.txt" 2>&1
  if [[ $f == f16 && -z ${NO_VARIANTS:-} ]]; then
    # 15 host threads (one core left to the thread that drives the GPU); the
    # host threads kept awake across a step (2000 us spin; the default is 200).
    timeout 100 $B paged-bench --segment=d-$f --device=cuda:0 --gpu-budget=4GiB --batch=1 \
      --prompt-len=32 --gen-len=24 --mode=hybrid --host-threads=15 >"$out/$f-b1-t15.txt" 2>&1
    PAGED_HOST_SPIN_US=2000 timeout 100 $B paged-bench --segment=d-$f --device=cuda:0 \
      --gpu-budget=4GiB --batch=1 --prompt-len=32 --gen-len=24 --mode=hybrid \
      >"$out/$f-b1-spin2000.txt" 2>&1
  fi
  if [[ $f == f16 ]]; then
    timeout 100 $B paged-bench --segment=d-$f --device=cuda:0 --gpu-budget=4GiB --batch=8 \
      --prompt-len=32 --gen-len=16 --mode=all >"$out/$f-b8.txt" 2>&1
    [[ -n ${NO_B64:-} ]] || timeout 150 $B paged-bench --segment=d-$f --device=cuda:0 \
      --gpu-budget=4GiB --batch=64 --prompt-len=32 --gen-len=12 --mode=all >"$out/$f-b64.txt" 2>&1
  fi
  pkill -f "segment=d-$f"; sleep 1
done
# llama.cpp on the CPU alone (-ngl 0: the host's speed on the same files).
[[ -n ${NO_LLAMA_CPU:-} ]] || for g in $M.gguf $M-q4km.gguf; do
  timeout 100 lt/run llama-bench -m $g -ngl 0 -t 16 -p 0 -n 16 -r 1 -o md >"$out/llama-cpu-$(basename $g .gguf).txt" 2>&1
done
{
echo "== cpu executor, 16 threads (GB/s at 1 and 8 token rows) by decode rows per tile"
for d in ${DECODE_ROWS_LIST:-1 4}; do echo "-- rows $d"; grep -E "^cpu_exec" "$out/cpu_rows$d.txt" | awk '{print $2, $3, $4, $6, $8}'; done
echo "== llama.cpp CPU only"; grep -h "tg16" "$out"/llama-cpu-*.txt
echo "== decode rows"
for f in "$out"/*-b[168]*.txt; do
  echo "-- $(basename "$f" .txt)"; grep -E "^hybrid step|^hybrid mode|^  resident layers|^(paged|hybrid|resident) +(decode|prefill)" "$f"
done
} | tee "$final/table.txt"
tar -czf "$final/logs.tgz" -C "$out" .
