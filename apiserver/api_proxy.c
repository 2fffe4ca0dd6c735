/* SPDX-License-Identifier: MIT
 *
 * api_proxy.c - the apiserver's request path: POST chat/completions,
 * completions and embeddings (under /v1/ and /api/v1/), proxied to an
 * instance of the model picked from the loop's table.
 *
 * A request's life:
 *
 *   parse (model, stream, session key) -> look up the model (404, 503)
 *     -> attempt: pick an instance (api_route.c), send the body unchanged
 *        with libcurl multi on this loop (keep-alive to the workers)
 *          - refused/reset/no answer, 5xx, 429, 404: nothing has reached
 *            the client yet, so try another instance (never the same one,
 *            at most --max_attempts); refused/reset/5xx eject the instance
 *          - no first byte within --first_byte_timeout_ms: 504, ejected
 *          - 2xx: a stream is forwarded chunk by chunk as it arrives (each
 *            chunk re-arms --idle_timeout_ms); otherwise the answer is sent
 *            whole with X-Roster-Added-Ms
 *          - another 4xx: the worker's answer goes to the client as is
 *     -> a failure after a stream has begun ends it with an SSE error
 *        event, never a silent truncation
 *   A client that disconnects cancels the transfer: the worker sees its
 *   connection close and stops generating.
 *
 * Everything runs on the request's loop thread; the only shared state is
 * the instances' atomics (in-flight counts, ejection) and counters.
 */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <event2/event.h>

#define LOG_MODULE "apiserver"
#include "buf.h"
#include "curl_loop.h"
#include "json_check.h"
#include "log.h"
#include "util.h"

#define MAX_ANSWER     (256u * 1024 * 1024)
#define MAX_ERROR_BODY (64u * 1024)
#define MAX_JSON_DEPTH 64
#define MAX_KEY        256

enum px_kind { PX_CHAT, PX_COMPLETIONS, PX_EMBEDDINGS };

static const char *const upstream_paths[] = {"/v1/chat/completions", "/v1/completions",
                                             "/v1/embeddings"};

struct api_px {
    struct api_loop *l;
    struct api_server *srv;
    struct http_request *req;
    struct api_table *table; /* a reference: keeps model and instances alive */
    struct api_model *model;
    enum px_kind kind;
    bool stream; /* the client asked for a stream */
    char key[MAX_KEY];
    size_t keylen;
    int tried[API_MAX_ATTEMPTS];
    size_t ntried;
    struct api_inst *inst; /* the instance of the current attempt */
    bool trial;            /* ... is a half-open trial */
    bool counted;          /* ... has our in-flight count */
    CURL *easy;
    bool in_loop;
    struct curl_slist *headers;
    struct event *timer; /* first byte, then (streams) idle */
    long status;         /* the current attempt's */
    bool got_header;
    bool started; /* our streamed reply has begun */
    struct buf resp;
    int64_t start_us;   /* arrival */
    int64_t attempt_us; /* the current attempt's start */
    bool saw_429;
    int fail_status; /* what to answer if every attempt fails (0: nothing yet) */
    char fail_code[32];
    char fail_msg[640];
    char curl_err[CURL_ERROR_SIZE];
    struct api_px *prev, *next; /* l->active */
};

static void attempt(struct api_px *px);

/* ---- bookkeeping ----------------------------------------------------------- */

static int64_t
now_us(void)
{
    return util_mono_us();
}

static void
count_error(struct api_px *px, enum api_error_class c)
{
    atomic_fetch_add_explicit(&px->model->stats->s.errors[c], 1, memory_order_relaxed);
    if (px->inst) {
        atomic_fetch_add_explicit(&px->inst->s.errors[c], 1, memory_order_relaxed);
    }
}

/* The current attempt is over: its transfer stopped, its count dropped. */
static void
end_attempt(struct api_px *px)
{
    if (px->in_loop) {
        curl_loop_remove(px->l->curl, px->easy);
        px->in_loop = false;
    }
    if (px->timer) {
        evtimer_del(px->timer);
    }
    if (px->counted) {
        atomic_fetch_sub(&px->inst->rt.in_flight, 1);
        px->counted = false;
    }
}

