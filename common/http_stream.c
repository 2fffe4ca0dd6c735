/* SPDX-License-Identifier: MIT
 *
 * http_stream.c - streamed replies: headers now, then one chunk per write
 * (Transfer-Encoding: chunked; for an HTTP/1.0 client the body ends with
 * the connection), then the end; or an error event that ends a stream
 * that failed after it began.
 *
 * Threads: loop threads only (the request's).
 */
#include "http_server_private.h"

#include <sys/uio.h>

#include <event2/buffer.h>

void
http_stream_start(struct http_request *req, int status, const char *content_type,
                  const char *extra_headers)
{
    struct conn *c = req->conn;

    req->streaming = true;
    req->stream_status = status;
    req->no_content = hs_status_no_content(status);
    req->chunked =
        c && !req->no_content && !(c->parser.http_major == 1 && c->parser.http_minor == 0);
    if (!req->chunked && !req->no_content) {
        req->keepalive = false; /* HTTP/1.0: the end of the body is the end of the connection */
    }
    if (!c) {
        return;
    }
    struct evbuffer *out = bufferevent_get_output(c->bev);
    bool keepalive = req->keepalive && !req->loop->draining;
    bool http10 = c->parser.http_major == 1 && c->parser.http_minor == 0;
    evbuffer_add_printf(out, "HTTP/1.%d %d %s\r\nDate: %s\r\n", http10 ? 0 : 1, status,
                        http_status_text(status), hs_loop_date(c->loop));
    if (!req->no_content) {
        evbuffer_add_printf(out, "Content-Type: %s\r\n",
                            content_type ? content_type : "application/json");
    }
    if (req->chunked) {
        evbuffer_add(out, STRCONST("Transfer-Encoding: chunked\r\n"));
    }
    if (!keepalive) {
        evbuffer_add(out, STRCONST("Connection: close\r\n"));
    } else if (http10) {
        evbuffer_add(out, STRCONST("Connection: keep-alive\r\n")); /* a 204 or 304 to HTTP/1.0 */
    }
    evbuffer_add_printf(out, "Cache-Control: no-cache\r\nX-Request-Id: %s\r\n", req->id);
    if (extra_headers) {
        evbuffer_add(out, extra_headers, strlen(extra_headers));
    }
    evbuffer_add(out, STRCONST("\r\n"));
}

void
http_stream_write(struct http_request *req, const void *data, size_t len)
{
    struct iovec iov = {(void *)data, len};

    http_stream_writev(req, &iov, 1);
}

void
http_stream_writev(struct http_request *req, const struct iovec *iov, int n)
{
    struct conn *c = req->conn;
    size_t len = 0;

    for (int i = 0; i < n; i++) {
        len += iov[i].iov_len;
    }
    req->stream_bytes += len;
    if (!c || len == 0 || hs_answering_head(c) || req->no_content) {
        return;
    }
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char small[4096];
    size_t k = 0;

    if (req->chunked) {
        /* the chunk's size line, in hex, without printf */
        char hex[20];
        size_t h = sizeof(hex);
        size_t v = len;
        do {
            hex[--h] = "0123456789abcdef"[v & 15];
            v >>= 4;
        } while (v);
        memcpy(small, hex + h, sizeof(hex) - h);
        k = sizeof(hex) - h;
        small[k++] = '\r';
        small[k++] = '\n';
    }
    if (k + len + 2 <= sizeof(small)) {
        /* an SSE event or a token: one copy into the output buffer */
        for (int i = 0; i < n; i++) {
            memcpy(small + k, iov[i].iov_base, iov[i].iov_len);
            k += iov[i].iov_len;
        }
        if (req->chunked) {
            small[k++] = '\r';
            small[k++] = '\n';
        }
        evbuffer_add(out, small, k);
        return;
    }
    evbuffer_add(out, small, k);
    for (int i = 0; i < n; i++) {
        evbuffer_add(out, iov[i].iov_base, iov[i].iov_len);
    }
    if (req->chunked) {
        evbuffer_add(out, STRCONST("\r\n"));
    }
}

void
http_stream_end(struct http_request *req)
{
    struct conn *c = req->conn;

    if (c && req->chunked && !hs_answering_head(c)) {
        evbuffer_add(bufferevent_get_output(c->bev), STRCONST("0\r\n\r\n"));
    }
    hs_finish_request(req, req->stream_status, req->stream_bytes);
}

void
http_stream_error(struct http_request *req, const char *code, const char *fmt, ...)
{
    struct buf b;
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = hs_error_body(&b, "data: ", "\n\n", "server_error", code, fmt, ap);
    va_end(ap);
    if (rc == 0) {
        http_stream_write(req, b.data, b.len);
    }
    buf_cleanup(&b);
    http_stream_end(req);
}
