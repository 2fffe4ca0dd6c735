/* SPDX-License-Identifier: MIT
 *
 * cli_start.c - `roster start controller|worker|apiserver|webserver`, and
 * `roster config-doc` (docs/configuration.md, and with --man the roster(1)
 * man page, both made from the option tables).
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "cli.h"
#include "api.h"
#include "ctl.h"
#include "wrk.h"

#ifndef ROSTER_VERSION
#define ROSTER_VERSION "dev"
#endif

struct role {
    const char *name;
    const char *summary;
    int (*main)(int argc, char **argv); /* NULL: not in this build */
};

static const struct role roles[] = {
    {"controller", "the model controller (registry API over SQLite or MySQL)", ctl_main},
    {"worker", "a model worker (builtin models, or an OpenAI-compatible engine it proxies or runs)",
     wrk_main},
    {"apiserver", "the OpenAI-compatible API server (routes to healthy, weighted instances)",
     api_main},
    {"webserver",
     "the API server and the web dashboard on one port; with no --controller_addr, the whole "
     "system in one process (controller on SQLite, builtin models)",
     cli_webserver_main},
};

static void
help(const struct cli_cmd *self, FILE *out)
{
    (void)self;
    fprintf(out, "usage: roster start <role> [options]\n\nroles:\n");
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
        fprintf(out, "  %-11s %s\n", roles[i].name, roles[i].summary);
    }
    fprintf(out, "\nRun 'roster start <role> --help' for the options of a role.\n");
}

static int
run(const struct cli_cmd *self, int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        help(self, argc < 1 ? stderr : stdout);
        return argc < 1 ? EX_USAGE : 0;
    }
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
        if (strcmp(argv[0], roles[i].name) != 0) {
            continue;
        }
        if (!roles[i].main) {
            fprintf(stderr,
                    "roster: 'start %s' is not available in this build yet (see README.md, "
                    "'Status')\n",
                    roles[i].name);
            return EX_UNAVAILABLE;
        }
        return roles[i].main(argc - 1, argv + 1);
    }
    fprintf(stderr, "roster: unknown role '%s'\n\n", argv[0]);
    help(self, stderr);
    return EX_USAGE;
}

const struct cli_cmd cli_cmd_start = {
    .name = "start",
    .usage = "roster start <role> [options]",
    .summary = "run a controller, a worker, the apiserver or the webserver",
    .run = run,
    .help = help,
};

/* ---- roster(1): the man page, in roff, from the same tables ------------------ */

/* The commands of cli_main.c, in its order (the install test checks that
 * every command of `roster --help` is in the man page). */
static const struct cli_cmd *const man_commands[] = {
    &cli_cmd_start, &cli_cmd_model, &cli_cmd_key, &cli_cmd_alias, &cli_cmd_config, &cli_cmd_health};

static const char man_config_text[] =
    "Every option can be given as `--name value`, `--name=value`, with dashes or\n"
    "underscores (`--registry-db-host` = `--registry_db_host`), or in the environment\n"
    "as `ROSTER_<NAME>` (upper case). The command line wins over the environment.\n"
    "An option with a fixed set of values shows them (`a|b|c`, any case); other values\n"
    "are refused at start. A secret given on the command line is overwritten in the\n"
    "process's arguments once read (`ps` then shows x's) and a warning is logged; it\n"
    "was readable until then, so give secrets in the environment.\n";

/* Writes `s` as roff text: backslashes and hyphens escaped, Markdown's
 * `code` marks dropped, and a '.' or '\'' that would start a line made
 * literal (`at_line_start`: the output is at the start of a line). */
static void
roff(FILE *out, const char *s, bool at_line_start)
{
    for (; *s; s++) {
        if (at_line_start && (*s == '.' || *s == '\'')) {
            fputs("\\&", out);
        }
        at_line_start = false;
        switch (*s) {
        case '\\':
            fputs("\\e", out);
            break;
        case '-':
            fputs("\\-", out);
            break;
        case '`':
            break;
        case '\n':
            fputc('\n', out);
            at_line_start = true;
            break;
        default:
            fputc(*s, out);
        }
    }
}

