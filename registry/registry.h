/* SPDX-License-Identifier: MIT
 *
 * registry.h - the StorageModelRegistry: model-instance records in one SQL
 * table, DB-GPT's `dbgpt_cluster_registry_instance` plus roster's columns.
 *
 * A plain synchronous library: no event loop, no HTTP, no logging. Every
 * call may block on the database (bounded by the configured timeouts and
 * retry budget), so call it from database threads only, never from an
 * event-loop thread. A `struct reg_store` is one connection: use each store
 * from one thread at a time; open one store per thread.
 *
 * Two backends sit behind one interface (reg_backend.h): SQLite (the
 * embedded default: a file in WAL mode, or ":memory:") and MySQL/MariaDB
 * (MariaDB Connector/C). Both pass the same test suite (tests/unit/
 * test_registry.c).
 *
 * Time. Every timestamp is taken from the database clock, in UTC, inside the
 * statement that writes it; health is derived from the database's own "now"
 * (reg_instance.age_ms), never from a controller's clock.
 *
 * Writes. reg_apply() runs a batch of operations in one transaction. Every
 * operation is idempotent (registering twice, heartbeating twice, removing
 * twice all leave the same state), so a batch that failed with an
 * ambiguous error (lost connection during COMMIT) is retried whole. Lock
 * waits and deadlocks (MySQL 1213 and 1205; Galera reports a certification
 * conflict as 1213) are retried too, with a short jittered backoff, inside
 * the retry budget; a Galera node that is not ready (1047, 1927) counts as
 * unreachable and the store moves to the next server of its list.
 */
#ifndef ROSTER_REGISTRY_H
#define ROSTER_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REG_MUSTCHECK __attribute__((warn_unused_result))

/* Column limits of DB-GPT's table (varchar(128)). */
#define REG_NAME_MAX     128
#define REG_HOST_MAX     128
#define REG_TEMPLATE_MAX 128

#define REG_MYSQL_HOSTS_MAX 16 /* servers in reg_config.mysql_host */

enum reg_rc {
    REG_OK = 0,
    REG_EINVAL = -1, /* a field is out of range; nothing was written */
    REG_ENOMEM = -2,
    REG_ENOTFOUND = -3, /* per-operation result: no such instance (admin ops) */
    REG_EUNAVAIL = -4,  /* the database could not be reached within the budget */
    REG_EBUSY = -5,     /* lock waits / deadlocks outlasted the retry budget (SQLite: the
                           file is locked by another process) */
    REG_EBACKEND = -6,  /* any other database error (detail: reg_errmsg), returned at once,
                           without retries. Includes a configuration the database refuses,
                           which retrying cannot fix: MySQL bad credentials or unknown
                           database; an SQLite file that cannot be opened, created or
                           written (missing directory, a directory, no permission) or is
                           not a database (errmsg names the file and the reason). */
    REG_ESCHEMA = -7,   /* the table is missing columns or migrations failed */
};

/* A static description of `rc` ("database unavailable", ...). Never NULL. */
const char *reg_strerror(int rc);

enum reg_backend_kind { REG_SQLITE = 1, REG_MYSQL = 2 };

struct reg_config {
    enum reg_backend_kind backend;
    /* SQLite: a file path, or ":memory:" (one private in-memory database per
     * distinct `sqlite_path` within the process, shared by its stores). */
    const char *sqlite_path;
    bool sqlite_synchronous_full; /* PRAGMA synchronous=FULL (default NORMAL) */
    /* MySQL/MariaDB. `mysql_socket` (a Unix socket path) wins over host:port
     * when set. `mysql_host` may list several servers (a Galera cluster),
     * comma-separated, each HOST, HOST:PORT, [IPV6] or [IPV6]:PORT; an entry
     * without a port uses `mysql_port`. A store keeps to the server that
     * last worked; when a connect to it fails or its connection is lost,
     * it tries the next ones in list order (wrapping), within the call's
     * time bound. At most REG_MYSQL_HOSTS_MAX entries. */
    const char *mysql_host;
    int mysql_port;
    const char *mysql_socket;
    const char *mysql_user;
    const char *mysql_password;
    const char *mysql_database;
    /* Timeouts. MySQL rounds connect/read/write up to whole seconds
     * (Connector/C's unit); SQLite uses busy_ms as its busy timeout. */
    int connect_timeout_ms; /* default 2000 */
    int io_timeout_ms;      /* read and write; default 3000 */
    int busy_ms;            /* lock wait (innodb_lock_wait_timeout / busy_timeout); default 2000 */
    /* Total time one reg_apply/reg_list may spend retrying (reconnects,
     * deadlocks, lock waits) before giving up. Default 5000. */
    int retry_budget_ms;
    /* Lease applied to instances that declare none (DB-GPT workers): the
     * controller's --heartbeat_timeout_secs. Used by reg_apply (to tell a
     * revival from a plain heartbeat) and reg_sweep. Default 60000. */
    int64_t default_lease_ms;
};

