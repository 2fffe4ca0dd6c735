/* SPDX-License-Identifier: MIT
 *
 * test_registry.c - the registry suite: the same cases against one backend,
 *
 *     test_registry sqlite
 *     test_registry mysql     (needs $ROSTER_TEST_MARIADB_ENV, see below)
 *
 * Every case gets a fresh database (reg_harness.c): SQLite a new file in a
 * private mkdtemp directory (some cases also run on ":memory:NAME"), MySQL
 * a new database roster_t_<pid>_<n> created through a setup connection and
 * dropped after the case. Raw SQL (a plain sqlite3 / MYSQL handle on the
 * same database) checks what the library cannot show, creates DB-GPT's own
 * table, holds locks, and injects faults (KILL of the store's connection).
 *
 * MySQL settings come from the file named by ROSTER_TEST_MARIADB_ENV
 * (written by tests/lib/mariadb.sh start): KEY=VALUE lines
 * ROSTER_TEST_MYSQL_{HOST,PORT,USER,PASSWORD,SOCKET}. Without it the
 * suite fails: the MySQL cases are never skipped.
 */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "reg_harness.h"
#include "reg_migrations.h"

/* ---- cases: migrations ------------------------------------------------------------- */

/* How many migrations sql/<backend>/ has (embedded at build time). */
static long long
n_migrations(void)
{
    const struct reg_migration *m =
        g_kind == REG_MYSQL ? reg_migrations_mysql : reg_migrations_sqlite;
    long long n = 0;

    while (m[n].version) {
        n++;
    }
    return n;
}

static void
t_migrate_empty(void)
{
    struct reg_store *st = open_store();
    long long cols = 0;

    CHECK(st);
    CHECK_EQ_INT(reg_migrate(st), REG_OK);
    CHECK_SQL_INT("SELECT COUNT(*) FROM roster_schema_migrations", n_migrations());
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE, 0);
    if (g_kind == REG_MYSQL) {
        /* upserts burn AUTO_INCREMENT values: id must be 64-bit (0003) */
        CHECK_SQL_INT("SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA ="
                      " DATABASE() AND TABLE_NAME = '" TABLE "' AND COLUMN_NAME = 'id' AND"
                      " DATA_TYPE = 'bigint'",
                      1);
    }
    CHECK(raw_int(column_count_sql(), &cols) == 0);
    CHECK_EQ_INT(cols, 20); /* DB-GPT's 14 + roster's 6 */
    CHECK_EQ_INT(reg_migrate(st), REG_OK);
    CHECK_SQL_INT("SELECT COUNT(*) FROM roster_schema_migrations", n_migrations());
    CHECK_SQL_INT(column_count_sql(), cols);

    struct reg_instance in = mk("m@llm", "127.0.0.1", 8001);
    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &in), REG_OK);
    CHECK_EQ_INT(reg_migrate(st), REG_OK);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE, 1);
    CHECK_EQ_INT(reg_ping(st), REG_OK);
}

struct migrator {
    struct reg_store *st;
    pthread_barrier_t *bar;
    int rc;
    char err[256];
};

static void *
migrate_thread(void *arg)
{
    struct migrator *m = arg;

    pthread_barrier_wait(m->bar);
    m->rc = reg_migrate(m->st);
    snprintf(m->err, sizeof(m->err), "%s", reg_errmsg(m->st));
    reg_thread_end();
    return NULL;
}

/* Two stores migrate at once; returns the number that failed. */
static int
migrate_pair(struct reg_store *a, struct reg_store *b)
{
    pthread_barrier_t bar;
    struct migrator m[2] = {{.st = a, .bar = &bar}, {.st = b, .bar = &bar}};
    pthread_t t[2];
    int failed = 0;

    pthread_barrier_init(&bar, NULL, 2);
    for (int i = 0; i < 2; i++) {
        pthread_create(&t[i], NULL, migrate_thread, &m[i]);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        if (m[i].rc != REG_OK) {
            fprintf(stderr, "concurrent reg_migrate: %s: %s\n", reg_strerror(m[i].rc), m[i].err);
            failed++;
        }
    }
    pthread_barrier_destroy(&bar);
    return failed;
}

static void
t_migrate_concurrent(void)
{
    struct reg_store *a = open_store();
    struct reg_store *b = open_store();

    CHECK(a && b);
    CHECK_EQ_INT(migrate_pair(a, b), 0); /* both on an empty database */
    CHECK_SQL_INT("SELECT COUNT(*) FROM roster_schema_migrations", n_migrations());
    CHECK_SQL_INT(column_count_sql(), 20);
    CHECK_EQ_INT(migrate_pair(a, b), 0); /* and again: nothing to do */
    CHECK_SQL_INT("SELECT COUNT(*) FROM roster_schema_migrations", n_migrations());
    CHECK_SQL_INT(column_count_sql(), 20);
}

/* DB-GPT's DDL, as DB-GPT itself creates the table (MySQL: its schema file,
 * DATETIME without fractions; SQLite: SQLAlchemy's CREATE TABLE). */
static const char dbgpt_mysql_ddl[] =
    "CREATE TABLE `dbgpt_cluster_registry_instance` (\n"
    "  `id` int(11) NOT NULL AUTO_INCREMENT COMMENT 'Auto increment id',\n"
    "  `model_name` varchar(128) NOT NULL COMMENT 'Model name',\n"
    "  `host` varchar(128) NOT NULL COMMENT 'Host of the model',\n"
    "  `port` int(11) NOT NULL COMMENT 'Port of the model',\n"
    "  `weight` float DEFAULT 1.0 COMMENT 'Weight of the model',\n"
    "  `check_healthy` tinyint(1) DEFAULT 1 COMMENT 'Whether to check the health of the model',\n"
    "  `healthy` tinyint(1) DEFAULT 0 COMMENT 'Whether the model is healthy',\n"
    "  `enabled` tinyint(1) DEFAULT 1 COMMENT 'Whether the model is enabled',\n"
    "  `prompt_template` varchar(128) DEFAULT NULL COMMENT 'Prompt template for the model "
    "instance',\n"
    "  `last_heartbeat` datetime DEFAULT NULL COMMENT 'Last heartbeat time of the model "
    "instance',\n"
    "  `user_name` varchar(128) DEFAULT NULL COMMENT 'User name',\n"
    "  `sys_code` varchar(128) DEFAULT NULL COMMENT 'System code',\n"
    "  `gmt_created` datetime DEFAULT CURRENT_TIMESTAMP COMMENT 'Record creation time',\n"
    "  `gmt_modified` datetime DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP COMMENT "
    "'Record update time',\n"
    "  PRIMARY KEY (`id`),\n"
    "  UNIQUE KEY `uk_model_instance` (`model_name`, `host`, `port`, `sys_code`)\n"
    ") ENGINE=InnoDB AUTO_INCREMENT=1 DEFAULT CHARSET=utf8mb4 COMMENT='Cluster model instance "
    "table, for registering and managing model instances'";

static const char dbgpt_sqlite_ddl[] = "CREATE TABLE dbgpt_cluster_registry_instance (\n"
                                       "\tid INTEGER NOT NULL, \n"
                                       "\tmodel_name VARCHAR(128) NOT NULL, \n"
                                       "\thost VARCHAR(128) NOT NULL, \n"
                                       "\tport INTEGER NOT NULL, \n"
                                       "\tweight FLOAT, \n"
                                       "\tcheck_healthy BOOLEAN, \n"
                                       "\thealthy BOOLEAN, \n"
                                       "\tenabled BOOLEAN, \n"
                                       "\tprompt_template VARCHAR(128), \n"
                                       "\tlast_heartbeat DATETIME, \n"
                                       "\tuser_name VARCHAR(128), \n"
                                       "\tsys_code VARCHAR(128), \n"
                                       "\tgmt_created DATETIME, \n"
                                       "\tgmt_modified DATETIME, \n"
                                       "\tPRIMARY KEY (id), \n"
                                       "\tCONSTRAINT uk_model_instance UNIQUE (model_name, host, "
                                       "port, sys_code)\n"
                                       ")";

#define DBGPT_COLS                                                                                 \
    "INSERT INTO " TABLE " (model_name, host, port, weight, check_healthy, healthy, enabled,"      \
    " prompt_template, last_heartbeat, user_name, sys_code, gmt_created, gmt_modified) VALUES "

static const char dbgpt_mysql_rows[] =
    DBGPT_COLS "('dbgpt@llm', '10.1.1.1', 8001, 1.0, 1, 1, 1, NULL, UTC_TIMESTAMP(), NULL, NULL,"
               " UTC_TIMESTAMP(), UTC_TIMESTAMP()),"
               " ('dbgpt-null@llm', '10.1.1.2', 8002, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
               " NULL, NULL, NULL)";

static const char dbgpt_sqlite_rows[] =
    DBGPT_COLS "('dbgpt@llm', '10.1.1.1', 8001, 1.0, 1, 1, 1, NULL,"
               " strftime('%Y-%m-%d %H:%M:%S', 'now') || '.000000', NULL, NULL,"
               " strftime('%Y-%m-%d %H:%M:%S', 'now') || '.000000',"
               " strftime('%Y-%m-%d %H:%M:%S', 'now') || '.000000'),"
               " ('dbgpt-null@llm', '10.1.1.2', 8002, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
               " NULL, NULL, NULL)";

