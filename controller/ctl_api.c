/* SPDX-License-Identifier: MIT
 *
 * ctl_api.c - the controller's HTTP endpoints.
 *
 * DB-GPT compatible (byte for byte in paths, parameters, fields, status):
 *   GET    /api/health
 *   GET    /api/controller/models?model_name=&healthy_only=
 *   POST   /api/controller/models          register (body: ModelInstance) -> true
 *   DELETE /api/controller/models?model_name=&host=&port=&remove_from_registry=  -> true
 *   POST   /api/controller/heartbeat       (unknown instance: registered) -> true
 * roster's own:
 *   GET    /api/controller/models?view=full   the extended record (load, lease, ...)
 *          + If-None-Match: "<etag>" and wait=SECS: a watch (long poll) that answers
 *          when the routing state of the result changes, or 304 after SECS;
 *          every view=full answer names its view version (X-Roster-View),
 *          and since=<that token> asks for a delta: only the models whose
 *          routing changed since, and the names of all (docs/api.md);
 *          settings=V (the settings version the watcher holds) answers as
 *          soon as the version differs: X-Roster-Settings names it
 *   POST   /api/roster/instance            admin: {model_name, host, port, weight?, enabled?}
 *   GET    /metrics                        Prometheus text
 *
 * Every error is JSON ({"error":{"message","type","param","code"}}) with a
 * 4xx for the client's mistakes and 503 (+ Retry-After) when the database
 * cannot be reached. Writes go to the writer thread (ctl_writer.c) and are
 * answered from ctl_api_job_done; reads come from the view snapshot.
 */
#include "ctl.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#define LOG_MODULE "controller"
#include "json_write.h"
#include "log.h"
#include "query.h"
#include "util.h"

#define RETRY_AFTER "Retry-After: 1\r\n"

/* Per-loop state: the watches parked on this loop. */
struct ctl_loop {
    struct ctl_server *srv;
    struct http_loop *loop;
    struct watcher *watchers;
    struct http_task changed_task;
    _Atomic bool changed_posted;
};

struct watcher {
    struct ctl_loop *cl;
    struct http_request *req;
    struct event *timer;
    char model[REG_NAME_MAX + 1];
    bool routable_only;
    enum ctl_json_variant var;
    uint64_t etag;
    bool has_since; /* since= named a version of this view */
    uint64_t since;
    int64_t settings; /* settings= : the settings version it holds (-1: not asked) */
    struct watcher *prev;
    struct watcher *next;
};

static struct ctl_server *
server_of(void *arg)
{
    return arg;
}

/* ---- auth ------------------------------------------------------------------ */

/* The rule of a route with these flags: writes, and reads with
 * --protect_reads, need the secret or a trusted peer (and no browser made
 * to send them by another site). Replies and returns false otherwise. */
static bool
allowed(struct ctl_server *srv, struct http_request *req, unsigned flags)
{
    bool need = (flags & CTL_ROUTE_WRITE) || ((flags & CTL_ROUTE_READ) && srv->cfg->protect_reads);

    if (!need || http_req_has_secret(req, srv->cfg->cluster_secret)) {
        return true;
    }
    if (netaddr_list_match(&srv->trusted, http_req_peer(req))) {
        if (!http_req_forged_by_browser(req)) {
            return true;
        }
        atomic_fetch_add(&srv->metrics.rejected_auth, 1);
        http_reply_error(req, 403, "permission_error", "cross_site_request",
                         "a browser sent this from a page of another site (Origin %.100s): "
                         "refused; send the cluster secret instead",
                         http_req_header(req, "Origin") ? http_req_header(req, "Origin") : "-");
        return false;
    }
    atomic_fetch_add(&srv->metrics.rejected_auth, 1);
    http_reply_error(req, 401, "authentication_error", "unauthorized",
                     "%s from %s needs the cluster secret (header X-Roster-Secret); configure "
                     "--cluster_secret on the controller and its clients, or add the client's "
                     "network to --trusted_networks",
                     (flags & CTL_ROUTE_WRITE) ? "writes" : "reads", http_req_peer_str(req));
    return false;
}

bool
ctl_api_guard(struct http_request *req, void *arg)
{
    return allowed(server_of(arg), req, http_req_route_flags(req));
}

bool
ctl_api_read_allowed(struct ctl_server *srv, struct http_request *req)
{
    return allowed(srv, req, CTL_ROUTE_READ);
}

/* ---- writes ------------------------------------------------------------------ */

static void
reply_true(struct http_request *req)
{
    http_reply(req, 200, "application/json", "true", 4, NULL);
}

static void reply_instance(struct http_request *req, struct ctl_server *srv,
                           const struct reg_instance *key);

