/* SPDX-License-Identifier: MIT
 *
 * test_ctl_view.c - controller/ctl_view.c without a database: local writes
 * past --max_instances are kept while rows read from the table are
 * ignored (and counted), ctl_view_missing, --instance_networks applied to
 * rows when they are listed, the list JSON charged to the process budget,
 * readers on other threads while merges and writes publish snapshots, and
 * a heartbeat's time listed at once without a snapshot rebuild, never torn
 * while readers copy the JSON (run under TSan by scripts/tsan.sh) and kept
 * when a poll reads it back, and the
 * versions behind incremental watches (since=, ctl_snap_delta_json), and
 * full refreshes that rebuild only models whose load moved.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "budget.h"
#include "check.h"
#include "ctl.h"
#include "util.h"

static struct reg_instance
row(const char *model, const char *host, int port)
{
    struct reg_instance r;

    memset(&r, 0, sizeof(r));
    util_strlcpy(r.model_name, model, sizeof(r.model_name));
    util_strlcpy(r.host, host, sizeof(r.host));
    r.port = port;
    r.weight = 1.0;
    r.check_healthy = true;
    r.healthy = true;
    r.enabled = true;
    r.has_last_heartbeat = true;
    r.age_ms = 0;
    r.lease_ms = 60000;
    return r;
}

static struct reg_op
op(enum reg_op_kind kind, const char *host, int port)
{
    struct reg_op o;

    memset(&o, 0, sizeof(o));
    o.kind = kind;
    o.inst = row("m@llm", host, port);
    return o;
}

static struct ctl_view *
view(int64_t max, const struct netaddr_list *nets)
{
    struct ctl_view_config cfg = {.default_lease_ms = 60000,
                                  .tick_ms = 100,
                                  .max_instances = max,
                                  .stale_ms = 0,
                                  .instance_nets = nets};
    struct ctl_view *v = NULL;

    return ctl_view_new(&cfg, NULL, NULL, &v) == 0 ? v : NULL;
}

/* Rows as a store hands them out (compact, strings borrowed from `rows`). */
static size_t
refresh(struct ctl_view *v, const struct reg_instance *rows, size_t n, bool full)
{
    uint64_t token = ctl_view_refresh_begin(v);
    struct reg_row *r = calloc(n ? n : 1, sizeof(*r));
    size_t ignored;

    if (!r) {
        fprintf(stderr, "refresh: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        reg_row_from_instance(&r[i], &rows[i]);
    }
    int64_t now = util_mono_ms();
    ignored = ctl_view_refresh_apply(v, token, r, n, full, util_wall_ms(), now, now);
    free(r);
    return ignored;
}

static void
test_local_writes_kept_table_rows_ignored(void)
{
    struct ctl_view *v = view(2, NULL);
    struct reg_op ops[3] = {op(REG_OP_REGISTER, "10.0.0.1", 1), op(REG_OP_REGISTER, "10.0.0.1", 2),
                            op(REG_OP_HEARTBEAT, "10.0.0.1", 3)};
    struct reg_instance rows[5];

    CHECK(v);
    ctl_view_apply_ops(v, ops, 3);
    CHECK_EQ_INT(ctl_view_count(v), 3); /* committed here: never dropped */
    for (int i = 0; i < 5; i++) {
        rows[i] = row("m@llm", "10.0.0.1", i + 1);
    }
    CHECK_EQ_INT(refresh(v, rows, 5, true), 2); /* 4 and 5: the view is full */
    CHECK_EQ_INT(ctl_view_count(v), 3);
    struct ctl_snap *s = ctl_view_acquire(v);
    CHECK_EQ_INT(s->n_instances, 3);
    ctl_snap_release(s);
    CHECK(ctl_view_last_refresh_mono(v) > 0);
    ctl_view_free(v);
}

static void
test_missing(void)
{
    struct ctl_view *v = view(100, NULL);
    struct reg_op known = op(REG_OP_REGISTER, "10.0.0.1", 1);
    struct reg_op ops[5] = {op(REG_OP_HEARTBEAT, "10.0.0.1", 1), op(REG_OP_REGISTER, "10.0.0.1", 2),
                            op(REG_OP_REGISTER, "10.0.0.1", 2),
                            op(REG_OP_DEREGISTER, "10.0.0.1", 3), op(REG_OP_ADMIN, "10.0.0.1", 4)};
    bool missing[5];
    size_t count = 99;

    CHECK(v);
    ctl_view_apply_ops(v, &known, 1);
    CHECK_EQ_INT(ctl_view_missing(v, ops, 5, missing, &count), 2);
    CHECK_EQ_INT(count, 1);
    CHECK(!missing[0] && missing[1] && missing[2] && !missing[3] && !missing[4]);
    ctl_view_free(v);
}

static void
test_instance_networks_at_read(void)
{
    struct netaddr_list nets;
    char err[128];
    struct reg_instance rows[3] = {row("m@llm", "10.1.1.1", 1), row("m@llm", "192.168.0.1", 2),
                                   row("m@llm", "name.example", 3)};
    struct ctl_view *v;

    CHECK(netaddr_list_parse("10.0.0.0/8", &nets, err, sizeof(err)) == 0);
    v = view(100, &nets);
    CHECK(v);
    refresh(v, rows, 3, true);
    struct ctl_snap *s = ctl_view_acquire(v);
    const struct ctl_model_snap *m = ctl_snap_model(s, "m@llm");
    CHECK(m && m->n == 3);
    CHECK(!m->v[0].blocked && m->v[0].alive && m->v[0].routable);
    for (int i = 1; i < 3; i++) {
        CHECK(m->v[i].blocked && !m->v[i].alive && !m->v[i].routable);
    }
    CHECK_EQ_INT(s->n_routable, 1);
    CHECK_EQ_INT(s->n_alive, 1);
    struct ctl_json *j = ctl_snap_json(s, NULL, CTL_JSON_ROUTABLE);
    CHECK(j && strstr(j->data, "10.1.1.1") && !strstr(j->data, "192.168") &&
          !strstr(j->data, "name.example"));
    ctl_json_release(j);
    j = ctl_snap_json(s, "m@llm", CTL_JSON_FULL_ALL);
    CHECK(j && strstr(j->data, "\"blocked\":\"host outside --instance_networks\"") &&
          strstr(j->data, "\"blocked\":null"));
    ctl_json_release(j);
    ctl_snap_release(s);
    ctl_view_free(v);
    netaddr_list_cleanup(&nets);
}

static void
test_json_budget(void)
{
    struct ctl_view *v = view(1000, NULL);
    struct reg_instance rows[50];
    int64_t before = budget_used();

    CHECK(v);
    for (int i = 0; i < 50; i++) {
        rows[i] = row(i == 0 ? "a@llm" : "b@llm", "10.0.0.1", i + 1);
    }
    refresh(v, rows, 50, true);
    struct ctl_snap *s = ctl_view_acquire(v);
    budget_set_limit(before + 2000);
    struct ctl_json *big = ctl_snap_json(s, NULL, CTL_JSON_FULL_ALL);
    struct ctl_json *small = ctl_snap_json(s, "a@llm", CTL_JSON_ALL);
    CHECK(big == NULL);   /* 50 instances: over the budget */
    CHECK(small != NULL); /* one: fits, and is charged */
    CHECK(budget_used() >= before + (int64_t)small->len);
    ctl_json_release(small);
    ctl_snap_release(s);
    ctl_view_free(v); /* the cached copy goes with the snapshot */
    CHECK_EQ_INT(budget_used(), before);
    budget_set_limit(0);
}

/* ---- readers while the view publishes (a data race shows under TSan) ---- */

struct stress {
    struct ctl_view *v;
    _Atomic bool stop;
    _Atomic long reads;
};

static void *
reader(void *arg)
{
    struct stress *st = arg;

    while (!atomic_load(&st->stop)) {
        struct ctl_snap *s = ctl_view_acquire(st->v);
        struct ctl_json *j = ctl_snap_json(s, NULL, CTL_JSON_ALL);
        struct ctl_json *k = ctl_snap_json(s, "m@llm", CTL_JSON_FULL_ROUTABLE);
        (void)ctl_snap_etag(s, "m@llm", true);
        (void)ctl_view_last_refresh_mono(st->v);
        ctl_json_release(j);
        ctl_json_release(k);
        ctl_snap_release(s);
        atomic_fetch_add(&st->reads, 1);
    }
    return NULL;
}

static void
test_readers_during_merges(void)
{
    static struct reg_instance rows[2000];
    struct stress st = {.v = view(100000, NULL)};
    pthread_t th[2];

    CHECK(st.v);
    atomic_init(&st.stop, false);
    atomic_init(&st.reads, 0);
    for (int i = 0; i < 2000; i++) {
        rows[i] = row("m@llm", "10.0.0.1", i + 1);
    }
    for (int i = 0; i < 2; i++) {
        CHECK(pthread_create(&th[i], NULL, reader, &st) == 0);
    }
    for (int round = 0; round < 20; round++) {
        struct reg_op o = op(round % 2 ? REG_OP_DEREGISTER : REG_OP_REGISTER, "10.0.0.2", 1);
        rows[round].enabled = round % 3 != 0;
        refresh(st.v, rows, 2000, round % 2 == 0);
        ctl_view_apply_ops(st.v, &o, 1);
    }
    while (atomic_load(&st.reads) < 10) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&st.stop, true);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
    }
    CHECK_EQ_INT(ctl_view_count(st.v), 2001);
    ctl_view_free(st.v);
}

