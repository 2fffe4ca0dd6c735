/* SPDX-License-Identifier: MIT
 *
 * log.c - see log.h.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

enum log_level log_current_level = LOG_LVL_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};
static const char *const level_tags[] = {"ERROR", "WARN ", "INFO ", "DEBUG", "TRACE"};

int
log_set_level_name(const char *name)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            log_current_level = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

/* The length of the well-formed UTF-8 sequence at s[0..n) (2 to 4), with
 * its code point in *cp; 0 if s[0] does not start one (a stray
 * continuation byte, an overlong form, a surrogate, past U+10FFFF, or cut
 * short). */
static size_t
utf8_seq(const unsigned char *s, size_t n, unsigned *cp)
{
    size_t len;
    unsigned c, min;

    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2, c = s[0] & 0x1fu, min = 0x80;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3, c = s[0] & 0x0fu, min = 0x800;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4, c = s[0] & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        c = (c << 6) | (s[i] & 0x3fu);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
        return 0;
    }
    *cp = c;
    return len;
}

/* Copies s[0..n) into out (cap bytes, always terminated) so that no viewer
 * can see a line break or a control in it: C0 controls and DEL (and, with
 * `quotes`, '"' and '\\') become \xHH, C1 controls (U+0080-U+009F, NEL
 * among them) and U+2028/U+2029 become \uXXXX, and each byte that is not
 * part of well-formed UTF-8 becomes \xHH. Never cuts an escape or a
 * character in two. Returns the length written. */
static size_t
escape_into(const unsigned char *s, size_t n, char *out, size_t cap, bool quotes)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i = 0;

    if (cap == 0) {
        return 0;
    }
    while (i < n) {
        unsigned char c = s[i];
        unsigned cp = 0;
        size_t len = 1;
        if (c >= 0x80 && !(len = utf8_seq(s + i, n - i, &cp))) {
            len = 1; /* not UTF-8: the byte alone, escaped */
        } else if (c >= 0x80 && ((cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029)) {
            if (o + 6 >= cap) {
                break;
            }
            out[o++] = '\\';
            out[o++] = 'u';
            for (int k = 12; k >= 0; k -= 4) {
                out[o++] = hex[(cp >> k) & 15];
            }
            i += len;
            continue;
        } else if (c >= 0x80 || !(c < 0x20 || c == 0x7f || (quotes && (c == '"' || c == '\\')))) {
            if (o + len >= cap) {
                break;
            }
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
            continue;
        }
        if (o + 4 >= cap) {
            break;
        }
        out[o++] = '\\';
        out[o++] = 'x';
        out[o++] = hex[c >> 4];
        out[o++] = hex[c & 15];
        i++;
    }
    out[o] = '\0';
    return o;
}

void
log_write(enum log_level lvl, const char *mod, const char *fmt, ...)
{
    char line[2048], msg[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;
    int r;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    r = snprintf(line + n, sizeof(line) - n, ".%03ldZ %s %s ", ts.tv_nsec / 1000000L,
                 level_tags[lvl], mod);
    if (r > 0) {
        n += (size_t)r;
    }
    va_start(ap, fmt);
    r = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (r > 0) {
        /* whatever reached the message unescaped (a name passed as is)
         * still cannot break the line: the last line of defence */
        size_t m = (size_t)r < sizeof(msg) ? (size_t)r : sizeof(msg) - 1;
        n += escape_into((const unsigned char *)msg, m, line + n, sizeof(line) - n, false);
    }
    if (n > sizeof(line) - 2) {
        n = sizeof(line) - 2; /* truncated: still one line */
    }
    line[n++] = '\n';
    fwrite(line, 1, n, stderr);
}

const char *
log_escape(const char *s, char *out, size_t cap)
{
    escape_into((const unsigned char *)(s ? s : ""), s ? strlen(s) : 0, out, cap, true);
    return out;
}

bool
log_access_sampled(bool on, int64_t every, _Atomic uint64_t *seq, int status)
{
    if (status >= 500) {
        return true;
    }
    if (!on) {
        return false;
    }
    return every <= 1 ||
           atomic_fetch_add_explicit(seq, 1, memory_order_relaxed) % (uint64_t)every == 0;
}
