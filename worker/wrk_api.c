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
 *   POST /api/worker/count_token     {model, prompt} -> int; {prompt} alone
 *                                    when the worker serves one model
 *   POST /api/worker/model_metadata  {model} -> ModelMetadata
 * And GET /api/health, GET /metrics.
 *
 * Errors are OpenAI's shape with the right status: 400 bad JSON or field,
 * 404 unknown model, 413 (the HTTP layer) body too large.
 */
#include "wrk.h"

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
#include "netaddr.h"
#include "util.h"
#include "wrk_lm.h"

#define MAX_JSON_DEPTH 16
#define MAX_RESPONSE   (256u * 1024 * 1024)

struct wrk_server *
wrk_server_of(void *arg)
{
    return arg;
}

void
wrk_bad_request(struct http_request *req, const char *code, const char *msg)
{
    http_reply_error(req, 400, "invalid_request_error", code ? code : "invalid_request", "%s", msg);
}

/* Parses the body as a JSON object and finds the served model named by its
 * "model" field. Replies and returns NULL on any failure. */
struct cJSON *
wrk_parse_request(struct http_request *req, struct wrk_server *srv, const char **model_out)
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
        wrk_bad_request(req, NULL, "the body must be a JSON object");
        cJSON_Delete(root);
        return NULL;
    }
    m = json_get(root, "model");
    if (!cJSON_IsString(m)) {
        wrk_bad_request(req, "model", "field 'model' (a string) is required");
        cJSON_Delete(root);
        return NULL;
    }
    for (size_t i = 0; i < srv->nmodels; i++) {
        if (strcmp(srv->models[i], m->valuestring) == 0) {
            if (srv->stopped[i]) {
                http_reply_error(req, 503, "server_error", "model_stopped",
                                 "the model '%s' is stopped on this worker (POST "
                                 "/api/worker/apply with apply_type 'start')",
                                 srv->models[i]);
                cJSON_Delete(root);
                return NULL;
            }
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
        wrk_bad_request(req, "input", "field 'input' must be a string or an array of strings");
        return -1;
    }
    for (const cJSON *it = in->child; it; it = it->next) {
        if (!cJSON_IsString(it)) {
            wrk_bad_request(req, "input",
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
        wrk_bad_request(req, "input", "field 'input' must not be empty");
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

/* A component of a unit vector, |f| <= 1, in fixed point with nine
 * decimals ("-0.012345678", trailing zeros dropped): within 5e-10 of the
 * float, and several times cheaper than printf, which dominated the cost of
 * an embeddings response. Anything else goes through printf. */
static size_t
format_unit(char *out, size_t cap, float f)
{
    double a = fabs((double)f);
    char *p = out;

    if (!(a <= 1.0)) {
        return (size_t)snprintf(out, cap, "%.9g", (double)f);
    }
    uint64_t scaled = (uint64_t)llround(a * 1e9);
    if (f < 0 && scaled) {
        *p++ = '-';
    }
    *p++ = (char)('0' + scaled / 1000000000u);
    *p++ = '.';
    uint64_t frac = scaled % 1000000000u;
    char digits[9];
    for (int i = 8; i >= 0; i--) {
        digits[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    int n = 9;
    while (n > 1 && digits[n - 1] == '0') {
        n--;
    }
    memcpy(p, digits, (size_t)n);
    return (size_t)(p - out) + (size_t)n;
}

static void
jw_floats(struct jw *w, const float *v, size_t n)
{
    char num[40];

    jw_raw(w, "[");
    for (size_t i = 0; i < n && !w->err; i++) {
        size_t len = 0;
        if (i) {
            num[len++] = ',';
        }
        len += format_unit(num + len, sizeof(num) - len, v[i]);
        if (buf_append(w->b, num, len) != 0) {
            w->err = 1;
        }
    }
    jw_raw(w, "]");
}

void
wrk_reply_json(struct http_request *req, struct wrk_server *srv, struct buf *b, struct jw *w)
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
    struct wrk_server *srv = wrk_server_of(arg);
    const cJSON *items[WRK_MAX_INPUTS];
    const char *model = NULL;
    cJSON *root = wrk_parse_request(req, srv, &model);
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
            wrk_bad_request(req, "encoding_format",
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
    wrk_reply_json(req, srv, &b, &w);
    buf_cleanup(&b);
out:
    free(vec);
    cJSON_Delete(root);
}

static void
h_v1_embeddings(struct http_request *req, void *arg)
{
    if (wrk_server_of(arg)->proxy) {
        wrk_proxy_embeddings(req, wrk_server_of(arg), false);
        return;
    }
    atomic_fetch_add(&wrk_server_of(arg)->load.in_flight, 1);
    embeddings(req, arg, false);
    atomic_fetch_sub(&wrk_server_of(arg)->load.in_flight, 1);
}

static void
h_worker_embeddings(struct http_request *req, void *arg)
{
    if (wrk_server_of(arg)->proxy) {
        wrk_proxy_embeddings(req, wrk_server_of(arg), true);
        return;
    }
    atomic_fetch_add(&wrk_server_of(arg)->load.in_flight, 1);
    embeddings(req, arg, true);
    atomic_fetch_sub(&wrk_server_of(arg)->load.in_flight, 1);
}

/* POST /api/worker/count_token. DB-GPT's RemoteModelWorker posts only
 * {"prompt": ...} (no model, which DB-GPT's own worker then rejects with
 * 422): accepted when this worker serves a single model, a clear 400 when
 * it serves several. */
static void
h_count_token(struct http_request *req, void *arg)
{
    struct wrk_server *srv = wrk_server_of(arg);
    const char *model = NULL;
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    char err[256];
    char num[32];
    cJSON *root = NULL;

    if (json_parse(body, len, MAX_JSON_DEPTH, &root, err, sizeof(err)) == 0 &&
        cJSON_IsObject(root) && !json_get(root, "model")) {
        atomic_fetch_add(&srv->requests, 1);
        if (srv->nmodels != 1) {
            char names[512] = "";
            for (size_t i = 0; i < srv->nmodels; i++) {
                size_t n = strlen(names);
                snprintf(names + n, sizeof(names) - n, "%s'%s'", i ? ", " : "", srv->models[i]);
            }
            http_reply_error(req, 400, "invalid_request_error", "model",
                             "field 'model' is required: this worker serves %zu models (%s)",
                             srv->nmodels, names);
            goto out;
        }
        if (srv->stopped[0]) {
            http_reply_error(req, 503, "server_error", "model_stopped",
                             "the model '%s' is stopped on this worker (POST /api/worker/apply "
                             "with apply_type 'start')",
                             srv->models[0]);
            goto out;
        }
    } else {
        cJSON_Delete(root);
        root = wrk_parse_request(req, srv, &model); /* replies on any failure */
        if (!root) {
            return;
        }
    }
    const cJSON *p = json_get(root, "prompt");
    if (!cJSON_IsString(p)) {
        wrk_bad_request(req, "prompt", "field 'prompt' (a string) is required");
    } else {
        size_t plen = strlen(p->valuestring);
        snprintf(num, sizeof(num), "%zu",
                 srv->lm ? wrk_lm_count_tokens(p->valuestring, plen)
                         : wrk_count_words(p->valuestring, plen));
        http_reply(req, 200, "application/json", num, strlen(num), NULL);
    }
out:
    cJSON_Delete(root);
}

static void
h_model_metadata(struct http_request *req, void *arg)
{
    struct wrk_server *srv = wrk_server_of(arg);
    const char *model = NULL;
    cJSON *root = wrk_parse_request(req, srv, &model);
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
    wrk_reply_json(req, srv, &b, &w);
    buf_cleanup(&b);
    cJSON_Delete(root);
}

static void
h_models(struct http_request *req, void *arg)
{
    struct wrk_server *srv = wrk_server_of(arg);
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
    wrk_reply_json(req, srv, &b, &w);
    buf_cleanup(&b);
}

static void
h_health(struct http_request *req, void *arg)
{
    struct wrk_server *srv = wrk_server_of(arg);
    bool registered = srv->registrar && wrk_registrar_registered(srv->registrar);
    int cur = srv->registrar ? wrk_registrar_current(srv->registrar) : -1;
    struct buf b;
    struct jw w;

    buf_init(&b, 64 * 1024);
    jw_init(&w, &b);
    jw_raw(&w, "{\"status\":\"ok\",\"registered\":");
    jw_bool(&w, registered);
    jw_raw(&w, ",\"controller\":");
    jw_str(&w, cur >= 0 ? srv->rcfg.shown[cur] : NULL);
    jw_raw(&w, ",\"in_flight\":");
    jw_i64(&w, atomic_load(&srv->load.in_flight));
    jw_raw(&w, ",\"capacity\":");
    jw_i64(&w, srv->load.capacity);
    jw_raw(&w, ",\"backend\":");
    jw_str(&w, srv->cfg->backend);
    if (srv->engine) {
        jw_raw(&w, ",\"engine\":{\"state\":");
        jw_str(&w, srv->engine_up ? "up" : "down");
        jw_raw(&w, ",\"pid\":");
        jw_i64(&w, atomic_load(&srv->engine_pid));
        jw_raw(&w, ",\"restarts\":");
        jw_i64(&w, (int64_t)atomic_load(&srv->engine_restarts));
        jw_raw(&w, "}");
    }
    jw_raw(&w, "}");
    wrk_reply_json(req, srv, &b, &w);
    buf_cleanup(&b);
}

static void
h_metrics(struct http_request *req, void *arg)
{
    struct wrk_server *srv = wrk_server_of(arg);
    struct buf b;

    buf_init(&b, 64 * 1024);
    int rc = srv->http ? metrics_write_http(&b, srv->http) : 0;
    rc |= metrics_header(&b, "roster_worker_requests_total", "counter",
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
    rc |= metrics_header(&b, "roster_worker_rejected_total", "counter",
                         "Requests refused at capacity (429) or after waiting too long (503).");
    rc |= metrics_sample(&b, "roster_worker_rejected_total", NULL,
                         (double)atomic_load(&srv->rejected));
    rc |= metrics_header(&b, "roster_worker_upstream_errors_total", "counter",
                         "openai/exec backends: transfers to the engine that failed or got an "
                         "error status other than the client's own 4xx.");
    rc |= metrics_sample(&b, "roster_worker_upstream_errors_total", NULL,
                         (double)atomic_load(&srv->upstream_errors));
    rc |= metrics_header(&b, "roster_worker_engine_restarts_total", "counter",
                         "exec backend: times the engine was started again.");
    rc |= metrics_sample(&b, "roster_worker_engine_restarts_total", NULL,
                         (double)atomic_load(&srv->engine_restarts));
    rc |= metrics_header(&b, "roster_worker_stream_pauses_total", "counter",
                         "Times a stream paused (stopped reading the engine, or the builtin "
                         "model stopped generating) because its client was behind "
                         "(--stream_buffer_bytes).");
    rc |= metrics_sample(&b, "roster_worker_stream_pauses_total", NULL,
                         (double)atomic_load(&srv->stream_pauses));
    rc |= metrics_write_budget(&b);
    rc |= metrics_header(&b, "roster_worker_queued", "gauge", "Requests waiting for capacity.");
    rc |= metrics_sample(&b, "roster_worker_queued", NULL,
                         (double)atomic_load(&srv->load.queue_length));
    rc |= metrics_header(&b, "roster_worker_in_flight", "gauge", "Requests being served.");
    rc |= metrics_sample(&b, "roster_worker_in_flight", NULL,
                         (double)atomic_load(&srv->load.in_flight));
    rc |= metrics_header(&b, "roster_worker_registered", "gauge",
                         "1 when every instance is accepted by a controller.");
    rc |= metrics_sample(&b, "roster_worker_registered", NULL,
                         srv->registrar && wrk_registrar_registered(srv->registrar) ? 1 : 0);
    metrics_reply(req, &b, rc);
    buf_cleanup(&b);
}

/* DB-GPT's WorkerApplyOutput: {message, success, timecost (seconds)}. */
static void
reply_apply(struct http_request *req, bool success, int64_t t0_us, const char *msg)
{
    struct buf b;
    struct jw w;

    buf_init(&b, 4096);
    jw_init(&w, &b);
    jw_raw(&w, "{\"message\":");
    jw_str(&w, msg);
    jw_raw(&w, ",\"success\":");
    jw_bool(&w, success);
    jw_raw(&w, ",\"timecost\":");
    jw_double(&w, (double)(util_mono_ms() * 1000 - t0_us) / 1e6);
    jw_raw(&w, "}");
    http_reply(req, 200, "application/json", w.err ? "{}" : b.data, w.err ? 2 : b.len, NULL);
    buf_cleanup(&b);
}

/* POST /api/worker/apply: start, stop, restart or update_params (weight)
 * of one model. Needs the cluster secret, or a loopback client when the
 * worker has none. Takes effect at once here; the registrar (de)registers
 * on its own thread. */
static void
h_apply(struct http_request *req, void *arg)
{
    struct wrk_server *srv = wrk_server_of(arg);
    int64_t t0 = util_mono_ms() * 1000;
    size_t len = 0;
    const char *body = http_req_body(req, &len);
    const char *secret = srv->cfg->cluster_secret;
    char err[256];
    char msg[512];
    cJSON *root = NULL;
    size_t i;

    if (secret && *secret ? !http_req_has_secret(req, secret)
                          : !netaddr_list_match(&srv->loopback, http_req_peer(req))) {
        http_reply_error(req, 401, "authentication_error", "unauthorized",
                         "/api/worker/apply needs the cluster secret (X-Roster-Secret)%s",
                         secret && *secret ? "" : "; without --cluster_secret, only from loopback");
        return;
    }
    if (json_parse(body, len, MAX_JSON_DEPTH, &root, err, sizeof(err)) != 0 ||
        !cJSON_IsObject(root)) {
        http_reply_error(req, 400, "invalid_request_error", "invalid_json",
                         "the body must be a JSON object: %s", root ? "not an object" : err);
        cJSON_Delete(root);
        return;
    }
    const cJSON *model = json_get(root, "model");
    const cJSON *type = json_get(root, "apply_type");
    const cJSON *wtype = json_get(root, "worker_type");
    const cJSON *params = json_get(root, "params");
    if (!cJSON_IsString(model) || !cJSON_IsString(type) ||
        (wtype && !cJSON_IsNull(wtype) && !cJSON_IsString(wtype)) ||
        (params && !cJSON_IsNull(params) && !cJSON_IsObject(params))) {
        http_reply_error(req, 400, "invalid_request_error", "invalid_request",
                         "fields: model (string), apply_type (string), worker_type (string), "
                         "params (object)");
        goto out;
    }
    for (i = 0; i < srv->nmodels && strcmp(srv->models[i], model->valuestring) != 0; i++) {
    }
    if (i == srv->nmodels ||
        (cJSON_IsString(wtype) && strcmp(wtype->valuestring, srv->cfg->worker_type) != 0)) {
        snprintf(msg, sizeof(msg), "this worker serves no model '%.200s' of type '%s'",
                 model->valuestring,
                 cJSON_IsString(wtype) ? wtype->valuestring : srv->cfg->worker_type);
        reply_apply(req, false, t0, msg);
        goto out;
    }
    const char *t = type->valuestring;
    if (strcmp(t, "stop") == 0 || strcmp(t, "start") == 0 || strcmp(t, "restart") == 0) {
        srv->stopped[i] = strcmp(t, "stop") == 0;
        if (strcmp(t, "restart") == 0) {
            wrk_registrar_set(srv->registrar, i, false, srv->weight[i]);
        }
        wrk_registrar_set(srv->registrar, i, wrk_serving(srv, i), srv->weight[i]);
        log_info("apply %s %s", t, srv->models[i]);
        snprintf(msg, sizeof(msg), "%s %s", t, srv->models[i]);
        reply_apply(req, true, t0, msg);
        goto out;
    }
    if (strcmp(t, "update_params") == 0) {
        const cJSON *wt = params ? json_get(params, "weight") : NULL;
        if (!cJSON_IsNumber(wt) || !isfinite(wt->valuedouble) || wt->valuedouble < 0 ||
            wt->valuedouble > 1e6) {
            reply_apply(req, false, t0,
                        "update_params takes params.weight, a number in [0, 1000000]");
            goto out;
        }
        srv->weight[i] = wt->valuedouble;
        if (wrk_serving(srv, i)) {
            wrk_registrar_set(srv->registrar, i, true, srv->weight[i]);
        }
        log_info("apply update_params %s weight=%g", srv->models[i], srv->weight[i]);
        snprintf(msg, sizeof(msg), "%s: weight %g", srv->models[i], srv->weight[i]);
        reply_apply(req, true, t0, msg);
        goto out;
    }
    snprintf(msg, sizeof(msg), "unknown apply_type '%.64s' (start, stop, restart, update_params)",
             t);
    reply_apply(req, false, t0, msg);
out:
    cJSON_Delete(root);
}

const struct http_route wrk_routes[] = {
    {"GET", "/api/health", h_health, 0},
    {"GET", "/metrics", h_metrics, 0},
    {"GET", "/v1/models", h_models, 0},
    {"POST", "/v1/embeddings", h_v1_embeddings, 0},
    {"POST", "/v1/chat/completions", wrk_h_chat, 0},
    {"POST", "/v1/completions", wrk_h_completions, 0},
    {"POST", "/api/worker/generate", wrk_h_generate, 0},
    {"POST", "/api/worker/generate_stream", wrk_h_generate_stream, 0},
    {"POST", "/api/worker/embeddings", h_worker_embeddings, 0},
    {"POST", "/api/worker/count_token", h_count_token, 0},
    {"POST", "/api/worker/model_metadata", h_model_metadata, 0},
    {"POST", "/api/worker/apply", h_apply, 0},
    {0},
};
