#!/usr/bin/env bash
# Benchmarks: builds the release binaries, installs what it compares against (hyperfine from
# Debian, python-dotenv from PyPI and dotenvx from npm, both under target/bench-tools/), then
# runs maestro-bench, which sets up its own broker, sessions and agents in temporary
# directories and prints one Markdown table. The table also goes to bench/results.md and the
# raw figures to bench/results.json.
#
#   scripts/bench.sh            the full run (what docs/benchmarks.md quotes; about 15 minutes,
#                               5 of them seeding 1,000,000 audit records twice for section 7)
#   scripts/bench.sh --quick    shorter runs (200,000 records), under 5 minutes once built
#
# Needs root and /dev/fuse (the agent mounts FUSE; the file rows mount a tmpfs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

MODE=()
for arg in "$@"; do
    case "$arg" in
        --quick) MODE=(--quick) ;;
        -h | --help)
            sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "unknown argument '$arg'; usage: scripts/bench.sh [--quick]" >&2
            exit 2
            ;;
    esac
done

# Versions of the wrappers compared against, pinned so that runs stay comparable.
DOTENV_VERSION="1.2.4"
DOTENVX_VERSION="2.38.2"

need_cargo
need_fuse
need_debs hyperfine util-linux procps ca-certificates
# Section 7 (history) runs its PostgreSQL rows on a temporary cluster of Debian's server.
need_debs postgresql
# Section 9 (sealed MySQL logins) runs its own MariaDB server.
need_debs mariadb-server mariadb-client
command -v python3 >/dev/null || need_debs python3 python3-venv
command -v npm >/dev/null || need_debs nodejs npm

TOOLS="$(pwd)/target/bench-tools"
mkdir -p "$TOOLS"

DOTENV="$TOOLS/venv/bin/dotenv"
if ! "$TOOLS/venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('python-dotenv') != '$DOTENV_VERSION')" 2>/dev/null \
    || [ ! -x "$DOTENV" ]; then
    echo "==> installing python-dotenv $DOTENV_VERSION into $TOOLS/venv"
    rm -rf "$TOOLS/venv"
    python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "python-dotenv[cli]==$DOTENV_VERSION"
fi

DOTENVX="$TOOLS/npm/node_modules/.bin/dotenvx"
if [ "$("$DOTENVX" --version 2>/dev/null)" != "$DOTENVX_VERSION" ]; then
    echo "==> installing dotenvx $DOTENVX_VERSION into $TOOLS/npm"
    mkdir -p "$TOOLS/npm"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS/npm" "@dotenvx/dotenvx@$DOTENVX_VERSION" >/dev/null
fi

echo "==> cargo build --release (the first build takes a few minutes)"
cargo build --release --bins -p maestro-broker -p maestro-agent -p maestro-exec -p maestro-bench

mkdir -p bench
exec target/release/maestro-bench all "${MODE[@]}" \
    --hyperfine "$(command -v hyperfine)" \
    --dotenv "$DOTENV" \
    --dotenvx "$DOTENVX" \
    --markdown bench/results.md \
    --json bench/results.json
