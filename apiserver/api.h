/* SPDX-License-Identifier: MIT
 *
 * api.h - the API server (`roster start apiserver`): the OpenAI-compatible
 * front door. It resolves a model name to a routable, weighted instance
 * from a local table and proxies the request, streams included, retrying
 * elsewhere before the first byte has reached the client.
 *
 *   api_config.c  options
 *   api_table.c   the instance table: a watcher thread long-polls the
 *                 controllers (failing over between them) and hands each
 *                 new table to every event loop; no controller call is
 *                 ever made on a request's path
 *   api_route.c   the routing policies and passive ejection
 *   api_probe.c   active probes: a thread of its own sends each instance a
 *                 tiny generation on a schedule; a failure ejects it
 *   api_proxy.c   the request path: keep-alive HTTP to the workers on each
 *                 loop (http_upstream.h), retries, timeouts, streaming,
 *                 cancellation
 *   api_queue.c   the wait queue: a request that finds every instance of
 *                 its model at capacity waits (bounded, with a deadline)
 *                 until capacity frees
 *   api_server.c  api_main: wiring, models, health, metrics, access log,
 *                 API key checks
 *   api_settings.c the cluster settings (API keys, aliases) fetched from the
 *                 controllers when the watch names a new version
 *   api_limit.c   API keys' per-minute limits: leases from the controllers'
 *                 shared counter, requests parked while units come
 *
 * Threads: --threads event loops serve requests, each with its own pool of
 * keep-alive connections to workers and its own reference
 * to the current table; the watcher thread makes blocking control-plane
 * calls and never touches a loop's state except through http_loop_post;
 * the probe thread (api_probe.c) has its own event base and connection pool
 * and shares only the instances' atomics and counters with the loops.
 */
#ifndef ROSTER_API_H
#define ROSTER_API_H

#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "api_route.h"
#include "flags.h"
#include "http_limits.h"
#include "http_server.h"
#include "metrics.h"
#include "netaddr.h"

#define API_MAX_CTLS     16
#define API_NAME_MAX     128 /* model_name and host, as in the registry table */
#define API_MAX_ATTEMPTS 8

/* ---- configuration (api_config.c) ----------------------------------------- */

struct api_config {
    char *controller_addr; /* comma-separated */
    char *host;
    int64_t port;
    char *api_keys; /* comma-separated; empty: no client authentication */
    char *routing;
    int64_t threads;
    int64_t max_body_bytes;
    struct http_limits http; /* --max_connections, --client_*_timeout_ms, ... */
    int64_t connect_timeout_ms;
    int64_t first_byte_timeout_ms;
    int64_t idle_timeout_ms;
    int64_t request_timeout_ms;
    int64_t stream_buffer_bytes;
    int64_t max_answer_bytes;
    int64_t memory_budget_bytes;
    char *instance_networks; /* CIDRs; empty: any address */
    int64_t max_attempts;
    int64_t eject_ms;
    int64_t probe_interval_ms; /* api_probe.c; 0: no probes */
    int64_t probe_timeout_ms;
    int64_t watch_wait_secs;
    int64_t control_timeout_ms;
    char *cluster_secret;
    bool access_log;
    int64_t access_log_sample;
    char *port_file;
    int64_t shutdown_grace_ms;
    int64_t queue_timeout_ms; /* the wait queue (api_queue.c); 0: none */
    int64_t queue_max;
    char *log_level;
    bool check; /* --check: validate, print, exit */
};

extern const struct flag_def api_flag_defs[];
extern const char api_usage[];
extern const char api_summary[];

/* Parses options. Returns 0, 1 after --help (printed), -1 after a usage
 * error (printed). */
int api_config_load(struct api_config *cfg, int argc, char **argv);
void api_config_cleanup(struct api_config *cfg);

/* ---- the instance table (api_table.c) ----------------------------------------- */

struct api_server;