static void
eject(struct api_px *px)
{
    route_eject(&px->inst->rt, util_mono_ms(), px->srv->cfg->eject_ms);
    px->trial = false;
    atomic_fetch_add(&px->inst->s.ejections, 1);
    atomic_fetch_add(&px->model->stats->s.ejections, 1);
    log_info("ejected %s (%s) for %lld ms", px->inst->label, px->model->name,
             (long long)px->srv->cfg->eject_ms);
}

static void
instance_ok(struct api_px *px)
{
    route_success(&px->inst->rt);
    px->trial = false;
}

/* The request is answered: forget it. */
static void
px_free(struct api_px *px)
{
    int64_t us = now_us() - px->start_us;

    end_attempt(px);
    if (px->trial) {
        route_trial_abort(&px->inst->rt);
    }
    metrics_hist_observe_us(&px->model->stats->s.latency, us);
    if (px->inst) {
        metrics_hist_observe_us(&px->inst->s.latency, us);
    }
    if (px->prev) {
        px->prev->next = px->next;
    } else if (px->l->active == px) {
        px->l->active = px->next;
    }
    if (px->next) {
        px->next->prev = px->prev;
    }
    if (px->timer) {
        event_free(px->timer);
    }
    if (px->easy) {
        curl_easy_cleanup(px->easy);
    }
    curl_slist_free_all(px->headers);
    buf_cleanup(&px->resp);
    api_table_unref(px->table);
    free(px);
}

/* Replies (once) and frees: the access log reads px during the reply. */
static void
finish_error(struct api_px *px, int status, const char *type, const char *code, const char *msg)
{
    http_req_on_close(px->req, NULL, NULL);
    http_reply_error(px->req, status, type, code, "%s", msg);
    px_free(px);
}

/* After a stream has begun: an error event, then the end. */
static void
stream_error(struct api_px *px, const char *msg)
{
    char esc[400];
    char line[600];
    size_t n = 0;

    for (const char *p = msg; *p && n + 2 < sizeof(esc); p++) {
        if (*p == '"' || *p == '\\') {
            esc[n++] = '\\';
        }
        esc[n++] = (unsigned char)*p < 0x20 ? ' ' : *p;
    }
    esc[n] = '\0';
    int len = snprintf(line, sizeof(line),
                       "data: {\"error\":{\"message\":\"%s\",\"type\":\"server_error\","
                       "\"param\":null,\"code\":\"upstream_error\"}}\n\n",
                       esc);
    http_stream_write(px->req, line, (size_t)len < sizeof(line) ? (size_t)len : sizeof(line) - 1);
    http_req_on_close(px->req, NULL, NULL);
    http_stream_end(px->req);
    px_free(px);
}

/* Every attempt failed, or no instance was usable. */
static void
fail_all(struct api_px *px)
{
    char msg[512];

    if (px->saw_429 && px->fail_status == 0) {
        snprintf(msg, sizeof(msg), "every instance of '%s' is at capacity; retry", px->model->name);
        count_error(px, API_ERR_NO_INSTANCE);
        finish_error(px, 429, "rate_limit_exceeded", "model_at_capacity", msg);
    } else if (px->fail_status) {
        finish_error(px, px->fail_status,
                     px->fail_status < 500 ? "invalid_request_error" : "server_error",
                     px->fail_code, px->fail_msg);
    } else {
        snprintf(msg, sizeof(msg),
                 "no routable instance of '%s' (%zu registered, %zu routable, all ejected or "
                 "tried); retry",
                 px->model->name, px->model->known, px->model->set.n);
        count_error(px, API_ERR_NO_INSTANCE);
        finish_error(px, 503, "server_error", "no_routable_instance", msg);
    }
}

/* Remembers why this attempt failed, for fail_all: "instance <label>
 * <what>: <detail>". */
static void
remember(struct api_px *px, int status, const char *code, const char *what, const char *detail)
{
    px->fail_status = status;
    util_strlcpy(px->fail_code, code, sizeof(px->fail_code));
    snprintf(px->fail_msg, sizeof(px->fail_msg), "instance %.150s %.40s: %.300s", px->inst->label,
             what, detail);
}

