#!/usr/bin/env bash
# Runs one libFuzzer target briefly over seed inputs; fails on any crash.
#   fuzz_smoke.sh NAME FUZZER PAGECTL SHARED_MODELS_DIR
set -euo pipefail
name=$1 fuzzer=$2 pagectl=$3 models=$4
seconds=${PAGED_FUZZ_SECONDS:-15}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"
case $name in
  fuzz_safetensors)
    "$pagectl" make-model --preset=tiny --out="$work/tiny" >/dev/null
    head -c 65536 "$work/tiny/model.safetensors" > "$work/corpus/tiny.safetensors"
    cp "$work/tiny/config.json" "$work/corpus/config.json" ;;
  fuzz_gguf)
    if [[ -f $models/stories260K.gguf ]]; then
      head -c 65536 "$models/stories260K.gguf" > "$work/corpus/stories.gguf"
    elif [[ -n ${CI:-} && $CI != false ]]; then
      echo "fuzz_smoke: $models/stories260K.gguf is missing (required under CI)" >&2
      exit 1
    fi
    # The block-format fixtures (every ggml type paged reads), each cut to the
    # input size, and one cut inside its first tensor's blocks.
    golden=$(dirname "$0")/../../tests/golden/gguf
    for f in "$golden"/*.gguf; do
      head -c 65536 "$f" > "$work/corpus/$(basename "$f")"
    done
    head -c 12000 "$golden/tiny-q4_k_m.gguf" > "$work/corpus/cut-q4_k_m.gguf" ;;
  fuzz_tokenizer)
    golden=$(dirname "$0")/../../tests/golden/tokenizers
    for d in "$golden"/*/; do
      cp "$d/tokenizer.json" "$work/corpus/$(basename "$d").json"
    done
    printf 'Hello, world! <|im_start|>user\n\xe6\x97\xa5 \xff 12345' > "$work/corpus/text" ;;
esac
"$fuzzer" -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 "$work/corpus" 2>&1 | tail -n 12
