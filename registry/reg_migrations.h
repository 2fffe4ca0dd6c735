/* SPDX-License-Identifier: MIT
 *
 * reg_migrations.h - the schema migrations embedded from sql/<backend>/
 * by cmake/EmbedSql.cmake (internal to registry/). Constant data: any
 * thread may read it.
 */
#ifndef ROSTER_REG_MIGRATIONS_H
#define ROSTER_REG_MIGRATIONS_H

struct reg_migration {
    int version;      /* NNNN of the file name; 0 ends the array */
    const char *name; /* the file name */
    const char *sql;  /* statements, each ending with ';' at the end of a line */
};

extern const struct reg_migration reg_migrations_mysql[];
extern const struct reg_migration reg_migrations_sqlite[];

#endif
