#!/usr/bin/env bash
# Proves, without the agent, that the stand-ins answer the real clients and that each client takes
# its proxy and its CA bundle from the environment as README.md says: starts the test CA, one
# stand-in (API routes, /echo, git), moto over TLS with signature checks, and connect_proxy.py
# mapping the real host names to them, then drives curl, the openai and anthropic SDKs, gh, git,
# the AWS CLI, boto3 and node through the tunnel (and some directly), each with the variables
# under test and with the ones that must NOT work. Each line: PASS|FAIL, what was checked.
# Ends with "N passed, N failed"; exits non-zero if any failed. Everything it starts it stops.
#
#   tests/support/sealed/verify.sh            (after tests/support/sealed/install.sh)
set -uo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
HERE=$ROOT/tests/support/sealed
VENV="${MAESTRO_TEST_VENV:-$ROOT/target/integrations-venv}"
PY=$VENV/bin/python
T=$(mktemp -d /tmp/maestro-sealed-verify.XXXXXX)
cleanup() {
    # start() runs in a command substitution (a subshell), so the pids are kept in files.
    for f in "$T"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
    sleep 0.5
    rm -rf "$T"
}
trap cleanup EXIT

pass=0 fail=0
result() { # result OK|BAD description
    if [ "$1" = OK ]; then pass=$((pass + 1)); echo "PASS $2"; else fail=$((fail + 1)); echo "FAIL $2"; fi
}
# expect ok|fail DESCRIPTION CMD...: the command's exit status must say success / failure.
expect() {
    local want=$1 what=$2; shift 2
    if timeout 120 "$@" >"$T/last.out" 2>&1; then got=ok; else got=fail; fi
    if [ "$got" = "$want" ]; then result OK "$what (expected $want)"
    else result BAD "$what (expected $want, got $got): $(tail -c 300 "$T/last.out" | tr '\n' ' ')"; fi
}
# seen DESCRIPTION FILE JQ-FILTER: the filter over the JSON-lines log selects at least one line.
seen() {
    if [ -n "$(jq -c "select($3)" "$2" 2>/dev/null | head -1)" ]; then result OK "$1"
    else result BAD "$1 (no matching line in $(basename "$2"))"; fi
}
start() { # start NAME CMD...: runs CMD in the background, waits for "listening on PORT"
    local name=$1; shift
    "$@" >"$T/$name.out" 2>"$T/$name.err" &
    echo $! >"$T/$name.pid"
    for _ in $(seq 1 100); do
        grep -q '^listening on ' "$T/$name.out" 2>/dev/null && break
        sleep 0.2
    done
    awk '/^listening on /{print $3}' "$T/$name.out"
}

"$HERE/certs.sh" "$T/pki"
CA=$T/pki/ca.pem
TOKEN="sk-maestro-real-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s' "$TOKEN" >"$T/token"
B64=$(printf 'x-access-token:%s' "$TOKEN" | base64 -w0)

# A bare repository for git clone, served as github.com/maestro/demo.git.
mkdir -p "$T/git/maestro" "$T/home"
git init -q --bare -b main "$T/git/maestro/demo.git"
git -C "$T/git/maestro/demo.git" config http.receivepack false
git clone -q "$T/git/maestro/demo.git" "$T/seed" 2>/dev/null
echo "hello from the git stand-in" >"$T/seed/README"
git -C "$T/seed" add README
git -C "$T/seed" -c user.email=t@example.net -c user.name=t commit -qm init
git -C "$T/seed" push -q origin HEAD:main

SP=$(start standin python3 "$HERE/standin.py" --cert "$T/pki/server.pem" --key "$T/pki/server.key" \
    --log "$T/standin.jsonl" --token-file "$T/token" --git-root "$T/git")
MP=$(start moto "$PY" "$HERE/moto_tls.py" --cert "$T/pki/server.pem" --key "$T/pki/server.key" \
    --keys-out "$T/aws.json" --log "$T/moto.jsonl")
