/* SPDX-License-Identifier: MIT
 *
 * http_server.c - see http_server.h.
 *
 * DESIGN
 * Connection states:
 *
 *     IDLE --first byte--> READING --message complete--> HANDLING
 *       ^                    |  (limit, timeout, parse error)   | reply
 *       |                    v                                  v
 *       +--- keep-alive ---------------------------------- (written)
 *                          CLOSING <-- error / not keep-alive --+
 *
 * - IDLE: between requests; the idle timeout (bufferevent read timeout)
 *   closes the connection silently.
 * - READING: http-parser consumes input; the header deadline (a timer from
 *   the first byte to the end of the headers) answers 408; limits answer
 *   413/431; parse errors 400. The parser is paused at the end of each
 *   message, so pipelined requests wait in the input buffer.
 * - HANDLING: the handler owns the request until it replies. Input is still
 *   read (so a disconnect is noticed: the request is then detached and its
 *   on_close callback runs) but not parsed, and the read timeout is off
 *   (long polls).
 * - CLOSING: the response is being written; the connection is freed when
 *   the output buffer drains. End of input outside HANDLING with responses
 *   still queued (a client that half-closed after its requests) also leads
 *   here, so those responses are delivered in full.
 * A connection is freed only from libevent callbacks (never inside
 * process_input), so nothing on the call stack can see it disappear.
 *
 * Requests own their memory: one buffer for the request line and headers
 * (NUL-separated, looked up by offset), one for the body.
 */
#define _GNU_SOURCE 1 /* accept4 flags used by libevent, strcasestr-free */
#include "http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <event2/util.h>
#include <http_parser.h>

#include "buf.h"
#include "json_check.h"
#include "json_write.h"
#include "netaddr.h"
#include "util.h"

#define MAX_HEADERS              64
#define HANDLING_READ_HIGH_WATER (64 * 1024)

enum conn_state { S_IDLE, S_READING, S_HANDLING, S_CLOSING };

struct conn;

struct hdr {
    uint32_t name;  /* offset of the NUL-terminated name in req->head */
    uint32_t value; /* offset of the NUL-terminated value */
};

struct http_request {
    struct conn *conn; /* NULL once the client is gone */
    struct http_loop *loop;
    const struct http_route *route;
    const struct http_service *svc; /* the service of the route (NULL: none matched) */
    struct buf head;                /* URL, then name\0value\0 pairs */
    const char *method;
    uint32_t path_off;
    uint32_t query_off;
    struct hdr hdrs[MAX_HEADERS];
    int nhdrs;
    enum { H_URL, H_FIELD, H_VALUE } hstate;
    struct buf body;
    char id[40];
    int64_t start_us;
    bool keepalive;
    bool is_head;   /* a HEAD whose headers were read: responses carry no body */
    bool streaming; /* http_stream_start ran: chunks until http_stream_end */
    bool chunked;   /* the stream is chunked (HTTP/1.1), else ends with the connection */
    int stream_status;
    size_t stream_bytes;
    void (*on_close)(struct http_request *, void *);
    void *on_close_arg;
    void (*on_drain)(struct http_request *, void *); /* http_req_on_drain */
    void *on_drain_arg;
    size_t drain_low;
    void *data;
    struct http_request *prev, *next; /* loop->pending while HANDLING */
};

struct conn {
    struct http_loop *loop;
    struct bufferevent *bev;
    http_parser parser;
    enum conn_state state;
    struct http_request *req;
    struct event *deadline; /* header deadline */
    bool processing;
    int error_status; /* set by parser callbacks to fail the request */
    const char *error_msg;
    struct sockaddr_storage peer;
    char peer_str[INET6_ADDRSTRLEN + 8];
    struct conn *prev, *next;
};

struct http_loop {
    struct http_server *srv;
    int index;
    struct event_base *base;
    struct evconnlistener *listener;
    pthread_t thread;
    bool started;
    struct conn *conns;
    int nconns;
    struct http_request *pending;
    /* mailbox: tasks posted from other threads */
    pthread_mutex_t mbox_mu;
    struct http_task *mbox_head, *mbox_tail;
    struct event *mbox_ev;
    bool stopped; /* loop has exited: posts run at free time */
    bool draining;
    bool expired; /* the grace period is over: flushing last replies */
    struct event *grace_ev;
    /* cached Date header */
    time_t date_sec;
    char date[64];
    uint64_t req_seq;
    uint64_t id_prefix;
    /* counters (read racily by get_stats) */
    _Atomic uint64_t n_requests, n_2xx, n_3xx, n_4xx, n_5xx, n_accepted, n_rejected;
};

struct http_server {
    struct http_server_config cfg;
    struct http_service svcs[HTTP_MAX_SERVICES];
    int nsvcs;
    evutil_socket_t fd;
    int port;
    int nloops;
    struct http_loop *loops;
    _Atomic int64_t open_conns;
    struct event *sig_ev[2]; /* SIGTERM, SIGINT (http_server_catch_signals) */
    http_signal_fn *sig_fn;
    void *sig_arg;
};

static http_parser_settings parser_settings;

/* ---- small helpers -------------------------------------------------------- */

const char *
http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

