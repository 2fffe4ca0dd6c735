/* SPDX-License-Identifier: MIT
 *
 * ctl_settings.c - cluster settings as data (docs/settings.md): the
 * settings thread and the published settings document.
 *
 * DESIGN
 * Settings (API keys, model aliases, per-model and cluster documents) are
 * rows of roster_settings; one version number orders every change
 * (registry.h). A controller keeps them in an immutable, reference-counted
 * document (struct ctl_settings_doc), built by its settings thread, which
 * owns a registry store of its own (a settings write never queues behind
 * heartbeats, nor they behind it):
 *   - every --view_poll_ms it reads the version, and every row when the
 *     version moved (a write through another controller);
 *   - it runs the writes loop threads queue (ctl_settings_submit): each
 *     reads the settings afresh, decides against them (409 for a name
 *     taken, 404 for one missing), writes with a compare-and-set on the
 *     version, and on losing the race to another controller decides again
 *     (up to WRITE_TRIES times), so no check is ever made against stale
 *     data; then it reloads and publishes before the job is answered, so a
 *     writer reading back through the same controller sees its change.
 * After a new document is published, the watches of the instance list are
 * woken (ctl_api_view_changed): a watcher that named the settings version
 * it holds (settings=V) is answered when the version moved, so apiservers
 * learn of a change within the poll period plus one round trip.
 *
 * Loop threads take `mu` only to copy the document pointer and take a
 * reference (ctl_settings_acquire), and the queue lock to link a job.
 */
#include "ctl.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#define LOG_MODULE "settings"
#include "log.h"
#include "util.h"

#define WRITE_TRIES 8

struct ctl_settings {
    struct ctl_server *srv;
    struct reg_store *store;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu; /* guards doc, the queue and stop */
    pthread_cond_t cond;
    bool stop;
    struct ctl_settings_doc *doc;
    struct ctl_set_job *head, *tail;
    size_t queued;
    _Atomic int64_t version;  /* of doc (-1: none loaded) */
    struct reg_settings rows; /* the settings thread's last read */
    bool failing;             /* the last read failed (logged once per outage) */
};

/* ---- the document ------------------------------------------------------------ */

void
ctl_settings_doc_release(struct ctl_settings_doc *d)
{
    if (d && atomic_fetch_sub(&d->refs, 1) == 1) {
        free(d->json);
        free(d->keys_json);
        free(d->aliases_json);
        free(d->models_json);
        free(d);
    }
}

/* The section of the document a kind's rows go to (NULL: not served). */
static const char *
section_of(const char *kind)
{
    static const char *const map[][2] = {
        {"key", "keys"}, {"alias", "aliases"}, {"model", "models"}, {"cluster", "cluster"}};

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (strcmp(kind, map[i][0]) == 0) {
            return map[i][1];
        }
    }
    return NULL;
}

static char *
print_take(cJSON *j, size_t *len_out)
{
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;

    cJSON_Delete(j);
    *len_out = s ? strlen(s) : 0;
    return s;
}

/* Builds the document of a read: {"version":V,"keys":[{"name":..., value's
 * members}],"aliases":[...],"models":[...],"cluster":[...]}, and the
 * operators' lists (keys without their hashes). A row whose value is not
 * a JSON object (written by hand) is left out with a warning. */
