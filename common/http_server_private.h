/* SPDX-License-Identifier: MIT
 *
 * http_server_private.h - what the files of the HTTP server share and
 * nothing else includes: its structs, a few small helpers, and the
 * functions one file calls in another (prefix hs_). The public API is
 * http_server.h.
 *
 * Files (one seam each):
 *   http_server.c   the server and its loops: set-up, threads, mailbox,
 *                   drain and shutdown, signals, counters
 *   http_conn.c     a connection's life: admission (connection limits,
 *                   per-client counts, the reserve), timers and deadlines,
 *                   libevent callbacks, feeding the parser, dispatch
 *   http_parse.c    http-parser callbacks: a request's line, headers and
 *                   body into struct http_request, with the size, version
 *                   and framing checks
 *   http_request.c  the request object and its accessors (http_req_*)
 *   http_reply.c    replies: status line and headers, framing rules (HEAD,
 *                   204, 304), error bodies, ending a request
 *   http_stream.c   streamed replies (chunked, or to the close for 1.0)
 *
 * Threads and ownership
 *   - A struct http_loop belongs to its loop thread; so do the connections
 *     (struct conn) and requests it accepted: only that thread reads or
 *     writes them, and a connection is freed only from a libevent callback
 *     (never inside hs_process_input), so nothing on the stack sees it go.
 *   - Shared between threads, without locks: struct http_server's
 *     configuration (written before the loops start, read-only after),
 *     open_conns and the per-client counters in `clients` (atomics, relaxed:
 *     only counts), and each loop's statistics counters (atomics, read by
 *     http_server_get_stats from any thread).
 *   - Locks a loop thread may take: only its own loop's mbox_mu, held for a
 *     few pointer moves (queueing or taking posted tasks). No other lock is
 *     taken anywhere in the server; a loop thread never blocks on anything
 *     another thread holds for long.
 *
 * DESIGN
 *
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
 *   the first byte to the end of the headers) and then the request
 *   deadline (from the same first byte to the end of the body) answer 408,
 *   as does idle time between bytes; limits answer 413/431; a version
 *   other than 1.0/1.1 505; parse errors 400. The parser is paused at the
 *   end of each message, so pipelined requests wait in the input buffer.
 * - HANDLING: the handler owns the request until it replies. Input is still
 *   read (so a disconnect is noticed: the request is then detached and its
 *   on_close callback runs) but not parsed, and the read timeout is off
 *   (long polls).
 * - CLOSING: the response is being written; the connection is freed when
 *   the output buffer drains. End of input outside HANDLING with responses
 *   still queued (a client that half-closed after its requests) also leads
 *   here, so those responses are delivered in full.
 * A connection is freed only from libevent callbacks (never inside
 * hs_process_input), so nothing on the call stack can see it disappear.
 *
 * Requests own their memory: one buffer for the request line and headers
 * (NUL-separated, looked up by offset), one for the body.
 */
#ifndef ROSTER_HTTP_SERVER_PRIVATE_H
#define ROSTER_HTTP_SERVER_PRIVATE_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <http_parser.h>

#include "buf.h"
#include "http_server.h"

/* A literal and its length, for evbuffer_add (curl's STRCONST). */
#define STRCONST(s) (s), (sizeof(s) - 1)