/* ---- compact records, snapshots in one mapping ----------------------------- */

/* A full refresh of many instances builds every model snapshot in one
 * mapping (ctl_view.c "Memory."): a snapshot
 * and a JSON taken before the next refresh stay readable after it (the old
 * mapping lives until its last model snapshot is released), a local write
 * rebuilds its model alone, and every string (host, template, model name)
 * is listed as read. */
static const struct ctl_snap_inst *
inst_at(const struct ctl_model_snap *m, const char *host)
{
    for (size_t i = 0; m && i < m->n; i++) {
        if (strcmp(m->v[i].rec.host, host) == 0) {
            return &m->v[i];
        }
    }
    return NULL;
}

static void
test_large_snapshots_mapped(void)
{
    enum { N = 12000, MODELS = 60 };
    static struct reg_instance rows[N];
    struct ctl_view *v = view(100000, NULL);
    char name[64];
    char host[64];

    CHECK(v);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "m%03d@llm", i % MODELS);
        snprintf(host, sizeof(host), "10.%d.%d.%d", i / 65536, i / 256 % 256, i % 256);
        rows[i] = row(name, host, 8000 + i % 7);
        if (i % 5 == 0) {
            rows[i].has_prompt_template = true;
            snprintf(rows[i].prompt_template, sizeof(rows[i].prompt_template), "tmpl-%d", i);
        }
    }
    CHECK_EQ_INT(ctl_view_mapped_bytes(), 0);
    refresh(v, rows, N, true);
    struct ctl_snap *s1 = ctl_view_acquire(v);
    CHECK_EQ_INT(s1->n_instances, N);
    int64_t one_slab = ctl_view_mapped_bytes();
    CHECK(one_slab >= (int64_t)N * (int64_t)sizeof(struct ctl_snap_inst));
    const struct ctl_model_snap *m1 = ctl_snap_model(s1, "m007@llm");
    CHECK(m1 && m1->n == N / MODELS && m1->slab != NULL);
    struct ctl_json *j1 = ctl_snap_json(s1, NULL, CTL_JSON_ALL);
    CHECK(j1 && strstr(j1->data, "\"host\":\"10.0.46.219\"") &&
          strstr(j1->data, "\"prompt_template\":\"tmpl-11995\""));
    struct ctl_json *f1 = ctl_snap_json(s1, "m007@llm", CTL_JSON_FULL_ALL);
    CHECK(f1 && strstr(f1->data, "\"model_name\":\"m007@llm\",\"host\":\"10.0.0.7\",") &&
          strstr(f1->data, "\"prompt_template\":null") &&
          strstr(f1->data, "\"model\":\"m007\",\"worker_type\":\"llm\""));

    /* the next full read: every load moved (every model is rebuilt, in a
     * mapping of its own), a template changes, another goes away */
    for (size_t i = 0; i < N; i++) {
        rows[i].in_flight = 1;
    }
    rows[7].has_prompt_template = true;
    util_strlcpy(rows[7].prompt_template, "new one", sizeof(rows[7].prompt_template));
    rows[10].has_prompt_template = false;
    refresh(v, rows, N, true);
    struct ctl_snap *s2 = ctl_view_acquire(v);
    const struct ctl_model_snap *m2 = ctl_snap_model(s2, "m007@llm");
    CHECK(m2 && m2 != m1 && m2->slab != NULL && m2->slab != m1->slab);
    const struct ctl_snap_inst *i2 = inst_at(m2, "10.0.0.7");
    CHECK(m2 && m2->n == m1->n && i2);
    CHECK(i2 && i2->rec.has_prompt_template && strcmp(i2->rec.prompt_template, "new one") == 0);
    CHECK(i2 && strcmp(i2->rec.model_name, "m007@llm") == 0);
    const struct ctl_snap_inst *i10 = inst_at(ctl_snap_model(s2, "m010@llm"), "10.0.0.10");
    CHECK(i10 && !i10->rec.has_prompt_template && i10->rec.prompt_template == NULL);
    const struct ctl_snap_inst *i5 = inst_at(ctl_snap_model(s2, "m005@llm"), "10.0.0.5");
    CHECK(i5 && i5->rec.has_prompt_template && strcmp(i5->rec.prompt_template, "tmpl-5") == 0);
    /* the old snapshot is intact */
    const struct ctl_snap_inst *i1 = inst_at(m1, "10.0.0.7");
    CHECK(i1 && !i1->rec.has_prompt_template && i1->rec.prompt_template == NULL);
    CHECK(strstr(j1->data, "\"prompt_template\":\"tmpl-11995\"") != NULL);

    /* a local registration rebuilds its model alone, outside the mapping */
    struct reg_op o;
    memset(&o, 0, sizeof(o));
    o.kind = REG_OP_REGISTER;
    o.inst = row("m007@llm", "192.168.1.1", 9);
    o.inst.has_prompt_template = true;
    util_strlcpy(o.inst.prompt_template, "local", sizeof(o.inst.prompt_template));
    ctl_view_apply_ops(v, &o, 1);
    struct ctl_snap *s3 = ctl_view_acquire(v);
    const struct ctl_model_snap *m3 = ctl_snap_model(s3, "m007@llm");
    CHECK(m3 && m3->slab == NULL && m3->n == m2->n + 1);
    CHECK(ctl_snap_model(s3, "m008@llm") == ctl_snap_model(s2, "m008@llm"));
    const struct ctl_snap_inst *i3 = inst_at(m3, "192.168.1.1");
    CHECK(i3 && i3->rec.has_prompt_template && strcmp(i3->rec.prompt_template, "local") == 0);

    /* the first mapping goes once its last reader is done, and not on that
     * reader's thread: the view frees it at its next publish (a heartbeat
     * here; the tick every tick_ms in a controller); the rest still reads */
    int64_t before = ctl_view_mapped_bytes();
    ctl_json_release(f1);
    ctl_snap_release(s1);
    CHECK_EQ_INT(ctl_view_mapped_bytes(), before);
    struct reg_op beat = op(REG_OP_HEARTBEAT, "10.0.0.1", 1);
    ctl_view_apply_ops(v, &beat, 1);
    CHECK_EQ_INT(ctl_view_mapped_bytes(), before - one_slab);
    ctl_json_release(j1);
    struct ctl_json *j3 = ctl_snap_json(s3, "m007@llm", CTL_JSON_ALL);
    CHECK(j3 && strstr(j3->data, "\"host\":\"192.168.1.1\"") &&
          strstr(j3->data, "\"prompt_template\":\"new one\""));
    ctl_json_release(j3);
    ctl_snap_release(s2);
    ctl_snap_release(s3);
    CHECK(ctl_view_mapped_bytes() > 0); /* the view's current snapshot */
    ctl_view_free(v);
    CHECK_EQ_INT(ctl_view_mapped_bytes(), 0);
}

