/* sluice: event filtering with Lambda's filter-criteria pattern syntax.
 *
 * A source's filter_criteria is a list of patterns; a record passes when
 * it matches at least one (an empty or absent list passes everything).
 * Each pattern is a JSON object (in YAML, a map; a string holding JSON is
 * accepted too, as Lambda's Filters[].Pattern, and so is Lambda's whole
 * {"Filters": [{"Pattern": "..."}]} shape) whose leaves are arrays of
 * match rules: exact strings/numbers/booleans/null, {"prefix":..},
 * {"suffix":..}, {"anything-but":..}, {"numeric":[op,n,...]},
 * {"exists":bool}, {"equals-ignore-case":..}, {"wildcard":..}, and "$or"
 * lists of alternative patterns. docs/FILTERING.md has the details.
 * Limits: 10 patterns (Lambda's ceiling after a quota increase; its
 * default is 5), 4096 characters per pattern, 32 levels of nesting.
 *
 * The poller builds the document a pattern is matched against: the
 * record's metadata with its payload parsed as JSON under the payload's
 * key ("value" for Kafka, "body" for queues, "dynamodb" for change
 * streams). When the payload is not JSON it is left out of the document,
 * so a pattern that targets it does not match: the record is filtered
 * out, as in Lambda. Pure code; no I/O; a compiled filter is immutable,
 * so it may be matched from any thread. */
#ifndef SLUICE_FILTER_H
#define SLUICE_FILTER_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

struct sl_filter;

/* Compile `criteria` (a JSON array of patterns, or NULL for none); the
 * caller keeps `criteria` and owns the filter in *out. With no patterns
 * (NULL, JSON null, an empty list) *out is NULL, which matches everything,
 * so `if (f)` tells a poller whether to build documents at all. On a bad
 * pattern returns SL_EINVAL (negative) with *out NULL and a message naming
 * the pattern's index and the path inside it in `msg`, e.g.
 * "filter_criteria[1].value.amount: numeric needs an operator and a number". */
int sl_filter_compile(const json_t *criteria, struct sl_filter **out, char *msg, size_t msglen);

/* True when `doc` matches one of the patterns (always true with none, or
 * with f NULL). Allocates nothing; `doc` should be an object (anything
 * else is matched as an empty document). */
bool sl_filter_match(const struct sl_filter *f, const json_t *doc);

/* True when some pattern looks inside `key` ("value", "body"): the poller
 * can skip parsing payloads no pattern reads. False with f NULL. */
bool sl_filter_targets(const struct sl_filter *f, const char *key);

/* Number of patterns (0 with f NULL), for log lines. */
size_t sl_filter_count(const struct sl_filter *f);

/* Accepts NULL. */
void sl_filter_free(struct sl_filter *f);

#endif
