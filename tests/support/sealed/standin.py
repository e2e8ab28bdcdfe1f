#!/usr/bin/env python3
"""An HTTPS stand-in for the APIs whose secrets the sealed-secrets tests seal.

One threaded HTTP/1.1 server (keep-alive, TLS with --cert/--key, ALPN http/1.1) on 127.0.0.1.
It answers by path, whatever the Host header says, so one instance can stand in for every host
the proxy maps to it:

  GET  /v1/models              openai: a one-model list             (client.models.list())
  POST /v1/chat/completions    openai: a chat completion; SSE too   (client.chat.completions.create)
  POST /v1/messages            anthropic: a message                 (client.messages.create)
  GET  /user                   GitHub REST: the authenticated user  (gh api user)
  any  /echo[/...]             the request's Authorization (and x-api-key) back in the JSON body
                               and in the response headers X-Echo-Authorization / X-Echo-Api-Key
  GET/POST git smart HTTP      (/<repo>.git/info/refs, /<repo>.git/git-upload-pack, ...) through
                               `git http-backend` on the repositories under --git-root
  anything else                200 with a small JSON body naming the method and path (for curl)

With --token-file, the API routes (openai, anthropic, GitHub /user) accept only that value as the
credential (Bearer token, `token X`, or x-api-key) and answer 401 in the provider's shape
otherwise, so a request that reached the stand-in without the real value fails in the client too.
Git routes always demand Basic credentials (401 with a challenge otherwise, as GitHub does, so git
asks its credential helper); with --token-file the password must equal it (any user name, as
GitHub accepts for tokens). /echo and the fallback never check.

Every request is appended to --log as one JSON line, written whole under a lock and flushed:
  {"time", "sni", "method", "path", "host", "headers": [[name, value], ...], "body_b64",
   "status"}
so a test can check which value arrived where. Prints "listening on PORT" once ready (with
--port 0 the kernel picks the port). Runs until killed.

Test-only: it logs credentials by design.
"""
import argparse
import base64
import hmac
import json
import os
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import http.server

GIT_SERVICES = ("/info/refs", "/git-upload-pack", "/git-receive-pack")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cert", required=True, help="server certificate chain (PEM)")
    parser.add_argument("--key", required=True, help="its private key (PEM)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--log", required=True, help="file to append one JSON line per request")
    parser.add_argument("--token-file", help="the only credential the API routes accept")
    parser.add_argument("--git-root", help="directory of bare repositories served over git HTTP")
    return parser.parse_args()


class Log:
    """Appends whole JSON lines; one lock so concurrent requests never interleave."""

    def __init__(self, path):
        self.lock = threading.Lock()
        self.file = open(path, "a", encoding="utf-8")

    def write(self, record):
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self.lock:
            self.file.write(line)
            self.file.flush()


