/* SPDX-License-Identifier: MIT
 *
 * api_dash_http.c - the dashboard's routes (docs/api.md, "Dashboard"):
 *
 *   GET  /, /dashboard.css, /dashboard.js   the embedded files
 *   GET  /api/dashboard/state               the current state (JSON)
 *   GET  /api/dashboard/stream              live feed: server-sent events
 *   GET  /api/dashboard/events?after=SEQ    events missed
 *   GET  /api/dashboard/instances?model=... one page of a model's instances
 *   POST /api/dashboard/instance            weight/enabled, through a controller
 *   POST /api/dashboard/apply               stop/start/restart, through the worker
 *   GET  /api/dashboard/keys                keys and aliases (a controller's) with
 *                                           this server's usage per key
 *   POST /api/dashboard/keys                create a key (the answer shows it once)
 *   POST /api/dashboard/keys/revoke         {name, purge?}
 *   POST /api/dashboard/aliases             {name, models}: set
 *   POST /api/dashboard/aliases/remove      {name}
 *
 * The data routes need an API key when the API server has --api_keys; the
 * actions need the cluster secret too (X-Roster-Secret) when one is set,
 * and come from loopback otherwise; so do the settings routes (keys and
 * aliases), reads included: they are an operator's. An action is checked on the loop (the
 * instance must be in the registry: no calls to arbitrary addresses), then
 * made by the action thread, whose answer is posted back to the loop.
 *
 * Live feeds: each loop keeps its clients; when the feed thread publishes
 * a snapshot (or events happen) it posts one task to every loop that has
 * clients, which writes the new state and the new events to each, skipping
 * a client whose output is still more than FEED_BACKLOG bytes behind.
 */
#include "api_dash.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>
#include <sysexits.h>

#include <cjson/cJSON.h>

#define LOG_MODULE "dashboard"
#include "buf.h"
#include "http_client.h"
#include "json_check.h"
#include "json_write.h"
#include "log.h"
#include "query.h"
#include "util.h"

#define FEED_BACKLOG (1024 * 1024) /* a feed this far behind skips a state */
#define FEED_EVENTS  200           /* events sent at once */
#define PAGE_MAX     500
#define MAX_ACTION   (64u * 1024)       /* an action's answer */
#define APPLY_MIN_MS 10000              /* a worker's apply may take a moment */
#define MAX_SETTINGS (4u * 1024 * 1024) /* a controller's key or alias list */
#define SECURITY_HEADERS                                                                           \
    "Content-Security-Policy: default-src 'self'; img-src 'self' data:; style-src 'self'; "        \
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "             \
    "form-action 'self'\r\n"                                                                       \
    "X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n"
#define NO_STORE "Cache-Control: no-store\r\n"

/* ---- per loop: live feeds ----------------------------------------------------------- */

struct dash_client {
    struct http_request *req;
    struct dash_loop *dl;
    uint64_t snap_seq; /* the last state sent */
    uint64_t ev_seq;   /* the last event sent */
    struct dash_client *prev, *next;
};

struct dash_loop {
    struct api_dash *d;
    struct http_loop *loop;
    struct dash_client *clients;
    _Atomic int nclients;
    struct http_task task;
    _Atomic bool posted;
};

static void
write_events(struct jw *w, const struct api_event *ev, size_t n)
{
    jw_raw(w, "[");
    for (size_t i = 0; i < n; i++) {
        const struct api_event *e = &ev[i];
        jw_raw(w, i ? ",{\"seq\":" : "{\"seq\":");
        jw_i64(w, (int64_t)e->seq);
        jw_raw(w, ",\"t_ms\":");
        jw_i64(w, e->t_ms);
        jw_raw(w, ",\"kind\":");
        jw_str(w, e->kind);
        jw_raw(w, ",\"model\":");
        jw_str(w, e->model[0] ? e->model : NULL);
        jw_raw(w, ",\"host\":");
        jw_str(w, e->host[0] ? e->host : NULL);
        jw_raw(w, ",\"port\":");
        if (e->host[0]) {
            jw_i64(w, e->port);
        } else {
            jw_raw(w, "null");
        }
        jw_raw(w, ",\"detail\":");
        jw_str(w, e->detail);
        jw_raw(w, "}");
    }
    jw_raw(w, "]");
}

/* Sends a client what it has not seen: the state, then events. */
static void
feed_update(struct dash_client *c, struct dash_snap *snap)
{
    struct api_dash *d = c->dl->d;
    struct api_event *ev;
    size_t n;

    if (http_req_output_pending(c->req) > FEED_BACKLOG) {
        return; /* a slow reader: the next tick brings a newer state anyway */
    }
    if (snap && snap->seq != c->snap_seq) {
        struct iovec iov[3] = {{(void *)"event: state\ndata: ", 19},
                               {snap->state, snap->state_len},
                               {(void *)"\n\n", 2}};
        http_stream_writev(c->req, iov, 3);
        c->snap_seq = snap->seq;
    }
    if (c->snap_seq == 0) {
        return; /* the state comes first: events wait for the feed's first snapshot */
    }
    if (api_events_seq(d->api) == c->ev_seq || !(ev = calloc(FEED_EVENTS, sizeof(*ev)))) {
        return;
    }
    n = api_events_since(d->api, c->ev_seq, ev, FEED_EVENTS, NULL);
    if (n > 0) {
        struct buf b;
        struct jw w;
        buf_init(&b, 4 * 1024 * 1024);
        jw_init(&w, &b);
        jw_raw(&w, "event: events\ndata: ");
        write_events(&w, ev, n);
        jw_raw(&w, "\n\n");
        if (!w.err) {
            http_stream_write(c->req, b.data, b.len);
            c->ev_seq = ev[n - 1].seq;
        }
        buf_cleanup(&b);
    }
    free(ev);
}

static void
on_publish_task(struct http_task *t)
{
    struct dash_loop *dl = (struct dash_loop *)((char *)t - offsetof(struct dash_loop, task));
    struct dash_snap *snap = dash_current(dl->d);

    atomic_store(&dl->posted, false);
    for (struct dash_client *c = dl->clients; c; c = c->next) {
        feed_update(c, snap);
    }
    dash_snap_unref(snap);
}

