/* SPDX-License-Identifier: MIT
 *
 * api_limit.c - API keys' limits on requests and tokens per minute,
 * enforced cluster-wide (docs/settings.md "Limits").
 *
 * DESIGN: leases from a shared counter.
 * The controllers keep, per key and minute window, the requests and tokens
 * handed out (table roster_key_usage; POST /api/roster/keys/usage). An
 * apiserver admits a request of a limited key from units it holds (a
 * lease); when it holds none, the request waits (parked on its loop) while
 * this module's thread asks a controller for more, for every key that
 * needs some, in one call. The controller grants at most what keeps the
 * window's total within the limit, so across every apiserver the requests
 * admitted in a window never exceed it: no over-admission (epsilon 0 for
 * requests). Units a node holds but does not use would be lost to the
 * others (under-admission), so leases are small - sized to a quarter
 * second of the key's recent rate here, and never above an eighth of what
 * the window has left - and units idle for LEASE_IDLE_MS go back. A key
 * in use asks for its next lease when it holds half of one (the low
 * water), so that under steady traffic requests find units instead of
 * waiting a round trip for each lease. A
 * request that finds the window spent gets 429 with Retry-After (the
 * seconds to the window's end) and OpenAI's x-ratelimit-* headers.
 *
 * Tokens: a request reserves its estimate (prompt bytes / 4 + max_tokens,
 * or DEFAULT_COMPLETION when it names none); a whole answer's usage
 * (total_tokens) corrects the reservation: what was over-reserved goes
 * back to the lease, what was under is taken from it (it may go below
 * zero: the next lease pays it back). So tokens can exceed the limit by
 * the under-estimates of the requests in flight (their completions beyond
 * max_tokens, which workers do not produce). A request that ends without
 * usage (a stream that asked for none, a failure, a client gone) is
 * charged its prompt estimate and a token per content chunk it passed.
 *
 * When no controller answers, a limited key's requests are admitted
 * (availability first; counted in roster_api_key_limit_unchecked_total and
 * logged): limits are enforced again with the next answer. So are the
 * requests waiting when the controller does not know the key yet (its
 * settings trail this apiserver's by up to a poll period): a parked
 * request never waits for a lease that cannot come.
 *
 * Threads: loops admit and park under `mu` (held for a few instructions);
 * the limiter thread makes the blocking controller calls without holding
 * it (one kept-alive connection per controller) and wakes the loops with
 * http_loop_post.
 */
#define _GNU_SOURCE 1 /* memmem */
#include "api.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#define LOG_MODULE "apiserver"
#include "buf.h"
#include "json_write.h"
#include "log.h"
#include "util.h"

#define LEASE_IDLE_MS      500  /* units unused this long go back to the counter */
#define PASS_MS            100  /* the thread's period when nothing wakes it */
#define LEASE_MAX          1000 /* requests per lease */
#define RATE_MIN_MS        100  /* the shortest time a rate is read over */
#define DEFAULT_COMPLETION 256  /* tokens reserved for a request without max_tokens */
#define MAX_ANSWER         (1024 * 1024)

struct lim_key {
    char name[65];
    int64_t window;     /* the controllers' window the units belong to (-1: none) */
    int64_t window_end; /* monotonic ms */
    int64_t have_r, have_t;
    int64_t need_r, need_t;                   /* of the parked requests */
    int64_t asked_r;                          /* in the call under way */
    bool exhausted;                           /* the window is spent: refuse until it ends */
    bool unchecked;                           /* no controller answered: admit */
    int64_t limit_r, limit_t, used_r, used_t; /* the cluster's, as of the last answer */
    int64_t last_use;                         /* monotonic ms */
    int64_t sec_start, sec_n, rate;           /* admissions per second (the last whole one) */
    int64_t avg_tokens;                       /* running estimate per request */
    bool refill; /* at the low water: the thread was woken for the next lease */
    struct lim_key *next;
};

