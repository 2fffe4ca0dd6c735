/* SPDX-License-Identifier: MIT
 *
 * cli.h - the `roster` command: one binary, a table of commands
 * (cli_main.c), each command in its own file.
 *
 *   cli_start.c  roster start controller|worker|apiserver|webserver
 *   cli_model.c  roster model list|set|start|stop|restart (and the option
 *                table and controller client every model command shares)
 *   cli_chat.c   roster model chat
 *   cli_health.c roster health (container health checks)
 *   cli_settings.c roster key create|list|revoke|usage, roster alias
 *                set|list|rm (the cluster settings)
 *
 * The CLI is single-threaded and blocking (libcurl's easy interface); no
 * event loop runs in it.
 */
#ifndef ROSTER_CLI_H
#define ROSTER_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "flags.h"
#include "http_client.h"

struct cli_cmd {
    const char *name; /* "start", "model" */
    const char *usage;
    const char *summary;
    /* argv[0] is the first argument after the name; `self` is this entry */
    int (*run)(const struct cli_cmd *self, int argc, char **argv);
    void (*help)(const struct cli_cmd *self, FILE *out);
    const void *data; /* the command's own (cli_settings.c: its command group) */
};

extern const struct cli_cmd cli_cmd_start;
extern const struct cli_cmd cli_cmd_model;
extern const struct cli_cmd cli_cmd_health;
extern const struct cli_cmd cli_cmd_key;
extern const struct cli_cmd cli_cmd_alias;
extern const struct cli_cmd cli_cmd_config;

/* `roster key` and `roster alias` (cli_settings.c): their option tables
 * (each command takes the subset it names) and summaries, for the docs and
 * the man page. */
extern const struct flag_def cli_key_flag_defs[];
extern const char cli_key_summary[];
extern const struct flag_def cli_alias_flag_defs[];
extern const char cli_alias_summary[];
extern const char cli_config_summary[];

/* Prints `rows` (a JSON array of arrays of strings, the first the header)
 * as the framed table `roster model list` prints ("+---+" rules, "| a |"
 * cells padded to the widest, counted in code points). */
void cli_print_table(FILE *out, const cJSON *rows);

/* `roster health` (cli_health.c): its options, for --help, the docs and
 * the man page. */
extern const struct flag_def cli_health_flag_defs[];
extern const char cli_health_summary[];

/* The options of `roster model` (cli_model.c): one table for every model
 * command; each command accepts the subset it names. */
extern const struct flag_def cli_model_flag_defs[];
extern const char cli_model_summary[];

/* `roster start webserver` (cli_webserver.c), and its options' Markdown. */
int cli_webserver_main(int argc, char **argv);
void cli_webserver_doc(FILE *out);
/* The webserver's own option table and summary (cli_webserver.c), for the
 * man page. */
extern const struct flag_def web_flag_defs[];
extern const char web_usage[];
extern const char web_summary[];

struct cli_model_opts {
    char *controller_addr;
    char *model_name;
    char *model_type;
    bool json;
    char *host;
    int64_t port;
    double weight;
    bool clear_weight;
    char *enabled;
    char *system;
    double temperature; /* -1: not sent */
    int64_t max_tokens; /* 0: not sent */
    char *api_base;
    char *api_key;
    char *cluster_secret;
    int64_t timeout_ms;
    int64_t idle_timeout_ms;
};

/* Sends one request to the controllers of o->controller_addr in turn, with
 * the cluster secret when one is set. Returns 0 with the answer of the
 * first controller that answered with a status below 500 (release it with
 * http_client_response_cleanup). Otherwise prints to stderr what each
 * controller said (its error message, or why it could not be reached) and
 * returns -1. Blocks (o->timeout_ms per controller). */
int cli_ask_controllers(const struct cli_model_opts *o, const char *method, const char *path,
                        const char *body, struct http_client_response *resp);

/* The registry name of --model_name: "name@type" (--model_type added when
 * the name has no '@'). Returns 0, or -1 when it does not fit in `cap`. */
int cli_full_name(const struct cli_model_opts *o, char *out, size_t cap);

/* The instances of --model_name the controllers list, in roster's full
 * view (any health; with `routable_only`, the routable ones). Returns the
 * JSON array (caller frees with cJSON_Delete), or NULL after printing why,
 * with a sysexits code in *code. */
cJSON *cli_model_instances(const struct cli_model_opts *o, bool routable_only, int *code);

/* `roster model chat` (cli_chat.c): a streamed conversation with the model
 * in the terminal, or over a pipe. Returns the exit code. */
int cli_chat(const struct cli_model_opts *o);

/* `roster config-doc`: prints the Markdown of every option table
 * (docs/configuration.md); with --man, the roster(1) man page in roff,
 * made from the same tables. Returns the exit code. */
int cli_config_doc(int argc, char **argv);

#endif
