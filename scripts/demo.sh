#!/usr/bin/env bash
# The product's main job, end to end, on one machine with embedded defaults:
# a broker, a user, two secrets, a session, an agent with its FUSE mount, activation,
# maestro-exec, a file read, deactivation, and session end. Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_cargo
need_fuse
need_debs util-linux procps

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "build"
cargo build --quiet --bins
BIN="$(pwd)/target/debug"
export PATH="$BIN:$PATH"

WORK="$(mktemp -d /tmp/maestro-demo.XXXXXX)"
chmod 0755 "$WORK"
BROKER_PID="" AGENT_PID=""
cleanup() {
    set +e
    [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
    grep -qs " $WORK/secrets " /proc/mounts && umount -l "$WORK/secrets"
    rm -rf "$WORK"
}
trap cleanup EXIT

# wait_for FILE PATTERN: wait until a line matching PATTERN appears in FILE (20 s at most).
wait_for() {
    for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; return 1
}

step "start a broker in a temporary data directory ($WORK/data)"
maestro-broker serve --data-dir "$WORK/data" --listen 127.0.0.1:0 >"$WORK/broker.out" 2>"$WORK/broker.log" &
BROKER_PID=$!
wait_for "$WORK/broker.out" "listening on"
export MAESTRO_URL; MAESTRO_URL="$(grep -o 'https://[^ ]*' "$WORK/broker.out" | head -1)"
export MAESTRO_CA="$WORK/data/ca.pem"
echo "broker at $MAESTRO_URL; CA certificate $MAESTRO_CA"

step "add a user"
maestro-broker user add demo --data-dir "$WORK/data" >"$WORK/demo.token"
export MAESTRO_TOKEN_FILE="$WORK/demo.token"
echo "user 'demo'; API token in $MAESTRO_TOKEN_FILE"

step "register a generic secret and an AWS secret, values read from files (never argv)"
umask 077
head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$WORK/api-token.txt"
printf 'AKIADEMO%s' "$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$WORK/aws-id.txt"
head -c 30 /dev/urandom | base64 >"$WORK/aws-secret.txt"
maestro secrets add DEMO_API --kind generic --field-file API_TOKEN="$WORK/api-token.txt" \
    --description "demo API token" --tag demo
maestro secrets add AWS_DEV --kind aws --field-file access_key_id="$WORK/aws-id.txt" \
    --field-file secret_access_key="$WORK/aws-secret.txt" --field region=eu-west-1
maestro secrets ls

step "create a session and its enrollment bundle"
SESSION="$(maestro sessions create --label demo --ttl 1h --bundle-out "$WORK/bundle.json" | head -1)"
echo "session $SESSION; bundle $WORK/bundle.json (mode $(stat -c %a "$WORK/bundle.json"))"

step "start the agent (the sandbox entrypoint) on a temporary mount, sandbox user nobody"
mkdir -p "$WORK/secrets"
export MAESTRO_AGENT_SOCK="$WORK/run/agent.sock"
maestro-agent run --bundle "$WORK/bundle.json" --mount "$WORK/secrets" \
    --socket "$MAESTRO_AGENT_SOCK" --user 65534:65534 >"$WORK/agent.out" 2>"$WORK/agent.log" &
AGENT_PID=$!
wait_for "$WORK/agent.out" "maestro-agent: ready"
grep " $WORK/secrets " /proc/mounts
as_user() { setpriv --reuid 65534 --regid 65534 --clear-groups "$@"; }

step "activate both secrets for the session (the /secrets command)"
maestro secrets activate --session "$SESSION" DEMO_API AWS_DEV
maestro sessions show "$SESSION"
for _ in $(seq 200); do [ -e "$WORK/secrets/API_TOKEN" ] && break; sleep 0.01; done
as_user maestro-exec --list

step "maestro-exec runs a command with the secrets in its environment (values not printed)"
as_user maestro-exec -- sh -c 'echo "API_TOKEN is set (${#API_TOKEN} characters); AWS_ACCESS_KEY_ID starts ${AWS_ACCESS_KEY_ID%${AWS_ACCESS_KEY_ID#????}}...; AWS_REGION=$AWS_REGION"'

step "read files under the mount"
ls -la "$WORK/secrets" "$WORK/secrets/aws"
as_user sh -c "echo \"AWS_REGION file: \$(cat $WORK/secrets/AWS_REGION)\"; echo \"API_TOKEN file: \$(wc -c <$WORK/secrets/API_TOKEN) bytes\""
as_user sed -e 's/=.*/= .../' "$WORK/secrets/aws/credentials"

step "deactivate DEMO_API: its file and variable are gone at once"
maestro secrets deactivate --session "$SESSION" DEMO_API
# The event reaches the agent within milliseconds; allow up to 2 s on a loaded machine.
for _ in $(seq 200); do [ -e "$WORK/secrets/API_TOKEN" ] || break; sleep 0.01; done
if [ -e "$WORK/secrets/API_TOKEN" ]; then echo "API_TOKEN file still there" >&2; exit 1; fi
echo "file $WORK/secrets/API_TOKEN: gone"
as_user maestro-exec -- sh -c 'echo "API_TOKEN in environment: ${API_TOKEN:-<unset>}"'

step "usage history: who used what and when"
maestro secrets history DEMO_API

step "end the session: the agent unmounts, zeroizes, removes its socket and exits"
maestro sessions end "$SESSION"
for _ in $(seq 50); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$AGENT_PID" 2>/dev/null; then echo "agent still running" >&2; exit 1; fi
wait "$AGENT_PID" && echo "agent exited with status 0"
AGENT_PID=""
if grep -qs " $WORK/secrets " /proc/mounts; then echo "mount still present" >&2; exit 1; fi
echo "mount gone; socket $( [ -e "$MAESTRO_AGENT_SOCK" ] && echo present || echo gone)"

step "done: everything ran on embedded defaults and is cleaned up"
