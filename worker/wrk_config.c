/* SPDX-License-Identifier: MIT
 *
 * wrk_config.c - options of `roster start worker`: DB-GPT's worker flags
 * (model_name, model_path, worker_type, host, port, worker_register_host,
 * controller_addr, heartbeat_interval, concurrency) plus roster's own.
 */
#include "wrk.h"

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
    F(worker_type, FLAG_STR, "llm", 1, 0, NULL, 0, "TYPE",
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
    F(backend, FLAG_STR, "builtin", 1, 0, NULL, 0, "NAME",
      "'builtin' (needs no download); 'openai' and 'exec' come with the next builds."),
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
    F(shutdown_grace_ms, FLAG_INT, "10000", 0, 3600000, NULL, 0, "MS",
      "On SIGTERM, time allowed for in-flight requests after deregistering (a second signal "
      "stops at once)."),
    F(max_body_bytes, FLAG_INT, "4194304", 1024, 268435456, NULL, 0, "BYTES",
      "Largest request body accepted (413 beyond)."),
    F(log_level, FLAG_STR, "info", 1, 0, NULL, 0, "LEVEL", "error, warn, info, debug or trace."),
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
    int rc = flags_load_role(wrk_flag_defs, cfg, argc, argv, wrk_usage, wrk_summary,
                             offsetof(struct wrk_config, log_level));

    if (rc != 0) {
        return rc;
    }
    if (!cfg->model_name || !*cfg->model_name) {
        fprintf(stderr, "roster: --model_name is required\n");
        return -1;
    }
    if (strcmp(cfg->worker_type, "text2vec") != 0 && strcmp(cfg->worker_type, "llm") != 0) {
        fprintf(stderr, "roster: --worker_type must be 'llm' or 'text2vec'\n");
        return -1;
    }
    if (strcmp(cfg->backend, "builtin") != 0) {
        fprintf(stderr,
                "roster: --backend %s is not in this build yet; only 'builtin' is (README.md, "
                "'Status')\n",
                cfg->backend);
        return -1;
    }
    return 0;
}
