/* SPDX-License-Identifier: MIT
 *
 * test_json.c - common/json_check.c and common/json_write.c.
 *
 * Intake: what cJSON alone would let through and json_parse must refuse
 * (invalid UTF-8 of every kind, \u0000, raw control characters, nesting
 * past the limit, trailing data, duplicate keys in small and large
 * objects, NUL bytes) next to the valid documents that must still pass.
 * Output: escaping, UTF-8 passthrough, and the sticky error once the buf's
 * cap is hit. Inputs are given with explicit lengths, so embedded NULs and
 * unterminated bytes are tested as they arrive from the network.
 */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "check.h"
#include "json_check.h"
#include "json_write.h"

#define DEPTH 8

/* json_parse over the bytes of a literal (its length without the final NUL). */
#define PARSE(lit, out, err) json_parse((lit), sizeof(lit) - 1, DEPTH, (out), (err), sizeof(err))
#define CHECK_LIT(lit)       json_check((lit), sizeof(lit) - 1, DEPTH, NULL, 0)

/* Parses `lit` and expects failure with `reason` in the message. */
#define EXPECT_REJECT(lit, reason)                                                                 \
    do {                                                                                           \
        cJSON *rj_ = (cJSON *)1;                                                                   \
        char rerr_[128] = "";                                                                      \
        CHECK_EQ_INT(PARSE(lit, &rj_, rerr_), -1);                                                 \
        CHECK(rj_ == NULL);                                                                        \
        if (!strstr(rerr_, (reason))) {                                                            \
            fprintf(stderr, "reason \"%s\", want \"%s\"\n", rerr_, (reason));                      \
            CHECK(0);                                                                              \
        }                                                                                          \
    } while (0)

