/* SPDX-License-Identifier: MIT
 *
 * query.c - see query.h.
 */
#include "query.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_check.h"
#include "util.h"

/* Decodes src[0..n) into dst (room for n+1), NUL-terminates. Returns the
 * decoded length or -1. */
static long
decode(const char *src, size_t n, char *dst)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int hi;
            int lo;
            if (i + 2 >= n) {
                return -1;
            }
            hi = util_hexval((unsigned char)src[i + 1]);
            lo = util_hexval((unsigned char)src[i + 2]);
            if (hi < 0 || lo < 0) {
                return -1;
            }
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0') {
            return -1;
        }
        dst[o++] = c;
    }
    dst[o] = '\0';
    return (long)o;
}

static int
fail(struct query *q, char *err, size_t cap, const char *msg)
{
    query_cleanup(q);
    if (err && cap) {
        snprintf(err, cap, "%s", msg);
    }
    return -1;
}

int
query_parse(const char *qs, size_t len, struct query *q, char *err, size_t errcap)
{
    size_t pos = 0;
    char *out;

    q->n = 0;
    q->storage = NULL;
    if (len == 0) {
        return 0;
    }
    /* Decoded text is never longer than the input; +2 NULs per pair. */
    q->storage = malloc(len * 2 + 2);
    if (!q->storage) {
        return fail(q, err, errcap, "out of memory");
    }
    out = q->storage;
    while (pos <= len) {
        const char *seg = qs + pos;
        const char *amp = memchr(seg, '&', len - pos);
        size_t seglen = amp ? (size_t)(amp - seg) : len - pos;
        const char *eq = memchr(seg, '=', seglen);
        size_t klen = eq ? (size_t)(eq - seg) : seglen;
        long kd;
        long vd;

        if (seglen > 0) {
            if (q->n == QUERY_MAX_PARAMS) {
                return fail(q, err, errcap, "too many query parameters");
            }
            kd = decode(seg, klen, out);
            if (kd <= 0) {
                return fail(q, err, errcap, "bad query parameter name");
            }
            q->key[q->n] = out;
            out += kd + 1;
            vd = eq ? decode(eq + 1, seglen - klen - 1, out) : 0;
            if (!eq) {
                *out = '\0';
            }
            if (vd < 0) {
                return fail(q, err, errcap, "bad percent-encoding in query");
            }
            if (!json_utf8_valid(q->key[q->n], (size_t)kd) || !json_utf8_valid(out, (size_t)vd)) {
                return fail(q, err, errcap, "query is not valid UTF-8");
            }
            q->value[q->n] = out;
            out += vd + 1;
            for (size_t i = 0; i < q->n; i++) {
                if (strcmp(q->key[i], q->key[q->n]) == 0) {
                    return fail(q, err, errcap, "repeated query parameter");
                }
            }
            q->n++;
        }
        if (!amp) {
            break;
        }
        pos += seglen + 1;
    }
    return 0;
}

const char *
query_get(const struct query *q, const char *key)
{
    for (size_t i = 0; i < q->n; i++) {
        if (strcmp(q->key[i], key) == 0) {
            return q->value[i];
        }
    }
    return NULL;
}

void
query_cleanup(struct query *q)
{
    free(q->storage);
    q->storage = NULL;
    q->n = 0;
}