static int64_t
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static const char *
loop_date(struct http_loop *loop)
{
    time_t t = time(NULL);

    if (t != loop->date_sec) {
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(loop->date, sizeof(loop->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        loop->date_sec = t;
    }
    return loop->date;
}

static void
count_status(struct http_loop *loop, int status)
{
    atomic_fetch_add_explicit(&loop->n_requests, 1, memory_order_relaxed);
    _Atomic uint64_t *c = status < 300   ? &loop->n_2xx
                          : status < 400 ? &loop->n_3xx
                          : status < 500 ? &loop->n_4xx
                                         : &loop->n_5xx;
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* ---- requests ----------------------------------------------------------- */

static struct http_request *
req_new(struct conn *c)
{
    struct http_server *srv = c->loop->srv;
    struct http_request *req = calloc(1, sizeof(*req));

    if (!req) {
        return NULL;
    }
    req->conn = c;
    req->loop = c->loop;
    buf_init(&req->head, srv->cfg.max_header);
    buf_init(&req->body, srv->cfg.max_body);
    req->hstate = H_URL;
    req->start_us = now_us();
    return req;
}

static void
req_free(struct http_request *req)
{
    if (!req) {
        return;
    }
    buf_cleanup(&req->head);
    buf_cleanup(&req->body);
    free(req);
}

static void
pending_add(struct http_request *req)
{
    struct http_loop *loop = req->loop;

    req->prev = NULL;
    req->next = loop->pending;
    if (loop->pending) {
        loop->pending->prev = req;
    }
    loop->pending = req;
}

static void
pending_remove(struct http_request *req)
{
    struct http_loop *loop = req->loop;

    if (req->prev) {
        req->prev->next = req->next;
    } else if (loop->pending == req) {
        loop->pending = req->next;
    }
    if (req->next) {
        req->next->prev = req->prev;
    }
    req->prev = req->next = NULL;
}

static const char *
head_str(const struct http_request *req, uint32_t off)
{
    return req->head.data + off;
}

const char *
http_req_header(const struct http_request *req, const char *name)
{
    for (int i = 0; i < req->nhdrs; i++) {
        if (strcasecmp(head_str(req, req->hdrs[i].name), name) == 0) {
            return head_str(req, req->hdrs[i].value);
        }
    }
    return NULL;
}

struct http_loop *
http_req_loop(const struct http_request *req)
{
    return req->loop;
}

const char *
http_req_method(const struct http_request *req)
{
    return req->method;
}

const char *
http_req_path(const struct http_request *req)
{
    return head_str(req, req->path_off);
}

const char *
http_req_query(const struct http_request *req)
{
    return head_str(req, req->query_off);
}

const char *
http_req_body(const struct http_request *req, size_t *len_out)
{
    *len_out = req->body.len;
    return buf_str(&req->body);
}

const struct sockaddr *
http_req_peer(const struct http_request *req)
{
    static const struct sockaddr_storage none;

    return req->conn ? (const struct sockaddr *)&req->conn->peer : (const struct sockaddr *)&none;
}

const char *
http_req_peer_str(const struct http_request *req)
{
    return req->conn ? req->conn->peer_str : "-";
}

const char *
http_req_id(const struct http_request *req)
{
    return req->id;
}

unsigned
http_req_route_flags(const struct http_request *req)
{
    return req->route ? req->route->flags : 0;
}

bool
http_req_closed(const struct http_request *req)
{
    return req->conn == NULL;
}

bool
http_req_has_secret(const struct http_request *req, const char *secret)
{
    const char *given = http_req_header(req, "X-Roster-Secret");
    const char *auth = http_req_header(req, "Authorization");

    if (!secret || !*secret) {
        return false;
    }
    if (!given && auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        given = auth + 7;
    }
    return given && util_ct_equal(given, strlen(given), secret, strlen(secret));
}

/* The host[:port] of an origin or a Host header, lower-cased, into out. */
static void
authority_of(const char *v, char *out, size_t cap)
{
    const char *p = strstr(v, "://");
    size_t n = 0;

    p = p ? p + 3 : v;
    for (; *p && *p != '/' && n + 1 < cap; p++) {
        out[n++] = (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
    }
    out[n] = '\0';
}

/* "localhost[:port]", "[::1][:port]" or an IPv4 literal[:port]. */
static bool
host_is_literal(const char *authority)
{
    char host[256];
    const char *colon;
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;

    if (authority[0] == '[') {
        const char *end = strchr(authority, ']');
        if (!end || (size_t)(end - authority - 1) >= sizeof(host)) {
            return false;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(end - authority - 1), authority + 1);
        return inet_pton(AF_INET6, host, &a6.sin6_addr) == 1;
    }
    colon = strchr(authority, ':');
    snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - authority) : (int)strlen(authority),
             authority);
    return strcmp(host, "localhost") == 0 || inet_pton(AF_INET, host, &a4.sin_addr) == 1;
}

bool
http_req_forged_by_browser(const struct http_request *req)
{
    const char *origin = http_req_header(req, "Origin");
    const char *site = http_req_header(req, "Sec-Fetch-Site");
    const char *host = http_req_header(req, "Host");
    char o[256], h[256];

    if (site && strcasecmp(site, "cross-site") == 0) {
        return true;
    }
    if (!origin) {
        return false; /* not a browser, or a browser's same-origin GET */
    }
    if (!host) {
        return true;
    }
    authority_of(origin, o, sizeof(o));
    authority_of(host, h, sizeof(h));
    /* another site's page; or this site reached under another name (DNS
     * rebinding makes an attacker's name point here) */
    return strcmp(o, h) != 0 || !host_is_literal(h);
}

void
http_req_on_close(struct http_request *req, void (*cb)(struct http_request *, void *), void *arg)
{
    req->on_close = cb;
    req->on_close_arg = arg;
}

size_t
http_req_output_pending(const struct http_request *req)
{
    return req->conn ? evbuffer_get_length(bufferevent_get_output(req->conn->bev)) : 0;
}

void
http_req_on_drain(struct http_request *req, size_t low, void (*cb)(struct http_request *, void *),
                  void *arg)
{
    if (!req->conn) {
        return; /* the client is gone: on_close runs instead */
    }
    req->on_drain = cb;
    req->on_drain_arg = arg;
    req->drain_low = low;
    bufferevent_setwatermark(req->conn->bev, EV_WRITE, low, 0);
}

void
http_req_set_data(struct http_request *req, void *data)
{
    req->data = data;
}

void *
http_req_get_data(const struct http_request *req)
{
    return req->data;
}

/* ---- connections -------------------------------------------------------- */

static void process_input(struct conn *c);

static void
conn_free(struct conn *c)
{
    struct http_loop *loop = c->loop;

    if (c->req) {
        if (c->state == S_HANDLING) {
            /* the handler still owns the request: detach it */
            struct http_request *req = c->req;
            req->conn = NULL;
            if (req->on_close) {
                void (*cb)(struct http_request *, void *) = req->on_close;
                req->on_close = NULL;
                cb(req, req->on_close_arg);
            }
        } else {
            req_free(c->req);
        }
        c->req = NULL;
    }
    if (c->deadline) {
        event_free(c->deadline);
    }
    if (c->bev) {
        bufferevent_free(c->bev);
    }
    if (c->prev) {
        c->prev->next = c->next;
    } else if (loop->conns == c) {
        loop->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    loop->nconns--;
    atomic_fetch_sub_explicit(&loop->srv->open_conns, 1, memory_order_relaxed);
    free(c);
    if (loop->draining && loop->nconns == 0) {
        event_base_loopexit(loop->base, NULL);
    }
}

static void
set_read_timeout(struct conn *c, int ms)
{
    struct timeval rtv = {ms / 1000, (ms % 1000) * 1000};
    struct timeval wtv = {c->loop->srv->cfg.write_timeout_ms / 1000,
                          (c->loop->srv->cfg.write_timeout_ms % 1000) * 1000};

    bufferevent_set_timeouts(c->bev, ms > 0 ? &rtv : NULL, &wtv);
}

/* True when the request being answered on `c` is a HEAD: its response has
 * the headers a GET would get (Content-Length included) but no body. */
static bool
answering_head(const struct conn *c)
{
    return c->req && c->req->is_head;
}

/* Writes a status line and headers, and `body` (copied) unless it is NULL
 * or the request is a HEAD. */
static void
write_response(struct conn *c, int status, const char *ctype, const void *body, size_t len,
               const char *extra, bool keepalive, const char *reqid)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    bool http10 = c->parser.http_major == 1 && c->parser.http_minor == 0;

    evbuffer_add_printf(out,
                        "HTTP/1.%d %d %s\r\nDate: %s\r\nContent-Length: %zu\r\n"
                        "Content-Type: %s\r\n",
                        http10 ? 0 : 1, status, http_status_text(status), loop_date(c->loop), len,
                        ctype ? ctype : "application/json");
    if (!keepalive) {
        evbuffer_add(out, "Connection: close\r\n", 19);
    } else if (http10) {
        evbuffer_add(out, "Connection: keep-alive\r\n", 24);
    }
    if (reqid && *reqid) {
        evbuffer_add_printf(out, "X-Request-Id: %s\r\n", reqid);
    }
    if (extra) {
        evbuffer_add(out, extra, strlen(extra));
    }
    evbuffer_add(out, "\r\n", 2);
    if (body && len && !answering_head(c)) {
        evbuffer_add(out, body, len);
    }
}

struct ref_ctx {
    void (*done)(void *);
    void *ctx;
};

static void
ref_cleanup(const void *data, size_t len, void *arg)
{
    struct ref_ctx *r = arg;

    (void)data;
    (void)len;
    r->done(r->ctx);
    free(r);
}

/* Ends the connection after the current output is written. */
static void
close_after_write(struct conn *c)
{
    c->state = S_CLOSING;
    bufferevent_disable(c->bev, EV_READ);
    if (c->deadline) {
        evtimer_del(c->deadline);
    }
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        /* nothing to flush: free from the write callback path */
        bufferevent_trigger(c->bev, EV_WRITE,
                            BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
    }
}

/* A protocol-level failure before a handler ran: JSON error, then close. */
static void
fail_conn(struct conn *c, int status, const char *code, const char *msg)
{
    struct buf b;
    struct jw w;

    buf_init(&b, 4096);
    jw_init(&w, &b);
    jw_raw(&w, "{\"error\":{\"message\":");
    jw_str(&w, msg);
    jw_raw(&w, ",\"type\":\"invalid_request_error\",\"param\":null,\"code\":");
    jw_str(&w, code);
    jw_raw(&w, "}}");
    write_response(c, status, "application/json", b.data, b.len, NULL, false,
                   c->req ? c->req->id : NULL);
    buf_cleanup(&b);
    count_status(c->loop, status);
    if (c->req) {
        req_free(c->req);
        c->req = NULL;
    }
    close_after_write(c);
}

static void
finish_request(struct http_request *req, int status, size_t len)
{
    struct http_server *srv = req->loop->srv;
    struct conn *c = req->conn;
    /* a request no route matched is logged by the first service */
    const struct http_service *svc = req->svc ? req->svc : srv->nsvcs ? &srv->svcs[0] : NULL;

    if (svc && svc->access_log) {
        svc->access_log(req, c ? status : 0, len, now_us() - req->start_us, svc->arg);
    }
    count_status(req->loop, status);
    pending_remove(req);
    if (!c) {
        req_free(req);
        return;
    }
    c->req = NULL;
    if (req->on_drain) {
        bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    }
    bool keepalive = req->keepalive && !req->loop->draining;
    req_free(req);
    if (!keepalive) {
        close_after_write(c);
        return;
    }
    c->state = S_IDLE;
    set_read_timeout(c, srv->cfg.idle_timeout_ms);
    bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
    if (!c->processing) {
        process_input(c); /* pipelined requests waiting in the buffer */
    }
}

void
http_reply_ref(struct http_request *req, int status, const char *content_type, const void *body,
               size_t len, const char *extra_headers, void (*done)(void *ctx), void *ctx)
{
    struct conn *c = req->conn;
    bool keepalive = req->keepalive && !req->loop->draining;

    if (c && answering_head(c)) {
        write_response(c, status, content_type, NULL, len, extra_headers, keepalive, req->id);
        if (done) {
            done(ctx);
        }
    } else if (c) {
        struct ref_ctx *r = done ? malloc(sizeof(*r)) : NULL;
        struct evbuffer *out = bufferevent_get_output(c->bev);
        write_response(c, status, content_type, NULL, len, extra_headers, keepalive, req->id);
        if (r) {
            r->done = done;
            r->ctx = ctx;
            if (evbuffer_add_reference(out, body, len, ref_cleanup, r) != 0) {
                free(r);
                evbuffer_add(out, body, len);
                done(ctx);
            }
        } else {
            evbuffer_add(out, body, len);
            if (done) {
                done(ctx);
            }
        }
    } else if (done) {
        done(ctx);
    }
    finish_request(req, status, len);
}

void
http_stream_start(struct http_request *req, int status, const char *content_type,
                  const char *extra_headers)
{
    struct conn *c = req->conn;

    req->streaming = true;
    req->stream_status = status;
    req->chunked = c && !(c->parser.http_major == 1 && c->parser.http_minor == 0);
    if (!req->chunked) {
        req->keepalive = false; /* HTTP/1.0: the end of the body is the end of the connection */
    }
    if (!c) {
        return;
    }
    struct evbuffer *out = bufferevent_get_output(c->bev);
    bool keepalive = req->keepalive && !req->loop->draining;
    evbuffer_add_printf(out, "HTTP/1.%d %d %s\r\nDate: %s\r\nContent-Type: %s\r\n",
                        req->chunked ? 1 : 0, status, http_status_text(status), loop_date(c->loop),
                        content_type ? content_type : "application/json");
    if (req->chunked) {
        evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28);
    }
    if (!keepalive) {
        evbuffer_add(out, "Connection: close\r\n", 19);
    }
    evbuffer_add_printf(out, "Cache-Control: no-cache\r\nX-Request-Id: %s\r\n", req->id);
    if (extra_headers) {
        evbuffer_add(out, extra_headers, strlen(extra_headers));
    }
    evbuffer_add(out, "\r\n", 2);
}

void
http_stream_write(struct http_request *req, const void *data, size_t len)
{
    struct iovec iov = {(void *)data, len};

    http_stream_writev(req, &iov, 1);
}

void
http_stream_writev(struct http_request *req, const struct iovec *iov, int n)
{
    struct conn *c = req->conn;
    size_t len = 0;

    for (int i = 0; i < n; i++) {
        len += iov[i].iov_len;
    }
    req->stream_bytes += len;
    if (!c || len == 0 || answering_head(c)) {
        return;
    }
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char small[4096];
    size_t k = 0;

    if (req->chunked) {
        /* the chunk's size line, in hex, without printf */
        char hex[20];
        size_t h = sizeof(hex);
        size_t v = len;
        do {
            hex[--h] = "0123456789abcdef"[v & 15];
            v >>= 4;
        } while (v);
        memcpy(small, hex + h, sizeof(hex) - h);
        k = sizeof(hex) - h;
        small[k++] = '\r';
        small[k++] = '\n';
    }
    if (k + len + 2 <= sizeof(small)) {
        /* an SSE event or a token: one copy into the output buffer */
        for (int i = 0; i < n; i++) {
            memcpy(small + k, iov[i].iov_base, iov[i].iov_len);
            k += iov[i].iov_len;
        }
        if (req->chunked) {
            small[k++] = '\r';
            small[k++] = '\n';
        }
        evbuffer_add(out, small, k);
        return;
    }
    evbuffer_add(out, small, k);
    for (int i = 0; i < n; i++) {
        evbuffer_add(out, iov[i].iov_base, iov[i].iov_len);
    }
    if (req->chunked) {
        evbuffer_add(out, "\r\n", 2);
    }
}

void
http_stream_end(struct http_request *req)
{
    struct conn *c = req->conn;

    if (c && req->chunked && !answering_head(c)) {
        evbuffer_add(bufferevent_get_output(c->bev), "0\r\n\r\n", 5);
    }
    finish_request(req, req->stream_status, req->stream_bytes);
}

void
http_reply(struct http_request *req, int status, const char *content_type, const void *body,
           size_t len, const char *extra_headers)
{
    http_reply_ref(req, status, content_type, body, len, extra_headers, NULL, NULL);
}

/* Builds `before` {"error":{"message":<fmt...>,"type":type,"param":null,
 * "code":code}} `after` into b (initialised here). Returns 0, or -1 when
 * it does not fit. */
static int __attribute__((format(printf, 6, 0)))
error_body(struct buf *b, const char *before, const char *after, const char *type, const char *code,
           const char *fmt, va_list ap)
{
    char msg[512];
    struct jw w;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    buf_init(b, 4096);
    jw_init(&w, b);
    jw_raw(&w, before);
    jw_raw(&w, "{\"error\":{\"message\":");
    jw_str(&w, msg);
    jw_raw(&w, ",\"type\":");
    jw_str(&w, type);
    jw_raw(&w, ",\"param\":null,\"code\":");
    jw_str(&w, code);
    jw_raw(&w, "}}");
    jw_raw(&w, after);
    return w.err ? -1 : 0;
}

void
http_reply_error(struct http_request *req, int status, const char *type, const char *code,
                 const char *fmt, ...)
{
    struct buf b;
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = error_body(&b, "", "", type, code, fmt, ap);
    va_end(ap);
    /* 429 and 503 are always worth retrying, a second later or elsewhere */
    http_reply(req, status, "application/json", rc ? "{}" : b.data, rc ? 2 : b.len,
               status == 429 || status == 503 ? "Retry-After: 1\r\n" : NULL);
    buf_cleanup(&b);
}

void
http_stream_error(struct http_request *req, const char *code, const char *fmt, ...)
{
    struct buf b;
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = error_body(&b, "data: ", "\n\n", "server_error", code, fmt, ap);
    va_end(ap);
    if (rc == 0) {
        http_stream_write(req, b.data, b.len);
    }
    buf_cleanup(&b);
    http_stream_end(req);
}

/* ---- parsing -------------------------------------------------------------- */

static int
parse_fail(struct conn *c, int status, const char *msg)
{
    c->error_status = status;
    c->error_msg = msg;
    return -1;
}

static int
on_message_begin(http_parser *p)
{
    struct conn *c = p->data;

    c->req = req_new(c);
    if (!c->req) {
        return parse_fail(c, 503, "out of memory");
    }
    return 0;
}

static int
head_append(struct conn *c, const char *at, size_t len)
{
    if (buf_append(&c->req->head, at, len) != 0) {
        return parse_fail(c, 431, "request line and headers too large");
    }
    return 0;
}

static int
head_end_piece(struct conn *c)
{
    return head_append(c, "", 1); /* the NUL that ends a URL, name or value */
}

static int
on_url(http_parser *p, const char *at, size_t len)
{
    return head_append(p->data, at, len);
}

/* RFC 9110 5.6.2 token character. */
static bool
is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static int
on_header_field(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    struct http_request *req = c->req;

    /* http-parser (not built strict) lets spaces into a name; RFC 9112 5.1
     * says "Content-Length : 5" must be a 400, not a second opinion on
     * framing that a proxy in front may not share. */
    for (size_t i = 0; i < len; i++) {
        if (!is_tchar((unsigned char)at[i])) {
            return parse_fail(c, 400, "invalid character in header field name");
        }
    }
    if (req->hstate != H_FIELD) {
        if (head_end_piece(c) != 0) {
            return -1;
        }
        if (req->nhdrs == MAX_HEADERS) {
            return parse_fail(c, 431, "too many header fields");
        }
        req->hdrs[req->nhdrs++].name = (uint32_t)req->head.len;
        req->hstate = H_FIELD;
    }
    return head_append(c, at, len);
}

static int
on_header_value(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    struct http_request *req = c->req;

    if (req->hstate != H_VALUE) {
        if (head_end_piece(c) != 0) {
            return -1;
        }
        req->hdrs[req->nhdrs - 1].value = (uint32_t)req->head.len;
        req->hstate = H_VALUE;
    }
    return head_append(c, at, len);
}

static bool
valid_request_id(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++) {
        char ch = s[n];
        if (n >= 36 || !((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                         (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.')) {
            return false;
        }
    }
    return n > 0;
}

static int
on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;
    struct http_request *req = c->req;
    struct http_server *srv = c->loop->srv;
    const char *expect;
    const char *rid;
    char *q;

    /* First, so that every response to a HEAD whose head was read (errors
     * included) goes without a body. A request that fails earlier gets its
     * error body: the connection closes after it, so nothing desyncs. */
    req->is_head = p->method == HTTP_HEAD;
    if (req->hstate == H_FIELD) {
        /* a field without a value callback: an empty value */
        if (head_end_piece(c) != 0) {
            return -1;
        }
        req->hdrs[req->nhdrs - 1].value = (uint32_t)req->head.len;
    }
    if (head_end_piece(c) != 0) {
        return -1;
    }
    for (int i = 0; i < req->nhdrs; i++) {
        if (req->hdrs[i].value == 0) {
            req->hdrs[i].value = (uint32_t)req->head.len - 1; /* "" */
        }
    }
    if (c->deadline) {
        evtimer_del(c->deadline);
    }
    req->method = http_method_str((enum http_method)p->method);
    /* split the URL into path and query (in place) */
    req->path_off = 0;
    q = strchr(req->head.data, '?');
    if (q) {
        *q = '\0';
        req->query_off = (uint32_t)(q + 1 - req->head.data);
    } else {
        req->query_off = (uint32_t)strlen(req->head.data); /* "" */
    }
    if (p->upgrade) {
        return parse_fail(c, 400, "protocol upgrade is not supported");
    }
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > srv->cfg.max_body) {
        return parse_fail(c, 413, "request body too large");
    }
    rid = http_req_header(req, "X-Request-Id");
    if (rid && valid_request_id(rid)) {
        util_strlcpy(req->id, rid, sizeof(req->id));
    } else {
        snprintf(req->id, sizeof(req->id), "%08x%08x",
                 (unsigned)(c->loop->id_prefix ^ (uint64_t)c->loop->index),
                 (unsigned)++c->loop->req_seq);
    }
    expect = http_req_header(req, "Expect");
    if (expect && strcasecmp(expect, "100-continue") == 0 && p->http_minor >= 1) {
        evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
    return 0;
}

static int
on_body(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;

    if (buf_append(&c->req->body, at, len) != 0) {
        return parse_fail(c, 413, "request body too large");
    }
    return 0;
}

static int
on_message_complete(http_parser *p)
{
    struct conn *c = p->data;

    c->req->keepalive = http_should_keep_alive(p) != 0;
    http_parser_pause(p, 1);
    return 0;
}

/* ---- dispatch ------------------------------------------------------------- */

/* A route's path matches exactly, or, ending in '*', as a prefix followed
 * by at least one byte. */
static bool
route_matches(const char *pattern, const char *path)
{
    size_t n = strlen(pattern);

    if (n > 0 && pattern[n - 1] == '*') {
        return strncmp(pattern, path, n - 1) == 0 && path[n - 1] != '\0';
    }
    return strcmp(pattern, path) == 0;
}

static void
dispatch(struct conn *c)
{
    struct http_server *srv = c->loop->srv;
    struct http_request *req = c->req;
    const struct http_route *match = NULL;
    const struct http_service *svc = NULL;
    bool path_known = false;
    char allow[128] = "";
    char allow_hdr[160];

    c->state = S_HANDLING;
    set_read_timeout(c, 0);
    bufferevent_setwatermark(c->bev, EV_READ, 0, HANDLING_READ_HIGH_WATER);
    pending_add(req);
    /* the first service (in mount order) with a route for the path and
     * method wins; the others' routes for the path only feed Allow */
    for (int i = 0; i < srv->nsvcs && !match; i++) {
        for (const struct http_route *r = srv->svcs[i].routes; r->path; r++) {
            if (!route_matches(r->path, http_req_path(req))) {
                continue;
            }
            path_known = true;
            if (strcmp(r->method, req->method) == 0) {
                match = r;
                svc = &srv->svcs[i];
                break;
            }
            size_t used = strlen(allow);
            if (!strstr(allow, r->method)) {
                snprintf(allow + used, sizeof(allow) - used, "%s%s", used ? ", " : "", r->method);
            }
        }
    }
    if (!match) {
        if (path_known) {
            snprintf(allow_hdr, sizeof(allow_hdr), "Allow: %s\r\n", allow);
            static const char body[] =
                "{\"error\":{\"message\":\"method not allowed\",\"type\":"
                "\"invalid_request_error\",\"param\":null,\"code\":\"method_not_allowed\"}}";
            http_reply(req, 405, "application/json", body, sizeof(body) - 1, allow_hdr);
        } else {
            /* the path goes into JSON: whole UTF-8 characters only */
            const char *path = http_req_path(req);
            size_t n = strnlen(path, 200);
            while (n > 0 && ((unsigned char)path[n] & 0xc0) == 0x80) {
                n--;
            }
            if (json_utf8_valid(path, n)) {
                http_reply_error(req, 404, "invalid_request_error", "not_found",
                                 "no such path: %.*s", (int)n, path);
            } else {
                http_reply_error(req, 404, "invalid_request_error", "not_found",
                                 "no such path (not UTF-8)");
            }
        }
        return;
    }
    req->route = match;
    req->svc = svc;
    if (svc->guard && !svc->guard(req, svc->arg)) {
        return;
    }
    match->handler(req, svc->arg);
}

static void
process_input(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);

    c->processing = true;
    while (c->state == S_IDLE || c->state == S_READING) {
        struct evbuffer_iovec v;
        enum http_errno e;
        size_t n;

        if (evbuffer_get_length(in) == 0 || evbuffer_peek(in, -1, NULL, &v, 1) < 1) {
            break;
        }
        if (c->state == S_IDLE) {
            struct http_server *srv = c->loop->srv;
            struct timeval tv = {srv->cfg.header_timeout_ms / 1000,
                                 (srv->cfg.header_timeout_ms % 1000) * 1000};
            c->state = S_READING;
            set_read_timeout(c, srv->cfg.idle_timeout_ms);
            evtimer_add(c->deadline, &tv);
        }
        n = http_parser_execute(&c->parser, &parser_settings, v.iov_base, v.iov_len);
        e = HTTP_PARSER_ERRNO(&c->parser);
        evbuffer_drain(in, n);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            dispatch(c);
            continue;
        }
        if (e != HPE_OK) {
            if (c->error_status) {
                fail_conn(c, c->error_status,
                          c->error_status == 413   ? "body_too_large"
                          : c->error_status == 431 ? "headers_too_large"
                                                   : "bad_request",
                          c->error_msg);
            } else {
                char msg[160];
                snprintf(msg, sizeof(msg), "malformed HTTP request: %s", http_errno_description(e));
                fail_conn(c, 400, "bad_request", msg);
            }
            break;
        }
    }
    c->processing = false;
}

