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
 *
 * The host table: a chained hash table (FNV-1a of the address bytes, with
 * a per-pool seed; doubled when it holds more entries than buckets,
 * halved below an eighth) and a doubly linked list of the entries with no
 * request in flight, most recently used first. An entry leaves the list
 * when a request takes it and comes back at the front when its last
 * request ends; so the list's tail is the oldest, and both expiry (a timer
 * armed while the list is not empty) and eviction take from the tail.
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
#include <poll.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <http_parser.h>

struct hu_host {
    struct hu_pool *pool;
    struct sockaddr_storage sa;
    unsigned salen;
    uint32_t hash;
    struct hu_conn *idle; /* most recently used first */
    int nidle;
    int nbusy;             /* requests holding this entry */
    long long last_us;     /* when its last request ended */
    struct hu_host *hnext; /* in its hash bucket */
    struct hu_host *lprev; /* in the pool's list of entries without */
    struct hu_host *lnext; /* requests (nbusy == 0), most recent first */
};

struct hu_conn {
    struct hu_pool *pool;
    struct hu_host *host;
    int fd;
    struct event rev;   /* readable: the answer, or an idle connection closing */
    struct event wev;   /* writable: connect done, or room for the rest of a request */
    bool rev_on;        /* rev is added (off while paused) */
    int connect_err;    /* a connect that failed at once, reported from wev */
    bool write_failed;  /* a write failed, reported from wev */
    struct hu_req *req; /* NULL while idle */
    size_t sent;        /* bytes of the request written */
    struct hu_parser rp;
    bool connected;
    bool timed_out; /* the connect timeout passed unconnected */
    bool reused;    /* has completed a response before */
    bool parsing;
    bool extra;           /* bytes came after the end of the response */
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
    /* the host table */
    struct hu_host **buckets;
    size_t nbuckets; /* a power of two */
    size_t nhosts;
    uint32_t seed;
    struct hu_host *lru_head, *lru_tail; /* entries without requests */
    size_t max_hosts;
    long long host_idle_us;
    struct event sweep; /* armed while the list is not empty */
    bool sweep_on;
    struct hu_pool_stats stats;
};

#define MIN_BUCKETS       64
#define DEFAULT_MAX_HOSTS 4096
#define DEFAULT_HOST_IDLE 60000 /* ms */

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

/* A connect in progress waits for writability, at most the connect
 * timeout. */
static void
wait_connect(struct hu_conn *c)
{
    struct hu_pool *p = c->pool;
    struct timeval tv = {p->connect_timeout_ms / 1000, (p->connect_timeout_ms % 1000) * 1000};

    event_add(&c->wev, &tv);
}

/* A new connection: connected at once, failed at once (reported from the
 * loop), or in progress (req_start then arms the wait). */
static struct hu_conn *
conn_new(struct hu_pool *p, struct hu_host *h)
{
    struct hu_conn *c = calloc(1, sizeof(*c));
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
    }
    return c;
}

/* ---- requests ------------------------------------------------------------------- */

static void host_release(struct hu_host *h);

static void
req_free(struct hu_req *r)
{
    if (r->host) {
        host_release(r->host);
    }
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

/* c's handshake is over: told to its request, if it has one yet. */
static void
set_connected(struct hu_conn *c)
{
    c->connected = true;
    if (c->req && c->req->cb->on_connected) {
        c->req->cb->on_connected(c->req->arg);
    }
}

/* A connect in progress: to a nearby server (loopback, the same host) the
 * handshake is often over by the time connect() returns, so the request is
 * written now rather than a loop turn later; where the socket is not
 * connected yet (EAGAIN) or failed, the wait for writability (with the
 * connect timeout) tells. */
static void
early_write(struct hu_conn *c)
{
    struct hu_req *r = c->req;
    struct iovec iov[2] = {{r->head, r->headlen}, {(void *)r->body, r->len}};
    ssize_t w = writev(c->fd, iov, r->len ? 2 : 1);

    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        c->connect_err = errno; /* refused already: reported from the loop */
        event_active(&c->wev, EV_WRITE, 0);
        return;
    }
    if (w <= 0) {
        wait_connect(c);
        return;
    }
    set_connected(c);
    c->sent = (size_t)w;
    (void)flush_out(c); /* the rest, if any: waits for room, or fails from the loop */
}

