/* SPDX-License-Identifier: MIT
 *
 * reg_harness.c - the registry suite's harness (tests/unit/test_registry.c):
 * a fresh database per case, stores that are closed with the case, raw SQL
 * on the case's database, and helpers that build operations and read rows.
 * No CHECKs here: check.h's counters live in the suite's translation unit.
 */
#include "reg_harness.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum reg_backend_kind g_kind;
bool g_mysql;
struct test_mysql g_my;
struct test_rows g_rows;
struct reg_op g_big[BIG_BATCH];

static char g_tmpdir[256];      /* sqlite: private directory for the run */
static int g_seq;               /* case number */
static char g_dbname[64];       /* mysql: this case's database */
static char g_sqlite_path[512]; /* sqlite: this case's file or ":memory:NAME" */
static MYSQL *g_admin;          /* mysql: setup connection, no database */
static MYSQL *g_raw;            /* mysql: raw connection to the case database */
static sqlite3 *g_lite;         /* sqlite: raw connection to the case database */
static struct reg_store *g_stores[MAX_STORES];
static int g_nstores;

/* ---- time -------------------------------------------------------------------- */

int64_t
mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- raw SQL ------------------------------------------------------------------ */

static MYSQL *
my_connect(const char *db)
{
    MYSQL *m = mysql_init(NULL);
    unsigned int tcp = MYSQL_PROTOCOL_TCP;
    unsigned int timeout = 10;

    if (!m) {
        return NULL;
    }
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(m, MYSQL_OPT_PROTOCOL, &tcp);
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    if (!mysql_real_connect(m, g_my.host, g_my.user, g_my.password, db, (unsigned int)g_my.port,
                            NULL, 0)) {
        fprintf(stderr, "mysql connect to %s:%d as %s: %s\n", g_my.host, g_my.port, g_my.user,
                mysql_error(m));
        mysql_close(m);
        return NULL;
    }
    return m;
}

static int
my_exec(MYSQL *m, const char *sql)
{
    MYSQL_RES *res;

    if (mysql_real_query(m, sql, strlen(sql)) != 0) {
        fprintf(stderr, "raw mysql: %s: %s\n", sql, mysql_error(m));
        return -1;
    }
    res = mysql_store_result(m);
    if (res) {
        mysql_free_result(res);
    }
    return 0;
}

static const char *
lite_path(char *buf, size_t cap)
{
    if (strncmp(g_sqlite_path, ":memory:", 8) == 0) {
        /* the name reg_sqlite.c gives a shared in-memory database */
        snprintf(buf, cap, "file:roster_mem_%s?mode=memory&cache=shared", g_sqlite_path + 8);
        return buf;
    }
    return g_sqlite_path;
}

static int
raw_open(void)
{
    char uri[600];

    if (g_mysql) {
        if (!g_raw) {
            g_raw = my_connect(g_dbname);
        }
        return g_raw ? 0 : -1;
    }
    if (!g_lite) {
        int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI;
        if (sqlite3_open_v2(lite_path(uri, sizeof(uri)), &g_lite, flags, NULL) != SQLITE_OK) {
            fprintf(stderr, "raw sqlite open: %s\n", sqlite3_errmsg(g_lite));
            sqlite3_close(g_lite);
            g_lite = NULL;
            return -1;
        }
        sqlite3_busy_timeout(g_lite, 5000);
    }
    return 0;
}

int
raw_exec(const char *sql)
{
    char *err = NULL;

    if (raw_open() != 0) {
        return -1;
    }
    if (g_mysql) {
        return my_exec(g_raw, sql);
    }
    if (sqlite3_exec(g_lite, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "raw sqlite: %s: %s\n", sql, err ? err : "?");
        sqlite3_free(err);
        return -1;
    }
    return 0;
}

/* One integer (NULL reads as -1). Returns 0, or -1 on error / no row. */
int
raw_int(const char *sql, long long *out)
{
    *out = -1;
    if (raw_open() != 0) {
        return -1;
    }
    if (g_mysql) {
        MYSQL_RES *res;
        MYSQL_ROW row;
        int rc = -1;
        if (mysql_real_query(g_raw, sql, strlen(sql)) != 0 || !(res = mysql_store_result(g_raw))) {
            fprintf(stderr, "raw mysql: %s: %s\n", sql, mysql_error(g_raw));
            return -1;
        }
        if ((row = mysql_fetch_row(res)) != NULL) {
            *out = row[0] ? strtoll(row[0], NULL, 10) : -1;
            rc = 0;
        }
        mysql_free_result(res);
        return rc;
    }
    sqlite3_stmt *s = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(g_lite, sql, -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
        *out = sqlite3_column_type(s, 0) == SQLITE_NULL ? -1 : sqlite3_column_int64(s, 0);
        rc = 0;
    } else {
        fprintf(stderr, "raw sqlite: %s: %s\n", sql, sqlite3_errmsg(g_lite));
    }
    sqlite3_finalize(s);
    return rc;
}

