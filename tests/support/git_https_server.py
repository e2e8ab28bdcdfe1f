#!/usr/bin/env python3
"""A git smart-HTTP server over TLS that demands basic auth, around `git http-backend`.

Used by tests/tests/integrations_git.rs. Serves the repositories under --root to the one user
--user whose password is the content of --password-file; with --owner NAME=FILE, a repository
under NAME/ takes that owner's password instead (several accounts on one host). Answers everyone
else 401 with a Basic challenge, as a git hosting service does. Binds 127.0.0.1 on a free port, prints
"listening on PORT" once ready, and logs one line per request on stderr: method, path, status,
and whether credentials were sent (never what they were). Runs until killed.
"""
import argparse
import base64
import hmac
import http.server
import os
import ssl
import subprocess
import sys


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--owner", action="append", default=[], metavar="NAME=FILE")
    args = parser.parse_args()

    def basic(password_file):
        with open(password_file, encoding="utf-8") as f:
            password = f.read()
        return base64.b64encode(f"{args.user}:{password}".encode()).decode()

    expected = basic(args.password_file)
    owners = {}
    for item in args.owner:
        name, _, password_file = item.partition("=")
        owners[name.lower()] = basic(password_file)
    root = os.path.abspath(args.root)

    def expected_for(path):
        first = path.lstrip("/").split("/", 1)[0].lower()
        return owners.get(first, expected)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *log_args):
            pass  # one line per request, below, without headers

        def do_GET(self):
            self.serve()

        def do_POST(self):
            self.serve()

        def reply(self, status, headers, body):
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def read_body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return body
                    body += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def serve(self):
            auth = self.headers.get("Authorization", "")
            sent = auth.startswith("Basic ")
            body = self.read_body()
            want = expected_for(self.path)
            if not (sent and hmac.compare_digest(auth[len("Basic "):].strip(), want)):
                self.reply(401, [("WWW-Authenticate", 'Basic realm="maestro-test"')],
                           b"authentication required\n")
                self.log(401, sent)
                return
            path, _, query = self.path.partition("?")
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": os.environ.get("HOME", root),
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_PROJECT_ROOT": root,
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": args.user,
                "REMOTE_ADDR": self.client_address[0],
            }
            if self.headers.get("Git-Protocol"):
                env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
            if self.headers.get("Content-Encoding"):
                env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
            out = subprocess.run(["git", "http-backend"], input=body, env=env,
                                 capture_output=True, check=False).stdout
            head, _, content = out.partition(b"\r\n\r\n")
            status, headers = 200, []
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name and name.lower() != "content-length":
                    headers.append((name, value.strip()))
            self.reply(status, headers, content)
            self.log(status, sent)

        def log(self, status, sent):
            print(f"{self.command} {self.path} -> {status} (credentials sent: {sent})",
                  file=sys.stderr, flush=True)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