PP=$(start proxy python3 "$HERE/connect_proxy.py" --log "$T/proxy.jsonl" \
    --map "*.amazonaws.com=127.0.0.1:$MP" --map "*=127.0.0.1:$SP")
[ -n "$SP" ] && [ -n "$MP" ] && [ -n "$PP" ] || { echo "a server did not start:"; cat "$T"/*.err; exit 1; }
echo "==> stand-in :$SP, moto :$MP, CONNECT proxy :$PP, logs in $T (removed at exit)"
PROXY=http://127.0.0.1:$PP
AKID=$(jq -r .access_key_id "$T/aws.json")
ASECRET=$(jq -r .secret_access_key "$T/aws.json")
BASE=(env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$T/home" LANG=C.UTF-8)

echo "--- curl $(curl --version | awk 'NR==1{print $2}')"
expect ok   "curl HTTPS_PROXY + CURL_CA_BUNDLE" "${BASE[@]}" HTTPS_PROXY=$PROXY CURL_CA_BUNDLE="$CA" \
    curl -fsS https://api.openai.com/echo -H "Authorization: Bearer $TOKEN"
grep -q "$TOKEN" "$T/last.out" && result OK "curl /echo: Authorization back in the body" \
    || result BAD "curl /echo: Authorization back in the body"
expect ok   "curl https_proxy (lower case) + SSL_CERT_FILE" "${BASE[@]}" https_proxy=$PROXY SSL_CERT_FILE="$CA" \
    curl -fsS https://api.openai.com/echo
expect fail "curl without a CA variable" "${BASE[@]}" https_proxy=$PROXY curl -fsS https://api.openai.com/echo
expect ok   "curl direct (--connect-to, no proxy)" "${BASE[@]}" CURL_CA_BUNDLE="$CA" \
    curl -fsS --connect-to "api.openai.com:443:127.0.0.1:$SP" -D "$T/echo.head" \
    https://api.openai.com/echo -H "Authorization: Bearer $TOKEN"
grep -qi "^X-Echo-Authorization: Bearer $TOKEN" "$T/echo.head" \
    && result OK "/echo: Authorization back in X-Echo-Authorization" \
    || result BAD "/echo: Authorization back in X-Echo-Authorization"

SDK='
import sys
try:
    if sys.argv[1] == "openai":
        import openai
        c = openai.OpenAI(max_retries=0, timeout=30)
        print([m.id for m in c.models.list()])
        print(c.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content)
    else:
        import anthropic
        c = anthropic.Anthropic(max_retries=0, timeout=30)
        print(c.messages.create(model="claude-x", max_tokens=8, messages=[{"role": "user", "content": "hi"}]).content[0].text)
except Exception as e:
    sys.exit(f"{type(e).__name__}: {e}")
'
for sdk in openai anthropic; do
    echo "--- $sdk $("$PY" -c "import $sdk; print($sdk.__version__)") (httpx2 $("$PY" -c 'import httpx2; print(httpx2.__version__)'))"
    KEYS=(OPENAI_API_KEY="$TOKEN" ANTHROPIC_API_KEY="$TOKEN")
    expect ok   "$sdk HTTPS_PROXY + SSL_CERT_FILE" "${BASE[@]}" "${KEYS[@]}" HTTPS_PROXY=$PROXY SSL_CERT_FILE="$CA" "$PY" -c "$SDK" $sdk
    expect ok   "$sdk https_proxy (lower case) + SSL_CERT_FILE" "${BASE[@]}" "${KEYS[@]}" https_proxy=$PROXY SSL_CERT_FILE="$CA" "$PY" -c "$SDK" $sdk
    expect ok   "$sdk HTTPS_PROXY + SSL_CERT_DIR" "${BASE[@]}" "${KEYS[@]}" HTTPS_PROXY=$PROXY SSL_CERT_DIR="$T/pki/dir" "$PY" -c "$SDK" $sdk
    expect fail "$sdk with REQUESTS_CA_BUNDLE only (httpx2 ignores it)" "${BASE[@]}" "${KEYS[@]}" HTTPS_PROXY=$PROXY REQUESTS_CA_BUNDLE="$CA" "$PY" -c "$SDK" $sdk
    expect fail "$sdk with a wrong key (stand-in answers 401)" "${BASE[@]}" OPENAI_API_KEY=sk-wrong ANTHROPIC_API_KEY=sk-ant-wrong HTTPS_PROXY=$PROXY SSL_CERT_FILE="$CA" "$PY" -c "$SDK" $sdk
done
expect ok   "openai direct (OPENAI_BASE_URL=https://localhost:PORT/v1)" "${BASE[@]}" OPENAI_API_KEY="$TOKEN" OPENAI_BASE_URL="https://localhost:$SP/v1" SSL_CERT_FILE="$CA" "$PY" -c "$SDK" openai
expect ok   "anthropic direct (ANTHROPIC_BASE_URL=https://localhost:PORT)" "${BASE[@]}" ANTHROPIC_API_KEY="$TOKEN" ANTHROPIC_BASE_URL="https://localhost:$SP" SSL_CERT_FILE="$CA" "$PY" -c "$SDK" anthropic
seen "openai: GET /v1/models with Authorization: Bearer <key>, SNI api.openai.com" "$T/standin.jsonl" \
    ".sni==\"api.openai.com\" and .path==\"/v1/models\" and ([.headers[]|select((.[0]|ascii_downcase)==\"authorization\")|.[1]]==[\"Bearer $TOKEN\"])"
seen "openai: POST /v1/chat/completions arrived" "$T/standin.jsonl" ".path==\"/v1/chat/completions\" and .status==200"
seen "anthropic: POST /v1/messages with Authorization: Bearer <key> (not x-api-key)" "$T/standin.jsonl" \
    ".sni==\"api.anthropic.com\" and .path==\"/v1/messages\" and ([.headers[]|select((.[0]|ascii_downcase)==\"authorization\")|.[1]]==[\"Bearer $TOKEN\"])"

echo "--- gh $(gh --version | awk 'NR==1{print $3}')"
GHENV=(GH_CONFIG_DIR="$T/home/gh" GH_NO_UPDATE_NOTIFIER=1 GH_PROMPT_DISABLED=1)
before=$(wc -l <"$T/standin.jsonl")
expect ok   "gh api user: GH_TOKEN + HTTPS_PROXY + SSL_CERT_FILE" "${BASE[@]}" "${GHENV[@]}" GH_TOKEN="$TOKEN" HTTPS_PROXY=$PROXY SSL_CERT_FILE="$CA" gh api user --jq .login
after=$(wc -l <"$T/standin.jsonl")
[ $((after - before)) -eq 1 ] && result OK "gh api user made exactly one request (GET /user), nothing else" \
    || result BAD "gh api user made $((after - before)) requests"
seen "gh: GET /user on api.github.com with Authorization: token <GH_TOKEN>" "$T/standin.jsonl" \
    ".sni==\"api.github.com\" and .path==\"/user\" and ([.headers[]|select((.[0]|ascii_downcase)==\"authorization\")|.[1]]==[\"token $TOKEN\"])"
expect ok   "gh api user: GITHUB_TOKEN + https_proxy (lower case) + SSL_CERT_DIR" "${BASE[@]}" "${GHENV[@]}" GITHUB_TOKEN="$TOKEN" https_proxy=$PROXY SSL_CERT_DIR="$T/pki/dir" gh api user --jq .login
expect fail "gh api user without a CA variable" "${BASE[@]}" "${GHENV[@]}" GH_TOKEN="$TOKEN" HTTPS_PROXY=$PROXY gh api user
expect fail "gh api user with a wrong token (stand-in answers 401)" "${BASE[@]}" "${GHENV[@]}" GH_TOKEN=ghp_wrong HTTPS_PROXY=$PROXY SSL_CERT_FILE="$CA" gh api user
[ -z "$(ls -A "$T/home/gh" 2>/dev/null)" ] && result OK "gh wrote no config or token file" || result BAD "gh wrote into its config dir: $(ls -A "$T/home/gh")"

HELPER="!f() { echo username=x-access-token; echo password=$TOKEN; }; f"
for GIT in /usr/bin/git /usr/local/bin/git; do
    [ -x "$GIT" ] || continue
    echo "--- $GIT $("$GIT" --version | awk '{print $3}')"
    G=("${BASE[@]}" GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0)
    n=$(echo "$GIT" | tr / _)
    expect ok   "$GIT clone: HTTPS_PROXY + GIT_SSL_CAINFO" "${G[@]}" HTTPS_PROXY=$PROXY GIT_SSL_CAINFO="$CA" \
        "$GIT" -c credential.helper="$HELPER" clone -q https://github.com/maestro/demo.git "$T/clone-$n-1"
    grep -q "hello from the git stand-in" "$T/clone-$n-1/README" 2>/dev/null && result OK "$GIT clone has the file" || result BAD "$GIT clone has the file"
    expect ok   "$GIT clone: https_proxy (lower case) + GIT_SSL_CAINFO" "${G[@]}" https_proxy=$PROXY GIT_SSL_CAINFO="$CA" \
        "$GIT" -c credential.helper="$HELPER" clone -q https://github.com/maestro/demo.git "$T/clone-$n-2"
    expect fail "$GIT clone with SSL_CERT_FILE only (libcurl-gnutls ignores it)" "${G[@]}" HTTPS_PROXY=$PROXY SSL_CERT_FILE="$CA" \
        "$GIT" -c credential.helper="$HELPER" clone -q https://github.com/maestro/demo.git "$T/clone-$n-3"
    expect fail "$GIT clone with CURL_CA_BUNDLE only" "${G[@]}" HTTPS_PROXY=$PROXY CURL_CA_BUNDLE="$CA" \
        "$GIT" -c credential.helper="$HELPER" clone -q https://github.com/maestro/demo.git "$T/clone-$n-4"
    expect fail "$GIT clone with a wrong password (stand-in answers 401)" "${G[@]}" HTTPS_PROXY=$PROXY GIT_SSL_CAINFO="$CA" \
        "$GIT" -c credential.helper='!f() { echo username=x-access-token; echo password=ghp_wrong; }; f' clone -q https://github.com/maestro/demo.git "$T/clone-$n-5"
done
seen "git: info/refs and git-upload-pack on github.com with Authorization: Basic x-access-token:<token>" "$T/standin.jsonl" \
    ".sni==\"github.com\" and (.path|test(\"git-upload-pack\")) and .status==200 and ([.headers[]|select((.[0]|ascii_downcase)==\"authorization\")|.[1]]==[\"Basic $B64\"])"

echo "--- aws $("$VENV/bin/aws" --version 2>&1 | awk '{print $1}'), boto3 $("$PY" -c 'import boto3; print(boto3.__version__)'), moto $("$PY" -c 'import moto; print(moto.__version__)')"
A=("${BASE[@]}" AWS_ACCESS_KEY_ID="$AKID" AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true)
expect ok   "aws sts get-caller-identity: HTTPS_PROXY + AWS_CA_BUNDLE" "${A[@]}" AWS_SECRET_ACCESS_KEY="$ASECRET" HTTPS_PROXY=$PROXY AWS_CA_BUNDLE="$CA" "$VENV/bin/aws" sts get-caller-identity
grep -q "arn:aws:iam::123456789012:user/maestro-sealed" "$T/last.out" && result OK "aws sts: the caller is the moto user the key belongs to" || result BAD "aws sts: caller"
seen "aws sts: POST / on sts.us-east-1.amazonaws.com (regional by default)" "$T/moto.jsonl" ".host==\"sts.us-east-1.amazonaws.com\""
expect ok   "aws sts: https_proxy (lower case) + REQUESTS_CA_BUNDLE" "${A[@]}" AWS_SECRET_ACCESS_KEY="$ASECRET" https_proxy=$PROXY REQUESTS_CA_BUNDLE="$CA" "$VENV/bin/aws" sts get-caller-identity
expect ok   "aws sts: AWS_STS_REGIONAL_ENDPOINTS=legacy" "${A[@]}" AWS_SECRET_ACCESS_KEY="$ASECRET" HTTPS_PROXY=$PROXY AWS_CA_BUNDLE="$CA" AWS_STS_REGIONAL_ENDPOINTS=legacy "$VENV/bin/aws" sts get-caller-identity
seen "aws sts with legacy endpoints: host sts.amazonaws.com" "$T/moto.jsonl" ".host==\"sts.amazonaws.com\""
expect fail "aws sts with SSL_CERT_FILE only (botocore ignores it)" "${A[@]}" AWS_SECRET_ACCESS_KEY="$ASECRET" HTTPS_PROXY=$PROXY SSL_CERT_FILE="$CA" "$VENV/bin/aws" sts get-caller-identity
expect fail "aws sts with a wrong secret key" "${A[@]}" AWS_SECRET_ACCESS_KEY="wrongwrongwrongwrongwrongwrongwrongwrong" HTTPS_PROXY=$PROXY AWS_CA_BUNDLE="$CA" "$VENV/bin/aws" sts get-caller-identity
grep -q SignatureDoesNotMatch "$T/last.out" && result OK "moto verifies SigV4: wrong secret -> SignatureDoesNotMatch" || result BAD "wrong secret did not give SignatureDoesNotMatch: $(cat "$T/last.out")"
expect fail "aws sts with an unknown key id" "${BASE[@]}" AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY="$ASECRET" AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null HTTPS_PROXY=$PROXY AWS_CA_BUNDLE="$CA" "$VENV/bin/aws" sts get-caller-identity
grep -q InvalidClientTokenId "$T/last.out" && result OK "unknown key id -> InvalidClientTokenId" || result BAD "unknown key id: $(cat "$T/last.out")"

S3='
import hashlib, os, sys, boto3
s3 = boto3.client("s3")
bucket = sys.argv[1]
s3.create_bucket(Bucket=bucket)
data = os.urandom(10 * 1024 * 1024)
s3.put_object(Bucket=bucket, Key="ten.bin", Body=data)
got = s3.get_object(Bucket=bucket, Key="ten.bin")["Body"].read()
assert got == data, "object differs"
print("10 MiB put and get ok")
'
expect ok   "boto3 S3 create-bucket, put and get of 10 MiB" "${A[@]}" AWS_SECRET_ACCESS_KEY="$ASECRET" HTTPS_PROXY=$PROXY AWS_CA_BUNDLE="$CA" "$PY" -c "$S3" maestro-verify-1
seen "boto3 put_object: virtual-hosted maestro-verify-1.s3.amazonaws.com, STREAMING-UNSIGNED-PAYLOAD-TRAILER, aws-chunked, x-amz-trailer" "$T/moto.jsonl" \
    ".method==\"PUT\" and .host==\"maestro-verify-1.s3.amazonaws.com\" and .path==\"/ten.bin\" and ([.headers[]|select(.[0]==\"x-amz-content-sha256\")|.[1]]==[\"STREAMING-UNSIGNED-PAYLOAD-TRAILER\"]) and ([.headers[]|select(.[0]==\"content-encoding\")|.[1]]==[\"aws-chunked\"]) and ([.headers[]|select(.[0]==\"x-amz-trailer\")|.[1]]==[\"x-amz-checksum-crc32\"])"
expect ok   "boto3 S3 with AWS_REQUEST_CHECKSUM_CALCULATION=when_required" "${A[@]}" AWS_SECRET_ACCESS_KEY="$ASECRET" HTTPS_PROXY=$PROXY AWS_CA_BUNDLE="$CA" AWS_REQUEST_CHECKSUM_CALCULATION=when_required "$PY" -c "$S3" maestro-verify-2
seen "boto3 put_object with when_required: a signed payload hash (hex SHA-256), no aws-chunked" "$T/moto.jsonl" \
    ".method==\"PUT\" and .host==\"maestro-verify-2.s3.amazonaws.com\" and .path==\"/ten.bin\" and ([.headers[]|select(.[0]==\"x-amz-content-sha256\")|.[1]|test(\"^[0-9a-f]{64}$\")]==[true]) and ([.headers[]|select(.[0]==\"content-encoding\")]==[])"
expect fail "boto3 S3 with a wrong secret key" "${A[@]}" AWS_SECRET_ACCESS_KEY="wrongwrongwrongwrongwrongwrongwrongwrong" HTTPS_PROXY=$PROXY AWS_CA_BUNDLE="$CA" "$PY" -c "$S3" maestro-verify-3
grep -q SignatureDoesNotMatch "$T/last.out" && result OK "moto verifies S3 SigV4: wrong secret -> SignatureDoesNotMatch" || result BAD "S3 wrong secret: $(tail -c 300 "$T/last.out")"
head -c $((10 * 1024 * 1024)) /dev/urandom >"$T/ten.bin"
expect ok   "aws s3 mb + cp up + cp down of 10 MiB (multipart)" bash -c "$(printf '%q ' "${A[@]}") AWS_SECRET_ACCESS_KEY=$ASECRET HTTPS_PROXY=$PROXY AWS_CA_BUNDLE=$CA sh -c '$VENV/bin/aws s3 mb s3://maestro-verify-cli && $VENV/bin/aws s3 cp --only-show-errors $T/ten.bin s3://maestro-verify-cli/ten.bin && $VENV/bin/aws s3 cp --only-show-errors s3://maestro-verify-cli/ten.bin $T/ten.back && cmp $T/ten.bin $T/ten.back'"
seen "aws s3 cp: UploadPart with STREAMING-UNSIGNED-PAYLOAD-TRAILER" "$T/moto.jsonl" \
    ".host==\"maestro-verify-cli.s3.amazonaws.com\" and (.path|test(\"partNumber=\")) and ([.headers[]|select(.[0]==\"x-amz-content-sha256\")|.[1]]==[\"STREAMING-UNSIGNED-PAYLOAD-TRAILER\"])"
jq -r 'select(.headers|map(.[0])|index("authorization")) | [.method, .host, (.path|split("?")[0]), ([.headers[]|select(.[0]=="x-amz-content-sha256")|.[1]][0]), ([.headers[]|select(.[0]=="content-encoding")|.[1]][0] // "-")] | @tsv' "$T/moto.jsonl" \
    | sort | uniq -c | sed 's/^/      moto saw: /'

echo "--- node $(node --version 2>/dev/null || echo missing)"
if command -v node >/dev/null; then
    FETCH='fetch(process.argv[1], {headers: {authorization: "Bearer n"}}).then(r => r.text()).then(t => console.log(t), e => { console.error(e.cause?.code || e.message); process.exit(1) })'
    expect ok   "node fetch direct with NODE_EXTRA_CA_CERTS" "${BASE[@]}" NODE_EXTRA_CA_CERTS="$CA" node -e "$FETCH" "https://localhost:$SP/echo"
    expect fail "node fetch direct with SSL_CERT_FILE only (node ignores it)" "${BASE[@]}" SSL_CERT_FILE="$CA" node -e "$FETCH" "https://localhost:$SP/echo"
    expect fail "node fetch ignores HTTPS_PROXY/https_proxy (resolves api.openai.com itself)" "${BASE[@]}" HTTPS_PROXY=$PROXY https_proxy=$PROXY NODE_USE_ENV_PROXY=1 NODE_EXTRA_CA_CERTS="$CA" node -e "$FETCH" https://api.openai.com/echo
fi

tunnels=$(jq -r .target "$T/proxy.jsonl" | sort | uniq -c | tr -s ' ' | tr '\n' ',')
echo "    CONNECT tunnels per target:$tunnels"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
