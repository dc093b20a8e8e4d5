"""bench python-runtimes: the same function under runtime python (sluice's
bootstrap) and under the stock awslambdaric (runtime lambda, ./bootstrap)."""


def lambda_handler(event, context):
    return {"echo": event, "request_id": context.aws_request_id}
