/* SPDX-License-Identifier: MIT
 *
 * reg_harness.h - the registry suite's harness (reg_harness.c): one fresh
 * database per case on the backend named on the command line, stores that
 * close with their case, raw SQL on the case's database, and small builders
 * for operations and rows. Single-threaded except where a case says so; the
 * stores it opens may be handed to one thread each.
 */
#ifndef ROSTER_REG_HARNESS_H
#define ROSTER_REG_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mysql.h>
#include <sqlite3.h>

#include "registry.h"

#define TABLE      "dbgpt_cluster_registry_instance"
#define MAX_STORES 16   /* stores per case */
#define MAX_ROWS   1024 /* rows list_rows() keeps */
#define BIG_BATCH  500

/* MySQL settings from $ROSTER_TEST_MARIADB_ENV (tests/lib/mariadb.sh). */
struct test_mysql {
    char host[64];
    int port;
    char user[64];
    char password[128];
    char socket[256];
};

struct test_rows {
    struct reg_instance v[MAX_ROWS];
    size_t n;
};

extern enum reg_backend_kind g_kind;
extern bool g_mysql;
extern struct test_mysql g_my;
extern struct test_rows g_rows; /* filled by list_rows() and get() */
extern struct reg_op g_big[BIG_BATCH];

/* Time: monotonic and wall-clock milliseconds; sleep. */
int64_t mono_ms(void);
int64_t wall_ms(void);
void sleep_ms(int64_t ms);

/* Raw SQL on the current case's database (a separate connection). Return 0
 * or -1 (the error is printed). raw_int reads one integer (NULL -> -1). */
int raw_exec(const char *sql);
int raw_int(const char *sql, long long *out);
/* SQL counting the columns of the registry table, in this backend's dialect. */
const char *column_count_sql(void);

/* The case database's config (generous timeouts); stores are closed at the
 * end of the case (or by close_stores()). NULL on failure. */
void base_cfg(struct reg_config *c);
struct reg_store *open_cfg(const struct reg_config *c);
struct reg_store *open_store(void);
struct reg_store *open_migrated(void);
void close_stores(void);

/* Reads: list_rows() fills g_rows; find() searches it; get() lists and
 * copies the row with key's (model_name, host, port). */
reg_list_cb collect_cb;
int list_rows(struct reg_store *st, int64_t since, int64_t *now);
const struct reg_instance *find(const char *model, const char *host, int port);
int get(struct reg_store *st, const struct reg_instance *key, struct reg_instance *out);

/* Builders: an instance with weight 1, enabled and health-checked; an op
 * (admin_enabled -1); one-op applies (errors are printed). */
struct reg_instance mk(const char *model, const char *host, int port);
void set_template(struct reg_instance *in, const char *t);
struct reg_op op_of(enum reg_op_kind kind, const struct reg_instance *in);
int apply1(struct reg_store *st, enum reg_op_kind kind, const struct reg_instance *in);
/* An ADMIN op; returns reg_apply's result, the op's own in *op_rc. */
int admin(struct reg_store *st, const struct reg_instance *in, enum reg_admin_weight w, double v,
          int enabled, int *op_rc);

/* Case life cycle: a fresh database (memory: SQLite ":memory:NAME"), then
 * everything closed and the database dropped. */
int case_begin(bool memory);
void case_end(void);

/* Run set-up for "sqlite" or "mysql" (after reg_library_init), and its end. */
int harness_setup(const char *backend);
void harness_cleanup(void);

/* Runs a case on a fresh database (needs check.h). */
#define RUN_IN(fn, memory)                                                                         \
    do {                                                                                           \
        if (case_begin(memory) != 0) {                                                             \
            fprintf(stderr, "FAIL %s (could not create its database)\n", #fn);                     \
            check_total_cases++;                                                                   \
            check_failed_cases++;                                                                  \
        } else {                                                                                   \
            CHECK_RUN(fn);                                                                         \
        }                                                                                          \
        case_end();                                                                                \
    } while (0)
#define RUN(fn) RUN_IN(fn, false)

#define CHECK_SQL_INT(sql, expected)                                                               \
    do {                                                                                           \
        long long check_v_ = 0;                                                                    \
        CHECK(raw_int((sql), &check_v_) == 0);                                                     \
        CHECK_EQ_INT(check_v_, (expected));                                                        \
    } while (0)

#endif