/* ---- libevent callbacks ------------------------------------------------- */

static void
on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    (void)bev;
    if (c->state == S_IDLE || c->state == S_READING) {
        process_input(c);
    }
    /* HANDLING: the bytes wait (pipelining); CLOSING: reading is off */
}

static void
on_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct http_request *req = c->req;

    if (req && req->on_drain &&
        evbuffer_get_length(bufferevent_get_output(bev)) <= req->drain_low) {
        void (*cb)(struct http_request *, void *) = req->on_drain;
        req->on_drain = NULL;
        bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
        cb(req, req->on_drain_arg);
        return;
    }
    if (c->state == S_CLOSING && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        conn_free(c);
    }
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;

    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) && c->state == S_READING) {
        fail_conn(c, 408, "request_timeout", "timed out reading the request");
        return;
    }
    if ((what & BEV_EVENT_EOF) && c->state != S_HANDLING &&
        evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
        /* The client half-closed (shutdown(SHUT_WR) after its requests) but
         * may still read: send what is queued, then close. (HANDLING keeps
         * treating EOF as a disconnect: see the DESIGN note.) */
        close_after_write(c);
        return;
    }
    conn_free(c); /* EOF, error, idle or write timeout */
}

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd;
    (void)what;
    if (c->state == S_READING) {
        fail_conn(c, 408, "request_timeout", "timed out waiting for the request headers");
    }
}

