/* SPDX-License-Identifier: MIT
 *
 * test_query.c - common/query.c: decoding ('%40', '+'), empty values, keys
 * without '=', empty segments, and the inputs that must be refused so that
 * no two layers can read a query differently: repeated keys, bad escapes,
 * %00, invalid UTF-8 once decoded, too many parameters.
 */
#include <string.h>

#include "check.h"
#include "query.h"

#define PARSE(s, q, err) query_parse((s), strlen(s), (q), (err), sizeof(err))

/* Expects `s` to be refused with `reason` and `q` left empty. */
#define EXPECT_REJECT(s, reason)                                                                   \
    do {                                                                                           \
        struct query rq_;                                                                          \
        char rerr_[128] = "";                                                                      \
        CHECK_EQ_INT(PARSE((s), &rq_, rerr_), -1);                                                 \
        CHECK_EQ_INT(rq_.n, 0);                                                                    \
        CHECK(rq_.storage == NULL);                                                                \
        CHECK(query_get(&rq_, "a") == NULL);                                                       \
        query_cleanup(&rq_);                                                                       \
        if (!strstr(rerr_, (reason))) {                                                            \
            fprintf(stderr, "'%s': reason \"%s\", want \"%s\"\n", (s), rerr_, (reason));           \
            CHECK(0);                                                                              \
        }                                                                                          \
    } while (0)

static void
test_dbgpt_delete_query(void)
{
    struct query q;
    char err[128];

    CHECK_EQ_INT(PARSE("model_name=vicuna%40llm&host=127.0.0.1&port=8001&weight=1.0&"
                       "check_healthy=True&healthy=False&enabled=True&prompt_template=&"
                       "last_heartbeat=&remove_from_registry=False",
                       &q, err),
                 0);
    CHECK_EQ_INT(q.n, 10);
    CHECK_EQ_STR(query_get(&q, "model_name"), "vicuna@llm");
    CHECK_EQ_STR(query_get(&q, "host"), "127.0.0.1");
    CHECK_EQ_STR(query_get(&q, "port"), "8001");
    CHECK_EQ_STR(query_get(&q, "prompt_template"), "");
    CHECK_EQ_STR(query_get(&q, "remove_from_registry"), "False");
    CHECK(query_get(&q, "missing") == NULL);
    CHECK(query_get(&q, "Host") == NULL); /* case-sensitive */
    query_cleanup(&q);
    query_cleanup(&q); /* twice is fine */
}

static void
test_decoding(void)
{
    struct query q;
    char err[128];

    CHECK_EQ_INT(PARSE("a=x%40y&b=hello+world&c=%2B%26%3D%25&d=%e2%82%AC&e%5F=1", &q, err), 0);
    CHECK_EQ_STR(query_get(&q, "a"), "x@y");
    CHECK_EQ_STR(query_get(&q, "b"), "hello world");
    CHECK_EQ_STR(query_get(&q, "c"), "+&=%"); /* escaped separators are data */
    CHECK_EQ_STR(query_get(&q, "d"), "\xe2\x82\xac");
    CHECK_EQ_STR(query_get(&q, "e_"), "1"); /* keys are decoded too */
    query_cleanup(&q);

    CHECK_EQ_INT(PARSE("k=a=b", &q, err), 0); /* only the first '=' splits */
    CHECK_EQ_STR(query_get(&q, "k"), "a=b");
    query_cleanup(&q);
    CHECK_EQ_INT(PARSE("a+b=c", &q, err), 0);
    CHECK_EQ_STR(query_get(&q, "a b"), "c");
    query_cleanup(&q);
    CHECK_EQ_INT(PARSE("a=%41", &q, err), 0); /* an escape ending the input */
    CHECK_EQ_STR(query_get(&q, "a"), "A");
    query_cleanup(&q);
}

static void
test_empty_values_and_segments(void)
{
    struct query q;
    char err[128];

    CHECK_EQ_INT(PARSE("a=&b&c=3", &q, err), 0);
    CHECK_EQ_INT(q.n, 3);
    CHECK_EQ_STR(query_get(&q, "a"), "");
    CHECK_EQ_STR(query_get(&q, "b"), ""); /* no '=' at all */
    CHECK_EQ_STR(query_get(&q, "c"), "3");
    query_cleanup(&q);

    CHECK_EQ_INT(PARSE("a=1&&b=2", &q, err), 0);
    CHECK_EQ_INT(q.n, 2);
    CHECK_EQ_STR(query_get(&q, "a"), "1");
    CHECK_EQ_STR(query_get(&q, "b"), "2");
    query_cleanup(&q);

    CHECK_EQ_INT(PARSE("&&a=1&", &q, err), 0);
    CHECK_EQ_INT(q.n, 1);
    CHECK_EQ_STR(query_get(&q, "a"), "1");
    query_cleanup(&q);

    CHECK_EQ_INT(PARSE("&", &q, err), 0);
    CHECK_EQ_INT(q.n, 0);
    query_cleanup(&q);

    CHECK_EQ_INT(PARSE("", &q, err), 0);
    CHECK_EQ_INT(q.n, 0);
    CHECK(query_get(&q, "") == NULL);
    query_cleanup(&q);
}

