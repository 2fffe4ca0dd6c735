/* SPDX-License-Identifier: MIT
 *
 * api_server.c - `roster start apiserver`: wiring, client authentication,
 * the models endpoints, health, metrics and the access log.
 *
 * Routes (each under /v1/ and DB-GPT's /api/v1/):
 *   GET  models, models/{id}      the models with a routable instance
 *   POST chat/completions, completions, embeddings  (api_proxy.c)
 *   GET  /api/health, /metrics    (no key needed)
 *
 * Start: parse options, bind, start the watcher (the first table arrives
 * as soon as a controller answers; until then requests get 503), serve.
 * SIGTERM stops accepting and lets requests in flight finish within
 * --shutdown_grace_ms; a second signal stops at once.
 */
#include "api.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sysexits.h>

#define LOG_MODULE "apiserver"
#include "budget.h"
#include "buf.h"
#include "json_write.h"
#include "log.h"
#include "util.h"

#define ROUTE_AUTH 1u /* needs a client key when --api_keys is set */

const char *const api_error_class_names[API_ERR_CLASSES] = {
    "connect", "timeout", "upstream_5xx", "client_4xx", "no_instance", "cancelled"};

struct api_mstats *
api_mstats_get(struct api_server *srv, const char *model)
{
    struct api_mstats *m;

    pthread_mutex_lock(&srv->mstats_mu);
    for (m = srv->mstats; m && strcmp(m->model, model) != 0; m = m->next) {
    }
    if (!m && (m = calloc(1, sizeof(*m)))) {
        util_strlcpy(m->model, model, sizeof(m->model));
        m->next = srv->mstats;
        srv->mstats = m;
    }
    pthread_mutex_unlock(&srv->mstats_mu);
    return m;
}

/* ---- authentication --------------------------------------------------------------- */

struct api_kstats *
api_kstats_get(struct api_server *srv, const char *name)
{
    struct api_kstats *k;

    pthread_mutex_lock(&srv->kstats_mu);
    for (k = srv->kstats; k && strcmp(k->key, name) != 0; k = k->next) {
    }
    if (!k && (k = calloc(1, sizeof(*k)))) {
        util_strlcpy(k->key, name, sizeof(k->key));
        k->next = srv->kstats;
        srv->kstats = k;
    }
    pthread_mutex_unlock(&srv->kstats_mu);
    return k;
}

static void
count_reject(struct api_server *srv, const struct api_key *k, enum api_key_reject why)
{
    struct api_kstats *ks = k ? api_kstats_get(srv, k->name) : NULL;

    if (ks) {
        atomic_fetch_add(&ks->rejected[why], 1);
    } else {
        atomic_fetch_add(&srv->key_invalid, 1);
    }
}

/* The bearer token of a request, or NULL. */
static const char *
bearer_of(struct http_request *req)
{
    const char *auth = http_req_header(req, "Authorization");

    return auth && strncasecmp(auth, "Bearer ", 7) == 0 ? auth + 7 : NULL;
}

static bool
flag_key(const struct api_server *srv, const char *key)
{
    for (size_t i = 0; key && i < srv->nkeys; i++) {
        if (util_ct_equal(key, strlen(key), srv->keys[i], strlen(srv->keys[i]))) {
            return true;
        }
    }
    return false;
}

bool
api_check_key(struct api_server *srv, struct http_request *req)
{
    struct api_settings *s = api_settings_acquire(srv);
    const char *key = bearer_of(req);
    const struct api_key *k = NULL;
    bool ok = false;

    if ((srv->nkeys == 0 && (!s || s->nkeys == 0)) || flag_key(srv, key)) {
        api_settings_unref(s);
        return true;
    }
    if (key) {
        k = api_settings_key(s, key);
    }
    if (!key) {
        http_reply_error(req, 401, "invalid_request_error", "invalid_api_key",
                         "no API key provided (Authorization: Bearer KEY)");
    } else if (!k) {
        count_reject(srv, NULL, API_KEY_INVALID);
        http_reply_error(req, 401, "invalid_request_error", "invalid_api_key",
                         "incorrect API key provided");
    } else if (k->revoked_ms > 0) {
        count_reject(srv, k, API_KEY_REVOKED);
        http_reply_error(req, 401, "invalid_request_error", "invalid_api_key",
                         "the API key '%s' (%s...) has been revoked", k->name, k->prefix);
    } else if (k->expires_ms > 0 && util_wall_ms() >= k->expires_ms) {
        count_reject(srv, k, API_KEY_EXPIRED);
        http_reply_error(req, 401, "invalid_request_error", "invalid_api_key",
                         "the API key '%s' (%s...) has expired", k->name, k->prefix);
    } else {
        struct api_kstats *ks = api_kstats_get(srv, k->name);
        if (ks) {
            atomic_fetch_add(&ks->requests, 1);
        }
        ok = true;
    }
    api_settings_unref(s);
    return ok;
}

