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
 *   HU_CONNECT   no connection (refused, unreachable, connect timeout):
 *                nothing was sent
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
 * Loop thread only, all of it.
 */
#ifndef ROSTER_HTTP_UPSTREAM_H
#define ROSTER_HTTP_UPSTREAM_H

#include <stddef.h>

struct event_base;
struct hu_pool;
struct hu_req;

enum hu_result { HU_OK, HU_CONNECT, HU_RESET, HU_BROKEN, HU_PROTOCOL };

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

#endif
