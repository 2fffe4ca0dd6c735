/* SPDX-License-Identifier: MIT
 *
 * reg_mysql.c - the MySQL/MariaDB backend (MariaDB Connector/C): the one
 * table that a tier of controllers shares.
 *
 * DESIGN
 * - Same statements, columns and per-operation semantics as reg_sqlite.c;
 *   only the dialect differs. Every statement is prepared with bound
 *   parameters; the only SQL text assembled at run time is the multi-row
 *   upsert, from constant fragments.
 * - One MYSQL connection per store, no MYSQL_OPT_RECONNECT: a connection-
 *   class error returns REG_EUNAVAIL and reg_store.c disconnects and
 *   connects again, which re-runs the session set-up below and re-prepares
 *   statements lazily (prepared statements belong to their connection).
 * - Session: time_zone '+00:00' (UNIX_TIMESTAMP() and the DATETIME columns
 *   then mean UTC), innodb_lock_wait_timeout and lock_wait_timeout from
 *   busy_ms (lock waits end as error 1205, which is retried), READ
 *   COMMITTED (no gap locks on the plain reads and updates).
 * - CLIENT_FOUND_ROWS: an UPDATE reports matched rows, so an ADMIN op on an
 *   existing row whose values did not change is not "not found".
 * - Time is the server's: last_heartbeat = UTC_TIMESTAMP(3), epoch ms are
 *   computed in SQL. NOW(3) and UTC_TIMESTAMP(3) are fixed per statement.
 * - REGISTER and HEARTBEAT are INSERT ... ON DUPLICATE KEY UPDATE with
 *   VALUES(col) (MariaDB has no row alias). Consecutive ops of one kind are
 *   sorted by key, merged when a key repeats (the result equals applying
 *   them in order) and written as multi-row statements of up to BATCH_MAX
 *   rows, prepared lazily per (kind, row count). Every controller so locks
 *   rows in the same order, which keeps deadlocks rare; the ones left are
 *   retried by reg_store.c. ODKU assignments run left to right and later
 *   ones see earlier new values, so the heartbeat's "was it dead?" test on
 *   roster_updated_ms comes before healthy/last_heartbeat are assigned.
 * - Several servers (reg_config.mysql_host "h1:3306,h2:3306,..."): one
 *   connection at a time, to the server that last worked (be->cur). A
 *   connect tries it first, then the others in list order (wrapping); a
 *   lost connection starts the next connect at the server after it, so a
 *   killed or stopped Galera node is left at once. Each connect gets the
 *   whole seconds left of the call's time bound (reg__connect_secs). A
 *   Galera node outside the primary component answers 1047 (WSREP not
 *   ready): that counts as unreachable, so the store moves on.
 * - Galera: a certification conflict aborts the later transaction with
 *   1213, like an InnoDB deadlock: retried by reg_store.c. The session sets
 *   wsrep_sync_wait = 2 (galera_session). Every write is
 *   one autocommit statement or one short transaction, so a retry is cheap.
 * - InnoDB (innodb_autoinc_lock_mode 1, the default) hands every upserted
 *   row an AUTO_INCREMENT value even when the row is updated, so heartbeats
 *   consume ids steadily: migration 0003 widens DB-GPT's `id int` to BIGINT.
 */
#include "reg_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mysql.h>

#define TABLE  "dbgpt_cluster_registry_instance"
#define NOW_MS "CAST(ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000) AS SIGNED)"
#define HB_MS  "CAST(ROUND(UNIX_TIMESTAMP(last_heartbeat) * 1000) AS SIGNED)"
#define KEY_WHERE                                                                                  \
    " WHERE model_name = ? AND host = ? AND port = ? AND (sys_code = '' OR sys_code IS NULL)"

#define NO_TIME       "mysql connect: less than a second left of the time bound"
#define BATCH_MAX     64                         /* rows per multi-row upsert */
#define UPSERT_PARAMS 11                         /* bound parameters per upsert row */
#define TEXT_CAP      (4 * REG_TEMPLATE_MAX + 1) /* varchar(128) in utf8mb4 */

enum upsert_kind { K_REGISTER, K_HEARTBEAT, K_COUNT };

enum stmt_id {
    S_DEREGISTER,
    S_REMOVE,
    S_ADMIN,
    S_LIST_ALL,
    S_LIST_SINCE,
    S_LIST_DELTA,
    S_NOW,
    S_COUNT_ROWS,
    S_SWEEP_MARK,
    S_SWEEP_GC,
    S_SESSION,
    S_GET_LOCK,
    S_RELEASE_LOCK,
    S_MIGRATE_RECORD,
    S_SET_VERSION,
    S_SET_LIST,
    S_SET_BUMP,
    S_SET_UPSERT,
    S_SET_DELETE,
    S_USE_INIT,
    S_USE_GET,
    S_USE_SET,
    S_USE_GC,
    S_COUNT
};

#define UPSERT_HEAD                                                                                \
    "INSERT INTO " TABLE " (model_name, host, port, weight, check_healthy, healthy, enabled,"      \
    " prompt_template, last_heartbeat, user_name, sys_code, gmt_created, gmt_modified,"            \
    " roster_lease_ms, roster_in_flight, roster_queue_length, roster_capacity,"                    \
    " roster_updated_ms) VALUES "
#define UPSERT_ROW                                                                                 \
    "(?, ?, ?, ?, ?, 1, ?, ?, UTC_TIMESTAMP(3), NULL, '', UTC_TIMESTAMP(), UTC_TIMESTAMP(),"       \
    " ?, ?, ?, ?, " NOW_MS ")"
#define UPSERT_LIVENESS                                                                            \
    " healthy = 1, last_heartbeat = VALUES(last_heartbeat),"                                       \
    " gmt_modified = VALUES(gmt_modified), roster_lease_ms = VALUES(roster_lease_ms),"             \
    " roster_in_flight = VALUES(roster_in_flight),"                                                \
    " roster_queue_length = VALUES(roster_queue_length),"                                          \
    " roster_capacity = VALUES(roster_capacity)"

static const char *const upsert_tail[K_COUNT] = {
    [K_REGISTER] =
        " ON DUPLICATE KEY UPDATE roster_updated_ms = VALUES(roster_updated_ms),"
        " weight = VALUES(weight),"
        " prompt_template = COALESCE(VALUES(prompt_template), prompt_template)," UPSERT_LIVENESS,
    /* First, while healthy/last_heartbeat/roster_lease_ms still hold the old
     * row: bump roster_updated_ms only when the beat brings the instance
     * back (deregistered or lease expired). The last ? is the default lease. */
    [K_HEARTBEAT] = " ON DUPLICATE KEY UPDATE roster_updated_ms = IF(healthy IS NULL"
                    " OR healthy = 0 OR last_heartbeat IS NULL OR " NOW_MS " - " HB_MS
                    " > IF(roster_lease_ms > 0, roster_lease_ms, ?),"
                    " VALUES(roster_updated_ms), roster_updated_ms)," UPSERT_LIVENESS,
};

#define LIST_COLUMNS                                                                               \
    "SELECT model_name, host, port, weight, check_healthy, healthy, enabled, prompt_template,"     \
    " " HB_MS ", roster_lease_ms, roster_weight_override, roster_in_flight,"                       \
    " roster_queue_length, roster_capacity, roster_updated_ms, " NOW_MS " FROM " TABLE
#define LIST_NCOLS 16

