/* SPDX-License-Identifier: MIT
 *
 * reg_sqlite.c - the SQLite backend: the embedded, single-machine default.
 *
 * DESIGN
 * - One sqlite3 connection per store (opened NOMUTEX: a store is used by one
 *   thread at a time), a file in WAL mode with a busy timeout, so the
 *   controller's writer and reader threads never block each other's reads.
 * - Writes run in BEGIN IMMEDIATE transactions: a deferred transaction that
 *   reads and then writes can fail with SQLITE_BUSY despite the busy
 *   timeout, an immediate one waits for the write lock up front.
 * - ":memory:" (or ":memory:NAME") is a shared-cache in-memory database,
 *   private to the process and shared by its stores; shared-cache conflicts
 *   come back as SQLITE_LOCKED, which the caller retries like SQLITE_BUSY.
 * - Times come from SQLite's clock ('now' is fixed within one statement),
 *   written as UTC text 'YYYY-MM-DD HH:MM:SS.SSS' as DB-GPT's SQLAlchemy
 *   model stores them, and read back as epoch milliseconds.
 * - Statements are prepared once per connection, on first use.
 */
#include "reg_backend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#define TABLE    "dbgpt_cluster_registry_instance"
#define NOW_MS   "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)"
#define NOW_TEXT "strftime('%Y-%m-%d %H:%M:%f', 'now')"
#define HB_MS    "CAST(ROUND((julianday(last_heartbeat) - 2440587.5) * 86400000.0) AS INTEGER)"
#define KEY_WHERE                                                                                  \
    "model_name = ?1 AND host = ?2 AND port = ?3 AND (sys_code = '' OR sys_code IS NULL)"
/* the lease of the row being evaluated; ?12 is the default lease */
#define ROW_LEASE "(CASE WHEN roster_lease_ms > 0 THEN roster_lease_ms ELSE ?12 END)"

