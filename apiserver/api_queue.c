/* SPDX-License-Identifier: MIT
 *
 * api_queue.c - the apiserver's wait queue: requests that found every
 * instance of their model at capacity wait here for a free slot instead of
 * failing at once (issue 13, "waiting instead of failing").
 *
 * How it works. Each model that ever had a waiter has an api_mq (kept for
 * the life of the process, like the model's counters): a doubly linked
 * list of waiters in the order they are served, highest priority first,
 * then by arrival (a sequence number taken at the first wait). A new
 * waiter is inserted scanning from the tail (O(1) when priorities are
 * equal); one that comes back after a dispatch found no room keeps its
 * sequence number and is inserted scanning from the head, so it does not
 * lose its place.
 *
 * Dispatch moves a waiter from its model's list to its loop's ready list
 * and posts that loop one task (struct qloop: at most one posted at a
 * time); the task takes the whole ready list and calls each waiter's
 * `ready` on the loop thread, where the request is tried again from
 * scratch (api_proxy.c). Dispatches happen:
 *   - when a request of the model ends on this server (api_queue_kick, any
 *     loop): one slot freed, one waiter;
 *   - when a new table arrives (api_queue_table, the watcher thread): as
 *     many waiters as the instances' load reports show free slots
 *     (capacity - running - queued; one probe when none reports capacity).
 *     The controller's watch sends a table on routing changes (an
 *     instance joins, leaves, is drained...), not on load reports alone:
 *     this is how a new instance's slots are used at once;
 *   - as a backstop, every API_QUEUE_POLL_MS on loop 0, one waiter of a
 *     model that nothing dispatched during the last period (the slots may
 *     be held by other apiservers, whose completions this one never sees).
 * A dispatched waiter that meets 429 everywhere again re-enters (keeping its
 * place); one that leaves while handed a slot (its client went away, its
 * deadline passed) passes the slot to the next waiter.
 *
 * Ownership: a waiter is a field of its request; only the request's loop
 * enters, leaves and frees it, always through this file, so a waiter is
 * in a list only while its request is alive. The lock (q->mu) guards every
 * list, count and waiter state, and is held only for list operations
 * (never while calling out, except http_loop_post, which takes a leaf
 * lock).
 */
#include "api.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "buf.h"
#include "util.h"

struct api_mq {
    struct api_mstats *m;
    struct api_waiter *head, *tail; /* waiting, in the order served */
    size_t n;                       /* ... how many */
    size_t ready;                   /* handed a slot, not yet dispatched on their loop */
    int64_t last_pop_ms;            /* util_mono_ms of the last dispatch (the poll) */
    uint64_t rejected;              /* past the bound */
    uint64_t timeouts;              /* past the deadline */
    struct metrics_hist wait;
    struct api_mq *next; /* q->models */
};

struct qloop {
    struct http_task task; /* first */
    struct api_queue *q;
    int index;
    struct api_waiter *head, *tail; /* ready */
    bool posted;
};

struct api_queue {
    struct api_server *srv;
    pthread_mutex_t mu;
    struct api_mq *models;
    _Atomic size_t waiting; /* over every model (WAITING only): the fast path */
    uint64_t seq;
    struct qloop *loops;
    int nloops;
    struct event *poll; /* loop 0's */
};

struct api_queue_opts
api_queue_opts(const struct api_server *srv, const char *model)
{
    /* the model's cluster settings over the flags (api_settings.c) */
    struct api_model_opts o = api_model_opts(srv, model);

    return (struct api_queue_opts){o.queue_timeout_ms, o.queue_max};
}

/* ---- lists (q->mu held) ------------------------------------------------------- */

static void
unlink_w(struct api_waiter **head, struct api_waiter **tail, struct api_waiter *w)
{
    if (w->prev) {
        w->prev->next = w->next;
    } else {
        *head = w->next;
    }
    if (w->next) {
        w->next->prev = w->prev;
    } else {
        *tail = w->prev;
    }
    w->prev = w->next = NULL;
}