void
ctl_api_job_done(struct http_task *t)
{
    struct ctl_job *job = (struct ctl_job *)t;
    struct http_request *req = job->req;

    if (job->rc == CTL_RC_FULL) {
        /* 409, not 5xx: the request conflicts with the registry's state (full);
         * no other controller of the table can take it (a 5xx would send
         * workers failing over to them) and nothing is wrong with this one.
         * Workers register again a period later: a slot may have freed. */
        http_reply_error(req, 409, "invalid_request_error", "registry_full",
                         "the registry holds --max_instances=%lld instances; not adding %s at "
                         "%s:%d",
                         (long long)job->srv->cfg->max_instances, job->op.inst.model_name,
                         job->op.inst.host, job->op.inst.port);
    } else if (job->rc != REG_OK) {
        log_warn("write failed: %s: %s", reg_strerror(job->rc), job->errmsg);
        http_reply_error(req, 503, "server_error", "registry_unavailable",
                         "the registry database is unavailable (%s); retry", reg_strerror(job->rc));
    } else if (job->op.rc == REG_ENOTFOUND) {
        http_reply_error(req, 404, "invalid_request_error", "instance_not_found",
                         "no instance %s at %s:%d", job->op.inst.model_name, job->op.inst.host,
                         job->op.inst.port);
    } else if (job->op.kind == REG_OP_ADMIN) {
        reply_instance(req, job->srv, &job->op.inst);
    } else {
        reply_true(req);
    }
    free(job);
}

static void
submit(struct http_request *req, struct ctl_server *srv, struct ctl_job *job)
{
    job->req = req;
    job->loop = http_req_loop(req);
    job->srv = srv;
    job->task.fn = ctl_api_job_done;
    if (!ctl_writer_submit(srv->writer, job)) {
        atomic_fetch_add(&srv->metrics.rejected_queue_full, 1);
        http_reply_error(req, 503, "server_error", "overloaded",
                         "too many writes waiting for the registry database; retry");
        free(job);
    }
}

static bool
host_allowed(struct ctl_server *srv, struct http_request *req, const char *host)
{
    if (srv->instance_nets.n == 0 || netaddr_list_match_str(&srv->instance_nets, host)) {
        return true;
    }
    http_reply_error(req, 403, "permission_error", "address_not_allowed",
                     "host '%s' is not an IP address inside --instance_networks", host);
    return false;
}

static void
handle_upsert(struct http_request *req, void *arg, enum reg_op_kind kind)
{
    struct ctl_server *srv = server_of(arg);
    struct ctl_job *job = calloc(1, sizeof(*job));
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    char err[256];
    int status = 400;

    if (!job) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        return;
    }
    if (ctl_instance_parse_json(body, len, &job->op.inst, &status, err, sizeof(err)) != 0) {
        http_reply_error(req, status, "invalid_request_error", "invalid_instance", "%s", err);
        free(job);
        return;
    }
    if (!host_allowed(srv, req, job->op.inst.host)) {
        free(job);
        return;
    }
    job->op.kind = kind;
    submit(req, srv, job);
}

static void
h_register(struct http_request *req, void *arg)
{
    handle_upsert(req, arg, REG_OP_REGISTER);
}

static void
h_heartbeat(struct http_request *req, void *arg)
{
    handle_upsert(req, arg, REG_OP_HEARTBEAT);
}

static void
h_deregister(struct http_request *req, void *arg)
{
    struct ctl_server *srv = server_of(arg);
    struct ctl_job *job = calloc(1, sizeof(*job));
    char err[256];
    bool remove = false;

    if (!job) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        return;
    }
    if (ctl_instance_parse_delete(http_req_query(req), &job->op.inst, &remove, err, sizeof(err)) !=
        0) {
        http_reply_error(req, 422, "invalid_request_error", "invalid_query", "%s", err);
        free(job);
        return;
    }
    job->op.kind = remove ? REG_OP_REMOVE : REG_OP_DEREGISTER;
    submit(req, srv, job);
}

static void
h_admin(struct http_request *req, void *arg)
{
    struct ctl_server *srv = server_of(arg);
    struct ctl_job *job = calloc(1, sizeof(*job));
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    char err[256];
    int status = 400;

    if (!job) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        return;
    }
    if (ctl_admin_parse_json(body, len, &job->op, &status, err, sizeof(err)) != 0) {
        http_reply_error(req, status, "invalid_request_error", "invalid_admin", "%s", err);
        free(job);
        return;
    }
    submit(req, srv, job);
}

/* ---- reads ------------------------------------------------------------------- */

static void
json_done(void *ctx)
{
    ctl_json_release(ctx);
}

static void
format_etag(uint64_t etag, char *out, size_t cap)
{
    snprintf(out, cap, "\"%016" PRIx64 "\"", etag);
}