void
dash_publish(struct api_dash *d)
{
    for (int i = 0; d->loops && i < d->nloops; i++) {
        struct dash_loop *dl = &d->loops[i];
        bool expected = false;
        if (atomic_load(&dl->nclients) > 0 &&
            atomic_compare_exchange_strong(&dl->posted, &expected, true)) {
            http_loop_post(dl->loop, &dl->task);
        }
    }
}

static void
client_remove(struct dash_client *c)
{
    struct dash_loop *dl = c->dl;

    if (c->prev) {
        c->prev->next = c->next;
    } else {
        dl->clients = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    atomic_fetch_sub(&dl->nclients, 1);
    atomic_fetch_sub(&dl->d->clients, 1);
    free(c);
}

static void
on_client_gone(struct http_request *req, void *arg)
{
    client_remove(arg);
    http_stream_end(req);
}

/* Shutdown: every feed ends, so the server can stop. */
static void
on_drain(struct http_loop *loop, void *arg)
{
    struct api_dash *d = arg;
    struct dash_loop *dl = &d->loops[http_loop_index(loop)];

    while (dl->clients) {
        struct dash_client *c = dl->clients;
        struct http_request *req = c->req;
        http_req_on_close(req, NULL, NULL);
        client_remove(c);
        http_stream_end(req);
    }
}

/* ---- helpers ---------------------------------------------------------------------- */

static void
reply_buf(struct http_request *req, struct buf *b, struct jw *w)
{
    if (w->err) {
        http_reply_error(req, 500, "server_error", "response_too_large", "response too large");
    } else {
        http_reply(req, 200, "application/json", b->data, b->len, NO_STORE);
    }
}

/* The data routes: the API key when keys are on. */
static bool
data_allowed(struct api_dash *d, struct http_request *req)
{
    if (!api_check_key(d->api, req) ||
        (d->cfg.read_guard && !d->cfg.read_guard(req, d->cfg.read_guard_arg))) {
        return false;
    }
    dash_viewed(d);
    return true;
}

/* ---- static files ------------------------------------------------------------------ */

static const struct {
    const char *path, *name, *type;
} files[] = {
    {"/", "index.html", "text/html; charset=utf-8"},
    {"/dashboard.css", "dashboard.css", "text/css; charset=utf-8"},
    {"/dashboard.js", "dashboard.js", "text/javascript; charset=utf-8"},
};

static void
static_data(void *ctx)
{
    (void)ctx; /* the files live as long as the program */
}

static const struct dash_asset *
asset(const char *name)
{
    for (const struct dash_asset *a = dash_assets; a->name; a++) {
        if (strcmp(a->name, name) == 0) {
            return a;
        }
    }
    return NULL;
}

static void
h_file(struct http_request *req, void *arg)
{
    struct api_dash *d = arg;
    const char *path = http_req_path(req);
    char hdr[1024];

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        const struct dash_asset *a = asset(files[i].name);
        const char *inm = http_req_header(req, "If-None-Match");
        if (strcmp(path, files[i].path) != 0) {
            continue;
        }
        if (!a) {
            http_reply_error(req, 404, "invalid_request_error", "not_found",
                             "this build has no dashboard file %s", files[i].name);
            return;
        }
        snprintf(hdr, sizeof(hdr), "ETag: %s\r\nCache-Control: no-cache\r\n" SECURITY_HEADERS,
                 d->etag[i]);
        if (inm && strstr(inm, d->etag[i])) {
            http_reply(req, 304, NULL, NULL, 0, hdr);
        } else {
            http_reply_ref(req, 200, files[i].type, a->data, a->len, hdr, static_data, NULL);
        }
        return;
    }
    http_reply_error(req, 404, "invalid_request_error", "not_found", "no such file");
}

/* ---- state, events, feed ------------------------------------------------------------ */

static void
h_state(struct http_request *req, void *arg)
{
    struct api_dash *d = arg;
    struct dash_snap *s;

    if (!data_allowed(d, req)) {
        return;
    }
    s = dash_current(d);
    if (!s) {
        http_reply_error(req, 503, "server_error", "starting",
                         "the dashboard has no state yet; retry in a second");
        return;
    }
    http_reply(req, 200, "application/json", s->state, s->state_len, NO_STORE);
    dash_snap_unref(s);
}

static void
h_events(struct http_request *req, void *arg)
{
    struct api_dash *d = arg;
    const char *q = http_req_query(req);
    struct query query;
    struct api_event *ev = NULL;
    int64_t after = 0;
    uint64_t last = 0;
    char err[160];
    size_t n;
    struct buf b;
    struct jw w;

    if (!data_allowed(d, req)) {
        return;
    }
    if (query_parse(q, strlen(q), &query, err, sizeof(err)) != 0) {
        http_reply_error(req, 400, "invalid_request_error", "invalid_query", "%s", err);
        return;
    }
    const char *a = query_get(&query, "after");
    if (a && *a && util_parse_i64(a, 0, INT64_MAX, &after) != 0) {
        query_cleanup(&query);
        http_reply_error(req, 400, "invalid_request_error", "invalid_query",
                         "'after' must be an event sequence number (0 or more)");
        return;
    }
    query_cleanup(&query);
    ev = calloc(API_EVENTS_MAX, sizeof(*ev));
    if (!ev) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        return;
    }
    n = api_events_since(d->api, (uint64_t)after, ev, API_EVENTS_MAX, &last);
    buf_init(&b, 8 * 1024 * 1024);
    jw_init(&w, &b);
    jw_raw(&w, "{\"events\":");
    write_events(&w, ev, n);
    jw_raw(&w, ",\"events_seq\":");
    jw_i64(&w, (int64_t)last);
    jw_raw(&w, "}");
    reply_buf(req, &b, &w);
    buf_cleanup(&b);
    free(ev);
}