static void
t_dbgpt_table(void)
{
    struct reg_store *st = NULL;
    struct reg_instance dg = mk("dbgpt@llm", "10.1.1.1", 8001);
    struct reg_instance other = mk("roster@llm", "10.1.1.3", 8003);
    const struct reg_instance *r;
    int n_dg = 0;

    CHECK(raw_exec(g_mysql ? dbgpt_mysql_ddl : dbgpt_sqlite_ddl) == 0);
    CHECK(raw_exec(g_mysql ? dbgpt_mysql_rows : dbgpt_sqlite_rows) == 0);
    st = open_store();
    CHECK(st);
    CHECK_EQ_INT(reg_migrate(st), REG_OK);
    CHECK_SQL_INT(column_count_sql(), 20);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE, 2);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE " WHERE sys_code IS NULL", 2);

    /* DB-GPT's rows read back with DB-GPT's defaults for NULL columns */
    CHECK_EQ_INT(list_rows(st, -1, NULL), REG_OK);
    CHECK_EQ_INT(g_rows.n, 2);
    r = find("dbgpt@llm", "10.1.1.1", 8001);
    CHECK(r);
    CHECK(r->healthy && r->enabled && r->check_healthy && r->weight == 1.0);
    CHECK(r->has_last_heartbeat);
    CHECK(r->age_ms < 3000);
    CHECK(!r->has_prompt_template && !r->has_weight_override);
    CHECK_EQ_INT(r->lease_ms, 0);
    CHECK_EQ_INT(r->updated_ms, 0);
    r = find("dbgpt-null@llm", "10.1.1.2", 8002);
    CHECK(r);
    CHECK(r->weight == 1.0 && r->check_healthy && !r->healthy && r->enabled);
    CHECK(!r->has_last_heartbeat && !r->has_prompt_template);

    /* roster writes beside them */
    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &other), REG_OK);
    CHECK_EQ_INT(apply1(st, REG_OP_HEARTBEAT, &other), REG_OK);
    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &dg), REG_OK);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE, 4);
    CHECK_EQ_INT(list_rows(st, -1, NULL), REG_OK);
    CHECK_EQ_INT(g_rows.n, 4);
    for (size_t i = 0; i < g_rows.n; i++) {
        n_dg += strcmp(g_rows.v[i].model_name, "dbgpt@llm") == 0;
    }
    CHECK_EQ_INT(n_dg, 2); /* the NULL and the '' sys_code rows */
    r = find("roster@llm", "10.1.1.3", 8003);
    CHECK(r && r->healthy && r->updated_ms > 0);

    /* deregister reaches both rows of the instance */
    CHECK_EQ_INT(apply1(st, REG_OP_DEREGISTER, &dg), REG_OK);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE " WHERE model_name = 'dbgpt@llm' AND healthy = 0",
                  2);
    CHECK_EQ_INT(apply1(st, REG_OP_HEARTBEAT, &dg), REG_OK);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE " WHERE model_name = 'dbgpt@llm' AND healthy = 1"
                  " AND sys_code = ''",
                  1);
}

static void
t_schema_missing(void)
{
    struct reg_store *st = open_store();
    struct reg_instance in = mk("m@llm", "h", 1);
    struct reg_op op = op_of(REG_OP_REGISTER, &in);
    int64_t now = 0;

    CHECK(st);
    CHECK_EQ_INT(reg_apply(st, &op, 1), REG_ESCHEMA);
    CHECK_EQ_INT(reg_list(st, -1, collect_cb, NULL, &now, NULL), REG_ESCHEMA);
    CHECK(strlen(reg_errmsg(st)) > 0);
    CHECK_EQ_INT(reg_migrate(st), REG_OK);
    CHECK_EQ_INT(reg_apply(st, &op, 1), REG_OK);
}

/* ---- cases: writes and reads ------------------------------------------------------ */

static void
t_register_list(void)
{
    struct reg_store *st = open_migrated();
    struct reg_instance a = mk("模型-ü-€@llm", "10.0.0.1", 8001);
    struct reg_instance b = mk("embed@text2vec", "host-b.example", 65535);
    struct reg_op ops[2];
    const struct reg_instance *r;
    int64_t now = 0;
    int64_t t0 = wall_ms();

    CHECK(st);
    a.weight = 2.5;
    set_template(&a, "vicuna_v1.1");
    a.lease_ms = 15000;
    a.in_flight = 3;
    a.queue_length = 4;
    a.capacity = 8;
    b.weight = 0;
    b.enabled = false;
    b.check_healthy = false;
    ops[0] = op_of(REG_OP_REGISTER, &a);
    ops[1] = op_of(REG_OP_REGISTER, &b);
    CHECK_EQ_INT(reg_apply(st, ops, 2), REG_OK);
    CHECK_EQ_INT(ops[0].rc, REG_OK);
    CHECK_EQ_INT(list_rows(st, -1, &now), REG_OK);
    CHECK_EQ_INT(g_rows.n, 2);
    CHECK(llabs(now - t0) < 60000); /* the database clock, on this machine */

    r = find(a.model_name, "10.0.0.1", 8001);
    CHECK(r);
    CHECK_EQ_STR(r->model_name, "模型-ü-€@llm");
    CHECK(r->weight == 2.5);
    CHECK(r->has_prompt_template);
    CHECK_EQ_STR(r->prompt_template, "vicuna_v1.1");
    CHECK(r->enabled && r->check_healthy && r->healthy);
    CHECK(!r->has_weight_override);
    CHECK(reg_instance_weight(r) == 2.5);
    CHECK_EQ_INT(r->lease_ms, 15000);
    CHECK_EQ_INT(r->in_flight, 3);
    CHECK_EQ_INT(r->queue_length, 4);
    CHECK_EQ_INT(r->capacity, 8);
    CHECK(r->has_last_heartbeat);
    CHECK(r->age_ms >= 0 && r->age_ms < 2000);
    CHECK_EQ_INT(r->age_ms, now - r->last_heartbeat_ms);
    CHECK(r->updated_ms > 0 && r->updated_ms <= now && now - r->updated_ms < 2000);

    r = find("embed@text2vec", "host-b.example", 65535);
    CHECK(r);
    CHECK(r->weight == 0 && !r->enabled && !r->check_healthy && r->healthy);
    CHECK(!r->has_prompt_template);
    CHECK(r->has_last_heartbeat && r->age_ms < 2000 && r->updated_ms > 0);

    /* sys_code is '' (never NULL), last_heartbeat is UTC */
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE " WHERE sys_code = ''", 2);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE " WHERE sys_code IS NULL", 0);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE " WHERE user_name IS NULL", 2);
    if (g_mysql) {
        CHECK(raw_exec("SET time_zone = '+05:00'") == 0); /* the raw session's zone is irrelevant */
        CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE " WHERE ABS(TIMESTAMPDIFF(SECOND,"
                      " last_heartbeat, UTC_TIMESTAMP())) < 5",
                      2);
    } else {
        CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE " WHERE ABS(julianday(last_heartbeat)"
                      " - julianday('now')) * 86400 < 5",
                      2);
    }
}

static void
t_register_twice(void)
{
    struct reg_store *st = open_migrated();
    struct reg_instance in = mk("twice@llm", "10.0.0.2", 8001);
    struct reg_instance got;
    int op_rc = 0;

    CHECK(st);
    set_template(&in, "t1");
    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &in), REG_OK);
    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &in), REG_OK);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE, 1);

    CHECK_EQ_INT(admin(st, &in, REG_WEIGHT_SET, 0.5, 0, &op_rc), REG_OK);
    CHECK_EQ_INT(op_rc, REG_OK);
    in.weight = 3;
    in.enabled = true;        /* ignored on update */
    in.check_healthy = false; /* ignored on update */
    set_template(&in, "t2");
    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &in), REG_OK);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE, 1);
    CHECK(get(st, &in, &got) == 0);
    CHECK(got.weight == 3);
    CHECK(!got.enabled);
    CHECK(got.check_healthy);
    CHECK(got.has_weight_override && got.weight_override == 0.5);
    CHECK(reg_instance_weight(&got) == 0.5);
    CHECK_EQ_STR(got.prompt_template, "t2");

    in.has_prompt_template = false; /* no template: keep the stored one */
    in.weight = 0.1;                /* DB-GPT's MySQL column is a FLOAT */
    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &in), REG_OK);
    CHECK(get(st, &in, &got) == 0);
    CHECK(got.has_prompt_template);
    CHECK_EQ_STR(got.prompt_template, "t2");
    CHECK(got.weight == 0.1);
}

