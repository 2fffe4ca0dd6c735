/* SPDX-License-Identifier: MIT
 *
 * test_util.c - common/util.c: strict number and boolean parsing (the
 * inputs that must be refused as much as the ones that must pass), bounded
 * copies, constant-time comparison, Python-compatible float and timestamp
 * formatting, random numbers and clocks.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "sha256.h"
#include "util.h"

static void
test_parse_i64_ok(void)
{
    int64_t v = -1;

    CHECK_EQ_INT(util_parse_i64("0", 0, 10, &v), 0);
    CHECK_EQ_INT(v, 0);
    CHECK_EQ_INT(util_parse_i64("10", 0, 10, &v), 0); /* max inclusive */
    CHECK_EQ_INT(v, 10);
    CHECK_EQ_INT(util_parse_i64("-5", -5, 5, &v), 0); /* min inclusive */
    CHECK_EQ_INT(v, -5);
    CHECK_EQ_INT(util_parse_i64("007", 0, 10, &v), 0);
    CHECK_EQ_INT(v, 7);
    CHECK_EQ_INT(util_parse_i64("9223372036854775807", INT64_MIN, INT64_MAX, &v), 0);
    CHECK(v == INT64_MAX);
    CHECK_EQ_INT(util_parse_i64("-9223372036854775808", INT64_MIN, INT64_MAX, &v), 0);
    CHECK(v == INT64_MIN);
}

static void
test_parse_i64_bad(void)
{
    static const char *const bad[] = {
        "",
        " ",
        " 1",
        "1 ",
        "\t1",
        "1\n",
        "+1",
        "--1",
        "-",
        "1.0",
        "1e3",
        "0x10",
        "10a",
        "a10",
        "9223372036854775808",
        "-9223372036854775809",
        "99999999999999999999",
        "1,000",
        "\xc2\xb9" /* superscript one */,
    };
    int64_t v = 12345;

    for (size_t i = 0; i < UTIL_ARRAY_LEN(bad); i++) {
        if (util_parse_i64(bad[i], INT64_MIN, INT64_MAX, &v) != -1) {
            fprintf(stderr, "accepted '%s'\n", bad[i]);
            CHECK(0);
        }
    }
    CHECK_EQ_INT(v, 12345); /* untouched on failure */
    CHECK_EQ_INT(util_parse_i64(NULL, 0, 1, &v), -1);
    CHECK_EQ_INT(util_parse_i64("11", 0, 10, &v), -1); /* range */
    CHECK_EQ_INT(util_parse_i64("-1", 0, 10, &v), -1);
    CHECK_EQ_INT(util_parse_i64("65536", 1, 65535, &v), -1);
    CHECK_EQ_INT(v, 12345);
}

static void
test_parse_double(void)
{
    double d = 0;

    CHECK_EQ_INT(util_parse_double("1.5", 0, 10, &d), 0);
    CHECK(d == 1.5);
    CHECK_EQ_INT(util_parse_double("1e3", 0, 1e6, &d), 0);
    CHECK(d == 1000.0);
    CHECK_EQ_INT(util_parse_double("-0.25", -1, 1, &d), 0);
    CHECK(d == -0.25);
    CHECK_EQ_INT(util_parse_double(".5", 0, 1, &d), 0);
    CHECK(d == 0.5);
    CHECK_EQ_INT(util_parse_double("20", 0.1, 86400, &d), 0);
    CHECK(d == 20.0);
    CHECK_EQ_INT(util_parse_double("0.1", 0.1, 86400, &d), 0); /* min inclusive */
    CHECK(d == 0.1);
    CHECK_EQ_INT(util_parse_double("86400", 0.1, 86400, &d), 0); /* max inclusive */
    CHECK(d == 86400.0);
}

