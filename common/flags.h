/* SPDX-License-Identifier: MIT
 *
 * flags.h - table-driven command-line and environment configuration.
 *
 * Each service describes its options once, as an array of flag_def (PgBouncer's
 * CfKey, tmux's cmd_entry). The same table parses argv and the environment,
 * prints --help, and generates docs/configuration.md, so the three cannot
 * drift apart.
 *
 * Names are written with underscores; on the command line dashes and
 * underscores are interchangeable (--registry-db-host == --registry_db_host),
 * as DB-GPT accepts. Values come from, in increasing precedence: the
 * default, the environment (ROSTER_<NAME> and any alias in `env`), argv.
 *
 * Threads: parsing runs once, on the main thread, before any other thread
 * starts (it reads the environment and may rewrite argv in place); the
 * tables are constant. No locks.
 */
#ifndef ROSTER_FLAGS_H
#define ROSTER_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum flag_type {
    FLAG_STR,    /* char * (owned, strdup'd; NULL when unset) */
    FLAG_INT,    /* int64_t */
    FLAG_DOUBLE, /* double */
    FLAG_BOOL,   /* bool; "--name" alone means true */
    FLAG_ENUM,   /* char *, as FLAG_STR, but one of the choices written in `metavar`
                  * as "a|b|c": matched without regard to case and stored as written
                  * there; anything else is refused by flags_parse (--help and the
                  * docs show the choices) */
};

#define FLAG_SECRET_MAX 512 /* longest value of a FLAG_SECRET option */

enum {
    FLAG_SECRET = 1,    /* never printed; when given on argv: blanked there, with a warning */
    FLAG_HIDDEN = 2,    /* not in --help or the docs */
    FLAG_ARGV_ONLY = 4, /* not read from the environment (--check) */
};

struct flag_def {
    const char *name; /* canonical, with underscores; NULL ends the table */
    enum flag_type type;
    size_t offset;   /* offsetof(config struct, field) */
    const char *def; /* default as text, NULL = unset / 0 / false */
    double min, max; /* numeric range (inclusive); ignored if min > max */
    const char *env; /* extra environment names, comma-separated, or NULL */
    unsigned flags;
    const char *metavar; /* "HOST", "SECS", ...; NULL for booleans; the choices
                          * "a|b|c" of a FLAG_ENUM */
    const char *help;    /* one sentence */
};

enum flag_source { FLAG_FROM_DEFAULT = 0, FLAG_FROM_ENV, FLAG_FROM_ARGV };

/* Fills `cfg` from defaults, the environment and argv[0..argc). Every argv
 * element must be a known flag (or its value). Returns 0; 1 when --help or
 * -h was given (nothing else done); -1 with a message in `err` on an
 * unknown flag, a missing value, a value out of range or not among a
 * FLAG_ENUM's choices (the message never holds a FLAG_SECRET's value).
 * argv is only read. `sources`, if not
 * NULL, has one slot per table entry and receives where each value came
 * from. Call flags_cleanup() afterwards in every case. */
int flags_parse(const struct flag_def *defs, void *cfg, int argc, char **argv,
                enum flag_source *sources, char *err, size_t errcap);

/* The number of entries of a table (a `sources` array needs as many). */
size_t flags_count(const struct flag_def *defs);

/* Fills `cfg` with the table's defaults only (no environment, no argv): a
 * component a process configures itself. Returns 0 or -1 (out of memory).
 * flags_cleanup() frees what it stored. */
int flags_set_defaults(const struct flag_def *defs, void *cfg, char *err, size_t errcap);

/* One table and the struct it fills, for a command that takes the options
 * of several (the webserver: its own, the API server's, the controller's). */
struct flag_group {
    const char *title; /* help heading of a later group ("API server options") */
    const char *see;   /* where they are described ("roster start apiserver --help") */
    const struct flag_def *defs;
    void *cfg;
    enum flag_source *sources; /* one per entry of defs, or NULL */
};

/* As flags_parse over several groups: defaults and the environment fill
 * every group; each argv option goes to the first group that has it (an
 * option of a later group that an earlier group also has is shadowed: it
 * keeps its default or environment value). Call flags_cleanup() on every
 * group afterwards in every case. */
int flags_parse_groups(struct flag_group *g, size_t n, int argc, char **argv, char *err,
                       size_t errcap);
/* --help: the first group's options in full, then the names each later
 * group adds. */
void flags_print_help_groups(FILE *out, const char *usage, const char *summary,
                             const struct flag_group *g, size_t n);
/* The same for docs/configuration.md. */
void flags_print_markdown_groups(FILE *out, const char *title, const char *summary,
                                 const struct flag_group *g, size_t n);

/* Overwrites, in place, the value of every FLAG_SECRET option given in
 * argv[0..argc) with 'x's (argv as flags_parse_groups read it: the same
 * options, the same groups), so that /proc/PID/cmdline and ps no longer show
 * it. Call it after a successful parse (the values were copied) and before
 * the process does anything slow. The value was visible from exec until
 * then: the environment is the place for secrets. Returns how many values
 * were overwritten. Writes into the strings argv points to (they must be
 * writable: main's argv is). Main thread, at start-up. */
int flags_scrub_secrets(const struct flag_group *g, size_t n, int argc, char **argv);

/* The warning every role logs for a FLAG_SECRET option given on the
 * command line (the option's name only, never its value). */
void flags_warn_secret_on_argv(const struct flag_def *d);

/* What every `roster start <role>` does with its options: flags_parse;
 * --help printed to stdout (returns 1); an error printed to stderr (returns
 * -1); `log_level_offset` (offsetof the role's char *log_level) applied to
 * the logger; each FLAG_SECRET option given on the command line
 * overwritten in argv (flags_scrub_secrets) and a warning logged for it.
 * `sources` (NULL, or one slot per table entry) receives where each value
 * came from. Returns 0 otherwise. */
int flags_load_role(const struct flag_def *defs, void *cfg, int argc, char **argv,
                    const char *usage, const char *summary, size_t log_level_offset,
                    enum flag_source *sources);

/* The effective configuration, one option per line ("  --name  value
 * (where it came from)"); FLAG_SECRET values are shown as "***" when set.
 * `src` may be NULL (no provenance). For --check. */
void flags_print_effective(FILE *out, const struct flag_def *defs, const void *cfg,
                           const enum flag_source *src);

/* The same for several groups (an option shadowed by an earlier group is
 * printed once). */
struct flag_group;
void flags_print_effective_groups(FILE *out, const struct flag_group *g, size_t n);

/* The --check option every `roster start <role>` table carries (a bool
 * field named `check`): validate, print, exit; read from argv only. */
#define FLAG_CHECK_HELP                                                                            \
    "Check the options, the environment and the files they name, print the effective "             \
    "configuration (secrets masked) and exit: 0 when it would start, non-zero with the reason. "   \
    "Binds and connects nothing."

/* Frees the strings flags_parse stored in `cfg`. */
void flags_cleanup(const struct flag_def *defs, void *cfg);

/* The environment variables an option reads ("ROSTER_NAME, EXTRA"), or
 * "(command line only)". */
void flags_env_names(const struct flag_def *d, char *out, size_t cap);

/* --help text: usage line, then one entry per flag with default and env. */
void flags_print_help(FILE *out, const char *usage, const char *summary,
                      const struct flag_def *defs);

/* A Markdown table of the flags (docs/configuration.md). */
void flags_print_markdown(FILE *out, const char *title, const char *summary,
                          const struct flag_def *defs);

#endif
