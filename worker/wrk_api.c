/* SPDX-License-Identifier: MIT
 *
 * wrk_api.c - the worker's HTTP endpoints.
 *
 * OpenAI-style, what the apiserver proxies without translation:
 *   GET  /v1/models                  the models this worker serves
 *   POST /v1/chat/completions        the builtin language model (stream: not
 *   POST /v1/completions             in this build yet)
 *   POST /v1/embeddings              input: a string or a list of strings;
 *                                    encoding_format float|base64; dimensions
 * DB-GPT's worker API, so DB-GPT tooling can drive a roster worker:
 *   POST /api/worker/generate        PromptRequest -> ModelOutput
 *   POST /api/worker/embeddings      {model, input: [str]} -> [[float]]
 *   POST /api/worker/count_token     {model, prompt} -> int
 *   POST /api/worker/model_metadata  {model} -> ModelMetadata
 * And GET /api/health, GET /metrics.
 *
 * Errors are OpenAI's shape with the right status: 400 bad JSON or field,
 * 404 unknown model, 413 (the HTTP layer) body too large.
 */
#include "wrk.h"
#include "wrk_lm.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#define LOG_MODULE "worker"
#include "json_check.h"
#include "json_write.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define MAX_JSON_DEPTH 16
#define MAX_RESPONSE   (256u * 1024 * 1024)

static struct wrk_server *
server_of(void *arg)
{
    return arg;
}

static void
bad_request(struct http_request *req, const char *code, const char *msg)
{
    http_reply_error(req, 400, "invalid_request_error", code ? code : "invalid_request", "%s", msg);
}

/* Parses the body as a JSON object and finds the served model named by its
 * "model" field. Replies and returns NULL on any failure. */
static cJSON *
parse_request(struct http_request *req, struct wrk_server *srv, const char **model_out)
{
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    char err[256];
    cJSON *root = NULL;
    const cJSON *m;

    atomic_fetch_add(&srv->requests, 1);
    if (json_parse(body, len, MAX_JSON_DEPTH, &root, err, sizeof(err)) != 0) {
        http_reply_error(req, 400, "invalid_request_error", "invalid_json", "invalid JSON body: %s",
                         err);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        bad_request(req, NULL, "the body must be a JSON object");
        cJSON_Delete(root);
        return NULL;
    }
    m = json_get(root, "model");
    if (!cJSON_IsString(m)) {
        bad_request(req, "model", "field 'model' (a string) is required");
        cJSON_Delete(root);
        return NULL;
    }
    for (size_t i = 0; i < srv->nmodels; i++) {
        if (strcmp(srv->models[i], m->valuestring) == 0) {
            *model_out = srv->models[i];
            return root;
        }
    }
    http_reply_error(req, 404, "invalid_request_error", "model_not_found",
                     "the model '%.200s' is not served by this worker", m->valuestring);
    cJSON_Delete(root);
    return NULL;
}

/* Collects the input texts: a string or a non-empty array of strings.
 * Returns the count, or -1 after replying. */
