/* SPDX-License-Identifier: MIT
 *
 * api_probe.c - active probes: an instance whose worker keeps heartbeating
 * while its engine hangs is still "healthy" in the registry, and passive
 * checks (api_proxy.c) only notice it by failing a client's request. So
 * this server sends each routable instance a tiny generation of its own
 * on a schedule, and sooner on suspicion, and ejects the instance when the
 * probe fails; a probe that succeeds readmits it.
 *
 * DESIGN
 *
 * What a probe is. llm instances: POST /v1/chat/completions with one user
 * message "ping", max_tokens 1, temperature 0, not streamed; text2vec:
 * POST /v1/embeddings of the one word "ping". Other worker types (the
 * WorkerManager's "service" entries, anything unknown) are not probed.
 * Every probe carries "X-Roster-Probe: 1" and "X-Request-Id: probe-<n>".
 * Verdicts:
 *   ok            2xx whose JSON has a non-empty "choices" (llm) or
 *                 "data" (text2vec) array; readmits an instance that was
 *                 out when the probe was sent
 *   busy          429: at capacity is alive. No verdict (neither ejects nor
 *                 readmits: a worker whose engine hangs on its requests
 *                 also ends up at capacity, so 429 proves only the worker)
 *   rejected      another 4xx (the instance no longer serves the model, or
 *                 refuses this probe's body): no verdict
 *   connect       refused, reset, no connection within --connect_timeout_ms
 *                 (but, as in api_proxy.c, a connect timeout on an
 *                 instance heard from within the last second is a full
 *                 accept queue: counted busy)
 *   timeout       no whole answer within --probe_timeout_ms
 *   upstream_5xx  a 5xx answer
 *   malformed     not HTTP, not JSON, or without the expected array
 * The last four are failures: route_eject (api_route.c) takes the
 * instance out, last_error says why, and the first such ejection of an
 * instance in service adds the event "probe_failed".
 *
 * Who readmits. An instance ejected by a probe is held out for
 * --probe_interval_ms + --probe_timeout_ms + --eject_ms, and re-probed
 * every --probe_interval_ms; each failed re-probe extends the hold. So
 * while probes fail no client request is sent there as a half-open trial
 * (a trial on a hung engine costs its client --first_byte_timeout_ms and a
 * 504); the first probe that succeeds readmits it (event "readmitted").
 * Should probes stop (the instance left the table, probes disabled), the
 * hold runs out and api_route.c's trial decides as for any ejection.
 * Suspicion: an ejection this module did not make (a passive one: connect
 * error, first-byte timeout, 5xx) is noticed at the next tick and the
 * instance probed at once: success readmits it before --eject_ms is over,
 * failure turns the ejection into a probe hold.
 *
 * Schedule. A tick every TICK_MS walks the newest table's routable
 * instances (an atomic load or two each) and sends the probes that are
 * due: measured at 10,000 instances and a 10 s interval (about 100 probes
 * a tick, 2 cores shared), 2.5-8 ms per tick, sends included, or 3-5% of
 * a core. An instance first seen is due at a random point
 * of the next interval, so a table of 10,000 new instances spreads its
 * probes over one interval instead of sending them at once; after that
 * each probe is due one interval after the previous one was sent, less a
 * random tenth (jitter, so phases do not lock together; never more than
 * one interval apart, which bounds detection at interval + timeout + one
 * tick). One probe in flight per instance, at most MAX_IN_FLIGHT in all,
 * at most MAX_PER_TICK started per tick (2,000 probes a second: beyond
 * that, say 20,000 instances at a 10 s interval, the schedule stretches
 * instead of bursting).
 *
 * Why a thread of its own (with its own event base and http_upstream.h
 * pool) rather than the request loops: probes then never wait behind
 * client traffic on a busy loop (a loop running late would delay the
 * verdict and blur the bound above), the request loops' connection pools
 * and timers stay the clients', and there is one schedule per server
 * instead of one per loop to split and coordinate. The thread shares only
 * what the loops already share across threads: the table (a reference from
 * api_latest_table), the instances' atomics (ejection, trial, heard_ms)
 * and counters; the api_inst fields probe_* are this thread's alone. It
 * makes no blocking call: connections and answers go through the event
 * base.
 *
 * Several apiservers probe independently: each ejects and readmits in its
 * own routing only (as with passive ejection), and an instance gets one
 * probe per interval from each of them.
 *
 * Probes are neither client requests nor errors of a model: they touch no
 * request, error or latency counter of api.h's stats, and no in-flight
 * count (routing does not see them). Their own counters:
 * roster_api_probes_total{result}, roster_api_probe_ejections_total,
 * roster_api_probe_readmissions_total. An ejection by a probe also counts
 * in the instance's and model's ejections, like any other.
 */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#define LOG_MODULE "apiserver"
