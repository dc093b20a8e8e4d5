#!/usr/bin/python3
"""echo: answers every event with the event itself.

Prints one line per invocation, which sluice logs under the invocation's
request id. Needs runtime/python on PYTHONPATH (sluice sets it)."""
import json

import sluice_runtime


def handler(event, context):
    size = len(json.dumps(event))
    print("echo: got %d bytes (%d ms left)" % (size, context.get_remaining_time_in_millis()))
    return event


sluice_runtime.start(handler)