static const char *const stmt_sql[S_COUNT] = {
    [S_DEREGISTER] = "UPDATE " TABLE " SET healthy = 0, gmt_modified = UTC_TIMESTAMP(),"
                     " roster_updated_ms = " NOW_MS KEY_WHERE,
    [S_REMOVE] = "DELETE FROM " TABLE KEY_WHERE,
    [S_ADMIN] = "UPDATE " TABLE " SET enabled = IF(? < 0, enabled, ?),"
                " roster_weight_override = CASE ? WHEN 0 THEN roster_weight_override"
                " WHEN 1 THEN ? ELSE NULL END,"
                " gmt_modified = UTC_TIMESTAMP(), roster_updated_ms = " NOW_MS KEY_WHERE,
    [S_LIST_ALL] = LIST_COLUMNS,
    [S_LIST_SINCE] = LIST_COLUMNS " WHERE roster_updated_ms >= ?",
    /* index_merge (sort_union) of idx_roster_updated and
     * idx_roster_last_heartbeat: only the rows changed or heartbeated since */
    [S_LIST_DELTA] = LIST_COLUMNS " WHERE roster_updated_ms >= ?"
                                  " OR last_heartbeat >= FROM_UNIXTIME(? / 1000)",
    [S_NOW] = "SELECT " NOW_MS,
    [S_COUNT_ROWS] = "SELECT COUNT(*) FROM " TABLE,
    /* gmt_modified = gmt_modified: no ON UPDATE CURRENT_TIMESTAMP, as in SQLite */
    [S_SWEEP_MARK] = "UPDATE " TABLE " SET healthy = 0, gmt_modified = gmt_modified"
                     " WHERE healthy = 1 AND COALESCE(check_healthy, 1) != 0"
                     " AND last_heartbeat IS NOT NULL AND " NOW_MS " - " HB_MS
                     " > IF(roster_lease_ms > 0, roster_lease_ms, ?)",
    [S_SWEEP_GC] = "DELETE FROM " TABLE " WHERE NOT (COALESCE(check_healthy, 1) = 0"
                   " AND COALESCE(healthy, 0) = 1) AND " NOW_MS " - CAST(ROUND(UNIX_TIMESTAMP("
                   "COALESCE(last_heartbeat, gmt_modified)) * 1000) AS SIGNED) > ?",
    [S_SESSION] = "SET time_zone = '+00:00', innodb_lock_wait_timeout = ?, lock_wait_timeout = ?",
    [S_GET_LOCK] = "SELECT GET_LOCK('roster_migrate', ?)",
    [S_RELEASE_LOCK] = "SELECT RELEASE_LOCK('roster_migrate')",
    [S_MIGRATE_RECORD] = "INSERT IGNORE INTO roster_schema_migrations (version, name, applied_at)"
                         " VALUES (?, ?, UTC_TIMESTAMP())",
    [S_SET_VERSION] = "SELECT version FROM roster_settings_version WHERE id = 1",
    [S_SET_LIST] = "SELECT kind, name, value, updated_ms FROM roster_settings ORDER BY kind, name",
    [S_SET_BUMP] = "UPDATE roster_settings_version SET version = version + 1"
                   " WHERE id = 1 AND version = ?",
    [S_SET_UPSERT] = "INSERT INTO roster_settings (kind, name, value, updated_ms)"
                     " VALUES (?, ?, ?, " NOW_MS ") ON DUPLICATE KEY UPDATE"
                     " value = VALUES(value), updated_ms = VALUES(updated_ms)",
    [S_SET_DELETE] = "DELETE FROM roster_settings WHERE kind = ? AND name = ?",
    /* the upsert takes the row's exclusive lock for the transaction */
    [S_USE_INIT] = "INSERT INTO roster_key_usage (name, win) VALUES (?, ?)"
                   " ON DUPLICATE KEY UPDATE requests = requests",
    [S_USE_GET] = "SELECT requests, tokens FROM roster_key_usage WHERE name = ? AND win = ?",
    [S_USE_SET] = "UPDATE roster_key_usage SET requests = ?, tokens = ? WHERE name = ? AND win = ?",
    [S_USE_GC] = "DELETE FROM roster_key_usage WHERE win < ?",
};

struct db_server {
    char host[256];
    unsigned int port;
};

struct mysql_be {
    MYSQL *conn;
    struct db_server servers[REG_MYSQL_HOSTS_MAX];
    size_t nservers;
    size_t cur;       /* the server that last worked */
    bool move_on;     /* its connection was lost: start the next connect after it */
    bool established; /* conn is connected (not a half-made connect) */
    MYSQL_STMT *stmt[S_COUNT];
    MYSQL_STMT *upsert[K_COUNT][BATCH_MAX]; /* [kind][rows - 1] */
    /* parameter space of one multi-row upsert, and its int conversions */
    MYSQL_BIND params[BATCH_MAX * UPSERT_PARAMS + 1];
    int flags[BATCH_MAX][2];
};

/* Result buffers of one list row. */
struct row_buf {
    MYSQL_BIND b[LIST_NCOLS];
    unsigned long len[LIST_NCOLS];
    my_bool null[LIST_NCOLS];
    my_bool err[LIST_NCOLS];
    char name[TEXT_CAP];
    char host[TEXT_CAP];
    char tmpl[TEXT_CAP];
    int port, check, healthy, enabled, lease, in_flight, queue, capacity;
    double weight, override;
    long long hb, updated, now;
    bool weight_is_float; /* DB-GPT's `weight float` column */
};

/* Errors that mean the connection is gone or refused: reconnect and retry. */
static const unsigned int conn_errors[] = {
    2002, /* CR_CONNECTION_ERROR */
    2003, /* CR_CONN_HOST_ERROR */
    2005, /* CR_UNKNOWN_HOST */
    2006, /* CR_SERVER_GONE_ERROR */
    2013, /* CR_SERVER_LOST */
    2055, /* CR_SERVER_LOST_EXTENDED */
    1927, /* ER_CONNECTION_KILLED (MariaDB) */
    1053, /* ER_SERVER_SHUTDOWN */
    4031, /* ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8) */
    1040, /* ER_CON_COUNT_ERROR: too many connections */
    1047, /* ER_UNKNOWN_COM_ERROR: Galera "WSREP has not yet prepared node for
             application use" (not in the primary component, or not synced) */
    1180, /* ER_ERROR_DURING_COMMIT: Galera "... provider status: Not connected to
             Primary Component" (the node lost quorum while committing) */
};

static int
classify(unsigned int code)
{
    for (size_t i = 0; i < sizeof(conn_errors) / sizeof(conn_errors[0]); i++) {
        if (code == conn_errors[i]) {
            return REG_EUNAVAIL;
        }
    }
    switch (code) {
    case 0:
        return REG_OK;
    case 1213: /* ER_LOCK_DEADLOCK */
    case 1205: /* ER_LOCK_WAIT_TIMEOUT */
        return REG_EBUSY;
    case 1054: /* ER_BAD_FIELD_ERROR: the table predates roster's migrations */
    case 1146: /* ER_NO_SUCH_TABLE */
        return REG_ESCHEMA;
    case 2008: /* CR_OUT_OF_MEMORY */
        return REG_ENOMEM;
    default: /* 1045 bad credentials, 1049 unknown database, ... */
        return REG_EBACKEND;
    }
}