static struct ctl_settings_doc *
doc_build(const struct reg_settings *rows)
{
    struct ctl_settings_doc *d = calloc(1, sizeof(*d));
    cJSON *all = cJSON_CreateObject();
    cJSON *keys = cJSON_CreateArray();
    cJSON *aliases = cJSON_CreateArray();
    cJSON *models = cJSON_CreateArray();
    bool ok = d && all && keys && aliases && models;

    if (ok) {
        cJSON_AddNumberToObject(all, "version", (double)rows->version);
        static const char *const sections[] = {"keys", "aliases", "models", "cluster"};
        for (size_t i = 0; i < 4; i++) {
            ok = ok && cJSON_AddArrayToObject(all, sections[i]) != NULL;
        }
    }
    for (size_t i = 0; ok && i < rows->n; i++) {
        const struct reg_setting *r = &rows->v[i];
        const char *sec = section_of(r->kind);
        cJSON *v;
        if (!sec) {
            continue;
        }
        v = cJSON_Parse(r->value);
        if (!cJSON_IsObject(v)) {
            log_warn("setting %s '%s' is not a JSON object; ignored", r->kind, r->name);
            cJSON_Delete(v);
            continue;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(v, "name");
        cJSON_AddItemToObject(v, "name", cJSON_CreateString(r->name));
        cJSON_AddNumberToObject(v, "updated_ms", (double)r->updated_ms);
        if (strcmp(r->kind, "key") == 0) {
            cJSON *shown = cJSON_Duplicate(v, 1);
            cJSON_DeleteItemFromObjectCaseSensitive(shown, "hash");
            ok = cJSON_AddItemToArray(keys, shown);
            d->nkeys++;
        } else if (strcmp(r->kind, "alias") == 0) {
            ok = cJSON_AddItemToArray(aliases, cJSON_Duplicate(v, 1));
            d->naliases++;
        } else if (strcmp(r->kind, "model") == 0) {
            ok = cJSON_AddItemToArray(models, cJSON_Duplicate(v, 1));
        }
        ok = ok && cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(all, sec), v);
    }
    if (ok) {
        d->version = rows->version;
        atomic_init(&d->refs, 1);
        d->json = print_take(all, &d->len);
        d->keys_json = print_take(keys, &d->keys_len);
        d->aliases_json = print_take(aliases, &d->aliases_len);
        d->models_json = print_take(models, &d->models_len);
        all = keys = aliases = models = NULL;
        ok = d->json && d->keys_json && d->aliases_json && d->models_json;
    }
    cJSON_Delete(all);
    cJSON_Delete(keys);
    cJSON_Delete(aliases);
    cJSON_Delete(models);
    if (!ok && d) {
        atomic_init(&d->refs, 1);
        ctl_settings_doc_release(d);
        return NULL;
    }
    return d;
}

struct ctl_settings_doc *
ctl_settings_acquire(struct ctl_settings *s)
{
    struct ctl_settings_doc *d;

    pthread_mutex_lock(&s->mu);
    d = s->doc;
    if (d) {
        atomic_fetch_add(&d->refs, 1);
    }
    pthread_mutex_unlock(&s->mu);
    return d;
}

int64_t
ctl_settings_version(struct ctl_settings *s)
{
    return s ? atomic_load(&s->version) : -1;
}

/* ---- reading (settings thread) --------------------------------------------------- */

/* Reads the settings if they moved and publishes a new document. Returns
 * the registry rc. */
static int
refresh(struct ctl_settings *s)
{
    bool changed = false;
    int rc = reg_settings_read(s->store, s->doc ? s->rows.version : -1, &s->rows, &changed);

    if (rc != REG_OK) {
        if (!s->failing) {
            log_warn("reading the settings failed: %s: %s", reg_strerror(rc), reg_errmsg(s->store));
        }
        s->failing = true;
        atomic_fetch_add(&s->srv->metrics.settings_errors, 1);
        return rc;
    }
    if (s->failing) {
        log_info("settings read again (version %lld)", (long long)s->rows.version);
        s->failing = false;
    }
    if (changed) {
        struct ctl_settings_doc *d = doc_build(&s->rows);
        struct ctl_settings_doc *old;
        if (!d) {
            log_error("settings version %lld: out of memory building the document",
                      (long long)s->rows.version);
            s->rows.version = -2; /* read again next time */
            return REG_ENOMEM;
        }
        pthread_mutex_lock(&s->mu);
        old = s->doc;
        s->doc = d;
        atomic_store(&s->version, d->version);
        pthread_mutex_unlock(&s->mu);
        ctl_settings_doc_release(old);
        log_info("settings version %lld: %zu keys, %zu aliases", (long long)d->version, d->nkeys,
                 d->naliases);
        ctl_api_view_changed(s->srv);
    }
    return REG_OK;
}

/* ---- writing (settings thread) ------------------------------------------------- */

static const struct reg_setting *
find_row(const struct reg_settings *rows, const char *kind, const char *name)
{
    for (size_t i = 0; i < rows->n; i++) {
        if (strcmp(rows->v[i].kind, kind) == 0 && strcmp(rows->v[i].name, name) == 0) {
            return &rows->v[i];
        }
    }
    return NULL;
}

/* What a job writes, decided against `rows`: 0 and the row in *w (its
 * value owned by *owned), or an HTTP status with job->err. */