/* ---- the transfer ------------------------------------------------------------- */

static void
arm(struct api_px *px, int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};

    evtimer_add(px->timer, &tv);
}

static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
    struct api_px *px = arg;

    (void)p;
    if (!px->got_header) {
        int64_t ttfb = now_us() - px->attempt_us;
        px->got_header = true;
        metrics_hist_observe_us(&px->inst->s.ttfb, ttfb);
        metrics_hist_observe_us(&px->model->stats->s.ttfb, ttfb);
        if (px->stream) {
            arm(px, px->srv->cfg->idle_timeout_ms);
        } else {
            evtimer_del(px->timer); /* the rest is bounded by --request_timeout_ms */
        }
    }
    return size * n;
}

/* X-Roster-Added-Ms: the time roster added, i.e. the request's time so
 * far minus the instance's share (`upstream_us`). */
static void
added_header(struct api_px *px, int64_t upstream_us, char *out, size_t cap)
{
    int64_t added = now_us() - px->start_us - upstream_us;

    snprintf(out, cap, "X-Roster-Added-Ms: %.3f\r\n", (double)(added > 0 ? added : 0) / 1000.0);
}

static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
    struct api_px *px = arg;
    size_t len = size * n;

    if (!px->status) {
        curl_easy_getinfo(px->easy, CURLINFO_RESPONSE_CODE, &px->status);
        if (px->status / 100 != 2) {
            px->resp.max = MAX_ERROR_BODY;
        }
    }
    if (px->status / 100 == 2 && px->stream) {
        if (!px->started) {
            char *ct = NULL;
            char hdr[64];
            curl_off_t st = 0;
            curl_easy_getinfo(px->easy, CURLINFO_CONTENT_TYPE, &ct);
            curl_easy_getinfo(px->easy, CURLINFO_STARTTRANSFER_TIME_T, &st);
            added_header(px, (int64_t)st, hdr, sizeof(hdr));
            http_stream_start(px->req, (int)px->status, ct ? ct : "text/event-stream", hdr);
            px->started = true;
        }
        http_stream_write(px->req, p, len);
        arm(px, px->srv->cfg->idle_timeout_ms);
        return len;
    }
    if (px->status / 100 != 2) {
        size_t room = px->resp.max - px->resp.len;
        if (buf_append(&px->resp, p, len < room ? len : room) != 0) {
            px->resp.len = 0;
        }
        return len;
    }
    return buf_append(&px->resp, p, len) == 0 ? len : 0;
}

/* The message of an instance's error answer (OpenAI's error.message), or
 * the start of its body. */
static void
answer_message(const struct buf *b, char *out, size_t cap)
{
    cJSON *root = NULL;
    char err[64];
    const char *msg = b->len ? b->data : "no details";

    if (b->len && json_parse(b->data, b->len, MAX_JSON_DEPTH, &root, err, sizeof(err)) == 0) {
        const cJSON *e = json_get(root, "error");
        const cJSON *m = cJSON_IsObject(e) ? json_get(e, "message") : NULL;
        if (cJSON_IsString(m)) {
            msg = m->valuestring;
        }
    }
    size_t n = 0;
    for (; *msg && n + 1 < cap && n < 200; msg++) {
        out[n++] = (unsigned char)*msg < 0x20 ? ' ' : *msg;
    }
    out[n] = '\0';
    cJSON_Delete(root);
}

