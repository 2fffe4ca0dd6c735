/* SPDX-License-Identifier: MIT
 *
 * http_server.h - a small HTTP/1.1 server on libevent, one event loop per
 * thread, requests parsed with http-parser (nodejs/http-parser 2.9).
 *
 * Why not evhttp: libevent 2.1's evhttp answers parse-level failures
 * (oversized body or headers, bad framing) with fixed HTML pages, has no
 * total header deadline (slowloris), and measured well below nginx on this
 * kind of machine. roster promises a JSON error with a 4xx for every bad
 * input, so it owns the connection handling: docs/architecture.md.
 *
 * Model
 *   - `threads` loops, each its own event_base and thread; one listening
 *     socket shared by all loops. A connection lives on the loop that
 *     accepted it; its requests are handled on that loop's thread.
 *   - Routes are tables, one per mounted service (exact path match, or a
 *     prefix for a path that ends in '*', as "/v1/models/" followed by
 *     '*'). Unknown path -> 404 JSON, known path with another method -> 405
 *     JSON with Allow.
 *   - A handler replies exactly once, either before returning or later from
 *     the same loop thread (after work elsewhere: see http_loop_post). A
 *     request whose client went away stays valid until it is replied to;
 *     the reply is then dropped.
 *   - Limits: header bytes, body bytes, header count, time to receive the
 *     headers, time to receive the whole request (headers and body, from
 *     its first byte), idle time between requests and between body bytes,
 *     write time, connection count, connections per client address, and a
 *     reserve of connection slots for clients that hold few. Each violation
 *     gets a JSON error (400, 408, 413, 429, 431, 503) and the connection
 *     is closed. common/http_limits.h has the flags every role shares.
 *
 * Threads: everything here runs on loop threads except http_server_new,
 * http_server_run, http_server_shutdown (any thread) and http_loop_post
 * (any thread).
 */
#ifndef ROSTER_HTTP_SERVER_H
#define ROSTER_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct http_server;
struct http_request;
struct http_loop;

typedef void http_handler(struct http_request *req, void *arg);

struct http_route {
    const char *method; /* "GET", "POST", "DELETE", ... */
    const char *path;   /* exact match ("/api/health"), or a prefix ending in '*' */
    http_handler *handler;
    unsigned flags; /* the application's; see http_req_route_flags() */
};

struct http_server_config {
    const char *host;    /* bind address; default "127.0.0.1" */
    int port;            /* 0 = let the kernel pick (see http_server_port) */
    int threads;         /* event loops; default 1 */
    size_t max_body;     /* default 1 MiB */
    size_t max_header;   /* request line + headers; default 16 KiB */
    int max_connections; /* default 4096 */
    /* Open connections one client address may hold (an IPv4 address, or
     * an IPv6 /64: one host's usual allocation); a connection over it is
     * answered 429 and closed. Default (0): max_connections / 2. */
    int max_connections_per_client;
    /* The last `connection_reserve` slots under max_connections go only to
     * an address that holds fewer than HTTP_RESERVE_CLIENT_MAX connections:
     * a flood from a few addresses cannot take them, a health check or a
     * new client can. Default (0): 64, at most max_connections / 4; -1 =
     * none. */
    int connection_reserve;
    int header_timeout_ms;  /* first byte of a request to end of its headers; default 10 s */
    int request_timeout_ms; /* first byte of a request to end of its body; default 30 s */
    int idle_timeout_ms;    /* keep-alive idle and body inactivity; default 60 s */
    int write_timeout_ms;   /* default 30 s */
};

/* See connection_reserve. */
#define HTTP_RESERVE_CLIENT_MAX 4

/* A hook run on every loop thread: at start (before any request) and at
 * the beginning of shutdown (to answer long-polls, etc.). */
typedef void http_loop_hook(struct http_loop *loop, void *arg);

/* Guard run before every handler (after routing). Returns true to go on;
 * false means the guard replied (e.g. 401). */
typedef bool http_guard(struct http_request *req, void *arg);

/* Called after each response is queued (status 0 = the client was gone). */
typedef void http_access_log(struct http_request *req, int status, size_t body_len,
                             int64_t duration_us, void *arg);

/* One application mounted on a server: its routes and what runs around
 * them. A process may mount several services on one server (the webserver
 * mounts the controller, the API server and the dashboard on one port):
 * a request goes to the first service, in mount order, with a route for
 * its path and method; that service's guard, access log and `arg` apply.
 * A request no route matches is logged by the first service. The hooks of
 * every service run, in mount order. Services keep per-loop state of
 * their own, indexed by http_loop_index(). */