/* A text line: roff(s) and a newline. */
static void
roff_line(FILE *out, const char *s)
{
    roff(out, s, true);
    fputc('\n', out);
}

/* "ROSTER_NAME" and the table's extra names, as flags_print_help says them. */
static void
man_env_names(FILE *out, const struct flag_def *d)
{
    char names[160];

    flags_env_names(d, names, sizeof(names));
    roff(out, names, false);
}

/* One .TP entry per visible option: "--name METAVAR", the help sentence,
 * then "default: X; env: NAMES" as --help prints them. */
static void
man_options(FILE *out, const struct flag_def *defs)
{
    for (size_t i = 0; defs[i].name; i++) {
        const struct flag_def *d = &defs[i];

        if (d->flags & FLAG_HIDDEN) {
            continue;
        }
        fputs(".TP\n\\fB\\-\\-", out);
        roff(out, d->name, false);
        fputs("\\fR", out);
        if (d->metavar) {
            fputs(" \\fI", out);
            roff(out, d->metavar, false);
            fputs("\\fR", out);
        }
        fputc('\n', out);
        roff_line(out, d->help);
        fputs(".br\n", out);
        if (d->def && !(d->flags & FLAG_SECRET)) {
            fputs("default: ", out);
            roff(out, *d->def ? d->def : "(empty)", false);
            fputs("; env: ", out);
        } else {
            fputs("env: ", out);
        }
        man_env_names(out, d);
        fputc('\n', out);
    }
    fputs(".TP\n\\fB\\-\\-help\\fR\nshow this help\n", out);
}

static bool
man_has(const struct flag_def *defs, const char *name)
{
    for (size_t i = 0; defs && defs[i].name; i++) {
        if (strcmp(defs[i].name, name) == 0) {
            return true;
        }
    }
    return false;
}

/* A later group of the webserver's options: its title and the names no
 * earlier table has (as flags_print_help_groups lists them). */
static void
man_group(FILE *out, const char *title, const char *see, const struct flag_def *defs,
          const struct flag_def *earlier1, const struct flag_def *earlier2)
{
    bool first = true;

    fputs(".PP\n", out);
    roff(out, title, true);
    fputs(" (see \\fB", out);
    roff(out, see, false);
    fputs("\\fR):\n", out);
    for (size_t i = 0; defs[i].name; i++) {
        if ((defs[i].flags & FLAG_HIDDEN) || man_has(earlier1, defs[i].name) ||
            man_has(earlier2, defs[i].name)) {
            continue;
        }
        fputs(first ? "\\fB\\-\\-" : ",\n\\fB\\-\\-", out);
        roff(out, defs[i].name, false);
        fputs("\\fR", out);
        first = false;
    }
    fputs("\n", out);
}

static void
man_section(FILE *out, const char *title, const char *usage, const char *summary,
            const struct flag_def *defs)
{
    fputs(".SH \"", out);
    roff(out, title, false);
    fputs("\"\n.B ", out);
    roff(out, usage, false);
    fputs("\n.PP\n", out);
    roff_line(out, summary);
    fputs(".SS Options\n", out);
    man_options(out, defs);
}

/* A command with subcommands (`roster model`, `roster key`, `roster
 * alias`): its usage lines and command list come from its --help (its file
 * keeps the command table), one per line:
 *   "usage: roster NAME CMD ..." or "       roster NAME CMD ..."
 *   "commands:" then "  NAME     SUMMARY" lines up to a blank line. */
