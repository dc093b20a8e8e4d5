#!/usr/bin/python3
"""fail: rejects every event with an OrderError.

For testing retries, bisection and dead-letter destinations: every
invocation ends with ok:false, error_type "OrderError"."""
import sluice_runtime


class OrderError(Exception):
    pass


def handler(event, context):
    print("fail: rejecting request %s" % context.aws_request_id)
    raise OrderError("order rejected")


sluice_runtime.start(handler)