/* True when If-None-Match lists `etag` (or "*"). */
static bool
etag_matches(const char *inm, uint64_t etag)
{
    char want[24];
    size_t wl;

    if (!inm) {
        return false;
    }
    format_etag(etag, want, sizeof(want));
    wl = strlen(want);
    for (const char *p = inm; *p;) {
        while (*p == ' ' || *p == ',') {
            p++;
        }
        if (strncmp(p, "W/", 2) == 0) {
            p += 2;
        }
        if (*p == '*' ||
            (strncmp(p, want, wl) == 0 && (p[wl] == '\0' || p[wl] == ',' || p[wl] == ' '))) {
            return true;
        }
        while (*p && *p != ',') {
            p++;
        }
    }
    return false;
}

static bool
is_routable_variant(enum ctl_json_variant var)
{
    return var == CTL_JSON_ROUTABLE || var == CTL_JSON_FULL_ROUTABLE;
}

/* Answers a list with `json` (the caller's reference, taken; NULL: over
 * the memory budget) of `snap`, with its ETag and view token. */
static void
reply_json(struct http_request *req, struct ctl_server *srv, struct ctl_snap *snap,
           const char *model, enum ctl_json_variant var, struct ctl_json *json)
{
    bool full_form = var == CTL_JSON_FULL_ALL || var == CTL_JSON_FULL_ROUTABLE;
    bool routable_only = is_routable_variant(var);
    char etag[24];
    char token[48];
    char settings[48];
    char hdr[224];

    if (!json) {
        http_reply_error(req, 503, "server_error", "memory_budget_exceeded",
                         "the list does not fit in the controller's memory budget "
                         "(--memory_budget_bytes) now; retry");
        return;
    }
    format_etag(ctl_snap_etag(snap, model, routable_only), etag, sizeof(etag));
    token[0] = '\0';
    if (full_form) {
        ctl_snap_token(snap, token, sizeof(token));
    }
    settings[0] = '\0';
    if (full_form && ctl_settings_version(srv->settings) >= 0) {
        snprintf(settings, sizeof(settings), "X-Roster-Settings: %lld\r\n",
                 (long long)ctl_settings_version(srv->settings));
    }
    snprintf(hdr, sizeof(hdr), "ETag: %s\r\nCache-Control: no-cache\r\n%s%s%s%s", etag,
             token[0] ? "X-Roster-View: " : "", token, token[0] ? "\r\n" : "", settings);
    http_reply_ref(req, 200, "application/json", json->data, json->len, hdr, json_done, json);
}

/* A whole list built on the lists thread, back on its loop. */
struct list_job {
    struct ctl_list_job job;
    struct http_request *req;
    struct ctl_server *srv;
};

static void
list_job_done(struct http_task *t)
{
    struct list_job *lj = (struct list_job *)t;

    reply_json(lj->req, lj->srv, lj->job.snap, NULL, lj->job.var, lj->job.json);
    ctl_snap_release(lj->job.snap);
    free(lj);
}

/* Hands a whole list of a large snapshot to the lists thread (ctl_lists.c);
 * false when it is built here instead (small, or no room for the job). */
static bool
offload_list(struct http_request *req, struct ctl_server *srv, struct ctl_snap *snap,
             enum ctl_json_variant var)
{
    struct list_job *lj;

    if (snap->n_instances < CTL_LIST_OFFLOAD_MIN || !srv->lists || !(lj = calloc(1, sizeof(*lj)))) {
        return false;
    }
    lj->job.task.fn = list_job_done;
    lj->job.loop = http_req_loop(req);
    lj->job.snap = ctl_snap_ref(snap);
    lj->job.var = var;
    lj->req = req;
    lj->srv = srv;
    if (!ctl_lists_submit(srv->lists, &lj->job)) {
        ctl_snap_release(snap);
        free(lj);
        return false; /* the queue is full: built here, as before */
    }
    atomic_fetch_add(&srv->metrics.lists_offloaded, 1);
    return true;
}

/* The list, or with `has_since` (view=full of every model) the delta
 * since that version when it is the smaller answer. view=full answers
 * carry the view's token (X-Roster-View) for the next since=. A whole list
 * of a large snapshot is answered later, from the lists thread. */
static void
reply_list(struct http_request *req, struct ctl_server *srv, struct ctl_snap *snap,
           const char *model, enum ctl_json_variant var, bool has_since, uint64_t since)
{
    bool full_form = var == CTL_JSON_FULL_ALL || var == CTL_JSON_FULL_ROUTABLE;
    bool use_full = true;
    struct ctl_json *json = NULL;

    if (has_since && full_form && !(model && *model)) {
        json = ctl_snap_delta_json(snap, since, var, &use_full);
    }
    if (!json && use_full) {
        if (!(model && *model) && offload_list(req, srv, snap, var)) {
            return;
        }
        json = ctl_snap_json(snap, model, var);
    }
    reply_json(req, srv, snap, model, var, json);
}

