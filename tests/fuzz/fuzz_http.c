/* SPDX-License-Identifier: MIT
 *
 * fuzz_http.c - common/http_server.c: a connection's whole life, from raw
 * client bytes to the bytes the server writes back.
 *
 * One server per process (created on first use, never run: this file
 * drives its loop 0 by hand). For each input: a socketpair, one end
 * adopted by the server (http_server_adopt), the input written to the
 * other end and then shutdown(SHUT_WR), the loop driven with
 * EVLOOP_NONBLOCK until the server has closed its end and every
 * asynchronous reply has been sent, or a bound is hit (a hang: abort).
 *
 * Routes: synchronous replies (/sync, /echo, /ref with http_reply_ref, /big
 * with more bytes than the socket buffers, /nocontent 204, /notmod 304 and
 * /stream204 a stream started with 204, the controller's body and query
 * parsers on /api/controller/models), an
 * asynchronous one (/async: replied from a zero-delay event timer), and a
 * guard that answers 401 when the request has an X-Deny header.
 *
 * What comes back must be a sequence of complete HTTP/1.x responses and
 * nothing else: a status line with a known status, header lines, exactly
 * one Content-Length (none for 1xx, 204, 304, which have no body), a body
 * of that length (none for HEAD: a request whose method was read as HEAD,
 * even if what follows it is malformed),
 * JSON bodies that json_parse accepts, nothing after "Connection: close".
 * Each final response answers one request, in order, so there are never
 * more final responses than requests begun (+1 for bytes that never began
 * one); the client's own http_parser pass over the input tells which
 * requests were HEADs (the method is known once the parser is past it: its
 * URL began, or it failed anywhere but in the method). Empty input gets no bytes at all; a complete
 * first request to a synchronous route always gets its response, even though the client
 * half-closed.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <http_parser.h>

#include "buf.h"
#include "ctl.h"
#include "fuzz.h"
#include "http_server.h"
#include "json_check.h"

#define MAX_HEADER   4096
#define MAX_BODY     8192
#define MAX_PASSES   20000
#define MAX_REQUESTS 4096

static struct http_server *srv;
static struct event_base *base;
static int outstanding; /* async replies not sent yet */
static int ref_pending; /* http_reply_ref bodies not released yet */
static int big_left;    /* large replies this input may still get */
static char *big_body;  /* BIG_BODY bytes: more than a socketpair buffers */

#define BIG_BODY (512 * 1024)

/* ---- handlers ------------------------------------------------------------ */

static void
h_sync(struct http_request *req, void *arg)
{
    (void)arg;
    http_reply(req, 200, "text/plain", "ok\n", 3, NULL);
}

static void
h_echo(struct http_request *req, void *arg)
{
    size_t n;
    const char *body = http_req_body(req, &n);
    char hdr[96];

    (void)arg;
    snprintf(hdr, sizeof(hdr), "X-Query-Length: %zu\r\n", strlen(http_req_query(req)));
    http_reply(req, 200, "application/octet-stream", body, n, hdr);
}

static void
ref_done(void *ctx)
{
    (void)ctx;
    ref_pending--;
}

static void
h_ref(struct http_request *req, void *arg)
{
    static const char body[] = "{\"ref\":true}";

    (void)arg;
    ref_pending++;
    http_reply_ref(req, 200, NULL, body, sizeof(body) - 1, NULL, ref_done, NULL);
}

static void
h_register(struct http_request *req, void *arg)
{
    struct reg_instance in;
    size_t n;
    const char *body = http_req_body(req, &n);
    int status = 0;
    char err[256];

    (void)arg;
    if (ctl_instance_parse_json(body, n, &in, &status, err, sizeof(err)) != 0) {
        http_reply_error(req, status, "invalid_request_error", "invalid_instance", "%s", err);
        return;
    }
    http_reply(req, 200, "application/json", "true", 4, NULL);
}

static void
h_deregister(struct http_request *req, void *arg)
{
    struct reg_instance in;
    bool rm;
    char err[256];

    (void)arg;
    if (ctl_instance_parse_delete(http_req_query(req), &in, &rm, err, sizeof(err)) != 0) {
        http_reply_error(req, 422, "invalid_request_error", "invalid_query", "%s", err);
        return;
    }
    http_reply(req, 200, "application/json", "true", 4, NULL);
}