static void
test_parse_double_bad(void)
{
    /* Python's float() refuses hex; roster also refuses surrounding spaces
     * (a flag value with a stray space is a typo, not a number). */
    static const char *const bad[] = {
        "",    " ",    " 1",    "1 ",     "\t1",   "\v1",  "\f1",  "1\n",
        "abc", "1.0x", "0x10",  "0X1p3",  "-0x10", "inf",  "-inf", "Infinity",
        "nan", "NaN",  "1e400", "-1e400", "1,5",   "1..0", "e3",
    };
    double d = 42.0;

    for (size_t i = 0; i < UTIL_ARRAY_LEN(bad); i++) {
        if (util_parse_double(bad[i], -1e308, 1e308, &d) != -1) {
            fprintf(stderr, "accepted '%s'\n", bad[i]);
            CHECK(0);
        }
    }
    CHECK_EQ_INT(util_parse_double(NULL, 0, 1, &d), -1);
    CHECK_EQ_INT(util_parse_double("0.09", 0.1, 10, &d), -1);
    CHECK_EQ_INT(util_parse_double("10.01", 0.1, 10, &d), -1);
    CHECK(d == 42.0);
}

static void
test_parse_bool(void)
{
    static const char *const yes[] = {"true", "True", "TRUE", "1", "yes",
                                      "Yes",  "on",   "ON",   "t", "y"};
    static const char *const no[] = {"false", "False", "FALSE", "0", "no",
                                     "NO",    "off",   "Off",   "f", "n"};
    static const char *const bad[] = {"",    " ",  " true", "true ", "2",  "-1", "truee",
                                      "tru", "ja", "null",  "None",  "00", "01"};
    bool b;

    for (size_t i = 0; i < UTIL_ARRAY_LEN(yes); i++) {
        b = false;
        CHECK_EQ_INT(util_parse_bool(yes[i], &b), 0);
        CHECK(b == true);
    }
    for (size_t i = 0; i < UTIL_ARRAY_LEN(no); i++) {
        b = true;
        CHECK_EQ_INT(util_parse_bool(no[i], &b), 0);
        CHECK(b == false);
    }
    for (size_t i = 0; i < UTIL_ARRAY_LEN(bad); i++) {
        b = true;
        if (util_parse_bool(bad[i], &b) != -1) {
            fprintf(stderr, "accepted '%s'\n", bad[i]);
            CHECK(0);
        }
        CHECK(b == true);
    }
    CHECK_EQ_INT(util_parse_bool(NULL, &b), -1);
}

static void
test_strlcpy(void)
{
    char dst[8];

    memset(dst, 'X', sizeof(dst));
    CHECK_EQ_INT(util_strlcpy(dst, "abc", sizeof(dst)), 3);
    CHECK_EQ_STR(dst, "abc");
    CHECK_EQ_INT(util_strlcpy(dst, "1234567", sizeof(dst)), 7); /* exactly fits */
    CHECK_EQ_STR(dst, "1234567");
    CHECK_EQ_INT(util_strlcpy(dst, "123456789", sizeof(dst)), 9); /* >= cap: truncated */
    CHECK_EQ_STR(dst, "1234567");
    CHECK_EQ_INT(util_strlcpy(dst, "", sizeof(dst)), 0);
    CHECK_EQ_STR(dst, "");
    dst[0] = 'Q';
    CHECK_EQ_INT(util_strlcpy(dst, "abc", 0), 3); /* cap 0 writes nothing */
    CHECK_EQ_INT(dst[0], 'Q');
    CHECK_EQ_INT(util_strlcpy(dst, "abc", 1), 3);
    CHECK_EQ_STR(dst, "");
}

static void
test_ct_equal(void)
{
    CHECK(util_ct_equal("secret", 6, "secret", 6));
    CHECK(!util_ct_equal("secret", 6, "secreT", 6));
    CHECK(!util_ct_equal("secret", 6, "Secret", 6));
    CHECK(!util_ct_equal("secret", 6, "secre", 5)); /* prefix */
    CHECK(!util_ct_equal("secre", 5, "secret", 6));
    CHECK(!util_ct_equal("abab", 4, "ab", 2)); /* the modulo trick must not match */
    CHECK(!util_ct_equal("ab", 2, "abab", 4));
    CHECK(!util_ct_equal("", 0, "a", 1));
    CHECK(!util_ct_equal("a", 1, "", 0));
    CHECK(util_ct_equal("", 0, "", 0));
    CHECK(util_ct_equal("a\0b", 3, "a\0b", 3));
    CHECK(!util_ct_equal("a\0b", 3, "a\0c", 3));
}