#define MAX_HEADERS              64
#define HANDLING_READ_HIGH_WATER (64 * 1024)
#define HS_LAG_PERIOD_US         5000 /* the loop-lag probe's period */
#define HS_STALL_US              5000 /* a firing this late counts as a stall */

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
    bool is_head;    /* a HEAD (its request line read): responses carry no body */
    bool streaming;  /* http_stream_start ran: chunks until http_stream_end */
    bool no_content; /* the stream's status allows no content (204, 304): writes dropped */
    bool chunked;    /* the stream is chunked (HTTP/1.1), else ends with the connection */
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
    struct event *deadline;        /* header deadline, then the request's (see arm_deadline) */
    int64_t request_deadline_us;   /* monotonic: the whole request must be read by then */
    _Atomic uint32_t *client_slot; /* this address's count in srv->clients (NULL: none) */
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
    _Atomic uint64_t n_requests, n_2xx, n_3xx, n_4xx, n_5xx, n_accepted, n_rejected,
        n_rejected_client;
    /* loop-lag probe (http_server.c): a timer every HS_LAG_PERIOD_US; how
     * late it fired is how long the loop could not run its callbacks */
    struct event *lag_ev;
    int64_t lag_due_us;          /* monotonic time it should fire */
    _Atomic int64_t lag_max_us;  /* the latest it fired, since start */
    _Atomic uint64_t n_stalls;   /* firings late by >= HS_STALL_US */
    int64_t lag_cpu_us;          /* the thread's CPU time when armed */
    _Atomic int64_t busy_max_us; /* the most of a lateness that was the thread's own CPU time */
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
    /* Open connections per client address, shared by every loop: a table
     * of counters indexed by a keyed hash of the address (IPv4, or the /64
     * of IPv6). Lock-free (one fetch_add at accept, one fetch_sub at
     * close). Two addresses that share a counter share a cap; with at
     * least 16 counters per connection slot that is rare, and the random
     * key keeps a client from aiming at another's counter. */
    _Atomic uint32_t *clients;
    uint32_t clients_mask;
    uint64_t clients_key[2];
    struct event *sig_ev[2]; /* SIGTERM, SIGINT (http_server_catch_signals) */
    http_signal_fn *sig_fn;
    void *sig_arg;
};

/* ---- small helpers (any file, loop thread) --------------------------------- */

static inline int64_t
hs_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline const char *
hs_loop_date(struct http_loop *loop)
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

static inline void
hs_count_status(struct http_loop *loop, int status)
{
    atomic_fetch_add_explicit(&loop->n_requests, 1, memory_order_relaxed);
    _Atomic uint64_t *c = status < 300   ? &loop->n_2xx
                          : status < 400 ? &loop->n_3xx
                          : status < 500 ? &loop->n_4xx
                                         : &loop->n_5xx;
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* ---- http_request.c ---------------------------------------------------------- */

/* A new request on `c` (NULL: out of memory); the caps come from the
 * server's configuration. hs_req_free is NULL-safe. */
struct http_request *hs_req_new(struct conn *c);
void hs_req_free(struct http_request *req);
/* The loop's list of requests in a handler's hands (HANDLING). */
void hs_pending_add(struct http_request *req);
void hs_pending_remove(struct http_request *req);

/* ---- http_parse.c ------------------------------------------------------------- */

/* The callbacks that fill conn->req; parser.data is the struct conn. */
extern const http_parser_settings hs_parser_settings;

/* ---- http_conn.c ---------------------------------------------------------------- */

/* Frees a connection (from a libevent callback only), detaching a request
 * that a handler still owns (its on_close runs). */
void hs_conn_free(struct conn *c);
/* The bufferevent's read timeout (0: none) and the write timeout. */
void hs_set_read_timeout(struct conn *c, int ms);
/* Ends the connection once its output is written. */
void hs_close_after_write(struct conn *c);
/* (Re)arms the connection's deadline timer for monotonic `at_us`, never
 * later than the whole request's deadline. */
void hs_arm_deadline(struct conn *c, int64_t at_us);
/* Parses what is buffered while the connection is IDLE or READING. */
void hs_process_input(struct conn *c);
/* The listener's callbacks (set up by http_server_new). */
void hs_on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                  void *arg);
void hs_on_accept_error(struct evconnlistener *l, void *arg);

/* ---- http_reply.c ---------------------------------------------------------------- */

/* True when the request being answered on `c` is a HEAD. */
bool hs_answering_head(const struct conn *c);
/* Statuses whose responses never have content: 1xx, 204, 304. */
bool hs_status_no_content(int status);
/* Status line and headers, and `body` (copied) unless it is NULL, the
 * request is a HEAD or the status has no content. */
void hs_write_response(struct conn *c, int status, const char *ctype, const void *body, size_t len,
                       const char *extra, bool keepalive, const char *reqid);
/* The request is answered: access log, counters, then keep-alive (the
 * next pipelined request) or close. `req` is gone afterwards. */
void hs_finish_request(struct http_request *req, int status, size_t len);
/* `before` + the OpenAI error object + `after` into b (initialised here).
 * Returns 0, or -1 when it does not fit. */
int hs_error_body(struct buf *b, const char *before, const char *after, const char *type,
                  const char *code, const char *fmt, va_list ap)
    __attribute__((format(printf, 6, 0)));

#endif
