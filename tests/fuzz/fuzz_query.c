/* SPDX-License-Identifier: MIT
 *
 * fuzz_query.c - common/query.c on arbitrary bytes (a URL query string, not
 * NUL-terminated).
 *
 * Invariants checked: on failure the query is empty; on success there are
 * at most QUERY_MAX_PARAMS pairs, keys are non-empty, distinct, and every
 * key and value is valid UTF-8 without NUL; query_get finds each pair; and
 * the pairs, percent-encoded again, parse back to the same pairs.
 */
#include <string.h>

#include "buf.h"
#include "fuzz.h"
#include "json_check.h"
#include "query.h"

static void
encode(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            FUZZ_ASSERT(buf_putc(b, (char)c) == 0);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            FUZZ_ASSERT(buf_append(b, e, 3) == 0);
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct query q;
    struct query q2;
    struct buf b;
    char err[128];

    if (query_parse((const char *)data, size, &q, err, sizeof(err)) != 0) {
        FUZZ_ASSERT(q.n == 0);
        FUZZ_ASSERT(q.storage == NULL);
        query_cleanup(&q);
        return 0;
    }
    FUZZ_ASSERT(q.n <= QUERY_MAX_PARAMS);
    buf_init(&b, size * 3 + 16);
    for (size_t i = 0; i < q.n; i++) {
        FUZZ_ASSERT(q.key[i][0] != '\0');
        FUZZ_ASSERT(json_utf8_valid(q.key[i], strlen(q.key[i])));
        FUZZ_ASSERT(json_utf8_valid(q.value[i], strlen(q.value[i])));
        FUZZ_ASSERT(query_get(&q, q.key[i]) == q.value[i]);
        for (size_t j = 0; j < i; j++) {
            FUZZ_ASSERT(strcmp(q.key[i], q.key[j]) != 0);
        }
        if (i) {
            FUZZ_ASSERT(buf_putc(&b, '&') == 0);
        }
        encode(&b, q.key[i]);
        FUZZ_ASSERT(buf_putc(&b, '=') == 0);
        encode(&b, q.value[i]);
    }
    FUZZ_ASSERT(query_parse(b.data ? b.data : "", b.len, &q2, err, sizeof(err)) == 0);
    FUZZ_ASSERT(q2.n == q.n);
    for (size_t i = 0; i < q.n; i++) {
        FUZZ_ASSERT(strcmp(q2.key[i], q.key[i]) == 0);
        FUZZ_ASSERT(strcmp(q2.value[i], q.value[i]) == 0);
    }
    query_cleanup(&q2);
    buf_cleanup(&b);
    query_cleanup(&q);
    return 0;
}
