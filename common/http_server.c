/* SPDX-License-Identifier: MIT
 *
 * http_server.c - the server and its loops: set-up (the listening socket, one
 * event_base per loop, the per-client table), the loop threads, the
 * mailbox that other threads post tasks through, graceful drain and
 * shutdown, signals and counters. The rest of the server is in the files
 * http_server_private.h lists.
 *
 * Threads: see http_server.h for each function; the mailbox lock (mbox_mu) is the
 * only lock, held for a few pointer moves.
 */
#define _GNU_SOURCE 1 /* accept4 flags used by libevent */
#include "http_server_private.h"

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/thread.h>

#include "util.h"

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
            hs_conn_free(c);
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

/* The loop-lag probe: a one-shot timer re-armed every HS_LAG_PERIOD_US;
 * how late it fires is how long the loop's thread could not run callbacks
 * (a long callback, lock or page fault, or the CPU taken away). Costs a
 * wake-up per period per loop, nothing else. */
static int64_t
thread_cpu_us(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) {
        return 0;
    }
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
arm_lag(struct http_loop *loop)
{
    struct timeval tv = {0, HS_LAG_PERIOD_US};

    loop->lag_due_us = util_mono_us() + HS_LAG_PERIOD_US;
    loop->lag_cpu_us = thread_cpu_us();
    evtimer_add(loop->lag_ev, &tv);
}

