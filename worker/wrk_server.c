/* SPDX-License-Identifier: MIT
 *
 * wrk_server.c - `roster start worker`: wiring, signals and the drain.
 *
 * Start: parse options, bind the port, then start the registrar (it needs
 * the bound port), then serve. The port answers at once; the registrar
 * registers as soon as a controller does, and keeps trying until one does.
 *
 * SIGTERM (or SIGINT): a drain thread stops the heartbeats and deregisters
 * every instance first (out of the routable set at once), then asks the
 * HTTP server to stop accepting and to finish in-flight requests within
 * --shutdown_grace_ms; the process exits 0. A second signal stops at once.
 * The drain runs off the event loop because deregistering makes blocking
 * control-plane calls.
 */
#include "wrk.h"
#include "wrk_lm.h"
#include "curl_loop.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#define LOG_MODULE "worker"
#include "budget.h"
#include "log.h"
#include "util.h"

void
wrk_server_drain(struct wrk_server *srv)
{
    wrk_registrar_stop(srv->registrar, true);
    log_info("deregistered; finishing in-flight requests (up to %lld ms)",
             (long long)srv->cfg->shutdown_grace_ms);
    http_server_shutdown(srv->http, (int)srv->cfg->shutdown_grace_ms);
}

static void *
drain_main(void *arg)
{
    wrk_server_drain(arg);
    return NULL;
}

static void
on_signal(int sig, void *arg)
{
    struct wrk_server *srv = arg;

    if (!srv->draining) {
        log_info("received %s: deregistering, then draining",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT");
        if (pthread_create(&srv->drainer, NULL, drain_main, srv) == 0) {
            srv->draining = true;
            return;
        }
        log_error("cannot start the drain thread: stopping now");
    } else {
        log_warn("second signal: stopping now");
    }
    wrk_registrar_abort(srv->registrar); /* the drain thread may be deregistering */
    http_server_shutdown(srv->http, 0);
}

/* Splits --model_name into srv->models. Returns 0, or -1 after printing. */
static int
parse_models(struct wrk_server *srv)
{
    const char *rest = srv->cfg->model_name;
    const char *p;
    size_t n;
    size_t suffix = 1 + strlen(srv->cfg->worker_type); /* "@type" */

    while (util_next_item(&rest, &p, &n)) {
        if (n > 0) {
            if (srv->nmodels == WRK_MAX_MODELS) {
                fprintf(stderr, "roster: more than %d models in --model_name\n", WRK_MAX_MODELS);
                return -1;
            }
            if (n + suffix > WRK_NAME_MAX || memchr(p, '@', n)) {
                fprintf(stderr,
                        "roster: --model_name '%.*s' must have no '@' and at most %zu bytes\n",
                        (int)(n > 200 ? 200 : n), p, WRK_NAME_MAX - suffix);
                return -1;
            }
            for (size_t i = 0; i < n; i++) {
                if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f) {
                    fprintf(stderr, "roster: --model_name has a control character\n");
                    return -1;
                }
            }
            for (size_t i = 0; i < srv->nmodels; i++) {
                if (strlen(srv->models[i]) == n && memcmp(srv->models[i], p, n) == 0) {
                    fprintf(stderr, "roster: --model_name lists '%.*s' twice\n", (int)n, p);
                    return -1;
                }
            }
            memcpy(srv->models[srv->nmodels], p, n);
            srv->models[srv->nmodels][n] = '\0';
            srv->nmodels++;
        }
    }
    if (srv->nmodels == 0) {
        fprintf(stderr, "roster: --model_name names no model\n");
        return -1;
    }
    return 0;
}

/* The address to register: --worker_register_host, else --host unless it
 * is a wildcard, else the primary interface's address (the source address
 * of a route outward; a UDP connect sends nothing), else 127.0.0.1. */
static void
advertised_host(const struct wrk_config *cfg, char *out, size_t cap)
{
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(1)};
    struct sockaddr_in src;
    socklen_t len = sizeof(src);
    int fd;

    if (cfg->worker_register_host && *cfg->worker_register_host) {
        util_strlcpy(out, cfg->worker_register_host, cap);
        return;
    }
    if (strcmp(cfg->host, "0.0.0.0") != 0 && strcmp(cfg->host, "::") != 0) {
        util_strlcpy(out, cfg->host, cap);
        return;
    }
    util_strlcpy(out, "127.0.0.1", cap);
    inet_pton(AF_INET, "10.254.254.254", &dst.sin_addr);
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return;
    }
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) == 0 &&
        getsockname(fd, (struct sockaddr *)&src, &len) == 0) {
        inet_ntop(AF_INET, &src.sin_addr, out, (socklen_t)cap);
    }
    close(fd);
}