static void
reject_connection(evutil_socket_t fd)
{
#define TOO_MANY                                                                                   \
    "{\"error\":{\"message\":\"too many connections\",\"type\":\"server_error\","                  \
    "\"param\":null,\"code\":\"too_many_connections\"}}"
    char resp[512];
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                     "Retry-After: 1\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s",
                     sizeof(TOO_MANY) - 1, TOO_MANY);
    ssize_t r = send(fd, resp, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);

    (void)r;
    evutil_closesocket(fd);
}

/* Sets up a connection on `loop` for the connected socket `fd` (owned from
 * here on: closed on failure). Shared by on_accept and http_server_adopt. */
static int
conn_setup(struct http_loop *loop, evutil_socket_t fd, const struct sockaddr *sa, size_t salen)
{
    struct http_server *srv = loop->srv;
    struct conn *c;
    int one = 1;

    c = calloc(1, sizeof(*c));
    if (!c) {
        evutil_closesocket(fd);
        return -1;
    }
    c->loop = loop;
    c->bev = bufferevent_socket_new(loop->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->deadline = evtimer_new(loop->base, on_deadline, c);
    if (!c->bev || !c->deadline) {
        if (c->bev) {
            bufferevent_free(c->bev);
        } else {
            evutil_closesocket(fd);
        }
        if (c->deadline) {
            event_free(c->deadline);
        }
        free(c);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    memcpy(&c->peer, sa, salen < sizeof(c->peer) ? salen : sizeof(c->peer));
    netaddr_format((const struct sockaddr *)&c->peer, c->peer_str, sizeof(c->peer_str));
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->state = S_IDLE;
    c->next = loop->conns;
    if (loop->conns) {
        loop->conns->prev = c;
    }
    loop->conns = c;
    loop->nconns++;
    atomic_fetch_add_explicit(&srv->open_conns, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&loop->n_accepted, 1, memory_order_relaxed);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    set_read_timeout(c, srv->cfg.idle_timeout_ms);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    return 0;
}

static void
on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct http_loop *loop = arg;
    struct http_server *srv = loop->srv;

    (void)l;
    if (atomic_load_explicit(&srv->open_conns, memory_order_relaxed) >= srv->cfg.max_connections ||
        loop->draining) {
        atomic_fetch_add_explicit(&loop->n_rejected, 1, memory_order_relaxed);
        reject_connection(fd);
        return;
    }
    (void)conn_setup(loop, fd, sa, salen > 0 ? (size_t)salen : 0);
}

int
http_server_adopt(struct http_server *srv, int loop_index, int fd)
{
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);

    if (loop_index < 0 || loop_index >= srv->nloops) {
        evutil_closesocket(fd);
        return -1;
    }
    memset(&ss, 0, sizeof(ss));
    if (getpeername(fd, (struct sockaddr *)&ss, &sslen) != 0) {
        sslen = 0;
    }
    if (evutil_make_socket_nonblocking(fd) != 0) {
        evutil_closesocket(fd);
        return -1;
    }
    return conn_setup(&srv->loops[loop_index], fd, (const struct sockaddr *)&ss, sslen);
}