struct api_limiter {
    struct api_server *srv;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t thread;
    bool started;
    bool stop;
    bool wake;
    struct lim_key *keys;
    bool warned;              /* a failed call was logged (until one succeeds) */
    CURL *curl[API_MAX_CTLS]; /* the thread's, per controller (kept alive) */
};

static struct lim_key *
key_get(struct api_limiter *lm, const char *name)
{
    struct lim_key *k;

    for (k = lm->keys; k && strcmp(k->name, name) != 0; k = k->next) {
    }
    if (!k && (k = calloc(1, sizeof(*k)))) {
        util_strlcpy(k->name, name, sizeof(k->name));
        k->window = -1;
        k->next = lm->keys;
        lm->keys = k;
    }
    return k;
}

/* The window ended: the units held are worth nothing now. */
static void
roll(struct lim_key *k, int64_t now)
{
    if (k->window >= 0 && now >= k->window_end) {
        k->window = -1;
        k->have_r = k->have_t = 0;
        k->exhausted = false;
    }
}

static void
note_use(struct lim_key *k, int64_t now)
{
    k->last_use = now;
    if (now - k->sec_start >= 1000) {
        k->rate = now - k->sec_start < 2000 ? k->sec_n : 0;
        k->sec_start = now;
        k->sec_n = 0;
    }
    k->sec_n++;
}

/* The units of a lease: a quarter second of the key's recent rate, never
 * above an eighth of what its window has left, 1 to LEASE_MAX. The rate
 * is the last whole second's, or the current second's so far when higher,
 * read over RATE_MIN_MS at least (a burst after a quiet spell grows its
 * leases with its first requests, not after a second of leases of one
 * unit). */
static int64_t
lease_size(const struct lim_key *k, int64_t now)
{
    int64_t el = now - k->sec_start;
    int64_t cur = el < 1000 ? k->sec_n * 1000 / (el > RATE_MIN_MS ? el : RATE_MIN_MS) : 0;
    int64_t lease = (cur > k->rate ? cur : k->rate) / 4;

    if (k->limit_r > 0) {
        int64_t left = k->limit_r - k->used_r;
        lease = lease > left / 8 ? left / 8 : lease;
    }
    return lease < 1 ? 1 : lease > LEASE_MAX ? LEASE_MAX : lease;
}

/* A key in use, with units of the current window, that holds half a lease
 * or less: time to ask for the next one. */
static bool
low_water(const struct lim_key *k, int64_t now)
{
    int64_t half = lease_size(k, now) / 2;

    if (k->window < 0 || k->exhausted || k->unchecked || now - k->last_use > LEASE_IDLE_MS) {
        return false;
    }
    return (k->limit_r > 0 && k->have_r <= half) ||
           (k->limit_t > 0 && k->have_t <= half * k->avg_tokens);
}

/* Takes a request's units if held. */
static bool
take(struct lim_key *k, const struct api_key *key, int64_t tokens, int64_t now)
{
    if (k->unchecked ||
        ((key->rpm == 0 || k->have_r > 0) && (key->tpm == 0 || k->have_t >= tokens))) {
        if (key->rpm > 0 && !k->unchecked) {
            k->have_r--;
        }
        if (key->tpm > 0 && !k->unchecked) {
            k->have_t -= tokens;
        }
        note_use(k, now);
        return true;
    }
    return false;
}

static void
unpark(struct api_loop *l, struct api_limit_ticket *t)
{
    if (t->prev) {
        t->prev->next = t->next;
    } else {
        l->parked = t->next;
    }
    if (t->next) {
        t->next->prev = t->prev;
    }
    t->prev = t->next = NULL;
    t->parked = false;
}

