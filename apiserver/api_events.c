/* SPDX-License-Identifier: MIT
 *
 * api_events.c - what changed in the cluster, as this server saw it: a
 * ring of the last API_EVENTS_MAX events under a mutex held for a copy,
 * each also logged at info. Writers: the watcher thread (registry
 * changes), the loops (ejections), the dashboard (controllers); readers:
 * the dashboard.
 */
#include "api.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG_MODULE "apiserver"
#include "log.h"
#include "util.h"

void
api_event_add(struct api_server *srv, const char *kind, const char *model, const char *host,
              int port, const char *fmt, ...)
{
    struct api_event *e;
    char detail[sizeof(e->detail)];
    char esc[300];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    if (host && *host) {
        log_info("event %s: %s at %s:%d%s%s", kind, model ? model : "", host, port,
                 *detail ? ": " : "", log_escape(detail, esc, sizeof(esc)));
    } else {
        log_info("event %s: %s", kind, log_escape(detail, esc, sizeof(esc)));
    }
    pthread_mutex_lock(&srv->ev_mu);
    if (srv->events) {
        e = &srv->events[srv->ev_seq % API_EVENTS_MAX];
        memset(e, 0, sizeof(*e));
        e->seq = ++srv->ev_seq;
        e->t_ms = util_wall_ms();
        util_strlcpy(e->kind, kind, sizeof(e->kind));
        util_strlcpy(e->model, model ? model : "", sizeof(e->model));
        util_strlcpy(e->host, host ? host : "", sizeof(e->host));
        e->port = port;
        util_strlcpy(e->detail, detail, sizeof(e->detail));
    }
    pthread_mutex_unlock(&srv->ev_mu);
    if (srv->notify) {
        srv->notify(srv->notify_arg);
    }
}

size_t
api_events_since(struct api_server *srv, uint64_t after, struct api_event *out, size_t cap,
                 uint64_t *last_out)
{
    size_t n = 0;

    pthread_mutex_lock(&srv->ev_mu);
    uint64_t last = srv->ev_seq;
    uint64_t first = last > API_EVENTS_MAX ? last - API_EVENTS_MAX + 1 : 1;
    if (after + 1 > first) {
        first = after + 1;
    }
    if (cap > 0 && last >= first && last - first + 1 > cap) {
        first = last - cap + 1; /* the newest `cap` */
    }
    for (uint64_t s = first; srv->events && s <= last && n < cap; s++) {
        out[n++] = srv->events[(s - 1) % API_EVENTS_MAX];
    }
    pthread_mutex_unlock(&srv->ev_mu);
    if (last_out) {
        *last_out = last;
    }
    return n;
}

uint64_t
api_events_seq(struct api_server *srv)
{
    uint64_t seq;

    pthread_mutex_lock(&srv->ev_mu);
    seq = srv->ev_seq;
    pthread_mutex_unlock(&srv->ev_mu);
    return seq;
}
