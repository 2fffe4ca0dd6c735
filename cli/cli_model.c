/* SPDX-License-Identifier: MIT
 *
 * cli_model.c - `roster model list|set|start|stop|restart|chat`: look at
 * and steer the registry and the workers, DB-GPT's `dbgpt model` commands
 * with its flags (--model_name, --model_type, --host, --port).
 *
 * Controllers are asked through a comma-separated list (--controller_addr
 * or CONTROLLER_ADDRESS): the first that answers wins, as DB-GPT's CLI
 * does; when none can, the error says what each one said.
 *
 *   list     DB-GPT's columns (Model Name, Model Type, Host, Port, Healthy,
 *            Enabled, Prompt Template, Last Heartbeat) plus roster's Weight
 *            and Load, or the raw JSON with --json. Against a DB-GPT
 *            controller (which ignores view=full) the extra columns are
 *            blank.
 *   set      an operator's weight override or enabled flag for one
 *            instance (POST /api/roster/instance on a controller).
 *   start, stop, restart
 *            finds the instances of name@type in the registry (any health:
 *            a stopped instance is listed unhealthy and can be started
 *            again), keeps those at --host/--port when given, and sends
 *            each worker DB-GPT's POST /api/worker/apply, with the cluster
 *            secret when one is set (a worker without one accepts loopback
 *            clients only). One line per instance; exit 0 only if every
 *            worker applied.
 *   chat     cli_chat.c.
 *
 * Commands are a table; each names the options it accepts out of the one
 * option table (cli_model_flag_defs), which also makes --help and
 * docs/configuration.md.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "cli.h"
#include "flags.h"
#include "http_client.h"
#include "json_check.h"
#include "util.h"

#define MAX_LIST_BODY  (64u * 1024 * 1024)
#define MAX_JSON_DEPTH 32
#define MAX_OPTS       32

/* clang-format 14 would put the stringized name on a line of its own */
// clang-format off
#define F(name, type, def, lo, hi, env, fl, meta, help) \
    {#name, type, offsetof(struct cli_model_opts, name), def, lo, hi, env, fl, meta, help}
// clang-format on

/* What to act on (model, host, port, the change, the chat's settings) comes
 * from the command line only: run inside a role's container or unit, the
 * environment holds that role's own ROSTER_HOST, ROSTER_PORT,
 * ROSTER_MODEL_NAME..., which must not narrow or change a command. Where
 * to ask (controllers, API base, secrets, timeouts) may come from it. */
const struct flag_def cli_model_flag_defs[] = {
    F(controller_addr, FLAG_STR, "http://127.0.0.1:8000", 1, 0, "CONTROLLER_ADDRESS", 0, "URLS",
      "Controllers to ask, comma-separated; the first that answers wins."),
    F(model_name, FLAG_STR, NULL, 1, 0, NULL, FLAG_ARGV_ONLY, "NAME",
      "The model, 'name' (with --model_type) or 'name@type'. list: only this model (all when "
      "unset); every other command needs it (chat also takes -m)."),
    F(model_type, FLAG_STR, "llm", 1, 0, NULL, FLAG_ARGV_ONLY, "TYPE",
      "Worker type added to a --model_name without '@' (llm, text2vec, reranker)."),
    F(json, FLAG_BOOL, "false", 1, 0, NULL, FLAG_ARGV_ONLY, NULL,
      "list: print the controller's JSON."),
    F(host, FLAG_STR, NULL, 1, 0, NULL, FLAG_ARGV_ONLY, "HOST",
      "set: the instance's host. start, stop, restart: only the instances at this host."),
    F(port, FLAG_INT, "0", 0, 65535, NULL, FLAG_ARGV_ONLY, "PORT",
      "set: the instance's port. start, stop, restart: only the instances at this port (0: "
      "any)."),
    F(weight, FLAG_DOUBLE, "-1", -1, 1000000, NULL, FLAG_ARGV_ONLY, "W",
      "set: override the instance's weight (0 drains it: no new requests)."),
    F(clear_weight, FLAG_BOOL, "false", 1, 0, NULL, FLAG_ARGV_ONLY, NULL,
      "set: drop the override; the worker's declared weight applies again."),
    F(enabled, FLAG_STR, NULL, 1, 0, NULL, FLAG_ARGV_ONLY, "BOOL",
      "set: true puts the instance in rotation, false takes it out."),
    F(system, FLAG_STR, NULL, 1, 0, NULL, FLAG_ARGV_ONLY, "TEXT",
      "chat: a system prompt, sent first in every request of the conversation."),
    F(temperature, FLAG_DOUBLE, "-1", -1, 2, NULL, FLAG_ARGV_ONLY, "T",
      "chat: the sampling temperature, 0..2 (-1: the server's default)."),
    F(max_tokens, FLAG_INT, "0", 0, 1000000, NULL, FLAG_ARGV_ONLY, "N",
      "chat: the most tokens a reply may have (0: the server's default)."),
    F(api_base, FLAG_STR, NULL, 1, 0, NULL, 0, "URL",
      "chat: an OpenAI-compatible base URL (an apiserver's http://HOST:8100/v1) that gets the "
      "conversation, instead of an instance found through the controllers."),
    F(api_key, FLAG_STR, NULL, 1, 0, NULL, FLAG_SECRET, "KEY",
      "chat: the API key for --api_base (sent as a Bearer token)."),
    F(cluster_secret, FLAG_STR, NULL, 1, 0, NULL, FLAG_SECRET, "SECRET",
      "The cluster secret: needed by set, by start/stop/restart on workers that have one, and "
      "by the controllers' reads with --protect_reads."),
    F(timeout_ms, FLAG_INT, "5000", 100, 600000, NULL, 0, "MS",
      "Timeout of each request to a controller or a worker (chat: to connect)."),
    F(idle_timeout_ms, FLAG_INT, "60000", 100, 3600000, NULL, 0, "MS",
      "chat: give up on a reply after this long without data."),
    {0},
};

const char cli_model_summary[] =
    "Lists the registered model instances and changes an instance's weight or enabled flag "
    "(through the first controller of --controller_addr that answers), starts, stops or "
    "restarts a model on its workers, and chats with a model.";

/* ---- talking to controllers ------------------------------------------------ */

/* Appends to what the controllers said; past its cap the start is enough. */
static void __attribute__((format(printf, 2, 3))) note(struct buf *b, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (buf_vprintf(b, fmt, ap) != 0) {
        /* over the cap: keep what is there */
    }
    va_end(ap);
}

int
cli_ask_controllers(const struct cli_model_opts *o, const char *method, const char *path,
                    const char *body, struct http_client_response *resp)
{
    char *list = strdup(o->controller_addr ? o->controller_addr : "");
    char *save = NULL;
    char secret_hdr[600];
    const char *headers[3] = {"Content-Type: application/json", NULL, NULL};
    char first_url[2048] = "";
    struct buf said; /* what each controller said, "; "-separated */
    int tried = 0, answered = 0;
    int rc = -1;

    if (!list) {
        fprintf(stderr, "roster: out of memory\n");
        return -1;
    }
    buf_init(&said, 4096);
    if (o->cluster_secret && *o->cluster_secret) {
        snprintf(secret_hdr, sizeof(secret_hdr), "X-Roster-Secret: %s", o->cluster_secret);
        headers[1] = secret_hdr;
    }
    for (char *a = strtok_r(list, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
        char url[2048], shown[2048];
        char err[256];
        char msg[320];
        size_t n;

        while (*a == ' ') {
            a++;
        }
        n = strlen(a);
        while (n && (a[n - 1] == '/' || a[n - 1] == ' ')) {
            a[--n] = '\0';
        }
        if (!*a) {
            continue;
        }
        snprintf(url, sizeof(url), "%s%s%s", strstr(a, "://") ? "" : "http://", a, path);
        if (!tried++) {
            util_url_redact(url, first_url, sizeof(first_url));
        }
        util_url_redact(a, shown, sizeof(shown)); /* printed instead of a */
        if (http_client_request(method, url, body, body ? strlen(body) : 0, headers,
                                (int)o->timeout_ms, MAX_LIST_BODY, resp, err, sizeof(err)) != 0) {
            note(&said, "%s%s: %s", said.len ? "; " : "", shown, err);
            continue;
        }
        if (resp->status >= 500) {
            json_error_message(resp->body.data, resp->body.len, msg, sizeof(msg));
            note(&said, "%s%s: HTTP %ld: %s", said.len ? "; " : "", shown, resp->status, msg);
            if (!answered++) {
                /* the first answer in full, for a single controller */
                snprintf(first_url + strlen(first_url), sizeof(first_url) - strlen(first_url),
                         " answered HTTP %ld: %s", resp->status, msg);
            }
            http_client_response_cleanup(resp);
            continue;
        }
        rc = 0;
        break;
    }
    if (rc == 0) {
        goto out;
    }
    if (!tried) {
        fprintf(stderr, "roster: no controller address given (--controller_addr or "
                        "CONTROLLER_ADDRESS)\n");
    } else if (!answered) {
        fprintf(stderr, "roster: no controller answered (%s)\n", buf_str(&said));
    } else if (tried == 1) {
        fprintf(stderr, "roster: the controller at %s\n", first_url);
    } else {
        fprintf(stderr, "roster: no controller could answer: %s\n", buf_str(&said));
    }
out:
    buf_cleanup(&said);
    free(list);
    return rc;
}

/* The server's error message (OpenAI's shape, FastAPI's detail, ...). */
static void
print_error(const char *what, const struct http_client_response *resp)
{
    char msg[320];

    json_error_message(resp->body.data, resp->body.len, msg, sizeof(msg));
    fprintf(stderr, "roster: %sHTTP %ld: %s\n", what, resp->status, msg);
}

int
cli_full_name(const struct cli_model_opts *o, char *out, size_t cap)
{
    const char *type = o->model_type && *o->model_type ? o->model_type : "llm";
    bool has_type = strchr(o->model_name, '@') != NULL;
    int n = snprintf(out, cap, "%s%s%s", o->model_name, has_type ? "" : "@", has_type ? "" : type);

    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* Appends "&model_name=<percent-encoded name@type>" when a model is given.
 * Returns 0, or -1 if it does not fit. */
static int
model_query(const struct cli_model_opts *o, struct buf *path)
{
    static const char hex[] = "0123456789ABCDEF";
    char full[300];
    int rc = 0;

    if (!o->model_name || !*o->model_name) {
        return 0;
    }
    if (cli_full_name(o, full, sizeof(full)) != 0) {
        return -1;
    }
    rc |= buf_puts(path, "&model_name=");
    for (const char *p = full; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-._~", c)) {
            rc |= buf_putc(path, (char)c);
        } else {
            char esc[4] = {'%', hex[c >> 4], hex[c & 15], '\0'};
            rc |= buf_puts(path, esc);
        }
    }
    return rc ? -1 : 0;
}

/* The list answer for `o` (view=full), or NULL after printing why. With
 * `raw`, *raw receives the body instead of a parse (caller frees). */
static cJSON *
fetch_instances(const struct cli_model_opts *o, bool routable_only, char **raw, int *code)
{
    struct http_client_response resp;
    struct buf path;
    char err[128];
    cJSON *arr = NULL;

    buf_init(&path, 4096);
    if (buf_puts(&path, routable_only ? "/api/controller/models?view=full&healthy_only=true"
                                      : "/api/controller/models?view=full") != 0 ||
        model_query(o, &path) != 0) {
        fprintf(stderr, "roster: --model_name is too long\n");
        *code = EX_USAGE;
        buf_cleanup(&path);
        return NULL;
    }
    if (cli_ask_controllers(o, "GET", buf_str(&path), NULL, &resp) != 0) {
        *code = EX_UNAVAILABLE;
        buf_cleanup(&path);
        return NULL;
    }
    buf_cleanup(&path);
    if (resp.status != 200) {
        print_error("the controller answered ", &resp);
        *code = EX_DATAERR;
    } else if (raw) {
        *raw = buf_take(&resp.body);
        *code = *raw ? 0 : EX_OSERR;
    } else if (json_parse(resp.body.data, resp.body.len, MAX_JSON_DEPTH, &arr, err, sizeof(err)) !=
                   0 ||
               !cJSON_IsArray(arr)) {
        fprintf(stderr, "roster: the controller's answer is not a JSON list\n");
        cJSON_Delete(arr);
        arr = NULL;
        *code = EX_PROTOCOL;
    }
    http_client_response_cleanup(&resp);
    return arr;
}

cJSON *
cli_model_instances(const struct cli_model_opts *o, bool routable_only, int *code)
{
    return fetch_instances(o, routable_only, NULL, code);
}

/* ---- list --------------------------------------------------------------------- */

static size_t
display_width(const char *s)
{
    size_t n = 0;

    for (; *s; s++) {
        n += ((unsigned char)*s & 0xc0) != 0x80; /* count code points */
    }
    return n;
}

#define NCOLS 10

static const char *const columns[NCOLS] = {
    "Model Name", "Model Type",      "Host",           "Port",   "Healthy",
    "Enabled",    "Prompt Template", "Last Heartbeat", "Weight", "Load"};

static void
row_cells(const cJSON *it, char cells[NCOLS][160])
{
    const cJSON *name = json_get(it, "model_name");
    const cJSON *load = json_get(it, "load");
    const char *full = cJSON_IsString(name) ? name->valuestring : "";
    const char *at = strchr(full, '@');
    const cJSON *v;

    snprintf(cells[0], 160, "%.*s", at ? (int)(at - full) : (int)strlen(full), full);
    snprintf(cells[1], 160, "%s", at ? at + 1 : "");
    v = json_get(it, "host");
    snprintf(cells[2], 160, "%s", cJSON_IsString(v) ? v->valuestring : "");
    v = json_get(it, "port");
    snprintf(cells[3], 160, "%d", cJSON_IsNumber(v) ? v->valueint : 0);
    snprintf(cells[4], 160, "%s", cJSON_IsTrue(json_get(it, "healthy")) ? "True" : "False");
    snprintf(cells[5], 160, "%s", cJSON_IsTrue(json_get(it, "enabled")) ? "True" : "False");
    v = json_get(it, "prompt_template");
    snprintf(cells[6], 160, "%s", cJSON_IsString(v) ? v->valuestring : "");
    v = json_get(it, "last_heartbeat");
    snprintf(cells[7], 160, "%s", cJSON_IsString(v) ? v->valuestring : "");
    v = json_get(it, "weight");
    if (cJSON_IsNumber(v)) {
        util_format_double(v->valuedouble, cells[8], 160);
    } else {
        cells[8][0] = '\0';
    }
    if (cJSON_IsObject(load)) {
        const cJSON *f = json_get(load, "in_flight");
        const cJSON *c = json_get(load, "capacity");
        const cJSON *q = json_get(load, "queue_length");
        snprintf(cells[9], 160, "%d/%d q=%d", cJSON_IsNumber(f) ? f->valueint : 0,
                 cJSON_IsNumber(c) ? c->valueint : 0, cJSON_IsNumber(q) ? q->valueint : 0);
    } else {
        cells[9][0] = '\0';
    }
}

static void
rule(const size_t *w)
{
    for (int c = 0; c < NCOLS; c++) {
        printf("+");
        for (size_t i = 0; i < w[c] + 2; i++) {
            putchar('-');
        }
    }
    printf("+\n");
}

static void
print_row(const size_t *w, char cells[NCOLS][160])
{
    for (int c = 0; c < NCOLS; c++) {
        printf("| %s%*s ", cells[c], (int)(w[c] - display_width(cells[c])), "");
    }
    printf("|\n");
}

static void
print_table(const cJSON *arr)
{
    size_t w[NCOLS];
    char cells[NCOLS][160];
    const cJSON *it;

    for (int c = 0; c < NCOLS; c++) {
        w[c] = display_width(columns[c]);
    }
    cJSON_ArrayForEach(it, arr)
    {
        row_cells(it, cells);
        for (int c = 0; c < NCOLS; c++) {
            size_t dw = display_width(cells[c]);
            w[c] = dw > w[c] ? dw : w[c];
        }
    }
    rule(w);
    for (int c = 0; c < NCOLS; c++) {
        snprintf(cells[c], 160, "%s", columns[c]);
    }
    print_row(w, cells);
    rule(w);
    cJSON_ArrayForEach(it, arr)
    {
        row_cells(it, cells);
        print_row(w, cells);
    }
    rule(w);
}

static int
cmd_list(const struct cli_model_opts *o, const char *name)
{
    char *raw = NULL;
    int code = 0;
    cJSON *arr;

    (void)name;
    if (o->json) {
        fetch_instances(o, false, &raw, &code);
        if (raw) {
            printf("%s\n", raw);
            free(raw);
        }
        return code;
    }
    arr = fetch_instances(o, false, NULL, &code);
    if (arr) {
        print_table(arr);
        cJSON_Delete(arr);
    }
    return code;
}

/* ---- set ---------------------------------------------------------------------- */

static int
cmd_set(const struct cli_model_opts *o, const char *name)
{
    struct http_client_response resp;
    cJSON *body = cJSON_CreateObject();
    char full[300];
    char *text = NULL;
    bool enabled = false;
    int code = EX_USAGE;

    (void)name;
    if (!o->model_name || !o->host || o->port <= 0) {
        fprintf(stderr, "roster: model set needs --model_name, --host and --port\n");
        goto out;
    }
    if (o->weight < 0 && !o->clear_weight && !o->enabled) {
        fprintf(stderr, "roster: model set needs --weight, --clear_weight or --enabled\n");
        goto out;
    }
    if (o->enabled && util_parse_bool(o->enabled, &enabled) != 0) {
        fprintf(stderr, "roster: --enabled must be true or false\n");
        goto out;
    }
    if (!body || cli_full_name(o, full, sizeof(full)) != 0) {
        fprintf(stderr, "roster: --model_name is too long\n");
        goto out;
    }
    cJSON_AddStringToObject(body, "model_name", full);
    cJSON_AddStringToObject(body, "host", o->host);
    cJSON_AddNumberToObject(body, "port", (double)o->port);
    if (o->clear_weight) {
        cJSON_AddNullToObject(body, "weight");
    } else if (o->weight >= 0) {
        cJSON_AddNumberToObject(body, "weight", o->weight);
    }
    if (o->enabled) {
        cJSON_AddBoolToObject(body, "enabled", enabled);
    }
    text = cJSON_PrintUnformatted(body);
    if (!text || cli_ask_controllers(o, "POST", "/api/roster/instance", text, &resp) != 0) {
        code = EX_UNAVAILABLE;
        goto out;
    }
    if (resp.status == 200) {
        printf("%s\n", buf_str(&resp.body));
        code = 0;
    } else {
        print_error("the controller answered ", &resp);
        code = EX_DATAERR;
    }
    http_client_response_cleanup(&resp);
out:
    cJSON_free(text);
    cJSON_Delete(body);
    return code;
}

/* ---- start, stop, restart ---------------------------------------------------- */

/* "host:port", with brackets around an IPv6 literal. */
static void
host_port(const char *host, int port, char *out, size_t cap)
{
    bool v6 = strchr(host, ':') != NULL;

    snprintf(out, cap, "%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", port);
}

/* POST /api/worker/apply to one worker; prints one line. Returns 0, or the
 * exit code of the failure. */
static int
apply_one(const struct cli_model_opts *o, const char *host, int port, const char *full,
          const char *apply_type)
{
    struct http_client_response resp;
    char addr[300], url[400], err[256], msg[320];
    char secret_hdr[600];
    const char *headers[3] = {"Content-Type: application/json", NULL, NULL};
    const char *at = strchr(full, '@');
    cJSON *body = cJSON_CreateObject();
    cJSON *answer = NULL;
    char *text = NULL;
    char model[256];
    int code = 1;

    host_port(host, port, addr, sizeof(addr));
    snprintf(url, sizeof(url), "http://%s/api/worker/apply", addr);
    snprintf(model, sizeof(model), "%.*s", (int)(at - full), full);
    if (o->cluster_secret && *o->cluster_secret) {
        snprintf(secret_hdr, sizeof(secret_hdr), "X-Roster-Secret: %s", o->cluster_secret);
        headers[1] = secret_hdr;
    }
    if (!body || !cJSON_AddStringToObject(body, "model", model) ||
        !cJSON_AddStringToObject(body, "apply_type", apply_type) ||
        !cJSON_AddStringToObject(body, "worker_type", at + 1) ||
        !(text = cJSON_PrintUnformatted(body))) {
        fprintf(stderr, "roster: out of memory\n");
        code = EX_OSERR;
        goto out;
    }
    if (http_client_request("POST", url, text, strlen(text), headers, (int)o->timeout_ms, 64 * 1024,
                            &resp, err, sizeof(err)) != 0) {
        fprintf(stderr, "roster: %s %s: cannot reach the worker: %s\n", addr, full, err);
        code = EX_UNAVAILABLE;
        goto out;
    }
    json_error_message(resp.body.data, resp.body.len, msg, sizeof(msg));
    if (resp.status == 200 &&
        json_parse(resp.body.data, resp.body.len, MAX_JSON_DEPTH, &answer, err, sizeof(err)) == 0 &&
        cJSON_IsObject(answer)) {
        /* DB-GPT's WorkerApplyOutput: {message, success, timecost} */
        const cJSON *ok = json_get(answer, "success");
        if (cJSON_IsTrue(ok)) {
            printf("%s %s: %s\n", addr, full, msg);
            code = 0;
        } else {
            fprintf(stderr, "roster: %s %s: the worker did not %s it: %s\n", addr, full, apply_type,
                    msg);
        }
    } else if (resp.status == 200) {
        fprintf(stderr, "roster: %s %s: the worker's answer is not DB-GPT's WorkerApplyOutput\n",
                addr, full);
        code = EX_PROTOCOL;
    } else if (resp.status == 401 || resp.status == 403) {
        fprintf(stderr, "roster: %s %s: the worker refused (HTTP %ld): %s%s\n", addr, full,
                resp.status, msg,
                o->cluster_secret && *o->cluster_secret
                    ? ""
                    : " (give the cluster secret: --cluster_secret or ROSTER_CLUSTER_SECRET)");
        code = EX_NOPERM;
    } else {
        fprintf(stderr, "roster: %s %s: the worker refused (HTTP %ld): %s\n", addr, full,
                resp.status, msg);
    }
    http_client_response_cleanup(&resp);
out:
    cJSON_Delete(answer);
    cJSON_free(text);
    cJSON_Delete(body);
    return code;
}

static int
cmd_apply(const struct cli_model_opts *o, const char *apply_type)
{
    char full[300];
    char where[300] = "";
    cJSON *arr = NULL;
    const cJSON *it;
    int code = 0, matched = 0, listed = 0;

    if (!o->model_name || !*o->model_name) {
        fprintf(stderr, "roster: model %s needs --model_name\n", apply_type);
        return EX_USAGE;
    }
    if (cli_full_name(o, full, sizeof(full)) != 0) {
        fprintf(stderr, "roster: --model_name is too long\n");
        return EX_USAGE;
    }
    arr = fetch_instances(o, false, NULL, &code);
    if (!arr) {
        return code;
    }
    if (o->host && o->port > 0) {
        snprintf(where, sizeof(where), " at %s:%d", o->host, (int)o->port);
    } else if (o->host) {
        snprintf(where, sizeof(where), " at host %s", o->host);
    } else if (o->port > 0) {
        snprintf(where, sizeof(where), " at port %d", (int)o->port);
    }
    cJSON_ArrayForEach(it, arr)
    {
        const cJSON *name = json_get(it, "model_name");
        const cJSON *host = json_get(it, "host");
        const cJSON *port = json_get(it, "port");
        if (!cJSON_IsString(name) || strcmp(name->valuestring, full) != 0 ||
            !cJSON_IsString(host) || !cJSON_IsNumber(port)) {
            continue;
        }
        listed++;
        if ((o->host && strcmp(o->host, host->valuestring) != 0) ||
            (o->port > 0 && o->port != port->valueint)) {
            continue;
        }
        matched++;
        int rc = apply_one(o, host->valuestring, port->valueint, full, apply_type);
        if (rc != 0 && code == 0) {
            code = rc; /* the first failure decides the exit code */
        }
    }
    if (!matched) {
        if (listed) {
            fprintf(stderr,
                    "roster: none of the %d instance(s) of %s is%s (see roster model "
                    "list --model_name %s)\n",
                    listed, full, where, full);
        } else {
            fprintf(stderr, "roster: no instance of %s is registered\n", full);
        }
        code = EX_DATAERR;
    }
    cJSON_Delete(arr);
    return code;
}

/* start, stop and restart: `name` is the apply_type */
static int
cmd_worker_apply(const struct cli_model_opts *o, const char *name)
{
    return cmd_apply(o, name);
}

static int
cmd_chat(const struct cli_model_opts *o, const char *name)
{
    (void)name;
    return cli_chat(o);
}

/* ---- the command table ---------------------------------------------------------- */

struct model_cmd {
    const char *name;
    const char *usage; /* after "roster model " */
    const char *summary;
    const char *const *opts; /* the options it takes, from cli_model_flag_defs */
    int (*run)(const struct cli_model_opts *o, const char *name);
};

static const char *const list_opts[] = {"controller_addr", "model_name", "model_type", "json",
                                        "cluster_secret",  "timeout_ms", NULL};
static const char *const set_opts[] = {
    "controller_addr", "model_name", "model_type",     "host",       "port", "weight",
    "clear_weight",    "enabled",    "cluster_secret", "timeout_ms", NULL};
static const char *const apply_opts[] = {
    "controller_addr", "model_name", "model_type", "host", "port",
    "cluster_secret",  "timeout_ms", NULL};
static const char *const chat_opts[] = {
    "controller_addr", "model_name", "system",          "temperature",    "max_tokens", "api_base",
    "api_key",         "timeout_ms", "idle_timeout_ms", "cluster_secret", NULL};

static const struct model_cmd commands[] = {
    {"list", "list [--model_name NAME [--model_type TYPE]] [--json]",
     "Lists the registered instances (all models, or one) as DB-GPT's table plus roster's "
     "weight and load, or as the controller's JSON.",
     list_opts, cmd_list},
    {"set",
     "set --model_name NAME --host HOST --port PORT [--weight W | --clear_weight] "
     "[--enabled true|false]",
     "Sets an operator's weight override (0 drains) or the enabled flag of one instance.", set_opts,
     cmd_set},
    {"start", "start --model_name NAME [--model_type TYPE] [--host HOST] [--port PORT]",
     "Starts the model on every worker that has an instance of it registered (or those at "
     "--host/--port): it serves and joins the routable set again. Exit status 0 only when every "
     "worker applied.",
     apply_opts, cmd_worker_apply},
    {"stop", "stop --model_name NAME [--model_type TYPE] [--host HOST] [--port PORT]",
     "Stops the model on its workers (or those at --host/--port): they deregister it and refuse "
     "its requests (503) until it is started. Exit status 0 only when every worker applied.",
     apply_opts, cmd_worker_apply},
    {"restart", "restart --model_name NAME [--model_type TYPE] [--host HOST] [--port PORT]",
     "Restarts the model on its workers (or those at --host/--port): deregistered, then "
     "registered afresh. Exit status 0 only when every worker applied.",
     apply_opts, cmd_worker_apply},
    {"chat",
     "chat --model_name NAME [--system TEXT] [--temperature T] [--max_tokens N] "
     "[--api_base URL]",
     "A streamed conversation with an llm, through a routable instance found by the controllers "
     "or through --api_base. Type a message and Enter; /clear (or /reset) starts over, /exit or "
     "Ctrl-D leaves; Ctrl-C stops a reply, and leaves at the prompt. With stdin not a terminal, "
     "each line is one message and the replies are printed.",
     chat_opts, cmd_chat},
};

static const struct model_cmd *
find_cmd(const char *name)
{
    for (size_t i = 0; i < UTIL_ARRAY_LEN(commands); i++) {
        if (strcmp(commands[i].name, name) == 0) {
            return &commands[i];
        }
    }
    return NULL;
}

/* The entries of cli_model_flag_defs that `c` takes, ended by {0}. */
static void
cmd_defs(const struct model_cmd *c, struct flag_def *out)
{
    size_t n = 0;

    for (size_t i = 0; cli_model_flag_defs[i].name && n + 1 < MAX_OPTS; i++) {
        for (const char *const *p = c->opts; *p; p++) {
            if (strcmp(*p, cli_model_flag_defs[i].name) == 0) {
                out[n++] = cli_model_flag_defs[i];
                break;
            }
        }
    }
    memset(&out[n], 0, sizeof(out[n]));
}

static void
cmd_help(FILE *out, const struct model_cmd *c)
{
    struct flag_def defs[MAX_OPTS];
    char usage[512];

    cmd_defs(c, defs);
    snprintf(usage, sizeof(usage), "roster model %s", c->usage);
    flags_print_help(out, usage, c->summary, defs);
}

static void
help(const struct cli_cmd *self, FILE *out)
{
    (void)self;
    for (size_t i = 0; i < UTIL_ARRAY_LEN(commands); i++) {
        fprintf(out, "%s roster model %s\n", i ? "      " : "usage:", commands[i].usage);
    }
    fprintf(out, "\n%s\n\ncommands:\n", cli_model_summary);
    for (size_t i = 0; i < UTIL_ARRAY_LEN(commands); i++) {
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    }
    fprintf(out, "\nRun 'roster model <command> --help' for the options of a command.\n");
}

static int
run(const struct cli_cmd *self, int argc, char **argv)
{
    struct flag_def defs[MAX_OPTS];
    enum flag_source src[MAX_OPTS];
    struct cli_model_opts o;
    const struct model_cmd *c;
    char **args = NULL;
    char m_flag[] = "--model_name"; /* writable: flags_scrub_secrets writes into args */
    char err[256];
    int code;
    int rc;

    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        help(self, argc < 1 ? stderr : stdout);
        return argc < 1 ? EX_USAGE : 0;
    }
    c = find_cmd(argv[0]);
    if (!c) {
        fprintf(stderr, "roster: unknown model command '%s'\n\n", argv[0]);
        help(self, stderr);
        return EX_USAGE;
    }
    /* DB-GPT's `dbgpt model chat -m NAME` */
    args = calloc((size_t)argc, sizeof(*args));
    if (!args) {
        fprintf(stderr, "roster: out of memory\n");
        return EX_OSERR;
    }
    for (int i = 1; i < argc; i++) {
        args[i - 1] = strcmp(argv[i], "-m") == 0 ? m_flag : argv[i];
    }
    cmd_defs(c, defs);
    memset(&o, 0, sizeof(o));
    rc = flags_parse(defs, &o, argc - 1, args, src, err, sizeof(err));
    if (rc == 1) {
        cmd_help(stdout, c);
        code = 0;
    } else if (rc != 0) {
        fprintf(stderr, "roster: model %s: %s\n", c->name, err);
        code = EX_USAGE;
    } else {
        struct flag_group g = {.defs = defs, .cfg = &o, .sources = src};
        (void)flags_scrub_secrets(&g, 1, argc - 1, args); /* args point into argv */
        for (size_t i = 0; defs[i].name; i++) {
            if ((defs[i].flags & FLAG_SECRET) && src[i] == FLAG_FROM_ARGV) {
                fprintf(stderr,
                        "roster: warning: --%s on the command line can be read by other users; "
                        "prefer the environment\n",
                        defs[i].name);
            }
        }
        code = c->run(&o, c->name);
    }
    flags_cleanup(defs, &o);
    free(args);
    return code;
}

const struct cli_cmd cli_cmd_model = {
    .name = "model",
    .usage = "roster model list|set|start|stop|restart|chat [options]",
    .summary = "list model instances, change their weight or state, chat with a model",
    .run = run,
    .help = help,
};