static void
h_stream(struct http_request *req, void *arg)
{
    struct api_dash *d = arg;
    struct dash_loop *dl = &d->loops[http_loop_index(http_req_loop(req))];
    struct dash_client *c;
    struct dash_snap *snap;

    if (!data_allowed(d, req)) {
        return;
    }
    if (http_loop_draining(dl->loop) || !(c = calloc(1, sizeof(*c)))) {
        http_reply_error(req, 503, "server_error", "unavailable",
                         "shutting down, or out of memory");
        return;
    }
    c->req = req;
    c->dl = dl;
    c->next = dl->clients;
    if (dl->clients) {
        dl->clients->prev = c;
    }
    dl->clients = c;
    atomic_fetch_add(&dl->nclients, 1);
    atomic_fetch_add(&d->clients, 1);
    http_req_on_close(req, on_client_gone, c);
    http_stream_start(req, 200, "text/event-stream",
                      "Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n");
    snap = dash_current(d);
    feed_update(c, snap); /* the state now, and the recent events */
    dash_snap_unref(snap);
}

/* ---- one model's instances ----------------------------------------------------------- */

enum status_filter { ST_ALL, ST_UNHEALTHY, ST_HEALTHY, ST_EJECTED, ST_DRAINED };

/* Case-insensitive (ASCII) substring test. */
static bool
contains_nocase(const char *s, const char *needle)
{
    size_t n = strlen(needle);

    for (; *s; s++) {
        if (strncasecmp(s, needle, n) == 0) {
            return true;
        }
    }
    return n == 0;
}

static bool
row_matches(const struct dash_row *r, enum status_filter st, const char *q)
{
    char label[API_NAME_MAX + 16];

    switch (st) {
    case ST_ALL:
        break;
    case ST_UNHEALTHY:
        if (r->alive) {
            return false;
        }
        break;
    case ST_HEALTHY:
        if (!r->alive) {
            return false;
        }
        break;
    case ST_EJECTED:
        if (!r->ejected) {
            return false;
        }
        break;
    case ST_DRAINED:
        if (r->weight > 0) {
            return false;
        }
        break;
    }
    if (q && *q) {
        snprintf(label, sizeof(label), "%s:%d", r->host, r->port);
        return contains_nocase(label, q);
    }
    return true;
}

static void
write_row(struct jw *w, const struct dash_row *r, int64_t since_ms)
{
    jw_raw(w, "{\"host\":");
    jw_str(w, r->host);
    jw_raw(w, ",\"port\":");
    jw_i64(w, r->port);
    jw_raw(w, ",\"healthy\":");
    jw_bool(w, r->alive);
    jw_raw(w, ",\"routable\":");
    jw_bool(w, r->routable);
    jw_raw(w, ",\"enabled\":");
    jw_bool(w, r->enabled);
    jw_raw(w, ",\"weight\":");
    jw_double(w, r->weight);
    jw_raw(w, ",\"weight_declared\":");
    jw_double(w, r->weight_declared);
    jw_raw(w, ",\"weight_override\":");
    if (r->weight_override >= 0) {
        jw_double(w, r->weight_override);
    } else {
        jw_raw(w, "null");
    }
    jw_raw(w, ",\"lease_ms\":");
    jw_i64(w, r->lease_ms);
    jw_raw(w, ",\"heartbeat_age_ms\":");
    if (r->age_ms >= 0) {
        jw_i64(w, r->age_ms + since_ms);
    } else {
        jw_raw(w, "null");
    }
    jw_raw(w, ",\"load\":{\"in_flight\":");
    jw_i64(w, r->in_flight);
    jw_raw(w, ",\"queue_length\":");
    jw_i64(w, r->queue);
    jw_raw(w, ",\"capacity\":");
    jw_i64(w, r->capacity);
    jw_raw(w, "},\"ejected\":");
    jw_bool(w, r->ejected);
    jw_raw(w, ",\"ejected_ms_left\":");
    jw_i64(w, r->ejected_ms_left);
    jw_raw(w, ",\"last_error\":");
    jw_str(w, r->last_error[0] ? r->last_error : NULL);
    jw_raw(w, ",\"excluded\":");
    jw_str(w, r->excluded ? API_EXCLUDED_WHY : NULL);
    jw_raw(w, ",\"in_flight\":");
    jw_i64(w, r->local_in_flight);
    jw_raw(w, ",");
    dash_write_rates(w, &r->r);
    jw_raw(w, ",\"errors\":");
    jw_i64(w, (int64_t)r->r.failures);
    jw_raw(w, "}");
}

static void
h_instances(struct http_request *req, void *arg)
{
    static const char *const names[] = {"all", "unhealthy", "healthy", "ejected", "drained"};
    struct api_dash *d = arg;
    const char *q = http_req_query(req);
    struct query query;
    struct dash_snap *s = NULL;
    const struct dash_model *m;
    int64_t offset = 0, limit = 50;
    enum status_filter st = ST_ALL;
    char err[160];
    struct buf b;
    struct jw w;

    if (!data_allowed(d, req)) {
        return;
    }
    if (query_parse(q, strlen(q), &query, err, sizeof(err)) != 0) {
        http_reply_error(req, 400, "invalid_request_error", "invalid_query", "%s", err);
        return;
    }
    const char *model = query_get(&query, "model");
    const char *off = query_get(&query, "offset"), *lim = query_get(&query, "limit");
    const char *status = query_get(&query, "status"), *text = query_get(&query, "q");
    bool bad = !model || !*model || (off && *off && util_parse_i64(off, 0, INT64_MAX, &offset)) ||
               (lim && *lim && util_parse_i64(lim, 1, PAGE_MAX, &limit));
    if (!bad && status && *status) {
        bad = true;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            if (strcmp(status, names[i]) == 0) {
                st = (enum status_filter)i;
                bad = false;
            }
        }
    }
    if (bad) {
        query_cleanup(&query);
        http_reply_error(req, 400, "invalid_request_error", "invalid_query",
                         "need model=NAME@TYPE; offset >= 0; limit 1..%d; status all, unhealthy, "
                         "healthy, ejected or drained",
                         PAGE_MAX);
        return;
    }
    s = dash_current(d);
    m = s ? dash_snap_model(s, model) : NULL;
    if (!m) {
        http_reply_error(req, 404, "invalid_request_error", "model_not_found",
                         "no model '%.128s' in the registry", model);
        query_cleanup(&query);
        dash_snap_unref(s);
        return;
    }
    int64_t since = util_mono_ms() - s->list_mono_ms;
    size_t total = 0, shown = 0;
    buf_init(&b, 16 * 1024 * 1024);
    jw_init(&w, &b);
    jw_raw(&w, "{\"model\":");
    jw_str(&w, m->model);
    jw_raw(&w, ",\"version\":");
    jw_i64(&w, (int64_t)m->version);
    jw_raw(&w, ",\"offset\":");
    jw_i64(&w, offset);
    jw_raw(&w, ",\"items\":[");
    for (size_t i = m->first; i < m->first + m->n; i++) {
        if (!row_matches(&s->rows[i], st, text)) {
            continue;
        }
        if ((int64_t)total >= offset && (int64_t)shown < limit) {
            jw_raw(&w, shown ? "," : "");
            write_row(&w, &s->rows[i], s->list_mono_ms ? since : 0);
            shown++;
        }
        total++;
    }
    jw_raw(&w, "],\"total\":");
    jw_i64(&w, (int64_t)total);
    jw_raw(&w, "}");
    reply_buf(req, &b, &w);
    buf_cleanup(&b);
    query_cleanup(&query);
    dash_snap_unref(s);
}