/* The upstream API key from the environment variable --upstream_api_key_env
 * names, as an Authorization header. Returns 0, or -1 after printing. */
static int
load_api_key(struct wrk_server *srv)
{
    const char *name = srv->cfg->upstream_api_key_env;
    const char *key;
    size_t n;

    if (!name || !*name) {
        return 0;
    }
    key = getenv(name);
    if (!key || !*key) {
        fprintf(stderr,
                "roster: --upstream_api_key_env names %s, which is not set in the "
                "environment\n",
                name);
        return -1;
    }
    for (const char *p = key; *p; p++) {
        if ((unsigned char)*p < 0x21 || *p == 0x7f) {
            fprintf(stderr, "roster: the API key in %s has a space or control character\n", name);
            return -1;
        }
    }
    n = strlen("Authorization: Bearer ") + strlen(key) + 1;
    srv->auth_header = malloc(n);
    if (!srv->auth_header) {
        fprintf(stderr, "roster: out of memory\n");
        return -1;
    }
    snprintf(srv->auth_header, n, "Authorization: Bearer %s", key);
    return 0;
}

/* The grace period is over: upstream transfers still running get their
 * error reply now, while their connections can still carry it. */
static void
on_grace_expired(struct http_loop *loop, void *arg)
{
    struct wrk_server *srv = arg;

    (void)loop;
    if (srv->proxy) {
        wrk_proxy_cancel_all(srv);
    }
}

/* One line per request (info; 5xx at warn). */
static void
access_log(struct http_request *req, int status, size_t len, int64_t us, void *arg)
{
    struct wrk_server *srv = arg;
    char esc[256];

    if (!log_access_sampled(srv->cfg->access_log, srv->cfg->access_log_sample, &srv->log_seq,
                            status)) {
        return;
    }
    log_at(status >= 500 ? LOG_LVL_WARN : LOG_LVL_INFO,
           "%s %s status=%d bytes=%zu dur_us=%lld req=%s", http_req_method(req),
           log_escape(http_req_path(req), esc, sizeof(esc)), status, len, (long long)us,
           http_req_id(req));
}

static int
start_registrar(struct wrk_server *srv)
{
    struct wrk_registrar_config *rc = &srv->rcfg;
    char err[256], shown[2048];

    if (wrk_parse_controllers(srv->cfg->controller_addr, rc, err, sizeof(err)) != 0) {
        log_error("--controller_addr: %s", err);
        return EX_USAGE;
    }
    advertised_host(srv->cfg, srv->host, sizeof(srv->host));
    rc->host = srv->host;
    rc->port = http_server_port(srv->http);
    rc->secret =
        srv->cfg->cluster_secret && *srv->cfg->cluster_secret ? srv->cfg->cluster_secret : NULL;
    rc->interval_ms = (int64_t)(srv->cfg->heartbeat_interval * 1000.0);
    rc->timeout_ms = srv->cfg->control_timeout_ms;
    rc->load = &srv->load;
    for (size_t i = 0; i < srv->nmodels; i++) {
        int n = snprintf(rc->inst[i].model_name, sizeof(rc->inst[i].model_name), "%s@%s",
                         srv->models[i], srv->cfg->worker_type);
        if (n < 0 || (size_t)n >= sizeof(rc->inst[i].model_name)) {
            log_error("model name '%s@%s' is too long", srv->models[i], srv->cfg->worker_type);
            return EX_USAGE; /* parse_models prevents it */
        }
        rc->inst[i].weight = srv->cfg->weight;
        rc->inst[i].held = srv->engine != NULL; /* until the engine answers */
    }
    /* as DB-GPT's worker manager does: the service entry beside the models */
    snprintf(rc->inst[srv->nmodels].model_name, sizeof(rc->inst[0].model_name),
             "WorkerManager@service");
    rc->inst[srv->nmodels].weight = srv->cfg->weight;
    rc->ninst = srv->nmodels + 1;
    if (wrk_registrar_start(rc, &srv->registrar) != 0) {
        log_error("cannot start the registrar thread");
        return EX_OSERR;
    }
    log_info("worker for %zu model%s at %s:%d; controllers: %s", srv->nmodels,
             srv->nmodels == 1 ? "" : "s", srv->host, rc->port,
             util_url_redact(srv->cfg->controller_addr, shown, sizeof(shown)));
    return 0;
}

