/* SPDX-License-Identifier: MIT
 *
 * ctl_settings_api.c - the controller's endpoints for cluster settings
 * (docs/settings.md, docs/api.md). All of them need the cluster secret or
 * a trusted peer, reads included (the document holds key hashes).
 *
 *   GET    /api/roster/settings            every setting (what apiservers load)
 *   POST   /api/roster/keys                create: {name, models?, expires_at?,
 *                                          rpm?, tpm?, priority?} -> 201 with the
 *                                          key, shown this once
 *   GET    /api/roster/keys                list (prefixes, never hashes)
 *   DELETE /api/roster/keys?name=N         revoke (&purge=true: delete the row)
 *   POST   /api/roster/keys/usage          apiservers' leases of the keys' limits
 *   PUT    /api/roster/aliases             {name, models: [...]} (set)
 *   GET    /api/roster/aliases             list
 *   DELETE /api/roster/aliases?name=N      remove
 *   PUT    /api/roster/models              {name: MODEL, setting: value|null, ...}:
 *                                          per-model routing settings (merged)
 *   GET    /api/roster/models              list
 *   DELETE /api/roster/models?name=MODEL   remove them all
 *
 * A key is "sk-roster-" and 40 characters of [0-9A-Za-z] from getrandom(2)
 * (238 bits). Only its SHA-256 is stored, with its first 16 characters
 * (the prefix) to tell keys apart; the key is in the 201 answer and
 * nowhere else - not in a log line (the access log names the path, never a
 * body), not in the database.
 */
#include "ctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <cjson/cJSON.h>

#define LOG_MODULE "controller"
#include "json_check.h"
#include "log.h"
#include "query.h"
#include "sha256.h"
#include "util.h"

#define KEY_PREFIX     "sk-roster-"
#define KEY_RANDOM     40
#define KEY_LEN        (sizeof(KEY_PREFIX) - 1 + KEY_RANDOM)
#define KEY_SHOWN      16 /* characters of the key kept to tell keys apart */
#define SETTING_NAME   64 /* key and alias names */
#define ALIAS_MODELS   8  /* models an alias may list */
#define KEY_MODELS     64 /* models a key may be limited to */
#define LIMIT_MAX      1000000000
#define PRIORITY_MAX   9
#define MAX_JSON_DEPTH 8

static struct ctl_server *
server_of(void *arg)
{
    return arg;
}

static void
reply_doc(struct http_request *req, struct ctl_server *srv, int which)
{
    struct ctl_settings_doc *d = ctl_settings_acquire(srv->settings);
    char hdr[64];

    if (!d) {
        http_reply_error(req, 503, "server_error", "not_ready",
                         "the controller has not read the settings yet (database unreachable); "
                         "retry");
        return;
    }
    snprintf(hdr, sizeof(hdr), "X-Roster-Settings: %lld\r\nCache-Control: no-cache\r\n",
             (long long)d->version);
    if (which == 0) {
        http_reply(req, 200, "application/json", d->json, d->len, hdr);
    } else if (which == 1) {
        http_reply(req, 200, "application/json", d->keys_json, d->keys_len, hdr);
    } else if (which == 2) {
        http_reply(req, 200, "application/json", d->aliases_json, d->aliases_len, hdr);
    } else {
        http_reply(req, 200, "application/json", d->models_json, d->models_len, hdr);
    }
    ctl_settings_doc_release(d);
}

static void
h_settings(struct http_request *req, void *arg)
{
    reply_doc(req, server_of(arg), 0);
}

static void
h_keys_list(struct http_request *req, void *arg)
{
    reply_doc(req, server_of(arg), 1);
}

static void
h_aliases_list(struct http_request *req, void *arg)
{
    reply_doc(req, server_of(arg), 2);
}

/* ---- jobs ---------------------------------------------------------------------- */

static void
job_free(struct ctl_set_job *job)
{
    explicit_bzero(job->secret, sizeof(job->secret));
    free(job->value);
    free(job->answer);
    free(job);
}