/* Counters of one model or one instance (any thread; relaxed atomics). */
struct api_stats {
    _Atomic uint64_t requests;  /* attempts sent to an instance (model: client requests) */
    _Atomic uint64_t errors[6]; /* by enum api_error_class */
    _Atomic uint64_t retries;
    _Atomic uint64_t ejections;
    _Atomic uint64_t paused;     /* streams held back for a slow client */
    struct metrics_hist latency; /* request start to the end of the answer */
    struct metrics_hist ttfb;    /* request start to the instance's first byte */
};

enum api_error_class {
    API_ERR_CONNECT, /* refused, reset, unreachable */
    API_ERR_TIMEOUT, /* first byte, idle or total */
    API_ERR_UPSTREAM_5XX,
    API_ERR_CLIENT_4XX,  /* the instance's 4xx answer, passed on */
    API_ERR_NO_INSTANCE, /* nothing routable (or everything busy) */
    API_ERR_CANCELLED,   /* the client went away */
};
#define API_ERR_CLASSES 6
extern const char *const api_error_class_names[API_ERR_CLASSES];

/* What the registry last said of an instance (the watcher's, compared
 * from one list to the next to report changes as events). */
struct api_seen {
    bool listed; /* it was in a previous list */
    bool alive, routable, enabled;
    double weight; /* effective */
};

/* A window over a set of counters, for rates and recent percentiles (the
 * dashboard's; only its feed thread touches it): two samples, the older
 * 5-10 s old. */
struct api_sample {
    int64_t t_ms; /* 0: none */
    uint64_t requests, failures;
    uint64_t bucket[METRICS_BUCKETS + 1];
};
struct api_window {
    struct api_sample a, b; /* a: newer */
};

/* Per-model statistics, kept for the life of the process (models come and
 * go in the table; their counters stay). */
struct api_mstats {
    char model[API_NAME_MAX + 1]; /* "name@type" */
    struct api_stats s;
    struct api_window win; /* the dashboard feed thread's */
    struct api_mq *mq;     /* its wait queue (api_queue.c, under the queue's lock) */
    struct api_mstats *next;
};

/* One instance: routing state and counters, shared by tables (refcounted). */
struct api_inst {
    struct route_inst rt; /* first */
    _Atomic int refs;
    char host[API_NAME_MAX + 1];
    int port;
    char base[API_NAME_MAX + 32];  /* "http://host:port" ([host] for IPv6) */
    char label[API_NAME_MAX + 16]; /* "host:port", for logs, metrics and Host */
    struct sockaddr_storage sa;    /* resolved by the watcher, written once */
    _Atomic unsigned salen;        /* 0: not resolved (yet); set after sa */
    _Atomic bool excluded;         /* its address is outside --instance_networks (watcher) */
    struct api_mstats *model;
    struct api_stats s;
    struct api_seen seen;   /* the watcher thread's */
    struct api_window win;  /* the dashboard feed thread's */
    pthread_mutex_t err_mu; /* guards last_error (any loop writes, the dashboard reads) */
    char last_error[160];   /* why it was last ejected ("" never) */
    /* when a loop last read bytes of an answer from it (util_mono_ms; 0:
     * never): a connect that times out on an instance heard from this
     * recently meets a full accept queue, not a dead worker (api_proxy.c) */
    _Atomic int64_t heard_ms;
    /* active probes (api_probe.c): the probe thread's alone */
    int64_t probe_due_ms;     /* the next probe (util_mono_ms; 0: not scheduled yet) */
    int64_t probe_seen_until; /* rt.ejected_until_ms as the probe thread last knew it */
    bool probing;             /* a probe in flight */
    /* its last load report, from the table (the watcher writes; the wait
     * queue reads): capacity (0: none reported) and running + queued */
    _Atomic int64_t load_capacity, load_busy;
};

/* What a model's routing is built from, shared by every table in which
 * the model did not change (the watcher merges the controller's deltas:
 * api_table.c); refcounted, immutable. */
struct api_model_core;

