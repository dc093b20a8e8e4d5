"""Judge the Redis queue's events with code we did not write.

    sqs_powertools.py EVENTS ARN REGION WANT_RECORDS WANT_WITH_ATTRIBUTES

EVENTS holds one event per line, as the handler received them. Each must
parse with Powertools for AWS Lambda's SqsModel (parser) and read through
its SQSEvent data class; md5OfBody and md5OfMessageAttributes must be what
SQS computes (recomputed here independently, as the AWS SDKs check them);
eventSource, eventSourceARN and awsRegion must be SQS's. Prints one line
per problem and exits 1 when there is any. Run with the Powertools layer on
PYTHONPATH (tests/deps installs it into tests/.layers/powertools/python).
"""
import base64
import hashlib
import json
import struct
import sys

from aws_lambda_powertools.utilities.data_classes import SQSEvent
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import SqsModel


def md5_of_attributes(attrs):
    """SQS's digest: attributes sorted by name; name, data type, transport
    type (1 String/Number, 2 Binary) and value, lengths 4-byte big-endian."""
    buf = b""
    for name in sorted(attrs):
        a = attrs[name]
        dt = a["dataType"].encode()
        buf += struct.pack(">I", len(name.encode())) + name.encode()
        buf += struct.pack(">I", len(dt)) + dt
        if a["dataType"].startswith("Binary"):
            v = base64.b64decode(a["binaryValue"])
            buf += b"\x02" + struct.pack(">I", len(v)) + v
        else:
            v = a["stringValue"].encode()
            buf += b"\x01" + struct.pack(">I", len(v)) + v
    return hashlib.md5(buf).hexdigest()


def main():
    path, arn, region = sys.argv[1], sys.argv[2], sys.argv[3]
    want, want_attrs = int(sys.argv[4]), int(sys.argv[5])
    problems, n, with_attrs = [], 0, 0
    with open(path, encoding="utf-8") as f:
        events = [json.loads(line) for line in f if line.strip()]
    for ev in events:
        try:
            parse(event=ev, model=SqsModel)
        except Exception as e:  # pydantic's ValidationError, or anything else
            problems.append(f"SqsModel rejects the event: {e}")
            continue
        for rec, raw in zip(SQSEvent(ev).records, ev["Records"]):
            n += 1
            mid = rec.message_id
            if rec.event_source != "aws:sqs":
                problems.append(f"{mid}: eventSource {rec.event_source!r}")
            if rec.event_source_arn != arn:
                problems.append(f"{mid}: eventSourceARN {rec.event_source_arn!r}, want {arn!r}")
            if rec.aws_region != region:
                problems.append(f"{mid}: awsRegion {rec.aws_region!r}, want {region!r}")
            queue = arn.split(":")[5]
            if rec.queue_url != f"https://sqs.{region}.amazonaws.com/{arn.split(':')[4]}/{queue}":
                problems.append(f"{mid}: queue_url {rec.queue_url!r}")
            a = rec.attributes
            for v in (a.approximate_receive_count, a.sent_timestamp, a.sender_id,
                      a.approximate_first_receive_timestamp):
                if not isinstance(v, str):
                    problems.append(f"{mid}: attribute {v!r} is not a string")
            if not a.sent_timestamp.isdigit() or int(a.sent_timestamp) < 10**12:
                problems.append(f"{mid}: SentTimestamp {a.sent_timestamp!r} is not epoch ms")
            if hashlib.md5(rec.body.encode("utf-8")).hexdigest() != rec.md5_of_body:
                problems.append(f"{mid}: md5OfBody {rec.md5_of_body} is not md5(body)")
            attrs = raw["messageAttributes"]
            if attrs:
                with_attrs += 1
                got = raw.get("md5OfMessageAttributes")
                if got != md5_of_attributes(attrs):
                    problems.append(f"{mid}: md5OfMessageAttributes {got}, want "
                                    f"{md5_of_attributes(attrs)}")
                # as in Lambda's events, an attribute has the key of its
                # type's value only (the data class raises KeyError on the
                # other one, in Lambda too)
                for name, m in rec.message_attributes.items():
                    if m.data_type == "String":
                        ok = isinstance(m.string_value, str) and "binaryValue" not in m.raw_event
                    elif m.data_type == "Binary":
                        ok = isinstance(base64.b64decode(m.binary_value, validate=True), bytes) \
                            and "stringValue" not in m.raw_event
                    else:
                        ok = False
                    if not ok:
                        problems.append(f"{mid}: attribute {name} is not a plain "
                                        f"{m.data_type}: {m.raw_event}")
            elif "md5OfMessageAttributes" in raw:
                problems.append(f"{mid}: md5OfMessageAttributes without attributes")
    if n != want:
        problems.append(f"{n} records in the events, want {want}")
    if with_attrs != want_attrs:
        problems.append(f"{with_attrs} records with messageAttributes, want {want_attrs}")
    for p in problems:
        print(p)
    print(f"sqs_powertools: {len(events)} events, {n} records, {with_attrs} with attributes, "
          f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
