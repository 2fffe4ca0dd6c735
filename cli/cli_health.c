/* SPDX-License-Identifier: MIT
 *
 * cli_health.c - `roster health [--url URL] [--timeout_ms MS]`: one GET of
 * a service's /api/health, for container HEALTHCHECKs and probes in images
 * that have no curl.
 *
 * Exit status: 0 when the answer is HTTP 200 (one line on stdout), 1
 * otherwise (unreachable, timed out, any other status; one line on stderr
 * saying why), 64 on a usage error. Docker reads 0 as healthy and 1 as
 * unhealthy.
 *
 * The default URL is http://127.0.0.1:$ROSTER_PORT/api/health (ROSTER_PORT
 * defaults to 8000, the controller's port), so a container whose service
 * takes its port from ROSTER_PORT needs no option at all.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "cli.h"
#include "flags.h"
#include "http_client.h"
#include "util.h"

/* a role's /api/health is a few hundred bytes; the apiserver's lists its
 * controllers */
#define MAX_HEALTH_BODY (1024u * 1024)
/* how much of a failing answer's body the reason quotes */
#define MAX_QUOTE 200

struct health_opts {
    char *url;
    int64_t timeout_ms;
};

/* clang-format 14 would put the stringized name on a line of its own */
// clang-format off
#define F(name, type, def, lo, hi, env, fl, meta, help) \
    {#name, type, offsetof(struct health_opts, name), def, lo, hi, env, fl, meta, help}
// clang-format on

const struct flag_def cli_health_flag_defs[] = {
    F(url, FLAG_STR, NULL, 1, 0, NULL, 0, "URL",
      "The health endpoint to ask (unset: http://127.0.0.1:$ROSTER_PORT/api/health, with "
      "ROSTER_PORT 8000 when unset)."),
    F(timeout_ms, FLAG_INT, "3000", 1, 600000, NULL, 0, "MS",
      "Give up (exit 1) when no complete answer arrived within MS milliseconds."),
    {0},
};

const char cli_health_usage[] = "roster health [--url URL] [--timeout_ms MS]";
const char cli_health_summary[] =
    "Asks a roster service's /api/health once: exit status 0 when it answers HTTP 200, 1 when "
    "it cannot be reached, times out or answers anything else (with one line on stderr saying "
    "why). For container health checks and probes in images without curl.";

static void
help(const struct cli_cmd *self, FILE *out)
{
    (void)self;
    flags_print_help(out, cli_health_usage, cli_health_summary, cli_health_flag_defs);
}

/* The default URL from ROSTER_PORT. Returns 0, or -1 with a reason. */
static int
default_url(char *out, size_t cap, char *err, size_t errcap)
{
    const char *port = getenv("ROSTER_PORT");
    int64_t p = 8000;

    if (port && *port && util_parse_i64(port, 1, 65535, &p) != 0) {
        snprintf(err, errcap, "ROSTER_PORT='%s' is not a port in [1, 65535] (or give --url)", port);
        return -1;
    }
    snprintf(out, cap, "http://127.0.0.1:%lld/api/health", (long long)p);
    return 0;
}

/* The start of a body on one line: control characters as spaces. */
static void
quote(const struct buf *b, char *out, size_t cap)
{
    size_t n = 0;

    for (size_t i = 0; i < b->len && n + 4 < cap && i < MAX_QUOTE; i++) {
        unsigned char c = (unsigned char)b->data[i];
        out[n++] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
    }
    if (b->len > MAX_QUOTE && n + 4 < cap) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

static int
run(const struct cli_cmd *self, int argc, char **argv)
{
    struct health_opts o;
    struct http_client_response resp = {0};
    char url[UTIL_URL_MAX], shown[UTIL_URL_MAX + 16];
    char err[320];
    char body[MAX_QUOTE + 8];
    int code = 1;
    int rc;

    memset(&o, 0, sizeof(o));
    rc = flags_parse(cli_health_flag_defs, &o, argc, argv, NULL, err, sizeof(err));
    if (rc == 1) {
        help(self, stdout);
        code = 0;
        goto out;
    }
    if (rc != 0) {
        fprintf(stderr, "roster: health: %s\n", err);
        code = EX_USAGE;
        goto out;
    }
    if (o.url) {
        if (util_strlcpy(url, o.url, sizeof(url)) >= sizeof(url)) {
            fprintf(stderr, "roster: health: --url is longer than %zu bytes\n", sizeof(url) - 1);
            code = EX_USAGE;
            goto out;
        }
    } else if (default_url(url, sizeof(url), err, sizeof(err)) != 0) {
        fprintf(stderr, "roster: health: %s\n", err);
        code = EX_USAGE;
        goto out;
    }
    util_url_redact(url, shown, sizeof(shown));
    if (http_client_request("GET", url, NULL, 0, NULL, (int)o.timeout_ms, MAX_HEALTH_BODY, &resp,
                            err, sizeof(err)) != 0) {
        fprintf(stderr, "roster: health: %s: %s\n", shown, err);
        goto out;
    }
    if (resp.status != 200) {
        quote(&resp.body, body, sizeof(body));
        fprintf(stderr, "roster: health: %s: HTTP %ld%s%s\n", shown, resp.status, *body ? ": " : "",
                body);
        goto out;
    }
    printf("%s: HTTP 200\n", shown);
    code = 0;
out:
    http_client_response_cleanup(&resp);
    flags_cleanup(cli_health_flag_defs, &o);
    return code;
}

const struct cli_cmd cli_cmd_health = {
    .name = "health",
    .usage = cli_health_usage,
    .summary = "ask a service's /api/health: exit 0 when it answers 200, 1 otherwise",
    .run = run,
    .help = help,
};
