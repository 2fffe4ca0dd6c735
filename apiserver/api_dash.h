/* SPDX-License-Identifier: MIT
 *
 * api_dash.h - the web dashboard's server side (the webserver mounts it
 * beside the API server): its static files, the state of the cluster as
 * JSON, a live feed of that state and of events (server-sent events), a
 * page of one model's instances, and operator actions forwarded to a
 * controller or a worker. docs/api.md has the wire format.
 *
 *   api_dash.c       the feed thread: reads the controller's full list
 *                    (every tick while someone watches, at once when the
 *                    routing table changes), probes the controllers, adds
 *                    this server's traffic per instance and model (rates
 *                    and percentiles over the last 5-10 s), publishes an
 *                    immutable snapshot with the state JSON, and wakes the
 *                    loops that hold live feeds
 *   api_dash_http.c  the routes, the live feeds (per loop), the action
 *                    thread (blocking control-plane calls off the loops)
 *
 * Threads: loop threads serve requests from the current snapshot (a
 * pointer taken under a short lock); the feed thread and the action thread
 * make every outbound call, with timeouts; results reach the loops with
 * http_loop_post.
 */
#ifndef ROSTER_API_DASH_H
#define ROSTER_API_DASH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "api.h"
#include "netaddr.h"

struct api_dash_config {
    const char *mode;            /* "embedded" or "cluster" */
    const char *version;         /* roster's */
    const char *llm_model;       /* the default chat model (LLM_MODEL) */
    const char *embedding_model; /* EMBEDDING_MODEL */
    const char *base_url;        /* what to give an OpenAI SDK: "http://host:port/v1" */
    const char *secret;          /* the cluster secret; NULL or "": actions from loopback only */
    int64_t tick_ms;             /* how often a watched dashboard is updated */
    int64_t control_timeout_ms;  /* each call to a controller or worker */
    /* NULL, or a rule the data routes must also pass (replies when it
     * refuses): the embedded controller's --protect_reads */
    bool (*read_guard)(struct http_request *req, void *arg);
    void *read_guard_arg;
};

struct api_dash;

/* Life cycle, on the main thread, as the API server's (api.h); `api` and
 * the strings in `cfg` must outlive the dashboard. The int functions
 * return 0 or a sysexits code, having logged why. */
int api_dash_new(struct api_server *api, const struct api_dash_config *cfg, struct api_dash **out);
int api_dash_mount(struct api_dash *d, struct http_server *http);
int api_dash_start(struct api_dash *d);
/* Asks the threads to stop soon and cancels their calls in flight (any
 * thread; the drain at shutdown). */
void api_dash_halt(struct api_dash *d);
void api_dash_stop(struct api_dash *d); /* after http_server_run returned */
void api_dash_free(struct api_dash *d); /* after http_server_free; NULL-safe */

/* ---- internal: shared by api_dash.c and api_dash_http.c ------------------------- */

/* Recent traffic of an instance or a model through this server. */
struct dash_rates {
    bool have;                   /* false: no window yet */
    double rps;                  /* requests per second */
    double err;                  /* failures / requests (instance faults); < 0: no requests */
    double p50, p99;             /* milliseconds; < 0: no requests */
    uint64_t requests, failures; /* since start */
    /* the window: its length, its counts, its latency histogram */
    int64_t wms;
    uint64_t wreq, wfail;
    uint64_t wbucket[METRICS_BUCKETS + 1];
};

/* One instance, as the controller's full list says plus this server's view. */
struct dash_row {
    char model[API_NAME_MAX + 1]; /* "name@type" */
    char host[API_NAME_MAX + 1];
    int port;
    bool alive, routable, enabled;
    double weight, weight_declared, weight_override; /* override < 0: none */
    int64_t lease_ms;
    int64_t age_ms;                     /* heartbeat age when the list was read; -1 never */
    int64_t in_flight, queue, capacity; /* the worker's load report */
    bool ejected;
    bool excluded; /* outside this server's --instance_networks: never routed to */
    int64_t ejected_ms_left;
    char last_error[160];
    int local_in_flight;
    struct dash_rates r;
};

struct dash_model {
    char model[API_NAME_MAX + 1];
    size_t first, n; /* rows[first .. first+n) */
    size_t alive, routable, ejected, drained, disabled;
    int64_t in_flight, capacity, queue;
    struct dash_rates r;
    uint64_t version; /* a hash of its rows' fields: changes when any row does */
};

/* An immutable picture of the cluster, shared by the loops (refcounted). */
struct dash_snap {
    _Atomic int refs;
    uint64_t seq;          /* 1, 2, ... */
    int64_t list_mono_ms;  /* when the rows were read (0: never) */
    struct dash_row *rows; /* sorted by (model, host, port) */
    size_t nrows;
    struct dash_model *models; /* sorted by model */
    size_t nmodels;
    char *state; /* the state JSON */
    size_t state_len;
};

struct dash_snap *dash_snap_ref(struct dash_snap *s);
void dash_snap_unref(struct dash_snap *s); /* NULL-safe */
const struct dash_model *dash_snap_model(const struct dash_snap *s, const char *model);
const struct dash_row *dash_snap_row(const struct dash_snap *s, const char *model, const char *host,
                                     int port);

struct dash_loop;
struct dash_job;

struct api_dash {
    struct api_dash_config cfg;
    struct api_server *api;
    struct http_server *http;
    struct dash_loop *loops; /* per loop, by http_loop_index */
    int nloops;
    /* the feed thread */
    pthread_t feed;
    bool feed_started;
    pthread_mutex_t mu; /* guards snap, wake, stop, and the condition's waits */
    pthread_cond_t cond;
    bool wake;
    _Atomic bool stop; /* also cancels the feed's calls in flight */
    struct dash_snap *snap;
    _Atomic int64_t viewed_mono_ms; /* the last data request or live feed */
    _Atomic int clients;            /* live feeds held, all loops */
    /* the action thread */
    pthread_t act;
    bool act_started;
    pthread_mutex_t act_mu;
    pthread_cond_t act_cond;
    struct dash_job *jobs, *jobs_tail;
    bool act_stop;
    _Atomic bool act_cancel; /* the calls in flight give up (shutdown) */
    int64_t started_mono_ms;
    struct netaddr_list loopback; /* who may act when there is no secret */
    char etag[3][24];             /* of the static files */
};

/* The current snapshot with a reference (NULL before the first). Any thread. */
struct dash_snap *dash_current(struct api_dash *d);
/* Someone is looking: the feed thread refreshes every tick for a while.
 * Any thread. */
void dash_viewed(struct api_dash *d);
/* Installs the API server's notify hook (before api_server_start), starts
 * and stops the feed thread (api_dash.c). */
void dash_feed_hook(struct api_dash *d);
int dash_feed_start(struct api_dash *d);
void dash_feed_stop(struct api_dash *d);
/* A new snapshot is out: every loop with live feeds sends it (feed thread;
 * api_dash_http.c). */
void dash_publish(struct api_dash *d);
/* "rps":..,"error_rate":..,"p50_ms":..,"p99_ms":..,"requests":.. (null
 * where there was no traffic). */
struct jw;
void dash_write_rates(struct jw *w, const struct dash_rates *r);

/* The embedded files (generated from apiserver/dashboard/ at build time). */
struct dash_asset {
    const char *name; /* "index.html" */
    const unsigned char *data;
    size_t len;
};
extern const struct dash_asset dash_assets[]; /* ends with name NULL */

#endif