enum stmt_id {
    S_REGISTER,
    S_HEARTBEAT,
    S_DEREGISTER,
    S_REMOVE,
    S_ADMIN,
    S_LIST_ALL,
    S_LIST_SINCE,
    S_LIST_DELTA,
    S_SWEEP_MARK,
    S_SWEEP_GC,
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
    " roster_updated_ms)"                                                                          \
    " VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, " NOW_TEXT ", NULL, '', " NOW_TEXT ", " NOW_TEXT      \
    ", ?8, ?9, ?10, ?11, " NOW_MS ")"                                                              \
    " ON CONFLICT (model_name, host, port, sys_code) DO UPDATE SET "
#define UPSERT_LIVENESS                                                                            \
    " healthy = 1, last_heartbeat = excluded.last_heartbeat,"                                      \
    " gmt_modified = excluded.gmt_modified, roster_lease_ms = excluded.roster_lease_ms,"           \
    " roster_in_flight = excluded.roster_in_flight,"                                               \
    " roster_queue_length = excluded.roster_queue_length,"                                         \
    " roster_capacity = excluded.roster_capacity"

static const char *const stmt_sql[S_COUNT] = {
    [S_REGISTER] = UPSERT_HEAD
    " roster_updated_ms = excluded.roster_updated_ms, weight = excluded.weight,"
    " prompt_template = COALESCE(excluded.prompt_template, prompt_template)," UPSERT_LIVENESS,
    /* A heartbeat bumps roster_updated_ms only when it brings an instance
     * back (deregistered or lease expired): other controllers poll that. */
    [S_HEARTBEAT] = UPSERT_HEAD
    " roster_updated_ms = CASE WHEN healthy IS NULL OR healthy = 0 OR last_heartbeat IS NULL"
    " OR (" NOW_MS " - " HB_MS ") > " ROW_LEASE
    " THEN excluded.roster_updated_ms ELSE roster_updated_ms END," UPSERT_LIVENESS,
    [S_DEREGISTER] = "UPDATE " TABLE " SET healthy = 0, gmt_modified = " NOW_TEXT
                     ", roster_updated_ms = " NOW_MS " WHERE " KEY_WHERE,
    [S_REMOVE] = "DELETE FROM " TABLE " WHERE " KEY_WHERE,
    [S_ADMIN] = "UPDATE " TABLE " SET"
                " enabled = CASE WHEN ?4 < 0 THEN enabled ELSE ?4 END,"
                " roster_weight_override = CASE ?5 WHEN 0 THEN roster_weight_override"
                " WHEN 1 THEN ?6 ELSE NULL END,"
                " gmt_modified = " NOW_TEXT ", roster_updated_ms = " NOW_MS " WHERE " KEY_WHERE,
#define LIST_COLUMNS                                                                               \
    "SELECT model_name, host, port, weight, check_healthy, healthy, enabled, prompt_template,"     \
    " " HB_MS ", roster_lease_ms, roster_weight_override, roster_in_flight,"                       \
    " roster_queue_length, roster_capacity, roster_updated_ms, " NOW_MS " FROM " TABLE
    [S_LIST_ALL] = LIST_COLUMNS,
    [S_LIST_SINCE] = LIST_COLUMNS " WHERE roster_updated_ms >= ?1",
    /* the OR is answered from idx_roster_updated and idx_roster_last_heartbeat
     * (last_heartbeat is text in one format: compared as text) */
    [S_LIST_DELTA] = LIST_COLUMNS " WHERE roster_updated_ms >= ?1 OR last_heartbeat >="
                                  " strftime('%Y-%m-%d %H:%M:%f', ?2 / 1000.0, 'unixepoch')",
    /* a NULL check_healthy / healthy means what read_row makes of it (1 / 0) */
    [S_SWEEP_MARK] = "UPDATE " TABLE " SET healthy = 0 WHERE healthy = 1"
                     " AND COALESCE(check_healthy, 1) != 0"
                     " AND last_heartbeat IS NOT NULL AND (" NOW_MS " - " HB_MS ") > "
                     "(CASE WHEN roster_lease_ms > 0 THEN roster_lease_ms ELSE ?1 END)",
    [S_SWEEP_GC] = "DELETE FROM " TABLE " WHERE NOT (COALESCE(check_healthy, 1) = 0"
                   " AND COALESCE(healthy, 0) = 1) AND (" NOW_MS
                   " - CAST(ROUND((julianday(COALESCE(last_heartbeat, gmt_modified))"
                   " - 2440587.5) * 86400000.0) AS INTEGER)) > ?1",
    [S_SET_VERSION] = "SELECT version FROM roster_settings_version WHERE id = 1",
    [S_SET_LIST] = "SELECT kind, name, value, updated_ms FROM roster_settings ORDER BY kind, name",
    [S_SET_BUMP] = "UPDATE roster_settings_version SET version = version + 1"
                   " WHERE id = 1 AND version = ?1",
    [S_SET_UPSERT] = "INSERT INTO roster_settings (kind, name, value, updated_ms)"
                     " VALUES (?1, ?2, ?3, " NOW_MS ") ON CONFLICT (kind, name) DO UPDATE SET"
                     " value = excluded.value, updated_ms = excluded.updated_ms",
    [S_SET_DELETE] = "DELETE FROM roster_settings WHERE kind = ?1 AND name = ?2",
    [S_USE_INIT] = "INSERT OR IGNORE INTO roster_key_usage (name, win) VALUES (?1, ?2)",
    [S_USE_GET] = "SELECT requests, tokens FROM roster_key_usage WHERE name = ?1 AND win = ?2",
    [S_USE_SET] =
        "UPDATE roster_key_usage SET requests = ?3, tokens = ?4 WHERE name = ?1 AND win = ?2",
    [S_USE_GC] = "DELETE FROM roster_key_usage WHERE win < ?1",
};

struct sqlite_be {
    sqlite3 *db;
    sqlite3_stmt *stmt[S_COUNT];
};

static int
classify(int code)
{
    switch (code & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return REG_OK;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return REG_EBUSY;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
        return REG_EUNAVAIL;
    case SQLITE_NOMEM:
        return REG_ENOMEM;
    default:
        return REG_EBACKEND;
    }
}

static int
fail(struct reg_store *st, const char *what)
{
    struct sqlite_be *be = st->be;
    int code = be->db ? sqlite3_extended_errcode(be->db) : SQLITE_CANTOPEN;

    reg__set_err(st, "sqlite %s: %s (%d)", what, be->db ? sqlite3_errmsg(be->db) : "not open",
                 code);
    return classify(code);
}

static int
be_init(struct reg_store *st)
{
    st->be = calloc(1, sizeof(struct sqlite_be));
    return st->be ? REG_OK : REG_ENOMEM;
}

static void
be_disconnect(struct reg_store *st)
{
    struct sqlite_be *be = st->be;

    for (int i = 0; i < S_COUNT; i++) {
        sqlite3_finalize(be->stmt[i]);
        be->stmt[i] = NULL;
    }
    sqlite3_close_v2(be->db);
    be->db = NULL;
}

static void
be_fini(struct reg_store *st)
{
    be_disconnect(st);
    free(st->be);
    st->be = NULL;
}

static int
exec_simple(struct reg_store *st, const char *sql)
{
    struct sqlite_be *be = st->be;
    char *err = NULL;
    int code = sqlite3_exec(be->db, sql, NULL, NULL, &err);

    if (code != SQLITE_OK) {
        reg__set_err(st, "sqlite: %s: %s", sql, err ? err : sqlite3_errstr(code));
        sqlite3_free(err);
        return classify(code);
    }
    return REG_OK;
}

/* The directory of the SQLite file, for messages ("." for a bare name). */
static void
dir_of(const char *path, char *out, size_t cap)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (slash == path ? 1 : (size_t)(slash - path)) : 0; /* "/x.db": "/" */

