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
#include "http_limits.h"
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
    char *backend;  /* "builtin", "openai" or "exec" */
    char *upstream; /* openai, exec: the engine's OpenAI base URL (".../v1") */
    char *upstream_api_key_env;
    char *upstream_model;
    int64_t upstream_connect_timeout_ms;
    int64_t upstream_timeout_ms;
    int64_t upstream_idle_timeout_ms;
    char *engine_cmd; /* exec */
    int64_t engine_start_timeout_ms;
    int64_t engine_probe_interval_ms;
    int64_t engine_stop_timeout_ms;
    int64_t embed_dim;
    int64_t decode_delay_ms;
    int64_t max_queue;
    int64_t queue_timeout_ms;
    char *cluster_secret;
    char *port_file;
    int64_t control_timeout_ms;
    int64_t shutdown_grace_ms;
    int64_t max_body_bytes;
    int64_t max_answer_bytes;    /* openai, exec: an engine's answer buffered whole */
    int64_t stream_buffer_bytes; /* openai, exec: a slow client's queue before pausing */
    int64_t memory_budget_bytes; /* budget.h: the process-wide limit (0: none) */
    struct http_limits http;     /* --max_connections, --client_*_timeout_ms, ... */
    char *log_level;
    bool access_log;
    int64_t access_log_sample;
    bool check; /* --check: validate, print, exit */
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
struct event;
struct wrk_proxy_job;
struct wrk_engine;
struct curl_loop;

struct wrk_instance {
    char model_name[WRK_NAME_MAX + 1]; /* "name@type" */
    double weight;
    bool held; /* not serving at start (until wrk_registrar_set) */
};

struct wrk_load {
    _Atomic int64_t in_flight;
    _Atomic int64_t queue_length;
    int64_t capacity;
};

struct wrk_registrar_config {
    char urls[WRK_MAX_CTLS][512];
    char shown[WRK_MAX_CTLS][520]; /* urls as logged and shown: passwords masked */
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

/* Parses "http://a:8000, http://b:8000" into cfg->urls (and cfg->shown).
 * Returns 0, or -1 with a reason in err. */
int wrk_parse_controllers(const char *list, struct wrk_registrar_config *cfg, char *err,
                          size_t errcap);

/* The registrar's backoff while no controller answers (pure functions, for
 * tests). The value starts at WRK_BACKOFF_MIN_MS; wrk_backoff_next doubles
 * it up to `cap` (the heartbeat interval) and never past it, so it can
 * neither overflow nor wrap to 0 after many rounds. wrk_backoff_wait is
 * the wait for a value: uniform in [backoff/2, 3*backoff/2), from a random
 * number r. */
#define WRK_BACKOFF_MIN_MS 100
int64_t wrk_backoff_next(int64_t backoff, int64_t cap);
int64_t wrk_backoff_wait(int64_t backoff, uint64_t r);

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
/* Makes the calls in flight and to come give up at once (a second signal
 * while wrk_registrar_stop deregisters). Any thread; NULL-safe. */
void wrk_registrar_abort(struct wrk_registrar *r);
void wrk_registrar_free(struct wrk_registrar *r);

/* ---- the server (wrk_api.c, wrk_gen.c, wrk_server.c) --------------------------- */

/* A request that holds, or waits for, one of its model's slots
 * (wrk_admit.c). Embedded in the request's own job; the owner fills the
 * first five fields. */
struct wrk_ticket {
    struct wrk_server *srv;
    size_t model; /* index into srv->models */
    struct http_request *req;
    void (*run)(struct wrk_ticket *t);     /* the slot is granted (now or later) */
    void (*dropped)(struct wrk_ticket *t); /* waited too long: 503 sent; free the job */
    bool running;                          /* false while queued */
    struct wrk_ticket *next;               /* in the queue */
    struct event *timer;                   /* the queue timeout while queued */
};

/* A model's capacity (loop thread only): running tickets and the FIFO of
 * waiting ones. */
struct wrk_slot {
    int active;
    int queued;
    struct wrk_ticket *head, *tail;
};

/* Runs the ticket (returns 1, run() called), queues it (0), or refuses it
 * (-1, after replying 429, or 503 when out of memory). */
int wrk_admit(struct wrk_ticket *t);
/* The ticket's request is done (running: the next queued ticket runs) or
 * abandoned (queued: it leaves the queue). */
void wrk_admit_leave(struct wrk_ticket *t);

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
    struct wrk_lm *lm;             /* builtin llm: the language model */
    bool proxy;                    /* backend openai or exec: requests go upstream */
    struct curl_loop *curl;        /* proxy: upstream transfers on the loop */
    struct wrk_proxy_job *proxies; /* proxy: transfers in progress (loop thread) */
    char *auth_header;             /* proxy: "Authorization: Bearer <key>", or NULL */
    char upstream_shown[1024];     /* proxy: --upstream as logged and shown (util_url_redact) */
    struct wrk_engine *engine;     /* exec: the supervised engine */
    bool engine_up;                /* exec: the engine answers (loop thread) */
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
    _Atomic uint64_t cancelled;       /* jobs whose client went away */
    _Atomic uint64_t rejected;        /* 429 at capacity, 503 after waiting in the queue */
    _Atomic uint64_t upstream_errors; /* proxy: transfers that failed or got a 5xx */
    _Atomic uint64_t stream_pauses;   /* proxy: engine transfers paused for a slow client */
    _Atomic uint64_t engine_restarts; /* exec */
    _Atomic int engine_pid;           /* exec: the engine's process (0: none) */
    _Atomic uint64_t log_seq;         /* requests seen by the access log */
};