static void
reply_not_modified(struct http_request *req, uint64_t etag_value)
{
    char etag[24];
    char hdr[64];

    format_etag(etag_value, etag, sizeof(etag));
    snprintf(hdr, sizeof(hdr), "ETag: %s\r\n", etag);
    http_reply(req, 304, "application/json", NULL, 0, hdr);
}

static void
watcher_unlink(struct watcher *w)
{
    struct ctl_loop *cl = w->cl;

    if (w->prev) {
        w->prev->next = w->next;
    } else {
        cl->watchers = w->next;
    }
    if (w->next) {
        w->next->prev = w->prev;
    }
    event_free(w->timer);
    atomic_fetch_sub(&cl->srv->metrics.watchers, 1);
    free(w);
}

static void
on_watch_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct watcher *w = arg;

    (void)fd;
    (void)what;
    reply_not_modified(w->req, w->etag);
    watcher_unlink(w);
}

static void
on_watch_closed(struct http_request *req, void *arg)
{
    struct watcher *w = arg;

    http_reply(req, 499, "application/json", NULL, 0, NULL); /* dropped: client is gone */
    watcher_unlink(w);
}

static bool
park_watch(struct http_request *req, struct ctl_server *srv, const char *model, bool routable_only,
           enum ctl_json_variant var, uint64_t etag, bool has_since, uint64_t since,
           int64_t settings, int64_t wait_s)
{
    struct ctl_loop *cl = srv->loops[http_loop_index(http_req_loop(req))];
    struct watcher *w;
    struct timeval tv = {(time_t)wait_s, 0};

    if (atomic_load(&srv->metrics.watchers) >= srv->cfg->max_watchers ||
        http_loop_draining(cl->loop)) {
        return false;
    }
    w = calloc(1, sizeof(*w));
    if (!w) {
        return false;
    }
    w->timer = evtimer_new(http_loop_base(cl->loop), on_watch_timeout, w);
    if (!w->timer) {
        free(w);
        return false;
    }
    w->cl = cl;
    w->req = req;
    util_strlcpy(w->model, model ? model : "", sizeof(w->model));
    w->routable_only = routable_only;
    w->var = var;
    w->etag = etag;
    w->has_since = has_since;
    w->since = since;
    w->settings = settings;
    w->next = cl->watchers;
    if (cl->watchers) {
        cl->watchers->prev = w;
    }
    cl->watchers = w;
    atomic_fetch_add(&srv->metrics.watchers, 1);
    evtimer_add(w->timer, &tv);
    http_req_on_close(req, on_watch_closed, w);
    return true;
}

static void
h_list(struct http_request *req, void *arg)
{
    struct ctl_server *srv = server_of(arg);
    const char *q = http_req_query(req);
    struct query query;
    const char *model;
    const char *ho;
    const char *view;
    const char *wait;
    const char *since_tok;
    const char *settings_s;
    int64_t settings = -1;
    bool settings_moved;
    bool routable_only = false;
    bool has_since = false;
    uint64_t since = 0;
    bool full = false;
    int64_t wait_s = 0;
    char err[160];
    struct ctl_snap *snap;
    enum ctl_json_variant var;
    uint64_t etag;

    if (query_parse(q, strlen(q), &query, err, sizeof(err)) != 0) {
        http_reply_error(req, 422, "invalid_request_error", "invalid_query", "%s", err);
        return;
    }
    model = query_get(&query, "model_name");
    ho = query_get(&query, "healthy_only");
    view = query_get(&query, "view");
    wait = query_get(&query, "wait");
    since_tok = query_get(&query, "since");
    settings_s = query_get(&query, "settings");
    if (model && *model && !ctl_valid_model_name(model)) {
        query_cleanup(&query);
        http_reply_error(req, 422, "invalid_request_error", "invalid_query",
                         "query parameter 'model_name' must be \"<model>@<worker_type>\"");
        return;
    }
    if ((ho && *ho && util_parse_bool(ho, &routable_only) != 0) ||
        (view && *view && strcmp(view, "full") != 0 && strcmp(view, "compat") != 0) ||
        (wait && *wait && util_parse_i64(wait, 0, srv->cfg->watch_max_secs, &wait_s) != 0) ||
        (settings_s && *settings_s && util_parse_i64(settings_s, 0, INT64_MAX, &settings) != 0)) {
        query_cleanup(&query);
        http_reply_error(req, 422, "invalid_request_error", "invalid_query",
                         "bad query: healthy_only must be true/false, view 'full' or 'compat', "
                         "wait 0..%lld seconds, settings a version number",
                         (long long)srv->cfg->watch_max_secs);
        return;
    }
    full = view && strcmp(view, "full") == 0;
    var = full ? (routable_only ? CTL_JSON_FULL_ROUTABLE : CTL_JSON_FULL_ALL)
               : (routable_only ? CTL_JSON_ROUTABLE : CTL_JSON_ALL);
    if (ctl_view_last_refresh_mono(srv->view) == 0) {
        query_cleanup(&query);
        http_reply_error(req, 503, "server_error", "not_ready",
                         "the controller has not loaded the registry yet (database unreachable "
                         "since start-up); retry");
        return;
    }
    snap = ctl_view_acquire(srv->view);
    /* a token of another controller (failover), of a version this view
     * has not reached, or garbage: the full list (never an error, so a
     * watcher that switched controllers just gets everything) */
    has_since = full && since_tok && *since_tok && ctl_snap_since(snap, since_tok, &since);
    etag = ctl_snap_etag(snap, model, routable_only);
    /* a watcher holding older settings (settings=V) is answered at once:
     * the answer's X-Roster-Settings tells it to fetch them */
    settings_moved = full && settings >= 0 && ctl_settings_version(srv->settings) >= 0 &&
                     ctl_settings_version(srv->settings) != settings;
    if (!settings_moved && etag_matches(http_req_header(req, "If-None-Match"), etag)) {
        if (!(wait_s > 0 && park_watch(req, srv, model, routable_only, var, etag, has_since, since,
                                       full ? settings : -1, wait_s))) {
            reply_not_modified(req, etag);
        }
    } else {
        reply_list(req, srv, snap, model, var, has_since, since);
    }
    ctl_snap_release(snap);
    query_cleanup(&query);
}