static int
inputs_of(struct http_request *req, const cJSON *in, const cJSON **items, int max)
{
    int n = 0;

    if (cJSON_IsString(in)) {
        items[0] = in;
        return 1;
    }
    if (!cJSON_IsArray(in)) {
        bad_request(req, "input", "field 'input' must be a string or an array of strings");
        return -1;
    }
    for (const cJSON *it = in->child; it; it = it->next) {
        if (!cJSON_IsString(it)) {
            bad_request(req, "input",
                        "field 'input' must hold strings (token arrays are not supported)");
            return -1;
        }
        if (n == max) {
            http_reply_error(req, 400, "invalid_request_error", "input",
                             "field 'input' holds more than %d texts", max);
            return -1;
        }
        items[n++] = it;
    }
    if (n == 0) {
        bad_request(req, "input", "field 'input' must not be empty");
        return -1;
    }
    return n;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Appends the base64 of v[0..n) as little-endian float32 (OpenAI's form). */
static void
jw_base64_floats(struct jw *w, const float *v, size_t n)
{
    size_t len = n * 4;
    char chunk[4];
    unsigned char in[3];
    size_t i = 0;

    jw_raw(w, "\"");
    while (i < len && !w->err) {
        size_t k = 0;
        for (; k < 3 && i + k < len; k++) {
            uint32_t bits;
            memcpy(&bits, &v[(i + k) / 4], 4);
            in[k] = (unsigned char)(bits >> (8 * ((i + k) % 4)));
        }
        chunk[0] = b64[in[0] >> 2];
        chunk[1] = b64[((in[0] & 3) << 4) | (k > 1 ? in[1] >> 4 : 0)];
        chunk[2] = k > 1 ? b64[((in[1] & 15) << 2) | (k > 2 ? in[2] >> 6 : 0)] : '=';
        chunk[3] = k > 2 ? b64[in[2] & 63] : '=';
        if (buf_append(w->b, chunk, 4) != 0) {
            w->err = 1;
        }
        i += k;
    }
    jw_raw(w, "\"");
}

static void
jw_floats(struct jw *w, const float *v, size_t n)
{
    char num[32];

    jw_raw(w, "[");
    for (size_t i = 0; i < n && !w->err; i++) {
        snprintf(num, sizeof(num), "%s%.9g", i ? "," : "", (double)v[i]);
        jw_raw(w, num);
    }
    jw_raw(w, "]");
}

static void
reply_json(struct http_request *req, struct wrk_server *srv, struct buf *b, struct jw *w)
{
    if (w->err) {
        atomic_fetch_add(&srv->errors, 1);
        http_reply_error(req, 500, "server_error", "response_too_large",
                         "the response does not fit in %u bytes", MAX_RESPONSE);
    } else {
        http_reply(req, 200, "application/json", b->data, b->len, NULL);
    }
}

/* POST /v1/embeddings and POST /api/worker/embeddings (dbgpt = true). */
static void
embeddings(struct http_request *req, void *arg, bool dbgpt)
{
    struct wrk_server *srv = server_of(arg);
    const cJSON *items[WRK_MAX_INPUTS];
    const char *model = NULL;
    cJSON *root = parse_request(req, srv, &model);
    size_t dim = (size_t)srv->cfg->embed_dim;
    bool base64 = false;
    float *vec = NULL;
    size_t tokens = 0;
    struct buf b;
    struct jw w;
    int n;

    if (!root) {
        return;
    }
    if (!srv->embeddings) {
        http_reply_error(req, 400, "invalid_request_error", "model_not_embedding",
                         "the model '%s' is not an embedding model", model);
        goto out;
    }
    n = inputs_of(req, json_get(root, "input"), items, WRK_MAX_INPUTS);
    if (n < 0) {
        goto out;
    }
    const cJSON *fmt = json_get(root, "encoding_format");
    if (fmt && !cJSON_IsNull(fmt)) {
        if (!cJSON_IsString(fmt) ||
            (strcmp(fmt->valuestring, "float") != 0 && strcmp(fmt->valuestring, "base64") != 0)) {
            bad_request(req, "encoding_format",
                        "field 'encoding_format' must be 'float' or "
                        "'base64'");
            goto out;
        }
        base64 = strcmp(fmt->valuestring, "base64") == 0;
    }
    const cJSON *dims = json_get(root, "dimensions");
    if (dims && !cJSON_IsNull(dims)) {
        if (!cJSON_IsNumber(dims) || dims->valuedouble != floor(dims->valuedouble) ||
            dims->valuedouble < 1 || dims->valuedouble > (double)dim) {
            http_reply_error(req, 400, "invalid_request_error", "dimensions",
                             "field 'dimensions' must be an integer in [1, %zu]", dim);
            goto out;
        }
        dim = (size_t)dims->valuedouble;
    }
    vec = malloc((size_t)srv->cfg->embed_dim * sizeof(*vec));
    if (!vec) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        goto out;
    }
    buf_init(&b, MAX_RESPONSE);
    jw_init(&w, &b);
    jw_raw(&w, dbgpt ? "[" : "{\"object\":\"list\",\"data\":[");
    for (int i = 0; i < n && !w.err; i++) {
        const char *t = items[i]->valuestring;
        size_t len = strlen(t);
        wrk_embed(t, len, vec, (size_t)srv->cfg->embed_dim);
        if (dim < (size_t)srv->cfg->embed_dim) {
            /* OpenAI's `dimensions`: the leading components, renormalised */
            double norm = 0;
            for (size_t k = 0; k < dim; k++) {
                norm += (double)vec[k] * vec[k];
            }
            norm = norm > 0 ? sqrt(norm) : 1;
            for (size_t k = 0; k < dim; k++) {
                vec[k] = (float)(vec[k] / norm);
            }
        }
        tokens += wrk_count_words(t, len);
        if (i) {
            jw_raw(&w, ",");
        }
        if (dbgpt) {
            jw_floats(&w, vec, dim);
            continue;
        }
        jw_raw(&w, "{\"object\":\"embedding\",\"index\":");
        jw_i64(&w, i);
        jw_raw(&w, ",\"embedding\":");
        if (base64) {
            jw_base64_floats(&w, vec, dim);
        } else {
            jw_floats(&w, vec, dim);
        }
        jw_raw(&w, "}");
    }
    if (dbgpt) {
        jw_raw(&w, "]");
    } else {
        jw_raw(&w, "],\"model\":");
        jw_str(&w, model);
        jw_raw(&w, ",\"usage\":{\"prompt_tokens\":");
        jw_i64(&w, (int64_t)tokens);
        jw_raw(&w, ",\"total_tokens\":");
        jw_i64(&w, (int64_t)tokens);
        jw_raw(&w, "}}");
    }
    reply_json(req, srv, &b, &w);
    buf_cleanup(&b);
out:
    free(vec);
    cJSON_Delete(root);
}

static void
h_v1_embeddings(struct http_request *req, void *arg)
{
    atomic_fetch_add(&server_of(arg)->load.in_flight, 1);
    embeddings(req, arg, false);
    atomic_fetch_sub(&server_of(arg)->load.in_flight, 1);
}

static void
h_worker_embeddings(struct http_request *req, void *arg)
{
    atomic_fetch_add(&server_of(arg)->load.in_flight, 1);
    embeddings(req, arg, true);
    atomic_fetch_sub(&server_of(arg)->load.in_flight, 1);
}

static void
h_count_token(struct http_request *req, void *arg)
{
    struct wrk_server *srv = server_of(arg);
    const char *model = NULL;
    cJSON *root = parse_request(req, srv, &model);
    char num[32];

    if (!root) {
        return;
    }
    const cJSON *p = json_get(root, "prompt");
    if (!cJSON_IsString(p)) {
        bad_request(req, "prompt", "field 'prompt' (a string) is required");
    } else {
        size_t len = strlen(p->valuestring);
        snprintf(num, sizeof(num), "%zu",
                 srv->lm ? wrk_lm_count_tokens(p->valuestring, len)
                         : wrk_count_words(p->valuestring, len));
        http_reply(req, 200, "application/json", num, strlen(num), NULL);
    }
    cJSON_Delete(root);
}

static void
h_model_metadata(struct http_request *req, void *arg)
{
    struct wrk_server *srv = server_of(arg);
    const char *model = NULL;
    cJSON *root = parse_request(req, srv, &model);
    struct buf b;
    struct jw w;

    if (!root) {
        return;
    }
    buf_init(&b, 64 * 1024);
    jw_init(&w, &b);
    jw_raw(&w, "{\"model\":");
    jw_str(&w, model);
    jw_raw(&w, ",\"label\":");
    jw_str(&w, model);
    jw_raw(&w, ",\"context_length\":8192,\"max_output_length\":");
    jw_i64(&w, srv->lm ? 4096 : 0);
    jw_raw(&w, ",\"description\":");
    jw_str(&w, srv->lm ? "roster's builtin trigram model: for trying roster out and for tests"
                       : "roster's builtin embedder: feature hashing, for trying roster out and "
                         "for tests");
    jw_raw(&w, ",\"link\":null,\"chat_model\":");
    jw_bool(&w, srv->lm != NULL);
    jw_raw(&w, ",\"function_calling\":false,\"metadata\":{");
    if (!srv->lm) {
        jw_raw(&w, "\"dimension\":");
        jw_i64(&w, srv->cfg->embed_dim);
    }
    jw_raw(&w, "},\"ext_metadata\":{}}");
    reply_json(req, srv, &b, &w);
    buf_cleanup(&b);
    cJSON_Delete(root);
}

static void
h_models(struct http_request *req, void *arg)
{
    struct wrk_server *srv = server_of(arg);
    struct buf b;
    struct jw w;

    buf_init(&b, 1024 * 1024);
    jw_init(&w, &b);
    jw_raw(&w, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < srv->nmodels; i++) {
        jw_raw(&w, i ? ",{\"id\":" : "{\"id\":");
        jw_str(&w, srv->models[i]);
        jw_raw(&w, ",\"object\":\"model\",\"created\":");
        jw_i64(&w, srv->started_wall_s);
        jw_raw(&w, ",\"owned_by\":\"roster\"}");
    }
    jw_raw(&w, "]}");
    reply_json(req, srv, &b, &w);
    buf_cleanup(&b);
}

static void
h_health(struct http_request *req, void *arg)
{
    struct wrk_server *srv = server_of(arg);
    bool registered = srv->registrar && wrk_registrar_registered(srv->registrar);
    int cur = srv->registrar ? wrk_registrar_current(srv->registrar) : -1;
    struct buf b;
    struct jw w;

    buf_init(&b, 64 * 1024);
    jw_init(&w, &b);
    jw_raw(&w, "{\"status\":\"ok\",\"registered\":");
    jw_bool(&w, registered);
    jw_raw(&w, ",\"controller\":");
    jw_str(&w, cur >= 0 ? srv->rcfg.urls[cur] : NULL);
    jw_raw(&w, ",\"in_flight\":");
    jw_i64(&w, atomic_load(&srv->load.in_flight));
    jw_raw(&w, ",\"capacity\":");
    jw_i64(&w, srv->load.capacity);
    jw_raw(&w, "}");
    reply_json(req, srv, &b, &w);
    buf_cleanup(&b);
}

static void
h_metrics(struct http_request *req, void *arg)
{
    struct wrk_server *srv = server_of(arg);
    struct buf b;

    buf_init(&b, 64 * 1024);
    int rc = metrics_header(&b, "roster_worker_requests_total", "counter",
                            "Inference requests received.");
    rc |= metrics_sample(&b, "roster_worker_requests_total", NULL,
                         (double)atomic_load(&srv->requests));
    rc |= metrics_header(&b, "roster_worker_errors_total", "counter",
                         "Requests that failed on the worker's side (5xx).");
    rc |= metrics_sample(&b, "roster_worker_errors_total", NULL, (double)atomic_load(&srv->errors));
    rc |= metrics_header(&b, "roster_worker_cancelled_total", "counter",
                         "Streams stopped because the client disconnected.");
    rc |= metrics_sample(&b, "roster_worker_cancelled_total", NULL,
                         (double)atomic_load(&srv->cancelled));
    rc |= metrics_header(&b, "roster_worker_in_flight", "gauge", "Requests being served.");
    rc |= metrics_sample(&b, "roster_worker_in_flight", NULL,
                         (double)atomic_load(&srv->load.in_flight));
    rc |= metrics_header(&b, "roster_worker_registered", "gauge",
                         "1 when every instance is accepted by a controller.");
    rc |= metrics_sample(&b, "roster_worker_registered", NULL,
                         srv->registrar && wrk_registrar_registered(srv->registrar) ? 1 : 0);
    if (rc != 0) {
        http_reply_error(req, 500, "server_error", "metrics", "cannot format the metrics");
    } else {
        http_reply(req, 200, "text/plain; version=0.0.4", b.data, b.len, NULL);
    }
    buf_cleanup(&b);
}

/* ---- text generation (the builtin language model) ------------------------------ */

#define MAX_STOPS      4
#define MAX_STOP_LEN   256
#define MAX_GEN_TOKENS 4096

struct gen_request {
    struct wrk_gen_params p;
    char stops[MAX_STOPS][MAX_STOP_LEN + 1];
    size_t nstops;
    bool stream;
    bool include_usage; /* stream_options.include_usage */
    struct buf prompt;
};

/* Reads an optional number field in [lo, hi] into *out. Returns 0, or -1
 * after replying. */
static int
opt_number(struct http_request *req, const cJSON *root, const char *key, double lo, double hi,
           bool integer, double *out)
{
    const cJSON *it = json_get(root, key);

    if (!it || cJSON_IsNull(it)) {
        return 0;
    }
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || it->valuedouble < lo ||
        it->valuedouble > hi || (integer && it->valuedouble != floor(it->valuedouble))) {
        http_reply_error(req, 400, "invalid_request_error", key,
                         "field '%s' must be %s in [%g, %g]", key,
                         integer ? "an integer" : "a number", lo, hi);
        return -1;
    }
    *out = it->valuedouble;
    return 0;
}

