/* SPDX-License-Identifier: MIT
 *
 * test_metrics.c - common/metrics.c: label values escaped as the
 * Prometheus text format allows (\\, \", \n and nothing else; UTF-8 as it
 * is, bytes that are not UTF-8 as U+FFFD), values cut to fit at a code
 * point boundary and never inside an escape, label sets, the budget's
 * samples, and the histogram's quantiles.
 */
#include <stdlib.h>
#include <string.h>

#include "budget.h"
#include "buf.h"
#include "check.h"
#include "metrics.h"

static void
test_escape_the_three(void)
{
    char out[64];
    bool cut = true;

    CHECK_EQ_INT(metrics_label_escape("a\"b\\c\nd", out, sizeof(out), &cut), 10);
    CHECK_EQ_STR(out, "a\\\"b\\\\c\\nd");
    CHECK(!cut);
    /* nothing else is escaped: no \x22, tabs and CR as they are */
    metrics_label_escape("x\ty\rz/@:", out, sizeof(out), NULL);
    CHECK_EQ_STR(out, "x\ty\rz/@:");
    CHECK(strstr(out, "\\x") == NULL);
    CHECK_EQ_INT(metrics_label_escape(NULL, out, sizeof(out), &cut), 0);
    CHECK_EQ_STR(out, "");
    CHECK(!cut);
}