static int
report(struct reg_store *st, const char *what, unsigned int code, const char *msg)
{
    if (code == 0) {
        reg__set_err(st, "mysql %s: unknown error", what);
        return REG_EBACKEND;
    }
    reg__set_err(st, "mysql %s: %s (%u)", what, msg, code);
    return classify(code);
}

static int
fail_conn(struct reg_store *st, const char *what)
{
    struct mysql_be *be = st->be;

    if (!be->conn) {
        return report(st, what, 2006, "not connected");
    }
    return report(st, what, mysql_errno(be->conn), mysql_error(be->conn));
}

static int
fail_stmt(struct reg_store *st, MYSQL_STMT *s, const char *what)
{
    return report(st, what, mysql_stmt_errno(s), mysql_stmt_error(s));
}

static unsigned int
ceil_secs(int ms)
{
    return ms <= 0 ? 1 : (unsigned int)((ms + 999) / 1000);
}

/* One entry of the server list: HOST, HOST:PORT, [IPV6], [IPV6]:PORT or a
 * bare IPv6 address (two colons or more, no port). */
static int
parse_server(const char *p, size_t n, unsigned int default_port, struct db_server *out)
{
    const char *host = p;
    size_t hlen = n;
    const char *port = NULL;
    size_t plen = 0;

    if (n && p[0] == '[') {
        const char *close = memchr(p, ']', n);
        if (!close) {
            return REG_EINVAL;
        }
        host = p + 1;
        hlen = (size_t)(close - host);
        if (close + 1 < p + n) {
            if (close[1] != ':') {
                return REG_EINVAL;
            }
            port = close + 2;
            plen = (size_t)(p + n - port);
        }
    } else {
        const char *colon = memchr(p, ':', n);
        if (colon && !memchr(colon + 1, ':', (size_t)(p + n - colon - 1))) {
            hlen = (size_t)(colon - p);
            port = colon + 1;
            plen = (size_t)(p + n - port);
        }
    }
    if (hlen == 0 || hlen >= sizeof(out->host)) {
        return REG_EINVAL;
    }
    memcpy(out->host, host, hlen);
    out->host[hlen] = '\0';
    out->port = default_port;
    if (port) {
        unsigned long v = 0;
        if (plen == 0 || plen > 5) {
            return REG_EINVAL;
        }
        for (size_t i = 0; i < plen; i++) {
            if (port[i] < '0' || port[i] > '9') {
                return REG_EINVAL;
            }
            v = v * 10 + (unsigned long)(port[i] - '0');
        }
        if (v < 1 || v > 65535) {
            return REG_EINVAL;
        }
        out->port = (unsigned int)v;
    }
    return REG_OK;
}

static int
parse_servers(struct reg_store *st, struct mysql_be *be)
{
    const char *list = st->cfg.mysql_host && *st->cfg.mysql_host ? st->cfg.mysql_host : "127.0.0.1";
    const char *p = list;

    for (;;) {
        size_t n = strcspn(p, ",");
        const char *q = p;
        size_t m = n;

        while (m && (*q == ' ' || *q == '\t')) {
            q++;
            m--;
        }
        while (m && (q[m - 1] == ' ' || q[m - 1] == '\t')) {
            m--;
        }
        if (be->nservers == REG_MYSQL_HOSTS_MAX ||
            parse_server(q, m, (unsigned int)st->cfg.mysql_port, &be->servers[be->nservers]) !=
                REG_OK) {
            reg__set_err(st, "mysql: bad server list (HOST[:PORT],... at most %d)",
                         REG_MYSQL_HOSTS_MAX);
            return REG_EINVAL;
        }
        be->nservers++;
        if (p[n] != ',') {
            return REG_OK;
        }
        p += n + 1;
    }
}

static int
be_init(struct reg_store *st)
{
    struct mysql_be *be = calloc(1, sizeof(struct mysql_be));

    st->be = be;
    if (!be) {
        return REG_ENOMEM;
    }
    return parse_servers(st, be);
}

static void
be_disconnect(struct reg_store *st)
{
    struct mysql_be *be = st->be;

    for (int i = 0; i < S_COUNT; i++) {
        if (be->stmt[i]) {
            mysql_stmt_close(be->stmt[i]);
            be->stmt[i] = NULL;
        }
    }
    for (int k = 0; k < K_COUNT; k++) {
        for (int i = 0; i < BATCH_MAX; i++) {
            if (be->upsert[k][i]) {
                mysql_stmt_close(be->upsert[k][i]);
                be->upsert[k][i] = NULL;
            }
        }
    }
    if (be->conn) {
        if (be->established) {
            be->move_on = true; /* lost (or closed): try the next server first */
        }
        mysql_close(be->conn);
        be->conn = NULL;
    }
    be->established = false;
}

static void
be_fini(struct reg_store *st)
{
    be_disconnect(st);
    free(st->be);
    st->be = NULL;
}

/* Runs fixed SQL text (no data in it) and discards any result set. */
static int
query(struct reg_store *st, const char *sql)
{
    struct mysql_be *be = st->be;
    MYSQL_RES *res;

    if (mysql_real_query(be->conn, sql, strlen(sql)) != 0) {
        return fail_conn(st, sql);
    }
    res = mysql_store_result(be->conn);
    if (res) {
        mysql_free_result(res);
    } else if (mysql_field_count(be->conn) != 0) {
        return fail_conn(st, sql);
    }
    return REG_OK;
}

/* Prepares `sql` into *slot unless already prepared on this connection. */
static int
prep_sql(struct reg_store *st, MYSQL_STMT **slot, const char *sql)
{
    struct mysql_be *be = st->be;
    MYSQL_STMT *s;
    int rc;

    if (*slot) {
        return REG_OK;
    }
    s = mysql_stmt_init(be->conn);
    if (!s) {
        reg__set_err(st, "mysql prepare: out of memory");
        return REG_ENOMEM;
    }
    if (mysql_stmt_prepare(s, sql, strlen(sql)) != 0) {
        rc = fail_stmt(st, s, "prepare");
        mysql_stmt_close(s);
        return rc;
    }
    *slot = s;
    return REG_OK;
}

static int
prep(struct reg_store *st, enum stmt_id id, MYSQL_STMT **out)
{
    struct mysql_be *be = st->be;
    int rc = prep_sql(st, &be->stmt[id], stmt_sql[id]);

    *out = be->stmt[id];
    return rc;
}

static int
execute(struct reg_store *st, MYSQL_STMT *s, MYSQL_BIND *params, const char *what)
{
    if (params && mysql_stmt_bind_param(s, params) != 0) {
        return fail_stmt(st, s, what);
    }
    if (mysql_stmt_execute(s) != 0) {
        return fail_stmt(st, s, what);
    }
    return REG_OK;
}

static void
bind_text(MYSQL_BIND *b, const char *s)
{
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = (void *)s;
    b->buffer_length = (unsigned long)strlen(s);
}

static void
bind_int(MYSQL_BIND *b, const int *v)
{
    b->buffer_type = MYSQL_TYPE_LONG;
    b->buffer = (void *)v;
}

static void
bind_i64(MYSQL_BIND *b, const int64_t *v)
{
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = (void *)v;
}

static void
bind_double(MYSQL_BIND *b, const double *v)
{
    b->buffer_type = MYSQL_TYPE_DOUBLE;
    b->buffer = (void *)v;
}

static void
bind_key(MYSQL_BIND *b, const struct reg_instance *in)
{
    bind_text(&b[0], in->model_name);
    bind_text(&b[1], in->host);
    bind_int(&b[2], &in->port);
}

