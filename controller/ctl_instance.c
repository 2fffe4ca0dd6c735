/* SPDX-License-Identifier: MIT
 *
 * ctl_instance.c - turning request bodies and query strings into registry
 * records, with DB-GPT's field rules (ModelInstance) plus roster's limits.
 *
 * Pure functions of their input (no I/O, no globals), so they are unit
 * tested and fuzzed directly (tests/unit/test_instance.c,
 * tests/fuzz/fuzz_instance.c).
 *
 * What DB-GPT's clients send (docs/architecture.md, "wire compatibility"):
 * all ten ModelInstance fields, "healthy": false included (ignored: the
 * controller decides health), last_heartbeat null or a string (ignored),
 * booleans as JSON true/false. Unknown fields are ignored, as FastAPI does,
 * so newer clients keep working; known fields of the wrong type are 422.
 */
#include "ctl.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "json_check.h"
#include "query.h"
#include "util.h"

#define MAX_JSON_DEPTH 8

bool
ctl_valid_model_name(const char *s)
{
    size_t n = strnlen(s, REG_NAME_MAX + 1);
    const char *at = strchr(s, '@');

    if (n == 0 || n > REG_NAME_MAX || !at || at == s || at[1] == '\0' || strchr(at + 1, '@')) {
        return false;
    }
    if (s[0] == ' ' || s[n - 1] == ' ') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            return false;
        }
        /* C1 controls (U+0080-U+009F: C2 80-9F) and U+2028/U+2029 (E2 80
         * A8/A9) break lines in some log viewers, as C0 controls do */
        if ((c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] <= 0x9f) ||
            (c == 0xe2 && i + 2 < n && (unsigned char)s[i + 1] == 0x80 &&
             ((unsigned char)s[i + 2] == 0xa8 || (unsigned char)s[i + 2] == 0xa9))) {
            return false;
        }
    }
    return json_utf8_valid(s, n);
}

bool
ctl_valid_host(const char *s)
{
    size_t n = strnlen(s, REG_HOST_MAX + 1);

    if (n == 0 || n > REG_HOST_MAX) {
        return false;
    }
    if (strchr(s, ':')) {
        /* an IPv6 literal, written without brackets as DB-GPT stores it */
        return netaddr_is_ip_literal(s);
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == '_';
        if (!ok) {
            return false;
        }
    }
    return s[0] != '.' && s[0] != '-';
}

static int fail(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int
fail(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return -1;
}

/* Reads an optional string field into dst (cap bytes). 0 ok, -1 error. */
static int
opt_string(const cJSON *root, const char *key, char *dst, size_t max, bool *present, char *err,
           size_t errcap)
{
    const cJSON *it = json_get(root, key);

    *present = false;
    if (!it) {
        return 0;
    }
    if (!cJSON_IsString(it)) {
        return fail(err, errcap, "field '%s' must be a string", key);
    }
    if (strlen(it->valuestring) > max) {
        snprintf(err, errcap, "field '%s' is longer than %zu bytes", key, max);
        return -1;
    }
    for (const char *c = it->valuestring; *c; c++) {
        if ((unsigned char)*c < 0x20 || *c == 0x7f) {
            return fail(err, errcap, "field '%s' must not contain control characters", key);
        }
    }
    util_strlcpy(dst, it->valuestring, max + 1);
    *present = true;
    return 0;
}

static int
opt_bool(const cJSON *root, const char *key, bool *dst, char *err, size_t errcap)
{
    const cJSON *it = json_get(root, key);

    if (!it) {
        return 0;
    }
    if (!cJSON_IsBool(it)) {
        return fail(err, errcap, "field '%s' must be true or false", key);
    }
    if (dst) {
        *dst = cJSON_IsTrue(it);
    }
    return 0;
}

/* An integer-valued JSON number within [min, max]. */
static int
int_field(const cJSON *it, const char *key, double min, double max, int64_t *out, char *err,
          size_t errcap)
{
    double d;

    if (!cJSON_IsNumber(it)) {
        return fail(err, errcap, "field '%s' must be an integer", key);
    }
    d = it->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < min || d > max) {
        snprintf(err, errcap, "field '%s' must be an integer in [%.0f, %.0f]", key, min, max);
        return -1;
    }
    *out = (int64_t)d;
    return 0;
}

