#!/usr/bin/env bash
# Runs the whole test suite: format check, clippy, unit and end-to-end tests.
# Installs what the tests need (Debian and PyPI packages) first; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

need_cargo
need_fuse
# util-linux: setpriv (tests run commands as an unprivileged uid); procps: ps.
need_debs util-linux procps ca-certificates curl
# postgresql: the tests of the broker's PostgreSQL store run a temporary cluster (tests/src/pg.rs).
need_debs postgresql
# iproute2 and sqlite3: the short soak (tests/tests/soak.rs) cuts an agent's network in namespaces
# and checks a broker's SQLite file after its disk was full.
need_debs iproute2 sqlite3
# The client programs of the integration tests (tests/tests/integrations_*.rs): git, PostgreSQL,
# MariaDB, OpenSSL, and boto3 and google-auth in a Python venv under target/.
bash tests/support/install-clients.sh
# The OAuth 2.0 server of the OAuth tests (tests/tests/oauth_*.rs): oauth2-mock-server from npm.
bash tests/support/oauth/install.sh
# The container test (tests/tests/container_podman.rs): podman with runc (crun refuses hybrid
# cgroups), and a static busybox for the image's shell.
need_debs podman runc busybox-static
# The browser of the web UI tests (tests/tests/ui_browser.rs): Chromium and chromedriver.
bash tests/support/install-browser.sh

# End-to-end tests must not skip here: missing root or FUSE is a failure, not a skip.
export MAESTRO_REQUIRE_FUSE=1
# Nor may a PostgreSQL store test skip for a missing server.
export MAESTRO_REQUIRE_POSTGRES=1
# Nor may an integration test skip for a missing client program.
export MAESTRO_REQUIRE_CLIENTS=1
# Nor may an OAuth test skip for a missing Node.js or OAuth server.
export MAESTRO_REQUIRE_OAUTH=1
# Nor may a web UI test skip for a missing Chromium or chromedriver.
export MAESTRO_REQUIRE_BROWSER=1
export CARGO_TERM_COLOR=never

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo build (binaries the end-to-end tests start)"
cargo build --workspace --bins
echo "==> cargo test"
log="$(mktemp /tmp/maestro-test.XXXXXX)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --no-fail-fast -- --test-threads="${MAESTRO_TEST_THREADS:-2}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run: cargo's last line is often a doc-test binary with 0 tests.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
