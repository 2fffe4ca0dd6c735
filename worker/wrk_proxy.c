/* SPDX-License-Identifier: MIT
 *
 * wrk_proxy.c - the openai and exec backends: the worker's endpoints served
 * by an OpenAI-compatible engine (vLLM, llama.cpp's server, Ollama, a
 * hosted API) at --upstream, through libcurl's multi interface on the
 * worker's event loop (curl_loop.h).
 *
 *   /v1/chat/completions, /v1/completions, /v1/embeddings
 *       passed through: the body goes upstream unchanged (only "model" is
 *       replaced when --upstream_model is set) and the answer comes back
 *       unchanged; a stream is forwarded chunk by chunk as it arrives.
 *   /api/worker/generate, /api/worker/generate_stream
 *       DB-GPT's PromptRequest becomes a streamed chat completion upstream;
 *       its SSE events become DB-GPT's NUL-framed cumulative ModelOutput
 *       (or one ModelOutput at the end).
 *   /api/worker/embeddings
 *       {model, input} upstream; the vectors come back as [[float]].
 *
 * Every request holds a ticket for one of its model's slots (wrk_admit.c),
 * so --concurrency and --max_queue bound what reaches the engine. A client
 * that disconnects cancels its transfer (the engine sees the connection
 * close). Upstream failures become clear errors: refused connection 503
 * (with Retry-After), timeout 504 (--upstream_timeout_ms for a whole
 * request; --upstream_idle_timeout_ms of silence for a streamed one, the
 * DB-GPT ones included since they stream upstream), the engine's 5xx 502, its 4xx on the
 * request 400, its refusal of the key or an unknown path/model 502 naming
 * the flag to check; a failure after a stream has begun ends it with an
 * error event (SSE) or an error frame (DB-GPT), never a silent truncation.
 * DB-GPT's stream gets an error frame before it has begun too (under the
 * error status), since DB-GPT's client reads frames and never the status.
 * Nonsense from the engine is never passed through: a 2xx answer that is
 * not a JSON object is 502 upstream_bad_response (a stream request answered
 * with anything but text/event-stream is buffered and checked the same
 * way), and a stream event whose data is neither [DONE] nor a JSON object
 * in valid UTF-8 ends the stream after the events before it with an error
 * event of that code; messages show at most an escaped 40-byte excerpt.
 * The API key is only ever put in the Authorization header; an engine's
 * 401/403 text (which may echo it) is never relayed or logged, and the key
 * is masked in any other engine message; --upstream is shown with its
 * password masked (util_url_redact).
 *
 * Memory. A stream whose client is more than --stream_buffer_bytes behind
 * stops reading the engine (CURL_WRITEFUNC_PAUSE: curl keeps the one chunk
 * it offered, TCP holds the engine back) until the client has drained to a
 * quarter of that (http_req_on_drain); streams go out whole SSE events at a
 * time, so an error event never lands inside a half-sent one. An answer
 * buffered whole is capped at --max_answer_bytes. Every job keeps its share
 * of the process's budget (budget.h, --memory_budget_bytes) equal to what
 * it holds: its buffers, its copy of the request and its stream's queue;
 * past the budget, 503 + Retry-After before the head, an error event or
 * frame after it.
 */
#include "wrk.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <event2/event.h>

#define LOG_MODULE "worker"
#include "budget.h"
#include "curl_loop.h"
#include "json_check.h"
#include "json_write.h"
#include "log.h"
#include "sse.h"
#include "util.h"

#define MAX_ERROR_BODY (64u * 1024) /* what is kept of an error answer */
#define MAX_SSE_LINE   (4u * 1024 * 1024)
#define MAX_JSON_DEPTH 64

enum px_api { PX_CHAT, PX_COMPLETIONS, PX_EMBEDDINGS, PX_DBGPT_EMBED, PX_DBGPT, PX_DBGPT_STREAM };

struct wrk_proxy_job {
    struct wrk_ticket t; /* first: the admission ticket */
    struct wrk_server *srv;
    struct http_request *req;
    enum px_api api;
    bool pass_stream; /* forward the upstream stream as it comes */
    CURL *easy;
    bool in_loop;       /* easy is in srv->curl */
    struct event *idle; /* streamed: --upstream_idle_timeout_ms without a byte */
    struct curl_slist *headers;
    char *url;
    char *body; /* the upstream request */
    size_t body_len;
    long status;  /* the upstream's, once its headers are in */
    bool started; /* our streamed reply has begun */
    struct buf resp;
    struct sse_splitter line; /* DB-GPT translation: the upstream's SSE lines */
    struct buf event;         /* pass-through: the start of an event not yet whole */
    struct buf text;          /* DB-GPT translation: the text so far */
    char finish[32];
    char err[512]; /* why the answer cannot be used */
    char curl_err[CURL_ERROR_SIZE];
    int prompt_tokens, completion_tokens; /* DB-GPT: the engine's usage (-1: none yet) */
    int64_t start_ms, first_ms;           /* DB-GPT metrics (wall clock) */
    int first_tokens, frames;
    bool released;                     /* the slot is given back */
    bool paused;                       /* reading the engine waits for the client to drain */
    bool over_budget;                  /* the memory budget refused the next bytes */
    bool bad_response;                 /* the engine's 2xx answer is nonsense (j->err says) */
    int64_t held;                      /* bytes taken from the memory budget */
    struct wrk_proxy_job *prev, *next; /* srv->proxies while running */
};

/* ---- life cycle ------------------------------------------------------------ */

static void
job_free(struct wrk_proxy_job *j)
{
    if (j->idle) {
        event_free(j->idle);
    }
    if (j->easy) {
        if (j->in_loop) {
            curl_loop_remove(j->srv->curl, j->easy);
        }
        curl_easy_cleanup(j->easy);
    }
    curl_slist_free_all(j->headers);
    free(j->url);
    free(j->body);
    buf_cleanup(&j->resp);
    sse_splitter_cleanup(&j->line);
    buf_cleanup(&j->event);
    buf_cleanup(&j->text);
    budget_give(j->held);
    free(j);
}

/* Brings the job's share of the memory budget (budget.h) up or down to
 * what it holds now: its buffers, its copy of the request and, once its
 * stream has begun, the reply queued for the client. Returns false (and
 * sets over_budget) when the budget cannot cover the growth. */
