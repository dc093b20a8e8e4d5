/* sluice: the command line's Invoke API client (`sluice invoke`). */
#ifndef SLUICE_CLIENT_H
#define SLUICE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

/* Invoke `fn` at `endpoint` (http://host:port). Prints the result (or
 * Lambda's error JSON) to stdout; returns the process exit code: 0
 * success or accepted, 1 function error or refusal. */
int sl_client_invoke(const char *endpoint, const char *fn, const char *payload, size_t len,
                     bool async, const char *token);

#endif