static void
test_escape_utf8(void)
{
    char out[64];

    /* 2-, 3- and 4-byte sequences pass through */
    metrics_label_escape("caf\xc3\xa9-\xe6\xa8\xa1\xe5\x9e\x8b-\xf0\x9f\xa6\x99", out, sizeof(out),
                         NULL);
    CHECK_EQ_STR(out, "caf\xc3\xa9-\xe6\xa8\xa1\xe5\x9e\x8b-\xf0\x9f\xa6\x99");
    /* not UTF-8: a lone continuation byte, an overlong '/', a surrogate, a
     * truncated sequence at the end, 0xff: each byte becomes U+FFFD */
    metrics_label_escape("a\x80"
                         "b",
                         out, sizeof(out), NULL);
    CHECK_EQ_STR(out, "a\xef\xbf\xbd"
                      "b");
    metrics_label_escape("\xc0\xaf", out, sizeof(out), NULL);
    CHECK_EQ_STR(out, "\xef\xbf\xbd\xef\xbf\xbd");
    metrics_label_escape("\xed\xa0\x80", out, sizeof(out), NULL);
    CHECK_EQ_STR(out, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    metrics_label_escape("x\xe6\xa8", out, sizeof(out), NULL);
    CHECK_EQ_STR(out, "x\xef\xbf\xbd\xef\xbf\xbd");
    metrics_label_escape("\xff", out, sizeof(out), NULL);
    CHECK_EQ_STR(out, "\xef\xbf\xbd");
    metrics_label_escape("\xf4\x90\x80\x80", out, sizeof(out), NULL); /* past U+10FFFF */
    CHECK(strncmp(out, "\xef\xbf\xbd", 3) == 0);
}

static void
test_escape_cut(void)
{
    char out[8];
    bool cut = false;

    /* "ab" + a 3-byte character + "c": 6 bytes fit in cap 7, not in cap 6 */
    CHECK_EQ_INT(metrics_label_escape("ab\xe6\xa8\xa1"
                                      "c",
                                      out, 7, &cut),
                 6);
    CHECK_EQ_STR(out, "ab\xe6\xa8\xa1"
                      "c");
    CHECK(!cut);
    CHECK_EQ_INT(metrics_label_escape("ab\xe6\xa8\xa1"
                                      "c",
                                      out, 6, &cut),
                 5);
    CHECK(cut);
    CHECK_EQ_INT(metrics_label_escape("ab\xe6\xa8\xa1"
                                      "c",
                                      out, 5, &cut),
                 2);
    CHECK_EQ_STR(out, "ab"); /* the character is left out whole */
    CHECK(cut);
    /* never half an escape */
    CHECK_EQ_INT(metrics_label_escape("abc\"", out, 5, &cut), 3);
    CHECK_EQ_STR(out, "abc");
    CHECK(cut);
    CHECK_EQ_INT(metrics_label_escape("abc", out, 1, &cut), 0);
    CHECK_EQ_STR(out, "");
    CHECK(cut);
    /* every cut of a string of 4-byte characters lands on a boundary */
    const char *crab = "\xf0\x9f\xa6\x80\xf0\x9f\xa6\x81\xf0\x9f\xa6\x82";
    for (size_t cap = 1; cap < 8; cap++) {
        size_t n = metrics_label_escape(crab, out, cap, &cut);
        CHECK_EQ_INT(n % 4, 0);
        CHECK(n < cap);
        CHECK(cut);
    }
}

static void
test_utf8_prefix(void)
{
    const char *s = "a\xc3\xa9\xe6\xa8\xa1\xf0\x9f\xa6\x99z"; /* 1 + 2 + 3 + 4 + 1 bytes */
    size_t len = strlen(s);
    static const size_t want[] = {0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10, 11, 11};

    for (size_t max = 0; max <= len + 1; max++) {
        CHECK_EQ_INT(metrics_utf8_prefix(s, len, max), want[max]);
    }
    /* bytes that are not UTF-8 count one each */
    CHECK_EQ_INT(metrics_utf8_prefix("\x80\x80\xff", 3, 2), 2);
    /* a sequence cut short by len is bytes, not a character */
    CHECK_EQ_INT(metrics_utf8_prefix("a\xe6\xa8", 3, 3), 3);
    CHECK_EQ_INT(metrics_utf8_prefix("", 0, 10), 0);
}

static void
test_label_add(void)
{
    char lab[32] = "";

    CHECK_EQ_INT(metrics_label_add(lab, sizeof(lab), "model", "a\"b@llm"), 0);
    CHECK_EQ_STR(lab, "model=\"a\\\"b@llm\"");
    CHECK_EQ_INT(metrics_label_add(lab, sizeof(lab), "class", "x"), 0);
    CHECK_EQ_STR(lab, "model=\"a\\\"b@llm\",class=\"x\"");
    /* no room for even name="": unchanged */
    CHECK_EQ_INT(metrics_label_add(lab, sizeof(lab), "instance", "1.2.3.4:5"), -1);
    CHECK_EQ_STR(lab, "model=\"a\\\"b@llm\",class=\"x\"");

    /* a long value is cut to fit, at a code point boundary, and closed */
    char small[16] = "";
    CHECK_EQ_INT(metrics_label_add(small, sizeof(small), "m",
                                   "\xe6\xa8\xa1\xe6\xa8\xa1\xe6\xa8\xa1\xe6\xa8\xa1"),
                 0);
    CHECK_EQ_STR(small, "m=\"\xe6\xa8\xa1\xe6\xa8\xa1\xe6\xa8\xa1\"");
    CHECK(strlen(small) < sizeof(small));
}

static void
test_write_budget(void)
{
    struct buf b;

    budget_set_limit(1000);
    CHECK(budget_take(600));
    CHECK(!budget_take(600));
    buf_init(&b, 64 * 1024);
    CHECK_EQ_INT(metrics_write_budget(&b), 0);
    CHECK(strstr(buf_str(&b), "\nroster_memory_budget_bytes 1000\n") != NULL);
    CHECK(strstr(buf_str(&b), "\nroster_memory_budget_used_bytes 600\n") != NULL);
    CHECK(strstr(buf_str(&b), "\nroster_memory_budget_peak_bytes 600\n") != NULL);
    CHECK(strstr(buf_str(&b), "\nroster_memory_budget_refused_total 1\n") != NULL);
    budget_give(600);
    buf_cleanup(&b);
    CHECK_EQ_INT(budget_used(), 0);
    budget_set_limit(0);
}

int
main(void)
{
    CHECK_RUN(test_escape_the_three);
    CHECK_RUN(test_escape_utf8);
    CHECK_RUN(test_escape_cut);
    CHECK_RUN(test_utf8_prefix);
    CHECK_RUN(test_label_add);
    CHECK_RUN(test_write_budget);
    return check_summary();
}