static int
man_subcommands(FILE *out, const struct cli_cmd *cmd, const char *cmd_summary,
                const struct flag_def *defs)
{
    char prefix[64], title[64];
    size_t plen;
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    bool in_commands = false;
    int rc = -1;

    if (!mem) {
        return -1;
    }
    snprintf(prefix, sizeof(prefix), "roster %s ", cmd->name);
    plen = strlen(prefix);
    snprintf(title, sizeof(title), "roster %s", cmd->name);
    for (char *t = title; *t; t++) {
        *t = (char)toupper((unsigned char)*t);
    }
    cmd->help(cmd, mem);
    if (fclose(mem) != 0 || !text) {
        goto out;
    }
    fputs(".SH \"", out);
    roff(out, title, false);
    fputs("\"\n", out);
    for (char *line = text, *next; *line; line = next) {
        char *nl = strchr(line, '\n');
        next = nl ? nl + 1 : line + strlen(line);
        if (nl) {
            *nl = '\0';
        }
        char *p = line;
        if (strncmp(p, "usage:", 6) == 0) {
            p += 6;
        }
        while (*p == ' ') {
            p++;
        }
        if (strncmp(p, prefix, plen) == 0) {
            fputs(".B ", out);
            roff(out, p, false);
            fputs("\n.br\n", out);
        } else if (strcmp(line, "commands:") == 0) {
            fputs(".PP\n", out);
            roff_line(out, cmd_summary);
            fputs(".SS Commands\n", out);
            in_commands = true;
        } else if (in_commands && *line == '\0') {
            in_commands = false;
        } else if (in_commands && strncmp(line, "  ", 2) == 0) {
            char *name = line + 2;
            char *end = strchr(name, ' ');
            char *summary = end;
            if (!end) {
                goto out;
            }
            *end = '\0';
            summary++;
            while (*summary == ' ') {
                summary++;
            }
            fputs(".TP\n.B ", out);
            roff(out, name, false);
            fputc('\n', out);
            roff_line(out, summary);
        }
    }
    fputs(".SS Options\nEach command takes the options it names (\\fB", out);
    roff(out, prefix, false);
    fputs("\\fIcommand\\fB \\-\\-help\\fR lists them).\n", out);
    man_options(out, defs);
    rc = 0;
out:
    free(text);
    return rc;
}

static int
print_man(FILE *out)
{
    fputs(".\\\" Generated by `roster config-doc --man` from the option tables; do not edit.\n"
          ".TH ROSTER 1 \"\" \"roster " ROSTER_VERSION "\" \"User Commands\"\n"
          ".nh\n.ad l\n"
          ".SH NAME\n"
          "roster \\- a model\\-serving registry: controllers, workers and an "
          "OpenAI\\-compatible API server\n"
          ".SH SYNOPSIS\n",
          out);
    for (size_t i = 0; i < sizeof(man_commands) / sizeof(man_commands[0]); i++) {
        fputs(".B ", out);
        roff(out, man_commands[i]->usage, false);
        fputs("\n.br\n", out);
    }
    fputs(".B roster help\n[\\fIcommand\\fR]\n.br\n.B roster version\n.br\n"
          ".B roster config\\-doc\n[\\fB\\-\\-man\\fR]\n"
          ".SH DESCRIPTION\n"
          "roster runs a model\\-serving registry: controllers that share one registry\n"
          "table, workers that register with them, and an OpenAI\\-compatible front door.\n"
          ".SH COMMANDS\n",
          out);
    for (size_t i = 0; i < sizeof(man_commands) / sizeof(man_commands[0]); i++) {
        fputs(".TP\n.B ", out);
        roff(out, man_commands[i]->name, false);
        fputc('\n', out);
        roff_line(out, man_commands[i]->summary);
    }
    fputs(".TP\n.B help\nshow help for a command (roster help start)\n"
          ".TP\n.B version\nprint the version\n"
          ".TP\n.B config\\-doc\nprint docs/configuration.md (with \\fB\\-\\-man\\fR, this "
          "page)\n"
          ".PP\nRoles of \\fBroster start\\fR:\n",
          out);
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
        fputs(".TP\n.B ", out);
        roff(out, roles[i].name, false);
        fputc('\n', out);
        roff_line(out, roles[i].summary);
    }
    fputs(".SH CONFIGURATION\n", out);
    roff(out, man_config_text, true);
    man_section(out, "ROSTER START CONTROLLER", ctl_usage, ctl_summary, ctl_flag_defs);
    man_section(out, "ROSTER START WORKER", wrk_usage, wrk_summary, wrk_flag_defs);
    man_section(out, "ROSTER START APISERVER", api_usage, api_summary, api_flag_defs);
    man_section(out, "ROSTER START WEBSERVER", web_usage, web_summary, web_flag_defs);
    /* the groups of cli_webserver.c's groups() */
    man_group(out, "API server options", "roster start apiserver --help", api_flag_defs,
              web_flag_defs, NULL);
    man_group(out, "Embedded mode: controller options", "roster start controller --help",
              ctl_flag_defs, web_flag_defs, api_flag_defs);
    if (man_subcommands(out, &cli_cmd_model, cli_model_summary, cli_model_flag_defs) != 0 ||
        man_subcommands(out, &cli_cmd_key, cli_key_summary, cli_key_flag_defs) != 0 ||
        man_subcommands(out, &cli_cmd_alias, cli_alias_summary, cli_alias_flag_defs) != 0 ||
        man_subcommands(out, &cli_cmd_config, cli_config_summary, cli_alias_flag_defs) != 0) {
        return -1;
    }
    man_section(out, "ROSTER HEALTH", cli_cmd_health.usage, cli_health_summary,
                cli_health_flag_defs);
    fputs(".SH \"EXIT STATUS\"\n"
          "0 on success; 64 on a usage error, 78 on a configuration error, 69 when a service\n"
          "is unavailable, 70 on an internal error (sysexits(3)).\n"
          "\\fBroster health\\fR exits 1 when the service is not healthy.\n"
          ".SH FILES\n"
          ".TP\n.I /etc/roster/ROLE\\-INSTANCE.env\n"
          "The environment of the systemd unit \\fBroster\\-ROLE@INSTANCE.service\\fR (ROSTER_*\n"
          "variables, secrets included: mode 0600). Examples in\n"
          ".IR /etc/roster/*.env.example .\n"
          ".TP\n.I /usr/share/roster/sql/\n"
          "The registry's migrations, for MySQL/MariaDB and SQLite (the controller also\n"
          "applies them itself).\n"
          ".SH \"SEE ALSO\"\n"
          ".BR systemd.exec (5),\n"
          ".BR journalctl (1);\n"
          "the documentation in\n"
          ".IR /usr/share/doc/roster/ .\n",
          out);
    return ferror(out) ? -1 : 0;
}