static void
check_double(double v, const char *want, int *bad)
{
    char out[40];

    util_format_double(v, out, sizeof(out));
    if (strcmp(out, want) != 0) {
        fprintf(stderr, "format_double(%.17g) = \"%s\", want \"%s\"\n", v, out, want);
        *bad = 1;
    }
}

static void
test_format_double(void)
{
    /* The expectations are Python's repr() of the same floats. */
    int bad = 0;

    check_double(1.0, "1.0", &bad);
    check_double(0.5, "0.5", &bad);
    check_double(0.1, "0.1", &bad);
    check_double(1e+100, "1e+100", &bad);
    check_double(123456789.0, "123456789.0", &bad);
    check_double(1e-05, "1e-05", &bad);
    check_double(0.0, "0.0", &bad);
    check_double(-0.0, "-0.0", &bad);
    check_double(-1.5, "-1.5", &bad);
    check_double(10.0, "10.0", &bad);
    check_double(100.0, "100.0", &bad);
    check_double(1000000.0, "1000000.0", &bad);
    check_double(0.0001, "0.0001", &bad);
    check_double(0.00015, "0.00015", &bad);
    check_double(1e15, "1000000000000000.0", &bad);
    check_double(1e16, "1e+16", &bad);
    check_double(1.5e16, "1.5e+16", &bad);
    check_double(12345678901234567.0, "1.2345678901234568e+16", &bad);
    check_double(1234567890123456.0, "1234567890123456.0", &bad);
    check_double(0.1 + 0.2, "0.30000000000000004", &bad);
    check_double(1.0 / 3.0, "0.3333333333333333", &bad);
    check_double(2.5e-7, "2.5e-07", &bad);
    check_double(-1e-300, "-1e-300", &bad);
    check_double(DBL_MAX, "1.7976931348623157e+308", &bad);
    check_double(5e-324, "5e-324", &bad);
    check_double(123.456, "123.456", &bad);
    check_double(1e6 - 0.5, "999999.5", &bad);
    check_double(NAN, "NaN", &bad);
    check_double(INFINITY, "Infinity", &bad);
    check_double(-INFINITY, "-Infinity", &bad);
    CHECK_EQ_INT(bad, 0);
}

static void
test_format_double_roundtrip(void)
{
    /* Whatever the digits, they must read back as the same double. */
    char out[40];

    for (int i = 0; i < 20000; i++) {
        uint64_t bits;
        double v;
        util_random_bytes(&bits, sizeof(bits));
        memcpy(&v, &bits, sizeof(v));
        if (!isfinite(v)) {
            continue;
        }
        util_format_double(v, out, sizeof(out));
        if (strtod(out, NULL) != v) {
            fprintf(stderr, "%.17g -> %s\n", v, out);
            CHECK(0);
        }
        CHECK(strpbrk(out, ".e") != NULL); /* always reads back as a float */
    }
}

static void
test_format_iso_ms(void)
{
    char out[40];

    util_format_iso_ms(0, out, sizeof(out));
    CHECK_EQ_STR(out, "1970-01-01T00:00:00.000000");
    util_format_iso_ms(1694559871287LL, out, sizeof(out));
    CHECK_EQ_STR(out, "2023-09-12T23:04:31.287000");
    util_format_iso_ms(1694559871001LL, out, sizeof(out));
    CHECK_EQ_STR(out, "2023-09-12T23:04:31.001000");
    util_format_iso_ms(951782400999LL, out, sizeof(out)); /* 2000-02-29, a leap day */
    CHECK_EQ_STR(out, "2000-02-29T00:00:00.999000");
    util_format_iso_ms(-1, out, sizeof(out)); /* before the epoch: borrow a second */
    CHECK_EQ_STR(out, "1969-12-31T23:59:59.999000");
    util_format_iso_ms(-1000, out, sizeof(out));
    CHECK_EQ_STR(out, "1969-12-31T23:59:59.000000");
}

