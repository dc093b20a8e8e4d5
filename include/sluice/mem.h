/* sluice: allocation wrappers.
 *
 * sl_malloc and friends never return NULL: on exhaustion they log one line
 * with the size and abort, since no caller can make progress without memory
 * and a half-handled OOM is how records get lost. */
#ifndef SLUICE_MEM_H
#define SLUICE_MEM_H

#include <stddef.h>

void *sl_malloc(size_t n);
void *sl_calloc(size_t nmemb, size_t size);
void *sl_realloc(void *p, size_t n);
char *sl_strdup(const char *s);
char *sl_strndup(const char *s, size_t n);
/* printf into a new string owned by the caller. */
char *sl_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
