/* SPDX-License-Identifier: MIT
 *
 * wrk.h - the model worker (`roster start worker`).
 *
 * A worker sits beside a model backend, keeps its instances in the registry
 * through any live controller, and serves inference over HTTP.
 *
 *   wrk_config.c     options (DB-GPT's worker flags plus roster's own)
 *   wrk_embed.c      the builtin embedder: feature hashing, L2-normalised
 *   wrk_registrar.c  the control-plane thread: register, heartbeat with the
 *                    load report, fail over between controllers, deregister
 *   wrk_api.c        the HTTP endpoints (OpenAI-style and DB-GPT's worker API)
 *   wrk_server.c     wrk_main: wiring, signals, drain
 *
 * Threads: one HTTP event loop (the builtin backends compute on it: an
 * embedding is microseconds) and the registrar, which makes blocking
 * control-plane calls with short timeouts and never touches the loop.
 */
#ifndef ROSTER_WRK_H
#define ROSTER_WRK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flags.h"
#include "http_server.h"
#include "netaddr.h"

#define WRK_MAX_MODELS  16
#define WRK_MAX_CTLS    16
#define WRK_NAME_MAX    128 /* model_name@worker_type fits the registry's 128 */
#define WRK_MAX_INPUTS  2048
#define WRK_MAX_EMB_DIM 8192

/* ---- configuration (wrk_config.c) ------------------------------------------- */

struct wrk_config {
    char *model_name; /* comma-separated: one process may serve several */
    char *model_path;
    char *worker_type; /* "llm" or "text2vec" */
    char *host;
    int64_t port;
    char *worker_register_host;
    char *controller_addr; /* comma-separated */
    double heartbeat_interval;
    int64_t concurrency;
    double weight;
    char *backend; /* "builtin" (openai, exec: later) */
    int64_t embed_dim;
    int64_t decode_delay_ms;
    int64_t max_queue;
    int64_t queue_timeout_ms;
    char *cluster_secret;
    char *port_file;
    int64_t control_timeout_ms;
    int64_t shutdown_grace_ms;
    int64_t max_body_bytes;
    char *log_level;
};

extern const struct flag_def wrk_flag_defs[];
extern const char wrk_usage[];
extern const char wrk_summary[];

/* Parses options. Returns 0, 1 after --help (printed), -1 after a usage
 * error (printed). */
int wrk_config_load(struct wrk_config *cfg, int argc, char **argv);
void wrk_config_cleanup(struct wrk_config *cfg);

/* ---- the builtin embedder (wrk_embed.c) --------------------------------------- */

/* A byte of a word for the builtin models: ASCII letters and digits, and
 * every byte >= 0x80 (so UTF-8 text in any script forms words). */
static inline bool
wrk_word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

/* Writes the embedding of text[0..len) into out[0..dim): signed feature
 * hashing of lower-cased words, word bigrams and character trigrams,
 * L2-normalised (an empty text embeds a fixed marker feature, so every
 * vector has unit norm). Deterministic across runs and machines. */
void wrk_embed(const char *text, size_t len, float *out, size_t dim);

/* Words in text[0..len), as the embedder splits them (count_token). */
size_t wrk_count_words(const char *text, size_t len);

/* ---- the registrar (wrk_registrar.c) ---------------------------------------- */

struct wrk_registrar;
struct wrk_lm;

struct wrk_instance {
    char model_name[WRK_NAME_MAX + 1]; /* "name@type" */
    double weight;
};

struct wrk_load {
    _Atomic int64_t in_flight;
    _Atomic int64_t queue_length;
    int64_t capacity;
};

struct wrk_registrar_config {
    char urls[WRK_MAX_CTLS][512];
    size_t nurls;
    const char *host; /* advertised */
    int port;
    const char *secret; /* NULL: none */
    int64_t interval_ms;
    int64_t timeout_ms;
    struct wrk_instance inst[WRK_MAX_MODELS + 1];
    size_t ninst;
    struct wrk_load *load; /* read at each heartbeat */
};

