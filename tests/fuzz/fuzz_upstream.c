/* SPDX-License-Identifier: MIT
 *
 * fuzz_upstream.c - common/http_upstream.c's response parser (hu_parser:
 * what the apiserver reads every worker's answer with), on an answer as a
 * worker or an engine could send it. The first byte seeds how the answer
 * is cut into the pieces a socket would deliver; the rest is the answer.
 *
 * Invariants checked:
 *   - the result does not depend on how the answer is cut: the same end
 *     (more, done, error), status, Content-Type and body, byte for byte,
 *     fed whole or in pieces;
 *   - on_head comes at most once, before any body byte, with a final
 *     status (200..999) and a Content-Type under its 128-byte cap;
 *   - the body (de-chunked) is never longer than the answer, and the bytes
 *     the parser says it used are within what it was given;
 *   - round trip: a finished answer written back (status, Content-Type,
 *     body) with a Content-Length, and again chunked, parses to the same.
 */
#include <stdbool.h>
#include <string.h>

#include "buf.h"
#include "fuzz.h"
#include "http_upstream.h"

struct rec {
    int heads;
    int status;
    bool has_ct;
    char ct[128];
    struct buf body;
};

struct run {
    enum hu_parse end; /* after the last piece (and the end of the connection) */
    size_t used;       /* bytes of the input the answer took */
    bool keep_alive;
    struct rec rec;
};

static void
on_head(void *arg, int status, const char *ct)
{
    struct rec *r = arg;

    FUZZ_ASSERT(r->heads == 0);
    FUZZ_ASSERT(status >= 200 && status <= 999);
    r->heads++;
    r->status = status;
    r->has_ct = ct != NULL;
    if (ct) {
        FUZZ_ASSERT(strlen(ct) < sizeof(r->ct));
        memcpy(r->ct, ct, strlen(ct) + 1);
    }
}

static void
on_data(void *arg, const char *p, size_t n)
{
    struct rec *r = arg;

    FUZZ_ASSERT(r->heads == 1);
    FUZZ_ASSERT(n > 0);
    FUZZ_ASSERT(buf_append(&r->body, p, n) == 0); /* capped at the input's size */
}

static void
on_done(void *arg, enum hu_result res)
{
    (void)arg;
    (void)res;
    FUZZ_ASSERT(!"hu_parser never calls on_done");
}

static const struct hu_callbacks cbs = {on_head, on_data, NULL, on_done, NULL};

/* Feeds p[0..n) in pieces whose sizes come from `seed` (0: whole), then
 * the end of the connection if the answer is still open. */
static void
run(const char *p, size_t n, unsigned seed, struct run *out)
{
    struct hu_parser hp;
    size_t i = 0;

    memset(out, 0, sizeof(*out));
    buf_init(&out->rec.body, n + 1);
    hu_parser_init(&hp, &cbs, &out->rec);
    out->end = HU_PARSE_MORE;
    while (i < n) {
        size_t piece = n - i, used = 0;
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            piece = 1 + (seed >> 16) % 17;
            if (piece > n - i) {
                piece = n - i;
            }
        }
        out->end = hu_parser_feed(&hp, p + i, piece, &used);
        FUZZ_ASSERT(used <= piece);
        out->used += used;
        i += piece;
        if (out->end != HU_PARSE_MORE) {
            break;
        }
        FUZZ_ASSERT(used == piece); /* nothing left over while the answer goes on */
    }
    if (out->end == HU_PARSE_MORE && out->rec.heads) {
        out->end = hu_parser_eof(&hp);
    }
    if (out->end == HU_PARSE_DONE) {
        out->keep_alive = hu_parser_keep_alive(&hp);
        /* once done, always done, and nothing more is read */
        size_t used = 1;
        FUZZ_ASSERT(hu_parser_feed(&hp, "x", 1, &used) == HU_PARSE_DONE && used == 0);
    }
    FUZZ_ASSERT(out->used <= n);
    FUZZ_ASSERT(out->rec.body.len <= n);
}

