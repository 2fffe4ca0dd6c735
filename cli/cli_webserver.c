/* SPDX-License-Identifier: MIT
 *
 * cli_webserver.c - `roster start webserver`: the API server and the
 * dashboard on one port (DB-GPT's 5670), composed from the roles'
 * components (ctl.h, api.h, api_dash.h, wrk.h) on one HTTP server.
 *
 * Two modes:
 *   embedded (no --controller_addr): the whole system for one machine in
 *     one process. The controller on SQLite (<data_dir>/roster.db), the
 *     builtin chat model and embedder as ordinary workers (each its own
 *     loopback port and loop thread, registered with this controller over
 *     HTTP like any other worker), the API server watching this
 *     controller, and the dashboard. External workers may register here
 *     too: it is a controller.
 *   cluster (--controller_addr URLS, DB-GPT's --light): the API server
 *     and the dashboard in front of existing controllers.
 *
 * On the one HTTP server, services are mounted in this order (the first
 * with a route wins): the webserver's own /api/health and /metrics, the
 * dashboard, the API server (/v1, /api/v1), the controller (embedded).
 *
 * SIGTERM/SIGINT: a drain thread deregisters the builtin workers through
 * the controller (still serving), lets their requests finish, then stops
 * the HTTP server within --shutdown_grace_ms. A second signal stops at once.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>

#include "api.h"
#include "api_dash.h"
#include "budget.h"
#include "cli.h"
#include "ctl.h"
#include "json_write.h"
#include "wrk.h"

#define LOG_MODULE "webserver"
#include "log.h"
#include "util.h"

#ifndef ROSTER_VERSION
#define ROSTER_VERSION "dev"
#endif

#define MAX_BUILTIN 2

struct web_config {
    char *host;
    int64_t port;
    int64_t threads;
    char *port_file;
    char *controller_addr;
    bool light;
    bool remote_embedding;
    bool remote_rerank;
    char *model_name;
    char *embedding_model;
    char *data_dir;
    char *cluster_secret;
    double heartbeat_interval;
    int64_t concurrency;
    int64_t dashboard_tick_ms;
    int64_t shutdown_grace_ms;
    struct http_limits http; /* --max_connections, --client_*_timeout_ms, ... */
    char *log_level;
    bool check;
};

