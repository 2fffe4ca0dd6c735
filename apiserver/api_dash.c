/* SPDX-License-Identifier: MIT
 *
 * api_dash.c - the dashboard's feed thread: it turns the controller's full
 * list, the controllers' health and this server's counters into an
 * immutable snapshot (rows, models, the state JSON) and hands it to the
 * loops that hold live feeds.
 *
 * When it runs: every tick (--dashboard_tick_ms) while someone looks (a
 * live feed is open, or a data request came in the last VIEW_GRACE_MS),
 * every IDLE_MS otherwise (so the first look is never very old, and
 * controllers going up and down are noticed), and at once when the API
 * server's routing table changed (an instance joined, left, became
 * unhealthy...) or an event happened. Each run reads the whole list from a
 * controller (the one the table is watched from first), probes every
 * controller's /api/health in parallel, and rebuilds the snapshot.
 *
 * Rates and percentiles come from the API server's counters (atomics the
 * loops bump): each instance and model keeps two samples (api_window), the
 * older 5-10 s old; a rate is the difference over that window. Only this
 * thread touches the windows.
 */
#include "api_dash.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#define LOG_MODULE "dashboard"
#include "buf.h"
#include "http_client.h"
#include "json_check.h"
#include "json_write.h"
#include "log.h"
#include "util.h"

#define VIEW_GRACE_MS  15000 /* a data request keeps the feed at tick rate this long */
#define IDLE_MS        10000 /* the feed's period when nobody looks */
#define WINDOW_MS      5000  /* the older sample is 5-10 s old */
#define WINDOW_MAX_MS  20000 /* older than this: start over */
#define MAX_LIST_BYTES (256u * 1024 * 1024)
#define MAX_STATE      (64u * 1024 * 1024)
#define PROBE_MAX_MS   1000
/* a list this large is read at most every LIST_BIG_MS (and at once when the
 * routing table changes): its heartbeat ages and loads move only with the
 * controller's own full refresh (5 s) anyway */
#define LIST_BIG    (1024u * 1024)
#define LIST_BIG_MS 5000

/* ---- snapshots ------------------------------------------------------------------ */

struct dash_snap *
dash_snap_ref(struct dash_snap *s)
{
    atomic_fetch_add(&s->refs, 1);
    return s;
}

void
dash_snap_unref(struct dash_snap *s)
{
    if (s && atomic_fetch_sub(&s->refs, 1) == 1) {
        free(s->rows);
        free(s->models);
        free(s->state);
        free(s);
    }
}

const struct dash_model *
dash_snap_model(const struct dash_snap *s, const char *model)
{
    size_t lo = 0, hi = s ? s->nmodels : 0;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(model, s->models[mid].model);
        if (c == 0) {
            return &s->models[mid];
        }
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}

static int
row_key_cmp(const char *model, const char *host, int port, const struct dash_row *r)
{
    int c = strcmp(model, r->model);

    if (c == 0) {
        c = strcmp(host, r->host);
    }
    return c ? c : (port > r->port) - (port < r->port);
}

const struct dash_row *
dash_snap_row(const struct dash_snap *s, const char *model, const char *host, int port)
{
    const struct dash_model *m = dash_snap_model(s, model);
    size_t lo = m ? m->first : 0, hi = m ? m->first + m->n : 0;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = row_key_cmp(model, host, port, &s->rows[mid]);
        if (c == 0) {
            return &s->rows[mid];
        }
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}

struct dash_snap *
dash_current(struct api_dash *d)
{
    struct dash_snap *s;

    pthread_mutex_lock(&d->mu);
    s = d->snap ? dash_snap_ref(d->snap) : NULL;
    pthread_mutex_unlock(&d->mu);
    return s;
}

void
dash_viewed(struct api_dash *d)
{
    int64_t now = util_mono_ms();
    int64_t was = atomic_exchange(&d->viewed_mono_ms, now);

    if (now - was > VIEW_GRACE_MS) {
        /* nobody looked for a while: the snapshot may be IDLE_MS old */
        pthread_mutex_lock(&d->mu);
        d->wake = true;
        pthread_cond_signal(&d->cond);
        pthread_mutex_unlock(&d->mu);
    }
}

/* The API server's notify hook: a new table or an event. */
static void
on_notify(void *arg)
{
    struct api_dash *d = arg;

    pthread_mutex_lock(&d->mu);
    d->wake = true;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->mu);
}

