/* SPDX-License-Identifier: MIT
 *
 * http_upstream.h - a small HTTP/1.1 client for one event loop, for the
 * hottest hop in the system: the apiserver's requests to workers. Plain
 * HTTP over TCP, keep-alive connections pooled per host and port, the
 * response parsed with http-parser (chunked bodies decoded) and handed to
 * the caller as it arrives.
 *
 * Why not libcurl here (DESIGN.md allows it when measured): on this hop
 * libcurl's per-transfer work (handle setup, header formatting and parsing,
 * socket-callback churn) was about a third of the apiserver's CPU;
 * docs/performance.md has the figures. libcurl stays for everything else
 * (https, hosted APIs, the control plane).
 *
 * Errors are reported once, through on_done:
 *   HU_OK        the whole response arrived
 *   HU_CONNECT   no connection (refused, unreachable): nothing was sent
 *   HU_CONNECT_TIMEOUT  no connection within the connect timeout: nothing
 *                was sent. A connection the kernel had completed by then
 *                counts as connected, whenever the loop gets to it (a busy
 *                loop is not the server's fault). Apart from HU_CONNECT
 *                because a server that stays silent to a SYN is often
 *                only one whose accept queue is full (overload), while a
 *                refusal is an answer.
 *   HU_RESET     the connection failed or closed before any response byte
 *                (a reused keep-alive connection that the server had closed
 *                is retried once on a new connection before this is given,
 *                when the failure comes within 200 ms: later, the server
 *                may have worked on it, and it is not sent again)
 *   HU_BROKEN    the connection failed or closed mid-response
 *   HU_PROTOCOL  the response is not valid HTTP
 * Timeouts other than the connect timeout are the caller's (cancel the
 * request from a timer).
 *
 * Hosts: the pool keeps one entry per address (its idle connections), in a
 * hash table keyed by the address bytes (O(1) lookup per request). An entry
 * without a request in flight sits in a most-recently-used list; entries
 * unused for host_idle_ms (default 60 s) are dropped with their idle
 * connections by a timer that runs only while such entries exist, and past
 * max_hosts entries (default 4,096) the least recently used one is dropped
 * to make room. Entries with requests in flight are never dropped, so the
 * table exceeds max_hosts only by addresses with requests in flight (which
 * the caller bounds).
 *
 * Loop thread only, all of it (the parser alone may be used on any thread,
 * one parser per thread).
 */
#ifndef ROSTER_HTTP_UPSTREAM_H
#define ROSTER_HTTP_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>

#include <http_parser.h>

struct event_base;
struct hu_pool;
struct hu_req;

enum hu_result { HU_OK, HU_CONNECT, HU_CONNECT_TIMEOUT, HU_RESET, HU_BROKEN, HU_PROTOCOL };

struct hu_callbacks {
    /* The status line and headers are in. `content_type` is NULL when
     * absent; valid during the call. */
    void (*on_head)(void *arg, int status, const char *content_type);
    /* Body bytes, de-chunked, as they arrive. */
    void (*on_data)(void *arg, const char *p, size_t n);
    /* Optional (may be NULL): the bytes read from the socket at once have
     * all been handed over and more will follow (a place to forward what
     * on_data gathered in one write). Not called before on_done. */
    void (*on_flush)(void *arg);
    /* The end, exactly once (not after hu_cancel). The request is gone
     * when this is called. */
    void (*on_done)(void *arg, enum hu_result r);
    /* Optional (may be NULL): a new connection for this request finished
     * its handshake (the server's accept queue took it). The one callback
     * that may come from inside hu_post: it must only note the fact. */
    void (*on_connected)(void *arg);
};

/* max_idle: idle keep-alive connections kept per host:port. NULL when out
 * of memory. */
struct hu_pool *hu_pool_new(struct event_base *base, int connect_timeout_ms, int max_idle);
/* Closes every idle connection. Cancel the requests still running first
 * (hu_cancel). NULL-safe. */
void hu_pool_free(struct hu_pool *p);

