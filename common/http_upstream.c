/* SPDX-License-Identifier: MIT
 *
 * http_upstream.c - see http_upstream.h.
 *
 * A connection is a non-blocking socket with two events of its own: one
 * persistent read event (kept while the connection idles in its host's
 * list, so that a server closing it is noticed and the connection dropped)
 * and a write event armed only while connecting or when the socket is full.
 * Reads go straight from the socket into the parser, with no intermediate
 * buffer (libevent's bufferevents size every read with ioctl(FIONREAD) and
 * arm and disarm events per write); a request is written with one writev
 * of its head and the caller's body. The parser is paused at the end of
 * each response; completion, the return to the pool and every callback
 * that may free things run after the parser has returned, never inside it.
 * A cancel requested from inside a callback is deferred the same way.
 */
#include "http_upstream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <errno.h>
#include <limits.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <http_parser.h>

struct hu_host {
    struct sockaddr_storage sa;
    unsigned salen;
    struct hu_conn *idle; /* most recently used first */
    int nidle;
    struct hu_host *next;
};

struct hu_conn {
    struct hu_pool *pool;
    struct hu_host *host;
    int fd;
    struct event rev;  /* readable: the answer, or an idle connection closing */
    struct event wev;  /* writable: connect done, or room for the rest of a request */
    bool rev_on;       /* rev is added (off while paused) */
    int connect_err;   /* a connect that failed at once, reported from wev */
    bool write_failed; /* a write failed, reported from wev */
    http_parser parser;
    struct hu_req *req; /* NULL while idle */
    size_t sent;        /* bytes of the request written */
    bool connected;
    bool reused; /* has completed a response before */
    bool parsing;
    bool complete;  /* the current response has ended */
    bool extra;     /* bytes came after the end of the response */
    bool head_done; /* the final response's headers are in */
    /* header capture: only Content-Type matters */
    char field[16];
    size_t flen;
    bool field_done;
    bool in_ct;
    char ct[128];
    size_t ctlen;
    struct hu_conn *next; /* in the host's idle list */
};

struct hu_req {
    struct hu_pool *pool;
    struct hu_conn *conn;
    struct hu_host *host;
    const struct hu_callbacks *cb;
    void *arg;
    char *head; /* request line and headers */
    size_t headlen;
    const char *body;
    size_t len;
    bool got_byte;
    bool retried;
    bool cancelled; /* asked while its connection was parsing */
    long long start_us, ttfb_us;
};

struct hu_pool {
    struct event_base *base;
    int connect_timeout_ms;
    int max_idle;
    struct hu_host *hosts;
};

static http_parser_settings settings;

/* A reused connection that fails this soon after the request was handed
 * over is taken for one the server had closed while it idled (it cannot
 * have worked on the request yet); later, the failure is the request's. */
#define RETRY_WINDOW_US 200000

static long long
mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- connections ------------------------------------------------------------ */

static void
conn_free(struct hu_conn *c)
{
    event_del(&c->rev);
    event_del(&c->wev);
    if (c->fd >= 0) {
        close(c->fd);
    }
    free(c);
}

static void
idle_remove(struct hu_conn *c)
{
    struct hu_host *h = c->host;

    for (struct hu_conn **p = &h->idle; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            h->nidle--;
            return;
        }
    }
}

static void on_readable(evutil_socket_t fd, short what, void *arg);
static void on_writable(evutil_socket_t fd, short what, void *arg);