/* clang-format 14 would put the stringized name on a line of its own */
// clang-format off
#define F(name, type, def, lo, hi, env, fl, meta, help) \
    {#name, type, offsetof(struct web_config, name), def, lo, hi, env, fl, meta, help}
// clang-format on

const struct flag_def web_flag_defs[] = {
    F(host, FLAG_STR, "0.0.0.0", 1, 0, NULL, 0, "ADDR",
      "Address to listen on (numeric IPv4 or IPv6)."),
    F(port, FLAG_INT, "5670", 0, 65535, NULL, 0, "PORT",
      "Port of the API, the dashboard and (embedded) the controller."),
    F(threads, FLAG_INT, "1", 1, 64, NULL, 0, "N", "HTTP event-loop threads."),
    F(port_file, FLAG_STR, NULL, 1, 0, NULL, FLAG_HIDDEN, "PATH",
      "Write the bound port to PATH once listening (for tests and supervisors)."),
    F(controller_addr, FLAG_STR, NULL, 1, 0, "MODEL_SERVER", 0, "URLS",
      "Controllers of an existing cluster, comma-separated: serve the API and the dashboard in "
      "front of them. Unset: embedded mode, the whole system in this process."),
    F(light, FLAG_BOOL, "false", 1, 0, NULL, 0, NULL,
      "Start no builtin model (DB-GPT's flag): models come from workers that register (embedded) "
      "or from the cluster."),
    F(remote_embedding, FLAG_BOOL, "false", 1, 0, NULL, 0, NULL,
      "Start no builtin embedder (DB-GPT's flag): embeddings come from a worker."),
    F(remote_rerank, FLAG_BOOL, "false", 1, 0, NULL, 0, NULL,
      "Accepted for DB-GPT compatibility (roster has no builtin reranker)."),
    F(model_name, FLAG_STR, "roster-chat", 1, 0, "LLM_MODEL", 0, "NAME",
      "The chat model: the builtin one's name (embedded), the dashboard playground's default."),
    F(embedding_model, FLAG_STR, "roster-embed", 1, 0, "EMBEDDING_MODEL", 0, "NAME",
      "The embedding model: the builtin one's name (embedded)."),
    F(data_dir, FLAG_STR, "roster-data", 1, 0, NULL, 0, "DIR",
      "Embedded: where the registry's SQLite file lives (DIR/roster.db, unless "
      "--registry_db_name or --registry_db_type says otherwise); created on first run."),
    F(cluster_secret, FLAG_STR, NULL, 1, 0, NULL, FLAG_SECRET, "SECRET",
      "The cluster secret: required for the dashboard's actions and for registry writes from "
      "outside --trusted_networks, and sent to the controllers and workers."),
    F(heartbeat_interval, FLAG_DOUBLE, "5", 0.05, 3600, NULL, 0, "SECS",
      "Embedded: heartbeat interval of the builtin models (their lease is three)."),
    F(concurrency, FLAG_INT, "0", 0, 100000, NULL, 0, "N",
      "Embedded: requests each builtin model serves at once (0 = DB-GPT's defaults: 5 for the "
      "chat model, 100 for the embedder); more wait in a bounded queue, then 429."),
    F(dashboard_tick_ms, FLAG_INT, "1000", 100, 60000, NULL, 0, "MS",
      "How often an open dashboard is updated."),
    HTTP_LIMIT_FLAGS(struct web_config, http),
    F(shutdown_grace_ms, FLAG_INT, "10000", 0, 3600000, NULL, 0, "MS",
      "On SIGTERM, time allowed for in-flight requests (a second signal stops at once)."),
    F(log_level, FLAG_ENUM, "info", 1, 0, NULL, 0, "error|warn|info|debug|trace",
      "The least severe messages logged."),
    F(check, FLAG_BOOL, "false", 1, 0, NULL, FLAG_ARGV_ONLY, NULL, FLAG_CHECK_HELP),
    {0},
};

const char web_usage[] = "roster start webserver [options]";
const char web_summary[] =
    "Runs the OpenAI-compatible API (/v1, /api/v1) and the web dashboard (/) on one port. With "
    "no --controller_addr, the whole system for one machine in one process: a controller on "
    "SQLite, the builtin chat model and embedder, the API and the dashboard; workers elsewhere "
    "may register with it. With --controller_addr, the API and the dashboard in front of a "
    "cluster.";

#define NWEB_FLAGS 64
#define NCTL_FLAGS 64
#define NAPI_FLAGS 64

struct web {
    struct web_config cfg;
    struct api_config api_cfg;
    struct ctl_config ctl_cfg;
    enum flag_source web_src[NWEB_FLAGS];
    enum flag_source api_src[NAPI_FLAGS];
    enum flag_source ctl_src[NCTL_FLAGS];
    bool embedded;
    char base_url[320];
    char ctl_url[300];
    struct http_server *http;
    struct ctl_server *ctl;
    struct api_server *api;
    struct api_dash *dash;
    struct wrk_config wcfg[MAX_BUILTIN];
    struct wrk_server *wrk[MAX_BUILTIN];
    pthread_t wrk_thread[MAX_BUILTIN];
    bool wrk_running[MAX_BUILTIN];
    size_t nwrk;
    pthread_t drainer;
    bool draining;
    int64_t started_mono_ms;
};

static void
groups(struct web *w, struct flag_group *g)
{
    g[0] = (struct flag_group){NULL, NULL, web_flag_defs, &w->cfg, w->web_src};
    g[1] = (struct flag_group){"API server options", "roster start apiserver --help", api_flag_defs,
                               &w->api_cfg, w->api_src};
    g[2] =
        (struct flag_group){"Embedded mode: controller options", "roster start controller --help",
                            ctl_flag_defs, &w->ctl_cfg, w->ctl_src};
}

void
cli_webserver_doc(FILE *out)
{
    struct web w;
    struct flag_group g[3];

    memset(&w, 0, sizeof(w));
    groups(&w, g);
    flags_print_markdown_groups(out, "roster start webserver", web_summary, g, 3);
}

/* ---- /api/health and /metrics of the whole process ---------------------------------- */

static void
h_health(struct http_request *req, void *arg)
{
    struct web *w = arg;
    struct api_loop *l = api_loop_of(w->api, req);
    const char *api_status = api_health_status(w->api, l);
    bool ctl_ok = true, workers_ok = true;
    struct buf b;
    struct jw j;

    buf_init(&b, 64 * 1024);
    jw_init(&j, &b);
    jw_raw(&j, "{\"mode\":");
    jw_str(&j, w->embedded ? "embedded" : "cluster");
    jw_raw(&j, ",");
    api_write_health(w->api, l, &j);
    if (w->embedded) {
        jw_raw(&j, ",\"registry\":");
        if (ctl_api_write_health(w->ctl, &j, &ctl_ok) != 0) {
            ctl_ok = false;
        }
        jw_raw(&j, ",\"workers\":[");
        for (size_t i = 0; i < w->nwrk; i++) {
            bool reg = w->wrk[i]->registrar && wrk_registrar_registered(w->wrk[i]->registrar);
            workers_ok = workers_ok && reg;
            jw_raw(&j, i ? ",{\"model\":" : "{\"model\":");
            jw_str(&j, w->wrk[i]->rcfg.inst[0].model_name);
            jw_raw(&j, ",\"port\":");
            jw_i64(&j, wrk_server_port(w->wrk[i]));
            jw_raw(&j, ",\"registered\":");
            jw_bool(&j, reg);
            jw_raw(&j, "}");
        }
        jw_raw(&j, "]");
    }
    /* ok: serving; starting: not yet (no table, or the builtin models not
     * registered); degraded: the registry is unreachable; stale: no
     * controller answers (routing goes on with the last table) */
    const char *status = strcmp(api_status, "starting") == 0 ? "starting"
                         : !ctl_ok                           ? "degraded"
                         : !workers_ok                       ? "starting"
                                                             : api_status;
    jw_raw(&j, ",\"status\":");
    jw_str(&j, status);
    jw_raw(&j, ",\"version\":");
    jw_str(&j, ROSTER_VERSION);
    jw_raw(&j, ",\"uptime_ms\":");
    jw_i64(&j, util_mono_ms() - w->started_mono_ms);
    jw_raw(&j, "}");
    if (j.err) {
        http_reply_error(req, 500, "server_error", "health", "cannot format the health report");
    } else {
        bool ok = strcmp(status, "ok") == 0 || strcmp(status, "stale") == 0;
        http_reply(req, ok ? 200 : 503, "application/json", b.data, b.len,
                   ok ? NULL : "Retry-After: 1\r\n");
    }
    buf_cleanup(&b);
}

/* The embedded controller's --protect_reads, for the routes that show
 * the registry's data. */
static bool
read_guard(struct http_request *req, void *arg)
{
    struct web *w = arg;

    return !w->embedded || ctl_api_read_allowed(w->ctl, req);
}

static void
h_metrics(struct http_request *req, void *arg)
{
    struct web *w = arg;
    struct buf b;
    int rc;

    if (!read_guard(req, w)) {
        return;
    }
    buf_init(&b, 64 * 1024 * 1024);
    rc = metrics_write_http(&b, w->http);
    rc |= api_write_metrics(w->api, api_loop_of(w->api, req), &b);
    rc |= metrics_write_budget(&b);
    if (w->embedded) {
        rc |= ctl_api_write_metrics(w->ctl, &b);
    }
    metrics_reply(req, &b, rc);
    buf_cleanup(&b);
}

/* The first service logs what no route matched (404, 405), and its own
 * routes (health and metrics at debug: probes ask every few seconds). */
static void
web_access_log(struct http_request *req, int status, size_t len, int64_t us, void *arg)
{
    const char *path = http_req_path(req);
    bool probe = strcmp(path, "/api/health") == 0 || strcmp(path, "/metrics") == 0;
    char esc[256];

    (void)arg;
    log_at(status >= 500 ? LOG_LVL_WARN
           : probe       ? LOG_LVL_DEBUG
                         : LOG_LVL_INFO,
           "%s %s status=%d bytes=%zu dur_us=%lld peer=%s req=%s", http_req_method(req),
           log_escape(path, esc, sizeof(esc)), status, len, (long long)us, http_req_peer_str(req),
           http_req_id(req));
}

static const struct http_route web_routes[] = {
    {"GET", "/api/health", h_health, 0},
    {"GET", "/metrics", h_metrics, 0},
    {NULL, NULL, NULL, 0},
};

/* ---- configuration ------------------------------------------------------------------ */

static void
help(FILE *out)
{
    struct web w;
    struct flag_group g[3];

    memset(&w, 0, sizeof(w));
    groups(&w, g);
    flags_print_help_groups(out, web_usage, web_summary, g, 3);
}

/* Whether a controller option was set (command line or environment). */
static bool
given(const struct web *w, const char *name)
{
    for (size_t i = 0; ctl_flag_defs[i].name; i++) {
        if (strcmp(ctl_flag_defs[i].name, name) == 0) {
            return w->ctl_src[i] != FLAG_FROM_DEFAULT;
        }
    }
    return false;
}

static int
replace_str(char **field, const char *value)
{
    char *copy = value ? strdup(value) : NULL;

    if (value && !copy) {
        return -1;
    }
    free(*field);
    *field = copy;
    return 0;
}

/* Parses argv into the three groups and checks them. Returns 0, 1 after
 * --help, or EX_USAGE after printing why. */
static int
load(struct web *w, int argc, char **argv)
{
    struct flag_group g[3];
    char err[768];
    int rc;

    groups(w, g);
    if (flags_count(web_flag_defs) > NWEB_FLAGS || flags_count(api_flag_defs) > NAPI_FLAGS ||
        flags_count(ctl_flag_defs) > NCTL_FLAGS) {
        fprintf(stderr, "roster: internal error: an option table is too long\n");
        return EX_SOFTWARE;
    }
    rc = flags_parse_groups(g, 3, argc, argv, err, sizeof(err));
    if (rc == 1) {
        help(stdout);
        return 1;
    }
    if (rc != 0) {
        fprintf(stderr, "roster: %s\n", err);
        return EX_USAGE;
    }
    (void)log_set_level_name(w->cfg.log_level); /* one of the table's choices */
    w->embedded = !w->cfg.controller_addr || !*w->cfg.controller_addr;
    if (!w->embedded) {
        for (size_t i = 0; ctl_flag_defs[i].name; i++) {
            if (w->ctl_src[i] == FLAG_FROM_ARGV) {
                fprintf(stderr,
                        "roster: --%s configures the embedded controller; with "
                        "--controller_addr the registry is the cluster's\n",
                        ctl_flag_defs[i].name);
                return EX_USAGE;
            }
        }
    }
    if (!*w->cfg.model_name || strchr(w->cfg.model_name, '@') || strchr(w->cfg.model_name, ',') ||
        !*w->cfg.embedding_model || strchr(w->cfg.embedding_model, '@') ||
        strchr(w->cfg.embedding_model, ',')) {
        fprintf(stderr, "roster: --model_name and --embedding_model name one model each, "
                        "without '@' or ','\n");
        return EX_USAGE;
    }
    ctl_config_scrub_argv(argc, argv);
    if (w->embedded && ctl_config_check(&w->ctl_cfg, w->ctl_src, err, sizeof(err)) != 0) {
        fprintf(stderr, "roster: %s\n", err);
        return EX_USAGE;
    }
    if (w->ctl_cfg.db_url_password_on_argv) {
        log_warn("--registry_db_url on the command line carries a password, where other users "
                 "can read it; put the password in ROSTER_REGISTRY_DB_PASSWORD instead");
    }
    (void)flags_scrub_secrets(g, 3, argc, argv);
    for (size_t k = 0; k < 3; k++) {
        for (size_t i = 0; g[k].defs[i].name; i++) {
            if ((g[k].defs[i].flags & FLAG_SECRET) && g[k].sources[i] == FLAG_FROM_ARGV) {
                flags_warn_secret_on_argv(&g[k].defs[i]);
            }
        }
    }
    /* the webserver's secret is everyone's; --instance_networks (the API
     * server's group takes it from argv) restricts both the embedded
     * controller's registrations and where requests go */
    if (replace_str(&w->api_cfg.cluster_secret, w->cfg.cluster_secret) != 0 ||
        replace_str(&w->ctl_cfg.cluster_secret, w->cfg.cluster_secret) != 0 ||
        replace_str(&w->ctl_cfg.instance_networks, w->api_cfg.instance_networks) != 0) {
        fprintf(stderr, "roster: out of memory\n");
        return EX_OSERR;
    }
    budget_set_limit(w->api_cfg.memory_budget_bytes);
    return 0;
}

/* Embedded: the registry file goes under --data_dir unless the registry
 * options say otherwise. Returns 0 or an exit code. */
static int
place_registry(struct web *w)
{
    char path[4096];
    const char *dir = w->cfg.data_dir;

    if (strcmp(w->ctl_cfg.registry_db_type, "sqlite") != 0 ||
        strcmp(w->ctl_cfg.registry_type, "embedded") == 0 || given(w, "registry_db_name") ||
        given(w, "registry_db_url")) {
        return 0;
    }
    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        log_error("--data_dir %s: cannot create it: %s", dir, strerror(errno));
        return EX_CANTCREAT;
    }
    snprintf(path, sizeof(path), "%s/roster.db", dir);
    if (replace_str(&w->ctl_cfg.registry_db_name, path) != 0) {
        return EX_OSERR;
    }
    return 0;
}

