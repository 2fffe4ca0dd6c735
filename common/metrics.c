/* SPDX-License-Identifier: MIT
 *
 * metrics.c - see metrics.h.
 */
#include "metrics.h"

#include "budget.h"
#include "http_server.h"

#include <stdio.h>
#include <string.h>

static const double bounds_s[METRICS_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                 0.005,  0.01,    0.025,  0.05,  0.1,
                                                 0.25,   0.5,     1.0,    2.5,   5.0};

void
metrics_hist_observe_us(struct metrics_hist *h, int64_t us)
{
    double s = (double)(us < 0 ? 0 : us) / 1e6;
    int i = 0;

    while (i < METRICS_BUCKETS && s > bounds_s[i]) {
        i++;
    }
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)(us < 0 ? 0 : us), memory_order_relaxed);
}

/* ---- labels ---------------------------------------------------------------- */

/* The length of the well-formed UTF-8 sequence (RFC 3629: no overlong form,
 * no surrogate, nothing past U+10FFFF) at s[0..len), or 0 when there is
 * none there. */
static size_t
utf8_seq(const unsigned char *s, size_t len)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t n;

    if (c < 0x80) {
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if (len < n || s[1] < lo || s[1] > hi) {
        return 0;
    }
    for (size_t i = 2; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0;
        }
    }
    return n;
}

size_t
metrics_utf8_prefix(const char *s, size_t len, size_t max)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        size_t n = utf8_seq(u + i, len - i);
        n = n ? n : 1;
        if (i + n > max) {
            break;
        }
        i += n;
    }
    return i;
}

size_t
metrics_label_escape(const char *value, char *out, size_t cap, bool *cut)
{
    const unsigned char *u = (const unsigned char *)(value ? value : "");
    size_t len = strlen((const char *)u), i = 0, o = 0;
    bool was_cut = false;

    if (cap == 0) {
        if (cut) {
            *cut = len > 0;
        }
        return 0;
    }
    while (i < len) {
        size_t n = utf8_seq(u + i, len - i);
        const char *piece = (const char *)u + i;
        size_t plen = n;
        if (n == 0) {
            piece = "\xEF\xBF\xBD"; /* U+FFFD for a byte that is not UTF-8 */
            plen = 3;
            n = 1;
        } else if (u[i] == '\\') {
            piece = "\\\\";
            plen = 2;
        } else if (u[i] == '"') {
            piece = "\\\"";
            plen = 2;
        } else if (u[i] == '\n') {
            piece = "\\n";
            plen = 2;
        }
        if (o + plen > cap - 1) {
            was_cut = true;
            break;
        }
        memcpy(out + o, piece, plen);
        o += plen;
        i += n;
    }
    out[o] = '\0';
    if (cut) {
        *cut = was_cut;
    }
    return o;
}

int
metrics_label_add(char *out, size_t cap, const char *name, const char *value)
{
    size_t used = strnlen(out, cap), nlen = strlen(name), avail;
    char *p;

    /* [,]name="" and the NUL */
    if (used >= cap || cap - used < (used ? 1 : 0) + nlen + 4) {
        return -1;
    }
    p = out + used;
    if (used) {
        *p++ = ',';
    }
    memcpy(p, name, nlen);
    p += nlen;
    *p++ = '=';
    *p++ = '"';
    avail = cap - (size_t)(p - out); /* >= 2: the closing quote and the NUL */
    p += metrics_label_escape(value, p, avail - 1, NULL);
    *p++ = '"';
    *p = '\0';
    return 0;
}

int
metrics_header(struct buf *b, const char *name, const char *type, const char *help)
{
    return buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

int
metrics_sample(struct buf *b, const char *name, const char *labels, double value)
{
    if (labels && *labels) {
        return buf_printf(b, "%s{%s} %.17g\n", name, labels, value);
    }
    return buf_printf(b, "%s %.17g\n", name, value);
}

int
metrics_hist_write(struct buf *b, const char *name, const char *labels,
                   const struct metrics_hist *h)
{
    const char *sep = labels && *labels ? "," : "";
    const char *lab = labels ? labels : "";
    uint64_t cum = 0;
    int rc = 0;

    for (int i = 0; i <= METRICS_BUCKETS; i++) {
        cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        if (i < METRICS_BUCKETS) {
            rc |= buf_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, lab, sep, bounds_s[i],
                             (unsigned long long)cum);
        } else {
            rc |= buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, lab, sep,
                             (unsigned long long)cum);
        }
    }
    rc |= buf_printf(b, "%s_sum%s%s%s %.6f\n", name, *lab ? "{" : "", lab, *lab ? "}" : "",
                     (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6);
    rc |= buf_printf(b, "%s_count%s%s%s %llu\n", name, *lab ? "{" : "", lab, *lab ? "}" : "",
                     (unsigned long long)atomic_load_explicit(&h->count, memory_order_relaxed));
    return rc ? -1 : 0;
}

