/* SPDX-License-Identifier: MIT
 *
 * test_upstream.c - common/http_upstream.c against a scripted server on
 * loopback, in the same event loop: keep-alive reuse, chunked and
 * connection-delimited bodies, a pooled connection the server closed,
 * refused connections, answers cut short or malformed, and cancellation.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "buf.h"
#include "check.h"
#include "http_upstream.h"

/* ---- the scripted server ----------------------------------------------------- */

enum script {
    S_LENGTH,     /* Content-Length answer, keep-alive */
    S_CHUNKED,    /* chunked answer, keep-alive */
    S_EOF,        /* no length, the connection closes at the end */
    S_CLOSE_IDLE, /* answer, then close the connection (keep-alive announced) */
    S_NO_ANSWER,  /* close without a byte */
    S_CUT,        /* half the body, then close */
    S_GARBAGE,    /* not HTTP */
    S_SLOW,       /* headers and one chunk, then nothing */
    S_INTERIM,    /* 100 Continue, then the answer */
    S_EARLY,      /* answers once the headers are in, ignores the body */
};

struct server {
    struct event_base *base;
    struct evconnlistener *lis;
    int port;
    enum script script;
    int accepts;
    int requests;
    int closed;                   /* connections the client closed */
    struct bufferevent *open[64]; /* connections not yet freed (teardown frees them) */
    int nopen;
};

/* Frees a server connection. */
static void
srv_close(struct server *s, struct bufferevent *bev)
{
    for (int i = 0; i < s->nopen; i++) {
        if (s->open[i] == bev) {
            s->open[i] = s->open[--s->nopen];
            break;
        }
    }
    bufferevent_free(bev);
}

static const char *
answer(enum script s)
{
    switch (s) {
    case S_LENGTH:
        return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
               "{\"ok\":true}";
    case S_CHUNKED:
        return "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked"
               "\r\n\r\n6\r\ndata: \r\n5\r\nhello\r\n0\r\n\r\n";
    case S_EOF:
        return "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\nbusy";
    case S_CLOSE_IDLE:
        return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    case S_CUT:
        return "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part";
    case S_GARBAGE:
        return "SMTP ready\r\n\r\n";
    case S_SLOW:
        return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
    case S_INTERIM:
        return "HTTP/1.1 100 Continue\r\nContent-Type: nope\r\n\r\nHTTP/1.1 200 OK\r\n"
               "Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
    case S_EARLY:
        return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    default:
        return "";
    }
}

static void
srv_event(struct bufferevent *bev, short what, void *arg)
{
    struct server *s = arg;

    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        s->closed++;
        srv_close(s, bev);
    }
}

static void
srv_written(struct bufferevent *bev, void *arg)
{
    struct server *s = arg;

    if (s->script == S_EOF || s->script == S_CLOSE_IDLE || s->script == S_CUT ||
        s->script == S_GARBAGE) {
        srv_close(s, bev);
    }
}

/* A request is complete once its headers and Content-Length bytes are in. */
static void
srv_read(struct bufferevent *bev, void *arg)
{
    struct server *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    size_t head, len = 0;
    char *h;

    if (end.pos < 0) {
        return;
    }
    head = (size_t)end.pos + 4;
    if (s->script == S_EARLY) {
        /* answer at once; what follows on this connection is not read */
        evbuffer_drain(in, evbuffer_get_length(in));
        bufferevent_setcb(bev, NULL, NULL, srv_event, s);
        s->requests++;
        bufferevent_write(bev, answer(s->script), strlen(answer(s->script)));
        return;
    }
    h = (char *)evbuffer_pullup(in, (ev_ssize_t)head);
    char *cl = strstr(h, "Content-Length: ");
    if (cl && cl < h + head) {
        len = (size_t)strtoul(cl + 16, NULL, 10);
    }
    if (evbuffer_get_length(in) < head + len) {
        return;
    }
    evbuffer_drain(in, head + len);
    s->requests++;
    if (s->script == S_NO_ANSWER) {
        srv_close(s, bev);
        return;
    }
    bufferevent_write(bev, answer(s->script), strlen(answer(s->script)));
}

static void
srv_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct server *s = arg;
    struct bufferevent *bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);

    (void)l;
    (void)sa;
    (void)salen;
    s->accepts++;
    if (s->nopen < (int)(sizeof(s->open) / sizeof(s->open[0]))) {
        s->open[s->nopen++] = bev;
    }
    bufferevent_setcb(bev, srv_read, srv_written, srv_event, s);
    bufferevent_enable(bev, EV_READ);
}

