#!/usr/bin/python3
"""snap: the handler of bench/snapstart.c.

Its init imports what a typical service handler pulls in (HTTP, email and
XML parsing, decimals, logging, asyncio), so a cold start costs a real init
that a SnapStart restore skips. An event {"hold": s} keeps the environment
busy for s seconds, which makes the benchmark's next invocation start a
new environment; any other event answers at once."""
import asyncio
import base64
import csv
import dataclasses
import datetime
import decimal
import email.parser
import email.policy
import gzip
import hashlib
import hmac
import http.client
import json
import logging
import os
import time
import urllib.request
import uuid
import xml.etree.ElementTree
import zoneinfo

import sluice_runtime

LOG = logging.getLogger("snap")
PARSER = email.parser.BytesParser(policy=email.policy.default)
INIT_ID = uuid.uuid4().hex


def handler(event, context):
    hold = event.get("hold", 0) if isinstance(event, dict) else 0
    if hold:
        time.sleep(hold)
    return {
        "ok": True,
        "pid": os.getpid(),
        "init_id": INIT_ID,
        "init_type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
        "total": str(decimal.Decimal("1.10") + decimal.Decimal("2.20")),
    }


# keep the imports honest: touch each once
_ = (asyncio.get_event_loop_policy, base64.b64encode(b"x"), csv.excel, dataclasses.field,
     datetime.datetime.now(datetime.timezone.utc), gzip.compress(b"x"),
     hashlib.sha256(b"x").hexdigest(), hmac.new(b"k", b"x", "sha256").hexdigest(),
     http.client.HTTPConnection, json.dumps({}), urllib.request.Request("http://localhost/"),
     xml.etree.ElementTree.fromstring("<a/>"), zoneinfo.ZoneInfo)

sluice_runtime.start(handler)
