/* SPDX-License-Identifier: MIT
 *
 * api_settings.c - the cluster settings as the apiserver uses them: API
 * keys (checked on every request) and model aliases, from the controllers'
 * settings document (docs/settings.md).
 *
 * Delivery: every view=full answer of the watch names the controllers'
 * settings version (X-Roster-Settings), and the watcher's long poll names
 * the version it holds (settings=V), so the controller answers the watch
 * as soon as the version moves. The watcher then fetches GET
 * /api/roster/settings from the same controller (api_settings_fetch) and
 * publishes an immutable api_settings (api_settings_publish); requests
 * take a reference for the few instructions of a check
 * (api_settings_acquire: a mutex held for a pointer copy). A request
 * admitted under one version completes under it: a key revoked while its
 * request runs ends nothing.
 *
 * Keys: a presented bearer token is hashed (SHA-256) and looked up by
 * binary search over the keys sorted by hash; the stored hash is then
 * compared in constant time. The apiserver never holds a data key in
 * clear. Keys from --api_keys keep working beside them; when neither
 * exists, the API is open (as before keys existed).
 */
#include "api.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#define LOG_MODULE "apiserver"
#include "buf.h"
#include "json_check.h"
#include "log.h"
#include "sha256.h"
#include "util.h"

#define MAX_SETTINGS_BYTES (64u * 1024 * 1024)
#define MAX_JSON_DEPTH     16

/* ---- the snapshot --------------------------------------------------------------- */

static void
strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i]);
    }
    free(v);
}

static void
settings_free(struct api_settings *s)
{
    for (size_t i = 0; i < s->nkeys; i++) {
        strv_free(s->keys[i].models, s->keys[i].nmodels);
    }
    for (size_t i = 0; i < s->naliases; i++) {
        strv_free(s->aliases[i].models, s->aliases[i].nmodels);
    }
    free(s->keys);
    free(s->aliases);
    free(s->models);
    free(s);
}

void
api_settings_unref(struct api_settings *s)
{
    if (s && atomic_fetch_sub(&s->refs, 1) == 1) {
        settings_free(s);
    }
}

struct api_settings *
api_settings_acquire(struct api_server *srv)
{
    struct api_settings *s;

    pthread_mutex_lock(&srv->settings_mu);
    s = srv->settings;
    if (s) {
        atomic_fetch_add(&s->refs, 1);
    }
    pthread_mutex_unlock(&srv->settings_mu);
    return s;
}

int64_t
api_settings_version(struct api_server *srv)
{
    struct api_settings *s = api_settings_acquire(srv);
    int64_t v = s ? s->version : -1;

    api_settings_unref(s);
    return v;
}

void
api_settings_publish(struct api_server *srv, struct api_settings *s)
{
    struct api_settings *old;

    pthread_mutex_lock(&srv->settings_mu);
    old = srv->settings;
    srv->settings = s;
    pthread_mutex_unlock(&srv->settings_mu);
    api_settings_unref(old);
}

/* ---- parsing -------------------------------------------------------------------- */

/* A JSON array of strings as an owned vector; -1 on a non-string or OOM. */
static int
strv_of(const cJSON *a, char ***out, size_t *n_out)
{
    size_t n = (size_t)cJSON_GetArraySize(a);
    char **v = n ? calloc(n, sizeof(*v)) : NULL;
    const cJSON *it;
    size_t i = 0;

    *out = NULL;
    *n_out = 0;
    if (!cJSON_IsArray(a)) {
        return a ? -1 : 0;
    }
    if (n && !v) {
        return -1;
    }
    cJSON_ArrayForEach(it, a)
    {
        if (!cJSON_IsString(it) || !(v[i] = strdup(it->valuestring))) {
            strv_free(v, i);
            return -1;
        }
        i++;
    }
    *out = v;
    *n_out = n;
    return 0;
}

static int64_t
num_of(const cJSON *o, const char *field)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);

    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

static int
key_cmp(const void *a, const void *b)
{
    return strcmp(((const struct api_key *)a)->hash, ((const struct api_key *)b)->hash);
}