static void
on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    struct http_loop *loop = arg;

    (void)fd;
    (void)what;
    if (!loop->draining) {
        evconnlistener_enable(loop->listener);
    }
}

static void
on_accept_error(struct evconnlistener *l, void *arg)
{
    struct http_loop *loop = arg;
    struct timeval tv = {0, 100000};

    /* EMFILE and friends: pause accepting briefly instead of spinning */
    evconnlistener_disable(l);
    event_base_once(loop->base, -1, EV_TIMEOUT, on_accept_resume, loop, &tv);
}

/* ---- loops ------------------------------------------------------------- */

static void
run_tasks(struct http_loop *loop)
{
    struct http_task *t;

    pthread_mutex_lock(&loop->mbox_mu);
    t = loop->mbox_head;
    loop->mbox_head = loop->mbox_tail = NULL;
    pthread_mutex_unlock(&loop->mbox_mu);
    while (t) {
        struct http_task *next = t->next;
        t->next = NULL;
        t->fn(t); /* may free t */
        t = next;
    }
}

static void
on_mailbox(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    run_tasks(arg);
}

void
http_loop_post(struct http_loop *loop, struct http_task *t)
{
    bool wake;

    t->next = NULL;
    pthread_mutex_lock(&loop->mbox_mu);
    wake = loop->mbox_head == NULL && !loop->stopped;
    if (loop->mbox_tail) {
        loop->mbox_tail->next = t;
    } else {
        loop->mbox_head = t;
    }
    loop->mbox_tail = t;
    pthread_mutex_unlock(&loop->mbox_mu);
    if (wake) {
        event_active(loop->mbox_ev, EV_READ, 0);
    }
}

