/* SPDX-License-Identifier: MIT
 *
 * cli_settings.c - `roster key create|list|revoke|usage` and `roster alias
 * set|list|rm`: the cluster settings (docs/settings.md) from the command
 * line, through the controllers' settings endpoints (ctl_settings_api.c),
 * which need the cluster secret (--cluster_secret or ROSTER_CLUSTER_SECRET)
 * or a trusted peer.
 *
 *   key create NAME   POST /api/roster/keys; prints the key once (its own
 *                     line, the last one, so a script can take it with
 *                     `tail -n 1`; or the controller's JSON with --json).
 *                     The key goes to stdout only: never to stderr.
 *   key list          GET /api/roster/keys as a table, or its JSON.
 *   key revoke NAME   DELETE /api/roster/keys?name=NAME (--purge deletes).
 *   key usage [NAME]  the per-key counters of the /metrics of every
 *                     apiserver of --api_base (comma-separated), summed;
 *                     the columns come from a table of metric names
 *                     (usage_metrics), so a new counter is one line.
 *   alias set NAME MODEL[,MODEL...]   PUT /api/roster/aliases
 *   alias list        GET /api/roster/aliases
 *   alias rm NAME     DELETE /api/roster/aliases?name=NAME
 *
 * As in cli_model.c, the controllers of --controller_addr are asked in turn
 * (cli_ask_controllers: the first that answers wins); each command names
 * the options it takes out of its group's option table, which also makes
 * --help, docs/configuration.md and the man page. NAME and the models are
 * positional: they are taken out of argv before the table parses the
 * rest. Exit codes (sysexits): 64 usage, 77 the secret was refused (401,
 * 403), 65 the controller refused the request (400, 404, 409, 422), 69 no
 * controller (or apiserver) could answer, 76 an answer that makes no sense.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "cli.h"
#include "flags.h"
#include "http_client.h"
#include "json_check.h"
#include "util.h"

#define MAX_OPTS       24
#define MAX_JSON_DEPTH 16
#define MAX_METRICS    (16u * 1024 * 1024) /* an apiserver's /metrics */
#define MAX_CELL       512
#define MAX_MODELS     64 /* a key's (the controller's KEY_MODELS) */

struct settings_opts {
    char *controller_addr;
    char *cluster_secret;
    int64_t timeout_ms;
    bool json;
    char *models;
    int64_t expires_at;
    int64_t expires_in_days;
    int64_t rpm;
    int64_t tpm;
    int64_t priority;
    bool purge;
    char *api_base;
};

/* clang-format 14 would put the stringized name on a line of its own */
// clang-format off
#define F(name, type, def, lo, hi, env, fl, meta, help) \
    {#name, type, offsetof(struct settings_opts, name), def, lo, hi, env, fl, meta, help}
// clang-format on

/* The options every settings command shares: where to ask, and how. */
#define COMMON_OPTS                                                                                \
    F(controller_addr, FLAG_STR, "http://127.0.0.1:8000", 1, 0, "CONTROLLER_ADDRESS", 0, "URLS",   \
      "Controllers to ask, comma-separated; the first that answers wins."),                        \
        F(cluster_secret, FLAG_STR, NULL, 1, 0, NULL, FLAG_SECRET, "SECRET",                       \
          "The cluster secret: the controllers' settings endpoints need it (or a client in "       \
          "their --trusted_networks)."),                                                           \
        F(timeout_ms, FLAG_INT, "5000", 100, 600000, NULL, 0, "MS",                                \
          "Timeout of each request to a controller or an apiserver."),                             \
        F(json, FLAG_BOOL, "false", 1, 0, NULL, FLAG_ARGV_ONLY, NULL,                              \
          "Print the JSON answer instead of a table or a sentence.")

const struct flag_def cli_key_flag_defs[] = {
    COMMON_OPTS,
    F(models, FLAG_STR, NULL, 1, 0, NULL, FLAG_ARGV_ONLY, "A,B",
      "create: the only models the key may use, comma-separated (unset: every model)."),
    F(expires_at, FLAG_INT, "0", 0, 253402300799, NULL, FLAG_ARGV_ONLY, "EPOCH_S",
      "create: the key stops working at this time, in seconds since the epoch (0: never)."),
    F(expires_in_days, FLAG_INT, "0", 0, 36500, NULL, FLAG_ARGV_ONLY, "DAYS",
      "create: the key stops working this many days from now (0: never; not with "
      "--expires_at)."),
    F(rpm, FLAG_INT, "-1", -1, 1000000000, NULL, FLAG_ARGV_ONLY, "N",
      "create: requests per minute the key may make, cluster-wide (0: no limit; -1: the "
      "controller's default)."),
    F(tpm, FLAG_INT, "-1", -1, 1000000000, NULL, FLAG_ARGV_ONLY, "N",
      "create: tokens per minute the key may use, cluster-wide (0: no limit; -1: the "
      "controller's default)."),
    F(priority, FLAG_INT, "-1", -1, 9, NULL, FLAG_ARGV_ONLY, "N",
      "create: the key's priority in the apiservers' wait queues, 0..9 (-1: the controller's "
      "default)."),
    F(purge, FLAG_BOOL, "false", 1, 0, NULL, FLAG_ARGV_ONLY, NULL,
      "revoke: delete the key's row (the name is free again) instead of marking it revoked."),
    F(api_base, FLAG_STR, NULL, 1, 0, NULL, 0, "URLS",
      "usage: the apiservers (or webservers) whose /metrics to read and sum, comma-separated "
      "base URLs (http://HOST:8100, with or without /v1)."),
    {0},
};

const struct flag_def cli_alias_flag_defs[] = {
    COMMON_OPTS,
    {0},
};

const char cli_key_summary[] =
    "Creates API keys (the key is printed once, on stdout: store it then), lists them "
    "(never their hashes), revokes or deletes them, through the first controller of "
    "--controller_addr that answers (the cluster secret is needed); shows each key's requests "
    "admitted and refused and its tokens, summed over the /metrics of the apiservers of "
    "--api_base.";

const char cli_config_summary[] =
    "Shows, sets and removes per-model settings of the cluster (routing, max_attempts, "
    "first_byte_timeout_ms, idle_timeout_ms, request_timeout_ms, session_header, "
    "queue_timeout_ms, queue_max, probe_interval_ms, probe_timeout_ms): in force on every "
    "apiserver within a second, over their flags, through the first controller of "
    "--controller_addr that answers (the cluster secret is needed).";

const char cli_alias_summary[] =
    "Sets, lists and removes model aliases: a name that resolves to an ordered list of models "
    "(the first routable serves; the next ones are fallbacks), through the first controller of "
    "--controller_addr that answers (the cluster secret is needed).";

/* ---- commands ------------------------------------------------------------------ */

struct settings_cmd {
    const char *name;
    const char *usage; /* after "roster key " */
    const char *summary;
    const char *const *opts; /* the options it takes, from its group's table */
    int min_pos, max_pos;    /* positional arguments (max -1: any number) */
    int (*run)(const struct settings_opts *o, char **pos, int npos);
};

struct settings_group {
    const char *name; /* "key" */
    const char *summary;
    const struct flag_def *defs;
    const struct settings_cmd *cmds;
    size_t ncmds;
};

/* ---- a table like `roster model list` prints ------------------------------------ */

static size_t
display_width(const char *s)
{
    size_t n = 0;

    for (; *s; s++) {
        n += ((unsigned char)*s & 0xc0) != 0x80; /* count code points */
    }
    return n;
}

static void
table_rule(FILE *out, const size_t *w, int n)
{
    for (int c = 0; c < n; c++) {
        fputc('+', out);
        for (size_t i = 0; i < w[c] + 2; i++) {
            fputc('-', out);
        }
    }
    fputs("+\n", out);
}

void
cli_print_table(FILE *out, const cJSON *rows)
{
    const cJSON *head = cJSON_GetArrayItem(rows, 0);
    int n = cJSON_GetArraySize(head);
    size_t *w = n > 0 ? calloc((size_t)n, sizeof(*w)) : NULL;
    const cJSON *row;
    int r = 0;

    if (!w) {
        return;
    }
    cJSON_ArrayForEach(row, rows)
    {
        for (int c = 0; c < n; c++) {
            const cJSON *cell = cJSON_GetArrayItem(row, c);
            size_t dw = cJSON_IsString(cell) ? display_width(cell->valuestring) : 0;
            w[c] = dw > w[c] ? dw : w[c];
        }
    }
    table_rule(out, w, n);
    cJSON_ArrayForEach(row, rows)
    {
        for (int c = 0; c < n; c++) {
            const cJSON *cell = cJSON_GetArrayItem(row, c);
            const char *s = cJSON_IsString(cell) ? cell->valuestring : "";
            fprintf(out, "| %s%*s ", s, (int)(w[c] - display_width(s)), "");
        }
        fputs("|\n", out);
        if (r++ == 0) {
            table_rule(out, w, n);
        }
    }
    table_rule(out, w, n);
    free(w);
}

/* Appends a row of `n` cells (each at most MAX_CELL bytes) to `rows`. */
static void
table_add(cJSON *rows, char cells[][MAX_CELL], int n)
{
    cJSON *row = cJSON_CreateArray();

    for (int c = 0; row && c < n; c++) {
        cJSON_AddItemToArray(row, cJSON_CreateString(cells[c]));
    }
    if (row) {
        cJSON_AddItemToArray(rows, row);
    }
}

/* ---- talking to controllers ----------------------------------------------------- */

/* Appends "?name=<percent-encoded name>" (and "&purge=true") to `path`.
 * Returns 0, or -1 when it does not fit. */
static int
name_query(struct buf *path, const char *name, bool purge)
{
    static const char hex[] = "0123456789ABCDEF";
    int rc = buf_puts(path, "?name=");

    for (const char *p = name; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-._~", c)) {
            rc |= buf_putc(path, (char)c);
        } else {
            char esc[4] = {'%', hex[c >> 4], hex[c & 15], '\0'};
            rc |= buf_puts(path, esc);
        }
    }
    if (purge) {
        rc |= buf_puts(path, "&purge=true");
    }
    return rc ? -1 : 0;
}