static void
server_start(struct server *s, struct event_base *base)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);

    memset(s, 0, sizeof(*s));
    s->base = base;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->lis = evconnlistener_new_bind(base, srv_accept, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                     16, (struct sockaddr *)&sin, sizeof(sin));
    getsockname(evconnlistener_get_fd(s->lis), (struct sockaddr *)&sin, &len);
    s->port = ntohs(sin.sin_port);
}

/* ---- the client side ---------------------------------------------------------- */

struct result {
    struct event_base *base;
    int status;
    char ct[64];
    struct buf body;
    int flushes;
    int connects; /* on_connected calls */
    bool done;
    enum hu_result r;
};

static void
on_head(void *arg, int status, const char *ct)
{
    struct result *x = arg;

    x->status = status;
    snprintf(x->ct, sizeof(x->ct), "%s", ct ? ct : "-");
}

static void
on_data(void *arg, const char *p, size_t n)
{
    struct result *x = arg;

    if (buf_append(&x->body, p, n) != 0) {
        x->body.len = 0; /* a test failure: the body check catches it */
    }
}

static void
on_flush(void *arg)
{
    ((struct result *)arg)->flushes++;
}

static void
on_done(void *arg, enum hu_result r)
{
    struct result *x = arg;

    x->done = true;
    x->r = r;
    event_base_loopbreak(x->base);
}

static void
on_connected(void *arg)
{
    ((struct result *)arg)->connects++;
}

static const struct hu_callbacks cbs = {on_head, on_data, on_flush, on_done, on_connected};

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

/* Runs the loop until the request ends or `ms` pass. */
static void
run(struct event_base *base, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    struct event *t = evtimer_new(base, on_deadline, base);

    evtimer_add(t, &tv);
    event_base_dispatch(base);
    event_free(t);
}

/* Frees the pool, lets the server see its connections close, frees it. */
static void
teardown(struct hu_pool *p, struct server *s, struct event_base *base)
{
    hu_pool_free(p);
    run(base, 100);
    while (s->nopen > 0) {
        srv_close(s, s->open[0]);
    }
    evconnlistener_free(s->lis);
    event_base_free(base);
}

static struct sockaddr_in
addr(int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sin;
}

static struct hu_req *
post(struct hu_pool *p, int port, struct result *x, struct event_base *base)
{
    struct sockaddr_in sin = addr(port);

    memset(x, 0, sizeof(*x));
    x->base = base;
    buf_init(&x->body, 1 << 20);
    return hu_post(p, (struct sockaddr *)&sin, sizeof(sin), "127.0.0.1", "/v1/x",
                   "X-Request-Id: t\r\n", "{}", 2, &cbs, x);
}

/* Posts, runs the loop until the answer (2 s at most): the result, or -1
 * when the request could not start, -2 when it did not end. */
static int
roundtrip(struct hu_pool *p, int port, struct result *x, struct event_base *base)
{
    if (!post(p, port, x, base)) {
        return -1;
    }
    run(base, 2000);
    return x->done ? (int)x->r : -2;
}

static void
test_keepalive_reuse(void)
{
    struct event_base *base = event_base_new();
    struct hu_pool *p = hu_pool_new(base, 1000, 4);
    struct server s;
    struct result x;

    server_start(&s, base);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(roundtrip(p, s.port, &x, base), HU_OK);
        CHECK_EQ_INT(x.connects, i == 0 ? 1 : 0); /* a handshake only on the new one */
        CHECK_EQ_INT(x.status, 200);
        CHECK_EQ_STR(x.ct, "application/json");
        CHECK_EQ_STR(buf_str(&x.body), "{\"ok\":true}");
        buf_cleanup(&x.body);
    }
    CHECK_EQ_INT(s.requests, 3);
    CHECK_EQ_INT(s.accepts, 1); /* one connection, kept alive */
    teardown(p, &s, base);
}

static void
test_chunked_and_eof_bodies(void)
{
    struct event_base *base = event_base_new();
    struct hu_pool *p = hu_pool_new(base, 1000, 4);
    struct server s;
    struct result x;

    server_start(&s, base);
    s.script = S_CHUNKED;
    CHECK_EQ_INT(roundtrip(p, s.port, &x, base), HU_OK);
    CHECK_EQ_STR(x.ct, "text/event-stream");
    CHECK_EQ_STR(buf_str(&x.body), "data: hello"); /* de-chunked */
    buf_cleanup(&x.body);
    s.script = S_EOF;
    CHECK_EQ_INT(roundtrip(p, s.port, &x, base), HU_OK);
    CHECK_EQ_INT(x.status, 503);
    CHECK_EQ_STR(x.ct, "-");
    CHECK_EQ_STR(buf_str(&x.body), "busy");
    buf_cleanup(&x.body);
    teardown(p, &s, base);
}