static void
reply_instance(struct http_request *req, struct ctl_server *srv, const struct reg_instance *key)
{
    struct ctl_snap *snap = ctl_view_acquire(srv->view);
    const struct ctl_model_snap *m = ctl_snap_model(snap, key->model_name);
    struct buf b;
    struct jw w;

    buf_init(&b, 64 * 1024);
    jw_init(&w, &b);
    for (size_t i = 0; m && i < m->n; i++) {
        if (m->v[i].rec.port == key->port && strcmp(m->v[i].rec.host, key->host) == 0) {
            ctl_snap_inst_json(&w, m, i, true);
            break;
        }
    }
    if (b.len == 0) {
        http_reply_error(req, 404, "invalid_request_error", "instance_not_found",
                         "no instance %s at %s:%d", key->model_name, key->host, key->port);
    } else if (w.err) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
    } else {
        http_reply(req, 200, "application/json", b.data, b.len, NULL);
    }
    buf_cleanup(&b);
    ctl_snap_release(snap);
}

/* ---- watches -------------------------------------------------------------- */

/* Runs on a loop thread after the view's routing state changed: answers
 * every watch on this loop whose result changed. */
static void
on_view_changed_task(struct http_task *t)
{
    struct ctl_loop *cl = (struct ctl_loop *)((char *)t - offsetof(struct ctl_loop, changed_task));
    struct ctl_snap *snap;
    struct watcher *next;

    atomic_store(&cl->changed_posted, false);
    snap = ctl_view_acquire(cl->srv->view);
    for (struct watcher *w = cl->watchers; w; w = next) {
        next = w->next;
        if (ctl_snap_etag(snap, w->model, w->routable_only) != w->etag ||
            (w->settings >= 0 && ctl_settings_version(cl->srv->settings) != w->settings)) {
            http_req_on_close(w->req, NULL, NULL);
            reply_list(w->req, cl->srv, snap, w->model, w->var, w->has_since, w->since);
            watcher_unlink(w);
        }
    }
    ctl_snap_release(snap);
}

void
ctl_api_view_changed(void *arg)
{
    struct ctl_server *srv = arg;

    for (int i = 0; srv->loops && i < srv->nloops; i++) {
        struct ctl_loop *cl = srv->loops[i];
        bool expected = false;
        if (atomic_compare_exchange_strong(&cl->changed_posted, &expected, true)) {
            http_loop_post(cl->loop, &cl->changed_task);
        }
    }
}

void
ctl_api_loop_drain(struct http_loop *loop, void *arg)
{
    struct ctl_server *srv = arg;
    struct ctl_loop *cl = srv->loops ? srv->loops[http_loop_index(loop)] : NULL;
    struct watcher *next;

    for (struct watcher *w = cl ? cl->watchers : NULL; w; w = next) {
        next = w->next;
        http_req_on_close(w->req, NULL, NULL);
        http_reply_error(w->req, 503, "server_error", "shutting_down",
                         "this controller is shutting down; ask another");
        watcher_unlink(w);
    }
}

