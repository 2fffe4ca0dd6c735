/* SPDX-License-Identifier: MIT
 *
 * json_write.h - append JSON values to a buf without building a tree.
 *
 * Hot responses (instance lists, errors) are written straight into a buf:
 * no cJSON tree, no second copy. A `struct jw` carries a sticky error flag,
 * so a sequence of calls is checked once at the end (jw.err != 0 means the
 * buf hit its cap or memory ran out and the output must be discarded).
 * Separators are the caller's: jw_raw(w, ",").
 *
 * Threads: a jw and its buf belong to one thread at a time; no locks.
 */
#ifndef ROSTER_JSON_WRITE_H
#define ROSTER_JSON_WRITE_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"

struct jw {
    struct buf *b;
    int err;
};

void jw_init(struct jw *w, struct buf *b);
void jw_raw(struct jw *w, const char *s);            /* appended as-is */
void jw_str(struct jw *w, const char *s);            /* quoted, escaped; NULL -> null */
void jw_strn(struct jw *w, const char *s, size_t n); /* quoted, escaped */
void jw_key(struct jw *w, const char *key);          /* "key": */
void jw_i64(struct jw *w, int64_t v);
void jw_double(struct jw *w, double v); /* Python repr form: 1.0 */
void jw_bool(struct jw *w, bool v);

#endif