#include "buf.h"
#include "http_upstream.h"
#include "json_check.h"
#include "json_write.h"
#include "log.h"
#include "util.h"

#define TICK_MS        100
#define MAX_IN_FLIGHT  1000
#define MAX_PER_TICK   200
#define MAX_ANSWER     (256u * 1024) /* a probe's answer, held whole */
#define MAX_JSON_DEPTH 64

enum probe_result { PR_OK, PR_BUSY, PR_REJECTED, PR_CONNECT, PR_TIMEOUT, PR_5XX, PR_MALFORMED };
#define PR_RESULTS 7
static const char *const result_names[PR_RESULTS] = {
    "ok", "busy", "rejected", "connect", "timeout", "upstream_5xx", "malformed"};

struct probe;

struct api_probe {
    struct api_server *srv;
    struct event_base *base;
    struct hu_pool *hu;
    struct event *tick;
    pthread_t thread;
    bool started;
    struct probe *active; /* in flight */
    size_t nactive;
    uint64_t seq;
    _Atomic uint64_t results[PR_RESULTS];
    _Atomic uint64_t ejections, readmissions;
};

/* One probe in flight. */
struct probe {
    struct api_probe *p;
    struct api_inst *inst; /* a reference */
    bool llm;
    int64_t timeout_ms, interval_ms;
    int64_t sent_until; /* inst's ejected_until_ms when sent (0: in service) */
    struct hu_req *up;
    struct event timer_ev;
    int status;
    struct buf resp;
    bool too_large;
    char headers[128];
    char body[2 * API_NAME_MAX + 192];
    size_t len;
    struct probe *prev, *next;
};

/* ---- tunables ---------------------------------------------------------------- */

struct api_probe_opts
api_probe_opts(const struct api_server *srv, const struct api_model *m)
{
    /* the model's cluster settings over the flags (api_settings.c) */
    struct api_model_opts o = api_model_opts(srv, m->name);

    return (struct api_probe_opts){o.probe_interval_ms, o.probe_timeout_ms};
}

/* ---- verdicts ------------------------------------------------------------------ */

/* The next probe of inst after one sent at `sent`: one interval later,
 * less a random tenth of it. */
static int64_t
next_due(int64_t sent, int64_t interval_ms)
{
    return sent + interval_ms - (int64_t)util_random_below((uint64_t)interval_ms / 10 + 1);
}

static void
probe_failed(struct probe *pr, enum probe_result r, const char *why)
{
    struct api_probe *p = pr->p;
    struct api_inst *i = pr->inst;
    int64_t now = util_mono_ms();
    int64_t hold = pr->interval_ms + pr->timeout_ms + p->srv->cfg->eject_ms;
    char err[sizeof(i->last_error)];
    bool newly;

    (void)r;
    snprintf(err, sizeof(err), "probe: %s", why);
    newly = route_eject(&i->rt, now, hold);
    i->probe_seen_until = atomic_load(&i->rt.ejected_until_ms);
    pthread_mutex_lock(&i->err_mu);
    util_strlcpy(i->last_error, err, sizeof(i->last_error));
    pthread_mutex_unlock(&i->err_mu);
    if (newly) {
        atomic_fetch_add(&p->ejections, 1);
        atomic_fetch_add(&i->s.ejections, 1);
        atomic_fetch_add(&i->model->s.ejections, 1);
        api_event_add(p->srv, "probe_failed", i->model->model, i->host, i->port,
                      "%s; out until a probe succeeds", err);
    } else {
        log_debug("probe of %s (%s) failed again: %s", i->label, i->model->model, why);
    }
}