/* Parses "http://a:8000, http://b:8000" into cfg->urls. Returns 0, or -1
 * with a reason in err. */
int wrk_parse_controllers(const char *list, struct wrk_registrar_config *cfg, char *err,
                          size_t errcap);

int wrk_registrar_start(const struct wrk_registrar_config *cfg, struct wrk_registrar **out);
/* Instance i from now on: serving (heartbeated, with `weight`) or not
 * (deregistered once, then left alone). Acted on at once, on the
 * registrar's thread; never blocks the caller. */
void wrk_registrar_set(struct wrk_registrar *r, size_t i, bool serving, double weight);
/* True once every instance has been accepted by some controller. */
bool wrk_registrar_registered(struct wrk_registrar *r);
/* The controller in use (index into urls), or -1 while none answers. */
int wrk_registrar_current(struct wrk_registrar *r);
/* Stops heartbeating; with `deregister`, marks every instance unhealthy
 * through any controller that answers (bounded by the control timeout per
 * controller). Blocks. Safe to call twice. */
void wrk_registrar_stop(struct wrk_registrar *r, bool deregister);
void wrk_registrar_free(struct wrk_registrar *r);

/* ---- the server (wrk_api.c, wrk_gen.c, wrk_server.c) --------------------------- */

struct wrk_job; /* a generation request (wrk_gen.c) */

/* A model's capacity (loop thread only): running jobs and the FIFO of
 * waiting ones. */
struct wrk_slot {
    int active;
    int queued;
    struct wrk_job *head, *tail;
};

struct wrk_server {
    struct wrk_config *cfg;
    char models[WRK_MAX_MODELS][WRK_NAME_MAX + 1]; /* names without @type */
    size_t nmodels;
    struct wrk_slot slots[WRK_MAX_MODELS];
    bool stopped[WRK_MAX_MODELS];  /* /api/worker/apply stop (loop thread) */
    double weight[WRK_MAX_MODELS]; /* registered weight (update_params) */
    struct netaddr_list loopback;  /* who may apply without a secret */
    int concurrency;               /* per model: --concurrency, or 5 (llm) / 100 (text2vec) */
    bool embeddings;               /* worker_type text2vec */
    struct wrk_lm *lm;             /* worker_type llm: the builtin language model */
    struct http_server *http;
    char host[256];                   /* the advertised address (rcfg.host) */
    struct wrk_registrar_config rcfg; /* fixed once the registrar runs */
    struct wrk_registrar *registrar;
    struct wrk_load load;
    int64_t started_wall_s;
    pthread_t drainer; /* started by the first SIGTERM/SIGINT */
    bool draining;
    _Atomic uint64_t requests;
    _Atomic uint64_t errors;
    _Atomic uint64_t cancelled; /* jobs whose client went away */
    _Atomic uint64_t rejected;  /* 429 at capacity, 503 after waiting in the queue */
};

extern const struct http_route wrk_routes[];

/* Shared by the handlers (wrk_api.c). */
struct wrk_server *wrk_server_of(void *arg);
void wrk_bad_request(struct http_request *req, const char *code, const char *msg);
/* Parses the body as a JSON object naming a served model in "model" (set
 * to srv->models[i]); replies and returns NULL on failure. */
struct cJSON *wrk_parse_request(struct http_request *req, struct wrk_server *srv,
                                const char **model_out);
struct buf;
struct jw;
void wrk_reply_json(struct http_request *req, struct wrk_server *srv, struct buf *b, struct jw *w);

/* Generation handlers (wrk_gen.c). */
void wrk_h_chat(struct http_request *req, void *arg);
void wrk_h_completions(struct http_request *req, void *arg);
void wrk_h_generate(struct http_request *req, void *arg);
void wrk_h_generate_stream(struct http_request *req, void *arg);

int wrk_main(int argc, char **argv);

#endif