/* ---- rates ------------------------------------------------------------------------- */

static uint64_t
failures_of(const struct api_stats *s)
{
    return atomic_load_explicit(&s->errors[API_ERR_CONNECT], memory_order_relaxed) +
           atomic_load_explicit(&s->errors[API_ERR_TIMEOUT], memory_order_relaxed) +
           atomic_load_explicit(&s->errors[API_ERR_UPSTREAM_5XX], memory_order_relaxed);
}

static void
take_sample(const struct api_stats *s, int64_t now, struct api_sample *out)
{
    out->t_ms = now;
    out->requests = atomic_load_explicit(&s->requests, memory_order_relaxed);
    out->failures = failures_of(s);
    for (int i = 0; i <= METRICS_BUCKETS; i++) {
        out->bucket[i] = atomic_load_explicit(&s->latency.bucket[i], memory_order_relaxed);
    }
}

/* rps, err, p50, p99 from the window's counts. */
static void
rates_finish(struct dash_rates *r)
{
    double q50 = metrics_quantile(r->wbucket, 0.50), q99 = metrics_quantile(r->wbucket, 0.99);

    r->rps = r->wms > 0 ? (double)r->wreq * 1000.0 / (double)r->wms : 0;
    r->err = r->wreq ? (double)(r->wfail > r->wreq ? r->wreq : r->wfail) / (double)r->wreq : -1;
    r->p50 = q50 < 0 ? -1 : q50 * 1000.0;
    r->p99 = q99 < 0 ? -1 : q99 * 1000.0;
}

/* Moves the window on and computes the rates over it. */
static void
window_rates(struct api_window *w, const struct api_stats *s, int64_t now, struct dash_rates *r)
{
    struct api_sample cur;
    const struct api_sample *base;

    take_sample(s, now, &cur);
    memset(r, 0, sizeof(*r));
    r->requests = cur.requests;
    r->failures = cur.failures;
    r->err = r->p50 = r->p99 = -1;
    if (w->a.t_ms == 0 || now - w->a.t_ms > WINDOW_MAX_MS) {
        w->a = cur; /* start over */
        w->b.t_ms = 0;
        return;
    }
    if (now - w->a.t_ms >= WINDOW_MS) {
        w->b = w->a;
        w->a = cur;
    }
    base = w->b.t_ms ? &w->b : &w->a;
    if (now - base->t_ms < 500) {
        return; /* too short to say */
    }
    r->have = true;
    r->wms = now - base->t_ms;
    r->wreq = cur.requests - base->requests;
    r->wfail = cur.failures - base->failures;
    for (int i = 0; i <= METRICS_BUCKETS; i++) {
        r->wbucket[i] = cur.bucket[i] - base->bucket[i];
    }
    rates_finish(r);
}

/* ---- reading the controllers ---------------------------------------------------------- */

static int
row_cmp(const void *a, const void *b)
{
    const struct dash_row *y = b;
    const struct dash_row *x = a;

    return row_key_cmp(x->model, x->host, x->port, y);
}