const struct api_key *
api_request_key(const struct api_server *srv, const struct api_settings *s,
                struct http_request *req)
{
    const char *key = bearer_of(req);

    return key && s && s->nkeys > 0 && !flag_key(srv, key) ? api_settings_key(s, key) : NULL;
}

bool
api_check_key_model(struct api_server *srv, struct http_request *req, const struct api_key *k,
                    const char *model)
{
    if (api_key_allows(k, model)) {
        return true;
    }
    count_reject(srv, k, API_KEY_MODEL);
    http_reply_error(req, 403, "permission_error", "model_not_allowed",
                     "the API key '%s' may not use the model '%s'", k->name, model);
    return false;
}

static bool
guard(struct http_request *req, void *arg)
{
    return !(http_req_route_flags(req) & ROUTE_AUTH) || api_check_key(arg, req);
}

/* ---- models ------------------------------------------------------------------- */

/* Serves the model of a type clients ask for (not the WorkerManager entry). */
static bool
listed(const struct api_model *m)
{
    return m->set.n > 0 && strcmp(m->type, "service") != 0;
}

static void
model_json(struct jw *w, const struct api_model *m, int64_t created)
{
    jw_raw(w, "{\"id\":");
    jw_str(w, m->name);
    jw_raw(w, ",\"object\":\"model\",\"created\":");
    jw_i64(w, created);
    jw_raw(w, ",\"owned_by\":\"roster\",\"worker_type\":");
    jw_str(w, m->type);
    jw_raw(w, ",\"instances\":");
    jw_i64(w, (int64_t)m->set.n);
    jw_raw(w, "}");
}

static void
reply_json(struct http_request *req, struct buf *b, struct jw *w)
{
    if (w->err) {
        http_reply_error(req, 500, "server_error", "response_too_large", "response too large");
    } else {
        http_reply(req, 200, "application/json", b->data, b->len, NULL);
    }
}

static int64_t
created_s(void)
{
    return util_wall_ms() / 1000;
}

/* Routable instances of model `name` (any type but service). */
static size_t
routable_of(const struct api_table *t, const char *name)
{
    size_t n = 0;

    for (size_t i = 0; t && i < t->nmodels; i++) {
        if (listed(&t->models[i]) && strcmp(t->models[i].name, name) == 0) {
            n += t->models[i].set.n;
        }
    }
    return n;
}

/* An alias as a model: owned_by "roster-alias", its models in order, and
 * the routable instances behind them. */
static void
alias_json(struct jw *w, const struct api_alias *a, const struct api_table *t, int64_t created)
{
    size_t n = 0;

    jw_raw(w, "{\"id\":");
    jw_str(w, a->name);
    jw_raw(w, ",\"object\":\"model\",\"created\":");
    jw_i64(w, created);
    jw_raw(w, ",\"owned_by\":\"roster-alias\",\"models\":[");
    for (size_t i = 0; i < a->nmodels; i++) {
        jw_raw(w, i ? "," : "");
        jw_str(w, a->models[i]);
        n += routable_of(t, a->models[i]);
    }
    jw_raw(w, "],\"instances\":");
    jw_i64(w, (int64_t)n);
    jw_raw(w, "}");
}

static void
h_models(struct http_request *req, void *arg)
{
    struct api_server *srv = arg;
    struct api_loop *l = api_loop_of(srv, req);
    struct api_table *t = l->table;
    struct buf b;
    struct jw w;
    bool first = true;

    buf_init(&b, 64 * 1024 * 1024);
    jw_init(&w, &b);
    jw_raw(&w, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; t && i < t->nmodels; i++) {
        if (!listed(&t->models[i])) {
            continue;
        }
        /* a name served as two types is listed once */
        if (i > 0 && listed(&t->models[i - 1]) &&
            strcmp(t->models[i - 1].name, t->models[i].name) == 0) {
            continue;
        }
        jw_raw(&w, first ? "" : ",");
        model_json(&w, &t->models[i], created_s());
        first = false;
    }
    /* aliases, but for a name a model has (the model wins) */
    struct api_settings *s = api_settings_acquire(srv);
    for (size_t i = 0; s && i < s->naliases; i++) {
        if (t && api_table_has_name(t, s->aliases[i].name)) {
            continue;
        }
        jw_raw(&w, first ? "" : ",");
        alias_json(&w, &s->aliases[i], t, created_s());
        first = false;
    }
    api_settings_unref(s);
    jw_raw(&w, "]}");
    reply_json(req, &b, &w);
    buf_cleanup(&b);
}