static void
on_done(CURL *easy, CURLcode rc, void *arg)
{
    struct api_px *px = arg;
    char msg[640];

    px->in_loop = false;
    if (!px->status) {
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &px->status);
    }
    end_attempt(px);
    if (rc != CURLE_OK) {
        const char *why = px->curl_err[0] ? px->curl_err : curl_easy_strerror(rc);
        curl_off_t connected = 0;
        curl_easy_getinfo(easy, CURLINFO_CONNECT_TIME_T, &connected);
        /* a connect timeout is a connect failure: retried elsewhere */
        bool timeout = rc == CURLE_OPERATION_TIMEDOUT && connected > 0;
        count_error(px, timeout ? API_ERR_TIMEOUT : API_ERR_CONNECT);
        eject(px);
        if (px->started) {
            snprintf(msg, sizeof(msg), "instance %.150s failed mid-stream: %.300s", px->inst->label,
                     why);
            stream_error(px, msg);
        } else if (timeout) {
            snprintf(msg, sizeof(msg), "instance %.150s timed out: %.300s", px->inst->label, why);
            finish_error(px, 504, "server_error", "upstream_timeout", msg);
        } else if (px->status / 100 == 2) {
            snprintf(msg, sizeof(msg), "instance %.150s: %.300s", px->inst->label, why);
            finish_error(px, 502, "server_error", "upstream_error", msg);
        } else {
            remember(px, 503, "upstream_unavailable", "is unreachable", why);
            attempt(px);
        }
        return;
    }
    if (px->status / 100 == 2) {
        instance_ok(px);
        if (px->started) {
            http_req_on_close(px->req, NULL, NULL);
            http_stream_end(px->req);
            px_free(px);
            return;
        }
        char *ct = NULL;
        char hdr[64];
        curl_off_t total = 0;
        curl_easy_getinfo(easy, CURLINFO_CONTENT_TYPE, &ct);
        curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &total);
        added_header(px, (int64_t)total, hdr, sizeof(hdr));
        http_req_on_close(px->req, NULL, NULL);
        http_reply(px->req, (int)px->status, ct ? ct : "application/json",
                   px->resp.data ? px->resp.data : "", px->resp.len, hdr);
        px_free(px);
        return;
    }
    answer_message(&px->resp, msg, sizeof(msg));
    if (px->status >= 500) {
        count_error(px, API_ERR_UPSTREAM_5XX);
        eject(px);
        char what[32];
        snprintf(what, sizeof(what), "answered %ld", px->status);
        remember(px, 502, "upstream_error", what, msg);
        attempt(px);
        return;
    }
    instance_ok(px); /* it answered: alive */
    if (px->status == 429) {
        px->saw_429 = true;
        attempt(px);
        return;
    }
    if (px->status == 404 && px->ntried < px->model->set.n) {
        /* the instance no longer serves the model (stopped): try another */
        remember(px, 404, "model_not_found", "does not serve the model", msg);
        attempt(px);
        return;
    }
    /* the client's own mistake: the worker's answer as it is */
    count_error(px, API_ERR_CLIENT_4XX);
    char *ct = NULL;
    curl_easy_getinfo(easy, CURLINFO_CONTENT_TYPE, &ct);
    http_req_on_close(px->req, NULL, NULL);
    http_reply(px->req, (int)px->status, ct ? ct : "application/json",
               px->resp.data ? px->resp.data : "", px->resp.len, NULL);
    px_free(px);
}

/* No first byte in time, or (streams) silence for too long. */
static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct api_px *px = arg;
    char msg[240];
    bool first = !px->got_header;
    int64_t ms = first ? px->srv->cfg->first_byte_timeout_ms : px->srv->cfg->idle_timeout_ms;

    (void)fd;
    (void)what;
    end_attempt(px);
    count_error(px, API_ERR_TIMEOUT);
    eject(px);
    snprintf(msg, sizeof(msg), "instance %s sent %s for %lld ms (%s)", px->inst->label,
             first ? "no first byte" : "nothing", (long long)ms,
             first ? "--first_byte_timeout_ms" : "--idle_timeout_ms");
    if (px->started) {
        stream_error(px, msg);
    } else {
        finish_error(px, 504, "server_error", "upstream_timeout", msg);
    }
}