/* ---- heartbeat times without a rebuild ---------------------------------- */

/* The "last_heartbeat" of port `port` in a list JSON, as epoch-free text
 * (26 bytes + NUL), or "" if absent. */
static void
hb_of(const struct ctl_json *j, int port, char *out)
{
    char key[64];
    const char *p;
    const char *q;

    out[0] = '\0';
    snprintf(key, sizeof(key), "\"port\":%d,", port);
    p = strstr(j->data, key);
    if (!p || !(q = strstr(p, "\"last_heartbeat\":\"")) || strlen(q) < 18 + 26) {
        return;
    }
    memcpy(out, q + 18, 26);
    out[26] = '\0';
}

static bool
well_formed(const char *t)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddddd";

    for (int i = 0; i < 26; i++) {
        if (shape[i] == 'd' ? (t[i] < '0' || t[i] > '9') : t[i] != shape[i]) {
            return false;
        }
    }
    return t[26] == '\0';
}

struct hb_stress {
    struct ctl_view *v;
    _Atomic bool stop;
    _Atomic long reads;
    _Atomic long bad;
};

/* Lists while heartbeats patch: every time is whole and never goes back. */
static void *
hb_reader(void *arg)
{
    struct hb_stress *st = arg;
    char last[32] = "";
    char t[32];

    while (!atomic_load(&st->stop)) {
        struct ctl_snap *s = ctl_view_acquire(st->v);
        struct ctl_json *j = ctl_snap_json(s, "m@llm", CTL_JSON_ALL);
        struct ctl_json *k = ctl_snap_json(s, NULL, CTL_JSON_ROUTABLE);
        hb_of(j, 7, t);
        if (!well_formed(t) || strcmp(t, last) < 0) {
            atomic_fetch_add(&st->bad, 1);
        }
        memcpy(last, t, sizeof(last));
        hb_of(k, 7, t);
        atomic_fetch_add(&st->bad, !well_formed(t));
        ctl_json_release(j);
        ctl_json_release(k);
        ctl_snap_release(s);
        atomic_fetch_add(&st->reads, 1);
    }
    return NULL;
}