static void
test_random(void)
{
    unsigned char a[32];
    unsigned char b[32];
    int seen[7] = {0};

    util_random_bytes(a, sizeof(a));
    util_random_bytes(b, sizeof(b));
    CHECK(memcmp(a, b, sizeof(a)) != 0);
    for (int i = 0; i < 7000; i++) {
        uint64_t r = util_random_below(7);
        CHECK(r < 7);
        seen[r]++;
    }
    for (int i = 0; i < 7; i++) {
        CHECK(seen[i] > 700); /* expected 1000 each; 700 is ~10 sigma away */
    }
    CHECK_EQ_INT(util_random_below(1), 0);
}

static void
test_clocks(void)
{
    int64_t m0 = util_mono_ms();
    int64_t w0 = util_wall_ms();

    util_sleep_ms(20);
    CHECK(util_mono_ms() - m0 >= 20);
    CHECK(w0 > 1600000000000LL); /* after 2020 */
    util_sleep_ms(0);
    util_sleep_ms(-5);
    CHECK(util_ncpu() >= 1);
}

static void
test_next_item(void)
{
    const char *rest = " a , b,,\tc d\t,";
    const char *item;
    size_t n;
    const char *want[] = {"a", "b", "", "c d", NULL};
    int i = 0;

    while (util_next_item(&rest, &item, &n)) {
        CHECK(want[i] != NULL);
        CHECK_EQ_INT(n, strlen(want[i]));
        CHECK(memcmp(item, want[i], n) == 0);
        i++;
    }
    CHECK_EQ_INT(i, 4); /* a trailing comma ends the list */
    rest = "";
    CHECK(!util_next_item(&rest, &item, &n));
    rest = "only";
    CHECK(util_next_item(&rest, &item, &n));
    CHECK_EQ_INT(n, 4);
    CHECK(!util_next_item(&rest, &item, &n));
}

static void
test_deadline(void)
{
    struct timespec now, d;

    clock_gettime(CLOCK_REALTIME, &now);
    util_deadline_us(1500000, &d);
    CHECK(d.tv_nsec >= 0 && d.tv_nsec < 1000000000L);
    int64_t diff_us = (int64_t)(d.tv_sec - now.tv_sec) * 1000000 + (d.tv_nsec - now.tv_nsec) / 1000;
    CHECK(diff_us >= 1500000 && diff_us < 1600000);
    util_deadline_us(999999, &d);
    CHECK(d.tv_nsec >= 0 && d.tv_nsec < 1000000000L);
}

static void
test_url_redact(void)
{
    static const char *const cases[][2] = {
        {"http://user:pass@host:8000/v1", "http://user:***@host:8000/v1"},
        {"https://u:p@h", "https://u:***@h"},
        {"http://token@host/", "http://***@host/"},
        {"http://host:8000/v1", "http://host:8000/v1"},
        {"http://host/a@b", "http://host/a@b"},          /* '@' in the path is no userinfo */
        {"http://u:p@ss@host/x", "http://u:***@host/x"}, /* the last '@' ends it */
        {"http://u:p,w@host", "http://u:***@host"},      /* ',' may be in a password */
        {"http://a:8000, http://u:pw@b:8000,https://c",
         "http://a:8000, http://u:***@b:8000,https://c"},
        {"mysql://root:secret@db:3306/roster", "mysql://root:***@db:3306/roster"},
        {"the engine at http://u:canary@127.0.0.1:9/v1 failed",
         "the engine at http://u:***@127.0.0.1:9/v1 failed"},
        {"no url here", "no url here"},
        {"", ""},
        {"://@", "://***@"},
        {"http://u:pw@", "http://u:***@"},
    };
    char out[256];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK(util_url_redact(cases[i][0], out, sizeof(out)) == out);
        CHECK_EQ_STR(out, cases[i][1]);
    }
    /* truncated output: cut, terminated, and the password never shown */
    for (size_t cap = 1; cap < 40; cap++) {
        char small[40];
        util_url_redact("http://user:canarypw@host/v1", small, cap);
        CHECK(strlen(small) < cap);
        CHECK(!strstr(small, "can"));
        CHECK(strncmp(small, "http://user:***@host/v1", strlen(small)) == 0);
    }
    /* a bad URL in a list is named without its password */
    char urls[2][UTIL_URL_MAX], err[256];
    CHECK_EQ_INT(util_parse_urls("ftp://u:canarypw@x", urls, 2, err, sizeof(err)), -1);
    CHECK(!strstr(err, "canarypw"));
    CHECK(strstr(err, "ftp://u:***@x"));
}