static void
probe_ok(struct probe *pr)
{
    struct api_probe *p = pr->p;
    struct api_inst *i = pr->inst;
    int64_t until = atomic_load(&i->rt.ejected_until_ms);

    /* Only an instance that was out when the probe left, and no more
     * since, comes back: an ejection since then (a request failed
     * meanwhile) is news the answer does not cover; the next tick probes
     * again (suspicion). */
    if (until != 0 && until == pr->sent_until) {
        route_success(&i->rt);
        i->probe_seen_until = 0;
        atomic_fetch_add(&p->readmissions, 1);
        api_event_add(p->srv, "readmitted", i->model->model, i->host, i->port, "a probe succeeded");
    }
}

/* Whether a 2xx answer is what a generation (or an embedding) looks like. */
static bool
well_formed(const struct probe *pr)
{
    cJSON *root = NULL;
    const cJSON *a;
    char err[128];
    bool ok;

    if (pr->too_large || json_parse(pr->resp.data ? pr->resp.data : "", pr->resp.len,
                                    MAX_JSON_DEPTH, &root, err, sizeof(err)) != 0) {
        return false;
    }
    a = json_get(root, pr->llm ? "choices" : "data");
    ok = cJSON_IsObject(root) && cJSON_IsArray(a) && cJSON_GetArraySize(a) > 0;
    cJSON_Delete(root);
    return ok;
}

/* The probe is over: count, judge, free. */
static void
probe_end(struct probe *pr, enum probe_result r, const char *why)
{
    struct api_probe *p = pr->p;

    if (pr->up) {
        hu_cancel(pr->up);
        pr->up = NULL;
    }
    evtimer_del(&pr->timer_ev);
    atomic_fetch_add_explicit(&p->results[r], 1, memory_order_relaxed);
    switch (r) {
    case PR_OK:
        probe_ok(pr);
        break;
    case PR_BUSY:
    case PR_REJECTED:
        log_debug("probe of %s (%s): %s (no verdict)", pr->inst->label, pr->inst->model->model,
                  why);
        break;
    default:
        probe_failed(pr, r, why);
        break;
    }
    pr->inst->probing = false;
    if (pr->prev) {
        pr->prev->next = pr->next;
    } else {
        p->active = pr->next;
    }
    if (pr->next) {
        pr->next->prev = pr->prev;
    }
    p->nactive--;
    buf_cleanup(&pr->resp);
    api_inst_unref(pr->inst);
    free(pr);
}

/* ---- the transfer ---------------------------------------------------------------- */

static void
up_head(void *arg, int status, const char *content_type)
{
    struct probe *pr = arg;

    (void)content_type;
    pr->status = status;
    api_inst_heard(pr->inst);
}

static void
up_data(void *arg, const char *d, size_t n)
{
    struct probe *pr = arg;

    if (!pr->too_large && buf_append(&pr->resp, d, n) != 0) {
        pr->too_large = true;
    }
}

static void
up_done(void *arg, enum hu_result res)
{
    struct probe *pr = arg;
    char why[160], msg[320];

    pr->up = NULL; /* gone with this call */
    switch (res) {
    case HU_OK:
        break;
    case HU_CONNECT_TIMEOUT:
        if (api_inst_heard_lately(pr->inst)) {
            probe_end(pr, PR_BUSY, "connect timed out while it answers others");
            return;
        }
        probe_end(pr, PR_CONNECT, "connect timed out");
        return;
    case HU_CONNECT:
        probe_end(pr, PR_CONNECT, "connection refused");
        return;
    case HU_RESET:
        probe_end(pr, PR_CONNECT, "connection closed before an answer");
        return;
    case HU_BROKEN:
        probe_end(pr, PR_MALFORMED, "connection closed mid-answer");
        return;
    case HU_PROTOCOL:
        probe_end(pr, PR_MALFORMED, "the answer is not valid HTTP");
        return;
    }
    if (pr->status / 100 == 2) {
        if (well_formed(pr)) {
            probe_end(pr, PR_OK, "ok");
        } else {
            probe_end(pr, PR_MALFORMED,
                      pr->llm ? "answered 2xx without a JSON \"choices\" array"
                              : "answered 2xx without a JSON \"data\" array");
        }
        return;
    }
    json_error_message(pr->resp.data, pr->resp.len, msg, sizeof(msg));
    snprintf(why, sizeof(why), "answered %d: %.120s", pr->status, msg);
    probe_end(pr, pr->status >= 500 ? PR_5XX : pr->status == 429 ? PR_BUSY : PR_REJECTED, why);
}

static const struct hu_callbacks probe_callbacks = {up_head, up_data, NULL, up_done, NULL};