/* ---- --check ---------------------------------------------------------------------- */

/* What start() would refuse, without creating, binding or connecting. */
static int
check(struct web *w)
{
    struct flag_group g[3];
    struct stat st;
    char why[600], path[4096];
    int code = 0;

    groups(w, g);
    printf("%s --check (%s mode)\noptions:\n", web_usage, w->embedded ? "embedded" : "cluster");
    flags_print_effective_groups(stdout, g, w->embedded ? 3 : 2);
    printf("checks:\n");
    if (w->embedded) {
        bool registry_in_data_dir = strcmp(w->ctl_cfg.registry_db_type, "sqlite") == 0 &&
                                    strcmp(w->ctl_cfg.registry_type, "embedded") != 0 &&
                                    !given(w, "registry_db_name") && !given(w, "registry_db_url");
        if (registry_in_data_dir && stat(w->cfg.data_dir, &st) != 0) {
            /* created at start: its parent must take it */
            if (util_check_creatable(w->cfg.data_dir, why, sizeof(why)) != 0) {
                fprintf(stderr, "roster: --data_dir %s cannot be created: %s\n", w->cfg.data_dir,
                        why);
                return EX_CANTCREAT;
            }
            printf("  registry: SQLite file %s/roster.db (--data_dir created at start)\n",
                   w->cfg.data_dir);
        } else {
            if (registry_in_data_dir) {
                snprintf(path, sizeof(path), "%s/roster.db", w->cfg.data_dir);
                if (replace_str(&w->ctl_cfg.registry_db_name, path) != 0) {
                    return EX_OSERR;
                }
            }
            code = ctl_check(&w->ctl_cfg, stdout);
            if (code != 0) {
                return code;
            }
        }
        if (!w->cfg.light) {
            printf("  builtin models: %s@llm%s%s%s\n", w->cfg.model_name,
                   w->cfg.remote_embedding ? "" : ", ",
                   w->cfg.remote_embedding ? "" : w->cfg.embedding_model,
                   w->cfg.remote_embedding ? "" : "@text2vec");
        }
    }
    snprintf(path, sizeof(path), "http://127.0.0.1:%lld", (long long)w->cfg.port);
    if (replace_str(&w->api_cfg.controller_addr, w->embedded ? path : w->cfg.controller_addr) !=
        0) {
        return EX_OSERR;
    }
    code = api_server_new(&w->api_cfg, &w->api);
    if (code == 0) {
        code = api_server_check(w->api, stdout);
    }
    if (code == 0 && w->cfg.port_file &&
        util_check_creatable(w->cfg.port_file, why, sizeof(why)) != 0) {
        fprintf(stderr, "roster: --port_file: %s\n", why);
        code = EX_CANTCREAT;
    }
    if (code == 0) {
        printf("OK: the webserver would start (nothing was created, bound or connected)\n");
    }
    return code;
}