/* One row, as read back. Strings are NUL-terminated and bounded, so a record
 * owns no heap memory and can be copied by assignment. */
struct reg_instance {
    char model_name[REG_NAME_MAX + 1]; /* "<model>@<worker_type>" */
    char host[REG_HOST_MAX + 1];
    int port;
    double weight;            /* as declared by the worker */
    bool has_weight_override; /* an operator set the weight (admin) */
    double weight_override;
    bool check_healthy;
    bool healthy; /* stored flag: false once deregistered */
    bool enabled;
    bool has_prompt_template;
    char prompt_template[REG_TEMPLATE_MAX + 1];
    bool has_last_heartbeat;
    int64_t last_heartbeat_ms; /* epoch ms (database clock, UTC) */
    int64_t age_ms;    /* database now - last_heartbeat, >= 0; valid if has_last_heartbeat */
    int32_t lease_ms;  /* declared lease; 0 = use the default */
    int32_t in_flight; /* load report from the last heartbeat */
    int32_t queue_length;
    int32_t capacity;
    int64_t updated_ms; /* database time of the last routing-relevant change */
};

/* Effective weight: the operator's override if set, else the declared one. */
double reg_instance_weight(const struct reg_instance *in);

/* A row in compact form: reg_instance's fields with the strings held by
 * pointer (NUL-terminated, at most the column limits), 96 bytes instead of
 * 464. What reg_list_rows hands out and what the controller's view keeps
 * per instance; whoever fills one says who owns the strings.
 * prompt_template is NULL when has_prompt_template is false. */
struct reg_row {
    const char *model_name;
    const char *host;
    const char *prompt_template;
    double weight;
    double weight_override;
    int64_t last_heartbeat_ms;
    int64_t age_ms;
    int64_t updated_ms;
    int32_t port;
    int32_t lease_ms;
    int32_t in_flight;
    int32_t queue_length;
    int32_t capacity;
    bool has_weight_override;
    bool check_healthy;
    bool healthy;
    bool enabled;
    bool has_prompt_template;
    bool has_last_heartbeat;
};

/* reg_instance_weight for a row. */
double reg_row_weight(const struct reg_row *r);
/* A row over `in`'s fields; its strings point into `in` (borrowed). */
void reg_row_from_instance(struct reg_row *out, const struct reg_instance *in);
/* Copies a row into a self-contained record (strings cut at the limits). */
void reg_row_to_instance(struct reg_instance *out, const struct reg_row *r);

enum reg_op_kind {
    REG_OP_REGISTER = 1, /* upsert; updates declared weight, template, lease, load;
                            sets healthy and last_heartbeat. Never touches
                            enabled, check_healthy or the weight override. */
    REG_OP_HEARTBEAT,    /* upsert; an unknown instance is registered on the spot.
                            Sets healthy, last_heartbeat, lease, load only. */
    REG_OP_DEREGISTER,   /* healthy = 0; unknown instance is not an error */
    REG_OP_REMOVE,       /* delete the row; unknown instance is not an error */
    REG_OP_ADMIN,        /* set enabled and/or the weight override;
                            unknown instance -> op.rc = REG_ENOTFOUND */
};

enum reg_admin_weight { REG_WEIGHT_KEEP = 0, REG_WEIGHT_SET, REG_WEIGHT_CLEAR };

struct reg_op {
    enum reg_op_kind kind;
    /* Key (model_name, host, port) always; the other fields as the kind
     * says. For REGISTER/HEARTBEAT inserts, enabled and check_healthy are
     * taken from `inst`; has_weight_override and the read-only fields
     * (healthy, last_heartbeat, age, updated) are ignored. */
    struct reg_instance inst;
    enum reg_admin_weight admin_weight; /* ADMIN: what to do with the override */
    double admin_weight_value;
    int admin_enabled; /* ADMIN: -1 keep, 0 disable, 1 enable */
    int rc;            /* OUT: per-operation result (REG_OK or REG_ENOTFOUND) */
};

struct reg_store;

/* Checks a record's key and fields against the table's limits (lengths,
 * port range, finite non-negative weight, ...). Returns REG_OK or
 * REG_EINVAL. Pure; any thread. */
REG_MUSTCHECK int reg_instance_validate(const struct reg_instance *in);