/* The answer to a settings write (loop thread). */
static void
job_done(struct http_task *t)
{
    struct ctl_set_job *job = (struct ctl_set_job *)t;
    struct http_request *req = job->req;
    cJSON *v;
    char *body;

    if (job->status >= 300) {
        const char *code = job->status == 400   ? "invalid_json"
                           : job->status == 404 ? "not_found"
                           : job->status == 409 ? "already_exists"
                           : job->status == 422 ? "invalid_setting"
                                                : "registry_unavailable";
        http_reply_error(req, job->status,
                         job->status >= 500 ? "server_error" : "invalid_request_error", code, "%s",
                         job->err);
        job_free(job);
        return;
    }
    if (job->answer) {
        http_reply(req, job->status, "application/json", job->answer, strlen(job->answer), NULL);
        job_free(job);
        return;
    }
    /* the setting as stored (a revoke's or delete's: just the name), with
     * the new version, and a created key once */
    v = job->value && job->op != CTL_SET_REVOKE ? cJSON_Parse(job->value) : cJSON_CreateObject();
    if (v) {
        cJSON_DeleteItemFromObjectCaseSensitive(v, "hash");
        cJSON_AddStringToObject(v, "name", job->name);
        if (job->secret[0]) {
            cJSON_AddStringToObject(v, "key", job->secret);
        }
        if (job->op == CTL_SET_REVOKE || job->op == CTL_SET_DELETE) {
            cJSON_AddBoolToObject(v, job->op == CTL_SET_REVOKE ? "revoked" : "deleted", 1);
        }
        cJSON_AddNumberToObject(v, "version", (double)job->version);
    }
    body = v ? cJSON_PrintUnformatted(v) : NULL;
    cJSON_Delete(v);
    if (body) {
        http_reply(req, job->status, "application/json", body, strlen(body), NULL);
        explicit_bzero(body, strlen(body));
        free(body);
    } else {
        http_reply_error(req, 500, "server_error", "out_of_memory",
                         "the setting was written (version %lld), but its answer ran out of "
                         "memory",
                         (long long)job->version);
    }
    job_free(job);
}

static struct ctl_set_job *
job_new(struct http_request *req, enum ctl_set_op op, const char *kind, const char *name)
{
    struct ctl_set_job *job = calloc(1, sizeof(*job));

    if (!job) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        return NULL;
    }
    job->op = op;
    util_strlcpy(job->kind, kind, sizeof(job->kind));
    util_strlcpy(job->name, name, sizeof(job->name));
    return job;
}

static void
submit(struct http_request *req, struct ctl_server *srv, struct ctl_set_job *job)
{
    job->req = req;
    job->loop = http_req_loop(req);
    job->srv = srv;
    job->task.fn = job_done;
    if (!ctl_settings_submit(srv->settings, job)) {
        http_reply_error(req, 503, "server_error", "overloaded",
                         "too many settings writes waiting; retry");
        job_free(job);
    }
}

/* ---- validation ------------------------------------------------------------------- */

/* Key and alias names: 1..SETTING_NAME of [A-Za-z0-9._-] (they appear in
 * paths, metrics labels and logs). */
static bool
valid_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > SETTING_NAME) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}

/* A model name as clients send it: 1..128 bytes, no control characters. */
static bool
valid_model(const cJSON *m)
{
    size_t n;

    if (!cJSON_IsString(m)) {
        return false;
    }
    n = strlen(m->valuestring);
    if (n == 0 || n > REG_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)m->valuestring[i] < 0x20 || m->valuestring[i] == 0x7f) {
            return false;
        }
    }
    return true;
}

/* Checks an optional array of model names (at most `max`, or at least one
 * when `required`); 0 or -1 with err. */
static int
check_models(const cJSON *a, size_t max, bool required, char *err, size_t cap)
{
    size_t n = 0;
    const cJSON *m;

    if (!a && !required) {
        return 0;
    }
    if (!cJSON_IsArray(a)) {
        snprintf(err, cap, "'models' must be an array of model names");
        return -1;
    }
    cJSON_ArrayForEach(m, a)
    {
        if (!valid_model(m)) {
            snprintf(err, cap, "'models' must hold model names (1..%d characters)", REG_NAME_MAX);
            return -1;
        }
        n++;
    }
    if (n > max || (required && n == 0)) {
        snprintf(err, cap, "'models' must list %s%zu model names", required ? "1 to " : "at most ",
                 max);
        return -1;
    }
    return 0;
}