static void
t_heartbeat(void)
{
    struct reg_store *st = open_migrated();
    struct reg_store *tiny = NULL;
    struct reg_config c;
    struct reg_instance in = mk("hb@llm", "10.0.0.3", 8001);
    struct reg_instance got, before;
    int op_rc = 0;

    CHECK(st);
    base_cfg(&c);
    c.default_lease_ms = 1;
    tiny = open_cfg(&c);
    CHECK(tiny);

    /* an unknown instance is registered on the spot */
    in.weight = 2;
    set_template(&in, "tp");
    CHECK_EQ_INT(apply1(st, REG_OP_HEARTBEAT, &in), REG_OK);
    CHECK(get(st, &in, &got) == 0);
    CHECK(got.healthy && got.enabled && got.weight == 2 && got.updated_ms > 0);
    CHECK_EQ_STR(got.prompt_template, "tp");

    /* keeps the override and the enabled flag; updates lease and load only */
    CHECK_EQ_INT(admin(st, &in, REG_WEIGHT_SET, 0.25, 0, &op_rc), REG_OK);
    in.weight = 9;
    in.enabled = true;
    in.check_healthy = false;
    set_template(&in, "other");
    in.lease_ms = 7000;
    in.in_flight = 5;
    in.queue_length = 6;
    in.capacity = 7;
    CHECK_EQ_INT(apply1(st, REG_OP_HEARTBEAT, &in), REG_OK);
    CHECK(get(st, &in, &got) == 0);
    CHECK(got.has_weight_override && got.weight_override == 0.25);
    CHECK(!got.enabled && got.check_healthy && got.weight == 2);
    CHECK_EQ_STR(got.prompt_template, "tp");
    CHECK_EQ_INT(got.lease_ms, 7000);
    CHECK_EQ_INT(got.in_flight, 5);
    CHECK_EQ_INT(got.queue_length, 6);
    CHECK_EQ_INT(got.capacity, 7);

    /* a heartbeat of a live instance does not touch updated_ms */
    before = got;
    sleep_ms(30);
    CHECK_EQ_INT(apply1(st, REG_OP_HEARTBEAT, &in), REG_OK);
    CHECK(get(st, &in, &got) == 0);
    CHECK_EQ_INT(got.updated_ms, before.updated_ms);
    CHECK(got.last_heartbeat_ms > before.last_heartbeat_ms);

    /* deregister bumps it, and the heartbeat that revives the instance too */
    sleep_ms(30);
    CHECK_EQ_INT(apply1(st, REG_OP_DEREGISTER, &in), REG_OK);
    CHECK(get(st, &in, &got) == 0);
    CHECK(!got.healthy && got.updated_ms > before.updated_ms);
    before = got;
    sleep_ms(30);
    CHECK_EQ_INT(apply1(st, REG_OP_HEARTBEAT, &in), REG_OK);
    CHECK(get(st, &in, &got) == 0);
    CHECK(got.healthy && got.updated_ms > before.updated_ms);

    /* an expired declared lease: the heartbeat revives, so it bumps */
    struct reg_instance l = mk("lease@llm", "10.0.0.3", 8002);
    l.lease_ms = 1;
    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &l), REG_OK);
    CHECK(get(st, &l, &before) == 0);
    sleep_ms(50);
    CHECK_EQ_INT(apply1(st, REG_OP_HEARTBEAT, &l), REG_OK);
    CHECK(get(st, &l, &got) == 0);
    CHECK(got.updated_ms > before.updated_ms);

    /* no declared lease: the store's default decides */
    struct reg_instance d = mk("default@llm", "10.0.0.3", 8003);
    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &d), REG_OK);
    CHECK(get(st, &d, &before) == 0);
    sleep_ms(50);
    CHECK_EQ_INT(apply1(st, REG_OP_HEARTBEAT, &d), REG_OK); /* 60 s default: alive */
    CHECK(get(st, &d, &got) == 0);
    CHECK_EQ_INT(got.updated_ms, before.updated_ms);
    sleep_ms(50);
    CHECK_EQ_INT(apply1(tiny, REG_OP_HEARTBEAT, &d), REG_OK); /* 1 ms default: expired */
    CHECK(get(st, &d, &got) == 0);
    CHECK(got.updated_ms > before.updated_ms);
}

static void
t_deregister_remove_admin(void)
{
    struct reg_store *st = open_migrated();
    struct reg_instance x = mk("x@llm", "10.0.0.4", 8001);
    struct reg_instance y = mk("y@llm", "10.0.0.4", 8002);
    struct reg_instance ghost = mk("ghost@llm", "10.0.0.4", 9);
    struct reg_instance got, before;
    struct reg_op ops[2];
    int op_rc = 0;

    CHECK(st);
    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &x), REG_OK);
    CHECK(get(st, &x, &before) == 0);
    sleep_ms(20);
    CHECK_EQ_INT(apply1(st, REG_OP_DEREGISTER, &x), REG_OK);
    CHECK(get(st, &x, &got) == 0);
    CHECK(!got.healthy && got.updated_ms > before.updated_ms);

    ops[0] = op_of(REG_OP_DEREGISTER, &ghost); /* unknown: not an error */
    ops[1] = op_of(REG_OP_REMOVE, &ghost);
    CHECK_EQ_INT(reg_apply(st, ops, 2), REG_OK);
    CHECK_EQ_INT(ops[0].rc, REG_OK);
    CHECK_EQ_INT(ops[1].rc, REG_OK);
    CHECK_EQ_INT(apply1(st, REG_OP_REMOVE, &x), REG_OK);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE, 0);

    CHECK_EQ_INT(admin(st, &ghost, REG_WEIGHT_SET, 1, 1, &op_rc), REG_OK);
    CHECK_EQ_INT(op_rc, REG_ENOTFOUND);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE, 0);

    y.weight = 4;
    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &y), REG_OK);
    CHECK_EQ_INT(admin(st, &y, REG_WEIGHT_SET, 0.25, -1, &op_rc), REG_OK);
    CHECK_EQ_INT(op_rc, REG_OK);
    CHECK(get(st, &y, &got) == 0);
    CHECK(got.has_weight_override && got.weight_override == 0.25 && got.enabled);
    CHECK(reg_instance_weight(&got) == 0.25);
    CHECK_EQ_INT(admin(st, &y, REG_WEIGHT_KEEP, 0, 0, &op_rc), REG_OK);
    CHECK(get(st, &y, &got) == 0);
    CHECK(got.has_weight_override && got.weight_override == 0.25 && !got.enabled);
    CHECK_EQ_INT(admin(st, &y, REG_WEIGHT_CLEAR, 0, 1, &op_rc), REG_OK);
    CHECK(get(st, &y, &got) == 0);
    CHECK(!got.has_weight_override && got.enabled);
    CHECK(reg_instance_weight(&got) == 4);

    /* a no-change admin op still finds its row (matched, not changed, rows) */
    ops[0] = op_of(REG_OP_ADMIN, &y);
    ops[0].admin_enabled = 0;
    ops[1] = ops[0];
    ops[0].rc = ops[1].rc = 12345;
    CHECK_EQ_INT(reg_apply(st, ops, 2), REG_OK);
    CHECK_EQ_INT(ops[0].rc, REG_OK);
    CHECK_EQ_INT(ops[1].rc, REG_OK);
    ops[0] = op_of(REG_OP_ADMIN, &ghost);
    ops[1] = op_of(REG_OP_ADMIN, &y);
    CHECK_EQ_INT(reg_apply(st, ops, 2), REG_OK);
    CHECK_EQ_INT(ops[0].rc, REG_ENOTFOUND);
    CHECK_EQ_INT(ops[1].rc, REG_OK);

    struct reg_instance w = mk("w@llm", "h", 1);
    w.weight = 2;
    CHECK(reg_instance_weight(&w) == 2);
    w.has_weight_override = true;
    w.weight_override = 0;
    CHECK(reg_instance_weight(&w) == 0);
}

static int
stop_after_one(const struct reg_instance *in, void *arg)
{
    (void)in;
    (*(int *)arg)++;
    return 1;
}

static void
t_list_since(void)
{
    struct reg_store *st = open_migrated();
    struct reg_instance a = mk("a@llm", "10.0.0.5", 8001);
    struct reg_instance b = mk("b@llm", "10.0.0.5", 8002);
    struct reg_instance ga, gb;
    int64_t now = 0, t1 = 0;
    int calls = 0;

    CHECK(st);
    /* an empty table still yields the database's clock */
    CHECK_EQ_INT(list_rows(st, -1, &now), REG_OK);
    CHECK_EQ_INT(g_rows.n, 0);
    CHECK(now > 0 && llabs(now - wall_ms()) < 60000);
    now = 0;
    CHECK_EQ_INT(list_rows(st, 0, &now), REG_OK);
    CHECK(now > 0);

    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &a), REG_OK);
    sleep_ms(30);
    CHECK_EQ_INT(list_rows(st, -1, &t1), REG_OK);
    CHECK_EQ_INT(g_rows.n, 1);
    ga = g_rows.v[0];
    CHECK(t1 > ga.updated_ms);
    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &b), REG_OK);
    CHECK(get(st, &b, &gb) == 0);
    CHECK_EQ_INT(list_rows(st, t1, NULL), REG_OK);
    CHECK_EQ_INT(g_rows.n, 1);
    CHECK_EQ_STR(g_rows.v[0].model_name, "b@llm");
    CHECK_EQ_INT(list_rows(st, ga.updated_ms, NULL), REG_OK); /* >= */
    CHECK_EQ_INT(g_rows.n, 2);
    CHECK_EQ_INT(list_rows(st, 0, NULL), REG_OK);
    CHECK_EQ_INT(g_rows.n, 2);
    now = 0;
    CHECK_EQ_INT(list_rows(st, gb.updated_ms + 1, &now), REG_OK);
    CHECK_EQ_INT(g_rows.n, 0);
    CHECK(now >= gb.updated_ms);

    /* age is the database's now minus the heartbeat, and it grows */
    CHECK(get(st, &a, &ga) == 0);
    sleep_ms(1200);
    CHECK_EQ_INT(list_rows(st, -1, &now), REG_OK);
    const struct reg_instance *r = find("a@llm", "10.0.0.5", 8001);
    CHECK(r);
    CHECK_EQ_INT(r->age_ms, now - r->last_heartbeat_ms);
    CHECK(r->age_ms - ga.age_ms >= 1000 && r->age_ms - ga.age_ms < 10000);
    CHECK_EQ_INT(r->last_heartbeat_ms, ga.last_heartbeat_ms);

    /* a callback that stops early */
    CHECK_EQ_INT(reg_list(st, -1, stop_after_one, &calls, &now, NULL), REG_OK);
    CHECK_EQ_INT(calls, 1);

    /* the table's row count, for partial reads too: a deletion shows as a
     * count below what the reader holds */
    int64_t total = -1;
    CHECK_EQ_INT(reg_list(st, -1, collect_cb, NULL, &now, &total), REG_OK);
    CHECK_EQ_INT(total, 2);
    CHECK_EQ_INT(reg_list(st, now + 60000, collect_cb, NULL, &now, &total), REG_OK);
    CHECK_EQ_INT(total, 2);
    CHECK_EQ_INT(raw_exec("DELETE FROM dbgpt_cluster_registry_instance WHERE model_name = 'a@llm'"),
                 0);
    CHECK_EQ_INT(reg_list(st, now + 60000, collect_cb, NULL, &now, &total), REG_OK);
    CHECK_EQ_INT(total, 1);
}

