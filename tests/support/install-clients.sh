#!/usr/bin/env bash
# Installs the client programs the integration tests drive (tests/tests/integrations_*.rs):
# git with git-http-backend, PostgreSQL (server and psql), MariaDB (server and client), OpenSSL,
# OpenSSH's client and server (the ssh tests start their own sshd on a loopback port),
# a Python virtual environment with boto3, google-auth, psycopg (v3, on Debian's libpq) and PyMySQL under target/, and (through
# tests/support/sealed/install.sh) the sealed-secrets clients. Idempotent: a second
# run installs nothing and prints nothing but its summary line.
#
# The virtual environment is built on Debian's /usr/bin/python3, not on a pyenv interpreter under
# /root: the tests run Python as an unprivileged uid, which must be able to read the interpreter.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

need_debs git openssh-client openssh-server postgresql postgresql-client mariadb-server mariadb-client openssl python3 python3-venv

VENV="${MAESTRO_TEST_VENV:-$PWD/target/integrations-venv}"
PY_PACKAGES=(boto3 google-auth cryptography psycopg PyMySQL)
if ! "$VENV/bin/python" -c 'import boto3, google.auth, cryptography, psycopg, pymysql' 2>/dev/null; then
    echo "==> making the Python environment $VENV (${PY_PACKAGES[*]})"
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
fi
# The tests run these as the sandbox uid: every directory on the way must be searchable.
chmod -R go+rX "$VENV"
# The sealed-secrets tests' clients (gh, openai, anthropic, awscli, moto) in the same environment.
MAESTRO_TEST_VENV="$VENV" tests/support/sealed/install.sh
echo "==> integration clients ready: $(git --version), psql $(psql --version | awk '{print $3}'), \
mariadb $(mariadb --version | awk '{print $5}' | tr -d ,), python venv $VENV"
