#!/usr/bin/python3
"""The management API test's client side (tests/integration/test_mgmt_api.c).

Runs one phase against a live sluice with the real AWS CLI (v1, from the
tests/.layers/awscli layer, in a child process with its own botocore) and
boto3 (this process, the tests/.layers/powertools layer), checking every
answer. Exit 0 when every check passed; otherwise the first failure is
printed and the exit code is 1.

    mgmt_api.py ENDPOINT PHASE CONTEXT_JSON

CONTEXT_JSON: {"region", "account", "redis_key", "kafka_brokers",
"kafka_topic", "pg_table", "pg_slot", "layer_cli", "secret"} and the
credentials: admin (AKIAMGMTADMIN), read-only (AKIAMGMTREAD), invoke-only
(AKIAMGMTINVOKE), and the bearer token "tok-reader" (read scope, function
rec only).
"""
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import boto3
import botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

EP, PHASE, CTX = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
KEYS = {
    "admin": ("AKIAMGMTADMIN", "admin-secret-1"),
    "read": ("AKIAMGMTREAD", "read-secret-1"),
    "invoke": ("AKIAMGMTINVOKE", "invoke-secret-1"),
}
NS = uuid.UUID("5d1c0e6a-7f0b-4c59-9a43-2b1f6e8d0c71")