/* ---- the builtin models --------------------------------------------------------------- */

static int
builtin_worker(struct web *w, const char *model, const char *type)
{
    struct wrk_config *c = &w->wcfg[w->nwrk];
    char err[128];
    int code;

    w->nwrk++;
    if (flags_set_defaults(wrk_flag_defs, c, err, sizeof(err)) != 0) {
        log_error("%s", err);
        return EX_OSERR;
    }
    c->heartbeat_interval = w->cfg.heartbeat_interval;
    c->concurrency = w->cfg.concurrency;
    c->access_log = false; /* the API's access log has each request already */
    c->port = 0;
    c->shutdown_grace_ms = w->cfg.shutdown_grace_ms;
    if (replace_str(&c->model_name, model) != 0 || replace_str(&c->worker_type, type) != 0 ||
        replace_str(&c->host, "127.0.0.1") != 0 ||
        replace_str(&c->controller_addr, w->ctl_url) != 0 ||
        replace_str(&c->cluster_secret, w->cfg.cluster_secret) != 0 ||
        replace_str(&c->log_level, w->cfg.log_level) != 0) {
        log_error("out of memory");
        return EX_OSERR;
    }
    code = wrk_server_new(c, &w->wrk[w->nwrk - 1]);
    if (code == 0) {
        code = wrk_server_start(w->wrk[w->nwrk - 1]);
    }
    return code;
}