/* The controller's refusal on stderr, and its exit code. */
static int
refused(const struct settings_opts *o, const char *what, const struct http_client_response *resp)
{
    char msg[320];
    bool no_secret = !o->cluster_secret || !*o->cluster_secret;

    json_error_message(resp->body.data, resp->body.len, msg, sizeof(msg));
    if (resp->status == 401 || resp->status == 403) {
        fprintf(stderr, "roster: %s: the controller refused (HTTP %ld): %s%s\n", what, resp->status,
                msg,
                no_secret ? " (give the cluster secret: --cluster_secret or ROSTER_CLUSTER_SECRET)"
                          : " (is it the cluster's secret?)");
        return EX_NOPERM;
    }
    fprintf(stderr, "roster: %s: the controller refused (HTTP %ld): %s\n", what, resp->status, msg);
    return resp->status >= 400 && resp->status < 500 ? EX_DATAERR : EX_PROTOCOL;
}

/* One request to the controllers. Returns 0 with the answer parsed into
 * *out (a JSON object or array; caller frees) when the status is `want`,
 * and the raw body in *raw when `raw` is given (caller frees); otherwise
 * prints why and returns the exit code. */
static int
ask(const struct settings_opts *o, const char *what, const char *method, const char *path,
    const char *body, long want, cJSON **out, char **raw)
{
    struct cli_model_opts m;
    struct http_client_response resp;
    char err[160] = "neither an object nor a list";
    int code = 0;

    memset(&m, 0, sizeof(m));
    m.controller_addr = o->controller_addr;
    m.cluster_secret = o->cluster_secret;
    m.timeout_ms = o->timeout_ms;
    *out = NULL;
    if (cli_ask_controllers(&m, method, path, body, &resp) != 0) {
        return EX_UNAVAILABLE;
    }
    if (resp.status != want) {
        code = refused(o, what, &resp);
    } else if (json_parse(resp.body.data, resp.body.len, MAX_JSON_DEPTH, out, err, sizeof(err)) !=
                   0 ||
               !(cJSON_IsObject(*out) || cJSON_IsArray(*out))) {
        fprintf(stderr, "roster: %s: the controller's answer is not JSON: %s\n", what, err);
        cJSON_Delete(*out);
        *out = NULL;
        code = EX_PROTOCOL;
    } else if (raw && !(*raw = buf_take(&resp.body))) {
        cJSON_Delete(*out);
        *out = NULL;
        code = EX_OSERR;
    }
    if (resp.body.data) {
        /* a created key: wiped before the memory goes back */
        explicit_bzero(resp.body.data, resp.body.len);
    }
    http_client_response_cleanup(&resp);
    return code;
}

/* The controller's JSON, printed as it came (--json). */
static void
print_raw(const char *raw)
{
    size_t n = strlen(raw);

    while (n && (raw[n - 1] == '\n' || raw[n - 1] == '\r')) {
        n--;
    }
    printf("%.*s\n", (int)n, raw);
}