/* reg_list_rows: the store's own array, exact on every call (a second full
 * read is not appended to the first), and a full read of a table that
 * shrank gives back the memory it no longer needs without losing a row. */
static void
t_list_rows(void)
{
    struct reg_store *st = open_migrated();
    const struct reg_row *rows = NULL;
    struct reg_op *ops = calloc(3000, sizeof(*ops));
    struct reg_instance in;
    size_t n = 99;
    int64_t now = 0, total = 0;

    CHECK(st && ops);
    CHECK_EQ_INT(reg_list_rows(st, -1, -1, &rows, &n, &now, &total), REG_OK);
    CHECK_EQ_INT(n, 0);
    CHECK(now > 0);
    for (int i = 0; i < 3000; i++) {
        char host[32];
        snprintf(host, sizeof(host), "10.1.%d.%d", i / 250, i % 250);
        in = mk(i < 10 ? "keep@llm" : "bulk@llm", host, 8000);
        ops[i] = op_of(REG_OP_REGISTER, &in);
    }
    CHECK_EQ_INT(reg_apply(st, ops, 3000), REG_OK);
    for (int k = 0; k < 2; k++) {
        CHECK_EQ_INT(reg_list_rows(st, -1, -1, &rows, &n, &now, &total), REG_OK);
        CHECK_EQ_INT(n, 3000);
        CHECK_EQ_INT(total, 3000);
    }
    size_t keep = 0;
    for (size_t i = 0; i < n; i++) {
        keep += strcmp(rows[i].model_name, "keep@llm") == 0;
    }
    CHECK_EQ_INT(keep, 10);
    /* a poll finds nothing new */
    CHECK_EQ_INT(reg_list_rows(st, now + 60000, -1, &rows, &n, &now, &total), REG_OK);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(total, 3000);
    CHECK_EQ_INT(
        raw_exec("DELETE FROM dbgpt_cluster_registry_instance WHERE model_name = 'bulk@llm'"), 0);
    CHECK_EQ_INT(reg_list_rows(st, -1, -1, &rows, &n, &now, &total), REG_OK);
    CHECK_EQ_INT(n, 10);
    CHECK_EQ_INT(total, 10);
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_STR(rows[i].model_name, "keep@llm");
        CHECK_EQ_INT(rows[i].port, 8000);
    }
    /* reg_list on the same store still sees every row */
    CHECK_EQ_INT(list_rows(st, -1, &now), REG_OK);
    CHECK_EQ_INT(g_rows.n, 10);
    free(ops);
}

/* A long string for row i: `len` bytes, unique per (i, tag). */
static void
long_text(char *out, size_t len, int i, char tag)
{
    memset(out, tag, len);
    snprintf(out, 16, "%c%05d-", tag, i);
    out[7] = tag; /* snprintf's NUL */
    out[len] = '\0';
}

/* Compact rows (registry.h struct reg_row): every string read back exact,
 * at the column limits too, through the many string blocks of a large read,
 * on a second read that reuses the blocks, and after a full read of a
 * table that shrank gave the spare ones back; a NULL template stays NULL
 * and an empty one "". */
static void
t_list_rows_strings(void)
{
    enum { N = 1500 };
    struct reg_store *st = open_migrated();
    const struct reg_row *rows = NULL;
    struct reg_op *ops = calloc(N, sizeof(*ops));
    size_t n = 0;
    int64_t now = 0, total = 0;
    char model_a[REG_NAME_MAX + 1], model_b[REG_NAME_MAX + 1];

    CHECK(st && ops);
    long_text(model_a, REG_NAME_MAX, 0, 'a');
    model_a[REG_NAME_MAX - 4] = '@';
    long_text(model_b, REG_NAME_MAX, 1, 'b');
    model_b[REG_NAME_MAX - 4] = '@';
    for (int i = 0; i < N; i++) {
        struct reg_instance in = mk(i % 3 ? model_a : model_b, "h", 1 + i);
        long_text(in.host, REG_HOST_MAX, i, 'h');
        in.has_prompt_template = i % 4 != 0;
        if (i % 4 == 1) {
            long_text(in.prompt_template, REG_TEMPLATE_MAX, i, 't');
        } else if (i % 4 == 2) {
            snprintf(in.prompt_template, sizeof(in.prompt_template), "tmpl %d", i);
        }
        ops[i] = op_of(REG_OP_REGISTER, &in);
    }
    CHECK_EQ_INT(reg_apply(st, ops, N), REG_OK);
    for (int pass = 0; pass < 3; pass++) {
        if (pass == 2) {
            CHECK_EQ_INT(raw_exec("DELETE FROM dbgpt_cluster_registry_instance WHERE port > 40"),
                         0);
        }
        CHECK_EQ_INT(reg_list_rows(st, -1, -1, &rows, &n, &now, &total), REG_OK);
        CHECK_EQ_INT(n, pass == 2 ? 40 : N);
        size_t seen = 0;
        for (size_t k = 0; k < n; k++) {
            const struct reg_row *r = &rows[k];
            const struct reg_instance *want = NULL;
            for (int i = 0; i < N && !want; i++) {
                if (ops[i].inst.port == r->port) {
                    want = &ops[i].inst;
                }
            }
            CHECK(want != NULL);
            if (!want) {
                continue;
            }
            seen++;
            CHECK_EQ_STR(r->model_name, want->model_name);
            CHECK_EQ_STR(r->host, want->host);
            CHECK_EQ_INT(r->has_prompt_template, want->has_prompt_template);
            if (want->has_prompt_template) {
                CHECK(r->prompt_template != NULL);
                CHECK_EQ_STR(r->prompt_template ? r->prompt_template : "(null)",
                             want->prompt_template);
            } else {
                CHECK(r->prompt_template == NULL);
            }
            struct reg_instance back;
            reg_row_to_instance(&back, r);
            CHECK_EQ_STR(back.host, want->host);
            CHECK_EQ_STR(back.model_name, want->model_name);
            CHECK_EQ_STR(back.prompt_template,
                         want->has_prompt_template ? want->prompt_template : "");
        }
        CHECK_EQ_INT(seen, n);
    }
    free(ops);
}

static void
t_batch(void)
{
    struct reg_store *st = open_migrated();
    struct reg_instance x = mk("x@llm", "10.0.0.6", 8001);
    struct reg_instance y = mk("y@llm", "10.0.0.6", 8002);
    struct reg_instance z = mk("z@llm", "10.0.0.6", 8003);
    struct reg_instance got;
    struct reg_op ops[5];
    char name[64];

    CHECK(st);
    /* order across kinds is kept */
    ops[0] = op_of(REG_OP_REGISTER, &x);
    ops[1] = op_of(REG_OP_DEREGISTER, &x);
    ops[2] = op_of(REG_OP_DEREGISTER, &y);
    ops[3] = op_of(REG_OP_HEARTBEAT, &y);
    CHECK_EQ_INT(reg_apply(st, ops, 4), REG_OK);
    CHECK(get(st, &x, &got) == 0);
    CHECK(!got.healthy);
    CHECK(get(st, &y, &got) == 0);
    CHECK(got.healthy);
    ops[0] = op_of(REG_OP_REGISTER, &z);
    ops[1] = op_of(REG_OP_DEREGISTER, &z);
    ops[2] = op_of(REG_OP_HEARTBEAT, &z);
    ops[3] = op_of(REG_OP_DEREGISTER, &x);
    ops[4] = op_of(REG_OP_REGISTER, &x);
    CHECK_EQ_INT(reg_apply(st, ops, 5), REG_OK);
    CHECK(get(st, &z, &got) == 0);
    CHECK(got.healthy);
    CHECK(get(st, &x, &got) == 0);
    CHECK(got.healthy);

    /* 500 heartbeats of distinct instances in one batch */
    for (int i = 0; i < BIG_BATCH; i++) {
        snprintf(name, sizeof(name), "bulk-%03d@llm", (i * 7919) % BIG_BATCH);
        struct reg_instance in = mk(name, "10.0.1.1", 9000 + i % 5);
        in.lease_ms = i + 1;
        g_big[i] = op_of(REG_OP_HEARTBEAT, &in);
    }
    CHECK_EQ_INT(reg_apply(st, g_big, BIG_BATCH), REG_OK);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE " WHERE model_name LIKE 'bulk-%' AND healthy = 1",
                  BIG_BATCH);
    CHECK_EQ_INT(list_rows(st, -1, NULL), REG_OK);
    CHECK_EQ_INT(g_rows.n, BIG_BATCH + 3);
    for (int i = 0; i < BIG_BATCH; i++) {
        const struct reg_instance *r =
            find(g_big[i].inst.model_name, g_big[i].inst.host, g_big[i].inst.port);
        CHECK(r && r->healthy && r->lease_ms == i + 1);
    }
}

