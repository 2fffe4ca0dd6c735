/* SPDX-License-Identifier: MIT
 *
 * ctl_config.c - the controller's options: one table that parses argv and
 * the environment, prints --help and generates docs/configuration.md.
 * DB-GPT's flag names come first and keep DB-GPT's defaults.
 */
#include "ctl.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG_MODULE "controller"
#include "log.h"

/* lo > hi means "no range" */
/* clang-format 14 would put the stringized name on a line of its own */
// clang-format off
#define F(name, type, def, lo, hi, env, fl, meta, help) \
    {#name, type, offsetof(struct ctl_config, name), def, lo, hi, env, fl, meta, help}
// clang-format on

const struct flag_def ctl_flag_defs[] = {
    F(host, FLAG_STR, "0.0.0.0", 1, 0, NULL, 0, "ADDR",
      "Address to listen on (numeric IPv4 or IPv6)."),
    F(port, FLAG_INT, "8000", 0, 65535, NULL, 0, "PORT", "Port to listen on (0 = any free port)."),
    F(threads, FLAG_INT, "1", 1, 64, NULL, 0, "N", "HTTP event-loop threads."),
    F(port_file, FLAG_STR, NULL, 1, 0, NULL, 0, "PATH",
      "Write the bound port to PATH once listening (for tests and supervisors)."),
    F(registry_type, FLAG_STR, "database", 1, 0, NULL, 0, "TYPE",
      "'database' (the table in --registry_db_type) or 'embedded' (an in-memory SQLite "
      "table: state is lost on exit)."),
    F(registry_db_type, FLAG_STR, "sqlite", 1, 0, NULL, 0, "TYPE",
      "'sqlite' (one machine, the default) or 'mysql' (MySQL or MariaDB, shared by any "
      "number of controllers)."),
    F(registry_db_name, FLAG_STR, "", 1, 0, NULL, 0, "NAME",
      "SQLite: the database file (default roster.db). MySQL: the database (default roster)."),
    F(registry_db_host, FLAG_STR, "127.0.0.1", 1, 0, NULL, 0, "HOST", "MySQL server host."),
    F(registry_db_port, FLAG_INT, "3306", 1, 65535, NULL, 0, "PORT", "MySQL server port."),
    F(registry_db_user, FLAG_STR, "root", 1, 0, NULL, 0, "USER", "MySQL user."),
    F(registry_db_password, FLAG_STR, "", 1, 0, "CONTROLLER_REGISTRY_DB_PASSWORD", FLAG_SECRET,
      "PASSWORD", "MySQL password (prefer the environment: argv is visible in ps)."),
    F(registry_db_socket, FLAG_STR, NULL, 1, 0, NULL, 0, "PATH",
      "MySQL Unix socket (instead of host and port)."),
    F(registry_db_connect_timeout_ms, FLAG_INT, "2000", 100, 60000, NULL, 0, "MS",
      "Database connect timeout."),
    F(registry_db_timeout_ms, FLAG_INT, "3000", 100, 60000, NULL, 0, "MS",
      "Database read/write timeout, lock-wait timeout, and the retry budget of one "
      "operation."),
    F(registry_db_sync_full, FLAG_BOOL, "false", 1, 0, NULL, 0, NULL,
      "SQLite: PRAGMA synchronous=FULL (survive power loss) instead of NORMAL."),
    F(heartbeat_interval_secs, FLAG_DOUBLE, "20", 0.1, 86400, NULL, 0, "SECS",
      "How often the sweep marks expired rows unhealthy in the table (for DB-GPT readers)."),
    F(heartbeat_timeout_secs, FLAG_DOUBLE, "60", 0.1, 86400, NULL, 0, "SECS",
      "Lease of instances that declare no heartbeat interval (DB-GPT workers). roster "
      "workers declare theirs and get 3 intervals."),
    F(registry_gc_secs, FLAG_INT, "86400", 0, 315360000, NULL, 0, "SECS",
      "Delete rows not heard from for this long (0 = never)."),
    F(view_refresh_ms, FLAG_INT, "5000", 50, 600000, NULL, 0, "MS",
      "Longest time between full re-reads of the table (heartbeat times and loads in the list, "
      "rows deleted elsewhere); sooner when a third of the shortest lease is shorter."),
    F(view_poll_ms, FLAG_INT, "200", 10, 60000, NULL, 0, "MS",
      "Poll for rows other controllers changed (registrations, deregistrations, admin)."),
    F(cluster_secret, FLAG_STR, NULL, 1, 0, NULL, FLAG_SECRET, "SECRET",
      "Shared secret required for writes (header X-Roster-Secret or Authorization: Bearer)."),
    F(trusted_networks, FLAG_STR, "127.0.0.0/8,::1", 1, 0, NULL, 0, "CIDRS",
      "Peers in these networks may write without the secret (DB-GPT workers send none). "
      "'0.0.0.0/0,::/0' opens writes to everyone."),
    F(protect_reads, FLAG_BOOL, "false", 1, 0, NULL, 0, NULL,
      "Require the secret (or a trusted network) for reads too."),
    F(instance_networks, FLAG_STR, "", 1, 0, NULL, 0, "CIDRS",
      "If set, registered hosts must be IP literals inside these networks (SSRF guard)."),
    F(max_instances, FLAG_INT, "100000", 1, 10000000, NULL, 0, "N",
      "Most instances the registry holds; registrations beyond it get 503."),
    F(max_body_bytes, FLAG_INT, "65536", 1024, 16777216, NULL, 0, "BYTES",
      "Largest request body accepted (413 beyond)."),
    F(write_gather_us, FLAG_INT, "1000", 0, 100000, NULL, 0, "US",
      "Under load (the last commit held several writes), wait up to this long for more writes "
      "to join the next commit (0 = never wait)."),
    F(max_queue, FLAG_INT, "100000", 1, 10000000, NULL, 0, "N",
      "Writes waiting for the database before new ones get 503."),
    F(watch_max_secs, FLAG_INT, "60", 0, 3600, NULL, 0, "SECS",
      "Longest a watch (long-poll list with If-None-Match and wait=) is held."),
    F(max_watchers, FLAG_INT, "10000", 0, 1000000, NULL, 0, "N",
      "Most watches held at once; beyond it a watch is answered at once."),
    F(shutdown_grace_ms, FLAG_INT, "10000", 0, 600000, NULL, 0, "MS",
      "On SIGTERM, time allowed for in-flight requests (a second signal stops at once)."),
    F(log_level, FLAG_STR, "info", 1, 0, NULL, 0, "LEVEL", "error, warn, info, debug or trace."),
    F(access_log, FLAG_BOOL, "false", 1, 0, NULL, 0, NULL,
      "Log every request at info (default: writes at info, heartbeats and reads at debug)."),
    {0},
};

const char ctl_usage[] = "roster start controller [options]";
const char ctl_summary[] =
    "Runs a model controller: DB-GPT's controller API (/api/controller/*) over the registry "
    "table. Any number of controllers may share one MySQL table; none holds state of its own.";

void
ctl_config_cleanup(struct ctl_config *cfg)
{
    flags_cleanup(ctl_flag_defs, cfg);
}

static bool
one_of(const char *v, const char *a, const char *b)
{
    return strcmp(v, a) == 0 || strcmp(v, b) == 0;
}

int
ctl_config_load(struct ctl_config *cfg, int argc, char **argv)
{
    int rc = flags_load_role(ctl_flag_defs, cfg, argc, argv, ctl_usage, ctl_summary,
                             offsetof(struct ctl_config, log_level));

    if (rc != 0) {
        return rc;
    }
    if (!one_of(cfg->registry_type, "database", "embedded")) {
        fprintf(stderr, "roster: --registry_type must be 'database' or 'embedded'\n");
        return -1;
    }
    if (!one_of(cfg->registry_db_type, "sqlite", "mysql")) {
        fprintf(stderr, "roster: --registry_db_type must be 'sqlite' or 'mysql'\n");
        return -1;
    }
    return 0;
}

void
ctl_config_registry(const struct ctl_config *cfg, struct reg_config *out)
{
    bool mysql =
        strcmp(cfg->registry_db_type, "mysql") == 0 && strcmp(cfg->registry_type, "embedded") != 0;
    const char *name = cfg->registry_db_name;

    memset(out, 0, sizeof(*out));
    out->backend = mysql ? REG_MYSQL : REG_SQLITE;
    if (strcmp(cfg->registry_type, "embedded") == 0) {
        out->sqlite_path = ":memory:";
    } else if (!mysql) {
        out->sqlite_path = *name ? name : "roster.db";
    }
    out->sqlite_synchronous_full = cfg->registry_db_sync_full;
    out->mysql_host = cfg->registry_db_host;
    out->mysql_port = (int)cfg->registry_db_port;
    out->mysql_socket = cfg->registry_db_socket;
    out->mysql_user = cfg->registry_db_user;
    out->mysql_password = cfg->registry_db_password;
    out->mysql_database = *name ? name : "roster";
    out->connect_timeout_ms = (int)cfg->registry_db_connect_timeout_ms;
    out->io_timeout_ms = (int)cfg->registry_db_timeout_ms;
    out->busy_ms = (int)cfg->registry_db_timeout_ms;
    out->retry_budget_ms = (int)cfg->registry_db_timeout_ms;
    out->default_lease_ms = (int64_t)(cfg->heartbeat_timeout_secs * 1000.0);
}