static bool
account(struct wrk_proxy_job *j)
{
    int64_t now =
        (int64_t)(j->resp.cap + j->line.pending.cap + j->event.cap + j->text.cap + j->body_len);

    if (j->started && j->req) {
        now += (int64_t)http_req_output_pending(j->req);
    }
    if (now < j->held) {
        budget_give(j->held - now);
    } else if (now > j->held && !budget_take(now - j->held)) {
        j->over_budget = true;
        return false;
    }
    j->held = now;
    return true;
}

/* Gives back the job's slot (the next queued request may start), once. */
static void
release(struct wrk_proxy_job *j)
{
    struct wrk_server *srv = j->srv;

    if (j->released) {
        return;
    }
    j->released = true;
    if (j->t.running) {
        if (j->prev) {
            j->prev->next = j->next;
        } else {
            srv->proxies = j->next;
        }
        if (j->next) {
            j->next->prev = j->prev;
        }
    }
    wrk_admit_leave(&j->t);
}

/* The request is answered: give back the slot, forget the job. */
static void
job_end(struct wrk_proxy_job *j)
{
    release(j);
    job_free(j);
}

static void
job_dropped(struct wrk_ticket *t)
{
    job_free((struct wrk_proxy_job *)t);
}

/* ---- errors ------------------------------------------------------------------ */

/* Writes one DB-GPT frame (and its NUL) to the stream. */
static void
write_frame(struct wrk_proxy_job *j, const struct wrk_dbgpt_frame *f)
{
    struct buf b;
    struct jw w;

    buf_init(&b, (size_t)j->srv->cfg->max_answer_bytes + 64 * 1024);
    jw_init(&w, &b);
    wrk_dbgpt_output(&w, f);
    if (!w.err && buf_append(&b, "", 1) == 0) {
        http_stream_write(j->req, b.data, b.len);
    }
    buf_cleanup(&b);
}

/* DB-GPT's error frame: error_code 1 and the message as its text. */
static void
error_frame(struct wrk_proxy_job *j, const char *msg)
{
    struct wrk_dbgpt_frame f = {.text = msg, .len = strlen(msg), .error_code = 1};

    write_frame(j, &f);
}

/* After a stream has begun: an error event or frame, then the end. */
static void
stream_error(struct wrk_proxy_job *j, const char *code, const char *msg)
{
    if (j->api != PX_DBGPT_STREAM) {
        http_stream_error(j->req, code, "%s", msg);
        return;
    }
    error_frame(j, msg);
    http_stream_end(j->req);
}

/* The request failed before any answer went out: OpenAI's error body with
 * `status`; for DB-GPT's stream, that status with an error frame as the
 * body instead, because DB-GPT's client never looks at the status and
 * reads only frames (an error body without a NUL would be an empty,
 * silent stream to it). */
static void __attribute__((format(printf, 5, 6)))
fail(struct wrk_proxy_job *j, int status, const char *type, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (j->api != PX_DBGPT_STREAM) {
        http_reply_error(j->req, status, type, code, "%s", msg);
        return;
    }
    http_stream_start(j->req, status, "text/plain; charset=utf-8",
                      status == 429 || status == 503 ? "Retry-After: 1\r\n" : NULL);
    error_frame(j, msg);
    http_stream_end(j->req);
}

/* The transfer failed (no usable answer). */
static void
transfer_failed(struct wrk_proxy_job *j, CURLcode rc)
{
    char why[sizeof(j->err) + 64];
    const char *up = j->srv->upstream_shown;

    util_url_redact(j->err[0]        ? j->err
                    : j->curl_err[0] ? j->curl_err
                                     : curl_easy_strerror(rc),
                    why, sizeof(why));

    if (j->over_budget) {
        log_warn("request %s: refused: the memory budget (--memory_budget_bytes %lld) is "
                 "exhausted",
                 http_req_id(j->req), (long long)budget_limit());
        if (j->started) {
            stream_error(j, "memory_budget_exceeded",
                         "the worker is out of memory for this answer "
                         "(--memory_budget_bytes); retry");
        } else {
            fail(j, 503, "server_error", "memory_budget_exceeded",
                 "the worker is out of memory for this answer (--memory_budget_bytes); retry");
        }
        return;
    }
    atomic_fetch_add(&j->srv->upstream_errors, 1);
    log_warn("request %s: upstream %s: %s", http_req_id(j->req), up, why);
    if (j->started) {
        char msg[768];
        snprintf(msg, sizeof(msg), "the engine failed mid-stream: %s", why);
        stream_error(j, j->bad_response ? "upstream_bad_response" : "upstream_error", msg);
        return;
    }
    if (j->bad_response) {
        fail(j, 502, "server_error", "upstream_bad_response",
             "the engine at %s answered nonsense: %s", up, why);
        return;
    }
    curl_off_t connected = 0;
    curl_easy_getinfo(j->easy, CURLINFO_CONNECT_TIME_T, &connected);
    if (rc == CURLE_OPERATION_TIMEDOUT && connected == 0) {
        rc = CURLE_COULDNT_CONNECT; /* never connected: unavailable, not slow */
    }
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
        fail(j, 503, "server_error", "upstream_unavailable",
             "the engine at %s does not accept connections: %s", up, why);
        return;
    case CURLE_OPERATION_TIMEDOUT:
        fail(j, 504, "server_error", "upstream_timeout",
             "the engine at %s did not answer in time: %s", up, why);
        return;
    default:
        fail(j, 502, "server_error", "upstream_error", "the engine at %s failed: %s", up, why);
    }
}

/* The engine's error message from `body`, with its API key masked
 * wherever it appears (an engine may echo the key in any error, and the
 * message is cut at `cap`: a cut-off start of the key is masked too). */
static void
engine_message(const struct wrk_server *srv, const char *body, size_t len, char *msg, size_t cap)
{
    static const char bearer[] = "Authorization: Bearer ";
    const char *key;
    size_t klen, mlen;
    char *at;

    json_error_message(body, len, msg, cap);
    if (!srv->auth_header || strncmp(srv->auth_header, bearer, sizeof(bearer) - 1) != 0) {
        return;
    }
    key = srv->auth_header + sizeof(bearer) - 1;
    klen = strlen(key);
    if (klen == 0) {
        return;
    }
    while ((at = strstr(msg, key)) != NULL) {
        memset(at, '*', klen);
    }
    mlen = strlen(msg);
    for (size_t n = klen - 1 < mlen ? klen - 1 : mlen; n >= 4; n--) {
        if (memcmp(msg + mlen - n, key, n) == 0) {
            memset(msg + mlen - n, '*', n);
            break;
        }
    }
}

