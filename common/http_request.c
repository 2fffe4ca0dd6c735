/* SPDX-License-Identifier: MIT
 *
 * http_request.c - the request object: its memory (one buffer for the line and
 * headers, NUL-separated and looked up by offset; one for the body), the
 * loop's list of pending requests, and the http_req_* accessors.
 *
 * Threads: loop threads only: a request is used on the loop that read it.
 */
#include "http_server_private.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include <event2/buffer.h>

#include "util.h"

struct http_request *
hs_req_new(struct conn *c)
{
    struct http_server *srv = c->loop->srv;
    struct http_request *req = calloc(1, sizeof(*req));

    if (!req) {
        return NULL;
    }
    req->conn = c;
    req->loop = c->loop;
    buf_init(&req->head, srv->cfg.max_header);
    buf_init(&req->body, srv->cfg.max_body);
    req->hstate = H_URL;
    req->start_us = hs_now_us();
    return req;
}

void
hs_req_free(struct http_request *req)
{
    if (!req) {
        return;
    }
    buf_cleanup(&req->head);
    buf_cleanup(&req->body);
    free(req);
}

void
hs_pending_add(struct http_request *req)
{
    struct http_loop *loop = req->loop;

    req->prev = NULL;
    req->next = loop->pending;
    if (loop->pending) {
        loop->pending->prev = req;
    }
    loop->pending = req;
}

void
hs_pending_remove(struct http_request *req)
{
    struct http_loop *loop = req->loop;

    if (req->prev) {
        req->prev->next = req->next;
    } else if (loop->pending == req) {
        loop->pending = req->next;
    }
    if (req->next) {
        req->next->prev = req->prev;
    }
    req->prev = req->next = NULL;
}

static const char *
head_str(const struct http_request *req, uint32_t off)
{
    return req->head.data + off;
}

const char *
http_req_header(const struct http_request *req, const char *name)
{
    for (int i = 0; i < req->nhdrs; i++) {
        if (strcasecmp(head_str(req, req->hdrs[i].name), name) == 0) {
            return head_str(req, req->hdrs[i].value);
        }
    }
    return NULL;
}

struct http_loop *
http_req_loop(const struct http_request *req)
{
    return req->loop;
}

const char *
http_req_method(const struct http_request *req)
{
    return req->method;
}

const char *
http_req_path(const struct http_request *req)
{
    return head_str(req, req->path_off);
}

const char *
http_req_query(const struct http_request *req)
{
    return head_str(req, req->query_off);
}

const char *
http_req_body(const struct http_request *req, size_t *len_out)
{
    *len_out = req->body.len;
    return buf_str(&req->body);
}

const struct sockaddr *
http_req_peer(const struct http_request *req)
{
    static const struct sockaddr_storage none;

    return req->conn ? (const struct sockaddr *)&req->conn->peer : (const struct sockaddr *)&none;
}

const char *
http_req_peer_str(const struct http_request *req)
{
    return req->conn ? req->conn->peer_str : "-";
}

const char *
http_req_id(const struct http_request *req)
{
    return req->id;
}

unsigned
http_req_route_flags(const struct http_request *req)
{
    return req->route ? req->route->flags : 0;
}

bool
http_req_closed(const struct http_request *req)
{
    return req->conn == NULL;
}

bool
http_req_has_secret(const struct http_request *req, const char *secret)
{
    const char *given = http_req_header(req, "X-Roster-Secret");
    const char *auth = http_req_header(req, "Authorization");

    if (!secret || !*secret) {
        return false;
    }
    if (!given && auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        given = auth + 7;
    }
    return given && util_ct_equal(given, strlen(given), secret, strlen(secret));
}

/* The host[:port] of an origin or a Host header, lower-cased, into out. */
static void
authority_of(const char *v, char *out, size_t cap)
{
    const char *p = strstr(v, "://");
    size_t n = 0;

    p = p ? p + 3 : v;
    for (; *p && *p != '/' && n + 1 < cap; p++) {
        out[n++] = (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
    }
    out[n] = '\0';
}

/* "localhost[:port]", "[::1][:port]" or an IPv4 literal[:port]. */
static bool
host_is_literal(const char *authority)
{
    char host[256];
    const char *colon;
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;

    if (authority[0] == '[') {
        const char *end = strchr(authority, ']');
        if (!end || (size_t)(end - authority - 1) >= sizeof(host)) {
            return false;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(end - authority - 1), authority + 1);
        return inet_pton(AF_INET6, host, &a6.sin6_addr) == 1;
    }
    colon = strchr(authority, ':');
    snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - authority) : (int)strlen(authority),
             authority);
    return strcmp(host, "localhost") == 0 || inet_pton(AF_INET, host, &a4.sin_addr) == 1;
}

bool
http_req_forged_by_browser(const struct http_request *req)
{
    const char *origin = http_req_header(req, "Origin");
    const char *site = http_req_header(req, "Sec-Fetch-Site");
    const char *host = http_req_header(req, "Host");
    char o[256], h[256];

    if (site && strcasecmp(site, "cross-site") == 0) {
        return true;
    }
    if (!origin) {
        return false; /* not a browser, or a browser's same-origin GET */
    }
    if (!host) {
        return true;
    }
    authority_of(origin, o, sizeof(o));
    authority_of(host, h, sizeof(h));
    /* another site's page; or this site reached under another name (DNS
     * rebinding makes an attacker's name point here) */
    return strcmp(o, h) != 0 || !host_is_literal(h);
}

void
http_req_on_close(struct http_request *req, void (*cb)(struct http_request *, void *), void *arg)
{
    req->on_close = cb;
    req->on_close_arg = arg;
}

size_t
http_req_output_pending(const struct http_request *req)
{
    return req->conn ? evbuffer_get_length(bufferevent_get_output(req->conn->bev)) : 0;
}

void
http_req_on_drain(struct http_request *req, size_t low, void (*cb)(struct http_request *, void *),
                  void *arg)
{
    if (!req->conn) {
        return; /* the client is gone: on_close runs instead */
    }
    req->on_drain = cb;
    req->on_drain_arg = arg;
    req->drain_low = low;
    bufferevent_setwatermark(req->conn->bev, EV_WRITE, low, 0);
}

void
http_req_set_data(struct http_request *req, void *data)
{
    req->data = data;
}

void *
http_req_get_data(const struct http_request *req)
{
    return req->data;
}