static void
test_heartbeat_listed_at_once(void)
{
    struct hb_stress st = {.v = view(100000, NULL)};
    struct reg_op reg[50];
    pthread_t th[2];
    char before[32];
    char after[32];

    CHECK(st.v);
    atomic_init(&st.stop, false);
    atomic_init(&st.reads, 0);
    atomic_init(&st.bad, 0);
    for (int i = 0; i < 50; i++) {
        reg[i] = op(REG_OP_REGISTER, "10.0.0.1", i + 1);
    }
    ctl_view_apply_ops(st.v, reg, 50);
    struct ctl_snap *s0 = ctl_view_acquire(st.v);
    struct ctl_model_snap *m0 = (struct ctl_model_snap *)ctl_snap_model(s0, "m@llm");
    struct ctl_json *j0 = ctl_snap_json(s0, "m@llm", CTL_JSON_ALL);
    CHECK(m0 && j0 && j0->npatch == 50);
    hb_of(j0, 7, before);
    CHECK(well_formed(before));
    ctl_json_release(j0);
    ctl_snap_release(s0);

    /* a heartbeat: no new model snapshot, yet the next list has its time */
    struct timespec ms5 = {0, 5000000};
    nanosleep(&ms5, NULL);
    struct reg_op hb = op(REG_OP_HEARTBEAT, "10.0.0.1", 7);
    ctl_view_apply_ops(st.v, &hb, 1);
    struct ctl_snap *s1 = ctl_view_acquire(st.v);
    CHECK(ctl_snap_model(s1, "m@llm") == m0);
    struct ctl_json *j1 = ctl_snap_json(s1, "m@llm", CTL_JSON_ALL);
    struct ctl_json *f1 = ctl_snap_json(s1, NULL, CTL_JSON_FULL_ALL);
    hb_of(j1, 7, after);
    CHECK(well_formed(after) && strcmp(after, before) > 0);
    hb_of(f1, 7, before); /* view=full: the same time */
    CHECK(strcmp(after, before) == 0);
    ctl_json_release(j1);
    ctl_json_release(f1);
    ctl_snap_release(s1);

    /* readers while heartbeats patch (TSan: no race; no torn time) */
    for (int i = 0; i < 2; i++) {
        CHECK(pthread_create(&th[i], NULL, hb_reader, &st) == 0);
    }
    for (int round = 0; round < 300; round++) {
        struct reg_op b[3] = {op(REG_OP_HEARTBEAT, "10.0.0.1", 7),
                              op(REG_OP_HEARTBEAT, "10.0.0.1", 1 + round % 50),
                              op(REG_OP_HEARTBEAT, "10.0.0.1", 50)};
        ctl_view_apply_ops(st.v, b, 3);
        if (round % 100 == 99) {
            struct reg_op n = op(REG_OP_REGISTER, "10.0.0.2", round); /* a rebuild */
            ctl_view_apply_ops(st.v, &n, 1);
        }
    }
    while (atomic_load(&st.reads) < 20) {
        nanosleep(&ms5, NULL);
    }
    atomic_store(&st.stop, true);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
    }
    CHECK_EQ_INT(atomic_load(&st.bad), 0);
    ctl_view_free(st.v);
}