def fail(msg):
    print("FAIL:", msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def cli(*args, key="admin", ok=True):
    """`aws lambda ARGS` with key's credentials: (rc, parsed stdout, stderr)."""
    kid, secret = KEYS[key]
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": CTX["layer_cli"],
        "AWS_ACCESS_KEY_ID": kid,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": CTX["region"],
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PAGER": "",
        "HOME": "/tmp",
    }
    cmd = ["/usr/bin/python3", os.path.join(CTX["layer_cli"], "bin", "aws"), "lambda",
           *args, "--endpoint-url", EP, "--output", "json"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    out = None
    if p.stdout.strip():
        try:
            out = json.loads(p.stdout)
        except ValueError:
            out = p.stdout
    if ok and p.returncode != 0:
        fail("aws lambda %s: exit %d: %s" % (" ".join(args), p.returncode, p.stderr.strip()))
    return p.returncode, out, p.stderr


def cli_error(code, *args, key="admin"):
    rc, _, err = cli(*args, key=key, ok=False)
    check(rc != 0 and code in err,
          "aws lambda %s: expected %s, got exit %d: %s" % (" ".join(args), code, rc, err.strip()))


def client(key="admin", validate=True):
    kid, secret = KEYS[key]
    return boto3.client("lambda", endpoint_url=EP, region_name=CTX["region"],
                        aws_access_key_id=kid, aws_secret_access_key=secret,
                        config=Config(parameter_validation=validate,
                                      retries={"max_attempts": 1}))


def boto_error(code, fn, **kw):
    try:
        fn(**kw)
    except botocore.exceptions.ClientError as e:
        got = e.response["Error"]["Code"]
        check(got == code, "%s: expected %s, got %s (%s)" % (fn.__name__, code, got, e))
        check(e.response["Error"].get("Message"), "%s: %s without a message" % (fn.__name__, code))
        return e
    fail("%s(%s) succeeded; expected %s" % (fn.__name__, kw, code))


def raw(method, path, body=None, key="admin", bearer=None, headers=None):
    """A request as sent, signed with key (or a bearer token): (status, headers, body)."""
    url = EP + path
    data = body.encode() if isinstance(body, str) else body
    h = dict(headers or {})
    if bearer:
        h["Authorization"] = "Bearer " + bearer
    elif key:
        kid, secret = KEYS[key]
        r = AWSRequest(method=method, url=url, data=data or b"", headers=h)
        SigV4Auth(Credentials(kid, secret), "lambda", CTX["region"]).add_auth(r)
        h = dict(r.headers.items())
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def raw_error(status, etype, method, path, body=None, **kw):
    st, h, b = raw(method, path, body, **kw)
    check(st == status, "%s %s: status %d, expected %d: %r" % (method, path[:80], st, status, b[:300]))
    check(h.get("X-Amzn-ErrorType") == etype,
          "%s %s: X-Amzn-ErrorType %r, expected %s" % (method, path[:80], h.get("X-Amzn-ErrorType"), etype))
    j = json.loads(b)
    check(j.get("Type") == "User" and (j.get("Message") or j.get("message")),
          "%s %s: error body %r" % (method, path[:80], j))
    return j


def fn_arn(name):
    return "arn:aws:lambda:%s:%s:function:%s" % (CTX["region"], CTX["account"], name)


def want_uuid(fn, src):
    return str(uuid.uuid5(NS, "%s:%s:%s" % (CTX["account"], fn, src)))


REDIS_ARN = "arn:aws:sqs:%s:%s:%s" % (CTX["region"], CTX["account"], CTX["redis_key"])
PG_ARN = "arn:aws:dynamodb:%s:%s:table/public.%s/stream/%s" % (
    CTX["region"], CTX["account"], CTX["pg_table"], CTX["pg_slot"])
U_REDIS, U_KAFKA, U_PG = want_uuid("rec", "q"), want_uuid("noop", "k"), want_uuid("noop", "pg")


def esm(u, key="admin"):
    return cli("get-event-source-mapping", "--uuid", u, key=key)[1]


# ---------------------------------------------------------------------------

def phase_read():
    # ListFunctions through the CLI (which pages with Marker itself) and boto3
    _, out, _ = cli("list-functions")
    names = sorted(f["FunctionName"] for f in out["Functions"])
    check(names == ["noop", "rec"], "list-functions: %s" % names)
    lam = client()
    p1 = lam.list_functions(MaxItems=1)
    check(len(p1["Functions"]) == 1 and p1.get("NextMarker"), "page 1: %s" % p1)
    p2 = lam.list_functions(MaxItems=1, Marker=p1["NextMarker"])
    check(len(p2["Functions"]) == 1 and "NextMarker" not in p2, "page 2: %s" % p2)
    check({p1["Functions"][0]["FunctionName"], p2["Functions"][0]["FunctionName"]} ==
          {"noop", "rec"}, "pages do not add up")
    pages = list(lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 1}))
    check(sum(len(p["Functions"]) for p in pages) == 2, "paginator: %s" % pages)

    # the waiter reads GetFunctionConfiguration's State
    cli("wait", "function-active", "--function-name", "rec")
    lam.get_waiter("function_active").wait(FunctionName="noop",
                                          WaiterConfig={"Delay": 1, "MaxAttempts": 2})

    _, c, _ = cli("get-function-configuration", "--function-name", "rec")
    check(c["State"] == "Active" and c["LastUpdateStatus"] == "Successful", "state: %s" % c)
    check(c["FunctionArn"] == fn_arn("rec"), "arn: %s" % c["FunctionArn"])
    check(c["Runtime"] == "native" and c["MemorySize"] == 256 and c["Timeout"] == 7,
          "settings: %s" % c)
    check(c["Handler"].endswith("redis_rec"), "handler: %s" % c["Handler"])
    check(c["LoggingConfig"]["LogGroup"] == "/aws/lambda/rec", "logging: %s" % c)
    env = c["Environment"]["Variables"]
    check(set(env) >= {"OUT", "API_SECRET"} and all(v == "***" for v in env.values()),
          "environment: %s" % env)
    check(CTX["secret"] not in json.dumps(c), "a secret value reached the answer")
    _, g, _ = cli("get-function", "--function-name", fn_arn("rec"))
    check(g["Configuration"]["FunctionName"] == "rec" and g["Tags"] == {}, "get-function: %s" % g)
    cli_error("ResourceNotFoundException", "get-function", "--function-name", "nosuch")
    cli_error("ResourceNotFoundException", "get-function-configuration", "--function-name",
              "rec:7")
    boto_error("ResourceNotFoundException", lam.get_function, FunctionName="nosuch")

    # every mapping, with the ARNs its events carry and a UUID derived from its names
    _, m, _ = cli("list-event-source-mappings")
    by = {x["UUID"]: x for x in m["EventSourceMappings"]}
    check(set(by) == {U_REDIS, U_KAFKA, U_PG}, "mappings: %s" % sorted(by))
    r, k, pg = by[U_REDIS], by[U_KAFKA], by[U_PG]
    check(r["EventSourceArn"] == REDIS_ARN and r["FunctionArn"] == fn_arn("rec"), "redis: %s" % r)
    check(r["State"] == "Enabled" and r["BatchSize"] == 10, "redis: %s" % r)
    check("MaximumRetryAttempts" not in r, "a queue has no retry setting: %s" % r)
    check(k["SelfManagedEventSource"]["Endpoints"]["KAFKA_BOOTSTRAP_SERVERS"] ==
          CTX["kafka_brokers"].split(","), "kafka: %s" % k)
    check(k["Topics"] == [CTX["kafka_topic"]] and k["StartingPosition"] == "TRIM_HORIZON",
          "kafka: %s" % k)
    check(k["MaximumRetryAttempts"] == -1 and k["BisectBatchOnFunctionError"] is False,
          "kafka: %s" % k)
    check(pg["EventSourceArn"] == PG_ARN, "pg: %s != %s" % (pg.get("EventSourceArn"), PG_ARN))
    for x in (r, k, pg):
        check(x["LastProcessingResult"] in ("No records processed", "OK"), "result: %s" % x)
        check(x["StateTransitionReason"], "reason: %s" % x)
    _, m, _ = cli("list-event-source-mappings", "--function-name", "noop")
    check({x["UUID"] for x in m["EventSourceMappings"]} == {U_KAFKA, U_PG}, "by function: %s" % m)
    _, m, _ = cli("list-event-source-mappings", "--event-source-arn", REDIS_ARN)
    check([x["UUID"] for x in m["EventSourceMappings"]] == [U_REDIS], "by source: %s" % m)
    p1 = lam.list_event_source_mappings(MaxItems=2)
    p2 = lam.list_event_source_mappings(MaxItems=2, Marker=p1["NextMarker"])
    check(len(p1["EventSourceMappings"]) == 2 and len(p2["EventSourceMappings"]) == 1 and
          "NextMarker" not in p2, "mapping pages: %s %s" % (p1, p2))
    check(lam.get_event_source_mapping(UUID=U_PG)["EventSourceArn"] == PG_ARN, "get pg")
    cli_error("ResourceNotFoundException", "get-event-source-mapping", "--uuid",
              "00000000-0000-0000-0000-000000000000")

    _, cc, _ = cli("get-function-concurrency", "--function-name", "rec")
    check(cc in (None, {}), "no reserved concurrency yet: %s" % cc)
    _, e, _ = cli("get-function-event-invoke-config", "--function-name", "rec")
    check(e["MaximumRetryAttempts"] == 2 and e["MaximumEventAgeInSeconds"] == 3600 and
          e["FunctionArn"] == fn_arn("rec"), "event invoke config: %s" % e)
    _, a, _ = cli("get-account-settings")
    check(a["AccountLimit"]["ConcurrentExecutions"] == 50 and
          a["AccountLimit"]["UnreservedConcurrentExecutions"] == 50 and
          a["AccountUsage"]["FunctionCount"] == 2, "account: %s" % a)
    _, t, _ = cli("list-tags", "--resource", fn_arn("noop"))
    check(t == {"Tags": {}}, "tags: %s" % t)
    cli_error("ResourceNotFoundException", "list-tags", "--resource", fn_arn("nosuch"))


