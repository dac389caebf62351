#!/usr/bin/env bash
# paged beside llama.cpp on the GPU machine, on the same GGUF files:
#  1. MoE (issue 14): a qwen3-30b-a3b shape of LAYERS (16) layers made by
#     `pagectl make-model` (uniform router), written as GGUF by
#     scripts/hf_to_gguf.py and quantized to Q4_K_M by llama-quantize, on a
#     BUDGET (1.75 GiB: the full 48-layer model's 4 GiB scaled to 16 layers'
#     experts) device budget. llama.cpp: -ngl 99 with --n-cpu-moe NCMOE
#     (13: the most experts on the GPU that stay under the budget) and with
#     every expert on the CPU (--n-cpu-moe LAYERS); paged: experts paged
#     one by one vs whole layers, and the hybrid step, batch 1 and 64
#     (AB_GROUPED=1: again with each expert its own launches), with the
#     router's choice and (ROUTINGS="model uniform") k random experts a row;
#     HOST_SHARES="0.3 0.6 1": hybrid batch 1 (uniform) with the host's share
#     of the missing experts fixed; PAGED_ARGS: more paged-bench flags for
#     the experts-vs-layers runs (--expert-prefetch); HOST_ACTIVATIONS="f32
#     q8": the hybrid runs with each --host-activations; VARIANTS: more
#     hybrid runs, each with its own flags (below).
#     MODEL=gpt-oss: gpt-oss-120b's shape instead, 12 layers, its MXFP4
#     experts written as they are (no quantization), 8 GiB (not run yet).
#  2. Dense (issue 12, DENSE=1): llama-7b f16 (32 layers), 4 GiB: llama.cpp
#     -ngl 8 against paged's hybrid step (tuned and planned share).
# llama.cpp is built here from .device/llama-src.tar.xz (the npm package
# node-llama-cpp 3.21.1's source, made by scripts/device/fetch_llamacpp.sh)
# while the models are made; its binaries come back as $OUT/llama-bin.tar.xz
# (LLAMA_BIN_TAR=that file skips the build). It is a baseline only.
# Carry .device (bundle.tar.xz, llama-src.tar.xz). Table last:
# $OUT/side_table.txt; logs in $OUT/side_logs.tgz.
set -uo pipefail
final=${OUT:-/tmp/out}
out=$(mktemp -d)
B=bundle/run
T=$final/side_table.txt
[[ -d bundle ]] || tar -xJf .device/bundle.tar.xz
export PAGED_SOURCE_DIR=$PWD PAGED_SHARED_MODELS=$PWD/bundle/models
note() { echo "$*" | tee -a "$T"; }
# The models go where the most space is (a layer needs about 2.7 GB at
# once: checkpoint, F16 GGUF, Q4_K_M), LAYERS fitting it unless given.
W=$(df -B1G --output=avail,target /tmp /dev/shm "$PWD" | tail -n +2 | sort -n | tail -1 | awk '{print $2}')
free=$(df -B1G --output=avail "$W" | tail -1 | tr -d ' ')
note "models in $W ($free GB free)"
if [[ ${MODEL:-qwen3} == gpt-oss ]]; then
  # gpt-oss-120b's shape, 12 layers (the issue's), its experts MXFP4 as
  # make-model writes them and hf_to_gguf.py keeps them (1.69 GB a layer,
  # no quantization step), 8 GiB: llama.cpp fits about 4 layers' experts
  # beside its f16 output matrix (1.16 GB).
  L=${LAYERS:-12}
  BUDGET=${BUDGET:-8GiB}
  NCMOE=${NCMOE:-$((L - 4))}
  PRESET=gpt-oss-120b
else
  L=${LAYERS:-$((free >= 48 ? 16 : (free >= 36 ? 12 : 8)))}
  # The full 48-layer model's 4 GiB, scaled: globals and workspace about
  # 0.63 GB, then per layer its dense part and 17% of its Q4_K_M experts
  # (0.0765 GB); llama.cpp keeps as few layers' experts (0.37 GB each) on the
  # GPU as fit the same budget.
  BUDGET=${BUDGET:-$(awk -v l=$L 'BEGIN{printf "%.2fGiB", (0.63 + 0.0765 * l) / 1.073741824}')}
  NCMOE=${NCMOE:-$((L <= 8 ? L - 1 : L - 2))}
  PRESET=qwen3-30b-a3b
fi
mkdir -p /tmp/llama && tar -xJf .device/llama-src.tar.xz -C /tmp/llama
LB=/tmp/llama/build/bin
if [[ -n ${SKIP_LLAMA:-} ]]; then  # paged only; llama-quantize from the bundle
  mkdir -p $LB && printf '#!/bin/sh\nexec %s llama-quantize "$@"\n' \
    "$PWD/$B" >$LB/llama-quantize && chmod +x $LB/llama-quantize
  build_pid=
elif [[ -n ${LLAMA_BIN_TAR:-} ]]; then
  mkdir -p /tmp/llama/build && tar -xJf "$LLAMA_BIN_TAR" -C /tmp/llama/build
  build_pid=