/* Puts the request on connection c and, once connected, writes it. */
static void
req_start(struct hu_req *r, struct hu_conn *c)
{
    r->conn = c;
    c->req = r;
    c->sent = 0;
    c->extra = false;
    hu_parser_init(&c->rp, r->cb, r->arg);
    if (!c->rev_on) {
        event_add(&c->rev, NULL);
        c->rev_on = true;
    }
    if (c->connected) {
        (void)flush_out(c); /* a failure is reported from the loop */
    } else if (!c->connect_err) {
        early_write(c);
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
    finish(r,
           !c->connected ? (c->timed_out ? HU_CONNECT_TIMEOUT : HU_CONNECT)
           : r->got_byte ? HU_BROKEN
                         : HU_RESET,
           false);
}

/* Whether the kernel has finished the connect on fd (writable now): the
 * timeout may come due in the same loop turn as the writability, or
 * before it when the loop ran late. */
static bool
connect_done(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};

    return poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLOUT | POLLERR | POLLHUP)) != 0;
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
        if ((what & EV_TIMEOUT) && !(what & EV_WRITE) && !connect_done(fd)) {
            c->timed_out = true;
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
        set_connected(c);
    }
    (void)flush_out(c);
}

/* Feeds n bytes of the answer to the parser. Returns false when the
 * request has ended (finished or failed) here. */
