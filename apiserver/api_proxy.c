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
 *        over this loop's keep-alive connections to the workers
 *        (http_upstream.h)
 *          - refused/reset/no answer, 5xx, 429, 404: nothing has reached
 *            the client yet, so try another instance (never the same one,
 *            at most --max_attempts); refused/reset/5xx eject the instance
 *          - no first byte within --first_byte_timeout_ms: 504, ejected
 *          - 2xx: a stream is forwarded chunk by chunk as it arrives (each
 *            chunk re-arms --idle_timeout_ms); otherwise the answer is sent
 *            whole with X-Roster-Added-Ms (at most --max_answer_bytes)
 *          - another 4xx: the worker's answer goes to the client as is
 *     -> a failure after a stream has begun ends it with an SSE error
 *        event, never a silent truncation
 *   Only the instance's own failures eject it: no connection, no first
 *   byte in time, silence while this server was reading it, an error, or
 *   the whole request's deadline when the instance alone set the pace (a
 *   stream held back for a slow client ends at the deadline, but the
 *   instance stays in).
 *   Overload is not death: a connect that times out on an instance this
 *   server has heard from within the last API_ALIVE_MS (any loop: answer
 *   bytes read, or a new connection's handshake completed, which a
 *   non-streamed answer still generating gives no other sign of) meets a
 *   full accept queue (the kernel drops the SYN and the client
 *   would resend it only after a second), so it does not eject the
 *   instance. The request goes to another instance if there is one, else
 *   to the same one on a new connection, up to MAX_RECONNECTS times. A
 *   refused or reset connection, and a timeout on an instance not heard
 *   from, still eject.
 *   Memory: whole answers and stream queues are held within
 *   --memory_budget_bytes (see "the memory budget" below).
 *   A client that disconnects cancels the transfer: the worker sees its
 *   connection close and stops generating.
 *
 * Everything runs on the request's loop thread; the only shared state is
 * the instances' atomics (in-flight counts, ejection) and counters.
 */
#include "api.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#define LOG_MODULE "apiserver"
#include "budget.h"
#include "buf.h"
#include "http_upstream.h"
#include "json_check.h"
#include "log.h"
#include "util.h"

#define MAX_ERROR_BODY (64u * 1024)
#define MAX_PENDING    (64u * 1024) /* streams: what one read of the instance gathers */
#define QUEUE_STEP     (16u * 1024) /* streams: the client's queue is reserved in these steps */
#define MAX_JSON_DEPTH 64
#define MAX_KEY        256
#define MAX_RECONNECTS 3 /* connect timeouts on an alive instance, per request */

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
    struct hu_req *up;     /* the current attempt's transfer */
    char headers[200];     /* X-Request-Id and Content-Type lines */
    struct event timer_ev; /* first byte, idle (streams), the whole request */
    struct event *timer;   /* &timer_ev once assigned */
    int status;            /* the current attempt's */
    char ct[128];          /* ... and its Content-Type */
    bool got_header;
    bool started;     /* our streamed reply has begun */
    bool too_large;   /* a whole answer beyond --max_answer_bytes */
    bool paused;      /* not reading the instance: the client is behind */
    bool ever_paused; /* ... at some time: the client set the pace */
    struct buf resp;
    int64_t held_resp;    /* bytes of the memory budget resp holds (its len) */
    int64_t held_stream;  /* ... and the stream's queues (reserved in steps, up_flush) */
    struct buf pending;   /* streams: what one read brought, forwarded as one chunk */
    int64_t start_us;     /* arrival */
    int64_t attempt_us;   /* the current attempt's start */
    int64_t deadline_us;  /* ... and its end (--request_timeout_ms) */
    int64_t last_data_us; /* streams: the last chunk's arrival */
    bool saw_429;
    bool again;      /* the last instance timed out connecting but is alive: it may be retried */
    int reconnects;  /* ... times it was */
    int fail_status; /* what to answer if every attempt fails (0: nothing yet) */
    char fail_code[32];
    char fail_msg[640];
    struct api_model_opts o;    /* the model's options: its settings over the flags */
    struct api_limit_ticket lt; /* the key's limits (api_limit.c) */
    struct px_alias *alias;     /* asked for an alias of the settings (NULL: a model) */
    struct api_px *prev, *next; /* l->active */
    /* the wait queue (api_queue.c): every instance tried was at capacity */
    struct api_waiter w;      /* its place in the queue; w.priority: its key's */
    bool waited;              /* it entered the queue (at least once) */
    bool dispatched;          /* ... and was handed a slot (at least once) */
    bool wait_expired;        /* ... and ran out of time there */
    int64_t wait_deadline_us; /* its first wait + --queue_timeout_ms */
    int64_t wait_since_us;    /* the current wait's start (0: not waiting) */
    int64_t waited_us;        /* its waits so far */
    struct event wait_ev;     /* the deadline while it waits */
    bool wait_armed;
};

/* A request for an alias (docs/settings.md): the models it names, in
 * order; the one being tried; the body with its "model" rewritten to it
 * (a worker serves its own model's name). */
