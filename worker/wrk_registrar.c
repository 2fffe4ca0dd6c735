/* SPDX-License-Identifier: MIT
 *
 * wrk_registrar.c - the worker's control plane: one thread that keeps the
 * worker's instances registered through any live controller.
 *
 * Controller choice. The thread starts at a random controller of the list
 * (so a fleet of workers spreads over the controllers) and stays with one
 * that answers. A call that fails (refused, timed out, 5xx) moves it to the
 * next controller at once, within the same heartbeat period, so a dead
 * controller costs one call timeout, not a period. When every controller
 * failed, it waits with capped exponential backoff (100 ms doubling, capped
 * at the heartbeat interval, with ±50 % jitter: wrk_backoff_next and
 * wrk_backoff_wait; the value itself is capped, so it can neither overflow
 * nor wrap to 0 however long the controllers stay down) and tries again; it never
 * gives up and never exits the process (DB-GPT's worker exits when its first
 * registration fails).
 *
 * Calls. An instance not yet accepted is registered (POST
 * /api/controller/models, DB-GPT's body plus heartbeat_interval_secs, so
 * the registry gives it a lease of three intervals, and the load report);
 * afterwards each period sends a heartbeat with the same fields. A 404 or a
 * body other than `true` marks the instance for registration again. Every
 * call carries the cluster secret (X-Roster-Secret) and the control timeout.
 *
 * Stop. wrk_registrar_stop() ends the loop; with `deregister` it then sends
 * DELETE /api/controller/models?...&remove_from_registry=false for every
 * instance (the row stays, healthy = 0: out of the routable set at once).
 */
#include "wrk.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#define LOG_MODULE "worker"
#include "http_client.h"
#include "json_write.h"
#include "log.h"
#include "util.h"

struct wrk_registrar {
    struct wrk_registrar_config cfg;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;
    bool stopped;       /* the loop has ended (deregistration done or skipped) */
    _Atomic bool abort; /* calls in flight give up (wrk_registrar_abort) */
    bool accepted[WRK_MAX_MODELS + 1];
    /* wrk_registrar_set: serving instances heartbeat, the others are
     * deregistered once; dirty means "act on the change at once" */
    bool serving[WRK_MAX_MODELS + 1];
    double weight[WRK_MAX_MODELS + 1];
    bool dirty[WRK_MAX_MODELS + 1];
    bool kick;     /* wake up now: an instance changed */
    int cur;       /* controller in use */
    bool all_good; /* every instance accepted in the last period */
    bool warned;   /* "no controller answers" logged since the last success */
};

int
wrk_parse_controllers(const char *list, struct wrk_registrar_config *cfg, char *err, size_t errcap)
{
    int n = util_parse_urls(list, cfg->urls, WRK_MAX_CTLS, err, errcap);

    cfg->nurls = n > 0 ? (size_t)n : 0;
    for (size_t i = 0; i < cfg->nurls; i++) {
        util_url_redact(cfg->urls[i], cfg->shown[i], sizeof(cfg->shown[i]));
    }
    return n > 0 ? 0 : -1;
}

/* The JSON body of a register or heartbeat call for instance i. */
static int
instance_body(const struct wrk_registrar *r, size_t i, double weight, struct buf *b)
{
    const struct wrk_registrar_config *c = &r->cfg;
    struct jw w;

    jw_init(&w, b);
    jw_raw(&w, "{\"model_name\":");
    jw_str(&w, c->inst[i].model_name);
    jw_raw(&w, ",\"host\":");
    jw_str(&w, c->host);
    jw_raw(&w, ",\"port\":");
    jw_i64(&w, c->port);
    jw_raw(&w, ",\"weight\":");
    jw_double(&w, weight);
    jw_raw(&w, ",\"check_healthy\":true,\"healthy\":true,\"enabled\":true,"
               "\"prompt_template\":null,\"last_heartbeat\":null,"
               "\"remove_from_registry\":false,\"heartbeat_interval_secs\":");
    jw_double(&w, (double)c->interval_ms / 1000.0);
    jw_raw(&w, ",\"load\":{\"in_flight\":");
    jw_i64(&w, c->load ? atomic_load(&c->load->in_flight) : 0);
    jw_raw(&w, ",\"queue_length\":");
    jw_i64(&w, c->load ? atomic_load(&c->load->queue_length) : 0);
    jw_raw(&w, ",\"capacity\":");
    jw_i64(&w, c->load ? c->load->capacity : 0);
    jw_raw(&w, "}}");
    return w.err ? -1 : 0;
}

enum outcome { OK, REJECTED, FAILED };

/* One control-plane call to controller `ctl`. OK: 200 with `true`;
 * REJECTED: the controller answered but refused (4xx, or not `true`);
 * FAILED: no answer, a timeout or a 5xx (try another controller). */