/* Inserts w before `at` (NULL: at the tail). */
static void
insert_before(struct api_mq *mq, struct api_waiter *at, struct api_waiter *w)
{
    w->next = at;
    w->prev = at ? at->prev : mq->tail;
    if (w->prev) {
        w->prev->next = w;
    } else {
        mq->head = w;
    }
    if (at) {
        at->prev = w;
    } else {
        mq->tail = w;
    }
}

/* Whether a is served before b. */
static bool
before(const struct api_waiter *a, const struct api_waiter *b)
{
    return a->priority > b->priority || (a->priority == b->priority && a->seq < b->seq);
}

/* The first waiter of mq goes to its loop's ready list (the loop is posted
 * a task if none is pending). */
static void
pop_one(struct api_queue *q, struct api_mq *mq)
{
    struct api_waiter *w = mq->head;
    struct qloop *ql;

    unlink_w(&mq->head, &mq->tail, w);
    mq->n--;
    mq->ready++;
    mq->last_pop_ms = util_mono_ms();
    atomic_fetch_sub(&q->waiting, 1);
    w->state = API_W_READY;
    ql = &q->loops[w->loop];
    w->prev = ql->tail;
    if (ql->tail) {
        ql->tail->next = w;
    } else {
        ql->head = w;
    }
    ql->tail = w;
    if (!ql->posted) {
        ql->posted = true;
        http_loop_post(q->srv->loops[ql->index].loop, &ql->task);
    }
}

/* ---- dispatch on a loop --------------------------------------------------------- */

static void
run_ready(struct http_task *t)
{
    struct qloop *ql = (struct qloop *)t;
    struct api_queue *q = ql->q;
    struct api_waiter *w, *next;

    pthread_mutex_lock(&q->mu);
    w = ql->head;
    ql->head = ql->tail = NULL;
    ql->posted = false;
    for (struct api_waiter *x = w; x; x = x->next) {
        x->q->ready--;
        x->q = NULL;
        x->state = API_W_NONE;
    }
    pthread_mutex_unlock(&q->mu);
    /* the list is this loop's own now: only these requests' events (on
     * this thread) could end them, and none runs in between */
    for (; w; w = next) {
        next = w->next;
        w->prev = w->next = NULL;
        w->ready(w);
    }
}

/* ---- the interface ------------------------------------------------------------ */

int
api_queue_new(struct api_server *srv)
{
    struct api_queue *q = calloc(1, sizeof(*q));

    if (!q || !(q->loops = calloc((size_t)srv->nloops, sizeof(*q->loops)))) {
        free(q);
        return -1;
    }
    q->srv = srv;
    q->nloops = srv->nloops;
    pthread_mutex_init(&q->mu, NULL);
    for (int i = 0; i < q->nloops; i++) {
        q->loops[i].task.fn = run_ready;
        q->loops[i].q = q;
        q->loops[i].index = i;
    }
    srv->queue = q;
    return 0;
}

void
api_queue_free(struct api_server *srv)
{
    struct api_queue *q = srv ? srv->queue : NULL;

    if (!q) {
        return;
    }
    while (q->models) {
        struct api_mq *mq = q->models;
        q->models = mq->next;
        mq->m->mq = NULL;
        free(mq);
    }
    pthread_mutex_destroy(&q->mu);
    free(q->loops);
    free(q);
    srv->queue = NULL;
}

enum api_queue_rc
api_queue_enter(struct api_server *srv, struct api_mstats *m, struct api_waiter *w, int64_t max,
                bool again)
{
    struct api_queue *q = srv->queue;
    struct api_mq *mq;
    struct api_waiter *at;

    pthread_mutex_lock(&q->mu);
    mq = m->mq;
    if (!mq) {
        if (!(mq = calloc(1, sizeof(*mq)))) {
            pthread_mutex_unlock(&q->mu);
            return API_Q_FULL;
        }
        mq->m = m;
        mq->last_pop_ms = util_mono_ms();
        mq->next = q->models;
        q->models = mq;
        m->mq = mq;
    }
    if (!again && (int64_t)(mq->n + mq->ready) >= max) {
        mq->rejected++;
        pthread_mutex_unlock(&q->mu);
        return API_Q_FULL;
    }
    if (!again) {
        w->seq = ++q->seq;
        for (at = mq->tail; at && before(w, at); at = at->prev) {
        }
        insert_before(mq, at ? at->next : mq->head, w);
    } else {
        for (at = mq->head; at && before(at, w); at = at->next) {
        }
        insert_before(mq, at, w);
    }
    if (mq->n == 0) {
        mq->last_pop_ms = util_mono_ms(); /* the poll's period starts now */
    }
    mq->n++;
    w->q = mq;
    w->state = API_W_WAITING;
    atomic_fetch_add(&q->waiting, 1);
    pthread_mutex_unlock(&q->mu);
    return API_Q_OK;
}

