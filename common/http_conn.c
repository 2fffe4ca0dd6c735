/* SPDX-License-Identifier: MIT
 *
 * http_conn.c - a connection's life: admission (the connection limit, the cap per
 * client address, the reserve), the header and request deadlines and the
 * idle timer, the libevent callbacks, feeding http-parser and handing a
 * complete request to its route. See http_server_private.h (DESIGN).
 *
 * Threads: loop threads only (each connection stays on the loop that accepted it);
 * conn_admit runs on whichever loop accepts and touches only atomics.
 */
#include "http_server_private.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "json_check.h"
#include "json_write.h"
#include "netaddr.h"

/* Gives back what conn_admit (or http_server_adopt) took. */
static void
conn_release_slot(struct http_server *srv, _Atomic uint32_t *slot)
{
    if (slot) {
        atomic_fetch_sub_explicit(slot, 1, memory_order_relaxed);
    }
    atomic_fetch_sub_explicit(&srv->open_conns, 1, memory_order_relaxed);
}

/* The client key of an address: the IPv4 address (IPv4-mapped IPv6 too)
 * in the low 32 bits with 4 above them, or the first 64 bits of an IPv6
 * one. Returns false for anything else (a socketpair: not counted). An
 * IPv6 prefix equal to an IPv4 key only shares a counter with it, as a
 * hash collision would. */
static bool
client_key(const struct sockaddr *sa, uint64_t *key)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
        *key = ((uint64_t)4 << 32) | ntohl(in4->sin_addr.s_addr);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        uint64_t k = 0;
        if (memcmp(b, mapped, sizeof(mapped)) == 0) {
            *key = ((uint64_t)4 << 32) | ((uint64_t)b[12] << 24) | ((uint64_t)b[13] << 16) |
                   ((uint64_t)b[14] << 8) | b[15];
            return true;
        }
        for (int i = 0; i < 8; i++) {
            k = (k << 8) | b[i];
        }
        *key = k;
        return true;
    }
    return false;
}

/* A keyed mix of the client key (not a MAC: the key only keeps clients
 * from choosing which counter they land on). */
static uint32_t
client_hash(const struct http_server *srv, uint64_t k)
{
    k ^= srv->clients_key[0];
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k ^= srv->clients_key[1];
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 29;
    return (uint32_t)k;
}

enum admit_result { ADMIT_OK, ADMIT_FULL, ADMIT_CLIENT_CAP };

/* Takes a connection slot for a client at `sa`: lock-free, O(1). Both
 * counts are raised first and checked after, so concurrent accepts on
 * several loops never overshoot a limit (at worst one is refused that a
 * moment later would have fit). On ADMIT_OK *slot_out is the client's
 * counter (NULL: not counted) and conn_release_slot gives both back. */
static enum admit_result
conn_admit(struct http_server *srv, const struct sockaddr *sa, _Atomic uint32_t **slot_out)
{
    const struct http_server_config *cfg = &srv->cfg;
    uint64_t key = 0;
    bool counted = client_key(sa, &key);
    _Atomic uint32_t *slot = NULL;
    int64_t open = atomic_fetch_add_explicit(&srv->open_conns, 1, memory_order_relaxed) + 1;
    uint32_t held = 0;

    *slot_out = NULL;
    if (open > cfg->max_connections) {
        atomic_fetch_sub_explicit(&srv->open_conns, 1, memory_order_relaxed);
        return ADMIT_FULL;
    }
    if (counted && srv->clients) {
        slot = &srv->clients[client_hash(srv, key) & srv->clients_mask];
        held = atomic_fetch_add_explicit(slot, 1, memory_order_relaxed) + 1;
    }
    if (slot && held > (uint32_t)cfg->max_connections_per_client) {
        conn_release_slot(srv, slot);
        return ADMIT_CLIENT_CAP;
    }
    /* the reserve: only for an address that holds few (this one included) */
    if (open > cfg->max_connections - cfg->connection_reserve && held > HTTP_RESERVE_CLIENT_MAX) {
        conn_release_slot(srv, slot);
        return ADMIT_FULL;
    }
    *slot_out = slot;
    return ADMIT_OK;
}

void
hs_conn_free(struct conn *c)
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
            hs_req_free(c->req);
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
    conn_release_slot(loop->srv, c->client_slot);
    free(c);
    if (loop->draining && loop->nconns == 0) {
        event_base_loopexit(loop->base, NULL);
    }
}

