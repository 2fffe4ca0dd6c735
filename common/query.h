/* SPDX-License-Identifier: MIT
 *
 * query.h - decode an URL query string ("a=1&b=x%40y") into key/value pairs.
 *
 * Percent escapes and '+' are decoded. Bounded: at most QUERY_MAX_PARAMS
 * pairs; a repeated key, a bad escape, a NUL byte or invalid UTF-8 after
 * decoding is an error, so two layers can never disagree on a value.
 *
 * Threads: a query belongs to the thread that parsed it; no locks.
 */
#ifndef ROSTER_QUERY_H
#define ROSTER_QUERY_H

#include <stddef.h>

#define QUERY_MAX_PARAMS 32

struct query {
    size_t n;
    const char *key[QUERY_MAX_PARAMS];
    const char *value[QUERY_MAX_PARAMS];
    char *storage; /* owns every key and value */
};

/* Parses `len` bytes of `qs` (without the '?'). On success returns 0; the
 * caller releases with query_cleanup(). On failure returns -1, writes a
 * reason to `err`, and leaves `q` empty (query_cleanup is still safe). */
int query_parse(const char *qs, size_t len, struct query *q, char *err, size_t errcap);

/* The decoded value for `key`, or NULL if absent. An empty value ("a=" or
 * "a") is returned as "". */
const char *query_get(const struct query *q, const char *key);

void query_cleanup(struct query *q);

#endif