/* At most the first 40 bytes of p[0..n) for a message, printable ASCII
 * only: anything else (and quotes, backslashes) as \xHH, so that an
 * engine's nonsense is shown, never passed through. */
static void
excerpt(const char *p, size_t n, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    for (size_t i = 0; i < n && i < 40; i++) {
        unsigned char c = (unsigned char)p[i];
        bool plain = c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
        if (o + (plain ? 1 : 4) + 4 >= cap) {
            break;
        }
        if (plain) {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    if (n > 40 && o + 3 < cap) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    if (cap) {
        out[o < cap ? o : cap - 1] = '\0';
    }
}

/* Moves *i past JSON whitespace. */
static void
skip_ws(const char *p, size_t n, size_t *i)
{
    while (*i < n && (p[*i] == ' ' || p[*i] == '\t' || p[*i] == '\n' || p[*i] == '\r')) {
        (*i)++;
    }
}

/* Moves *i past the digits at p[*i..n); false if there are none. */
static bool
skip_digits(const char *p, size_t n, size_t *i)
{
    size_t from = *i;

    while (*i < n && p[*i] >= '0' && p[*i] <= '9') {
        (*i)++;
    }
    return *i > from;
}

/* Moves *i past one JSON value of p[*i..n), without building anything
 * (every event of a stream is checked: no allocation per event). Strings
 * are only delimited here: json_check() has checked their contents, the
 * UTF-8 and the depth. False at the first byte that does not fit. */
static bool
grammar_value(const char *p, size_t n, size_t *i, int depth)
{
    static const char *const words[] = {"true", "false", "null"};

    skip_ws(p, n, i);
    if (*i >= n || depth > MAX_JSON_DEPTH) {
        return false;
    }
    char c = p[*i];
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        (*i)++;
        skip_ws(p, n, i);
        if (*i < n && p[*i] == close) {
            (*i)++;
            return true;
        }
        for (;;) {
            if (c == '{') {
                skip_ws(p, n, i);
                if (*i >= n || p[*i] != '"' || !grammar_value(p, n, i, depth + 1)) {
                    return false;
                }
                skip_ws(p, n, i);
                if (*i >= n || p[(*i)++] != ':') {
                    return false;
                }
            }
            if (!grammar_value(p, n, i, depth + 1)) {
                return false;
            }
            skip_ws(p, n, i);
            if (*i >= n) {
                return false;
            }
            if (p[*i] == close) {
                (*i)++;
                return true;
            }
            if (p[(*i)++] != ',') {
                return false;
            }
        }
    }
    if (c == '"') {
        for ((*i)++; *i < n; (*i)++) {
            if (p[*i] == '\\') {
                (*i)++;
            } else if (p[*i] == '"') {
                (*i)++;
                return true;
            }
        }
        return false;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        if (c == '-') {
            (*i)++;
        }
        if (*i < n && p[*i] == '0') {
            (*i)++;
        } else if (!skip_digits(p, n, i)) {
            return false;
        }
        if (*i < n && p[*i] == '.' && ((*i)++, !skip_digits(p, n, i))) {
            return false;
        }
        if (*i < n && (p[*i] == 'e' || p[*i] == 'E')) {
            (*i)++;
            if (*i < n && (p[*i] == '+' || p[*i] == '-')) {
                (*i)++;
            }
            return skip_digits(p, n, i);
        }
        return true;
    }
    for (size_t k = 0; k < sizeof(words) / sizeof(words[0]); k++) {
        size_t len = strlen(words[k]);
        if (n - *i >= len && memcmp(p + *i, words[k], len) == 0) {
            *i += len;
            return true;
        }
    }
    return false;
}

/* Whether p[0..n) is a JSON object; if not, j->err says why (with an
 * escaped excerpt) and j->bad_response is set. `what`: "answer" or "event". */
static bool
json_object_ok(struct wrk_proxy_job *j, const char *p, size_t n, const char *what)
{
    char err[128], ex[200];
    size_t i = 0;
    bool ok = false;

    if (json_check(p, n, MAX_JSON_DEPTH, err, sizeof(err)) != 0) {
        /* err says why: not UTF-8, a control character, too deep */
    } else if (skip_ws(p, n, &i), i >= n || p[i] != '{') {
        snprintf(err, sizeof(err), "not an object");
    } else if (!grammar_value(p, n, &i, 1) || (skip_ws(p, n, &i), i != n)) {
        snprintf(err, sizeof(err), "not JSON at byte %zu", i);
    } else {
        ok = true;
    }
    if (!ok) {
        excerpt(p, n, ex, sizeof(ex));
        snprintf(j->err, sizeof(j->err), "the engine's %s is not a JSON object (%s): \"%s\"", what,
                 err, ex);
        j->bad_response = true;
    }
    return ok;
}

/* The engine answered with an error status. */
static void
upstream_status(struct wrk_proxy_job *j)
{
    char msg[320];
    long st = j->status;

    if (st == 401 || st == 403) {
        /* never the engine's text: it may echo the key the worker sent */
        log_warn("request %s: the engine refused the worker's credentials (HTTP %ld; its "
                 "message is not logged)",
                 http_req_id(j->req), st);
        atomic_fetch_add(&j->srv->upstream_errors, 1);
        fail(j, 502, "server_error", "upstream_auth",
             "the engine refused the worker's credentials (HTTP %ld); check "
             "--upstream_api_key_env",
             st);
        return;
    }
    engine_message(j->srv, j->resp.data, j->resp.len, msg, sizeof(msg));
    log_info("request %s: the engine answered %ld: %s", http_req_id(j->req), st, msg);
    if (st == 400 || st == 422) {
        fail(j, 400, "invalid_request_error", "upstream_rejected",
             "the engine rejected the request: %s", msg);
    } else if (st == 413) {
        fail(j, 413, "invalid_request_error", "upstream_too_large",
             "the engine says the request is too large: %s", msg);
    } else if (st == 429) {
        fail(j, 429, "rate_limit_exceeded", "upstream_busy", "the engine is at capacity: %s", msg);
    } else if (st == 404) {
        atomic_fetch_add(&j->srv->upstream_errors, 1);
        fail(j, 502, "server_error", "upstream_not_found",
             "the engine answered 404 (%s); check --upstream and --upstream_model", msg);
    } else {
        atomic_fetch_add(&j->srv->upstream_errors, 1);
        fail(j, 502, "server_error", "upstream_error", "the engine answered %ld: %s", st, msg);
    }
}

/* ---- DB-GPT translation ------------------------------------------------- */

/* DB-GPT's frame with the whole text so far (finish NULL: not yet). */
static struct wrk_dbgpt_frame
frame_of(struct wrk_proxy_job *j, const char *finish)
{
    j->frames++;
    if (!j->first_ms && j->text.len) {
        j->first_ms = util_wall_ms();
        j->first_tokens = j->completion_tokens;
    }
    return (struct wrk_dbgpt_frame){.text = j->text.data ? j->text.data : "",
                                    .len = j->text.len,
                                    .finish = finish,
                                    .prompt_tokens = j->prompt_tokens,
                                    .completion_tokens = j->completion_tokens,
                                    .start_ms = j->start_ms,
                                    .first_ms = j->first_ms,
                                    .first_tokens = j->first_tokens,
                                    .collect_index = j->frames};
}

/* One frame of DB-GPT's stream: the whole text so far and a NUL. */
static void
dbgpt_frame(struct wrk_proxy_job *j, const char *finish)
{
    struct wrk_dbgpt_frame f = frame_of(j, finish);

    write_frame(j, &f);
}

static int
clamp_tokens(double v)
{
    return v >= 0 && v < 1e9 ? (int)v : 0;
}

/* One SSE line of the upstream's chat stream. Returns 0, or -1 with j->err. */
static int
sse_line(void *arg, const char *p, size_t n)
{
    struct wrk_proxy_job *j = arg;
    cJSON *root = NULL;
    char err[128];
    const cJSON *c, *it;
    bool grew = false;

    if (!sse_line_data(p, n, &p, &n) || sse_data_is_done(p, n)) {
        return 0; /* comments, event names, blank lines; the end */
    }
    if (json_parse(p, n, MAX_JSON_DEPTH, &root, err, sizeof(err)) != 0 || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return json_object_ok(j, p, n, "stream event") ? 0 : -1;
    }
    it = json_get(root, "error");
    if (it) {
        char msg[320];
        engine_message(j->srv, p, n, msg, sizeof(msg));
        snprintf(j->err, sizeof(j->err), "the engine reported: %s", msg);
        cJSON_Delete(root);
        return -1;
    }
    it = json_get(root, "usage");
    if (cJSON_IsObject(it)) {
        const cJSON *pt = json_get(it, "prompt_tokens"), *ct = json_get(it, "completion_tokens");
        if (cJSON_IsNumber(pt) && cJSON_IsNumber(ct)) {
            j->prompt_tokens = clamp_tokens(pt->valuedouble);
            j->completion_tokens = clamp_tokens(ct->valuedouble);
        }
    }
    it = json_get(root, "choices");
    c = cJSON_IsArray(it) ? it->child : NULL;
    if (cJSON_IsObject(c)) {
        const cJSON *delta = json_get(c, "delta");
        const cJSON *content = cJSON_IsObject(delta) ? json_get(delta, "content") : NULL;
        const cJSON *fin = json_get(c, "finish_reason");
        if (cJSON_IsString(content) && *content->valuestring) {
            if (buf_puts(&j->text, content->valuestring) != 0) {
                snprintf(j->err, sizeof(j->err),
                         "the answer exceeds %zu bytes (--max_answer_bytes)", j->text.max);
                cJSON_Delete(root);
                return -1;
            }
            grew = true;
        }
        if (cJSON_IsString(fin)) {
            util_strlcpy(j->finish, fin->valuestring, sizeof(j->finish));
        }
    }
    cJSON_Delete(root);
    if (grew && j->api == PX_DBGPT_STREAM) {
        dbgpt_frame(j, NULL);
    }
    return 0;
}

/* Feeds bytes of the upstream's SSE stream. Returns 0, or -1 with j->err. */
static int
sse_feed(struct wrk_proxy_job *j, const char *p, size_t n)
{
    int rc = sse_splitter_feed(&j->line, p, n, sse_line, j);

    if (rc == SSE_TOO_LONG) {
        snprintf(j->err, sizeof(j->err), "an event of the engine's stream exceeds %u bytes",
                 MAX_SSE_LINE);
    }
    return rc == SSE_OK ? 0 : -1;
}

/* DB-GPT's embeddings answer, [[float]], from OpenAI's. */
static void
reply_dbgpt_embeddings(struct wrk_proxy_job *j)
{
    cJSON *root = NULL, *out = cJSON_CreateArray();
    char err[128];
    const cJSON *data;
    char *text = NULL;

    if (!out ||
        json_parse(j->resp.data, j->resp.len, MAX_JSON_DEPTH, &root, err, sizeof(err)) != 0) {
        http_reply_error(j->req, 502, "server_error", "upstream_bad_response",
                         "the engine's embeddings answer is not JSON");
        goto out;
    }
    data = json_get(root, "data");
    for (const cJSON *d = cJSON_IsArray(data) ? data->child : NULL; d; d = d->next) {
        const cJSON *e = json_get(d, "embedding");
        cJSON *copy = cJSON_IsArray(e) ? cJSON_Duplicate(e, true) : NULL;
        if (!copy) {
            http_reply_error(j->req, 502, "server_error", "upstream_bad_response",
                             "the engine's embeddings answer has no float vectors (is "
                             "encoding_format honoured?)");
            goto out;
        }
        cJSON_AddItemToArray(out, copy);
    }
    text = cJSON_PrintUnformatted(out);
    if (!text) {
        http_reply_error(j->req, 503, "server_error", "out_of_memory", "out of memory");
        goto out;
    }
    http_reply(j->req, 200, "application/json", text, strlen(text), NULL);
out:
    free(text);
    cJSON_Delete(out);
    cJSON_Delete(root);
}

/* ---- the transfer ---------------------------------------------------------- */

static void
arm_idle(struct wrk_proxy_job *j)
{
    int64_t ms = j->srv->cfg->upstream_idle_timeout_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};

    if (j->idle) {
        evtimer_add(j->idle, &tv);
    }
}

