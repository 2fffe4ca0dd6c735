/* SPDX-License-Identifier: MIT
 *
 * test_log.c - common/log.c: log_escape() and log_write() leave no way for
 * user text to forge a log line, whatever the viewer takes for a line
 * break: C0 controls, C1 controls (NEL), U+2028/U+2029 and bytes that are
 * not UTF-8 are escaped; ordinary UTF-8 passes as is, and nothing is ever
 * cut in the middle of a character or an escape.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "log.h"

static void
test_escape_ascii(void)
{
    char out[64];

    CHECK_EQ_STR(log_escape("plain text", out, sizeof(out)), "plain text");
    CHECK_EQ_STR(log_escape("a\nb\r\tc", out, sizeof(out)), "a\\x0ab\\x0d\\x09c");
    CHECK_EQ_STR(log_escape("q\"b\\\x7f", out, sizeof(out)), "q\\x22b\\x5c\\x7f");
    CHECK_EQ_STR(log_escape(NULL, out, sizeof(out)), "");
}

static void
test_escape_unicode_breaks(void)
{
    char out[64];

    /* U+0085 NEL, U+0080 and U+009F: the C1 range */
    CHECK_EQ_STR(log_escape("x\xc2\x85y", out, sizeof(out)), "x\\u0085y");
    CHECK_EQ_STR(log_escape("\xc2\x80\xc2\x9f", out, sizeof(out)), "\\u0080\\u009f");
    /* U+2028 LINE SEPARATOR, U+2029 PARAGRAPH SEPARATOR */
    CHECK_EQ_STR(log_escape("a\xe2\x80\xa8"
                            "b\xe2\x80\xa9",
                            out, sizeof(out)),
                 "a\\u2028b\\u2029");
    /* ordinary UTF-8 passes: U+00A0, é, U+2027, 😀 */
    CHECK_EQ_STR(log_escape("\xc2\xa0\xc3\xa9\xe2\x80\xa7\xf0\x9f\x98\x80", out, sizeof(out)),
                 "\xc2\xa0\xc3\xa9\xe2\x80\xa7\xf0\x9f\x98\x80");
}

static void
test_escape_invalid_utf8(void)
{
    char out[64];

    CHECK_EQ_STR(log_escape("a\xff"
                            "b",
                            out, sizeof(out)),
                 "a\\xffb");
    CHECK_EQ_STR(log_escape("\x85", out, sizeof(out)), "\\x85");          /* a lone continuation */
    CHECK_EQ_STR(log_escape("\xc0\x8a", out, sizeof(out)), "\\xc0\\x8a"); /* overlong LF */
    CHECK_EQ_STR(log_escape("\xed\xa0\x80", out, sizeof(out)), "\\xed\\xa0\\x80"); /* surrogate */
    CHECK_EQ_STR(log_escape("\xe2\x80", out, sizeof(out)), "\\xe2\\x80");          /* cut short */
    CHECK_EQ_STR(log_escape("\xf4\x90\x80\x80", out, sizeof(out)), "\\xf4\\x90\\x80\\x80");
}

static void
test_escape_caps(void)
{
    char out[8];

    /* never a cut escape or character: what does not fit is left out */
    CHECK_EQ_STR(log_escape("abcdefghij", out, sizeof(out)), "abcdefg");
    CHECK_EQ_STR(log_escape("abc\n", out, sizeof(out)), "abc\\x0a");
    CHECK_EQ_STR(log_escape("abcd\n", out, sizeof(out)), "abcd");
    CHECK_EQ_STR(log_escape("ab\xe2\x80\xa8", out, sizeof(out)), "ab");
    CHECK_EQ_STR(log_escape("a\xe2\x80\xa8", out, sizeof(out)), "a\\u2028");
    CHECK_EQ_STR(log_escape("abcd\xf0\x9f\x98\x80", out, sizeof(out)), "abcd");
    CHECK_EQ_STR(log_escape("abc\xf0\x9f\x98\x80", out, sizeof(out)), "abc\xf0\x9f\x98\x80");
    CHECK_EQ_STR(log_escape("x", out, 1), "");
}

/* log_write escapes what its arguments carry, even when the caller passed
 * user text without log_escape. */
static void
test_write_one_line(void)
{
    char path[] = "/tmp/test_log_XXXXXX";
    char got[4096];
    int fd = mkstemp(path), saved = dup(2);
    size_t n;
    FILE *f;

    CHECK(fd >= 0 && saved >= 0);
    if (fd < 0 || saved < 0) {
        return;
    }
    fflush(stderr);
    dup2(fd, 2);
    log_write(LOG_LVL_INFO, "test", "name %s end",
              "a\nFORGED\xe2\x80\xa8"
              "B\xc2\x85"
              "C\r\xff");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    f = fdopen(fd, "r");
    CHECK(f != NULL);
    if (!f) {
        close(fd);
        unlink(path);
        return;
    }
    rewind(f);
    n = fread(got, 1, sizeof(got) - 1, f);
    got[n] = '\0';
    fclose(f);
    unlink(path);
    CHECK(n > 0 && got[n - 1] == '\n');
    CHECK(strchr(got, '\n') == got + n - 1); /* one line */
    CHECK(!strchr(got, '\r'));
    CHECK(!strstr(got, "\xe2\x80\xa8"));
    CHECK(!strstr(got, "\xc2\x85"));
    CHECK(strstr(got, " INFO  test name a\\x0aFORGED\\u2028B\\u0085C\\x0d\\xff end\n") != NULL);
}

int
main(void)
{
    CHECK_RUN(test_escape_ascii);
    CHECK_RUN(test_escape_unicode_breaks);
    CHECK_RUN(test_escape_invalid_utf8);
    CHECK_RUN(test_escape_caps);
    CHECK_RUN(test_write_one_line);
    return check_summary();
}