extern const struct http_route wrk_routes[];

/* Whether model i should be in the routable set: not stopped through
 * /api/worker/apply and, with the exec backend, its engine answering.
 * Loop thread. */
static inline bool
wrk_serving(const struct wrk_server *srv, size_t i)
{
    return !srv->stopped[i] && (!srv->engine || srv->engine_up);
}

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

/* One frame of DB-GPT's worker API (/api/worker/generate answers one,
 * generate_stream a NUL-ended series with the cumulative text). */
struct wrk_dbgpt_frame {
    const char *text; /* the whole text so far, or the error message */
    size_t len;
    int error_code;        /* 0, or 1: text is an error message */
    const char *finish;    /* finish_reason; NULL while generating */
    int prompt_tokens;     /* -1 while unknown: usage is null */
    int completion_tokens; /* so far */
    int64_t start_ms;      /* wall clock: the request was admitted */
    int64_t first_ms;      /* wall clock of the first frame with text; 0: none yet */
    int first_tokens;      /* completion tokens in that frame */
    int collect_index;     /* frames written so far, this one included */
};

/* Writes the frame as DB-GPT's ModelOutput.to_dict() does: exactly the
 * keys error_code, text, incremental, model_context, finish_reason, usage,
 * metrics, in that order. DB-GPT's clients build ModelOutput(**frame): the
 * current constructor takes `text` or `content` and raises "Cannot pass
 * both text and content", and releases from before `content` existed take
 * no other key, so this is the one shape every client version reads
 * (reference/dbgpt-smmf.md, section 1.3). A success frame carries
 * model_context {"prompt_echo_len_char": -1, "has_format_prompt": false,
 * "echo": false} (the text never repeats the prompt, so DB-GPT's output
 * parsers cut nothing), usage {prompt, completion, total tokens} when the
 * counts are known, and metrics with the fields of DB-GPT's
 * ModelInferenceMetrics (times in wall-clock milliseconds, GPU fields
 * null); an error frame has null model_context, finish_reason, usage and
 * metrics, as DB-GPT's own worker writes one. */
void wrk_dbgpt_output(struct jw *w, const struct wrk_dbgpt_frame *f);

/* The openai and exec backends (wrk_proxy.c): the same endpoints, served
 * by the upstream engine. */
void wrk_proxy_chat(struct http_request *req, struct wrk_server *srv);
void wrk_proxy_completions(struct http_request *req, struct wrk_server *srv);
void wrk_proxy_embeddings(struct http_request *req, struct wrk_server *srv, bool dbgpt);
void wrk_proxy_generate(struct http_request *req, struct wrk_server *srv, bool stream);
/* After the loop has stopped: ends every transfer still in progress. */
void wrk_proxy_cancel_all(struct wrk_server *srv);

/* The exec backend's supervisor (wrk_engine.c): a thread that starts
 * --engine_cmd, probes GET <upstream>/models until it answers, then tells
 * the loop (srv->engine_up and the registrar); restarts the engine with
 * backoff when it exits or stops answering. */
int wrk_engine_start(struct wrk_server *srv);
/* Stops the engine (SIGTERM to its process group, SIGKILL after
 * --engine_stop_timeout_ms) and joins the thread. NULL-safe. */
void wrk_engine_stop(struct wrk_engine *e);

/* ---- the worker as a component (wrk_server.c) ------------------------------- *
 *
 * `roster start worker` runs one (wrk_main); the webserver runs its builtin
 * models as workers in its own process, each on an HTTP server of its own
 * (a loopback port) with a thread running wrk_server_run. Life cycle:
 *   wrk_server_new    models, backend, the bound HTTP server (cfg outlives it)
 *   wrk_server_start  engine supervisor (exec), registrar, port file
 *   wrk_server_run    serves until shut down (blocks; any one thread)
 *   wrk_server_drain  deregisters (blocking control-plane calls), then lets
 *                     in-flight requests finish within --shutdown_grace_ms
 *                     and makes wrk_server_run return; not on its loop
 *   wrk_server_free   after wrk_server_run returned (or never ran); NULL-safe
 * The int functions return 0 or a sysexits code, having logged why. */
int wrk_server_new(struct wrk_config *cfg, struct wrk_server **out);
int wrk_server_start(struct wrk_server *srv);
void wrk_server_run(struct wrk_server *srv);
void wrk_server_drain(struct wrk_server *srv);
void wrk_server_free(struct wrk_server *srv);
/* The bound port. */
int wrk_server_port(const struct wrk_server *srv);

int wrk_main(int argc, char **argv);

#endif