    if (n == 0) {
        snprintf(out, cap, ".");
        return;
    }
    snprintf(out, cap, "%.*s", (int)n, path);
}

/* Opening a file that cannot be used (its directory is missing, it is a
 * directory, it may not be written, it is not a database) is a
 * configuration error: retrying will not help, so it is REG_EBACKEND, with
 * the path and the reason in errmsg. Only a transient shortage (file
 * descriptors, memory) is REG_EUNAVAIL. `sys` is the errno of the failed
 * open (0 if none); `what` SQLite's message. */
static int
cannot_use(struct reg_store *st, const char *what, int sys)
{
    const char *path = st->cfg.sqlite_path;
    char dir[512];
    struct stat sb;

    dir_of(path, dir, sizeof(dir));
    switch (sys) {
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case EINTR:
    case EAGAIN:
        reg__set_err(st, "sqlite: cannot open '%s': %s", path, strerror(sys));
        return REG_EUNAVAIL;
    case ENOENT:
        /* SQLite retries a failed read-write open read-only, so a file it
         * may not create in its directory also ends as ENOENT */
        if (stat(dir, &sb) != 0) {
            reg__set_err(st, "sqlite: cannot create '%s': directory '%s' does not exist", path,
                         dir);
        } else if (access(dir, W_OK) != 0) {
            reg__set_err(st, "sqlite: cannot create '%s': no permission to write in '%s'", path,
                         dir);
        } else {
            reg__set_err(st, "sqlite: cannot open '%s': %s", path, strerror(sys));
        }
        return REG_EBACKEND;
    case EISDIR:
        reg__set_err(st, "sqlite: cannot open '%s': it is a directory (give a file name)", path);
        return REG_EBACKEND;
    case 0:
        reg__set_err(st, "sqlite: cannot use '%s': %s", path, what);
        return REG_EBACKEND;
    default:
        reg__set_err(st, "sqlite: cannot open '%s': %s (%s)", path, strerror(sys), what);
        return REG_EBACKEND;
    }
}