const char *
column_count_sql(void)
{
    return g_mysql ? "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA ="
                     " DATABASE() AND TABLE_NAME = '" TABLE "'"
                   : "SELECT COUNT(*) FROM pragma_table_info('" TABLE "')";
}

/* ---- stores ------------------------------------------------------------------- */

void
base_cfg(struct reg_config *c)
{
    memset(c, 0, sizeof(*c));
    c->backend = g_kind;
    c->sqlite_path = g_sqlite_path;
    c->mysql_host = g_my.host;
    c->mysql_port = g_my.port;
    c->mysql_user = g_my.user;
    c->mysql_password = g_my.password;
    c->mysql_database = g_dbname;
    c->connect_timeout_ms = 3000;
    c->io_timeout_ms = 5000;
    c->busy_ms = 2000;
    c->retry_budget_ms = 15000;
}

struct reg_store *
open_cfg(const struct reg_config *c)
{
    struct reg_store *st = NULL;

    if (g_nstores == MAX_STORES) {
        fprintf(stderr, "too many stores in one case\n");
        return NULL;
    }
    if (reg_open(c, &st) != REG_OK) {
        fprintf(stderr, "reg_open failed\n");
        return NULL;
    }
    g_stores[g_nstores++] = st;
    return st;
}

struct reg_store *
open_store(void)
{
    struct reg_config c;

    base_cfg(&c);
    return open_cfg(&c);
}

struct reg_store *
open_migrated(void)
{
    struct reg_store *st = open_store();
    int rc;

    if (st && (rc = reg_migrate(st)) != REG_OK) {
        fprintf(stderr, "reg_migrate: %s: %s\n", reg_strerror(rc), reg_errmsg(st));
        return NULL;
    }
    return st;
}

int
collect_cb(const struct reg_instance *in, void *arg)
{
    (void)arg;
    if (g_rows.n < MAX_ROWS) {
        g_rows.v[g_rows.n++] = *in;
    }
    return 0;
}

int
list_rows(struct reg_store *st, int64_t since, int64_t *now)
{
    int64_t dummy;
    int rc;

    g_rows.n = 0;
    rc = reg_list(st, since, collect_cb, NULL, now ? now : &dummy, NULL);
    if (rc != REG_OK) {
        fprintf(stderr, "reg_list: %s: %s\n", reg_strerror(rc), reg_errmsg(st));
    }
    return rc;
}

const struct reg_instance *
find(const char *model, const char *host, int port)
{
    for (size_t i = 0; i < g_rows.n; i++) {
        const struct reg_instance *in = &g_rows.v[i];
        if (strcmp(in->model_name, model) == 0 && strcmp(in->host, host) == 0 && in->port == port) {
            return in;
        }
    }
    return NULL;
}

/* Lists everything and copies the one row for the key into *out. */
int
get(struct reg_store *st, const struct reg_instance *key, struct reg_instance *out)
{
    const struct reg_instance *in;

    if (list_rows(st, -1, NULL) != REG_OK) {
        return -1;
    }
    in = find(key->model_name, key->host, key->port);
    if (!in) {
        return -1;
    }
    *out = *in;
    return 0;
}

struct reg_instance
mk(const char *model, const char *host, int port)
{
    struct reg_instance in;

    memset(&in, 0, sizeof(in));
    snprintf(in.model_name, sizeof(in.model_name), "%s", model);
    snprintf(in.host, sizeof(in.host), "%s", host);
    in.port = port;
    in.weight = 1.0;
    in.check_healthy = true;
    in.enabled = true;
    return in;
}

void
set_template(struct reg_instance *in, const char *t)
{
    in->has_prompt_template = true;
    snprintf(in->prompt_template, sizeof(in->prompt_template), "%s", t);
}

struct reg_op
op_of(enum reg_op_kind kind, const struct reg_instance *in)
{
    struct reg_op op;

    memset(&op, 0, sizeof(op));
    op.kind = kind;
    op.inst = *in;
    op.admin_enabled = -1;
    return op;
}

int
apply1(struct reg_store *st, enum reg_op_kind kind, const struct reg_instance *in)
{
    struct reg_op op = op_of(kind, in);
    int rc = reg_apply(st, &op, 1);

    if (rc != REG_OK) {
        fprintf(stderr, "reg_apply: %s: %s\n", reg_strerror(rc), reg_errmsg(st));
    }
    return rc;
}

/* An ADMIN op; returns reg_apply's result, the op's own in *op_rc. */
int
admin(struct reg_store *st, const struct reg_instance *in, enum reg_admin_weight w, double v,
      int enabled, int *op_rc)
{
    struct reg_op op = op_of(REG_OP_ADMIN, in);
    int rc;

    op.admin_weight = w;
    op.admin_weight_value = v;
    op.admin_enabled = enabled;
    op.rc = 12345;
    rc = reg_apply(st, &op, 1);
    *op_rc = op.rc;
    return rc;
}