static void
t_batch_duplicates(void)
{
    struct reg_store *st = open_migrated();
    struct reg_instance a1 = mk("dup-a@llm", "10.0.0.7", 8001);
    struct reg_instance a2, a3;
    struct reg_instance b = mk("dup-b@llm", "10.0.0.7", 8002);
    struct reg_instance c1 = mk("dup-c@llm", "10.0.0.7", 8003);
    struct reg_instance c2;
    struct reg_instance got;
    struct reg_op ops[4];
    char name[64];

    CHECK(st);
    /* three registers of one key: as if applied one after the other */
    a1.weight = 1;
    set_template(&a1, "T1");
    a1.lease_ms = 10;
    a1.enabled = false;
    a2 = a1;
    a2.weight = 3;
    a2.has_prompt_template = false;
    a2.lease_ms = 20;
    a2.enabled = true;
    a3 = a2;
    a3.weight = 2;
    a3.lease_ms = 30;
    ops[0] = op_of(REG_OP_REGISTER, &a1);
    ops[1] = op_of(REG_OP_REGISTER, &b);
    ops[2] = op_of(REG_OP_REGISTER, &a2);
    ops[3] = op_of(REG_OP_REGISTER, &a3);
    CHECK_EQ_INT(reg_apply(st, ops, 4), REG_OK);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE, 2);
    CHECK(get(st, &a1, &got) == 0);
    CHECK(got.weight == 2);
    CHECK_EQ_STR(got.prompt_template, "T1");
    CHECK_EQ_INT(got.lease_ms, 30);
    CHECK(!got.enabled); /* the insert's value; later registers never touch it */

    /* two heartbeats of a new key: the first inserts, the second updates */
    c1.weight = 7;
    c1.enabled = false;
    c1.lease_ms = 100;
    set_template(&c1, "c1");
    c2 = c1;
    c2.weight = 9;
    c2.enabled = true;
    c2.lease_ms = 200;
    c2.has_prompt_template = false;
    ops[0] = op_of(REG_OP_HEARTBEAT, &c1);
    ops[1] = op_of(REG_OP_HEARTBEAT, &c2);
    CHECK_EQ_INT(reg_apply(st, ops, 2), REG_OK);
    CHECK(get(st, &c1, &got) == 0);
    CHECK(got.weight == 7 && !got.enabled && got.healthy);
    CHECK_EQ_INT(got.lease_ms, 200);
    CHECK_EQ_STR(got.prompt_template, "c1");

    /* 130 heartbeats over 70 keys: duplicates across the 64-row chunks */
    for (int i = 0; i < 130; i++) {
        snprintf(name, sizeof(name), "chunk-%02d@llm", i % 70);
        struct reg_instance in = mk(name, "10.0.0.8", 8000);
        in.lease_ms = i;
        g_big[i] = op_of(REG_OP_HEARTBEAT, &in);
    }
    CHECK_EQ_INT(reg_apply(st, g_big, 130), REG_OK);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE " WHERE model_name LIKE 'chunk-%'", 70);
    CHECK_EQ_INT(list_rows(st, -1, NULL), REG_OK);
    for (int k = 0; k < 70; k++) {
        snprintf(name, sizeof(name), "chunk-%02d@llm", k);
        const struct reg_instance *r = find(name, "10.0.0.8", 8000);
        CHECK(r);
        CHECK_EQ_INT(r->lease_ms, k < 60 ? k + 70 : k);
    }
}

/* ---- cases: validation ------------------------------------------------------------ */

static void
t_validation(void)
{
    struct reg_store *st = open_migrated();
    struct reg_instance good = mk("ok@llm", "10.0.0.9", 8001);
    struct reg_instance bad[16];
    struct reg_op ops[2];
    int nbad = 0;

    CHECK(st);
    bad[nbad] = good; /* model_name 129 bytes (fills the array, no NUL) */
    memset(bad[nbad++].model_name, 'm', sizeof(good.model_name));
    bad[nbad] = good;
    memset(bad[nbad++].host, 'h', sizeof(good.host));
    bad[nbad] = good;
    bad[nbad++].model_name[0] = '\0';
    bad[nbad] = good;
    bad[nbad++].host[0] = '\0';
    bad[nbad] = good;
    bad[nbad++].port = 0;
    bad[nbad] = good;
    bad[nbad++].port = 65536;
    bad[nbad] = good;
    bad[nbad++].weight = -1;
    bad[nbad] = good;
    bad[nbad++].weight = NAN;
    bad[nbad] = good;
    bad[nbad++].weight = INFINITY;
    bad[nbad] = good;
    bad[nbad++].model_name[1] = '\x01';
    bad[nbad] = good;
    bad[nbad++].host[2] = '\n';
    bad[nbad] = good;
    bad[nbad++].model_name[0] = '\x7f';
    bad[nbad] = good;
    set_template(&bad[nbad++], "tab\there");
    bad[nbad] = good;
    bad[nbad++].lease_ms = -1;
    bad[nbad] = good;
    bad[nbad++].in_flight = -1;
    for (int i = 0; i < nbad; i++) {
        CHECK_EQ_INT(reg_instance_validate(&bad[i]), REG_EINVAL);
        ops[0] = op_of(REG_OP_REGISTER, &good);
        ops[1] = op_of(i % 2 ? REG_OP_HEARTBEAT : REG_OP_REGISTER, &bad[i]);
        if (reg_apply(st, ops, 2) != REG_EINVAL) {
            fprintf(stderr, "bad instance %d accepted\n", i);
            CHECK(0);
        }
    }
    ops[0] = op_of(REG_OP_ADMIN, &good);
    ops[0].admin_weight = REG_WEIGHT_SET;
    ops[0].admin_weight_value = NAN;
    CHECK_EQ_INT(reg_apply(st, ops, 1), REG_EINVAL);
    ops[0].admin_weight_value = -2;
    CHECK_EQ_INT(reg_apply(st, ops, 1), REG_EINVAL);
    ops[0] = op_of(REG_OP_ADMIN, &good);
    ops[0].admin_enabled = 2;
    CHECK_EQ_INT(reg_apply(st, ops, 1), REG_EINVAL);
    ops[0] = op_of((enum reg_op_kind)99, &good);
    CHECK_EQ_INT(reg_apply(st, ops, 1), REG_EINVAL);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE, 0);

    /* the limits themselves are accepted */
    struct reg_instance edge = good;
    memset(edge.model_name, 'm', REG_NAME_MAX);
    edge.model_name[REG_NAME_MAX] = '\0';
    memset(edge.host, 'h', REG_HOST_MAX);
    edge.host[REG_HOST_MAX] = '\0';
    memset(edge.prompt_template, 't', REG_TEMPLATE_MAX);
    edge.prompt_template[REG_TEMPLATE_MAX] = '\0';
    edge.has_prompt_template = true;
    edge.port = 65535;
    edge.weight = 0;
    CHECK_EQ_INT(reg_instance_validate(&edge), REG_OK);
    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &edge), REG_OK);
    CHECK_EQ_INT(list_rows(st, -1, NULL), REG_OK);
    CHECK_EQ_INT(g_rows.n, 1);
    CHECK_EQ_STR(g_rows.v[0].model_name, edge.model_name);
    CHECK_EQ_STR(g_rows.v[0].host, edge.host);
    CHECK_EQ_STR(g_rows.v[0].prompt_template, edge.prompt_template);
    CHECK_EQ_INT(reg_apply(st, ops, 0), REG_OK);
}

/* ---- cases: concurrency ----------------------------------------------------------- */

#define WRITERS 4
#define ROUNDS  50

struct writer {
    int id;
    struct reg_store *st;
    pthread_barrier_t *bar;
    int errors;
    char err[256];
};

static void *
writer_thread(void *arg)
{
    struct writer *w = arg;
    struct reg_instance shared = mk("shared@llm", "10.0.2.1", 8000);
    char name[64];

    pthread_barrier_wait(w->bar);
    for (int i = 0; i < ROUNDS; i++) {
        struct reg_op ops[3];
        snprintf(name, sizeof(name), "own-%d-%02d@llm", w->id, i);
        struct reg_instance own = mk(name, "10.0.2.2", 8000 + w->id);
        ops[0] = op_of(REG_OP_REGISTER, &shared);
        int rc = reg_apply(w->st, ops, 1);
        if (rc == REG_OK) {
            ops[0] = op_of(REG_OP_REGISTER, &own);
            ops[1] = op_of(REG_OP_REGISTER, &shared);
            ops[2] = op_of(REG_OP_HEARTBEAT, &shared);
            rc = reg_apply(w->st, ops, 3);
        }
        if (rc != REG_OK) {
            w->errors++;
            snprintf(w->err, sizeof(w->err), "%s: %s", reg_strerror(rc), reg_errmsg(w->st));
        }
    }
    reg_thread_end();
    return NULL;
}

static void
t_concurrency(void)
{
    struct reg_store *st = open_migrated();
    pthread_barrier_t bar;
    struct writer w[WRITERS];
    pthread_t t[WRITERS];
    int errors = 0;
    uint64_t retries = 0;
    char name[64];

    CHECK(st);
    pthread_barrier_init(&bar, NULL, WRITERS);
    for (int i = 0; i < WRITERS; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].id = i;
        w[i].bar = &bar;
        w[i].st = open_store();
    }
    for (int i = 0; i < WRITERS; i++) {
        if (!w[i].st) {
            pthread_barrier_destroy(&bar);
            CHECK(w[i].st);
        }
    }
    for (int i = 0; i < WRITERS; i++) {
        pthread_create(&t[i], NULL, writer_thread, &w[i]);
    }
    for (int i = 0; i < WRITERS; i++) {
        struct reg_stats s;
        pthread_join(t[i], NULL);
        reg_get_stats(w[i].st, &s);
        retries += s.retries;
        if (w[i].errors) {
            fprintf(stderr, "writer %d: %d errors, last: %s\n", i, w[i].errors, w[i].err);
        }
        errors += w[i].errors;
    }
    pthread_barrier_destroy(&bar);
    fprintf(stderr, "  (concurrency: %llu retries)\n", (unsigned long long)retries);
    CHECK_EQ_INT(errors, 0);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE " WHERE model_name = 'shared@llm'", 1);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE, 1 + WRITERS * ROUNDS);
    CHECK_EQ_INT(list_rows(st, -1, NULL), REG_OK);
    for (int i = 0; i < WRITERS; i++) {
        for (int k = 0; k < ROUNDS; k++) {
            snprintf(name, sizeof(name), "own-%d-%02d@llm", i, k);
            CHECK(find(name, "10.0.2.2", 8000 + i));
        }
    }
}

