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

void
log_write(enum log_level lvl, const char *mod, const char *fmt, ...)
{
    char line[2048];
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
    r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (r > 0) {
        n += (size_t)r;
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
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (cap == 0) {
        return out;
    }
    for (; s && *s && o + 1 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
            if (o + 5 >= cap) {
                break;
            }
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
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