/* Executes a one-row, one-column integer query (NULL reads as 0). */
static int
scalar(struct reg_store *st, enum stmt_id id, MYSQL_BIND *params, long long *out)
{
    MYSQL_STMT *s = NULL;
    MYSQL_BIND rb;
    my_bool is_null = 0;
    int fetched;
    int rc = prep(st, id, &s);

    *out = 0;
    if (rc == REG_OK) {
        rc = execute(st, s, params, "query");
    }
    if (rc != REG_OK) {
        return rc;
    }
    memset(&rb, 0, sizeof(rb));
    rb.buffer_type = MYSQL_TYPE_LONGLONG;
    rb.buffer = out;
    rb.is_null = &is_null;
    if (mysql_stmt_bind_result(s, &rb) != 0 || mysql_stmt_store_result(s) != 0) {
        rc = fail_stmt(st, s, "query");
        mysql_stmt_free_result(s);
        return rc;
    }
    fetched = mysql_stmt_fetch(s);
    if (fetched == 1) {
        rc = fail_stmt(st, s, "fetch");
    } else if (fetched == MYSQL_NO_DATA || is_null) {
        *out = 0;
    }
    mysql_stmt_free_result(s);
    return rc;
}

/* Galera: UPDATE and DELETE wait until this node has applied every write
 * the cluster committed before them (wsrep_sync_wait bit 2). Without it a
 * deregistration or admin change through node B moments after the
 * registration through node A can match no row (not applied on B yet) and
 * be lost as "unknown instance". Reads need no wait (the refresher re-reads
 * 5 s of changes every poll), nor do the upserts (certification orders
 * them). MySQL has no such variable (1193): nothing to do there; on a
 * MariaDB without Galera it is accepted and has no effect. */
static int
galera_session(struct reg_store *st)
{
    struct mysql_be *be = st->be;
    const char *sql = "SET SESSION wsrep_sync_wait = 2";

    if (mysql_real_query(be->conn, sql, strlen(sql)) != 0) {
        if (mysql_errno(be->conn) == 1193) { /* ER_UNKNOWN_SYSTEM_VARIABLE */
            return REG_OK;
        }
        return fail_conn(st, "session set-up");
    }
    return REG_OK;
}

static int
session_setup(struct reg_store *st)
{
    int wait = (int)ceil_secs(st->cfg.busy_ms);
    MYSQL_BIND b[2];
    MYSQL_STMT *s = NULL;
    int rc;

    memset(b, 0, sizeof(b));
    bind_int(&b[0], &wait);
    bind_int(&b[1], &wait);
    rc = prep(st, S_SESSION, &s);
    if (rc == REG_OK) {
        rc = execute(st, s, b, "session set-up");
    }
    if (rc == REG_OK) {
        rc = query(st, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED");
    }
    if (rc == REG_OK) {
        rc = galera_session(st);
    }
    return rc;
}

static int
set_options(struct reg_store *st, unsigned int ct)
{
    struct mysql_be *be = st->be;
    unsigned int io = ceil_secs(st->cfg.io_timeout_ms);
    unsigned int tcp = MYSQL_PROTOCOL_TCP;
    int bad = 0;

    bad |= mysql_options(be->conn, MYSQL_OPT_CONNECT_TIMEOUT, &ct);
    bad |= mysql_options(be->conn, MYSQL_OPT_READ_TIMEOUT, &io);
    bad |= mysql_options(be->conn, MYSQL_OPT_WRITE_TIMEOUT, &io);
    bad |= mysql_options(be->conn, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (!st->cfg.mysql_socket || !*st->cfg.mysql_socket) {
        /* host:port means TCP, also for "localhost" (as DB-GPT's pymysql) */
        bad |= mysql_options(be->conn, MYSQL_OPT_PROTOCOL, &tcp);
    }
    if (bad) {
        reg__set_err(st, "mysql: setting connection options failed");
        return REG_EBACKEND;
    }
    return REG_OK;
}

/* One connect to one server (host NULL: the Unix socket), with the session
 * set-up under the time guard. */
static int
connect_one(struct reg_store *st, const struct db_server *srv, unsigned int ct)
{
    struct mysql_be *be = st->be;
    const struct reg_config *c = &st->cfg;
    int rc;

    be->conn = mysql_init(NULL);
    if (!be->conn) {
        reg__set_err(st, "mysql_init: out of memory");
        return REG_ENOMEM;
    }
    rc = set_options(st, ct);
    if (rc == REG_OK &&
        !mysql_real_connect(be->conn, srv ? srv->host : "localhost", c->mysql_user,
                            c->mysql_password, c->mysql_database, srv ? srv->port : 0,
                            srv ? NULL : c->mysql_socket, CLIENT_FOUND_ROWS)) {
        rc = fail_conn(st, "connect");
        if (srv) {
            char keep[sizeof(st->errmsg)];
            memcpy(keep, st->errmsg, sizeof(keep));
            reg__set_err(st, "%s (server %s:%u)", keep, srv->host, srv->port);
        }
    }
    if (rc == REG_OK) {
        reg__guard_arm(st, (int)mysql_get_socket(be->conn));
        rc = session_setup(st);
        if (reg__guard_disarm(st) && rc != REG_OK) {
            rc = REG_EUNAVAIL; /* the server stopped answering during the set-up */
        }
    }
    if (rc != REG_OK) {
        be_disconnect(st);
    }
    return rc;
}

static int
be_connect(struct reg_store *st)
{
    struct mysql_be *be = st->be;
    size_t start = be->cur;
    int last = REG_EUNAVAIL;
    bool unreachable = false;
    bool tried = false;

    if (be->move_on && be->nservers > 1) {
        start = (be->cur + 1) % be->nservers;
    }
    be->move_on = false;
    for (size_t k = 0; k < (st->cfg.mysql_socket && *st->cfg.mysql_socket ? 1 : be->nservers);
         k++) {
        size_t i = (start + k) % be->nservers;
        unsigned int ct = reg__connect_secs(st);
        int one;

        if (ct == 0) {
            if (!tried && strncmp(st->errmsg, NO_TIME, strlen(NO_TIME)) != 0) {
                /* keep the last connect error: it says why */
                char keep[sizeof(st->errmsg)];
                memcpy(keep, st->errmsg, sizeof(keep));
                reg__set_err(st, NO_TIME "%s%.300s", keep[0] ? "; last error: " : "", keep);
            }
            break;
        }
        tried = true;
        one = connect_one(
            st, st->cfg.mysql_socket && *st->cfg.mysql_socket ? NULL : &be->servers[i], ct);
        if (one == REG_OK) {
            be->cur = i;
            be->established = true;
            return REG_OK;
        }
        if (one == REG_ENOMEM) {
            return one;
        }
        /* any server may be the one that works; report "unreachable" if
         * any of them was, else the refusal (bad credentials everywhere) */
        last = one;
        unreachable = unreachable || one == REG_EUNAVAIL;
    }
    return unreachable || !tried ? REG_EUNAVAIL : last;
}

static int
be_socket_fd(struct reg_store *st)
{
    struct mysql_be *be = st->be;

    return be->conn && be->established ? (int)mysql_get_socket(be->conn) : -1;
}

/* ---- writes ---------------------------------------------------------------- */

/* The error of a failed transaction survives its ROLLBACK. After a lost
 * connection there is nothing to roll back: the server does it. */
static void
rollback(struct reg_store *st, int rc)
{
    char keep[sizeof(st->errmsg)];

    if (rc == REG_EUNAVAIL) {
        return;
    }
    memcpy(keep, st->errmsg, sizeof(keep));
    (void)query(st, "ROLLBACK");
    memcpy(st->errmsg, keep, sizeof(keep));
}

static int
key_cmp(const struct reg_instance *a, const struct reg_instance *b)
{
    int c = strcmp(a->model_name, b->model_name);

    if (c == 0) {
        c = strcmp(a->host, b->host);
    }
    if (c == 0) {
        c = (a->port > b->port) - (a->port < b->port);
    }
    return c;
}

struct slot {
    const struct reg_instance *in;
    size_t seq; /* position in the batch: equal keys keep their order */
};

static int
slot_cmp(const void *pa, const void *pb)
{
    const struct slot *a = pa;
    const struct slot *b = pb;
    int c = key_cmp(a->in, b->in);

    if (c == 0) {
        c = (a->seq > b->seq) - (a->seq < b->seq);
    }
    return c;
}

/* Folds a later op `x` on the same key into `m` so that one upsert of `m`
 * equals the two in order: insert-only fields (enabled, check_healthy, and
 * for a heartbeat weight and template) stay the first op's; updated fields
 * are the last op's; a register without a template keeps the earlier one. */
static void
merge(struct reg_instance *m, const struct reg_instance *x, enum upsert_kind kind)
{
    if (kind == K_REGISTER) {
        m->weight = x->weight;
        if (x->has_prompt_template) {
            m->has_prompt_template = true;
            memcpy(m->prompt_template, x->prompt_template, sizeof(m->prompt_template));
        }
    }
    m->lease_ms = x->lease_ms;
    m->in_flight = x->in_flight;
    m->queue_length = x->queue_length;
    m->capacity = x->capacity;
}

/* Sorts the run's instances by key and merges repeated keys into *out
 * (caller frees). */
static int
sorted_rows(struct reg_op *ops, size_t n, enum upsert_kind kind, struct reg_instance **out,
            size_t *nout)
{
    struct slot *slots = calloc(n, sizeof(*slots));
    struct reg_instance *rows = calloc(n, sizeof(*rows));
    size_t m = 0;

    if (!slots || !rows) {
        free(slots);
        free(rows);
        return REG_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        slots[i].in = &ops[i].inst;
        slots[i].seq = i;
    }
    qsort(slots, n, sizeof(*slots), slot_cmp);
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && key_cmp(&rows[m - 1], slots[i].in) == 0) {
            merge(&rows[m - 1], slots[i].in, kind);
        } else {
            rows[m++] = *slots[i].in;
        }
    }
    free(slots);
    *out = rows;
    *nout = m;
    return REG_OK;
}