/* ---- cases: sweep ------------------------------------------------------------------ */

static void
t_sweep(void)
{
    struct reg_store *st = open_migrated();
    struct reg_instance a = mk("sweep-a@llm", "10.0.3.1", 1); /* lease 1 ms */
    struct reg_instance b = mk("sweep-b@llm", "10.0.3.1", 2); /* default lease */
    struct reg_instance c = mk("sweep-c@llm", "10.0.3.1", 3); /* check_healthy 0 */
    struct reg_instance d = mk("sweep-d@llm", "10.0.3.1", 4); /* check_healthy 0, gone */
    struct reg_instance got, before;
    struct reg_op ops[5];
    int marked = -1, deleted = -1;

    CHECK(st);
    a.lease_ms = 1;
    c.lease_ms = 1;
    c.check_healthy = false;
    d.lease_ms = 1;
    d.check_healthy = false;
    ops[0] = op_of(REG_OP_REGISTER, &a);
    ops[1] = op_of(REG_OP_REGISTER, &b);
    ops[2] = op_of(REG_OP_REGISTER, &c);
    ops[3] = op_of(REG_OP_REGISTER, &d);
    ops[4] = op_of(REG_OP_DEREGISTER, &d);
    CHECK_EQ_INT(reg_apply(st, ops, 5), REG_OK);
    CHECK(get(st, &a, &before) == 0);
    sleep_ms(60);

    CHECK_EQ_INT(reg_sweep(st, 0, &marked, &deleted), REG_OK);
    CHECK_EQ_INT(marked, 1);
    CHECK_EQ_INT(deleted, 0);
    CHECK(get(st, &a, &got) == 0);
    CHECK(!got.healthy);
    CHECK_EQ_INT(got.updated_ms, before.updated_ms);
    CHECK(get(st, &b, &got) == 0 && got.healthy);
    CHECK(get(st, &c, &got) == 0 && got.healthy);
    CHECK_EQ_INT(reg_sweep(st, 0, &marked, NULL), REG_OK); /* idempotent */
    CHECK_EQ_INT(marked, 0);

    sleep_ms(60);
    CHECK_EQ_INT(reg_sweep(st, 30, &marked, &deleted), REG_OK);
    CHECK_EQ_INT(marked, 0);
    CHECK_EQ_INT(deleted, 3); /* a, b, d; never c (check_healthy = 0 and healthy) */
    CHECK_EQ_INT(list_rows(st, -1, NULL), REG_OK);
    CHECK_EQ_INT(g_rows.n, 1);
    CHECK_EQ_STR(g_rows.v[0].model_name, "sweep-c@llm");
    CHECK_EQ_INT(reg_sweep(st, 30, NULL, NULL), REG_OK);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE, 1);
}

/* ---- cases: MySQL faults ---------------------------------------------------------- */

static void
t_mysql_kill(void)
{
    struct reg_store *st = open_migrated();
    struct reg_instance a = mk("kill-a@llm", "10.0.4.1", 1);
    struct reg_instance b = mk("kill-b@llm", "10.0.4.1", 2);
    struct reg_stats s0, s1;
    long long id = 0, id2 = 0;
    char sql[64];
    const char *who = "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE()"
                      " AND ID <> CONNECTION_ID()";

    CHECK(st);
    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &a), REG_OK);
    CHECK(raw_int(who, &id) == 0 && id > 0);
    snprintf(sql, sizeof(sql), "KILL %lld", id);
    CHECK(raw_exec(sql) == 0);
    reg_get_stats(st, &s0);
    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &b), REG_OK); /* transparent */
    reg_get_stats(st, &s1);
    CHECK(s1.retries > s0.retries);
    CHECK(s1.reconnects > s0.reconnects);
    CHECK(raw_int(who, &id2) == 0 && id2 > 0 && id2 != id);
    CHECK_EQ_INT(list_rows(st, -1, NULL), REG_OK);
    CHECK_EQ_INT(g_rows.n, 2);

    /* reads recover the same way */
    snprintf(sql, sizeof(sql), "KILL %lld", id2);
    CHECK(raw_exec(sql) == 0);
    CHECK_EQ_INT(list_rows(st, -1, NULL), REG_OK);
    CHECK_EQ_INT(g_rows.n, 2);
    CHECK_EQ_INT(reg_ping(st), REG_OK);
}

static void
t_mysql_bad_password(void)
{
    struct reg_config c;
    struct reg_store *st;
    struct reg_instance a = mk("pw@llm", "10.0.4.2", 1);
    struct reg_op op = op_of(REG_OP_REGISTER, &a);
    int64_t t0;

    base_cfg(&c);
    c.mysql_password = "wrong-Secret-42";
    c.retry_budget_ms = 5000;
    st = open_cfg(&c);
    CHECK(st);
    t0 = mono_ms();
    CHECK_EQ_INT(reg_apply(st, &op, 1), REG_EBACKEND);
    CHECK(mono_ms() - t0 < 1500); /* not after the whole retry budget */
    CHECK(strstr(reg_errmsg(st), "1045") != NULL);
    CHECK(strstr(reg_errmsg(st), "wrong-Secret-42") == NULL);

    base_cfg(&c);
    c.mysql_database = "roster_no_such_database";
    st = open_cfg(&c);
    CHECK(st);
    t0 = mono_ms();
    CHECK_EQ_INT(reg_apply(st, &op, 1), REG_EBACKEND);
    CHECK(mono_ms() - t0 < 1500);
    CHECK(strstr(reg_errmsg(st), "1049") != NULL);
}

/* A loopback port with nothing listening (bound, then closed). */
static int
closed_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port = -1;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0) {
        port = ntohs(sa.sin_port);
    }
    if (fd >= 0) {
        close(fd);
    }
    return port;
}

static void
t_mysql_closed_port(void)
{
    struct reg_config c;
    struct reg_store *st;
    struct reg_instance a = mk("port@llm", "10.0.4.3", 1);
    struct reg_op op = op_of(REG_OP_REGISTER, &a);
    struct reg_stats s;
    int64_t t0, took;

    base_cfg(&c);
    c.mysql_port = closed_port();
    c.retry_budget_ms = 500;
    CHECK(c.mysql_port > 0);
    st = open_cfg(&c);
    CHECK(st);
    t0 = mono_ms();
    CHECK_EQ_INT(reg_apply(st, &op, 1), REG_EUNAVAIL);
    took = mono_ms() - t0;
    fprintf(stderr, "  (closed port: REG_EUNAVAIL after %lld ms: %s)\n", (long long)took,
            reg_errmsg(st));
    CHECK(took >= 200 && took < 2500);
    reg_get_stats(st, &s);
    CHECK(s.reconnects >= 2);
    CHECK_EQ_INT(reg_ping(st), REG_EUNAVAIL);
}

/* Several servers: a bad list is refused at reg_open; a dead server in
 * front of a live one costs one refused connect, and the store then keeps
 * to the live one. reg_apply_until honours its deadline. */
static void
t_mysql_server_list(void)
{
    static const char *const bad[] = {"a:0",   "a:70000", "a,,b", "[::1", "[::1]x",
                                      "a:12x", ",a",      "a:",   " , "};
    struct reg_config c;
    struct reg_store *st = NULL;
    struct reg_instance a = mk("list@llm", "10.0.4.4", 1);
    struct reg_op op = op_of(REG_OP_REGISTER, &a);
    struct reg_stats s;
    char list[256];
    int dead = closed_port();
    int64_t t0, took;

    CHECK(dead > 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        base_cfg(&c);
        c.mysql_host = bad[i];
        st = NULL;
        CHECK_EQ_INT(reg_open(&c, &st), REG_EINVAL);
        CHECK(st == NULL);
    }
    base_cfg(&c);
    snprintf(list, sizeof(list), "127.0.0.1:%d, %s:%d", dead, g_my.host, g_my.port);
    c.mysql_host = list;
    c.retry_budget_ms = 3000;
    st = open_cfg(&c);
    CHECK(st);
    CHECK_EQ_INT(reg_migrate(st), REG_OK);
    CHECK_EQ_INT(reg_apply(st, &op, 1), REG_OK);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE " WHERE host = '10.0.4.4'", 1);
    reg_get_stats(st, &s);
    CHECK_EQ_INT((int)s.retries, 0); /* the failover happened inside one connect */

    /* a past deadline: not tried */
    CHECK_EQ_INT(reg_apply_until(st, &op, 1, mono_ms() - 1), REG_EBUSY);
    /* only dead servers: unreachable, within the deadline */
    base_cfg(&c);
    snprintf(list, sizeof(list), "127.0.0.1:%d,[::1]:%d", dead, dead);
    c.mysql_host = list;
    st = open_cfg(&c);
    CHECK(st);
    t0 = mono_ms();
    CHECK_EQ_INT(reg_apply_until(st, &op, 1, t0 + 400), REG_EUNAVAIL);
    took = mono_ms() - t0;
    CHECK(took < 600);
    CHECK(strstr(reg_errmsg(st), "server") != NULL);
}

