#!/usr/bin/env python3
"""Runs the mariadb client against the server that $DATABASE_URL names
(mysql://user:password@host:port/database), as an application that reads only that variable
would connect: every MYSQL_* variable is dropped, the URL's parts are percent-decoded, and the
password goes to the client in MYSQL_PWD, never in argv. Extra arguments go to the client.

Used by tests/tests/integrations_databases.rs.
"""
import os
import sys
from urllib.parse import unquote, urlsplit

url = urlsplit(os.environ.get("DATABASE_URL", ""))
if url.scheme != "mysql" or not url.hostname:
    print("DATABASE_URL is not a mysql:// URL", file=sys.stderr)
    sys.exit(2)
env = {k: v for k, v in os.environ.items() if not k.startswith("MYSQL_") and k != "DATABASE_URL"}
env["MYSQL_PWD"] = unquote(url.password or "")
argv = ["mariadb", "--no-defaults", "--protocol=tcp", "-h", url.hostname,
        "-P", str(url.port or 3306), "-u", unquote(url.username or "")]
database = unquote(url.path.lstrip("/"))
if database:
    argv.append(f"--database={database}")
os.execvpe("mariadb", argv + sys.argv[1:], env)
