#!/usr/bin/env bash
# Clang's thread-safety analysis over paged's own sources: every member
# marked ABSL_GUARDED_BY is only touched under its mutex, every
# ABSL_EXCLUSIVE_LOCKS_REQUIRED function only called with it held
# (STYLE.md, habit 18). The build uses g++, which ignores the annotations, so
# this runs clang++ -fsyntax-only with the include paths and defines of the
# build's compile_commands.json and fails on any -Wthread-safety diagnostic.
#
# Sources: the .cc files under common/ daemon/ worker/ launcher/ client/
# store/ (not the CUDA backend, not tests) that the analysis can say
# anything about: those that use a mutex or a thread-safety annotation
# themselves or include, directly or through other headers of the
# repository, a header that does. --all checks every one of them.
#
#   bash scripts/check_thread_safety.sh [--all] [BUILD_DIR]   # default: build/
#   JOBS=4 bash scripts/check_thread_safety.sh                # clang++ runs at once (default 2)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
all=0
if [[ "${1:-}" == "--all" ]]; then
  all=1
  shift
fi
build="$(cd "${1:-$root/build}" && pwd)"
db="$build/compile_commands.json"
clangxx="${CLANGXX:-clang++}"
if [[ ! -f "$db" ]]; then
  echo "check_thread_safety: no $db (configure the build first; CMAKE_EXPORT_COMPILE_COMMANDS is on)" >&2
  exit 1
fi
if ! command -v "$clangxx" >/dev/null; then
  echo "check_thread_safety: $clangxx not found (scripts/install-deps.sh installs clang)" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# One response file per source: the compiler swapped for clang++, only the
# preprocessor and language flags kept (g++'s warnings and codegen flags
# dropped), every warning off but the thread-safety ones, which are errors.
python3 - "$root" "$db" "$work" "$all" <<'EOF'
import json, os, re, shlex, sys

root, db, work, check_all = sys.argv[1:5]
dirs = ("common", "daemon", "worker", "launcher", "client", "store")
excluded = ("worker/backends/cuda/",)

# What the analysis looks at: a mutex, a condition variable, an annotation.
uses_locks = re.compile(r"\bABSL_[A-Z_]*(GUARDED|LOCK|CAPABILITY|THREAD_SAFETY)|"
                        r"\babsl::\w*(Mutex|CondVar)\b|\bstd::\w*mutex\b|"
                        r"#\s*include\s*[<\"](mutex|shared_mutex|absl/synchronization/)")
include = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


# The repository's headers that use locks, then every header that includes
# one of them (to a fixed point).
headers = set()  # relative to root; build trees (a CMakeCache.txt) skipped
for d, subdirs, files in os.walk(root):
    subdirs[:] = [s for s in subdirs if not s.startswith(".")
                  and not os.path.exists(os.path.join(d, s, "CMakeCache.txt"))]
    for name in files:
        if name.endswith((".h", ".hpp", ".cuh")):
            headers.add(os.path.relpath(os.path.join(d, name), root))


def includes(rel, text):
    out = []
    for inc in include.findall(text):
        for cand in (inc, os.path.normpath(os.path.join(os.path.dirname(rel), inc))):
            if cand in headers:
                out.append(cand)
                break
    return out


texts = {h: read(os.path.join(root, h)) for h in headers}
locking = {h for h, t in texts.items() if uses_locks.search(t)}
deps = {h: includes(h, t) for h, t in texts.items()}
changed = True
while changed:
    changed = False
    for h, incs in deps.items():
        if h not in locking and any(i in locking for i in incs):
            locking.add(h)
            changed = True


def wanted(rel):
    if check_all == "1":
        return True
    text = read(os.path.join(root, rel))
    return bool(uses_locks.search(text)) or any(i in locking for i in includes(rel, text))


keep_joined = ("-D", "-U", "-I", "-std=")  # -DX, -I/path, -std=c++20
keep_separate = ("-D", "-U", "-I", "-isystem", "-iquote", "-idirafter", "-include")
analysis = ["-fsyntax-only", "-Wno-everything", "-Wthread-safety", "-Wthread-safety-beta",
            "-Werror=thread-safety", "-Werror=thread-safety-beta"]

seen = set()
n = 0
for entry in json.load(open(db)):
    path = os.path.normpath(os.path.join(entry["directory"], entry["file"]))
    rel = os.path.relpath(path, root)
    if (not rel.endswith(".cc") or rel.split("/")[0] not in dirs or rel.startswith(excluded)
            or "/tests/" in rel or rel.endswith("_test.cc") or rel in seen
            or not os.path.exists(path)):
        continue
    seen.add(rel)
    if not wanted(rel):
        continue
    args = entry.get("arguments") or shlex.split(entry["command"])
    flags = []
    i = 1  # args[0] is the build's compiler
    while i < len(args):
        a = args[i]
        if a in keep_separate and i + 1 < len(args):
            flags += [a, args[i + 1]]
            i += 2
            continue
        if a.startswith(keep_joined) or a == "-pthread":
            flags.append(a)
        i += 1
    n += 1
    with open(os.path.join(work, "%04d.rsp" % n), "w") as f:
        f.write(" ".join(shlex.quote(x) for x in flags + analysis + [path]) + "\n")
    with open(os.path.join(work, "%04d.src" % n), "w") as f:
        f.write(rel + "\n")
with open(os.path.join(work, "count"), "w") as f:
    f.write("%d\n" % n)
EOF

count="$(cat "$work/count")"
if [[ "$count" -eq 0 ]]; then
  echo "check_thread_safety: no sources of paged in $db" >&2
  exit 1
fi
# Each run prints its diagnostics in one piece (no interleaving) and leaves a
# .failed marker; xargs' own status is not used, so one failure does not stop
# the others.
export clangxx
# shellcheck disable=SC2016  # $1 and $clangxx expand in the inner sh
find "$work" -name '*.rsp' -print0 | sort -z |
  xargs -0 -n1 -P"${JOBS:-2}" sh -c '
    if ! out="$("$clangxx" @"$1" 2>&1)"; then
      printf "%s\n" "$out" >&2
      : >"${1%.rsp}.failed"
    fi' _ || true

failed=0
for marker in "$work"/*.failed; do
  [[ -e "$marker" ]] || continue
  echo "check_thread_safety: FAILED $(cat "${marker%.failed}.src")" >&2
  failed=$((failed + 1))
done
if [[ "$failed" -gt 0 ]]; then
  echo "check_thread_safety: $failed of $count files have thread-safety errors (see above)" >&2
  exit 1
fi
echo "check_thread_safety: $count files clean under -Wthread-safety"
