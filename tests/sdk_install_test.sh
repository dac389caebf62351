#!/usr/bin/env bash
# The installed C++ SDK as a user gets it (issue 16): `cmake --install
# --component sdk` of this build into a temporary prefix, then
# examples/sdk_client configured with find_package(paged) against that
# prefix alone, built, and run: once with no server (a clean UNAVAILABLE)
# and once against a real stack (paged-up, stories260K on the CPU), whose
# greedy text it must print exactly. Fails, never skips, when anything is
# missing.
#
#   sdk_install_test.sh CMAKE GENERATOR SOURCE_DIR BINARY_DIR PAGED_UP
set -euo pipefail
cmake=$1 generator=$2 src=$3 bin=$4 paged_up=$5
model=$src/../shared/models/stories260K.gguf

work=$(mktemp -d)
up_pid=""
cleanup() {
  if [[ -n $up_pid ]]; then
    kill -INT "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "sdk_install_test: FAIL: $*" >&2
  exit 1
}
step() { echo "== $*"; }

step "install the sdk component"
"$cmake" --install "$bin" --component sdk --prefix "$work/prefix"
prefix=$work/prefix
for f in include/paged/client.h include/paged/common/finish_reason.h \
  lib/cmake/paged/pagedConfig.cmake lib/cmake/paged/pagedConfigVersion.cmake; do
  [[ -f $prefix/$f ]] || fail "$f was not installed"
done
lib=$(find "$prefix" -name 'libpaged_client.so.*' -type f | head -n 1)
[[ -n $lib ]] || fail "libpaged_client.so was not installed"

step "the public headers carry no generated code"
if grep -rnE '#include.*(\.pb\.h|grpc|proto/)' "$prefix/include"; then
  fail "an installed header includes generated protobuf/gRPC code"
fi

step "libpaged_client.so exports paged::client and nothing else"
others=$(nm -DC --defined-only "$lib" | awk '{ $1 = ""; $2 = ""; print }' |
  grep -v '^ *paged::client::' || true)
[[ -z $others ]] || fail "libpaged_client.so exports more than paged::client: $others"
if nm -DC --defined-only "$lib" | grep -q 'paged::client::wire'; then
  fail "libpaged_client.so exports the in-tree paged::client::wire calls"
fi

step "configure and build examples/sdk_client against the prefix"
"$cmake" -S "$src/examples/sdk_client" -B "$work/build" -G "$generator" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
# Only the prefix: nothing from the source or build tree of paged.
if grep -E -- "-I *($src|$bin)|isystem *($src|$bin)" "$work/build/compile_commands.json"; then
  fail "the example compiles with paged's source or build tree on its include path"
fi
"$cmake" --build "$work/build"
client=$work/build/sdk_client
[[ -x $client ]] || fail "the example did not build"

step "no server: a clean UNAVAILABLE"
rc=0
"$client" "unix://$work/none.sock" >"$work/none.out" 2>"$work/none.err" || rc=$?
cat "$work/none.err"
[[ $rc -eq 1 ]] || fail "sdk_client with no server exited $rc, want 1"
grep -q "^sdk_client: UNAVAILABLE: cannot reach paged" "$work/none.err" ||
  fail "sdk_client with no server did not say UNAVAILABLE"

step "a real server: stories260K, greedy"
[[ -f $model ]] || fail "no model at $model"
[[ -x $paged_up ]] || fail "no paged-up at $paged_up"
sock=$work/paged.sock
"$paged_up" --model="$model" --weight-format=f32 --kv-gib=0.01 --device=cpu \
  --listen="unix://$sock" --segment="paged-sdk-test-$$" --remove-segment \
  --start_timeout=30 >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 600); do
  grep -q "paged is up" "$work/up.log" && break
  kill -0 "$up_pid" 2>/dev/null || { cat "$work/up.log"; fail "paged-up exited"; }
  sleep 0.1
done
grep -q "paged is up" "$work/up.log" || { cat "$work/up.log"; fail "paged did not come up"; }

"$client" "unix://$sock" "Once upon a time" 40 >"$work/gen.out" 2>"$work/gen.err" ||
  { cat "$work/gen.err"; fail "sdk_client failed against the server"; }
cat "$work/gen.out" "$work/gen.err"
# ../shared/models/README.md: the model's greedy story, after "Once upon a time".
want=", there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball."
[[ $(cat "$work/gen.out") == "$want" ]] || fail "the generated text is not the known greedy text: want '$want'"
grep -q "^40 tokens, finish: length" "$work/gen.err" || fail "no '40 tokens, finish: length' summary"
echo "sdk_install_test: OK"