static void *
worker_main(void *arg)
{
    wrk_server_run(arg);
    return NULL;
}

/* ---- shutdown ----------------------------------------------------------------------- */

static void *
drain_main(void *arg)
{
    struct web *w = arg;

    for (size_t i = 0; i < w->nwrk; i++) {
        if (w->wrk_running[i]) {
            wrk_server_drain(w->wrk[i]); /* deregisters through our controller */
        }
    }
    log_info("builtin models deregistered; finishing requests in flight (up to %lld ms)",
             (long long)w->cfg.shutdown_grace_ms);
    api_dash_halt(w->dash);
    http_server_shutdown(w->http, (int)w->cfg.shutdown_grace_ms);
    return NULL;
}

static void
on_signal(int sig, void *arg)
{
    struct web *w = arg;

    if (!w->draining) {
        log_info("received %s: draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        if (pthread_create(&w->drainer, NULL, drain_main, w) == 0) {
            w->draining = true;
            return;
        }
        log_error("cannot start the drain thread: stopping now");
    } else {
        log_warn("second signal: stopping now");
    }
    for (size_t i = 0; i < w->nwrk; i++) {
        wrk_registrar_abort(w->wrk[i]->registrar); /* the drain thread may be deregistering */
        http_server_shutdown(w->wrk[i]->http, 0);
    }
    api_dash_halt(w->dash);
    http_server_shutdown(w->http, 0);
}