static void
h_model(struct http_request *req, void *arg)
{
    struct api_server *srv = arg;
    struct api_loop *l = api_loop_of(srv, req);
    const char *path = http_req_path(req);
    const char *id;
    struct buf b;
    struct jw w;
    char name[API_NAME_MAX + 1];
    size_t n = 0;

    /* everything after "models/", %-decoded (model names may hold '/') */
    id = strstr(path, "/models/") + strlen("/models/");
    for (const char *p = id; *p && n < API_NAME_MAX; p++) {
        int hi, lo;
        if (*p == '%' && (hi = util_hexval((unsigned char)p[1])) >= 0 &&
            (lo = util_hexval((unsigned char)p[2])) >= 0) {
            name[n++] = (char)(hi * 16 + lo);
            p += 2;
        } else {
            name[n++] = *p;
        }
    }
    name[n] = '\0';
    for (size_t i = 0; l->table && i < l->table->nmodels; i++) {
        const struct api_model *m = &l->table->models[i];
        if (listed(m) && strcmp(m->name, name) == 0) {
            buf_init(&b, 64 * 1024);
            jw_init(&w, &b);
            model_json(&w, m, created_s());
            reply_json(req, &b, &w);
            buf_cleanup(&b);
            return;
        }
    }
    struct api_settings *s = api_settings_acquire(srv);
    const struct api_alias *a = api_settings_alias(s, name);
    if (a) {
        buf_init(&b, 64 * 1024);
        jw_init(&w, &b);
        alias_json(&w, a, l->table, created_s());
        reply_json(req, &b, &w);
        buf_cleanup(&b);
    } else {
        http_reply_error(req, 404, "invalid_request_error", "model_not_found",
                         "the model '%.128s' does not exist or has no routable instance", name);
    }
    api_settings_unref(s);
}

/* ---- health and metrics ----------------------------------------------------------- */

const char *
api_health_status(struct api_server *srv, struct api_loop *l)
{
    struct api_watch_status ws;

    api_watch_status(srv, &ws);
    return !l->table ? "starting" : ws.reachable ? "ok" : "stale";
}

void
api_write_health(struct api_server *srv, struct api_loop *l, struct jw *w)
{
    struct api_table *t = l->table;
    struct api_watch_status ws;
    int64_t now = util_mono_ms();

    api_watch_status(srv, &ws);
    jw_raw(w, "\"controllers\":{\"reachable\":");
    jw_bool(w, ws.reachable);
    jw_raw(w, ",\"current\":");
    char shown[sizeof(ws.current) + 16];
    jw_str(w, util_url_redact(ws.current, shown, sizeof(shown)));
    jw_raw(w, ",\"last_ok_ms_ago\":");
    if (ws.last_ok_mono_ms) {
        jw_i64(w, now - ws.last_ok_mono_ms);
    } else {
        jw_raw(w, "null");
    }
    jw_raw(w, ",\"error\":");
    jw_str(w, ws.error[0] ? ws.error : NULL);
    jw_raw(w, "},\"table\":{\"loaded\":");
    jw_bool(w, t != NULL);
    jw_raw(w, ",\"version\":");
    jw_i64(w, t ? (int64_t)t->version : 0);
    jw_raw(w, ",\"models\":");
    jw_i64(w, t ? (int64_t)t->nmodels : 0);
    jw_raw(w, ",\"instances\":");
    jw_i64(w, t ? (int64_t)t->instances : 0);
    jw_raw(w, ",\"routable\":");
    jw_i64(w, t ? (int64_t)t->routable : 0);
    jw_raw(w, ",\"excluded\":");
    jw_i64(w, t ? (int64_t)t->excluded : 0);
    jw_raw(w, ",\"age_ms\":");
    jw_i64(w, t ? now - t->built_mono_ms : 0);
    jw_raw(w, "},\"routing\":");
    jw_str(w, route_policy_name(srv->policy));
}

static void
h_health(struct http_request *req, void *arg)
{
    struct api_server *srv = arg;
    struct api_loop *l = api_loop_of(srv, req);
    struct buf b;
    struct jw w;

    buf_init(&b, 64 * 1024);
    jw_init(&w, &b);
    jw_raw(&w, "{\"status\":");
    jw_str(&w, api_health_status(srv, l));
    jw_raw(&w, ",");
    api_write_health(srv, l, &w);
    jw_raw(&w, ",\"uptime_ms\":");
    jw_i64(&w, util_mono_ms() - srv->started_mono_ms);
    jw_raw(&w, "}");
    if (w.err) {
        http_reply_error(req, 500, "server_error", "health", "cannot format the health report");
    } else {
        http_reply(req, l->table ? 200 : 503, "application/json", b.data, b.len, NULL);
    }
    buf_cleanup(&b);
}