/* Prepares the upsert of `n` rows, built from constant fragments only. */
static int
prep_upsert(struct reg_store *st, enum upsert_kind kind, size_t n, MYSQL_STMT **out)
{
    struct mysql_be *be = st->be;
    MYSQL_STMT **slot = &be->upsert[kind][n - 1];
    size_t cap = sizeof(UPSERT_HEAD) + n * sizeof(UPSERT_ROW ", ") + strlen(upsert_tail[kind]);
    char *sql;
    size_t used;
    int rc;

    *out = *slot;
    if (*slot) {
        return REG_OK;
    }
    sql = malloc(cap);
    if (!sql) {
        return REG_ENOMEM;
    }
    used = (size_t)snprintf(sql, cap, "%s", UPSERT_HEAD);
    for (size_t i = 0; i < n; i++) {
        used += (size_t)snprintf(sql + used, cap - used, "%s%s", i ? ", " : "", UPSERT_ROW);
    }
    snprintf(sql + used, cap - used, "%s", upsert_tail[kind]);
    rc = prep_sql(st, slot, sql);
    free(sql);
    *out = *slot;
    return rc;
}

static void
bind_upsert_row(struct mysql_be *be, size_t i, const struct reg_instance *in)
{
    MYSQL_BIND *b = &be->params[i * UPSERT_PARAMS];

    be->flags[i][0] = in->check_healthy;
    be->flags[i][1] = in->enabled;
    bind_key(b, in);
    bind_double(&b[3], &in->weight);
    bind_int(&b[4], &be->flags[i][0]);
    bind_int(&b[5], &be->flags[i][1]);
    if (in->has_prompt_template) {
        bind_text(&b[6], in->prompt_template);
    } else {
        b[6].buffer_type = MYSQL_TYPE_NULL;
    }
    bind_int(&b[7], &in->lease_ms);
    bind_int(&b[8], &in->in_flight);
    bind_int(&b[9], &in->queue_length);
    bind_int(&b[10], &in->capacity);
}

static int
upsert_chunk(struct reg_store *st, enum upsert_kind kind, const struct reg_instance *rows, size_t n)
{
    struct mysql_be *be = st->be;
    MYSQL_STMT *s = NULL;
    int rc = prep_upsert(st, kind, n, &s);

    if (rc != REG_OK) {
        return rc;
    }
    memset(be->params, 0, sizeof(be->params[0]) * (n * UPSERT_PARAMS + 1));
    for (size_t i = 0; i < n; i++) {
        bind_upsert_row(be, i, &rows[i]);
    }
    if (kind == K_HEARTBEAT) {
        bind_i64(&be->params[n * UPSERT_PARAMS], &st->cfg.default_lease_ms);
    }
    return execute(st, s, be->params, kind == K_REGISTER ? "register" : "heartbeat");
}

/* A run of consecutive REGISTER (or HEARTBEAT) ops, in key order. */
static int
upsert_run(struct reg_store *st, struct reg_op *ops, size_t n)
{
    enum upsert_kind kind = ops[0].kind == REG_OP_REGISTER ? K_REGISTER : K_HEARTBEAT;
    struct reg_instance *rows = NULL;
    size_t m = 0;
    int rc = sorted_rows(ops, n, kind, &rows, &m);

    for (size_t off = 0; rc == REG_OK && off < m; off += BATCH_MAX) {
        rc = upsert_chunk(st, kind, rows + off, m - off < BATCH_MAX ? m - off : BATCH_MAX);
    }
    free(rows);
    return rc;
}

static int
single_op(struct reg_store *st, struct reg_op *op)
{
    MYSQL_BIND b[7];
    MYSQL_STMT *s = NULL;
    int mode = (int)op->admin_weight;
    enum stmt_id id = op->kind == REG_OP_DEREGISTER ? S_DEREGISTER
                      : op->kind == REG_OP_REMOVE   ? S_REMOVE
                                                    : S_ADMIN;
    int rc = prep(st, id, &s);

    if (rc != REG_OK) {
        return rc;
    }
    memset(b, 0, sizeof(b));
    if (id == S_ADMIN) {
        bind_int(&b[0], &op->admin_enabled);
        bind_int(&b[1], &op->admin_enabled);
        bind_int(&b[2], &mode);
        bind_double(&b[3], &op->admin_weight_value);
    }
    bind_key(id == S_ADMIN ? &b[4] : b, &op->inst);
    rc = execute(st, s, b, "write");
    if (rc == REG_OK && id == S_ADMIN && mysql_stmt_affected_rows(s) == 0) {
        op->rc = REG_ENOTFOUND;
    }
    return rc;
}