/* The x-ratelimit-* and Retry-After lines of an answer. */
static void
headers_of(const struct lim_key *k, const struct api_key *key, int64_t now, bool retry, char *out,
           size_t cap)
{
    int64_t reset_ms = k->window >= 0 && k->window_end > now ? k->window_end - now : 60000;
    int64_t reset_s = (reset_ms + 999) / 1000;
    size_t n = 0;

    out[0] = '\0';
    if (key->rpm > 0) {
        int64_t left = key->rpm - k->used_r + k->have_r;
        n += (size_t)snprintf(out + n, cap - n,
                              "x-ratelimit-limit-requests: %lld\r\n"
                              "x-ratelimit-remaining-requests: %lld\r\n"
                              "x-ratelimit-reset-requests: %llds\r\n",
                              (long long)key->rpm, (long long)(left > 0 ? left : 0),
                              (long long)reset_s);
    }
    if (key->tpm > 0 && n < cap) {
        int64_t left = key->tpm - k->used_t + k->have_t;
        n += (size_t)snprintf(out + n, cap - n,
                              "x-ratelimit-limit-tokens: %lld\r\n"
                              "x-ratelimit-remaining-tokens: %lld\r\n"
                              "x-ratelimit-reset-tokens: %llds\r\n",
                              (long long)key->tpm, (long long)(left > 0 ? left : 0),
                              (long long)reset_s);
    }
    if (retry && n < cap) {
        snprintf(out + n, cap - n, "Retry-After: %lld\r\n", (long long)reset_s);
    }
}

/* The 429 of a request refused (OpenAI's shape and headers), kept in the
 * ticket until api_limit_reply_refusal sends it. */
static void
refusal_make(struct api_server *srv, struct api_limit_ticket *t, const struct lim_key *k,
             const struct api_key *key)
{
    bool req_limit = key->rpm > 0 && k->have_r <= 0;
    int64_t now = util_mono_ms();
    int64_t reset_s = k->window_end > now ? (k->window_end - now + 999) / 1000 : 60;
    struct api_kstats *ks = api_kstats_get(srv, key->name);

    if (ks) {
        atomic_fetch_add(&ks->rejected[API_KEY_RATE], 1);
    }
    t->refusal = malloc(sizeof(*t->refusal));
    if (!t->refusal) {
        return; /* api_limit_reply_refusal answers a plain 429 */
    }
    headers_of(k, key, now, true, t->refusal->headers, sizeof(t->refusal->headers));
    snprintf(t->refusal->body, sizeof(t->refusal->body),
             "{\"error\":{\"message\":\"Rate limit reached for the API key '%s' on %s per "
             "minute: limit %lld, requested %lld. Please try again in %llds.\",\"type\":\"%s\","
             "\"param\":null,\"code\":\"rate_limit_exceeded\"}}",
             key->name, req_limit ? "requests" : "tokens",
             (long long)(req_limit ? key->rpm : key->tpm), (long long)(req_limit ? 1 : t->tokens),
             (long long)reset_s, req_limit ? "requests" : "tokens");
}

void
api_limit_reply_refusal(struct http_request *req, struct api_limit_ticket *t)
{
    if (t->refusal) {
        http_reply(req, 429, "application/json", t->refusal->body, strlen(t->refusal->body),
                   t->refusal->headers);
        free(t->refusal);
        t->refusal = NULL;
    } else {
        http_reply_error(req, 429, "requests", "rate_limit_exceeded",
                         "Rate limit reached for the API key '%s'", t->key);
    }
}

void
api_limit_reserve(struct api_limit_ticket *t, size_t body_len, int64_t max_tokens)
{
    t->prompt_est = (int64_t)(body_len / 4);
    t->tokens = t->prompt_est + (max_tokens > 0 ? max_tokens : DEFAULT_COMPLETION);
}

