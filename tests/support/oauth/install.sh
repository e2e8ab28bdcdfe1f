#!/usr/bin/env bash
# Installs the OAuth 2.0 server of the OAuth tests (tests/tests/oauth_*.rs): oauth2-mock-server
# from the npm registry, at the version package-lock.json pins, into node_modules/ here.
# Idempotent: when the pinned version is installed already, it installs nothing.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "node and npm are missing: install Node.js 20.19 or later (with npm) and re-run" >&2
    exit 1
fi
# The pinned oauth2-mock-server (8.2) runs on Node.js 20.19 and later.
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; then
    echo "Node.js $(node --version) is too old for oauth2-mock-server: install 20.19 or later" >&2
    exit 1
fi
installed() {
    node -e '
        const locked = require("./package-lock.json").packages["node_modules/oauth2-mock-server"].version;
        const found = require("./node_modules/oauth2-mock-server/package.json").version;
        process.exit(locked === found ? 0 : 1);' 2>/dev/null
}
if ! installed; then
    echo "==> installing the OAuth test server (npm ci in tests/support/oauth)"
    npm ci --no-audit --no-fund --loglevel=error
fi
echo "==> OAuth test server ready: oauth2-mock-server $(node -p 'require("./node_modules/oauth2-mock-server/package.json").version'), node $(node --version)"