struct api_model {
    char name[API_NAME_MAX + 1]; /* without "@type" */
    char type[32];               /* "llm", "text2vec", ... */
    struct route_set set;        /* the routable instances: a copy of the core's arrays (not
                                    owned) with this table's round-robin cursor */
    struct api_inst **inst;      /* parallel to set.e; the core's (it holds a reference each) */
    struct api_model_core *core; /* one reference */
    size_t known;                /* instances of any health (0 routable: 503, not 404) */
    size_t alive;                /* ... whose lease runs (and not deregistered) */
    size_t excluded;             /* ... left out: outside --instance_networks */
    struct api_mstats *stats;
};

/* An immutable snapshot of the registry, as routing needs it. */
struct api_table {
    _Atomic int refs;
    struct api_model *models; /* sorted by (name, type) */
    size_t nmodels;
    struct api_inst **all; /* every instance of any health, sorted by ("name@type", host,
                              port); a reference each */
    size_t nall;
    uint64_t version;
    int64_t built_mono_ms;
    size_t instances, routable;
    size_t excluded; /* instances outside --instance_networks */
};

struct api_table *api_table_ref(struct api_table *t);
void api_table_unref(struct api_table *t); /* NULL-safe */
/* The model `name` of worker type `type`, or NULL. */
struct api_model *api_table_find(struct api_table *t, const char *name, const char *type);
/* True when the table has the model under some other worker type. */
bool api_table_has_name(struct api_table *t, const char *name);

void api_inst_unref(struct api_inst *i);
/* An instance heard from within this long is alive: a connect that times
 * out on it meets a full accept queue, not a dead worker (api_proxy.c). */
#define API_ALIVE_MS 1000
/* The instance showed it is alive: answer bytes, or a new connection's
 * handshake (written at most once per millisecond: loops share it). */
void api_inst_heard(struct api_inst *i);
/* Whether it showed that within the last API_ALIVE_MS. */
bool api_inst_heard_lately(const struct api_inst *i);
/* The instance ("name@type", host, port) of t->all, or NULL. */
struct api_inst *api_table_inst(struct api_table *t, const char *model, const char *host, int port);
/* The newest table the watcher built, with a reference (NULL before the
 * first). Any thread; never blocks for long. */
struct api_table *api_latest_table(struct api_server *srv);

/* ---- cluster settings (api_settings.c) ------------------------------------------
 *
 * API keys and model aliases from the controllers' settings (docs/settings.md),
 * as one immutable, reference-counted snapshot the watcher thread replaces. */

struct api_key {
    char name[65];
    char hash[65]; /* SHA-256 of the key, lowercase hex */
    char prefix[17];
    char **models; /* the models it may use; none: every model */
    size_t nmodels;
    int64_t expires_ms; /* epoch ms; 0: never */
    int64_t revoked_ms; /* epoch ms; 0: not revoked */
    int64_t rpm, tpm;   /* limits per minute; 0: none */
    int priority;
};

struct api_alias {
    char name[API_NAME_MAX + 1];
    char **models; /* in order of preference */
    size_t nmodels;
};

/* A model's settings of the cluster (-1 or "": not set, the flags apply). */
struct api_model_cfg {
    char name[API_NAME_MAX + 1];
    int policy; /* enum route_policy, -1 */
    int64_t max_attempts, first_byte_timeout_ms, idle_timeout_ms, request_timeout_ms;
    int64_t queue_timeout_ms, queue_max, probe_interval_ms, probe_timeout_ms;
    char session_header[65];
};

/* What applies to a model: its settings over the flags. */
struct api_model_opts {
    enum route_policy policy;
    int64_t max_attempts, first_byte_timeout_ms, idle_timeout_ms, request_timeout_ms;
    int64_t queue_timeout_ms, queue_max, probe_interval_ms, probe_timeout_ms;
    char session_header[65];
};

struct api_settings {
    _Atomic int refs;
    int64_t version;
    struct api_model_cfg *models; /* sorted by name */
    size_t nmodels;
    struct api_key *keys; /* sorted by hash */
    size_t nkeys;
    struct api_alias *aliases; /* sorted by name */
    size_t naliases;
};

