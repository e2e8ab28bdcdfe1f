#!/usr/bin/env bash
# Makes a test-only CA and one server certificate for every host name the sealed-secrets stand-ins
# answer for, into the directory given as the first argument:
#   ca.pem ca.key    the test CA (P-256, 2 days); give ca.pem to whatever must trust the stand-ins
#   server.pem       the leaf, followed by nothing else (the CA is the direct issuer)
#   server.key       its key
#   dir/             the CA alone under its OpenSSL hash name, for SSL_CERT_DIR-style lookups
# The leaf's names: the real API hosts the tests seal secrets for (the proxy maps them to loopback
# and trusts this CA upstream), S3's virtual-hosted names (wildcards, one label deep, so
# *.s3.amazonaws.com for bucket.s3.amazonaws.com), STS's global and regional names, a host that
# no secret belongs to (the leak target), localhost and 127.0.0.1 for direct checks.
# Idempotent: does nothing if server.pem already exists. Needs openssl (1.1.1 or later).
set -euo pipefail
dir="${1:?usage: certs.sh DIR}"
mkdir -p "$dir"
cd "$dir"
[ -s server.pem ] && [ -s ca.pem ] && exit 0

NAMES=(
    api.openai.com api.anthropic.com api.github.com github.com uploads.github.com
    codeload.github.com
    sts.amazonaws.com sts.us-east-1.amazonaws.com iam.amazonaws.com
    s3.amazonaws.com '*.s3.amazonaws.com'
    s3.us-east-1.amazonaws.com '*.s3.us-east-1.amazonaws.com'
    leak.example.net echo.example.net
    localhost
)
san=""
for n in "${NAMES[@]}"; do san+="DNS:$n,"; done
san+="IP:127.0.0.1,IP:::1"

openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout ca.key -out ca.pem -days 2 -subj "/CN=maestro sealed-secrets test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout server.key -out server.csr -subj "/CN=maestro sealed-secrets stand-in" 2>/dev/null
cat > server.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=$san
EXT
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out server.pem -days 2 -extfile server.ext 2>/dev/null
rm -f server.csr server.ext ca.srl
mkdir -p dir
cp ca.pem "dir/$(openssl x509 -hash -noout -in ca.pem).0"
chmod 644 ca.pem server.pem
chmod 600 ca.key server.key
