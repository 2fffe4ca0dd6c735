/* SPDX-License-Identifier: MIT
 *
 * sse.c - see sse.h.
 *
 * The splitter reads lines straight from the piece it is given; only the
 * start of a line that the piece does not end is copied (into `pending`),
 * and the next piece's first line is appended to it. So a line is copied
 * at most once, and a piece of many short lines costs no copy at all.
 */
#include "sse.h"

#include <string.h>

void
sse_splitter_init(struct sse_splitter *s, enum sse_framing framing, size_t max_line)
{
    memset(s, 0, sizeof(*s));
    s->framing = framing;
    s->max_line = max_line ? max_line : 1;
    buf_init(&s->pending, s->max_line);
}

void
sse_splitter_cleanup(struct sse_splitter *s)
{
    if (s) {
        buf_cleanup(&s->pending);
    }
}

size_t
sse_splitter_pending(const struct sse_splitter *s)
{
    return s->pending.len;
}

/* The offset of the first line end in p[0..n), or n. */
static size_t
line_end(const struct sse_splitter *s, const char *p, size_t n)
{
    const char *nl, *cr;

    if (s->framing == SSE_NUL) {
        nl = memchr(p, '\0', n);
        return nl ? (size_t)(nl - p) : n;
    }
    nl = memchr(p, '\n', n);
    cr = memchr(p, '\r', nl ? (size_t)(nl - p) : n);
    return cr ? (size_t)(cr - p) : nl ? (size_t)(nl - p) : n;
}

int
sse_splitter_feed(struct sse_splitter *s, const char *data, size_t n, sse_line_fn fn, void *arg)
{
    size_t i = 0;

    if (s->broken) {
        return SSE_TOO_LONG;
    }
    while (i < n) {
        size_t end, len;
        const char *line;
        int rc;

        if (s->cr) { /* the LF of a CR LF cut between two pieces */
            s->cr = false;
            if (data[i] == '\n') {
                i++;
                continue;
            }
        }
        end = i + line_end(s, data + i, n - i);
        len = end - i;
        if (s->pending.len + len > s->max_line) {
            s->broken = true;
            return SSE_TOO_LONG;
        }
        if (end == n) { /* not ended in this piece: keep it for the next */
            if (buf_append(&s->pending, data + i, len) != 0) {
                s->broken = true;
                return SSE_TOO_LONG;
            }
            return SSE_OK;
        }
        if (s->pending.len) {
            if (buf_append(&s->pending, data + i, len) != 0) {
                s->broken = true;
                return SSE_TOO_LONG;
            }
            line = s->pending.data;
            len = s->pending.len;
        } else {
            line = data + i;
        }
        s->cr = s->framing == SSE_LINES && data[end] == '\r';
        i = end + 1;
        rc = fn(arg, line, len);
        buf_reset(&s->pending);
        if (rc != 0) {
            return SSE_STOPPED;
        }
    }
    return SSE_OK;
}

enum sse_line_kind
sse_parse_line(const char *p, size_t n, struct sse_field *f)
{
    const char *colon = memchr(p, ':', n);

    memset(f, 0, sizeof(*f));
    f->name = p;
    f->value = p + n;
    if (n == 0) {
        return SSE_BLANK;
    }
    if (colon == p) {
        f->value = p + 1;
        f->value_len = n - 1;
        return SSE_COMMENT;
    }
    if (!colon) {
        f->name_len = n; /* a name alone: its value is empty */
        return SSE_FIELD;
    }
    f->name_len = (size_t)(colon - p);
    f->value = colon + 1;
    f->value_len = n - f->name_len - 1;
    if (f->value_len && *f->value == ' ') {
        f->value++;
        f->value_len--;
    }
    return SSE_FIELD;
}

bool
sse_line_data(const char *p, size_t n, const char **v, size_t *vn)
{
    struct sse_field f;

    if (sse_parse_line(p, n, &f) != SSE_FIELD || f.name_len != 4 || memcmp(f.name, "data", 4)) {
        return false;
    }
    *v = f.value;
    *vn = f.value_len;
    return true;
}

bool
sse_data_is_done(const char *v, size_t n)
{
    while (n && *v == ' ') {
        v++;
        n--;
    }
    while (n && v[n - 1] == ' ') {
        n--;
    }
    return n == 6 && memcmp(v, "[DONE]", 6) == 0;
}