/* Label sets: model and instance names are at most API_NAME_MAX bytes
 * (each escape doubles a byte at most), so a set is never cut; if one
 * were, metrics_label_add cuts at a code point boundary. */
#define LABELS_MAX (4 * API_NAME_MAX + 64)

/* The per-model and per-instance metric families. The text format wants
 * each family's samples together under one HELP/TYPE, so the exposition
 * goes family by family, each over every model (or instance). */
enum stat {
    ST_REQUESTS,
    ST_ERRORS,
    ST_EJECTIONS,
    ST_RETRIES,
    ST_PAUSES,
    ST_LATENCY,
    ST_TTFB,
    ST_IN_FLIGHT,
    ST_EJECTED,
};

struct family {
    const char *suffix; /* after "roster_api_model" or "roster_api_instance" */
    enum stat stat;
    const char *type;
    const char *help;
};

static const struct family model_families[] = {
    {"_requests_total", ST_REQUESTS, "counter", "Client requests per model (name@type)."},
    {"_errors_total", ST_ERRORS, "counter", "Failed requests per model, by class."},
    {"_retries_total", ST_RETRIES, "counter",
     "Attempts on another instance after a failure, or on a new connection to an overloaded "
     "one, per model."},
    {"_ejections_total", ST_EJECTIONS, "counter",
     "Instances of the model ejected after a failure of their own."},
    {"_stream_pauses_total", ST_PAUSES, "counter",
     "Streams whose instance was not read for a while: the client was --stream_buffer_bytes "
     "behind."},
    {"_request_seconds", ST_LATENCY, "histogram", "Request start to the end of the answer."},
    {"_ttfb_seconds", ST_TTFB, "histogram", "Request start to the instance's first byte."},
};

static const struct family instance_families[] = {
    {"_requests_total", ST_REQUESTS, "counter", "Attempts sent to each routable instance."},
    {"_errors_total", ST_ERRORS, "counter", "Failed attempts per instance, by class."},
    {"_ejections_total", ST_EJECTIONS, "counter", "Times the instance was ejected."},
    {"_request_seconds", ST_LATENCY, "histogram", "Attempt start to the end of the answer."},
    {"_ttfb_seconds", ST_TTFB, "histogram", "Attempt start to the instance's first byte."},
    {"_in_flight", ST_IN_FLIGHT, "gauge", "Requests in progress on each instance (all loops)."},
    {"_ejected", ST_EJECTED, "gauge",
     "1 while the instance is ejected by this server's passive health checks."},
};

/* One family's samples of one model or instance (`in`: NULL for a model). */
static int
write_stat(struct buf *b, const char *name, const char *lab, const struct api_stats *s,
           const struct api_inst *in, enum stat st)
{
    char l2[LABELS_MAX + 32];
    int rc = 0;

    switch (st) {
    case ST_REQUESTS:
        return metrics_sample(b, name, lab, (double)atomic_load(&s->requests));
    case ST_ERRORS:
        for (int c = 0; c < API_ERR_CLASSES; c++) {
            util_strlcpy(l2, lab, sizeof(l2));
            rc |= metrics_label_add(l2, sizeof(l2), "class", api_error_class_names[c]);
            rc |= metrics_sample(b, name, l2, (double)atomic_load(&s->errors[c]));
        }
        return rc;
    case ST_EJECTIONS:
        return metrics_sample(b, name, lab, (double)atomic_load(&s->ejections));
    case ST_RETRIES:
        return metrics_sample(b, name, lab, (double)atomic_load(&s->retries));
    case ST_PAUSES:
        return metrics_sample(b, name, lab, (double)atomic_load(&s->paused));
    case ST_LATENCY:
        return metrics_hist_write(b, name, lab, &s->latency);
    case ST_TTFB:
        return metrics_hist_write(b, name, lab, &s->ttfb);
    case ST_IN_FLIGHT:
        return metrics_sample(b, name, lab, in ? (double)atomic_load(&in->rt.in_flight) : 0);
    case ST_EJECTED:
        return metrics_sample(b, name, lab,
                              in && atomic_load(&in->rt.ejected_until_ms) > util_mono_ms() ? 1 : 0);
    }
    return 0;
}

static const char *const key_reject_names[API_KEY_REJECT_N] = {"invalid", "revoked", "expired",
                                                               "model", "rate_limited"};

