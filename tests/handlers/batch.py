#!/usr/bin/python3
"""Batch handler for the outcome engine's tests. Each record is
{"id": "...", "poison": bool, "fail_times": n, "mode": "partial"|"error",
"sleep_ms": n}.
A record fails while it is poison or has been seen at most fail_times
times (counted per process). Failing records are reported through
batchItemFailures when any of them asks for mode "partial", else the
whole invocation raises."""
import time

import sluice_runtime

seen = {}


def handler(event, context):
    failing, partial = [], False
    for rec in event.get("Records", []):
        time.sleep(int(rec.get("sleep_ms", 0)) / 1000.0)
        rid = str(rec.get("id"))
        seen[rid] = seen.get(rid, 0) + 1
        if rec.get("poison") or seen[rid] <= int(rec.get("fail_times", 0)):
            failing.append(rid)
            partial = partial or rec.get("mode") == "partial"
    print("batch:", [str(r.get("id")) for r in event.get("Records", [])], "failing:", failing)
    if failing and partial:
        return {"batchItemFailures": [{"itemIdentifier": i} for i in failing]}
    if failing:
        raise RuntimeError("records failed: " + ",".join(failing))
    return {"ok": len(event.get("Records", []))}


sluice_runtime.start(handler)