struct ctl_loop *
ctl_api_loop_new(struct ctl_server *srv, struct http_loop *loop)
{
    struct ctl_loop *cl = calloc(1, sizeof(*cl));

    if (cl) {
        cl->srv = srv;
        cl->loop = loop;
        cl->changed_task.fn = on_view_changed_task;
        atomic_init(&cl->changed_posted, false);
    }
    return cl;
}

/* ---- health and metrics ---------------------------------------------------- */

int
ctl_api_write_health(struct ctl_server *srv, struct jw *w, bool *ok_out)
{
    int64_t now = util_mono_ms();
    int64_t refreshed = ctl_view_last_refresh_mono(srv->view);
    struct ctl_snap *snap = ctl_view_acquire(srv->view);
    bool reachable;
    int64_t last_ok;
    char last_error[256];
    bool ok;

    pthread_mutex_lock(&srv->db.mu);
    reachable = srv->db.reachable;
    last_ok = srv->db.last_ok_mono_ms;
    util_strlcpy(last_error, srv->db.last_error, sizeof(last_error));
    pthread_mutex_unlock(&srv->db.mu);
    ok = reachable && refreshed != 0;
    jw_raw(w, "{\"status\":");
    jw_str(w, ok ? "ok" : "degraded");
    jw_raw(w, ",\"database\":{\"backend\":");
    jw_str(w, srv->regcfg.backend == REG_MYSQL ? "mysql" : "sqlite");
    jw_raw(w, ",\"reachable\":");
    jw_bool(w, reachable);
    jw_raw(w, ",\"last_ok_ms_ago\":");
    if (last_ok) {
        jw_i64(w, now - last_ok);
    } else {
        jw_raw(w, "null");
    }
    jw_raw(w, ",\"error\":");
    jw_str(w, *last_error ? last_error : NULL);
    jw_raw(w, "},\"view\":{\"loaded\":");
    jw_bool(w, refreshed != 0);
    jw_raw(w, ",\"age_ms\":");
    if (refreshed) {
        jw_i64(w, now - refreshed);
    } else {
        jw_raw(w, "null");
    }
    jw_raw(w, ",\"version\":");
    jw_i64(w, (int64_t)snap->version);
    jw_raw(w, ",\"models\":");
    jw_i64(w, (int64_t)snap->nmodels);
    jw_raw(w, ",\"instances\":");
    jw_i64(w, (int64_t)snap->n_instances);
    jw_raw(w, ",\"alive\":");
    jw_i64(w, (int64_t)snap->n_alive);
    jw_raw(w, ",\"routable\":");
    jw_i64(w, (int64_t)snap->n_routable);
    jw_raw(w, "},\"writes\":{\"auth\":");
    jw_str(w, srv->cfg->cluster_secret && *srv->cfg->cluster_secret ? "secret or trusted network"
                                                                    : "trusted network only");
    jw_raw(w, ",\"queue\":");
    jw_i64(w, (int64_t)ctl_writer_queue_len(srv->writer));
    jw_raw(w, "},\"uptime_ms\":");
    jw_i64(w, now - srv->started_mono_ms);
    jw_raw(w, "}");
    ctl_snap_release(snap);
    *ok_out = ok;
    return w->err ? -1 : 0;
}

static void
h_health(struct http_request *req, void *arg)
{
    struct ctl_server *srv = server_of(arg);
    struct buf b;
    struct jw w;
    bool ok = false;

    buf_init(&b, 16 * 1024);
    jw_init(&w, &b);
    if (ctl_api_write_health(srv, &w, &ok) != 0) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
    } else {
        http_reply(req, ok ? 200 : 503, "application/json", b.data, b.len, ok ? NULL : RETRY_AFTER);
    }
    buf_cleanup(&b);
}

static int
counter(struct buf *b, const char *name, const char *help, uint64_t v)
{
    return metrics_header(b, name, "counter", help) | metrics_sample(b, name, NULL, (double)v);
}

static int
gauge(struct buf *b, const char *name, const char *help, double v)
{
    return metrics_header(b, name, "gauge", help) | metrics_sample(b, name, NULL, v);
}

static bool
db_reachable(struct ctl_server *srv)
{
    bool reachable;

    pthread_mutex_lock(&srv->db.mu);
    reachable = srv->db.reachable;
    pthread_mutex_unlock(&srv->db.mu);
    return reachable;
}

/* The per-model counts of the view (the alert rules' "no routable
 * instance" and "instance down", compose/prometheus/alerts.yml): a family
 * at a time, every model of the snapshot (a model stays in the view while
 * it has rows, down ones included, until --registry_gc_secs). */