static void
on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct probe *pr = arg;
    char why[96];

    (void)fd;
    (void)what;
    snprintf(why, sizeof(why), "no answer within %lld ms (--probe_timeout_ms)",
             (long long)pr->timeout_ms);
    probe_end(pr, PR_TIMEOUT, why);
}

/* The probe's body for model m: 0, or -1 when it does not fit. */
static int
probe_body(struct probe *pr, const struct api_model *m)
{
    struct buf b;
    struct jw w;
    int rc = -1;

    buf_init(&b, sizeof(pr->body) - 1);
    jw_init(&w, &b);
    jw_raw(&w, "{\"model\":");
    jw_str(&w, m->name);
    jw_raw(&w, pr->llm ? ",\"messages\":[{\"role\":\"user\",\"content\":\"ping\"}],"
                         "\"max_tokens\":1,\"temperature\":0,\"stream\":false}"
                       : ",\"input\":\"ping\"}");
    if (!w.err && b.len < sizeof(pr->body)) {
        memcpy(pr->body, b.data, b.len);
        pr->len = b.len;
        rc = 0;
    }
    buf_cleanup(&b);
    return rc;
}

/* Sends a probe to instance i of model m. */
static void
probe_send(struct api_probe *p, const struct api_model *m, struct api_inst *i,
           const struct api_probe_opts *o, int64_t now)
{
    struct probe *pr = calloc(1, sizeof(*pr));
    unsigned salen = atomic_load_explicit(&i->salen, memory_order_acquire);
    struct timeval tv = {(time_t)(o->timeout_ms / 1000),
                         (suseconds_t)((o->timeout_ms % 1000) * 1000)};

    i->probe_due_ms = next_due(now, o->interval_ms);
    if (!pr) {
        return;
    }
    pr->p = p;
    pr->llm = strcmp(m->type, "llm") == 0;
    pr->timeout_ms = o->timeout_ms;
    pr->interval_ms = o->interval_ms;
    if (probe_body(pr, m) != 0) {
        free(pr);
        return;
    }
    snprintf(pr->headers, sizeof(pr->headers),
             "Content-Type: application/json\r\nX-Roster-Probe: 1\r\nX-Request-Id: probe-%llu\r\n",
             (unsigned long long)++p->seq);
    buf_init(&pr->resp, MAX_ANSWER);
    atomic_fetch_add(&i->refs, 1);
    pr->inst = i;
    pr->sent_until = atomic_load(&i->rt.ejected_until_ms);
    i->probe_seen_until = pr->sent_until;
    evtimer_assign(&pr->timer_ev, p->base, on_timeout, pr);
    pr->up = hu_post(p->hu, (const struct sockaddr *)&i->sa, salen, i->label,
                     pr->llm ? "/v1/chat/completions" : "/v1/embeddings", pr->headers, pr->body,
                     pr->len, &probe_callbacks, pr);
    if (!pr->up) {
        buf_cleanup(&pr->resp);
        api_inst_unref(i);
        free(pr);
        return;
    }
    evtimer_add(&pr->timer_ev, &tv);
    i->probing = true;
    pr->next = p->active;
    if (p->active) {
        p->active->prev = pr;
    }
    p->active = pr;
    p->nactive++;
}

/* ---- the schedule --------------------------------------------------------------- */

static bool
probed_type(const char *type)
{
    return strcmp(type, "llm") == 0 || strcmp(type, "text2vec") == 0;
}

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct api_probe *p = arg;
    struct api_table *t = api_latest_table(p->srv);
    int64_t now = util_mono_ms();
    int started = 0;

    (void)fd;
    (void)what;
    for (size_t mi = 0; t && mi < t->nmodels; mi++) {
        const struct api_model *m = &t->models[mi];
        struct api_probe_opts o = api_probe_opts(p->srv, m);

        if (o.interval_ms <= 0 || !probed_type(m->type)) {
            continue;
        }
        for (size_t k = 0; k < m->set.n; k++) {
            struct api_inst *i = m->inst[k];
            int64_t until;
            unsigned salen;

            if (i->probing) {
                continue;
            }
            if (i->probe_due_ms == 0) { /* first seen: somewhere in the next interval */
                i->probe_due_ms = now + (int64_t)util_random_below((uint64_t)o.interval_ms);
            }
            until = atomic_load(&i->rt.ejected_until_ms);
            if (until != 0 && until != i->probe_seen_until) {
                i->probe_seen_until = until; /* ejected by a request: probe it now */
                i->probe_due_ms = now;
            }
            if (i->probe_due_ms > now || started >= MAX_PER_TICK || p->nactive >= MAX_IN_FLIGHT) {
                continue;
            }
            salen = atomic_load_explicit(&i->salen, memory_order_acquire);
            if (!api_addr_allowed(p->srv, (const struct sockaddr *)&i->sa, salen)) {
                continue; /* unresolved or excluded: requests do not go there either */
            }
            probe_send(p, m, i, &o, now);
            started++;
        }
    }
    api_table_unref(t);
}

