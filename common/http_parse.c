/* SPDX-License-Identifier: MIT
 *
 * http_parse.c - http-parser callbacks: a request's line, headers and body into
 * struct http_request, with the checks http-parser does not make (token
 * characters in names, the header and body caps, the version, chunk
 * sizes). A failure sets conn->error_status and returns non-zero; the
 * caller (hs_process_input) answers it.
 *
 * Threads: the loop thread of the connection being parsed.
 */
#include "http_server_private.h"

#include <stdio.h>
#include <strings.h>

#include <event2/buffer.h>

#include "util.h"

static int
parse_fail(struct conn *c, int status, const char *msg)
{
    c->error_status = status;
    c->error_msg = msg;
    return -1;
}

static int
on_message_begin(http_parser *p)
{
    struct conn *c = p->data;

    c->req = hs_req_new(c);
    if (!c->req) {
        return parse_fail(c, 503, "out of memory");
    }
    return 0;
}

static int
head_append(struct conn *c, const char *at, size_t len)
{
    if (buf_append(&c->req->head, at, len) != 0) {
        return parse_fail(c, 431, "request line and headers too large");
    }
    return 0;
}

static int
head_end_piece(struct conn *c)
{
    return head_append(c, "", 1); /* the NUL that ends a URL, name or value */
}

static int
on_url(http_parser *p, const char *at, size_t len)
{
    return head_append(p->data, at, len);
}

/* RFC 9110 5.6.2 token character. */
static bool
is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static int
on_header_field(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    struct http_request *req = c->req;

    /* http-parser (not built strict) lets spaces into a name; RFC 9112 5.1
     * says "Content-Length : 5" must be a 400, not a second opinion on
     * framing that a proxy in front may not share. */
    for (size_t i = 0; i < len; i++) {
        if (!is_tchar((unsigned char)at[i])) {
            return parse_fail(c, 400, "invalid character in header field name");
        }
    }
    if (req->hstate != H_FIELD) {
        if (head_end_piece(c) != 0) {
            return -1;
        }
        if (req->nhdrs == MAX_HEADERS) {
            return parse_fail(c, 431, "too many header fields");
        }
        req->hdrs[req->nhdrs++].name = (uint32_t)req->head.len;
        req->hstate = H_FIELD;
    }
    return head_append(c, at, len);
}

static int
on_header_value(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    struct http_request *req = c->req;

    if (req->hstate != H_VALUE) {
        if (head_end_piece(c) != 0) {
            return -1;
        }
        req->hdrs[req->nhdrs - 1].value = (uint32_t)req->head.len;
        req->hstate = H_VALUE;
    }
    return head_append(c, at, len);
}

static bool
valid_request_id(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++) {
        char ch = s[n];
        if (n >= 36 || !((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                         (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.')) {
            return false;
        }
    }
    return n > 0;
}

static int
on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;
    struct http_request *req = c->req;
    struct http_server *srv = c->loop->srv;
    const char *expect;
    const char *rid;
    char *q;

    /* First, so that every response to a HEAD whose head was read (errors
     * included) goes without a body. A request that fails earlier gets its
     * error body: the connection closes after it, so nothing desyncs. */
    req->is_head = p->method == HTTP_HEAD;
    if (req->hstate == H_FIELD) {
        /* a field without a value callback: an empty value */
        if (head_end_piece(c) != 0) {
            return -1;
        }
        req->hdrs[req->nhdrs - 1].value = (uint32_t)req->head.len;
    }
    if (head_end_piece(c) != 0) {
        return -1;
    }
    for (int i = 0; i < req->nhdrs; i++) {
        if (req->hdrs[i].value == 0) {
            req->hdrs[i].value = (uint32_t)req->head.len - 1; /* "" */
        }
    }
    /* the header deadline is met; the body has what is left of the
     * request's (a body dripped a byte at a time still ends there) */
    hs_arm_deadline(c, c->request_deadline_us);
    req->method = http_method_str((enum http_method)p->method);
    /* split the URL into path and query (in place) */
    req->path_off = 0;
    q = strchr(req->head.data, '?');
    if (q) {
        *q = '\0';
        req->query_off = (uint32_t)(q + 1 - req->head.data);
    } else {
        req->query_off = (uint32_t)strlen(req->head.data); /* "" */
    }
    /* the id first: the error answers below carry it too */
    rid = http_req_header(req, "X-Request-Id");
    if (rid && valid_request_id(rid)) {
        util_strlcpy(req->id, rid, sizeof(req->id));
    } else {
        snprintf(req->id, sizeof(req->id), "%08x%08x",
                 (unsigned)(c->loop->id_prefix ^ (uint64_t)c->loop->index),
                 (unsigned)++c->loop->req_seq);
    }
    if (p->http_major != 1 || p->http_minor > 1) {
        /* HTTP/0.9 (no version), 1.2+, 2.0, 9.9: the framing rules this
         * server knows are 1.0's and 1.1's (RFC 9110 section 15.6.6) */
        return parse_fail(c, 505, "HTTP version not supported (use HTTP/1.1 or HTTP/1.0)");
    }
    if (p->upgrade) {
        return parse_fail(c, 400, "protocol upgrade is not supported");
    }
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > srv->cfg.max_body) {
        return parse_fail(c, 413, "request body too large");
    }
    expect = http_req_header(req, "Expect");
    if (expect && strcasecmp(expect, "100-continue") == 0 && p->http_minor >= 1) {
        evbuffer_add(bufferevent_get_output(c->bev), STRCONST("HTTP/1.1 100 Continue\r\n\r\n"));
    }
    return 0;
}

static int
on_body(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;

    if (buf_append(&c->req->body, at, len) != 0) {
        return parse_fail(c, 413, "request body too large");
    }
    return 0;
}

/* A chunk's size is known before its data: one that cannot fit under the
 * body cap gets its 413 now, not after the client has sent (or stalled
 * in) megabytes of it. */
static int
on_chunk_header(http_parser *p)
{
    struct conn *c = p->data;
    struct http_server *srv = c->loop->srv;

    if (p->content_length > srv->cfg.max_body - c->req->body.len) {
        return parse_fail(c, 413, "request body too large (chunk size over the limit)");
    }
    return 0;
}

static int
on_message_complete(http_parser *p)
{
    struct conn *c = p->data;

    c->req->keepalive = http_should_keep_alive(p) != 0;
    http_parser_pause(p, 1);
    return 0;
}

const http_parser_settings hs_parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_message_complete = on_message_complete,
};
