/* SPDX-License-Identifier: MIT
 *
 * http_client.h - a blocking HTTP request with libcurl's easy interface,
 * for the command-line tools and for threads of their own such as the
 * worker's registrar (never for an event-loop thread: request paths use
 * libcurl's multi interface on their loop).
 */
#ifndef ROSTER_HTTP_CLIENT_H
#define ROSTER_HTTP_CLIENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

struct http_client_response {
    long status;     /* 0 when no response arrived */
    struct buf body; /* capped at the max given to http_client_request */
};

/* Performs one request with connect and total timeouts. `headers` is NULL
 * or a NULL-terminated array of "Name: value" lines. On success (any HTTP
 * status) returns 0 and fills `resp` (release with http_client_response_cleanup).
 * On a transport failure (refused, timeout, ...) returns -1 with a reason
 * in `err`. Blocks. curl_global_init must have run. */
int http_client_request(const char *method, const char *url, const char *body, size_t body_len,
                        const char *const *headers, int timeout_ms, size_t max_body,
                        struct http_client_response *resp, char *err, size_t errcap);

/* As http_client_request, but gives up (-1, "cancelled") soon after
 * *cancel becomes true (libcurl asks at least once a second): for threads
 * that must stop promptly. */
int http_client_request_cancel(const char *method, const char *url, const char *body,
                               size_t body_len, const char *const *headers, int timeout_ms,
                               size_t max_body, const _Atomic bool *cancel,
                               struct http_client_response *resp, char *err, size_t errcap);

void http_client_response_cleanup(struct http_client_response *resp);

#endif