static void
same(const struct run *a, const struct run *b)
{
    FUZZ_ASSERT(a->end == b->end);
    FUZZ_ASSERT(a->rec.heads == b->rec.heads);
    FUZZ_ASSERT(a->rec.status == b->rec.status);
    FUZZ_ASSERT(a->rec.has_ct == b->rec.has_ct);
    FUZZ_ASSERT(!a->rec.has_ct || strcmp(a->rec.ct, b->rec.ct) == 0);
    FUZZ_ASSERT(a->rec.body.len == b->rec.body.len);
    FUZZ_ASSERT(a->rec.body.len == 0 ||
                memcmp(a->rec.body.data, b->rec.body.data, a->rec.body.len) == 0);
    if (a->end == HU_PARSE_DONE) {
        FUZZ_ASSERT(a->used == b->used);
        FUZZ_ASSERT(a->keep_alive == b->keep_alive);
    }
}

/* A Content-Type that survives being written back as is. */
static bool
plain_ct(const char *ct)
{
    size_t n = strlen(ct);

    if (n == 0 || n >= 127 || ct[0] == ' ' || ct[n - 1] == ' ') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)ct[i] < 0x20 || (unsigned char)ct[i] > 0x7e) {
            return false;
        }
    }
    return true;
}

/* Writes the answer back and parses it again. */
static void
roundtrip(const struct run *a, bool chunked)
{
    struct buf out;
    struct run b;
    const struct rec *r = &a->rec;

    buf_init(&out, r->body.len + 512);
    FUZZ_ASSERT(buf_printf(&out, "HTTP/1.1 %d X\r\n", r->status) == 0);
    if (r->has_ct) {
        FUZZ_ASSERT(buf_printf(&out, "Content-Type: %s\r\n", r->ct) == 0);
    }
    if (chunked) {
        FUZZ_ASSERT(buf_puts(&out, "Transfer-Encoding: chunked\r\n\r\n") == 0);
        if (r->body.len) {
            FUZZ_ASSERT(buf_printf(&out, "%zx\r\n", r->body.len) == 0);
            FUZZ_ASSERT(buf_append(&out, r->body.data, r->body.len) == 0);
            FUZZ_ASSERT(buf_puts(&out, "\r\n") == 0);
        }
        FUZZ_ASSERT(buf_puts(&out, "0\r\n\r\n") == 0);
    } else {
        FUZZ_ASSERT(buf_printf(&out, "Content-Length: %zu\r\n\r\n", r->body.len) == 0);
        FUZZ_ASSERT(r->body.len == 0 || buf_append(&out, r->body.data, r->body.len) == 0);
    }
    run(out.data, out.len, 7, &b);
    FUZZ_ASSERT(b.end == HU_PARSE_DONE);
    FUZZ_ASSERT(b.used == out.len);
    FUZZ_ASSERT(b.rec.status == r->status);
    FUZZ_ASSERT(b.rec.has_ct == r->has_ct);
    FUZZ_ASSERT(!r->has_ct || strcmp(b.rec.ct, r->ct) == 0);
    FUZZ_ASSERT(b.rec.body.len == r->body.len);
    FUZZ_ASSERT(r->body.len == 0 || memcmp(b.rec.body.data, r->body.data, r->body.len) == 0);
    buf_cleanup(&b.rec.body);
    buf_cleanup(&out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct run whole, cut;
    const char *p = (const char *)data + 1;
    size_t n;

    if (size < 1) {
        return 0;
    }
    n = size - 1;
    run(p, n, 0, &whole);
    run(p, n, data[0] | 1u, &cut);
    same(&whole, &cut);
    if (whole.end == HU_PARSE_DONE) {
        FUZZ_ASSERT(whole.rec.heads == 1);
        /* 204 and 304 carry no body; 1xx never ends an answer */
        bool bodyless = whole.rec.status == 204 || whole.rec.status == 304;
        FUZZ_ASSERT(!bodyless || whole.rec.body.len == 0);
        if (!bodyless && (!whole.rec.has_ct || plain_ct(whole.rec.ct))) {
            roundtrip(&whole, false);
            roundtrip(&whole, true);
        }
    }
    buf_cleanup(&whole.rec.body);
    buf_cleanup(&cut.rec.body);
    return 0;
}