double
metrics_quantile(const uint64_t bucket[METRICS_BUCKETS + 1], double q)
{
    uint64_t total = 0, cum = 0;
    double want;

    for (int i = 0; i <= METRICS_BUCKETS; i++) {
        total += bucket[i];
    }
    if (total == 0) {
        return -1;
    }
    want = q * (double)total;
    for (int i = 0; i <= METRICS_BUCKETS; i++) {
        if (bucket[i] == 0 || (double)(cum + bucket[i]) < want) {
            cum += bucket[i];
            continue;
        }
        if (i == METRICS_BUCKETS) {
            return bounds_s[METRICS_BUCKETS - 1];
        }
        double lo = i == 0 ? 0 : bounds_s[i - 1];
        double frac = (want - (double)cum) / (double)bucket[i];
        return lo + (bounds_s[i] - lo) * (frac < 0 ? 0 : frac);
    }
    return bounds_s[METRICS_BUCKETS - 1];
}

static int
counter(struct buf *b, const char *name, const char *help, uint64_t v)
{
    return metrics_header(b, name, "counter", help) | metrics_sample(b, name, NULL, (double)v);
}

int
metrics_write_http(struct buf *b, struct http_server *srv)
{
    struct http_server_stats hs;
    int rc;

    http_server_get_stats(srv, &hs);
    rc = metrics_header(b, "roster_http_requests_total", "counter",
                        "HTTP requests by status class.");
    rc |= metrics_sample(b, "roster_http_requests_total", "class=\"2xx\"", (double)hs.status_2xx);
    rc |= metrics_sample(b, "roster_http_requests_total", "class=\"3xx\"", (double)hs.status_3xx);
    rc |= metrics_sample(b, "roster_http_requests_total", "class=\"4xx\"", (double)hs.status_4xx);
    rc |= metrics_sample(b, "roster_http_requests_total", "class=\"5xx\"", (double)hs.status_5xx);
    rc |= counter(b, "roster_http_connections_total", "Connections accepted.",
                  hs.connections_accepted);
    rc |= counter(b, "roster_http_connections_rejected_total", "Connections refused (too many).",
                  hs.connections_rejected);
    rc |= metrics_header(b, "roster_http_connections_open", "gauge", "Open connections.");
    rc |= metrics_sample(b, "roster_http_connections_open", NULL, (double)hs.connections_open);
    rc |= metrics_header(b, "roster_loop_stall_max_seconds", "gauge",
                         "Longest time an HTTP loop thread could not run its callbacks, since "
                         "start (a 5 ms probe timer's latest firing, over all loops).");
    rc |= metrics_sample(b, "roster_loop_stall_max_seconds", NULL,
                         (double)hs.loop_stall_max_us / 1e6);
    rc |= metrics_header(b, "roster_loop_busy_max_seconds", "gauge",
                         "The most of one such lateness that the loop thread spent running "
                         "(its own long callbacks; excludes waiting for a CPU; a lower bound, "
                         "within 5 ms), since start.");
    rc |=
        metrics_sample(b, "roster_loop_busy_max_seconds", NULL, (double)hs.loop_busy_max_us / 1e6);
    rc |= counter(b, "roster_loop_stalls_total",
                  "Probe timer firings at least 5 ms late (loop stalls), over all loops.",
                  hs.loop_stalls);
    return rc ? -1 : 0;
}

int
metrics_write_budget(struct buf *b)
{
    int rc;

    rc = metrics_header(b, "roster_memory_budget_bytes", "gauge",
                        "--memory_budget_bytes: the most bytes buffered answers and stream "
                        "queues may hold (0: no limit).");
    rc |= metrics_sample(b, "roster_memory_budget_bytes", NULL, (double)budget_limit());
    rc |= metrics_header(b, "roster_memory_budget_used_bytes", "gauge",
                         "Bytes of the memory budget held now.");
    rc |= metrics_sample(b, "roster_memory_budget_used_bytes", NULL, (double)budget_used());
    rc |= metrics_header(b, "roster_memory_budget_peak_bytes", "gauge",
                         "The most bytes of the memory budget ever held at once.");
    rc |= metrics_sample(b, "roster_memory_budget_peak_bytes", NULL, (double)budget_peak());
    rc |= counter(b, "roster_memory_budget_refused_total",
                  "Requests refused (503) or streams ended because the memory budget was spent.",
                  budget_refused());
    return rc ? -1 : 0;
}

void
metrics_reply(struct http_request *req, const struct buf *b, int rc)
{
    if (rc != 0) {
        http_reply_error(req, 500, "server_error", "metrics", "cannot format the metrics");
    } else {
        http_reply(req, 200, "text/plain; version=0.0.4", b->data, b->len, NULL);
    }
}