static void *
probe_main(void *arg)
{
    struct api_probe *p = arg;

    event_base_dispatch(p->base);
    return NULL;
}

/* ---- life cycle ---------------------------------------------------------------- */

static void
probe_free(struct api_probe *p)
{
    if (!p) {
        return;
    }
    while (p->active) {
        struct probe *pr = p->active;
        p->active = pr->next;
        if (pr->up) {
            hu_cancel(pr->up);
        }
        evtimer_del(&pr->timer_ev);
        pr->inst->probing = false;
        buf_cleanup(&pr->resp);
        api_inst_unref(pr->inst);
        free(pr);
    }
    if (p->tick) {
        event_free(p->tick);
    }
    hu_pool_free(p->hu);
    if (p->base) {
        event_base_free(p->base);
    }
    free(p);
}

int
api_probe_start(struct api_server *srv, char *err, size_t errcap)
{
    struct api_probe *p;
    struct timeval tv = {0, TICK_MS * 1000};

    if (srv->cfg->probe_interval_ms <= 0) {
        return 0; /* disabled */
    }
    p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    p->srv = srv;
    p->base = event_base_new();
    p->hu = p->base ? hu_pool_new(p->base, (int)srv->cfg->connect_timeout_ms, 1) : NULL;
    p->tick = p->base ? event_new(p->base, -1, EV_PERSIST, on_tick, p) : NULL;
    if (!p->hu || !p->tick || event_add(p->tick, &tv) != 0) {
        snprintf(err, errcap, "cannot set up the probe thread");
        probe_free(p);
        return -1;
    }
    if (pthread_create(&p->thread, NULL, probe_main, p) != 0) {
        snprintf(err, errcap, "cannot start the probe thread");
        probe_free(p);
        return -1;
    }
    p->started = true;
    srv->probe = p;
    log_info("active probes every %lld ms (timeout %lld ms)",
             (long long)srv->cfg->probe_interval_ms, (long long)srv->cfg->probe_timeout_ms);
    return 0;
}

void
api_probe_stop(struct api_server *srv)
{
    struct api_probe *p = srv->probe;

    if (!p) {
        return;
    }
    srv->probe = NULL;
    if (p->started) {
        event_base_loopbreak(p->base); /* thread-safe: http_server_new enabled evthread */
        pthread_join(p->thread, NULL);
    }
    probe_free(p);
}

/* ---- metrics ------------------------------------------------------------------- */

int
api_probe_write_metrics(const struct api_server *srv, struct buf *b)
{
    const struct api_probe *p = srv->probe;
    char lab[64];
    int rc = 0;

    rc |= metrics_header(b, "roster_api_probes_total", "counter",
                         "Active probes sent to instances, by result (ok; busy and rejected: no "
                         "verdict; connect, timeout, upstream_5xx, malformed: ejected).");
    for (int r = 0; r < PR_RESULTS; r++) {
        lab[0] = '\0';
        rc |= metrics_label_add(lab, sizeof(lab), "result", result_names[r]);
        rc |= metrics_sample(b, "roster_api_probes_total", lab,
                             p ? (double)atomic_load(&p->results[r]) : 0);
    }
    rc |= metrics_header(b, "roster_api_probe_ejections_total", "counter",
                         "Instances in service ejected because a probe failed.");
    rc |= metrics_sample(b, "roster_api_probe_ejections_total", "",
                         p ? (double)atomic_load(&p->ejections) : 0);
    rc |= metrics_header(b, "roster_api_probe_readmissions_total", "counter",
                         "Ejected instances brought back because a probe succeeded.");
    rc |= metrics_sample(b, "roster_api_probe_readmissions_total", "",
                         p ? (double)atomic_load(&p->readmissions) : 0);
    return rc ? -1 : 0;
}