static bool
is_upsert(enum reg_op_kind k)
{
    return k == REG_OP_REGISTER || k == REG_OP_HEARTBEAT;
}

/* True when the batch is one statement: upserts of one kind, at most
 * BATCH_MAX of them (so at most BATCH_MAX rows after merging). */
static bool
one_statement(const struct reg_op *ops, size_t n)
{
    if (n > BATCH_MAX || !is_upsert(ops[0].kind)) {
        return false;
    }
    for (size_t i = 1; i < n; i++) {
        if (ops[i].kind != ops[0].kind) {
            return false;
        }
    }
    return true;
}

static int
be_apply(struct reg_store *st, struct reg_op *ops, size_t n)
{
    int rc;
    size_t i = 0;

    /* The common batch, heartbeats that arrived together, is one multi-row
     * upsert: under autocommit it is atomic on its own, and leaving out
     * START TRANSACTION and COMMIT saves two of three round trips and about
     * a third of the server's CPU per batch (docs/performance.md). */
    if (one_statement(ops, n)) {
        for (i = 0; i < n; i++) {
            ops[i].rc = REG_OK;
        }
        return upsert_run(st, ops, n);
    }
    rc = query(st, "START TRANSACTION");

    while (rc == REG_OK && i < n) {
        size_t j = i + 1;
        ops[i].rc = REG_OK;
        if (is_upsert(ops[i].kind)) {
            while (j < n && ops[j].kind == ops[i].kind) {
                ops[j++].rc = REG_OK;
            }
            rc = upsert_run(st, ops + i, j - i);
        } else {
            rc = single_op(st, &ops[i]);
        }
        i = j;
    }
    if (rc == REG_OK) {
        rc = query(st, "COMMIT");
    }
    if (rc != REG_OK) {
        rollback(st, rc);
    }
    return rc;
}

/* ---- reads ----------------------------------------------------------------- */

static void
bind_out(struct row_buf *r, int i, enum enum_field_types type, void *buf, unsigned long cap)
{
    r->b[i].buffer_type = type;
    r->b[i].buffer = buf;
    r->b[i].buffer_length = cap;
    r->b[i].length = &r->len[i];
    r->b[i].is_null = &r->null[i];
    r->b[i].error = &r->err[i];
}

static void
bind_row_buf(struct row_buf *r)
{
    memset(r, 0, sizeof(*r));
    bind_out(r, 0, MYSQL_TYPE_STRING, r->name, sizeof(r->name));
    bind_out(r, 1, MYSQL_TYPE_STRING, r->host, sizeof(r->host));
    bind_out(r, 2, MYSQL_TYPE_LONG, &r->port, 0);
    bind_out(r, 3, MYSQL_TYPE_DOUBLE, &r->weight, 0);
    bind_out(r, 4, MYSQL_TYPE_LONG, &r->check, 0);
    bind_out(r, 5, MYSQL_TYPE_LONG, &r->healthy, 0);
    bind_out(r, 6, MYSQL_TYPE_LONG, &r->enabled, 0);
    bind_out(r, 7, MYSQL_TYPE_STRING, r->tmpl, sizeof(r->tmpl));
    bind_out(r, 8, MYSQL_TYPE_LONGLONG, &r->hb, 0);
    bind_out(r, 9, MYSQL_TYPE_LONG, &r->lease, 0);
    bind_out(r, 10, MYSQL_TYPE_DOUBLE, &r->override, 0);
    bind_out(r, 11, MYSQL_TYPE_LONG, &r->in_flight, 0);
    bind_out(r, 12, MYSQL_TYPE_LONG, &r->queue, 0);
    bind_out(r, 13, MYSQL_TYPE_LONG, &r->capacity, 0);
    bind_out(r, 14, MYSQL_TYPE_LONGLONG, &r->updated, 0);
    bind_out(r, 15, MYSQL_TYPE_LONGLONG, &r->now, 0);
}

/* Copies a fetched string, cut to fit `cap` on a UTF-8 character boundary. */
static void
copy_text(char *dst, size_t cap, const char *src, unsigned long len, size_t srccap, bool null)
{
    size_t n = null ? 0 : len;

    if (n > srccap) {
        n = srccap; /* the server value was longer than the fetch buffer */
    }
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80) {
            n--;
        }
    }
    if (n) {
        memcpy(dst, src, n);
    }
    dst[n] = '\0';
}

/* A FLOAT column's value as the shortest decimal that names that float,
 * as the text protocol (and so DB-GPT) shows it: 0.1, not 0.100000001490116. */
static double
float_value(double v)
{
    float f = (float)v;
    char buf[32];

    for (int digits = 6; digits <= 9; digits++) {
        snprintf(buf, sizeof(buf), "%.*g", digits, (double)f);
        if (strtof(buf, NULL) == f) {
            return strtod(buf, NULL);
        }
    }
    return v;
}

/* Same NULL handling as reg_sqlite.c's read_row. */
static void
read_row(const struct row_buf *r, struct reg_instance *in)
{
    memset(in, 0, sizeof(*in));
    copy_text(in->model_name, sizeof(in->model_name), r->name, r->len[0], sizeof(r->name),
              r->null[0]);
    copy_text(in->host, sizeof(in->host), r->host, r->len[1], sizeof(r->host), r->null[1]);
    in->port = r->null[2] ? 0 : r->port;
    in->weight = r->null[3] ? 1.0 : r->weight_is_float ? float_value(r->weight) : r->weight;
    in->check_healthy = r->null[4] || r->check;
    in->healthy = !r->null[5] && r->healthy;
    in->enabled = r->null[6] || r->enabled;
    in->has_prompt_template = !r->null[7];
    copy_text(in->prompt_template, sizeof(in->prompt_template), r->tmpl, r->len[7], sizeof(r->tmpl),
              r->null[7]);
    in->has_last_heartbeat = !r->null[8];
    in->last_heartbeat_ms = r->null[8] ? 0 : r->hb;
    in->lease_ms = r->null[9] ? 0 : r->lease;
    in->has_weight_override = !r->null[10];
    in->weight_override = r->null[10] ? 0 : r->override;
    in->in_flight = r->null[11] ? 0 : r->in_flight;
    in->queue_length = r->null[12] ? 0 : r->queue;
    in->capacity = r->null[13] ? 0 : r->capacity;
    in->updated_ms = r->null[14] ? 0 : r->updated;
    if (in->has_last_heartbeat) {
        int64_t age = r->now - in->last_heartbeat_ms;
        in->age_ms = age > 0 ? age : 0;
    }
}

static int
fetch_rows(struct reg_store *st, MYSQL_STMT *s, struct reg_rows *rows, int64_t *now_out)
{
    struct row_buf r;
    struct reg_instance in;
    MYSQL_RES *meta = mysql_stmt_result_metadata(s);
    int f;

    bind_row_buf(&r);
    if (meta) {
        r.weight_is_float = mysql_fetch_field_direct(meta, 3)->type == MYSQL_TYPE_FLOAT;
        mysql_free_result(meta);
    }
    if (mysql_stmt_bind_result(s, r.b) != 0 || mysql_stmt_store_result(s) != 0) {
        return fail_stmt(st, s, "list");
    }
    /* MYSQL_DATA_TRUNCATED: a string longer than its buffer; copy_text cuts it */
    while ((f = mysql_stmt_fetch(s)) == 0 || f == MYSQL_DATA_TRUNCATED) {
        read_row(&r, &in);
        *now_out = r.now;
        if (reg__rows_push(rows, &in) != REG_OK) {
            reg__set_err(st, "list: out of memory");
            return REG_ENOMEM;
        }
    }
    return f == MYSQL_NO_DATA ? REG_OK : fail_stmt(st, s, "list fetch");
}