static int
mcfg_cmp(const void *a, const void *b)
{
    return strcmp(((const struct api_model_cfg *)a)->name, ((const struct api_model_cfg *)b)->name);
}

/* A model's settings; members that are absent or malformed stay unset. */
static void
parse_model(const cJSON *o, struct api_model_cfg *m)
{
    static const struct {
        const char *field;
        size_t off;
    } ints[] = {
        {"max_attempts", offsetof(struct api_model_cfg, max_attempts)},
        {"first_byte_timeout_ms", offsetof(struct api_model_cfg, first_byte_timeout_ms)},
        {"idle_timeout_ms", offsetof(struct api_model_cfg, idle_timeout_ms)},
        {"request_timeout_ms", offsetof(struct api_model_cfg, request_timeout_ms)},
        {"queue_timeout_ms", offsetof(struct api_model_cfg, queue_timeout_ms)},
        {"queue_max", offsetof(struct api_model_cfg, queue_max)},
        {"probe_interval_ms", offsetof(struct api_model_cfg, probe_interval_ms)},
        {"probe_timeout_ms", offsetof(struct api_model_cfg, probe_timeout_ms)},
    };
    const cJSON *routing = cJSON_GetObjectItemCaseSensitive(o, "routing");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(o, "session_header");
    enum route_policy p;

    m->policy =
        cJSON_IsString(routing) && route_policy_parse(routing->valuestring, &p) == 0 ? (int)p : -1;
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, ints[i].field);
        *(int64_t *)((char *)m + ints[i].off) =
            cJSON_IsNumber(v) && v->valuedouble >= 0 ? (int64_t)v->valuedouble : -1;
    }
    util_strlcpy(m->session_header, cJSON_IsString(sh) ? sh->valuestring : "",
                 sizeof(m->session_header));
}

static int
alias_cmp(const void *a, const void *b)
{
    return strcmp(((const struct api_alias *)a)->name, ((const struct api_alias *)b)->name);
}

/* A key of the document, or -1 when malformed (left out, with a warning). */
static int
parse_key(const cJSON *o, struct api_key *k)
{
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    const cJSON *hash = cJSON_GetObjectItemCaseSensitive(o, "hash");
    const cJSON *prefix = cJSON_GetObjectItemCaseSensitive(o, "prefix");

    memset(k, 0, sizeof(*k));
    if (!cJSON_IsString(name) || !cJSON_IsString(hash) ||
        strlen(hash->valuestring) != SHA256_HEX - 1 ||
        strspn(hash->valuestring, "0123456789abcdef") != SHA256_HEX - 1) {
        return -1;
    }
    util_strlcpy(k->name, name->valuestring, sizeof(k->name));
    memcpy(k->hash, hash->valuestring, SHA256_HEX);
    util_strlcpy(k->prefix, cJSON_IsString(prefix) ? prefix->valuestring : "", sizeof(k->prefix));
    k->expires_ms = num_of(o, "expires_ms");
    k->revoked_ms = num_of(o, "revoked_ms");
    k->rpm = num_of(o, "rpm");
    k->tpm = num_of(o, "tpm");
    k->priority = (int)num_of(o, "priority");
    return strv_of(cJSON_GetObjectItemCaseSensitive(o, "models"), &k->models, &k->nmodels);
}

