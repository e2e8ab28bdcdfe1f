#!/usr/bin/env bash
# The soak and fault suite (docs/hardening.md: "Soak and fault suite"): SOAK_SESSIONS sessions (default
# 1000) created, enrolled, used and ended in waves of SOAK_WAVE (default 20) on three brokers
# sharing one temporary PostgreSQL database, with kill -9 of a broker and a PostgreSQL restart
# under load, an agent's network cut past its lease in network namespaces, and a broker's disk
# made full. Prints a report of what was held and lost; exits non-zero if a must-be-zero count
# is not zero. Bounded: every wait has a give-up limit, and the run stops by itself
# (SOAK_TIMEOUT seconds in all, default 1800). Needs root, /dev/fuse and CAP_NET_ADMIN.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

need_cargo
need_fuse
# util-linux: setpriv, nsenter, mount; postgresql: the shared store; iproute2: network
# namespaces and the veth pair; sqlite3: PRAGMA integrity_check after the disk was full.
need_debs util-linux procps ca-certificates postgresql iproute2 sqlite3

export MAESTRO_REQUIRE_FUSE=1
export MAESTRO_REQUIRE_POSTGRES=1
export CARGO_TERM_COLOR=never
export SOAK_SESSIONS="${SOAK_SESSIONS:-1000}"
export SOAK_WAVE="${SOAK_WAVE:-20}"
report="$(mktemp /tmp/maestro-soak-report.XXXXXX)"
trap 'rm -f "$report"' EXIT
export SOAK_REPORT="$report"

echo "==> cargo build (the binaries the soak starts)"
cargo build --workspace --bins
cargo test -p maestro-tests --test soak --no-run
echo "==> soak: $SOAK_SESSIONS sessions in waves of $SOAK_WAVE"
set +e
timeout --signal=TERM --kill-after=30 "${SOAK_TIMEOUT:-1800}" \
    cargo test -p maestro-tests --test soak -- soak_full --ignored --exact --nocapture \
    > "$report.log" 2>&1
status=$?
set -e
if [ -s "$report" ]; then
    cat "$report"
else
    # No report: the run failed early or hit SOAK_TIMEOUT; its end says why.
    tail -n 60 "$report.log"
fi
rm -f "$report.log"
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    # Killed, the suite could not clean up after itself: remove its namespaces and mounts.
    echo "soak: stopped after SOAK_TIMEOUT=${SOAK_TIMEOUT:-1800} s" >&2
    ip netns list 2>/dev/null | awk '$1 ~ /^msoak-/ { print $1 }' | xargs -r -n1 ip netns del
    awk '$2 ~ /maestro-soak-/ { print $2 }' /proc/mounts | sort -r | xargs -r -n1 umount -l
fi
exit "$status"