static int
be_list(struct reg_store *st, int64_t since, int64_t hb_since, struct reg_rows *rows,
        int64_t *now_out, int64_t *total_out)
{
    MYSQL_STMT *s = NULL;
    MYSQL_BIND b[2];
    long long now = 0;
    long long total = 0;
    int rc = prep(st, since < 0 ? S_LIST_ALL : hb_since < 0 ? S_LIST_SINCE : S_LIST_DELTA, &s);

    if (rc != REG_OK) {
        return rc;
    }
    memset(b, 0, sizeof(b));
    bind_i64(&b[0], &since);
    bind_i64(&b[1], &hb_since);
    rc = execute(st, s, since < 0 ? NULL : b, "list");
    if (rc == REG_OK) {
        rc = fetch_rows(st, s, rows, now_out);
        mysql_stmt_free_result(s);
    }
    if (rc == REG_OK && rows->n == 0) {
        /* an empty result still needs the database's clock */
        rc = scalar(st, S_NOW, NULL, &now);
        *now_out = now;
    }
    if (rc == REG_OK && since >= 0) {
        rc = scalar(st, S_COUNT_ROWS, NULL, &total);
    } else {
        total = (long long)rows->n;
    }
    *total_out = (int64_t)total;
    return rc;
}

/* Executes a prepared UPDATE/DELETE with one int64 parameter. */
static int
exec_count(struct reg_store *st, enum stmt_id id, int64_t arg, int *count)
{
    MYSQL_STMT *s = NULL;
    MYSQL_BIND b;
    int rc = prep(st, id, &s);

    if (rc != REG_OK) {
        return rc;
    }
    memset(&b, 0, sizeof(b));
    bind_i64(&b, &arg);
    rc = execute(st, s, &b, "sweep");
    if (rc == REG_OK) {
        *count = (int)mysql_stmt_affected_rows(s);
    }
    return rc;
}

static int
be_sweep(struct reg_store *st, int64_t gc_after_ms, int *marked, int *deleted)
{
    int rc = query(st, "START TRANSACTION");

    if (rc == REG_OK) {
        rc = exec_count(st, S_SWEEP_MARK, st->cfg.default_lease_ms, marked);
    }
    if (rc == REG_OK && gc_after_ms > 0) {
        rc = exec_count(st, S_SWEEP_GC, gc_after_ms, deleted);
    }
    if (rc == REG_OK) {
        rc = query(st, "COMMIT");
    }
    if (rc != REG_OK) {
        rollback(st, rc);
    }
    return rc;
}

static int
be_ping(struct reg_store *st)
{
    return query(st, "SELECT 1");
}

/* ---- settings -------------------------------------------------------------- */

/* The rows, between two reads of the version: under READ COMMITTED each
 * statement sees its own snapshot, and a writer bumps the version in the
 * transaction that changes rows, so equal versions around the rows mean
 * the rows are those of that version. Otherwise a writer committed in
 * between: REG_EBUSY, and reg_store.c tries again. */
static int
be_settings_read(struct reg_store *st, int64_t have, int64_t *version_out,
                 struct reg_settings *rows)
{
    enum { CAP_KIND = 4 * REG_SETTING_KIND_MAX + 1, CAP_NAME = 4 * REG_SETTING_NAME_MAX + 1 };
    MYSQL_STMT *s = NULL;
    MYSQL_BIND rb[4];
    unsigned long len[4] = {0};
    my_bool null[4] = {0};
    my_bool err[4] = {0};
    char kind[CAP_KIND];
    char name[CAP_NAME];
    long long updated = 0;
    long long v1 = 0;
    long long v2 = 0;
    char *value = NULL;
    int fetched;
    int rc = scalar(st, S_SET_VERSION, NULL, &v1);

    *version_out = v1;
    if (rc != REG_OK || v1 == have) {
        return rc;
    }
    value = malloc(REG_SETTING_VALUE_MAX + 1);
    if (!value) {
        return REG_ENOMEM;
    }
    rc = prep(st, S_SET_LIST, &s);
    if (rc == REG_OK) {
        rc = execute(st, s, NULL, "settings list");
    }
    if (rc == REG_OK) {
        memset(rb, 0, sizeof(rb));
        void *bufs[4] = {kind, name, value, &updated};
        unsigned long caps[4] = {CAP_KIND - 1, CAP_NAME - 1, REG_SETTING_VALUE_MAX, 0};
        for (int i = 0; i < 4; i++) {
            rb[i].buffer_type = i == 3 ? MYSQL_TYPE_LONGLONG : MYSQL_TYPE_STRING;
            rb[i].buffer = bufs[i];
            rb[i].buffer_length = caps[i];
            rb[i].length = &len[i];
            rb[i].is_null = &null[i];
            rb[i].error = &err[i];
        }
        if (mysql_stmt_bind_result(s, rb) != 0 || mysql_stmt_store_result(s) != 0) {
            rc = fail_stmt(st, s, "settings list");
        }
        while (rc == REG_OK && (fetched = mysql_stmt_fetch(s)) != MYSQL_NO_DATA) {
            if (fetched == 1) {
                rc = fail_stmt(st, s, "settings fetch");
            } else if (fetched == MYSQL_DATA_TRUNCATED || len[0] >= CAP_KIND ||
                       len[1] >= CAP_NAME || len[2] > REG_SETTING_VALUE_MAX) {
                reg__set_err(st, "settings: a row is larger than roster writes");
                rc = REG_EBACKEND;
            } else {
                kind[len[0]] = '\0';
                name[len[1]] = '\0';
                rc = reg__settings_push(rows, kind, name, value, len[2], (int64_t)updated);
            }
        }
        mysql_stmt_free_result(s);
    }
    free(value);
    if (rc == REG_OK) {
        rc = scalar(st, S_SET_VERSION, NULL, &v2);
    }
    if (rc == REG_OK && v2 != v1) {
        reg__set_err(st, "settings changed while being read");
        rc = REG_EBUSY;
    }
    return rc;
}

static int
be_settings_write(struct reg_store *st, int64_t expect, const struct reg_setting *w, size_t n,
                  bool *applied)
{
    MYSQL_STMT *s = NULL;
    MYSQL_BIND b[3];
    int rc = query(st, "START TRANSACTION");

    *applied = false;
    if (rc == REG_OK) {
        rc = prep(st, S_SET_BUMP, &s);
    }
    if (rc == REG_OK) {
        memset(b, 0, sizeof(b));
        bind_i64(&b[0], &expect);
        rc = execute(st, s, b, "settings version");
    }
    if (rc == REG_OK && mysql_stmt_affected_rows(s) != 1) {
        rollback(st, REG_EBUSY); /* the version moved: nothing written */
        return REG_OK;
    }
    for (size_t i = 0; rc == REG_OK && i < n; i++) {
        rc = prep(st, w[i].value ? S_SET_UPSERT : S_SET_DELETE, &s);
        if (rc == REG_OK) {
            memset(b, 0, sizeof(b));
            bind_text(&b[0], w[i].kind);
            bind_text(&b[1], w[i].name);
            if (w[i].value) {
                bind_text(&b[2], w[i].value);
            }
            rc = execute(st, s, b, "settings write");
        }
    }
    if (rc == REG_OK) {
        rc = query(st, "COMMIT");
    }
    if (rc != REG_OK) {
        rollback(st, rc);
    }
    *applied = rc == REG_OK;
    return rc;
}

