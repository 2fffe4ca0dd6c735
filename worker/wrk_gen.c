/* SPDX-License-Identifier: MIT
 *
 * wrk_gen.c - text generation requests on the builtin language model:
 * POST /v1/chat/completions, /v1/completions (OpenAI; stream or not) and
 * DB-GPT's /api/worker/generate and /api/worker/generate_stream.
 *
 * Every request becomes a job that produces a few tokens per turn of the
 * event loop (or one per --decode_delay_ms, to behave like an engine under
 * load),
 * streamed as it goes or answered whole at the end. So requests interleave,
 * a client that disconnects stops its job at once, and capacity means
 * something:
 *
 * Back-pressure: each job holds a ticket for one of its model's slots, or
 * waits in the model's queue, or is refused with 429 (wrk_admit.c). A
 * stream whose client is more than --stream_buffer_bytes behind stops
 * generating (no timer armed) until the client has drained to a quarter of
 * that (http_req_on_drain), as the proxy's pass-through does; so a client
 * that reads nothing costs a bounded queue, not the whole answer (DB-GPT's
 * frames, which repeat the whole text, would otherwise grow as its square).
 *
 * Memory: each job keeps its share of the process's budget (budget.h,
 * --memory_budget_bytes) equal to what it holds: its prompt, its text, its
 * chunk buffer and its stream's queue; past the budget, 503 + Retry-After
 * before the head, an error event or frame after it.
 *
 * Streams: SSE `data:` chunks (chat.completion.chunk or text_completion; a
 * role chunk first, a finish chunk, a usage chunk with
 * stream_options.include_usage, then `data: [DONE]`), or DB-GPT's JSON frames
 * with the cumulative text, each ended by a NUL byte. Text that may be the
 * start of a stop sequence is held back until it is known not to be, and no
 * chunk splits a UTF-8 sequence.
 *
 * DB-GPT's frames (and /api/worker/generate's one answer) have exactly the
 * keys of DB-GPT's ModelOutput.to_dict(), written by wrk_dbgpt_output()
 * here for both backends (wrk.h says why: DB-GPT's clients build
 * ModelOutput(**frame)).
 */
#include "wrk.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#define LOG_MODULE "worker"
#include "budget.h"
#include "json_check.h"
#include "json_write.h"
#include "log.h"
#include "util.h"
#include "wrk_lm.h"