def wait_state(u, want):
    for _ in range(100):
        s = esm(u)["State"]
        if s == want:
            return
        import time
        time.sleep(0.1)
    fail("mapping %s stays %s, not %s" % (u, s, want))


def phase_disable():
    _, r, _ = cli("update-event-source-mapping", "--uuid", U_REDIS, "--no-enabled")
    check(r["State"] in ("Disabled", "Disabling") and r["UUID"] == U_REDIS, "disable: %s" % r)
    wait_state(U_REDIS, "Disabled")
    check(esm(U_REDIS)["StateTransitionReason"] == "USER_INITIATED", "reason")


def phase_enable():
    _, r, _ = cli("update-event-source-mapping", "--uuid", U_REDIS, "--enabled")
    check(r["State"] == "Enabled", "enable: %s" % r)


def phase_writes():
    lam = client()
    _, r, _ = cli("update-event-source-mapping", "--uuid", U_REDIS, "--batch-size", "7",
                  "--maximum-batching-window-in-seconds", "2",
                  "--function-response-types", "ReportBatchItemFailures")
    check(r["BatchSize"] == 7 and r["MaximumBatchingWindowInSeconds"] == 2 and
          r["FunctionResponseTypes"] == ["ReportBatchItemFailures"], "update redis: %s" % r)
    _, k, _ = cli("update-event-source-mapping", "--uuid", U_KAFKA, "--maximum-retry-attempts",
                  "5", "--maximum-record-age-in-seconds", "3600",
                  "--bisect-batch-on-function-error", "--batch-size", "50")
    check(k["MaximumRetryAttempts"] == 5 and k["MaximumRecordAgeInSeconds"] == 3600 and
          k["BisectBatchOnFunctionError"] is True and k["BatchSize"] == 50, "update kafka: %s" % k)
    check(esm(U_KAFKA)["BatchSize"] == 50, "the change is read back")
    # refusals: a stream setting on a queue, out of range (past the CLI's own checks)
    cli_error("InvalidParameterValueException", "update-event-source-mapping", "--uuid", U_REDIS,
              "--maximum-retry-attempts", "3")
    raw_lam = client(validate=False)
    boto_error("InvalidParameterValueException", raw_lam.update_event_source_mapping,
               UUID=U_REDIS, BatchSize=20000)
    boto_error("InvalidParameterValueException", raw_lam.update_event_source_mapping,
               UUID=U_KAFKA, MaximumRecordAgeInSeconds=5)
    boto_error("InvalidParameterValueException", raw_lam.update_event_source_mapping,
               UUID=U_KAFKA, FunctionName="rec")
    check(esm(U_REDIS)["BatchSize"] == 7, "a refused update changed nothing")

    _, c, _ = cli("put-function-concurrency", "--function-name", "rec",
                  "--reserved-concurrent-executions", "5")
    check(c == {"ReservedConcurrentExecutions": 5}, "put concurrency: %s" % c)
    check(lam.get_function_concurrency(FunctionName="rec")["ReservedConcurrentExecutions"] == 5,
          "get concurrency")
    check(lam.get_function(FunctionName="rec")["Concurrency"]["ReservedConcurrentExecutions"] == 5,
          "get-function's concurrency")
    check(lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 45,
          "unreserved")
    cli("put-function-concurrency", "--function-name", "noop", "--reserved-concurrent-executions", "3")
    rc, _, _ = cli("delete-function-concurrency", "--function-name", "noop")
    check("ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName="noop"),
          "deleted concurrency")

    cli_error("ResourceConflictException", "put-provisioned-concurrency-config", "--function-name",
              "rec", "--qualifier", "$LATEST", "--provisioned-concurrent-executions", "6")
    _, p, _ = cli("put-provisioned-concurrency-config", "--function-name", "rec", "--qualifier",
                  "$LATEST", "--provisioned-concurrent-executions", "1")
    check(p["RequestedProvisionedConcurrentExecutions"] == 1 and p["Status"] == "IN_PROGRESS",
          "put provisioned: %s" % p)
    g = lam.get_provisioned_concurrency_config(FunctionName="rec", Qualifier="$LATEST")
    check(g["RequestedProvisionedConcurrentExecutions"] == 1, "get provisioned: %s" % g)
    cli_error("ResourceConflictException", "put-function-concurrency", "--function-name", "rec",
              "--reserved-concurrent-executions", "0")
    cli("put-provisioned-concurrency-config", "--function-name", "noop", "--qualifier",
        "$LATEST", "--provisioned-concurrent-executions", "2")
    cli("delete-provisioned-concurrency-config", "--function-name", "noop", "--qualifier", "$LATEST")
    boto_error("ProvisionedConcurrencyConfigNotFoundException",
               lam.get_provisioned_concurrency_config, FunctionName="noop", Qualifier="$LATEST")

    _, e, _ = cli("put-function-event-invoke-config", "--function-name", "rec",
                  "--maximum-retry-attempts", "1", "--maximum-event-age-in-seconds", "600")
    check(e["MaximumRetryAttempts"] == 1 and e["MaximumEventAgeInSeconds"] == 600,
          "event invoke config: %s" % e)
    boto_error("InvalidParameterValueException", lam.put_function_event_invoke_config,
               FunctionName="rec", DestinationConfig={"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:000000000000:x"}})