/* ---- case set-up ------------------------------------------------------------------ */

int
case_begin(bool memory)
{
    char sql[160];

    g_seq++;
    g_nstores = 0;
    if (g_mysql) {
        snprintf(g_dbname, sizeof(g_dbname), "roster_t_%d_%d", (int)getpid(), g_seq);
        snprintf(sql, sizeof(sql), "CREATE DATABASE `%s` CHARACTER SET utf8mb4", g_dbname);
        return my_exec(g_admin, sql);
    }
    if (memory) {
        snprintf(g_sqlite_path, sizeof(g_sqlite_path), ":memory:t%d_%d", (int)getpid(), g_seq);
    } else {
        snprintf(g_sqlite_path, sizeof(g_sqlite_path), "%s/case%d.db", g_tmpdir, g_seq);
    }
    return 0;
}

void
close_stores(void)
{
    for (int i = 0; i < g_nstores; i++) {
        reg_close(g_stores[i]);
        g_stores[i] = NULL;
    }
    g_nstores = 0;
}

void
case_end(void)
{
    char sql[160];

    close_stores();
    if (g_raw) {
        mysql_close(g_raw);
        g_raw = NULL;
    }
    if (g_lite) {
        sqlite3_close(g_lite);
        g_lite = NULL;
    }
    if (g_mysql) {
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS `%s`", g_dbname);
        (void)my_exec(g_admin, sql);
        return;
    }
    if (strncmp(g_sqlite_path, ":memory:", 8) != 0) {
        static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};
        for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
            char p[600];
            snprintf(p, sizeof(p), "%s%s", g_sqlite_path, suffix[i]);
            unlink(p);
        }
    }
}

static int
load_mysql_env(void)
{
    const char *path = getenv("ROSTER_TEST_MARIADB_ENV");
    char line[512];
    FILE *f;

    if (!path || !*path) {
        fprintf(stderr, "test_registry mysql: ROSTER_TEST_MARIADB_ENV is not set; start a"
                        " server with tests/lib/mariadb.sh start DIR and point it at DIR/env\n");
        return -1;
    }
    f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "test_registry mysql: cannot read %s: %s (did mariadb_start run?)\n", path,
                strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        char *eq = strchr(line, '=');
        if (!eq) {
            continue;
        }
        *eq = '\0';
        char *v = eq + 1;
        v[strcspn(v, "\r\n")] = '\0';
        if (strcmp(line, "ROSTER_TEST_MYSQL_HOST") == 0) {
            snprintf(g_my.host, sizeof(g_my.host), "%s", v);
        } else if (strcmp(line, "ROSTER_TEST_MYSQL_PORT") == 0) {
            g_my.port = (int)strtol(v, NULL, 10);
        } else if (strcmp(line, "ROSTER_TEST_MYSQL_USER") == 0) {
            snprintf(g_my.user, sizeof(g_my.user), "%s", v);
        } else if (strcmp(line, "ROSTER_TEST_MYSQL_PASSWORD") == 0) {
            snprintf(g_my.password, sizeof(g_my.password), "%s", v);
        } else if (strcmp(line, "ROSTER_TEST_MYSQL_SOCKET") == 0) {
            snprintf(g_my.socket, sizeof(g_my.socket), "%s", v);
        }
    }
    fclose(f);
    if (!g_my.host[0] || g_my.port <= 0 || !g_my.user[0] || !g_my.socket[0]) {
        fprintf(stderr, "test_registry mysql: %s lacks host, port, user or socket\n", path);
        return -1;
    }
    return 0;
}

int
harness_setup(const char *backend)
{
    if (strcmp(backend, "sqlite") == 0) {
        const char *base = getenv("TMPDIR");
        g_kind = REG_SQLITE;
        snprintf(g_tmpdir, sizeof(g_tmpdir), "%s/roster-test-XXXXXX",
                 base && *base ? base : "/tmp");
        if (!mkdtemp(g_tmpdir)) {
            fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
            return -1;
        }
        return 0;
    }
    if (strcmp(backend, "mysql") == 0) {
        g_kind = REG_MYSQL;
        g_mysql = true;
        if (load_mysql_env() != 0) {
            return -1;
        }
        g_admin = my_connect(NULL);
        return g_admin ? 0 : -1;
    }
    fprintf(stderr, "usage: test_registry sqlite|mysql\n");
    return -1;
}

void
harness_cleanup(void)
{
    if (g_admin) {
        mysql_close(g_admin);
        g_admin = NULL;
    }
    if (g_tmpdir[0]) {
        rmdir(g_tmpdir);
    }
}
