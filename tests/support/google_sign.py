#!/usr/bin/env python3
"""Loads Application Default Credentials with google.auth.default(), as Google's client
libraries do, and signs argv[1] with the service account's key (RSA PKCS#1 v1.5, SHA-256).

Prints one JSON object: the credentials' class, the service account's e-mail, the project,
the path it loaded the key from, and the signature in hex. Used by
tests/tests/integrations_cloud.rs; needs no network.
"""
import json
import os
import sys

import google.auth

credentials, project = google.auth.default()
signature = credentials.sign_bytes(sys.argv[1].encode())
print(json.dumps({
    "class": f"{type(credentials).__module__}.{type(credentials).__name__}",
    "email": credentials.service_account_email,
    "project": project,
    "path": os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"),
    "signature": signature.hex(),
}))