/* Parses GET /api/roster/settings' document (one reference), or NULL with err. */
struct api_settings *api_settings_parse(const char *json, size_t len, char *err, size_t errcap);
void api_settings_unref(struct api_settings *s); /* NULL-safe */
/* The current settings with a reference, or NULL before the first. Any
 * thread (a mutex held for a pointer copy). */
struct api_settings *api_settings_acquire(struct api_server *srv);
int64_t api_settings_version(struct api_server *srv); /* -1: none yet */
/* Replaces the current settings (takes the caller's reference). */
void api_settings_publish(struct api_server *srv, struct api_settings *s);
/* Fetches the settings from controller `ctl` (srv->ctl index) and
 * publishes them. Blocks (bounded by --control_timeout_ms): the watcher
 * thread only. 0, or -1 with a reason in err. */
int api_settings_fetch(struct api_server *srv, size_t ctl, char *err, size_t errcap);
/* The key whose hash is the hash of `bearer`, or NULL. */
const struct api_key *api_settings_key(const struct api_settings *s, const char *bearer);
/* True when key `k` (NULL: a --api_keys key or no key) may use `model`. */
bool api_key_allows(const struct api_key *k, const char *model);
/* The alias `name`, or NULL. */
const struct api_alias *api_settings_alias(const struct api_settings *s, const char *name);
/* The options of model `name` ("name" or "name@type"): its settings of the
 * cluster over the flags. Any thread. api_model_opts_in reads settings `s`
 * (NULL: the flags only) the caller holds. */
struct api_model_opts api_model_opts(const struct api_server *srv, const char *name);
struct api_model_opts api_model_opts_in(const struct api_server *srv, const struct api_settings *s,
                                        const char *name);

/* Why a request with a key was refused (roster_api_key_rejected_total). */
enum api_key_reject {
    API_KEY_INVALID, /* no such key */
    API_KEY_REVOKED,
    API_KEY_EXPIRED,
    API_KEY_MODEL, /* the key may not use the model */
    API_KEY_RATE,  /* over its requests or tokens per minute (429) */
    API_KEY_REJECT_N
};

/* Per-key counters, kept for the life of the process by key name. */
struct api_kstats {
    char key[65];
    _Atomic uint64_t requests; /* admitted */
    _Atomic uint64_t rejected[API_KEY_REJECT_N];
    _Atomic uint64_t prompt_tokens; /* of whole answers (usage) */
    _Atomic uint64_t completion_tokens;
    struct api_kstats *next;
};
/* The counters of key `name` (created on first use; NULL when out of
 * memory). Any thread. */
struct api_kstats *api_kstats_get(struct api_server *srv, const char *name);

/* ---- events (api_events.c) ----------------------------------------------------
 *
 * What changed, for operators: instances that joined, left, became
 * unhealthy or healthy, were drained or disabled (from the watcher's
 * successive lists), ejected and readmitted by this server's passive
 * health checks, controllers lost and found. Logged at info and kept in
 * memory (the last API_EVENTS_MAX) for the dashboard. Any thread. */
