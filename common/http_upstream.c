/* SPDX-License-Identifier: MIT
 *
 * http_upstream.c - see http_upstream.h.
 *
 * A connection is either busy (one request: HTTP/1.1 without pipelining)
 * or idle in its host's list, read-enabled so that a server closing it is
 * noticed and the connection dropped. Parsing happens in on_read with the
 * parser paused at the end of each response; completion, the return to the
 * pool and every callback that may free things run after the parser has
 * returned, never inside it. A cancel requested from inside a callback is
 * deferred the same way.
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

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
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
    struct bufferevent *bev;
    struct event *connect_timer;
    http_parser parser;
    struct hu_req *req; /* NULL while idle */
    bool connected;
    bool reused; /* has completed a response before */
    bool parsing;
    bool complete; /* the current response has ended */
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
    if (c->connect_timer) {
        event_free(c->connect_timer);
    }
    if (c->bev) {
        bufferevent_free(c->bev);
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

static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void on_connect_timeout(evutil_socket_t fd, short what, void *arg);

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
    c->bev = bufferevent_socket_new(p->base, -1, BEV_OPT_CLOSE_ON_FREE);
    c->connect_timer = evtimer_new(p->base, on_connect_timeout, c);
    if (!c->bev || !c->connect_timer) {
        conn_free(c);
        return NULL;
    }
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&h->sa, (int)h->salen) != 0) {
        conn_free(c);
        return NULL;
    }
    if (bufferevent_getfd(c->bev) >= 0) {
        setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    evtimer_add(c->connect_timer, &tv);
    bufferevent_enable(c->bev, EV_READ);
    return c;
}

/* ---- requests ------------------------------------------------------------------- */

static void
req_free(struct hu_req *r)
{
    free(r->head);
    free(r);
}

/* Puts the request on connection c and writes it. Returns 0 or -1. */
static int
req_start(struct hu_req *r, struct hu_conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);

    r->conn = c;
    c->req = r;
    c->complete = false;
    c->flen = c->ctlen = 0;
    c->field_done = c->in_ct = false;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    if (evbuffer_add(out, r->head, r->headlen) != 0 ||
        (r->len && evbuffer_add_reference(out, r->body, r->len, NULL, NULL) != 0)) {
        return -1;
    }
    return 0;
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
        if (reusable && h->nidle < c->pool->max_idle &&
            evbuffer_get_length(bufferevent_get_input(c->bev)) == 0) {
            c->reused = true;
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
    if (c->connected && !r->got_byte && c->reused && !r->retried && !r->cancelled) {
        /* a kept-alive connection the server had closed: once more, anew */
        struct hu_conn *n = conn_new(c->pool, r->host);
        c->req = NULL;
        conn_free(c);
        r->retried = true;
        if (n && req_start(r, n) == 0) {
            return;
        }
        if (n) {
            n->req = NULL;
            conn_free(n);
        }
        r->conn = NULL;
        finish(r, HU_RESET, false);
        return;
    }
    finish(r, !c->connected ? HU_CONNECT : r->got_byte ? HU_BROKEN : HU_RESET, false);
}

static void
on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct hu_conn *c = arg;

    (void)fd;
    (void)what;
    c->connected = false;
    fail(c);
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
    struct hu_conn *c = arg;

    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        c->connected = true;
        evtimer_del(c->connect_timer);
        return;
    }
    if ((what & BEV_EVENT_EOF) && c->req && c->connected && c->req->got_byte) {
        /* a response delimited by the end of the connection */
        c->parsing = true;
        http_parser_execute(&c->parser, &settings, NULL, 0);
        c->parsing = false;
        if (c->complete) {
            finish(c->req, HU_OK, false);
            return;
        }
    }
    fail(c);
}

static void
on_read(struct bufferevent *bev, void *arg)
{
    struct hu_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct hu_req *r = c->req;

    if (!r) {
        fail(c); /* bytes on an idle connection: not ours to read */
        return;
    }
    if (!r->got_byte && evbuffer_get_length(in) > 0) {
        r->got_byte = true;
        r->ttfb_us = mono_us() - r->start_us;
    }
    c->parsing = true;
    while (evbuffer_get_length(in) > 0 && !c->complete && !r->cancelled) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1) {
            break;
        }
        size_t n = http_parser_execute(&c->parser, &settings, v.iov_base, v.iov_len);
        evbuffer_drain(in, n);
        if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK &&
            HTTP_PARSER_ERRNO(&c->parser) != HPE_PAUSED) {
            c->parsing = false;
            finish(r, HU_PROTOCOL, false);
            return;
        }
        if (n < v.iov_len && !c->complete) {
            break;
        }
    }
    c->parsing = false;
    if (r->cancelled) {
        finish(r, HU_OK, false); /* no callback: cancelled */
        return;
    }
    if (c->complete) {
        finish(r, HU_OK, http_should_keep_alive(&c->parser) != 0);
    } else if (r->cb->on_flush) {
        r->cb->on_flush(r->arg);
    }
}

/* ---- the parser's callbacks ------------------------------------------------------ */

static int
p_header_field(http_parser *p, const char *at, size_t n)
{
    struct hu_conn *c = p->data;

    if (c->field_done) { /* a new header begins */
        c->flen = 0;
        c->field_done = false;
        c->in_ct = false;
    }
    size_t room = sizeof(c->field) - 1 - c->flen;
    memcpy(c->field + c->flen, at, n < room ? n : room);
    c->flen += n < room ? n : room;
    c->field[c->flen] = '\0';
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
        size_t room = sizeof(c->ct) - 1 - c->ctlen;
        memcpy(c->ct + c->ctlen, at, n < room ? n : room);
        c->ctlen += n < room ? n : room;
        c->ct[c->ctlen] = '\0';
    }
    return 0;
}

static int
p_headers_complete(http_parser *p)
{
    struct hu_conn *c = p->data;
    struct hu_req *r = c->req;

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
    if (req_start(r, c) != 0) {
        c->req = NULL;
        conn_free(c);
        req_free(r);
        return NULL;
    }
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
    if (!r->conn) {
        return;
    }
    if (paused) {
        bufferevent_disable(r->conn->bev, EV_READ);
    } else {
        bufferevent_enable(r->conn->bev, EV_READ);
    }
}

long long
hu_ttfb_us(const struct hu_req *r)
{
    return r->ttfb_us;
}
