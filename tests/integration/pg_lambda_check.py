"""Check the records the Postgres source delivered against code we did not write.

Usage: pg_lambda_check.py RECORDS EXPECT [region account]

RECORDS: JSON lines, one delivered record each (tests/handlers/pg_record).
EXPECT:  one JSON object: {"types": {column: format_type}, "before": {id: row},
         "after": {id: row}, "table": "schema.table", "slot": "...",
         "region": "...", "account": "..."}; rows as Postgres' row_to_json gives them
         (TimeZone UTC). "before" is every row before the UPDATE/DELETE, "after" after.

Every record must parse with Powertools' DynamoDBStreamModel (the event made of all of
them, and each alone), the data class must give keys / new_image / old_image without an
error, and boto3's TypeDeserializer must turn Keys, NewImage and OldImage back into the
row, column by column, type by type. Prints every mismatch and exits 1 on any."""
import base64
import json
import sys
from datetime import datetime
from decimal import Decimal

from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent
from aws_lambda_powertools.utilities.parser.models import DynamoDBStreamModel
from boto3.dynamodb.types import Binary, TypeDeserializer

problems = []


def bad(msg):
    problems.append(msg)


def unbase64(av):
    """Lambda's JSON events carry B as base64 text; botocore decodes it for boto3."""
    if isinstance(av, dict):
        if set(av) == {"B"}:
            return {"B": base64.b64decode(av["B"], validate=True)}
        return {k: unbase64(v) for k, v in av.items()}
    if isinstance(av, list):
        return [unbase64(v) for v in av]
    return av


def fits_dynamodb(d):
    """What sluice sends as N: at most 38 digits once trailing zeros of the fraction
    are dropped, magnitude 1E-130 to under 1E+126 (DynamoDB's number)."""
    if not d.is_finite():
        return False
    t = d.as_tuple()
    digits, e = list(t.digits), t.exponent
    while e < 0 and len(digits) > 1 and digits[-1] == 0:
        digits.pop()
        e += 1
    if d.is_zero():
        return True
    return len(digits) <= 38 and -130 <= d.adjusted() <= 125 and e >= -165


def same(got, exp, typ, where):
    """got: TypeDeserializer's value; exp: row_to_json's value (numbers as Decimal)."""
    if exp is None:
        if got is not None:
            bad(f"{where} ({typ}): want NULL, got {got!r}")
        return
    if typ.endswith("[]"):
        if not isinstance(got, list) or not isinstance(exp, list) or len(got) != len(exp):
            bad(f"{where} ({typ}): want list {exp!r}, got {got!r}")
            return
        for i, (g, e) in enumerate(zip(got, exp)):
            same(g, e, typ[:-2] if not isinstance(e, list) else typ, f"{where}[{i}]")
        return
    base = typ.split("(")[0]
    if base == "oid":
        exp = Decimal(exp)  # row_to_json quotes oids; they are numbers (N)
    if base == "bytea":
        want = bytes.fromhex(exp[2:])
        if not isinstance(got, Binary) or bytes(got.value) != want:
            bad(f"{where} ({typ}): want bytes {want!r}, got {got!r}")
        return
    if base == "boolean":
        if got is not exp:
            bad(f"{where} ({typ}): want {exp!r}, got {got!r}")
        return
    if base in ("json", "jsonb"):
        if got != exp:
            bad(f"{where} ({typ}): want {exp!r}, got {got!r}")
        return
    if isinstance(exp, Decimal):
        # numbers: N (a Decimal); S only where DynamoDB cannot hold the value
        if isinstance(got, Decimal):
            if got != exp:
                bad(f"{where} ({typ}): want {exp}, got {got}")
        elif isinstance(got, str):
            if Decimal(got) != exp or fits_dynamodb(exp):
                bad(f"{where} ({typ}): {exp} sent as S {got!r}, not N")
        else:
            bad(f"{where} ({typ}): want number {exp}, got {got!r}")
        return
    if not isinstance(got, str):
        bad(f"{where} ({typ}): want string {exp!r}, got {got!r}")
        return
    if base.startswith("timestamp") and got not in ("infinity", "-infinity"):
        g, e = datetime.fromisoformat(got), datetime.fromisoformat(exp)
        if g != e or (g.tzinfo is None) != (e.tzinfo is None):
            bad(f"{where} ({typ}): want {exp!r}, got {got!r}")
        return
    if got != exp:
        bad(f"{where} ({typ}): want {exp!r}, got {got!r}")