static enum outcome
call(struct wrk_registrar *r, int ctl, const char *method, const char *path, const char *body,
     size_t len)
{
    char url[1024];
    char secret[600];
    const char *headers[3] = {"Content-Type: application/json", NULL, NULL};
    struct http_client_response resp;
    char err[256];
    enum outcome o;

    snprintf(url, sizeof(url), "%s%s", r->cfg.urls[ctl], path);
    if (r->cfg.secret) {
        snprintf(secret, sizeof(secret), "X-Roster-Secret: %s", r->cfg.secret);
        headers[1] = secret;
    }
    if (atomic_load(&r->abort) ||
        http_client_request_cancel(method, url, body, len, headers, (int)r->cfg.timeout_ms,
                                   64 * 1024, &r->abort, &resp, err, sizeof(err)) != 0) {
        log_debug("%s %s%s: %s", method, r->cfg.shown[ctl], path, err);
        return FAILED;
    }
    if (resp.status >= 500 || resp.status == 0) {
        log_debug("%s %s%s: HTTP %ld", method, r->cfg.shown[ctl], path, resp.status);
        o = FAILED;
    } else if (resp.status == 200 && resp.body.len >= 4 && memcmp(resp.body.data, "true", 4) == 0) {
        o = OK;
    } else {
        log_warn("%s %s%s: HTTP %ld: %.*s", method, r->cfg.shown[ctl], path, resp.status,
                 (int)(resp.body.len > 300 ? 300 : resp.body.len),
                 resp.body.data ? resp.body.data : "");
        o = REJECTED;
    }
    http_client_response_cleanup(&resp);
    return o;
}

static bool deregister_one(struct wrk_registrar *r, size_t i, int ctl);

/* Register or heartbeat every instance through one controller. Returns
 * FAILED as soon as a call fails (the caller moves on), else OK. */
static enum outcome
beat_all(struct wrk_registrar *r, int ctl)
{
    struct buf b;
    enum outcome worst = OK;

    buf_init(&b, 16 * 1024);
    for (size_t i = 0; i < r->cfg.ninst; i++) {
        pthread_mutex_lock(&r->mu);
        bool serving = r->serving[i], dirty = r->dirty[i];
        double weight = r->weight[i];
        r->dirty[i] = false;
        pthread_mutex_unlock(&r->mu);
        if (!serving) {
            if (dirty) {
                (void)deregister_one(r, i, ctl);
            }
            r->accepted[i] = false;
            continue;
        }
        bool reg = !r->accepted[i] || dirty; /* a new weight goes with a registration */
        buf_reset(&b);
        if (instance_body(r, i, weight, &b) != 0) {
            continue;
        }
        enum outcome o =
            call(r, ctl, "POST", reg ? "/api/controller/models" : "/api/controller/heartbeat",
                 b.data, b.len);
        if (o == FAILED) {
            worst = FAILED;
            break;
        }
        if (o == OK && reg) {
            log_info("registered %s at %s:%d through %s", r->cfg.inst[i].model_name, r->cfg.host,
                     r->cfg.port, r->cfg.shown[ctl]);
        }
        r->accepted[i] = o == OK; /* refused: register again next time */
        if (o == REJECTED) {
            worst = REJECTED;
        }
    }
    buf_cleanup(&b);
    return worst;
}

/* Waits ms or until stopped; returns true when stopped. Called with mu held. */
static bool
wait_ms(struct wrk_registrar *r, int64_t ms)
{
    struct timespec ts;

    util_deadline_us(ms * 1000, &ts);
    while (!r->stop && !r->kick) {
        if (pthread_cond_timedwait(&r->cond, &r->mu, &ts) == ETIMEDOUT) {
            break;
        }
    }
    r->kick = false;
    return r->stop;
}

int64_t
wrk_backoff_next(int64_t backoff, int64_t cap)
{
    if (cap < 1) {
        cap = 1;
    }
    if (backoff < 1) {
        backoff = 1;
    }
    /* compared before doubling, so the value never overflows */
    return backoff > cap / 2 ? cap : backoff * 2;
}

int64_t
wrk_backoff_wait(int64_t backoff, uint64_t r)
{
    int64_t ms = backoff < 1 ? 1 : backoff > INT64_MAX / 2 ? INT64_MAX / 2 : backoff;

    /* uniform in [ms/2, 3ms/2) */
    return ms / 2 + (int64_t)(r % (uint64_t)ms);
}