#define ALIAS_MAX 8
struct px_alias {
    char name[API_NAME_MAX + 1];
    char models[ALIAS_MAX][API_NAME_MAX + 1];
    size_t n;
    size_t cur;
    cJSON *root;
    char *body;
    size_t len;
};

static void attempt(struct api_px *px);
static void resp_reset(struct api_px *px);

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
    if (px->up) {
        hu_cancel(px->up);
        px->up = NULL;
    }
    if (px->timer) {
        evtimer_del(px->timer);
    }
    if (px->counted) {
        atomic_fetch_sub(&px->inst->rt.in_flight, 1);
        px->counted = false;
    }
}

/* Takes the instance out for --eject_ms. A request that is not the
 * instance's half-open trial leaves a running trial alone (it decides). */
static void
eject(struct api_px *px, const char *why)
{
    struct api_inst *i = px->inst;
    bool newly;

    if (!px->trial && atomic_load(&i->rt.trial)) {
        return;
    }
    newly = route_eject(&i->rt, util_mono_ms(), px->srv->cfg->eject_ms);
    px->trial = false;
    atomic_fetch_add(&i->s.ejections, 1);
    atomic_fetch_add(&px->model->stats->s.ejections, 1);
    pthread_mutex_lock(&i->err_mu);
    util_strlcpy(i->last_error, why, sizeof(i->last_error));
    pthread_mutex_unlock(&i->err_mu);
    if (newly) { /* a failed trial is no news */
        api_event_add(px->srv, "ejected", i->model->model, i->host, i->port,
                      "%s; no requests for %lld ms, then one trial", why,
                      (long long)px->srv->cfg->eject_ms);
    }
}

/* The instance answered. Only its trial brings an ejected instance back (a
 * request sent before the ejection proves nothing about now). */
static void
instance_ok(struct api_px *px)
{
    if (px->trial) {
        route_success(&px->inst->rt);
        px->trial = false;
        api_event_add(px->srv, "readmitted", px->inst->model->model, px->inst->host, px->inst->port,
                      "its trial request succeeded");
    }
}

/* ---- the wait queue (api_queue.c) ---------------------------------------------
 *
 * A request whose every attempt met 429 (each instance tried at capacity)
 * waits for a free slot instead of failing (wait_start, from fail_all), as
 * does a new request of a model that has waiters already (it takes its
 * place behind them). While it waits it holds no connection and no
 * budget, only its body and this struct; its timers: the queue's deadline
 * (wait_ev), the request's own (timer) stopped. Dispatched (on_ready), it
 * starts over as if just arrived: every instance may be tried again and
 * --request_timeout_ms counts from then. Meeting 429 everywhere again, it
 * goes back to its place in line. Past --queue_timeout_ms since its first
 * wait: 503 queue_timeout. Past --queue_max waiting: 429 queue_full. Its
 * client going away or shutdown take it out at once (px_free). */

/* Out of the queue, its time there counted. NULL-safe on a request not
 * waiting. */
static void
wait_end(struct api_px *px)
{
    api_queue_leave(px->srv, &px->w);
    if (px->wait_armed) {
        event_del(&px->wait_ev);
        px->wait_armed = false;
    }
    if (px->wait_since_us) {
        px->waited_us += now_us() - px->wait_since_us;
        px->wait_since_us = 0;
    }
}

/* The request is answered: forget it. */
static void
px_free(struct api_px *px)
{
    int64_t us = now_us() - px->start_us;
    bool waiting = px->wait_since_us != 0; /* ended while it waited: it held no slot */

    end_attempt(px);
    if (px->trial) {
        route_trial_abort(&px->inst->rt);
    }
    api_limit_cancel(px->srv, px->l, &px->lt);
    /* admitted and not answered (failed, or its client left): charged its
     * prompt as estimated and the content chunks it passed */
    api_limit_done(px->srv, &px->lt, NULL, 0);
    free(px->lt.refusal);
    if (px->alias) {
        cJSON_Delete(px->alias->root);
        free(px->alias->body);
        free(px->alias);
    }
    if (px->waited) {
        wait_end(px);
        api_queue_done(px->srv, px->model->stats, px->wait_expired, px->waited_us);
    }
    if ((px->inst || px->dispatched) && px->status != 429 && !waiting) {
        /* its slot is free (or, a waiter that found no instance at all,
         * the next one learns so at once): a waiter's turn */
        api_queue_kick(px->srv, px->model->stats, 1);
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
        event_del(px->timer);
    }
    buf_cleanup(&px->resp);
    buf_cleanup(&px->pending);
    budget_give(px->held_resp + px->held_stream);
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
    http_req_on_close(px->req, NULL, NULL);
    http_stream_error(px->req, "upstream_error", "%s", msg);
    px_free(px);
}

/* Past --queue_timeout_ms since its first wait: 503. */
static void
wait_timed_out(struct api_px *px)
{
    struct api_queue_opts o = api_queue_opts(px->srv, px->model->stats->model);
    char msg[320];

    wait_end(px);
    px->wait_expired = true;
    count_error(px, API_ERR_NO_INSTANCE);
    snprintf(msg, sizeof(msg),
             "every instance of '%s' stayed at capacity for %lld ms (--queue_timeout_ms); retry",
             px->model->name, (long long)o.timeout_ms);
    finish_error(px, 503, "server_error", "queue_timeout", msg);
}