/* Statuses without content: the server must drop the body it is given. */
static void
h_nocontent(struct http_request *req, void *arg)
{
    (void)arg;
    http_reply(req, 204, "application/json", "{}", 2, NULL);
}

static void
h_notmodified(struct http_request *req, void *arg)
{
    (void)arg;
    http_reply(req, 304, "application/json", NULL, 0, "ETag: \"1\"\r\n");
}

/* A stream that turns out to have no content: no chunks, no length. */
static void
h_stream204(struct http_request *req, void *arg)
{
    (void)arg;
    http_stream_start(req, 204, "text/event-stream", NULL);
    http_stream_write(req, "data: x\n\n", 9);
    http_stream_end(req);
}

/* More than the socket buffers hold: a client that half-closed must still
 * get all of it. Twice per input at most, to keep runs fast. */
static void
h_big(struct http_request *req, void *arg)
{
    (void)arg;
    if (big_left > 0) {
        big_left--;
        http_reply(req, 200, "text/plain", big_body, BIG_BODY, NULL);
    } else {
        http_reply(req, 200, "text/plain", "enough\n", 7, NULL);
    }
}

static void
on_gone(struct http_request *req, void *arg)
{
    (void)arg;
    FUZZ_ASSERT(http_req_closed(req)); /* and it must still be replied to */
}

static void
on_later(evutil_socket_t fd, short what, void *arg)
{
    struct http_request *req = arg;

    (void)fd;
    (void)what;
    outstanding--;
    http_reply(req, 200, "application/json", "{\"later\":true}", 14, NULL);
}

static void
h_async(struct http_request *req, void *arg)
{
    struct timeval tv = {0, 0};

    (void)arg;
    http_req_on_close(req, on_gone, NULL);
    outstanding++;
    if (event_base_once(base, -1, EV_TIMEOUT, on_later, req, &tv) != 0) {
        outstanding--;
        http_reply(req, 503, "application/json", "{}", 2, NULL);
    }
}

static bool
guard(struct http_request *req, void *arg)
{
    (void)arg;
    if (http_req_header(req, "X-Deny")) {
        http_reply_error(req, 401, "authentication_error", "unauthorized", "denied");
        return false;
    }
    return true;
}

static void
access_log(struct http_request *req, int status, size_t len, int64_t us, void *arg)
{
    (void)req;
    (void)len;
    (void)us;
    (void)arg;
    FUZZ_ASSERT(status == 0 || (status >= 100 && status <= 599));
}

static const struct http_route routes[] = {
    {"GET", "/sync", h_sync, 0},
    {"POST", "/echo", h_echo, 0},
    {"PUT", "/echo", h_echo, 0},
    {"GET", "/ref", h_ref, 0},
    {"GET", "/big", h_big, 0},
    {"GET", "/nocontent", h_nocontent, 0},
    {"GET", "/notmod", h_notmodified, 0},
    {"GET", "/stream204", h_stream204, 0},
    {"GET", "/async", h_async, 0},
    {"POST", "/async", h_async, 0},
    {"POST", "/api/controller/models", h_register, 0},
    {"DELETE", "/api/controller/models", h_deregister, 0},
    {NULL, NULL, NULL, 0},
};

static void
setup(void)
{
    struct http_server_config cfg;
    char err[256];

    memset(&cfg, 0, sizeof(cfg));
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.threads = 1;
    cfg.max_body = MAX_BODY;
    cfg.max_header = MAX_HEADER;
    signal(SIGPIPE, SIG_IGN);
    big_body = malloc(BIG_BODY);
    FUZZ_ASSERT(big_body != NULL);
    memset(big_body, 'b', BIG_BODY);
    const struct http_service svc = {.routes = routes, .guard = guard, .access_log = access_log};
    if (http_server_new(&cfg, &srv, err, sizeof(err)) != 0 || http_server_mount(srv, &svc) != 0) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
    base = http_loop_base(http_server_loop(srv, 0));
}

/* ---- what the client sent: requests begun, HEAD or not -------------------- */

struct reqs {
    size_t n;                /* requests begun (their first byte parsed) */
    bool head[MAX_REQUESTS]; /* HEAD, known once its headers are read */
    size_t complete;         /* messages complete */
    bool first_async;        /* the first complete message went to /async */
    bool first_sync;         /* ... to a route that replies at once */
    struct buf url;          /* URL of the message being parsed */
};