/* The listed heartbeat time of port 7 (m@llm) in the current snapshot. */
static void
listed_hb(struct ctl_view *v, char *out)
{
    struct ctl_snap *s = ctl_view_acquire(v);
    struct ctl_json *j = ctl_snap_json(s, "m@llm", CTL_JSON_ALL);

    hb_of(j, 7, out);
    ctl_json_release(j);
    ctl_snap_release(s);
}

/* A poll that reads back a heartbeat committed here places it, from its
 * age, up to the query's duration after the commit time the view holds:
 * that is the same beat, and its listed time does not move (the lists made
 * between two polls agree). A later beat (another controller's) moves it. */
static void
test_own_heartbeat_read_back(void)
{
    struct ctl_view *v = view(100, NULL);
    struct reg_op o = op(REG_OP_REGISTER, "10.0.0.1", 7);
    char before[32];
    char after[32];

    CHECK(v);
    ctl_view_apply_ops(v, &o, 1);
    o.kind = REG_OP_HEARTBEAT;
    ctl_view_apply_ops(v, &o, 1);
    int64_t c = util_mono_ms(); /* at or after the commit */
    listed_hb(v, before);
    CHECK(well_formed(before));

    /* sent at c, back at c + 100; the row aged 50 ms at the statement:
     * placed at c + 50, within the query's 100 ms of the commit */
    struct reg_instance r = row("m@llm", "10.0.0.1", 7);
    struct reg_row rr;
    int64_t db_now = util_wall_ms();
    r.age_ms = 50;
    r.last_heartbeat_ms = db_now - 50;
    reg_row_from_instance(&rr, &r);
    uint64_t token = ctl_view_refresh_begin(v);
    CHECK_EQ_INT(ctl_view_refresh_apply(v, token, &rr, 1, false, db_now, c, c + 100), 0);
    listed_hb(v, after);
    CHECK(strcmp(after, before) == 0);

    /* a later beat: 2 s after the commit, read by a 10 ms query */
    r.age_ms = 0;
    r.last_heartbeat_ms = db_now + 2000;
    reg_row_from_instance(&rr, &r);
    token = ctl_view_refresh_begin(v);
    CHECK_EQ_INT(ctl_view_refresh_apply(v, token, &rr, 1, false, db_now + 2000, c + 1990, c + 2000),
                 0);
    listed_hb(v, after);
    CHECK(well_formed(after) && strcmp(after, before) > 0);
    ctl_view_free(v);
}