/* An optional integer field in [lo, hi]; *out keeps its default if absent
 * or null. 0 or -1 with err. */
static int
opt_int(const cJSON *o, const char *field, int64_t lo, int64_t hi, int64_t *out, char *err,
        size_t cap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);

    if (!v || cJSON_IsNull(v)) {
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int64_t)v->valuedouble ||
        v->valuedouble < (double)lo || v->valuedouble > (double)hi) {
        snprintf(err, cap, "'%s' must be an integer from %lld to %lld", field, (long long)lo,
                 (long long)hi);
        return -1;
    }
    *out = (int64_t)v->valuedouble;
    return 0;
}

/* Parses a body into an object and takes its "name"; replies and returns
 * NULL on error. */
static cJSON *
parse_body(struct http_request *req, const char **name_out)
{
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    const cJSON *name;
    cJSON *o = NULL;
    char err[160];

    if (json_parse(body, len, MAX_JSON_DEPTH, &o, err, sizeof(err)) != 0) {
        http_reply_error(req, 400, "invalid_request_error", "invalid_json", "%s", err);
        return NULL;
    }
    name = cJSON_GetObjectItemCaseSensitive(o, "name");
    if (!cJSON_IsObject(o) || !cJSON_IsString(name) || !valid_name(name->valuestring)) {
        http_reply_error(req, 422, "invalid_request_error", "invalid_setting",
                         "the body must be an object with a 'name' of 1 to %d characters from "
                         "[A-Za-z0-9._-]",
                         SETTING_NAME);
        cJSON_Delete(o);
        return NULL;
    }
    *name_out = name->valuestring;
    return o;
}

/* ---- keys ------------------------------------------------------------------------ */

/* A new key: KEY_PREFIX and KEY_RANDOM characters drawn without bias
 * from the kernel's generator. -1 (errno) if it cannot be read: on a loop
 * thread it never waits (GRND_NONBLOCK: EAGAIN only before the kernel's
 * pool is initialised, early at boot). */