/* ---- actions --------------------------------------------------------------------------- */

enum job_kind { JOB_ADMIN, JOB_APPLY, JOB_SETTINGS };

struct dash_job {
    struct http_task task; /* the answer, on the request's loop */
    struct http_request *req;
    struct http_loop *loop;
    enum job_kind kind;
    char *body; /* what to send (owned; NULL: none) */
    /* JOB_SETTINGS: the controller's route, and for the list a second
     * GET of the aliases from the same controller */
    struct api_dash *d;
    const char *method;
    char path[160];
    bool list;
    struct buf answer2;
    char url[API_NAME_MAX + 64];
    long status; /* 0: no answer */
    struct buf answer;
    char from[512]; /* the controller or worker that answered */
    char err[800];
    struct dash_job *next;
};

static void
job_free(struct dash_job *j)
{
    if (j->answer.data) {
        explicit_bzero(j->answer.data, j->answer.len); /* a created key */
    }
    buf_cleanup(&j->answer);
    buf_cleanup(&j->answer2);
    free(j->body);
    free(j);
}

/* This server's counters of key `name` into `usage` (a lookup: no entry
 * is made for a key that had no request here). */
static void
add_usage(struct api_server *api, cJSON *key, const char *name)
{
    static const char *const reasons[API_KEY_REJECT_N] = {"invalid", "revoked", "expired", "model",
                                                          "rate_limited"};
    cJSON *u = cJSON_AddObjectToObject(key, "usage");
    cJSON *rej = u ? cJSON_AddObjectToObject(u, "rejected") : NULL;
    const struct api_kstats *k;

    if (!rej) {
        return;
    }
    pthread_mutex_lock(&api->kstats_mu);
    for (k = api->kstats; k && strcmp(k->key, name) != 0; k = k->next) {
    }
    cJSON_AddNumberToObject(u, "requests", k ? (double)atomic_load(&k->requests) : 0);
    for (int r = API_KEY_REVOKED; r < API_KEY_REJECT_N; r++) {
        cJSON_AddNumberToObject(rej, reasons[r], k ? (double)atomic_load(&k->rejected[r]) : 0);
    }
    cJSON_AddNumberToObject(u, "prompt_tokens", k ? (double)atomic_load(&k->prompt_tokens) : 0);
    cJSON_AddNumberToObject(u, "completion_tokens",
                            k ? (double)atomic_load(&k->completion_tokens) : 0);
    pthread_mutex_unlock(&api->kstats_mu);
}

/* The settings list: {"controller", "keys": [the controller's, no hash,
 * with "usage"], "aliases": [...]}. */
static void
reply_settings_list(struct api_dash *d, struct dash_job *j)
{
    struct http_request *req = j->req;
    cJSON *keys = NULL, *aliases = NULL, *out = NULL, *k;
    char err[64];
    char *body = NULL;

    if (json_parse(j->answer.data, j->answer.len, 16, &keys, err, sizeof(err)) != 0 ||
        !cJSON_IsArray(keys) ||
        json_parse(j->answer2.data, j->answer2.len, 16, &aliases, err, sizeof(err)) != 0 ||
        !cJSON_IsArray(aliases)) {
        http_reply_error(req, 502, "server_error", "bad_answer",
                         "controller %s: the key or alias list is not a JSON array", j->from);
        goto out;
    }
    cJSON_ArrayForEach(k, keys)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(k, "name");
        cJSON_DeleteItemFromObjectCaseSensitive(k, "hash"); /* never to a browser */
        if (cJSON_IsObject(k) && cJSON_IsString(name)) {
            add_usage(d->api, k, name->valuestring);
        }
    }
    out = cJSON_CreateObject();
    if (out && cJSON_AddStringToObject(out, "controller", j->from)) {
        cJSON_AddItemToObject(out, "keys", keys);
        keys = NULL;
        cJSON_AddItemToObject(out, "aliases", aliases);
        aliases = NULL;
        body = cJSON_PrintUnformatted(out);
    }
    if (body) {
        http_reply(req, 200, "application/json", body, strlen(body), NO_STORE);
    } else {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
    }
out:
    free(body);
    cJSON_Delete(out);
    cJSON_Delete(keys);
    cJSON_Delete(aliases);
}