struct event_base *
http_loop_base(struct http_loop *loop)
{
    return loop->base;
}

int
http_loop_index(const struct http_loop *loop)
{
    return loop->index;
}

bool
http_loop_draining(const struct http_loop *loop)
{
    return loop->draining;
}

/* The grace period is over: the application answers what is still in
 * flight (on_expire), then the loop gives those last replies up to
 * FLUSH_MS to leave before it stops. */
#define FLUSH_MS 200
static void
on_grace_expired(evutil_socket_t fd, short what, void *arg)
{
    struct http_loop *loop = arg;
    struct http_server *srv = loop->srv;
    struct timeval tv = {0, FLUSH_MS * 1000};

    (void)fd;
    (void)what;
    if (!loop->expired) {
        loop->expired = true;
        for (int i = 0; i < srv->nsvcs; i++) {
            if (srv->svcs[i].on_expire) {
                srv->svcs[i].on_expire(loop, srv->svcs[i].arg);
            }
        }
        if (loop->nconns > 0) {
            evtimer_add(loop->grace_ev, &tv);
            return;
        }
    }
    event_base_loopexit(loop->base, NULL);
}

/* Runs on each loop thread when shutdown begins. */
static void
begin_drain(struct http_loop *loop, int grace)
{
    struct http_server *srv = loop->srv;
    struct timeval tv = {grace / 1000, (grace % 1000) * 1000};
    struct conn *next;

    if (loop->draining) {
        if (grace == 0) {
            event_base_loopexit(loop->base, NULL);
        }
        return;
    }
    loop->draining = true;
    evconnlistener_disable(loop->listener);
    for (int i = 0; i < srv->nsvcs; i++) {
        if (srv->svcs[i].on_drain) {
            srv->svcs[i].on_drain(loop, srv->svcs[i].arg);
        }
    }
    for (struct conn *c = loop->conns; c; c = next) {
        next = c->next;
        if (c->state == S_IDLE && evbuffer_get_length(bufferevent_get_input(c->bev)) == 0) {
            conn_free(c);
        }
    }
    if (loop->nconns == 0 || grace == 0) {
        event_base_loopexit(loop->base, NULL);
        return;
    }
    loop->grace_ev = evtimer_new(loop->base, on_grace_expired, loop);
    if (loop->grace_ev) {
        evtimer_add(loop->grace_ev, &tv);
    }
}

