/* SPDX-License-Identifier: MIT
 *
 * test_ctl_config.c - controller/ctl_config.c: ctl_config_check over
 * configurations parsed by flags_parse from the controller's own table:
 * every form of --registry_db_url (MySQL, MariaDB, SQLAlchemy drivers,
 * IPv6, Unix socket, percent-decoding, SQLite's three and four slashes,
 * memory), bad URLs, conflicts with the separate options (from argv and
 * from the environment), the host checks, the password never in a message
 * or the stored URL, and the argv scrub of ctl_config_load.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ctl.h"

static const char *const env_vars[] = {
    "ROSTER_REGISTRY_DB_URL",  "ROSTER_REGISTRY_DB_TYPE",         "ROSTER_REGISTRY_DB_HOST",
    "ROSTER_REGISTRY_DB_PORT", "ROSTER_REGISTRY_DB_USER",         "ROSTER_REGISTRY_DB_NAME",
    "ROSTER_REGISTRY_TYPE",    "ROSTER_REGISTRY_DB_PASSWORD",     "ROSTER_REGISTRY_DB_SOCKET",
    "ROSTER_LOG_LEVEL",        "CONTROLLER_REGISTRY_DB_PASSWORD",
};

static struct ctl_config g_cfg;
static enum flag_source g_src[128];
static char g_err[768];

static void
clear_env(void)
{
    for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++) {
        unsetenv(env_vars[i]);
    }
}

/* Parses a NULL-terminated argument list into g_cfg (as ctl_main would)
 * and runs ctl_config_check. Returns its result (-2 if parsing failed). */
static int
load(const char *const *args)
{
    char *argv[32];
    int argc = 0;

    ctl_config_cleanup(&g_cfg);
    memset(&g_cfg, 0, sizeof(g_cfg));
    g_err[0] = '\0';
    while (args[argc] && argc < 32) {
        argv[argc] = (char *)args[argc];
        argc++;
    }
    if (flags_parse(ctl_flag_defs, &g_cfg, argc, argv, g_src, g_err, sizeof(g_err)) != 0) {
        return -2;
    }
    return ctl_config_check(&g_cfg, g_src, g_err, sizeof(g_err));
}

#define LOAD(...) load((const char *const[]){__VA_ARGS__, NULL})

/* A URL that must be refused with `want` in the message. */
static int
refused(const char *url, const char *want)
{
    int rc = LOAD("--registry_db_url", url);

    if (rc != -1 || !strstr(g_err, want) || !strstr(g_err, "--registry_db_url")) {
        fprintf(stderr, "  url %s: rc %d, message: %s\n", url, rc, g_err);
        return -1;
    }
    return 0;
}

static void
t_defaults(void)
{
    struct reg_config rc;

    CHECK_EQ_INT(LOAD("--port", "0"), 0);
    CHECK_EQ_STR(g_cfg.registry_type, "database");
    CHECK_EQ_STR(g_cfg.registry_db_type, "sqlite");
    CHECK(g_cfg.registry_db_url == NULL);
    ctl_config_registry(&g_cfg, &rc);
    CHECK_EQ_INT(rc.backend, REG_SQLITE);
    CHECK_EQ_STR(rc.sqlite_path, "roster.db");
    /* sources NULL: everything a default, the same result */
    CHECK_EQ_INT(ctl_config_check(&g_cfg, NULL, g_err, sizeof(g_err)), 0);
}