/* Sends "POST path" with `headers` (complete lines "Name: value\r\n", may
 * be empty; Host, Content-Length and Connection are added) and
 * body[0..len) (not copied: it must stay valid until on_done or hu_cancel)
 * to the address `sa` (resolved beforehand, off the loop: no lookup happens
 * here); `hostport` is the Host header's value. Connections are pooled by
 * address. Returns the request, or NULL when out of memory (nothing is
 * called back then). */
struct sockaddr;
struct hu_req *hu_post(struct hu_pool *p, const struct sockaddr *sa, unsigned salen,
                       const char *hostport, const char *path, const char *headers,
                       const char *body, size_t len, const struct hu_callbacks *cb, void *arg);

/* Nothing is ever called back from inside hu_post: the request is written,
 * and any failure reported, from the loop. */

/* Abandons a request: its connection is closed (the server sees the
 * client go away); no callback follows. */
void hu_cancel(struct hu_req *r);

/* Stops reading the response (back-pressure: the TCP window then slows
 * the server) or resumes it. Safe from inside the callbacks. */
void hu_pause(struct hu_req *r, int paused);

/* Time from hu_post to the first response byte, in microseconds (0 before). */
long long hu_ttfb_us(const struct hu_req *r);

/* Limits of the host table (see the top): at most max_hosts entries
 * without a request in flight (>= 1), each dropped after host_idle_ms
 * without a request (>= 1). Takes effect from the next request or sweep. */
void hu_pool_set_limits(struct hu_pool *p, int max_hosts, int host_idle_ms);

/* The host table's figures: entries, hash buckets, and the address
 * comparisons made by lookups so far (tests check that a lookup costs
 * O(1) whatever the size). */
struct hu_pool_stats {
    size_t hosts;
    size_t buckets;
    unsigned long long lookups;
    unsigned long long probes;
    unsigned long long evicted; /* dropped to make room */
    unsigned long long expired; /* dropped after host_idle_ms */
};
void hu_pool_stats(const struct hu_pool *p, struct hu_pool_stats *out);

/* ---- the response parser on its own ---------------------------------------------
 * What each connection feeds the bytes of its socket to: http-parser (the
 * status line, Content-Type kept, chunked bodies decoded, interim 1xx
 * answers skipped), with on_head and on_data called from inside
 * hu_parser_feed (on_flush and on_done never: the connection does that).
 * Public so that tests and tests/fuzz/fuzz_upstream.c drive it without
 * sockets. Embedded by value; no allocation; nothing to clean up. */
enum hu_parse { HU_PARSE_MORE, HU_PARSE_DONE, HU_PARSE_ERROR };

struct hu_parser {
    http_parser hp;
    const struct hu_callbacks *cb; /* on_head and on_data are used */
    void *arg;
    bool muted;     /* set to stop calling back (the request was cancelled) */
    bool complete;  /* the response has ended */
    bool head_done; /* the final response's headers are in */
    /* header capture: only Content-Type matters */
    char field[16];
    size_t flen;
    bool field_done;
    bool in_ct;
    char ct[128]; /* Content-Type, NUL-terminated, cut at 127 bytes */
    size_t ctlen;
};

/* Readies p for one response. */
void hu_parser_init(struct hu_parser *p, const struct hu_callbacks *cb, void *arg);

/* Feeds data[0..n) of the response. *used receives the bytes that belong
 * to it (fewer than n when the response ended before the rest). Returns
 * HU_PARSE_MORE (the response goes on), HU_PARSE_DONE (it has ended: feed
 * no more) or HU_PARSE_ERROR (not valid HTTP). */
enum hu_parse hu_parser_feed(struct hu_parser *p, const char *data, size_t n, size_t *used);

/* The connection ended: HU_PARSE_DONE when that ends the response (a body
 * delimited by the end of the connection), HU_PARSE_ERROR otherwise (cut
 * short). */
enum hu_parse hu_parser_eof(struct hu_parser *p);

/* After HU_PARSE_DONE: the connection may carry another request. */
bool hu_parser_keep_alive(const struct hu_parser *p);

#endif