static int
decide(struct ctl_set_job *job, const struct reg_settings *rows, struct reg_setting *w,
       char **owned)
{
    const struct reg_setting *cur = find_row(rows, job->kind, job->name);
    const char *what = strcmp(job->kind, "key") == 0 ? "API key" : job->kind;

    *owned = NULL;
    w->kind = job->kind;
    w->name = job->name;
    w->value = job->value;
    switch (job->op) {
    case CTL_SET_CREATE:
        if (cur) {
            snprintf(job->err, sizeof(job->err), "%s '%s' exists already", what, job->name);
            return 409;
        }
        return 0;
    case CTL_SET_PUT:
        return 0;
    case CTL_SET_DELETE:
        if (!cur) {
            snprintf(job->err, sizeof(job->err), "no %s '%s'", what, job->name);
            return 404;
        }
        w->value = NULL;
        return 0;
    case CTL_SET_REVOKE: {
        cJSON *v = cur ? cJSON_Parse(cur->value) : NULL;
        cJSON *at = cJSON_GetObjectItemCaseSensitive(v, "revoked_ms");
        if (!cur) {
            cJSON_Delete(v);
            snprintf(job->err, sizeof(job->err), "no %s '%s'", what, job->name);
            return 404;
        }
        if (!cJSON_IsObject(v)) {
            cJSON_Delete(v);
            snprintf(job->err, sizeof(job->err), "%s '%s' is not a JSON object in the database",
                     what, job->name);
            return 500;
        }
        if (!cJSON_IsNumber(at) || at->valuedouble <= 0) {
            cJSON_DeleteItemFromObjectCaseSensitive(v, "revoked_ms");
            cJSON_AddNumberToObject(v, "revoked_ms", (double)util_wall_ms());
        }
        *owned = cJSON_PrintUnformatted(v);
        cJSON_Delete(v);
        if (!*owned) {
            snprintf(job->err, sizeof(job->err), "out of memory");
            return 503;
        }
        w->value = *owned;
        return 0;
    }
    case CTL_SET_MERGE: {
        cJSON *v = cur ? cJSON_Parse(cur->value) : cJSON_CreateObject();
        cJSON *in = cJSON_Parse(job->value);
        cJSON *it;
        if (!cJSON_IsObject(v) || !cJSON_IsObject(in)) {
            cJSON_Delete(v);
            cJSON_Delete(in);
            snprintf(job->err, sizeof(job->err), "%s '%s' is not a JSON object", what, job->name);
            return 500;
        }
        cJSON_ArrayForEach(it, in)
        {
            cJSON_DeleteItemFromObjectCaseSensitive(v, it->string);
            if (!cJSON_IsNull(it)) {
                cJSON_AddItemToObject(v, it->string, cJSON_Duplicate(it, 1));
            }
        }
        cJSON_Delete(in);
        if (!v->child) {
            cJSON_Delete(v); /* nothing left: the row goes */
            w->value = NULL;
            if (!cur) {
                snprintf(job->err, sizeof(job->err), "no settings of %s '%s'", what, job->name);
                return 404;
            }
            return 0;
        }
        *owned = cJSON_PrintUnformatted(v);
        cJSON_Delete(v);
        if (!*owned) {
            snprintf(job->err, sizeof(job->err), "out of memory");
            return 503;
        }
        w->value = *owned;
        return 0;
    }
    case CTL_USAGE_TAKE:
        break; /* run_usage */
    }
    return 500;
}

/* ---- key usage (settings thread) -------------------------------------------------- */

#define USAGE_MAX_KEYS 1024
#define WINDOW_MS      60000

static int
take_cmp(const void *a, const void *b)
{
    return strcmp(((const struct reg_usage_take *)a)->name,
                  ((const struct reg_usage_take *)b)->name);
}

/* A key's limits from the settings read last (0, 0 for an unknown key:
 * *known false). */
static void
key_limits(const struct reg_settings *rows, const char *name, int64_t *rpm, int64_t *tpm,
           bool *known)
{
    const struct reg_setting *r = find_row(rows, "key", name);
    cJSON *v = r ? cJSON_Parse(r->value) : NULL;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(v, "rpm");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(v, "tpm");
    const cJSON *rev = cJSON_GetObjectItemCaseSensitive(v, "revoked_ms");

    *known = r != NULL && !(cJSON_IsNumber(rev) && rev->valuedouble > 0);
    *rpm = cJSON_IsNumber(a) ? (int64_t)a->valuedouble : 0;
    *tpm = cJSON_IsNumber(b) ? (int64_t)b->valuedouble : 0;
    cJSON_Delete(v);
}

/* POST /api/roster/keys/usage: leases of requests and tokens for the
 * current minute window, within each key's limits (docs/settings.md).
 * Keys the settings do not hold (revoked, or not read yet by the asking
 * apiserver) are answered "known": false and touch no row: t[0..nk) are
 * the known ones, t[nk..n) the others. */
