/* SPDX-License-Identifier: MIT
 *
 * ctl_server.c - a controller's life: the component (open, mount, start,
 * stop, free; see ctl.h) and `roster start controller` (ctl_main), which
 * runs it alone on an HTTP server of its own. The parts live in
 * ctl_view.c, ctl_writer.c and ctl_api.c.
 *
 * Start-up order: parse options -> open the registry, migrate the schema and
 * load the view (so a restarted controller never answers from an empty
 * table) -> start the view tick, writer and refresher threads -> listen and
 * write the port file -> serve.
 *
 * If the database is down at start-up the controller still starts: it
 * answers 503 (health, lists, writes) until the refresher reaches the
 * database. A configuration error the database reports (bad password,
 * unknown database, no privilege), or a SQLite file that cannot be used
 * (no such directory, not a database, no permission), stops it with exit
 * code 78 instead.
 *
 * SIGTERM/SIGINT: stop accepting, answer held watches with 503 (their
 * clients move to another controller), let in-flight writes commit within
 * --shutdown_grace_ms, exit 0. A second signal exits at once.
 */
#include "ctl.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include <event2/event.h>

#define LOG_MODULE "controller"
#include "budget.h"
#include "log.h"
#include "util.h"

/* Set by ctl_main's signal handler: the server it stops. */
struct ctl_process {
    struct ctl_server *srv;
    struct http_server *http;
    _Atomic int stopping;
};