enum api_limit_result
api_limit_admit(struct api_server *srv, struct api_loop *l, struct api_limit_ticket *t,
                const struct api_key *key)
{
    struct api_limiter *lm = srv->limiter;
    struct lim_key *k;
    int64_t now = util_mono_ms();
    enum api_limit_result r = API_LIMIT_OK;

    if (!lm || !key) {
        return API_LIMIT_OK;
    }
    util_strlcpy(t->key, key->name, sizeof(t->key)); /* its usage is counted */
    if (key->rpm == 0 && key->tpm == 0) {
        t->tokens = 0; /* nothing reserved, nothing to correct */
        t->admitted = true;
        return API_LIMIT_OK;
    }
    if (key->tpm == 0) {
        t->tokens = 0;
    }
    pthread_mutex_lock(&lm->mu);
    k = key_get(lm, key->name);
    if (!k) {
        r = API_LIMIT_OK; /* out of memory: admit */
    } else {
        roll(k, now);
        if (k->avg_tokens == 0) {
            k->avg_tokens = t->tokens;
        }
        k->avg_tokens = (k->avg_tokens * 7 + t->tokens) / 8;
        if (take(k, key, t->tokens, now)) {
            t->window = k->window;
            t->admitted = true;
            headers_of(k, key, now, false, t->headers, sizeof(t->headers));
            if (!k->refill && low_water(k, now)) {
                k->refill = true; /* cleared once the lease asked for is in */
                lm->wake = true;
                pthread_cond_signal(&lm->cond);
            }
        } else if (k->exhausted) {
            r = API_LIMIT_REFUSED;
            refusal_make(srv, t, k, key);
        } else {
            k->need_r++;
            k->need_t += t->tokens;
            atomic_fetch_add_explicit(&srv->limit_waits, 1, memory_order_relaxed);
            t->parked = true;
            t->next = l->parked;
            if (l->parked) {
                l->parked->prev = t;
            }
            l->parked = t;
            lm->wake = true;
            pthread_cond_signal(&lm->cond);
            r = API_LIMIT_PARKED;
        }
    }
    pthread_mutex_unlock(&lm->mu);
    return r;
}

void
api_limit_cancel(struct api_server *srv, struct api_loop *l, struct api_limit_ticket *t)
{
    struct api_limiter *lm = srv->limiter;
    struct lim_key *k;

    if (!lm || !t->parked) {
        return;
    }
    pthread_mutex_lock(&lm->mu);
    unpark(l, t);
    k = key_get(lm, t->key);
    if (k) {
        k->need_r = k->need_r > 0 ? k->need_r - 1 : 0;
        k->need_t = k->need_t > t->tokens ? k->need_t - t->tokens : 0;
    }
    pthread_mutex_unlock(&lm->mu);
}

/* A numeric field's value in a JSON text: the first "field" (-1: none). */
static int64_t
scan_number(const char *p, size_t len, const char *field)
{
    char pat[40]; /* "field", quotes included */
    size_t fl = strlen(field);
    const char *q;
    size_t j;
    int64_t v = 0;
    bool any = false;

    if (fl + 2 > sizeof(pat)) {
        return -1;
    }
    pat[0] = '"';
    memcpy(pat + 1, field, fl);
    pat[fl + 1] = '"';
    if (!(q = memmem(p, len, pat, fl + 2))) {
        return -1;
    }
    j = (size_t)(q - p) + fl + 2;
    while (j < len && (p[j] == ' ' || p[j] == ':')) {
        j++;
    }
    while (j < len && p[j] >= '0' && p[j] <= '9' && v < INT64_C(1000000000000)) {
        v = v * 10 + (p[j++] - '0');
        any = true;
    }
    return any ? v : -1;
}