static int
make_key(char out[KEY_LEN + 1])
{
    static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    unsigned char r[128];
    size_t n = sizeof(KEY_PREFIX) - 1;

    memcpy(out, KEY_PREFIX, n);
    while (n < KEY_LEN) {
        if (getrandom(r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
            explicit_bzero(out, KEY_LEN + 1);
            return -1;
        }
        for (size_t i = 0; i < sizeof(r) && n < KEY_LEN; i++) {
            if (r[i] < 248) { /* 248 = 4 * 62: no bias */
                out[n++] = alphabet[r[i] % 62];
            }
        }
    }
    out[KEY_LEN] = '\0';
    explicit_bzero(r, sizeof(r));
    return 0;
}

static void
h_key_create(struct http_request *req, void *arg)
{
    struct ctl_server *srv = server_of(arg);
    const char *name = NULL;
    cJSON *in = parse_body(req, &name);
    cJSON *out = NULL;
    cJSON *models;
    struct ctl_set_job *job = NULL;
    int64_t expires_s = 0, rpm = 0, tpm = 0, priority = 0;
    int64_t now = util_wall_ms();
    char hash[SHA256_HEX];
    char prefix[KEY_SHOWN + 1];
    char err[200];

    if (!in) {
        return;
    }
    models = cJSON_GetObjectItemCaseSensitive(in, "models");
    if (check_models(models, KEY_MODELS, false, err, sizeof(err)) != 0 ||
        opt_int(in, "expires_at", 0, INT64_C(253402300799), &expires_s, err, sizeof(err)) != 0 ||
        opt_int(in, "rpm", 0, LIMIT_MAX, &rpm, err, sizeof(err)) != 0 ||
        opt_int(in, "tpm", 0, LIMIT_MAX, &tpm, err, sizeof(err)) != 0 ||
        opt_int(in, "priority", 0, PRIORITY_MAX, &priority, err, sizeof(err)) != 0) {
        http_reply_error(req, 422, "invalid_request_error", "invalid_setting", "%s", err);
        goto out;
    }
    if (expires_s > 0 && expires_s * 1000 <= now) {
        http_reply_error(req, 422, "invalid_request_error", "invalid_setting",
                         "'expires_at' (epoch seconds) is in the past");
        goto out;
    }
    job = job_new(req, CTL_SET_CREATE, "key", name);
    if (!job) {
        goto out;
    }
    if (make_key(job->secret) != 0) {
        http_reply_error(req, 503, "server_error", "no_randomness",
                         "the kernel's random generator could not be read: %s", strerror(errno));
        goto out;
    }
    sha256_hex(job->secret, strlen(job->secret), hash);
    util_strlcpy(prefix, job->secret, sizeof(prefix));
    out = cJSON_CreateObject();
    if (out) {
        cJSON_AddStringToObject(out, "hash", hash);
        cJSON_AddStringToObject(out, "prefix", prefix);
        cJSON_AddItemToObject(out, "models",
                              models ? cJSON_Duplicate(models, 1) : cJSON_CreateArray());
        cJSON_AddNumberToObject(out, "expires_ms", (double)(expires_s * 1000));
        cJSON_AddNumberToObject(out, "rpm", (double)rpm);
        cJSON_AddNumberToObject(out, "tpm", (double)tpm);
        cJSON_AddNumberToObject(out, "priority", (double)priority);
        cJSON_AddNumberToObject(out, "created_ms", (double)now);
        cJSON_AddNumberToObject(out, "revoked_ms", 0);
        job->value = cJSON_PrintUnformatted(out);
    }
    if (!job->value) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        goto out;
    }
    submit(req, srv, job);
    job = NULL;
out:
    if (job) {
        job_free(job);
    }
    cJSON_Delete(out);
    cJSON_Delete(in);
}

/* DELETE ...?name=N[&purge=true] */
static void
delete_named(struct http_request *req, void *arg, const char *kind, bool revoke_by_default)
{
    const char *q = http_req_query(req);
    struct query query;
    const char *name;
    const char *purge_s;
    bool purge = !revoke_by_default;
    struct ctl_set_job *job;
    char err[160];

    if (query_parse(q, strlen(q), &query, err, sizeof(err)) != 0) {
        http_reply_error(req, 422, "invalid_request_error", "invalid_query", "%s", err);
        return;
    }
    name = query_get(&query, "name");
    purge_s = query_get(&query, "purge");
    if (!name || !valid_name(name) ||
        (purge_s && *purge_s && util_parse_bool(purge_s, &purge) != 0)) {
        http_reply_error(req, 422, "invalid_request_error", "invalid_query",
                         "query parameter 'name' (1 to %d characters from [A-Za-z0-9._-]) is "
                         "required; purge must be true/false",
                         SETTING_NAME);
        query_cleanup(&query);
        return;
    }
    job = job_new(req, purge ? CTL_SET_DELETE : CTL_SET_REVOKE, kind, name);
    query_cleanup(&query);
    if (job) {
        submit(req, server_of(arg), job);
    }
}

static void
h_key_revoke(struct http_request *req, void *arg)
{
    delete_named(req, arg, "key", true);
}

/* ---- aliases ---------------------------------------------------------------------- */

static void
h_alias_set(struct http_request *req, void *arg)
{
    const char *name = NULL;
    cJSON *in = parse_body(req, &name);
    cJSON *out = NULL;
    const cJSON *models;
    struct ctl_set_job *job;
    char err[200];

    if (!in) {
        return;
    }
    models = cJSON_GetObjectItemCaseSensitive(in, "models");
    if (check_models(models, ALIAS_MODELS, true, err, sizeof(err)) != 0) {
        http_reply_error(req, 422, "invalid_request_error", "invalid_setting", "%s", err);
        cJSON_Delete(in);
        return;
    }
    job = job_new(req, CTL_SET_PUT, "alias", name);
    out = cJSON_CreateObject();
    if (job && out) {
        cJSON_AddItemToObject(out, "models", cJSON_Duplicate(models, 1));
        job->value = cJSON_PrintUnformatted(out);
        if (job->value) {
            submit(req, server_of(arg), job);
            job = NULL;
        } else {
            http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        }
    } else if (job) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
    }
    if (job) {
        job_free(job);
    }
    cJSON_Delete(out);
    cJSON_Delete(in);
}

