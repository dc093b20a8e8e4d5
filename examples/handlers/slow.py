#!/usr/bin/python3
"""slow: sleeps event["sleep_ms"] milliseconds (default 5000), then answers
{"slept_ms": n}. For testing timeouts and concurrency."""
import time

import sluice_runtime


def handler(event, context):
    ms = 5000
    if isinstance(event, dict):
        ms = int(event.get("sleep_ms", 5000))
    print("slow: sleeping %d ms" % ms)
    time.sleep(ms / 1000)
    return {"slept_ms": ms}


sluice_runtime.start(handler)