void
api_limit_done(struct api_server *srv, struct api_limit_ticket *t, const char *answer, size_t len)
{
    struct api_limiter *lm = srv->limiter;
    int64_t prompt = -1, completion = -1, total = -1;
    struct api_kstats *ks;

    if (!t->admitted || !t->key[0]) {
        return;
    }
    if (answer && len > 0 && len <= MAX_ANSWER) {
        prompt = scan_number(answer, len, "prompt_tokens");
        completion = scan_number(answer, len, "completion_tokens");
        total = scan_number(answer, len, "total_tokens");
    } else if (!answer && t->s_total >= 0) {
        prompt = t->s_prompt; /* a stream's usage chunk */
        completion = t->s_completion;
        total = t->s_total;
    } else if (!answer) {
        /* no usage: a stream that asked for none, or a request that
         * failed or lost its client. A token per content chunk passed and
         * the prompt as estimated (keeping the reservation would charge
         * the key for max_tokens never generated) */
        completion = t->s_chunks;
        total = t->prompt_est + t->s_chunks;
    }
    ks = api_kstats_get(srv, t->key);
    if (ks) {
        atomic_fetch_add(&ks->prompt_tokens, (uint64_t)(prompt > 0 ? prompt : 0));
        atomic_fetch_add(&ks->completion_tokens, (uint64_t)(completion > 0 ? completion : 0));
    }
    if (lm && t->tokens > 0 && total >= 0) {
        pthread_mutex_lock(&lm->mu);
        struct lim_key *k = key_get(lm, t->key);
        if (k && !k->unchecked && k->window == t->window) {
            k->have_t += t->tokens - total; /* the reservation corrected */
        }
        pthread_mutex_unlock(&lm->mu);
    }
    t->admitted = false;
}

void
api_limit_stream_data(struct api_limit_ticket *t, const char *p, size_t len)
{
    int64_t v;

    if (!t->key[0]) {
        return;
    }
    for (const char *q = p; (q = memmem(q, len - (size_t)(q - p), "\"content\":\"", 11)); q += 11) {
        t->s_chunks += q[11] != '"'; /* an empty content is no token */
    }
    if ((v = scan_number(p, len, "total_tokens")) >= 0) {
        t->s_total = v;
        t->s_prompt = scan_number(p, len, "prompt_tokens");
        t->s_completion = scan_number(p, len, "completion_tokens");
    }
}

/* ---- waking parked requests (loop thread) ------------------------------------------ */

static void
on_wake(struct http_task *task)
{
    struct api_loop *l = (struct api_loop *)((char *)task - offsetof(struct api_loop, limit_task));
    struct api_server *srv = l->srv;
    struct api_limiter *lm = srv->limiter;
    struct api_limit_ticket *t, *next;
    struct api_settings *s = api_settings_acquire(srv);

    atomic_store(&l->limit_posted, false);
    /* oldest first: the list is newest first, so walk from its end */
    for (t = l->parked; t && t->next; t = t->next) {
    }
    for (; t; t = next) {
        const struct api_key *key = NULL;
        struct lim_key *k;
        int64_t now = util_mono_ms();
        int verdict = 0; /* 0: still waiting, 1: admitted, 2: refused, 3: no longer limited */

        next = t->prev;
        for (size_t i = 0; s && i < s->nkeys; i++) {
            if (strcmp(s->keys[i].name, t->key) == 0) {
                key = &s->keys[i];
            }
        }
        pthread_mutex_lock(&lm->mu);
        k = key_get(lm, t->key);
        if (!key || !k || (key->rpm == 0 && key->tpm == 0)) {
            verdict = 3;
        } else {
            roll(k, now);
            if (take(k, key, t->tokens, now)) {
                verdict = 1;
                t->window = k->window;
                headers_of(k, key, now, false, t->headers, sizeof(t->headers));
            } else if (k->exhausted) {
                verdict = 2;
                refusal_make(srv, t, k, key);
            }
        }
        if (verdict != 0) {
            unpark(l, t);
            if (k) {
                k->need_r = k->need_r > 0 ? k->need_r - 1 : 0;
                k->need_t = k->need_t > t->tokens ? k->need_t - t->tokens : 0;
            }
        } else {
            lm->wake = true; /* ask again */
            pthread_cond_signal(&lm->cond);
        }
        pthread_mutex_unlock(&lm->mu);
        if (verdict == 3) {
            t->tokens = 0; /* no longer limited: nothing was reserved */
        }
        if (verdict != 0) {
            t->admitted = verdict != 2;
            t->resume(t, verdict != 2); /* refused: it answers t->refusal */
        }
    }
    api_settings_unref(s);
}