struct api_settings *
api_settings_parse(const char *json, size_t len, char *err, size_t errcap)
{
    struct api_settings *s = calloc(1, sizeof(*s));
    cJSON *root = NULL;
    const cJSON *keys, *aliases, *it;
    size_t nk, na;

    if (!s) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    atomic_init(&s->refs, 1);
    if (json_parse(json, len, MAX_JSON_DEPTH, &root, err, errcap) != 0) {
        goto fail;
    }
    keys = cJSON_GetObjectItemCaseSensitive(root, "keys");
    aliases = cJSON_GetObjectItemCaseSensitive(root, "aliases");
    if (!cJSON_IsObject(root) ||
        !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(root, "version")) ||
        !cJSON_IsArray(keys) || !cJSON_IsArray(aliases)) {
        snprintf(err, errcap, "not a settings document (version, keys, aliases)");
        goto fail;
    }
    s->version = num_of(root, "version");
    {
        const cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "models");
        size_t nm = (size_t)cJSON_GetArraySize(models);
        s->models = nm ? calloc(nm, sizeof(*s->models)) : NULL;
        if (nm && !s->models) {
            snprintf(err, errcap, "out of memory");
            goto fail;
        }
        cJSON_ArrayForEach(it, models)
        {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
            if (cJSON_IsString(name) && strlen(name->valuestring) <= API_NAME_MAX) {
                util_strlcpy(s->models[s->nmodels].name, name->valuestring,
                             sizeof(s->models[0].name));
                parse_model(it, &s->models[s->nmodels++]);
            }
        }
        if (s->nmodels > 1) {
            qsort(s->models, s->nmodels, sizeof(*s->models), mcfg_cmp);
        }
    }
    nk = (size_t)cJSON_GetArraySize(keys);
    na = (size_t)cJSON_GetArraySize(aliases);
    s->keys = nk ? calloc(nk, sizeof(*s->keys)) : NULL;
    s->aliases = na ? calloc(na, sizeof(*s->aliases)) : NULL;
    if ((nk && !s->keys) || (na && !s->aliases)) {
        snprintf(err, errcap, "out of memory");
        goto fail;
    }
    cJSON_ArrayForEach(it, keys)
    {
        if (parse_key(it, &s->keys[s->nkeys]) == 0) {
            s->nkeys++;
        } else {
            log_warn("settings version %lld: a malformed key; left out", (long long)s->version);
        }
    }
    cJSON_ArrayForEach(it, aliases)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
        struct api_alias *a = &s->aliases[s->naliases];
        if (cJSON_IsString(name) &&
            strv_of(cJSON_GetObjectItemCaseSensitive(it, "models"), &a->models, &a->nmodels) == 0 &&
            a->nmodels > 0) {
            util_strlcpy(a->name, name->valuestring, sizeof(a->name));
            s->naliases++;
        } else {
            strv_free(a->models, a->nmodels);
            memset(a, 0, sizeof(*a));
            log_warn("settings version %lld: a malformed alias; left out", (long long)s->version);
        }
    }
    if (s->nkeys > 1) {
        qsort(s->keys, s->nkeys, sizeof(*s->keys), key_cmp);
    }
    if (s->naliases > 1) {
        qsort(s->aliases, s->naliases, sizeof(*s->aliases), alias_cmp);
    }
    cJSON_Delete(root);
    return s;
fail:
    cJSON_Delete(root);
    settings_free(s);
    return NULL;
}

/* ---- fetching (watcher thread) --------------------------------------------------- */

static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
    return buf_append(arg, p, size * n) == 0 ? size * n : 0;
}

int
api_settings_fetch(struct api_server *srv, size_t ctl, char *err, size_t errcap)
{
    const struct api_config *cfg = srv->cfg;
    CURL *h = curl_easy_init();
    struct curl_slist *hl = NULL;
    char url[700], secret[600];
    struct buf body;
    long status = 0;
    CURLcode cc;
    struct api_settings *s = NULL;

    buf_init(&body, MAX_SETTINGS_BYTES);
    if (!h) {
        snprintf(err, errcap, "cannot create a curl handle");
        buf_cleanup(&body);
        return -1;
    }
    snprintf(url, sizeof(url), "%s/api/roster/settings", srv->ctl[ctl]);
    if (api_secret_header(srv, secret, sizeof(secret))) {
        hl = curl_slist_append(hl, secret);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->control_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)cfg->control_timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    curl_slist_free_all(hl);
    explicit_bzero(secret, sizeof(secret));
    if (cc != CURLE_OK) {
        snprintf(err, errcap, "GET /api/roster/settings: %s", curl_easy_strerror(cc));
    } else if (status != 200) {
        snprintf(err, errcap, "GET /api/roster/settings: status %ld%s", status,
                 status == 401 || status == 403
                     ? " (the controller wants the cluster secret: set --cluster_secret)"
                     : "");
    } else if ((s = api_settings_parse(body.data, body.len, err, errcap))) {
        log_info("settings version %lld: %zu keys, %zu aliases", (long long)s->version, s->nkeys,
                 s->naliases);
        api_settings_publish(srv, s);
    }
    buf_cleanup(&body);
    return s ? 0 : -1;
}

