/* SPDX-License-Identifier: MIT
 *
 * test_sse.c - common/sse.c: lines ended by LF, CR LF and CR (and a CR LF
 * cut between two pieces), pieces of every size, NUL-ended frames, the
 * line cap (wherever the pieces are cut), a callback that stops the feed,
 * and the WHATWG reading of a line (data, comments, a name alone, one
 * space dropped).
 */
#include <string.h>

#include "buf.h"
#include "check.h"
#include "sse.h"

struct got {
    struct buf all; /* the lines, each followed by '|' */
    int lines;
    int stop_at; /* stop after this many lines (0: never) */
};

static int
collect(void *arg, const char *p, size_t n)
{
    struct got *g = arg;

    if (buf_append(&g->all, p, n) != 0 || buf_putc(&g->all, '|') != 0) {
        return -1;
    }
    g->lines++;
    return g->stop_at && g->lines >= g->stop_at;
}

/* Feeds `in` in pieces of `piece` bytes; the lines in g. Returns the last
 * feed's result. */
static int
split(enum sse_framing f, size_t max, const char *in, size_t n, size_t piece, struct got *g)
{
    struct sse_splitter s;
    int rc = SSE_OK;

    buf_init(&g->all, 1 << 20);
    g->lines = 0;
    sse_splitter_init(&s, f, max);
    for (size_t i = 0; i < n && rc == SSE_OK; i += piece) {
        rc = sse_splitter_feed(&s, in + i, n - i < piece ? n - i : piece, collect, g);
    }
    sse_splitter_cleanup(&s);
    return rc;
}

static void
test_line_ends(void)
{
    static const char in[] = "data: a\r\ndata: b\ndata: c\rdata: d\r\r\n\nend";
    for (size_t piece = 1; piece <= sizeof(in); piece++) {
        struct got g = {0};
        CHECK_EQ_INT(split(SSE_LINES, 64, in, sizeof(in) - 1, piece, &g), SSE_OK);
        CHECK_EQ_STR(buf_str(&g.all), "data: a|data: b|data: c|data: d|||");
        buf_cleanup(&g.all);
    }
}

static void
test_nul_frames(void)
{
    static const char in[] = "{\"text\":\"a\\r\\n\"}\0{\"text\":\"ab\"}\0\0{\"tail";
    for (size_t piece = 1; piece <= sizeof(in); piece++) {
        struct got g = {0};
        CHECK_EQ_INT(split(SSE_NUL, 64, in, sizeof(in) - 1, piece, &g), SSE_OK);
        CHECK_EQ_STR(buf_str(&g.all), "{\"text\":\"a\\r\\n\"}|{\"text\":\"ab\"}||");
        buf_cleanup(&g.all);
    }
}

static void
test_cap(void)
{
    static const char ok[] = "12345678\n1234\n";
    static const char over[] = "1234\n123456789\nnever";
    for (size_t piece = 1; piece <= sizeof(over); piece++) {
        struct got g = {0};
        CHECK_EQ_INT(split(SSE_LINES, 8, ok, sizeof(ok) - 1, piece, &g), SSE_OK);
        CHECK_EQ_INT(g.lines, 2);
        buf_cleanup(&g.all);
        CHECK_EQ_INT(split(SSE_LINES, 8, over, sizeof(over) - 1, piece, &g), SSE_TOO_LONG);
        CHECK_EQ_STR(buf_str(&g.all), "1234|");
        buf_cleanup(&g.all);
    }
    /* sticky */
    struct sse_splitter s;
    struct got g = {0};
    buf_init(&g.all, 100);
    sse_splitter_init(&s, SSE_LINES, 2);
    CHECK_EQ_INT(sse_splitter_feed(&s, "abc", 3, collect, &g), SSE_TOO_LONG);
    CHECK_EQ_INT(sse_splitter_feed(&s, "\n", 1, collect, &g), SSE_TOO_LONG);
    CHECK_EQ_INT(g.lines, 0);
    sse_splitter_cleanup(&s);
    buf_cleanup(&g.all);
}

static void
test_stop(void)
{
    struct got g = {.stop_at = 2};
    CHECK_EQ_INT(split(SSE_LINES, 64, "a\nb\nc\n", 6, 6, &g), SSE_STOPPED);
    CHECK_EQ_STR(buf_str(&g.all), "a|b|");
    buf_cleanup(&g.all);
}

static void
test_parse_line(void)
{
    struct sse_field f;
    const char *v;
    size_t n;

    CHECK_EQ_INT(sse_parse_line("", 0, &f), SSE_BLANK);
    CHECK_EQ_INT(sse_parse_line(": keep-alive", 12, &f), SSE_COMMENT);
    CHECK_EQ_INT(sse_parse_line("event: x", 8, &f), SSE_FIELD);
    CHECK(f.name_len == 5 && memcmp(f.name, "event", 5) == 0);
    CHECK(f.value_len == 1 && *f.value == 'x');
    CHECK_EQ_INT(sse_parse_line("data", 4, &f), SSE_FIELD);
    CHECK(f.name_len == 4 && f.value_len == 0);
    /* one space dropped, not two */
    CHECK(sse_line_data("data:  {}", 9, &v, &n));
    CHECK(n == 3 && memcmp(v, " {}", 3) == 0);
    CHECK(sse_line_data("data:{}", 7, &v, &n));
    CHECK(n == 2 && memcmp(v, "{}", 2) == 0);
    CHECK(sse_line_data("data", 4, &v, &n));
    CHECK(n == 0);
    CHECK(!sse_line_data("datax: {}", 9, &v, &n));
    CHECK(!sse_line_data("Data: {}", 8, &v, &n));
    CHECK(!sse_line_data(":data: {}", 9, &v, &n));
    CHECK(sse_data_is_done("[DONE]", 6));
    CHECK(sse_data_is_done(" [DONE] ", 8));
    CHECK(!sse_data_is_done("[DONE]x", 7));
    CHECK(!sse_data_is_done("", 0));
}

int
main(void)
{
    CHECK_RUN(test_line_ends);
    CHECK_RUN(test_nul_frames);
    CHECK_RUN(test_cap);
    CHECK_RUN(test_stop);
    CHECK_RUN(test_parse_line);
    return check_summary();
}
