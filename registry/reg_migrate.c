/* SPDX-License-Identifier: MIT
 *
 * reg_migrate.c - applies the numbered migrations of sql/<backend>/.
 *
 * DESIGN
 * Several controllers may start at once against one database, and one may
 * die half-way through a migration. So:
 *   - the run holds a migration lock (MySQL GET_LOCK, SQLite BEGIN
 *     IMMEDIATE) while it reads and extends roster_schema_migrations;
 *   - each migration file is a list of statements, each ending with ';' at
 *     the end of a line; the backend treats "column/index already exists"
 *     as success, so re-running a migration whose bookkeeping row was lost
 *     is harmless (MySQL DDL commits implicitly and cannot be rolled back);
 *   - a migration's version is recorded after all its statements ran.
 */
#include "reg_backend.h"
#include "reg_migrations.h"

#include <stdlib.h>
#include <string.h>

static bool
blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') {
            return false;
        }
    }
    return true;
}

/* Runs each ';'-terminated statement of `sql` (comment lines skipped). */
static int
exec_script(struct reg_store *st, const char *sql)
{
    size_t len = strlen(sql);
    /* each line is copied with a '\n' (one more than the text has when the
     * last line lacks one), then a NUL */
    char *stmt = malloc(len + 2);
    size_t used = 0;
    const char *line = sql;
    int rc = REG_OK;

    if (!stmt) {
        return REG_ENOMEM;
    }
    while (*line && rc == REG_OK) {
        const char *eol = strchr(line, '\n');
        size_t n = eol ? (size_t)(eol - line) : strlen(line);
        const char *p = line;

        while (p < line + n && (*p == ' ' || *p == '\t')) {
            p++;
        }
        if (!(p + 1 < line + n && p[0] == '-' && p[1] == '-')) {
            memcpy(stmt + used, line, n);
            used += n;
            stmt[used++] = '\n';
            /* a statement ends at a line whose last non-blank byte is ';' */
            size_t e = n;
            while (e > 0 && (line[e - 1] == ' ' || line[e - 1] == '\r')) {
                e--;
            }
            if (e > 0 && line[e - 1] == ';') {
                stmt[used] = '\0';
                rc = st->ops->migrate_exec(st, stmt);
                used = 0;
            }
        }
        line = eol ? eol + 1 : line + n;
    }
    if (rc == REG_OK && !blank(stmt, used)) {
        /* never record a migration as applied with its last statement unrun */
        reg__set_err(st, "migration text ends without ';'");
        rc = REG_ESCHEMA;
    }
    free(stmt);
    return rc;
}

int
reg__migrate(struct reg_store *st)
{
    const struct reg_migration *list =
        st->cfg.backend == REG_MYSQL ? reg_migrations_mysql : reg_migrations_sqlite;
    uint64_t applied = 0;
    int rc;

    rc = st->ops->migrate_lock(st);
    if (rc != REG_OK) {
        return rc;
    }
    rc = st->ops->migrate_applied(st, &applied);
    for (const struct reg_migration *m = list; rc == REG_OK && m->version; m++) {
        if (m->version < 1 || m->version > 64) {
            reg__set_err(st, "migration %s: version out of range", m->name);
            rc = REG_ESCHEMA;
            break;
        }
        if (applied & (UINT64_C(1) << (m->version - 1))) {
            continue;
        }
        rc = exec_script(st, m->sql);
        if (rc == REG_OK) {
            rc = st->ops->migrate_record(st, m->version, m->name);
        }
        if (rc == REG_EBACKEND) {
            char detail[sizeof(st->errmsg)];
            memcpy(detail, st->errmsg, sizeof(detail));
            reg__set_err(st, "migration %s failed: %s", m->name, detail);
            rc = REG_ESCHEMA;
        }
    }
    int urc = st->ops->migrate_unlock(st, rc == REG_OK);
    return rc != REG_OK ? rc : urc;
}