/* The number after "key": in j (e.g. "heartbeat_age_ms") of the first
 * instance whose port is `port`; -1 if none. */
static long long
field_of(const struct ctl_json *j, int port, const char *key)
{
    char pat[32];
    const char *p;

    snprintf(pat, sizeof(pat), "\"port\":%d,", port);
    p = strstr(j->data, pat);
    p = p ? strstr(p, key) : NULL;
    if (!p) {
        return -1;
    }
    p += strlen(key) + 2; /* the key's closing quote and the colon */
    while (*p == ' ') {
        p++;
    }
    return strtoll(p, NULL, 10);
}

/* A full refresh that finds the rows as they were rebuilds nothing (the
 * model snapshot and its cached JSON stay); one whose load moved rebuilds
 * that model only; the listed ages still grow with time (re-patched once
 * CTL_AGE_FRESH_MS old, no rebuild). */
static void
test_full_refresh_rebuilds_changed_load_only(void)
{
    struct ctl_view *v = view(1000, NULL);
    struct reg_instance rows[4];

    CHECK(v);
    for (int i = 0; i < 4; i++) {
        rows[i] = row(i < 2 ? "a@llm" : "b@llm", "10.0.0.1", i + 1);
        rows[i].age_ms = 100;
    }
    refresh(v, rows, 4, true);
    struct ctl_snap *s0 = ctl_view_acquire(v);
    const struct ctl_model_snap *a0 = ctl_snap_model(s0, "a@llm");
    const struct ctl_model_snap *b0 = ctl_snap_model(s0, "b@llm");
    struct ctl_json *f0 = ctl_snap_json(s0, "a@llm", CTL_JSON_FULL_ALL);
    CHECK(a0 && b0 && f0);
    long long age0 = field_of(f0, 1, "heartbeat_age_ms");
    CHECK(age0 >= 100 && age0 < 1000);

    /* the same rows again (the database ages them: the same times) */
    refresh(v, rows, 4, true);
    struct ctl_snap *s1 = ctl_view_acquire(v);
    CHECK(ctl_snap_model(s1, "a@llm") == a0);
    CHECK(ctl_snap_model(s1, "b@llm") == b0);
    struct ctl_json *f1 = ctl_snap_json(s1, "a@llm", CTL_JSON_FULL_ALL);
    CHECK(f1 == f0); /* the cached list itself: nothing was rebuilt or patched */

    /* b's load moved: b rebuilt, with the new load; a kept */
    rows[3].in_flight = 7;
    refresh(v, rows, 4, true);
    struct ctl_snap *s2 = ctl_view_acquire(v);
    CHECK(ctl_snap_model(s2, "a@llm") == a0);
    CHECK(ctl_snap_model(s2, "b@llm") != b0);
    struct ctl_json *fb = ctl_snap_json(s2, "b@llm", CTL_JSON_FULL_ALL);
    CHECK(fb && field_of(fb, 4, "in_flight") == 7);

    /* time passes, no heartbeat, no rebuild: the next list shows older ages */
    struct timespec wait = {CTL_AGE_FRESH_MS / 1000,
                            (CTL_AGE_FRESH_MS % 1000) * 1000000 + 50000000};
    nanosleep(&wait, NULL);
    struct ctl_json *f3 = ctl_snap_json(s2, "a@llm", CTL_JSON_FULL_ALL);
    CHECK(f3 && f3 != f0 && f3->len == f0->len);
    CHECK(field_of(f3, 1, "heartbeat_age_ms") >= age0 + CTL_AGE_FRESH_MS);
    /* DB-GPT's form shows no age: cached as it was */
    struct ctl_json *d1 = ctl_snap_json(s2, "a@llm", CTL_JSON_ALL);
    struct ctl_json *d2 = ctl_snap_json(s2, "a@llm", CTL_JSON_ALL);
    CHECK(d1 && d1 == d2);

    ctl_json_release(d1);
    ctl_json_release(d2);
    ctl_json_release(f3);
    ctl_json_release(fb);
    ctl_json_release(f1);
    ctl_json_release(f0);
    ctl_snap_release(s2);
    ctl_snap_release(s1);
    ctl_snap_release(s0);
    ctl_view_free(v);
}

