/* sluice: allocation wrappers.
 *
 * sl_malloc and friends never return NULL: on exhaustion they log one line
 * with the size and abort, since no caller can make progress without memory
 * and a half-handled OOM is how records get lost. */
#ifndef SLUICE_MEM_H
#define SLUICE_MEM_H

#include <stdbool.h>
#include <stddef.h>

void *sl_malloc(size_t n);
void *sl_calloc(size_t nmemb, size_t size);
void *sl_realloc(void *p, size_t n);
char *sl_strdup(const char *s);
char *sl_strndup(const char *s, size_t n);
/* The value of hex digit `ch`, or -1. */
int sl_hexval(unsigned char ch);
/* Percent-decoded copy of [p, p+n) (URL userinfo, libpq URIs, SigV4
 * query strings), owned by the caller; its length (it may hold NULs) in
 * *outn when outn is not NULL. A broken escape ("%zz", a '%' at the end)
 * makes it return NULL when `strict`, and is copied as it is otherwise. */
char *sl_pct_decode(const char *p, size_t n, bool strict, size_t *outn);
/* printf into a new string owned by the caller. */
char *sl_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