static void
test_parse_valid(void)
{
    cJSON *j = NULL;
    char err[128];
    const cJSON *it;

    CHECK_EQ_INT(PARSE("{\"a\":1,\"b\":[true,false,null],\"c\":\"x\\\"y\",\"d\":{}}", &j, err), 0);
    CHECK(j != NULL);
    CHECK(cJSON_IsObject(j));
    it = json_get(j, "a");
    CHECK(it && cJSON_IsNumber(it) && it->valuedouble == 1.0);
    it = json_get(j, "c");
    CHECK(it && cJSON_IsString(it));
    CHECK_EQ_STR(it->valuestring, "x\"y");
    CHECK(json_get(j, "A") == NULL); /* case-sensitive */
    CHECK(json_get(j, "missing") == NULL);
    cJSON_Delete(j);

    /* scalars, surrounding white space, and every kind of valid UTF-8 */
    CHECK_EQ_INT(PARSE("  42 \r\n\t", &j, err), 0);
    CHECK(cJSON_IsNumber(j));
    cJSON_Delete(j);
    CHECK_EQ_INT(PARSE("\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf\"", &j, err),
                 0);
    CHECK_EQ_STR(j->valuestring, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf");
    cJSON_Delete(j);
    /* escapes cJSON decodes: \u00e9, a surrogate pair, an escaped control */
    CHECK_EQ_INT(PARSE("[\"\\u00e9\",\"\\ud83d\\ude00\",\"a\\u0001b\",\"\\/\"]", &j, err), 0);
    CHECK_EQ_STR(cJSON_GetArrayItem(j, 0)->valuestring, "\xc3\xa9");
    CHECK_EQ_STR(cJSON_GetArrayItem(j, 1)->valuestring, "\xf0\x9f\x98\x80");
    CHECK_EQ_STR(cJSON_GetArrayItem(j, 2)->valuestring, "a\x01"
                                                        "b");
    CHECK_EQ_STR(cJSON_GetArrayItem(j, 3)->valuestring, "/");
    cJSON_Delete(j);
}

static void
test_parse_null_value(void)
{
    cJSON *j = NULL;
    char err[128];

    CHECK_EQ_INT(PARSE("{\"prompt_template\":null}", &j, err), 0);
    CHECK(json_get(j, "prompt_template") == NULL); /* null reads as absent */
    CHECK(cJSON_GetObjectItemCaseSensitive(j, "prompt_template") != NULL);
    cJSON_Delete(j);
}

static void
test_parse_no_terminator(void)
{
    /* A number at the very end of a buffer without a NUL after it (cJSON
     * #800): parse from a heap block of exactly that size, so ASan sees any
     * read past it. */
    static const char text[] = "12345";
    char *p = malloc(sizeof(text) - 1);
    cJSON *j = NULL;
    char err[128];

    CHECK(p != NULL);
    memcpy(p, text, sizeof(text) - 1);
    CHECK_EQ_INT(json_parse(p, sizeof(text) - 1, DEPTH, &j, err, sizeof(err)), 0);
    CHECK(cJSON_IsNumber(j) && j->valuedouble == 12345.0);
    cJSON_Delete(j);
    /* a prefix of a longer buffer: only `len` bytes count */
    CHECK_EQ_INT(json_parse("[1]garbage", 3, DEPTH, &j, err, sizeof(err)), 0);
    CHECK(cJSON_IsArray(j));
    cJSON_Delete(j);
    free(p);
}

static void
test_reject_utf8(void)
{
    EXPECT_REJECT("\"\xc0\xaf\"", "invalid UTF-8");         /* overlong '/' */
    EXPECT_REJECT("\"\xc1\xbf\"", "invalid UTF-8");         /* overlong, 2 bytes */
    EXPECT_REJECT("\"\xe0\x80\xaf\"", "invalid UTF-8");     /* overlong, 3 bytes */
    EXPECT_REJECT("\"\xf0\x80\x80\xaf\"", "invalid UTF-8"); /* overlong, 4 bytes */
    EXPECT_REJECT("\"\xed\xa0\x80\"", "invalid UTF-8");     /* U+D800 */
    EXPECT_REJECT("\"\xed\xbf\xbf\"", "invalid UTF-8");     /* U+DFFF */
    EXPECT_REJECT("\"\xf4\x90\x80\x80\"", "invalid UTF-8"); /* U+110000 */
    EXPECT_REJECT("\"\xf5\x80\x80\x80\"", "invalid UTF-8"); /* lead byte F5 */
    EXPECT_REJECT("\"\xff\"", "invalid UTF-8");
    EXPECT_REJECT("\"\x80\"", "invalid UTF-8");         /* lone continuation */
    EXPECT_REJECT("\"\xc3\"", "invalid UTF-8");         /* truncated 2-byte */
    EXPECT_REJECT("\"\xe2\x82\"", "invalid UTF-8");     /* truncated 3-byte */
    EXPECT_REJECT("\"\xf0\x9f\x98\"", "invalid UTF-8"); /* truncated 4-byte */
    EXPECT_REJECT("\"\xe2\x82", "invalid UTF-8");       /* truncated at the end */
    EXPECT_REJECT("\"\xc3\x28\"", "invalid UTF-8");     /* bad continuation */
    EXPECT_REJECT("{\"k\xff\":1}", "invalid UTF-8");    /* in a key */
    EXPECT_REJECT("[1]\xff", "invalid UTF-8");          /* outside strings too */
    /* the boundaries that are valid */
    CHECK_EQ_INT(CHECK_LIT("\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\""), 0);
    CHECK_EQ_INT(CHECK_LIT("\"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\""), 0);
}

static void
test_utf8_valid(void)
{
    CHECK(json_utf8_valid("", 0));
    CHECK(json_utf8_valid("abc", 3));
    CHECK(json_utf8_valid("\xc3\xa9", 2));
    CHECK(!json_utf8_valid("\xc3\xa9", 1)); /* cut by the length */
    CHECK(!json_utf8_valid("a\0b", 3));     /* NUL refused */
    CHECK(!json_utf8_valid("\xed\xa0\x80", 3));
    CHECK(!json_utf8_valid("\xe0\x9f\xbf", 3));
    CHECK(!json_utf8_valid("\xf4\x90\x80\x80", 4));
}

static void
test_reject_nul_and_controls(void)
{
    EXPECT_REJECT("\"a\\u0000b\"", "\\u0000");
    EXPECT_REJECT("{\"k\\u0000\":1}", "\\u0000");
    EXPECT_REJECT("\"\\u0000\"", "\\u0000");
    EXPECT_REJECT("\"a\nb\"", "control character");
    EXPECT_REJECT("\"a\tb\"", "control character");
    EXPECT_REJECT("\"\x1f\"", "control character");
    EXPECT_REJECT("\"a\0b\"", "NUL byte");
    EXPECT_REJECT("{\"a\":1}\0", "NUL byte");
    EXPECT_REJECT("\0", "NUL byte");
    /* \\u0000 is an escaped backslash then text, not a NUL */
    CHECK_EQ_INT(CHECK_LIT("\"\\\\u0000\""), 0);
    /* \u0001 is legal JSON, and so is a raw DEL */
    CHECK_EQ_INT(CHECK_LIT("\"\\u0001\x7f\""), 0);
    /* control characters outside strings are white space or grammar errors */
    CHECK_EQ_INT(CHECK_LIT("\n[\t1\r]\n"), 0);
}

static void
test_escaped_quotes(void)
{
    cJSON *j = NULL;
    char err[128];

    /* '\"' must not end the string: the '{' after it is text, not nesting */
    CHECK_EQ_INT(PARSE("\"a\\\"{{{{{{{{{{{{{{{{{{\"", &j, err), 0);
    CHECK_EQ_STR(j->valuestring, "a\"{{{{{{{{{{{{{{{{{{");
    cJSON_Delete(j);
    /* "\\\\" ends in a backslash: the next quote does end the string */
    CHECK_EQ_INT(PARSE("[\"a\\\\\",\"b\"]", &j, err), 0);
    CHECK_EQ_STR(cJSON_GetArrayItem(j, 0)->valuestring, "a\\");
    cJSON_Delete(j);
    /* brackets inside strings do not count toward the depth */
    CHECK_EQ_INT(PARSE("{\"[[[[[[[[[[\":\"]]]]]]]]]]]]]]\"}", &j, err), 0);
    cJSON_Delete(j);
    EXPECT_REJECT("\"abc\\", "truncated escape");
    EXPECT_REJECT("\"abc", "malformed JSON");
}

static void
test_depth(void)
{
    char doc[64];
    cJSON *j = NULL;
    char err[128];
    size_t n = 0;

    /* exactly DEPTH levels pass, DEPTH + 1 fail; arrays and objects count alike */
    for (int i = 0; i < DEPTH; i++) {
        doc[n++] = '[';
    }
    for (int i = 0; i < DEPTH; i++) {
        doc[n++] = ']';
    }
    CHECK_EQ_INT(json_parse(doc, n, DEPTH, &j, err, sizeof(err)), 0);
    cJSON_Delete(j);
    CHECK_EQ_INT(json_parse(doc, n, DEPTH - 1, &j, err, sizeof(err)), -1);
    CHECK(strstr(err, "nesting too deep") != NULL);
    CHECK(j == NULL);

    /* 8 objects deep, then 9 */
    CHECK_EQ_INT(
        PARSE("{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":1}}}}}}}}", &j, err), 0);
    cJSON_Delete(j);
    EXPECT_REJECT("{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":{\"i\":1}}}}}}}}}",
                  "nesting too deep");
    EXPECT_REJECT("[{\"a\":[{\"b\":[{\"c\":[{\"d\":[]}]}]}]}]", "nesting too deep");
    /* closing brackets reset the count: siblings do not add up */
    CHECK_EQ_INT(PARSE("[[[[[[[[]]]]]]],[[[[[[[]]]]]]]]", &j, err), 0);
    cJSON_Delete(j);
    /* a deep document rejected before cJSON recurses into it */
    {
        size_t big = 100000;
        char *p = malloc(big);
        CHECK(p != NULL);
        memset(p, '[', big);
        CHECK_EQ_INT(json_parse(p, big, DEPTH, &j, err, sizeof(err)), -1);
        free(p);
    }
}

