/* SPDX-License-Identifier: MIT
 *
 * api_config.c - options of `roster start apiserver`: DB-GPT's apiserver
 * flags (controller_addr, host, port, api_keys) plus roster's own routing,
 * timeouts and limits.
 */
#include "api.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* clang-format 14 would put the stringized name on a line of its own */
// clang-format off
#define F(name, type, def, lo, hi, env, fl, meta, help) \
    {#name, type, offsetof(struct api_config, name), def, lo, hi, env, fl, meta, help}
// clang-format on

const struct flag_def api_flag_defs[] = {
    F(controller_addr, FLAG_STR, "http://127.0.0.1:8000", 1, 0, "CONTROLLER_ADDRESS", 0, "URLS",
      "Controllers, comma-separated; the instance table is watched from one of them, failing "
      "over to the next."),
    F(host, FLAG_STR, "0.0.0.0", 1, 0, NULL, 0, "ADDR", "Address to listen on."),
    F(port, FLAG_INT, "8100", 0, 65535, NULL, 0, "PORT", "Port to listen on (0 = any free port)."),
    F(api_keys, FLAG_STR, NULL, 1, 0, NULL, FLAG_SECRET, "KEYS",
      "Client API keys, comma-separated (Authorization: Bearer KEY); none: no authentication."),
    F(routing, FLAG_ENUM, "p2c", 1, 0, NULL, 0,
      "p2c|weighted_random|round_robin|least_inflight|session",
      "p2c (power of two choices on in-flight requests per weight), weighted_random, "
      "round_robin (smooth weighted), least_inflight, or session (consistent hashing of the "
      "request's 'user' or X-Session-Id, with bounded load)."),
    F(threads, FLAG_INT, "1", 1, 64, NULL, 0, "N", "HTTP event-loop threads."),
    F(max_body_bytes, FLAG_INT, "8388608", 1024, 268435456, NULL, 0, "BYTES",
      "Largest request body accepted (413 beyond)."),
    F(connect_timeout_ms, FLAG_INT, "1000", 1, 600000, NULL, 0, "MS",
      "Connecting to an instance; beyond it the instance is ejected and the request retried "
      "elsewhere. Not when the instance answered other requests within the last second (a full "
      "accept queue: overload, not failure): the request is then retried elsewhere, or on it "
      "over a new connection (up to 3 times), and it stays in."),
    F(first_byte_timeout_ms, FLAG_INT, "120000", 1, 86400000, NULL, 0, "MS",
      "From sending a request to an instance to its first response byte (a non-streamed "
      "answer's comes when the whole generation is done): 504, and the instance is ejected."),
    F(idle_timeout_ms, FLAG_INT, "60000", 1, 86400000, NULL, 0, "MS",
      "Longest silence between two chunks of a streamed answer (the stream then ends with an "
      "error event)."),
    F(request_timeout_ms, FLAG_INT, "600000", 1, 86400000, NULL, 0, "MS",
      "A whole request to an instance, streaming included."),
    F(stream_buffer_bytes, FLAG_INT, "524288", 4096, 268435456, NULL, 0, "BYTES",
      "How far a slow client may fall behind a stream before the instance is no longer read "
      "(back-pressure through TCP); reading resumes when a quarter of it is left."),
    F(max_answer_bytes, FLAG_INT, "16777216", 65536, 1073741824, NULL, 0, "BYTES",
      "Largest non-streamed answer (held whole before it is sent on): 502 beyond. Streams are "
      "not held whole (see --stream_buffer_bytes)."),
    F(memory_budget_bytes, FLAG_INT, "1073741824", 0, 1099511627776.0, NULL, 0, "BYTES",
      "Most bytes that buffered answers and stream queues may hold at once, process-wide (0 = "
      "no limit); a request that would go past it gets 503 with Retry-After."),
    F(instance_networks, FLAG_STR, "", 1, 0, NULL, 0, "CIDRS",
      "If set, requests go only to instances whose address is inside these networks (SSRF "
      "guard, checked on the controller's list and again on the resolved address before "
      "connecting); other rows are not routable. The webserver applies it to its embedded "
      "controller's registrations too."),
    F(max_attempts, FLAG_INT, "3", 1, API_MAX_ATTEMPTS, NULL, 0, "N",
      "Instances tried per request (retries happen only before the first byte reaches the "
      "client, and never twice on one instance but for an overloaded one's new connections: "
      "see --connect_timeout_ms)."),
    F(eject_ms, FLAG_INT, "5000", 1, 3600000, NULL, 0, "MS",
      "How long an instance that failed (connect error, timeout, 5xx) gets no requests; then "
      "one trial request decides (with probes on, a probe sent at once decides sooner, and "
      "while probes fail no trial is sent)."),
    F(probe_interval_ms, FLAG_INT, "10000", 0, 3600000, NULL, 0, "MS",
      "Active probes: every MS each routable llm and text2vec instance gets a tiny generation "
      "from this server (a 1-token chat completion, a one-word embedding), and at once after "
      "a request ejected it; a probe that fails ejects the instance until one succeeds, which "
      "readmits it (0 = no probes)."),
    F(probe_timeout_ms, FLAG_INT, "5000", 1, 600000, NULL, 0, "MS",
      "A probe without its whole answer within MS has failed; keep it above the engine's "
      "worst queueing delay for a 1-token request under load."),
    F(queue_timeout_ms, FLAG_INT, "30000", 0, 3600000, NULL, 0, "MS",
      "When every instance of a model that a request tried is at capacity (429), the request "
      "waits in the model's queue up to this long (from its first wait) for a free slot, "
      "instead of failing at once; past it: 503 with Retry-After (0 = no queueing: 429 at "
      "once). The wait does not count against --request_timeout_ms."),
    F(queue_max, FLAG_INT, "1000", 1, 1000000, NULL, 0, "N",
      "Requests waiting per model (see --queue_timeout_ms); one more gets 429 with "
      "Retry-After."),
    F(watch_wait_secs, FLAG_INT, "30", 1, 60, NULL, 0, "SECS",
      "Long-poll duration of the controller watch."),
    F(control_timeout_ms, FLAG_INT, "2000", 50, 60000, NULL, 0, "MS",
      "Timeout of a controller call, on top of the long-poll duration."),
    F(cluster_secret, FLAG_STR, NULL, 1, 0, NULL, FLAG_SECRET, "SECRET",
      "Sent to the controllers (X-Roster-Secret), for those that protect reads."),
    F(access_log, FLAG_BOOL, "true", 1, 0, NULL, 0, NULL,
      "Log one line per request at info (method, path, status, duration, request id, "
      "instance); false: 5xx only."),
    F(access_log_sample, FLAG_INT, "1", 1, 1000000, NULL, 0, "N",
      "Log one request in N (5xx always): bounds the access log under load."),
    F(port_file, FLAG_STR, NULL, 1, 0, NULL, FLAG_HIDDEN, "PATH",
      "Write the bound port to PATH once listening (for tests and supervisors)."),
    HTTP_LIMIT_FLAGS(struct api_config, http),
    F(shutdown_grace_ms, FLAG_INT, "10000", 0, 3600000, NULL, 0, "MS",
      "On SIGTERM, time allowed for in-flight requests (a second signal stops at once)."),
    F(log_level, FLAG_ENUM, "info", 1, 0, NULL, 0, "error|warn|info|debug|trace",
      "The least severe messages logged."),
    F(check, FLAG_BOOL, "false", 1, 0, NULL, FLAG_ARGV_ONLY, NULL, FLAG_CHECK_HELP),
    {0},
};

const char api_usage[] = "roster start apiserver [options]";
const char api_summary[] =
    "Runs the OpenAI-compatible API server: /v1 and /api/v1 chat/completions, completions, "
    "embeddings and models, routed to routable, weighted instances from a local table that "
    "the controllers keep current (no controller call per request).";

void
api_config_cleanup(struct api_config *cfg)
{
    flags_cleanup(api_flag_defs, cfg);
}

int
api_config_load(struct api_config *cfg, int argc, char **argv)
{
    enum flag_source src[64];
    int rc = flags_load_role(api_flag_defs, cfg, argc, argv, api_usage, api_summary,
                             offsetof(struct api_config, log_level), src);

    if (rc != 0) {
        return rc;
    }
    if (cfg->check) {
        printf("%s --check\noptions:\n", api_usage);
        flags_print_effective(stdout, api_flag_defs, cfg, src);
    }
    return 0;
}