/* The end of the last whole SSE event in p[0..n) (just past its blank
 * line: "\n\n", "\r\n\r\n" or "\r\r") that ends after p[from], or 0 if
 * none does (`from`: bytes already searched, so a long event arriving in
 * many reads is scanned once). */
static size_t
last_event_end(const char *p, size_t n, size_t from)
{
    for (size_t k = n; k >= 2 && k > from; k--) {
        char c = p[k - 1], b = p[k - 2];
        if ((c == '\n' && (b == '\n' || (b == '\r' && k >= 3 && p[k - 3] == '\n'))) ||
            (c == '\r' && b == '\r')) {
            return k;
        }
    }
    return 0;
}

/* Checks the whole events in p[0..n) (with `last`, what follows the last
 * blank line is an event too): the data of each (its data: lines joined by
 * newlines) must be [DONE] or a JSON object. Returns n, or the end of the
 * last good event before a bad one (j->err and j->bad_response set). */
static size_t
check_events(struct wrk_proxy_job *j, const char *p, size_t n, bool last)
{
    size_t i = 0, good = 0;
    bool has_data = false;

    buf_reset(&j->text); /* the data of the event being read */
    while (i < n || (last && has_data)) {
        size_t k = i, next;
        while (k < n && p[k] != '\n' && p[k] != '\r') {
            k++;
        }
        next = k < n && p[k] == '\r' && k + 1 < n && p[k + 1] == '\n' ? k + 2 : k + 1;
        if (k == i) { /* a blank line (or the end, for `last`): the event ends */
            if (has_data && !(j->text.len == 6 && memcmp(j->text.data, "[DONE]", 6) == 0) &&
                !json_object_ok(j, j->text.data, j->text.len, "stream event")) {
                return good;
            }
            has_data = false;
            buf_reset(&j->text);
            good = next < n ? next : n;
        } else if (k - i >= 5 && memcmp(p + i, "data:", 5) == 0) {
            size_t from = i + 5 + (k - i > 5 && p[i + 5] == ' ');
            if ((has_data && buf_append(&j->text, "\n", 1) != 0) ||
                buf_append(&j->text, p + from, k - from) != 0) {
                snprintf(j->err, sizeof(j->err),
                         "an event of the engine's stream exceeds %zu bytes (--max_answer_bytes)",
                         j->text.max);
                return good;
            }
            has_data = true;
        }
        i = next;
    }
    return n;
}

