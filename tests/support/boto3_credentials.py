#!/usr/bin/env python3
"""Prints, as one JSON object, the AWS credentials that boto3 resolves by its own default chain
(or for the profile named in argv[1]), the provider that found them, and the region.

Used by tests/tests/integrations_cloud.rs; exits 3 when boto3 finds no credentials.
"""
import json
import sys

import boto3

session = boto3.session.Session(profile_name=sys.argv[1] if len(sys.argv) > 1 else None)
credentials = session.get_credentials()
if credentials is None:
    print("boto3 found no credentials", file=sys.stderr)
    sys.exit(3)
frozen = credentials.get_frozen_credentials()
print(json.dumps({
    "access_key": frozen.access_key,
    "secret_key": frozen.secret_key,
    "token": frozen.token,
    "method": credentials.method,
    "region": session.region_name,
}))
