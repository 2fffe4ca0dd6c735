/* SPDX-License-Identifier: MIT
 *
 * cli.h - the `roster` command: one binary, a table of commands
 * (cli_main.c), each command in its own file.
 */
#ifndef ROSTER_CLI_H
#define ROSTER_CLI_H

#include <stdio.h>

#include "flags.h"

struct cli_cmd {
    const char *name; /* "start", "model" */
    const char *usage;
    const char *summary;
    int (*run)(int argc, char **argv); /* argv[0] is the first argument after the name */
    void (*help)(FILE *out);
};

extern const struct cli_cmd cli_cmd_start;
extern const struct cli_cmd cli_cmd_model;

/* The options of `roster model` (cli_model.c). */
extern const struct flag_def cli_model_flag_defs[];
extern const char cli_model_summary[];

/* `roster start webserver` (cli_webserver.c), and its options' Markdown. */
int cli_webserver_main(int argc, char **argv);
void cli_webserver_doc(FILE *out);

/* Prints the Markdown of every option table (docs/configuration.md). */
int cli_config_doc(int argc, char **argv);

#endif
