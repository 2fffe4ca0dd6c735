/* SPDX-License-Identifier: MIT
 *
 * test_api_queue.c - apiserver/api_queue.c: the order waiters are served
 * in (priority, then arrival), a waiter that comes back keeping its place,
 * the bound (and a returning waiter never refused), leaving while waiting
 * and while handed a slot (which passes to the next), dispatch on each
 * waiter's own loop, free slots from a table's load reports, and the
 * metrics. The loops are a real http_server's, not running: each test
 * drives their event bases itself, as http_server_adopt allows.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "api.h"
#include "buf.h"
#include "check.h"
#include "http_server.h"

#define NLOOPS 2

static struct http_server *http;
static struct api_config cfg;
static struct api_loop loops[NLOOPS];
static struct api_server srv;
static struct api_mstats ms;

struct tw {
    struct api_waiter w; /* first */
    int id;
};

static int order[64];
static int norder;
static int ran_on[64]; /* the loop each id was dispatched on */

static void
ready(struct api_waiter *w)
{
    struct tw *t = (struct tw *)w;

    if (norder < 64) {
        order[norder++] = t->id;
    }
    ran_on[t->id] = t->w.loop;
}

/* Runs what was posted to each loop (their tasks only: nothing else is
 * pending on a loop that serves no connection). */
static void
run_loops(void)
{
    for (int i = 0; i < NLOOPS; i++) {
        event_base_loop(http_loop_base(loops[i].loop), EVLOOP_NONBLOCK);
    }
}

static void
tw_init(struct tw *t, int id, int priority, int loop)
{
    memset(t, 0, sizeof(*t));
    t->id = id;
    t->w.priority = priority;
    t->w.loop = loop;
    t->w.ready = ready;
}

static int
setup(void)
{
    memset(&ms, 0, sizeof(ms));
    snprintf(ms.model, sizeof(ms.model), "tiny@llm");
    norder = 0;
    memset(ran_on, 0xff, sizeof(ran_on));
    return api_queue_new(&srv);
}

static void
teardown(void)
{
    run_loops();
    api_queue_free(&srv);
}

static void
test_order(void)
{
    struct tw t[6];
    const int prio[6] = {0, 0, 0, 5, 0, 5};
    const int want[5] = {3, 5, 1, 2, 4};

    CHECK(setup() == 0);
    for (int i = 1; i <= 5; i++) {
        tw_init(&t[i], i, prio[i], 0);
        CHECK(api_queue_enter(&srv, &ms, &t[i].w, 100, false) == API_Q_OK);
    }
    CHECK(api_queue_waiting(&srv, &ms));
    api_queue_kick(&srv, &ms, 2);
    CHECK_EQ_INT(norder, 0); /* dispatch runs on the loop, not in kick */
    run_loops();
    CHECK_EQ_INT(norder, 2);
    api_queue_kick(&srv, &ms, 10); /* more than wait */
    run_loops();
    CHECK_EQ_INT(norder, 5);
    for (int i = 0; i < 5; i++) {
        CHECK_EQ_INT(order[i], want[i]);
    }
    CHECK(!api_queue_waiting(&srv, &ms));
    for (int i = 1; i <= 5; i++) {
        CHECK_EQ_INT(t[i].w.state, API_W_NONE);
    }
    teardown();
}

static void
test_again_keeps_its_place(void)
{
    struct tw t[5];

    CHECK(setup() == 0);
    for (int i = 1; i <= 4; i++) {
        tw_init(&t[i], i, i == 4 ? 1 : 0, 0);
        CHECK(api_queue_enter(&srv, &ms, &t[i].w, 100, false) == API_Q_OK);
    }
    api_queue_kick(&srv, &ms, 2); /* 4 (priority 1), then 1 */
    run_loops();
    CHECK_EQ_INT(norder, 2);
    CHECK_EQ_INT(order[0], 4);
    CHECK_EQ_INT(order[1], 1);
    /* both found no room: back, 1 ahead of 2 and 3, 4 ahead of all */
    CHECK(api_queue_enter(&srv, &ms, &t[1].w, 100, true) == API_Q_OK);
    CHECK(api_queue_enter(&srv, &ms, &t[4].w, 100, true) == API_Q_OK);
    api_queue_kick(&srv, &ms, 4);
    run_loops();
    CHECK_EQ_INT(norder, 6);
    CHECK_EQ_INT(order[2], 4);
    CHECK_EQ_INT(order[3], 1);
    CHECK_EQ_INT(order[4], 2);
    CHECK_EQ_INT(order[5], 3);
    teardown();
}

static void
test_bound(void)
{
    struct tw t[5];
    struct buf b;

    CHECK(setup() == 0);
    for (int i = 1; i <= 4; i++) {
        tw_init(&t[i], i, 0, 0);
    }
    CHECK(api_queue_enter(&srv, &ms, &t[1].w, 2, false) == API_Q_OK);
    CHECK(api_queue_enter(&srv, &ms, &t[2].w, 2, false) == API_Q_OK);
    CHECK(api_queue_enter(&srv, &ms, &t[3].w, 2, false) == API_Q_FULL);
    CHECK_EQ_INT(t[3].w.state, API_W_NONE);
    /* handed a slot, 1 still counts against the bound until it runs */
    api_queue_kick(&srv, &ms, 1);
    CHECK(api_queue_enter(&srv, &ms, &t[3].w, 2, false) == API_Q_FULL);
    run_loops();
    CHECK_EQ_INT(norder, 1);
    /* a waiter that comes back is never refused */
    CHECK(api_queue_enter(&srv, &ms, &t[3].w, 2, false) == API_Q_OK);
    CHECK(api_queue_enter(&srv, &ms, &t[1].w, 2, true) == API_Q_OK);
    buf_init(&b, 1 << 20);
    CHECK(api_queue_write_metrics(&srv, &b) == 0);
    CHECK(b.data && strstr(b.data, "roster_api_queued{model=\"tiny@llm\"} 3\n"));
    CHECK(strstr(b.data, "roster_api_queue_rejected_total{model=\"tiny@llm\"} 2\n"));
    buf_cleanup(&b);
    for (int i = 1; i <= 3; i++) {
        api_queue_leave(&srv, &t[i].w);
        CHECK_EQ_INT(t[i].w.state, API_W_NONE);
    }
    CHECK(!api_queue_waiting(&srv, &ms));
    teardown();
}