static int
be_connect(struct reg_store *st)
{
    struct sqlite_be *be = st->be;
    const char *path = st->cfg.sqlite_path;
    char uri[256];
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    bool memory = strncmp(path, ":memory:", 8) == 0;
    int code;
    int rc;

    if (memory) {
        snprintf(uri, sizeof(uri), "file:roster_mem_%.64s?mode=memory&cache=shared",
                 path[8] ? path + 8 : "default");
        path = uri;
        flags |= SQLITE_OPEN_URI;
    }
    code = sqlite3_open_v2(path, &be->db, flags, NULL);
    if (code != SQLITE_OK) {
        if (!be->db || (code & 0xff) == SQLITE_NOMEM) {
            rc = fail(st, "open");
        } else {
            rc = cannot_use(st, sqlite3_errmsg(be->db), sqlite3_system_errno(be->db));
        }
        be_disconnect(st);
        return rc;
    }
    if (!memory && sqlite3_db_readonly(be->db, "main") == 1) {
        /* SQLite opens a file it may not write read-only instead of failing */
        rc = cannot_use(st, "the file is read-only for this user",
                        access(path, W_OK) == 0 ? 0 : errno);
        be_disconnect(st);
        return rc;
    }
    sqlite3_busy_timeout(be->db, st->cfg.busy_ms);
    rc = exec_simple(st, memory ? "PRAGMA synchronous=OFF"
                                : (st->cfg.sqlite_synchronous_full ? "PRAGMA synchronous=FULL"
                                                                   : "PRAGMA synchronous=NORMAL"));
    if (rc == REG_OK && !memory) {
        rc = exec_simple(st, "PRAGMA journal_mode=WAL");
    }
    if (rc != REG_OK) {
        /* the first statements read the file ("file is not a database") and
         * create the -wal and -shm files beside it */
        int ext = sqlite3_extended_errcode(be->db);
        if ((ext & 0xff) == SQLITE_CANTOPEN || ext == SQLITE_READONLY_DIRECTORY) {
            char dir[512];
            dir_of(st->cfg.sqlite_path, dir, sizeof(dir));
            reg__set_err(st,
                         "sqlite: cannot use '%s': %s (SQLite creates '%s-wal' and '%s-shm' "
                         "beside it: '%s' must be writable)",
                         st->cfg.sqlite_path, sqlite3_errmsg(be->db), st->cfg.sqlite_path,
                         st->cfg.sqlite_path, dir);
            rc = REG_EBACKEND;
        } else if (rc == REG_EBACKEND) {
            rc = cannot_use(st, sqlite3_errmsg(be->db), 0);
        }
        be_disconnect(st);
    }
    return rc;
}

static int
prep(struct reg_store *st, enum stmt_id id, sqlite3_stmt **out)
{
    struct sqlite_be *be = st->be;

    if (!be->stmt[id]) {
        if (sqlite3_prepare_v3(be->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &be->stmt[id],
                               NULL) != SQLITE_OK) {
            int rc = fail(st, "prepare");
            /* "no such column": the table predates roster's migrations */
            return rc == REG_EBACKEND ? REG_ESCHEMA : rc;
        }
    }
    sqlite3_reset(be->stmt[id]);
    sqlite3_clear_bindings(be->stmt[id]);
    *out = be->stmt[id];
    return REG_OK;
}

static int
step_done(struct reg_store *st, sqlite3_stmt *s, const char *what)
{
    int code = sqlite3_step(s);

    if (code != SQLITE_DONE && code != SQLITE_ROW) {
        int rc = fail(st, what);
        sqlite3_reset(s);
        return rc;
    }
    sqlite3_reset(s);
    return REG_OK;
}

static void
bind_key(sqlite3_stmt *s, const struct reg_instance *in)
{
    sqlite3_bind_text(s, 1, in->model_name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, in->host, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 3, in->port);
}

