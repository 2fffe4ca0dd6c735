/* SPDX-License-Identifier: MIT
 *
 * wrk_admit.c - back-pressure: a model's slots and its queue.
 *
 * Each model runs at most `concurrency` requests (srv->concurrency: the
 * --concurrency flag, or DB-GPT's defaults); up to --max_queue more wait in
 * a FIFO, each for at most --queue_timeout_ms (then 503 with Retry-After);
 * beyond that a request gets 429 with Retry-After at once, in OpenAI's error
 * shape. Never an unbounded wait. The heartbeats report running and queued
 * requests and the capacity (srv->load). Generation on the builtin model
 * (wrk_gen.c) and upstream transfers (wrk_proxy.c) both hold tickets.
 * Loop thread only.
 */
#include "wrk.h"

#include <stdlib.h>

#include <event2/event.h>

static void
queue_remove(struct wrk_ticket *t)
{
    struct wrk_slot *m = &t->srv->slots[t->model];
    struct wrk_ticket *prev = NULL;

    for (struct wrk_ticket *q = m->head; q; prev = q, q = q->next) {
        if (q == t) {
            if (prev) {
                prev->next = t->next;
            } else {
                m->head = t->next;
            }
            if (m->tail == t) {
                m->tail = prev;
            }
            t->next = NULL;
            m->queued--;
            atomic_fetch_sub(&t->srv->load.queue_length, 1);
            break;
        }
    }
    if (t->timer) {
        event_free(t->timer);
        t->timer = NULL;
    }
}

static void
run(struct wrk_ticket *t)
{
    t->srv->slots[t->model].active++;
    atomic_fetch_add(&t->srv->load.in_flight, 1);
    t->running = true;
    t->run(t);
}

/* Waited --queue_timeout_ms in the queue. */
static void
on_queue_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct wrk_ticket *t = arg;
    struct wrk_server *srv = t->srv;

    (void)fd;
    (void)what;
    queue_remove(t);
    http_req_on_close(t->req, NULL, NULL);
    atomic_fetch_add(&srv->rejected, 1);
    http_reply_error(t->req, 503, "server_error", "queue_timeout",
                     "the model '%s' stayed at capacity for %lld ms; retry", srv->models[t->model],
                     (long long)srv->cfg->queue_timeout_ms);
    t->dropped(t);
}

int
wrk_admit(struct wrk_ticket *t)
{
    struct wrk_server *srv = t->srv;
    struct wrk_slot *m = &srv->slots[t->model];
    int64_t ms = srv->cfg->queue_timeout_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};

    if (m->active < srv->concurrency) {
        run(t);
        return 1;
    }
    if (m->queued >= srv->cfg->max_queue) {
        atomic_fetch_add(&srv->rejected, 1);
        http_reply_error(t->req, 429, "rate_limit_exceeded", "model_at_capacity",
                         "the model '%s' is at capacity (%d running, %d queued); retry",
                         srv->models[t->model], m->active, m->queued);
        return -1;
    }
    t->timer = evtimer_new(http_loop_base(http_req_loop(t->req)), on_queue_timeout, t);
    if (!t->timer || evtimer_add(t->timer, &tv) != 0) {
        if (t->timer) {
            event_free(t->timer);
            t->timer = NULL;
        }
        http_reply_error(t->req, 503, "server_error", "out_of_memory", "out of memory");
        return -1;
    }
    if (m->tail) {
        m->tail->next = t;
    } else {
        m->head = t;
    }
    m->tail = t;
    m->queued++;
    atomic_fetch_add(&srv->load.queue_length, 1);
    return 0;
}

void
wrk_admit_leave(struct wrk_ticket *t)
{
    struct wrk_slot *m = &t->srv->slots[t->model];
    struct wrk_ticket *next;

    if (!t->running) {
        queue_remove(t);
        return;
    }
    t->running = false;
    m->active--;
    atomic_fetch_sub(&t->srv->load.in_flight, 1);
    next = m->head;
    if (next) {
        queue_remove(next);
        run(next);
    }
}