static bool
feed(struct hu_conn *c, const char *p, size_t n)
{
    struct hu_req *r = c->req;
    size_t used = 0;
    enum hu_parse st;

    c->parsing = true;
    st = hu_parser_feed(&c->rp, p, n, &used);
    c->parsing = false;
    if (r->cancelled) {
        finish(r, HU_OK, false); /* no callback: cancelled */
        return false;
    }
    if (st == HU_PARSE_ERROR) {
        finish(r, HU_PROTOCOL, false);
        return false;
    }
    if (st == HU_PARSE_DONE) {
        c->extra = used < n;
        finish(r, HU_OK, hu_parser_keep_alive(&c->rp));
        return false;
    }
    return true;
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
    if (n == 0 && r->got_byte) {
        /* an answer delimited by the end of the connection? */
        enum hu_parse st;
        c->parsing = true;
        st = hu_parser_eof(&c->rp);
        c->parsing = false;
        if (r->cancelled) {
            finish(r, HU_OK, false); /* no callback: cancelled */
            return;
        }
        if (st == HU_PARSE_DONE) {
            finish(r, HU_OK, false);
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
p_header_field(http_parser *hp, const char *at, size_t n)
{
    struct hu_parser *p = hp->data;

    if (p->field_done) { /* a new header begins */
        p->flen = 0;
        p->field_done = false;
        p->in_ct = false;
    }
    append_capped(p->field, sizeof(p->field), &p->flen, at, n);
    return 0;
}

static int
p_header_value(http_parser *hp, const char *at, size_t n)
{
    struct hu_parser *p = hp->data;

    if (!p->field_done) {
        p->field_done = true;
        p->in_ct = strcasecmp(p->field, "Content-Type") == 0;
        if (p->in_ct) {
            p->ctlen = 0;
            p->ct[0] = '\0';
        }
    }
    if (p->in_ct) {
        append_capped(p->ct, sizeof(p->ct), &p->ctlen, at, n);
    }
    return 0;
}

static int
p_headers_complete(http_parser *hp)
{
    struct hu_parser *p = hp->data;

    if (hp->status_code < 100) {
        return -1; /* no such status (http-parser takes "HTTP/1.1 20"): not HTTP */
    }
    if (hp->status_code < 200) {
        /* an interim answer (100 Continue): the final one follows */
        p->flen = p->ctlen = 0;
        p->field_done = p->in_ct = false;
        return 0;
    }
    p->head_done = true;
    if (!p->muted) {
        p->cb->on_head(p->arg, (int)hp->status_code, p->ctlen ? p->ct : NULL);
    }
    /* 204 and 304 end at their headers whatever Content-Length says (RFC
     * 9110 6.4.1; http-parser would read that many bytes as a body) */
    return hp->status_code == 204 || hp->status_code == 304 ? 1 : 0;
}

static int
p_body(http_parser *hp, const char *at, size_t n)
{
    struct hu_parser *p = hp->data;

    if (!p->head_done) {
        return -1; /* a body without a final status line before it */
    }
    if (!p->muted) {
        p->cb->on_data(p->arg, at, n);
    }
    return 0;
}

static int
p_message_complete(http_parser *hp)
{
    struct hu_parser *p = hp->data;

    if (hp->status_code >= 100 && hp->status_code < 200) {
        return 0; /* an interim answer: the real one follows */
    }
    p->complete = true;
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_header_field = p_header_field,
    .on_header_value = p_header_value,
    .on_headers_complete = p_headers_complete,
    .on_body = p_body,
    .on_message_complete = p_message_complete,
};

void
hu_parser_init(struct hu_parser *p, const struct hu_callbacks *cb, void *arg)
{
    memset(p, 0, sizeof(*p));
    http_parser_init(&p->hp, HTTP_RESPONSE);
    p->hp.data = p;
    p->cb = cb;
    p->arg = arg;
}

enum hu_parse
hu_parser_feed(struct hu_parser *p, const char *data, size_t n, size_t *used)
{
    *used = 0;
    if (p->hp.upgrade) {
        return HU_PARSE_ERROR; /* see below */
    }
    if (p->complete) {
        return HU_PARSE_DONE;
    }
    if (HTTP_PARSER_ERRNO(&p->hp) != HPE_OK) {
        return HU_PARSE_ERROR;
    }
    if (n == 0) {
        return HU_PARSE_MORE; /* (to http-parser, 0 bytes would mean the end) */
    }
    *used = http_parser_execute(&p->hp, &settings, data, n);
    if (p->hp.upgrade) {
        /* an upgrade (101 with Upgrade, CONNECT) answers no request a
         * worker is sent: an error wherever the pieces were cut (the
         * parser stops at the end of its head, which may or may not be
         * the end of a piece) */
        return HU_PARSE_ERROR;
    }
    if (p->complete) {
        return HU_PARSE_DONE;
    }
    /* bytes left over with no error: an upgrade (101, CONNECT), which no
     * worker may answer: the rest would never be read */
    return HTTP_PARSER_ERRNO(&p->hp) == HPE_OK && *used == n ? HU_PARSE_MORE : HU_PARSE_ERROR;
}

/* The answer's body runs to the end of the connection: neither chunked nor
 * of a known length (http-parser keeps ULLONG_MAX for "no length"). */
static bool
needs_eof(const struct hu_parser *p)
{
    const http_parser *hp = &p->hp;

    return p->head_done && !(hp->flags & F_CHUNKED) && hp->content_length == ULLONG_MAX &&
           hp->status_code >= 200 && hp->status_code != 204 && hp->status_code != 304;
}

enum hu_parse
hu_parser_eof(struct hu_parser *p)
{
    if (p->complete) {
        return HU_PARSE_DONE;
    }
    if (HTTP_PARSER_ERRNO(&p->hp) != HPE_OK || !needs_eof(p)) {
        return HU_PARSE_ERROR;
    }
    http_parser_execute(&p->hp, &settings, NULL, 0);
    return p->complete ? HU_PARSE_DONE : HU_PARSE_ERROR;
}

bool
hu_parser_keep_alive(const struct hu_parser *p)
{
    return p->complete && http_should_keep_alive(&p->hp) != 0;
}

/* ---- the host table ------------------------------------------------------------ */

static uint32_t
hash_addr(uint32_t seed, const void *key, size_t n)
{
    const unsigned char *b = key;
    uint32_t h = 2166136261u ^ seed;

    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 16777619u;
    }
    return h ^ (h >> 15);
}

static void
lru_unlink(struct hu_pool *p, struct hu_host *h)
{
    if (h->lprev) {
        h->lprev->lnext = h->lnext;
    } else {
        p->lru_head = h->lnext;
    }
    if (h->lnext) {
        h->lnext->lprev = h->lprev;
    } else {
        p->lru_tail = h->lprev;
    }
    h->lprev = h->lnext = NULL;
}

static void
lru_push_front(struct hu_pool *p, struct hu_host *h)
{
    h->lprev = NULL;
    h->lnext = p->lru_head;
    if (p->lru_head) {
        p->lru_head->lprev = h;
    } else {
        p->lru_tail = h;
    }
    p->lru_head = h;
}

/* Moves every entry to a table of n buckets (a power of two); keeps the
 * old one when out of memory (lookups stay correct, only longer). */
static void
rehash(struct hu_pool *p, size_t n)
{
    struct hu_host **nb = calloc(n, sizeof(*nb));

    if (!nb) {
        return;
    }
    for (size_t i = 0; i < p->nbuckets; i++) {
        while (p->buckets[i]) {
            struct hu_host *h = p->buckets[i];
            p->buckets[i] = h->hnext;
            h->hnext = nb[h->hash & (n - 1)];
            nb[h->hash & (n - 1)] = h;
        }
    }
    free(p->buckets);
    p->buckets = nb;
    p->nbuckets = n;
}

/* Drops an entry without requests: its idle connections are closed. */
static void
host_drop(struct hu_pool *p, struct hu_host *h)
{
    struct hu_host **pp = &p->buckets[h->hash & (p->nbuckets - 1)];

    while (*pp != h) {
        pp = &(*pp)->hnext;
    }
    *pp = h->hnext;
    lru_unlink(p, h);
    while (h->idle) {
        struct hu_conn *c = h->idle;
        h->idle = c->next;
        conn_free(c);
    }
    free(h);
    p->nhosts--;
    if (p->nbuckets > MIN_BUCKETS && p->nhosts < p->nbuckets / 8) {
        rehash(p, p->nbuckets / 2);
    }
}

static void on_sweep(evutil_socket_t fd, short what, void *arg);

/* Arms the expiry timer for when the oldest entry without requests
 * expires; disarms it when there is none. */
static void
sweep_arm(struct hu_pool *p)
{
    if (!p->lru_tail) {
        if (p->sweep_on) {
            event_del(&p->sweep);
            p->sweep_on = false;
        }
        return;
    }
    if (!p->sweep_on) {
        long long due = p->lru_tail->last_us + p->host_idle_us - mono_us();
        struct timeval tv;
        if (due < 1000) {
            due = 1000;
        }
        tv.tv_sec = (time_t)(due / 1000000);
        tv.tv_usec = (suseconds_t)(due % 1000000);
        event_add(&p->sweep, &tv);
        p->sweep_on = true;
    }
}

/* Drops the entries unused for host_idle_us (from the oldest). */
static void
sweep(struct hu_pool *p)
{
    long long now = mono_us();

    while (p->lru_tail && now - p->lru_tail->last_us >= p->host_idle_us) {
        p->stats.expired++;
        host_drop(p, p->lru_tail);
    }
}

static void
on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct hu_pool *p = arg;

    (void)fd;
    (void)what;
    p->sweep_on = false;
    sweep(p);
    sweep_arm(p);
}

/* A request ended: its entry goes back to the list when it was the last
 * (and the oldest entries go when the table is past its bound: this may
 * close idle connections, never one with a request). */
static void
host_release(struct hu_host *h)
{
    struct hu_pool *p = h->pool;

    if (--h->nbusy == 0) {
        h->last_us = mono_us();
        lru_push_front(p, h);
        /* past the bound only while requests were in flight: back to it */
        while (p->nhosts > p->max_hosts && p->lru_tail) {
            p->stats.evicted++;
            host_drop(p, p->lru_tail);
        }
        sweep_arm(p);
    }
}

/* The entry of an address, taken for a request (created if new; NULL when
 * out of memory or the address is too long). */
static struct hu_host *
host_take(struct hu_pool *p, const struct sockaddr *sa, unsigned salen)
{
    uint32_t hash = hash_addr(p->seed, sa, salen);
    struct hu_host *h;

    p->stats.lookups++;
    for (h = p->buckets[hash & (p->nbuckets - 1)]; h; h = h->hnext) {
        p->stats.probes++;
        if (h->hash == hash && h->salen == salen && memcmp(&h->sa, sa, salen) == 0) {
            break;
        }
    }
    if (!h) {
        if (salen > sizeof(h->sa)) {
            return NULL;
        }
        sweep(p);
        while (p->lru_tail && p->nhosts >= p->max_hosts) {
            p->stats.evicted++;
            host_drop(p, p->lru_tail);
        }
        if (!(h = calloc(1, sizeof(*h)))) {
            return NULL;
        }
        memcpy(&h->sa, sa, salen);
        h->pool = p;
        h->salen = salen;
        h->hash = hash;
        h->hnext = p->buckets[hash & (p->nbuckets - 1)];
        p->buckets[hash & (p->nbuckets - 1)] = h;
        if (++p->nhosts > p->nbuckets) {
            rehash(p, p->nbuckets * 2);
        }
    } else if (h->nbusy == 0) {
        lru_unlink(p, h);
    }
    h->nbusy++;
    sweep_arm(p);
    return h;
}

/* ---- the pool ---------------------------------------------------------------------- */

struct hu_pool *
hu_pool_new(struct event_base *base, int connect_timeout_ms, int max_idle)
{
    struct hu_pool *p = calloc(1, sizeof(*p));

    if (!p) {
        return NULL;
    }
    p->buckets = calloc(MIN_BUCKETS, sizeof(*p->buckets));
    if (!p->buckets) {
        free(p);
        return NULL;
    }
    p->nbuckets = MIN_BUCKETS;
    p->seed = (uint32_t)mono_us() ^ (uint32_t)(uintptr_t)p;
    p->base = base;
    p->connect_timeout_ms = connect_timeout_ms > 0 ? connect_timeout_ms : 1000;
    p->max_idle = max_idle > 0 ? max_idle : 1;
    p->max_hosts = DEFAULT_MAX_HOSTS;
    p->host_idle_us = DEFAULT_HOST_IDLE * 1000LL;
    evtimer_assign(&p->sweep, base, on_sweep, p);
    return p;
}

void
hu_pool_set_limits(struct hu_pool *p, int max_hosts, int host_idle_ms)
{
    p->max_hosts = max_hosts > 0 ? (size_t)max_hosts : 1;
    p->host_idle_us = (host_idle_ms > 0 ? host_idle_ms : 1) * 1000LL;
    if (p->sweep_on) { /* re-armed for the new time */
        event_del(&p->sweep);
        p->sweep_on = false;
    }
    sweep_arm(p);
}

void
hu_pool_stats(const struct hu_pool *p, struct hu_pool_stats *out)
{
    *out = p->stats;
    out->hosts = p->nhosts;
    out->buckets = p->nbuckets;
}

void
hu_pool_free(struct hu_pool *p)
{
    if (!p) {
        return;
    }
    event_del(&p->sweep);
    for (size_t i = 0; i < p->nbuckets; i++) {
        while (p->buckets[i]) {
            struct hu_host *h = p->buckets[i];
            p->buckets[i] = h->hnext;
            while (h->idle) {
                struct hu_conn *c = h->idle;
                h->idle = c->next;
                conn_free(c);
            }
            free(h);
        }
    }
    free(p->buckets);
    free(p);
}

struct hu_req *
hu_post(struct hu_pool *p, const struct sockaddr *sa, unsigned salen, const char *hostport,
        const char *path, const char *headers, const char *body, size_t len,
        const struct hu_callbacks *cb, void *arg)
{
    struct hu_req *r = calloc(1, sizeof(*r));
    struct hu_host *h;
    struct hu_conn *c;
    int n;

    if (!r) {
        return NULL;
    }
    h = host_take(p, sa, salen);
    if (!h) {
        free(r);
        return NULL;
    }
    r->host = h; /* released by req_free */
    n = snprintf(NULL, 0, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\n%s\r\n", path,
                 hostport, len, headers);
    r->head = malloc((size_t)n + 1);
    if (!r->head) {
        req_free(r);
        return NULL;
    }
    snprintf(r->head, (size_t)n + 1,
             "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\n%s\r\n", path, hostport, len,
             headers);
    r->headlen = (size_t)n;
    r->pool = p;
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
        r->conn->rp.muted = true;
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