static int
parse_load(const cJSON *load, struct reg_instance *out, char *err, size_t errcap)
{
    static const char *const keys[] = {"in_flight", "queue_length", "capacity"};
    int32_t *dst[] = {&out->in_flight, &out->queue_length, &out->capacity};

    if (!cJSON_IsObject(load)) {
        return fail(err, errcap, "field '%s' must be an object", "load");
    }
    for (size_t i = 0; i < UTIL_ARRAY_LEN(keys); i++) {
        const cJSON *it = json_get(load, keys[i]);
        int64_t v = 0;
        if (!it) {
            continue;
        }
        if (int_field(it, keys[i], 0, 1e9, &v, err, errcap) != 0) {
            return -1;
        }
        *dst[i] = (int32_t)v;
    }
    return 0;
}

/* The key fields, shared by every body that names an instance. */
static int
parse_key(const cJSON *root, struct reg_instance *out, char *err, size_t errcap)
{
    const cJSON *name = json_get(root, "model_name");
    const cJSON *host = json_get(root, "host");
    const cJSON *port = json_get(root, "port");
    int64_t p = 0;

    if (!name) {
        return fail(err, errcap, "field '%s' is required", "model_name");
    }
    if (!cJSON_IsString(name) || !ctl_valid_model_name(name->valuestring)) {
        return fail(err, errcap, "field '%s' must be \"<model>@<worker_type>\", at most 128 bytes",
                    "model_name");
    }
    if (!host) {
        return fail(err, errcap, "field '%s' is required", "host");
    }
    if (!cJSON_IsString(host) || !ctl_valid_host(host->valuestring)) {
        return fail(err, errcap, "field '%s' must be a host name or IP address (at most 128 bytes)",
                    "host");
    }
    if (!port) {
        return fail(err, errcap, "field '%s' is required", "port");
    }
    if (int_field(port, "port", 1, 65535, &p, err, errcap) != 0) {
        return -1;
    }
    util_strlcpy(out->model_name, name->valuestring, sizeof(out->model_name));
    util_strlcpy(out->host, host->valuestring, sizeof(out->host));
    out->port = (int)p;
    return 0;
}

static int
parse_object(const char *body, size_t len, cJSON **root, int *status_out, char *err, size_t errcap)
{
    if (json_parse(body, len, MAX_JSON_DEPTH, root, err, errcap) != 0) {
        *status_out = 400;
        return -1;
    }
    if (!cJSON_IsObject(*root)) {
        cJSON_Delete(*root);
        *root = NULL;
        *status_out = 422;
        snprintf(err, errcap, "the body must be a JSON object");
        return -1;
    }
    *status_out = 422;
    return 0;
}

