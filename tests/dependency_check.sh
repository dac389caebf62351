#!/bin/sh
# The build graph's one-way rules, checked on what was built and on the
# sources (docs/design.md, "Dependencies"):
# - paged-worker and paged (the coordinator) carry no model-reader code: a
#   worker reads only the segment, the coordinator only the API;
# - daemon/ includes nothing from worker/ and worker/ nothing from daemon/.
# usage: dependency_check.sh SOURCE_DIR PAGED_WORKER PAGED
set -u
src=$1
fail=0
readers='GgufFile|GgufModel|Safetensors|HfCheckpoint|OpenModel|PlanSegment|FillSegment|SegmentBuilder'
for bin in "$2" "$3"; do
  if [ ! -x "$bin" ]; then
    echo "dependency_check: $bin is not built" >&2
    fail=1
    continue
  fi
  found=$(nm -C "$bin" | grep -E "$readers" | head -5)
  if [ -n "$found" ]; then
    echo "dependency_check: $(basename "$bin") links model-reader code:" >&2
    echo "$found" >&2
    fail=1
  fi
done
if grep -rn '#include "worker/' "$src/daemon"; then
  echo "dependency_check: daemon/ includes worker/ headers (above)" >&2
  fail=1
fi
if grep -rn '#include "daemon/' "$src/worker"; then
  echo "dependency_check: worker/ includes daemon/ headers (above)" >&2
  fail=1
fi
if grep -rln '#include "store/' "$src/worker" | grep -v "^$src/worker/offline/"; then
  echo "dependency_check: worker/ outside worker/offline/ includes store/ headers (above)" >&2
  fail=1
fi
[ $fail -eq 0 ] && echo "dependency_check: ok"
exit $fail
