/* SPDX-License-Identifier: MIT
 *
 * sse.h - reading an event stream as it arrives, in pieces of any size:
 *   - text/event-stream (Server-Sent Events: how OpenAI-compatible engines
 *     and roster's own servers stream chat completions), split into lines;
 *     a line ends with CR LF, LF or CR (a CR LF split between two pieces
 *     is one end, not two);
 *   - DB-GPT's generate_stream (worker/wrk.h, struct wrk_dbgpt_frame): JSON
 *     documents each ended by a NUL byte, split into frames.
 * And one SSE line read into its field and value (the WHATWG rules: a
 * blank line, a comment ":...", "name:value" with one space after the
 * colon dropped, or a name alone).
 *
 * Lines are handed over one at a time, without their end; an event of
 * several `data:` lines is not joined (the callers read one JSON document
 * per `data:` line, as the engines send them). Every line is bounded: one
 * longer than the splitter's max_line ends the stream with SSE_TOO_LONG,
 * wherever the pieces were cut.
 *
 * No allocation beyond the splitter's buffer of an incomplete line;
 * no locks: one splitter per stream, used by one thread at a time.
 */
#ifndef ROSTER_SSE_H
#define ROSTER_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

enum sse_framing {
    SSE_LINES, /* text/event-stream */
    SSE_NUL,   /* DB-GPT: frames ended by NUL */
};

enum { SSE_OK = 0, SSE_TOO_LONG = -1, SSE_STOPPED = -2 };

struct sse_splitter {
    struct buf pending; /* the start of a line not yet ended (<= max_line bytes) */
    enum sse_framing framing;
    size_t max_line;
    bool cr;     /* SSE_LINES: the last line ended with CR: an LF next is its end */
    bool broken; /* SSE_TOO_LONG was returned: every later feed returns it */
};

/* Called with each complete line (frame), without its end: p[0..n), valid
 * during the call only, not NUL-terminated, may hold NULs (SSE_LINES).
 * Returns 0 to go on, anything else to stop the feed. */
typedef int (*sse_line_fn)(void *arg, const char *p, size_t n);

/* max_line >= 1: the longest line (frame) accepted, in bytes. */
void sse_splitter_init(struct sse_splitter *s, enum sse_framing framing, size_t max_line);
/* Frees the buffer. NULL-safe. */
void sse_splitter_cleanup(struct sse_splitter *s);

/* Feeds data[0..n) of the stream: fn is called for each line it completes,
 * in order. Returns SSE_OK; SSE_STOPPED when fn returned non-zero (the
 * rest of the piece is not read: stop feeding); SSE_TOO_LONG when a line
 * exceeds max_line or memory ran out (then every later call returns it). */
int sse_splitter_feed(struct sse_splitter *s, const char *data, size_t n, sse_line_fn fn,
                      void *arg);

/* Bytes of a line not yet ended. */
size_t sse_splitter_pending(const struct sse_splitter *s);

enum sse_line_kind {
    SSE_BLANK,   /* the empty line that ends an event */
    SSE_COMMENT, /* ":..." (keep-alives) */
    SSE_FIELD,   /* "name:value", "name: value" or "name" */
};

struct sse_field {
    const char *name; /* within the line; name_len may be 0 for BLANK and COMMENT */
    size_t name_len;
    const char *value; /* within the line (after the colon and one space) */
    size_t value_len;
};

/* Reads one line p[0..n) (as the splitter hands it over). f's pointers
 * point into p. Never fails. */
enum sse_line_kind sse_parse_line(const char *p, size_t n, struct sse_field *f);

/* The payload of a `data` line: true with *v, *vn set (into p); false
 * for any other line. */
bool sse_line_data(const char *p, size_t n, const char **v, size_t *vn);

/* The payload is OpenAI's end-of-stream marker "[DONE]" (spaces around
 * it aside). */
bool sse_data_is_done(const char *v, size_t n);

#endif