/* Forwards the engine's stream whole events at a time: the end of an
 * event that has not fully arrived waits in j->event, so an error event
 * written after a failure (the engine drops, the budget refuses) never
 * lands inside a half-sent one. Returns 0, or -1 with j->err. */
static int
pass_events(struct wrk_proxy_job *j, const char *p, size_t n)
{
    size_t end;

    if (j->event.len == 0) {
        end = last_event_end(p, n, 0);
        if (end) {
            size_t good = check_events(j, p, end, false);
            if (good) {
                http_stream_write(j->req, p, good);
            }
            if (good < end) {
                return -1;
            }
        }
        p += end;
        n -= end;
        if (n && buf_append(&j->event, p, n) != 0) {
            goto too_long;
        }
        return 0;
    }
    size_t searched = j->event.len; /* no event ends in it */
    if (buf_append(&j->event, p, n) != 0) {
        goto too_long;
    }
    end = last_event_end(j->event.data, j->event.len, searched);
    if (end) {
        size_t good = check_events(j, j->event.data, end, false);
        if (good) {
            http_stream_write(j->req, j->event.data, good);
        }
        if (good < end) {
            return -1;
        }
        memmove(j->event.data, j->event.data + end, j->event.len - end);
        j->event.len -= end;
        j->event.data[j->event.len] = '\0';
    }
    return 0;
too_long:
    snprintf(j->err, sizeof(j->err), "an event of the engine's stream exceeds %u bytes",
             MAX_SSE_LINE);
    return -1;
}

/* The slow client has taken most of what was queued: read the engine
 * again (curl delivers the chunk it held back, often before returning). */
static void
on_drained(struct http_request *req, void *arg)
{
    struct wrk_proxy_job *j = arg;
    CURLcode rc;

    (void)req;
    j->paused = false;
    (void)account(j); /* the queue is shorter: give back */
    if (!j->in_loop) {
        return;
    }
    arm_idle(j);
    rc = curl_easy_pause(j->easy, CURLPAUSE_CONT);
    if (rc != CURLE_OK) {
        /* the held chunk was refused (budget, a bad event): end it here,
         * since curl reports nothing more for a transfer it could not resume */
        curl_loop_remove(j->srv->curl, j->easy);
        j->in_loop = false;
        if (j->idle) {
            evtimer_del(j->idle);
        }
        http_req_on_close(j->req, NULL, NULL);
        release(j);
        transfer_failed(j, rc);
        job_end(j);
    }
}

/* Whether the client is behind: more than --stream_buffer_bytes of the
 * stream wait to be written to it. */
static bool
client_behind(const struct wrk_proxy_job *j)
{
    return http_req_output_pending(j->req) > (size_t)j->srv->cfg->stream_buffer_bytes;
}

/* Stops reading the engine until the client has drained to a quarter of
 * --stream_buffer_bytes: curl keeps the chunk it offered (at most one read
 * buffer) and the engine's own sends block, so a client that reads nothing
 * costs the worker a bounded queue, not the whole answer. The idle timeout
 * is off meanwhile (the engine is silent because the worker asked it). */
static size_t
pause_transfer(struct wrk_proxy_job *j)
{
    if (!j->paused) {
        j->paused = true;
        atomic_fetch_add(&j->srv->stream_pauses, 1);
        if (j->idle) {
            evtimer_del(j->idle);
        }
        http_req_on_drain(j->req, (size_t)j->srv->cfg->stream_buffer_bytes / 4, on_drained, j);
    }
    return CURL_WRITEFUNC_PAUSE;
}