static void
test_url_mask_passwords(void)
{
    static const char *const cases[][2] = {
        {"http://user:pass@host:8000/v1", "http://user:xxxx@host:8000/v1"},
        {"http://token@host/", "http://xxxxx@host/"},
        {"http://host:8000/v1", "http://host:8000/v1"},
        {"http://host/a@b", "http://host/a@b"},
        {"http://u:p@ss@host/x", "http://u:xxxx@host/x"},
        {"http://a:8000,http://u:pw@b:8000", "http://a:8000,http://u:xx@b:8000"},
        {"mysql://root:secret@db/roster", "mysql://root:xxxxxx@db/roster"},
        {"://@", "://@"},
        {"", ""},
    };
    char buf[128];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        util_strlcpy(buf, cases[i][0], sizeof(buf));
        int n = util_url_mask_passwords(buf);
        CHECK_EQ_STR(buf, cases[i][1]);
        CHECK_EQ_INT(n, strcmp(cases[i][0], cases[i][1]) != 0);
    }
}

/* FIPS 180-4's vectors (one block, two blocks, a million 'a'), and data
 * fed in pieces across block boundaries. */
static void
test_sha256(void)
{
    char hex[SHA256_HEX];
    static char million[1000000];
    struct sha256 c;
    uint8_t d1[SHA256_LEN];
    uint8_t d2[SHA256_LEN];
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";

    sha256_hex("abc", 3, hex);
    CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha256_hex("", 0, hex);
    CHECK_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256_hex(two, strlen(two), hex);
    CHECK_EQ_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    memset(million, 'a', sizeof(million));
    sha256_hex(million, sizeof(million), hex);
    CHECK_EQ_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    sha256_init(&c);
    for (size_t i = 0; i < strlen(two); i += 7) {
        sha256_update(&c, two + i, strlen(two) - i < 7 ? strlen(two) - i : 7);
    }
    sha256_final(&c, d1);
    sha256_init(&c);
    sha256_update(&c, two, strlen(two));
    sha256_final(&c, d2);
    CHECK(memcmp(d1, d2, SHA256_LEN) == 0);
}

int
main(void)
{
    CHECK_RUN(test_parse_i64_ok);
    CHECK_RUN(test_parse_i64_bad);
    CHECK_RUN(test_parse_double);
    CHECK_RUN(test_parse_double_bad);
    CHECK_RUN(test_parse_bool);
    CHECK_RUN(test_strlcpy);
    CHECK_RUN(test_ct_equal);
    CHECK_RUN(test_format_double);
    CHECK_RUN(test_format_double_roundtrip);
    CHECK_RUN(test_format_iso_ms);
    CHECK_RUN(test_random);
    CHECK_RUN(test_clocks);
    CHECK_RUN(test_next_item);
    CHECK_RUN(test_deadline);
    CHECK_RUN(test_url_redact);
    CHECK_RUN(test_url_mask_passwords);
    CHECK_RUN(test_sha256);
    return check_summary();
}