static int
run_op(struct reg_store *st, struct reg_op *op)
{
    const struct reg_instance *in = &op->inst;
    sqlite3_stmt *s = NULL;
    enum stmt_id id;
    int rc;

    switch (op->kind) {
    case REG_OP_REGISTER:
        id = S_REGISTER;
        break;
    case REG_OP_HEARTBEAT:
        id = S_HEARTBEAT;
        break;
    case REG_OP_DEREGISTER:
        id = S_DEREGISTER;
        break;
    case REG_OP_REMOVE:
        id = S_REMOVE;
        break;
    default:
        id = S_ADMIN;
        break;
    }
    rc = prep(st, id, &s);
    if (rc != REG_OK) {
        return rc;
    }
    bind_key(s, in);
    if (id == S_REGISTER || id == S_HEARTBEAT) {
        sqlite3_bind_double(s, 4, in->weight);
        sqlite3_bind_int(s, 5, in->check_healthy);
        sqlite3_bind_int(s, 6, in->enabled);
        if (in->has_prompt_template) {
            sqlite3_bind_text(s, 7, in->prompt_template, -1, SQLITE_STATIC);
        }
        sqlite3_bind_int(s, 8, in->lease_ms);
        sqlite3_bind_int(s, 9, in->in_flight);
        sqlite3_bind_int(s, 10, in->queue_length);
        sqlite3_bind_int(s, 11, in->capacity);
        if (id == S_HEARTBEAT) {
            sqlite3_bind_int64(s, 12, st->cfg.default_lease_ms);
        }
    } else if (id == S_ADMIN) {
        sqlite3_bind_int(s, 4, op->admin_enabled);
        sqlite3_bind_int(s, 5, (int)op->admin_weight);
        sqlite3_bind_double(s, 6, op->admin_weight_value);
    }
    rc = step_done(st, s, "write");
    if (rc == REG_OK && id == S_ADMIN && sqlite3_changes(((struct sqlite_be *)st->be)->db) == 0) {
        op->rc = REG_ENOTFOUND;
    }
    return rc;
}

/* Ends a transaction that failed (keeping the error's text). */
static void
rollback(struct reg_store *st, int rc)
{
    if (rc != REG_OK && !sqlite3_get_autocommit(((struct sqlite_be *)st->be)->db)) {
        char keep[sizeof(st->errmsg)];
        memcpy(keep, st->errmsg, sizeof(keep));
        (void)exec_simple(st, "ROLLBACK");
        memcpy(st->errmsg, keep, sizeof(keep));
    }
}

static int
be_apply(struct reg_store *st, struct reg_op *ops, size_t n)
{
    int rc = exec_simple(st, "BEGIN IMMEDIATE");

    for (size_t i = 0; rc == REG_OK && i < n; i++) {
        ops[i].rc = REG_OK;
        rc = run_op(st, &ops[i]);
    }
    if (rc == REG_OK) {
        rc = exec_simple(st, "COMMIT");
    }
    rollback(st, rc);
    return rc;
}

static void
copy_text(char *dst, size_t cap, const unsigned char *src)
{
    size_t n = src ? strlen((const char *)src) : 0;

    if (n >= cap) {
        n = cap - 1;
    }
    if (n) {
        memcpy(dst, src, n);
    }
    dst[n] = '\0';
}

static void
read_row(sqlite3_stmt *s, struct reg_instance *in)
{
    memset(in, 0, sizeof(*in));
    copy_text(in->model_name, sizeof(in->model_name), sqlite3_column_text(s, 0));
    copy_text(in->host, sizeof(in->host), sqlite3_column_text(s, 1));
    in->port = sqlite3_column_int(s, 2);
    in->weight = sqlite3_column_type(s, 3) == SQLITE_NULL ? 1.0 : sqlite3_column_double(s, 3);
    in->check_healthy = sqlite3_column_type(s, 4) == SQLITE_NULL || sqlite3_column_int(s, 4);
    in->healthy = sqlite3_column_int(s, 5) != 0;
    in->enabled = sqlite3_column_type(s, 6) == SQLITE_NULL || sqlite3_column_int(s, 6);
    in->has_prompt_template = sqlite3_column_type(s, 7) != SQLITE_NULL;
    copy_text(in->prompt_template, sizeof(in->prompt_template), sqlite3_column_text(s, 7));
    in->has_last_heartbeat = sqlite3_column_type(s, 8) != SQLITE_NULL;
    in->last_heartbeat_ms = sqlite3_column_int64(s, 8);
    in->lease_ms = sqlite3_column_int(s, 9);
    in->has_weight_override = sqlite3_column_type(s, 10) != SQLITE_NULL;
    in->weight_override = sqlite3_column_double(s, 10);
    in->in_flight = sqlite3_column_int(s, 11);
    in->queue_length = sqlite3_column_int(s, 12);
    in->capacity = sqlite3_column_int(s, 13);
    in->updated_ms = sqlite3_column_int64(s, 14);
    if (in->has_last_heartbeat) {
        int64_t age = sqlite3_column_int64(s, 15) - in->last_heartbeat_ms;
        in->age_ms = age > 0 ? age : 0;
    }
}