static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
    struct wrk_proxy_job *j = arg;
    size_t len = size * n;

    if (j->paused || (j->started && client_behind(j))) {
        return pause_transfer(j);
    }
    arm_idle(j);

    if (!j->status) {
        curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &j->status);
        if (j->status / 100 == 2 && j->pass_stream) {
            char *ct = NULL;
            curl_easy_getinfo(j->easy, CURLINFO_CONTENT_TYPE, &ct);
            if (ct && strncasecmp(ct, "text/event-stream", 17) != 0) {
                /* not a stream (an engine that ignores "stream", or a JSON
                 * answer): buffered whole and checked like a plain one */
                j->pass_stream = false;
            } else {
                http_stream_start(j->req, (int)j->status, ct ? ct : "text/event-stream", NULL);
                j->started = true;
            }
        } else if (j->status / 100 == 2 && j->api == PX_DBGPT_STREAM) {
            http_stream_start(j->req, 200, "text/plain; charset=utf-8", NULL);
            j->started = true;
        } else if (j->status / 100 != 2) {
            j->resp.max = MAX_ERROR_BODY;
        }
    }
    if (j->status / 100 != 2) {
        size_t room = j->resp.max - j->resp.len;
        if (buf_append(&j->resp, p, len < room ? len : room) != 0) {
            j->resp.len = 0; /* out of memory: the status alone tells */
        }
        return account(j) ? len : 0;
    }
    if (j->pass_stream) {
        return pass_events(j, p, len) == 0 && account(j) ? len : 0;
    }
    if (j->api == PX_DBGPT || j->api == PX_DBGPT_STREAM) {
        return sse_feed(j, p, len) == 0 && account(j) ? len : 0;
    }
    if (buf_append(&j->resp, p, len) != 0) {
        snprintf(j->err, sizeof(j->err), "the answer exceeds %zu bytes (--max_answer_bytes)",
                 j->resp.max);
        return 0;
    }
    return account(j) ? len : 0;
}

static void
on_done(CURL *easy, CURLcode rc, void *arg)
{
    struct wrk_proxy_job *j = arg;

    j->in_loop = false;
    if (j->idle) {
        evtimer_del(j->idle);
    }
    if (!j->status) {
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &j->status);
    }
    http_req_on_close(j->req, NULL, NULL);
    if (rc == CURLE_OK && !j->pass_stream && sse_splitter_pending(&j->line) &&
        sse_feed(j, "\n", 1) != 0) {
        rc = CURLE_WEIRD_SERVER_REPLY; /* the last line had no newline */
    }
    if (rc == CURLE_OK && (j->api == PX_DBGPT || j->api == PX_DBGPT_STREAM) && j->err[0]) {
        rc = CURLE_WEIRD_SERVER_REPLY;
    }
    if (rc == CURLE_OK && j->started && j->pass_stream && j->event.len) {
        /* a last event without its blank line: checked like the others */
        size_t good = check_events(j, j->event.data, j->event.len, true);
        if (good < j->event.len) {
            if (good) {
                http_stream_write(j->req, j->event.data, good);
            }
            j->event.len = 0;
            rc = CURLE_WEIRD_SERVER_REPLY;
        }
    } else if (rc == CURLE_OK && j->status / 100 == 2 && !j->started &&
               (j->api == PX_CHAT || j->api == PX_COMPLETIONS || j->api == PX_EMBEDDINGS) &&
               !json_object_ok(j, j->resp.data ? j->resp.data : "", j->resp.len, "answer")) {
        rc = CURLE_WEIRD_SERVER_REPLY; /* a 200 must carry a JSON object */
    }
    /* the slot first: a request pipelined behind this one on the same
     * connection is read during the reply and must find it free */
    release(j);
    if (rc != CURLE_OK) {
        transfer_failed(j, rc);
    } else if (j->status / 100 != 2) {
        upstream_status(j);
    } else if (j->started && j->api == PX_DBGPT_STREAM) {
        dbgpt_frame(j, j->finish[0] ? j->finish : "stop");
        http_stream_end(j->req);
    } else if (j->started) {
        if (j->event.len) {
            http_stream_write(j->req, j->event.data, j->event.len); /* a last unended event */
        }
        http_stream_end(j->req);
    } else if (j->api == PX_DBGPT) {
        struct wrk_dbgpt_frame f = frame_of(j, j->finish[0] ? j->finish : "stop");
        struct buf b;
        struct jw w;
        buf_init(&b, (size_t)j->srv->cfg->max_answer_bytes + 64 * 1024);
        jw_init(&w, &b);
        wrk_dbgpt_output(&w, &f);
        wrk_reply_json(j->req, j->srv, &b, &w);
        buf_cleanup(&b);
    } else if (j->api == PX_DBGPT_EMBED) {
        reply_dbgpt_embeddings(j);
    } else {
        char *ct = NULL;
        curl_easy_getinfo(easy, CURLINFO_CONTENT_TYPE, &ct);
        http_reply(j->req, (int)j->status, ct ? ct : "application/json",
                   j->resp.data ? j->resp.data : "", j->resp.len, NULL);
    }
    job_end(j);
}

/* A streamed transfer went silent for --upstream_idle_timeout_ms. */
static void
on_idle(evutil_socket_t fd, short what, void *arg)
{
    struct wrk_proxy_job *j = arg;

    (void)fd;
    (void)what;
    curl_loop_remove(j->srv->curl, j->easy);
    j->in_loop = false;
    snprintf(j->err, sizeof(j->err),
             "no data from the engine for %lld ms (--upstream_idle_timeout_ms)",
             (long long)j->srv->cfg->upstream_idle_timeout_ms);
    http_req_on_close(j->req, NULL, NULL);
    if (j->status && j->status / 100 != 2) {
        upstream_status(j); /* an error answer that stalled: its status says enough */
    } else {
        transfer_failed(j, CURLE_OPERATION_TIMEDOUT);
    }
    job_end(j);
}

/* The client went away: cancel the transfer (the engine sees the close). */
static void
on_client_gone(struct http_request *req, void *arg)
{
    struct wrk_proxy_job *j = arg;

    atomic_fetch_add(&j->srv->cancelled, 1);
    log_debug("request %s: client disconnected; upstream transfer cancelled", http_req_id(req));
    if (j->started) {
        http_stream_end(req);
    } else {
        http_reply_error(req, 503, "server_error", "cancelled", "client disconnected");
    }
    job_end(j);
}