static struct hu_conn *
conn_new(struct hu_pool *p, struct hu_host *h)
{
    struct hu_conn *c = calloc(1, sizeof(*c));
    struct timeval tv = {p->connect_timeout_ms / 1000, (p->connect_timeout_ms % 1000) * 1000};
    int one = 1;

    if (!c) {
        return NULL;
    }
    c->pool = p;
    c->host = h;
    c->fd = socket(h->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        free(c);
        return NULL;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    event_assign(&c->rev, p->base, c->fd, EV_READ | EV_PERSIST, on_readable, c);
    event_assign(&c->wev, p->base, c->fd, EV_WRITE, on_writable, c);
    if (connect(c->fd, (struct sockaddr *)&h->sa, h->salen) == 0) {
        c->connected = true;
    } else if (errno != EINPROGRESS) {
        c->connect_err = errno ? errno : ECONNREFUSED;
        event_active(&c->wev, EV_WRITE, 0); /* reported from the loop, not from here */
        return c;
    }
    event_add(&c->wev, c->connected ? NULL : &tv);
    return c;
}

/* ---- requests ------------------------------------------------------------------- */

static void
req_free(struct hu_req *r)
{
    free(r->head);
    free(r);
}

static void fail(struct hu_conn *c);

/* Writes what is left of the request; waits for room when the socket is
 * full. Returns 0, or -1 after failing the connection. */
static int
flush_out(struct hu_conn *c)
{
    struct hu_req *r = c->req;

    while (r && c->sent < r->headlen + r->len) {
        struct iovec iov[2];
        int n = 0;
        if (c->sent < r->headlen) {
            iov[n++] = (struct iovec){r->head + c->sent, r->headlen - c->sent};
        }
        size_t boff = c->sent > r->headlen ? c->sent - r->headlen : 0;
        if (r->len > boff) {
            iov[n++] = (struct iovec){(void *)(r->body + boff), r->len - boff};
        }
        ssize_t w = writev(c->fd, iov, n);
        if (w > 0) {
            c->sent += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            event_add(&c->wev, NULL);
            return 0;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else {
            /* reported from the loop (on_writable): this may be inside
             * hu_post, which must never call back */
            c->write_failed = true;
            event_active(&c->wev, EV_WRITE, 0);
            return -1;
        }
    }
    return 0;
}

/* Puts the request on connection c and, once connected, writes it. */
static void
req_start(struct hu_req *r, struct hu_conn *c)
{
    r->conn = c;
    c->req = r;
    c->sent = 0;
    c->complete = c->extra = c->head_done = false;
    c->flen = c->ctlen = 0;
    c->field_done = c->in_ct = false;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    if (!c->rev_on) {
        event_add(&c->rev, NULL);
        c->rev_on = true;
    }
    if (c->connected) {
        (void)flush_out(c); /* a failure is reported from the loop */
    }
}

/* Ends the request with `res` and calls back. The connection is closed
 * unless it is reusable (then returned to the pool). */
static void
finish(struct hu_req *r, enum hu_result res, bool reusable)
{
    struct hu_conn *c = r->conn;
    struct hu_host *h = r->host;
    const struct hu_callbacks *cb = r->cb;
    void *arg = r->arg;
    bool cancelled = r->cancelled;

    if (c) {
        c->req = NULL;
        if (reusable && !c->extra && c->sent == r->headlen + r->len &&
            h->nidle < c->pool->max_idle) {
            event_del(&c->wev);
            c->reused = true;
            if (!c->rev_on) { /* paused at the end: watch for the server closing */
                event_add(&c->rev, NULL);
                c->rev_on = true;
            }
            c->next = h->idle;
            h->idle = c;
            h->nidle++;
        } else {
            conn_free(c);
        }
    }
    req_free(r);
    if (!cancelled) {
        cb->on_done(arg, res);
    }
}

/* The connection failed or closed under a request. */
static void
fail(struct hu_conn *c)
{
    struct hu_req *r = c->req;

    if (!r) {
        idle_remove(c);
        conn_free(c);
        return;
    }
    if (c->connected && !r->got_byte && c->reused && !r->retried && !r->cancelled &&
        mono_us() - r->start_us < RETRY_WINDOW_US) {
        /* a kept-alive connection the server had closed: once more, anew */
        struct hu_conn *n = conn_new(c->pool, r->host);
        c->req = NULL;
        conn_free(c);
        r->retried = true;
        if (n) {
            req_start(r, n);
            return;
        }
        r->conn = NULL;
        finish(r, HU_RESET, false);
        return;
    }
    finish(r, !c->connected ? HU_CONNECT : r->got_byte ? HU_BROKEN : HU_RESET, false);
}

static void
on_writable(evutil_socket_t fd, short what, void *arg)
{
    struct hu_conn *c = arg;
    int err = c->connect_err;
    socklen_t len = sizeof(err);

    if (c->write_failed) {
        fail(c);
        return;
    }
    if (!c->connected) {
        if (what & EV_TIMEOUT) {
            fail(c); /* connect timeout */
            return;
        }
        if (!err && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
            err = errno;
        }
        if (err) {
            fail(c);
            return;
        }
        c->connected = true;
    }
    (void)flush_out(c);
}

/* Feeds n bytes of the answer to the parser. Returns false when the
 * request has ended (finished or failed) here. */
static bool
feed(struct hu_conn *c, const char *p, size_t n)
{
    struct hu_req *r = c->req;
    size_t used;

    c->parsing = true;
    used = http_parser_execute(&c->parser, &settings, p, n);
    c->parsing = false;
    if (r->cancelled) {
        finish(r, HU_OK, false); /* no callback: cancelled */
        return false;
    }
    if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK && HTTP_PARSER_ERRNO(&c->parser) != HPE_PAUSED) {
        finish(r, HU_PROTOCOL, false);
        return false;
    }
    if (c->complete) {
        c->extra = used < n;
        finish(r, HU_OK, http_should_keep_alive(&c->parser) != 0);
        return false;
    }
    return true;
}

/* The answer's body runs to the end of the connection: neither chunked nor
 * of a known length (http-parser keeps ULLONG_MAX for "no length"). */
static bool
needs_eof(const http_parser *p)
{
    const struct hu_conn *c = p->data;

    return c->head_done && !(p->flags & F_CHUNKED) && p->content_length == ULLONG_MAX &&
           p->status_code >= 200 && p->status_code != 204 && p->status_code != 304;
}

static void
on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct hu_conn *c = arg;
    struct hu_req *r = c->req;
    char buf[65536];
    ssize_t n;

    (void)what;
    n = read(fd, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return;
    }
    if (!r || !c->connected) {
        fail(c); /* an idle connection closing (or talking out of turn) */
        return;
    }
    if (n > 0 && !r->got_byte) {
        r->got_byte = true;
        r->ttfb_us = mono_us() - r->start_us;
    }
    if (n > 0) {
        if (feed(c, buf, (size_t)n) && r->cb->on_flush) {
            r->cb->on_flush(r->arg);
        }
        return;
    }
    if (n == 0 && r->got_byte && needs_eof(&c->parser)) {
        /* an answer delimited by the end of the connection */
        if (!feed(c, NULL, 0)) {
            return;
        }
    }
    fail(c);
}