static int
write_key_metrics(struct api_server *srv, struct buf *b)
{
    char lab[LABELS_MAX];
    int rc = 0;

    rc |= metrics_header(b, "roster_api_settings_version", "gauge",
                         "Version of the cluster settings in force here (-1: none yet).");
    rc |= metrics_sample(b, "roster_api_settings_version", NULL, (double)api_settings_version(srv));
    rc |= metrics_header(
        b, "roster_api_key_requests_total", "counter",
        "Requests authenticated by an API key of the settings, by key name (those then refused "
        "for the key's model or limits count under "
        "roster_api_key_rejected_total too).");
    pthread_mutex_lock(&srv->kstats_mu);
    for (struct api_kstats *k = srv->kstats; k; k = k->next) {
        lab[0] = '\0';
        rc |= metrics_label_add(lab, sizeof(lab), "key", k->key);
        rc |= metrics_sample(b, "roster_api_key_requests_total", lab,
                             (double)atomic_load(&k->requests));
    }
    pthread_mutex_unlock(&srv->kstats_mu);
    rc |= metrics_header(b, "roster_api_key_tokens_total", "counter",
                         "Tokens of whole answers to requests with an API key of the settings, by "
                         "key name and kind (prompt, completion).");
    pthread_mutex_lock(&srv->kstats_mu);
    for (struct api_kstats *k = srv->kstats; k; k = k->next) {
        for (int kind = 0; kind < 2; kind++) {
            lab[0] = '\0';
            rc |= metrics_label_add(lab, sizeof(lab), "key", k->key);
            rc |= metrics_label_add(lab, sizeof(lab), "kind", kind ? "completion" : "prompt");
            rc |= metrics_sample(
                b, "roster_api_key_tokens_total", lab,
                (double)atomic_load(kind ? &k->completion_tokens : &k->prompt_tokens));
        }
    }
    pthread_mutex_unlock(&srv->kstats_mu);
    rc |= metrics_header(b, "roster_api_key_limit_unchecked_total", "counter",
                         "Requests of keys with limits admitted while no controller could grant "
                         "their units.");
    rc |= metrics_sample(b, "roster_api_key_limit_unchecked_total", NULL,
                         (double)atomic_load(&srv->limit_unchecked));
    rc |= metrics_header(b, "roster_api_key_limit_waits_total", "counter",
                         "Requests of keys with limits that waited for units (a lease from a "
                         "controller).");
    rc |= metrics_sample(b, "roster_api_key_limit_waits_total", NULL,
                         (double)atomic_load(&srv->limit_waits));
    rc |= metrics_header(b, "roster_api_key_limit_calls_total", "counter",
                         "Calls to the controllers for units of keys with limits (leases asked "
                         "and given back).");
    rc |= metrics_sample(b, "roster_api_key_limit_calls_total", NULL,
                         (double)atomic_load(&srv->limit_calls));
    rc |= metrics_header(b, "roster_api_key_rejected_total", "counter",
                         "Requests refused for their API key, by key name and reason (invalid: "
                         "no such key, key=\"\").");
    lab[0] = '\0';
    rc |= metrics_label_add(lab, sizeof(lab), "key", "");
    rc |= metrics_label_add(lab, sizeof(lab), "reason", "invalid");
    rc |= metrics_sample(b, "roster_api_key_rejected_total", lab,
                         (double)atomic_load(&srv->key_invalid));
    pthread_mutex_lock(&srv->kstats_mu);
    for (struct api_kstats *k = srv->kstats; k; k = k->next) {
        for (int r = API_KEY_REVOKED; r < API_KEY_REJECT_N; r++) {
            lab[0] = '\0';
            rc |= metrics_label_add(lab, sizeof(lab), "key", k->key);
            rc |= metrics_label_add(lab, sizeof(lab), "reason", key_reject_names[r]);
            rc |= metrics_sample(b, "roster_api_key_rejected_total", lab,
                                 (double)atomic_load(&k->rejected[r]));
        }
    }
    pthread_mutex_unlock(&srv->kstats_mu);
    return rc;
}

