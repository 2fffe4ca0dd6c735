/* SPDX-License-Identifier: MIT
 *
 * fuzz_dbgpt.c - DB-GPT's generate_stream framing: JSON frames each ended
 * by a NUL (worker/wrk.h, struct wrk_dbgpt_frame), split by common/sse.c
 * (SSE_NUL). Byte 0 seeds how the stream is cut, byte 1 the frame cap;
 * the rest is used twice:
 *   1. as a stream from a worker: split whole and in pieces, the same
 *      frames (none holding a NUL or over the cap) as a plain reference
 *      split, the same result; each frame read as a DB-GPT client does
 *      (json_parse, then error_code and text) without harm;
 *   2. as the text a model generated: the worker's frames for three
 *      growing prefixes of it (wrk_dbgpt_output, as generate_stream
 *      writes them), joined with their NULs and cut into pieces, split
 *      back into exactly three frames, whose "text" is the prefix (when
 *      the text is valid UTF-8 without NUL, which JSON carries as is):
 *      no text can forge a frame boundary.
 */
#include <stdbool.h>
#include <string.h>

#include "buf.h"
#include "fuzz.h"
#include "json_check.h"
#include "json_write.h"
#include "split_check.h"
#include "sse.h"
#include "wrk.h"

struct frames {
    struct split_record rec; /* first: the frames */
    size_t max;
    /* part 2: the texts read back */
    const char *want[3];
    size_t want_len[3];
    bool valid[3]; /* the text is valid UTF-8 (as every engine's JSON is) */
    bool exact[3]; /* ... and holds no NUL (which cJSON's strings end at) */
};

static void
read_frame(const char *p, size_t n, struct frames *f)
{
    cJSON *root = NULL;
    char err[128];

    if (json_parse(p, n, 16, &root, err, sizeof(err)) != 0) {
        FUZZ_ASSERT(root == NULL && err[0]);
        /* a frame the worker wrote from valid text always parses */
        FUZZ_ASSERT(!f->want[0] || f->rec.n >= 3 || !f->valid[f->rec.n]);
        return;
    }
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(root, "error_code");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "text");
    if (f->want[0]) {
        size_t k = f->rec.n;
        FUZZ_ASSERT(k < 3);
        FUZZ_ASSERT(cJSON_IsNumber(code) && code->valueint == 0);
        FUZZ_ASSERT(cJSON_IsString(text));
        if (f->exact[k]) {
            FUZZ_ASSERT(strlen(text->valuestring) == f->want_len[k]);
            FUZZ_ASSERT(memcmp(text->valuestring, f->want[k], f->want_len[k]) == 0);
        }
    }
    cJSON_Delete(root);
}

static int
on_frame(void *arg, const char *p, size_t n)
{
    struct frames *f = arg;

    FUZZ_ASSERT(n <= f->max);
    FUZZ_ASSERT(!memchr(p, '\0', n));
    read_frame(p, n, f);
    split_record_put(&f->rec, p, n);
    return 0;
}

/* The reference split: frames end at each NUL. */
static int
reference(const char *p, size_t n, unsigned seed, struct split_record *r, size_t *pending)
{
    struct frames *f = (struct frames *)r;
    size_t start = 0;

    (void)seed;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\0') {
            if (i + 1 - start > f->max) {
                return SSE_TOO_LONG;
            }
            continue;
        }
        split_record_put(&f->rec, p + start, i - start);
        start = i + 1;
    }
    *pending = n - start;
    return SSE_OK;
}

static int
split(const char *p, size_t n, unsigned seed, struct split_record *r, size_t *pending)
{
    struct frames *f = (struct frames *)r;
    struct sse_splitter s;
    int rc;

    sse_splitter_init(&s, SSE_NUL, f->max);
    rc = split_feed_cut(&s, p, n, seed, 13, on_frame, f);
    *pending = sse_splitter_pending(&s);
    sse_splitter_cleanup(&s);
    return rc;
}

static void
as_stream(const char *p, size_t n, size_t max, unsigned seed)
{
    struct frames want = {.max = max}, whole = {.max = max}, cut = {.max = max};

    split_compare(reference, split, p, n, seed, &want.rec, &whole.rec, &cut.rec);
}

static void
as_text(const char *p, size_t n, unsigned seed)
{
    struct buf stream;
    struct frames f = {.max = 64 * n + 4096};
    struct sse_splitter s;
    size_t cuts[3] = {n / 3, n / 2, n};

    buf_init(&stream, 3 * (6 * n + 4096));
    buf_init(&f.rec.all, 3 * (6 * n + 4096) + 64);
    for (int k = 0; k < 3; k++) {
        struct wrk_dbgpt_frame fr = {.text = p,
                                     .len = cuts[k],
                                     .finish = k == 2 ? "stop" : NULL,
                                     .prompt_tokens = k == 0 ? -1 : 3,
                                     .completion_tokens = k,
                                     .start_ms = 1,
                                     .collect_index = k + 1};
        struct jw w;
        jw_init(&w, &stream);
        wrk_dbgpt_output(&w, &fr);
        FUZZ_ASSERT(w.err == 0);
        FUZZ_ASSERT(buf_append(&stream, "", 1) == 0);
        f.want[k] = p;
        f.want_len[k] = cuts[k];
        f.valid[k] = json_utf8_valid(p, cuts[k]);
        f.exact[k] = f.valid[k] && !memchr(p, '\0', cuts[k]);
    }
    sse_splitter_init(&s, SSE_NUL, f.max);
    for (size_t i = 0; i < stream.len;) {
        size_t piece;
        seed = seed * 1103515245u + 12345u;
        piece = 1 + (seed >> 16) % 64;
        if (piece > stream.len - i) {
            piece = stream.len - i;
        }
        FUZZ_ASSERT(sse_splitter_feed(&s, stream.data + i, piece, on_frame, &f) == SSE_OK);
        i += piece;
    }
    FUZZ_ASSERT(f.rec.n == 3);
    FUZZ_ASSERT(sse_splitter_pending(&s) == 0);
    sse_splitter_cleanup(&s);
    buf_cleanup(&f.rec.all);
    buf_cleanup(&stream);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t caps[] = {1, 3, 16, 256, 1 << 20};
    const char *p = (const char *)data + 2;

    if (size < 2) {
        return 0;
    }
    as_stream(p, size - 2, caps[data[1] % 5], data[0] | 1u);
    as_text(p, size - 2, data[0] | 1u);
    return 0;
}