/* ---- start-up ----------------------------------------------------------------------- */

/* The URLs this process is reached at from this machine. */
static void
local_urls(struct web *w)
{
    const char *h = w->cfg.host;
    int port = http_server_port(w->http);
    bool any4 = strcmp(h, "0.0.0.0") == 0, any6 = strcmp(h, "::") == 0;
    bool v6 = strchr(h, ':') != NULL;
    const char *local = any4 ? "127.0.0.1" : any6 ? "::1" : h;

    snprintf(w->ctl_url, sizeof(w->ctl_url), (v6 || any6) ? "http://[%s]:%d" : "http://%s:%d",
             local, port);
    snprintf(w->base_url, sizeof(w->base_url), "%s/v1", w->ctl_url);
}

static void
banner(struct web *w)
{
    char db[600] = "";

    if (w->embedded) {
        ctl_server_describe_db(w->ctl, db, sizeof(db));
    }
    printf("roster %s webserver (%s)\n", ROSTER_VERSION,
           w->embedded ? "embedded: the whole system in this process" : "cluster");
    printf("  OpenAI base URL  %s%s\n", w->base_url,
           w->api->nkeys ? "  (API keys required)" : "  (no API key needed)");
    printf("  dashboard        %s/\n", w->ctl_url);
    if (w->embedded) {
        printf("  registry         %s\n", db);
        for (size_t i = 0; i < w->nwrk; i++) {
            printf("  builtin model    %s\n", w->wrk[i]->rcfg.inst[0].model_name);
        }
        printf("  workers join     --controller_addr %s\n", w->ctl_url);
    } else {
        char shown[2048];
        printf("  controllers      %s\n",
               util_url_redact(w->cfg.controller_addr, shown, sizeof(shown)));
    }
    if (strcmp(w->cfg.host, "0.0.0.0") == 0 || strcmp(w->cfg.host, "::") == 0) {
        printf("  (listening on every interface, port %d)\n", http_server_port(w->http));
    }
    fflush(stdout);
}