struct drain_task {
    struct http_task task;
    struct http_loop *loop;
    int grace_ms; /* each call's own: a later "at once" is never lost */
};

static void
on_drain_task(struct http_task *t)
{
    struct drain_task *d = (struct drain_task *)t;

    begin_drain(d->loop, d->grace_ms);
    free(d);
}

void
http_server_shutdown(struct http_server *srv, int grace_ms)
{
    for (int i = 0; i < srv->nloops; i++) {
        struct drain_task *d = calloc(1, sizeof(*d));
        if (!d) {
            event_base_loopexit(srv->loops[i].base, NULL);
            continue;
        }
        d->task.fn = on_drain_task;
        d->loop = &srv->loops[i];
        d->grace_ms = grace_ms;
        http_loop_post(&srv->loops[i], &d->task);
    }
}

static void *
loop_main(void *arg)
{
    struct http_loop *loop = arg;
    struct http_server *srv = loop->srv;

    for (int i = 0; i < srv->nsvcs; i++) {
        if (srv->svcs[i].on_start) {
            srv->svcs[i].on_start(loop, srv->svcs[i].arg);
        }
    }
    event_base_dispatch(loop->base);
    pthread_mutex_lock(&loop->mbox_mu);
    loop->stopped = true;
    pthread_mutex_unlock(&loop->mbox_mu);
    return NULL;
}

int
http_server_run(struct http_server *srv)
{
    for (int i = 1; i < srv->nloops; i++) {
        if (pthread_create(&srv->loops[i].thread, NULL, loop_main, &srv->loops[i]) == 0) {
            srv->loops[i].started = true;
        }
    }
    loop_main(&srv->loops[0]);
    for (int i = 1; i < srv->nloops; i++) {
        if (srv->loops[i].started) {
            pthread_join(srv->loops[i].thread, NULL);
            srv->loops[i].started = false;
        }
    }
    return 0;
}

static int
listen_socket(const struct http_server_config *cfg, evutil_socket_t *fd_out, int *port_out,
              char *err, size_t errcap)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    evutil_socket_t fd;
    int one = 1;

    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, cfg->host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)cfg->port);
        sslen = sizeof(*in4);
    } else if (inet_pton(AF_INET6, cfg->host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)cfg->port);
        sslen = sizeof(*in6);
    } else {
        snprintf(err, errcap, "bad listen address '%s' (need a numeric IPv4 or IPv6 address)",
                 cfg->host);
        return -1;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errcap, "socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sslen) != 0 || listen(fd, 1024) != 0) {
        snprintf(err, errcap, "cannot listen on %s port %d: %s", cfg->host, cfg->port,
                 strerror(errno));
        close(fd);
        return -1;
    }
    sslen = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sslen);
    *port_out = ntohs(ss.ss_family == AF_INET6 ? in6->sin6_port : in4->sin_port);
    *fd_out = fd;
    return 0;
}

static void
init_parser_settings(void)
{
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_url = on_url;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;
}