/* ---- the parser's callbacks ------------------------------------------------------ */

/* Appends at[0..n) to dst (holding *len bytes), as much as fits in cap
 * with the terminating NUL: header names and values arrive in pieces. */
static void
append_capped(char *dst, size_t cap, size_t *len, const char *at, size_t n)
{
    size_t room = cap - 1 - *len;

    if (n > room) {
        n = room;
    }
    memcpy(dst + *len, at, n);
    *len += n;
    dst[*len] = '\0';
}

static int
p_header_field(http_parser *p, const char *at, size_t n)
{
    struct hu_conn *c = p->data;

    if (c->field_done) { /* a new header begins */
        c->flen = 0;
        c->field_done = false;
        c->in_ct = false;
    }
    append_capped(c->field, sizeof(c->field), &c->flen, at, n);
    return 0;
}

static int
p_header_value(http_parser *p, const char *at, size_t n)
{
    struct hu_conn *c = p->data;

    if (!c->field_done) {
        c->field_done = true;
        c->in_ct = strcasecmp(c->field, "Content-Type") == 0;
        if (c->in_ct) {
            c->ctlen = 0;
        }
    }
    if (c->in_ct) {
        append_capped(c->ct, sizeof(c->ct), &c->ctlen, at, n);
    }
    return 0;
}

static int
p_headers_complete(http_parser *p)
{
    struct hu_conn *c = p->data;
    struct hu_req *r = c->req;

    if (p->status_code < 200) {
        /* an interim answer (100 Continue): the final one follows */
        c->flen = c->ctlen = 0;
        c->field_done = c->in_ct = false;
        return 0;
    }
    c->head_done = true;
    if (!r->cancelled) {
        r->cb->on_head(r->arg, (int)p->status_code, c->ctlen ? c->ct : NULL);
    }
    return 0;
}