void
api_queue_leave(struct api_server *srv, struct api_waiter *w)
{
    struct api_queue *q = srv->queue;
    struct api_mq *mq;

    if (!q) {
        return;
    }
    pthread_mutex_lock(&q->mu);
    mq = w->q;
    if (w->state == API_W_WAITING) {
        unlink_w(&mq->head, &mq->tail, w);
        mq->n--;
        atomic_fetch_sub(&q->waiting, 1);
    } else if (w->state == API_W_READY) {
        struct qloop *ql = &q->loops[w->loop];
        unlink_w(&ql->head, &ql->tail, w);
        mq->ready--;
        if (mq->n > 0) {
            pop_one(q, mq); /* the slot it was handed goes to the next */
        }
    }
    w->q = NULL;
    w->state = API_W_NONE;
    pthread_mutex_unlock(&q->mu);
}

void
api_queue_kick(struct api_server *srv, struct api_mstats *m, int n)
{
    struct api_queue *q = srv->queue;

    if (!q || atomic_load_explicit(&q->waiting, memory_order_relaxed) == 0) {
        return;
    }
    pthread_mutex_lock(&q->mu);
    for (; m->mq && m->mq->n > 0 && n > 0; n--) {
        pop_one(q, m->mq);
    }
    pthread_mutex_unlock(&q->mu);
}

bool
api_queue_waiting(struct api_server *srv, struct api_mstats *m)
{
    struct api_queue *q = srv->queue;
    bool any;

    if (!q || atomic_load_explicit(&q->waiting, memory_order_relaxed) == 0) {
        return false;
    }
    pthread_mutex_lock(&q->mu);
    any = m->mq && m->mq->n + m->mq->ready > 0;
    pthread_mutex_unlock(&q->mu);
    return any;
}

/* Free slots of a model by its instances' load reports; 1 (a probe) when
 * none reports a capacity. */
static int64_t
free_slots(const struct api_model *md)
{
    int64_t free_n = 0;
    bool reported = false;

    for (size_t i = 0; i < md->set.n; i++) {
        const struct api_inst *in = md->inst[i];
        int64_t cap = atomic_load_explicit(&in->load_capacity, memory_order_relaxed);
        int64_t busy = atomic_load_explicit(&in->load_busy, memory_order_relaxed);
        int64_t mine = atomic_load_explicit(&in->rt.in_flight, memory_order_relaxed);
        if (cap <= 0) {
            continue;
        }
        reported = true;
        busy = busy > mine ? busy : mine;
        free_n += cap > busy ? cap - busy : 0;
    }
    return reported ? free_n : md->set.n > 0;
}

void
api_queue_table(struct api_server *srv, struct api_table *t)
{
    struct api_queue *q = srv->queue;

    if (!q || atomic_load_explicit(&q->waiting, memory_order_relaxed) == 0) {
        return;
    }
    pthread_mutex_lock(&q->mu);
    for (struct api_mq *mq = q->models; mq; mq = mq->next) {
        char name[API_NAME_MAX + 1];
        const char *at;
        const struct api_model *md;
        int64_t slots;

        if (mq->n == 0 || !(at = strrchr(mq->m->model, '@'))) {
            continue;
        }
        snprintf(name, sizeof(name), "%.*s", (int)(at - mq->m->model), mq->m->model);
        if (!(md = api_table_find(t, name, at + 1))) {
            continue;
        }
        for (slots = free_slots(md); slots > 0 && mq->n > 0; slots--) {
            pop_one(q, mq);
        }
    }
    pthread_mutex_unlock(&q->mu);
}

/* The backstop (loop 0): a model whose waiters nothing dispatched during
 * the last period gets one tried. */
