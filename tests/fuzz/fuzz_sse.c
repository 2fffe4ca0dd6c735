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
#include "split_check.h"
#include "sse.h"

struct lines {
    struct split_record rec; /* first: the lines */
    size_t stop_at;          /* stop after this many lines (0: never) */
    size_t max;
};

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

    FUZZ_ASSERT(l->stop_at == 0 || l->rec.n < l->stop_at); /* nothing after a stop */
    FUZZ_ASSERT(n <= l->max);
    FUZZ_ASSERT(!memchr(p, '\n', n) && !memchr(p, '\r', n));
    check_line(p, n);
    split_record_put(&l->rec, p, n);
    return l->stop_at && l->rec.n >= l->stop_at;
}

/* The reference: the whole stream at once, byte by byte. Returns the
 * result the splitter must give; *pending the bytes left. */
static int
reference(const char *p, size_t n, unsigned seed, struct split_record *r, size_t *pending)
{
    struct lines *l = (struct lines *)r;
    size_t start = 0;

    (void)seed;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n' && p[i] != '\r') {
            if (i + 1 - start > l->max) {
                return SSE_TOO_LONG;
            }
            continue;
        }
        split_record_put(&l->rec, p + start, i - start);
        if (l->stop_at && l->rec.n >= l->stop_at) {
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
split(const char *p, size_t n, unsigned seed, struct split_record *r, size_t *pending)
{
    struct lines *l = (struct lines *)r;
    struct sse_splitter s;
    int rc;

    sse_splitter_init(&s, SSE_LINES, l->max);
    rc = split_feed_cut(&s, p, n, seed, 9, on_line, l);
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

    if (size < 2) {
        return 0;
    }
    want.max = whole.max = cut.max = caps[data[1] % 6];
    want.stop_at = whole.stop_at = cut.stop_at = (data[1] >> 3) % 4 == 0 ? (data[1] >> 5) + 1 : 0;
    split_compare(reference, split, (const char *)data + 2, size - 2, data[0] | 1u, &want.rec,
                  &whole.rec, &cut.rec);
    return 0;
}