/* Appends a message's content (a string, or an array of {type: text,
 * text}) to the prompt. Returns 0, or -1 after replying. */
static int
append_content(struct http_request *req, const cJSON *content, struct buf *prompt)
{
    if (cJSON_IsString(content)) {
        return buf_printf(prompt, "%s\n", content->valuestring) == 0 ? 0 : -1;
    }
    if (cJSON_IsArray(content)) {
        for (const cJSON *part = content->child; part; part = part->next) {
            const cJSON *text = json_get(part, "text");
            if (!cJSON_IsObject(part) || !cJSON_IsString(text)) {
                bad_request(req, "messages",
                            "a content part must be an object with a string 'text'");
                return -1;
            }
            if (buf_printf(prompt, "%s\n", text->valuestring) != 0) {
                return -1;
            }
        }
        return 0;
    }
    if (cJSON_IsNull(content)) {
        return 0;
    }
    bad_request(req, "messages", "a message's 'content' must be a string or an array of parts");
    return -1;
}

/* Parses the sampling fields shared by every generation endpoint, and the
 * prompt: `messages` (chat, DB-GPT) or `prompt`. Returns 0, or -1 after
 * replying. `dbgpt` reads max_new_tokens instead of max_tokens. */
static int
parse_generation(struct http_request *req, const cJSON *root, bool chat, bool dbgpt,
                 bool dbgpt_stream, struct gen_request *g)
{
    double temperature = 1, top_p = 1, max_tokens = 256, seed = -1, n = 1;
    const cJSON *it;

    if (opt_number(req, root, "temperature", 0, 2, false, &temperature) != 0 ||
        opt_number(req, root, "top_p", 0, 1, false, &top_p) != 0 ||
        opt_number(req, root, dbgpt ? "max_new_tokens" : "max_tokens", 1, MAX_GEN_TOKENS, true,
                   &max_tokens) != 0 ||
        (chat && opt_number(req, root, "max_completion_tokens", 1, MAX_GEN_TOKENS, true,
                            &max_tokens) != 0) ||
        opt_number(req, root, "seed", -9.2e18, 9.2e18, true, &seed) != 0 ||
        opt_number(req, root, "n", 1, 1, true, &n) != 0) {
        return -1;
    }
    if (top_p == 0) {
        bad_request(req, "top_p", "field 'top_p' must be greater than 0");
        return -1;
    }
    it = json_get(root, "stream");
    if (it && !cJSON_IsNull(it) && !cJSON_IsBool(it)) {
        bad_request(req, "stream", "field 'stream' must be a boolean");
        return -1;
    }
    g->stream = cJSON_IsTrue(it) || dbgpt_stream;
    it = json_get(root, "stream_options");
    if (it && !cJSON_IsNull(it)) {
        const cJSON *u = json_get(it, "include_usage");
        if (!cJSON_IsObject(it) || (u && !cJSON_IsBool(u))) {
            bad_request(req, "stream_options",
                        "field 'stream_options' must be an object with a boolean include_usage");
            return -1;
        }
        g->include_usage = cJSON_IsTrue(u);
    }
    it = json_get(root, "stop");
    if (it && !cJSON_IsNull(it)) {
        const cJSON *one = cJSON_IsString(it) ? it : NULL;
        const cJSON *list = cJSON_IsArray(it) ? it->child : one;
        if (!one && !cJSON_IsArray(it)) {
            bad_request(req, "stop", "field 'stop' must be a string or an array of strings");
            return -1;
        }
        for (const cJSON *s = list; s; s = one ? NULL : s->next) {
            if (!cJSON_IsString(s) || !*s->valuestring || strlen(s->valuestring) > MAX_STOP_LEN ||
                g->nstops == MAX_STOPS) {
                http_reply_error(req, 400, "invalid_request_error", "stop",
                                 "field 'stop' takes at most %d non-empty strings of at most %d "
                                 "bytes",
                                 MAX_STOPS, MAX_STOP_LEN);
                return -1;
            }
            memcpy(g->stops[g->nstops++], s->valuestring, strlen(s->valuestring) + 1);
        }
    }
    if (chat || (dbgpt && json_get(root, "messages"))) {
        it = json_get(root, "messages");
        if (!cJSON_IsArray(it) || !it->child) {
            bad_request(req, "messages", "field 'messages' must be a non-empty array");
            return -1;
        }
        for (const cJSON *m = it->child; m; m = m->next) {
            if (!cJSON_IsObject(m) || !cJSON_IsString(json_get(m, "role"))) {
                bad_request(req, "messages", "each message must be an object with a string 'role'");
                return -1;
            }
            if (append_content(req, json_get(m, "content"), &g->prompt) != 0) {
                return -1;
            }
        }
    } else {
        it = json_get(root, "prompt");
        if (cJSON_IsArray(it) && it->child && !it->child->next) {
            it = it->child; /* a one-element list, as the SDKs may send */
        }
        if (!cJSON_IsString(it)) {
            bad_request(req, "prompt", "field 'prompt' must be a string");
            return -1;
        }
        if (buf_printf(&g->prompt, "%s", it->valuestring) != 0) {
            return -1;
        }
    }
    g->p.temperature = temperature;
    g->p.top_p = top_p;
    g->p.max_tokens = (int)max_tokens;
    if (seed == -1 && !json_get(root, "seed")) {
        util_random_bytes(&g->p.seed, sizeof(g->p.seed));
    } else {
        g->p.seed = (uint64_t)(int64_t)seed;
    }
    return 0;
}