static void
on_poll(evutil_socket_t fd, short what, void *arg)
{
    struct api_queue *q = arg;
    int64_t now = util_mono_ms();

    (void)fd;
    (void)what;
    if (atomic_load_explicit(&q->waiting, memory_order_relaxed) == 0) {
        return;
    }
    pthread_mutex_lock(&q->mu);
    for (struct api_mq *mq = q->models; mq; mq = mq->next) {
        if (mq->n > 0 && mq->ready == 0 && now - mq->last_pop_ms >= API_QUEUE_POLL_MS) {
            pop_one(q, mq);
        }
    }
    pthread_mutex_unlock(&q->mu);
}

int
api_queue_loop_start(struct api_server *srv, struct api_loop *l)
{
    struct api_queue *q = srv->queue;
    struct timeval tv = {0, API_QUEUE_POLL_MS * 1000};

    if (l != &srv->loops[0]) {
        return 0;
    }
    q->poll = event_new(http_loop_base(l->loop), -1, EV_PERSIST, on_poll, q);
    if (!q->poll || event_add(q->poll, &tv) != 0) {
        return -1;
    }
    return 0;
}

void
api_queue_loop_stop(struct api_server *srv, struct api_loop *l)
{
    struct api_queue *q = srv->queue;

    if (q && l == &srv->loops[0] && q->poll) {
        event_free(q->poll);
        q->poll = NULL;
    }
}

void
api_queue_done(struct api_server *srv, struct api_mstats *m, bool timed_out, int64_t wait_us)
{
    struct api_queue *q = srv->queue;

    pthread_mutex_lock(&q->mu);
    if (m->mq) {
        metrics_hist_observe_us(&m->mq->wait, wait_us);
        m->mq->timeouts += timed_out;
    }
    pthread_mutex_unlock(&q->mu);
}

/* ---- metrics ------------------------------------------------------------------ */

enum qstat { Q_QUEUED, Q_REJECTED, Q_TIMEOUTS, Q_WAIT };

static const struct {
    const char *name;
    enum qstat stat;
    const char *type;
    const char *help;
} qfamilies[] = {
    {"roster_api_queued", Q_QUEUED, "gauge",
     "Requests waiting for a free slot of the model (--queue_timeout_ms)."},
    {"roster_api_queue_rejected_total", Q_REJECTED, "counter",
     "Requests refused with 429 because the model's queue was full (--queue_max)."},
    {"roster_api_queue_timeouts_total", Q_TIMEOUTS, "counter",
     "Requests answered 503 after waiting --queue_timeout_ms for a free slot."},
    {"roster_api_queue_wait_seconds", Q_WAIT, "histogram",
     "Time requests that waited spent in the queue (all their waits), however they ended."},
};

int
api_queue_write_metrics(struct api_server *srv, struct buf *b)
{
    struct api_queue *q = srv->queue;
    char lab[2 * API_NAME_MAX + 64];
    int rc = 0;

    if (!q) {
        return 0;
    }
    for (size_t f = 0; f < sizeof(qfamilies) / sizeof(qfamilies[0]); f++) {
        rc |= metrics_header(b, qfamilies[f].name, qfamilies[f].type, qfamilies[f].help);
        pthread_mutex_lock(&q->mu);
        for (struct api_mq *mq = q->models; mq; mq = mq->next) {
            lab[0] = '\0';
            rc |= metrics_label_add(lab, sizeof(lab), "model", mq->m->model);
            switch (qfamilies[f].stat) {
            case Q_QUEUED:
                rc |= metrics_sample(b, qfamilies[f].name, lab, (double)(mq->n + mq->ready));
                break;
            case Q_REJECTED:
                rc |= metrics_sample(b, qfamilies[f].name, lab, (double)mq->rejected);
                break;
            case Q_TIMEOUTS:
                rc |= metrics_sample(b, qfamilies[f].name, lab, (double)mq->timeouts);
                break;
            case Q_WAIT:
                rc |= metrics_hist_write(b, qfamilies[f].name, lab, &mq->wait);
                break;
            }
        }
        pthread_mutex_unlock(&q->mu);
    }
    return rc ? -1 : 0;
}