/* The slot is ours: start the transfer. */
static void
job_run(struct wrk_ticket *t)
{
    struct wrk_proxy_job *j = (struct wrk_proxy_job *)t;
    struct wrk_server *srv = j->srv;
    const struct wrk_config *cfg = srv->cfg;

    j->next = srv->proxies;
    if (srv->proxies) {
        srv->proxies->prev = j;
    }
    srv->proxies = j;
    j->easy = curl_easy_init();
    if (j->pass_stream || j->api == PX_DBGPT || j->api == PX_DBGPT_STREAM) {
        j->idle = evtimer_new(http_loop_base(http_req_loop(j->req)), on_idle, j);
    }
    if (!j->easy ||
        ((j->pass_stream || j->api == PX_DBGPT || j->api == PX_DBGPT_STREAM) && !j->idle)) {
        http_req_on_close(j->req, NULL, NULL);
        fail(j, 503, "server_error", "out_of_memory", "out of memory");
        job_end(j);
        return;
    }
    curl_easy_setopt(j->easy, CURLOPT_URL, j->url);
    curl_easy_setopt(j->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(j->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(j->easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(j->easy, CURLOPT_POSTFIELDS, j->body);
    curl_easy_setopt(j->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->body_len);
    curl_easy_setopt(j->easy, CURLOPT_HTTPHEADER, j->headers);
    curl_easy_setopt(j->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(j->easy, CURLOPT_WRITEDATA, j);
    curl_easy_setopt(j->easy, CURLOPT_ERRORBUFFER, j->curl_err);
    curl_easy_setopt(j->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->upstream_connect_timeout_ms);
    curl_easy_setopt(j->easy, CURLOPT_TIMEOUT_MS, (long)cfg->upstream_timeout_ms);
    if (curl_loop_add(srv->curl, j->easy, on_done, j) != 0) {
        http_req_on_close(j->req, NULL, NULL);
        fail(j, 503, "server_error", "out_of_memory", "cannot start a transfer");
        job_end(j);
        return;
    }
    j->in_loop = true;
    arm_idle(j);
}

/* ---- requests ------------------------------------------------------------------ */

/* DB-GPT's roles (ModelMessageRoleType) in OpenAI's words; NULL for the
 * ones an engine would refuse ("view": DB-GPT's display-only messages),
 * which are left out as DB-GPT's own OpenAI conversion does. */
static const char *
openai_role(const char *r)
{
    static const char *const map[][2] = {{"human", "user"},    {"user", "user"},
                                         {"ai", "assistant"},  {"assistant", "assistant"},
                                         {"system", "system"}, {"tool", "tool"}};

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (strcmp(r, map[i][0]) == 0) {
            return map[i][1];
        }
    }
    return NULL;
}

/* An OpenAI chat request (streamed) for DB-GPT's PromptRequest. Returns
 * the object, or NULL after replying. */
static cJSON *
chat_for_dbgpt(struct http_request *req, const cJSON *root, const char *model)
{
    cJSON *out = cJSON_CreateObject(), *msgs = cJSON_CreateArray(), *opts;
    const cJSON *in = json_get(root, "messages"), *prompt = json_get(root, "prompt");
    static const char *const copy[][2] = {{"temperature", "temperature"},
                                          {"top_p", "top_p"},
                                          {"max_new_tokens", "max_tokens"},
                                          {"stop", "stop"},
                                          {"seed", "seed"}};

    if (!out || !msgs) {
        goto oom;
    }
    cJSON_AddItemToObject(out, "messages", msgs);
    if (cJSON_IsArray(in) && in->child) {
        for (const cJSON *m = in->child; m; m = m->next) {
            const cJSON *role = json_get(m, "role"), *content = json_get(m, "content");
            const char *r = cJSON_IsString(role) ? openai_role(role->valuestring) : NULL;
            cJSON *o;
            if (!cJSON_IsString(role) || !content) {
                cJSON_Delete(out);
                wrk_bad_request(req, "messages",
                                "each message must be an object with a string 'role' and "
                                "a 'content'");
                return NULL;
            }
            if (!r) {
                continue; /* "view" and other display-only roles */
            }
            if (!(o = cJSON_CreateObject())) {
                goto oom;
            }
            cJSON_AddItemToArray(msgs, o);
            if (!cJSON_AddStringToObject(o, "role", r) ||
                !cJSON_AddItemToObject(o, "content", cJSON_Duplicate(content, true))) {
                goto oom;
            }
        }
    } else if (cJSON_IsString(prompt)) {
        cJSON *o = cJSON_CreateObject();
        if (!o) {
            goto oom;
        }
        cJSON_AddItemToArray(msgs, o);
        if (!cJSON_AddStringToObject(o, "role", "user") ||
            !cJSON_AddStringToObject(o, "content", prompt->valuestring)) {
            goto oom;
        }
    } else {
        cJSON_Delete(out);
        wrk_bad_request(req, "messages",
                        "field 'messages' (a non-empty array) or 'prompt' (a string) is required");
        return NULL;
    }
    if (!cJSON_AddStringToObject(out, "model", model) || !cJSON_AddTrueToObject(out, "stream") ||
        !(opts = cJSON_AddObjectToObject(out, "stream_options")) ||
        !cJSON_AddTrueToObject(opts, "include_usage")) {
        goto oom;
    }
    for (size_t i = 0; i < sizeof(copy) / sizeof(copy[0]); i++) {
        const cJSON *v = json_get(root, copy[i][0]);
        if (v && !cJSON_IsNull(v) &&
            !cJSON_AddItemToObject(out, copy[i][1], cJSON_Duplicate(v, true))) {
            goto oom;
        }
    }
    return out;
oom:
    cJSON_Delete(out);
    http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
    return NULL;
}

/* Builds the job's upstream body from the parsed request. Returns 0, or -1
 * after replying. */
static int
upstream_body(struct wrk_proxy_job *j, cJSON *root, const char *model)
{
    const char *up_model = j->srv->cfg->upstream_model ? j->srv->cfg->upstream_model : model;
    cJSON *out = NULL;

    if (j->api == PX_DBGPT || j->api == PX_DBGPT_STREAM) {
        out = chat_for_dbgpt(j->req, root, up_model);
        if (!out) {
            return -1;
        }
    } else if (j->api == PX_DBGPT_EMBED) {
        const cJSON *in = json_get(root, "input");
        if (!cJSON_IsArray(in) || !in->child) {
            wrk_bad_request(j->req, "input", "field 'input' must be a non-empty array of strings");
            return -1;
        }
        for (const cJSON *s = in->child; s; s = s->next) {
            if (!cJSON_IsString(s)) {
                wrk_bad_request(j->req, "input",
                                "field 'input' must be a non-empty array of strings");
                return -1;
            }
        }
        out = cJSON_CreateObject();
        if (!out || !cJSON_AddStringToObject(out, "model", up_model) ||
            !cJSON_AddItemToObject(out, "input", cJSON_Duplicate(in, true)) ||
            !cJSON_AddStringToObject(out, "encoding_format", "float")) {
            cJSON_Delete(out);
            http_reply_error(j->req, 503, "server_error", "out_of_memory", "out of memory");
            return -1;
        }
    } else if (j->srv->cfg->upstream_model) {
        cJSON *m = cJSON_CreateString(up_model);
        if (!m || !cJSON_ReplaceItemInObject(root, "model", m)) {
            cJSON_Delete(m);
            http_reply_error(j->req, 503, "server_error", "out_of_memory", "out of memory");
            return -1;
        }
        out = root; /* printed below, not freed here */
    } else {
        size_t len;
        const char *body = http_req_body(j->req, &len);
        j->body = malloc(len + 1);
        if (!j->body) {
            http_reply_error(j->req, 503, "server_error", "out_of_memory", "out of memory");
            return -1;
        }
        memcpy(j->body, body, len);
        j->body[len] = '\0';
        j->body_len = len;
        return 0;
    }
    j->body = cJSON_PrintUnformatted(out);
    if (out != root) {
        cJSON_Delete(out);
    }
    if (!j->body) {
        http_reply_error(j->req, 503, "server_error", "out_of_memory", "out of memory");
        return -1;
    }
    j->body_len = strlen(j->body);
    return 0;
}

static const char *
upstream_path(enum px_api api)
{
    switch (api) {
    case PX_COMPLETIONS:
        return "/completions";
    case PX_EMBEDDINGS:
    case PX_DBGPT_EMBED:
        return "/embeddings";
    default:
        return "/chat/completions";
    }
}

/* The headers of every upstream request. Returns 0 or -1 (out of memory). */
static int
upstream_headers(struct wrk_proxy_job *j)
{
    char rid[160];
    const char *lines[] = {"Content-Type: application/json", "Expect:", rid, j->srv->auth_header};

    snprintf(rid, sizeof(rid), "X-Request-Id: %s", http_req_id(j->req));
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        struct curl_slist *n = lines[i] ? curl_slist_append(j->headers, lines[i]) : j->headers;
        if (!n) {
            return -1;
        }
        j->headers = n;
    }
    return 0;
}

static void
proxy(struct http_request *req, struct wrk_server *srv, enum px_api api)
{
    const char *model = NULL;
    cJSON *root = wrk_parse_request(req, srv, &model);
    bool embedding_api = api == PX_EMBEDDINGS || api == PX_DBGPT_EMBED;
    struct wrk_proxy_job *j = NULL;
    const cJSON *stream;

    if (!root) {
        return;
    }
    if (embedding_api != srv->embeddings) {
        http_reply_error(req, 400, "invalid_request_error",
                         srv->embeddings ? "model_not_generative" : "model_not_embedding",
                         srv->embeddings ? "the model '%s' is an embedding model"
                                         : "the model '%s' is not an embedding model",
                         model);
        goto out;
    }
    stream = json_get(root, "stream");
    if (stream && !cJSON_IsNull(stream) && !cJSON_IsBool(stream)) {
        wrk_bad_request(req, "stream", "field 'stream' must be a boolean");
        goto out;
    }
    if (srv->engine && !srv->engine_up) {
        http_reply_error(req, 503, "server_error", "engine_unavailable",
                         "the engine of this worker is not answering yet (starting or "
                         "restarting); retry");
        goto out;
    }
    j = calloc(1, sizeof(*j));
    if (!j) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        goto out;
    }
    j->srv = srv;
    j->req = req;
    j->api = api;
    j->pass_stream = (api == PX_CHAT || api == PX_COMPLETIONS) && cJSON_IsTrue(stream);
    j->prompt_tokens = -1;
    j->start_ms = util_wall_ms();
    buf_init(&j->resp, (size_t)srv->cfg->max_answer_bytes);
    sse_splitter_init(&j->line, SSE_LINES, MAX_SSE_LINE);
    buf_init(&j->event, MAX_SSE_LINE);
    buf_init(&j->text, (size_t)srv->cfg->max_answer_bytes);
    if (upstream_body(j, root, model) != 0) {
        job_free(j);
        goto out;
    }
    if (!account(j)) {
        log_warn("request %s: refused: the memory budget (--memory_budget_bytes %lld) is "
                 "exhausted",
                 http_req_id(req), (long long)budget_limit());
        http_reply_error(req, 503, "server_error", "memory_budget_exceeded",
                         "the worker is out of memory for this request "
                         "(--memory_budget_bytes); retry");
        job_free(j);
        goto out;
    }
    size_t ulen = strlen(srv->cfg->upstream) + 32;
    j->url = malloc(ulen);
    if (!j->url || upstream_headers(j) != 0) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        job_free(j);
        goto out;
    }
    snprintf(j->url, ulen, "%s%s", srv->cfg->upstream, upstream_path(api));
    j->t = (struct wrk_ticket){.srv = srv,
                               .model = (size_t)(model - srv->models[0]) / sizeof(srv->models[0]),
                               .req = req,
                               .run = job_run,
                               .dropped = job_dropped};
    http_req_on_close(req, on_client_gone, j); /* before: job_run may end the job */
    if (wrk_admit(&j->t) < 0) {
        job_free(j); /* refused: replied, and req is gone */
    }
out:
    cJSON_Delete(root);
}

void
wrk_proxy_chat(struct http_request *req, struct wrk_server *srv)
{
    proxy(req, srv, PX_CHAT);
}

void
wrk_proxy_completions(struct http_request *req, struct wrk_server *srv)
{
    proxy(req, srv, PX_COMPLETIONS);
}

void
wrk_proxy_embeddings(struct http_request *req, struct wrk_server *srv, bool dbgpt)
{
    proxy(req, srv, dbgpt ? PX_DBGPT_EMBED : PX_EMBEDDINGS);
}

void
wrk_proxy_generate(struct http_request *req, struct wrk_server *srv, bool stream)
{
    proxy(req, srv, stream ? PX_DBGPT_STREAM : PX_DBGPT);
}

void
wrk_proxy_cancel_all(struct wrk_server *srv)
{
    while (srv->proxies) {
        struct wrk_proxy_job *j = srv->proxies;
        http_req_on_close(j->req, NULL, NULL);
        if (j->started) {
            stream_error(j, "shutting_down", "the worker is shutting down");
        } else {
            fail(j, 503, "server_error", "shutting_down", "the worker is shutting down; retry");
        }
        job_end(j);
    }
}