/* Back on the loop: the answer. */
static void
on_job_done(struct http_task *t)
{
    struct dash_job *j = (struct dash_job *)t;
    struct http_request *req = j->req;
    char msg[300];

    if (j->status == 0) {
        http_reply_error(req, 502, "server_error", "unreachable", "%s", j->err);
    } else if (j->kind == JOB_SETTINGS && (j->status < 200 || j->status > 299)) {
        json_error_message(j->answer.data, j->answer.len, msg, sizeof(msg));
        http_reply_error(req, (int)j->status,
                         j->status < 500 ? "invalid_request_error" : "server_error",
                         j->status == 404   ? "not_found"
                         : j->status == 409 ? "already_exists"
                         : j->status == 422 ? "invalid_setting"
                                            : "controller_refused",
                         "controller %s: %s", j->from, msg);
    } else if (j->kind == JOB_SETTINGS && j->list) {
        reply_settings_list(j->d, j);
    } else if (j->kind == JOB_ADMIN && j->status != 200) {
        /* the controller's error, as it said it */
        json_error_message(j->answer.data, j->answer.len, msg, sizeof(msg));
        http_reply_error(req, (int)j->status,
                         j->status < 500 ? "invalid_request_error" : "server_error",
                         j->status == 404 ? "instance_not_found" : "controller_refused",
                         "controller %s: %s", j->from, msg);
    } else if (j->kind == JOB_APPLY && j->status != 200) {
        json_error_message(j->answer.data, j->answer.len, msg, sizeof(msg));
        http_reply_error(req, 502, "server_error", "worker_refused",
                         "the worker at %s answered %ld: %s", j->from, j->status, msg);
    } else {
        cJSON *ans = NULL;
        char jerr[64];
        struct buf b;
        struct jw w;
        bool ok = true;
        if (json_parse(j->answer.data, j->answer.len, 16, &ans, jerr, sizeof(jerr)) != 0) {
            ans = NULL;
        }
        if (j->kind == JOB_APPLY) {
            ok = cJSON_IsTrue(json_get(ans, "success"));
        }
        buf_init(&b, MAX_ACTION * 2);
        jw_init(&w, &b);
        jw_raw(&w, "{\"ok\":");
        jw_bool(&w, ok);
        jw_raw(&w, j->kind != JOB_APPLY ? ",\"controller\":" : ",\"worker\":");
        jw_str(&w, j->from);
        jw_raw(&w, ",\"result\":");
        if (ans) {
            jw_raw(&w, buf_str(&j->answer));
        } else {
            jw_raw(&w, "null");
        }
        jw_raw(&w, "}");
        reply_buf(req, &b, &w);
        if (b.data) {
            explicit_bzero(b.data, b.len); /* a created key */
        }
        buf_cleanup(&b);
        cJSON_Delete(ans);
    }
    job_free(j);
}

/* The second GET of a settings list (aliases), from the controller that
 * answered the first. False when it failed (j->err says why). */
static bool
run_list_aliases(struct api_dash *d, struct dash_job *j, const char *ctl,
                 const char *const *headers)
{
    struct http_client_response resp;
    char url[700], e[256];

    snprintf(url, sizeof(url), "%s/api/roster/aliases", ctl);
    if (http_client_request_cancel("GET", url, NULL, 0, headers, (int)d->cfg.control_timeout_ms,
                                   MAX_SETTINGS, &d->act_cancel, &resp, e, sizeof(e)) != 0) {
        snprintf(j->err, sizeof(j->err), "%s: %s", j->from, e);
        return false;
    }
    if (resp.status != 200) {
        /* its error is the answer */
        j->status = resp.status;
        buf_cleanup(&j->answer);
        j->answer = resp.body;
        return true;
    }
    buf_cleanup(&j->answer2);
    j->answer2 = resp.body; /* taken */
    return true;
}

/* The action thread: one call, with a timeout; admin changes and settings
 * go to the first controller that answers below 500. */
static void
run_job(struct api_dash *d, struct dash_job *j)
{
    char secret[600];
    const char *headers[3] = {"Content-Type: application/json",
                              api_secret_header(d->api, secret, sizeof(secret)), NULL};
    size_t order[API_MAX_CTLS];
    size_t n = 1;
    bool to_ctl = j->kind != JOB_APPLY;

    if (to_ctl) {
        n = api_controller_order(d->api, order);
        snprintf(j->err, sizeof(j->err), "no controller answered");
    }
    for (size_t k = 0; k < n; k++) {
        struct http_client_response resp;
        char url[700], e[256];
        int timeout = (int)d->cfg.control_timeout_ms;
        const char *method = j->kind == JOB_SETTINGS ? j->method : "POST";
        if (to_ctl) {
            util_strlcpy(j->from, d->api->ctl_shown[order[k]], sizeof(j->from));
            snprintf(url, sizeof(url), "%s%s", d->api->ctl[order[k]],
                     j->kind == JOB_SETTINGS ? j->path : "/api/roster/instance");
        } else {
            util_strlcpy(j->from, j->url, sizeof(j->from));
            snprintf(url, sizeof(url), "%s/api/worker/apply", j->url);
            timeout = timeout > APPLY_MIN_MS ? timeout : APPLY_MIN_MS;
        }
        if (http_client_request_cancel(method, url, j->body, j->body ? strlen(j->body) : 0, headers,
                                       timeout, j->kind == JOB_SETTINGS ? MAX_SETTINGS : MAX_ACTION,
                                       &d->act_cancel, &resp, e, sizeof(e)) != 0) {
            snprintf(j->err, sizeof(j->err), "%s: %s", j->from, e);
            continue;
        }
        if (to_ctl && resp.status >= 500 && k + 1 < n) {
            snprintf(j->err, sizeof(j->err), "%s: status %ld", j->from, resp.status);
            http_client_response_cleanup(&resp);
            continue;
        }
        j->status = resp.status;
        buf_cleanup(&j->answer);
        j->answer = resp.body; /* taken */
        if (j->list && j->status == 200 &&
            !run_list_aliases(d, j, d->api->ctl[order[k]], headers)) {
            j->status = 0;
            continue;
        }
        break;
    }
    explicit_bzero(secret, sizeof(secret));
}

static void *
act_main(void *arg)
{
    struct api_dash *d = arg;

    pthread_mutex_lock(&d->act_mu);
    for (;;) {
        while (!d->jobs && !d->act_stop) {
            pthread_cond_wait(&d->act_cond, &d->act_mu);
        }
        struct dash_job *j = d->jobs;
        if (!j) {
            break; /* stopping, and nothing left */
        }
        d->jobs = j->next;
        if (!d->jobs) {
            d->jobs_tail = NULL;
        }
        bool stopping = d->act_stop;
        pthread_mutex_unlock(&d->act_mu);
        if (stopping) {
            snprintf(j->err, sizeof(j->err), "the server is shutting down");
        } else {
            run_job(d, j);
        }
        http_loop_post(j->loop, &j->task);
        pthread_mutex_lock(&d->act_mu);
    }
    pthread_mutex_unlock(&d->act_mu);
    return NULL;
}

static void
submit(struct api_dash *d, struct dash_job *j)
{
    j->task.fn = on_job_done;
    pthread_mutex_lock(&d->act_mu);
    if (d->jobs_tail) {
        d->jobs_tail->next = j;
    } else {
        d->jobs = j;
    }
    d->jobs_tail = j;
    pthread_cond_signal(&d->act_cond);
    pthread_mutex_unlock(&d->act_mu);
}

