#!/usr/bin/env bash
# CPU-only decode at batch 1, paged against llama.cpp on the same files and
# threads (issue 12's CPU target), in alternated rounds (this machine's
# memory bandwidth swings with its neighbours' load). Needs a built tree
# (BUILD, default build), llama.cpp's llama-bench and llama-quantize (LLAMA_BIN)
# and its gguf-py (GGUF_PY), python3 with numpy (/usr/bin/python3).
#   FORMATS: f16 (safetensors f16 / its GGUF), q8_0 (our int8 and the GGUF
#   Q8_0 read as stored, against llama.cpp's Q8_0), q4_k_m (our int4 and the
#   Q4_K_M GGUF read as stored, against llama.cpp's Q4_K_M); the quantized
#   ones with f32 activations (--device=cpu) and 8-bit ones (cpu-q8, as
#   llama.cpp computes them). ROUNDS (3), THREADS (2), LAYERS (2), DEPTH (0:
#   the context the decode starts from: paged's prompt, llama-bench -d).
# Prints one table (tokens/s per round) last.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD:-build}
LB=${LLAMA_BIN:?set LLAMA_BIN to the llama.cpp bin directory}
GP=${GGUF_PY:?set GGUF_PY to the llama.cpp gguf-py directory}
T=${THREADS:-2}
L=${LAYERS:-2}
W=${WORK:-/tmp/cpu-sbs}
mkdir -p "$W"
M=$W/l7b$L
[[ -f $M/model.safetensors ]] || "$B"/client/pagectl/pagectl make-model --preset llama-7b \
  --layers "$L" --out "$M" >/dev/null
[[ -f $M.gguf ]] || PYTHONPATH=$GP /usr/bin/python3 scripts/hf_to_gguf.py "$M" "$M.gguf" >/dev/null
for q in Q8_0 Q4_K_M; do
  [[ -f $M-$q.gguf ]] || "$LB"/llama-quantize "$M.gguf" "$M-$q.gguf" "$q" >/dev/null 2>&1
done

# name | store source | store format | device of paged-bench | llama.cpp file
rows=()
for f in ${FORMATS:-f16 q8_0 q4_k_m}; do
  case $f in
    f16) rows+=("f16|$M|f16|cpu|$M.gguf") ;;
    q8_0)
      rows+=("int8|$M|int8|cpu|" "int8|$M|int8|cpu-q8|")
      rows+=("gguf-q8_0|$M-Q8_0.gguf|native|cpu|$M-Q8_0.gguf" "gguf-q8_0|$M-Q8_0.gguf|native|cpu-q8|")
      ;;
    q4_k_m)
      rows+=("int4|$M|int4|cpu|" "int4|$M|int4|cpu-q8|")
      rows+=("gguf-q4_k_m|$M-Q4_K_M.gguf|native|cpu|$M-Q4_K_M.gguf")
      rows+=("gguf-q4_k_m|$M-Q4_K_M.gguf|native|cpu-q8|")
      ;;
    *) echo "unknown format $f" >&2; exit 2 ;;
  esac
done
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
declare -A started
for row in "${rows[@]}"; do
  IFS='|' read -r name src fmt _ _ <<<"$row"
  [[ -n ${started[$name]:-} ]] && continue
  started[$name]=1
  seg=sbs-$name
  "$B"/store/paged-store --model="$src" --weight-format="$fmt" --segment="$seg" --kv-gib=0.25 \
    --quiet >"$W/store-$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 600); do grep -q ready "$W/store-$name.log" && break; sleep 0.2; done
  grep -q ready "$W/store-$name.log" || { cat "$W/store-$name.log"; exit 1; }
done
declare -A got
for r in $(seq "${ROUNDS:-3}"); do
  for row in "${rows[@]}"; do
    IFS='|' read -r name _ _ dev gguf <<<"$row"
    got[$name-$dev,$r]=$("$B"/bench/paged-bench --segment="sbs-$name" --device="$dev" --threads="$T" \
      --batch=1 --prompt-len="$(( ${DEPTH:-0} > 16 ? ${DEPTH:-0} : 16 ))" --gen-len=32 \
      --mode=resident 2>&1 |
      awk '$1 == "resident" && $2 == "decode" { print $5; exit }')
    if [[ -n $gguf ]]; then
      got[llama-$name,$r]=$("$LB"/llama-bench -m "$gguf" -t "$T" -p 0 -n 32 -d "${DEPTH:-0}" -r 2 -o csv 2>/dev/null |
        tail -1 | awk -F, '{gsub(/"/, "", $(NF-1)); print $(NF-1)}')
    fi
  done
done
{
  printf '%-26s' "decode tokens/s, batch 1"
  for r in $(seq "${ROUNDS:-3}"); do printf ' %9s' "round $r"; done
  echo
  for row in "${rows[@]}"; do
    IFS='|' read -r name _ _ dev gguf <<<"$row"
    for who in "$name-$dev" ${gguf:+llama-$name}; do
      label="paged $name ($dev)"
      [[ $who == llama-* ]] && label="llama.cpp $(basename "$gguf" .gguf | sed 's/.*-//')"
      printf '%-26s' "$label"
      for r in $(seq "${ROUNDS:-3}"); do printf ' %9s' "${got[$who,$r]:-?}"; done
      echo
    done
  done
} | tee "$W/table.txt"
