/* SPDX-License-Identifier: MIT
 *
 * reg_backend.h - the storage-engine interface behind registry.h (internal
 * to registry/). One versioned struct of function pointers per backend
 * (SQLite's sqlite3_io_methods is the model); callers go through the
 * reg_store.c wrappers, which own retries, validation and error text.
 *
 * Each op is ONE attempt. It returns:
 *   REG_OK
 *   REG_EBUSY     lock wait, deadlock, SQLITE_BUSY/LOCKED: retry the attempt
 *   REG_EUNAVAIL  connection failed or lost: reconnect, then retry
 *   REG_EBACKEND  anything else, including a connect that can never
 *                 succeed (bad credentials, an SQLite file that cannot be
 *                 opened or written): give up
 *   REG_ESCHEMA   the table is not usable
 * and leaves detail in st->errmsg via reg__set_err(). An op that began a
 * transaction rolls it back before returning an error.
 *
 * Threads: a store (and so its backend connection) is used by one thread
 * at a time, the caller's (a writer, the refresher): never an event loop,
 * since every op blocks on the database.
 */
#ifndef ROSTER_REG_BACKEND_H
#define ROSTER_REG_BACKEND_H

#include <stdarg.h>

#include "registry.h"

#define REG_BACKEND_OPS_VERSION 2

/* A block of the strings of collected rows (a list of them, reused). */
struct reg_strblock {
    struct reg_strblock *next;
    size_t used;
    size_t cap;
    char data[];
};

/* Rows collected by a list attempt; delivered to the caller only after the
 * attempt succeeded, so a retried attempt never shows a row twice. Rows
 * are compact (struct reg_row); their strings sit in `blocks` (fixed-size
 * blocks, so a string never moves once written: the pointers stay valid
 * while more rows arrive). reg__rows_push copies a reg_instance in;
 * reg__rows_reset empties the set for the next attempt, keeping the memory. */
struct reg_rows {
    struct reg_row *v;
    size_t n;
    size_t cap;
    struct reg_strblock *blocks; /* first block */
    struct reg_strblock *cur;    /* the block being filled (NULL: none yet) */
};

struct reg_store;

struct reg_backend_ops {
    int version; /* REG_BACKEND_OPS_VERSION */
    const char *name;
    int (*init)(struct reg_store *st);  /* allocate st->be; no I/O */
    void (*fini)(struct reg_store *st); /* disconnect and free st->be */
    int (*connect)(struct reg_store *st);
    void (*disconnect)(struct reg_store *st);
    /* migrations (reg_migrate.c drives these) */
    int (*migrate_lock)(struct reg_store *st);
    int (*migrate_unlock)(struct reg_store *st, bool commit);
    int (*migrate_exec)(struct reg_store *st, const char *sql);         /* "already exists" is OK */
    int (*migrate_applied)(struct reg_store *st, uint64_t *bitmap_out); /* versions 1..64 */
    int (*migrate_record)(struct reg_store *st, int version, const char *name);
    /* data */
    int (*apply)(struct reg_store *st, struct reg_op *ops, size_t n);
    /* heartbeat_since_ms < 0: no heartbeat delta (see reg_list_rows) */
    int (*list)(struct reg_store *st, int64_t changed_since_ms, int64_t heartbeat_since_ms,
                struct reg_rows *rows, int64_t *db_now_ms_out, int64_t *table_rows_out);
    int (*sweep)(struct reg_store *st, int64_t gc_after_ms, int *marked, int *deleted);
    int (*ping)(struct reg_store *st);
    /* The connected socket, or -1 (optional; NULL for SQLite). The time
     * guard shuts it down when an attempt outlives its deadline. */
    int (*socket_fd)(struct reg_store *st);
    /* settings (registry.h): one attempt each. settings_read appends rows
     * with reg__settings_push only when the version differs from `have`
     * (*version_out set either way); settings_write sets *applied. */
    int (*settings_read)(struct reg_store *st, int64_t have, int64_t *version_out,
                         struct reg_settings *rows);
    int (*settings_write)(struct reg_store *st, int64_t expect, const struct reg_setting *w,
                          size_t n, bool *applied);
    /* key usage (registry.h): one attempt each */
    int (*usage_take)(struct reg_store *st, int64_t window, struct reg_usage_take *t, size_t n);
    int (*usage_gc)(struct reg_store *st, int64_t window);
};
/* The grants of a take given the window's current totals (both backends). */
void reg__usage_grant(struct reg_usage_take *t, int64_t used_requests, int64_t used_tokens);

/* One armed time guard (reg_store.c): while armed, a watchdog thread
 * shuts `fd` down (shutdown(2), never close) once `deadline_ms` passes,
 * so a blocked read or write on it returns at once with an error. */
struct reg_guard {
    struct reg_guard *next;
    int fd;
    int64_t deadline_ms; /* monotonic */
    bool armed;
    bool fired;
};

struct reg_store {
    struct reg_config cfg; /* strings owned (strdup'd by reg_open) */
    const struct reg_backend_ops *ops;
    void *be;                /* backend state */
    bool connected;          /* maintained by the wrappers */
    int64_t next_connect_ms; /* monotonic; reconnect backoff while the database is down */
    int connect_backoff_ms;
    /* Monotonic deadline of the call in progress (0: none). Backends bound
     * their connect timeouts by it (reg__connect_secs). */
    int64_t deadline_ms;
    int64_t call_start_ms; /* monotonic start of that call */
    struct reg_guard guard;
    struct reg_stats stats;
    /* reg_list's rows, kept between calls: a full read of a large table
     * reuses the same pages instead of growing and faulting in a new array
     * each time (reg_list_rows hands it to the caller) */
    struct reg_rows list_rows;
    char errmsg[512];
};

extern const struct reg_backend_ops reg_sqlite_ops;
extern const struct reg_backend_ops reg_mysql_ops;

void reg__set_err(struct reg_store *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int reg__rows_push(struct reg_rows *rows, const struct reg_instance *in);
void reg__rows_reset(struct reg_rows *rows);
void reg__rows_cleanup(struct reg_rows *rows);
/* Appends a copy of a settings row (value of `vlen` bytes). REG_ENOMEM. */
int reg__settings_push(struct reg_settings *s, const char *kind, const char *name,
                       const char *value, size_t vlen, int64_t updated_ms);
/* Whole seconds a connect may take now: the configured connect timeout,
 * cut to what is left before st->deadline_ms (rounded down, as Connector/C
 * counts whole seconds). 0: no time left for a connect. A call whose whole
 * bound is under a second gets 1 s connects while time is left (Connector/C
 * cannot wait less). */
unsigned int reg__connect_secs(const struct reg_store *st);
/* Arms st->guard on `fd` until st->deadline_ms (nothing if no deadline or
 * fd < 0), and disarms it. disarm returns true if the guard fired: the
 * socket was shut down because the deadline passed. */
void reg__guard_arm(struct reg_store *st, int fd);
bool reg__guard_disarm(struct reg_store *st);
int64_t reg__mono_ms(void);
/* Runs the migrations for st->ops over a connected store (reg_migrate.c). */
int reg__migrate(struct reg_store *st);

#endif