static int
start(struct web *w)
{
    char err[256];
    int code;
    const struct http_service svc = {.routes = web_routes, .arg = w, .access_log = web_access_log};

    if (w->embedded) {
        code = place_registry(w);
        if (code != 0) {
            return code;
        }
        code = ctl_server_open(&w->ctl_cfg, &w->ctl);
        if (code != 0) {
            return code;
        }
    }
    struct http_server_config hc = {
        .host = w->cfg.host,
        .port = (int)w->cfg.port,
        .threads = (int)w->cfg.threads,
        .max_body = (size_t)w->api_cfg.max_body_bytes,
    };
    http_limits_apply(&w->cfg.http, &hc);
    if (http_server_new(&hc, &w->http, err, sizeof(err)) != 0) {
        log_error("%s", err);
        return EX_OSERR;
    }
    local_urls(w);
    if (w->embedded && replace_str(&w->api_cfg.controller_addr, w->ctl_url) != 0) {
        return EX_OSERR;
    }
    if (!w->embedded && replace_str(&w->api_cfg.controller_addr, w->cfg.controller_addr) != 0) {
        return EX_OSERR;
    }
    code = api_server_new(&w->api_cfg, &w->api);
    if (code != 0) {
        return code;
    }
    const struct api_dash_config dc = {
        .mode = w->embedded ? "embedded" : "cluster",
        .version = ROSTER_VERSION,
        .llm_model = w->cfg.model_name,
        .embedding_model = w->cfg.embedding_model,
        .base_url = w->base_url,
        .secret = w->cfg.cluster_secret,
        .tick_ms = w->cfg.dashboard_tick_ms,
        .control_timeout_ms = w->api_cfg.control_timeout_ms,
        .read_guard = w->embedded && w->ctl_cfg.protect_reads ? read_guard : NULL,
        .read_guard_arg = w,
    };
    code = api_dash_new(w->api, &dc, &w->dash);
    if (code != 0) {
        return code;
    }
    if (http_server_mount(w->http, &svc) != 0) {
        return EX_SOFTWARE;
    }
    code = api_dash_mount(w->dash, w->http);
    if (code == 0) {
        code = api_server_mount(w->api, w->http);
    }
    if (code == 0 && w->embedded) {
        code = ctl_server_mount(w->ctl, w->http);
    }
    if (code == 0 && w->embedded) {
        code = ctl_server_start(w->ctl);
    }
    if (code != 0) {
        return code;
    }
    if (http_server_catch_signals(w->http, on_signal, w) != 0) {
        log_error("cannot install signal handlers");
        return EX_OSERR;
    }
    code = api_server_start(w->api);
    if (code == 0) {
        code = api_dash_start(w->dash);
    }
    if (code != 0) {
        return code;
    }
    /* the builtin models register with the controller above: its port is
     * listening already, so their first call waits for the loop to run */
    if (w->embedded && !w->cfg.light) {
        code = builtin_worker(w, w->cfg.model_name, "llm");
        if (code == 0 && !w->cfg.remote_embedding) {
            code = builtin_worker(w, w->cfg.embedding_model, "text2vec");
        }
        if (code != 0) {
            return code;
        }
    }
    for (size_t i = 0; i < w->nwrk; i++) {
        if (pthread_create(&w->wrk_thread[i], NULL, worker_main, w->wrk[i]) != 0) {
            log_error("cannot start a builtin model's thread");
            return EX_OSERR;
        }
        w->wrk_running[i] = true;
    }
    if (w->cfg.port_file && util_write_port_file(w->cfg.port_file, http_server_port(w->http))) {
        log_error("cannot write --port_file %s: %s", w->cfg.port_file, strerror(errno));
        return EX_CANTCREAT;
    }
    log_info("webserver listening on %s:%d (%s mode)", w->cfg.host, http_server_port(w->http),
             w->embedded ? "embedded" : "cluster");
    banner(w);
    return 0;
}