#define MAX_STOPS       4
#define MAX_STOP_LEN    256
#define MAX_GEN_TOKENS  4096
#define TOKENS_PER_TURN 4

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
                wrk_bad_request(req, "messages",
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
    wrk_bad_request(req, "messages", "a message's 'content' must be a string or an array of parts");
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
        wrk_bad_request(req, "top_p", "field 'top_p' must be greater than 0");
        return -1;
    }
    it = json_get(root, "stream");
    if (it && !cJSON_IsNull(it) && !cJSON_IsBool(it)) {
        wrk_bad_request(req, "stream", "field 'stream' must be a boolean");
        return -1;
    }
    g->stream = cJSON_IsTrue(it) || dbgpt_stream;
    it = json_get(root, "stream_options");
    if (it && !cJSON_IsNull(it)) {
        const cJSON *u = json_get(it, "include_usage");
        if (!cJSON_IsObject(it) || (u && !cJSON_IsBool(u))) {
            wrk_bad_request(
                req, "stream_options",
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
            wrk_bad_request(req, "stop", "field 'stop' must be a string or an array of strings");
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
            wrk_bad_request(req, "messages", "field 'messages' must be a non-empty array");
            return -1;
        }
        for (const cJSON *m = it->child; m; m = m->next) {
            if (!cJSON_IsObject(m) || !cJSON_IsString(json_get(m, "role"))) {
                wrk_bad_request(req, "messages",
                                "each message must be an object with a string 'role'");
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
            wrk_bad_request(req, "prompt", "field 'prompt' must be a string");
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

struct wrk_job {
    struct wrk_ticket t; /* first: the admission ticket */
    struct wrk_server *srv;
    struct http_request *req;
    enum gen_api api;
    size_t model;         /* index into srv->models */
    struct event *timer;  /* the next token */
    struct gen_request g; /* owns g.prompt */
    struct wrk_gen gen;
    struct buf text; /* everything generated so far */
    struct buf out;  /* the chunk being built (reused: no allocation per token) */
    size_t sent;     /* bytes of text already streamed */
    size_t holdback; /* bytes kept back: they may start a stop sequence */
    int64_t enqueued_ms;
    char id[80];
    int64_t created;
    int64_t start_ms; /* DB-GPT metrics: wall clock at admission */
    int64_t first_ms; /* DB-GPT metrics: the first frame with text */
    int first_tokens; /* completion tokens in that frame */
    int frames;       /* DB-GPT frames written */
    bool paused;      /* a stream waiting for its client to drain (no timer armed) */
    int64_t held;     /* bytes taken from the memory budget */
};

static void
job_free(struct wrk_job *j)
{
    if (j->timer) {
        event_free(j->timer);
    }
    buf_cleanup(&j->text);
    buf_cleanup(&j->out);
    buf_cleanup(&j->g.prompt);
    budget_give(j->held);
    free(j);
}

/* Brings the job's share of the memory budget up or down to what it holds
 * now: its buffers and its stream's queue. False when the budget cannot
 * cover the growth (nothing taken). */
static bool
account(struct wrk_job *j)
{
    int64_t now = (int64_t)(j->text.cap + j->out.cap + j->g.prompt.cap);

    if (j->g.stream && j->t.running) {
        now += (int64_t)http_req_output_pending(j->req);
    }
    if (now < j->held) {
        budget_give(j->held - now);
    } else if (now > j->held && !budget_take(now - j->held)) {
        return false;
    }
    j->held = now;
    return true;
}

/* A running job is done: free its slot for the next queued one. */
static void
job_release(struct wrk_job *j)
{
    wrk_admit_leave(&j->t);
    job_free(j);
}

/* Writes one SSE event (`data: <json>\n\n`), or one DB-GPT frame (JSON and a
 * NUL byte), built in b. */
static void
job_send(struct wrk_job *j, struct buf *b, struct jw *w)
{
    if (w->err) {
        return;
    }
    if (j->api == API_DBGPT_STREAM) {
        if (buf_append(b, "", 1) == 0) { /* the NUL that ends a frame */
            http_stream_write(j->req, b->data, b->len);
        }
        return;
    }
    struct iovec iov[3] = {{(void *)"data: ", 6}, {b->data, b->len}, {(void *)"\n\n", 2}};
    http_stream_writev(j->req, iov, 3);
}

/* The head of an OpenAI response or chunk, up to "choices"; with
 * `usage_null`, the "usage": null that chunks carry when the client asked
 * for a usage chunk at the end. */
static void
openai_head(struct wrk_job *j, struct jw *w, bool chunk, bool usage_null)
{
    jw_raw(w, "{\"id\":");
    jw_str(w, j->id);
    jw_raw(w, ",\"object\":");
    jw_str(w, j->api == API_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                 : "text_completion");
    jw_raw(w, ",\"created\":");
    jw_i64(w, j->created);
    jw_raw(w, ",\"model\":");
    jw_str(w, j->srv->models[j->model]);
    if (usage_null && j->g.include_usage) {
        jw_raw(w, ",\"usage\":null");
    }
}

/* Appends "key":v, or "key":null when v < 0. */
static void
jw_count(struct jw *w, const char *key, int64_t v)
{
    jw_raw(w, key);
    if (v < 0) {
        jw_raw(w, "null");
    } else {
        jw_i64(w, v);
    }
}

void
wrk_dbgpt_output(struct jw *w, const struct wrk_dbgpt_frame *f)
{
    bool ok = f->error_code == 0;
    bool usage = ok && f->prompt_tokens >= 0;
    int64_t total = usage ? (int64_t)f->prompt_tokens + f->completion_tokens : -1;
    int64_t now = util_wall_ms();

    jw_raw(w, "{\"error_code\":");
    jw_i64(w, f->error_code);
    jw_raw(w, ",\"text\":");
    jw_strn(w, f->text ? f->text : "", f->text ? f->len : 0);
    jw_raw(w, ",\"incremental\":false,\"model_context\":");
    jw_raw(w, ok ? "{\"prompt_echo_len_char\":-1,\"has_format_prompt\":false,\"echo\":false}"
                 : "null");
    jw_raw(w, ",\"finish_reason\":");
    jw_str(w, ok ? f->finish : NULL);
    jw_raw(w, ",\"usage\":");
    if (usage) {
        jw_count(w, "{\"prompt_tokens\":", f->prompt_tokens);
        jw_count(w, ",\"completion_tokens\":", f->completion_tokens);
        jw_count(w, ",\"total_tokens\":", total);
        jw_raw(w, "}");
    } else {
        jw_raw(w, "null");
    }
    if (!ok) {
        jw_raw(w, ",\"metrics\":null}");
        return;
    }
    /* DB-GPT's ModelInferenceMetrics, the fields every release has */
    jw_count(w, ",\"metrics\":{\"collect_index\":", f->collect_index);
    jw_count(w, ",\"start_time_ms\":", f->start_ms);
    jw_count(w, ",\"end_time_ms\":", now);
    jw_count(w, ",\"current_time_ms\":", now);
    jw_count(w, ",\"first_token_time_ms\":", f->first_ms > 0 ? f->first_ms : -1);
    jw_count(w, ",\"first_completion_time_ms\":", f->first_ms > 0 ? f->first_ms : -1);
    jw_count(w, ",\"first_completion_tokens\":", f->first_ms > 0 ? f->first_tokens : -1);
    jw_count(w, ",\"prompt_tokens\":", usage ? f->prompt_tokens : -1);
    jw_count(w, ",\"completion_tokens\":", usage ? f->completion_tokens : -1);
    jw_count(w, ",\"total_tokens\":", total);
    jw_raw(w, ",\"speed_per_second\":");
    if (total > 0 && now > f->start_ms) {
        jw_double(w, (double)total * 1000.0 / (double)(now - f->start_ms));
    } else {
        jw_raw(w, "null");
    }
    jw_raw(w, ",\"current_gpu_infos\":null,\"avg_gpu_infos\":null}}");
}

/* The job's DB-GPT frame with text[0..len). */
static void
dbgpt_output(struct wrk_job *j, struct jw *w, size_t len, const char *finish)
{
    j->frames++;
    if (!j->first_ms && len > 0) {
        j->first_ms = util_wall_ms();
        j->first_tokens = j->gen.completion_tokens;
    }
    struct wrk_dbgpt_frame f = {.text = j->text.data ? j->text.data : "",
                                .len = len,
                                .finish = finish,
                                .prompt_tokens = j->gen.prompt_tokens,
                                .completion_tokens = j->gen.completion_tokens,
                                .start_ms = j->start_ms,
                                .first_ms = j->first_ms,
                                .first_tokens = j->first_tokens,
                                .collect_index = j->frames};
    wrk_dbgpt_output(w, &f);
}

/* Streams text[from..to) as one chunk, with `finish` (NULL: not yet). */
static void
send_piece(struct wrk_job *j, size_t from, size_t to, const char *finish)
{
    const char *t = j->text.data ? j->text.data : "";
    struct buf *b = &j->out;
    struct jw w;

    buf_reset(b);
    jw_init(&w, b);
    if (j->api == API_DBGPT_STREAM) {
        dbgpt_output(j, &w, to, finish); /* DB-GPT's frames carry the whole text so far */
    } else {
        openai_head(j, &w, true, true);
        jw_raw(&w, ",\"choices\":[{\"index\":0,");
        if (j->api == API_CHAT && finish) {
            jw_raw(&w, "\"delta\":{}");
        } else if (j->api == API_CHAT) {
            jw_raw(&w, "\"delta\":{\"content\":");
            jw_strn(&w, t + from, to - from);
            jw_raw(&w, "}");
        } else {
            jw_raw(&w, "\"text\":");
            jw_strn(&w, t + from, to - from);
        }
        jw_raw(&w, ",\"logprobs\":null,\"finish_reason\":");
        jw_str(&w, finish);
        jw_raw(&w, "}]}");
    }
    job_send(j, b, &w);
}

/* The whole answer of a request that did not ask to stream. */
static void
reply_whole(struct wrk_job *j, const char *finish)
{
    const char *t = j->text.data ? j->text.data : "";
    struct buf b;
    struct jw w;

    buf_init(&b, 8 * 1024 * 1024);
    jw_init(&w, &b);
    if (j->api == API_DBGPT) {
        dbgpt_output(j, &w, j->text.len, finish);
    } else {
        openai_head(j, &w, false, false);
        jw_raw(&w,
               j->api == API_CHAT
                   ? ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
                   : ",\"choices\":[{\"index\":0,\"text\":");
        jw_strn(&w, t, j->text.len);
        jw_raw(&w, j->api == API_CHAT ? "},\"logprobs\":null,\"finish_reason\":"
                                      : ",\"logprobs\":null,\"finish_reason\":");
        jw_str(&w, finish);
        jw_raw(&w, "}],");
        jw_usage(&w, j->gen.prompt_tokens, j->gen.completion_tokens);
        jw_raw(&w, "}");
    }
    wrk_reply_json(j->req, j->srv, &b, &w);
    buf_cleanup(&b);
}

static void
job_finish(struct wrk_job *j, const char *finish)
{
    http_req_on_close(j->req, NULL, NULL);
    if (!j->g.stream) {
        reply_whole(j, finish);
        job_release(j);
        return;
    }
    if (j->sent < j->text.len) {
        send_piece(j, j->sent, j->text.len, NULL);
        j->sent = j->text.len;
    }
    send_piece(j, j->sent, j->sent, finish);
    if (j->api != API_DBGPT_STREAM) {
        if (j->g.include_usage) {
            struct jw w;
            buf_reset(&j->out);
            jw_init(&w, &j->out);
            openai_head(j, &w, true, false);
            jw_raw(&w, ",\"choices\":[],");
            jw_usage(&w, j->gen.prompt_tokens, j->gen.completion_tokens);
            jw_raw(&w, "}");
            job_send(j, &j->out, &w);
        }
        http_stream_write(j->req, "data: [DONE]\n\n", 14);
    }
    http_stream_end(j->req);
    job_release(j);
}

static void
schedule(struct wrk_job *j, int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};

    evtimer_add(j->timer, &tv);
}

/* The budget refused what the job holds: 503 + Retry-After before the
 * head (`started` false; for DB-GPT's stream with an error frame as its
 * body, since DB-GPT's client reads only frames), an error event (OpenAI)
 * or frame (DB-GPT) after it. Ends the job. */
static void
over_budget(struct wrk_job *j, bool started)
{
    static const char msg[] =
        "the worker is out of memory for this answer (--memory_budget_bytes); retry";

    log_warn("request %s: refused: the memory budget (--memory_budget_bytes %lld) is exhausted",
             http_req_id(j->req), (long long)budget_limit());
    http_req_on_close(j->req, NULL, NULL);
    if (j->api != API_DBGPT_STREAM && (!j->g.stream || !started)) {
        http_reply_error(j->req, 503, "server_error", "memory_budget_exceeded", "%s", msg);
    } else if (j->api == API_DBGPT_STREAM) {
        struct wrk_dbgpt_frame f = {.text = msg, .len = sizeof(msg) - 1, .error_code = 1};
        struct jw w;
        if (!started) {
            http_stream_start(j->req, 503, "text/plain; charset=utf-8", "Retry-After: 1\r\n");
        }
        buf_reset(&j->out);
        jw_init(&w, &j->out);
        wrk_dbgpt_output(&w, &f);
        job_send(j, &j->out, &w);
        http_stream_end(j->req);
    } else {
        http_stream_error(j->req, "memory_budget_exceeded", "%s", msg);
    }
    job_release(j);
}

/* The client has taken most of what was queued: generate again. */
static void
on_drained(struct http_request *req, void *arg)
{
    struct wrk_job *j = arg;

    (void)req;
    j->paused = false;
    (void)account(j); /* the queue is shorter: give back */
    schedule(j, j->srv->cfg->decode_delay_ms);
}

/* The next turn: now (after the decode delay), or, for a stream whose
 * client is more than --stream_buffer_bytes behind, once it has drained to
 * a quarter of that. Ends the job if the budget refuses what it holds. */
static void
next_turn(struct wrk_job *j)
{
    int64_t limit = j->srv->cfg->stream_buffer_bytes;

    if (!account(j)) {
        over_budget(j, j->g.stream);
        return;
    }
    if (j->g.stream && http_req_output_pending(j->req) > (size_t)limit) {
        j->paused = true;
        atomic_fetch_add(&j->srv->stream_pauses, 1);
        http_req_on_drain(j->req, (size_t)limit / 4, on_drained, j);
        return;
    }
    schedule(j, j->srv->cfg->decode_delay_ms);
}

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct wrk_job *j = arg;
    const char *finish;
    size_t end;

    (void)fd;
    (void)what;
    /* With no decode delay, a few tokens per turn of the loop (each still its
     * own chunk): requests still interleave, and a stream's events share a
     * write instead of costing a system call each. */
    for (int k = j->srv->cfg->decode_delay_ms ? 1 : TOKENS_PER_TURN; k > 0; k--) {
        finish = step(&j->gen, &j->g, &j->text);
        if (finish) {
            job_finish(j, finish);
            return;
        }
        if (j->g.stream) {
            end = j->text.len > j->holdback ? j->text.len - j->holdback : 0;
            while (end > j->sent && ((unsigned char)j->text.data[end] & 0xC0) == 0x80) {
                end--; /* never split a UTF-8 sequence between two chunks */
            }
            if (end > j->sent) {
                send_piece(j, j->sent, end, NULL);
                j->sent = end;
            }
        }
    }
    next_turn(j);
}

/* The client went away: stop at once (queued: leave the queue). */
static void
on_client_gone(struct http_request *req, void *arg)
{
    struct wrk_job *j = arg;

    atomic_fetch_add(&j->srv->cancelled, 1);
    log_debug("request %s: client disconnected after %d tokens; cancelled", http_req_id(req),
              j->gen.completion_tokens);
    if (!j->t.running) {
        wrk_admit_leave(&j->t);
        http_reply_error(req, 503, "server_error", "cancelled", "client disconnected");
        job_free(j);
    } else if (j->g.stream) {
        http_stream_end(req);
        job_release(j);
    } else {
        http_reply_error(req, 503, "server_error", "cancelled", "client disconnected");
        job_release(j);
    }
}

static void
job_run(struct wrk_ticket *t)
{
    struct wrk_job *j = (struct wrk_job *)t;

    if (!account(j)) {
        over_budget(j, false); /* before the head: 503 + Retry-After */
        return;
    }
    if (j->g.stream) {
        http_stream_start(
            j->req, 200,
            j->api == API_DBGPT_STREAM ? "text/plain; charset=utf-8" : "text/event-stream", NULL);
        if (j->api == API_CHAT) {
            /* OpenAI's first chunk names the role */
            struct jw w;
            buf_reset(&j->out);
            jw_init(&w, &j->out);
            openai_head(j, &w, true, true);
            jw_raw(&w, ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
                       "\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}");
            job_send(j, &j->out, &w);
        }
    }
    if (j->srv->cfg->decode_delay_ms == 0) {
        /* the first tokens in this same turn of the loop: they leave with
         * the head and the role chunk, in one write */
        event_active(j->timer, EV_TIMEOUT, 0);
        return;
    }
    schedule(j, j->srv->cfg->decode_delay_ms);
}

static void
job_dropped(struct wrk_ticket *t)
{
    job_free((struct wrk_job *)t);
}

/* Runs the job, queues it, or refuses it (429). Takes over g. */
static void
admit(struct http_request *req, struct wrk_server *srv, enum gen_api api, size_t model,
      struct gen_request *g)
{
    struct wrk_job *j = calloc(1, sizeof(*j));
    if (!j || !(j->timer = evtimer_new(http_loop_base(http_req_loop(req)), on_tick, j))) {
        free(j);
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        return;
    }
    j->srv = srv;
    j->req = req;
    j->api = api;
    j->model = model;
    j->g = *g;
    memset(&g->prompt, 0, sizeof(g->prompt)); /* moved */
    buf_init(&j->text, 4 * 1024 * 1024);
    buf_init(&j->out, 8 * 1024 * 1024);
    for (size_t i = 0; i < j->g.nstops; i++) {
        size_t n = strlen(j->g.stops[i]);
        if (n - 1 > j->holdback) {
            j->holdback = n - 1;
        }
    }
    snprintf(j->id, sizeof(j->id), "%s-%s", api == API_CHAT ? "chatcmpl" : "cmpl",
             http_req_id(req));
    j->start_ms = util_wall_ms();
    j->created = j->start_ms / 1000;
    wrk_gen_init(&j->gen, srv->lm, j->g.prompt.data ? j->g.prompt.data : "", j->g.prompt.len,
                 &j->g.p);
    j->t = (struct wrk_ticket){
        .srv = srv, .model = model, .req = req, .run = job_run, .dropped = job_dropped};
    http_req_on_close(req, on_client_gone, j); /* before: job_run may end the job */
    if (wrk_admit(&j->t) < 0) {
        job_free(j); /* refused: replied, and req is gone */
    }
}

static void
generation(struct http_request *req, void *arg, enum gen_api api)
{
    struct wrk_server *srv = wrk_server_of(arg);
    const char *model = NULL;
    cJSON *root = wrk_parse_request(req, srv, &model);
    struct gen_request g;

    if (!root) {
        return;
    }
    memset(&g, 0, sizeof(g));
    buf_init(&g.prompt, 4 * 1024 * 1024);
    if (!srv->lm) {
        http_reply_error(req, 400, "invalid_request_error", "model_not_generative",
                         "the model '%s' is an embedding model", model);
    } else if (parse_generation(req, root, api == API_CHAT, api >= API_DBGPT,
                                api == API_DBGPT_STREAM, &g) == 0) {
        if (api == API_DBGPT && g.stream) {
            api = API_DBGPT_STREAM;
        }
        admit(req, srv, api, (size_t)(model - srv->models[0]) / sizeof(srv->models[0]), &g);
    }
    buf_cleanup(&g.prompt);
    cJSON_Delete(root);
}

void
wrk_h_chat(struct http_request *req, void *arg)
{
    if (wrk_server_of(arg)->proxy) {
        wrk_proxy_chat(req, wrk_server_of(arg));
        return;
    }
    generation(req, arg, API_CHAT);
}

void
wrk_h_completions(struct http_request *req, void *arg)
{
    if (wrk_server_of(arg)->proxy) {
        wrk_proxy_completions(req, wrk_server_of(arg));
        return;
    }
    generation(req, arg, API_COMPLETIONS);
}

void
wrk_h_generate(struct http_request *req, void *arg)
{
    if (wrk_server_of(arg)->proxy) {
        wrk_proxy_generate(req, wrk_server_of(arg), false);
        return;
    }
    generation(req, arg, API_DBGPT);
}

void
wrk_h_generate_stream(struct http_request *req, void *arg)
{
    if (wrk_server_of(arg)->proxy) {
        wrk_proxy_generate(req, wrk_server_of(arg), true);
        return;
    }
    generation(req, arg, API_DBGPT_STREAM);
}
