#!/usr/bin/python3
"""Fails the first `fail_times` invocations this process sees (per event
"key"), then succeeds: retries on a warm environment get past it."""
import sluice_runtime

seen = {}


def handler(event, context):
    key = str(event.get("key", ""))
    seen[key] = seen.get(key, 0) + 1
    if seen[key] <= int(event.get("fail_times", 0)):
        raise RuntimeError(f"attempt {seen[key]} of {key} fails on purpose")
    return {"key": key, "attempt": seen[key]}


sluice_runtime.start(handler)