static void
test_trailing_and_malformed(void)
{
    cJSON *j = NULL;
    char err[128];

    EXPECT_REJECT("{\"a\":1}x", "trailing data");
    EXPECT_REJECT("{\"a\":1} {}", "trailing data");
    EXPECT_REJECT("1 2", "trailing data");
    EXPECT_REJECT("[1]]", "trailing data");
    EXPECT_REJECT("{\"a\":1,}", "malformed JSON");
    EXPECT_REJECT("{'a':1}", "malformed JSON");
    EXPECT_REJECT("[1,2", "malformed JSON");
    EXPECT_REJECT("nul", "malformed JSON");
    EXPECT_REJECT("   ", "malformed JSON");
    EXPECT_REJECT("{\"a\" 1}", "malformed JSON");
    EXPECT_REJECT("\"\\x41\"", "bad escape");          /* unknown escape */
    EXPECT_REJECT("\"\\\xc3\xa9\"", "bad escape");     /* escaped non-ASCII */
    EXPECT_REJECT("\"\\u00zz\"", "bad escape");        /* cJSON: U+0000 */
    EXPECT_REJECT("\"a@b\\u00\\\xfc\"", "bad escape"); /* and UTF-8 unchecked */
    EXPECT_REJECT("\"\\u12\"", "bad escape");
    EXPECT_REJECT("\"\\u12", "truncated escape");
    EXPECT_REJECT("\"\\ud800\"", "malformed JSON");             /* lone high surrogate */
    EXPECT_REJECT("\"\\udc00\"", "malformed JSON");             /* lone low surrogate */
    EXPECT_REJECT("]]]]]]]]]][[[[[[[[[[[[[", "malformed JSON"); /* negative depth first */
    CHECK_EQ_INT(json_parse("", 0, DEPTH, &j, err, sizeof(err)), -1);
    CHECK(strstr(err, "empty body") != NULL);
    CHECK(j == NULL);
    /* white space after the value is fine */
    CHECK_EQ_INT(PARSE("{\"a\":1} \r\n\t ", &j, err), 0);
    cJSON_Delete(j);
    /* err may be NULL */
    CHECK_EQ_INT(json_parse("{", 1, DEPTH, &j, NULL, 0), -1);
}