static int
be_list(struct reg_store *st, int64_t since, int64_t hb_since, struct reg_rows *rows,
        int64_t *now_out, int64_t *total_out)
{
    struct sqlite_be *be = st->be;
    sqlite3_stmt *s = NULL;
    struct reg_instance in;
    int code;
    int rc;

    /* The clock is read separately so that an empty table still has a "now". */
    rc = prep(st, since < 0 ? S_LIST_ALL : hb_since < 0 ? S_LIST_SINCE : S_LIST_DELTA, &s);
    if (rc != REG_OK) {
        return rc;
    }
    if (since >= 0) {
        sqlite3_bind_int64(s, 1, since);
    }
    if (since >= 0 && hb_since >= 0) {
        sqlite3_bind_int64(s, 2, hb_since);
    }
    while ((code = sqlite3_step(s)) == SQLITE_ROW) {
        read_row(s, &in);
        *now_out = sqlite3_column_int64(s, 15);
        if (reg__rows_push(rows, &in) != REG_OK) {
            sqlite3_reset(s);
            return REG_ENOMEM;
        }
    }
    if (code != SQLITE_DONE) {
        rc = fail(st, "list");
        sqlite3_reset(s);
        return rc;
    }
    sqlite3_reset(s);
    if (rows->n == 0) {
        sqlite3_stmt *c = NULL;
        if (sqlite3_prepare_v2(be->db, "SELECT " NOW_MS, -1, &c, NULL) != SQLITE_OK ||
            sqlite3_step(c) != SQLITE_ROW) {
            rc = fail(st, "clock");
            sqlite3_finalize(c);
            return rc;
        }
        *now_out = sqlite3_column_int64(c, 0);
        sqlite3_finalize(c);
    }
    *total_out = (int64_t)rows->n;
    if (since >= 0) {
        sqlite3_stmt *c = NULL;
        if (sqlite3_prepare_v2(be->db, "SELECT COUNT(*) FROM " TABLE, -1, &c, NULL) != SQLITE_OK ||
            sqlite3_step(c) != SQLITE_ROW) {
            rc = fail(st, "count");
            sqlite3_finalize(c);
            return rc;
        }
        *total_out = sqlite3_column_int64(c, 0);
        sqlite3_finalize(c);
    }
    return REG_OK;
}

static int
be_sweep(struct reg_store *st, int64_t gc_after_ms, int *marked, int *deleted)
{
    struct sqlite_be *be = st->be;
    sqlite3_stmt *s = NULL;
    int rc = exec_simple(st, "BEGIN IMMEDIATE");

    if (rc == REG_OK) {
        rc = prep(st, S_SWEEP_MARK, &s);
    }
    if (rc == REG_OK) {
        sqlite3_bind_int64(s, 1, st->cfg.default_lease_ms);
        rc = step_done(st, s, "sweep");
        *marked = sqlite3_changes(be->db);
    }
    if (rc == REG_OK && gc_after_ms > 0) {
        rc = prep(st, S_SWEEP_GC, &s);
        if (rc == REG_OK) {
            sqlite3_bind_int64(s, 1, gc_after_ms);
            rc = step_done(st, s, "gc");
            *deleted = sqlite3_changes(be->db);
        }
    }
    if (rc == REG_OK) {
        rc = exec_simple(st, "COMMIT");
    }
    if (rc != REG_OK && be->db && !sqlite3_get_autocommit(be->db)) {
        (void)exec_simple(st, "ROLLBACK");
    }
    return rc;
}

static int
be_ping(struct reg_store *st)
{
    return exec_simple(st, "SELECT 1");
}

static int
be_migrate_lock(struct reg_store *st)
{
    int rc = exec_simple(st, "CREATE TABLE IF NOT EXISTS roster_schema_migrations ("
                             " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                             " applied_at TEXT NOT NULL)");
    return rc == REG_OK ? exec_simple(st, "BEGIN IMMEDIATE") : rc;
}