/* Opens a store (one database connection). Connecting may fail while the
 * database is down: the store is still returned (REG_OK) and connects on
 * first use, so a service can start before its database. Returns
 * REG_EINVAL for a bad config, REG_ENOMEM. *out is NULL on failure.
 * Blocks: no (connection is lazy). */
REG_MUSTCHECK int reg_open(const struct reg_config *cfg, struct reg_store **out);

/* Closes the connection and frees the store. NULL-safe. */
void reg_close(struct reg_store *st);

/* Creates the table if missing and applies pending migrations from sql/
 * (a DB-GPT-created table gains roster's columns). Safe to run from several
 * processes at once. Returns REG_OK, REG_EUNAVAIL (unreachable: worth
 * retrying), REG_EBUSY (locked), REG_EBACKEND (refused: see the enum),
 * REG_ESCHEMA. Blocks: yes. */
REG_MUSTCHECK int reg_migrate(struct reg_store *st);

/* Applies `n` operations in one transaction, in order, retrying whole on
 * deadlocks, lock waits and lost connections within the retry budget. Each
 * op's `rc` is set. Validates every op first: returns REG_EINVAL (and
 * writes nothing) if any op is invalid. Returns REG_OK when the transaction
 * committed, else REG_EUNAVAIL, REG_EBUSY or REG_EBACKEND (nothing
 * committed, or - after an ambiguous lost COMMIT - possibly committed, which
 * is safe because every op is idempotent). Blocks: yes. */
REG_MUSTCHECK int reg_apply(struct reg_store *st, struct reg_op *ops, size_t n);

/* reg_apply with the caller's hard deadline (CLOCK_MONOTONIC ms, as
 * util_mono_ms) instead of now + retry budget: the whole call, retries and
 * reconnects included, returns by then. A statement still waiting at the
 * deadline - for a stopped server, or for a row lock held that long - is
 * cut off (its socket shut down) and the call returns REG_EUNAVAIL. A
 * deadline already past returns REG_EBUSY without trying. Plain reg_apply
 * bounds each wait by the configured timeouts instead. Blocks: yes. */
REG_MUSTCHECK int reg_apply_until(struct reg_store *st, struct reg_op *ops, size_t n,
                                  int64_t deadline_mono_ms);

/* Called once per row by reg_list. Return 0 to continue, non-zero to stop
 * (reg_list then returns REG_OK). `in` is valid only during the call. */
typedef int reg_list_cb(const struct reg_instance *in, void *arg);

/* Reads rows: all of them when `changed_since_ms` < 0, else only rows whose
 * updated_ms >= changed_since_ms. *db_now_ms_out receives the database's
 * clock (epoch ms) at the time of the query; each row's age_ms is relative
 * to it. *table_rows_out (if not NULL) receives the number of rows in the
 * table: for a partial read it is counted by a second statement, so a
 * concurrent write may fall between the two; a reader compares it with its
 * own count to notice rows deleted elsewhere. Rows with a NULL and an empty
 * sys_code for the same instance (a table shared with DB-GPT) are both
 * reported. Blocks: yes. */
REG_MUSTCHECK int reg_list(struct reg_store *st, int64_t changed_since_ms, reg_list_cb *cb,
                           void *arg, int64_t *db_now_ms_out, int64_t *table_rows_out);

/* reg_list without a copy per row: *rows_out points at the store's own
 * array of *n_out compact rows, their strings in the store's own string
 * blocks (a row's model_name may be shared with the row before it), all
 * valid until the next call on `st` (or reg_close). The array and the
 * blocks are kept between calls (a full read of a large table reuses their
 * pages: about 110 bytes a row); they shrink when a full read fills under
 * a quarter of them.
 * With both since values >= 0 the poll also returns the rows whose
 * last_heartbeat is at or after `heartbeat_since_ms` (database time, epoch
 * ms): a poll that sees heartbeats written elsewhere. Both filters are
 * index range reads (idx_roster_updated, idx_roster_last_heartbeat: an
 * index_merge union on MySQL, SQLite's multi-index OR), so a poll costs
 * the rows it returns, not the table; a row matching both comes once.
 * heartbeat_since_ms < 0: changed rows only (as reg_list). Blocks: yes. */
REG_MUSTCHECK int reg_list_rows(struct reg_store *st, int64_t changed_since_ms,
                                int64_t heartbeat_since_ms, const struct reg_row **rows_out,
                                size_t *n_out, int64_t *db_now_ms_out, int64_t *table_rows_out);

/* The number of rows in the table, within the caller's hard deadline (as
 * reg_apply_until: a statement still waiting then is cut off and the call
 * returns REG_EUNAVAIL). Blocks: yes. */
