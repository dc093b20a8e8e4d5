"""A function written for AWS Lambda's Python runtime, run by sluice as it is
(`runtime: python`, `code: ./lambda`, `handler: app.lambda_handler` in
examples/quickstart.yaml): no sluice import, no wrapper.

    build/sluice invoke --local examples/quickstart.yaml hello --payload '{"name": "sluice"}'
"""
import logging
import os

logger = logging.getLogger()
logger.setLevel(logging.INFO)


def lambda_handler(event, context):
    logger.info("greeting %s", event.get("name", "world"))
    return {
        "message": "hello, %s" % event.get("name", "world"),
        "request_id": context.aws_request_id,
        "function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "region": os.environ["AWS_REGION"],
    }