static void
test_leave(void)
{
    struct tw t[5];

    CHECK(setup() == 0);
    for (int i = 1; i <= 4; i++) {
        tw_init(&t[i], i, 0, 0);
        CHECK(api_queue_enter(&srv, &ms, &t[i].w, 100, false) == API_Q_OK);
    }
    api_queue_leave(&srv, &t[2].w); /* waiting: just gone */
    api_queue_kick(&srv, &ms, 1);   /* 1 is handed the slot ... */
    CHECK_EQ_INT(t[1].w.state, API_W_READY);
    api_queue_leave(&srv, &t[1].w); /* ... and goes away: 3 gets it */
    CHECK_EQ_INT(t[3].w.state, API_W_READY);
    run_loops();
    CHECK_EQ_INT(norder, 1);
    CHECK_EQ_INT(order[0], 3);
    api_queue_leave(&srv, &t[1].w); /* twice: nothing */
    api_queue_leave(&srv, &t[4].w);
    api_queue_kick(&srv, &ms, 5);
    run_loops();
    CHECK_EQ_INT(norder, 1);
    api_queue_done(&srv, &ms, true, 1500000);
    teardown();
}

static void
test_own_loop(void)
{
    struct tw t[4];

    CHECK(setup() == 0);
    for (int i = 1; i <= 3; i++) {
        tw_init(&t[i], i, 0, i % NLOOPS);
        CHECK(api_queue_enter(&srv, &ms, &t[i].w, 100, false) == API_Q_OK);
    }
    api_queue_kick(&srv, &ms, 3);
    event_base_loop(http_loop_base(loops[1].loop), EVLOOP_NONBLOCK);
    CHECK_EQ_INT(norder, 2); /* loop 1's: 1 and 3 */
    CHECK_EQ_INT(order[0], 1);
    CHECK_EQ_INT(order[1], 3);
    event_base_loop(http_loop_base(loops[0].loop), EVLOOP_NONBLOCK);
    CHECK_EQ_INT(norder, 3);
    CHECK_EQ_INT(ran_on[2], 0);
    CHECK_EQ_INT(ran_on[1], 1);
    teardown();
}

static void
test_table(void)
{
    struct api_inst in[2];
    struct api_inst *pin[2] = {&in[0], &in[1]};
    struct api_model m;
    struct api_table tab;
    struct tw t[6];

    CHECK(setup() == 0);
    memset(in, 0, sizeof(in));
    memset(&m, 0, sizeof(m));
    memset(&tab, 0, sizeof(tab));
    snprintf(m.name, sizeof(m.name), "tiny");
    snprintf(m.type, sizeof(m.type), "llm");
    m.set.n = 2;
    m.inst = pin;
    tab.models = &m;
    tab.nmodels = 1;
    for (int i = 1; i <= 5; i++) {
        tw_init(&t[i], i, 0, 0);
        CHECK(api_queue_enter(&srv, &ms, &t[i].w, 100, false) == API_Q_OK);
    }
    /* capacity 4, 1 running + 1 queued: 2 free; capacity 2, 2 running: none */
    atomic_store(&in[0].load_capacity, 4);
    atomic_store(&in[0].load_busy, 2);
    atomic_store(&in[1].load_capacity, 2);
    atomic_store(&in[1].load_busy, 2);
    api_queue_table(&srv, &tab);
    run_loops();
    CHECK_EQ_INT(norder, 2);
    /* this server's own in-flight requests count when the report is older */
    atomic_store(&in[0].load_busy, 0);
    atomic_store(&in[0].rt.in_flight, 3);
    api_queue_table(&srv, &tab);
    run_loops();
    CHECK_EQ_INT(norder, 3);
    /* no capacity reported: one probe */
    atomic_store(&in[0].load_capacity, 0);
    atomic_store(&in[1].load_capacity, 0);
    api_queue_table(&srv, &tab);
    run_loops();
    CHECK_EQ_INT(norder, 4);
    /* another model's table: nothing */
    snprintf(m.name, sizeof(m.name), "other");
    api_queue_table(&srv, &tab);
    run_loops();
    CHECK_EQ_INT(norder, 4);
    api_queue_leave(&srv, &t[5].w);
    teardown();
}

int
main(void)
{
    struct http_server_config hc = {.host = "127.0.0.1", .threads = NLOOPS};
    char err[256];

    if (http_server_new(&hc, &http, err, sizeof(err)) != 0) {
        fprintf(stderr, "http_server_new: %s\n", err);
        return 1;
    }
    cfg.queue_timeout_ms = 30000;
    cfg.queue_max = 1000;
    srv.cfg = &cfg;
    srv.nloops = NLOOPS;
    srv.loops = loops;
    for (int i = 0; i < NLOOPS; i++) {
        loops[i].srv = &srv;
        loops[i].loop = http_server_loop(http, i);
    }
    CHECK_RUN(test_order);
    CHECK_RUN(test_again_keeps_its_place);
    CHECK_RUN(test_bound);
    CHECK_RUN(test_leave);
    CHECK_RUN(test_own_loop);
    CHECK_RUN(test_table);
    http_server_free(http);
    return check_summary();
}