void
hs_set_read_timeout(struct conn *c, int ms)
{
    struct timeval rtv = {ms / 1000, (ms % 1000) * 1000};
    struct timeval wtv = {c->loop->srv->cfg.write_timeout_ms / 1000,
                          (c->loop->srv->cfg.write_timeout_ms % 1000) * 1000};

    bufferevent_set_timeouts(c->bev, ms > 0 ? &rtv : NULL, &wtv);
}

/* Ends the connection after the current output is written. */
void
hs_close_after_write(struct conn *c)
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

/* A protocol-level failure before a handler ran: JSON error, then close.
 * `perr` is the parser's error (HPE_OK for a timeout). The answer is a
 * GET-like one (a body) unless the request line was read as a HEAD's: a
 * client that sent HEAD reads no body, whatever else went wrong. The
 * method is complete once the parser is past it: any error but an invalid
 * method (or none yet begun), or a URL already seen (a timeout). */
static void
fail_conn(struct conn *c, int status, const char *code, const char *msg, enum http_errno perr)
{
    struct buf b;
    struct jw w;

    if (c->req && !c->req->is_head && c->parser.method == HTTP_HEAD) {
        bool method_done = perr == HPE_OK
                               ? c->req->head.len > 0
                               : perr != HPE_INVALID_METHOD && perr != HPE_CB_message_begin;
        c->req->is_head = method_done;
    }
    buf_init(&b, 4096);
    jw_init(&w, &b);
    jw_raw(&w, "{\"error\":{\"message\":");
    jw_str(&w, msg);
    jw_raw(&w, ",\"type\":\"invalid_request_error\",\"param\":null,\"code\":");
    jw_str(&w, code);
    jw_raw(&w, "}}");
    hs_write_response(c, status, "application/json", b.data, b.len, NULL, false,
                      c->req ? c->req->id : NULL);
    buf_cleanup(&b);
    hs_count_status(c->loop, status);
    if (c->req) {
        hs_req_free(c->req);
        c->req = NULL;
    }
    hs_close_after_write(c);
}

/* (Re)arms the connection's one timer for the monotonic time `at_us`,
 * never later than the whole request's deadline. */
void
hs_arm_deadline(struct conn *c, int64_t at_us)
{
    int64_t left;
    struct timeval tv;

    if (at_us > c->request_deadline_us) {
        at_us = c->request_deadline_us;
    }
    left = at_us - hs_now_us();
    if (left < 0) {
        left = 0;
    }
    tv.tv_sec = (time_t)(left / 1000000);
    tv.tv_usec = (suseconds_t)(left % 1000000);
    evtimer_add(c->deadline, &tv);
}

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
    evtimer_del(c->deadline);
    hs_set_read_timeout(c, 0);
    bufferevent_setwatermark(c->bev, EV_READ, 0, HANDLING_READ_HIGH_WATER);
    hs_pending_add(req);
    /* the first service (in mount order) with a route for the path and
     * method wins; the others' routes for the path only feed Allow */
    for (int i = 0; i < srv->nsvcs && !match; i++) {
        for (const struct http_route *r = srv->svcs[i].routes; r->path; r++) {
            if (!route_matches(r->path, http_req_path(req))) {
                continue;
            }
            path_known = true;
            /* HEAD is GET without the body (RFC 9110 section 9.3.2): a GET
             * route answers it, and write_response drops the body */
            if (strcmp(r->method, req->method) == 0 ||
                (req->is_head && strcmp(r->method, "GET") == 0)) {
                match = r;
                svc = &srv->svcs[i];
                break;
            }
            size_t used = strlen(allow);
            if (!strstr(allow, r->method)) {
                snprintf(allow + used, sizeof(allow) - used, "%s%s%s", used ? ", " : "", r->method,
                         strcmp(r->method, "GET") == 0 ? ", HEAD" : "");
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

void
hs_process_input(struct conn *c)
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
            int64_t now = hs_now_us();
            c->state = S_READING;
            c->request_deadline_us = now + (int64_t)srv->cfg.request_timeout_ms * 1000;
            hs_set_read_timeout(c, srv->cfg.idle_timeout_ms);
            hs_arm_deadline(c, now + (int64_t)srv->cfg.header_timeout_ms * 1000);
        }
        n = http_parser_execute(&c->parser, &hs_parser_settings, v.iov_base, v.iov_len);
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
                          : c->error_status == 505 ? "http_version_not_supported"
                                                   : "bad_request",
                          c->error_msg, e);
            } else {
                char msg[160];
                snprintf(msg, sizeof(msg), "malformed HTTP request: %s", http_errno_description(e));
                fail_conn(c, 400, "bad_request", msg, e);
            }
            break;
        }
    }
    c->processing = false;
}