/* ---- keys ------------------------------------------------------------------------ */

const struct api_key *
api_settings_key(const struct api_settings *s, const char *bearer)
{
    struct api_key probe;
    const struct api_key *k;

    if (!s || s->nkeys == 0) {
        return NULL;
    }
    sha256_hex(bearer, strlen(bearer), probe.hash);
    k = bsearch(&probe, s->keys, s->nkeys, sizeof(*s->keys), key_cmp);
    /* found by comparisons that may exit early, on a hash: the
     * constant-time check confirms it without timing the key */
    return k && util_ct_equal(probe.hash, SHA256_HEX - 1, k->hash, SHA256_HEX - 1) ? k : NULL;
}

bool
api_key_allows(const struct api_key *k, const char *model)
{
    if (!k || k->nmodels == 0) {
        return true;
    }
    for (size_t i = 0; i < k->nmodels; i++) {
        if (strcmp(k->models[i], model) == 0) {
            return true;
        }
    }
    return false;
}

const struct api_alias *
api_settings_alias(const struct api_settings *s, const char *name)
{
    struct api_alias probe;

    if (!s || s->naliases == 0 || strlen(name) >= sizeof(probe.name)) {
        return NULL;
    }
    util_strlcpy(probe.name, name, sizeof(probe.name));
    return bsearch(&probe, s->aliases, s->naliases, sizeof(*s->aliases), alias_cmp);
}

struct api_model_opts
api_model_opts(const struct api_server *csrv, const char *name)
{
    struct api_server *srv = (struct api_server *)csrv; /* its settings lock only */
    struct api_settings *s = api_settings_acquire(srv);
    struct api_model_opts o = api_model_opts_in(srv, s, name);

    api_settings_unref(s);
    return o;
}

struct api_model_opts
api_model_opts_in(const struct api_server *srv, const struct api_settings *s, const char *name)
{
    const struct api_config *c = srv->cfg;
    struct api_model_opts o = {
        .policy = srv->policy,
        .max_attempts = c->max_attempts,
        .first_byte_timeout_ms = c->first_byte_timeout_ms,
        .idle_timeout_ms = c->idle_timeout_ms,
        .request_timeout_ms = c->request_timeout_ms,
        .queue_timeout_ms = c->queue_timeout_ms,
        .queue_max = c->queue_max,
        .probe_interval_ms = c->probe_interval_ms,
        .probe_timeout_ms = c->probe_timeout_ms,
        .session_header = "X-Session-Id",
    };
    struct api_model_cfg probe;
    const struct api_model_cfg *m = NULL;
    const char *at = strchr(name, '@');
    size_t n = at ? (size_t)(at - name) : strlen(name);

    if (s && s->nmodels > 0 && n < sizeof(probe.name)) {
        memcpy(probe.name, name, n);
        probe.name[n] = '\0';
        m = bsearch(&probe, s->models, s->nmodels, sizeof(*s->models), mcfg_cmp);
    }
    if (m) {
        o.policy = m->policy >= 0 ? (enum route_policy)m->policy : o.policy;
#define OVER(f) o.f = m->f >= 0 ? m->f : o.f
        OVER(max_attempts);
        OVER(first_byte_timeout_ms);
        OVER(idle_timeout_ms);
        OVER(request_timeout_ms);
        OVER(queue_timeout_ms);
        OVER(queue_max);
        OVER(probe_interval_ms);
        OVER(probe_timeout_ms);
#undef OVER
        if (m->session_header[0]) {
            util_strlcpy(o.session_header, m->session_header, sizeof(o.session_header));
        }
    }
    if (o.max_attempts > API_MAX_ATTEMPTS) {
        o.max_attempts = API_MAX_ATTEMPTS;
    }
    return o;
}
