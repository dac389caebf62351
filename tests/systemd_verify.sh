#!/bin/sh
# systemd-analyze verify on the units in systemd/: copied to a temporary
# directory with /usr/bin/<binary> rewritten to the build tree's binaries (or
# /bin/true when one is not built), so verify checks the units themselves.
# Usage: systemd_verify.sh SOURCE_DIR BINARY_DIR. Skips (exit 0) without
# systemd-analyze, except under CI (CI set), where it fails.
set -eu
src=${1:?source dir}
bin=${2:?binary dir}
if ! command -v systemd-analyze >/dev/null 2>&1; then
  if [ -n "${CI:-}" ] && [ "$CI" != false ]; then
    echo "systemd_verify: systemd-analyze not found (scripts/install-deps.sh installs systemd)" >&2
    exit 1
  fi
  echo "systemd_verify: systemd-analyze not found (apt-get install systemd); skipped"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for name in paged-store:store/paged-store paged-worker:worker/paged-worker paged:daemon/paged; do
  exe=${name%%:*}
  built=$bin/${name#*:}
  [ -x "$built" ] || built=/bin/true
  echo "s|/usr/bin/$exe |$built |" >> "$tmp/rewrite.sed"
done
for unit in paged-store.service paged.service paged-worker@.service paged.target; do
  sed -f "$tmp/rewrite.sed" "$src/systemd/$unit" > "$tmp/$unit"
done
# The template as an instance, as paged.target wants it.
cp "$tmp/paged-worker@.service" "$tmp/paged-worker@0.service"
# Unknown users / groups and missing /etc/paged are not the units' fault:
# verify reports syntax, unknown directives, bad values and dependencies.
export SYSTEMD_LOG_LEVEL=${SYSTEMD_LOG_LEVEL:-notice}
out=$(cd "$tmp" && SYSTEMD_UNIT_PATH="$tmp:" systemd-analyze verify --man=no \
  paged-store.service paged.service paged-worker@0.service paged.target 2>&1) && rc=0 || rc=$?
[ -z "$out" ] || printf "%s\n" "$out"
# Warnings ("Unknown key ..., ignoring") do not change verify's exit status:
# fail on them too.
if [ "$rc" -ne 0 ] || printf '%s\n' "$out" | grep -E "Unknown|Failed to parse|[Ii]nvalid|not executable|ignoring" >/dev/null; then
  echo "systemd_verify: FAILED (systemd-analyze rc $rc)"
  exit 1
fi
echo "systemd_verify: units OK"

# sysusers.d and tmpfiles.d snippets, applied to a scratch root (the user
# exists there only, so tmpfiles resolves it from the snippet).
mkdir -p "$tmp/root/etc"
systemd-sysusers --root="$tmp/root" - < "$src/systemd/paged.sysusers"
systemd-tmpfiles --root="$tmp/root" --create - < "$src/systemd/paged.tmpfiles"
for d in run/paged var/lib/paged; do
  [ -d "$tmp/root/$d" ] || { echo "systemd_verify: tmpfiles did not create /$d"; exit 1; }
done
grep -q '^paged:' "$tmp/root/etc/passwd" || { echo "systemd_verify: sysusers did not create paged"; exit 1; }
grep -q '^video:.*paged' "$tmp/root/etc/group" || { echo "systemd_verify: paged not in video"; exit 1; }
echo "systemd_verify: sysusers and tmpfiles OK"