static void
run_usage(struct ctl_settings *s, struct ctl_set_job *job)
{
    cJSON *in = cJSON_Parse(job->value);
    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(in, "keys");
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(in, "window");
    const cJSON *it;
    int64_t now = util_wall_ms();
    int64_t window = now / WINDOW_MS;
    bool same_window = cJSON_IsNumber(w) && (int64_t)w->valuedouble == window;
    size_t n = (size_t)cJSON_GetArraySize(keys);
    size_t nk = 0;
    struct reg_usage_take *t = NULL;
    cJSON *out = NULL, *arr;
    int rc;

    if (!in) { /* json_check on the loop checked bytes and depth only */
        job->status = 400;
        snprintf(job->err, sizeof(job->err), "the body is not valid JSON");
        goto out;
    }
    job->status = 422;
    if (!cJSON_IsArray(keys) || n > USAGE_MAX_KEYS) {
        snprintf(job->err, sizeof(job->err),
                 "the body must be {\"window\":W,\"keys\":[...]} with at most %d keys",
                 USAGE_MAX_KEYS);
        goto out;
    }
    t = calloc(n ? n : 1, sizeof(*t));
    if (!t) {
        job->status = 503;
        snprintf(job->err, sizeof(job->err), "out of memory");
        goto out;
    }
    size_t end = n;
    cJSON_ArrayForEach(it, keys)
    {
        struct reg_usage_take k = {0};
        bool known;
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
        const char *f[4] = {"want_requests", "want_tokens", "return_requests", "return_tokens"};
        int64_t v[4] = {0};
        for (int i = 0; i < 4; i++) {
            const cJSON *x = cJSON_GetObjectItemCaseSensitive(it, f[i]);
            if (x && (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble > 1e12)) {
                snprintf(job->err, sizeof(job->err), "'%s' must be a number from 0 to 10^12", f[i]);
                goto out;
            }
            v[i] = x ? (int64_t)x->valuedouble : 0;
        }
        if (!cJSON_IsString(name) || !*name->valuestring ||
            strlen(name->valuestring) > REG_SETTING_NAME_MAX) {
            snprintf(job->err, sizeof(job->err), "every key needs a 'name'");
            goto out;
        }
        k.name = name->valuestring;
        key_limits(&s->rows, name->valuestring, &k.limit_requests, &k.limit_tokens, &known);
        if (known) {
            k.want_requests = v[0];
            k.want_tokens = v[1];
            k.ret_requests = same_window ? v[2] : 0;
            k.ret_tokens = same_window ? v[3] : 0;
            t[nk++] = k;
        } else {
            t[--end] = k;
        }
    }
    /* every controller locks the rows in the same order */
    qsort(t, nk, sizeof(*t), take_cmp);
    rc = reg_usage_take(s->store, window, t, nk);
    if (rc != REG_OK) {
        job->status = 503;
        snprintf(job->err, sizeof(job->err), "the registry database is unavailable (%s); retry",
                 reg_strerror(rc));
        goto out;
    }
    out = cJSON_CreateObject();
    arr = out ? cJSON_AddArrayToObject(out, "keys") : NULL;
    if (arr) {
        cJSON_AddNumberToObject(out, "window", (double)window);
        cJSON_AddNumberToObject(out, "reset_ms", (double)((window + 1) * WINDOW_MS - now));
        for (size_t i = 0; i < n; i++) {
            cJSON *k = cJSON_CreateObject();
            cJSON_AddStringToObject(k, "name", t[i].name);
            cJSON_AddBoolToObject(k, "known", i < nk);
            cJSON_AddNumberToObject(k, "requests", (double)t[i].granted_requests);
            cJSON_AddNumberToObject(k, "tokens", (double)t[i].granted_tokens);
            cJSON_AddNumberToObject(k, "used_requests", (double)t[i].used_requests);
            cJSON_AddNumberToObject(k, "used_tokens", (double)t[i].used_tokens);
            cJSON_AddNumberToObject(k, "limit_requests", (double)t[i].limit_requests);
            cJSON_AddNumberToObject(k, "limit_tokens", (double)t[i].limit_tokens);
            cJSON_AddItemToArray(arr, k);
        }
        job->answer = cJSON_PrintUnformatted(out);
    }
    job->status = job->answer ? 200 : 503;
    if (!job->answer) {
        snprintf(job->err, sizeof(job->err), "out of memory");
    }
out:
    cJSON_Delete(out);
    cJSON_Delete(in);
    free(t);
}

