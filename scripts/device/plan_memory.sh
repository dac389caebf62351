#!/usr/bin/env bash
# Does the worker's plan keep device memory within the budget? On the GPU
# machine (bundle carried): a llama-7b-shaped model (LAYERS, default 8, f16)
# paged at a 4 GiB budget by paged-bench at batch 1, batch 64 and an 8 x 2048
# prefill; prints each plan's workspace and the peak device memory the run
# used (cudaMemGetInfo) against the budget. Logs under $OUT.
set -uo pipefail
out=${OUT:-/tmp/out}
bdir=${BUNDLE:-bundle}
B=$bdir/run
layers=${LAYERS:-8}
budget=${BUDGET:-4GiB}
M=/tmp/llama7b-pm$layers
$B pagectl make-model --preset=llama-7b --layers="$layers" --out=$M >"$out/pm-make.log" 2>&1 || { cat "$out/pm-make.log"; exit 1; }
$B paged-store --model=$M --segment=pm --weight-format=f16 --kv-gib=4 --quiet >"$out/pm-store.log" 2>&1 &
store=$!
for _ in $(seq 600); do grep -q ready "$out/pm-store.log" && break; sleep 0.5; done
status=0
for run in "b1 --batch=1 --prompt-len=128 --gen-len=16" "b64 --batch=64 --prompt-len=128 --gen-len=16" \
  "prefill --batch=8 --prompt-len=2048 --gen-len=2"; do
  set -- $run
  name=$1; shift
  timeout 200 $B paged-bench --segment=pm --device=cuda:0 --gpu-budget="$budget" --mode=paged "$@" \
    >"$out/pm-$name.txt" 2>&1 || status=1
  python3 - "$out/pm-$name.txt" "$name" "$budget" <<'PY' || status=1
import sys
text = open(sys.argv[1]).read().splitlines()
peak = max((float(l.split()[-1]) for l in text if l.startswith("paged ")), default=-1)
ws = next((" ".join(l.split()[1:3]) for l in text if l.strip().startswith("workspace")), "?")
planned = next((l.split("planned ")[1].rstrip("):") for l in text if "planned " in l), "?")
budget = float(sys.argv[3].lower().replace("gib", ""))
ok = 0 <= peak <= budget
print(f"{sys.argv[2]:8s} peak {peak:.2f} GiB of {budget:.2f} {'ok' if ok else 'OVER or missing'} | planned {planned}, workspace {ws}")
sys.exit(0 if ok else 1)
PY
done
kill $store 2>/dev/null
exit $status