static int
be_migrate_unlock(struct reg_store *st, bool commit)
{
    struct sqlite_be *be = st->be;

    if (sqlite3_get_autocommit(be->db)) {
        return REG_OK;
    }
    return exec_simple(st, commit ? "COMMIT" : "ROLLBACK");
}

static int
be_migrate_exec(struct reg_store *st, const char *sql)
{
    struct sqlite_be *be = st->be;
    char *err = NULL;
    int code = sqlite3_exec(be->db, sql, NULL, NULL, &err);

    if (code != SQLITE_OK) {
        bool exists = err && strstr(err, "duplicate column name");
        reg__set_err(st, "sqlite: %s", err ? err : sqlite3_errstr(code));
        sqlite3_free(err);
        return exists ? REG_OK : classify(code);
    }
    return REG_OK;
}

static int
be_migrate_applied(struct reg_store *st, uint64_t *bitmap)
{
    struct sqlite_be *be = st->be;
    sqlite3_stmt *s = NULL;
    int code;

    *bitmap = 0;
    if (sqlite3_prepare_v2(be->db, "SELECT version FROM roster_schema_migrations", -1, &s, NULL) !=
        SQLITE_OK) {
        return fail(st, "migrations");
    }
    while ((code = sqlite3_step(s)) == SQLITE_ROW) {
        int v = sqlite3_column_int(s, 0);
        if (v >= 1 && v <= 64) {
            *bitmap |= UINT64_C(1) << (v - 1);
        }
    }
    sqlite3_finalize(s);
    return code == SQLITE_DONE ? REG_OK : fail(st, "migrations");
}

static int
be_migrate_record(struct reg_store *st, int version, const char *name)
{
    struct sqlite_be *be = st->be;
    sqlite3_stmt *s = NULL;
    int rc;

    if (sqlite3_prepare_v2(be->db,
                           "INSERT OR IGNORE INTO roster_schema_migrations (version, name,"
                           " applied_at) VALUES (?1, ?2, " NOW_TEXT ")",
                           -1, &s, NULL) != SQLITE_OK) {
        return fail(st, "migrations");
    }
    sqlite3_bind_int(s, 1, version);
    sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(s) == SQLITE_DONE ? REG_OK : fail(st, "migrations");
    sqlite3_finalize(s);
    return rc;
}

/* ---- settings ------------------------------------------------------------------ */

static int
settings_version(struct reg_store *st, int64_t *out)
{
    sqlite3_stmt *s = NULL;
    int rc = prep(st, S_SET_VERSION, &s);

    if (rc != REG_OK) {
        return rc;
    }
    if (sqlite3_step(s) != SQLITE_ROW) {
        rc = fail(st, "settings version");
        sqlite3_reset(s);
        return rc == REG_OK ? REG_ESCHEMA : rc;
    }
    *out = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    return REG_OK;
}

/* One read transaction: the version, then (if it moved) every row. */
static int
be_settings_read(struct reg_store *st, int64_t have, int64_t *version_out,
                 struct reg_settings *rows)
{
    sqlite3_stmt *s = NULL;
    int code = SQLITE_DONE;
    int rc = exec_simple(st, "BEGIN");

    if (rc == REG_OK) {
        rc = settings_version(st, version_out);
    }
    if (rc == REG_OK && *version_out != have) {
        rc = prep(st, S_SET_LIST, &s);
        while (rc == REG_OK && (code = sqlite3_step(s)) == SQLITE_ROW) {
            const char *v = (const char *)sqlite3_column_text(s, 2);
            rc = reg__settings_push(rows, (const char *)sqlite3_column_text(s, 0),
                                    (const char *)sqlite3_column_text(s, 1), v ? v : "",
                                    (size_t)sqlite3_column_bytes(s, 2), sqlite3_column_int64(s, 3));
        }
        if (rc == REG_OK && code != SQLITE_DONE) {
            rc = fail(st, "settings list");
        }
        if (s) {
            sqlite3_reset(s);
        }
    }
    if (rc == REG_OK) {
        rc = exec_simple(st, "COMMIT");
    }
    rollback(st, rc);
    return rc;
}