struct http_service {
    const struct http_route *routes; /* ends with a NULL path; must outlive the server */
    void *arg;                       /* passed to handlers and hooks */
    http_guard *guard;               /* NULL: none */
    http_access_log *access_log;     /* NULL: none */
    http_loop_hook *on_start;        /* each loop thread, before any request */
    http_loop_hook *on_drain;        /* each loop thread, when shutdown begins */
    /* each loop thread, when a graceful shutdown's grace period ends with
     * requests still in flight: the place to answer them (an error, or an
     * error event to end a stream) before the connections close; those
     * last replies get a short time to leave */
    http_loop_hook *on_expire;
};

#define HTTP_MAX_SERVICES 8

/* Binds and listens; no thread is started yet and no service is mounted.
 * Returns 0, or -1 with a reason in `err`. evthread_use_pthreads() must
 * have been called (http_server_new does it if needed). */
int http_server_new(const struct http_server_config *cfg, struct http_server **out, char *err,
                    size_t errcap);

/* Mounts a service (copied) before http_server_run. Returns 0, or -1 when
 * HTTP_MAX_SERVICES are mounted already or svc->routes is NULL. */
int http_server_mount(struct http_server *srv, const struct http_service *svc);

/* The bound port (useful with port 0). */
int http_server_port(const struct http_server *srv);
int http_server_nloops(const struct http_server *srv);
struct http_loop *http_server_loop(struct http_server *srv, int i);

/* Runs every loop (threads-1 new threads plus the caller's) until
 * http_server_shutdown() has drained them. Returns 0. */
int http_server_run(struct http_server *srv);

/* Starts a graceful stop, from any thread (signal handlers included, via
 * libevent signals): stop accepting, close idle connections, let in-flight
 * requests finish, then make http_server_run return once no connection is
 * left or `grace_ms` has passed. A second call with grace_ms 0 stops at once. */
void http_server_shutdown(struct http_server *srv, int grace_ms);

/* For tests and fuzzing: serves the already-connected socket `fd` (a
 * socketpair end, say) as if loop `loop_index` had accepted it, bypassing
 * the connection limit. The server owns `fd` from the call on and closes it
 * when the connection ends (or at once on failure). Call it on that loop's
 * thread, or while no loop runs (driving the loop's event_base yourself).
 * Returns 0, or -1 (bad index, out of memory). */
int http_server_adopt(struct http_server *srv, int loop_index, int fd);

/* Frees a server whose run has returned (or never started). NULL-safe. */
void http_server_free(struct http_server *srv);

/* Calls fn(signo, arg) on loop 0's thread, as an ordinary callback, when
 * SIGTERM or SIGINT arrives, until http_server_free. Returns 0, or -1 (the
 * handlers could not be installed). */
typedef void http_signal_fn(int signo, void *arg);
int http_server_catch_signals(struct http_server *srv, http_signal_fn *fn, void *arg);

/* Request and connection counters summed over loops (racy but monotonic). */
struct http_server_stats {
    uint64_t requests;
    uint64_t status_2xx, status_3xx, status_4xx, status_5xx;
    uint64_t connections_accepted;
    uint64_t connections_rejected;            /* over max_connections (or the reserve) */
    uint64_t connections_rejected_per_client; /* over max_connections_per_client */
    int64_t connections_open;
    /* Loop-lag probe: each loop runs a timer every 5 ms and records how
     * late it fired (the time its thread spent inside one callback, or
     * off the CPU). Max over loops and over the process's life. */
    int64_t loop_stall_max_us;
    uint64_t loop_stalls;     /* firings late by >= 5 ms, summed over loops */
    int64_t loop_busy_max_us; /* the most of one lateness that was the loop thread's own
                               * CPU time (a long callback, not a wait for a CPU) */
};
void http_server_get_stats(struct http_server *srv, struct http_server_stats *out);

/* ---- loops -------------------------------------------------------------- */

/* A unit of work to run on a loop thread. Embed it in your own struct (no
 * allocation happens here) and recover the struct in `fn`. */
struct http_task {
    void (*fn)(struct http_task *t);
    struct http_task *next;
};

/* Queues `t` to run on `loop`'s thread; any thread may call it. If the
 * loop has already stopped, the task runs at http_server_free time on the
 * freeing thread (so an owner that waits for its task never leaks). */
void http_loop_post(struct http_loop *loop, struct http_task *t);

struct event_base *http_loop_base(struct http_loop *loop);
/* 0 .. http_server_nloops()-1: the index services keep per-loop state by. */
int http_loop_index(const struct http_loop *loop);
/* True once shutdown has begun. */
bool http_loop_draining(const struct http_loop *loop);

/* ---- requests (loop thread only) ------------------------------------------ */