static void
t_mysql_socket(void)
{
    struct reg_config c;
    struct reg_store *st;
    struct reg_instance a = mk("sock@llm", "10.0.4.4", 1);
    struct reg_instance got;

    base_cfg(&c);
    c.mysql_host = NULL;
    c.mysql_socket = g_my.socket;
    st = open_cfg(&c);
    CHECK(st);
    CHECK_EQ_INT(reg_migrate(st), REG_OK);
    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &a), REG_OK);
    CHECK(get(st, &a, &got) == 0 && got.healthy);
    CHECK_EQ_INT(reg_ping(st), REG_OK);
}

/* ---- cases: lock waits ------------------------------------------------------------ */

struct blocked {
    struct reg_store *st;
    int rc;
    int64_t took;
    int64_t until_ms; /* > 0: reg_apply_until(now + until_ms) */
};

static void *
blocked_thread(void *arg)
{
    struct blocked *b = arg;
    struct reg_instance in = mk("busy@llm", "10.0.5.1", 1);
    int64_t t0 = mono_ms();

    in.lease_ms = 777;
    struct reg_op op = {.kind = REG_OP_REGISTER, .inst = in};

    b->rc = b->until_ms > 0 ? reg_apply_until(b->st, &op, 1, t0 + b->until_ms)
                            : reg_apply(b->st, &op, 1);
    b->took = mono_ms() - t0;
    reg_thread_end();
    return NULL;
}

/* Holds a write lock on busy@llm's row (SQLite: the database) through the
 * raw connection for `hold_ms` while the store registers busy@llm. */
static int
write_while_locked(struct reg_store *st, int64_t hold_ms, struct blocked *b)
{
    pthread_t t;

    if (raw_exec(g_mysql ? "START TRANSACTION" : "BEGIN IMMEDIATE") != 0 ||
        raw_exec("UPDATE " TABLE " SET roster_in_flight = roster_in_flight + 1"
                 " WHERE model_name = 'busy@llm'") != 0) {
        return -1;
    }
    b->st = st;
    pthread_create(&t, NULL, blocked_thread, b);
    sleep_ms(hold_ms);
    int rc = raw_exec("COMMIT");
    pthread_join(t, NULL);
    return rc;
}

static void
t_lock_wait(void)
{
    struct reg_store *st = open_migrated();
    struct reg_instance busy = mk("busy@llm", "10.0.5.1", 1);
    struct reg_config c;
    struct reg_store *other;
    struct reg_stats s;
    struct blocked b = {0};
    /* MySQL's lock wait timeout has whole seconds */
    int wait = g_mysql ? 1000 : 100;
    int64_t hold = g_mysql ? 1600 : 500;

    CHECK(st);
    CHECK_EQ_INT(apply1(st, REG_OP_REGISTER, &busy), REG_OK);
    /* a lock wait shorter than the lock: the wrapper's retries carry the
     * write through once the lock is gone */
    base_cfg(&c);
    c.busy_ms = wait;
    c.retry_budget_ms = 5000;
    other = open_cfg(&c);
    CHECK(other);
    CHECK_EQ_INT(reg_ping(other), REG_OK);
    CHECK(write_while_locked(other, hold, &b) == 0);
    CHECK_EQ_INT(b.rc, REG_OK);
    CHECK(b.took >= hold - 100);
    reg_get_stats(other, &s);
    CHECK(s.retries >= 1);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE " WHERE roster_lease_ms = 777", 1);

    /* the default lock wait (2 s) outlasts a short lock by itself */
    CHECK(raw_exec("UPDATE " TABLE " SET roster_lease_ms = 0") == 0);
    CHECK(write_while_locked(st, 300, &b) == 0);
    CHECK_EQ_INT(b.rc, REG_OK);
    CHECK(b.took >= 250);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE " WHERE roster_lease_ms = 777", 1);

    /* a lock held past the retry budget: REG_EBUSY, nothing written */
    CHECK(raw_exec("UPDATE " TABLE " SET roster_lease_ms = 0") == 0);
    base_cfg(&c);
    c.busy_ms = wait / 2;
    c.retry_budget_ms = 300;
    other = open_cfg(&c);
    CHECK(other);
    CHECK_EQ_INT(reg_ping(other), REG_OK);
    CHECK(write_while_locked(other, hold + 1000, &b) == 0);
    CHECK_EQ_INT(b.rc, REG_EBUSY);
    CHECK(b.took < hold + 900);
    CHECK(strlen(reg_errmsg(other)) > 0);
    CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE " WHERE roster_lease_ms = 777", 0);

    /* a hard deadline cuts a statement still waiting for the lock (the
     * socket is shut down), and the store reconnects for the next call */
    if (g_mysql) {
        b.until_ms = 700;
        CHECK(write_while_locked(st, 2500, &b) == 0);
        CHECK_EQ_INT(b.rc, REG_EUNAVAIL);
        CHECK(b.took >= 650 && b.took < 1300);
        CHECK(strstr(reg_errmsg(st), "time bound") != NULL);
        CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE " WHERE roster_lease_ms = 777", 0);
        CHECK_EQ_INT(reg_ping(st), REG_OK);
        b.until_ms = 3000; /* and one that ends in time */
        CHECK(write_while_locked(st, 200, &b) == 0);
        CHECK_EQ_INT(b.rc, REG_OK);
        CHECK_SQL_INT("SELECT COUNT(*) FROM " TABLE " WHERE roster_lease_ms = 777", 1);
    }
}

/* ---- cases: SQLite only ----------------------------------------------------------- */

static void
t_sqlite_memory(void)
{
    struct reg_store *a = open_store();
    struct reg_store *b = open_store();
    struct reg_instance in = mk("mem@llm", "10.0.5.2", 1);

    CHECK(a && b);
    CHECK_EQ_INT(reg_migrate(a), REG_OK);
    CHECK_EQ_INT(apply1(b, REG_OP_REGISTER, &in), REG_OK);
    CHECK_EQ_INT(list_rows(a, -1, NULL), REG_OK); /* one database, two stores */
    CHECK_EQ_INT(g_rows.n, 1);
    CHECK_EQ_INT(reg_migrate(b), REG_OK);
    close_stores();

    /* closed by everyone, the in-memory database is gone */
    a = open_store();
    CHECK(a);
    CHECK_EQ_INT(apply1(a, REG_OP_REGISTER, &in), REG_ESCHEMA);
}

/* A file SQLite cannot use is a configuration error, not an outage:
 * REG_EBACKEND at once (a controller exits 78 instead of answering 503
 * forever), with the file and the reason in errmsg. A locked file is
 * REG_EBUSY and works once the lock is gone. */
static int
migrate_fails(const char *path, int want_rc, const char *want_text)
{
    struct reg_config c;
    struct reg_store *st;
    int64_t t0;
    int rc;

    base_cfg(&c);
    c.sqlite_path = path;
    c.busy_ms = 100;
    c.retry_budget_ms = 3000;
    st = open_cfg(&c);
    if (!st) {
        return -1;
    }
    t0 = mono_ms();
    rc = reg_migrate(st);
    fprintf(stderr, "  (%s: %s after %lld ms: %s)\n", path, reg_strerror(rc),
            (long long)(mono_ms() - t0), reg_errmsg(st));
    if (rc != want_rc || strstr(reg_errmsg(st), path) == NULL ||
        strstr(reg_errmsg(st), want_text) == NULL) {
        return -1;
    }
    /* not after the whole retry budget; the next call fails the same way */
    if (mono_ms() - t0 > 1500 || reg_ping(st) != want_rc) {
        return -1;
    }
    return 0;
}

static void
t_sqlite_cannot_open(void)
{
    struct reg_config c;
    char path[700];
    FILE *f;
    int rc;

    base_cfg(&c);
    snprintf(path, sizeof(path), "%s.missing/r.db", c.sqlite_path);
    CHECK(migrate_fails(path, REG_EBACKEND, "does not exist") == 0);

    snprintf(path, sizeof(path), "%s.dir", c.sqlite_path);
    CHECK(mkdir(path, 0700) == 0);
    rc = migrate_fails(path, REG_EBACKEND, "is a directory");
    rmdir(path);
    CHECK(rc == 0);

    /* a text file where the database should be */
    f = fopen(c.sqlite_path, "w");
    CHECK(f);
    for (int i = 0; i < 64; i++) {
        fputs("this is not an SQLite database, just some text to fill a page\n", f);
    }
    CHECK(fclose(f) == 0);
    CHECK(migrate_fails(c.sqlite_path, REG_EBACKEND, "not a database") == 0);
    CHECK(unlink(c.sqlite_path) == 0);

    /* a database this user may not write (root may write anything) */
    if (geteuid() != 0) {
        CHECK(open_migrated() != NULL);
        close_stores();
        CHECK(chmod(c.sqlite_path, 0444) == 0);
        rc = migrate_fails(c.sqlite_path, REG_EBACKEND, "read-only");
        chmod(c.sqlite_path, 0600);
        CHECK(rc == 0);
    } else {
        fprintf(stderr, "  (running as root: the read-only file case is in the service tests)\n");
    }
}