static void
run_job(struct ctl_settings *s, struct ctl_set_job *job)
{
    int rc = REG_OK;

    if (job->op == CTL_USAGE_TAKE) {
        run_usage(s, job);
        return;
    }
    job->status = 503;
    for (int tries = 0; tries < WRITE_TRIES; tries++) {
        struct reg_setting w;
        char *owned = NULL;
        bool applied = false;
        int status;

        /* decide against what the database holds now, not the last poll */
        rc = refresh(s);
        if (rc != REG_OK || !s->doc) {
            break;
        }
        status = decide(job, &s->rows, &w, &owned);
        if (status != 0) {
            job->status = status;
            return;
        }
        rc = reg_settings_write(s->store, s->rows.version, &w, 1, &applied);
        free(owned);
        if (rc != REG_OK) {
            break;
        }
        if (applied) {
            atomic_fetch_add(&s->srv->metrics.settings_writes, 1);
            (void)refresh(s); /* publish before answering: read-your-writes */
            job->version = s->rows.version;
            job->status = job->op == CTL_SET_CREATE ? 201 : 200;
            log_info("settings: %s %s '%s' (version %lld)",
                     job->op == CTL_SET_CREATE                            ? "created"
                     : job->op == CTL_SET_PUT || job->op == CTL_SET_MERGE ? "set"
                     : job->op == CTL_SET_REVOKE                          ? "revoked"
                                                                          : "deleted",
                     job->kind, job->name, (long long)job->version);
            return;
        }
        /* another controller wrote first: decide again on fresh rows */
    }
    if (rc == REG_EINVAL) {
        job->status = 422;
        snprintf(job->err, sizeof(job->err), "setting out of bounds (value at most %d bytes)",
                 REG_SETTING_VALUE_MAX);
    } else if (rc != REG_OK) {
        snprintf(job->err, sizeof(job->err), "the registry database is unavailable (%s); retry",
                 reg_strerror(rc));
    } else {
        snprintf(job->err, sizeof(job->err),
                 "the settings kept changing under this write (%d tries); retry", WRITE_TRIES);
    }
}

bool
ctl_settings_submit(struct ctl_settings *s, struct ctl_set_job *job)
{
    bool ok;

    job->next = NULL;
    pthread_mutex_lock(&s->mu);
    ok = !s->stop && s->queued < CTL_SETTINGS_MAX_QUEUE;
    if (ok) {
        if (s->tail) {
            s->tail->next = job;
        } else {
            s->head = job;
        }
        s->tail = job;
        s->queued++;
        pthread_cond_signal(&s->cond);
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static void *
settings_main(void *arg)
{
    struct ctl_settings *s = arg;
    int64_t poll_ms = s->srv->cfg->view_poll_ms;
    int64_t next_poll = 0;
    int64_t gc_window = -1;

    pthread_mutex_lock(&s->mu);
    while (!s->stop || s->head) {
        struct ctl_set_job *job = s->head;
        struct timespec ts;

        if (job) {
            s->head = job->next;
            if (!s->head) {
                s->tail = NULL;
            }
            s->queued--;
            pthread_mutex_unlock(&s->mu);
            run_job(s, job);
            http_loop_post(job->loop, &job->task);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (util_mono_ms() >= next_poll) {
            int64_t window = util_wall_ms() / WINDOW_MS;
            pthread_mutex_unlock(&s->mu);
            (void)refresh(s);
            if (window != gc_window && reg_usage_gc(s->store, window - 1) == REG_OK) {
                gc_window = window; /* windows before the last one are gone */
            }
            next_poll = util_mono_ms() + poll_ms;
            pthread_mutex_lock(&s->mu);
            continue;
        }
        util_deadline_us((next_poll - util_mono_ms()) * 1000, &ts);
        pthread_cond_timedwait(&s->cond, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    reg_thread_end();
    return NULL;
}

/* ---- life cycle -------------------------------------------------------------- */

int
ctl_settings_new(struct ctl_server *srv, struct ctl_settings **out)
{
    struct ctl_settings *s = calloc(1, sizeof(*s));

    *out = NULL;
    if (!s) {
        return -1;
    }
    s->srv = srv;
    atomic_init(&s->version, -1);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    if (reg_open(&srv->regcfg, &s->store) != REG_OK) {
        ctl_settings_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

void
ctl_settings_prime(struct ctl_settings *s)
{
    (void)refresh(s);
}

int
ctl_settings_start(struct ctl_settings *s)
{
    if (pthread_create(&s->thread, NULL, settings_main, s) != 0) {
        return -1;
    }
    s->started = true;
    return 0;
}

void
ctl_settings_stop(struct ctl_settings *s)
{
    if (!s || !s->started) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->stop = true; /* queued jobs still run and post their completions */
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    s->started = false;
}

void
ctl_settings_free(struct ctl_settings *s)
{
    if (!s) {
        return;
    }
    ctl_settings_stop(s);
    reg_close(s->store);
    reg_settings_free(&s->rows);
    ctl_settings_doc_release(s->doc);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
    free(s);
}