/* ---- key usage ------------------------------------------------------------- */

/* Reads the window's two totals of one key (the row exists). */
static int
use_get(struct reg_store *st, MYSQL_BIND *key, int64_t *r, int64_t *k)
{
    MYSQL_STMT *s = NULL;
    MYSQL_BIND rb[2];
    my_bool null[2] = {0};
    long long v[2] = {0};
    int rc = prep(st, S_USE_GET, &s);
    int fetched;

    if (rc == REG_OK) {
        rc = execute(st, s, key, "key usage");
    }
    if (rc != REG_OK) {
        return rc;
    }
    memset(rb, 0, sizeof(rb));
    for (int i = 0; i < 2; i++) {
        rb[i].buffer_type = MYSQL_TYPE_LONGLONG;
        rb[i].buffer = &v[i];
        rb[i].is_null = &null[i];
    }
    if (mysql_stmt_bind_result(s, rb) != 0 || mysql_stmt_store_result(s) != 0) {
        rc = fail_stmt(st, s, "key usage");
    } else if ((fetched = mysql_stmt_fetch(s)) != 0) {
        rc = fetched == 1 ? fail_stmt(st, s, "key usage") : REG_EBACKEND;
        if (fetched != 1) {
            reg__set_err(st, "key usage: the window's row is missing");
        }
    }
    mysql_stmt_free_result(s);
    *r = v[0];
    *k = v[1];
    return rc;
}

static int
be_usage_take(struct reg_store *st, int64_t window, struct reg_usage_take *t, size_t n)
{
    MYSQL_STMT *s = NULL;
    MYSQL_BIND key[2], set[4];
    int rc = query(st, "START TRANSACTION");

    for (size_t i = 0; rc == REG_OK && i < n; i++) {
        int64_t r = 0, k = 0;
        memset(key, 0, sizeof(key));
        bind_text(&key[0], t[i].name);
        bind_i64(&key[1], &window);
        rc = prep(st, S_USE_INIT, &s);
        if (rc == REG_OK) {
            rc = execute(st, s, key, "key usage");
        }
        if (rc == REG_OK) {
            rc = use_get(st, key, &r, &k);
        }
        if (rc == REG_OK) {
            reg__usage_grant(&t[i], r, k);
            rc = prep(st, S_USE_SET, &s);
        }
        if (rc == REG_OK) {
            memset(set, 0, sizeof(set));
            bind_i64(&set[0], &t[i].used_requests);
            bind_i64(&set[1], &t[i].used_tokens);
            bind_text(&set[2], t[i].name);
            bind_i64(&set[3], &window);
            rc = execute(st, s, set, "key usage");
        }
    }
    if (rc == REG_OK) {
        rc = query(st, "COMMIT");
    }
    if (rc != REG_OK) {
        rollback(st, rc);
    }
    return rc;
}

static int
be_usage_gc(struct reg_store *st, int64_t window)
{
    MYSQL_STMT *s = NULL;
    MYSQL_BIND b;
    int rc = prep(st, S_USE_GC, &s);

    if (rc == REG_OK) {
        memset(&b, 0, sizeof(b));
        bind_i64(&b, &window);
        rc = execute(st, s, &b, "key usage gc");
    }
    return rc;
}

/* ---- migrations ------------------------------------------------------------ */

static int
be_migrate_lock(struct reg_store *st)
{
    /* GET_LOCK waits less than the read timeout, or the client would give
     * up first and drop the connection; REG_EBUSY retries in the budget. */
    int wait = (int)ceil_secs(st->cfg.io_timeout_ms) - 1;
    long long got = 0;
    MYSQL_BIND b;
    int rc = query(st, "CREATE TABLE IF NOT EXISTS roster_schema_migrations ("
                       " version INT PRIMARY KEY, name VARCHAR(255) NOT NULL,"
                       " applied_at DATETIME NOT NULL)");

    if (wait > 30) {
        wait = 30;
    }
    memset(&b, 0, sizeof(b));
    bind_int(&b, &wait);
    if (rc == REG_OK) {
        rc = scalar(st, S_GET_LOCK, &b, &got);
    }
    if (rc == REG_OK && got != 1) {
        reg__set_err(st, "mysql: another process holds the migration lock");
        rc = REG_EBUSY;
    }
    return rc;
}

static int
be_migrate_unlock(struct reg_store *st, bool commit)
{
    long long released = 0;

    (void)commit; /* MySQL DDL commits implicitly */
    return scalar(st, S_RELEASE_LOCK, NULL, &released);
}

static int
be_migrate_exec(struct reg_store *st, const char *sql)
{
    struct mysql_be *be = st->be;
    MYSQL_RES *res;
    unsigned int code;

    if (mysql_real_query(be->conn, sql, strlen(sql)) != 0) {
        code = mysql_errno(be->conn);
        /* 1050 table, 1060 column, 1061 key already exists: done before */
        if (code == 1050 || code == 1060 || code == 1061) {
            return REG_OK;
        }
        return fail_conn(st, "migration");
    }
    res = mysql_store_result(be->conn);
    if (res) {
        mysql_free_result(res);
    }
    return REG_OK;
}

static int
be_migrate_applied(struct reg_store *st, uint64_t *bitmap)
{
    struct mysql_be *be = st->be;
    const char *sql = "SELECT version FROM roster_schema_migrations";
    MYSQL_RES *res;
    MYSQL_ROW row;

    *bitmap = 0;
    if (mysql_real_query(be->conn, sql, strlen(sql)) != 0) {
        return fail_conn(st, "migrations");
    }
    res = mysql_store_result(be->conn);
    if (!res) {
        return fail_conn(st, "migrations");
    }
    while ((row = mysql_fetch_row(res)) != NULL) {
        long v = row[0] ? strtol(row[0], NULL, 10) : 0;
        if (v >= 1 && v <= 64) {
            *bitmap |= UINT64_C(1) << (v - 1);
        }
    }
    mysql_free_result(res);
    return REG_OK;
}

static int
be_migrate_record(struct reg_store *st, int version, const char *name)
{
    MYSQL_STMT *s = NULL;
    MYSQL_BIND b[2];
    int rc = prep(st, S_MIGRATE_RECORD, &s);

    if (rc != REG_OK) {
        return rc;
    }
    memset(b, 0, sizeof(b));
    bind_int(&b[0], &version);
    bind_text(&b[1], name);
    return execute(st, s, b, "migrations");
}

const struct reg_backend_ops reg_mysql_ops = {
    .version = REG_BACKEND_OPS_VERSION,
    .name = "mysql",
    .init = be_init,
    .fini = be_fini,
    .connect = be_connect,
    .disconnect = be_disconnect,
    .migrate_lock = be_migrate_lock,
    .migrate_unlock = be_migrate_unlock,
    .migrate_exec = be_migrate_exec,
    .migrate_applied = be_migrate_applied,
    .migrate_record = be_migrate_record,
    .apply = be_apply,
    .list = be_list,
    .sweep = be_sweep,
    .ping = be_ping,
    .socket_fd = be_socket_fd,
    .settings_read = be_settings_read,
    .settings_write = be_settings_write,
    .usage_take = be_usage_take,
    .usage_gc = be_usage_gc,
};