static int
write_model_families(struct buf *b, const struct ctl_snap *snap)
{
    static const struct {
        const char *name, *type, *help;
    } fams[] = {
        {"roster_view_model_instances", "gauge", "Instances of each model in the view."},
        {"roster_view_model_alive_instances", "gauge",
         "Alive instances of each model (lease current, healthy)."},
        {"roster_view_model_routable_instances", "gauge",
         "Routable instances of each model (alive, enabled, weight above 0): 0 means "
         "requests for the model fail."},
        {"roster_view_model_expired_total", "counter",
         "Instances of each model whose lease ran out in this controller's view (stopped "
         "heartbeating without deregistering)."},
    };
    char lab[4 * REG_NAME_MAX + 16];
    int rc = 0;

    for (size_t f = 0; f < sizeof(fams) / sizeof(fams[0]); f++) {
        rc |= metrics_header(b, fams[f].name, fams[f].type, fams[f].help);
        for (size_t i = 0; i < snap->nmodels; i++) {
            const struct ctl_model_snap *m = snap->models[i];
            uint64_t v = f == 0 ? m->n : f == 1 ? m->n_alive : f == 2 ? m->n_routable : m->expired;
            lab[0] = '\0';
            rc |= metrics_label_add(lab, sizeof(lab), "model", m->name);
            rc |= metrics_sample(b, fams[f].name, lab, (double)v);
        }
    }
    return rc;
}

int
ctl_api_write_metrics(struct ctl_server *srv, struct buf *b)
{
    static const char *const kinds[] = {"",           "register", "heartbeat",
                                        "deregister", "remove",   "admin"};
    struct ctl_metrics *m = &srv->metrics;
    struct ctl_snap *snap = ctl_view_acquire(srv->view);
    int64_t refreshed = ctl_view_last_refresh_mono(srv->view);
    int rc = 0;

    rc |= metrics_header(b, "roster_registry_writes_total", "counter",
                         "Committed registry writes by kind.");
    for (int k = REG_OP_REGISTER; k <= REG_OP_ADMIN; k++) {
        char lab[32];
        snprintf(lab, sizeof(lab), "kind=\"%s\"", kinds[k]);
        rc |= metrics_sample(b, "roster_registry_writes_total", lab,
                             (double)atomic_load(&m->writes_ok[k]));
    }
    rc |= counter(b, "roster_registry_write_failures_total", "Writes that failed (answered 503).",
                  atomic_load(&m->writes_failed));
    rc |= counter(b, "roster_registry_batches_total", "Write transactions (batches).",
                  atomic_load(&m->batches));
    rc |= counter(b, "roster_registry_batch_ops_total", "Operations written in batches.",
                  atomic_load(&m->batch_ops));
    rc |= counter(b, "roster_registry_rejected_total", "Writes refused: queue full.",
                  atomic_load(&m->rejected_queue_full));
    rc |= counter(b, "roster_registry_full_rejected_total",
                  "Registrations and heartbeats refused with 409: the table holds "
                  "--max_instances rows.",
                  atomic_load(&m->rejected_full));
    rc |= gauge(b, "roster_view_ignored_rows",
                "Rows of the table the view ignored at the last full read (over --max_instances).",
                (double)atomic_load(&m->view_ignored_rows));
    rc |=
        counter(b, "roster_auth_rejected_total", "Requests refused for a missing or wrong secret.",
                atomic_load(&m->rejected_auth));
    rc |= counter(b, "roster_db_reconnects_total", "Database reconnect attempts.",
                  atomic_load(&m->db_reconnects));
    rc |= counter(b, "roster_db_retries_total",
                  "Database retries (deadlock, lock wait, lost connection).",
                  atomic_load(&m->db_retries));
    rc |= gauge(b, "roster_settings_version",
                "Version of the cluster settings this controller serves (-1: not read yet).",
                (double)ctl_settings_version(srv->settings));
    rc |= counter(b, "roster_settings_writes_total",
                  "Settings changes committed through this controller.",
                  atomic_load(&m->settings_writes));
    rc |= counter(b, "roster_settings_read_errors_total", "Failed reads of the settings tables.",
                  atomic_load(&m->settings_errors));
    rc |= counter(b, "roster_view_refreshes_total", "Reads of the registry table.",
                  atomic_load(&m->refreshes));
    rc |= counter(b, "roster_view_full_refreshes_total",
                  "Reads of the whole registry table (the others read recent changes).",
                  atomic_load(&m->full_refreshes));
    rc |= counter(b, "roster_lists_offloaded_total",
                  "Whole lists of a large registry built on the lists thread, not a loop's.",
                  atomic_load(&m->lists_offloaded));
    rc |= counter(b, "roster_view_refresh_errors_total", "Failed reads of the registry table.",
                  atomic_load(&m->refresh_errors));
    rc |= counter(b, "roster_sweep_marked_total", "Rows the sweep marked unhealthy.",
                  atomic_load(&m->sweep_marked));
    rc |= counter(b, "roster_sweep_deleted_total", "Rows the sweep deleted.",
                  atomic_load(&m->sweep_deleted));
    rc |= gauge(b, "roster_write_queue_length", "Writes waiting for the database.",
                (double)ctl_writer_queue_len(srv->writer));
    rc |= gauge(b, "roster_watchers", "Watches (long polls) held.",
                (double)atomic_load(&m->watchers));
    rc |= gauge(b, "roster_view_instances", "Instances in the view.", (double)snap->n_instances);
    rc |= gauge(b, "roster_view_alive_instances", "Alive instances.", (double)snap->n_alive);
    rc |=
        gauge(b, "roster_view_routable_instances", "Routable instances.", (double)snap->n_routable);
    rc |= gauge(b, "roster_view_models", "Models in the view.", (double)snap->nmodels);
    rc |= gauge(b, "roster_view_age_seconds", "Time since the table was last read.",
                refreshed ? (double)(util_mono_ms() - refreshed) / 1000.0 : -1);
    rc |= gauge(b, "roster_db_up",
                "1 while the database answers (the last operation reached it), 0 after a "
                "failure: /api/health's database.reachable.",
                db_reachable(srv) ? 1 : 0);
    rc |= write_model_families(b, snap);
    rc |= metrics_header(b, "roster_registry_commit_seconds", "histogram",
                         "Write transaction latency.");
    rc |= metrics_hist_write(b, "roster_registry_commit_seconds", NULL, &m->commit_latency);
    rc |= metrics_header(b, "roster_registry_write_seconds", "histogram",
                         "Time from a write's arrival to its commit.");
    rc |= metrics_hist_write(b, "roster_registry_write_seconds", NULL, &m->write_latency);
    rc |= metrics_header(b, "roster_view_refresh_seconds", "histogram",
                         "Table read latency (every read: polls and full refreshes; the query "
                         "and fetching the rows only).");
    rc |= metrics_hist_write(b, "roster_view_refresh_seconds", NULL, &m->refresh_latency);
    rc |= metrics_header(b, "roster_view_full_refresh_seconds", "histogram",
                         "Full refresh time: reading the whole table, merging it into the view "
                         "and publishing the snapshot.");
    rc |= metrics_hist_write(b, "roster_view_full_refresh_seconds", NULL, &m->full_refresh_latency);
    ctl_snap_release(snap);
    return rc ? -1 : 0;
}