static void
test_duplicate_keys(void)
{
    cJSON *j = NULL;
    char err[128];
    struct buf b;

    EXPECT_REJECT("{\"a\":1,\"a\":2}", "duplicate key");
    EXPECT_REJECT("{\"a\":1,\"b\":2,\"c\":3,\"b\":null}", "duplicate key");
    EXPECT_REJECT("{\"x\":{\"a\":1,\"a\":1}}", "duplicate key"); /* nested */
    EXPECT_REJECT("[{},{\"k\":[{\"a\":1,\"a\":1}]}]", "duplicate key");
    EXPECT_REJECT("{\"\\u0061\":1,\"a\":2}", "duplicate key"); /* equal once decoded */
    /* keys differing in case or in an escape are distinct */
    CHECK_EQ_INT(PARSE("{\"a\":1,\"A\":2,\"a \":3}", &j, err), 0);
    cJSON_Delete(j);
    /* the same key in sibling objects is fine */
    CHECK_EQ_INT(PARSE("[{\"a\":1},{\"a\":2}]", &j, err), 0);
    cJSON_Delete(j);

    /* large objects take the sorted path: 32 keys (pairwise) and 33, 200 */
    for (int n = 31; n <= 200; n += (n < 34 ? 1 : 83)) {
        buf_init(&b, 1 << 20);
        CHECK_EQ_INT(buf_putc(&b, '{'), 0);
        for (int i = 0; i < n; i++) {
            CHECK_EQ_INT(buf_printf(&b, "%s\"k%03d\":%d", i ? "," : "", (n - i) * 7 % 1000, i), 0);
        }
        CHECK_EQ_INT(buf_putc(&b, '}'), 0);
        CHECK_EQ_INT(json_parse(b.data, b.len, DEPTH, &j, err, sizeof(err)), 0);
        CHECK_EQ_INT(cJSON_GetArraySize(j), n);
        cJSON_Delete(j);
        /* the same object with its first key repeated at the end */
        b.len--;
        CHECK_EQ_INT(buf_printf(&b, ",\"k%03d\":0}", n * 7 % 1000), 0);
        CHECK_EQ_INT(json_parse(b.data, b.len, DEPTH, &j, err, sizeof(err)), -1);
        CHECK(strstr(err, "duplicate key") != NULL);
        buf_cleanup(&b);
    }
}