int
wrk_server_start(struct wrk_server *srv)
{
    int code;

    if (strcmp(srv->cfg->backend, "exec") == 0 && wrk_engine_start(srv) != 0) {
        log_error("cannot start the engine's supervisor thread");
        return EX_OSERR;
    }
    code = start_registrar(srv);
    if (code != 0) {
        return code;
    }
    if (srv->cfg->port_file && util_write_port_file(srv->cfg->port_file, srv->rcfg.port) != 0) {
        log_error("cannot write --port_file %s", srv->cfg->port_file);
        return EX_CANTCREAT;
    }
    log_info("worker listening on %s:%d", srv->cfg->host, srv->rcfg.port);
    return 0;
}

void
wrk_server_run(struct wrk_server *srv)
{
    http_server_run(srv->http);
    if (srv->proxy) {
        wrk_proxy_cancel_all(srv); /* transfers still running after the grace period */
    }
}

int
wrk_server_port(const struct wrk_server *srv)
{
    return http_server_port(srv->http);
}

int
wrk_server_new(struct wrk_config *cfg, struct wrk_server **out)
{
    struct wrk_server *srv = calloc(1, sizeof(*srv));
    char err[256];

    *out = srv;
    if (!srv) {
        log_error("out of memory");
        return EX_OSERR;
    }
    srv->cfg = cfg;
    srv->embeddings = strcmp(cfg->worker_type, "text2vec") == 0;
    srv->concurrency = cfg->concurrency > 0 ? (int)cfg->concurrency : srv->embeddings ? 100 : 5;
    srv->started_wall_s = util_wall_ms() / 1000;
    if (parse_models(srv) != 0) {
        return EX_USAGE;
    }
    srv->load.capacity = (int64_t)srv->concurrency * (int64_t)srv->nmodels;
    for (size_t i = 0; i < srv->nmodels; i++) {
        srv->weight[i] = cfg->weight;
    }
    if (netaddr_list_parse("127.0.0.0/8,::1", &srv->loopback, err, sizeof(err)) != 0) {
        log_error("%s", err);
        return EX_SOFTWARE;
    }
    srv->proxy = strcmp(cfg->backend, "builtin") != 0;
    util_url_redact(cfg->upstream ? cfg->upstream : "", srv->upstream_shown,
                    sizeof(srv->upstream_shown));
    if (srv->proxy && load_api_key(srv) != 0) {
        return EX_USAGE;
    }
    if (!srv->proxy && !srv->embeddings) {
        int64_t t0 = util_mono_ms();
        if (wrk_lm_train(wrk_lm_corpus, strlen(wrk_lm_corpus), &srv->lm) != 0) {
            log_error("cannot train the builtin language model (out of memory)");
            return EX_OSERR;
        }
        log_info("builtin language model: %zu words, trained in %lld ms (for trying roster "
                 "out, not for real answers)",
                 wrk_lm_vocab(srv->lm), (long long)(util_mono_ms() - t0));
    }
    struct http_server_config hc = {
        .host = cfg->host,
        .port = (int)cfg->port,
        .threads = 1,
        .max_body = (size_t)cfg->max_body_bytes,
    };
    http_limits_apply(&cfg->http, &hc);
    const struct http_service svc = {
        .routes = wrk_routes,
        .arg = srv,
        .access_log = access_log,
        .on_expire = on_grace_expired,
    };
    if (http_server_new(&hc, &srv->http, err, sizeof(err)) != 0) {
        log_error("%s", err);
        return EX_OSERR;
    }
    if (http_server_mount(srv->http, &svc) != 0) {
        log_error("cannot mount the worker's routes");
        return EX_SOFTWARE;
    }
    if (srv->proxy) {
        srv->curl = curl_loop_new(http_loop_base(http_server_loop(srv->http, 0)));
        if (!srv->curl) {
            log_error("cannot create the upstream transfer loop (out of memory)");
            return EX_OSERR;
        }
        log_info("backend %s: requests go to %s", cfg->backend, srv->upstream_shown);
    }
    return 0;
}

