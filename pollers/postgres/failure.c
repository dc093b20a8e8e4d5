/* Lambda's DDBStreamBatchInfo for the on-failure record of a Postgres
 * batch (the engine writes the rest of the record):
 *
 *   {"shardId":"<slot>" or "<slot>#<lane>", "startSequenceNumber":..,
 *    "endSequenceNumber":.., "approximateArrivalOfFirstRecord":<commit time>,
 *    "approximateArrivalOfLastRecord":.., "batchSize":n,
 *    "streamArn":"arn:aws:dynamodb:<region>:<account>:table/<schema.table>/stream/<slot>"}
 *
 * A shard is the slot, or one of its lanes with parallelization_factor;
 * sequence numbers are the records' SequenceNumber (their ids). A DynamoDB
 * stream belongs to one table and a slot may carry several: the ARN names
 * the table of the batch's first record. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sluice/mem.h"

#include "internal.h"

/* "<schema.table>" from the record's eventSourceARN ("...:table/<t>/stream/..."). */
static char *record_table(const struct sl_record *r)
{
    json_t *j = json_loadb(r->json, r->len, 0, NULL);
    const char *arn = json_string_value(json_object_get(j, "eventSourceARN")), *t, *e;
    char *out = NULL;

    if (arn && (t = strstr(arn, ":table/")) && (e = strstr(t + 7, "/stream/")))
        out = sl_strndup(t + 7, (size_t)(e - (t + 7)));
    json_decref(j);
    return out;
}

void sl__pg_batch_info(struct sl_source *s, const char *lane, struct sl_record *const *r,
                       size_t n, size_t payload_size, json_t *rec)
{
    const struct pg *p = s->ctx;
    const struct sl_server_conf *sv = s->conf->server;
    char first[40], last[40], *table = record_table(r[0]), *shard, *arn;

    (void)payload_size;
    sl_iso8601(r[0]->timestamp_ms, first, sizeof(first));
    sl_iso8601(r[n - 1]->timestamp_ms, last, sizeof(last));
    shard = lane && *lane ? sl_asprintf("%s#%s", p->slot, lane) : sl_strdup(p->slot);
    arn = sl_asprintf("arn:aws:dynamodb:%s:%s:table/%s/stream/%s",
                      sv && sv->region ? sv->region : "us-east-1",
                      sv && sv->account_id ? sv->account_id : "000000000000",
                      table ? table : "", p->slot);
    json_object_set_new(rec, "DDBStreamBatchInfo",
                        json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s}", "shardId", shard,
                                  "startSequenceNumber", r[0]->id,
                                  "endSequenceNumber", r[n - 1]->id,
                                  "approximateArrivalOfFirstRecord", first,
                                  "approximateArrivalOfLastRecord", last,
                                  "batchSize", (json_int_t)n, "streamArn", arn));
    free(shard);
    free(arn);
    free(table);
}