int
ctl_instance_parse_json(const char *body, size_t len, struct reg_instance *out, int *status_out,
                        char *err, size_t errcap)
{
    cJSON *root = NULL;
    const cJSON *it;
    bool present;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    out->weight = 1.0;
    out->check_healthy = true;
    out->enabled = true;
    if (parse_object(body, len, &root, status_out, err, errcap) != 0) {
        return -1;
    }
    if (parse_key(root, out, err, errcap) != 0) {
        goto out;
    }
    it = json_get(root, "weight");
    if (it) {
        if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || it->valuedouble < 0 ||
            it->valuedouble > 1e6) {
            fail(err, errcap, "field '%s' must be a number in [0, 1000000]", "weight");
            goto out;
        }
        out->weight = it->valuedouble;
    }
    if (opt_bool(root, "check_healthy", &out->check_healthy, err, errcap) != 0 ||
        opt_bool(root, "enabled", &out->enabled, err, errcap) != 0 ||
        opt_bool(root, "healthy", NULL, err, errcap) != 0 ||
        opt_bool(root, "remove_from_registry", NULL, err, errcap) != 0) {
        goto out;
    }
    if (opt_string(root, "prompt_template", out->prompt_template, REG_TEMPLATE_MAX, &present, err,
                   errcap) != 0) {
        goto out;
    }
    out->has_prompt_template = present;
    it = json_get(root, "last_heartbeat");
    if (it && !cJSON_IsString(it) && !cJSON_IsNumber(it)) {
        fail(err, errcap, "field '%s' must be a timestamp string or null", "last_heartbeat");
        goto out;
    }
    it = json_get(root, "heartbeat_interval_secs");
    if (it) {
        if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || it->valuedouble < 0.05 ||
            it->valuedouble > 3600) {
            fail(err, errcap, "field '%s' must be a number of seconds in [0.05, 3600]",
                 "heartbeat_interval_secs");
            goto out;
        }
        out->lease_ms = (int32_t)(it->valuedouble * 3000.0); /* lease = 3 intervals */
    }
    it = json_get(root, "load");
    if (it && parse_load(it, out, err, errcap) != 0) {
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

int
ctl_admin_parse_json(const char *body, size_t len, struct reg_op *op, int *status_out, char *err,
                     size_t errcap)
{
    cJSON *root = NULL;
    const cJSON *it;
    int rc = -1;

    memset(op, 0, sizeof(*op));
    op->kind = REG_OP_ADMIN;
    op->admin_enabled = -1;
    op->inst.weight = 1.0;
    if (parse_object(body, len, &root, status_out, err, errcap) != 0) {
        return -1;
    }
    if (parse_key(root, &op->inst, err, errcap) != 0) {
        goto out;
    }
    it = cJSON_GetObjectItemCaseSensitive(root, "weight");
    if (it && cJSON_IsNull(it)) {
        op->admin_weight = REG_WEIGHT_CLEAR;
    } else if (it) {
        if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || it->valuedouble < 0 ||
            it->valuedouble > 1e6) {
            fail(err, errcap, "field '%s' must be a number in [0, 1000000] or null", "weight");
            goto out;
        }
        op->admin_weight = REG_WEIGHT_SET;
        op->admin_weight_value = it->valuedouble;
    }
    it = json_get(root, "enabled");
    if (it) {
        if (!cJSON_IsBool(it)) {
            fail(err, errcap, "field '%s' must be true or false", "enabled");
            goto out;
        }
        op->admin_enabled = cJSON_IsTrue(it) ? 1 : 0;
    }
    if (op->admin_weight == REG_WEIGHT_KEEP && op->admin_enabled < 0) {
        fail(err, errcap, "nothing to change: give '%s' and/or 'enabled'", "weight");
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

int
ctl_instance_parse_delete(const char *query, struct reg_instance *out, bool *remove_out, char *err,
                          size_t errcap)
{
    struct query q;
    const char *name;
    const char *host;
    const char *port;
    const char *rm;
    int64_t p;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    out->weight = 1.0;
    *remove_out = false;
    if (query_parse(query, strlen(query), &q, err, errcap) != 0) {
        return -1;
    }
    name = query_get(&q, "model_name");
    host = query_get(&q, "host");
    port = query_get(&q, "port");
    rm = query_get(&q, "remove_from_registry");
    if (!name || !ctl_valid_model_name(name)) {
        fail(err, errcap, "query parameter '%s' must be \"<model>@<worker_type>\"", "model_name");
        goto out;
    }
    if (!host || !ctl_valid_host(host)) {
        fail(err, errcap, "query parameter '%s' must be a host name or IP address", "host");
        goto out;
    }
    if (!port || util_parse_i64(port, 1, 65535, &p) != 0) {
        fail(err, errcap, "query parameter '%s' must be an integer in [1, 65535]", "port");
        goto out;
    }
    if (rm && *rm && util_parse_bool(rm, remove_out) != 0) {
        fail(err, errcap, "query parameter '%s' must be true or false", "remove_from_registry");
        goto out;
    }
    util_strlcpy(out->model_name, name, sizeof(out->model_name));
    util_strlcpy(out->host, host, sizeof(out->host));
    out->port = (int)p;
    rc = 0;
out:
    query_cleanup(&q);
    return rc;
}