/* Actions, and the settings reads (json_body false: a GET): the API key
 * (when keys are on), then the cluster secret (when one is set) or a
 * loopback client. */
static bool
action_allowed(struct api_dash *d, struct http_request *req, bool json_body)
{
    const char *secret = d->cfg.secret;

    const char *ct = http_req_header(req, "Content-Type");

    if (!api_check_key(d->api, req)) {
        return false;
    }
    /* a JSON body: a page of another site cannot send one without the
     * browser asking first (a CORS preflight, which is never allowed) */
    if (json_body && (!ct || strncasecmp(ct, "application/json", 16) != 0)) {
        http_reply_error(req, 415, "invalid_request_error", "unsupported_media_type",
                         "actions take a JSON body (Content-Type: application/json)");
        return false;
    }
    if (secret && *secret) {
        const char *given = http_req_header(req, "X-Roster-Secret");
        if (given && util_ct_equal(given, strlen(given), secret, strlen(secret))) {
            return true;
        }
        http_reply_error(req, 401, "authentication_error",
                         given ? "bad_cluster_secret" : "cluster_secret_required",
                         given ? "wrong cluster secret"
                               : "actions need the cluster secret (header X-Roster-Secret)");
        return false;
    }
    if (netaddr_list_match(&d->loopback, http_req_peer(req)) && !http_req_forged_by_browser(req)) {
        return true;
    }
    if (netaddr_list_match(&d->loopback, http_req_peer(req))) {
        http_reply_error(req, 403, "permission_error", "cross_site_request",
                         "a browser sent this from a page of another site, or under a name "
                         "other than an address (Origin %.100s): refused",
                         http_req_header(req, "Origin") ? http_req_header(req, "Origin") : "-");
        return false;
    }
    http_reply_error(req, 403, "permission_error", "forbidden",
                     "this server has no --cluster_secret: actions are allowed from its own "
                     "machine only (%s is not)",
                     http_req_peer_str(req));
    return false;
}

/* Reads {model_name, host, port, ...} and finds the instance in the
 * registry. Returns the parsed body (caller deletes), or NULL after
 * replying. */
static cJSON *
action_target(struct api_dash *d, struct http_request *req, const char **model, const char **host,
              int *port)
{
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    cJSON *root = NULL;
    char err[160];
    struct dash_snap *s;
    bool found;

    if (json_parse(body, len, 16, &root, err, sizeof(err)) != 0 || !cJSON_IsObject(root)) {
        http_reply_error(req, 400, "invalid_request_error", "invalid_json",
                         "the body must be a JSON object: %s", root ? "not an object" : err);
        cJSON_Delete(root);
        return NULL;
    }
    const cJSON *m = json_get(root, "model_name"), *h = json_get(root, "host");
    const cJSON *p = json_get(root, "port");
    if (!cJSON_IsString(m) || !strchr(m->valuestring, '@') || !cJSON_IsString(h) ||
        !cJSON_IsNumber(p) || p->valuedouble < 1 || p->valuedouble > 65535 ||
        p->valuedouble != (double)(int)p->valuedouble) {
        http_reply_error(req, 400, "invalid_request_error", "invalid_instance",
                         "need model_name (\"name@type\"), host (a string) and port (1..65535)");
        cJSON_Delete(root);
        return NULL;
    }
    s = dash_current(d);
    found = s && dash_snap_row(s, m->valuestring, h->valuestring, (int)p->valuedouble);
    dash_snap_unref(s);
    if (!found) {
        http_reply_error(req, 404, "invalid_request_error", "instance_not_found",
                         "no instance %.128s at %.128s:%d in the registry", m->valuestring,
                         h->valuestring, (int)p->valuedouble);
        cJSON_Delete(root);
        return NULL;
    }
    *model = m->valuestring;
    *host = h->valuestring;
    *port = (int)p->valuedouble;
    return root;
}

static struct dash_job *
job_new(struct http_request *req, enum job_kind kind, struct buf *body)
{
    struct dash_job *j = calloc(1, sizeof(*j));

    if (!j || (body && !(j->body = buf_take(body)))) {
        free(j);
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        return NULL;
    }
    j->req = req;
    j->loop = http_req_loop(req);
    j->kind = kind;
    buf_init(&j->answer, MAX_ACTION);
    buf_init(&j->answer2, MAX_SETTINGS);
    return j;
}

static void
h_instance(struct http_request *req, void *arg)
{
    struct api_dash *d = arg;
    const char *model, *host;
    int port;
    cJSON *root;
    struct dash_job *j;
    struct buf b;
    struct jw w;

    if (!action_allowed(d, req, true) || !(root = action_target(d, req, &model, &host, &port))) {
        return;
    }
    /* json_get hides JSON null, which here means "clear the override" */
    const cJSON *wt = cJSON_GetObjectItemCaseSensitive(root, "weight");
    const cJSON *en = json_get(root, "enabled");
    if ((!wt && !en) || (wt && !cJSON_IsNull(wt) && !cJSON_IsNumber(wt)) ||
        (cJSON_IsNumber(wt) && !(wt->valuedouble >= 0 && wt->valuedouble <= 1e6)) ||
        (en && !cJSON_IsBool(en))) {
        http_reply_error(req, 400, "invalid_request_error", "invalid_action",
                         "give weight (0..1000000, or null to clear the override) and/or enabled "
                         "(true/false)");
        cJSON_Delete(root);
        return;
    }
    buf_init(&b, 4096);
    jw_init(&w, &b);
    jw_raw(&w, "{\"model_name\":");
    jw_str(&w, model);
    jw_raw(&w, ",\"host\":");
    jw_str(&w, host);
    jw_raw(&w, ",\"port\":");
    jw_i64(&w, port);
    if (wt) {
        jw_raw(&w, ",\"weight\":");
        if (cJSON_IsNull(wt)) {
            jw_raw(&w, "null");
        } else {
            jw_double(&w, wt->valuedouble);
        }
    }
    if (en) {
        jw_raw(&w, ",\"enabled\":");
        jw_bool(&w, cJSON_IsTrue(en));
    }
    jw_raw(&w, "}");
    log_info("action from %s: %s %s:%d%s%s", http_req_peer_str(req), model, host, port,
             wt ? " weight" : "", en ? (cJSON_IsTrue(en) ? " enable" : " disable") : "");
    cJSON_Delete(root);
    if (w.err) {
        buf_cleanup(&b);
        http_reply_error(req, 400, "invalid_request_error", "invalid_action", "too long");
        return;
    }
    j = job_new(req, JOB_ADMIN, &b);
    buf_cleanup(&b);
    if (j) {
        submit(d, j);
    }
}