/* If the text ends in a stop sequence that ends after byte `from` of it,
 * cuts the text there and returns true. */
static bool
cut_at_stop(const struct gen_request *g, struct buf *text, size_t from)
{
    for (size_t i = 0; i < g->nstops; i++) {
        size_t sl = strlen(g->stops[i]);
        size_t k = from >= sl ? from - sl + 1 : 0;
        for (; k + sl <= text->len; k++) {
            if (memcmp(text->data + k, g->stops[i], sl) == 0) {
                text->len = k; /* the stop sequence is not part of the text */
                return true;
            }
        }
    }
    return false;
}

/* Adds the next token to `text`. Returns NULL while generation goes on,
 * else the finish reason. */
static const char *
step(struct wrk_gen *gen, const struct gen_request *g, struct buf *text)
{
    char tok[160];
    const char *t = wrk_gen_next(gen, tok, sizeof(tok));
    size_t before = text->len;

    if (!t) {
        return gen->completion_tokens >= g->p.max_tokens ? "length" : "stop";
    }
    if (buf_append(text, t, strlen(t)) != 0) {
        return "length";
    }
    return cut_at_stop(g, text, before) ? "stop" : NULL;
}

/* Runs the model to the end. Returns the finish reason. */
static const char *
generate(const struct wrk_server *srv, struct gen_request *g, struct buf *out, int *ptoks,
         int *ctoks)
{
    struct wrk_gen gen;
    const char *finish;

    wrk_gen_init(&gen, srv->lm, g->prompt.data ? g->prompt.data : "", g->prompt.len, &g->p);
    while ((finish = step(&gen, g, out)) == NULL) {
    }
    *ptoks = gen.prompt_tokens;
    *ctoks = gen.completion_tokens;
    return finish;
}

