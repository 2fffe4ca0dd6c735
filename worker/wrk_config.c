/* SPDX-License-Identifier: MIT
 *
 * wrk_config.c - options of `roster start worker`: DB-GPT's worker flags
 * (model_name, model_path, worker_type, host, port, worker_register_host,
 * controller_addr, heartbeat_interval, concurrency) plus roster's own.
 */
#include "wrk.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* clang-format 14 would put the stringized name on a line of its own */
// clang-format off
#define F(name, type, def, lo, hi, env, fl, meta, help) \
    {#name, type, offsetof(struct wrk_config, name), def, lo, hi, env, fl, meta, help}
// clang-format on

const struct flag_def wrk_flag_defs[] = {
    F(model_name, FLAG_STR, NULL, 1, 0, NULL, 0, "NAMES",
      "Model(s) to serve, comma-separated (one process may serve several); registered as "
      "NAME@WORKER_TYPE."),
    F(model_path, FLAG_STR, NULL, 1, 0, NULL, 0, "PATH",
      "Model files (unused by the builtin backend; accepted for DB-GPT compatibility)."),
    F(worker_type, FLAG_ENUM, "llm", 1, 0, NULL, 0, "llm|text2vec",
      "'llm' (text generation) or 'text2vec' (embeddings)."),
    F(host, FLAG_STR, "0.0.0.0", 1, 0, NULL, 0, "ADDR", "Address to listen on."),
    F(port, FLAG_INT, "8001", 0, 65535, NULL, 0, "PORT", "Port to listen on (0 = any free port)."),
    F(worker_register_host, FLAG_STR, NULL, 1, 0, NULL, 0, "HOST",
      "Address put in the registry (default: --host, or 127.0.0.1 when --host is 0.0.0.0)."),
    F(controller_addr, FLAG_STR, "http://127.0.0.1:8000", 1, 0, "CONTROLLER_ADDRESS", 0, "URLS",
      "Controllers, comma-separated; the worker starts at a random one and fails over."),
    F(heartbeat_interval, FLAG_DOUBLE, "20", 0.05, 3600, NULL, 0, "SECS",
      "Seconds between heartbeats; the registry holds the instance for three of them."),
    F(concurrency, FLAG_INT, "0", 0, 100000, NULL, 0, "N",
      "Requests served at once per model, reported as capacity (0 = DB-GPT's defaults: 5 for "
      "llm, 100 for text2vec)."),
    F(max_queue, FLAG_INT, "16", 0, 100000, NULL, 0, "N",
      "Requests that may wait per model when all are busy; beyond, 429 with Retry-After."),
    F(queue_timeout_ms, FLAG_INT, "10000", 1, 3600000, NULL, 0, "MS",
      "Longest wait in the queue; then 503 with Retry-After (never an unbounded wait)."),
    F(weight, FLAG_DOUBLE, "1", 0, 1000000, NULL, 0, "W", "Routing weight of the instances."),
    F(backend, FLAG_ENUM, "builtin", 1, 0, NULL, 0, "builtin|openai|exec",
      "'builtin' (a small model trained at start-up on roster's docs: for trying roster out "
      "and for tests); 'openai' (proxy to the OpenAI-compatible engine at --upstream); 'exec' "
      "(start --engine_cmd, supervise it, and proxy to it at --upstream)."),
    F(upstream, FLAG_STR, NULL, 1, 0, NULL, 0, "URL",
      "openai, exec: the engine's OpenAI base URL, as given to an OpenAI SDK (e.g. "
      "http://127.0.0.1:8080/v1); the worker calls URL/chat/completions, URL/completions, "
      "URL/embeddings and (exec) URL/models."),
    F(upstream_api_key_env, FLAG_STR, NULL, 1, 0, NULL, 0, "NAME",
      "openai, exec: the environment variable holding the engine's API key, sent as "
      "'Authorization: Bearer'; never logged."),
    F(upstream_model, FLAG_STR, NULL, 1, 0, NULL, 0, "NAME",
      "openai, exec: the model name sent to the engine (default: the name the client used)."),
    F(upstream_connect_timeout_ms, FLAG_INT, "2000", 1, 600000, NULL, 0, "MS",
      "openai, exec: connecting to the engine (503 beyond)."),
    F(upstream_timeout_ms, FLAG_INT, "600000", 1, 86400000, NULL, 0, "MS",
      "openai, exec: a whole request to the engine, streaming included (504 beyond)."),
    F(upstream_idle_timeout_ms, FLAG_INT, "60000", 100, 86400000, NULL, 0, "MS",
      "openai, exec: longest silence from the engine during a streamed request, before the "
      "first chunk or between two (504, or an error event once the stream has begun). A "
      "request that does not stream has only --upstream_timeout_ms."),
    F(engine_cmd, FLAG_STR, NULL, 1, 0, NULL, 0, "CMD",
      "exec: the engine's command line, run with bash -c in a process group of its own, "
      "stopped with SIGTERM (then SIGKILL) when the worker stops or dies."),
    F(engine_start_timeout_ms, FLAG_INT, "600000", 100, 86400000, NULL, 0, "MS",
      "exec: how long a starting engine may take to answer GET URL/models before it is "
      "restarted."),
    F(engine_probe_interval_ms, FLAG_INT, "5000", 50, 3600000, NULL, 0, "MS",
      "exec: time between health probes of a running engine; three failures in a row restart "
      "it."),
    F(engine_stop_timeout_ms, FLAG_INT, "10000", 0, 3600000, NULL, 0, "MS",
      "exec: after SIGTERM, how long the engine may take to exit before SIGKILL."),
    F(embed_dim, FLAG_INT, "384", 8, WRK_MAX_EMB_DIM, NULL, 0, "N",
      "Dimension of the builtin embedder's vectors."),
    F(decode_delay_ms, FLAG_INT, "0", 0, 60000, NULL, 0, "MS",
      "Builtin language model: pause between streamed tokens, to behave like an engine under "
      "load (0 = as fast as the loop turns)."),
    F(cluster_secret, FLAG_STR, NULL, 1, 0, NULL, FLAG_SECRET, "SECRET",
      "Sent to the controllers with every control-plane call (X-Roster-Secret)."),
    F(port_file, FLAG_STR, NULL, 1, 0, NULL, FLAG_HIDDEN, "PATH",
      "Write the bound port to PATH once listening (for tests and supervisors)."),
    F(control_timeout_ms, FLAG_INT, "2000", 50, 60000, NULL, 0, "MS",
      "Timeout of one control-plane call (register, heartbeat, deregister)."),
    HTTP_LIMIT_FLAGS(struct wrk_config, http),
    F(shutdown_grace_ms, FLAG_INT, "10000", 0, 3600000, NULL, 0, "MS",
      "On SIGTERM, time allowed for in-flight requests after deregistering (a second signal "
      "stops at once)."),
    F(max_body_bytes, FLAG_INT, "4194304", 1024, 268435456, NULL, 0, "BYTES",
      "Largest request body accepted (413 beyond)."),
    F(max_answer_bytes, FLAG_INT, "33554432", 65536, 1073741824, NULL, 0, "BYTES",
      "openai, exec: largest answer of the engine that is buffered whole (a non-streamed "
      "answer, DB-GPT's text); beyond, 502 (or an error event or frame once streaming)."),
    F(stream_buffer_bytes, FLAG_INT, "524288", 4096, 268435456, NULL, 0, "BYTES",
      "Bytes of a stream queued for a slow client before the worker pauses it "
      "(back-pressure: it stops reading the engine, or the builtin model stops generating); "
      "it goes on once the client has taken 3/4 of them."),
    F(memory_budget_bytes, FLAG_INT, "536870912", 0, 1099511627776.0, NULL, 0, "BYTES",
      "Bytes that all requests together may hold in memory for engine answers, request "
      "copies and stream queues (0 = no limit); past it a request is refused with 503 and "
      "Retry-After (an error event or frame once its stream has begun)."),
    F(log_level, FLAG_ENUM, "info", 1, 0, NULL, 0, "error|warn|info|debug|trace",
      "The least severe messages logged."),
    F(access_log, FLAG_BOOL, "true", 1, 0, NULL, 0, NULL,
      "Log one line per request at info (method, path, status, duration, request id); false: "
      "5xx only."),
    F(access_log_sample, FLAG_INT, "1", 1, 1000000, NULL, 0, "N",
      "Log one request in N (5xx always): bounds the access log under load."),
    F(check, FLAG_BOOL, "false", 1, 0, NULL, FLAG_ARGV_ONLY, NULL, FLAG_CHECK_HELP),
    {0},
};

const char wrk_usage[] = "roster start worker --model_name NAME [options]";
const char wrk_summary[] =
    "Runs a model worker: registers NAME@WORKER_TYPE and WorkerManager@service with any "
    "controller of --controller_addr, heartbeats with a load report, fails over between "
    "controllers, and serves the models (OpenAI-style /v1 endpoints and DB-GPT's /api/worker).";

void
wrk_config_cleanup(struct wrk_config *cfg)
{
    flags_cleanup(wrk_flag_defs, cfg);
}

int
wrk_config_load(struct wrk_config *cfg, int argc, char **argv)
{
    enum flag_source src[64];
    int rc = flags_load_role(wrk_flag_defs, cfg, argc, argv, wrk_usage, wrk_summary,
                             offsetof(struct wrk_config, log_level), src);

    if (rc != 0) {
        return rc;
    }
    if (!cfg->model_name || !*cfg->model_name) {
        fprintf(stderr, "roster: --model_name is required\n");
        return -1;
    }
    bool builtin = strcmp(cfg->backend, "builtin") == 0;
    bool exec = strcmp(cfg->backend, "exec") == 0;
    if (builtin && (cfg->upstream || cfg->engine_cmd || cfg->upstream_api_key_env)) {
        fprintf(stderr, "roster: --upstream, --upstream_api_key_env and --engine_cmd need "
                        "--backend openai or exec\n");
        return -1;
    }
    if (!builtin) {
        size_t n = cfg->upstream ? strlen(cfg->upstream) : 0;
        if (n == 0 || (strncmp(cfg->upstream, "http://", 7) != 0 &&
                       strncmp(cfg->upstream, "https://", 8) != 0)) {
            fprintf(stderr,
                    "roster: --backend %s needs --upstream http(s)://HOST:PORT/v1 (the "
                    "engine's OpenAI base URL)\n",
                    cfg->backend);
            return -1;
        }
        while (n > 0 && cfg->upstream[n - 1] == '/') {
            cfg->upstream[--n] = '\0';
        }
    }
    if (exec != (cfg->engine_cmd != NULL && *cfg->engine_cmd)) {
        fprintf(stderr, exec ? "roster: --backend exec needs --engine_cmd\n"
                             : "roster: --engine_cmd needs --backend exec\n");
        return -1;
    }
    if (cfg->check) {
        printf("%s --check\noptions:\n", wrk_usage);
        flags_print_effective(stdout, wrk_flag_defs, cfg, src);
    }
    return 0;
}