static void
test_pooled_connection_closed_by_server(void)
{
    struct event_base *base = event_base_new();
    struct hu_pool *p = hu_pool_new(base, 1000, 4);
    struct server s;
    struct result x;

    server_start(&s, base);
    s.script = S_CLOSE_IDLE; /* answers with keep-alive, then closes */
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(roundtrip(p, s.port, &x, base), HU_OK);
        CHECK_EQ_STR(buf_str(&x.body), "ok");
        buf_cleanup(&x.body);
    }
    CHECK_EQ_INT(s.requests, 3);
    CHECK_EQ_INT(s.accepts, 3); /* a new connection each time, never a failure */
    teardown(p, &s, base);
}

/* A reused connection that fails before any answer is tried once more on a
 * new connection (the server may have closed it as we reused it). */
static void
test_retry_on_a_fresh_connection(void)
{
    struct event_base *base = event_base_new();
    struct hu_pool *p = hu_pool_new(base, 1000, 4);
    struct server s;
    struct result x;

    server_start(&s, base);
    CHECK_EQ_INT(roundtrip(p, s.port, &x, base), HU_OK);
    buf_cleanup(&x.body);
    s.script = S_NO_ANSWER;
    CHECK_EQ_INT(roundtrip(p, s.port, &x, base), HU_RESET);
    CHECK_EQ_INT(s.accepts, 2);  /* the pooled connection, then one new one */
    CHECK_EQ_INT(s.requests, 3); /* sent twice, no more */
    buf_cleanup(&x.body);
    teardown(p, &s, base);
}

static void
test_failures(void)
{
    struct event_base *base = event_base_new();
    struct hu_pool *p = hu_pool_new(base, 1000, 4);
    struct server s;
    struct result x;
    int refused_port;

    server_start(&s, base);
    /* refused: a port bound but not listening */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = addr(0);
    socklen_t len = sizeof(sin);
    bind(fd, (struct sockaddr *)&sin, sizeof(sin));
    getsockname(fd, (struct sockaddr *)&sin, &len);
    refused_port = ntohs(sin.sin_port);
    CHECK(post(p, refused_port, &x, base));
    run(base, 2000);
    close(fd);
    CHECK(x.done);
    CHECK_EQ_INT(x.r, HU_CONNECT);
    buf_cleanup(&x.body);
    s.script = S_NO_ANSWER;
    CHECK_EQ_INT(roundtrip(p, s.port, &x, base), HU_RESET);
    buf_cleanup(&x.body);
    s.script = S_CUT;
    CHECK_EQ_INT(roundtrip(p, s.port, &x, base), HU_BROKEN);
    CHECK_EQ_STR(buf_str(&x.body), "only a part");
    buf_cleanup(&x.body);
    s.script = S_GARBAGE;
    CHECK_EQ_INT(roundtrip(p, s.port, &x, base), HU_PROTOCOL);
    buf_cleanup(&x.body);
    teardown(p, &s, base);
}

static void
test_interim_answer_and_early_answer(void)
{
    struct event_base *base = event_base_new();
    struct hu_pool *p = hu_pool_new(base, 1000, 4);
    struct server s;
    struct result x;
    struct sockaddr_in sin;
    static char big[8 << 20];

    server_start(&s, base);
    s.script = S_INTERIM; /* the 100 is not an answer */
    CHECK_EQ_INT(roundtrip(p, s.port, &x, base), HU_OK);
    CHECK_EQ_INT(x.status, 200);
    CHECK_EQ_STR(x.ct, "text/plain");
    CHECK_EQ_STR(buf_str(&x.body), "ok");
    buf_cleanup(&x.body);
    /* answered before the body was all sent: that connection is not reused */
    s.script = S_EARLY;
    s.accepts = 0;
    memset(big, 'x', sizeof(big));
    memset(&x, 0, sizeof(x));
    x.base = base;
    buf_init(&x.body, 1 << 20);
    sin = addr(s.port);
    CHECK(hu_post(p, (struct sockaddr *)&sin, sizeof(sin), "127.0.0.1", "/v1/x", "", big,
                  sizeof(big), &cbs, &x));
    run(base, 2000);
    CHECK(x.done && x.r == HU_OK);
    buf_cleanup(&x.body);
    s.script = S_LENGTH;
    CHECK_EQ_INT(roundtrip(p, s.port, &x, base), HU_OK);
    CHECK_EQ_STR(buf_str(&x.body), "{\"ok\":true}");
    /* the early answer came on the pooled connection of the first request;
     * the third needed a new one (the server no longer reads that one: had
     * it been reused, the request would have gone unanswered) */
    CHECK_EQ_INT(s.accepts, 1);
    buf_cleanup(&x.body);
    teardown(p, &s, base);
}