static void
t_sqlite_locked(void)
{
    struct reg_config c;
    struct reg_store *st;
    int64_t t0, took;
    int rc;

    /* another process holds the file's exclusive lock (no WAL yet): the
     * store retries for its whole budget and reports a retryable error
     * (REG_EBUSY, or REG_EUNAVAIL once the connect backoff outlasts the
     * budget), never REG_EBACKEND */
    CHECK(raw_exec("CREATE TABLE other (x INTEGER)") == 0);
    CHECK(raw_exec("BEGIN EXCLUSIVE") == 0);
    CHECK(raw_exec("INSERT INTO other VALUES (1)") == 0);
    base_cfg(&c);
    c.busy_ms = 100;
    c.retry_budget_ms = 1000;
    st = open_cfg(&c);
    CHECK(st);
    t0 = mono_ms();
    rc = reg_migrate(st);
    took = mono_ms() - t0;
    fprintf(stderr, "  (locked: %s after %lld ms: %s)\n", reg_strerror(rc), (long long)took,
            reg_errmsg(st));
    CHECK(rc == REG_EBUSY || rc == REG_EUNAVAIL);
    CHECK(took >= 800);
    CHECK(strstr(reg_errmsg(st), "locked") != NULL);
    /* the lock gone, the same store works */
    CHECK(raw_exec("COMMIT") == 0);
    CHECK_EQ_INT(reg_migrate(st), REG_OK);
}

/* ---- cases: settings --------------------------------------------------------------- */

/* Version compare-and-set, upsert, delete, bounds, and a second store
 * seeing the first one's writes. */
static void
t_settings(void)
{
    struct reg_store *a = open_migrated();
    struct reg_store *b = open_migrated();
    struct reg_settings sa = {0};
    struct reg_settings sb = {0};
    bool changed = false;
    bool applied = false;
    char big[REG_SETTING_VALUE_MAX + 2];
    struct reg_setting w[2] = {
        {.kind = "key", .name = "team-a", .value = "{\"hash\":\"ab\"}"},
        {.kind = "alias", .name = "gpt-4o", .value = "{\"models\":[\"m1\"]}"},
    };

    CHECK(a && b);
    CHECK_EQ_INT(reg_settings_read(a, -1, &sa, &changed), REG_OK);
    CHECK(changed);
    CHECK_EQ_INT(sa.version, 0);
    CHECK_EQ_INT(sa.n, 0);
    /* unchanged: nothing read, `out` kept */
    CHECK_EQ_INT(reg_settings_read(a, 0, &sa, &changed), REG_OK);
    CHECK(!changed);
    CHECK_EQ_INT(reg_settings_write(a, 0, w, 2, &applied), REG_OK);
    CHECK(applied);
    /* a writer that read version 0 too loses: nothing written */
    w[0].value = "{\"hash\":\"cd\"}";
    CHECK_EQ_INT(reg_settings_write(b, 0, w, 1, &applied), REG_OK);
    CHECK(!applied);
    CHECK_EQ_INT(reg_settings_read(b, 0, &sb, &changed), REG_OK);
    CHECK(changed);
    CHECK_EQ_INT(sb.version, 1);
    CHECK_EQ_INT(sb.n, 2);
    CHECK_EQ_STR(sb.v[0].kind, "alias"); /* sorted by kind, name */
    CHECK_EQ_STR(sb.v[1].name, "team-a");
    CHECK_EQ_STR(sb.v[1].value, "{\"hash\":\"ab\"}");
    CHECK(sb.v[1].updated_ms > wall_ms() - 60000);
    /* an upsert and a delete at version 1 */
    w[1].value = NULL;
    CHECK_EQ_INT(reg_settings_write(b, 1, w, 2, &applied), REG_OK);
    CHECK(applied);
    CHECK_EQ_INT(reg_settings_read(a, 0, &sa, &changed), REG_OK);
    CHECK(changed);
    CHECK_EQ_INT(sa.version, 2);
    CHECK_EQ_INT(sa.n, 1);
    CHECK_EQ_STR(sa.v[0].value, "{\"hash\":\"cd\"}");
    /* out of bounds: nothing written, the version stays */
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    w[0].value = big;
    CHECK_EQ_INT(reg_settings_write(a, 2, w, 1, &applied), REG_EINVAL);
    w[0].value = "{}";
    w[0].kind = "";
    CHECK_EQ_INT(reg_settings_write(a, 2, w, 1, &applied), REG_EINVAL);
    CHECK_SQL_INT("SELECT version FROM roster_settings_version", 2);
    /* a value at the bound round-trips */
    big[REG_SETTING_VALUE_MAX] = '\0';
    w[0].kind = "model";
    w[0].value = big;
    CHECK_EQ_INT(reg_settings_write(a, 2, w, 1, &applied), REG_OK);
    CHECK(applied);
    CHECK_EQ_INT(reg_settings_read(b, 2, &sb, &changed), REG_OK);
    CHECK_EQ_INT(sb.n, 2);
    CHECK_EQ_INT(strlen(sb.v[1].value), REG_SETTING_VALUE_MAX);
    reg_settings_free(&sa);
    reg_settings_free(&sb);
}

/* ---- cases: key usage ---------------------------------------------------------------- */

struct usage_arg {
    struct reg_store *st;
    int64_t granted;
    int errors;
};

/* Takes one request at a time until none is granted. */
static void *
usage_thread(void *p)
{
    struct usage_arg *a = p;

    for (;;) {
        struct reg_usage_take t = {.name = "k", .want_requests = 1, .limit_requests = 100};
        if (reg_usage_take(a->st, 7, &t, 1) != REG_OK) {
            a->errors++;
            continue;
        }
        if (t.granted_requests == 0) {
            return NULL;
        }
        a->granted += t.granted_requests;
    }
}

static void
t_usage(void)
{
    struct reg_store *a = open_migrated();
    struct reg_store *b = open_migrated();
    struct reg_usage_take t = {.name = "team-a",
                               .want_requests = 6,
                               .want_tokens = 500,
                               .limit_requests = 10,
                               .limit_tokens = 800};
    struct usage_arg args[4] = {{0}};
    pthread_t th[4];
    int64_t total = 0;

    CHECK(a && b);
    CHECK_EQ_INT(reg_usage_take(a, 100, &t, 1), REG_OK);
    CHECK_EQ_INT(t.granted_requests, 6);
    CHECK_EQ_INT(t.granted_tokens, 500);
    /* the second store gets what is left, never more */
    CHECK_EQ_INT(reg_usage_take(b, 100, &t, 1), REG_OK);
    CHECK_EQ_INT(t.granted_requests, 4);
    CHECK_EQ_INT(t.granted_tokens, 300);
    CHECK_EQ_INT(t.used_requests, 10);
    /* unused units come back and go out again */
    t.want_requests = 0;
    t.want_tokens = 0;
    t.ret_requests = 3;
    CHECK_EQ_INT(reg_usage_take(a, 100, &t, 1), REG_OK);
    CHECK_EQ_INT(t.used_requests, 7);
    t.ret_requests = 0;
    t.want_requests = 5;
    CHECK_EQ_INT(reg_usage_take(b, 100, &t, 1), REG_OK);
    CHECK_EQ_INT(t.granted_requests, 3);
    /* another window starts from zero; no limit grants everything */
    t.want_requests = 5;
    CHECK_EQ_INT(reg_usage_take(a, 101, &t, 1), REG_OK);
    CHECK_EQ_INT(t.granted_requests, 5);
    t.limit_requests = 0;
    t.want_requests = 50;
    CHECK_EQ_INT(reg_usage_take(a, 101, &t, 1), REG_OK);
    CHECK_EQ_INT(t.granted_requests, 50);
    CHECK_EQ_INT(reg_usage_gc(a, 101), REG_OK);
    CHECK_SQL_INT("SELECT COUNT(*) FROM roster_key_usage", 1);
    t.name = "";
    CHECK_EQ_INT(reg_usage_take(a, 101, &t, 1), REG_EINVAL);
    /* four stores racing one unit at a time: exactly the limit in all */
    for (int i = 0; i < 4; i++) {
        args[i].st = open_migrated();
        CHECK(args[i].st);
    }
    for (int i = 0; i < 4; i++) {
        pthread_create(&th[i], NULL, usage_thread, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += args[i].granted;
        CHECK_EQ_INT(args[i].errors, 0);
    }
    CHECK_EQ_INT(total, 100);
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_registry sqlite|mysql\n");
        return 2;
    }
    if (reg_library_init() != REG_OK) {
        fprintf(stderr, "reg_library_init failed\n");
        return 1;
    }
    if (harness_setup(argv[1]) != 0) {
        reg_library_end();
        return 1;
    }

    RUN(t_migrate_empty);
    RUN(t_migrate_concurrent);
    RUN(t_dbgpt_table);
    RUN(t_schema_missing);
    RUN(t_register_list);
    RUN(t_register_twice);
    RUN(t_heartbeat);
    RUN(t_deregister_remove_admin);
    RUN(t_list_since);
    RUN(t_list_rows);
    RUN(t_list_rows_strings);
    RUN(t_batch);
    RUN(t_batch_duplicates);
    RUN(t_validation);
    RUN(t_concurrency);
    RUN(t_sweep);
    RUN(t_lock_wait);
    RUN(t_settings);
    RUN(t_usage);
    if (g_mysql) {
        RUN(t_mysql_kill);
        RUN(t_mysql_bad_password);
        RUN(t_mysql_closed_port);
        RUN(t_mysql_server_list);
        RUN(t_mysql_socket);
    } else {
        RUN_IN(t_sqlite_memory, true);
        RUN(t_sqlite_cannot_open);
        RUN(t_sqlite_locked);
        RUN_IN(t_register_list, true);
        RUN_IN(t_heartbeat, true);
        RUN_IN(t_batch, true);
        RUN_IN(t_concurrency, true);
    }

    harness_cleanup();
    reg_library_end();
    return check_summary();
}