static void
t_mysql_urls(void)
{
    struct reg_config rc;

    CHECK_EQ_INT(LOAD("--registry_db_url", "mysql://roster@db.internal:3307/reg"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_type, "mysql");
    CHECK_EQ_STR(g_cfg.registry_db_host, "db.internal");
    CHECK_EQ_INT(g_cfg.registry_db_port, 3307);
    CHECK_EQ_STR(g_cfg.registry_db_user, "roster");
    CHECK_EQ_STR(g_cfg.registry_db_name, "reg");
    CHECK_EQ_STR(g_cfg.registry_db_password, "");
    CHECK(g_cfg.registry_db_socket == NULL);
    ctl_config_registry(&g_cfg, &rc);
    CHECK_EQ_INT(rc.backend, REG_MYSQL);
    CHECK_EQ_STR(rc.mysql_host, "db.internal");
    CHECK_EQ_INT(rc.mysql_port, 3307);
    CHECK_EQ_STR(rc.mysql_database, "reg");

    /* default port, other schemes, a scheme in capitals */
    static const char *const same[] = {
        "mysql://u@h/d",
        "mariadb://u@h/d",
        "mysql+pymysql://u@h/d",
        "mysql+mysqldb://u@h/d",
        "MySQL+PyMySQL://u@h:3306/d",
        "mariadb+mariadbconnector://u@h/d",
    };
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        CHECK_EQ_INT(LOAD("--registry_db_url", same[i]), 0);
        CHECK_EQ_STR(g_cfg.registry_db_type, "mysql");
        CHECK_EQ_STR(g_cfg.registry_db_host, "h");
        CHECK_EQ_INT(g_cfg.registry_db_port, 3306);
        CHECK_EQ_STR(g_cfg.registry_db_user, "u");
        CHECK_EQ_STR(g_cfg.registry_db_name, "d");
    }

    /* no user: the default user */
    CHECK_EQ_INT(LOAD("--registry_db_url", "mysql://10.0.0.5/roster"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_user, "root");
    CHECK_EQ_STR(g_cfg.registry_db_host, "10.0.0.5");

    /* IPv6 in brackets */
    CHECK_EQ_INT(LOAD("--registry_db_url", "mysql://u@[::1]:3310/d"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_host, "::1");
    CHECK_EQ_INT(g_cfg.registry_db_port, 3310);
    CHECK_EQ_INT(LOAD("--registry_db_url", "mysql://u@[fe80::1]/d"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_host, "fe80::1");
    CHECK_EQ_INT(g_cfg.registry_db_port, 3306);

    /* percent-decoding of user, password and database */
    CHECK_EQ_INT(LOAD("--registry_db_url", "mysql://us%40er:p%40ss%2Fw%3Ad@h/d%62%2d1"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_user, "us@er");
    CHECK_EQ_STR(g_cfg.registry_db_password, "p@ss/w:d");
    CHECK_EQ_STR(g_cfg.registry_db_name, "db-1");

    /* a Unix socket; charset=utf8mb4 (DB-GPT's URLs carry it) */
    CHECK_EQ_INT(LOAD("--registry_db_url",
                      "mysql://roster@localhost/reg?unix_socket=%2Frun%2Fmysqld%2Fm.sock"),
                 0);
    CHECK_EQ_STR(g_cfg.registry_db_socket, "/run/mysqld/m.sock");
    ctl_config_registry(&g_cfg, &rc);
    CHECK_EQ_STR(rc.mysql_socket, "/run/mysqld/m.sock");
    CHECK_EQ_INT(LOAD("--registry_db_url", "mysql://u@/d?unix_socket=/tmp/s&charset=utf8mb4"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_socket, "/tmp/s");
    CHECK_EQ_INT(LOAD("--registry_db_url", "mysql+pymysql://u@h:3306/d?charset=utf8mb4"), 0);

    /* an empty URL is no URL */
    CHECK_EQ_INT(LOAD("--registry_db_url", "", "--registry_db_name", "x.db"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_type, "sqlite");
}

static void
t_sqlite_urls(void)
{
    struct reg_config rc;

    CHECK_EQ_INT(LOAD("--registry_db_url", "sqlite:///relative/reg.db"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_type, "sqlite");
    CHECK_EQ_STR(g_cfg.registry_db_name, "relative/reg.db");
    ctl_config_registry(&g_cfg, &rc);
    CHECK_EQ_INT(rc.backend, REG_SQLITE);
    CHECK_EQ_STR(rc.sqlite_path, "relative/reg.db");

    CHECK_EQ_INT(LOAD("--registry_db_url", "sqlite:////var/lib/roster/reg.db"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_name, "/var/lib/roster/reg.db");
    CHECK_EQ_INT(LOAD("--registry_db_url", "sqlite+pysqlite:////abs.db"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_name, "/abs.db");
    /* taken literally, as SQLAlchemy does */
    CHECK_EQ_INT(LOAD("--registry_db_url", "sqlite:///a%20b.db"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_name, "a%20b.db");

    CHECK_EQ_INT(LOAD("--registry_db_url", "sqlite:///:memory:"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_name, ":memory:");
    ctl_config_registry(&g_cfg, &rc);
    CHECK_EQ_STR(rc.sqlite_path, ":memory:");
    CHECK_EQ_INT(LOAD("--registry_db_url", "sqlite://"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_name, ":memory:");
}

static void
t_bad_urls(void)
{
    CHECK(refused("postgresql://u@h/d", "unknown scheme 'postgresql'") == 0);
    CHECK(refused("http://h/d", "unknown scheme") == 0);
    CHECK(refused("roster.db", "not a URL") == 0);
    CHECK(refused("://h/d", "not a URL") == 0);
    CHECK(refused("my sql://h/d", "not a URL") == 0);
    CHECK(refused("mysql://u@h:0/d", "port") == 0);
    CHECK(refused("mysql://u@h:65536/d", "port") == 0);
    CHECK(refused("mysql://u@h:33o6/d", "port") == 0);
    CHECK(refused("mysql://u@h:/d", "port") == 0);
    CHECK(refused("mysql://u@::1/d", "port") == 0); /* IPv6 without brackets */
    CHECK(refused("mysql://u@[::1/d", "']'") == 0);
    CHECK(refused("mysql://u@h", "no database") == 0);
    CHECK(refused("mysql://u@h/", "no database") == 0);
    CHECK(refused("mysql://u@h:3306?charset=utf8mb4", "no database") == 0);
    CHECK(refused("mysql://u@h/a/b", "'/' in the database") == 0);
    CHECK(refused("mysql://@h/d", "user name") == 0);
    CHECK(refused("mysql://u@/d", "no host") == 0);
    CHECK(refused("mysql://u@h/d%zz", "percent-encoding") == 0);
    CHECK(refused("mysql://u@h/d%", "percent-encoding") == 0);
    CHECK(refused("mysql://u@h/d%0a", "control character") == 0);
    CHECK(refused("mysql://u@h/d?sslmode=require", "unknown query parameter 'sslmode'") == 0);
    CHECK(refused("mysql://u@h/d?charset=latin1", "charset") == 0);
    CHECK(refused("mysql://u@h/d?unix_socket=", "unix_socket") == 0);
    CHECK(refused("sqlite:///", "no file name") == 0);
    CHECK(refused("sqlite://host/x.db", "no host") == 0);
    CHECK(refused("sqlite:///x.db?mode=ro", "no query") == 0);
}

/* A password in the URL: used, never in the stored URL, never in a message. */
static void
t_url_password(void)
{
    static const char *const bad[] = {
        "mysql://u:Secret42@h:bad/d",     /* bad port after a password */
        "mysql://u:Secret42@h",           /* no database */
        "mysql://u:Se/cret42@h/d",        /* unencoded '/' in the password */
        "mysql://u:Sec#ret42@h/d",        /* unencoded '#' */
        "mysql://u:Sec?ret42@h/d",        /* unencoded '?' */
        "mysql://u:Secret42@h/d?x=1",     /* unknown parameter */
        "pgsql://u:Secret42@h/d",         /* unknown scheme */
        "mysql://u:Secret42%zz@h/d",      /* bad escape in the password */
        "mysql://u:Secret42@h/d?charset", /* a bad charset */
    };

    CHECK_EQ_INT(LOAD("--registry_db_url", "mysql://roster:Secret42@h:3306/d"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_password, "Secret42");
    CHECK_EQ_STR(g_cfg.registry_db_url, "mysql://roster:***@h:3306/d");
    CHECK(g_cfg.db_url_password_on_argv);
    /* the user information ends at the authority's last '@' (RFC 3986) */
    CHECK_EQ_INT(LOAD("--registry_db_url", "mysql://u:Secret42@x@h/d"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_password, "Secret42@x");
    CHECK_EQ_STR(g_cfg.registry_db_host, "h");
    CHECK_EQ_STR(g_cfg.registry_db_url, "mysql://u:***@h/d");

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = LOAD("--registry_db_url", bad[i]);
        if (rc != -1 || strstr(g_err, "Secret42") || strstr(g_err, "cret42") ||
            strstr(g_err, "Sec")) {
            fprintf(stderr, "  %s: rc %d, message: %s\n", bad[i], rc, g_err);
        }
        CHECK_EQ_INT(rc, -1);
        CHECK(strstr(g_err, "cret42") == NULL);
        CHECK(strstr(g_err, "Sec") == NULL);
    }

    /* from the environment: no warning (the environment is private) */
    clear_env();
    setenv("ROSTER_REGISTRY_DB_URL", "mysql://u:Secret42@h/d", 1);
    CHECK_EQ_INT(LOAD("--port", "0"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_password, "Secret42");
    CHECK(!g_cfg.db_url_password_on_argv);
    /* no password in the URL: the environment's */
    setenv("ROSTER_REGISTRY_DB_URL", "mysql://u@h/d", 1);
    setenv("CONTROLLER_REGISTRY_DB_PASSWORD", "FromEnv", 1);
    CHECK_EQ_INT(LOAD("--port", "0"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_password, "FromEnv");
    CHECK_EQ_STR(g_cfg.registry_db_url, "mysql://u@h/d");
    /* two passwords */
    CHECK_EQ_INT(LOAD("--registry_db_url", "mysql://u:Secret42@h/d"), -1);
    CHECK(strstr(g_err, "password") && strstr(g_err, "CONTROLLER_REGISTRY_DB_PASSWORD"));
    CHECK(strstr(g_err, "Secret42") == NULL && strstr(g_err, "FromEnv") == NULL);
    clear_env();
    CHECK_EQ_INT(
        LOAD("--registry_db_url", "mysql://u:Secret42@h/d", "--registry_db_password", "Other"), -1);
    CHECK(strstr(g_err, "--registry_db_password"));
}

static void
t_conflicts(void)
{
    static const char *const opts[][2] = {
        {"--registry_db_type", "mysql"}, {"--registry_db_host", "h2"},
        {"--registry_db_port", "3307"},  {"--registry_db_user", "u2"},
        {"--registry_db_name", "d2"},    {"--registry-db-socket", "/tmp/s"},
    };

    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        char name[64];
        CHECK_EQ_INT(LOAD("--registry_db_url", "mysql://u@h/d", opts[i][0], opts[i][1]), -1);
        snprintf(name, sizeof(name), "--%s", opts[i][0] + 2);
        for (char *p = name + 2; *p; p++) {
            *p = *p == '-' ? '_' : *p;
        }
        CHECK(strstr(g_err, "--registry_db_url") != NULL);
        CHECK(strstr(g_err, name) != NULL);
    }
    /* every conflicting option is named */
    CHECK_EQ_INT(LOAD("--registry_db_host", "h2", "--registry_db_url", "mysql://u@h/d",
                      "--registry_db_port", "1"),
                 -1);
    CHECK(strstr(g_err, "--registry_db_host") && strstr(g_err, "--registry_db_port"));
    /* from the environment, said so */
    clear_env();
    setenv("ROSTER_REGISTRY_DB_HOST", "h3", 1);
    CHECK_EQ_INT(LOAD("--registry_db_url", "sqlite:///x.db"), -1);
    CHECK(strstr(g_err, "ROSTER_REGISTRY_DB_HOST") != NULL);
    clear_env();
    setenv("ROSTER_REGISTRY_DB_URL", "mysql://u@h/d", 1);
    CHECK_EQ_INT(LOAD("--registry_db_type", "mysql"), -1);
    CHECK(strstr(g_err, "ROSTER_REGISTRY_DB_URL") && strstr(g_err, "--registry_db_type"));
    clear_env();
    /* DB-GPT's --registry_type database is fine; embedded is not */
    CHECK_EQ_INT(LOAD("--registry_type", "database", "--registry_db_url", "mysql://u@h/d"), 0);
    CHECK_EQ_INT(LOAD("--registry_type", "embedded", "--registry_db_url", "mysql://u@h/d"), -1);
    CHECK(strstr(g_err, "embedded") != NULL);
    /* without sources nothing is explicit */
    CHECK_EQ_INT(LOAD("--registry_db_host", "h2"), 0);
    free(g_cfg.registry_db_url);
    g_cfg.registry_db_url = strdup("mysql://u@h/d");
    CHECK_EQ_INT(ctl_config_check(&g_cfg, NULL, g_err, sizeof(g_err)), 0);
    CHECK_EQ_STR(g_cfg.registry_db_host, "h");
}

static void
t_host_and_types(void)
{
    CHECK_EQ_INT(LOAD("--registry_db_host", "mysql://root:Secret42@db:3306/roster"), -1);
    CHECK(strstr(g_err, "--registry_db_url") && strstr(g_err, "--registry_db_host"));
    CHECK(strstr(g_err, "Secret42") == NULL);
    CHECK_EQ_INT(LOAD("--registry_db_host", "db.internal:3306"), -1);
    CHECK(strstr(g_err, "--registry_db_port") != NULL);
    CHECK_EQ_INT(LOAD("--registry_db_host", "/run/mysqld/mysqld.sock"), -1);
    CHECK(strstr(g_err, "--registry_db_socket") != NULL);
    CHECK_EQ_INT(LOAD("--registry_db_name", "sqlite:///x.db"), -1);
    CHECK(strstr(g_err, "--registry_db_url") != NULL);
    /* IPv6 literals and names are hosts */
    CHECK_EQ_INT(LOAD("--registry_db_host", "::1"), 0);
    CHECK_EQ_INT(LOAD("--registry_db_host", "fe80::1:3306"), 0);
    CHECK_EQ_INT(LOAD("--registry_db_host", "db-1.internal"), 0);
    /* types */
    CHECK_EQ_INT(LOAD("--registry_db_type", "mariadb"), 0);
    CHECK_EQ_STR(g_cfg.registry_db_type, "mysql");
    /* (values outside the choices are refused by the flag table: -2) */
    CHECK_EQ_INT(LOAD("--registry_db_type", "postgres"), -2);
    CHECK(strstr(g_err, "--registry_db_type") != NULL);
    CHECK_EQ_INT(LOAD("--registry_type", "etcd"), -2);
    CHECK(strstr(g_err, "--registry_type") != NULL);
}

/* ctl_config_load overwrites the password of a URL on argv. */
static void
t_load_scrubs_argv(void)
{
    char a0[] = "--registry_db_url";
    char a1[] = "mysql://u:Secret42@h/d";
    char a2[] = "--registry-db-url=mysql://u:Other99@h/d";
    char a3[] = "--port";
    char a4[] = "0";
    char *argv1[] = {a0, a1, a3, a4};
    char *argv2[] = {a2, a3, a4};

    ctl_config_cleanup(&g_cfg);
    memset(&g_cfg, 0, sizeof(g_cfg));
    CHECK_EQ_INT(ctl_config_load(&g_cfg, 4, argv1), 0);
    CHECK_EQ_STR(a1, "mysql://u:xxxxxxxx@h/d");
    CHECK_EQ_STR(g_cfg.registry_db_password, "Secret42");
    CHECK_EQ_STR(g_cfg.registry_db_url, "mysql://u:***@h/d");
    ctl_config_cleanup(&g_cfg);
    memset(&g_cfg, 0, sizeof(g_cfg));
    CHECK_EQ_INT(ctl_config_load(&g_cfg, 3, argv2), 0);
    CHECK_EQ_STR(a2, "--registry-db-url=mysql://u:xxxxxxx@h/d");
    CHECK_EQ_STR(g_cfg.registry_db_password, "Other99");
    /* a usage error is -1, printed */
    ctl_config_cleanup(&g_cfg);
    memset(&g_cfg, 0, sizeof(g_cfg));
    char b0[] = "--registry_db_url";
    char b1[] = "ftp://x/y";
    char *argv3[] = {b0, b1};
    CHECK_EQ_INT(ctl_config_load(&g_cfg, 2, argv3), -1);
}

int
main(void)
{
    clear_env();
    CHECK_RUN(t_defaults);
    CHECK_RUN(t_mysql_urls);
    CHECK_RUN(t_sqlite_urls);
    CHECK_RUN(t_bad_urls);
    CHECK_RUN(t_url_password);
    CHECK_RUN(t_conflicts);
    CHECK_RUN(t_host_and_types);
    CHECK_RUN(t_load_scrubs_argv);
    ctl_config_cleanup(&g_cfg);
    clear_env();
    return check_summary();
}