static void
jw_usage(struct jw *w, int p, int c)
{
    jw_raw(w, "\"usage\":{\"prompt_tokens\":");
    jw_i64(w, p);
    jw_raw(w, ",\"completion_tokens\":");
    jw_i64(w, c);
    jw_raw(w, ",\"total_tokens\":");
    jw_i64(w, (int64_t)p + c);
    jw_raw(w, "}");
}

enum gen_api { API_CHAT, API_COMPLETIONS, API_DBGPT, API_DBGPT_STREAM };

/* ---- streaming: one token per loop turn (or per --decode_delay_ms) ----------- */

struct stream {
    struct wrk_server *srv;
    struct http_request *req;
    enum gen_api api;
    struct event *timer;
    struct gen_request g; /* owns g.prompt */
    struct wrk_gen gen;
    struct buf text; /* everything generated so far */
    size_t sent;     /* bytes of text already sent */
    size_t holdback; /* bytes kept back: they may start a stop sequence */
    char id[80];
    char model[WRK_NAME_MAX + 1];
    int64_t created;
};

static void
stream_free(struct stream *s)
{
    atomic_fetch_sub(&s->srv->load.in_flight, 1);
    if (s->timer) {
        event_free(s->timer);
    }
    buf_cleanup(&s->text);
    buf_cleanup(&s->g.prompt);
    free(s);
}

