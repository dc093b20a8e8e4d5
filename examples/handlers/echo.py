#!/usr/bin/python3
"""echo: answers every event with the event itself; a Kafka record whose
value has "poison": true makes it fail (the demo's dead letter).

Prints one line per invocation, which sluice logs under the invocation's
request id. Needs runtime/python on PYTHONPATH (sluice sets it)."""
import base64
import json

import sluice_runtime


def poisoned(event):
    """A Kafka record whose value is JSON with "poison": true."""
    for records in (event.get("records") or {}).values() if isinstance(event, dict) else ():
        for rec in records:
            try:
                if json.loads(base64.b64decode(rec.get("value") or "")).get("poison"):
                    return rec
            except (ValueError, AttributeError):
                pass
    return None


def handler(event, context):
    bad = poisoned(event)
    if bad:
        raise ValueError("poison record at offset %s" % bad["offset"])
    size = len(json.dumps(event))
    print("echo: got %d bytes (%d ms left)" % (size, context.get_remaining_time_in_millis()))
    for rec in event.get("Records", []) if isinstance(event, dict) else ():
        if "dynamodb" in rec:  # a Postgres change: say what changed
            ddb = rec["dynamodb"]
            print("echo: %s %s keys=%s new=%s old=%s" % (
                rec.get("eventName"), rec.get("tableName", ""), json.dumps(ddb.get("Keys")),
                json.dumps(ddb.get("NewImage")), json.dumps(ddb.get("OldImage"))))
    return event


sluice_runtime.start(handler)
