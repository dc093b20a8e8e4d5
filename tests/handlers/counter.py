#!/usr/bin/python3
"""counter: proves warm reuse and SnapStart restores.

Each invocation answers {"count": n, ...} where n counts invocations in this
process; "init_id" is drawn once at import, so environments forked from one
template share it while "pid" and the post-restore random values differ."""
import os
import random
import uuid

import sluice_runtime

INIT_ID = uuid.uuid4().hex
state = {"count": 0, "snapshotted": False, "restored": False, "restore_random": None}


@sluice_runtime.register_before_snapshot
def before_snapshot():
    state["snapshotted"] = True


@sluice_runtime.register_after_restore
def after_restore():
    state["restored"] = True
    # Drawn after the runtime re-seeded: must differ between restored copies.
    state["restore_random"] = random.random()


def handler(event, context):
    state["count"] += 1
    print("counter: %d" % state["count"])
    return {
        "count": state["count"],
        "pid": os.getpid(),
        "init_id": INIT_ID,
        "init_type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
        "snapshotted": state["snapshotted"],
        "restored": state["restored"],
        "restore_random": state["restore_random"],
        "random": random.random(),
        "request_id": context.aws_request_id,
    }


sluice_runtime.start(handler)