static const char *
str_field(const cJSON *o, const char *name)
{
    const cJSON *v = json_get(o, name);

    return cJSON_IsString(v) ? v->valuestring : "";
}

static double
num_field(const cJSON *o, const char *name)
{
    const cJSON *v = json_get(o, name);

    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* "a, b" from a JSON array of names; `none` when it is empty or absent. */
static void
join_models(const cJSON *a, const char *none, char *out, size_t cap)
{
    const cJSON *m;
    size_t len = 0;

    out[0] = '\0';
    cJSON_ArrayForEach(m, a)
    {
        if (cJSON_IsString(m)) {
            int n = snprintf(out + len, cap - len, "%s%s", len ? ", " : "", m->valuestring);
            if (n < 0 || (size_t)n >= cap - len) {
                break; /* the start is enough in a cell */
            }
            len += (size_t)n;
        }
    }
    if (!len) {
        snprintf(out, cap, "%s", none);
    }
}

/* An epoch-milliseconds time as "2026-12-07 13:47:44" UTC, or `none` for 0. */
static void
time_cell(double ms, const char *none, char *out, size_t cap)
{
    char iso[40];

    if (ms <= 0) {
        snprintf(out, cap, "%s", none);
        return;
    }
    util_format_iso_ms((int64_t)ms, iso, sizeof(iso));
    iso[10] = ' ';
    snprintf(out, cap, "%.19s", iso);
}

/* A limit: "-" for 0 (none). */
static void
limit_cell(double v, char *out, size_t cap)
{
    if (v <= 0) {
        snprintf(out, cap, "-");
    } else {
        snprintf(out, cap, "%.0f", v);
    }
}

/* ---- key create ---------------------------------------------------------------- */

/* Adds --models, split at commas and trimmed, as "models": [...]. Returns
 * 0, or -1 with a message printed. */
static int
add_models(cJSON *body, const char *list, int max, const char *what)
{
    cJSON *arr = cJSON_CreateArray();
    const char *p = list;
    int n = 0;

    if (!arr || !cJSON_AddItemToObject(body, "models", arr)) {
        cJSON_Delete(arr);
        fprintf(stderr, "roster: out of memory\n");
        return -1;
    }
    while (*p) {
        size_t len = strcspn(p, ",");
        const char *s = p;
        size_t m = len;
        char name[300];

        while (m && *s == ' ') {
            s++, m--;
        }
        while (m && s[m - 1] == ' ') {
            m--;
        }
        if (m == 0 || m >= sizeof(name)) {
            fprintf(stderr, "roster: %s: %s model name in '%s'\n", what,
                    m ? "a too long" : "an empty", list);
            return -1;
        }
        if (++n > max) {
            fprintf(stderr, "roster: %s: at most %d models\n", what, max);
            return -1;
        }
        memcpy(name, s, m);
        name[m] = '\0';
        cJSON_AddItemToArray(arr, cJSON_CreateString(name));
        p += len;
        if (*p == ',') {
            p++;
        }
    }
    if (n == 0) {
        fprintf(stderr, "roster: %s: no model named\n", what);
        return -1;
    }
    return 0;
}

static int
key_create(const struct settings_opts *o, char **pos, int npos)
{
    cJSON *body = cJSON_CreateObject();
    cJSON *answer = NULL;
    char *text = NULL, *raw = NULL;
    int64_t expires = o->expires_at;
    const char *key;
    int code = EX_USAGE;

    (void)npos;
    if (!body) {
        fprintf(stderr, "roster: out of memory\n");
        return EX_OSERR;
    }
    if (o->expires_at && o->expires_in_days) {
        fprintf(stderr, "roster: key create: --expires_at or --expires_in_days, not both\n");
        goto out;
    }
    if (o->expires_in_days) {
        expires = (int64_t)time(NULL) + o->expires_in_days * 86400;
    }
    cJSON_AddStringToObject(body, "name", pos[0]);
    if (o->models && add_models(body, o->models, MAX_MODELS, "key create --models") != 0) {
        goto out;
    }
    if (expires) {
        cJSON_AddNumberToObject(body, "expires_at", (double)expires);
    }
    if (o->rpm >= 0) {
        cJSON_AddNumberToObject(body, "rpm", (double)o->rpm);
    }
    if (o->tpm >= 0) {
        cJSON_AddNumberToObject(body, "tpm", (double)o->tpm);
    }
    if (o->priority >= 0) {
        cJSON_AddNumberToObject(body, "priority", (double)o->priority);
    }
    text = cJSON_PrintUnformatted(body);
    if (!text) {
        fprintf(stderr, "roster: out of memory\n");
        code = EX_OSERR;
        goto out;
    }
    code = ask(o, "key create", "POST", "/api/roster/keys", text, 201, &answer, &raw);
    if (code != 0) {
        goto out;
    }
    key = str_field(answer, "key");
    if (!*key) {
        fprintf(stderr, "roster: key create: the controller's answer holds no key\n");
        code = EX_PROTOCOL;
    } else if (o->json) {
        print_raw(raw);
    } else {
        printf("Created key '%s' (prefix %s). Store it now: it is not shown again.\n",
               str_field(answer, "name"), str_field(answer, "prefix"));
        printf("%s\n", key);
    }
    fflush(stdout);
out:
    if (raw) {
        explicit_bzero(raw, strlen(raw));
        free(raw);
    }
    if (answer) {
        const cJSON *k = json_get(answer, "key");
        if (cJSON_IsString(k)) {
            explicit_bzero(k->valuestring, strlen(k->valuestring));
        }
    }
    cJSON_Delete(answer);
    cJSON_free(text);
    cJSON_Delete(body);
    return code;
}

#define KEY_COLS 9 /* the widest list */

/* ---- lists -------------------------------------------------------------------------- */

/* GETs a list from the controllers. With --json prints it as it came and
 * returns -1 (done); otherwise returns 0 with the array in *answer and, in
 * *rows, a table holding the header `head` for the caller to fill. Else an
 * exit code (after printing why). */
static int
list_fetch(const struct settings_opts *o, const char *what, const char *path,
           const char *const *head, int ncols, cJSON **answer, char **raw, cJSON **rows)
{
    char cells[KEY_COLS][MAX_CELL];
    int code = ask(o, what, "GET", path, NULL, 200, answer, raw);

    if (code != 0) {
        return code;
    }
    if (!cJSON_IsArray(*answer)) {
        fprintf(stderr, "roster: %s: the controller's answer is not a JSON list\n", what);
        return EX_PROTOCOL;
    }
    if (o->json) {
        print_raw(*raw);
        return -1;
    }
    *rows = cJSON_CreateArray();
    for (int c = 0; c < ncols; c++) {
        snprintf(cells[c], MAX_CELL, "%s", head[c]);
    }
    table_add(*rows, cells, ncols);
    return 0;
}

/* ---- key list ------------------------------------------------------------------ */

static int
key_list(const struct settings_opts *o, char **pos, int npos)
{
    static const char *const head[KEY_COLS] = {"Name",     "Prefix",  "Models",  "RPM",    "TPM",
                                               "Priority", "Expires", "Revoked", "Created"};
    char cells[KEY_COLS][MAX_CELL];
    cJSON *answer = NULL, *rows = NULL;
    const cJSON *k;
    char *raw = NULL;
    int code;

    (void)pos, (void)npos;
    code = list_fetch(o, "key list", "/api/roster/keys", head, KEY_COLS, &answer, &raw, &rows);
    if (code != 0) {
        code = code < 0 ? 0 : code;
        goto out;
    }
    cJSON_ArrayForEach(k, answer)
    {
        snprintf(cells[0], MAX_CELL, "%s", str_field(k, "name"));
        snprintf(cells[1], MAX_CELL, "%s", str_field(k, "prefix"));
        join_models(json_get(k, "models"), "(all)", cells[2], MAX_CELL);
        limit_cell(num_field(k, "rpm"), cells[3], MAX_CELL);
        limit_cell(num_field(k, "tpm"), cells[4], MAX_CELL);
        snprintf(cells[5], MAX_CELL, "%.0f", num_field(k, "priority"));
        time_cell(num_field(k, "expires_ms"), "never", cells[6], MAX_CELL);
        time_cell(num_field(k, "revoked_ms"), "-", cells[7], MAX_CELL);
        time_cell(num_field(k, "created_ms"), "", cells[8], MAX_CELL);
        table_add(rows, cells, KEY_COLS);
    }
    cli_print_table(stdout, rows);
out:
    free(raw);
    cJSON_Delete(rows);
    cJSON_Delete(answer);
    return code;
}

/* ---- key revoke, alias rm ------------------------------------------------------------ */

static int
remove_named(const struct settings_opts *o, const char *what, const char *noun, const char *route,
             const char *name, bool purge, const char *done)
{
    struct buf path;
    cJSON *answer = NULL;
    int code;

    buf_init(&path, 1024);
    if (buf_puts(&path, route) != 0 || name_query(&path, name, purge) != 0) {
        fprintf(stderr, "roster: %s: the name is too long\n", what);
        buf_cleanup(&path);
        return EX_USAGE;
    }
    code = ask(o, what, "DELETE", buf_str(&path), NULL, 200, &answer, NULL);
    if (code == 0) {
        printf("%s '%s' %s (settings version %.0f)\n", noun, name, done,
               num_field(answer, "version"));
    }
    cJSON_Delete(answer);
    buf_cleanup(&path);
    return code;
}

static int
key_revoke(const struct settings_opts *o, char **pos, int npos)
{
    (void)npos;
    return remove_named(o, o->purge ? "key revoke --purge" : "key revoke", "Key",
                        "/api/roster/keys", pos[0], o->purge, o->purge ? "deleted" : "revoked");
}

static int
alias_rm(const struct settings_opts *o, char **pos, int npos)
{
    (void)npos;
    return remove_named(o, "alias rm", "Alias", "/api/roster/aliases", pos[0], false, "removed");
}

/* ---- key usage ---------------------------------------------------------------- */

/* The per-key counters of an apiserver's /metrics, in the order of the
 * table's columns, and the JSON field each becomes. A counter split by a
 * second label (`by`: the reason of a refusal, the kind of tokens) becomes
 * an object by that label's value, and one column per value seen. A new
 * counter is one line here. */
static const struct usage_metric {
    const char *metric;
    const char *field;
    const char *column;
    const char *by; /* the label that splits it, or NULL */
} usage_metrics[] = {
    {"roster_api_key_requests_total", "requests", "Requests", NULL},
    {"roster_api_key_tokens_total", "tokens", "Tokens", "kind"},
    {"roster_api_key_rejected_total", "rejected", "Rejected", "reason"},
};

/* Reads one label value at *p (just past `="`), unescaping \\, \" and \n
 * into out. Returns the position after the closing quote, or NULL. */
static const char *
label_value(const char *p, const char *end, char *out, size_t cap)
{
    size_t n = 0;

    for (; p < end && *p != '"'; p++) {
        char c = *p;
        if (c == '\\' && p + 1 < end) {
            c = *++p == 'n' ? '\n' : *p;
        }
        if (n + 1 < cap) {
            out[n++] = c;
        }
    }
    out[n] = '\0';
    return p < end ? p + 1 : NULL;
}

/* Parses one sample line "name{k="v",...} value" of a usage metric into
 * the key's entry of `keys` (an object: key name -> {field: n, or {value of
 * its `by` label: n}}), adding its value. Other lines are ignored. */
static void
usage_line(const char *line, const char *end, cJSON *keys, const char *only)
{
    for (size_t i = 0; i < UTIL_ARRAY_LEN(usage_metrics); i++) {
        const struct usage_metric *um = &usage_metrics[i];
        size_t ml = strlen(um->metric);
        char key[160] = "", sub[160] = "", name[64], val[64];
        bool has_key = false, has_sub = false;
        const char *p = line + ml;
        double v;
        cJSON *entry, *slot;

        if ((size_t)(end - line) <= ml || strncmp(line, um->metric, ml) != 0 || *p != '{') {
            continue;
        }
        for (p++; p < end && *p != '}';) {
            size_t nl = 0;
            while (p + nl < end && p[nl] != '=' && p[nl] != '}') {
                nl++;
            }
            if (p + nl + 1 >= end || p[nl] != '=' || p[nl + 1] != '"' || nl >= sizeof(name)) {
                return;
            }
            memcpy(name, p, nl);
            name[nl] = '\0';
            if (strcmp(name, "key") == 0) {
                p = label_value(p + nl + 2, end, key, sizeof(key));
                has_key = true;
            } else if (um->by && strcmp(name, um->by) == 0) {
                p = label_value(p + nl + 2, end, sub, sizeof(sub));
                has_sub = true;
            } else {
                char skip[160];
                p = label_value(p + nl + 2, end, skip, sizeof(skip));
            }
            if (!p) {
                return;
            }
            if (p < end && *p == ',') {
                p++;
            }
        }
        if (!has_key || p >= end || (only && strcmp(only, key) != 0) || has_sub != !!um->by) {
            return;
        }
        p++;
        while (p < end && *p == ' ') {
            p++;
        }
        snprintf(val, sizeof(val), "%.*s", (int)(end - p < 63 ? end - p : 63), p);
        val[strcspn(val, " ")] = '\0'; /* a timestamp may follow */
        if (util_parse_double(val, 0, 1e300, &v) != 0) {
            return;
        }
        entry = cJSON_GetObjectItemCaseSensitive(keys, key);
        if (!entry) {
            entry = cJSON_AddObjectToObject(keys, key);
        }
        if (!entry) {
            return;
        }
        if (has_sub) {
            cJSON *by = cJSON_GetObjectItemCaseSensitive(entry, um->field);
            if (!by) {
                by = cJSON_AddObjectToObject(entry, um->field);
            }
            entry = by;
        }
        const char *leaf = has_sub ? sub : um->field;
        slot = entry ? cJSON_GetObjectItemCaseSensitive(entry, leaf) : NULL;
        if (cJSON_IsNumber(slot)) {
            cJSON_SetNumberValue(slot, slot->valuedouble + v);
        } else if (entry && !slot) {
            cJSON_AddNumberToObject(entry, leaf, v);
        }
        return;
    }
}

/* GET base/metrics into `keys`. Returns 0, or -1 after printing why. */
static int
usage_read(const struct settings_opts *o, const char *base, cJSON *keys, const char *only)
{
    struct http_client_response resp;
    char url[2048], shown[2048], err[256];
    size_t n = strlen(base);
    int rc = -1;

    while (n && base[n - 1] == '/') {
        n--;
    }
    if (n >= 3 && strncmp(base + n - 3, "/v1", 3) == 0) {
        n -= 3; /* an OpenAI base URL names the same server */
    }
    snprintf(url, sizeof(url), "%s%.*s/metrics", strstr(base, "://") ? "" : "http://", (int)n,
             base);
    util_url_redact(url, shown, sizeof(shown));
    if (http_client_request("GET", url, NULL, 0, NULL, (int)o->timeout_ms, MAX_METRICS, &resp, err,
                            sizeof(err)) != 0) {
        fprintf(stderr, "roster: key usage: %s: %s\n", shown, err);
        return -1;
    }
    if (resp.status != 200) {
        fprintf(stderr, "roster: key usage: %s answered HTTP %ld\n", shown, resp.status);
        goto out;
    }
    for (const char *p = buf_str(&resp.body); *p;) {
        const char *nl = strchr(p, '\n');
        const char *end = nl ? nl : p + strlen(p);
        if (*p != '#') {
            usage_line(p, end, keys, only);
        }
        p = nl ? nl + 1 : end;
    }
    rc = 0;
out:
    http_client_response_cleanup(&resp);
    return rc;
}

/* The sum of every number in `e` (an entry of key usage). */
static double
entry_total(const cJSON *e)
{
    const cJSON *v;
    double sum = 0;

    cJSON_ArrayForEach(v, e)
    {
        sum += cJSON_IsNumber(v) ? v->valuedouble : entry_total(v);
    }
    return sum;
}

/* Adds to `cols` (an array of names) each member name of `by` not yet in
 * it. */
static void
add_subs(cJSON *cols, const cJSON *by)
{
    const cJSON *r;

    cJSON_ArrayForEach(r, by)
    {
        const cJSON *c;
        bool seen = false;
        cJSON_ArrayForEach(c, cols)
        {
            seen = seen || strcmp(c->valuestring, r->string) == 0;
        }
        if (!seen) {
            cJSON_AddItemToArray(cols, cJSON_CreateString(r->string));
        }
    }
}

static int
key_usage(const struct settings_opts *o, char **pos, int npos)
{
    const char *only = npos ? pos[0] : NULL;
    cJSON *keys = cJSON_CreateObject();
    cJSON *bases = cJSON_CreateArray();
    cJSON *subs[UTIL_ARRAY_LEN(usage_metrics)] = {NULL};
    cJSON *rows = NULL, *head = NULL, *doc = NULL;
    const char *p, *item;
    size_t len;
    int asked = 0, failed = 0;
    int code = 0;

    if (!keys || !bases) {
        fprintf(stderr, "roster: out of memory\n");
        code = EX_OSERR;
        goto out;
    }
    if (!o->api_base || !*o->api_base) {
        fprintf(stderr, "roster: key usage needs --api_base (the apiservers' base URLs, "
                        "comma-separated)\n");
        code = EX_USAGE;
        goto out;
    }
    for (p = o->api_base; util_next_item(&p, &item, &len);) {
        char base[1024];
        if (len == 0) {
            continue;
        }
        if (len >= sizeof(base)) {
            fprintf(stderr, "roster: key usage: an --api_base URL is too long\n");
            code = EX_USAGE;
            goto out;
        }
        snprintf(base, sizeof(base), "%.*s", (int)len, item);
        asked++;
        if (usage_read(o, base, keys, only) != 0) {
            failed++;
        } else {
            cJSON_AddItemToArray(bases, cJSON_CreateString(base));
        }
    }
    if (!asked) {
        fprintf(stderr, "roster: key usage needs --api_base\n");
        code = EX_USAGE;
        goto out;
    }
    if (failed == asked) {
        code = EX_UNAVAILABLE;
        goto out;
    }
    if (failed) {
        fprintf(stderr, "roster: key usage: the sums leave out %d apiserver(s) of %d\n", failed,
                asked);
        code = EX_UNAVAILABLE;
    }
    if (o->json) {
        char *text;
        doc = cJSON_CreateObject();
        if (doc) {
            cJSON_AddItemToObject(doc, "apiservers", bases);
            cJSON_AddItemToObject(doc, "keys", keys);
            bases = keys = NULL;
        }
        text = doc ? cJSON_PrintUnformatted(doc) : NULL;
        if (text) {
            printf("%s\n", text);
            cJSON_free(text);
        }
        goto out;
    }
    /* the columns: Key, each counter; a split counter, one per value seen */
    for (size_t i = 0; i < UTIL_ARRAY_LEN(usage_metrics); i++) {
        const cJSON *k;
        cJSON_ArrayForEach(k, keys)
        {
            const cJSON *f = json_get(k, usage_metrics[i].field);
            if (cJSON_IsObject(f)) {
                if (!subs[i]) {
                    subs[i] = cJSON_CreateArray();
                }
                add_subs(subs[i], f);
            }
        }
    }
    rows = cJSON_CreateArray();
    head = cJSON_CreateArray();
    if (!rows || !head) {
        code = EX_OSERR;
        goto out;
    }
    cJSON_AddItemToArray(head, cJSON_CreateString("Key"));
    for (size_t i = 0; i < UTIL_ARRAY_LEN(usage_metrics); i++) {
        const cJSON *r;
        if (!subs[i] && usage_metrics[i].by) {
            continue; /* not exported by these apiservers */
        }
        if (!subs[i]) {
            cJSON_AddItemToArray(head, cJSON_CreateString(usage_metrics[i].column));
            continue;
        }
        cJSON_ArrayForEach(r, subs[i])
        {
            char col[200];
            snprintf(col, sizeof(col), "%s (%s)", usage_metrics[i].column, r->valuestring);
            cJSON_AddItemToArray(head, cJSON_CreateString(col));
        }
    }
    cJSON_AddItemToArray(rows, head);
    head = NULL;
    const cJSON *k;
    cJSON_ArrayForEach(k, keys)
    {
        cJSON *row;
        char cell[64];
        if (!*k->string && entry_total(k) == 0) {
            continue; /* no request with an unknown key */
        }
        row = cJSON_CreateArray();
        if (!row) {
            break;
        }
        cJSON_AddItemToArray(row, cJSON_CreateString(*k->string ? k->string : "(no such key)"));
        for (size_t i = 0; i < UTIL_ARRAY_LEN(usage_metrics); i++) {
            const cJSON *f = json_get(k, usage_metrics[i].field);
            const cJSON *r;
            if (!subs[i] && usage_metrics[i].by) {
                continue;
            }
            if (!subs[i]) {
                snprintf(cell, sizeof(cell), "%.0f", cJSON_IsNumber(f) ? f->valuedouble : 0);
                cJSON_AddItemToArray(row, cJSON_CreateString(cell));
                continue;
            }
            cJSON_ArrayForEach(r, subs[i])
            {
                const cJSON *v = json_get(f, r->valuestring);
                snprintf(cell, sizeof(cell), "%.0f", cJSON_IsNumber(v) ? v->valuedouble : 0);
                cJSON_AddItemToArray(row, cJSON_CreateString(cell));
            }
        }
        cJSON_AddItemToArray(rows, row);
    }
    cli_print_table(stdout, rows);
    if (only && !json_get(keys, only)) {
        fprintf(stderr, "roster: key usage: no apiserver has counted key '%s'\n", only);
        code = code ? code : EX_DATAERR;
    }
out:
    for (size_t i = 0; i < UTIL_ARRAY_LEN(usage_metrics); i++) {
        cJSON_Delete(subs[i]);
    }
    cJSON_Delete(head);
    cJSON_Delete(rows);
    cJSON_Delete(doc);
    cJSON_Delete(bases);
    cJSON_Delete(keys);
    return code;
}

/* ---- alias set, list ------------------------------------------------------------- */

static int
alias_set(const struct settings_opts *o, char **pos, int npos)
{
    cJSON *body = cJSON_CreateObject();
    cJSON *answer = NULL;
    struct buf models;
    char *text = NULL;
    char shown[MAX_CELL];
    int code = EX_USAGE;

    buf_init(&models, 64 * 1024);
    if (!body) {
        code = EX_OSERR;
        goto out;
    }
    for (int i = 1; i < npos; i++) { /* "a,b c" = "a,b,c" */
        if (buf_printf(&models, "%s%s", i > 1 ? "," : "", pos[i]) != 0) {
            fprintf(stderr, "roster: alias set: too many models\n");
            goto out;
        }
    }
    cJSON_AddStringToObject(body, "name", pos[0]);
    if (add_models(body, buf_str(&models), 1000, "alias set") != 0) {
        goto out;
    }
    text = cJSON_PrintUnformatted(body);
    if (!text) {
        code = EX_OSERR;
        goto out;
    }
    code = ask(o, "alias set", "PUT", "/api/roster/aliases", text, 200, &answer, NULL);
    if (code == 0) {
        join_models(json_get(answer, "models"), "", shown, sizeof(shown));
        printf("Alias '%s' -> %s (settings version %.0f)\n", pos[0], shown,
               num_field(answer, "version"));
    }
out:
    cJSON_Delete(answer);
    cJSON_free(text);
    cJSON_Delete(body);
    buf_cleanup(&models);
    return code;
}

#define ALIAS_COLS 3

static int
alias_list(const struct settings_opts *o, char **pos, int npos)
{
    static const char *const head[ALIAS_COLS] = {"Name", "Models", "Updated"};
    char cells[ALIAS_COLS][MAX_CELL];
    cJSON *answer = NULL, *rows = NULL;
    const cJSON *a;
    char *raw = NULL;
    int code;

    (void)pos, (void)npos;
    code =
        list_fetch(o, "alias list", "/api/roster/aliases", head, ALIAS_COLS, &answer, &raw, &rows);
    if (code != 0) {
        code = code < 0 ? 0 : code;
        goto out;
    }
    cJSON_ArrayForEach(a, answer)
    {
        snprintf(cells[0], MAX_CELL, "%s", str_field(a, "name"));
        join_models(json_get(a, "models"), "", cells[1], MAX_CELL);
        time_cell(num_field(a, "updated_ms"), "", cells[2], MAX_CELL);
        table_add(rows, cells, ALIAS_COLS);
    }
    cli_print_table(stdout, rows);
out:
    free(raw);
    cJSON_Delete(rows);
    cJSON_Delete(answer);
    return code;
}

/* ---- config get, set, rm -------------------------------------------------------------- */

static int
config_get(const struct settings_opts *o, char **pos, int npos)
{
    cJSON *answer = NULL;
    const cJSON *m;
    char *raw = NULL;
    int code = ask(o, "config get", "GET", "/api/roster/models", NULL, 200, &answer, &raw);
    bool any = false;

    if (code != 0) {
        goto out;
    }
    if (!cJSON_IsArray(answer)) {
        fprintf(stderr, "roster: config get: the controller's answer is not a JSON list\n");
        code = EX_PROTOCOL;
        goto out;
    }
    if (o->json && npos == 0) {
        print_raw(raw);
        goto out;
    }
    cJSON_ArrayForEach(m, answer)
    {
        const cJSON *it;
        if (npos > 0 && strcmp(str_field(m, "name"), pos[0]) != 0) {
            continue;
        }
        any = true;
        if (o->json) {
            char *one = cJSON_PrintUnformatted(m);
            printf("%s\n", one ? one : "{}");
            free(one);
            continue;
        }
        printf("%s\n", str_field(m, "name"));
        cJSON_ArrayForEach(it, m)
        {
            if (strcmp(it->string, "name") == 0 || strcmp(it->string, "updated_ms") == 0) {
                continue;
            }
            if (cJSON_IsString(it)) {
                printf("  %s = %s\n", it->string, it->valuestring);
            } else {
                printf("  %s = %.0f\n", it->string, cJSON_GetNumberValue(it));
            }
        }
    }
    if (npos > 0 && !any) {
        fprintf(stderr, "roster: config get: no settings of the model '%s' (the flags apply)\n",
                pos[0]);
        code = EX_DATAERR;
    }
out:
    free(raw);
    cJSON_Delete(answer);
    return code;
}

/* config set MODEL KEY=VALUE...: numbers for the numeric settings, text
 * for routing and session_header; KEY= (empty) removes the setting. */
static int
config_set(const struct settings_opts *o, char **pos, int npos)
{
    cJSON *body = cJSON_CreateObject();
    cJSON *answer = NULL;
    char *text = NULL;
    int code = EX_USAGE;

    if (!body) {
        return EX_OSERR;
    }
    cJSON_AddStringToObject(body, "name", pos[0]);
    for (int i = 1; i < npos; i++) {
        const char *eq = strchr(pos[i], '=');
        char key[64];
        int64_t v;
        if (!eq || eq == pos[i] || (size_t)(eq - pos[i]) >= sizeof(key)) {
            fprintf(stderr, "roster: config set: '%s' is not KEY=VALUE\n", pos[i]);
            goto out;
        }
        snprintf(key, sizeof(key), "%.*s", (int)(eq - pos[i]), pos[i]);
        if (!eq[1]) {
            cJSON_AddNullToObject(body, key);
        } else if (strcmp(key, "routing") == 0 || strcmp(key, "session_header") == 0) {
            cJSON_AddStringToObject(body, key, eq + 1);
        } else if (util_parse_i64(eq + 1, 0, INT64_C(1000000000000), &v) == 0) {
            cJSON_AddNumberToObject(body, key, (double)v);
        } else {
            fprintf(stderr, "roster: config set: %s must be a number (milliseconds or a count)\n",
                    key);
            goto out;
        }
    }
    text = cJSON_PrintUnformatted(body);
    if (!text) {
        code = EX_OSERR;
        goto out;
    }
    code = ask(o, "config set", "PUT", "/api/roster/models", text, 200, &answer, NULL);
    if (code == 0) {
        printf("Settings of '%s' changed (settings version %.0f)\n", pos[0],
               num_field(answer, "version"));
    }
out:
    free(text);
    cJSON_Delete(answer);
    cJSON_Delete(body);
    return code;
}

static int
config_rm(const struct settings_opts *o, char **pos, int npos)
{
    (void)npos;
    return remove_named(o, "config rm", "Settings of", "/api/roster/models", pos[0], false,
                        "removed");
}

/* ---- the command tables ------------------------------------------------------------ */

static const char *const create_opts[] = {"controller_addr",
                                          "cluster_secret",
                                          "timeout_ms",
                                          "json",
                                          "models",
                                          "expires_at",
                                          "expires_in_days",
                                          "rpm",
                                          "tpm",
                                          "priority",
                                          NULL};
static const char *const list_opts[] = {"controller_addr", "cluster_secret", "timeout_ms", "json",
                                        NULL};
static const char *const revoke_opts[] = {"controller_addr", "cluster_secret", "timeout_ms",
                                          "purge", NULL};
static const char *const usage_opts[] = {"api_base", "timeout_ms", "json", NULL};
static const char *const change_opts[] = {"controller_addr", "cluster_secret", "timeout_ms", NULL};

static const struct settings_cmd key_cmds[] = {
    {"create",
     "create NAME [--models A,B] [--expires_at EPOCH_S | --expires_in_days DAYS] [--rpm N] "
     "[--tpm N] [--priority N] [--json]",
     "Creates an API key named NAME and prints it once, alone on the last line (or the "
     "controller's JSON with --json): store it then, it is not shown again (only its hash is "
     "kept).",
     create_opts, 1, 1, key_create},
    {"list", "list [--json]",
     "Lists the keys: name, prefix, models, limits, priority, expiry, revocation and creation "
     "(never a key or its hash).",
     list_opts, 0, 0, key_list},
    {"revoke", "revoke NAME [--purge]",
     "Revokes a key: every apiserver refuses it within a second; --purge deletes it instead "
     "(the name is free again).",
     revoke_opts, 1, 1, key_revoke},
    {"usage", "usage [NAME] --api_base URL[,URL...] [--json]",
     "Requests admitted, tokens (by kind) and requests refused (by reason) per key, summed "
     "over the /metrics of the "
     "apiservers of --api_base (counted since each apiserver started). Exit status 69 when "
     "one could not be read (the sums leave it out).",
     usage_opts, 0, 1, key_usage},
};

static const struct settings_cmd alias_cmds[] = {
    {"set", "set NAME MODEL[,MODEL...]",
     "Sets the alias NAME to the models, in order: the first routable one serves, the next ones "
     "are fallbacks.",
     change_opts, 2, -1, alias_set},
    {"list", "list [--json]", "Lists the aliases and their models.", list_opts, 0, 0, alias_list},
    {"rm", "rm NAME", "Removes an alias.", change_opts, 1, 1, alias_rm},
};

static const struct settings_cmd config_cmds[] = {
    {"get", "get [MODEL] [--json]",
     "Shows the per-model settings of the cluster (of MODEL only, if given); a setting not "
     "shown is the apiservers' flag.",
     list_opts, 0, 1, config_get},
    {"set", "set MODEL KEY=VALUE...",
     "Changes settings of MODEL (KEY= removes one): routing, max_attempts, "
     "first_byte_timeout_ms, idle_timeout_ms, request_timeout_ms, session_header, "
     "queue_timeout_ms, queue_max, probe_interval_ms, probe_timeout_ms.",
     change_opts, 2, -1, config_set},
    {"rm", "rm MODEL", "Removes every setting of MODEL (the flags apply again).", change_opts, 1, 1,
     config_rm},
};

static const struct settings_group config_group = {
    "config", cli_config_summary, cli_alias_flag_defs, config_cmds, UTIL_ARRAY_LEN(config_cmds)};

static const struct settings_group key_group = {"key", cli_key_summary, cli_key_flag_defs, key_cmds,
                                                UTIL_ARRAY_LEN(key_cmds)};
static const struct settings_group alias_group = {"alias", cli_alias_summary, cli_alias_flag_defs,
                                                  alias_cmds, UTIL_ARRAY_LEN(alias_cmds)};

/* The entries of the group's table that `c` takes, ended by {0}. */
static void
cmd_defs(const struct settings_group *g, const struct settings_cmd *c, struct flag_def *out)
{
    size_t n = 0;

    for (size_t i = 0; g->defs[i].name && n + 1 < MAX_OPTS; i++) {
        for (const char *const *p = c->opts; *p; p++) {
            if (strcmp(*p, g->defs[i].name) == 0) {
                out[n++] = g->defs[i];
                break;
            }
        }
    }
    memset(&out[n], 0, sizeof(out[n]));
}

static void
cmd_help(FILE *out, const struct settings_group *g, const struct settings_cmd *c)
{
    struct flag_def defs[MAX_OPTS];
    char usage[512];

    cmd_defs(g, c, defs);
    snprintf(usage, sizeof(usage), "roster %s %s", g->name, c->usage);
    flags_print_help(out, usage, c->summary, defs);
}

/* The group's help: usage lines, summary, "commands:" and one line per
 * command (cli_start.c's man page reads this shape). */
static void
group_help(FILE *out, const struct settings_group *g)
{
    for (size_t i = 0; i < g->ncmds; i++) {
        fprintf(out, "%s roster %s %s\n", i ? "      " : "usage:", g->name, g->cmds[i].usage);
    }
    fprintf(out, "\n%s\n\ncommands:\n", g->summary);
    for (size_t i = 0; i < g->ncmds; i++) {
        fprintf(out, "  %-8s %s\n", g->cmds[i].name, g->cmds[i].summary);
    }
    fprintf(out, "\nRun 'roster %s <command> --help' for the options of a command.\n", g->name);
}

/* Splits args[0..argc) into options (with their values) and positional
 * arguments, as flags_parse will read the options: "--name=v"; "--name v"
 * for a non-boolean option; "--bool [true|false...]"; "--" ends options.
 * An unknown option is left with the options, for flags_parse to report. */
static void
split_args(const struct flag_def *defs, int argc, char **args, char **opts, int *nopts, char **pos,
           int *npos)
{
    bool ended = false;

    *nopts = *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = args[i];
        const struct flag_def *d = NULL;
        char name[96];
        size_t n;
        bool b;

        if (ended || a[0] != '-' || strcmp(a, "-") == 0) {
            pos[(*npos)++] = args[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            ended = true;
            continue;
        }
        opts[(*nopts)++] = args[i];
        if (strncmp(a, "--", 2) != 0 || strchr(a, '=')) {
            continue;
        }
        n = strlen(a + 2) < sizeof(name) - 1 ? strlen(a + 2) : sizeof(name) - 1;
        for (size_t k = 0; k < n; k++) {
            name[k] = a[2 + k] == '-' ? '_' : a[2 + k];
        }
        name[n] = '\0';
        for (size_t k = 0; defs[k].name; k++) {
            if (strcmp(defs[k].name, name) == 0) {
                d = &defs[k];
            }
        }
        if (!d || i + 1 >= argc) {
            continue;
        }
        if (d->type != FLAG_BOOL || util_parse_bool(args[i + 1], &b) == 0) {
            opts[(*nopts)++] = args[++i];
        }
    }
}

static int
group_run(const struct settings_group *g, int argc, char **argv)
{
    struct flag_def defs[MAX_OPTS];
    enum flag_source src[MAX_OPTS];
    struct settings_opts o;
    const struct settings_cmd *c = NULL;
    char **opts = NULL, **pos = NULL;
    int nopts = 0, npos = 0;
    char err[256];
    int code;
    int rc;

    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        group_help(argc < 1 ? stderr : stdout, g);
        return argc < 1 ? EX_USAGE : 0;
    }
    for (size_t i = 0; i < g->ncmds; i++) {
        if (strcmp(g->cmds[i].name, argv[0]) == 0) {
            c = &g->cmds[i];
        }
    }
    if (!c) {
        fprintf(stderr, "roster: unknown %s command '%s'\n\n", g->name, argv[0]);
        group_help(stderr, g);
        return EX_USAGE;
    }
    opts = calloc((size_t)argc, sizeof(*opts));
    pos = calloc((size_t)argc, sizeof(*pos));
    if (!opts || !pos) {
        free(opts);
        free(pos);
        fprintf(stderr, "roster: out of memory\n");
        return EX_OSERR;
    }
    cmd_defs(g, c, defs);
    split_args(defs, argc - 1, argv + 1, opts, &nopts, pos, &npos);
    memset(&o, 0, sizeof(o));
    rc = flags_parse(defs, &o, nopts, opts, src, err, sizeof(err));
    if (rc == 1) {
        cmd_help(stdout, g, c);
        code = 0;
    } else if (rc != 0) {
        fprintf(stderr, "roster: %s %s: %s\n", g->name, c->name, err);
        code = EX_USAGE;
    } else if (npos < c->min_pos || (c->max_pos >= 0 && npos > c->max_pos)) {
        fprintf(stderr, "roster: %s %s: %s (usage: roster %s %s)\n", g->name, c->name,
                npos < c->min_pos ? "missing arguments" : "too many arguments", g->name, c->usage);
        code = EX_USAGE;
    } else {
        struct flag_group fg = {.defs = defs, .cfg = &o, .sources = src};
        (void)flags_scrub_secrets(&fg, 1, nopts, opts); /* opts point into argv */
        for (size_t i = 0; defs[i].name; i++) {
            if ((defs[i].flags & FLAG_SECRET) && src[i] == FLAG_FROM_ARGV) {
                fprintf(stderr,
                        "roster: warning: --%s on the command line can be read by other users; "
                        "prefer the environment\n",
                        defs[i].name);
            }
        }
        code = c->run(&o, pos, npos);
    }
    flags_cleanup(defs, &o);
    free(opts);
    free(pos);
    return code;
}

static int
group_cmd_run(const struct cli_cmd *self, int argc, char **argv)
{
    return group_run(self->data, argc, argv);
}

static void
group_cmd_help(const struct cli_cmd *self, FILE *out)
{
    group_help(out, self->data);
}

const struct cli_cmd cli_cmd_config = {
    .name = "config",
    .usage = "roster config get|set|rm [options]",
    .summary = "show and change per-model settings of the cluster (routing, timeouts, queue, "
               "probes)",
    .run = group_cmd_run,
    .help = group_cmd_help,
    .data = &config_group,
};

const struct cli_cmd cli_cmd_key = {
    .name = "key",
    .usage = "roster key create|list|revoke|usage [options]",
    .summary = "create, list and revoke API keys; per-key usage from the apiservers",
    .run = group_cmd_run,
    .help = group_cmd_help,
    .data = &key_group,
};

const struct cli_cmd cli_cmd_alias = {
    .name = "alias",
    .usage = "roster alias set|list|rm [options]",
    .summary = "set, list and remove model aliases (a name for an ordered list of models)",
    .run = group_cmd_run,
    .help = group_cmd_help,
    .data = &alias_group,
};