static int
start_transfer(struct api_px *px)
{
    const struct api_config *cfg = px->srv->cfg;
    size_t len;
    const char *body = http_req_body(px->req, &len);
    char url[API_NAME_MAX + 64];

    if (px->easy) {
        curl_easy_reset(px->easy);
    } else if (!(px->easy = curl_easy_init())) {
        return -1;
    }
    snprintf(url, sizeof(url), "%s%s", px->inst->base, upstream_paths[px->kind]);
    curl_easy_setopt(px->easy, CURLOPT_URL, url);
    curl_easy_setopt(px->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(px->easy, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(px->easy, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(px->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(px->easy, CURLOPT_HTTPHEADER, px->headers);
    curl_easy_setopt(px->easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(px->easy, CURLOPT_HEADERDATA, px);
    curl_easy_setopt(px->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(px->easy, CURLOPT_WRITEDATA, px);
    curl_easy_setopt(px->easy, CURLOPT_ERRORBUFFER, px->curl_err);
    curl_easy_setopt(px->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->connect_timeout_ms);
    curl_easy_setopt(px->easy, CURLOPT_TIMEOUT_MS, (long)cfg->request_timeout_ms);
    px->curl_err[0] = '\0';
    px->status = 0;
    px->got_header = false;
    buf_reset(&px->resp);
    px->resp.max = MAX_ANSWER;
    atomic_fetch_add(&px->inst->rt.in_flight, 1);
    px->counted = true;
    px->attempt_us = now_us();
    if (curl_loop_add(px->l->curl, px->easy, on_done, px) != 0) {
        return -1;
    }
    px->in_loop = true;
    arm(px, cfg->first_byte_timeout_ms);
    return 0;
}

/* Tries the next instance, or answers when there is none to try. */
static void
attempt(struct api_px *px)
{
    for (;;) {
        bool trial = false;
        int i;

        if (px->ntried >= (size_t)px->srv->cfg->max_attempts) {
            fail_all(px);
            return;
        }
        i = route_pick(&px->model->set, px->srv->policy, px->tried, px->ntried, px->key, px->keylen,
                       util_mono_ms(), &trial);
        if (i < 0) {
            fail_all(px);
            return;
        }
        if (px->ntried > 0) {
            atomic_fetch_add(&px->model->stats->s.retries, 1);
        }
        px->tried[px->ntried++] = i;
        px->inst = px->model->inst[i];
        px->trial = trial;
        atomic_fetch_add_explicit(&px->inst->s.requests, 1, memory_order_relaxed);
        if (start_transfer(px) == 0) {
            return;
        }
        end_attempt(px);
        finish_error(px, 503, "server_error", "out_of_memory", "cannot start a transfer");
        return;
    }
}

/* The client went away: stop the transfer (the worker sees the close). */
static void
on_client_gone(struct http_request *req, void *arg)
{
    struct api_px *px = arg;

    log_debug("request %s: client disconnected; cancelled", http_req_id(req));
    end_attempt(px);
    count_error(px, API_ERR_CANCELLED);
    if (px->started) {
        http_stream_end(req);
    } else {
        http_reply_error(req, 503, "server_error", "cancelled", "client disconnected");
    }
    px_free(px);
}

/* ---- requests ----------------------------------------------------------------- */

static void
bad_request(struct http_request *req, const char *code, const char *msg)
{
    http_reply_error(req, 400, "invalid_request_error", code, "%s", msg);
}

/* Reads model, stream and the session key. Returns the model's name (in
 * root), or NULL after replying. */
static const char *
parse(struct http_request *req, cJSON **root, bool *stream, char *key, size_t *keylen)
{
    size_t len;
    const char *body = http_req_body(req, &len);
    const char *sid = http_req_header(req, "X-Session-Id");
    const cJSON *m, *s, *u;
    char err[200];

    if (json_parse(body, len, MAX_JSON_DEPTH, root, err, sizeof(err)) != 0) {
        http_reply_error(req, 400, "invalid_request_error", "invalid_json", "invalid JSON body: %s",
                         err);
        return NULL;
    }
    if (!cJSON_IsObject(*root)) {
        bad_request(req, "invalid_request", "the body must be a JSON object");
        return NULL;
    }
    m = json_get(*root, "model");
    if (!cJSON_IsString(m) || !*m->valuestring || strlen(m->valuestring) > API_NAME_MAX) {
        bad_request(req, "model", "field 'model' (a non-empty string) is required");
        return NULL;
    }
    s = json_get(*root, "stream");
    if (s && !cJSON_IsNull(s) && !cJSON_IsBool(s)) {
        bad_request(req, "stream", "field 'stream' must be a boolean");
        return NULL;
    }
    *stream = cJSON_IsTrue(s);
    u = json_get(*root, "user");
    if (sid && *sid) {
        *keylen = strnlen(sid, MAX_KEY - 1);
        memcpy(key, sid, *keylen);
    } else if (cJSON_IsString(u) && *u->valuestring) {
        *keylen = strnlen(u->valuestring, MAX_KEY - 1);
        memcpy(key, u->valuestring, *keylen);
    }
    key[*keylen] = '\0';
    return m->valuestring;
}

static void
handle(struct http_request *req, void *arg, enum px_kind kind)
{
    struct api_server *srv = arg;
    struct api_loop *l = http_loop_get_data(http_req_loop(req));
    const char *type = kind == PX_EMBEDDINGS ? "text2vec" : "llm";
    struct api_px *px = calloc(1, sizeof(*px));
    cJSON *root = NULL;
    const char *name;
    char rid[160];

    if (!px) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        return;
    }
    px->start_us = now_us();
    name = parse(req, &root, &px->stream, px->key, &px->keylen);
    if (!name) {
        goto fail;
    }
    if (!l->table) {
        http_reply_error(req, 503, "server_error", "no_table",
                         "no instance table yet: no controller has answered since start-up");
        goto fail;
    }
    px->model = api_table_find(l->table, name, type);
    if (!px->model) {
        if (api_table_has_name(l->table, name)) {
            http_reply_error(req, 404, "invalid_request_error", "model_not_found",
                             "the model '%.128s' is not a%s model", name,
                             kind == PX_EMBEDDINGS ? "n embedding" : " language");
        } else {
            http_reply_error(req, 404, "invalid_request_error", "model_not_found",
                             "the model '%.128s' does not exist", name);
        }
        atomic_fetch_add(&srv->total.errors[API_ERR_CLIENT_4XX], 1);
        goto fail;
    }
    cJSON_Delete(root);
    root = NULL;
    px->l = l;
    px->srv = srv;
    px->req = req;
    px->kind = kind;
    px->table = api_table_ref(l->table);
    atomic_fetch_add_explicit(&px->model->stats->s.requests, 1, memory_order_relaxed);
    buf_init(&px->resp, MAX_ANSWER);
    px->timer = evtimer_new(http_loop_base(l->loop), on_timer, px);
    snprintf(rid, sizeof(rid), "X-Request-Id: %s", http_req_id(req));
    const char *lines[] = {"Content-Type: application/json", "Expect:", rid};
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        struct curl_slist *n = curl_slist_append(px->headers, lines[i]);
        if (!n) {
            break;
        }
        px->headers = n;
    }
    px->next = l->active;
    if (l->active) {
        l->active->prev = px;
    }
    l->active = px;
    http_req_set_data(req, px);
    if (!px->timer || !px->headers) {
        finish_error(px, 503, "server_error", "out_of_memory", "out of memory");
        return;
    }
    http_req_on_close(req, on_client_gone, px);
    attempt(px);
    return;
fail:
    cJSON_Delete(root);
    free(px);
}

void
api_h_chat(struct http_request *req, void *arg)
{
    handle(req, arg, PX_CHAT);
}

void
api_h_completions(struct http_request *req, void *arg)
{
    handle(req, arg, PX_COMPLETIONS);
}

void
api_h_embeddings(struct http_request *req, void *arg)
{
    handle(req, arg, PX_EMBEDDINGS);
}

const char *
api_px_instance(struct http_request *req)
{
    struct api_px *px = http_req_get_data(req);

    return px && px->inst ? px->inst->label : NULL;
}

void
api_proxy_cancel_all(struct api_loop *l)
{
    while (l->active) {
        struct api_px *px = l->active;
        end_attempt(px);
        if (px->started) {
            stream_error(px, "the apiserver is shutting down");
        } else {
            finish_error(px, 503, "server_error", "shutting_down",
                         "the apiserver is shutting down; retry");
        }
    }
}
