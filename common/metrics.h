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

/* Replies to GET /metrics with b (Prometheus text), or 500 when `rc` says
 * the exposition could not be written whole. */
struct http_request;
void metrics_reply(struct http_request *req, const struct buf *b, int rc);

#endif