def phase_after_restart():
    lam = client()
    r, k = esm(U_REDIS), esm(U_KAFKA)
    check(r["State"] == "Enabled" and r["BatchSize"] == 7 and
          r["FunctionResponseTypes"] == ["ReportBatchItemFailures"], "redis after restart: %s" % r)
    check(k["MaximumRetryAttempts"] == 5 and k["BatchSize"] == 50, "kafka after restart: %s" % k)
    check(lam.get_function_concurrency(FunctionName="rec")["ReservedConcurrentExecutions"] == 5,
          "concurrency after restart")
    g = lam.get_provisioned_concurrency_config(FunctionName="rec", Qualifier="$LATEST")
    check(g["Status"] == "READY" and g["AllocatedProvisionedConcurrentExecutions"] == 1,
          "provisioned after restart: %s" % g)
    e = lam.get_function_event_invoke_config(FunctionName="rec")
    check(e["MaximumRetryAttempts"] == 1, "event invoke config after restart: %s" % e)


def phase_scopes():
    # read-only: reads yes, writes no
    esm(U_REDIS, key="read")
    cli_error("AccessDeniedException", "update-event-source-mapping", "--uuid", U_REDIS,
              "--batch-size", "3", key="read")
    cli_error("AccessDeniedException", "put-function-concurrency", "--function-name", "rec",
              "--reserved-concurrent-executions", "2", key="read")
    cli_error("AccessDeniedException", "invoke", "--function-name", "rec", "/dev/null", key="read")
    # invoke-only: invocations yes, reads no
    cli_error("AccessDeniedException", "list-functions", key="invoke")
    cli_error("AccessDeniedException", "get-event-source-mapping", "--uuid", U_REDIS, key="invoke")
    rc, out, err = cli("invoke", "--function-name", "noop", "/tmp/mgmt-invoke-out.json",
                       key="invoke", ok=False)
    check(rc == 0 and out.get("StatusCode") == 200, "invoke with the invoke key: %s %s" % (out, err))
    check(esm(U_REDIS)["BatchSize"] == 7, "refused writes changed nothing")
    # a bearer token with read scope for one function
    st, _, b = raw("GET", "/2015-03-31/functions", key=None, bearer="tok-reader")
    check(st == 200 and [f["FunctionName"] for f in json.loads(b)["Functions"]] == ["rec"],
          "bearer reader sees only rec: %d %r" % (st, b[:200]))
    raw_error(403, "AccessDeniedException", "GET", "/2015-03-31/functions/noop/configuration",
              key=None, bearer="tok-reader")
    st, _, b = raw("GET", "/2015-03-31/event-source-mappings", key=None, bearer="tok-reader")
    check(st == 200 and [m["UUID"] for m in json.loads(b)["EventSourceMappings"]] == [U_REDIS],
          "bearer reader sees only rec's mapping")
    raw_error(401, "MissingAuthenticationTokenException", "GET", "/2015-03-31/functions", key=None)