static void
h_apply(struct http_request *req, void *arg)
{
    struct api_dash *d = arg;
    const char *model, *host;
    int port;
    cJSON *root;
    struct dash_job *j;
    struct buf b;
    struct jw w;

    if (!action_allowed(d, req, true) || !(root = action_target(d, req, &model, &host, &port))) {
        return;
    }
    const cJSON *t = json_get(root, "apply_type");
    const char *type = cJSON_IsString(t) ? t->valuestring : "";
    if (strcmp(type, "start") != 0 && strcmp(type, "stop") != 0 && strcmp(type, "restart") != 0) {
        http_reply_error(req, 400, "invalid_request_error", "invalid_action",
                         "apply_type must be start, stop or restart");
        cJSON_Delete(root);
        return;
    }
    const char *at = strrchr(model, '@');
    buf_init(&b, 4096);
    jw_init(&w, &b);
    jw_raw(&w, "{\"model\":");
    jw_strn(&w, model, (size_t)(at - model));
    jw_raw(&w, ",\"apply_type\":");
    jw_str(&w, type);
    jw_raw(&w, ",\"worker_type\":");
    jw_str(&w, at + 1);
    jw_raw(&w, "}");
    log_info("action from %s: %s %s at %s:%d", http_req_peer_str(req), type, model, host, port);
    j = w.err ? NULL : job_new(req, JOB_APPLY, &b);
    buf_cleanup(&b);
    if (j) {
        snprintf(j->url, sizeof(j->url), strchr(host, ':') ? "http://[%s]:%d" : "http://%s:%d",
                 host, port);
        submit(d, j);
    } else if (w.err) {
        http_reply_error(req, 400, "invalid_request_error", "invalid_action", "too long");
    }
    cJSON_Delete(root);
}

/* ---- settings: keys and aliases, through a controller ----------------------------- */

/* Key and alias names as the controllers take them (they go into a query
 * string here): 1..64 of [A-Za-z0-9._-]. */