static void
h_alias_delete(struct http_request *req, void *arg)
{
    delete_named(req, arg, "alias", false);
}

/* ---- key usage --------------------------------------------------------------------- */

/* POST /api/roster/keys/usage {"window":W,"keys":[{name, want_requests,
 * want_tokens, return_requests, return_tokens}]}: apiservers' leases of
 * their keys' per-minute limits (checked and granted by the settings
 * thread: ctl_settings.c). */
static void
h_key_usage(struct http_request *req, void *arg)
{
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    struct ctl_set_job *job;
    char err[160];

    if (json_check(body, len, MAX_JSON_DEPTH, err, sizeof(err)) != 0) {
        http_reply_error(req, 400, "invalid_request_error", "invalid_json", "%s", err);
        return;
    }
    job = job_new(req, CTL_USAGE_TAKE, "usage", "-");
    if (!job) {
        return;
    }
    job->value = malloc(len + 1);
    if (!job->value) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        job_free(job);
        return;
    }
    memcpy(job->value, body, len);
    job->value[len] = '\0';
    submit(req, server_of(arg), job);
}

/* ---- per-model settings ---------------------------------------------------------- */

/* The settings a model may have, with their bounds (the apiserver's flags
 * of the same names: docs/configuration.md). */
static const struct {
    const char *field;
    int64_t lo, hi;
} model_ints[] = {
    {"max_attempts", 1, 8},
    {"first_byte_timeout_ms", 1, 3600000},
    {"idle_timeout_ms", 1, 3600000},
    {"request_timeout_ms", 1, 86400000},
    {"queue_timeout_ms", 0, 3600000},
    {"queue_max", 1, 1000000},
    {"probe_interval_ms", 0, 3600000},
    {"probe_timeout_ms", 1, 600000},
};

static const char *const policies[] = {"p2c", "weighted_random", "round_robin", "least_inflight",
                                       "session"};

/* Checks one member of a model's settings; 0 or -1 with err. */
static int
check_model_field(const cJSON *it, char *err, size_t cap)
{
    if (cJSON_IsNull(it)) {
        return 0; /* removes it */
    }
    if (strcmp(it->string, "routing") == 0) {
        for (size_t i = 0; cJSON_IsString(it) && i < sizeof(policies) / sizeof(policies[0]); i++) {
            if (strcmp(it->valuestring, policies[i]) == 0) {
                return 0;
            }
        }
        snprintf(err, cap,
                 "'routing' must be p2c, weighted_random, round_robin, least_inflight or session");
        return -1;
    }
    if (strcmp(it->string, "session_header") == 0) {
        size_t n = cJSON_IsString(it) ? strlen(it->valuestring) : 0;
        bool ok = n > 0 && n <= 64;
        for (size_t i = 0; ok && i < n; i++) {
            char c = it->valuestring[i];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_';
        }
        if (!ok) {
            snprintf(err, cap, "'session_header' must be a header name (1 to 64 of [A-Za-z0-9_-])");
        }
        return ok ? 0 : -1;
    }
    for (size_t i = 0; i < sizeof(model_ints) / sizeof(model_ints[0]); i++) {
        if (strcmp(it->string, model_ints[i].field) != 0) {
            continue;
        }
        if (cJSON_IsNumber(it) && it->valuedouble == (double)(int64_t)it->valuedouble &&
            it->valuedouble >= (double)model_ints[i].lo &&
            it->valuedouble <= (double)model_ints[i].hi) {
            return 0;
        }
        snprintf(err, cap, "'%s' must be an integer from %lld to %lld", model_ints[i].field,
                 (long long)model_ints[i].lo, (long long)model_ints[i].hi);
        return -1;
    }
    snprintf(err, cap,
             "unknown setting '%.64s' (routing, max_attempts, first_byte_timeout_ms, "
             "idle_timeout_ms, request_timeout_ms, session_header, queue_timeout_ms, queue_max, "
             "probe_interval_ms, probe_timeout_ms)",
             it->string);
    return -1;
}