struct http_loop *http_req_loop(const struct http_request *req);
const char *http_req_method(const struct http_request *req);
const char *http_req_path(const struct http_request *req);  /* without the query */
const char *http_req_query(const struct http_request *req); /* raw, "" if none */
/* Case-insensitive lookup; NULL if absent. Valid until the reply. */
const char *http_req_header(const struct http_request *req, const char *name);
const char *http_req_body(const struct http_request *req, size_t *len_out);
const struct sockaddr *http_req_peer(const struct http_request *req);
const char *http_req_peer_str(const struct http_request *req);
const char *http_req_id(const struct http_request *req); /* X-Request-Id, or generated */
unsigned http_req_route_flags(const struct http_request *req);
/* True when the request carries `secret` (non-empty) in X-Roster-Secret or
 * as "Authorization: Bearer <secret>"; compared in constant time. */
bool http_req_has_secret(const struct http_request *req, const char *secret);
/* For a request that only its source address authorises (no secret): true
 * when a browser may have been made to send it by a page of another site.
 * That is: Sec-Fetch-Site: cross-site; an Origin that differs from Host
 * (cross-site request forgery: browsers send a "simple" POST to any site
 * without asking); or an Origin equal to a Host that is a name rather than
 * an IP literal or localhost (DNS rebinding: an attacker's name resolved
 * to this address makes its page same-origin). Requests without Origin
 * (not from a browser: DB-GPT's and roster's clients) are never refused. */
bool http_req_forged_by_browser(const struct http_request *req);
/* True once the client has disconnected (a reply would be dropped). */
bool http_req_closed(const struct http_request *req);
/* Called (once, on the loop thread) if the client disconnects before the
 * reply; the request stays valid and must still be replied to. */
void http_req_on_close(struct http_request *req, void (*cb)(struct http_request *, void *),
                       void *arg);
/* Bytes of the reply queued for the client and not yet written: a stream
 * that forwards a faster producer watches it to apply back-pressure. */
size_t http_req_output_pending(const struct http_request *req);
/* Calls cb(req, arg) once, on the loop thread, when the queued output has
 * drained to at most `low` bytes. Not called if the client goes away (the
 * on_close callback runs) or the request ends first. */
void http_req_on_drain(struct http_request *req, size_t low,
                       void (*cb)(struct http_request *, void *), void *arg);

/* A slot for the handler's own state while the request is pending. */
void http_req_set_data(struct http_request *req, void *data);
void *http_req_get_data(const struct http_request *req);

/* ---- replies (exactly one per request; loop thread only) --------------- */

/* `extra_headers` is NULL or complete lines ("Name: value\r\n..."). The
 * body is copied. After this call `req` is gone. */
void http_reply(struct http_request *req, int status, const char *content_type, const void *body,
                size_t len, const char *extra_headers);

/* As http_reply, without copying: `body` must stay valid until `done(ctx)`
 * is called (from the loop thread, once the bytes are written or dropped). */
void http_reply_ref(struct http_request *req, int status, const char *content_type,
                    const void *body, size_t len, const char *extra_headers,
                    void (*done)(void *ctx), void *ctx);

/* A streamed reply (server-sent events, DB-GPT's NUL-framed stream): the
 * status line and headers now, with Transfer-Encoding: chunked (for an
 * HTTP/1.0 client: no length, and the connection closes at the end); then
 * http_stream_write() any number of times, each write one chunk; then
 * http_stream_end() exactly once, after which `req` is gone. If the client
 * disconnects meanwhile, the on_close callback runs and writes are dropped;
 * the handler must still call http_stream_end. Loop thread only. */
void http_stream_start(struct http_request *req, int status, const char *content_type,
                       const char *extra_headers);
void http_stream_write(struct http_request *req, const void *data, size_t len);
/* One chunk made of n pieces (an SSE event: "data: ", the JSON, "\n\n"). */
struct iovec;
void http_stream_writev(struct http_request *req, const struct iovec *iov, int n);
void http_stream_end(struct http_request *req);

/* {"error":{"message":"...","type":"...","param":null,"code":"..."}}, the
 * OpenAI error shape that every roster service uses. 429 and 503 carry
 * "Retry-After: 1". */
void http_reply_error(struct http_request *req, int status, const char *type, const char *code,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Ends a stream that failed after it began: one SSE event
 * `data: {"error":{...,"type":"server_error","code":code}}` (the OpenAI
 * SDKs raise it), then http_stream_end. No [DONE]: the client must not
 * take the stream for complete. */
void http_stream_error(struct http_request *req, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The reason phrase for `status` ("Not Found"). */
const char *http_status_text(int status);

#endif