def phase_hostile():
    base = "/2015-03-31/event-source-mappings/" + U_REDIS
    raw_error(400, "InvalidRequestContentException", "PUT", base, "{not json")
    raw_error(400, "InvalidRequestContentException", "PUT", base, "[1,2]")
    raw_error(400, "InvalidParameterValueException", "PUT", base, '{"BatchSize": 5, "Foo": 1}')
    raw_error(400, "InvalidParameterValueException", "PUT", base, '{"BatchSize": "5"}')
    raw_error(400, "InvalidParameterValueException", "PUT", base, '{"BatchSize": 5.5}')
    raw_error(400, "InvalidRequestContentException", "PUT", base,
              '{"BatchSize": 99999999999999999999999999}')
    raw_error(400, "InvalidParameterValueException", "PUT", base, '{"Enabled": "false"}')
    raw_error(400, "InvalidParameterValueException", "PUT", base,
              '{"FunctionResponseTypes": ["Nope"]}')
    raw_error(400, "InvalidParameterValueException", "GET",
              "/2015-03-31/functions?MaxItems=99999999999999999999")
    raw_error(400, "InvalidParameterValueException", "GET", "/2015-03-31/functions?MaxItems=0")
    raw_error(400, "InvalidParameterValueException", "GET", "/2015-03-31/functions?Marker=-1")
    raw_error(400, "InvalidParameterValueException", "GET",
              "/2015-03-31/event-source-mappings?MaxItems=abc")
    for p in ("/2015-03-31/functions/..%2F..%2Fetc%2Fpasswd/configuration",
              "/2015-03-31/functions/rec%00x",
              "/2017-03-31/tags/..%2F..%2F..%2Fetc%2Fshadow"):
        raw_error(400, "ValidationException", "GET", p)
    raw_error(400, "ValidationException", "GET", "/2015-03-31/functions/" + "a" * 300)
    raw_error(400, "ValidationException", "GET", "/2015-03-31/functions/%ZZ")
    raw_error(404, "ResourceNotFoundException", "GET", "/2015-03-31/event-source-mappings/..%2F..")
    raw_error(404, "ResourceNotFoundException", "GET", "/2015-03-31/functions/%2E%2E/configuration")
    j = raw_error(404, "ResourceNotFoundException", "GET", "/2015-03-31/event-source-mappings/x")
    check("Message" in j, "ResourceNotFoundException carries Message: %s" % j)
    st, h, _ = raw("DELETE", "/2015-03-31/functions")
    check(st == 405 and "GET" in h.get("Allow", ""), "DELETE list-functions: %d" % st)
    st, _, _ = raw("POST", base, "{}")
    check(st == 405, "POST on a mapping: %d" % st)
    st, _, _ = raw("PATCH", "/2017-10-31/functions/rec/concurrency", "{}")
    check(st == 405, "PATCH concurrency: %d" % st)
    raw_error(400, "InvalidParameterValueException", "PUT",
              "/2019-09-30/functions/rec/provisioned-concurrency",
              '{"ProvisionedConcurrentExecutions": 1}')
    st, _, _ = raw("GET", "/2015-03-31/functions/rec/a/b/c/d/e/f/g/h/i/j/k")
    check(st in (400, 404), "deep path: %d" % st)
    raw_error(400, "InvalidParameterValueException", "PUT",
              "/2017-10-31/functions/rec/concurrency", '{"ReservedConcurrentExecutions": -4}')
    check(esm(U_REDIS)["BatchSize"] == 7, "hostile requests changed nothing")
    st, _, b = raw("GET", "/healthz", key=None)
    check(st == 200, "still healthy")


PHASES = {
    "read": phase_read, "disable": phase_disable, "enable": phase_enable,
    "writes": phase_writes, "after-restart": phase_after_restart, "scopes": phase_scopes,
    "hostile": phase_hostile,
}

if __name__ == "__main__":
    PHASES[PHASE]()
    print("ok", PHASE)