static void
on_signal(int sig, void *arg)
{
    struct ctl_process *p = arg;

    if (atomic_fetch_add(&p->stopping, 1) == 0) {
        log_info("received %s: draining (up to %lld ms)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                 (long long)p->srv->cfg->shutdown_grace_ms);
        atomic_store(&p->srv->stopping, 1);
        http_server_shutdown(p->http, (int)p->srv->cfg->shutdown_grace_ms);
    } else {
        log_warn("second signal: stopping now");
        http_server_shutdown(p->http, 0);
    }
}

void
ctl_server_describe_db(const struct ctl_server *srv, char *out, size_t cap)
{
    const struct reg_config *rc = &srv->regcfg;

    if (rc->backend == REG_SQLITE) {
        snprintf(out, cap, "sqlite:%s", rc->sqlite_path);
    } else if (rc->mysql_socket) {
        snprintf(out, cap, "mysql:%s@unix:%s/%s", rc->mysql_user, rc->mysql_socket,
                 rc->mysql_database);
    } else if (strchr(rc->mysql_host, ',')) { /* a server list carries its own ports */
        snprintf(out, cap, "mysql:%s@%s/%s", rc->mysql_user, rc->mysql_host, rc->mysql_database);
    } else {
        snprintf(out, cap, "mysql:%s@%s:%d/%s", rc->mysql_user, rc->mysql_host, rc->mysql_port,
                 rc->mysql_database);
    }
}

static int
setup_networks(struct ctl_server *srv)
{
    char err[256];

    if (netaddr_list_parse(srv->cfg->trusted_networks, &srv->trusted, err, sizeof(err)) != 0) {
        log_error("--trusted_networks: %s", err);
        return -1;
    }
    if (netaddr_list_parse(srv->cfg->instance_networks, &srv->instance_nets, err, sizeof(err)) !=
        0) {
        log_error("--instance_networks: %s", err);
        return -1;
    }
    bool secret = srv->cfg->cluster_secret && *srv->cfg->cluster_secret;
    for (size_t i = 0; i < srv->trusted.n; i++) {
        if (srv->trusted.items[i].prefix == 0) {
            log_warn("--trusted_networks includes a /0 network: anyone who can reach this "
                     "controller can register and deregister instances");
            break;
        }
    }
    if (!secret) {
        log_info("no --cluster_secret: writes are accepted only from --trusted_networks (%s)",
                 srv->cfg->trusted_networks);
    }
    return 0;
}

/* Migrates and loads the view. Returns 0 to go on, or an exit code. */
static int
prime(struct ctl_server *srv)
{
    int rc = ctl_refresher_prime(srv->refresher);
    char db[600];

    ctl_server_describe_db(srv, db, sizeof(db));
    if (rc == REG_OK) {
        log_info("registry %s loaded", db);
        return 0;
    }
    if (rc == REG_EUNAVAIL || rc == REG_EBUSY) {
        log_warn("registry %s is unreachable (%s); serving 503 until it answers", db,
                 ctl_refresher_errmsg(srv->refresher));
        return 0;
    }
    log_error("registry %s: %s: %s", db, reg_strerror(rc), ctl_refresher_errmsg(srv->refresher));
    return EX_CONFIG;
}

int
ctl_server_open(struct ctl_config *cfg, struct ctl_server **out)
{
    struct ctl_server *srv = calloc(1, sizeof(*srv));
    struct ctl_view_config vc;
    int code;

    *out = srv;
    if (!srv) {
        log_error("out of memory");
        return EX_OSERR;
    }
    srv->cfg = cfg;
    srv->started_mono_ms = util_mono_ms();
    pthread_mutex_init(&srv->db.mu, NULL);
    ctl_config_registry(cfg, &srv->regcfg);
    vc.default_lease_ms = srv->regcfg.default_lease_ms;
    vc.tick_ms = 100;
    vc.max_instances = cfg->max_instances;
    /* a refresh succeeds every view_poll_ms while the database answers;
     * beyond this, the refresher is stuck (database unreachable) */
    vc.stale_ms = cfg->view_poll_ms + 500;
    vc.instance_nets = &srv->instance_nets; /* filled by setup_networks, before any row */
    if (setup_networks(srv) != 0) {
        return EX_USAGE;
    }
    if (ctl_view_new(&vc, ctl_api_view_changed, srv, &srv->view) != 0 ||
        ctl_writer_new(srv, &srv->writer) != 0 || ctl_refresher_new(srv, &srv->refresher) != 0 ||
        ctl_settings_new(srv, &srv->settings) != 0 || ctl_lists_new(&srv->lists) != 0) {
        log_error("cannot set up the controller (out of memory or bad registry settings)");
        return EX_SOFTWARE;
    }
    code = prime(srv);
    if (code == 0) {
        ctl_settings_prime(srv->settings);
    }
    return code;
}

int
ctl_server_mount(struct ctl_server *srv, struct http_server *http)
{
    const struct http_service svc = {
        .routes = ctl_routes,
        .arg = srv,
        .guard = ctl_api_guard,
        .access_log = ctl_api_access_log,
        .on_drain = ctl_api_loop_drain,
    };
    const struct http_service settings_svc = {
        .routes = ctl_settings_routes,
        .arg = srv,
        .guard = ctl_api_guard,
        .access_log = ctl_api_access_log,
    };

    srv->http = http;
    srv->nloops = http_server_nloops(http);
    srv->loops = calloc((size_t)srv->nloops, sizeof(*srv->loops));
    if (!srv->loops) {
        log_error("out of memory");
        return EX_OSERR;
    }
    for (int i = 0; i < srv->nloops; i++) {
        srv->loops[i] = ctl_api_loop_new(srv, http_server_loop(http, i));
        if (!srv->loops[i]) {
            log_error("out of memory");
            return EX_OSERR;
        }
    }
    if (http_server_mount(http, &svc) != 0 || http_server_mount(http, &settings_svc) != 0) {
        log_error("cannot mount the controller's routes");
        return EX_SOFTWARE;
    }
    return 0;
}

int
ctl_server_start(struct ctl_server *srv)
{
    if (ctl_view_start(srv->view) != 0 || ctl_writer_start(srv->writer) != 0 ||
        ctl_refresher_start(srv->refresher) != 0 || ctl_settings_start(srv->settings) != 0 ||
        ctl_lists_start(srv->lists) != 0) {
        log_error("cannot start controller threads");
        return EX_OSERR;
    }
    return 0;
}

void
ctl_server_stop(struct ctl_server *srv)
{
    if (!srv) {
        return;
    }
    atomic_store(&srv->stopping, 1);
    /* stop every thread that may post to the loops before they are freed */
    ctl_refresher_stop(srv->refresher);
    ctl_settings_stop(srv->settings); /* answers the settings writes queued */
    ctl_lists_stop(srv->lists);       /* answers the lists queued */
    if (srv->view) {
        ctl_view_stop(srv->view);
    }
    ctl_writer_stop(srv->writer); /* commits what is queued; completions wait */
    for (int i = 0; srv->loops && i < srv->nloops; i++) {
        if (srv->loops[i]) {
            ctl_api_loop_drain(http_server_loop(srv->http, i), srv); /* left by a forced stop */
        }
    }
}

void
ctl_server_free(struct ctl_server *srv)
{
    if (!srv) {
        return;
    }
    /* the completions and view-change tasks still queued ran in
     * http_server_free, before this: the loops' state can go */
    for (int i = 0; srv->loops && i < srv->nloops; i++) {
        free(srv->loops[i]);
    }
    free(srv->loops);
    ctl_refresher_free(srv->refresher);
    ctl_settings_free(srv->settings);
    ctl_lists_free(srv->lists);
    ctl_writer_free(srv->writer);
    ctl_view_free(srv->view);
    netaddr_list_cleanup(&srv->trusted);
    netaddr_list_cleanup(&srv->instance_nets);
    pthread_mutex_destroy(&srv->db.mu);
    free(srv);
}

int
ctl_main(int argc, char **argv)
{
    struct ctl_config cfg;
    struct ctl_process p = {0};
    struct ctl_server *srv = NULL;
    struct http_server *http = NULL;
    char err[256];
    int code;
    int rc;

    memset(&cfg, 0, sizeof(cfg));
    rc = ctl_config_load(&cfg, argc, argv);
    if (rc != 0) {
        ctl_config_cleanup(&cfg);
        return rc == 1 ? 0 : EX_USAGE;
    }
    if (cfg.check) {
        printf("checks:\n");
        code = ctl_check(&cfg, stdout);
        if (code == 0 && cfg.port_file && util_check_creatable(cfg.port_file, err, sizeof(err))) {
            fprintf(stderr, "roster: --port_file: %s\n", err);
            code = EX_CANTCREAT;
        }
        if (code == 0) {
            printf("OK: the controller would start (nothing was bound or connected)\n");
        }
        ctl_config_cleanup(&cfg);
        return code;
    }
    signal(SIGPIPE, SIG_IGN);
    budget_set_limit(cfg.memory_budget_bytes); /* the process is this controller */
    code = ctl_server_open(&cfg, &srv);
    if (code != 0) {
        goto out;
    }
    struct http_server_config hc = {
        .host = cfg.host,
        .port = (int)cfg.port,
        .threads = (int)cfg.threads,
        .max_body = (size_t)cfg.max_body_bytes,
    };
    http_limits_apply(&cfg.http, &hc);
    if (http_server_new(&hc, &http, err, sizeof(err)) != 0) {
        log_error("%s", err);
        code = EX_OSERR;
        goto out;
    }
    code = ctl_server_mount(srv, http);
    if (code == 0) {
        code = ctl_server_start(srv);
    }
    if (code != 0) {
        goto out;
    }
    p.srv = srv;
    p.http = http;
    if (http_server_catch_signals(http, on_signal, &p) != 0) {
        log_error("cannot install signal handlers");
        code = EX_OSERR;
        goto out;
    }
    if (cfg.port_file && util_write_port_file(cfg.port_file, http_server_port(http))) {
        log_error("cannot write --port_file %s: %s", cfg.port_file, strerror(errno));
        code = EX_CANTCREAT;
        goto out;
    }
    log_info("controller listening on %s:%d (%lld thread%s)", cfg.host, http_server_port(http),
             (long long)cfg.threads, cfg.threads == 1 ? "" : "s");
    http_server_run(http);
    log_info("controller stopped");
out:
    ctl_server_stop(srv);
    http_server_free(http);
    ctl_server_free(srv);
    ctl_config_cleanup(&cfg);
    return code;
}