static int
rq_begin(http_parser *p)
{
    struct reqs *r = p->data;

    r->n++;
    buf_reset(&r->url);
    return 0;
}

static int
rq_url(http_parser *p, const char *at, size_t len)
{
    struct reqs *r = p->data;

    if (r->n <= MAX_REQUESTS) {
        r->head[r->n - 1] = p->method == HTTP_HEAD; /* the method is complete */
    }

    if (buf_append(&r->url, at, len) != 0) {
        buf_reset(&r->url); /* longer than the server takes: it answers 431 */
    }
    return 0;
}

static int
rq_headers_complete(http_parser *p)
{
    struct reqs *r = p->data;

    if (r->n <= MAX_REQUESTS) {
        r->head[r->n - 1] = p->method == HTTP_HEAD;
    }
    return 0;
}

static int
rq_complete(http_parser *p)
{
    struct reqs *r = p->data;

    if (r->complete++ == 0) {
        const char *url = buf_str(&r->url);
        r->first_async = strncmp(url, "/async", 6) == 0;
        r->first_sync = !r->first_async && !p->upgrade;
    }
    return 0;
}

static void
scan_requests(const uint8_t *data, size_t size, struct reqs *r)
{
    http_parser_settings s;
    http_parser p;

    memset(&s, 0, sizeof(s));
    s.on_message_begin = rq_begin;
    s.on_url = rq_url;
    s.on_headers_complete = rq_headers_complete;
    s.on_message_complete = rq_complete;
    http_parser_init(&p, HTTP_REQUEST);
    p.data = r;
    http_parser_execute(&p, &s, (const char *)data, size);
    /* stopped past the method of the last request begun: the server, as
     * strict or stricter, knows that method too */
    enum http_errno e = HTTP_PARSER_ERRNO(&p);
    if (e != HPE_OK && e != HPE_INVALID_METHOD && r->n > 0 && r->n <= MAX_REQUESTS) {
        r->head[r->n - 1] = p.method == HTTP_HEAD;
    }
}

/* ---- what the server sent -------------------------------------------------- */

static bool
known_status(int status)
{
    static const int ok[] = {100, 200, 204, 304, 400, 401, 404, 405, 408, 413, 422, 431, 503, 505};

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (ok[i] == status) {
            return true;
        }
    }
    return false;
}

/* Finds "\r\n" in p[0..n); returns its offset or -1. */
static long
find_crlf(const char *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if (p[i] == '\r' && p[i + 1] == '\n') {
            return (long)i;
        }
    }
    return -1;
}

/* Checks the responses in out[0..n); returns how many final responses. */
static size_t
check_responses(const char *out, size_t n, const struct reqs *r)
{
    size_t pos = 0;
    size_t finals = 0;

    while (pos < n) {
        const char *p = out + pos;
        size_t avail = n - pos;
        long eol = find_crlf(p, avail);
        int status;
        long clen = -1;
        int nclen = 0;
        bool json = false;
        bool close = false;
        bool head;

        /* status line: HTTP/1.x NNN Reason */
        FUZZ_ASSERT(eol >= 13);
        FUZZ_ASSERT(memcmp(p, "HTTP/1.1 ", 9) == 0 || memcmp(p, "HTTP/1.0 ", 9) == 0);
        FUZZ_ASSERT(p[9] >= '1' && p[9] <= '5' && p[10] >= '0' && p[10] <= '9' && p[11] >= '0' &&
                    p[11] <= '9' && p[12] == ' ');
        status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
        FUZZ_ASSERT(known_status(status));
        pos += (size_t)eol + 2;
        /* header lines */
        for (;;) {
            const char *h = out + pos;
            long e = find_crlf(h, n - pos);
            const char *colon;
            FUZZ_ASSERT(e >= 0);
            pos += (size_t)e + 2;
            if (e == 0) {
                break;
            }
            colon = memchr(h, ':', (size_t)e);
            FUZZ_ASSERT(colon && colon > h && colon[1] == ' ');
            for (const char *c = h; c < h + e; c++) {
                FUZZ_ASSERT(*c >= 0x20 && *c < 0x7f); /* no CR/LF injection */
            }
            if ((size_t)e > 16 && strncasecmp(h, "Content-Length: ", 16) == 0) {
                clen = 0;
                nclen++;
                for (const char *c = h + 16; c < h + e; c++) {
                    FUZZ_ASSERT(*c >= '0' && *c <= '9');
                    clen = clen * 10 + (*c - '0');
                    FUZZ_ASSERT(clen <= 1 << 24);
                }
            } else if (strncasecmp(h, "Content-Type: application/json", 30) == 0) {
                json = true;
            } else if ((size_t)e == 17 && strncasecmp(h, "Connection: close", 17) == 0) {
                close = true;
            }
        }
        if (status < 200) {
            FUZZ_ASSERT(nclen == 0);
            continue; /* 100 Continue: an interim response, no body */
        }
        head = finals < r->n && finals < MAX_REQUESTS && r->head[finals];
        finals++;
        if (status == 204 || status == 304) {
            FUZZ_ASSERT(nclen == 0); /* no content, hence no length (RFC 9110 8.6) */
            if (close) {
                FUZZ_ASSERT(pos == n);
            }
            continue;
        }
        FUZZ_ASSERT(nclen == 1);
        if (!head) {
            FUZZ_ASSERT((size_t)clen <= n - pos);
            if (json && clen > 0) {
                cJSON *j = NULL;
                char err[128];
                if (json_parse(out + pos, (size_t)clen, 16, &j, err, sizeof(err)) != 0) {
                    fprintf(stderr, "fuzz_http: bad JSON body (%s): %.*s\n", err, (int)clen,
                            out + pos);
                    abort();
                }
                cJSON_Delete(j);
            }
            pos += (size_t)clen;
        }
        if (close) {
            FUZZ_ASSERT(pos == n); /* nothing after Connection: close */
        }
    }
    return finals;
}