static void
wake_loops(struct api_server *srv)
{
    for (int i = 0; srv->loops && i < srv->nloops; i++) {
        struct api_loop *l = &srv->loops[i];
        bool expected = false;
        if (atomic_compare_exchange_strong(&l->limit_posted, &expected, true)) {
            l->limit_task.fn = on_wake;
            http_loop_post(l->loop, &l->limit_task);
        }
    }
}

/* ---- the limiter thread ---------------------------------------------------------------- */

static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
    return buf_append(arg, p, size * n) == 0 ? size * n : 0;
}

/* POSTs `body` to the controllers in the watcher's order; the answer in
 * *out. 0 or -1 with err. Limiter thread: its handles keep a connection to
 * each controller alive between calls. */
static int
call_controllers(struct api_limiter *lm, const char *body, struct buf *out, char *err,
                 size_t errcap)
{
    struct api_server *srv = lm->srv;
    size_t order[API_MAX_CTLS];
    size_t n = api_controller_order(srv, order);
    char secret[600];
    const char *sh = api_secret_header(srv, secret, sizeof(secret));
    int rc = -1;

    for (size_t i = 0; i < n && rc != 0; i++) {
        CURL *h = lm->curl[order[i]] ? lm->curl[order[i]] : curl_easy_init();
        struct curl_slist *hl = curl_slist_append(NULL, "Content-Type: application/json");
        char url[700];
        long status = 0;
        CURLcode cc;

        if (sh && hl) {
            struct curl_slist *x = curl_slist_append(hl, sh);
            hl = x ? x : hl;
        }
        if (!h) {
            curl_slist_free_all(hl);
            snprintf(err, errcap, "cannot create a curl handle");
            break;
        }
        buf_reset(out);
        snprintf(url, sizeof(url), "%s/api/roster/keys/usage", srv->ctl[order[i]]);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)srv->cfg->control_timeout_ms);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)srv->cfg->control_timeout_ms);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
        cc = curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL); /* hl is freed below */
        if (cc == CURLE_OK) {
            lm->curl[order[i]] = h;
        } else {
            curl_easy_cleanup(h); /* a failed connection is not kept */
            lm->curl[order[i]] = NULL;
        }
        curl_slist_free_all(hl);
        if (cc == CURLE_OK && status == 200) {
            rc = 0;
        } else if (cc != CURLE_OK) {
            snprintf(err, errcap, "%s: %s", srv->ctl_shown[order[i]], curl_easy_strerror(cc));
        } else {
            snprintf(err, errcap, "%s: status %ld", srv->ctl_shown[order[i]], status);
        }
    }
    explicit_bzero(secret, sizeof(secret));
    return rc;
}

/* One pass: asks for the units parked requests need (and a lease ahead),
 * gives back idle ones; applies the grants and wakes the loops. */