#define API_EVENTS_MAX 1000
struct api_event {
    uint64_t seq; /* 1, 2, ... */
    int64_t t_ms; /* wall clock */
    char kind[16];
    char model[API_NAME_MAX + 1]; /* "name@type"; "" for controller events */
    char host[API_NAME_MAX + 1];
    int port;
    char detail[256];
};
void api_event_add(struct api_server *srv, const char *kind, const char *model, const char *host,
                   int port, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Copies up to `cap` events with seq > after, oldest first, into out;
 * returns how many. *last_out (if not NULL) gets the newest seq. */
size_t api_events_since(struct api_server *srv, uint64_t after, struct api_event *out, size_t cap,
                        uint64_t *last_out);
/* The newest event's seq (0: none yet). */
uint64_t api_events_seq(struct api_server *srv);

struct api_server;

/* Starts the watcher thread. Returns 0, or -1 with a reason in err. */
int api_watch_start(struct api_server *srv, char *err, size_t errcap);
/* Stops and joins it (aborting a long-poll in flight). NULL-safe. */
void api_watch_stop(struct api_server *srv);

/* Controller reachability as the watcher last saw it (any thread). */
struct api_watch_status {
    bool reachable; /* the last call succeeded */
    int64_t last_ok_mono_ms;
    char current[512]; /* the controller in use (after a failure: the one being tried) */
    char error[256];
};
void api_watch_status(struct api_server *srv, struct api_watch_status *out);
/* The controllers in the order to ask them (their indexes into srv->ctl):
 * the one the table is watched from first. Returns the count. Any thread. */
size_t api_controller_order(struct api_server *srv, size_t order[API_MAX_CTLS]);
/* "X-Roster-Secret: <--cluster_secret>" in out, or NULL when there is no
 * secret; the caller wipes `out` (explicit_bzero) after use. */
const char *api_secret_header(const struct api_server *srv, char *out, size_t cap);

/* ---- API keys' limits per minute (api_limit.c) --------------------------------- */

struct api_limit_refusal {
    char headers[400]; /* Retry-After, x-ratelimit-* */
    char body[512];
};

/* A request's admission under its key's limits (inside the request's state). */
struct api_limit_ticket {
    char key[65];       /* the limited key ("": none applies) */
    int64_t tokens;     /* reserved: set by api_limit_reserve before admit */
    int64_t prompt_est; /* its prompt's part of `tokens` (body bytes / 4) */
    int64_t window;     /* the window its units came from */
    bool parked;        /* waiting for units */
    bool admitted;      /* holds units (api_limit_done corrects the tokens) */
    char headers[400];  /* x-ratelimit-* lines for the answer */
    /* a stream's usage, as its chunks pass (api_limit_stream_data; -1 (the
     * caller's initial value): none seen) */
    int64_t s_prompt, s_completion, s_total;
    int64_t s_chunks; /* chunks with content: its completion tokens, when no usage comes */
    struct api_limit_refusal *refusal; /* set when refused (api_limit_reply_refusal) */
    struct http_request *req;
    /* a parked request's verdict, on its loop: admitted, or refused (reply
     * with api_limit_reply_refusal) */
    void (*resume)(struct api_limit_ticket *t, bool admitted);
    struct api_limit_ticket *prev, *next; /* the loop's parked list */
};

enum api_limit_result { API_LIMIT_OK, API_LIMIT_PARKED, API_LIMIT_REFUSED };

struct api_loop;
/* Sets the tokens a request reserves: its prompt (body bytes / 4) and
 * max_tokens (a default when it names none). */
void api_limit_reserve(struct api_limit_ticket *t, size_t body_len, int64_t max_tokens);
/* Admits a request of key `key` (NULL: none of the settings) now (OK),
 * parks it until units come (PARKED: t->resume runs later on this loop), or
 * refuses it (REFUSED: reply with api_limit_reply_refusal). A request
 * without a limited key is OK at once. Loop thread. */
enum api_limit_result api_limit_admit(struct api_server *srv, struct api_loop *l,
                                      struct api_limit_ticket *t, const struct api_key *key);
/* A parked request that goes away (client gone, shutdown). Loop thread. */
void api_limit_cancel(struct api_server *srv, struct api_loop *l, struct api_limit_ticket *t);
/* The request ended; `answer` is its whole answer, whose usage corrects
 * the tokens reserved and counts per key. NULL: a stream (its usage chunk,
 * else its prompt as estimated and a token per content chunk), or a request
 * that failed or lost its client (the same). Once per admission: later
 * calls do nothing. Loop thread. */
void api_limit_done(struct api_server *srv, struct api_limit_ticket *t, const char *answer,
                    size_t len);
/* A chunk of a streamed answer of the request (usage, if it carries one,
 * and content chunks are counted). Loop thread. */
void api_limit_stream_data(struct api_limit_ticket *t, const char *p, size_t len);
/* Sends a refused request's 429 and frees the refusal. Loop thread. */
void api_limit_reply_refusal(struct http_request *req, struct api_limit_ticket *t);
/* The limiter thread (api_server_start / _stop / _free). */
int api_limit_start(struct api_server *srv);
void api_limit_stop(struct api_server *srv);
void api_limit_free(struct api_server *srv);
/* ---- the wait queue (api_queue.c) ---------------------------------------------
 *
 * When every instance of a model that a request tried answered 429 (at
 * capacity), the request waits in its model's queue instead of failing:
 * highest priority first, first come first served within a priority, at
 * most queue_max waiting per model (429 beyond), each until its deadline
 * (queue_timeout_ms: 503). A waiter is dispatched (tried again from
 * scratch) when a request of its model ends on this server (on any loop),
 * when a new table shows a free slot in the instances' load reports, and,
 * as a backstop, by a probe every API_QUEUE_POLL_MS while nothing else
 * woke the model. A waiter holds no upstream connection and no budget.
 *
 * Threads: one lock guards every model's queue and the per-loop lists of
 * waiters handed over for dispatch; it is held only for list operations.
 * A waiter is a field of its request and belongs to the request's loop:
 * only that loop enters, leaves and frees it; other threads only move it
 * from its model's queue to its loop's ready list and post the loop a
 * task, which then calls the waiter's `ready` on that loop's thread. */
#define API_QUEUE_POLL_MS 200

/* The queue's tunables for model "name@type" (today the flags; later the
 * per-model settings). Any thread. */
struct api_queue_opts {
    int64_t timeout_ms; /* the deadline from the first wait; 0: no queueing */
    int64_t max;        /* waiters per model */
};
struct api_queue_opts api_queue_opts(const struct api_server *srv, const char *model);

struct api_mq;
struct api_loop;
struct api_waiter {
    struct api_waiter *prev, *next;      /* in its model's queue, or its loop's ready list */
    struct api_mq *q;                    /* the queue it is in (NULL: none) */
    int state;                           /* API_W_* (the queue's lock guards it) */
    int loop;                            /* its request's loop index */
    int priority;                        /* higher first */
    uint64_t seq;                        /* arrival order, set at its first entry */
    void (*ready)(struct api_waiter *w); /* dispatched: runs on its loop */
};
enum { API_W_NONE, API_W_WAITING, API_W_READY };

/* Creates and frees the queue (srv->queue): new after the loops are known
 * (0, or -1 when out of memory); free after http_server_free. */
int api_queue_new(struct api_server *srv);
void api_queue_free(struct api_server *srv);
/* Starts and stops the backstop probe on loop 0 (its thread, or before
 * the loops run / after they stopped). */
int api_queue_loop_start(struct api_server *srv, struct api_loop *l);
void api_queue_loop_stop(struct api_server *srv, struct api_loop *l);

enum api_queue_rc { API_Q_OK, API_Q_FULL };
/* Puts w (its loop, priority and ready set) in the queue of model `m`. A
 * waiter entering for the first time (again = false) takes a new place in
 * line and counts against `max`; one that comes back after a dispatch
 * found no room (again) keeps its place and is never refused. Loop thread
 * of w. */
enum api_queue_rc api_queue_enter(struct api_server *srv, struct api_mstats *m,
                                  struct api_waiter *w, int64_t max, bool again);
/* Takes w out of whatever list it is in (NULL-safe on a waiter in none).
 * A waiter handed a free slot that it will not use passes it on. Loop
 * thread of w. */
void api_queue_leave(struct api_server *srv, struct api_waiter *w);
/* n slots of model `m` freed (a request ended): the first n waiters are
 * dispatched. Cheap when nobody waits. Any thread. */
void api_queue_kick(struct api_server *srv, struct api_mstats *m, int n);
/* True when requests of model `m` are waiting. Any thread. */
bool api_queue_waiting(struct api_server *srv, struct api_mstats *m);
/* A new table: dispatches waiters into the free slots its load reports
 * show. Any thread (the watcher's). */
void api_queue_table(struct api_server *srv, struct api_table *t);
/* A request that waited is over: its time in the queue (all its waits)
 * for the histogram, and whether it ran out of time. Any thread. */
void api_queue_done(struct api_server *srv, struct api_mstats *m, bool timed_out, int64_t wait_us);
/* roster_api_queue* samples. Any thread. 0 or -1. */
struct buf;
int api_queue_write_metrics(struct api_server *srv, struct buf *b);

/* ---- the server (api_proxy.c, api_server.c) ---------------------------------- */

struct api_watch;
struct hu_pool;
struct api_px;

/* Per event loop. */
struct api_loop {
    struct api_server *srv;
    struct http_loop *loop;
    struct hu_pool *hu;              /* keep-alive connections to the instances */
    struct api_table *table;         /* this loop's reference; NULL until loaded */
    struct api_px *active;           /* requests in progress (cancelled at shutdown) */
    struct api_limit_ticket *parked; /* requests waiting for their key's units (api_limit.c) */
    struct http_task limit_task;     /* wakes them */
    _Atomic bool limit_posted;
};

/* Sets up and tears down a loop's request-path state (api_proxy.c).
 * api_loop_init returns 0, or -1 when out of memory. */
int api_loop_init(struct api_loop *l);
void api_loop_cleanup(struct api_loop *l);

struct api_server {
    struct api_config *cfg;
    enum route_policy policy;
    struct netaddr_list inst_nets; /* --instance_networks; n == 0: any address */
    char **keys;                   /* --api_keys, split */
    size_t nkeys;
    char ctl[API_MAX_CTLS][512];       /* UTIL_URL_MAX */
    char ctl_shown[API_MAX_CTLS][520]; /* ctl as logged and shown: passwords masked */
    size_t nctl;
    struct http_server *http; /* the server it is mounted on (not owned) */
    struct api_loop *loops;   /* per loop of `http`, by http_loop_index */
    int nloops;
    struct api_watch *watch;
    pthread_mutex_t mstats_mu; /* guards the list (the counters are atomics) */
    struct api_mstats *mstats;
    int64_t started_mono_ms;
    struct api_stats total;
    pthread_mutex_t ev_mu; /* guards the event ring */
    struct api_event *events;
    uint64_t ev_seq;
    /* Called (any thread, no lock held) after a new table or event: the
     * dashboard's wake-up. Set before api_server_start. */
    void (*notify)(void *arg);
    void *notify_arg;
    _Atomic uint64_t log_seq;  /* requests seen by the access log */
    pthread_mutex_t latest_mu; /* guards latest */
    struct api_table *latest;
    pthread_mutex_t settings_mu; /* guards settings */
    struct api_settings *settings;
    pthread_mutex_t kstats_mu; /* guards the list (the counters are atomics) */
    struct api_kstats *kstats;
    _Atomic uint64_t key_invalid;     /* requests with a key no setting or flag has */
    struct api_limiter *limiter;      /* api_limit.c */
    _Atomic uint64_t limit_unchecked; /* requests of limited keys admitted with no controller */
    _Atomic uint64_t limit_waits;     /* requests parked for units (api_limit.c) */
    _Atomic uint64_t limit_calls;     /* lease calls to the controllers */
    struct api_probe *probe;          /* NULL: probes disabled (api_probe.c) */
    struct api_queue *queue;          /* the wait queue (api_queue.c) */
};

/* Why an instance is not routed to when its address is outside
 * --instance_networks (logs, events, errors and the dashboard). */
#define API_EXCLUDED_WHY "its address is outside --instance_networks"

/* True when requests may go to address `sa` (salen bytes; 0: unresolved,
 * never allowed): --instance_networks is empty or holds it. Any thread. */
bool api_addr_allowed(const struct api_server *srv, const struct sockaddr *sa, unsigned salen);

/* This loop's state for a request being handled (loop thread). */
struct api_loop *api_loop_of(struct api_server *srv, struct http_request *req);

/* True when the request carries one of --api_keys or a key of the
 * settings that is neither revoked nor expired (or no key exists at all);
 * otherwise replies 401 in OpenAI's shape and returns false. Loop thread. */
bool api_check_key(struct api_server *srv, struct http_request *req);
/* The request's key among settings `s` (the caller's reference), resolved
 * once per request: NULL without a bearer, for a --api_keys key, or for
 * none of the settings. */
const struct api_key *api_request_key(const struct api_server *srv, const struct api_settings *s,
                                      struct http_request *req);
/* After api_check_key, once the model is known: false (having replied
 * 403) when key `k` (api_request_key) may not use `model`. Loop thread. */
bool api_check_key_model(struct api_server *srv, struct http_request *req, const struct api_key *k,
                         const char *model);

/* The API server's own /metrics samples (per model and instance), without
 * the HTTP server's. Loop thread (it reads that loop's table). 0 or -1. */
struct buf;
int api_write_metrics(struct api_server *srv, struct api_loop *l, struct buf *b);
/* GET /api/health for the API server: its status ("starting" until a
 * table arrived, "ok", or "stale" while no controller answers), and its
 * fields ("controllers":{...},"table":{...},"routing":"...") appended
 * inside an object being written. Loop thread. */
struct jw;
const char *api_health_status(struct api_server *srv, struct api_loop *l);
void api_write_health(struct api_server *srv, struct api_loop *l, struct jw *w);

/* The per-model counters of "name@type" (created on first use). NULL when
 * out of memory. Any thread. */
struct api_mstats *api_mstats_get(struct api_server *srv, const char *model);

/* Request handlers (api_proxy.c). */
void api_h_chat(struct http_request *req, void *arg);
void api_h_completions(struct http_request *req, void *arg);
void api_h_embeddings(struct http_request *req, void *arg);
/* After the loops have stopped: ends every request still in progress. */
void api_proxy_cancel_all(struct api_loop *l);
/* Shutdown has begun: ends the loop's waiting requests (503). Loop thread. */
void api_proxy_drain(struct api_loop *l);
/* The instance that served the request ("host:port"), or NULL. */
const char *api_px_instance(struct http_request *req);

/* ---- active probes (api_probe.c) ----------------------------------------------
 *
 * A thread of its own sends each routable llm/text2vec instance a tiny
 * generation every --probe_interval_ms (and at once after an ejection it
 * did not make); a failed probe ejects the instance until a probe
 * succeeds. See the top of api_probe.c. */
struct api_probe;
struct api_probe_opts {
    int64_t interval_ms; /* 0: not probed */
    int64_t timeout_ms;
};
/* The probe settings of model m (today the flags'). Any thread. */
struct api_probe_opts api_probe_opts(const struct api_server *srv, const struct api_model *m);
/* Starts the probe thread when --probe_interval_ms > 0 (after
 * http_server_new: it relies on libevent's threading). Returns 0, or -1
 * with a reason in err. */
int api_probe_start(struct api_server *srv, char *err, size_t errcap);
/* Stops and joins it, cancelling probes in flight. NULL-safe. */
void api_probe_stop(struct api_server *srv);
/* The probes' /metrics families (zeros when disabled). 0 or -1. Any thread. */
int api_probe_write_metrics(const struct api_server *srv, struct buf *b);

/* ---- the API server as a component (api_server.c) ---------------------------- *
 *
 * `roster start apiserver` runs it alone (api_main); the webserver mounts it
 * beside the controller and the dashboard. Life cycle, on the main thread:
 *   api_server_new    keys, routing policy, controller list (cfg outlives it)
 *   api_server_mount  routes and per-loop state on `http` (before run)
 *   api_server_start  the watcher thread
 *   ... http_server_run ...
 *   api_server_stop   joins the watcher; frees the loops' connection pools
 *   ... http_server_free (runs table swaps still queued) ...
 *   api_server_free   NULL-safe
 * The int functions return 0 or a sysexits code, having logged why. */
int api_server_new(struct api_config *cfg, struct api_server **out);
/* --check after api_server_new: one line per check on `out`; 0 or an exit
 * code after printing why on stderr. Binds and connects nothing. */
int api_server_check(struct api_server *srv, FILE *out);
int api_server_mount(struct api_server *srv, struct http_server *http);
int api_server_start(struct api_server *srv);
void api_server_stop(struct api_server *srv);
void api_server_free(struct api_server *srv);

int api_main(int argc, char **argv);

#endif