REG_MUSTCHECK int reg_table_rows_until(struct reg_store *st, int64_t deadline_mono_ms,
                                       int64_t *rows_out);

/* The idempotent sweep, safe to run from every controller at once:
 * marks `healthy = 0` on rows whose lease ran out (for DB-GPT readers of the
 * table; roster computes health itself), and deletes rows not heard from
 * for `gc_after_ms` (0 = never delete). Counts go to the out-params (may be
 * NULL). Blocks: yes. */
REG_MUSTCHECK int reg_sweep(struct reg_store *st, int64_t gc_after_ms, int *marked_out,
                            int *deleted_out);

/* ---- cluster settings (tables roster_settings, roster_settings_version) ----
 *
 * Rows of (kind, name, value): value is a JSON document that the
 * controller validates (the registry stores text). Every write bumps one
 * version number in the same transaction, with a compare-and-set: a
 * writer names the version it read, and a write over a version that moved
 * meanwhile changes nothing (*applied_out false), so the caller re-reads
 * and decides again. Readers poll the version and read every row when it
 * moved (settings are few: keys, aliases, per-model documents). */
#define REG_SETTING_KIND_MAX  16
#define REG_SETTING_NAME_MAX  128
#define REG_SETTING_VALUE_MAX 16384

struct reg_setting {
    char *kind;
    char *name;
    char *value;        /* JSON text; in a write NULL deletes the row */
    int64_t updated_ms; /* read: database time of the row's last write */
};

/* Rows read at one version; strings owned (reg_settings_free). */
struct reg_settings {
    int64_t version;
    struct reg_setting *v; /* sorted by kind, name */
    size_t n;
};

/* Reads the version; when it differs from `have_version` (pass -1 to
 * always read) reads every row too, consistently (the rows as of
 * out->version) and sets *changed_out. `out` is replaced only when the
 * version changed (free the old one first or pass a zeroed one).
 * Blocks: yes. */
REG_MUSTCHECK int reg_settings_read(struct reg_store *st, int64_t have_version,
                                    struct reg_settings *out, bool *changed_out);
void reg_settings_free(struct reg_settings *s); /* NULL-safe; leaves it zeroed */

/* Writes `n` rows (upserts, or deletes where value is NULL) in one
 * transaction if the version is still `expect_version`, which becomes
 * expect_version + 1; otherwise writes nothing and sets *applied_out
 * false. REG_EINVAL (nothing written) for a kind, name or value out of
 * bounds. Blocks: yes. */
REG_MUSTCHECK int reg_settings_write(struct reg_store *st, int64_t expect_version,
                                     const struct reg_setting *w, size_t n, bool *applied_out);

/* ---- API key usage (table roster_key_usage) ----
 *
 * Per key and window (epoch minute), the requests and tokens handed out.
 * A take asks for more (want), gives back what went unused (ret), and is
 * granted at most what keeps the window's total within the limit (0: no
 * limit): so the sum of grants in a window never exceeds it. */
struct reg_usage_take {
    const char *name;
    int64_t want_requests, want_tokens;
    int64_t ret_requests, ret_tokens;
    int64_t limit_requests, limit_tokens;
    /* out */
    int64_t granted_requests, granted_tokens;
    int64_t used_requests, used_tokens; /* the window's totals after this take */
};

/* Applies `n` takes of one window in one transaction (all or none).
 * Blocks: yes. */
REG_MUSTCHECK int reg_usage_take(struct reg_store *st, int64_t window, struct reg_usage_take *t,
                                 size_t n);
/* Deletes the rows of windows before `window`. Blocks: yes. */
REG_MUSTCHECK int reg_usage_gc(struct reg_store *st, int64_t window);

/* A cheap round trip to the database ("SELECT 1"), reconnecting if needed.
 * Returns REG_OK or REG_EUNAVAIL. Blocks: yes. */
REG_MUSTCHECK int reg_ping(struct reg_store *st);

/* Detail of the last failure on this store (never NULL; never contains the
 * password). Valid until the next call on the store. */
const char *reg_errmsg(const struct reg_store *st);

/* Counters since reg_open, for metrics. */
struct reg_stats {
    uint64_t reconnects;
    uint64_t retries; /* deadlock / lock-wait / lost-connection retries */
    uint64_t statements;
};
void reg_get_stats(const struct reg_store *st, struct reg_stats *out);

/* Library set-up: call once in main() before any thread starts, and
 * reg_library_end() at exit. Each thread that used a store calls
 * reg_thread_end() before it exits. */
REG_MUSTCHECK int reg_library_init(void);
void reg_library_end(void);
void reg_thread_end(void);

#endif