/* PUT /api/roster/models {"name": MODEL, setting: value|null, ...}: the
 * members given replace the model's stored ones, null removes one. */
static void
h_model_set(struct http_request *req, void *arg)
{
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    const cJSON *name, *it;
    cJSON *in = NULL;
    struct ctl_set_job *job;
    char err[320];

    if (json_parse(body, len, MAX_JSON_DEPTH, &in, err, sizeof(err)) != 0) {
        http_reply_error(req, 400, "invalid_request_error", "invalid_json", "%s", err);
        return;
    }
    name = cJSON_GetObjectItemCaseSensitive(in, "name");
    if (!cJSON_IsObject(in) || !valid_model(name)) {
        http_reply_error(req, 422, "invalid_request_error", "invalid_setting",
                         "the body must be an object with the model's 'name' (1 to %d "
                         "characters) and the settings to change",
                         REG_NAME_MAX);
        cJSON_Delete(in);
        return;
    }
    cJSON_ArrayForEach(it, in)
    {
        if (strcmp(it->string, "name") != 0 && check_model_field(it, err, sizeof(err)) != 0) {
            http_reply_error(req, 422, "invalid_request_error", "invalid_setting", "%s", err);
            cJSON_Delete(in);
            return;
        }
    }
    job = job_new(req, CTL_SET_MERGE, "model", name->valuestring);
    cJSON_DeleteItemFromObjectCaseSensitive(in, "name");
    if (job && !(job->value = cJSON_PrintUnformatted(in))) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        job_free(job);
        job = NULL;
    }
    cJSON_Delete(in);
    if (job) {
        submit(req, server_of(arg), job);
    }
}

static void
h_models_list(struct http_request *req, void *arg)
{
    reply_doc(req, server_of(arg), 3);
}

static void
h_model_delete(struct http_request *req, void *arg)
{
    const char *q = http_req_query(req);
    struct query query;
    const char *name;
    struct ctl_set_job *job = NULL;
    char err[160];

    if (query_parse(q, strlen(q), &query, err, sizeof(err)) != 0) {
        http_reply_error(req, 422, "invalid_request_error", "invalid_query", "%s", err);
        return;
    }
    name = query_get(&query, "name");
    if (!name || !*name || strlen(name) > REG_NAME_MAX) {
        http_reply_error(req, 422, "invalid_request_error", "invalid_query",
                         "query parameter 'name' (the model, 1 to %d characters) is required",
                         REG_NAME_MAX);
    } else {
        job = job_new(req, CTL_SET_DELETE, "model", name);
    }
    query_cleanup(&query);
    if (job) {
        submit(req, server_of(arg), job);
    }
}

const struct http_route ctl_settings_routes[] = {
    {"PUT", "/api/roster/models", h_model_set, CTL_ROUTE_WRITE},
    {"GET", "/api/roster/models", h_models_list, CTL_ROUTE_WRITE},
    {"DELETE", "/api/roster/models", h_model_delete, CTL_ROUTE_WRITE},
    {"POST", "/api/roster/keys/usage", h_key_usage, CTL_ROUTE_WRITE},
    {"GET", "/api/roster/settings", h_settings, CTL_ROUTE_WRITE},
    {"POST", "/api/roster/keys", h_key_create, CTL_ROUTE_WRITE},
    {"GET", "/api/roster/keys", h_keys_list, CTL_ROUTE_WRITE},
    {"DELETE", "/api/roster/keys", h_key_revoke, CTL_ROUTE_WRITE},
    {"PUT", "/api/roster/aliases", h_alias_set, CTL_ROUTE_WRITE},
    {"GET", "/api/roster/aliases", h_aliases_list, CTL_ROUTE_WRITE},
    {"DELETE", "/api/roster/aliases", h_alias_delete, CTL_ROUTE_WRITE},
    {NULL, NULL, NULL, 0},
};