static void
pass(struct api_limiter *lm)
{
    struct api_server *srv = lm->srv;
    struct buf body, answer;
    struct jw w;
    cJSON *root = NULL;
    int64_t now = util_mono_ms();
    int64_t window = -1;
    size_t asked = 0;
    char err[256] = "";

    buf_init(&body, 1024 * 1024);
    buf_init(&answer, 1024 * 1024);
    jw_init(&w, &body);
    jw_raw(&w, "{\"keys\":[");
    pthread_mutex_lock(&lm->mu);
    for (struct lim_key *k = lm->keys; k; k = k->next) {
        int64_t want_r = 0, want_t = 0, ret_r = 0, ret_t = 0;
        roll(k, now);
        if (k->need_r > 0 && !k->exhausted) {
            int64_t lease = lease_size(k, now);
            want_r = k->need_r > lease ? k->need_r : lease;
            want_t = k->need_t + (want_r - k->need_r) * k->avg_tokens;
            if (k->have_t > 0) {
                want_t = want_t > k->have_t ? want_t - k->have_t : 0;
            } else {
                want_t -= k->have_t; /* a debt from under-estimates is paid first */
            }
        } else if (low_water(k, now)) {
            /* ahead of need: a lease on top of what is held */
            int64_t lease = lease_size(k, now);
            want_r = k->limit_r > 0 ? lease : 0;
            want_t = k->limit_t > 0 ? lease * k->avg_tokens - (k->have_t < 0 ? k->have_t : 0) : 0;
        } else if (k->window >= 0 && now - k->last_use > LEASE_IDLE_MS &&
                   (k->have_r > 0 || k->have_t > 0)) {
            ret_r = k->have_r;
            ret_t = k->have_t > 0 ? k->have_t : 0;
            k->have_r = 0;
            k->have_t -= ret_t;
        }
        if (want_r == 0 && want_t == 0 && ret_r == 0 && ret_t == 0) {
            k->refill = false; /* no longer low (its window ended, it went idle) */
            continue;
        }
        window = k->window >= 0 ? k->window : window;
        jw_raw(&w, asked++ ? ",{\"name\":" : "{\"name\":");
        jw_str(&w, k->name);
        jw_raw(&w, ",\"want_requests\":");
        jw_i64(&w, want_r);
        jw_raw(&w, ",\"want_tokens\":");
        jw_i64(&w, want_t);
        jw_raw(&w, ",\"return_requests\":");
        jw_i64(&w, ret_r);
        jw_raw(&w, ",\"return_tokens\":");
        jw_i64(&w, ret_t);
        jw_raw(&w, "}");
        k->asked_r = want_r;
    }
    lm->wake = false;
    pthread_mutex_unlock(&lm->mu);
    jw_raw(&w, "],\"window\":");
    jw_i64(&w, window);
    jw_raw(&w, "}");
    if (asked == 0 || w.err) {
        goto out;
    }
    atomic_fetch_add_explicit(&srv->limit_calls, 1, memory_order_relaxed);
    if (call_controllers(lm, buf_str(&body), &answer, err, sizeof(err)) != 0 ||
        !(root = cJSON_ParseWithLength(answer.data, answer.len)) ||
        !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(root, "keys"))) {
        /* no controller answered: admit (see the top) */
        if (!lm->warned) {
            log_warn("no controller granted API key limits (%s); admitting requests of limited "
                     "keys unchecked until one does",
                     err[0] ? err : "a malformed answer");
            lm->warned = true;
        }
        pthread_mutex_lock(&lm->mu);
        for (struct lim_key *k = lm->keys; k; k = k->next) {
            if (k->asked_r > 0) {
                k->unchecked = true;
                atomic_fetch_add(&srv->limit_unchecked, (uint64_t)k->need_r);
                k->asked_r = 0;
            }
            k->refill = false;
        }
        pthread_mutex_unlock(&lm->mu);
        wake_loops(srv);
        goto out;
    }
    if (lm->warned) {
        log_info("API key limits are granted again");
        lm->warned = false;
    }
    {
        const cJSON *keys = cJSON_GetObjectItemCaseSensitive(root, "keys");
        const cJSON *it;
        int64_t win =
            (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(root, "window"));
        int64_t reset =
            (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(root, "reset_ms"));
        int64_t end = util_mono_ms() + (reset > 0 ? reset : 0);
        pthread_mutex_lock(&lm->mu);
        cJSON_ArrayForEach(it, keys)
        {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
            struct lim_key *k = cJSON_IsString(name) ? key_get(lm, name->valuestring) : NULL;
            int64_t gr, gt;
            if (!k) {
                continue;
            }
            if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "known"))) {
                /* the controller has not read this key yet (its settings
                 * trail this apiserver's by up to a poll period), or has
                 * read its revocation first: the requests waiting now go
                 * through unchecked rather than wait on a lease that
                 * cannot come (this apiserver refuses a revoked key as
                 * soon as it reads the revocation) */
                atomic_fetch_add(&srv->limit_unchecked, (uint64_t)k->need_r);
                k->have_r += k->need_r;
                k->have_t += k->need_t;
                k->asked_r = 0;
                k->refill = false;
                continue;
            }
            gr = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(it, "requests"));
            gt = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(it, "tokens"));
            if (k->window != win) {
                k->have_r = k->have_t = 0;
                k->exhausted = false;
            }
            k->window = win;
            k->window_end = end;
            k->unchecked = false;
            k->have_r += gr;
            k->have_t += gt;
            k->limit_r = (int64_t)cJSON_GetNumberValue(
                cJSON_GetObjectItemCaseSensitive(it, "limit_requests"));
            k->limit_t =
                (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(it, "limit_tokens"));
            k->used_r = (int64_t)cJSON_GetNumberValue(
                cJSON_GetObjectItemCaseSensitive(it, "used_requests"));
            k->used_t =
                (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(it, "used_tokens"));
            /* asked and not granted in full: the window is spent */
            if (k->asked_r > 0 &&
                ((k->limit_r > 0 && gr < k->asked_r && k->have_r <= 0) ||
                 (k->limit_t > 0 && k->have_t < k->avg_tokens && k->used_t >= k->limit_t))) {
                k->exhausted = true;
            }
            k->asked_r = 0;
            k->refill = false;
        }
        pthread_mutex_unlock(&lm->mu);
        wake_loops(srv);
    }
