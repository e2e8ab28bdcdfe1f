#!/usr/bin/env python3
"""moto's server (every AWS service it mocks, routed by Host) over TLS on 127.0.0.1, with SigV4
signature verification on from the very first request.

  moto_tls.py --cert server.pem --key server.key --port 0 --keys-out FILE [--log FILE]

How verification is turned on: moto checks signatures and IAM policies once
ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT (an environment
variable read when moto is imported; infinite by default, i.e. no checks). This script sets it to
0 before importing moto, so no request is ever let through unauthenticated, and creates the one
identity that can sign in-process, through moto's IAM backend (account 123456789012, partition
aws), before the server starts: user `maestro-sealed`, an inline policy allowing `*` on `*`, and an
access key. moto then recomputes each request's SigV4 signature with botocore from that key's
secret (for S3 with S3SigV4Auth, taking x-amz-content-sha256 as sent) and answers
SignatureDoesNotMatch (403) on a mismatch, InvalidClientTokenId / InvalidAccessKeyId on an
unknown key id, AccessDenied when no policy allows the action.

--keys-out gets, as JSON, {"access_key_id", "secret_access_key", "account_id", "user_arn"}
(test-only values: the test registers them as the real secret). --log appends one JSON line per
request: method, path (with query), host, and all headers (no body), so a test can see the
addressing style and the payload mode (x-amz-content-sha256, content-encoding,
x-amz-decoded-content-length, x-amz-trailer). Prints "listening on PORT" once ready. Runs until
killed.
"""
import argparse
import json
import os
import ssl
import sys
import threading
import time

os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"  # before moto reads its settings

from moto.core import DEFAULT_ACCOUNT_ID  # noqa: E402
from moto.iam.models import iam_backends  # noqa: E402
from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server  # noqa: E402

ADMIN_POLICY = json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
})


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--keys-out", required=True, help="file to write the access key into")
    parser.add_argument("--log", help="file to append one JSON line per request (no bodies)")
    return parser.parse_args()


def create_identity():
    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    user = iam.create_user(region_name="us-east-1", user_name="maestro-sealed")
    iam.put_user_policy("maestro-sealed", "admin", ADMIN_POLICY)
    key = iam.create_access_key("maestro-sealed")
    return {
        "access_key_id": key.access_key_id,
        "secret_access_key": key.secret_access_key,
        "account_id": DEFAULT_ACCOUNT_ID,
        "user_arn": user.arn,
    }


def logging_app(app, path):
    """WSGI middleware that records each request's line and headers before moto sees it."""
    if not path:
        return app
    lock = threading.Lock()
    out = open(path, "a", encoding="utf-8")

    def wrapped(environ, start_response):
        headers = [[k[5:].replace("_", "-").lower(), v] for k, v in environ.items()
                   if k.startswith("HTTP_")]
        for k in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(k):
                headers.append([k.replace("_", "-").lower(), environ[k]])
        query = environ.get("QUERY_STRING")
        record = {
            "time": time.time(),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO", "") + ("?" + query if query else ""),
            "host": environ.get("HTTP_HOST"),
            "headers": headers,
        }
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with lock:
            out.write(line)
            out.flush()
        return app(environ, start_response)

    return wrapped


def main():
    args = parse_args()
    identity = create_identity()
    tmp = args.keys_out + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(identity, f)
    os.replace(tmp, args.keys_out)

    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(args.cert, args.key)
    tls.set_alpn_protocols(["http/1.1"])
    app = logging_app(DomainDispatcherApplication(create_backend_app), args.log)
    server = make_server("127.0.0.1", args.port, app, threaded=True,
                         request_handler=MotoRequestHandler, ssl_context=tls)
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
