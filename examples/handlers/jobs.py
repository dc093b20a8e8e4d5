#!/usr/bin/python3
"""jobs: a background-job handler for a Redis queue (SQS-shaped events).

Each record's body is a JSON job. A job with "poison": true fails and is
reported in batchItemFailures (the others in the batch are deleted); it
comes back after the visibility timeout and, past max_receive_count, is
redriven to the dead-letter stream."""
import json

import sluice_runtime


def handler(event, context):
    failures = []
    for rec in event.get("Records", []):
        try:
            job = json.loads(rec["body"])
        except ValueError:
            job = {}
        receives = rec["attributes"]["ApproximateReceiveCount"]
        if isinstance(job, dict) and job.get("poison"):
            print("jobs: %s fails (receive %s)" % (rec["messageId"], receives))
            failures.append({"itemIdentifier": rec["messageId"]})
        else:
            print("jobs: %s done: %s" % (rec["messageId"], rec["body"]))
    return {"batchItemFailures": failures}


sluice_runtime.start(handler)