def make_handler(args, log, token):
    git_root = os.path.abspath(args.git_root) if args.git_root else None

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "maestro-standin/1"

        def setup(self):
            # The TLS handshake runs here, in this connection's thread, so a slow or broken
            # client never holds up the accept loop.
            self.request = self.server.tls.wrap_socket(self.request, server_side=True)
            self.sni = getattr(self.request, "maestro_sni", None)
            super().setup()

        def log_message(self, format, *log_args):
            pass  # the JSON log is the record

        def do_GET(self):
            self.serve()

        do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

        def read_body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return body
                    body += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def reply(self, status, body, content_type="application/json", headers=()):
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.status = status

        def credential(self):
            auth = self.headers.get("Authorization", "")
            for scheme in ("Bearer ", "bearer ", "token ", "Token "):
                if auth.startswith(scheme):
                    return auth[len(scheme):].strip()
            return self.headers.get("x-api-key", "")

        def authorized(self):
            return token is None or hmac.compare_digest(self.credential().encode(), token.encode())

        def serve(self):
            self.status = 0
            body = self.read_body()
            path = self.path.partition("?")[0]
            try:
                if git_root and any(s in path for s in GIT_SERVICES):
                    self.git(body)
                elif path == "/echo" or path.startswith("/echo/"):
                    self.echo()
                elif path == "/v1/models":
                    self.openai_models()
                elif path == "/v1/chat/completions":
                    self.openai_chat(body)
                elif path == "/v1/messages":
                    self.anthropic_messages(body)
                elif path == "/user":
                    self.github_user()
                else:
                    self.reply(200, {"ok": True, "method": self.command, "path": self.path})
            finally:
                log.write({
                    "time": time.time(),
                    "sni": self.sni,
                    "method": self.command,
                    "path": self.path,
                    "host": self.headers.get("Host"),
                    "headers": [[k, v] for k, v in self.headers.items()],
                    "body_b64": base64.b64encode(body).decode(),
                    "status": self.status,
                })

        def echo(self):
            auth = self.headers.get("Authorization", "")
            key = self.headers.get("x-api-key", "")
            self.reply(200, {"authorization": auth, "x-api-key": key},
                       headers=[("X-Echo-Authorization", auth), ("X-Echo-Api-Key", key)])

        def openai_models(self):
            if not self.authorized():
                return self.openai_401()
            self.reply(200, {"object": "list", "data": [
                {"id": "gpt-standin", "object": "model", "created": 1700000000,
                 "owned_by": "maestro-tests"}]})

        def openai_401(self):
            self.reply(401, {"error": {
                "message": "Incorrect API key provided (maestro stand-in).",
                "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})

        def openai_chat(self, body):
            if not self.authorized():
                return self.openai_401()
            request = json.loads(body or b"{}")
            model = request.get("model", "gpt-standin")
            text = "hello from the openai stand-in"
            if request.get("stream"):
                chunks = [
                    {"role": "assistant", "content": ""}, {"content": text}, None]
                events = b""
                for delta in chunks:
                    choice = {"index": 0, "delta": delta or {},
                              "finish_reason": None if delta else "stop", "logprobs": None}
                    event = {"id": "chatcmpl-standin", "object": "chat.completion.chunk",
                             "created": 1700000000, "model": model, "choices": [choice]}
                    events += b"data: " + json.dumps(event).encode() + b"\n\n"
                events += b"data: [DONE]\n\n"
                return self.reply(200, events, content_type="text/event-stream")
            self.reply(200, {
                "id": "chatcmpl-standin", "object": "chat.completion", "created": 1700000000,
                "model": model,
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": text,
                                         "refusal": None}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 6, "total_tokens": 7}})

        def anthropic_messages(self, body):
            if not self.authorized():
                return self.reply(401, {"type": "error", "error": {
                    "type": "authentication_error",
                    "message": "invalid x-api-key (maestro stand-in)"}})
            request = json.loads(body or b"{}")
            self.reply(200, {
                "id": "msg_standin", "type": "message", "role": "assistant",
                "model": request.get("model", "claude-standin"),
                "content": [{"type": "text", "text": "hello from the anthropic stand-in"}],
                "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 6}})

        def github_user(self):
            if not self.authorized():
                return self.reply(401, {
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest"})
            self.reply(200, {
                "login": "maestro-standin", "id": 1, "node_id": "U_standin", "type": "User",
                "site_admin": False, "name": "Maestro Stand-in",
                "html_url": "https://github.com/maestro-standin"},
                headers=[("X-OAuth-Scopes", "repo, read:org"), ("X-GitHub-Media-Type",
                                                                 "github.v3; format=json")])

        def git(self, body):
            auth = self.headers.get("Authorization", "")
            user, password = "", None
            if auth.startswith("Basic "):
                try:
                    user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    password = None
            if password is None or (token is not None and not hmac.compare_digest(
                    password.encode(), token.encode())):
                return self.reply(401, b"authentication required\n", "text/plain",
                                  [("WWW-Authenticate", 'Basic realm="GitHub"')])
            path, _, query = self.path.partition("?")
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": os.environ.get("HOME", git_root),
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_PROJECT_ROOT": git_root,
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": user or "git",
                "REMOTE_ADDR": self.client_address[0],
            }
            if self.headers.get("Git-Protocol"):
                env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
            if self.headers.get("Content-Encoding"):
                env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
            out = subprocess.run(["git", "http-backend"], input=body, env=env,
                                 capture_output=True, check=False).stdout
            head, _, content = out.partition(b"\r\n\r\n")
            status, headers, content_type = 200, [], "application/octet-stream"
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name.lower() == "content-type":
                    content_type = value.strip()
                elif name and name.lower() != "content-length":
                    headers.append((name, value.strip()))
            self.reply(status, content, content_type, headers)

    return Handler


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    args = parse_args()
    token = None
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(args.cert, args.key)
    tls.set_alpn_protocols(["http/1.1"])

    def remember_sni(sock, server_name, _context):
        sock.maestro_sni = server_name

    tls.sni_callback = remember_sni
    server = Server(("127.0.0.1", args.port), make_handler(args, Log(args.log), token))
    server.tls = tls
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