def image(av, what, where):
    if not isinstance(av, dict):
        bad(f"{where}: {what} is not an object: {av!r}")
        return {}
    td = TypeDeserializer()
    out = {}
    for col, v in av.items():
        try:
            out[col] = td.deserialize(unbase64(v))
        except Exception as e:  # noqa: BLE001 -- any failure is a finding
            bad(f"{where}: {what}.{col}: TypeDeserializer: {type(e).__name__}: {e}: {v!r}")
    return out


def compare_row(got, exp, types, where):
    if set(got) != set(exp):
        bad(f"{where}: columns {sorted(got)} != {sorted(exp)}")
    for col, typ in types.items():
        if col in got and col in exp:
            same(got[col], exp[col], typ, f"{where}.{col}")


def main():
    records = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    ex = json.load(open(sys.argv[2]), parse_float=Decimal, parse_int=Decimal)
    types = ex["types"]
    before = {int(k): v for k, v in ex["before"].items()}
    after = {int(k): v for k, v in ex["after"].items()}
    arn = f"arn:aws:dynamodb:{ex['region']}:{ex['account']}:table/{ex['table']}/stream/{ex['slot']}"
    if not records:
        bad("no records")

    # Powertools' parser model over the whole event, and the data class
    try:
        DynamoDBStreamModel.model_validate({"Records": records})
    except Exception as e:  # noqa: BLE001
        bad(f"DynamoDBStreamModel: {e}")
    try:
        for r in DynamoDBStreamEvent({"Records": records}).records:
            d = r.dynamodb
            _ = (d.keys, d.new_image, d.old_image, d.sequence_number, d.size_bytes,
                 d.stream_view_type, d.approximate_creation_date_time, r.event_name,
                 r.aws_region, r.event_source, r.event_version, r.event_id)
    except Exception as e:  # noqa: BLE001
        bad(f"DynamoDBStreamEvent data class: {type(e).__name__}: {e}")

    seen = {"snapshot": 0, "INSERT": 0, "MODIFY": 0, "REMOVE": 0}
    for i, r in enumerate(records):
        where = f"record {i} ({r.get('eventName')})"
        if r.get("eventSource") != "aws:dynamodb":
            bad(f"{where}: eventSource {r.get('eventSource')!r}")
        if r.get("eventSourceARN") != arn:
            bad(f"{where}: eventSourceARN {r.get('eventSourceARN')!r}, want {arn!r}")
        if r.get("awsRegion") != ex["region"]:
            bad(f"{where}: awsRegion {r.get('awsRegion')!r}")
        if r.get("eventVersion") != "1.1":
            bad(f"{where}: eventVersion {r.get('eventVersion')!r}")
        d = r.get("dynamodb", {})
        keys = image(d.get("Keys"), "Keys", where)
        if set(keys) != {"id"}:
            bad(f"{where}: Keys {sorted(keys)} is not the primary key (id)")
        rid = int(keys.get("id", -1))
        name = r.get("eventName")
        new = image(d["NewImage"], "NewImage", where) if "NewImage" in d else None
        old = image(d["OldImage"], "OldImage", where) if "OldImage" in d else None
        if r.get("snapshot") is True:
            seen["snapshot"] += 1
            if name != "INSERT":
                bad(f"{where}: a snapshot row is an INSERT")
        else:
            seen[name] = seen.get(name, 0) + 1
        if name == "INSERT":
            if old is not None:
                bad(f"{where}: an INSERT has no OldImage")
            compare_row(new or {}, before.get(rid, {}), types, f"{where} id {rid} NewImage")
        elif name == "MODIFY":
            compare_row(new or {}, after.get(rid, {}), types, f"{where} id {rid} NewImage")
            compare_row(old or {}, before.get(rid, {}), types, f"{where} id {rid} OldImage")
        elif name == "REMOVE":
            if new is not None:
                bad(f"{where}: a REMOVE has no NewImage")
            compare_row(old or {}, before.get(rid, {}), types, f"{where} id {rid} OldImage")
        else:
            bad(f"{where}: eventName {name!r}")
    print(json.dumps(seen))
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
