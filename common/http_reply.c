/* SPDX-License-Identifier: MIT
 *
 * http_reply.c - replies: the status line and headers, the framing rules
 * (HEAD: a GET's headers, no body; 1xx, 204, 304: no body and no
 * Content-Length), JSON error bodies, and the end of a request
 * (keep-alive or close).
 *
 * Threads: loop threads only (the request's).
 */
#include "http_server_private.h"

#include <stdio.h>
#include <stdlib.h>

#include <event2/buffer.h>

#include "json_write.h"

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
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

/* True when the request being answered on `c` is a HEAD: its response has
 * the headers a GET would get (Content-Length included) but no body. */
bool
hs_answering_head(const struct conn *c)
{
    return c->req && c->req->is_head;
}

/* Statuses whose responses never have content (RFC 9110 sections 15.2,
 * 15.3.5, 15.4.5): no body, no Content-Length (a 304's would have to be
 * the length of the 200 it stands for, which the server does not know)
 * and no Transfer-Encoding (RFC 9112 section 6.1). */
bool
hs_status_no_content(int status)
{
    return status < 200 || status == 204 || status == 304;
}

/* Writes a status line and headers, and `body` (copied) unless it is NULL
 * or the request is a HEAD. */
void
hs_write_response(struct conn *c, int status, const char *ctype, const void *body, size_t len,
                  const char *extra, bool keepalive, const char *reqid)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    bool http10 = c->parser.http_major == 1 && c->parser.http_minor == 0;

    evbuffer_add_printf(out, "HTTP/1.%d %d %s\r\nDate: %s\r\n", http10 ? 0 : 1, status,
                        http_status_text(status), hs_loop_date(c->loop));
    if (hs_status_no_content(status)) {
        body = NULL; /* and no Content-Length or Content-Type */
    } else {
        evbuffer_add_printf(out, "Content-Length: %zu\r\nContent-Type: %s\r\n", len,
                            ctype ? ctype : "application/json");
    }
    if (!keepalive) {
        evbuffer_add(out, STRCONST("Connection: close\r\n"));
    } else if (http10) {
        evbuffer_add(out, STRCONST("Connection: keep-alive\r\n"));
    }
    if (reqid && *reqid) {
        evbuffer_add_printf(out, "X-Request-Id: %s\r\n", reqid);
    }
    if (extra) {
        evbuffer_add(out, extra, strlen(extra));
    }
    evbuffer_add(out, STRCONST("\r\n"));
    if (body && len && !hs_answering_head(c)) {
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

void
hs_finish_request(struct http_request *req, int status, size_t len)
{
    struct http_server *srv = req->loop->srv;
    struct conn *c = req->conn;
    /* a request no route matched is logged by the first service */
    const struct http_service *svc = req->svc ? req->svc : srv->nsvcs ? &srv->svcs[0] : NULL;

    if (svc && svc->access_log) {
        svc->access_log(req, c ? status : 0, len, hs_now_us() - req->start_us, svc->arg);
    }
    hs_count_status(req->loop, status);
    hs_pending_remove(req);
    if (!c) {
        hs_req_free(req);
        return;
    }
    c->req = NULL;
    if (req->on_drain) {
        bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    }
    bool keepalive = req->keepalive && !req->loop->draining;
    hs_req_free(req);
    if (!keepalive) {
        hs_close_after_write(c);
        return;
    }
    c->state = S_IDLE;
    hs_set_read_timeout(c, srv->cfg.idle_timeout_ms);
    bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
    if (!c->processing) {
        hs_process_input(c); /* pipelined requests waiting in the buffer */
    }
}

void
http_reply_ref(struct http_request *req, int status, const char *content_type, const void *body,
               size_t len, const char *extra_headers, void (*done)(void *ctx), void *ctx)
{
    struct conn *c = req->conn;
    bool keepalive = req->keepalive && !req->loop->draining;

    if (c && (hs_answering_head(c) || hs_status_no_content(status))) {
        hs_write_response(c, status, content_type, NULL, len, extra_headers, keepalive, req->id);
        if (done) {
            done(ctx);
        }
    } else if (c) {
        struct ref_ctx *r = done ? malloc(sizeof(*r)) : NULL;
        struct evbuffer *out = bufferevent_get_output(c->bev);
        hs_write_response(c, status, content_type, NULL, len, extra_headers, keepalive, req->id);
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
    hs_finish_request(req, status, len);
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
int
hs_error_body(struct buf *b, const char *before, const char *after, const char *type,
              const char *code, const char *fmt, va_list ap)
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
    rc = hs_error_body(&b, "", "", type, code, fmt, ap);
    va_end(ap);
    /* 429 and 503 are always worth retrying, a second later or elsewhere */
    http_reply(req, status, "application/json", rc ? "{}" : b.data, rc ? 2 : b.len,
               status == 429 || status == 503 ? "Retry-After: 1\r\n" : NULL);
    buf_cleanup(&b);
}