static void
test_length_bounds(void)
{
    struct query q;
    char err[128];

    /* only `len` bytes count: the rest of the string is not read */
    CHECK_EQ_INT(query_parse("a=1&b=2", 3, &q, err, sizeof(err)), 0);
    CHECK_EQ_INT(q.n, 1);
    CHECK_EQ_STR(query_get(&q, "a"), "1");
    CHECK(query_get(&q, "b") == NULL);
    query_cleanup(&q);
    /* an escape cut by the length is an error, not a read past it */
    CHECK_EQ_INT(query_parse("a=%41", 4, &q, err, sizeof(err)), -1);
    query_cleanup(&q);
}

static void
test_rejects(void)
{
    EXPECT_REJECT("a=1&a=2", "repeated");
    EXPECT_REJECT("a=1&b=2&a", "repeated");
    EXPECT_REJECT("a=1&%61=2", "repeated"); /* the same key once decoded */
    EXPECT_REJECT("a=%zz", "percent");
    EXPECT_REJECT("a=%4", "percent");
    EXPECT_REJECT("a=%", "percent");
    EXPECT_REJECT("a=%4g", "percent");
    EXPECT_REJECT("a=%%41", "percent");
    EXPECT_REJECT("a=%00", "percent");       /* NUL */
    EXPECT_REJECT("a=x%00y&b=1", "percent"); /* NUL in the middle */
    EXPECT_REJECT("%zz=1", "name");
    EXPECT_REJECT("%00=1", "name");
    EXPECT_REJECT("=1", "name"); /* empty key */
    EXPECT_REJECT("a=1&=2", "name");
    EXPECT_REJECT("a=%ff", "UTF-8");
    EXPECT_REJECT("a=%c0%af", "UTF-8");    /* overlong */
    EXPECT_REJECT("a=%ed%a0%80", "UTF-8"); /* surrogate */
    EXPECT_REJECT("a=%e2%82", "UTF-8");    /* truncated */
    EXPECT_REJECT("%ff=1", "UTF-8");
    EXPECT_REJECT("a=\xff", "UTF-8"); /* raw bytes too */
}

static void
test_too_many(void)
{
    char qs[1024];
    size_t n = 0;
    struct query q;
    char err[128];

    for (int i = 0; i < QUERY_MAX_PARAMS; i++) {
        n += (size_t)snprintf(qs + n, sizeof(qs) - n, "%sk%d=%d", i ? "&" : "", i, i);
    }
    CHECK_EQ_INT(query_parse(qs, n, &q, err, sizeof(err)), 0); /* exactly the limit */
    CHECK_EQ_INT(q.n, QUERY_MAX_PARAMS);
    CHECK_EQ_STR(query_get(&q, "k31"), "31");
    query_cleanup(&q);
    /* empty segments do not count */
    n += (size_t)snprintf(qs + n, sizeof(qs) - n, "&&&");
    CHECK_EQ_INT(query_parse(qs, n, &q, err, sizeof(err)), 0);
    query_cleanup(&q);
    n += (size_t)snprintf(qs + n, sizeof(qs) - n, "x=1");
    CHECK_EQ_INT(query_parse(qs, n, &q, err, sizeof(err)), -1);
    CHECK(strstr(err, "too many") != NULL);
    CHECK_EQ_INT(q.n, 0);
    query_cleanup(&q);
}

static void
test_err_optional(void)
{
    struct query q;

    CHECK_EQ_INT(query_parse("a=%", 3, &q, NULL, 0), -1);
    query_cleanup(&q);
}

int
main(void)
{
    CHECK_RUN(test_dbgpt_delete_query);
    CHECK_RUN(test_decoding);
    CHECK_RUN(test_empty_values_and_segments);
    CHECK_RUN(test_length_bounds);
    CHECK_RUN(test_rejects);
    CHECK_RUN(test_too_many);
    CHECK_RUN(test_err_optional);
    return check_summary();
}