/* Writes one SSE event (`data: <json>\n\n`), or one DB-GPT frame (JSON and a
 * NUL byte), built in b. */
static void
stream_send(struct stream *s, struct buf *b, struct jw *w)
{
    if (w->err) {
        return;
    }
    if (s->api == API_DBGPT_STREAM) {
        if (buf_append(b, "", 1) == 0) { /* the NUL that ends a frame */
            http_stream_write(s->req, b->data, b->len);
        }
        return;
    }
    http_stream_write(s->req, "data: ", 6);
    http_stream_write(s->req, b->data, b->len);
    http_stream_write(s->req, "\n\n", 2);
}

/* The head of an OpenAI chunk, up to the choice's own fields. */
static void
chunk_head(struct stream *s, struct jw *w, bool usage_slot)
{
    jw_raw(w, "{\"id\":");
    jw_str(w, s->id);
    jw_raw(w, s->api == API_CHAT ? ",\"object\":\"chat.completion.chunk\",\"created\":"
                                 : ",\"object\":\"text_completion\",\"created\":");
    jw_i64(w, s->created);
    jw_raw(w, ",\"model\":");
    jw_str(w, s->model);
    if (usage_slot && s->g.include_usage) {
        jw_raw(w, ",\"usage\":null");
    }
}

/* Sends text[from..to) as one chunk, with `finish` (NULL: not yet). */
static void
send_piece(struct stream *s, size_t from, size_t to, const char *finish)
{
    struct buf b;
    struct jw w;

    buf_init(&b, 4 * 1024 * 1024);
    jw_init(&w, &b);
    if (s->api == API_DBGPT_STREAM) {
        /* DB-GPT's frames carry the whole text so far */
        jw_raw(&w, "{\"text\":");
        jw_strn(&w, s->text.data ? s->text.data : "", to);
        jw_raw(&w, ",\"error_code\":0,\"incremental\":false,\"model_context\":null,"
                   "\"finish_reason\":");
        jw_str(&w, finish);
        jw_raw(&w, ",\"usage\":");
        if (finish) {
            jw_raw(&w, "{\"prompt_tokens\":");
            jw_i64(&w, s->gen.prompt_tokens);
            jw_raw(&w, ",\"completion_tokens\":");
            jw_i64(&w, s->gen.completion_tokens);
            jw_raw(&w, ",\"total_tokens\":");
            jw_i64(&w, (int64_t)s->gen.prompt_tokens + s->gen.completion_tokens);
            jw_raw(&w, "}");
        } else {
            jw_raw(&w, "null");
        }
        jw_raw(&w, ",\"metrics\":null,\"content\":{\"type\":\"text\",\"object\":{\"data\":");
        jw_strn(&w, s->text.data ? s->text.data : "", to);
        jw_raw(&w, ",\"format\":\"text\"}}}");
    } else {
        chunk_head(s, &w, true);
        jw_raw(&w, ",\"choices\":[{\"index\":0,");
        jw_raw(&w, s->api == API_CHAT ? "\"delta\":" : "\"text\":");
        if (s->api == API_CHAT) {
            jw_raw(&w, finish ? "{}" : "{\"content\":");
            if (!finish) {
                jw_strn(&w, s->text.data + from, to - from);
                jw_raw(&w, "}");
            }
        } else {
            jw_strn(&w, s->text.data ? s->text.data + from : "", to - from);
        }
        jw_raw(&w, ",\"logprobs\":null,\"finish_reason\":");
        jw_str(&w, finish);
        jw_raw(&w, "}]}");
    }
    stream_send(s, &b, &w);
    buf_cleanup(&b);
}