out:
    cJSON_Delete(root);
    buf_cleanup(&body);
    buf_cleanup(&answer);
}

static void *
limiter_main(void *arg)
{
    struct api_limiter *lm = arg;

    pthread_mutex_lock(&lm->mu);
    while (!lm->stop) {
        struct timespec ts;
        if (!lm->wake) {
            util_deadline_us(PASS_MS * 1000, &ts);
            pthread_cond_timedwait(&lm->cond, &lm->mu, &ts);
        }
        if (lm->stop) {
            break;
        }
        pthread_mutex_unlock(&lm->mu);
        pass(lm);
        pthread_mutex_lock(&lm->mu);
    }
    pthread_mutex_unlock(&lm->mu);
    return NULL;
}

int
api_limit_start(struct api_server *srv)
{
    struct api_limiter *lm = calloc(1, sizeof(*lm));

    if (!lm) {
        return -1;
    }
    lm->srv = srv;
    pthread_mutex_init(&lm->mu, NULL);
    pthread_cond_init(&lm->cond, NULL);
    srv->limiter = lm;
    if (pthread_create(&lm->thread, NULL, limiter_main, lm) != 0) {
        return -1;
    }
    lm->started = true;
    return 0;
}

void
api_limit_stop(struct api_server *srv)
{
    struct api_limiter *lm = srv->limiter;

    if (!lm) {
        return;
    }
    pthread_mutex_lock(&lm->mu);
    lm->stop = true;
    pthread_cond_signal(&lm->cond);
    pthread_mutex_unlock(&lm->mu);
    if (lm->started) {
        pthread_join(lm->thread, NULL);
        lm->started = false;
    }
}

void
api_limit_free(struct api_server *srv)
{
    struct api_limiter *lm = srv->limiter;

    if (!lm) {
        return;
    }
    api_limit_stop(srv);
    while (lm->keys) {
        struct lim_key *k = lm->keys;
        lm->keys = k->next;
        free(k);
    }
    for (size_t i = 0; i < API_MAX_CTLS; i++) {
        curl_easy_cleanup(lm->curl[i]); /* NULL-safe */
    }
    pthread_mutex_destroy(&lm->mu);
    pthread_cond_destroy(&lm->cond);
    free(lm);
    srv->limiter = NULL;
}