static void *
registrar_main(void *arg)
{
    struct wrk_registrar *r = arg;
    int64_t backoff = WRK_BACKOFF_MIN_MS;

    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        int start = r->cur;
        enum outcome o = FAILED;
        int64_t t0 = util_mono_ms();

        pthread_mutex_unlock(&r->mu);
        for (size_t k = 0; k < r->cfg.nurls; k++) {
            int ctl = (int)((size_t)(start + (int)k) % r->cfg.nurls);
            o = beat_all(r, ctl);
            if (o != FAILED) {
                if (ctl != r->cur || r->warned) {
                    log_info("using controller %s", r->cfg.shown[ctl]);
                }
                pthread_mutex_lock(&r->mu);
                r->cur = ctl;
                r->warned = false;
                pthread_mutex_unlock(&r->mu);
                break;
            }
        }
        pthread_mutex_lock(&r->mu);
        if (o == FAILED) {
            r->all_good = false;
            if (!r->warned) {
                log_warn("no controller of %zu answers; retrying with backoff", r->cfg.nurls);
                r->warned = true;
            }
            /* once the controllers are lost, treat every instance as new */
            memset(r->accepted, 0, sizeof(r->accepted));
            int64_t cap = r->cfg.interval_ms;
            if (wait_ms(r, wrk_backoff_wait(backoff < cap ? backoff : cap,
                                            util_random_below(UINT64_MAX)))) {
                break;
            }
            backoff = wrk_backoff_next(backoff, r->cfg.interval_ms);
            continue;
        }
        backoff = WRK_BACKOFF_MIN_MS;
        r->all_good = o == OK;
        if (o == REJECTED) {
            /* a refusal (a bad secret, a full registry): retry after a period */
            if (wait_ms(r, r->cfg.interval_ms)) {
                break;
            }
            continue;
        }
        int64_t spent = util_mono_ms() - t0;
        if (wait_ms(r, r->cfg.interval_ms > spent ? r->cfg.interval_ms - spent : 0)) {
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* Marks instance i unhealthy (remove_from_registry=false) through
 * controller `ctl`, or any other that answers. Returns true when one did. */
static bool
deregister_one(struct wrk_registrar *r, size_t i, int ctl)
{
    char path[1024];
    char *m, *h;
    bool done = false;
    CURL *esc = curl_easy_init();

    if (!esc) {
        return false;
    }
    h = curl_easy_escape(esc, r->cfg.host, 0);
    m = curl_easy_escape(esc, r->cfg.inst[i].model_name, 0);
    if (h && m) {
        snprintf(path, sizeof(path),
                 "/api/controller/models?model_name=%s&host=%s&port=%d&remove_from_registry=false",
                 m, h, r->cfg.port);
        for (size_t k = 0; k < r->cfg.nurls && !done; k++) {
            done = call(r, (int)((size_t)(ctl + (int)k) % r->cfg.nurls), "DELETE", path, NULL, 0) !=
                   FAILED;
        }
    }
    curl_free(m);
    curl_free(h);
    curl_easy_cleanup(esc);
    if (done) {
        log_info("deregistered %s", r->cfg.inst[i].model_name);
    } else {
        log_warn("could not deregister %s: no controller answers (its lease ends it)",
                 r->cfg.inst[i].model_name);
    }
    return done;
}

static void
deregister_all(struct wrk_registrar *r)
{
    for (size_t i = 0; i < r->cfg.ninst; i++) {
        (void)deregister_one(r, i, r->cur);
    }
}

int
wrk_registrar_start(const struct wrk_registrar_config *cfg, struct wrk_registrar **out)
{
    struct wrk_registrar *r = calloc(1, sizeof(*r));

    *out = NULL;
    if (!r) {
        return -1;
    }
    r->cfg = *cfg;
    r->cur = (int)util_random_below(cfg->nurls);
    for (size_t i = 0; i < cfg->ninst; i++) {
        r->serving[i] = !cfg->inst[i].held;
        r->weight[i] = cfg->inst[i].weight;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cond, NULL);
    if (pthread_create(&r->thread, NULL, registrar_main, r) != 0) {
        wrk_registrar_free(r);
        return -1;
    }
    r->started = true;
    *out = r;
    return 0;
}

void
wrk_registrar_set(struct wrk_registrar *r, size_t i, bool serving, double weight)
{
    if (!r || i >= r->cfg.ninst) {
        return;
    }
    pthread_mutex_lock(&r->mu);
    r->serving[i] = serving;
    r->weight[i] = weight;
    r->dirty[i] = true;
    r->kick = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->mu);
}

bool
wrk_registrar_registered(struct wrk_registrar *r)
{
    bool ok;

    pthread_mutex_lock(&r->mu);
    ok = r->all_good;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

int
wrk_registrar_current(struct wrk_registrar *r)
{
    int c;

    pthread_mutex_lock(&r->mu);
    c = r->warned ? -1 : r->cur;
    pthread_mutex_unlock(&r->mu);
    return c;
}

void
wrk_registrar_stop(struct wrk_registrar *r, bool deregister)
{
    if (!r || r->stopped) {
        return;
    }
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->mu);
    if (r->started) {
        pthread_join(r->thread, NULL);
        r->started = false;
    }
    if (deregister) {
        deregister_all(r);
    }
    r->stopped = true;
}

void
wrk_registrar_abort(struct wrk_registrar *r)
{
    if (r) {
        atomic_store(&r->abort, true);
    }
}

void
wrk_registrar_free(struct wrk_registrar *r)
{
    if (!r) {
        return;
    }
    wrk_registrar_stop(r, false);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
