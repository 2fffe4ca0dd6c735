/* SPDX-License-Identifier: MIT
 *
 * ctl_check.c - `roster start controller --check` (and the webserver's
 * embedded controller): what the options name, checked without opening a
 * database, connecting or binding. The option values themselves were
 * checked by ctl_config_check.
 */
#include "ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "util.h"

/* A SQLite registry file: creatable, and a database if it exists. */
static int
check_sqlite(const char *path, FILE *out)
{
    char why[600];
    unsigned char head[16];
    struct stat st;

    if (strcmp(path, ":memory:") == 0) {
        fprintf(out, "  registry: SQLite in memory (state is lost on exit)\n");
        return 0;
    }
    if (util_check_creatable(path, why, sizeof(why)) != 0) {
        fprintf(stderr, "roster: the registry file '%s' cannot be used: %s\n", path, why);
        return EX_CONFIG;
    }
    if (stat(path, &st) == 0 && st.st_size > 0) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, head, sizeof(head)) : -1;
        if (fd >= 0) {
            close(fd);
        }
        if (n != (ssize_t)sizeof(head) || memcmp(head, "SQLite format 3", 16) != 0) {
            fprintf(stderr, "roster: the registry file '%s' is not a SQLite database\n", path);
            return EX_CONFIG;
        }
        fprintf(out, "  registry: SQLite file %s (exists, a database)\n", path);
    } else {
        fprintf(out, "  registry: SQLite file %s (created at start; its directory is writable)\n",
                path);
    }
    return 0;
}

int
ctl_check(struct ctl_config *cfg, FILE *out)
{
    struct reg_config rc;
    struct netaddr_list nets = {0};
    char err[256];
    int code;

    ctl_config_registry(cfg, &rc);
    if (netaddr_list_parse(cfg->trusted_networks, &nets, err, sizeof(err)) != 0) {
        fprintf(stderr, "roster: --trusted_networks: %s\n", err);
        return EX_USAGE;
    }
    netaddr_list_cleanup(&nets);
    if (netaddr_list_parse(cfg->instance_networks, &nets, err, sizeof(err)) != 0) {
        fprintf(stderr, "roster: --instance_networks: %s\n", err);
        return EX_USAGE;
    }
    netaddr_list_cleanup(&nets);
    if (rc.backend == REG_SQLITE) {
        code = check_sqlite(rc.sqlite_path, out);
        if (code != 0) {
            return code;
        }
    } else if (rc.mysql_socket) {
        fprintf(out,
                "  registry: MySQL database '%s' as '%s' through socket %s%s (not connected)\n",
                rc.mysql_database, rc.mysql_user, rc.mysql_socket,
                rc.mysql_password && *rc.mysql_password ? " with a password" : "");
    } else {
        /* a server list carries its own ports */
        bool list = strchr(rc.mysql_host, ',') != NULL;
        fprintf(out, "  registry: MySQL database '%s' as '%s' at %s%s%.0d%s (not connected)\n",
                rc.mysql_database, rc.mysql_user, rc.mysql_host, list ? "" : ":",
                list ? 0 : rc.mysql_port,
                rc.mysql_password && *rc.mysql_password ? " with a password" : "");
    }
    fprintf(out, "  writes: %s\n",
            cfg->cluster_secret && *cfg->cluster_secret
                ? "the cluster secret, or a peer in --trusted_networks"
                : "only peers in --trusted_networks (no --cluster_secret)");
    return 0;
}
