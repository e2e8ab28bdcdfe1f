#!/usr/bin/env python3
"""Runs one query with PyMySQL through the server that $DATABASE_URL names, as an application
that reads only that variable would: `mysql://user[:password]@host[:port]/database`, with
`?socket=PATH` for a unix socket (a sealed mysql secret's relay). Prints each row's columns
separated by a space; on a MySQL error prints `ERROR code: message` on stderr and exits 1.

Usage: pymysql_url.py QUERY. Used by tests/tests/sealed_mysql.rs.
"""
import os
import sys
from urllib.parse import parse_qs, unquote, urlsplit

import pymysql

url = urlsplit(os.environ.get("DATABASE_URL", ""))
if url.scheme != "mysql":
    print("DATABASE_URL is not a mysql:// URL", file=sys.stderr)
    sys.exit(2)
query = parse_qs(url.query)
args = {
    "user": unquote(url.username or ""),
    "password": unquote(url.password or ""),
    "database": unquote(url.path.lstrip("/")) or None,
}
if "socket" in query:
    args["unix_socket"] = query["socket"][0]
else:
    args["host"] = url.hostname
    args["port"] = url.port or 3306
try:
    conn = pymysql.connect(**args)
    with conn.cursor() as cur:
        cur.execute(sys.argv[1])
        for row in cur.fetchall():
            print(" ".join(str(c) for c in row))
    conn.close()
except pymysql.err.MySQLError as e:
    print(f"ERROR {e.args[0] if e.args else ''}: {e.args[1] if len(e.args) > 1 else e}", file=sys.stderr)
    sys.exit(1)
