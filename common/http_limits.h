/* SPDX-License-Identifier: MIT
 *
 * http_limits.h - the connection and request limits every role's HTTP
 * server takes from its flags: one set of options, declared once here and
 * spliced into each role's flag table (controller, worker, apiserver,
 * webserver), so the names, defaults, ranges and help cannot differ
 * between roles.
 *
 * The timeouts are named client_* (the client's side of the server): the
 * apiserver's idle_timeout_ms and request_timeout_ms are its upstream's.
 *
 * Use: embed `struct http_limits http;` in the role's config struct, add
 * HTTP_LIMIT_FLAGS(struct role_config, http) to its flag table, and call
 * http_limits_apply(&cfg->http, &hc) on the http_server_config before
 * http_server_new. docs/operations.md ("Limits and budgets") explains the
 * defaults.
 *
 * Threads: http_limits_apply is a pure function (any thread); the struct
 * is filled by the flag parser at start-up and only read afterwards.
 */
#ifndef ROSTER_HTTP_LIMITS_H
#define ROSTER_HTTP_LIMITS_H

#include <stddef.h>
#include <stdint.h>

#include "flags.h"
#include "http_server.h"

struct http_limits {
    int64_t max_connections;
    int64_t max_connections_per_client; /* 0: half of max_connections */
    int64_t connection_reserve;         /* 0: none */
    int64_t client_header_timeout_ms;
    int64_t client_request_timeout_ms;
    int64_t client_idle_timeout_ms;
};

/* Rows of a flag table (flags.h) for `member` (a struct http_limits) of
 * the config struct `type`. */
// clang-format off
#define HTTP_LIMIT_FLAG(type, member, field, def, lo, hi, meta, help) \
    {#field, FLAG_INT, offsetof(type, member.field), def, lo, hi, NULL, 0, meta, help}
#define HTTP_LIMIT_FLAGS(type, member)                                                             \
    HTTP_LIMIT_FLAG(type, member, max_connections, "4096", 16, 1000000, "N",                      \
        "Most open client connections; beyond it a new one gets 503 and is closed."),              \
    HTTP_LIMIT_FLAG(type, member, max_connections_per_client, "0", 0, 1000000, "N",                \
        "Most open connections from one client address (an IPv4 address or an IPv6 /64); "        \
        "beyond it a new one gets 429 and is closed. 0 = half of --max_connections."),             \
    HTTP_LIMIT_FLAG(type, member, connection_reserve, "64", 0, 1000000, "N",                       \
        "The last N slots under --max_connections go only to addresses holding fewer than 4 "      \
        "connections (health checks, new clients), never to a flood (at most a quarter of "       \
        "--max_connections; 0 = no reserve)."),                                                    \
    HTTP_LIMIT_FLAG(type, member, client_header_timeout_ms, "10000", 100, 3600000, "MS",                  \
        "Time from a request's first byte to the end of its headers (408 beyond)."),              \
    HTTP_LIMIT_FLAG(type, member, client_request_timeout_ms, "30000", 100, 3600000, "MS",                 \
        "Time from a request's first byte to the end of its body, however the bytes trickle in "   \
        "(408 beyond)."),                                                                           \
    HTTP_LIMIT_FLAG(type, member, client_idle_timeout_ms, "60000", 100, 3600000, "MS",                    \
        "An idle keep-alive connection, or a request with no byte for this long, is closed.")
// clang-format on

static inline void
http_limits_apply(const struct http_limits *l, struct http_server_config *hc)
{
    hc->max_connections = (int)l->max_connections;
    hc->max_connections_per_client = (int)l->max_connections_per_client;
    hc->connection_reserve = l->connection_reserve > 0 ? (int)l->connection_reserve : -1;
    hc->header_timeout_ms = (int)l->client_header_timeout_ms;
    hc->request_timeout_ms = (int)l->client_request_timeout_ms;
    hc->idle_timeout_ms = (int)l->client_idle_timeout_ms;
}

#endif