static void
h_metrics(struct http_request *req, void *arg)
{
    struct ctl_server *srv = server_of(arg);
    struct buf b;
    int rc;

    buf_init(&b, 16 * 1024 * 1024); /* a cap: the per-model gauges grow with the models */
    rc = metrics_write_http(&b, srv->http);
    rc |= ctl_api_write_metrics(srv, &b);
    rc |= metrics_write_budget(&b);
    metrics_reply(req, &b, rc);
    buf_cleanup(&b);
}

/* ---- access log ------------------------------------------------------------- */

void
ctl_api_access_log(struct http_request *req, int status, size_t len, int64_t us, void *arg)
{
    struct ctl_server *srv = server_of(arg);
    unsigned flags = http_req_route_flags(req);
    const char *path = http_req_path(req);
    enum log_level lvl = LOG_LVL_DEBUG;
    char esc[256];

    if (srv->cfg->access_log ||
        (flags & CTL_ROUTE_WRITE && strcmp(path, "/api/controller/heartbeat") != 0)) {
        lvl = LOG_LVL_INFO;
    }
    if (status >= 500) {
        lvl = LOG_LVL_WARN;
    }
    log_at(lvl, "%s %s status=%d bytes=%zu dur_us=%lld peer=%s req=%s", http_req_method(req),
           log_escape(path, esc, sizeof(esc)), status, len, (long long)us, http_req_peer_str(req),
           http_req_id(req));
}

const struct http_route ctl_routes[] = {
    {"GET", "/api/health", h_health, 0},
    {"GET", "/metrics", h_metrics, CTL_ROUTE_READ},
    {"GET", "/api/controller/models", h_list, CTL_ROUTE_READ},
    {"POST", "/api/controller/models", h_register, CTL_ROUTE_WRITE},
    {"DELETE", "/api/controller/models", h_deregister, CTL_ROUTE_WRITE},
    {"POST", "/api/controller/heartbeat", h_heartbeat, CTL_ROUTE_WRITE},
    {"POST", "/api/roster/instance", h_admin, CTL_ROUTE_WRITE},
    {NULL, NULL, NULL, 0},
};
