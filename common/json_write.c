/* SPDX-License-Identifier: MIT
 *
 * json_write.c - see json_write.h. Strings are written as UTF-8 (the input
 * was validated on the way in); only '"', '\\' and control characters are
 * escaped, as Python's json.dumps(ensure_ascii=False) does.
 */
#include "json_write.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

void
jw_init(struct jw *w, struct buf *b)
{
    w->b = b;
    w->err = 0;
}

void
jw_raw(struct jw *w, const char *s)
{
    if (!w->err && buf_puts(w->b, s) != 0) {
        w->err = 1;
    }
}

void
jw_strn(struct jw *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    if (w->err || buf_putc(w->b, '"') != 0) {
        w->err = 1;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[7];
        const char *e = NULL;

        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        if (buf_append(w->b, s + run, i - run) != 0) {
            w->err = 1;
            return;
        }
        switch (c) {
        case '"':
            e = "\\\"";
            break;
        case '\\':
            e = "\\\\";
            break;
        case '\n':
            e = "\\n";
            break;
        case '\r':
            e = "\\r";
            break;
        case '\t':
            e = "\\t";
            break;
        case '\b':
            e = "\\b";
            break;
        case '\f':
            e = "\\f";
            break;
        default:
            esc[0] = '\\';
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            esc[6] = '\0';
            e = esc;
        }
        if (buf_puts(w->b, e) != 0) {
            w->err = 1;
            return;
        }
        run = i + 1;
    }
    if (buf_append(w->b, s + run, n - run) != 0 || buf_putc(w->b, '"') != 0) {
        w->err = 1;
    }
}

void
jw_str(struct jw *w, const char *s)
{
    if (!s) {
        jw_raw(w, "null");
        return;
    }
    jw_strn(w, s, strlen(s));
}

void
jw_key(struct jw *w, const char *key)
{
    jw_str(w, key);
    jw_raw(w, ":");
}

void
jw_i64(struct jw *w, int64_t v)
{
    char tmp[32];

    snprintf(tmp, sizeof(tmp), "%" PRId64, v);
    jw_raw(w, tmp);
}

void
jw_double(struct jw *w, double v)
{
    char tmp[40];

    util_format_double(v, tmp, sizeof(tmp));
    jw_raw(w, tmp);
}

void
jw_bool(struct jw *w, bool v)
{
    jw_raw(w, v ? "true" : "false");
}
