/* SPDX-License-Identifier: MIT
 *
 * curl_loop.c - see curl_loop.h.
 *
 * curl asks, through on_socket, for each of its sockets to be watched for
 * reading and/or writing (or forgotten), and, through on_timeout, to be
 * woken after some time; both become libevent events that call
 * curl_multi_socket_action, after which finished transfers are collected.
 * Each transfer carries a record (CURLOPT_PRIVATE, which this module owns)
 * with its `done` callback, kept in a list so that curl_loop_free can
 * cancel what is left.
 */
#include "curl_loop.h"

#include <stdbool.h>
#include <stdlib.h>

#include <event2/event.h>

struct xfer {
    CURL *easy;
    curl_loop_done_fn *done;
    void *arg;
    struct xfer *prev, *next;
};

struct curl_loop {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    struct xfer *xfers;
    int active;
};

/* A socket curl asked us to watch. */
struct sock {
    struct event *ev;
};

static void detach(struct curl_loop *cl, struct xfer *x);

/* Hands every finished transfer to its owner. */
static void
collect_done(struct curl_loop *cl)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(cl->multi, &left))) {
        struct xfer *x = NULL;
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        CURLcode rc = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (!x) {
            continue;
        }
        CURL *easy = x->easy;
        curl_loop_done_fn *done = x->done;
        void *arg = x->arg;
        detach(cl, x); /* msg is invalid from here on */
        done(easy, rc, arg);
    }
}

static void
on_event(evutil_socket_t fd, short what, void *arg)
{
    struct curl_loop *cl = arg;
    int flags =
        ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running;

    curl_multi_socket_action(cl->multi, fd, flags, &running);
    collect_done(cl);
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct curl_loop *cl = arg;
    int running;

    (void)fd;
    (void)what;
    curl_multi_socket_action(cl->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    collect_done(cl);
}

static int
on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct curl_loop *cl = userp;
    struct sock *sk = socketp;
    short kind = EV_PERSIST;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (sk) {
            event_free(sk->ev);
            free(sk);
        }
        return 0;
    }
    if (what & CURL_POLL_IN) {
        kind |= EV_READ;
    }
    if (what & CURL_POLL_OUT) {
        kind |= EV_WRITE;
    }
    if (!sk) {
        sk = calloc(1, sizeof(*sk));
        if (!sk || !(sk->ev = event_new(cl->base, s, kind, on_event, cl))) {
            free(sk);
            return -1; /* curl fails the transfer */
        }
        curl_multi_assign(cl->multi, s, sk);
    } else {
        event_del(sk->ev);
        event_assign(sk->ev, cl->base, s, kind, on_event, cl);
    }
    return event_add(sk->ev, NULL) == 0 ? 0 : -1;
}

static int
on_timeout(CURLM *multi, long timeout_ms, void *userp)
{
    struct curl_loop *cl = userp;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};

    (void)multi;
    if (timeout_ms < 0) {
        evtimer_del(cl->timer);
        return 0;
    }
    return evtimer_add(cl->timer, &tv) == 0 ? 0 : -1;
}

struct curl_loop *
curl_loop_new(struct event_base *base)
{
    struct curl_loop *cl = calloc(1, sizeof(*cl));

    if (!cl) {
        return NULL;
    }
    cl->base = base;
    cl->multi = curl_multi_init();
    cl->timer = evtimer_new(base, on_timer, cl);
    if (!cl->multi || !cl->timer) {
        curl_loop_free(cl);
        return NULL;
    }
    curl_multi_setopt(cl->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(cl->multi, CURLMOPT_SOCKETDATA, cl);
    curl_multi_setopt(cl->multi, CURLMOPT_TIMERFUNCTION, on_timeout);
    curl_multi_setopt(cl->multi, CURLMOPT_TIMERDATA, cl);
    return cl;
}

int
curl_loop_add(struct curl_loop *cl, CURL *easy, curl_loop_done_fn *done, void *arg)
{
    struct xfer *x = calloc(1, sizeof(*x));

    if (!x) {
        return -1;
    }
    x->easy = easy;
    x->done = done;
    x->arg = arg;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
    if (curl_multi_add_handle(cl->multi, easy) != CURLM_OK) {
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        free(x);
        return -1;
    }
    x->next = cl->xfers;
    if (cl->xfers) {
        cl->xfers->prev = x;
    }
    cl->xfers = x;
    cl->active++;
    return 0;
}

/* Takes the transfer out of the loop and frees its record. */
static void
detach(struct curl_loop *cl, struct xfer *x)
{
    curl_multi_remove_handle(cl->multi, x->easy);
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, NULL);
    if (x->prev) {
        x->prev->next = x->next;
    } else {
        cl->xfers = x->next;
    }
    if (x->next) {
        x->next->prev = x->prev;
    }
    cl->active--;
    free(x);
}

void
curl_loop_remove(struct curl_loop *cl, CURL *easy)
{
    struct xfer *x = NULL;

    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
    if (x) {
        detach(cl, x);
    }
}

int
curl_loop_active(const struct curl_loop *cl)
{
    return cl->active;
}

void
curl_loop_free(struct curl_loop *cl)
{
    if (!cl) {
        return;
    }
    while (cl->xfers) {
        detach(cl, cl->xfers);
    }
    if (cl->multi) {
        curl_multi_cleanup(cl->multi); /* closes cached connections (on_socket REMOVE) */
    }
    if (cl->timer) {
        event_free(cl->timer);
    }
    free(cl);
}