/* ---- one connection --------------------------------------------------------- */

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct reqs r;
    struct buf out;
    size_t off = 0;
    bool shut = false;
    bool closed = false;
    int sv[2];
    int pass;
    size_t finals;

    if (!srv) {
        setup();
    }
    FUZZ_ASSERT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0);
    FUZZ_ASSERT(http_server_adopt(srv, 0, sv[1]) == 0);
    big_left = 2;
    buf_init(&out, 1 << 23);
    for (pass = 0; pass < MAX_PASSES && !(closed && outstanding == 0); pass++) {
        if (off < size) {
            ssize_t w = send(sv[0], data + off, size - off, MSG_NOSIGNAL);
            if (w > 0) {
                off += (size_t)w;
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                off = size; /* the server closed first (EPIPE) */
            }
        }
        if (off == size && !shut) {
            shutdown(sv[0], SHUT_WR);
            shut = true;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        while (!closed) {
            char tmp[16384];
            ssize_t got = recv(sv[0], tmp, sizeof(tmp), 0);
            if (got > 0) {
                FUZZ_ASSERT(buf_append(&out, tmp, (size_t)got) == 0);
            } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
                closed = true; /* EOF, or ECONNRESET: unread input at close */
            } else {
                break;
            }
        }
    }
    if (!closed || outstanding != 0 || ref_pending != 0) {
        fprintf(stderr, "fuzz_http: hang: closed %d, outstanding %d, ref_pending %d\n", closed,
                outstanding, ref_pending);
        abort();
    }
    close(sv[0]);

    if (getenv("FUZZ_HTTP_DUMP")) { /* for reading a crasher: what came back */
        fprintf(stderr, "---- %zu bytes in, %zu bytes out:\n", size, out.len);
        fwrite(buf_str(&out), 1, out.len, stderr);
        fprintf(stderr, "\n----\n");
    }
    memset(&r, 0, sizeof(r));
    buf_init(&r.url, 1 << 16); /* more than MAX_HEADER: a URL the server takes fits */
    scan_requests(data, size, &r);
    if (getenv("FUZZ_HTTP_DUMP")) {
        fprintf(stderr, "requests begun %zu, complete %zu, HEAD:", r.n, r.complete);
        for (size_t i = 0; i < r.n && i < MAX_REQUESTS; i++) {
            fprintf(stderr, " %d", r.head[i]);
        }
        fprintf(stderr, "\n");
    }
    finals = check_responses(out.data, out.len, &r);
    FUZZ_ASSERT(finals <= r.n + 1);
    if (size == 0) {
        FUZZ_ASSERT(out.len == 0);
    }
    if (r.first_sync) {
        FUZZ_ASSERT(finals >= 1);
    }
    buf_cleanup(&r.url);
    buf_cleanup(&out);
    return 0;
}