static void
on_wait_timer(evutil_socket_t fd, short what, void *arg)
{
    struct api_px *px = arg;

    (void)fd;
    (void)what;
    px->wait_armed = false;
    wait_timed_out(px);
}

/* Puts the request in its model's queue (px->status: why). Returns true
 * when it waits or was answered (past the bound or the deadline), false
 * when queueing is off (--queue_timeout_ms 0) or shutdown has begun. */
static bool
wait_start(struct api_px *px)
{
    struct api_queue_opts o = api_queue_opts(px->srv, px->model->stats->model);
    int64_t now = now_us(), ms;
    char msg[320];

    if (o.timeout_ms <= 0 || http_loop_draining(px->l->loop)) {
        return false;
    }
    if (px->waited && now >= px->wait_deadline_us) {
        wait_timed_out(px);
        return true;
    }
    end_attempt(px);
    resp_reset(px); /* a waiter holds none of the budget */
    if (api_queue_enter(px->srv, px->model->stats, &px->w, o.max, px->waited) != API_Q_OK) {
        count_error(px, API_ERR_NO_INSTANCE);
        snprintf(msg, sizeof(msg),
                 "every instance of '%s' is at capacity and %lld requests wait for it already "
                 "(--queue_max); retry",
                 px->model->name, (long long)o.max);
        finish_error(px, 429, "rate_limit_exceeded", "queue_full", msg);
        return true;
    }
    if (!px->waited) {
        px->waited = true;
        px->wait_deadline_us = now + o.timeout_ms * 1000;
    }
    px->wait_since_us = now;
    ms = (px->wait_deadline_us - now + 999) / 1000;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    evtimer_add(&px->wait_ev, &tv);
    px->wait_armed = true;
    return true;
}

/* A slot is free (api_queue.c, on the request's loop): try again from
 * scratch, on the loop's current table. */
static void
on_ready(struct api_waiter *w)
{
    struct api_px *px = (struct api_px *)(void *)((char *)w - offsetof(struct api_px, w));
    struct api_table *t = px->l->table;

    wait_end(px);
    if (t && t != px->table) {
        struct api_model *m = api_table_find(t, px->model->name, px->model->type);
        if (m) {
            api_table_unref(px->table);
            px->table = api_table_ref(t);
            px->model = m;
        }
    }
    px->dispatched = true;
    px->inst = NULL; /* perhaps the old table's */
    px->status = 0;
    px->ntried = 0;
    px->saw_429 = false;
    px->fail_status = 0;
    px->again = false;
    px->reconnects = 0;
    px->deadline_us = now_us() + px->o.request_timeout_ms * 1000;
    attempt(px);
}

/* Points the alias's request at model `m` (index i of its list). */
static bool
alias_target(struct api_px *px, struct api_model *m, size_t i)
{
    struct px_alias *a = px->alias;
    char *body;

    if (!cJSON_ReplaceItemInObjectCaseSensitive(a->root, "model", cJSON_CreateString(m->name)) ||
        !(body = cJSON_PrintUnformatted(a->root))) {
        return false;
    }
    free(a->body);
    a->body = body;
    a->len = strlen(body);
    a->cur = i;
    px->model = m;
    px->o = api_model_opts(px->srv, m->name);
    return true;
}

/* The alias's next model with a routable instance, after every attempt at
 * the current one failed before the first byte: true once the request
 * points at it (nothing tried there yet). */
static bool
alias_next(struct api_px *px)
{
    struct px_alias *a = px->alias;

    for (size_t i = a->cur + 1; i < a->n; i++) {
        struct api_model *m = api_table_find(px->table, a->models[i], px->model->type);
        if (m && m->set.n > 0 && alias_target(px, m, i)) {
            log_info("request %s: alias '%s': '%s' failed, falling back to '%s'",
                     http_req_id(px->req), a->name, a->models[a->cur > 0 ? a->cur - 1 : 0],
                     m->name);
            atomic_fetch_add_explicit(&m->stats->s.requests, 1, memory_order_relaxed);
            atomic_fetch_add(&m->stats->s.retries, 1);
            px->ntried = 0;
            px->saw_429 = false;
            px->fail_status = 0;
            px->again = false;
            px->reconnects = 0;
            return true;
        }
    }
    return false;
}