/* Models that stop changing one after another would each keep the mapping
 * of the publish that last rebuilt them: the survivors of a mapping that
 * is mostly released are rebuilt, so the mappings stay within about twice
 * what the snapshots use. */
static void
test_quiet_models_free_their_mapping(void)
{
    enum { N = 30000, MODELS = 60, ROUNDS = 8 };
    static struct reg_instance rows[N];
    struct ctl_view *v = view(100000, NULL);
    char name[64];
    char host[64];

    CHECK(v);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "q%03d@llm", i % MODELS);
        snprintf(host, sizeof(host), "10.%d.%d.%d", i / 65536, i / 256 % 256, i % 256);
        rows[i] = row(name, host, 8000);
    }
    CHECK_EQ_INT(ctl_view_mapped_bytes(), 0);
    refresh(v, rows, N, true);
    int64_t whole = ctl_view_mapped_bytes(); /* every model in one mapping */
    CHECK(whole > 1024 * 1024);
    int64_t most = whole;
    for (int r = 1; r <= ROUNDS; r++) {
        /* models from r * 5 on report new load; those below went quiet */
        for (int i = 0; i < N; i++) {
            rows[i].in_flight = i % MODELS >= r * 5 ? r : rows[i].in_flight;
        }
        refresh(v, rows, N, true);
        int64_t now = ctl_view_mapped_bytes();
        most = now > most ? now : most;
    }
    CHECK(most <= whole * 5 / 2);
    /* and every instance is still listed, with its last load */
    struct ctl_snap *s = ctl_view_acquire(v);
    CHECK_EQ_INT(s->n_instances, N);
    const struct ctl_model_snap *q59 = ctl_snap_model(s, "q059@llm");
    const struct ctl_model_snap *q7 = ctl_snap_model(s, "q007@llm");
    CHECK(q59 && q59->v[0].rec.in_flight == ROUNDS);
    CHECK(q7 && q7->v[0].rec.in_flight == 1); /* quiet since round 2 */
    ctl_snap_release(s);
    ctl_view_free(v);
    CHECK_EQ_INT(ctl_view_mapped_bytes(), 0);
}

static struct reg_op
op_model(enum reg_op_kind kind, const char *model, int port)
{
    struct reg_op o = op(kind, "10.0.0.1", port);

    util_strlcpy(o.inst.model_name, model, sizeof(o.inst.model_name));
    return o;
}

