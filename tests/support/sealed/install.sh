#!/usr/bin/env bash
# Installs the real clients the sealed-secrets end-to-end tests drive, pinned to versions that were
# checked together (see README.md beside this file):
#   Debian: gh, curl, git, openssl
#   PyPI, into the tests' Python environment (target/integrations-venv, the one
#   tests/support/install-clients.sh makes; created here if missing): openai, anthropic, boto3,
#   the AWS CLI v1 (awscli, which brings the `aws` command), and moto with its server extras.
# Idempotent: a second run installs nothing and prints only its summary line. Says precisely what
# is missing when an install fails.
set -euo pipefail
cd "$(dirname "$0")/../../.."
. scripts/lib.sh

if ! need_debs gh curl git openssl python3 python3-venv; then
    echo "sealed clients: a Debian package above could not be installed (apt-get install -y gh curl git openssl python3-venv)" >&2
    exit 1
fi

VENV="${MAESTRO_TEST_VENV:-$PWD/target/integrations-venv}"
# awscli 1.x pins botocore exactly; boto3 must be the release built on that same botocore.
PINS=(openai==3.60.0 anthropic==2.17.0 boto3==1.44.8 botocore==1.44.8 awscli==1.46.3
      'moto[server]==5.2.5')

pins_met() {
    "$VENV/bin/python" - "${PINS[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    name = name.split("[")[0]
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
import flask, werkzeug, openai, anthropic, boto3, moto  # noqa: E401  moto[server] needs flask
PY
}

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> making the Python environment $VENV"
    /usr/bin/python3 -m venv "$VENV"
fi
if ! pins_met; then
    echo "==> installing into $VENV: ${PINS[*]}"
    if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"; then
        echo "sealed clients: pip could not install ${PINS[*]} from PyPI into $VENV (see pip's error above)" >&2
        exit 1
    fi
    pins_met || { echo "sealed clients: after pip install, $VENV still lacks one of ${PINS[*]}" >&2; exit 1; }
fi
[ -x "$VENV/bin/aws" ] || { echo "sealed clients: $VENV/bin/aws is missing although awscli is installed" >&2; exit 1; }
# The tests run these as the sandbox uid: every directory on the way must be searchable.
chmod -R go+rX "$VENV"
echo "==> sealed clients ready: gh $(gh --version | awk 'NR==1{print $3}'), curl $(curl --version | awk 'NR==1{print $2}'), \
$(git --version), $(openssl version | awk '{print $1, $2}'), $("$VENV/bin/aws" --version 2>&1 | awk '{print $1}'), \
openai $("$VENV/bin/python" -c 'import openai; print(openai.__version__)'), \
anthropic $("$VENV/bin/python" -c 'import anthropic; print(anthropic.__version__)'), \
moto $("$VENV/bin/python" -c 'import moto; print(moto.__version__)')"