int
api_write_metrics(struct api_server *srv, struct api_loop *l, struct buf *b)
{
    char lab[LABELS_MAX], name[96];
    int rc = 0;

    for (size_t f = 0; f < sizeof(model_families) / sizeof(model_families[0]); f++) {
        const struct family *fam = &model_families[f];
        snprintf(name, sizeof(name), "roster_api_model%s", fam->suffix);
        rc |= metrics_header(b, name, fam->type, fam->help);
        pthread_mutex_lock(&srv->mstats_mu);
        for (struct api_mstats *m = srv->mstats; m; m = m->next) {
            lab[0] = '\0';
            rc |= metrics_label_add(lab, sizeof(lab), "model", m->model);
            rc |= write_stat(b, name, lab, &m->s, NULL, fam->stat);
        }
        pthread_mutex_unlock(&srv->mstats_mu);
    }
    for (size_t f = 0; f < sizeof(instance_families) / sizeof(instance_families[0]); f++) {
        const struct family *fam = &instance_families[f];
        snprintf(name, sizeof(name), "roster_api_instance%s", fam->suffix);
        rc |= metrics_header(b, name, fam->type, fam->help);
        for (size_t i = 0; l->table && i < l->table->nmodels; i++) {
            const struct api_model *m = &l->table->models[i];
            for (size_t k = 0; k < m->set.n; k++) {
                const struct api_inst *in = m->inst[k];
                lab[0] = '\0';
                rc |= metrics_label_add(lab, sizeof(lab), "model", in->model->model);
                rc |= metrics_label_add(lab, sizeof(lab), "instance", in->label);
                rc |= write_stat(b, name, lab, &in->s, in, fam->stat);
            }
        }
    }
    rc |= metrics_header(b, "roster_api_errors_total", "counter",
                         "Requests that failed before a model was found, by class.");
    rc |= write_stat(b, "roster_api_errors_total", "model=\"\"", &srv->total, NULL, ST_ERRORS);
    rc |= write_key_metrics(srv, b);
    rc |= api_probe_write_metrics(srv, b);
    rc |= api_queue_write_metrics(srv, b);
    return rc ? -1 : 0;
}

static void
h_metrics(struct http_request *req, void *arg)
{
    struct api_server *srv = arg;
    struct buf b;
    int rc;

    buf_init(&b, 64 * 1024 * 1024);
    rc = metrics_write_http(&b, srv->http);
    rc |= api_write_metrics(srv, api_loop_of(srv, req), &b);
    rc |= metrics_write_budget(&b);
    metrics_reply(req, &b, rc);
    buf_cleanup(&b);
}

static void
access_log(struct http_request *req, int status, size_t len, int64_t us, void *arg)
{
    struct api_server *srv = arg;
    const char *inst = api_px_instance(req);
    char esc[256];

    if (!log_access_sampled(srv->cfg->access_log, srv->cfg->access_log_sample, &srv->log_seq,
                            status)) {
        return;
    }
    log_at(status >= 500 ? LOG_LVL_WARN : LOG_LVL_INFO,
           "%s %s status=%d bytes=%zu dur_us=%lld req=%s instance=%s", http_req_method(req),
           log_escape(http_req_path(req), esc, sizeof(esc)), status, len, (long long)us,
           http_req_id(req), inst ? inst : "-");
}

static const struct http_route routes[] = {
    {"GET", "/api/health", h_health, 0},
    {"GET", "/metrics", h_metrics, 0},
    {"GET", "/v1/models", h_models, ROUTE_AUTH},
    {"GET", "/api/v1/models", h_models, ROUTE_AUTH},
    {"GET", "/v1/models/*", h_model, ROUTE_AUTH},
    {"GET", "/api/v1/models/*", h_model, ROUTE_AUTH},
    {"POST", "/v1/chat/completions", api_h_chat, ROUTE_AUTH},
    {"POST", "/api/v1/chat/completions", api_h_chat, ROUTE_AUTH},
    {"POST", "/v1/completions", api_h_completions, ROUTE_AUTH},
    {"POST", "/api/v1/completions", api_h_completions, ROUTE_AUTH},
    {"POST", "/v1/embeddings", api_h_embeddings, ROUTE_AUTH},
    {"POST", "/api/v1/embeddings", api_h_embeddings, ROUTE_AUTH},
    {NULL, NULL, NULL, 0},
};

/* ---- the component ---------------------------------------------------------------- */

bool
api_addr_allowed(const struct api_server *srv, const struct sockaddr *sa, unsigned salen)
{
    if (salen == 0) {
        return false;
    }
    return srv->inst_nets.n == 0 || netaddr_list_match(&srv->inst_nets, sa);
}

struct api_loop *
api_loop_of(struct api_server *srv, struct http_request *req)
{
    return &srv->loops[http_loop_index(http_req_loop(req))];
}

/* The grace period is over: requests still in flight get their error (or
 * error event) now, while their connections can still carry it. */
static void
on_grace_expired(struct http_loop *loop, void *arg)
{
    struct api_server *srv = arg;

    api_proxy_cancel_all(&srv->loops[http_loop_index(loop)]);
}

/* Shutdown begins: requests waiting in the queue get their 503 now. */
static void
on_drain(struct http_loop *loop, void *arg)
{
    struct api_server *srv = arg;

    api_proxy_drain(&srv->loops[http_loop_index(loop)]);
}