static void
on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    (void)bev;
    if (c->state == S_IDLE || c->state == S_READING) {
        hs_process_input(c);
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
        hs_conn_free(c);
    }
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;

    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) && c->state == S_READING) {
        fail_conn(c, 408, "request_timeout", "timed out reading the request", HPE_OK);
        return;
    }
    if ((what & BEV_EVENT_EOF) && c->state != S_HANDLING &&
        evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
        /* The client half-closed (shutdown(SHUT_WR) after its requests) but
         * may still read: send what is queued, then close. (HANDLING keeps
         * treating EOF as a disconnect: see the DESIGN note.) */
        hs_close_after_write(c);
        return;
    }
    hs_conn_free(c); /* EOF, error, idle or write timeout */
}

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd;
    (void)what;
    if (c->state == S_READING) {
        bool headers_read = c->req && c->req->method;
        fail_conn(c, 408, "request_timeout",
                  headers_read ? "timed out reading the request body (the whole request must "
                                 "arrive within the request deadline)"
                               : "timed out waiting for the request headers",
                  HPE_OK);
    }
}

/* Answers a connection it will not serve (without reading its request)
 * and closes it: 503 when the server is full, 429 when the client's
 * address holds its share already. */
static void
reject_connection(evutil_socket_t fd, bool client_cap)
{
#define TOO_MANY                                                                                   \
    "{\"error\":{\"message\":\"too many connections\",\"type\":\"server_error\","                  \
    "\"param\":null,\"code\":\"too_many_connections\"}}"
#define TOO_MANY_CLIENT                                                                            \
    "{\"error\":{\"message\":\"too many connections from this address\",\"type\":"                 \
    "\"rate_limit_error\",\"param\":null,\"code\":\"too_many_connections_per_client\"}}"
    char resp[512];
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                     "Retry-After: 1\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s",
                     client_cap ? "429 Too Many Requests" : "503 Service Unavailable",
                     client_cap ? sizeof(TOO_MANY_CLIENT) - 1 : sizeof(TOO_MANY) - 1,
                     client_cap ? TOO_MANY_CLIENT : TOO_MANY);
    ssize_t r = send(fd, resp, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);

    (void)r;
    evutil_closesocket(fd);
}

/* Sets up a connection on `loop` for the connected socket `fd` and the
 * slot taken for it (both owned from here on: closed and given back on
 * failure). Shared by on_accept and http_server_adopt. */
static int
conn_setup(struct http_loop *loop, evutil_socket_t fd, const struct sockaddr *sa, size_t salen,
           _Atomic uint32_t *slot)
{
    struct http_server *srv = loop->srv;
    struct conn *c;
    int one = 1;

    c = calloc(1, sizeof(*c));
    if (!c) {
        evutil_closesocket(fd);
        conn_release_slot(srv, slot);
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
        conn_release_slot(srv, slot);
        return -1;
    }
    c->client_slot = slot;
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
    atomic_fetch_add_explicit(&loop->n_accepted, 1, memory_order_relaxed);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    hs_set_read_timeout(c, srv->cfg.idle_timeout_ms);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    return 0;
}

void
hs_on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
             void *arg)
{
    struct http_loop *loop = arg;
    struct http_server *srv = loop->srv;

    _Atomic uint32_t *slot = NULL;
    enum admit_result r = loop->draining ? ADMIT_FULL : conn_admit(srv, sa, &slot);

    (void)l;
    if (r != ADMIT_OK) {
        atomic_fetch_add_explicit(r == ADMIT_CLIENT_CAP ? &loop->n_rejected_client
                                                        : &loop->n_rejected,
                                  1, memory_order_relaxed);
        reject_connection(fd, r == ADMIT_CLIENT_CAP);
        return;
    }
    (void)conn_setup(loop, fd, sa, salen > 0 ? (size_t)salen : 0, slot);
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
    /* outside the limits (tests and fuzzing), but counted as open */
    atomic_fetch_add_explicit(&srv->open_conns, 1, memory_order_relaxed);
    return conn_setup(&srv->loops[loop_index], fd, (const struct sockaddr *)&ss, sslen, NULL);
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

void
hs_on_accept_error(struct evconnlistener *l, void *arg)
{
    struct http_loop *loop = arg;
    struct timeval tv = {0, 100000};

    /* EMFILE and friends: pause accepting briefly instead of spinning */
    evconnlistener_disable(l);
    event_base_once(loop->base, -1, EV_TIMEOUT, on_accept_resume, loop, &tv);
}