static int
be_settings_write(struct reg_store *st, int64_t expect, const struct reg_setting *w, size_t n,
                  bool *applied)
{
    struct sqlite_be *be = st->be;
    sqlite3_stmt *s = NULL;
    int rc = exec_simple(st, "BEGIN IMMEDIATE");

    *applied = false;
    if (rc == REG_OK) {
        rc = prep(st, S_SET_BUMP, &s);
    }
    if (rc == REG_OK) {
        sqlite3_bind_int64(s, 1, expect);
        rc = step_done(st, s, "settings version");
    }
    if (rc == REG_OK && sqlite3_changes(be->db) != 1) {
        (void)exec_simple(st, "ROLLBACK"); /* the version moved: nothing written */
        return REG_OK;
    }
    for (size_t i = 0; rc == REG_OK && i < n; i++) {
        rc = prep(st, w[i].value ? S_SET_UPSERT : S_SET_DELETE, &s);
        if (rc == REG_OK) {
            sqlite3_bind_text(s, 1, w[i].kind, -1, SQLITE_STATIC);
            sqlite3_bind_text(s, 2, w[i].name, -1, SQLITE_STATIC);
            if (w[i].value) {
                sqlite3_bind_text(s, 3, w[i].value, -1, SQLITE_STATIC);
            }
            rc = step_done(st, s, "settings write");
        }
    }
    if (rc == REG_OK) {
        rc = exec_simple(st, "COMMIT");
    }
    rollback(st, rc);
    *applied = rc == REG_OK;
    return rc;
}

/* ---- key usage ------------------------------------------------------------------ */

static int
use_step(struct reg_store *st, enum stmt_id id, const struct reg_usage_take *t, int64_t window,
         int64_t *r, int64_t *k)
{
    sqlite3_stmt *s = NULL;
    int rc = prep(st, id, &s);
    int code;

    if (rc != REG_OK) {
        return rc;
    }
    sqlite3_bind_text(s, 1, t->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, window);
    if (id == S_USE_SET) {
        sqlite3_bind_int64(s, 3, *r);
        sqlite3_bind_int64(s, 4, *k);
    }
    if (id != S_USE_GET) {
        return step_done(st, s, "key usage");
    }
    code = sqlite3_step(s);
    if (code != SQLITE_ROW) {
        rc = fail(st, "key usage");
        sqlite3_reset(s);
        return rc == REG_OK ? REG_EBACKEND : rc;
    }
    *r = sqlite3_column_int64(s, 0);
    *k = sqlite3_column_int64(s, 1);
    sqlite3_reset(s);
    return REG_OK;
}

static int
be_usage_take(struct reg_store *st, int64_t window, struct reg_usage_take *t, size_t n)
{
    int rc = exec_simple(st, "BEGIN IMMEDIATE");

    for (size_t i = 0; rc == REG_OK && i < n; i++) {
        int64_t r = 0, k = 0;
        rc = use_step(st, S_USE_INIT, &t[i], window, NULL, NULL);
        if (rc == REG_OK) {
            rc = use_step(st, S_USE_GET, &t[i], window, &r, &k);
        }
        if (rc == REG_OK) {
            reg__usage_grant(&t[i], r, k);
            rc = use_step(st, S_USE_SET, &t[i], window, &t[i].used_requests, &t[i].used_tokens);
        }
    }
    if (rc == REG_OK) {
        rc = exec_simple(st, "COMMIT");
    }
    rollback(st, rc);
    return rc;
}

static int
be_usage_gc(struct reg_store *st, int64_t window)
{
    sqlite3_stmt *s = NULL;
    int rc = prep(st, S_USE_GC, &s);

    if (rc == REG_OK) {
        sqlite3_bind_int64(s, 1, window);
        rc = step_done(st, s, "key usage gc");
    }
    return rc;
}

const struct reg_backend_ops reg_sqlite_ops = {
    .version = REG_BACKEND_OPS_VERSION,
    .name = "sqlite",
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
    .settings_read = be_settings_read,
    .settings_write = be_settings_write,
    .usage_take = be_usage_take,
    .usage_gc = be_usage_gc,
};
