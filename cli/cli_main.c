/* SPDX-License-Identifier: MIT
 *
 * cli_main.c - `roster`: parse the command word, initialise libraries once,
 * run the command. Exit codes follow sysexits(3): 64 usage, 69 unavailable,
 * 78 configuration, 70 internal.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include <curl/curl.h>

#include "cli.h"
#include "registry.h"

#ifndef ROSTER_VERSION
#define ROSTER_VERSION "dev"
#endif

static const struct cli_cmd *const commands[] = {&cli_cmd_start, &cli_cmd_model,  &cli_cmd_key,
                                                 &cli_cmd_alias, &cli_cmd_config, &cli_cmd_health};

static void
usage(FILE *out)
{
    fprintf(out, "usage: roster <command> [arguments]\n\n"
                 "roster runs a model-serving registry: controllers that share one registry\n"
                 "table, workers that register with them, and an OpenAI-compatible front door.\n\n"
                 "commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        fprintf(out, "  %-8s %s\n", commands[i]->name, commands[i]->summary);
    }
    fprintf(out, "  %-8s %s\n  %-8s %s\n\n", "help", "show help for a command (roster help start)",
            "version", "print the version");
    fprintf(out, "Run 'roster <command> --help' for the options of a command.\n");
}

static const struct cli_cmd *
lookup(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(commands[i]->name, name) == 0) {
            return commands[i];
        }
    }
    return NULL;
}

int
main(int argc, char **argv)
{
    const struct cli_cmd *cmd;
    int code;

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EX_USAGE : 0;
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("roster %s\n", ROSTER_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "help") == 0) {
        cmd = argc > 2 ? lookup(argv[2]) : NULL;
        if (cmd) {
            cmd->help(cmd, stdout);
        } else {
            usage(stdout);
        }
        return 0;
    }
    if (strcmp(argv[1], "config-doc") == 0) {
        return cli_config_doc(argc - 2, argv + 2);
    }
    cmd = lookup(argv[1]);
    if (!cmd) {
        fprintf(stderr, "roster: unknown command '%s'\n\n", argv[1]);
        usage(stderr);
        return EX_USAGE;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || reg_library_init() != REG_OK) {
        fprintf(stderr, "roster: cannot initialise libraries\n");
        return EX_SOFTWARE;
    }
    code = cmd->run(cmd, argc - 2, argv + 2);
    reg_library_end();
    curl_global_cleanup();
    return code;
}
