/* SPDX-License-Identifier: MIT
 *
 * metrics.h - Prometheus text exposition: lock-free histograms and helpers
 * to write counters and gauges into a buf. Observations use relaxed atomics,
 * so any thread may record; a scrape reads a slightly racy but consistent-
 * enough view, as every Prometheus client does.
 */
#ifndef ROSTER_METRICS_H
#define ROSTER_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define METRICS_BUCKETS 15 /* 100 us .. 5 s, plus +Inf */

struct metrics_hist {
    _Atomic uint64_t bucket[METRICS_BUCKETS + 1]; /* non-cumulative */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;
};

void metrics_hist_observe_us(struct metrics_hist *h, int64_t us);

/* "# HELP name help\n# TYPE name type\n" */
int metrics_header(struct buf *b, const char *name, const char *type, const char *help);
/* ---- labels ------------------------------------------------------------------
 *
 * The text format (0.0.4) allows three escapes in a label value: \\, \" and
 * \n; every other byte is itself, and the value must be UTF-8. So a label
 * value is written by metrics_label_escape (never log_escape, whose \x22 a
 * scraper rejects), and a value cut to fit is cut at a code point boundary.
 */

/* The length of the longest prefix of s[0..len) that is at most `max` bytes
 * and does not end inside a UTF-8 sequence (a well-formed sequence cut by
 * `max` is left out whole; bytes that are not UTF-8 count one each). */
size_t metrics_utf8_prefix(const char *s, size_t len, size_t max);

/* Writes `value` (NULL: "") escaped as a label value (without the quotes)
 * into out (cap > 0 bytes, always NUL-terminated): \ " and line feed as \\
 * \" \n; a byte that is not part of well-formed UTF-8 as U+FFFD. When the
 * result does not fit in cap - 1 bytes it is cut before the first escape or
 * code point that does not fit. Returns the length written; *cut (may be
 * NULL) is set to whether the value was cut. */
size_t metrics_label_escape(const char *value, char *out, size_t cap, bool *cut);

/* Appends `name="value"` to the label set in out (cap bytes, a C string:
 * "" or earlier labels), with a comma after earlier labels; the value as
 * metrics_label_escape writes it, cut to fit. Returns 0, or -1 when not even
 * `name=""` fits (out unchanged). */
int metrics_label_add(char *out, size_t cap, const char *name, const char *value);

/* "name{labels} value\n"; labels may be NULL or "" */
int metrics_sample(struct buf *b, const char *name, const char *labels, double value);
/* A histogram in seconds: name_bucket{le=...}, name_sum, name_count. */
int metrics_hist_write(struct buf *b, const char *name, const char *labels,
                       const struct metrics_hist *h);

/* The value below which a fraction q (0..1) of the observations counted in
 * bucket[0..METRICS_BUCKETS] (non-cumulative, as metrics_hist keeps them)
 * fall, in seconds, interpolated linearly within the bucket; -1 when the
 * buckets are empty. Observations beyond the last bound count as it. */
double metrics_quantile(const uint64_t bucket[METRICS_BUCKETS + 1], double q);

/* The HTTP server's own counters (requests by status class, connections),
 * as every role's /metrics begins. Returns 0 or -1 (the buffer's cap). */
struct http_server;
int metrics_write_http(struct buf *b, struct http_server *srv);

/* The process-wide memory budget (budget.h): roster_memory_budget_bytes
 * (the limit, 0: none), roster_memory_budget_used_bytes, _peak_bytes and
 * roster_memory_budget_refused_total. Returns 0 or -1 (the buffer's cap). */
int metrics_write_budget(struct buf *b);

/* Replies to GET /metrics with b (Prometheus text), or 500 when `rc` says
 * the exposition could not be written whole. */
struct http_request;
void metrics_reply(struct http_request *req, const struct buf *b, int rc);

#endif