static void
test_cancel_mid_answer(void)
{
    struct event_base *base = event_base_new();
    struct hu_pool *p = hu_pool_new(base, 1000, 4);
    struct server s;
    struct result x;
    struct hu_req *r;

    server_start(&s, base);
    s.script = S_SLOW;
    r = post(p, s.port, &x, base);
    CHECK(r);
    run(base, 300); /* the head and one chunk arrive, then nothing */
    CHECK(!x.done);
    CHECK_EQ_INT(x.status, 200);
    CHECK_EQ_STR(buf_str(&x.body), "abc");
    CHECK(x.flushes >= 1);
    CHECK(hu_ttfb_us(r) > 0);
    hu_cancel(r);
    run(base, 300);
    CHECK(!x.done);            /* no callback after a cancel */
    CHECK_EQ_INT(s.closed, 1); /* the server saw the connection close */
    buf_cleanup(&x.body);
    teardown(p, &s, base);
}

/* ---- the host table --------------------------------------------------------------- */

static void
count_done(void *arg, enum hu_result r)
{
    int *left = arg;

    (void)r;
    (*left)--;
}

static void
ignore_head(void *arg, int status, const char *ct)
{
    (void)arg;
    (void)status;
    (void)ct;
}

static void
ignore_data(void *arg, const char *p, size_t n)
{
    (void)arg;
    (void)p;
    (void)n;
}

static const struct hu_callbacks count_cbs = {ignore_head, ignore_data, NULL, count_done, NULL};

/* A port bound on every loopback address but not listening: connections
 * to it are refused at once. Returns the socket (close it after). */
static int
refusing_port(int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
        return -1;
    }
    *port = ntohs(sin.sin_port);
    return fd;
}

/* The i-th distinct address: 127.x.y.z at `port`. */
static struct sockaddr_in
nth_addr(int i, int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};

    sin.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)(i + 2));
    return sin;
}

/* Posts to addresses [from, to) in batches, each run to its end (refused).
 * Returns the requests that did not end (0 expected). */
static int
post_range(struct hu_pool *p, struct event_base *base, int port, int from, int to)
{
    for (int i = from; i < to;) {
        int left = 0;
        for (int k = 0; k < 250 && i < to; k++, i++) {
            struct sockaddr_in sin = nth_addr(i, port);
            if (hu_post(p, (struct sockaddr *)&sin, sizeof(sin), "x", "/", "", "", 0, &count_cbs,
                        &left)) {
                left++;
            }
        }
        for (int spins = 0; left > 0 && spins < 200; spins++) {
            event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
            if (left > 0) {
                struct timeval tv = {0, 5000};
                event_base_loopexit(base, &tv);
                event_base_dispatch(base);
            }
        }
        if (left) {
            return left;
        }
    }
    return 0;
}

/* Average address comparisons of a lookup of known addresses, over `n`
 * requests to addresses [0, hosts). */
static double
probes_per_lookup(struct hu_pool *p, struct event_base *base, int port, int hosts, int n)
{
    struct hu_pool_stats a, b;

    hu_pool_stats(p, &a);
    for (int i = 0; i < n; i += 100) {
        int from = (int)(((unsigned)i * 2654435761u) % (unsigned)hosts);
        int to = from + 100 < hosts ? from + 100 : hosts;
        if (post_range(p, base, port, from, to) != 0) {
            return -1;
        }
    }
    hu_pool_stats(p, &b);
    return (double)(b.probes - a.probes) / (double)(b.lookups - a.lookups);
}

