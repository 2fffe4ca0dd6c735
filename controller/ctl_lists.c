/* SPDX-License-Identifier: MIT
 *
 * ctl_lists.c - whole instance lists built off the loop threads.
 *
 * A list of every model is one JSON document per snapshot and variant,
 * built on its first read and patched (copied) on the first read after a
 * heartbeat anywhere in the table (ctl_view.c, cached_json). At 100,000
 * instances that is 25 to 46 MB and 60 to 300 ms of CPU: done on the loop
 * thread that serves the list, it stalled every other request of that
 * loop - heartbeats and routing lists included - for as long. So a whole
 * list of a snapshot of at least CTL_LIST_OFFLOAD_MIN instances is built
 * here, on one thread, and answered from its loop when done (the request
 * stays valid meanwhile, even if its client leaves: http_server.h).
 * Smaller lists cost less than the hand-off and are built in place.
 *
 * One thread is enough: the jobs share one cached document per snapshot
 * and variant, so the second request for a list waits for the first build
 * and then copies nothing. The queue is bounded (CTL_LISTS_MAX_QUEUE): a
 * request beyond it gets 503 + Retry-After.
 */
#include "ctl.h"

#include <stdlib.h>

#define LOG_MODULE "controller"
#include "log.h"

struct ctl_lists {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t thread;
    bool started;
    bool stop;
    struct ctl_list_job *head, *tail;
    int queued;
};

static void *
lists_main(void *arg)
{
    struct ctl_lists *l = arg;

    pthread_mutex_lock(&l->mu);
    while (!l->stop || l->head) {
        struct ctl_list_job *job = l->head;
        if (!job) {
            pthread_cond_wait(&l->cond, &l->mu);
            continue;
        }
        l->head = job->next;
        if (!l->head) {
            l->tail = NULL;
        }
        l->queued--;
        pthread_mutex_unlock(&l->mu);
        job->json = ctl_snap_json(job->snap, NULL, job->var);
        http_loop_post(job->loop, &job->task);
        pthread_mutex_lock(&l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

int
ctl_lists_new(struct ctl_lists **out)
{
    struct ctl_lists *l = calloc(1, sizeof(*l));

    if (!l) {
        return -1;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cond, NULL);
    *out = l;
    return 0;
}

int
ctl_lists_start(struct ctl_lists *l)
{
    if (pthread_create(&l->thread, NULL, lists_main, l) != 0) {
        return -1;
    }
    l->started = true;
    return 0;
}

bool
ctl_lists_submit(struct ctl_lists *l, struct ctl_list_job *job)
{
    bool ok;

    job->next = NULL;
    pthread_mutex_lock(&l->mu);
    ok = l->started && !l->stop && l->queued < CTL_LISTS_MAX_QUEUE;
    if (ok) {
        if (l->tail) {
            l->tail->next = job;
        } else {
            l->head = job;
        }
        l->tail = job;
        l->queued++;
        pthread_cond_signal(&l->cond);
    }
    pthread_mutex_unlock(&l->mu);
    return ok;
}

void
ctl_lists_stop(struct ctl_lists *l)
{
    if (!l || !l->started) {
        return;
    }
    pthread_mutex_lock(&l->mu);
    l->stop = true; /* the jobs queued are still built and answered */
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    l->started = false;
}

void
ctl_lists_free(struct ctl_lists *l)
{
    if (!l) {
        return;
    }
    ctl_lists_stop(l);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cond);
    free(l);
}
