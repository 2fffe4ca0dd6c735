/* SPDX-License-Identifier: MIT
 *
 * fuzz_sse.c - common/sse.c on a text/event-stream as an engine (the
 * worker's --backend openai) or a server (roster model chat) could send
 * it. Byte 0 seeds how the stream is cut into pieces, byte 1 picks the
 * line cap and after how many lines the callback stops; the rest is the
 * stream.
 *
 * Invariants checked:
 *   - the lines are exactly those of a plain reference splitter (every
 *     CR LF, LF and CR ends one; a line over the cap ends the stream with
 *     SSE_TOO_LONG, the lines before it delivered), however the stream is
 *     cut, with the same result and the same bytes left pending;
 *   - no line holds CR or LF or exceeds the cap; a callback that stops
 *     gets no further line;
 *   - every line reads (sse_parse_line) into a name and a value within
 *     the line that account for all its bytes; a data line written back
 *     as "data: VALUE\n" reads back the same value.
 */
#include <stdbool.h>
#include <string.h>

#include "buf.h"
#include "fuzz.h"
#include "sse.h"

struct lines {
    struct buf all; /* each line, then its length as 4 bytes */
    size_t n;
    size_t stop_at; /* stop after this many lines (0: never) */
    size_t max;
};

static void
put_line(struct lines *l, const char *p, size_t n)
{
    uint32_t len = (uint32_t)n;

    FUZZ_ASSERT(buf_append(&l->all, p, n) == 0);
    FUZZ_ASSERT(buf_append(&l->all, &len, sizeof(len)) == 0);
    l->n++;
}

/* Keeps the one line of a write-back. */
static int
capture(void *arg, const char *p, size_t n)
{
    struct buf *b = arg;

    FUZZ_ASSERT(b->len == 0);
    FUZZ_ASSERT(buf_append(b, p, n) == 0);
    return 0;
}

static void
check_line(const char *p, size_t n)
{
    struct sse_field f;
    enum sse_line_kind k = sse_parse_line(p, n, &f);
    const char *v;
    size_t vn;

    FUZZ_ASSERT(f.name == p);
    FUZZ_ASSERT(f.value >= p && f.value + f.value_len == p + n);
    FUZZ_ASSERT((k == SSE_BLANK) == (n == 0));
    FUZZ_ASSERT((k == SSE_COMMENT) == (n > 0 && p[0] == ':'));
    if (k == SSE_FIELD) {
        size_t gap = (size_t)(f.value - (p + f.name_len));
        FUZZ_ASSERT(f.name_len > 0 && !memchr(p, ':', f.name_len));
        FUZZ_ASSERT(gap <= 2);
        FUZZ_ASSERT(gap == 0 || p[f.name_len] == ':');
        FUZZ_ASSERT(gap < 2 || p[f.name_len + 1] == ' ');
    }
    if (sse_line_data(p, n, &v, &vn)) {
        /* written back as "data: VALUE\n", split and read again */
        struct sse_splitter s;
        struct buf w;
        struct buf back;
        const char *v2;
        size_t vn2;
        buf_init(&w, n + 8);
        buf_init(&back, n + 8);
        FUZZ_ASSERT(buf_puts(&w, "data: ") == 0 && buf_append(&w, v, vn) == 0 &&
                    buf_putc(&w, '\n') == 0);
        sse_splitter_init(&s, SSE_LINES, w.len);
        FUZZ_ASSERT(sse_splitter_feed(&s, w.data, w.len, capture, &back) == SSE_OK);
        FUZZ_ASSERT(sse_splitter_pending(&s) == 0);
        sse_splitter_cleanup(&s);
        FUZZ_ASSERT(back.len == w.len - 1);
        FUZZ_ASSERT(sse_line_data(back.data, back.len, &v2, &vn2));
        FUZZ_ASSERT(vn2 == vn && memcmp(v2, v, vn) == 0);
        buf_cleanup(&back);
        buf_cleanup(&w);
    }
}

static int
on_line(void *arg, const char *p, size_t n)
{
    struct lines *l = arg;

    FUZZ_ASSERT(l->stop_at == 0 || l->n < l->stop_at); /* nothing after a stop */
    FUZZ_ASSERT(n <= l->max);
    FUZZ_ASSERT(!memchr(p, '\n', n) && !memchr(p, '\r', n));
    check_line(p, n);
    put_line(l, p, n);
    return l->stop_at && l->n >= l->stop_at;
}

/* The reference: the whole stream at once, byte by byte. Returns the
 * result the splitter must give; *pending the bytes left. */
static int
reference(const char *p, size_t n, struct lines *l, size_t *pending)
{
    size_t start = 0;

    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n' && p[i] != '\r') {
            if (i + 1 - start > l->max) {
                return SSE_TOO_LONG;
            }
            continue;
        }
        put_line(l, p + start, i - start);
        if (l->stop_at && l->n >= l->stop_at) {
            return SSE_STOPPED;
        }
        if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') {
            i++;
        }
        start = i + 1;
    }
    *pending = n - start;
    return SSE_OK;
}

static int
split(const char *p, size_t n, unsigned seed, struct lines *l, size_t *pending)
{
    struct sse_splitter s;
    int rc = SSE_OK;
    size_t i = 0;

    sse_splitter_init(&s, SSE_LINES, l->max);
    while (i < n && rc == SSE_OK) {
        size_t piece = n - i;
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            piece = 1 + (seed >> 16) % 9;
            if (piece > n - i) {
                piece = n - i;
            }
        }
        rc = sse_splitter_feed(&s, p + i, piece, on_line, l);
        i += piece;
    }
    *pending = sse_splitter_pending(&s);
    FUZZ_ASSERT(*pending <= l->max);
    if (rc == SSE_TOO_LONG) { /* sticky */
        FUZZ_ASSERT(sse_splitter_feed(&s, "\n", 1, on_line, l) == SSE_TOO_LONG);
    }
    sse_splitter_cleanup(&s);
    return rc;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t caps[] = {1, 2, 5, 16, 64, 1 << 20};
    struct lines want = {0}, whole = {0}, cut = {0};
    const char *p = (const char *)data + 2;
    size_t n, pw = 0, p1 = 0, p2 = 0;
    int rw, r1, r2;

    if (size < 2) {
        return 0;
    }
    n = size - 2;
    want.max = whole.max = cut.max = caps[data[1] % 6];
    want.stop_at = whole.stop_at = cut.stop_at = (data[1] >> 3) % 4 == 0 ? (data[1] >> 5) + 1 : 0;
    buf_init(&want.all, 5 * n + 64);
    buf_init(&whole.all, 5 * n + 64);
    buf_init(&cut.all, 5 * n + 64);
    rw = reference(p, n, &want, &pw);
    r1 = split(p, n, 0, &whole, &p1);
    r2 = split(p, n, data[0] | 1u, &cut, &p2);
    FUZZ_ASSERT(r1 == rw && r2 == rw);
    FUZZ_ASSERT(whole.n == want.n && cut.n == want.n);
    FUZZ_ASSERT(whole.all.len == want.all.len && cut.all.len == want.all.len);
    FUZZ_ASSERT(want.all.len == 0 || (memcmp(whole.all.data, want.all.data, want.all.len) == 0 &&
                                      memcmp(cut.all.data, want.all.data, want.all.len) == 0));
    if (rw == SSE_OK) {
        /* a CR LF cut after its CR leaves nothing pending either way */
        FUZZ_ASSERT(p1 == pw && p2 == pw);
    }
    buf_cleanup(&want.all);
    buf_cleanup(&whole.all);
    buf_cleanup(&cut.all);
    return 0;
}