static bool
valid_setting_name(const cJSON *n)
{
    size_t len = cJSON_IsString(n) ? strlen(n->valuestring) : 0;

    if (len == 0 || len > 64) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = n->valuestring[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}

/* Submits `method path` (with `body`, owned, or NULL) to a controller. */
static void
settings_submit(struct api_dash *d, struct http_request *req, const char *method, const char *path,
                char *body, bool list)
{
    struct dash_job *j = job_new(req, JOB_SETTINGS, NULL);

    if (!j) {
        free(body);
        return;
    }
    j->body = body;
    j->d = d;
    j->method = method;
    j->list = list;
    util_strlcpy(j->path, path, sizeof(j->path));
    submit(d, j);
}

/* The JSON object of a settings action with a valid "name", or NULL after
 * replying. */
static cJSON *
settings_body(struct http_request *req)
{
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    cJSON *root = NULL;
    char err[160];

    if (json_parse(body, len, 16, &root, err, sizeof(err)) != 0 || !cJSON_IsObject(root)) {
        http_reply_error(req, 400, "invalid_request_error", "invalid_json",
                         "the body must be a JSON object: %s", root ? "not an object" : err);
        cJSON_Delete(root);
        return NULL;
    }
    if (!valid_setting_name(json_get(root, "name"))) {
        http_reply_error(req, 422, "invalid_request_error", "invalid_setting",
                         "'name' must be 1 to 64 characters from [A-Za-z0-9._-]");
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* A copy of `in` with only `fields` (those present), printed; NULL when
 * out of memory. */
static char *
settings_pick(const cJSON *in, const char *const *fields)
{
    cJSON *out = cJSON_CreateObject();
    char *s = NULL;

    for (size_t i = 0; out && fields[i]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(in, fields[i]);
        if (v && !cJSON_AddItemToObject(out, fields[i], cJSON_Duplicate(v, 1))) {
            goto out;
        }
    }
    s = out ? cJSON_PrintUnformatted(out) : NULL;
out:
    cJSON_Delete(out);
    return s;
}

static void
h_keys_list(struct http_request *req, void *arg)
{
    struct api_dash *d = arg;

    if (action_allowed(d, req, false)) {
        settings_submit(d, req, "GET", "/api/roster/keys", NULL, true);
    }
}

/* Forwards the `fields` of a {name, ...} body to the controllers
 * (`method` `path`); logs what (`what` and the name: a created key is in
 * the answer, never in a log line). */
static void
settings_forward(struct http_request *req, struct api_dash *d, const char *const *fields,
                 const char *what, const char *method, const char *path)
{
    cJSON *root;
    char *body;

    if (!action_allowed(d, req, true) || !(root = settings_body(req))) {
        return;
    }
    body = settings_pick(root, fields);
    log_info("settings from %s: %s %s", http_req_peer_str(req), what,
             json_get(root, "name")->valuestring);
    cJSON_Delete(root);
    if (!body) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        return;
    }
    settings_submit(d, req, method, path, body, false);
}

static void
h_key_create(struct http_request *req, void *arg)
{
    static const char *const fields[] = {"name",     "models",     "rpm", "tpm",
                                         "priority", "expires_at", NULL};

    settings_forward(req, arg, fields, "create key", "POST", "/api/roster/keys");
}

/* {name, purge?} -> DELETE /api/roster/{keys|aliases}?name=N */
static void
settings_delete(struct http_request *req, struct api_dash *d, const char *what)
{
    cJSON *root;
    char path[160];

    if (!action_allowed(d, req, true) || !(root = settings_body(req))) {
        return;
    }
    const cJSON *purge = json_get(root, "purge");
    if (purge && !cJSON_IsBool(purge)) {
        http_reply_error(req, 422, "invalid_request_error", "invalid_setting",
                         "'purge' must be true or false");
        cJSON_Delete(root);
        return;
    }
    snprintf(path, sizeof(path), "/api/roster/%s?name=%s%s", what,
             json_get(root, "name")->valuestring, cJSON_IsTrue(purge) ? "&purge=true" : "");
    log_info("settings from %s: %s %s %s", http_req_peer_str(req),
             strcmp(what, "aliases") == 0 ? "remove"
             : cJSON_IsTrue(purge)        ? "purge"
                                          : "revoke",
             strcmp(what, "aliases") == 0 ? "alias" : "key", json_get(root, "name")->valuestring);
    cJSON_Delete(root);
    settings_submit(d, req, "DELETE", path, NULL, false);
}

static void
h_key_revoke(struct http_request *req, void *arg)
{
    settings_delete(req, arg, "keys");
}

static void
h_alias_set(struct http_request *req, void *arg)
{
    static const char *const fields[] = {"name", "models", NULL};

    settings_forward(req, arg, fields, "set alias", "PUT", "/api/roster/aliases");
}

static void
h_alias_remove(struct http_request *req, void *arg)
{
    settings_delete(req, arg, "aliases");
}

/* ---- wiring -------------------------------------------------------------------------- */

static void
access_log(struct http_request *req, int status, size_t len, int64_t us, void *arg)
{
    char esc[256];

    (void)arg;
    log_at(status >= 500                               ? LOG_LVL_WARN
           : status >= 400                             ? LOG_LVL_INFO
           : strcmp(http_req_method(req), "POST") == 0 ? LOG_LVL_INFO
                                                       : LOG_LVL_DEBUG,
           "%s %s status=%d bytes=%zu dur_us=%lld peer=%s req=%s", http_req_method(req),
           log_escape(http_req_path(req), esc, sizeof(esc)), status, len, (long long)us,
           http_req_peer_str(req), http_req_id(req));
}

static const struct http_route routes[] = {
    {"GET", "/", h_file, 0},
    {"GET", "/dashboard.css", h_file, 0},
    {"GET", "/dashboard.js", h_file, 0},
    {"GET", "/api/dashboard/state", h_state, 0},
    {"GET", "/api/dashboard/stream", h_stream, 0},
    {"GET", "/api/dashboard/events", h_events, 0},
    {"GET", "/api/dashboard/instances", h_instances, 0},
    {"POST", "/api/dashboard/instance", h_instance, 0},
    {"POST", "/api/dashboard/apply", h_apply, 0},
    {"GET", "/api/dashboard/keys", h_keys_list, 0},
    {"POST", "/api/dashboard/keys", h_key_create, 0},
    {"POST", "/api/dashboard/keys/revoke", h_key_revoke, 0},
    {"POST", "/api/dashboard/aliases", h_alias_set, 0},
    {"POST", "/api/dashboard/aliases/remove", h_alias_remove, 0},
    {NULL, NULL, NULL, 0},
};

int
api_dash_new(struct api_server *api, const struct api_dash_config *cfg, struct api_dash **out)
{
    struct api_dash *d = calloc(1, sizeof(*d));
    char err[128];

    *out = d;
    if (!d) {
        log_error("out of memory");
        return EX_OSERR;
    }
    d->cfg = *cfg;
    d->api = api;
    d->started_mono_ms = util_mono_ms();
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cond, NULL);
    pthread_mutex_init(&d->act_mu, NULL);
    pthread_cond_init(&d->act_cond, NULL);
    if (netaddr_list_parse("127.0.0.0/8,::1", &d->loopback, err, sizeof(err)) != 0) {
        log_error("%s", err);
        return EX_SOFTWARE;
    }
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        const struct dash_asset *a = asset(files[i].name);
        uint64_t h = a ? route_hash(a->data, a->len) : 0;
        snprintf(d->etag[i], sizeof(d->etag[i]), "\"%016" PRIx64 "\"", h);
        if (!a) {
            log_warn("this build has no dashboard file %s", files[i].name);
        }
    }
    dash_feed_hook(d);
    return 0;
}

int
api_dash_mount(struct api_dash *d, struct http_server *http)
{
    const struct http_service svc = {
        .routes = routes,
        .arg = d,
        .access_log = access_log,
        .on_drain = on_drain,
    };

    d->http = http;
    d->nloops = http_server_nloops(http);
    d->loops = calloc((size_t)d->nloops, sizeof(*d->loops));
    if (!d->loops) {
        log_error("out of memory");
        return EX_OSERR;
    }
    for (int i = 0; i < d->nloops; i++) {
        d->loops[i].d = d;
        d->loops[i].loop = http_server_loop(http, i);
        d->loops[i].task.fn = on_publish_task;
    }
    if (http_server_mount(http, &svc) != 0) {
        log_error("cannot mount the dashboard's routes");
        return EX_SOFTWARE;
    }
    return 0;
}

int
api_dash_start(struct api_dash *d)
{
    if (pthread_create(&d->act, NULL, act_main, d) != 0) {
        log_error("cannot start the dashboard's action thread");
        return EX_OSERR;
    }
    d->act_started = true;
    if (dash_feed_start(d) != 0) {
        log_error("cannot start the dashboard's feed thread");
        return EX_OSERR;
    }
    return 0;
}

void
api_dash_stop(struct api_dash *d)
{
    if (!d) {
        return;
    }
    dash_feed_stop(d);
    if (d->act_started) {
        pthread_mutex_lock(&d->act_mu);
        d->act_stop = true;
        pthread_cond_signal(&d->act_cond);
        pthread_mutex_unlock(&d->act_mu);
        pthread_join(d->act, NULL); /* jobs left are answered 502 from http_server_free */
        d->act_started = false;
    }
    for (int i = 0; d->loops && i < d->nloops; i++) {
        on_drain(d->loops[i].loop, d); /* feeds left by a forced stop */
    }
}

void
api_dash_free(struct api_dash *d)
{
    if (!d) {
        return;
    }
    d->api->notify = NULL;
    dash_snap_unref(d->snap);
    free(d->loops);
    netaddr_list_cleanup(&d->loopback);
    pthread_cond_destroy(&d->act_cond);
    pthread_mutex_destroy(&d->act_mu);
    pthread_cond_destroy(&d->cond);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
