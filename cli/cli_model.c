/* SPDX-License-Identifier: MIT
 *
 * cli_model.c - `roster model list|set`: look at and steer the registry
 * through any controller of a comma-separated list (the first that answers
 * wins, as DB-GPT's CLI does with CONTROLLER_ADDRESS).
 *
 * `list` prints DB-GPT's columns (Model Name, Model Type, Host, Port,
 * Healthy, Enabled, Prompt Template, Last Heartbeat) plus roster's Weight
 * and Load, or the raw JSON with --json. Against a DB-GPT controller (which
 * ignores view=full) the extra columns are blank.
 */
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

struct model_opts {
    char *controller_addr;
    char *model_name;
    char *model_type;
    bool json;
    char *host;
    int64_t port;
    double weight;
    bool clear_weight;
    char *enabled;
    char *cluster_secret;
    int64_t timeout_ms;
};

/* clang-format 14 would put the stringized name on a line of its own */
// clang-format off
#define F(name, type, def, lo, hi, env, fl, meta, help) \
    {#name, type, offsetof(struct model_opts, name), def, lo, hi, env, fl, meta, help}
// clang-format on

const struct flag_def cli_model_flag_defs[] = {
    F(controller_addr, FLAG_STR, "http://127.0.0.1:8000", 1, 0, "CONTROLLER_ADDRESS", 0, "URLS",
      "Controllers to ask, comma-separated; the first that answers wins."),
    F(model_name, FLAG_STR, NULL, 1, 0, NULL, 0, "NAME",
      "list: only this model ('name' with --model_type, or 'name@type'). set: the instance's "
      "model."),
    F(model_type, FLAG_STR, "llm", 1, 0, NULL, 0, "TYPE",
      "Worker type added to a --model_name without '@' (llm, text2vec, reranker)."),
    F(json, FLAG_BOOL, "false", 1, 0, NULL, 0, NULL, "list: print the controller's JSON."),
    F(host, FLAG_STR, NULL, 1, 0, NULL, 0, "HOST", "set: the instance's host."),
    F(port, FLAG_INT, "0", 0, 65535, NULL, 0, "PORT", "set: the instance's port."),
    F(weight, FLAG_DOUBLE, "-1", -1, 1000000, NULL, 0, "W",
      "set: override the instance's weight (0 drains it: no new requests)."),
    F(clear_weight, FLAG_BOOL, "false", 1, 0, NULL, 0, NULL,
      "set: drop the override; the worker's declared weight applies again."),
    F(enabled, FLAG_STR, NULL, 1, 0, NULL, 0, "BOOL",
      "set: true puts the instance in rotation, false takes it out."),
    F(cluster_secret, FLAG_STR, NULL, 1, 0, NULL, FLAG_SECRET, "SECRET",
      "The controllers' cluster secret (needed for set, and for list with --protect_reads)."),
    F(timeout_ms, FLAG_INT, "5000", 100, 600000, NULL, 0, "MS", "Per-controller request timeout."),
    {0},
};

const char cli_model_summary[] =
    "Lists the registered model instances, or changes an instance's weight or enabled flag, "
    "through the first controller of --controller_addr that answers.";

/* Asks each controller in turn; returns 0 with the response of the first
 * that answered with a status below 500. */
static int
ask(const struct model_opts *o, const char *method, const char *path, const char *body,
    struct http_client_response *resp)
{
    char *list = strdup(o->controller_addr);
    char *save = NULL;
    char secret_hdr[600];
    const char *headers[3] = {"Content-Type: application/json", NULL, NULL};
    char last[512] = "no controller address given";
    int rc = -1;

    if (!list) {
        return -1;
    }
    if (o->cluster_secret && *o->cluster_secret) {
        snprintf(secret_hdr, sizeof(secret_hdr), "X-Roster-Secret: %s", o->cluster_secret);
        headers[1] = secret_hdr;
    }
    for (char *a = strtok_r(list, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
        char url[2048];
        char err[256];
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
        if (http_client_request(method, url, body, body ? strlen(body) : 0, headers,
                                (int)o->timeout_ms, 64 * 1024 * 1024, resp, err,
                                sizeof(err)) != 0) {
            snprintf(last, sizeof(last), "%s: %s", a, err);
            continue;
        }
        if (resp->status >= 500) {
            snprintf(last, sizeof(last), "%s: HTTP %ld: %.200s", a, resp->status,
                     buf_str(&resp->body));
            http_client_response_cleanup(resp);
            continue;
        }
        rc = 0;
        break;
    }
    if (rc != 0) {
        fprintf(stderr, "roster: no controller answered (%s)\n", last);
    }
    free(list);
    return rc;
}

/* The server's error message from an OpenAI-shaped error body. */
static void
print_error(const struct http_client_response *resp)
{
    cJSON *root = cJSON_Parse(buf_str(&resp->body));
    const cJSON *e = root ? json_get(root, "error") : NULL;
    const cJSON *m = e ? json_get(e, "message") : NULL;

    fprintf(stderr, "roster: HTTP %ld: %s\n", resp->status,
            cJSON_IsString(m) ? m->valuestring : buf_str(&resp->body));
    cJSON_Delete(root);
}

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

static const char *const headers[NCOLS] = {
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

static int
print_table(const cJSON *arr)
{
    size_t w[NCOLS];
    char cells[NCOLS][160];
    const cJSON *it;

    for (int c = 0; c < NCOLS; c++) {
        w[c] = display_width(headers[c]);
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
        snprintf(cells[c], 160, "%s", headers[c]);
    }
    print_row(w, cells);
    rule(w);
    cJSON_ArrayForEach(it, arr)
    {
        row_cells(it, cells);
        print_row(w, cells);
    }
    rule(w);
    return 0;
}

/* Appends "&model_name=<percent-encoded name[@type]>" when a model is given.
 * Returns 0, or -1 if the path grew past its cap. */
static int
model_query(const struct model_opts *o, struct buf *path)
{
    int rc = 0;

    static const char hex[] = "0123456789ABCDEF";
    char full[300];

    if (!o->model_name || !*o->model_name) {
        return 0;
    }
    snprintf(full, sizeof(full), "%s%s%s", o->model_name, strchr(o->model_name, '@') ? "" : "@",
             strchr(o->model_name, '@') ? "" : o->model_type);
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

static int
cmd_list(const struct model_opts *o)
{
    struct http_client_response resp;
    struct buf path;
    cJSON *arr = NULL;
    int code = EX_UNAVAILABLE;

    buf_init(&path, 4096);
    if (buf_puts(&path, "/api/controller/models?view=full") != 0 || model_query(o, &path) != 0) {
        fprintf(stderr, "roster: --model_name is too long\n");
        buf_cleanup(&path);
        return EX_USAGE;
    }
    if (ask(o, "GET", buf_str(&path), NULL, &resp) != 0) {
        buf_cleanup(&path);
        return EX_UNAVAILABLE;
    }
    if (resp.status != 200) {
        print_error(&resp);
        code = EX_DATAERR;
    } else if (o->json) {
        printf("%s\n", buf_str(&resp.body));
        code = 0;
    } else {
        arr = cJSON_Parse(buf_str(&resp.body));
        if (!cJSON_IsArray(arr)) {
            fprintf(stderr, "roster: the controller's answer is not a JSON list\n");
            code = EX_PROTOCOL;
        } else {
            code = print_table(arr);
        }
    }
    cJSON_Delete(arr);
    http_client_response_cleanup(&resp);
    buf_cleanup(&path);
    return code;
}

static int
cmd_set(const struct model_opts *o)
{
    struct http_client_response resp;
    cJSON *body = cJSON_CreateObject();
    char full[300];
    char *text = NULL;
    bool enabled = false;
    int code = EX_USAGE;

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
    snprintf(full, sizeof(full), "%s%s%s", o->model_name, strchr(o->model_name, '@') ? "" : "@",
             strchr(o->model_name, '@') ? "" : o->model_type);
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
    if (!text || ask(o, "POST", "/api/roster/instance", text, &resp) != 0) {
        code = EX_UNAVAILABLE;
        goto out;
    }
    if (resp.status == 200) {
        printf("%s\n", buf_str(&resp.body));
        code = 0;
    } else {
        print_error(&resp);
        code = EX_DATAERR;
    }
    http_client_response_cleanup(&resp);
out:
    cJSON_free(text);
    cJSON_Delete(body);
    return code;
}

static void
help(FILE *out)
{
    fprintf(out,
            "usage: roster model list [--model_name NAME] [--json]\n"
            "       roster model set --model_name NAME --host HOST --port PORT\n"
            "                        [--weight W | --clear_weight] [--enabled true|false]\n\n");
    flags_print_help(out, "roster model list|set [options]", cli_model_summary,
                     cli_model_flag_defs);
}

static int
run(int argc, char **argv)
{
    struct model_opts o;
    char err[256];
    int code;
    int rc;

    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        help(argc < 1 ? stderr : stdout);
        return argc < 1 ? EX_USAGE : 0;
    }
    memset(&o, 0, sizeof(o));
    rc = flags_parse(cli_model_flag_defs, &o, argc - 1, argv + 1, NULL, err, sizeof(err));
    if (rc == 1) {
        help(stdout);
        code = 0;
    } else if (rc != 0) {
        fprintf(stderr, "roster: %s\n", err);
        code = EX_USAGE;
    } else if (strcmp(argv[0], "list") == 0) {
        code = cmd_list(&o);
    } else if (strcmp(argv[0], "set") == 0) {
        code = cmd_set(&o);
    } else if (strcmp(argv[0], "start") == 0 || strcmp(argv[0], "stop") == 0 ||
               strcmp(argv[0], "restart") == 0) {
        fprintf(stderr, "roster: 'model %s' drives workers, which are not in this build yet\n",
                argv[0]);
        code = EX_UNAVAILABLE;
    } else {
        fprintf(stderr, "roster: unknown model command '%s'\n\n", argv[0]);
        help(stderr);
        code = EX_USAGE;
    }
    flags_cleanup(cli_model_flag_defs, &o);
    return code;
}

const struct cli_cmd cli_cmd_model = {
    .name = "model",
    .usage = "roster model list|set [options]",
    .summary = "list model instances, or set an instance's weight or enabled flag",
    .run = run,
    .help = help,
};