int
cli_config_doc(int argc, char **argv)
{
    if (argc == 1 && strcmp(argv[0], "--man") == 0) {
        if (print_man(stdout) != 0 || fflush(stdout) != 0) {
            fprintf(stderr, "roster: config-doc: cannot write the man page\n");
            return EX_IOERR;
        }
        return 0;
    }
    if (argc > 0) {
        fprintf(stderr, "usage: roster config-doc [--man]\n");
        return EX_USAGE;
    }
    printf("# Configuration reference\n\n"
           "Generated by `roster config-doc` from the option tables in the source; do not edit\n"
           "by hand (CI checks that this file is current).\n\n"
           "Every option can be given as `--name value`, `--name=value`, with dashes or\n"
           "underscores (`--registry-db-host` = `--registry_db_host`), or in the environment\n"
           "as `ROSTER_<NAME>` (upper case). The command line wins over the environment.\n"
           "An option with a fixed set of values shows them (`a|b|c`, any case); other values\n"
           "are refused at start. A secret given on the command line is overwritten in the\n"
           "process's arguments once read (`ps` then shows x's) and a warning is logged; it\n"
           "was readable until then, so give secrets in the environment.\n\n");
    flags_print_markdown(stdout, "roster start controller", ctl_summary, ctl_flag_defs);
    flags_print_markdown(stdout, "roster start worker", wrk_summary, wrk_flag_defs);
    flags_print_markdown(stdout, "roster start apiserver", api_summary, api_flag_defs);
    cli_webserver_doc(stdout);
    flags_print_markdown(stdout, "roster model", cli_model_summary, cli_model_flag_defs);
    flags_print_markdown(stdout, "roster key", cli_key_summary, cli_key_flag_defs);
    flags_print_markdown(stdout, "roster alias", cli_alias_summary, cli_alias_flag_defs);
    flags_print_markdown(stdout, "roster config", cli_config_summary, cli_alias_flag_defs);
    flags_print_markdown(stdout, "roster health", cli_health_summary, cli_health_flag_defs);
    return 0;
}
