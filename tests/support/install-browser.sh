#!/usr/bin/env bash
# Installs the browser of the web UI tests (tests/tests/ui_browser.rs): Debian's headless-capable
# Chromium and its WebDriver server, chromedriver (package chromium-driver). Nothing is downloaded
# at test time. Idempotent: a second run installs nothing and prints only its summary line.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

need_debs chromium chromium-driver
echo "==> browser ready: $(chromium --version 2>/dev/null | head -1), $(chromedriver --version | awk '{print $1, $2}')"