static void
stream_finish(struct stream *s, const char *finish)
{
    if (s->sent < s->text.len) {
        send_piece(s, s->sent, s->text.len, NULL);
        s->sent = s->text.len;
    }
    send_piece(s, s->sent, s->sent, finish);
    if (s->api != API_DBGPT_STREAM) {
        if (s->g.include_usage) {
            struct buf b;
            struct jw w;
            buf_init(&b, 64 * 1024);
            jw_init(&w, &b);
            chunk_head(s, &w, false);
            jw_raw(&w, ",\"choices\":[],");
            jw_usage(&w, s->gen.prompt_tokens, s->gen.completion_tokens);
            jw_raw(&w, "}");
            stream_send(s, &b, &w);
            buf_cleanup(&b);
        }
        http_stream_write(s->req, "data: [DONE]\n\n", 14);
    }
    http_req_on_close(s->req, NULL, NULL);
    http_stream_end(s->req);
    stream_free(s);
}

static void schedule(struct stream *s);

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct stream *s = arg;
    const char *finish = step(&s->gen, &s->g, &s->text);
    size_t end;

    (void)fd;
    (void)what;
    if (finish) {
        stream_finish(s, finish);
        return;
    }
    end = s->text.len > s->holdback ? s->text.len - s->holdback : 0;
    while (end > s->sent && ((unsigned char)s->text.data[end] & 0xC0) == 0x80) {
        end--; /* never split a UTF-8 sequence between two chunks */
    }
    if (end > s->sent) {
        send_piece(s, s->sent, end, NULL);
        s->sent = end;
    }
    schedule(s);
}

static void
schedule(struct stream *s)
{
    int64_t ms = s->srv->cfg->decode_delay_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};

    evtimer_add(s->timer, &tv);
}

/* The client went away: stop generating at once. */
static void
on_client_gone(struct http_request *req, void *arg)
{
    struct stream *s = arg;

    atomic_fetch_add(&s->srv->cancelled, 1);
    log_debug("request %s: client disconnected after %d tokens; generation cancelled",
              http_req_id(req), s->gen.completion_tokens);
    http_stream_end(req);
    stream_free(s);
}

/* Takes over g (its prompt buffer included) and streams the generation. */
static void
start_stream(struct http_request *req, struct wrk_server *srv, enum gen_api api, const char *model,
             struct gen_request *g)
{
    struct stream *s = calloc(1, sizeof(*s));
    struct event_base *base = http_loop_base(http_req_loop(req));

    if (!s || !(s->timer = evtimer_new(base, on_tick, s))) {
        free(s);
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        return;
    }
    atomic_fetch_add(&srv->load.in_flight, 1);
    s->srv = srv;
    s->req = req;
    s->api = api;
    s->g = *g;
    memset(&g->prompt, 0, sizeof(g->prompt)); /* moved */
    buf_init(&s->text, 4 * 1024 * 1024);
    for (size_t i = 0; i < s->g.nstops; i++) {
        size_t n = strlen(s->g.stops[i]);
        if (n - 1 > s->holdback) {
            s->holdback = n - 1;
        }
    }
    snprintf(s->id, sizeof(s->id), "%s-%s", api == API_CHAT ? "chatcmpl" : "cmpl",
             http_req_id(req));
    util_strlcpy(s->model, model, sizeof(s->model));
    s->created = util_wall_ms() / 1000;
    wrk_gen_init(&s->gen, srv->lm, s->g.prompt.data ? s->g.prompt.data : "", s->g.prompt.len,
                 &s->g.p);
    http_req_on_close(req, on_client_gone, s);
    http_stream_start(req, 200,
                      api == API_DBGPT_STREAM ? "text/plain; charset=utf-8" : "text/event-stream",
                      NULL);
    if (api == API_CHAT) {
        /* OpenAI's first chunk names the role */
        struct buf b;
        struct jw w;
        buf_init(&b, 64 * 1024);
        jw_init(&w, &b);
        chunk_head(s, &w, true);
        jw_raw(&w, ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                   "\"logprobs\":null,\"finish_reason\":null}]}");
        stream_send(s, &b, &w);
        buf_cleanup(&b);
    }
    schedule(s);
}