void
wrk_server_free(struct wrk_server *srv)
{
    if (!srv) {
        return;
    }
    wrk_engine_stop(srv->engine); /* the engine outlives in-flight requests, not the worker */
    srv->engine = NULL;
    wrk_registrar_free(srv->registrar); /* stops (without deregistering) if still running */
    srv->registrar = NULL;              /* engine notes may still run in http_server_free */
    curl_loop_free(srv->curl);
    http_server_free(srv->http);
    if (srv->auth_header) {
        explicit_bzero(srv->auth_header, strlen(srv->auth_header));
        free(srv->auth_header);
    }
    wrk_lm_free(srv->lm);
    netaddr_list_cleanup(&srv->loopback);
    free(srv);
}

/* --check: what wrk_server_new and wrk_server_start would refuse, without
 * binding, training or connecting. Returns 0 or an exit code. */
static int
check(struct wrk_config *cfg)
{
    struct wrk_server *srv = calloc(1, sizeof(*srv));
    struct wrk_registrar_config *rc = calloc(1, sizeof(*rc));
    char err[600];
    int code = 0;

    if (!srv || !rc) {
        code = EX_OSERR;
        goto out;
    }
    srv->cfg = cfg;
    printf("checks:\n");
    if (parse_models(srv) != 0) {
        code = EX_USAGE;
        goto out;
    }
    for (size_t i = 0; i < srv->nmodels; i++) {
        printf("  model: %s@%s\n", srv->models[i], cfg->worker_type);
    }
    if (strcmp(cfg->backend, "builtin") != 0) {
        if (load_api_key(srv) != 0) {
            code = EX_USAGE;
            goto out;
        }
        char shown[1024];
        printf("  backend: %s, engine at %s%s\n", cfg->backend,
               util_url_redact(cfg->upstream, shown, sizeof(shown)),
               srv->auth_header ? " with the API key from the environment" : "");
    } else {
        printf("  backend: builtin\n");
    }
    if (strcmp(cfg->backend, "exec") == 0 && access("/bin/bash", X_OK) != 0) {
        fprintf(stderr, "roster: --backend exec runs --engine_cmd with /bin/bash, not found\n");
        code = EX_UNAVAILABLE;
        goto out;
    }
    if (wrk_parse_controllers(cfg->controller_addr, rc, err, sizeof(err)) != 0) {
        fprintf(stderr, "roster: --controller_addr: %s\n", err);
        code = EX_USAGE;
        goto out;
    }
    printf("  controllers: %zu (not contacted)\n", rc->nurls);
    if (cfg->port_file && util_check_creatable(cfg->port_file, err, sizeof(err)) != 0) {
        fprintf(stderr, "roster: --port_file: %s\n", err);
        code = EX_CANTCREAT;
        goto out;
    }
    printf("OK: the worker would start (nothing was bound or connected)\n");
out:
    if (srv && srv->auth_header) {
        explicit_bzero(srv->auth_header, strlen(srv->auth_header));
        free(srv->auth_header);
    }
    free(srv);
    free(rc);
    return code;
}

int
wrk_main(int argc, char **argv)
{
    struct wrk_config cfg;
    struct wrk_server *srv = NULL;
    int code = 0;
    int rc;

    memset(&cfg, 0, sizeof(cfg));
    rc = wrk_config_load(&cfg, argc, argv);
    if (rc != 0) {
        wrk_config_cleanup(&cfg);
        return rc == 1 ? 0 : EX_USAGE;
    }
    if (cfg.check) {
        code = check(&cfg);
        wrk_config_cleanup(&cfg);
        return code;
    }
    signal(SIGPIPE, SIG_IGN);
    budget_set_limit(cfg.memory_budget_bytes); /* the process is this worker */
    code = wrk_server_new(&cfg, &srv);
    if (code != 0) {
        goto out;
    }
    if (http_server_catch_signals(srv->http, on_signal, srv) != 0) {
        log_error("cannot install signal handlers");
        code = EX_OSERR;
        goto out;
    }
    code = wrk_server_start(srv);
    if (code != 0) {
        goto out;
    }
    wrk_server_run(srv);
    log_info("worker stopped");
out:
    if (srv && srv->draining) {
        pthread_join(srv->drainer, NULL);
        srv->draining = false;
    }
    wrk_server_free(srv);
    wrk_config_cleanup(&cfg);
    return code;
}