static double
num(const cJSON *o, const char *k, double def)
{
    const cJSON *v = json_get(o, k);

    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

/* A count or a duration from the list, clamped (a cast of an absurd double
 * to an integer is undefined). */
static int64_t
count(const cJSON *o, const char *k, int64_t def)
{
    double v = num(o, k, (double)def);

    return v >= -1 && v <= 1e15 ? (int64_t)v : def;
}

static bool
flag(const cJSON *o, const char *k, bool def)
{
    const cJSON *v = json_get(o, k);

    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

/* Parses a view=full list into rows (sorted). Returns the count, or -1. */
static long
parse_list(const struct buf *body, struct dash_row **out, char *err, size_t errcap)
{
    cJSON *root = NULL;
    struct dash_row *rows;
    size_t n = 0;

    if (json_parse(body->data, body->len, 16, &root, err, errcap) != 0 || !cJSON_IsArray(root)) {
        if (root) {
            snprintf(err, errcap, "the list is not a JSON array");
        }
        cJSON_Delete(root);
        return -1;
    }
    rows = calloc((size_t)cJSON_GetArraySize(root) + 1, sizeof(*rows));
    if (!rows) {
        snprintf(err, errcap, "out of memory");
        cJSON_Delete(root);
        return -1;
    }
    for (const cJSON *it = root->child; it; it = it->next) {
        const cJSON *m = json_get(it, "model_name"), *h = json_get(it, "host");
        const cJSON *load = json_get(it, "load");
        const cJSON *age = json_get(it, "heartbeat_age_ms");
        const cJSON *ov = json_get(it, "weight_override");
        struct dash_row *r = &rows[n];
        double port = num(it, "port", 0);
        if (!cJSON_IsString(m) || !cJSON_IsString(h) || port < 1 || port > 65535 ||
            strlen(m->valuestring) > API_NAME_MAX || strlen(h->valuestring) > API_NAME_MAX) {
            continue; /* the controller checks its rows: nothing else to do with a bad one */
        }
        util_strlcpy(r->model, m->valuestring, sizeof(r->model));
        util_strlcpy(r->host, h->valuestring, sizeof(r->host));
        r->port = (int)port;
        r->alive = flag(it, "alive", flag(it, "healthy", false));
        r->enabled = flag(it, "enabled", true);
        r->weight = num(it, "weight", 1);
        r->weight = r->weight >= 0 && r->weight <= 1e9 ? r->weight : 0;
        r->routable = flag(it, "routable", r->alive && r->enabled && r->weight > 0);
        r->weight_declared = num(it, "weight_declared", r->weight);
        r->weight_declared =
            r->weight_declared >= 0 && r->weight_declared <= 1e9 ? r->weight_declared : 0;
        r->weight_override = cJSON_IsNumber(ov) && ov->valuedouble >= 0 && ov->valuedouble <= 1e9
                                 ? ov->valuedouble
                                 : -1;
        r->lease_ms = count(it, "lease_ms", 0);
        r->age_ms = cJSON_IsNumber(age) ? count(it, "heartbeat_age_ms", -1) : -1;
        r->in_flight = count(load, "in_flight", 0);
        r->queue = count(load, "queue_length", 0);
        r->capacity = count(load, "capacity", 0);
        n++;
    }
    cJSON_Delete(root);
    qsort(rows, n, sizeof(*rows), row_cmp);
    *out = rows;
    return (long)n;
}

/* Reads the full list from the first controller that answers. Returns the
 * row count (rows in *out), or -1 with a reason in err. */
static long
fetch_list(struct api_dash *d, struct dash_row **out, size_t *bytes, char *err, size_t errcap)
{
    size_t order[API_MAX_CTLS];
    size_t n = api_controller_order(d->api, order);
    char url[700], secret[600];
    const char *headers[2] = {api_secret_header(d->api, secret, sizeof(secret)), NULL};

    snprintf(err, errcap, "no controller");
    for (size_t k = 0; k < n; k++) {
        struct http_client_response resp;
        char e[256];
        long rows;

        snprintf(url, sizeof(url), "%s/api/controller/models?view=full", d->api->ctl[order[k]]);
        if (http_client_request_cancel("GET", url, NULL, 0, headers, (int)d->cfg.control_timeout_ms,
                                       MAX_LIST_BYTES, &d->stop, &resp, e, sizeof(e)) != 0) {
            snprintf(err, errcap, "%s: %s", d->api->ctl_shown[order[k]], e);
            continue;
        }
        if (resp.status != 200) {
            snprintf(err, errcap, "%s: status %ld", d->api->ctl_shown[order[k]], resp.status);
            http_client_response_cleanup(&resp);
            continue;
        }
        *bytes = resp.body.len;
        rows = parse_list(&resp.body, out, e, sizeof(e));
        http_client_response_cleanup(&resp);
        if (rows >= 0) {
            explicit_bzero(secret, sizeof(secret));
            return rows;
        }
        snprintf(err, errcap, "%s: %s", d->api->ctl_shown[order[k]], e);
    }
    explicit_bzero(secret, sizeof(secret));
    return -1;
}

/* What the last probe of a controller said. */
struct probe {
    bool ok, known;
    double ms;
    char error[200];
};

static size_t
on_probe_data(char *p, size_t size, size_t n, void *arg)
{
    struct buf *b = arg;

    if (buf_append(b, p, size * n) != 0) {
        /* beyond the cap: the start of an error answer is all we show */
    }
    return size * n;
}

/* Asks every controller at once (libcurl multi on this thread), each
 * bounded by PROBE_MAX_MS, for the list of a model that does not exist: a
 * controller that answers 200 serves lists (DB-GPT's too), whatever else
 * its process does (a webserver's /api/health speaks for the whole). */
static void
probe_all(struct api_dash *d, struct probe *out)
{
    size_t n = d->api->nctl;
    CURL *h[API_MAX_CTLS] = {0};
    struct buf body[API_MAX_CTLS];
    CURLM *m = curl_multi_init();
    long ms =
        d->cfg.control_timeout_ms < PROBE_MAX_MS ? (long)d->cfg.control_timeout_ms : PROBE_MAX_MS;
    int running = 0;
    char url[700], secret[600];
    struct curl_slist *hl = NULL;

    if (api_secret_header(d->api, secret, sizeof(secret))) {
        hl = curl_slist_append(NULL, secret);
        explicit_bzero(secret, sizeof(secret));
    }
    for (size_t i = 0; i < n; i++) {
        buf_init(&body[i], 4096);
        out[i].known = true;
        out[i].ok = false;
        out[i].ms = -1;
        snprintf(out[i].error, sizeof(out[i].error), "not probed");
        h[i] = m ? curl_easy_init() : NULL;
        if (!h[i]) {
            continue;
        }
        snprintf(url, sizeof(url), "%s/api/controller/models?model_name=roster-probe%%40none",
                 d->api->ctl[i]);
        curl_easy_setopt(h[i], CURLOPT_URL, url);
        if (hl) {
            curl_easy_setopt(h[i], CURLOPT_HTTPHEADER, hl);
        }
        curl_easy_setopt(h[i], CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h[i], CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h[i], CURLOPT_CONNECTTIMEOUT_MS, ms);
        curl_easy_setopt(h[i], CURLOPT_TIMEOUT_MS, ms);
        curl_easy_setopt(h[i], CURLOPT_WRITEFUNCTION, on_probe_data);
        curl_easy_setopt(h[i], CURLOPT_WRITEDATA, &body[i]);
        curl_easy_setopt(h[i], CURLOPT_PRIVATE, (void *)(uintptr_t)i);
        curl_multi_add_handle(m, h[i]);
    }
    while (m && !atomic_load(&d->stop)) {
        CURLMcode mc = curl_multi_perform(m, &running);
        if (mc != CURLM_OK || running == 0) {
            break;
        }
        curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    for (CURLMsg *msg; m && (msg = curl_multi_info_read(m, &running));) {
        void *p = NULL;
        long status = 0;
        double secs = 0;
        size_t i;
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &p);
        i = (size_t)(uintptr_t)p;
        if (msg->data.result != CURLE_OK) {
            snprintf(out[i].error, sizeof(out[i].error), "%s",
                     curl_easy_strerror(msg->data.result));
            continue;
        }
        curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(msg->easy_handle, CURLINFO_TOTAL_TIME, &secs);
        out[i].ms = secs * 1000.0;
        out[i].ok = status == 200;
        if (out[i].ok) {
            out[i].error[0] = '\0';
        } else {
            char msgtxt[160];
            json_error_message(body[i].data, body[i].len, msgtxt, sizeof(msgtxt));
            snprintf(out[i].error, sizeof(out[i].error), "status %ld%s%s", status,
                     *msgtxt ? ": " : "", msgtxt);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (h[i]) {
            curl_multi_remove_handle(m, h[i]);
            curl_easy_cleanup(h[i]);
        }
        buf_cleanup(&body[i]);
    }
    if (m) {
        curl_multi_cleanup(m);
    }
    curl_slist_free_all(hl);
}

/* ---- the snapshot ------------------------------------------------------------------ */

static uint64_t
mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h;
}

/* Adds this server's view (ejection, traffic) to each row, and groups the
 * rows by model. */
static int
build_models(struct api_dash *d, struct dash_snap *s, int64_t now)
{
    struct api_table *t = api_latest_table(d->api);
    size_t nm = 0;

    for (size_t i = 0; i < s->nrows; i++) {
        nm += i == 0 || strcmp(s->rows[i].model, s->rows[i - 1].model) != 0;
    }
    s->models = calloc(nm ? nm : 1, sizeof(*s->models));
    if (!s->models) {
        api_table_unref(t);
        return -1;
    }
    for (size_t i = 0; i < s->nrows; i++) {
        struct dash_row *r = &s->rows[i];
        struct api_inst *in = api_table_inst(t, r->model, r->host, r->port);
        struct dash_model *m;
        if (i == 0 || strcmp(r->model, s->rows[i - 1].model) != 0) {
            m = &s->models[s->nmodels++];
            util_strlcpy(m->model, r->model, sizeof(m->model));
            m->first = i;
        }
        m = &s->models[s->nmodels - 1];
        m->n++;
        if (in) {
            int64_t until = atomic_load(&in->rt.ejected_until_ms);
            r->ejected = until > util_mono_ms() || atomic_load(&in->rt.trial);
            r->ejected_ms_left = until > util_mono_ms() ? until - util_mono_ms() : 0;
            r->local_in_flight = atomic_load(&in->rt.in_flight);
            r->excluded = atomic_load(&in->excluded);
            r->routable = r->routable && !r->excluded;
            pthread_mutex_lock(&in->err_mu);
            util_strlcpy(r->last_error, in->last_error, sizeof(r->last_error));
            pthread_mutex_unlock(&in->err_mu);
            window_rates(&in->win, &in->s, now, &r->r);
        } else {
            r->r.err = r->r.p50 = r->r.p99 = -1;
        }
        m->alive += r->alive;
        m->routable += r->routable;
        m->ejected += r->ejected;
        m->drained += r->alive && r->weight <= 0;
        m->disabled += !r->enabled;
        m->in_flight += r->in_flight;
        m->capacity += r->capacity;
        m->queue += r->queue;
        uint64_t h = m->version;
        h = mix(h, (uint64_t)r->port);
        h = mix(h, (uint64_t)(r->alive | r->routable << 1 | r->enabled << 2 | r->ejected << 3));
        h = mix(h, (uint64_t)(int64_t)(r->weight * 1000));
        h = mix(h, (uint64_t)(int64_t)(r->weight_override * 1000));
        h = mix(h, (uint64_t)r->age_ms);
        h = mix(h, (uint64_t)r->in_flight);
        h = mix(h, (uint64_t)r->queue);
        h = mix(h, (uint64_t)r->capacity);
        h = mix(h, r->r.requests);
        m->version = h;
    }
    for (size_t k = 0; k < s->nmodels; k++) {
        struct dash_model *m = &s->models[k];
        const char *at = strrchr(m->model, '@');
        char name[API_NAME_MAX + 1];
        snprintf(name, sizeof(name), "%.*s", at ? (int)(at - m->model) : (int)strlen(m->model),
                 m->model);
        struct api_model *am = at ? api_table_find(t, name, at + 1) : NULL;
        if (am && am->stats) {
            window_rates(&am->stats->win, &am->stats->s, now, &m->r);
        } else {
            m->r.err = m->r.p50 = m->r.p99 = -1;
        }
        m->version = mix(m->version, m->r.requests) & ((1ull << 53) - 1); /* exact in JS */
    }
    api_table_unref(t);
    return 0;
}

static void
jw_num_or_null(struct jw *w, double v, bool ok)
{
    if (ok) {
        char tmp[40];
        snprintf(tmp, sizeof(tmp), "%.3f", v);
        /* trim trailing zeros: 12.500 -> 12.5, 3.000 -> 3 */
        size_t n = strlen(tmp);
        while (n > 1 && tmp[n - 1] == '0') {
            tmp[--n] = '\0';
        }
        if (n > 1 && tmp[n - 1] == '.') {
            tmp[--n] = '\0';
        }
        jw_raw(w, tmp);
    } else {
        jw_raw(w, "null");
    }
}

void
dash_write_rates(struct jw *w, const struct dash_rates *r)
{
    jw_raw(w, "\"rps\":");
    jw_num_or_null(w, r->rps, r->have);
    jw_raw(w, ",\"error_rate\":");
    jw_num_or_null(w, r->err, r->have && r->err >= 0);
    jw_raw(w, ",\"p50_ms\":");
    jw_num_or_null(w, r->p50, r->have && r->p50 >= 0);
    jw_raw(w, ",\"p99_ms\":");
    jw_num_or_null(w, r->p99, r->have && r->p99 >= 0);
    jw_raw(w, ",\"requests\":");
    jw_i64(w, (int64_t)r->requests);
}

static void
write_state(struct api_dash *d, struct dash_snap *s, const struct probe *probes,
            const char *list_error, struct jw *w)
{
    struct api_watch_status ws;
    struct api_table *t = api_latest_table(d->api);
    int64_t now = util_mono_ms();
    struct dash_rates tot;
    size_t alive = 0, routable = 0;
    int64_t in_flight = 0;

    memset(&tot, 0, sizeof(tot));
    api_watch_status(d->api, &ws);
    for (size_t k = 0; k < s->nmodels; k++) {
        const struct dash_model *m = &s->models[k];
        alive += m->alive;
        routable += m->routable;
        tot.requests += m->r.requests;
        tot.failures += m->r.failures;
        if (m->r.have) {
            tot.have = true;
            tot.rps += m->r.rps;
            tot.wreq += m->r.wreq;
            tot.wfail += m->r.wfail;
            for (int i = 0; i <= METRICS_BUCKETS; i++) {
                tot.wbucket[i] += m->r.wbucket[i];
            }
        }
    }
    for (size_t i = 0; i < s->nrows; i++) {
        in_flight += s->rows[i].local_in_flight;
    }
    double rps = tot.rps;
    tot.wms = 1000;
    rates_finish(&tot);
    tot.rps = rps; /* the sum of the models' (their windows differ a little) */

    jw_raw(w, "{\"server\":{\"mode\":");
    jw_str(w, d->cfg.mode);
    jw_raw(w, ",\"version\":");
    jw_str(w, d->cfg.version);
    jw_raw(w, ",\"now_ms\":");
    jw_i64(w, util_wall_ms());
    jw_raw(w, ",\"uptime_ms\":");
    jw_i64(w, now - d->started_mono_ms);
    jw_raw(w, ",\"api_keys\":");
    jw_bool(w, d->api->nkeys > 0);
    jw_raw(w, ",\"secret_required\":");
    jw_bool(w, d->cfg.secret && *d->cfg.secret);
    jw_raw(w, ",\"llm_model\":");
    jw_str(w, d->cfg.llm_model);
    jw_raw(w, ",\"embedding_model\":");
    jw_str(w, d->cfg.embedding_model);
    jw_raw(w, ",\"tick_ms\":");
    jw_i64(w, d->cfg.tick_ms);
    jw_raw(w, ",\"base_url\":");
    jw_str(w, d->cfg.base_url);
    jw_raw(w, "},\"table\":{\"loaded\":");
    jw_bool(w, t != NULL);
    jw_raw(w, ",\"version\":");
    jw_i64(w, t ? (int64_t)t->version : 0);
    jw_raw(w, ",\"age_ms\":");
    if (s->list_mono_ms) {
        jw_i64(w, now - s->list_mono_ms);
    } else {
        jw_raw(w, "null");
    }
    jw_raw(w, ",\"stale\":");
    jw_bool(w, !ws.reachable || list_error != NULL);
    jw_raw(w, ",\"error\":");
    jw_str(w, list_error ? list_error : ws.error[0] ? ws.error : NULL);
    jw_raw(w, ",\"models\":");
    jw_i64(w, (int64_t)s->nmodels);
    jw_raw(w, ",\"instances\":");
    jw_i64(w, (int64_t)s->nrows);
    jw_raw(w, ",\"alive\":");
    jw_i64(w, (int64_t)alive);
    jw_raw(w, ",\"routable\":");
    jw_i64(w, (int64_t)routable);
    jw_raw(w, "},\"controllers\":[");
    for (size_t i = 0; i < d->api->nctl; i++) {
        jw_raw(w, i ? ",{\"url\":" : "{\"url\":");
        jw_str(w, d->api->ctl_shown[i]);
        jw_raw(w, ",\"ok\":");
        jw_bool(w, probes[i].ok);
        jw_raw(w, ",\"current\":");
        jw_bool(w, strcmp(d->api->ctl[i], ws.current) == 0);
        jw_raw(w, ",\"latency_ms\":");
        jw_num_or_null(w, probes[i].ms, probes[i].ms >= 0);
        jw_raw(w, ",\"error\":");
        jw_str(w, probes[i].known && probes[i].error[0] ? probes[i].error : NULL);
        jw_raw(w, "}");
    }
    jw_raw(w, "],\"totals\":{");
    dash_write_rates(w, &tot);
    jw_raw(w, ",\"in_flight\":");
    jw_i64(w, in_flight);
    jw_raw(w, "},\"models\":[");
    for (size_t k = 0; k < s->nmodels; k++) {
        const struct dash_model *m = &s->models[k];
        const char *at = strrchr(m->model, '@');
        jw_raw(w, k ? ",{\"model\":" : "{\"model\":");
        jw_str(w, m->model);
        jw_raw(w, ",\"name\":");
        jw_strn(w, m->model, at ? (size_t)(at - m->model) : strlen(m->model));
        jw_raw(w, ",\"type\":");
        jw_str(w, at ? at + 1 : "");
        jw_raw(w, ",\"instances\":");
        jw_i64(w, (int64_t)m->n);
        jw_raw(w, ",\"alive\":");
        jw_i64(w, (int64_t)m->alive);
        jw_raw(w, ",\"routable\":");
        jw_i64(w, (int64_t)m->routable);
        jw_raw(w, ",\"ejected\":");
        jw_i64(w, (int64_t)m->ejected);
        jw_raw(w, ",\"drained\":");
        jw_i64(w, (int64_t)m->drained);
        jw_raw(w, ",\"disabled\":");
        jw_i64(w, (int64_t)m->disabled);
        jw_raw(w, ",\"in_flight\":");
        jw_i64(w, m->in_flight);
        jw_raw(w, ",\"capacity\":");
        jw_i64(w, m->capacity);
        jw_raw(w, ",\"queue\":");
        jw_i64(w, m->queue);
        jw_raw(w, ",");
        dash_write_rates(w, &m->r);
        jw_raw(w, ",\"version\":");
        jw_i64(w, (int64_t)m->version);
        jw_raw(w, "}");
    }
    jw_raw(w, "],\"events_seq\":");
    jw_i64(w, (int64_t)api_events_seq(d->api));
    jw_raw(w, "}");
    api_table_unref(t);
}

/* Controllers that went down or came back since the last probe. */
static void
note_probes(struct api_dash *d, struct probe *was, const struct probe *now)
{
    for (size_t i = 0; i < d->api->nctl; i++) {
        if (was[i].known && was[i].ok && !now[i].ok) {
            api_event_add(d->api, "controller_down", NULL, NULL, 0, "%s: %s", d->api->ctl_shown[i],
                          now[i].error);
        } else if (was[i].known && !was[i].ok && now[i].ok) {
            api_event_add(d->api, "controller_up", NULL, NULL, 0, "%s answers again",
                          d->api->ctl_shown[i]);
        } else if (!was[i].known && !now[i].ok) {
            api_event_add(d->api, "controller_down", NULL, NULL, 0, "%s: %s", d->api->ctl_shown[i],
                          now[i].error);
        }
        was[i] = now[i];
    }
}

/* What the feed thread keeps from one run to the next. */
struct feed {
    struct dash_row *rows; /* the last list read (kept while the controllers cannot be read) */
    size_t nrows;
    int64_t list_mono; /* when it was read */
    size_t list_bytes; /* its size */
    struct probe probes[API_MAX_CTLS];
    uint64_t seq;
};

/* One run: read (when due, or `force`), probe, build, publish. */
static void
run_once(struct api_dash *d, struct feed *f, bool force)
{
    struct dash_row **last_rows = &f->rows;
    size_t *last_n = &f->nrows;
    int64_t *last_list_mono = &f->list_mono;
    struct probe *probes = f->probes;
    uint64_t *seq = &f->seq;
    struct dash_snap *s = calloc(1, sizeof(*s));
    struct dash_row *rows = NULL;
    struct probe now_probes[API_MAX_CTLS];
    char err[300];
    const char *list_error = NULL;
    long n;
    struct buf b;
    struct jw w;

    if (!s) {
        return;
    }
    if (!force && f->list_bytes > LIST_BIG && util_mono_ms() - f->list_mono < LIST_BIG_MS) {
        n = -2; /* not due: the last list, with this tick's traffic */
    } else {
        n = fetch_list(d, &rows, &f->list_bytes, err, sizeof(err));
    }
    if (n >= 0) {
        free(*last_rows);
        *last_rows = rows;
        *last_n = (size_t)n;
        *last_list_mono = util_mono_ms();
    } else if (n == -1) {
        list_error = err;
    }
    probe_all(d, now_probes);
    if (atomic_load(&d->stop)) {
        free(s);
        return; /* shutting down: the results mean nothing */
    }
    note_probes(d, probes, now_probes);
    s->rows = calloc(*last_n ? *last_n : 1, sizeof(*s->rows));
    if (!s->rows) {
        free(s);
        return;
    }
    if (*last_n) {
        memcpy(s->rows, *last_rows, *last_n * sizeof(*s->rows));
    }
    s->nrows = *last_n;
    s->list_mono_ms = *last_list_mono;
    atomic_init(&s->refs, 1);
    s->seq = ++*seq;
    if (build_models(d, s, util_mono_ms()) != 0) {
        dash_snap_unref(s);
        return;
    }
    buf_init(&b, MAX_STATE);
    jw_init(&w, &b);
    write_state(d, s, probes, list_error, &w);
    if (w.err) {
        log_warn("the dashboard's state is larger than %u bytes", MAX_STATE);
        buf_cleanup(&b);
        dash_snap_unref(s);
        return;
    }
    s->state_len = b.len;
    s->state = buf_take(&b);
    if (!s->state) {
        dash_snap_unref(s);
        return;
    }
    pthread_mutex_lock(&d->mu);
    struct dash_snap *old = d->snap;
    d->snap = s;
    pthread_mutex_unlock(&d->mu);
    dash_snap_unref(old);
    dash_publish(d);
}

static void *
feed_main(void *arg)
{
    struct api_dash *d = arg;
    struct feed *f = calloc(1, sizeof(*f));
    int64_t last_run = 0;
    uint64_t table_version = 0, event_seq = 0;

    if (!f) {
        log_error("out of memory: the dashboard has no data");
        return NULL;
    }
    while (!atomic_load(&d->stop)) {
        int64_t now = util_mono_ms();
        bool viewed =
            atomic_load(&d->clients) > 0 || now - atomic_load(&d->viewed_mono_ms) < VIEW_GRACE_MS;
        int64_t period = viewed ? d->cfg.tick_ms : IDLE_MS;
        struct api_table *t = api_latest_table(d->api);
        uint64_t tv = t ? t->version : 0;
        uint64_t es = api_events_seq(d->api);

        api_table_unref(t);
        if (last_run == 0 || now - last_run >= period || tv != table_version) {
            bool changed = tv != table_version;
            table_version = tv;
            event_seq = es;
            run_once(d, f, changed || last_run == 0);
            last_run = util_mono_ms();
        } else if (es != event_seq) {
            event_seq = es;
            dash_publish(d); /* new events only: the feeds send them */
        }
        pthread_mutex_lock(&d->mu);
        if (!d->wake && !atomic_load(&d->stop)) {
            struct timespec ts;
            int64_t left = last_run + period - util_mono_ms();
            util_deadline_us((left > 10 ? left : 10) * 1000, &ts);
            while (!d->wake && !atomic_load(&d->stop)) {
                if (pthread_cond_timedwait(&d->cond, &d->mu, &ts) == ETIMEDOUT) {
                    break;
                }
            }
        }
        bool stop = atomic_load(&d->stop);
        d->wake = false;
        pthread_mutex_unlock(&d->mu);
        if (stop) {
            break;
        }
        /* events come in bursts (a table update reports many): let them
         * gather for a moment, so the feeds send one message */
        util_sleep_ms(20);
    }
    free(f->rows);
    free(f);
    return NULL;
}

void
dash_feed_hook(struct api_dash *d)
{
    d->api->notify = on_notify;
    d->api->notify_arg = d;
}

int
dash_feed_start(struct api_dash *d)
{
    if (pthread_create(&d->feed, NULL, feed_main, d) != 0) {
        return -1;
    }
    d->feed_started = true;
    return 0;
}

void
api_dash_halt(struct api_dash *d)
{
    if (!d) {
        return;
    }
    pthread_mutex_lock(&d->mu);
    atomic_store(&d->stop, true);
    atomic_store(&d->act_cancel, true);
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->mu);
}

void
dash_feed_stop(struct api_dash *d)
{
    if (!d->feed_started) {
        return;
    }
    api_dash_halt(d);
    pthread_join(d->feed, NULL);
    d->feed_started = false;
}
