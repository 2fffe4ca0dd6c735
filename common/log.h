/* SPDX-License-Identifier: MIT
 *
 * log.h - one-line structured logging to stderr.
 *
 * Every line is "2026-11-23T19:08:16.123Z LEVEL mod msg key=value ...".
 * The level check happens in the macro, before any argument is evaluated
 * (Redis serverLog). Writes are one fwrite per line under stdio's lock, so
 * lines from different threads never interleave. Never log secrets or whole
 * bodies; user-controlled strings go through log_escape() first.
 */
#ifndef ROSTER_LOG_H
#define ROSTER_LOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG, LOG_LVL_TRACE };

extern enum log_level log_current_level;

/* Set the level from a name ("error".."trace"). Returns 0, or -1 for an
 * unknown name (level unchanged). Call before threads start. */
int log_set_level_name(const char *name);

void log_write(enum log_level lvl, const char *mod, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies `s` into `out` (size `cap`, always NUL-terminated) so that a
 * user-supplied string cannot forge a log line, even in a viewer that
 * honours Unicode line breaks: C0 control bytes, DEL, quotes and
 * backslashes become \xHH; C1 controls (U+0080-U+009F, NEL among them) and
 * U+2028/U+2029 become \uXXXX; a byte that is not part of well-formed
 * UTF-8 becomes \xHH. Never cuts a character or an escape. Returns `out`.
 * (log_write applies the same rules, quotes and backslashes aside, to
 * every message, whatever its arguments.) */
const char *log_escape(const char *s, char *out, size_t cap);

/* Whether a request's access-log line is written: always for a 5xx;
 * otherwise only when access logs are `on`, and then for one request in
 * `every` (1 or less: each), counted in `*seq` (any thread). */
bool log_access_sampled(bool on, int64_t every, _Atomic uint64_t *seq, int status);

#ifndef LOG_MODULE
#define LOG_MODULE "roster"
#endif

#define log_at(lvl, ...)                                                                           \
    do {                                                                                           \
        if ((lvl) <= log_current_level) {                                                          \
            log_write((lvl), LOG_MODULE, __VA_ARGS__);                                             \
        }                                                                                          \
    } while (0)
#define log_error(...) log_at(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_at(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...)  log_at(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_at(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