else
  source scripts/device/llama_build.sh
  start_llama_build "$out/llama-build.log"  # unpacks again: harmless
fi
nvidia-smi --query-gpu=name --format=csv,noheader | tee -a "$T"
M=$W/q3
$B pagectl make-model --preset=$PRESET --layers=$L --out=$M >"$out/make_q3.log" 2>&1
PYTHONPATH=/tmp/llama/gguf-py python3 scripts/hf_to_gguf.py $M $M.gguf >"$out/gguf_q3.log" 2>&1 ||
  { tail -5 "$out/gguf_q3.log"; df -h; }
rm -rf $M
if [[ -n $build_pid ]]; then
  wait $build_pid || { tail -30 "$out/llama-build.log"; exit 1; }
  (cd /tmp/llama/build && tar -cf - bin/llama-bench bin/llama-batched-bench bin/llama-quantize \
    bin/*.so* | xz -T16 -6 >"$final/llama-bin.tar.xz")
fi
if [[ $PRESET == gpt-oss-120b ]]; then  # already MXFP4: the file as written
  mv $M.gguf $M-q4km.gguf
else
  $LB/llama-quantize $M.gguf $M-q4km.gguf Q4_K_M >"$out/quantize_q3.log" 2>&1
  rm -f $M.gguf
fi
ls -la $M-q4km.gguf | tee -a "$T"

note "== MoE: $PRESET shape, $L layers, $([[ $PRESET == gpt-oss-120b ]] && echo MXFP4 || echo Q4_K_M), budget $BUDGET"
if [[ -z ${SKIP_LLAMA:-} ]]; then
note "-- llama.cpp llama-bench (tg32; -ngl 99, --n-cpu-moe $NCMOE and $L)"
$LB/llama-bench -m $M-q4km.gguf -ngl 99 -ncmoe $NCMOE,$L -p 0 -n 32 -r 2 -o md >"$out/llama-moe.txt" 2>&1
grep -E "tg32|error" "$out/llama-moe.txt" | tee -a "$T"
note "-- llama.cpp llama-batched-bench (--n-cpu-moe $NCMOE; S_TG t/s at 1 and 64)"
$LB/llama-batched-bench -m $M-q4km.gguf -ngl 99 -ncmoe $NCMOE -c 8192 -npp 32 -ntg 16 -npl 1,64 \
  >"$out/llama-moe-batched.txt" 2>&1
grep -E "^\| +32 \| +16 \| +(1|64) \|" "$out/llama-moe-batched.txt" | tee -a "$T"
fi
$B paged-store --model=$M-q4km.gguf --weight-format=native --segment=sq3 --kv-gib=2 --quiet \
  >"$out/store-q3.log" 2>&1 &
for _ in $(seq 900); do grep -q ready "$out/store-q3.log" && break; sleep 0.2; done
DT=${DECODE_TOKENS:-random}
for R in ${ROUTINGS:-model}; do  # none: only the runs below
  [[ $R == none ]] && continue
  note "-- paged (experts paged | whole layers | hybrid: experts with few rows on the host), --decode-tokens=$DT --routing=$R"
  for b in 1 64; do
    timeout 150 $B paged-bench --segment=sq3 --device=cuda:0 --gpu-budget=$BUDGET --batch=$b \
      --prompt-len=32 --gen-len=${GEN_LEN:-32} --mode=paged --experts=both --decode-tokens=$DT --routing=$R \
      ${PAGED_ARGS:-} >"$out/paged-moe-$R-b$b.txt" 2>&1
    grep -hsE "^(paged|layers) +decode" "$out/paged-moe-$R-b$b.txt" | tee -a "$T"
    for a in ${HOST_ACTIVATIONS:-f32}; do  # the host products' activations: f32 | q8
      [[ -n ${NO_HYBRID:-} ]] && break
      timeout 150 $B paged-bench --segment=sq3 --device=cuda:0 --gpu-budget=$BUDGET --batch=$b \
        --prompt-len=32 --gen-len=${GEN_LEN:-32} --mode=hybrid --decode-tokens=$DT --routing=$R \
        --host-activations=$a >"$out/hybrid-moe-$R-b$b-$a.txt" 2>&1
      note "host activations $a: $(grep -hsE '^hybrid +decode' "$out/hybrid-moe-$R-b$b-$a.txt")"
    done
  done
done
grep -hs "expert cache" "$out"/paged-moe-*-b1.txt | head -1 | tee -a "$T"
if [[ -n ${PREFETCH_AB:-} ]]; then  # experts copied a layer ahead, as predicted
  for b in 1 64; do
    timeout 150 $B paged-bench --segment=sq3 --device=cuda:0 --gpu-budget=$BUDGET --batch=$b \
      --prompt-len=32 --gen-len=32 --mode=paged --experts=on --decode-tokens=$DT \
      --expert-prefetch >"$out/paged-moe-prefetch-b$b.txt" 2>&1
    note "--expert-prefetch: $(grep -hE '^paged +decode' "$out/paged-moe-prefetch-b$b.txt")"
  done
fi
for hs in ${HOST_SHARES:-}; do  # hybrid at batch 1 with the host's share of the misses fixed
  timeout 100 $B paged-bench --segment=sq3 --device=cuda:0 --gpu-budget=$BUDGET --batch=1 \
    --prompt-len=32 --gen-len=32 --mode=hybrid --decode-tokens=$DT --routing=uniform \
    --expert-host-share=$hs >"$out/hybrid-moe-share$hs.txt" 2>&1
  note "expert host share $hs: $(grep -hE '^hybrid +decode' "$out/hybrid-moe-share$hs.txt")"
done
# VARIANTS="A;B;...": hybrid batch-1 runs (routing ROUTING_V, uniform by
# default), each with its own paged-bench flags and environment, e.g.
# "--host-activations=q8;PAGED_HOST_SPIN_US=2000 --host-activations=q8"
# (a later --mode=paged overrides the hybrid mode).
IFS=';' read -ra variants <<<"${VARIANTS:-}"
for v in "${variants[@]}"; do
  envs=${v%%--*}
  flags=${v#"$envs"}
  i=$((${i:-0} + 1))
  env $envs timeout 100 $B paged-bench --segment=sq3 --device=cuda:0 --gpu-budget=$BUDGET \
    --batch=${VARIANT_BATCH:-1} --prompt-len=32 --gen-len=${GEN_LEN:-32} --mode=hybrid \
    --decode-tokens=$DT --routing=${ROUTING_V:-uniform} $flags >"$out/variant-$i.txt" 2>&1
  note "[$v]: $(grep -hE '^(hybrid|paged) +decode' "$out/variant-$i.txt")"
  grep -hE "^(hybrid|paged) decode (host path|sparse)" "$out/variant-$i.txt" | tee -a "$T"
done
if [[ -n ${AB_GROUPED:-} ]]; then  # the experts one launch at a time, for comparison
  note "-- paged, PAGED_CUDA_GROUPED_EXPERTS=0 (each expert its own launches)"
  for b in 1 64; do
    PAGED_CUDA_GROUPED_EXPERTS=0 timeout 150 $B paged-bench --segment=sq3 --device=cuda:0 \
      --gpu-budget=$BUDGET --batch=$b --prompt-len=32 --gen-len=32 --mode=paged --experts=both \
      --decode-tokens=$DT >"$out/paged-moe-single-b$b.txt" 2>&1
    grep -hsE "^(paged|layers) +decode" "$out/paged-moe-single-b$b.txt" | tee -a "$T"
  done
fi
pkill -f "segment=sq3"
sleep 1
rm -f /dev/shm/sq3*

if [[ -n ${DENSE:-} ]]; then
  rm -f $M-q4km.gguf
  D=$W/l7b
  $B pagectl make-model --preset=llama-7b --layers=32 --dtype=f16 --out=$D >"$out/make_7b.log" 2>&1
  note "== dense: llama-7b f16, 32 layers, 4 GiB"
  if [[ -z ${SKIP_LLAMA:-} ]]; then
    PYTHONPATH=/tmp/llama/gguf-py python3 scripts/hf_to_gguf.py $D $D.gguf >"$out/gguf_7b.log" 2>&1
    $LB/llama-bench -m $D.gguf -ngl ${NGL_F16:-8} -p 0 -n 32 -r 2 -o md >"$out/llama-7b.txt" 2>&1
    grep -E "tg32|error" "$out/llama-7b.txt" | tee -a "$T"
  fi
  $B paged-store --model=$D --weight-format=f16 --segment=s7b --kv-gib=1.2 --quiet \
    >"$out/store-7b.log" 2>&1 &
  for _ in $(seq 900); do grep -q ready "$out/store-7b.log" && break; sleep 0.2; done
  for mode in ${DENSE_MODES:-planned auto}; do
    timeout 120 $B paged-bench --segment=s7b --device=cuda:0 --gpu-budget=4GiB --batch=1 \
      --prompt-len=16 --gen-len=$([[ $mode == auto ]] && echo 200 || echo 24) --mode=hybrid \
      --host-compute=$mode >"$out/paged-7b-$mode.txt" 2>&1
    grep -hE "^hybrid +decode|tuned on|host path|host executor" "$out/paged-7b-$mode.txt" |
      tee -a "$T"
  done
  if [[ -n ${THREADS_AB:-} ]]; then
    # The link under the host's reads: a fixed share with fewer host threads.
    for th in 16 8 4; do
      timeout 60 $B paged-bench --segment=s7b --device=cuda:0 --gpu-budget=4GiB --batch=1 \
        --prompt-len=16 --gen-len=24 --mode=hybrid --host-compute=0.4 --host-threads=$th \
        >"$out/paged-7b-t$th.txt" 2>&1
      note "host threads $th, share 0.4: $(grep -E '^hybrid +decode' "$out/paged-7b-t$th.txt")"
      grep -h "host path" "$out/paged-7b-t$th.txt" | tee -a "$T"
    done
  fi
  pkill -f "segment=s7b"
fi
tar -czf "$final/side_logs.tgz" -C "$out" --exclude='*.gguf' .