/* Splits a comma-separated list into srv->keys. Returns 0 or -1. */
static int
split_keys(struct api_server *srv, const char *list)
{
    const char *rest = list, *p;
    size_t n;

    while (list && util_next_item(&rest, &p, &n)) {
        if (n == 0) {
            continue;
        }
        char **k = realloc(srv->keys, (srv->nkeys + 1) * sizeof(*k));
        if (!k) {
            return -1;
        }
        srv->keys = k;
        if (!(srv->keys[srv->nkeys] = strndup(p, n))) {
            return -1;
        }
        srv->nkeys++;
    }
    return 0;
}

int
api_server_new(struct api_config *cfg, struct api_server **out)
{
    struct api_server *srv = calloc(1, sizeof(*srv));
    char err[256];
    int rc;

    *out = srv;
    if (!srv) {
        log_error("out of memory");
        return EX_OSERR;
    }
    pthread_mutex_init(&srv->mstats_mu, NULL);
    pthread_mutex_init(&srv->ev_mu, NULL);
    pthread_mutex_init(&srv->latest_mu, NULL);
    pthread_mutex_init(&srv->settings_mu, NULL);
    pthread_mutex_init(&srv->kstats_mu, NULL);
    srv->events = calloc(API_EVENTS_MAX, sizeof(*srv->events));
    srv->cfg = cfg;
    srv->started_mono_ms = util_mono_ms();
    route_policy_parse(cfg->routing, &srv->policy);
    rc = util_parse_urls(cfg->controller_addr, srv->ctl, API_MAX_CTLS, err, sizeof(err));
    if (rc < 0) {
        log_error("--controller_addr: %s", err);
        return EX_USAGE;
    }
    srv->nctl = (size_t)rc;
    for (size_t i = 0; i < srv->nctl; i++) {
        util_url_redact(srv->ctl[i], srv->ctl_shown[i], sizeof(srv->ctl_shown[i]));
    }
    if (netaddr_list_parse(cfg->instance_networks, &srv->inst_nets, err, sizeof(err)) != 0) {
        log_error("--instance_networks: %s", err);
        return EX_USAGE;
    }
    if (!srv->events || split_keys(srv, cfg->api_keys) != 0) {
        log_error("out of memory");
        return EX_OSERR;
    }
    return 0;
}

int
api_server_mount(struct api_server *srv, struct http_server *http)
{
    struct http_service svc = {
        .routes = routes,
        .arg = srv,
        .guard = guard,
        .access_log = access_log,
        .on_drain = on_drain,
        .on_expire = on_grace_expired,
    };

    srv->http = http;
    srv->nloops = http_server_nloops(http);
    srv->loops = calloc((size_t)srv->nloops, sizeof(*srv->loops));
    if (!srv->loops || api_queue_new(srv) != 0) {
        log_error("out of memory");
        return EX_OSERR;
    }
    for (int i = 0; i < srv->nloops; i++) {
        struct api_loop *l = &srv->loops[i];
        l->srv = srv;
        l->loop = http_server_loop(http, i);
        if (api_loop_init(l) != 0) {
            log_error("out of memory");
            return EX_OSERR;
        }
    }
    if (http_server_mount(http, &svc) != 0) {
        log_error("cannot mount the API server's routes");
        return EX_SOFTWARE;
    }
    return 0;
}

int
api_server_start(struct api_server *srv)
{
    char err[256];

    if (api_watch_start(srv, err, sizeof(err)) != 0 ||
        api_probe_start(srv, err, sizeof(err)) != 0) {
        log_error("%s", err);
        return EX_OSERR;
    }
    if (api_limit_start(srv) != 0) {
        log_error("cannot start the API key limiter thread");
        return EX_OSERR;
    }
    return 0;
}

void
api_server_stop(struct api_server *srv)
{
    if (!srv) {
        return;
    }
    api_probe_stop(srv);
    api_watch_stop(srv); /* no more tables posted from here on */
    api_limit_stop(srv); /* nor wake-ups of parked requests */
    for (int i = 0; srv->loops && i < srv->nloops; i++) {
        api_loop_cleanup(&srv->loops[i]);
    }
}

