/* SPDX-License-Identifier: MIT
 *
 * ctl_server.c - a controller's life: configuration, start-up, signals,
 * graceful stop. The parts live in ctl_view.c, ctl_writer.c and ctl_api.c.
 *
 * Start-up order: parse options -> open the registry, migrate the schema and
 * load the view (so a restarted controller never answers from an empty
 * table) -> start the view tick, writer and refresher threads -> listen and
 * write the port file -> serve.
 *
 * If the database is down at start-up the controller still starts: it
 * answers 503 (health, lists, writes) until the refresher reaches the
 * database. A configuration error the database reports (bad password,
 * unknown database, no privilege) stops it with exit code 78 instead.
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
#include "log.h"
#include "util.h"

static void
on_signal(int sig, void *arg)
{
    struct ctl_server *srv = arg;

    if (atomic_fetch_add(&srv->stopping, 1) == 0) {
        log_info("received %s: draining (up to %lld ms)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                 (long long)srv->cfg->shutdown_grace_ms);
        http_server_shutdown(srv->http, (int)srv->cfg->shutdown_grace_ms);
    } else {
        log_warn("second signal: stopping now");
        http_server_shutdown(srv->http, 0);
    }
}

static void
describe_database(const struct reg_config *rc, char *out, size_t cap)
{
    if (rc->backend == REG_SQLITE) {
        snprintf(out, cap, "sqlite:%s", rc->sqlite_path);
    } else if (rc->mysql_socket) {
        snprintf(out, cap, "mysql:%s@unix:%s/%s", rc->mysql_user, rc->mysql_socket,
                 rc->mysql_database);
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

    describe_database(&srv->regcfg, db, sizeof(db));
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

/* Binds the listening socket and prepares the loops (nothing runs yet). */
static int
bind_http(struct ctl_server *srv)
{
    struct http_server_config hc = {
        .host = srv->cfg->host,
        .port = (int)srv->cfg->port,
        .threads = (int)srv->cfg->threads,
        .max_body = (size_t)srv->cfg->max_body_bytes,
    };
    char err[256];

    if (http_server_new(&hc, ctl_routes, srv, &srv->http, err, sizeof(err)) != 0) {
        log_error("%s", err);
        return EX_OSERR;
    }
    http_server_set_hooks(srv->http, ctl_api_loop_start, ctl_api_loop_drain, ctl_api_guard,
                          ctl_api_access_log);
    for (int i = 0; i < http_server_nloops(srv->http); i++) {
        struct http_loop *loop = http_server_loop(srv->http, i);
        struct ctl_loop *cl = ctl_api_loop_new(srv, loop);
        if (!cl) {
            log_error("out of memory");
            return EX_OSERR;
        }
        http_loop_set_data(loop, cl);
    }
    return 0;
}

/* Installs the signal handlers, announces the port and serves until stopped. */
static int
serve(struct ctl_server *srv)
{
    if (http_server_catch_signals(srv->http, on_signal, srv) != 0) {
        log_error("cannot install signal handlers");
        return EX_OSERR;
    }
    if (srv->cfg->port_file &&
        util_write_port_file(srv->cfg->port_file, http_server_port(srv->http))) {
        log_error("cannot write --port_file %s: %s", srv->cfg->port_file, strerror(errno));
        return EX_CANTCREAT;
    }
    log_info("controller listening on %s:%d (%lld thread%s)", srv->cfg->host,
             http_server_port(srv->http), (long long)srv->cfg->threads,
             srv->cfg->threads == 1 ? "" : "s");
    http_server_run(srv->http);
    return 0;
}

static void
teardown(struct ctl_server *srv)
{
    /* stop every thread that may post to the loops before freeing them */
    ctl_refresher_stop(srv->refresher);
    if (srv->view) {
        ctl_view_stop(srv->view);
    }
    ctl_writer_stop(srv->writer); /* commits what is queued; completions wait */
    int nloops = srv->http ? http_server_nloops(srv->http) : 0;
    void **cls = calloc(nloops > 0 ? (size_t)nloops : 1, sizeof(*cls));
    for (int i = 0; i < nloops; i++) {
        struct http_loop *loop = http_server_loop(srv->http, i);
        ctl_api_loop_drain(loop, srv); /* watches left by a forced stop */
        if (cls) {
            cls[i] = http_loop_get_data(loop);
        }
    }
    /* runs the completions and view-change tasks still queued, which use
     * the loops' state: freed only after */
    http_server_free(srv->http);
    srv->http = NULL;
    for (int i = 0; cls && i < nloops; i++) {
        free(cls[i]);
    }
    free(cls);
    ctl_refresher_free(srv->refresher);
    ctl_writer_free(srv->writer);
    ctl_view_free(srv->view);
    netaddr_list_cleanup(&srv->trusted);
    netaddr_list_cleanup(&srv->instance_nets);
    pthread_mutex_destroy(&srv->db.mu);
}

int
ctl_main(int argc, char **argv)
{
    struct ctl_config cfg;
    struct ctl_server srv;
    struct ctl_view_config vc;
    int code = 0;
    int rc;

    memset(&cfg, 0, sizeof(cfg));
    memset(&srv, 0, sizeof(srv));
    rc = ctl_config_load(&cfg, argc, argv);
    if (rc != 0) {
        ctl_config_cleanup(&cfg);
        return rc == 1 ? 0 : EX_USAGE;
    }
    signal(SIGPIPE, SIG_IGN);
    srv.cfg = &cfg;
    srv.started_mono_ms = util_mono_ms();
    pthread_mutex_init(&srv.db.mu, NULL);
    ctl_config_registry(&cfg, &srv.regcfg);
    vc.default_lease_ms = srv.regcfg.default_lease_ms;
    vc.tick_ms = 100;
    vc.max_instances = cfg.max_instances;
    /* a refresh succeeds every view_poll_ms while the database answers;
     * beyond this, the refresher is stuck (database unreachable) */
    vc.stale_ms = cfg.view_poll_ms + 500;
    if (setup_networks(&srv) != 0) {
        code = EX_USAGE;
        goto out;
    }
    if (ctl_view_new(&vc, ctl_api_view_changed, &srv, &srv.view) != 0 ||
        ctl_writer_new(&srv, &srv.writer) != 0 || ctl_refresher_new(&srv, &srv.refresher) != 0) {
        log_error("cannot set up the controller (out of memory or bad registry settings)");
        code = EX_SOFTWARE;
        goto out;
    }
    code = prime(&srv);
    if (code != 0) {
        goto out;
    }
    code = bind_http(&srv);
    if (code != 0) {
        goto out;
    }
    if (ctl_view_start(srv.view) != 0 || ctl_writer_start(srv.writer) != 0 ||
        ctl_refresher_start(srv.refresher) != 0) {
        log_error("cannot start controller threads");
        code = EX_OSERR;
        goto out;
    }
    code = serve(&srv);
    if (code == 0) {
        log_info("controller stopped");
    }
out:
    teardown(&srv);
    ctl_config_cleanup(&cfg);
    return code;
}