/* Every attempt failed, or no instance was usable. */
static void
fail_all(struct api_px *px)
{
    char msg[512];

    if (px->alias && alias_next(px)) {
        attempt(px); /* the alias's next model, before the first byte reached the client */
        return;
    }
    if (px->saw_429 && wait_start(px)) {
        return; /* waits for a free slot (or was answered past the bound or deadline) */
    }
    if (px->saw_429 && px->fail_status == 0) {
        snprintf(msg, sizeof(msg), "every instance of '%s' is at capacity; retry", px->model->name);
        count_error(px, API_ERR_NO_INSTANCE);
        finish_error(px, 429, "rate_limit_exceeded", "model_at_capacity", msg);
    } else if (px->fail_status) {
        finish_error(px, px->fail_status,
                     px->fail_status < 500 ? "invalid_request_error" : "server_error",
                     px->fail_code, px->fail_msg);
    } else {
        const struct api_model *m = px->model;
        if (m->set.n > 0) {
            snprintf(msg, sizeof(msg),
                     "no instance of '%s' could take the request: %zu routable, all ejected after "
                     "failures or tried; retry",
                     m->name, m->set.n);
        } else if (m->excluded > 0) {
            snprintf(msg, sizeof(msg),
                     "no routable instance of '%s': %zu registered, %zu of them at an address "
                     "outside this server's --instance_networks (never connected to)",
                     m->name, m->known, m->excluded);
        } else if (m->alive == 0) {
            snprintf(msg, sizeof(msg),
                     "no routable instance of '%s': %zu registered, none alive (their leases ran "
                     "out: the workers stopped heartbeating, or deregistered); retry when a worker "
                     "is back",
                     m->name, m->known);
        } else {
            snprintf(msg, sizeof(msg),
                     "no routable instance of '%s': %zu registered, %zu alive, but drained "
                     "(weight 0) or disabled",
                     m->name, m->known, m->alive);
        }
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

/* ---- the memory budget (budget.h) ------------------------------------------------
 *
 * A whole answer is held in px->resp as it arrives: each append takes its
 * bytes from the process-wide budget first, and the answer gives them back
 * once the client has it (http_reply_ref's done) or the request ends. A
 * stream reserves, when it starts, what one read of the instance gathers
 * (MAX_PENDING) and a first step (QUEUE_STEP) of the client's output queue;
 * past the budget it gets 503 + Retry-After before anything was sent to the
 * client. The queue's reservation then grows in steps as a slow client
 * falls behind, up to --stream_buffer_bytes (beyond which the instance is
 * no longer read); where the budget has no more room, the stream is held
 * back sooner (the instance is not read until the client catches up), never
 * cut. So an open stream that keeps up costs the budget 80 KiB, not
 * --stream_buffer_bytes: 10,000 of them fit the default budget. */

/* Appends p[0..n) to px->resp. Returns 0; -1 past resp's cap or out of
 * memory; -2 past the budget. Nothing is appended on failure. */
static int
resp_append(struct api_px *px, const char *p, size_t n)
{
    if (n > px->resp.max - px->resp.len) {
        return -1;
    }
    if (!budget_take((int64_t)n)) {
        return -2;
    }
    if (buf_append(&px->resp, p, n) != 0) {
        budget_give((int64_t)n);
        return -1;
    }
    px->held_resp += (int64_t)n;
    return 0;
}

static void
resp_reset(struct api_px *px)
{
    budget_give(px->held_resp);
    px->held_resp = 0;
    buf_reset(&px->resp);
}

/* A whole answer on its way to the client: its storage and its bytes of
 * the budget, until the server has written (or dropped) it. */
struct held_body {
    char *data;
    int64_t held;
};

static void
held_body_done(void *ctx)
{
    struct held_body *hb = ctx;

    budget_give(hb->held);
    free(hb->data);
    free(hb);
}

/* Replies with the whole answer in px->resp, handing its storage and
 * budget bytes to the reply (no copy). */
static void
reply_held(struct api_px *px, const char *extra_headers)
{
    struct held_body *hb = malloc(sizeof(*hb));
    size_t len = px->resp.len;

    if (hb && len > 0 && (hb->data = buf_take(&px->resp)) != NULL) {
        hb->held = px->held_resp;
        px->held_resp = 0;
        http_reply_ref(px->req, px->status, px->ct, hb->data, len, extra_headers, held_body_done,
                       hb);
        return;
    }
    free(hb);
    http_reply(px->req, px->status, px->ct, px->resp.data ? px->resp.data : "", len, extra_headers);
}

/* The budget is spent: 503 + Retry-After (nothing has reached the client). */
static void
refuse_over_budget(struct api_px *px, const char *what)
{
    char msg[320];

    end_attempt(px);
    snprintf(msg, sizeof(msg),
             "the apiserver holds too much in memory to take %s (--memory_budget_bytes %lld); "
             "retry",
             what, (long long)px->srv->cfg->memory_budget_bytes);
    log_warn("request %s: refused: over the memory budget (%lld of %lld bytes held)",
             http_req_id(px->req), (long long)budget_used(), (long long)budget_limit());
    finish_error(px, 503, "server_error", "memory_budget_exceeded", msg);
}

/* ---- the transfer ------------------------------------------------------------- */

static void
arm(struct api_px *px, int64_t ms)
{
    int64_t left = px->deadline_us - now_us();

    if (left < ms * 1000) {
        ms = left > 0 ? (left + 999) / 1000 : 0; /* the whole request's deadline comes first */
    }
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    evtimer_add(px->timer, &tv);
}

/* X-Roster-Added-Ms: the request's time so far minus the instance's share
 * (`upstream_us`). */
static void
added_header(struct api_px *px, int64_t upstream_us, char *out, size_t cap)
{
    int64_t added = now_us() - px->start_us - upstream_us;

    snprintf(out, cap, "X-Roster-Added-Ms: %.3f\r\n%s%s%s%s",
             (double)(added > 0 ? added : 0) / 1000.0, px->lt.headers,
             px->alias ? "X-Roster-Model: " : "", px->alias ? px->model->name : "",
             px->alias ? "\r\n" : "");
}

static void
up_head(void *arg, int status, const char *content_type)
{
    struct api_px *px = arg;
    int64_t ttfb = now_us() - px->attempt_us;

    px->got_header = true;
    px->status = status;
    api_inst_heard(px->inst);
    util_strlcpy(px->ct, content_type ? content_type : "application/json", sizeof(px->ct));
    metrics_hist_observe_us(&px->inst->s.ttfb, ttfb);
    metrics_hist_observe_us(&px->model->stats->s.ttfb, ttfb);
    px->resp.max = status / 100 == 2 ? (size_t)px->srv->cfg->max_answer_bytes : MAX_ERROR_BODY;
    if (status / 100 == 2 && px->stream) {
        char hdr[1024];
        int64_t queue = (int64_t)QUEUE_STEP + (int64_t)MAX_PENDING;
        if (!budget_take(queue)) {
            refuse_over_budget(px, "another stream");
            return;
        }
        px->held_stream = queue;
        added_header(px, ttfb, hdr, sizeof(hdr));
        http_stream_start(px->req, status, px->ct, hdr);
        px->started = true;
        px->last_data_us = now_us();
        arm(px, px->o.idle_timeout_ms);
    } else {
        arm(px, px->o.request_timeout_ms); /* the rest of the answer */
    }
}

/* The slow client has caught up: read the instance again. */
static void
on_drained(struct http_request *req, void *arg)
{
    struct api_px *px = arg;

    (void)req;
    px->paused = false;
    px->last_data_us = now_us();
    if (px->up) {
        hu_pause(px->up, 0);
    }
}

/* Forwards what the last read of the instance's stream brought, as one
 * chunk (the worker's events arrive a few per read); stops reading the
 * instance while the client is far behind. */
static void
up_flush(void *arg)
{
    struct api_px *px = arg;

    if (px->pending.len) {
        http_stream_write(px->req, px->pending.data, px->pending.len);
        buf_reset(&px->pending);
        px->last_data_us = now_us(); /* the idle timer checks it when it fires */
        api_inst_heard(px->inst);
    }
    if (!px->started) {
        return; /* a whole answer: nothing queued for the client yet */
    }
    size_t high = (size_t)px->srv->cfg->stream_buffer_bytes;
    size_t queued = http_req_output_pending(px->req);
    size_t covered = (size_t)px->held_stream - MAX_PENDING; /* of the client's queue */
    if (queued > covered && covered < high) {
        /* a slow client: reserve more of its queue, a step at a time */
        size_t want = (queued / QUEUE_STEP + 1) * QUEUE_STEP;
        if (want > high) {
            want = high;
        }
        if (budget_take((int64_t)(want - covered))) {
            px->held_stream += (int64_t)(want - covered);
            covered = want;
        }
    }
    if (covered < high) {
        high = covered; /* the budget has no more room: hold the stream back sooner */
    }
    if (px->up && !px->paused && queued > high) {
        px->paused = true;
        px->ever_paused = true;
        atomic_fetch_add(&px->model->stats->s.paused, 1);
        hu_pause(px->up, 1);
        http_req_on_drain(px->req, high / 4, on_drained, px);
    }
}

static void
up_data(void *arg, const char *p, size_t len)
{
    struct api_px *px = arg;

    if (px->started) {
        api_limit_stream_data(&px->lt, p, len);
        if (buf_append(&px->pending, p, len) != 0) {
            up_flush(px); /* over the gathering cap: forward what there is */
            http_stream_write(px->req, p, len);
        }
        return;
    }
    if (px->status / 100 != 2) {
        /* an error's text, for the message: what fits (the budget's
         * refusal only shortens it) */
        size_t room = px->resp.max - px->resp.len;
        if (resp_append(px, p, len < room ? len : room) == -1) {
            resp_reset(px);
        }
        return;
    }
    if (px->too_large) {
        return;
    }
    switch (resp_append(px, p, len)) {
    case 0:
        break;
    case -2:
        refuse_over_budget(px, "this answer");
        return;
    default:
        px->too_large = true;
        resp_reset(px); /* read to the end, held no longer */
        break;
    }
}

static const char *
result_text(enum hu_result r)
{
    switch (r) {
    case HU_CONNECT:
        return "connection refused";
    case HU_CONNECT_TIMEOUT:
        return "connect timed out";
    case HU_RESET:
        return "connection closed before an answer";
    case HU_BROKEN:
        return "connection closed mid-answer";
    case HU_PROTOCOL:
        return "the answer is not valid HTTP";
    default:
        return "ok";
    }
}

/* A transfer that failed at the connection level. */
static void
transfer_failed(struct api_px *px, enum hu_result res)
{
    char msg[640];
    const char *why = result_text(res);

    if (res == HU_CONNECT_TIMEOUT && !px->trial && api_inst_heard_lately(px->inst)) {
        /* overloaded, not dead (see the top): retried, not ejected */
        log_debug("request %s: connect to %s timed out while it answers others; retried",
                  http_req_id(px->req), px->inst->label);
        remember(px, 503, "upstream_unavailable", "is overloaded",
                 "connect timed out (its accept queue is full) while it answers other requests");
        px->again = true;
        attempt(px);
        return;
    }
    count_error(px, API_ERR_CONNECT);
    eject(px, why);
    if (px->started) {
        snprintf(msg, sizeof(msg), "instance %.150s failed mid-stream: %s", px->inst->label, why);
        stream_error(px, msg);
    } else if (res == HU_CONNECT || res == HU_CONNECT_TIMEOUT || res == HU_RESET) {
        /* nothing reached the client, and (HU_RESET) the worker answered
         * nothing: another instance may serve it */
        remember(px, 503, "upstream_unavailable", "is unreachable", why);
        attempt(px);
    } else {
        snprintf(msg, sizeof(msg), "instance %.150s: %s", px->inst->label, why);
        finish_error(px, 502, "server_error", "upstream_error", msg);
    }
}

static void
up_done(void *arg, enum hu_result res)
{
    struct api_px *px = arg;
    char msg[640];

    px->up = NULL; /* gone with this call */
    up_flush(px);
    end_attempt(px);
    if (res != HU_OK) {
        transfer_failed(px, res);
        return;
    }
    if (px->status / 100 == 2) {
        instance_ok(px);
        http_req_on_close(px->req, NULL, NULL);
        if (px->started) {
            http_stream_end(px->req);
        } else if (px->too_large) {
            http_reply_error(px->req, 502, "server_error", "upstream_too_large",
                             "the answer of instance %.150s exceeds --max_answer_bytes %lld",
                             px->inst->label, (long long)px->srv->cfg->max_answer_bytes);
        } else {
            char hdr[1024];
            added_header(px, now_us() - px->attempt_us, hdr, sizeof(hdr));
            api_limit_done(px->srv, &px->lt, px->resp.data, px->resp.len);
            reply_held(px, hdr);
        }
        px_free(px); /* a stream's tokens: api_limit_done there */
        return;
    }
    json_error_message(px->resp.data, px->resp.len, msg, sizeof(msg));
    if (px->status >= 500) {
        char what[32];
        count_error(px, API_ERR_UPSTREAM_5XX);
        snprintf(what, sizeof(what), "answered %d", px->status);
        eject(px, what);
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
    http_req_on_close(px->req, NULL, NULL);
    http_reply(px->req, px->status, px->ct, px->resp.data ? px->resp.data : "", px->resp.len, NULL);
    px_free(px);
}

/* A new connection to the instance finished its handshake: its accept
 * queue has room, so it is alive (see "Overload is not death" above). */
static void
up_connected(void *arg)
{
    api_inst_heard(((struct api_px *)arg)->inst);
}

static const struct hu_callbacks up_callbacks = {up_head, up_data, up_flush, up_done, up_connected};

/* No first byte in time, silence in a stream, or the whole request's
 * deadline. */
static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct api_px *px = arg;
    char msg[320];
    bool first = !px->got_header;
    bool total = now_us() >= px->deadline_us;
    int64_t ms = total   ? px->o.request_timeout_ms
                 : first ? px->o.first_byte_timeout_ms
                         : px->o.idle_timeout_ms;

    (void)fd;
    (void)what;
    if (px->started && !total && px->paused) {
        arm(px, px->o.idle_timeout_ms); /* waiting for the client, not the instance */
        return;
    }
    if (px->started && !total) {
        int64_t quiet_ms = (now_us() - px->last_data_us) / 1000;
        if (quiet_ms < px->o.idle_timeout_ms) {
            arm(px, px->o.idle_timeout_ms - quiet_ms); /* data came meanwhile */
            return;
        }
    }
    end_attempt(px);
    if (total && px->ever_paused) {
        /* this server held the instance back for a slow client: the time
         * is the client's, not a failure of the instance */
        atomic_fetch_add_explicit(&px->model->stats->s.errors[API_ERR_TIMEOUT], 1,
                                  memory_order_relaxed);
        log_info("request %s: the whole request took over --request_timeout_ms; the client read "
                 "slowly (instance %s not ejected)",
                 http_req_id(px->req), px->inst->label);
    } else {
        count_error(px, API_ERR_TIMEOUT);
        eject(px, total   ? "did not finish in time"
                  : first ? "no first byte in time"
                          : "stream went silent");
    }
    snprintf(msg, sizeof(msg), "instance %.150s %s %lld ms (%s)", px->inst->label,
             total   ? "did not finish within"
             : first ? "sent no first byte for"
                     : "sent nothing for",
             (long long)ms,
             total   ? "--request_timeout_ms"
             : first ? "--first_byte_timeout_ms"
                     : "--idle_timeout_ms");
    if (px->started) {
        stream_error(px, msg);
    } else {
        finish_error(px, 504, "server_error", "upstream_timeout", msg);
    }
}

static int
start_transfer(struct api_px *px)
{
    size_t len;
    const char *body = http_req_body(px->req, &len);

    if (px->alias) {
        body = px->alias->body;
        len = px->alias->len;
    }
    px->status = 0;
    px->got_header = false;
    px->too_large = false;
    resp_reset(px);
    px->resp.max = (size_t)px->srv->cfg->max_answer_bytes;
    atomic_fetch_add(&px->inst->rt.in_flight, 1);
    px->counted = true;
    px->attempt_us = now_us();
    px->up = hu_post(px->l->hu, (const struct sockaddr *)&px->inst->sa,
                     atomic_load_explicit(&px->inst->salen, memory_order_acquire), px->inst->label,
                     upstream_paths[px->kind], px->headers, body, len, &up_callbacks, px);
    if (!px->up) {
        return -1;
    }
    arm(px, px->o.first_byte_timeout_ms);
    return 0;
}

/* Tries the next instance, or answers when there is none to try. */
static void
attempt(struct api_px *px)
{
    for (;;) {
        bool trial = false;
        int i = -1;

        if (px->ntried < (size_t)px->o.max_attempts) {
            i = route_pick(&px->model->set, px->o.policy, px->tried, px->ntried, px->key,
                           px->keylen, util_mono_ms(), &trial);
        }
        if (i < 0 && px->again && px->reconnects < MAX_RECONNECTS) {
            /* no other instance: the alive one again, on a new connection */
            px->again = false;
            px->reconnects++;
            atomic_fetch_add(&px->model->stats->s.retries, 1);
            atomic_fetch_add_explicit(&px->inst->s.requests, 1, memory_order_relaxed);
            if (start_transfer(px) == 0) {
                return;
            }
            end_attempt(px);
            finish_error(px, 503, "server_error", "out_of_memory", "cannot start a transfer");
            return;
        }
        px->again = false;
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
        if (atomic_load_explicit(&px->inst->salen, memory_order_acquire) == 0) {
            /* its host name did not resolve (api_table.c) */
            count_error(px, API_ERR_CONNECT);
            remember(px, 503, "upstream_unavailable", "has no address", "unresolved host");
            eject(px, "its host name does not resolve");
            continue;
        }
        if (!api_addr_allowed(px->srv, (const struct sockaddr *)&px->inst->sa,
                              atomic_load_explicit(&px->inst->salen, memory_order_acquire))) {
            /* the table leaves such instances out: this is the last guard */
            log_warn("request %s: instance %s not connected to: %s", http_req_id(px->req),
                     px->inst->label, API_EXCLUDED_WHY);
            remember(px, 503, "address_not_allowed", "is not allowed", API_EXCLUDED_WHY);
            continue;
        }
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

/* A request for `name`, an alias of the settings: 1 with px->model the
 * first of its models that has a routable instance (else the first that
 * exists, so that the answer says why none is routable), px->alias set and
 * `root` taken; 0 when no alias has the name; -1 after answering (none of
 * its models exists as `type`, or no memory). */
static int
alias_start(struct api_px *px, const struct api_settings *s, struct http_request *req,
            struct api_table *t, const char *name, const char *type, cJSON *root)
{
    const struct api_alias *al = api_settings_alias(s, name);
    struct px_alias *a;
    struct api_model *first = NULL;
    size_t first_i = 0;

    if (!al) {
        return 0;
    }
    a = calloc(1, sizeof(*a));
    if (!a) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        return -1;
    }
    util_strlcpy(a->name, al->name, sizeof(a->name));
    for (size_t i = 0; i < al->nmodels && a->n < ALIAS_MAX; i++) {
        util_strlcpy(a->models[a->n++], al->models[i], sizeof(a->models[0]));
    }
    for (size_t i = 0; i < a->n; i++) {
        struct api_model *m = api_table_find(t, a->models[i], type);
        if (m && (!first || (first->set.n == 0 && m->set.n > 0))) {
            first = m;
            first_i = i;
        }
    }
    px->alias = a;
    a->root = root;
    if (!first || !alias_target(px, first, first_i)) {
        a->root = NULL; /* the caller still owns it */
        px->alias = NULL;
        free(a->body);
        free(a);
        return 0;
    }
    return 1;
}

/* An admitted request's first attempt - or its place in the wait queue,
 * behind the requests of its model that wait already (by priority). */
static void
begin(struct api_px *px)
{
    if (px->model->set.n > 0 && api_queue_waiting(px->srv, px->model->stats) && wait_start(px)) {
        return;
    }
    attempt(px);
}

/* A parked request's verdict under its key's limits (api_limit.c). */
static void
on_limit_verdict(struct api_limit_ticket *t, bool admitted)
{
    struct api_px *px = (struct api_px *)((char *)t - offsetof(struct api_px, lt));

    if (admitted) {
        begin(px);
        return;
    }
    http_req_on_close(px->req, NULL, NULL);
    api_limit_reply_refusal(px->req, t);
    px_free(px);
}

static void
handle(struct http_request *req, void *arg, enum px_kind kind)
{
    struct api_server *srv = arg;
    struct api_loop *l = api_loop_of(srv, req);
    const char *type = kind == PX_EMBEDDINGS ? "text2vec" : "llm";
    struct api_px *px = calloc(1, sizeof(*px));
    /* the settings, and the request's key among them, read once: held to
     * the end of this function (the key's fields are copied from there) */
    struct api_settings *s = api_settings_acquire(srv);
    const struct api_key *key = api_request_key(srv, s, req);
    cJSON *root = NULL;
    const char *name;
    int64_t max_tokens = 0;
    size_t body_len = 0;

    if (!px) {
        http_reply_error(req, 503, "server_error", "out_of_memory", "out of memory");
        api_settings_unref(s);
        return;
    }
    px->start_us = now_us();
    px->srv = srv; /* alias_target reads the settings through it */
    name = parse(req, &root, &px->stream, px->key, &px->keylen);
    if (!name || !api_check_key_model(srv, req, key, name)) {
        goto fail;
    }
    {
        const cJSON *mt = json_get(root, "max_tokens");
        if (!mt) {
            mt = json_get(root, "max_completion_tokens");
        }
        max_tokens = cJSON_IsNumber(mt) && mt->valuedouble > 0 ? (int64_t)mt->valuedouble : 0;
        (void)http_req_body(req, &body_len);
    }
    if (!l->table) {
        http_reply_error(req, 503, "server_error", "no_table",
                         "no instance table yet: no controller has answered since start-up");
        goto fail;
    }
    px->model = api_table_find(l->table, name, type);
    if (!px->model && !api_table_has_name(l->table, name)) {
        int a = alias_start(px, s, req, l->table, name, type, root);
        if (a < 0) {
            goto fail; /* answered */
        }
        if (a > 0) {
            root = NULL; /* the alias's now */
        }
    }
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
    if (!px->alias) {
        px->o = api_model_opts_in(srv, s, px->model->name);
    }
    px->deadline_us = px->start_us + px->o.request_timeout_ms * 1000; /* all attempts */
    if (strcasecmp(px->o.session_header, "X-Session-Id") != 0) {
        /* the model's own session header (its settings) */
        const char *sid = http_req_header(req, px->o.session_header);
        if (sid && *sid) {
            px->keylen = strnlen(sid, MAX_KEY - 1);
            memcpy(px->key, sid, px->keylen);
            px->key[px->keylen] = '\0';
        }
    }
    px->l = l;
    px->req = req;
    px->kind = kind;
    px->table = api_table_ref(l->table);
    atomic_fetch_add_explicit(&px->model->stats->s.requests, 1, memory_order_relaxed);
    buf_init(&px->resp, (size_t)srv->cfg->max_answer_bytes);
    buf_init(&px->pending, MAX_PENDING);
    evtimer_assign(&px->timer_ev, http_loop_base(l->loop), on_timer, px);
    px->timer = &px->timer_ev;
    evtimer_assign(&px->wait_ev, http_loop_base(l->loop), on_wait_timer, px);
    px->w.loop = http_loop_index(l->loop);
    px->w.ready = on_ready;
    px->w.priority = key ? key->priority : 0; /* its place in the queue */
    snprintf(px->headers, sizeof(px->headers),
             "Content-Type: application/json\r\nX-Request-Id: %.120s\r\n", http_req_id(req));
    px->next = l->active;
    if (l->active) {
        l->active->prev = px;
    }
    l->active = px;
    http_req_set_data(req, px);
    http_req_on_close(req, on_client_gone, px);
    px->lt.req = req;
    px->lt.resume = on_limit_verdict;
    px->lt.s_prompt = px->lt.s_completion = px->lt.s_total = -1;
    api_limit_reserve(&px->lt, body_len, max_tokens);
    enum api_limit_result verdict = api_limit_admit(srv, l, &px->lt, key);
    api_settings_unref(s); /* nothing below reads `key` */
    switch (verdict) {
    case API_LIMIT_OK:
        begin(px);
        break;
    case API_LIMIT_PARKED:
        break; /* on_limit_verdict */
    case API_LIMIT_REFUSED:
        http_req_on_close(req, NULL, NULL);
        api_limit_reply_refusal(req, &px->lt);
        px_free(px);
        break;
    }
    return;
fail:
    api_settings_unref(s);
    cJSON_Delete(root);
    if (px->alias) {
        cJSON_Delete(px->alias->root);
        free(px->alias->body);
        free(px->alias);
    }
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

void
api_proxy_drain(struct api_loop *l)
{
    struct api_px *next;

    for (struct api_px *px = l->active; px; px = next) {
        next = px->next;
        if (px->wait_since_us) {
            finish_error(px, 503, "server_error", "shutting_down",
                         "the apiserver is shutting down; retry");
        }
    }
}

int
api_loop_init(struct api_loop *l)
{
    l->hu = hu_pool_new(http_loop_base(l->loop), (int)l->srv->cfg->connect_timeout_ms, 256);
    if (!l->hu || api_queue_loop_start(l->srv, l) != 0) {
        return -1;
    }
    return 0;
}

void
api_loop_cleanup(struct api_loop *l)
{
    api_queue_loop_stop(l->srv, l);
    api_proxy_cancel_all(l);
    hu_pool_free(l->hu);
    l->hu = NULL;
}
