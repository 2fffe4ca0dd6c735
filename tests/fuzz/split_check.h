/* SPDX-License-Identifier: MIT
 *
 * split_check.h - shared by the fuzz targets of common/sse.c's splitter
 * (fuzz_sse: SSE lines, fuzz_dbgpt: NUL-ended frames): a record of the
 * pieces a split gave, a stream fed in pseudo-random pieces, and the
 * reference-compare loop (the splitter fed whole and cut must give what a
 * plain reference split gives).
 */
#ifndef ROSTER_SPLIT_CHECK_H
#define ROSTER_SPLIT_CHECK_H

#include <string.h>

#include "buf.h"
#include "fuzz.h"
#include "sse.h"

/* The pieces a split gave: each piece, then its length as 4 bytes. A
 * target's state begins with one (so that a pointer to it is a pointer to
 * the state). */
struct split_record {
    struct buf all;
    size_t n;
};

static inline void
split_record_put(struct split_record *r, const char *p, size_t n)
{
    uint32_t len = (uint32_t)n;

    FUZZ_ASSERT(buf_append(&r->all, p, n) == 0);
    FUZZ_ASSERT(buf_append(&r->all, &len, sizeof(len)) == 0);
    r->n++;
}

/* Feeds p to s whole (seed 0) or in pieces of 1 to `most` bytes drawn
 * from seed, until all is fed or fn's splitter stops; its last result. */
static inline int
split_feed_cut(struct sse_splitter *s, const char *p, size_t n, unsigned seed, unsigned most,
               sse_line_fn fn, void *arg)
{
    int rc = SSE_OK;
    size_t i = 0;

    while (i < n && rc == SSE_OK) {
        size_t piece = n - i;
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            piece = 1 + (seed >> 16) % most;
            if (piece > n - i) {
                piece = n - i;
            }
        }
        rc = sse_splitter_feed(s, p + i, piece, fn, arg);
        i += piece;
    }
    return rc;
}

/* A split of p (seed as split_feed_cut's; the reference ignores it) into
 * the state that begins with r; returns its result, *pending the bytes
 * left over. */
typedef int (*split_fn)(const char *p, size_t n, unsigned seed, struct split_record *r,
                        size_t *pending);

/* The reference-compare loop: `reference` into want, `split` whole and
 * cut by seed into whole and cut (each the start of a state the caller
 * set up; their records are initialised and cleaned up here). All three
 * give the same pieces and the same result and, when that is SSE_OK, the
 * same bytes pending. */
static inline void
split_compare(split_fn reference, split_fn split, const char *p, size_t n, unsigned seed,
              struct split_record *want, struct split_record *whole, struct split_record *cut)
{
    size_t pw = 0, p1 = 0, p2 = 0;
    int rw, r1, r2;

    buf_init(&want->all, 5 * n + 64);
    buf_init(&whole->all, 5 * n + 64);
    buf_init(&cut->all, 5 * n + 64);
    rw = reference(p, n, 0, want, &pw);
    r1 = split(p, n, 0, whole, &p1);
    r2 = split(p, n, seed, cut, &p2);
    FUZZ_ASSERT(r1 == rw && r2 == rw);
    FUZZ_ASSERT(whole->n == want->n && cut->n == want->n);
    FUZZ_ASSERT(whole->all.len == want->all.len && cut->all.len == want->all.len);
    FUZZ_ASSERT(want->all.len == 0 ||
                (memcmp(whole->all.data, want->all.data, want->all.len) == 0 &&
                 memcmp(cut->all.data, want->all.data, want->all.len) == 0));
    /* (a CR LF cut after its CR leaves nothing pending either way) */
    FUZZ_ASSERT(rw != SSE_OK || (p1 == pw && p2 == pw));
    buf_cleanup(&want->all);
    buf_cleanup(&whole->all);
    buf_cleanup(&cut->all);
}

#endif