static int
p_body(http_parser *p, const char *at, size_t n)
{
    struct hu_conn *c = p->data;
    struct hu_req *r = c->req;

    if (!r->cancelled) {
        r->cb->on_data(r->arg, at, n);
    }
    return 0;
}

static int
p_message_complete(http_parser *p)
{
    struct hu_conn *c = p->data;

    if (p->status_code >= 100 && p->status_code < 200) {
        return 0; /* an interim answer: the real one follows */
    }
    c->complete = true;
    http_parser_pause(p, 1);
    return 0;
}

/* ---- the pool ---------------------------------------------------------------------- */

struct hu_pool *
hu_pool_new(struct event_base *base, int connect_timeout_ms, int max_idle)
{
    struct hu_pool *p = calloc(1, sizeof(*p));

    if (!p) {
        return NULL;
    }
    settings.on_header_field = p_header_field;
    settings.on_header_value = p_header_value;
    settings.on_headers_complete = p_headers_complete;
    settings.on_body = p_body;
    settings.on_message_complete = p_message_complete;
    p->base = base;
    p->connect_timeout_ms = connect_timeout_ms > 0 ? connect_timeout_ms : 1000;
    p->max_idle = max_idle > 0 ? max_idle : 1;
    return p;
}

void
hu_pool_free(struct hu_pool *p)
{
    if (!p) {
        return;
    }
    while (p->hosts) {
        struct hu_host *h = p->hosts;
        p->hosts = h->next;
        while (h->idle) {
            struct hu_conn *c = h->idle;
            h->idle = c->next;
            conn_free(c);
        }
        free(h);
    }
    free(p);
}

static struct hu_host *
host_for(struct hu_pool *p, const struct sockaddr *sa, unsigned salen)
{
    struct hu_host *h;

    for (h = p->hosts; h; h = h->next) {
        if (h->salen == salen && memcmp(&h->sa, sa, salen) == 0) {
            return h;
        }
    }
    if (salen > sizeof(h->sa) || !(h = calloc(1, sizeof(*h)))) {
        return NULL;
    }
    memcpy(&h->sa, sa, salen);
    h->salen = salen;
    h->next = p->hosts;
    p->hosts = h;
    return h;
}

struct hu_req *
hu_post(struct hu_pool *p, const struct sockaddr *sa, unsigned salen, const char *hostport,
        const char *path, const char *headers, const char *body, size_t len,
        const struct hu_callbacks *cb, void *arg)
{
    struct hu_host *h = host_for(p, sa, salen);
    struct hu_req *r = calloc(1, sizeof(*r));
    struct hu_conn *c;
    int n;

    if (!h || !r) {
        free(r);
        return NULL;
    }
    n = snprintf(NULL, 0, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\n%s\r\n", path,
                 hostport, len, headers);
    r->head = malloc((size_t)n + 1);
    if (!r->head) {
        free(r);
        return NULL;
    }
    snprintf(r->head, (size_t)n + 1,
             "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\n%s\r\n", path, hostport, len,
             headers);
    r->headlen = (size_t)n;
    r->pool = p;
    r->host = h;
    r->cb = cb;
    r->arg = arg;
    r->body = body;
    r->len = len;
    r->start_us = mono_us();
    c = h->idle;
    if (c) {
        h->idle = c->next;
        h->nidle--;
    } else if (!(c = conn_new(p, h))) {
        req_free(r);
        return NULL;
    }
    req_start(r, c);
    return r;
}

void
hu_cancel(struct hu_req *r)
{
    if (r->conn && r->conn->parsing) {
        r->cancelled = true; /* on_read finishes it when the parser returns */
        return;
    }
    r->cancelled = true;
    if (r->conn) {
        r->conn->req = NULL;
        conn_free(r->conn);
    }
    req_free(r);
}

void
hu_pause(struct hu_req *r, int paused)
{
    struct hu_conn *c = r->conn;

    if (!c || (bool)paused != c->rev_on) {
        return;
    }
    if (paused) {
        event_del(&c->rev);
    } else {
        event_add(&c->rev, NULL);
    }
    c->rev_on = !paused;
}

long long
hu_ttfb_us(const struct hu_req *r)
{
    return r->ttfb_us;
}
