/* SPDX-License-Identifier: MIT
 *
 * buf.h - a growable byte buffer with a hard size cap (curl's dynbuf).
 *
 * Everything read from the network or built for it goes through a buf, so
 * every such buffer has a limit. The contents are always NUL-terminated
 * (the NUL is not counted in len). A failed append (cap reached or out of
 * memory) leaves the buffer unchanged and returns -1.
 *
 * Ownership: buf_init() takes nothing; buf_cleanup() frees the storage.
 * buf_take() hands the storage to the caller (free() it) and empties the buf.
 *
 * Threads: a buf belongs to one thread at a time; no locks.
 */
#ifndef ROSTER_BUF_H
#define ROSTER_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data; /* NULL until the first append */
    size_t len; /* bytes used, excluding the trailing NUL */
    size_t cap; /* bytes allocated */
    size_t max; /* hard limit on len */
};

void buf_init(struct buf *b, size_t max);
void buf_cleanup(struct buf *b);
void buf_reset(struct buf *b); /* len = 0, keeps storage */

__attribute__((warn_unused_result)) int buf_append(struct buf *b, const void *p, size_t n);
__attribute__((warn_unused_result)) int buf_puts(struct buf *b, const char *s);
__attribute__((warn_unused_result)) int buf_putc(struct buf *b, char c);
__attribute__((warn_unused_result, format(printf, 2, 3))) int buf_printf(struct buf *b,
                                                                         const char *fmt, ...);
__attribute__((warn_unused_result, format(printf, 2, 0))) int
buf_vprintf(struct buf *b, const char *fmt, va_list ap);

/* Returns the heap storage (NUL-terminated, never NULL on success; caller
 * frees) and leaves `b` empty. Returns NULL only if allocation fails. */
char *buf_take(struct buf *b);

/* Contents as a C string ("" when empty). Valid until the next change. */
const char *buf_str(const struct buf *b);

#endif