static void
test_error_message(void)
{
    char err[128];
    char tiny[8];

    CHECK_EQ_INT(json_check("[\"\xff\"]", 4, DEPTH, err, sizeof(err)), -1);
    CHECK_EQ_STR(err, "invalid UTF-8 at byte 2");
    CHECK_EQ_INT(json_check("[\"\xff\"]", 4, DEPTH, tiny, sizeof(tiny)), -1);
    CHECK_EQ_INT(strlen(tiny), sizeof(tiny) - 1); /* truncated, terminated */
    CHECK_EQ_INT(json_check("[[1]]", 5, 1, err, sizeof(err)), -1);
    CHECK_EQ_STR(err, "nesting too deep at byte 1");
}

/* ---- json_write ------------------------------------------------------------ */

static void
test_write_escapes(void)
{
    struct buf b;
    struct jw w;

    buf_init(&b, 1024);
    jw_init(&w, &b);
    jw_str(&w, "a\"b\\c/d");
    jw_raw(&w, ",");
    jw_str(&w, "\n\r\t\b\f\x01\x1f\x7f");
    jw_raw(&w, ",");
    jw_str(&w, "caf\xc3\xa9 \xf0\x9f\x98\x80"); /* UTF-8 as is (ensure_ascii=False) */
    jw_raw(&w, ",");
    jw_str(&w, NULL);
    jw_raw(&w, ",");
    jw_str(&w, "");
    CHECK_EQ_INT(w.err, 0);
    /* byte for byte what Python's json.dumps(ensure_ascii=False) writes */
    CHECK_EQ_STR(buf_str(&b), "\"a\\\"b\\\\c/d\",\"\\n\\r\\t\\b\\f\\u0001\\u001f\x7f\","
                              "\"caf\xc3\xa9 \xf0\x9f\x98\x80\",null,\"\"");
    buf_cleanup(&b);
}

static void
test_write_strn_nul(void)
{
    struct buf b;
    struct jw w;

    buf_init(&b, 64);
    jw_init(&w, &b);
    jw_strn(&w, "a\0b", 3);
    jw_strn(&w, "xyz", 0);
    CHECK_EQ_INT(w.err, 0);
    CHECK_EQ_STR(buf_str(&b), "\"a\\u0000b\"\"\"");
    buf_cleanup(&b);
}

static void
test_write_values(void)
{
    struct buf b;
    struct jw w;
    cJSON *j = NULL;
    char err[128];

    buf_init(&b, 1024);
    jw_init(&w, &b);
    jw_raw(&w, "{");
    jw_key(&w, "n");
    jw_i64(&w, -9223372036854775807LL - 1);
    jw_raw(&w, ",");
    jw_key(&w, "w");
    jw_double(&w, 1.0);
    jw_raw(&w, ",");
    jw_key(&w, "h");
    jw_double(&w, 100.0);
    jw_raw(&w, ",");
    jw_key(&w, "t");
    jw_bool(&w, true);
    jw_raw(&w, ",");
    jw_key(&w, "f");
    jw_bool(&w, false);
    jw_raw(&w, ",");
    jw_key(&w, "k\"ey");
    jw_str(&w, "v");
    jw_raw(&w, "}");
    CHECK_EQ_INT(w.err, 0);
    CHECK_EQ_STR(buf_str(&b), "{\"n\":-9223372036854775808,\"w\":1.0,\"h\":100.0,\"t\":true,"
                              "\"f\":false,\"k\\\"ey\":\"v\"}");
    /* and what it wrote reads back */
    CHECK_EQ_INT(json_parse(b.data, b.len, DEPTH, &j, err, sizeof(err)), 0);
    CHECK(cJSON_IsTrue(json_get(j, "t")));
    CHECK_EQ_STR(json_get(j, "k\"ey")->valuestring, "v");
    cJSON_Delete(j);
    buf_cleanup(&b);
}