static void
generation(struct http_request *req, void *arg, enum gen_api api)
{
    struct wrk_server *srv = server_of(arg);
    const char *model = NULL;
    cJSON *root = parse_request(req, srv, &model);
    struct gen_request g;
    struct buf text, b;
    struct jw w;
    int ptoks = 0, ctoks = 0;

    if (!root) {
        return;
    }
    memset(&g, 0, sizeof(g));
    buf_init(&g.prompt, 4 * 1024 * 1024);
    buf_init(&text, 4 * 1024 * 1024);
    buf_init(&b, 8 * 1024 * 1024);
    if (!srv->lm) {
        http_reply_error(req, 400, "invalid_request_error", "model_not_generative",
                         "the model '%s' is an embedding model", model);
        goto out;
    }
    if (parse_generation(req, root, api == API_CHAT, api >= API_DBGPT, api == API_DBGPT_STREAM,
                         &g) != 0) {
        goto out;
    }
    if (g.stream) {
        start_stream(req, srv, api == API_DBGPT ? API_DBGPT_STREAM : api, model, &g);
        goto out;
    }
    atomic_fetch_add(&srv->load.in_flight, 1);
    const char *finish = generate(srv, &g, &text, &ptoks, &ctoks);
    atomic_fetch_sub(&srv->load.in_flight, 1);
    jw_init(&w, &b);
    if (api == API_DBGPT) {
        /* DB-GPT's ModelOutput (asdict): the text twice, as its v1 and v2
         * readers expect */
        jw_raw(&w, "{\"text\":");
        jw_strn(&w, text.data ? text.data : "", text.len);
        jw_raw(&w, ",\"error_code\":0,\"incremental\":false,\"model_context\":null,"
                   "\"finish_reason\":");
        jw_str(&w, finish);
        jw_raw(&w, ",");
        jw_usage(&w, ptoks, ctoks);
        jw_raw(&w, ",\"metrics\":null,\"content\":{\"type\":\"text\",\"object\":{\"data\":");
        jw_strn(&w, text.data ? text.data : "", text.len);
        jw_raw(&w, ",\"format\":\"text\"}}}");
    } else {
        char id[80];
        snprintf(id, sizeof(id), "%s-%s", api == API_CHAT ? "chatcmpl" : "cmpl", http_req_id(req));
        jw_raw(&w, "{\"id\":");
        jw_str(&w, id);
        jw_raw(&w, api == API_CHAT ? ",\"object\":\"chat.completion\",\"created\":"
                                   : ",\"object\":\"text_completion\",\"created\":");
        jw_i64(&w, util_wall_ms() / 1000);
        jw_raw(&w, ",\"model\":");
        jw_str(&w, model);
        jw_raw(&w, api == API_CHAT ? ",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                                     "\"assistant\",\"content\":"
                                   : ",\"choices\":[{\"index\":0,\"text\":");
        jw_strn(&w, text.data ? text.data : "", text.len);
        jw_raw(&w, api == API_CHAT ? "},\"logprobs\":null,\"finish_reason\":"
                                   : ",\"logprobs\":null,\"finish_reason\":");
        jw_str(&w, finish);
        jw_raw(&w, "}],");
        jw_usage(&w, ptoks, ctoks);
        jw_raw(&w, "}");
    }
    reply_json(req, srv, &b, &w);
out:
    buf_cleanup(&b);
    buf_cleanup(&text);
    buf_cleanup(&g.prompt);
    cJSON_Delete(root);
}

static void
h_chat(struct http_request *req, void *arg)
{
    generation(req, arg, API_CHAT);
}

static void
h_completions(struct http_request *req, void *arg)
{
    generation(req, arg, API_COMPLETIONS);
}

static void
h_generate(struct http_request *req, void *arg)
{
    generation(req, arg, API_DBGPT);
}

static void
h_generate_stream(struct http_request *req, void *arg)
{
    generation(req, arg, API_DBGPT_STREAM);
}

const struct http_route wrk_routes[] = {
    {"GET", "/api/health", h_health, 0},
    {"GET", "/metrics", h_metrics, 0},
    {"GET", "/v1/models", h_models, 0},
    {"POST", "/v1/embeddings", h_v1_embeddings, 0},
    {"POST", "/v1/chat/completions", h_chat, 0},
    {"POST", "/v1/completions", h_completions, 0},
    {"POST", "/api/worker/generate", h_generate, 0},
    {"POST", "/api/worker/generate_stream", h_generate_stream, 0},
    {"POST", "/api/worker/embeddings", h_worker_embeddings, 0},
    {"POST", "/api/worker/count_token", h_count_token, 0},
    {"POST", "/api/worker/model_metadata", h_model_metadata, 0},
    {0},
};
