#!/usr/bin/env python3
"""A plain HTTP CONNECT tunnel on 127.0.0.1, for checking that a client takes its proxy from the
environment (HTTPS_PROXY and friends) and its trust from the CA variables, without the agent.

  connect_proxy.py --port 0 --map '*=127.0.0.1:8443' [--map 'sts.amazonaws.com=127.0.0.1:9443']
                   [--log FILE]

Each `CONNECT host:port` is tunnelled to the address of the first --map whose pattern (fnmatch,
on the host name without port) matches; a host that matches none is refused with 403, so nothing
leaves loopback. The TLS inside the tunnel is end to end between client and stand-in: the proxy
sees no plaintext. Anything but CONNECT (plain-HTTP forwarding) gets 501. Appends one JSON line
per tunnel to --log: {"time", "target", "upstream", "status"}. Prints "listening on PORT" once
ready. Runs until killed.
"""
import argparse
import fnmatch
import json
import socket
import socketserver
import sys
import threading
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--map", action="append", default=[], metavar="PATTERN=HOST:PORT")
    parser.add_argument("--log")
    args = parser.parse_args()
    rules = []
    for rule in args.map:
        pattern, _, target = rule.partition("=")
        host, _, port = target.rpartition(":")
        rules.append((pattern.lower(), (host, int(port))))
    return args, rules


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def main():
    args, rules = parse_args()
    log_lock = threading.Lock()
    log_file = open(args.log, "a", encoding="utf-8") if args.log else None

    def log(record):
        if log_file:
            with log_lock:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()

    class Handler(socketserver.StreamRequestHandler):
        # Unbuffered: the head is read byte by byte, so no byte of the tunnelled stream is
        # left in a buffer when the splice starts.
        rbufsize = 0

        def handle(self):
            head = []
            while True:
                line = self.rfile.readline(65536)
                if line in (b"\r\n", b"\n", b""):
                    break
                head.append(line.decode("latin-1").rstrip("\r\n"))
            if not head:
                return
            method, target, _ = (head[0].split(" ", 2) + ["", ""])[:3]
            if method.upper() != "CONNECT":
                self.wfile.write(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                log({"time": time.time(), "target": target, "upstream": None, "status": 501})
                return
            host = target.rpartition(":")[0].strip("[]").lower()
            upstream = next((addr for pattern, addr in rules
                             if fnmatch.fnmatchcase(host, pattern)), None)
            if upstream is None:
                self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                log({"time": time.time(), "target": target, "upstream": None, "status": 403})
                return
            try:
                out = socket.create_connection(upstream, timeout=10)
                out.settimeout(None)
            except OSError:
                self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                log({"time": time.time(), "target": target, "upstream": list(upstream),
                     "status": 502})
                return
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self.wfile.flush()
            log({"time": time.time(), "target": target, "upstream": list(upstream),
                 "status": 200})
            back = threading.Thread(target=pipe, args=(out, self.connection), daemon=True)
            back.start()
            pipe(self.connection, out)
            back.join()
            out.close()

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", args.port), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