static void
test_host_table_expires_and_stays_o1(void)
{
    struct event_base *base = event_base_new();
    struct hu_pool *p = hu_pool_new(base, 1000, 4);
    struct hu_pool_stats st;
    int port = 0;
    int fd = refusing_port(&port);
    double small, large;

    CHECK(fd >= 0);
    hu_pool_set_limits(p, 20000, 600000); /* no expiry while filling */
    CHECK_EQ_INT(post_range(p, base, port, 0, 10), 0);
    small = probes_per_lookup(p, base, port, 10, 2000);
    CHECK_EQ_INT(post_range(p, base, port, 10, 10000), 0);
    hu_pool_stats(p, &st);
    CHECK_EQ_INT(st.hosts, 10000);
    CHECK(st.buckets >= 8192);
    large = probes_per_lookup(p, base, port, 10000, 2000);
    fprintf(stderr, "probes per lookup: %.2f with 10 hosts, %.2f with 10000\n", small, large);
    CHECK(small > 0 && small <= 2.0);
    CHECK(large > 0 && large <= 2.0); /* a list would take ~5000 */
    /* idle (for 50 ms, from now on): every entry expires, the table shrinks */
    hu_pool_set_limits(p, 20000, 50);
    for (int spins = 0; spins < 200 && st.hosts > 0; spins++) {
        run(base, 50);
        hu_pool_stats(p, &st);
    }
    CHECK_EQ_INT(st.hosts, 0);
    CHECK(st.expired >= 10000);
    CHECK_EQ_INT(st.buckets, 64);
    hu_pool_free(p);
    event_base_free(base);
    close(fd);
}

static void
test_host_table_bounded(void)
{
    struct event_base *base = event_base_new();
    struct hu_pool *p = hu_pool_new(base, 1000, 4);
    struct hu_pool_stats st;
    int port = 0;
    int fd = refusing_port(&port);

    CHECK(fd >= 0);
    hu_pool_set_limits(p, 100, 60000);
    for (int i = 0; i < 2000; i += 250) {
        CHECK_EQ_INT(post_range(p, base, port, i, i + 250), 0);
        hu_pool_stats(p, &st);
        CHECK(st.hosts <= 100);
    }
    CHECK(st.evicted >= 1900);
    CHECK_EQ_INT(st.expired, 0);
    hu_pool_free(p);
    event_base_free(base);
    close(fd);
}

/* A server whose accept queue is full drops the SYN: HU_CONNECT_TIMEOUT,
 * apart from a refusal (HU_CONNECT). */
static void
test_connect_timeout(void)
{
    struct event_base *base = event_base_new();
    struct hu_pool *p = hu_pool_new(base, 200, 4);
    struct sockaddr_in sin = addr(0);
    socklen_t len = sizeof(sin);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int fill[8];
    int nfill = 0;
    struct result x;

    CHECK(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    CHECK(listen(lfd, 1) == 0); /* never accepted: the queue fills */
    getsockname(lfd, (struct sockaddr *)&sin, &len);
    for (int i = 0; i < 8; i++) { /* more than the queue holds (backlog + 1) */
        fill[nfill] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fill[nfill], (struct sockaddr *)&sin, sizeof(sin));
        nfill++;
    }
    usleep(100000); /* the handshakes that can complete have (loopback) */
    CHECK(post(p, ntohs(sin.sin_port), &x, base));
    run(base, 3000);
    CHECK(x.done);
    CHECK_EQ_INT(x.r, HU_CONNECT_TIMEOUT);
    CHECK_EQ_INT(x.connects, 0); /* no handshake: never told connected */
    buf_cleanup(&x.body);
    hu_pool_free(p);
    event_base_free(base);
    for (int i = 0; i < nfill; i++) {
        close(fill[i]);
    }
    close(lfd);
}

/* The loop runs late: by the time it looks, the connect timeout has passed
 * but the kernel completed the connection long before. Connected, not a
 * timeout (the busy loop is this side's, not the server's). */
static void
test_connect_done_late(void)
{
    struct event_base *base = event_base_new();
    struct hu_pool *p = hu_pool_new(base, 50, 4);
    struct server s;
    struct result x;

    server_start(&s, base);
    s.script = S_LENGTH;
    CHECK(post(p, s.port, &x, base));
    usleep(200000); /* the loop is busy elsewhere for 4 connect timeouts */
    run(base, 2000);
    CHECK(x.done);
    CHECK_EQ_INT(x.r, HU_OK);
    CHECK_EQ_INT(x.status, 200);
    buf_cleanup(&x.body);
    teardown(p, &s, base);
}

int
main(void)
{
    CHECK_RUN(test_keepalive_reuse);
    CHECK_RUN(test_chunked_and_eof_bodies);
    CHECK_RUN(test_pooled_connection_closed_by_server);
    CHECK_RUN(test_retry_on_a_fresh_connection);
    CHECK_RUN(test_failures);
    CHECK_RUN(test_connect_timeout);
    CHECK_RUN(test_connect_done_late);
    CHECK_RUN(test_interim_answer_and_early_answer);
    CHECK_RUN(test_cancel_mid_answer);
    CHECK_RUN(test_host_table_expires_and_stays_o1);
    CHECK_RUN(test_host_table_bounded);
    return check_summary();
}