void
api_server_free(struct api_server *srv)
{
    if (!srv) {
        return;
    }
    /* the table swaps still queued ran in http_server_free, before this */
    api_queue_free(srv);
    for (int i = 0; srv->loops && i < srv->nloops; i++) {
        api_table_unref(srv->loops[i].table);
    }
    free(srv->loops);
    while (srv->mstats) {
        struct api_mstats *m = srv->mstats;
        srv->mstats = m->next;
        free(m);
    }
    for (size_t i = 0; i < srv->nkeys; i++) {
        explicit_bzero(srv->keys[i], strlen(srv->keys[i]));
        free(srv->keys[i]);
    }
    free(srv->keys);
    while (srv->kstats) {
        struct api_kstats *k = srv->kstats;
        srv->kstats = k->next;
        free(k);
    }
    api_table_unref(srv->latest);
    api_settings_unref(srv->settings);
    api_limit_free(srv); /* after http_server_free ran the wake-ups still queued */
    netaddr_list_cleanup(&srv->inst_nets);
    free(srv->events);
    pthread_mutex_destroy(&srv->latest_mu);
    pthread_mutex_destroy(&srv->settings_mu);
    pthread_mutex_destroy(&srv->kstats_mu);
    pthread_mutex_destroy(&srv->ev_mu);
    pthread_mutex_destroy(&srv->mstats_mu);
    free(srv);
}

int
api_server_check(struct api_server *srv, FILE *out)
{
    char why[600];

    fprintf(out, "  controllers: %zu (not contacted)\n  routing: %s\n  API keys: %zu\n", srv->nctl,
            route_policy_name(srv->policy), srv->nkeys);
    fprintf(out, "  instance networks: %s\n",
            srv->inst_nets.n ? srv->cfg->instance_networks : "any (not restricted)");
    if (srv->cfg->port_file && util_check_creatable(srv->cfg->port_file, why, sizeof(why)) != 0) {
        fprintf(stderr, "roster: --port_file: %s\n", why);
        return EX_CANTCREAT;
    }
    return 0;
}

/* ---- `roster start apiserver` ------------------------------------------------------- */

struct api_process {
    struct api_server *srv;
    struct http_server *http;
    bool draining;
};

static void
on_signal(int sig, void *arg)
{
    struct api_process *p = arg;

    if (!p->draining) {
        p->draining = true;
        log_info("received %s: finishing requests in flight (up to %lld ms)",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT", (long long)p->srv->cfg->shutdown_grace_ms);
        http_server_shutdown(p->http, (int)p->srv->cfg->shutdown_grace_ms);
    } else {
        log_warn("second signal: stopping now");
        http_server_shutdown(p->http, 0);
    }
}

int
api_main(int argc, char **argv)
{
    struct api_config cfg;
    struct api_process p = {0};
    struct api_server *srv = NULL;
    struct http_server *http = NULL;
    char err[256], shown[2048];
    int code = 0;
    int rc;

    memset(&cfg, 0, sizeof(cfg));
    rc = api_config_load(&cfg, argc, argv);
    if (rc != 0) {
        api_config_cleanup(&cfg);
        return rc == 1 ? 0 : EX_USAGE;
    }
    signal(SIGPIPE, SIG_IGN);
    budget_set_limit(cfg.memory_budget_bytes);
    code = api_server_new(&cfg, &srv);
    if (code != 0 || cfg.check) {
        if (code == 0 && printf("checks:\n") > 0 && (code = api_server_check(srv, stdout)) == 0) {
            printf("OK: the API server would start (nothing was bound or connected)\n");
        }
        goto out;
    }
    struct http_server_config hc = {
        .host = cfg.host,
        .port = (int)cfg.port,
        .threads = (int)cfg.threads,
        .max_body = (size_t)cfg.max_body_bytes,
    };
    http_limits_apply(&cfg.http, &hc);
    if (http_server_new(&hc, &http, err, sizeof(err)) != 0) {
        log_error("%s", err);
        code = EX_OSERR;
        goto out;
    }
    code = api_server_mount(srv, http);
    if (code != 0) {
        goto out;
    }
    p.srv = srv;
    p.http = http;
    if (http_server_catch_signals(http, on_signal, &p) != 0) {
        log_error("cannot install signal handlers");
        code = EX_OSERR;
        goto out;
    }
    code = api_server_start(srv);
    if (code != 0) {
        goto out;
    }
    if (cfg.port_file && util_write_port_file(cfg.port_file, http_server_port(http)) != 0) {
        log_error("cannot write --port_file %s", cfg.port_file);
        code = EX_CANTCREAT;
        goto out;
    }
    log_info("apiserver listening on %s:%d; routing %s; controllers: %s; %s", cfg.host,
             http_server_port(http), route_policy_name(srv->policy),
             util_url_redact(cfg.controller_addr, shown, sizeof(shown)),
             srv->nkeys ? "API keys required" : "no API keys (open to every client)");
    http_server_run(http);
    log_info("apiserver stopped");
out:
    api_server_stop(srv);
    http_server_free(http); /* runs table swaps still queued */
    api_server_free(srv);
    api_config_cleanup(&cfg);
    return code;
}