static void
on_os_signal(evutil_socket_t signo, short what, void *arg)
{
    struct http_server *srv = arg;

    (void)what;
    srv->sig_fn((int)signo, srv->sig_arg);
}

int
http_server_catch_signals(struct http_server *srv, http_signal_fn *fn, void *arg)
{
    struct event_base *base = srv->loops[0].base;
    static const int signos[2] = {SIGTERM, SIGINT};

    srv->sig_fn = fn;
    srv->sig_arg = arg;
    for (int i = 0; i < 2; i++) {
        srv->sig_ev[i] = evsignal_new(base, signos[i], on_os_signal, srv);
        if (!srv->sig_ev[i] || evsignal_add(srv->sig_ev[i], NULL) != 0) {
            return -1;
        }
    }
    return 0;
}

int
http_server_new(const struct http_server_config *cfg, struct http_server **out, char *err,
                size_t errcap)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    struct http_server *srv = calloc(1, sizeof(*srv));
    uint64_t prefix;

    *out = NULL;
    if (!srv) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    pthread_once(&once, init_parser_settings);
    evthread_use_pthreads();
    srv->cfg = *cfg;
    srv->cfg.host = cfg->host && *cfg->host ? cfg->host : "127.0.0.1";
    srv->cfg.threads = cfg->threads > 0 ? cfg->threads : 1;
    srv->cfg.max_body = cfg->max_body ? cfg->max_body : 1024 * 1024;
    srv->cfg.max_header = cfg->max_header ? cfg->max_header : 16 * 1024;
    srv->cfg.max_connections = cfg->max_connections > 0 ? cfg->max_connections : 4096;
    srv->cfg.header_timeout_ms = cfg->header_timeout_ms > 0 ? cfg->header_timeout_ms : 10000;
    srv->cfg.idle_timeout_ms = cfg->idle_timeout_ms > 0 ? cfg->idle_timeout_ms : 60000;
    srv->cfg.write_timeout_ms = cfg->write_timeout_ms > 0 ? cfg->write_timeout_ms : 30000;
    srv->fd = -1;
    if (listen_socket(&srv->cfg, &srv->fd, &srv->port, err, errcap) != 0) {
        http_server_free(srv);
        return -1;
    }
    srv->nloops = srv->cfg.threads;
    srv->loops = calloc((size_t)srv->nloops, sizeof(*srv->loops));
    if (!srv->loops) {
        snprintf(err, errcap, "out of memory");
        http_server_free(srv);
        return -1;
    }
    util_random_bytes(&prefix, sizeof(prefix));
    for (int i = 0; i < srv->nloops; i++) {
        struct http_loop *loop = &srv->loops[i];
        loop->srv = srv;
        loop->index = i;
        loop->id_prefix = prefix;
        pthread_mutex_init(&loop->mbox_mu, NULL);
        loop->base = event_base_new();
        loop->mbox_ev = loop->base ? event_new(loop->base, -1, 0, on_mailbox, loop) : NULL;
        loop->listener = loop->base ? evconnlistener_new(loop->base, on_accept, loop,
                                                         LEV_OPT_CLOSE_ON_EXEC, -1, srv->fd)
                                    : NULL;
        if (!loop->base || !loop->mbox_ev || !loop->listener) {
            snprintf(err, errcap, "cannot set up event loop %d", i);
            http_server_free(srv);
            return -1;
        }
        evconnlistener_set_error_cb(loop->listener, on_accept_error);
    }
    *out = srv;
    return 0;
}

int
http_server_mount(struct http_server *srv, const struct http_service *svc)
{
    if (srv->nsvcs == HTTP_MAX_SERVICES || !svc->routes) {
        return -1;
    }
    srv->svcs[srv->nsvcs++] = *svc;
    return 0;
}

int
http_server_port(const struct http_server *srv)
{
    return srv->port;
}

int
http_server_nloops(const struct http_server *srv)
{
    return srv->nloops;
}

struct http_loop *
http_server_loop(struct http_server *srv, int i)
{
    return &srv->loops[i];
}

void
http_server_get_stats(struct http_server *srv, struct http_server_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < srv->nloops; i++) {
        struct http_loop *l = &srv->loops[i];
        out->requests += atomic_load_explicit(&l->n_requests, memory_order_relaxed);
        out->status_2xx += atomic_load_explicit(&l->n_2xx, memory_order_relaxed);
        out->status_3xx += atomic_load_explicit(&l->n_3xx, memory_order_relaxed);
        out->status_4xx += atomic_load_explicit(&l->n_4xx, memory_order_relaxed);
        out->status_5xx += atomic_load_explicit(&l->n_5xx, memory_order_relaxed);
        out->connections_accepted += atomic_load_explicit(&l->n_accepted, memory_order_relaxed);
        out->connections_rejected += atomic_load_explicit(&l->n_rejected, memory_order_relaxed);
    }
    out->connections_open = atomic_load_explicit(&srv->open_conns, memory_order_relaxed);
}

void
http_server_free(struct http_server *srv)
{
    if (!srv) {
        return;
    }
    for (int i = 0; i < 2; i++) {
        if (srv->sig_ev[i]) {
            event_free(srv->sig_ev[i]);
        }
    }
    for (int i = 0; srv->loops && i < srv->nloops; i++) {
        struct http_loop *loop = &srv->loops[i];
        pthread_mutex_lock(&loop->mbox_mu);
        loop->stopped = true;
        pthread_mutex_unlock(&loop->mbox_mu);
        if (loop->base) {
            run_tasks(loop); /* tasks posted after the loop stopped */
        }
        while (loop->conns) {
            loop->draining = false; /* no loopexit from conn_free now */
            conn_free(loop->conns);
        }
        while (loop->pending) {
            struct http_request *req = loop->pending;
            pending_remove(req);
            req_free(req);
        }
        if (loop->grace_ev) {
            event_free(loop->grace_ev);
        }
        if (loop->listener) {
            evconnlistener_free(loop->listener);
        }
        if (loop->mbox_ev) {
            event_free(loop->mbox_ev);
        }
        if (loop->base) {
            event_base_free(loop->base);
        }
        pthread_mutex_destroy(&loop->mbox_mu);
    }
    free(srv->loops);
    if (srv->fd >= 0) {
        close(srv->fd);
    }
    free(srv);
}