static void
test_write_sticky_error(void)
{
    struct buf b;
    struct jw w;

    buf_init(&b, 10);
    jw_init(&w, &b);
    jw_str(&w, "abcdef"); /* 8 bytes */
    CHECK_EQ_INT(w.err, 0);
    CHECK_EQ_INT(b.len, 8);
    jw_str(&w, "xy"); /* would be 12 */
    CHECK_EQ_INT(w.err, 1);
    /* once set, nothing more is written, even what would fit */
    size_t len = b.len;
    jw_raw(&w, "1");
    jw_i64(&w, 1);
    jw_bool(&w, true);
    jw_str(&w, NULL);
    jw_key(&w, "");
    CHECK_EQ_INT(w.err, 1);
    CHECK_EQ_INT(b.len, len);
    CHECK(b.len <= 10);
    buf_cleanup(&b);

    /* the cap hit in the middle of escaping */
    buf_init(&b, 6);
    jw_init(&w, &b);
    jw_str(&w, "\x01\x02");
    CHECK_EQ_INT(w.err, 1);
    buf_cleanup(&b);

    /* the cap hit by the closing quote alone */
    buf_init(&b, 4);
    jw_init(&w, &b);
    jw_str(&w, "abc");
    CHECK_EQ_INT(w.err, 1);
    buf_cleanup(&b);
    buf_init(&b, 5);
    jw_init(&w, &b);
    jw_str(&w, "abc"); /* exactly 5 */
    CHECK_EQ_INT(w.err, 0);
    CHECK_EQ_STR(buf_str(&b), "\"abc\"");
    buf_cleanup(&b);
}

static void
test_upstream_error_message(void)
{
    char m[64];
    static const char openai[] = "{\"error\":{\"message\":\"bad temperature\",\"type\":\"x\"}}";
    static const char fastapi[] = "{\"detail\":\"Not Found\"}";
    static const char plain[] = "{\"message\":\"busy\"}";
    static const char text[] = "upstream connect error\r\nand more";

    json_error_message(openai, strlen(openai), m, sizeof(m));
    CHECK_EQ_STR(m, "bad temperature");
    json_error_message(fastapi, strlen(fastapi), m, sizeof(m));
    CHECK_EQ_STR(m, "Not Found");
    json_error_message(plain, strlen(plain), m, sizeof(m));
    CHECK_EQ_STR(m, "busy");
    json_error_message(text, strlen(text), m, sizeof(m));
    CHECK_EQ_STR(m, "upstream connect error  and more"); /* control bytes: spaces */
    json_error_message(text, 8, m, sizeof(m));           /* only len bytes are read */
    CHECK_EQ_STR(m, "upstream");
    json_error_message("", 0, m, sizeof(m));
    CHECK_EQ_STR(m, "no details");
    json_error_message(text, strlen(text), m, 6);
    CHECK_EQ_STR(m, "upstr"); /* truncated, terminated */
}

int
main(void)
{
    CHECK_RUN(test_parse_valid);
    CHECK_RUN(test_parse_null_value);
    CHECK_RUN(test_parse_no_terminator);
    CHECK_RUN(test_reject_utf8);
    CHECK_RUN(test_utf8_valid);
    CHECK_RUN(test_reject_nul_and_controls);
    CHECK_RUN(test_escaped_quotes);
    CHECK_RUN(test_depth);
    CHECK_RUN(test_trailing_and_malformed);
    CHECK_RUN(test_duplicate_keys);
    CHECK_RUN(test_error_message);
    CHECK_RUN(test_write_escapes);
    CHECK_RUN(test_write_strn_nul);
    CHECK_RUN(test_write_values);
    CHECK_RUN(test_write_sticky_error);
    CHECK_RUN(test_upstream_error_message);
    return check_summary();
}