static void
teardown(struct web *w)
{
    if (w->draining) {
        pthread_join(w->drainer, NULL);
        w->draining = false;
    }
    for (size_t i = 0; i < w->nwrk; i++) {
        if (w->wrk_running[i]) {
            http_server_shutdown(w->wrk[i]->http, 0); /* no-op once drained */
            pthread_join(w->wrk_thread[i], NULL);
            w->wrk_running[i] = false;
        }
    }
    api_dash_stop(w->dash);
    api_server_stop(w->api);
    ctl_server_stop(w->ctl);
    http_server_free(w->http); /* runs the tasks still queued for the loops */
    api_dash_free(w->dash);
    api_server_free(w->api);
    ctl_server_free(w->ctl);
    for (size_t i = 0; i < w->nwrk; i++) {
        wrk_server_free(w->wrk[i]);
        wrk_config_cleanup(&w->wcfg[i]);
    }
}

int
cli_webserver_main(int argc, char **argv)
{
    struct web *w = calloc(1, sizeof(*w));
    int code;

    if (!w) {
        fprintf(stderr, "roster: out of memory\n");
        return EX_OSERR;
    }
    w->started_mono_ms = util_mono_ms();
    code = load(w, argc, argv);
    if (code == 0 && w->cfg.check) {
        code = check(w);
    } else if (code == 0) {
        signal(SIGPIPE, SIG_IGN);
        code = start(w);
        if (code == 0) {
            http_server_run(w->http);
            log_info("webserver stopped");
        }
    }
    teardown(w);
    flags_cleanup(web_flag_defs, &w->cfg);
    api_config_cleanup(&w->api_cfg);
    ctl_config_cleanup(&w->ctl_cfg);
    free(w);
    return code == 1 ? 0 : code;
}