static void
test_versions_and_delta(void)
{
    struct ctl_view *v = view(1000, NULL);
    struct reg_op reg[5] = {
        op_model(REG_OP_REGISTER, "a@llm", 1), op_model(REG_OP_REGISTER, "a@llm", 2),
        op_model(REG_OP_REGISTER, "a@llm", 3), op_model(REG_OP_REGISTER, "b@llm", 1),
        op_model(REG_OP_REGISTER, "c@llm", 1)};
    struct reg_instance rows[5];
    char tok[48];
    char bad[48];
    uint64_t since = 0;
    bool full = false;

    CHECK(v);
    ctl_view_apply_ops(v, reg, 5);
    struct ctl_snap *s1 = ctl_view_acquire(v);
    uint64_t va = ctl_snap_model(s1, "a@llm")->version;
    CHECK(va > 0 && va == s1->version);
    ctl_snap_token(s1, tok, sizeof(tok));
    CHECK(ctl_snap_since(s1, tok, &since) && since == s1->version);
    /* another epoch, a version not reached, garbage */
    snprintf(bad, sizeof(bad), "%016llx-%llu", (unsigned long long)(s1->epoch ^ 1),
             (unsigned long long)s1->version);
    CHECK(!ctl_snap_since(s1, bad, &since));
    snprintf(bad, sizeof(bad), "%016llx-%llu", (unsigned long long)s1->epoch,
             (unsigned long long)s1->version + 1);
    CHECK(!ctl_snap_since(s1, bad, &since));
    CHECK(!ctl_snap_since(s1, "", &since) && !ctl_snap_since(s1, "0123", &since));
    snprintf(bad, sizeof(bad), "%016llx-", (unsigned long long)s1->epoch);
    CHECK(!ctl_snap_since(s1, bad, &since));

    /* a full refresh whose rows carry new load rebuilds every model but
     * routes alike: the versions stay, the delta is empty */
    for (int i = 0; i < 5; i++) {
        rows[i] = reg[i].inst;
        rows[i].in_flight = 3;
    }
    CHECK_EQ_INT(refresh(v, rows, 5, true), 0);
    struct ctl_snap *s2 = ctl_view_acquire(v);
    CHECK(s2->version > s1->version);
    CHECK(ctl_snap_model(s2, "a@llm") != ctl_snap_model(s1, "a@llm"));
    CHECK(ctl_snap_model(s2, "a@llm")->version == va);
    struct ctl_json *d = ctl_snap_delta_json(s2, s1->version, CTL_JSON_FULL_ALL, &full);
    CHECK(d && !full);
    CHECK(d && strstr(d->data, "\"changed\":[],\"instances\":[]}") != NULL);
    CHECK(d && strstr(d->data, "\"models\":[\"a@llm\",\"b@llm\",\"c@llm\"]") != NULL);
    ctl_json_release(d);

    /* a weight change of b, c removed: b changed, c gone from the names */
    struct reg_op ch[2] = {op_model(REG_OP_ADMIN, "b@llm", 1), op_model(REG_OP_REMOVE, "c@llm", 1)};
    ch[0].admin_enabled = -1;
    ch[0].admin_weight = REG_WEIGHT_SET;
    ch[0].admin_weight_value = 2.0;
    ctl_view_apply_ops(v, ch, 2);
    struct ctl_snap *s3 = ctl_view_acquire(v);
    CHECK(ctl_snap_model(s3, "b@llm")->version == s3->version);
    CHECK(ctl_snap_model(s3, "a@llm")->version == va);
    d = ctl_snap_delta_json(s3, s1->version, CTL_JSON_FULL_ALL, &full);
    CHECK(d && !full);
    CHECK(d && strstr(d->data, "\"models\":[\"a@llm\",\"b@llm\"],\"changed\":[\"b@llm\"]") != NULL);
    CHECK(d && strstr(d->data, "\"weight\":2.0") != NULL &&
          strstr(d->data, "a@llm\",\"host") == NULL);
    ctl_json_release(d);
    /* since 0 everything changed: the full list is the smaller answer */
    d = ctl_snap_delta_json(s3, 0, CTL_JSON_FULL_ALL, &full);
    CHECK(!d && full);
    ctl_snap_release(s1);
    ctl_snap_release(s2);
    ctl_snap_release(s3);
    ctl_view_free(v);
}

int
main(void)
{
    CHECK_RUN(test_local_writes_kept_table_rows_ignored);
    CHECK_RUN(test_missing);
    CHECK_RUN(test_instance_networks_at_read);
    CHECK_RUN(test_json_budget);
    CHECK_RUN(test_readers_during_merges);
    CHECK_RUN(test_large_snapshots_mapped);
    CHECK_RUN(test_heartbeat_listed_at_once);
    CHECK_RUN(test_own_heartbeat_read_back);
    CHECK_RUN(test_versions_and_delta);
    CHECK_RUN(test_full_refresh_rebuilds_changed_load_only);
    CHECK_RUN(test_quiet_models_free_their_mapping);
    return check_summary();
}