static void
on_lag(evutil_socket_t fd, short what, void *arg)
{
    struct http_loop *loop = arg;
    int64_t late = util_mono_us() - loop->lag_due_us;
    /* The part of the lateness the thread spent running (its own
     * callbacks), not waiting for a CPU or stopped: its CPU time since it
     * armed the timer, less the period (it may have been busy all of it
     * and still fired on time). A lower bound, within one period. */
    int64_t busy = thread_cpu_us() - loop->lag_cpu_us - HS_LAG_PERIOD_US;

    (void)fd;
    (void)what;
    if (busy > late) {
        busy = late;
    }
    if (busy < 0) {
        busy = 0;
    }
    if (late > atomic_load_explicit(&loop->lag_max_us, memory_order_relaxed)) {
        atomic_store_explicit(&loop->lag_max_us, late, memory_order_relaxed);
    }
    if (busy > atomic_load_explicit(&loop->busy_max_us, memory_order_relaxed)) {
        atomic_store_explicit(&loop->busy_max_us, busy, memory_order_release);
    }
    if (late >= HS_STALL_US) {
        atomic_fetch_add_explicit(&loop->n_stalls, 1, memory_order_relaxed);
    }
    arm_lag(loop);
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
    arm_lag(loop);
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

/* An event base for a loop. With epoll's change list, the changes to one
 * descriptor within a loop turn are applied as one epoll_ctl at the next
 * wait, or none when they cancel out: a stream's connection, whose output
 * event libevent arms when a turn adds bytes and disarms when the next
 * turn has written them, stays armed instead of costing two system calls
 * per turn (bench/bench_apiserver.sh, streamed: 10 -> 6 per request in the
 * worker, 6.5 -> 4 in the apiserver). libevent's caveat: unsafe with
 * descriptors cloned by dup(), which no loop has. */
static struct event_base *
new_base(void)
{
    struct event_config *cfg = event_config_new();
    struct event_base *base;

    if (!cfg) {
        return NULL;
    }
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return base;
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
    /* The accept queue: the kernel caps it at net.core.somaxconn (4096 on
     * Debian 12). 1024 overflowed when thousands of streams opened at once
     * against a loop busy writing (bench/scale_streams.sh): a dropped SYN
     * costs its client a 1 s retransmit, past the apiserver's connect
     * timeout. The listeners below are made with backlog 0 ("already
     * listening"): a negative one has libevent call listen(fd, 128) again,
     * which shrank this queue to 128 whatever was asked here. */
    if (bind(fd, (struct sockaddr *)&ss, sslen) != 0 || listen(fd, 65535) != 0) {
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
    struct http_server *srv = calloc(1, sizeof(*srv));
    uint64_t prefix;

    *out = NULL;
    if (!srv) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    evthread_use_pthreads();
    srv->cfg = *cfg;
    srv->cfg.host = cfg->host && *cfg->host ? cfg->host : "127.0.0.1";
    srv->cfg.threads = cfg->threads > 0 ? cfg->threads : 1;
    srv->cfg.max_body = cfg->max_body ? cfg->max_body : 1024 * 1024;
    srv->cfg.max_header = cfg->max_header ? cfg->max_header : 16 * 1024;
    srv->cfg.max_connections = cfg->max_connections > 0 ? cfg->max_connections : 4096;
    if (cfg->max_connections_per_client <= 0) {
        srv->cfg.max_connections_per_client =
            srv->cfg.max_connections > 1 ? srv->cfg.max_connections / 2 : 1;
    }
    if (cfg->connection_reserve < 0) {
        srv->cfg.connection_reserve = 0;
    } else if (cfg->connection_reserve == 0) {
        srv->cfg.connection_reserve = 64;
    }
    if (srv->cfg.connection_reserve > srv->cfg.max_connections / 4) {
        srv->cfg.connection_reserve = srv->cfg.max_connections / 4;
    }
    srv->cfg.header_timeout_ms = cfg->header_timeout_ms > 0 ? cfg->header_timeout_ms : 10000;
    srv->cfg.request_timeout_ms = cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms : 30000;
    if (srv->cfg.header_timeout_ms > srv->cfg.request_timeout_ms) {
        srv->cfg.header_timeout_ms = srv->cfg.request_timeout_ms;
    }
    srv->cfg.idle_timeout_ms = cfg->idle_timeout_ms > 0 ? cfg->idle_timeout_ms : 60000;
    srv->cfg.write_timeout_ms = cfg->write_timeout_ms > 0 ? cfg->write_timeout_ms : 30000;
    srv->fd = -1;
    /* a power of two with at least 16 counters per connection slot */
    srv->clients_mask = 1023;
    while (srv->clients_mask < (uint32_t)srv->cfg.max_connections * 16 - 1 &&
           srv->clients_mask < (1u << 24) - 1) {
        srv->clients_mask = srv->clients_mask * 2 + 1;
    }
    srv->clients = calloc((size_t)srv->clients_mask + 1, sizeof(*srv->clients));
    if (!srv->clients) {
        snprintf(err, errcap, "out of memory");
        http_server_free(srv);
        return -1;
    }
    util_random_bytes(srv->clients_key, sizeof(srv->clients_key));
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
        loop->base = new_base();
        loop->mbox_ev = loop->base ? event_new(loop->base, -1, 0, on_mailbox, loop) : NULL;
        loop->lag_ev = loop->base ? evtimer_new(loop->base, on_lag, loop) : NULL;
        loop->listener = loop->base ? evconnlistener_new(loop->base, hs_on_accept, loop,
                                                         LEV_OPT_CLOSE_ON_EXEC, 0, srv->fd)
                                    : NULL;
        if (!loop->base || !loop->mbox_ev || !loop->lag_ev || !loop->listener) {
            snprintf(err, errcap, "cannot set up event loop %d", i);
            http_server_free(srv);
            return -1;
        }
        evconnlistener_set_error_cb(loop->listener, hs_on_accept_error);
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
        out->connections_rejected_per_client +=
            atomic_load_explicit(&l->n_rejected_client, memory_order_relaxed);
        /* busy before lag (stored in the other order): a busy max read is
         * never above the lag max read with it */
        int64_t busy = atomic_load_explicit(&l->busy_max_us, memory_order_acquire);
        int64_t lag = atomic_load_explicit(&l->lag_max_us, memory_order_relaxed);
        if (lag > out->loop_stall_max_us) {
            out->loop_stall_max_us = lag;
        }
        if (busy > out->loop_busy_max_us) {
            out->loop_busy_max_us = busy;
        }
        out->loop_stalls += atomic_load_explicit(&l->n_stalls, memory_order_relaxed);
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
            hs_conn_free(loop->conns);
        }
        while (loop->pending) {
            struct http_request *req = loop->pending;
            hs_pending_remove(req);
            hs_req_free(req);
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
        if (loop->lag_ev) {
            event_free(loop->lag_ev);
        }
        if (loop->base) {
            event_base_free(loop->base);
        }
        pthread_mutex_destroy(&loop->mbox_mu);
    }
    free(srv->loops);
    free(srv->clients);
    if (srv->fd >= 0) {
        close(srv->fd);
    }
    free(srv);
}
