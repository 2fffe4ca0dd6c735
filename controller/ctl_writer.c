/* SPDX-License-Identifier: MIT
 *
 * ctl_writer.c - the controller's two database threads.
 *
 * DESIGN
 * Writer. Loop threads queue ctl_job records (one per register, heartbeat,
 * deregister or admin request). The writer takes everything queued (up to
 * WRITER_MAX_BATCH) and commits it in one reg_apply transaction, so
 * heartbeats that arrive close together share one commit (group commit
 * without an artificial delay: while one batch commits, the next one
 * forms). After the commit it applies the batch to the view (so a reader
 * sees its own write at once) and posts every job back to its loop, which
 * answers the client. A failed batch fails each of its jobs with 503; the
 * registry layer has already retried it within its budget. When it failed
 * because the database is unreachable, the jobs that queued meanwhile fail
 * with it, so no write waits more than about one retry budget.
 *
 * Refresher. Polls the table: rows changed or heartbeated since the last
 * poll every view_poll_ms (other controllers' registrations,
 * deregistrations, admin changes, and heartbeat times, which the view
 * stores without a rebuild), the whole table every view_refresh_ms (ages,
 * load, deletions), and runs the idempotent sweep every
 * heartbeat_interval_secs.
 * Before its first success it applies the schema migrations.
 *
 * Admission (--max_instances). The table is the truth: the view may lag
 * behind rows other controllers (or DB-GPT's) wrote. Before a batch whose
 * registrations or heartbeats name keys the view does not hold, the writer
 * counts the table's rows (one COUNT on its own connection) and admits new
 * keys, in arrival order and each key once however often the batch repeats
 * it, while max(table rows, view instances) + admitted < --max_instances;
 * the others are answered 409 registry_full before anything is written.
 * Within one controller this is exact (the writer is its only writer).
 * Controllers sharing a table each count before they commit, so batches
 * committing at the same moment on different controllers can each take
 * the last free rows: the table may then pass the bound by the new keys
 * of such racing batches; every committed row is in the committing
 * controller's view (it never answers 200 for a row it drops), and the
 * others hold at most --max_instances rows read from the table.
 *
 * Refresher counts. A poll compares the table's row count with the view's:
 * a difference it did not expect means rows were deleted elsewhere (or
 * written by a DB-GPT controller, which leaves roster_updated_ms alone) and
 * forces a full read. What a full read leaves unequal (rows the full view
 * ignored, a NULL and an '' sys_code row for one key) is remembered as the
 * expected difference, so a table over the bound costs one full read, not
 * one per poll.
 *
 * Threads and locks. Both threads block on the database and take the
 * view's master lock (ctl_view.c) for as long as a merge takes; `mu` of
 * each (the writer's queue, the refresher's stop flag) is held only to
 * link or unlink jobs or test a flag, never across a query: loop threads
 * take the writer's `mu` in ctl_writer_submit and ctl_writer_queue_len,
 * and the server's db.mu (a few fields copied) in health. Nothing else.
 *
 * Each thread owns its own reg_store (one connection) for its lifetime.
 */
#include "ctl.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOG_MODULE "controller"
#include "log.h"
#include "util.h"

#define WRITER_MAX_BATCH 512
#define POLL_SLACK_MS    5000 /* re-read changes this far back: slow commits */
/* Re-read heartbeats this far back: a heartbeat's time is taken when its
 * statement runs and becomes visible at commit, so a commit slower than
 * this is seen by the next full read instead (at most --view_refresh_ms,
 * and never later than a third of the shortest lease). Every poll reads
 * the heartbeats of (poll interval + this): kept short, as it is paid in
 * rows per heartbeat by every controller. On a table DB-GPT created
 * (last_heartbeat DATETIME, truncated to the second) most heartbeats
 * written elsewhere reach the list with the full read. */
#define HB_POLL_SLACK_MS        250
#define WRITER_ANSWER_MARGIN_MS 100 /* of the write's time bound, kept for answering */

struct ctl_writer {
    struct ctl_server *srv;
    struct reg_store *store;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct ctl_job *head;
    struct ctl_job *tail;
    size_t qlen;
    size_t last_n;  /* writes in the last batch */
    bool gathering; /* the writer is waiting for a batch to fill */
    bool stop;
    struct reg_stats last_stats;
};

static void
add_stats(struct ctl_server *srv, struct reg_store *st, struct reg_stats *last)
{
    struct reg_stats now;

    reg_get_stats(st, &now);
    atomic_fetch_add(&srv->metrics.db_reconnects, now.reconnects - last->reconnects);
    atomic_fetch_add(&srv->metrics.db_retries, now.retries - last->retries);
    *last = now;
}

void
ctl_db_note(struct ctl_server *srv, int rc, const char *err)
{
    bool was;

    pthread_mutex_lock(&srv->db.mu);
    was = srv->db.reachable;
    if (rc == REG_OK) {
        srv->db.reachable = true;
        srv->db.last_ok_mono_ms = util_mono_ms();
        srv->db.last_error[0] = '\0';
    } else if (rc != REG_EBUSY && rc != REG_EINVAL && rc != REG_ENOTFOUND) {
        srv->db.reachable = false;
        util_strlcpy(srv->db.last_error, err ? err : reg_strerror(rc), sizeof(srv->db.last_error));
    }
    bool now = srv->db.reachable;
    pthread_mutex_unlock(&srv->db.mu);
    if (was && !now) {
        log_error("registry database unreachable: %s", err ? err : reg_strerror(rc));
    } else if (!was && now) {
        log_info("registry database reachable");
    }
}

/* ---- writer ---------------------------------------------------------------- */

static bool
same_key(const struct reg_op *a, const struct reg_op *b)
{
    return a->inst.port == b->inst.port && strcmp(a->inst.host, b->inst.host) == 0 &&
           strcmp(a->inst.model_name, b->inst.model_name) == 0;
}

/* Posts a job back to its loop with `rc`. */
static void
finish(struct ctl_job *job, int rc, const char *errmsg)
{
    job->rc = rc;
    if (errmsg) {
        util_strlcpy(job->errmsg, errmsg, sizeof(job->errmsg));
    }
    http_loop_post(job->loop, &job->task);
}

/* Admission against --max_instances (see DESIGN): answers 409 to the jobs
 * whose new keys do not fit, and compacts the rest (jobs and ops) to the
 * front; *n_io becomes how many remain. Returns REG_OK, or the error of
 * the count (every job has then been failed with it). */
static int
admit(struct ctl_writer *w, struct ctl_job **jobs, struct reg_op *ops, size_t *n_io,
      int64_t deadline_mono_ms)
{
    struct ctl_server *srv = w->srv;
    size_t n = *n_io;
    bool missing[WRITER_MAX_BATCH];
    size_t in_view = 0;
    int64_t table_rows = 0;
    int64_t used;
    size_t keep = 0;
    size_t admitted = 0;
    int rc;

    if (ctl_view_missing(srv->view, ops, n, missing, &in_view) == 0) {
        return REG_OK; /* every key is known: no row can be added */
    }
    rc = reg_table_rows_until(w->store, deadline_mono_ms, &table_rows);
    add_stats(srv, w->store, &w->last_stats);
    if (rc != REG_OK) {
        ctl_db_note(srv, rc, reg_errmsg(w->store));
        for (size_t i = 0; i < n; i++) {
            finish(jobs[i], rc, reg_errmsg(w->store));
        }
        atomic_fetch_add(&srv->metrics.writes_failed, n);
        *n_io = 0;
        return rc;
    }
    used = table_rows > (int64_t)in_view ? table_rows : (int64_t)in_view;
    for (size_t i = 0; i < n; i++) {
        bool ok = !missing[i];
        for (size_t k = 0; !ok && k < keep; k++) {
            ok = missing[k] && same_key(&ops[k], &ops[i]); /* admitted earlier in this batch */
        }
        if (!ok && used + (int64_t)admitted < srv->cfg->max_instances) {
            ok = true;
            admitted++;
        }
        if (!ok) {
            atomic_fetch_add(&srv->metrics.rejected_full, 1);
            finish(jobs[i], CTL_RC_FULL, NULL);
            continue;
        }
        missing[keep] = missing[i];
        ops[keep] = ops[i];
        jobs[keep++] = jobs[i];
    }
    *n_io = keep;
    return REG_OK;
}

static int
process_batch(struct ctl_writer *w, struct ctl_job **jobs, size_t n)
{
    struct ctl_server *srv = w->srv;
    struct reg_op *ops = malloc(n * sizeof(*ops));
    int64_t t0 = util_mono_ms();
    int rc;

    if (ops) {
        for (size_t i = 0; i < n; i++) {
            ops[i] = jobs[i]->op;
        }
        /* the batch answers by its oldest write's arrival + the budget,
         * less a little for posting the answers (docs/operations.md); the
         * count of admission and the transaction share it */
        int64_t deadline =
            jobs[0]->enqueued_us / 1000 + srv->regcfg.retry_budget_ms - WRITER_ANSWER_MARGIN_MS;
        rc = admit(w, jobs, ops, &n, deadline);
        if (rc != REG_OK || n == 0) {
            free(ops);
            return rc;
        }
        rc = reg_apply_until(w->store, ops, n, deadline);
        add_stats(srv, w->store, &w->last_stats);
    } else {
        rc = REG_ENOMEM;
    }
    int64_t t1 = util_mono_ms();
    metrics_hist_observe_us(&srv->metrics.commit_latency, (t1 - t0) * 1000);
    atomic_fetch_add(&srv->metrics.batches, 1);
    atomic_fetch_add(&srv->metrics.batch_ops, n);
    if (rc == REG_OK) {
        ctl_view_apply_ops(srv->view, ops, n);
    }
    ctl_db_note(srv, rc, ops ? reg_errmsg(w->store) : "out of memory");
    for (size_t i = 0; i < n; i++) {
        struct ctl_job *job = jobs[i];
        job->rc = rc;
        if (rc == REG_OK) {
            job->op.rc = ops[i].rc;
            atomic_fetch_add(&srv->metrics.writes_ok[job->op.kind], 1);
        } else {
            util_strlcpy(job->errmsg, ops ? reg_errmsg(w->store) : "out of memory",
                         sizeof(job->errmsg));
            atomic_fetch_add(&srv->metrics.writes_failed, 1);
        }
        metrics_hist_observe_us(&srv->metrics.write_latency,
                                (int64_t)(t1 * 1000) - job->enqueued_us);
        http_loop_post(job->loop, &job->task);
    }
    free(ops);
    return rc;
}

/* Fails every queued job with REG_EUNAVAIL, untried: they queued while a
 * batch spent its whole retry budget on an unreachable database, and
 * trying them now would make them wait one more budget (clients would
 * time out instead of getting a 503 they can act on). */
static void
fail_queued(struct ctl_writer *w)
{
    struct ctl_server *srv = w->srv;
    struct ctl_job *job;

    pthread_mutex_lock(&w->mu);
    job = w->head;
    w->head = w->tail = NULL;
    w->qlen = 0;
    pthread_mutex_unlock(&w->mu);
    while (job) {
        struct ctl_job *next = job->next;
        job->rc = REG_EUNAVAIL;
        util_strlcpy(job->errmsg, "not tried: the previous batch found the database unreachable",
                     sizeof(job->errmsg));
        atomic_fetch_add(&srv->metrics.writes_failed, 1);
        http_loop_post(job->loop, &job->task);
        job = next;
    }
}

/* Group commit (as MariaDB's binlog_commit_wait_usec, PostgreSQL's
 * commit_delay): when the last batch held several writes, more are on their
 * way, so wait up to --write_gather_us for them before committing. A commit
 * costs the database about the same for 10 rows as for 40, so under load
 * this raises the write rate; an idle controller never waits. Called with
 * w->mu held. */
static void
gather(struct ctl_writer *w)
{
    int64_t us = w->srv->cfg->write_gather_us;
    struct timespec ts;

    if (us <= 0 || w->last_n < 2 || w->qlen >= WRITER_MAX_BATCH) {
        return;
    }
    util_deadline_us(us, &ts);
    w->gathering = true;
    while (!w->stop && w->qlen < WRITER_MAX_BATCH &&
           pthread_cond_timedwait(&w->cond, &w->mu, &ts) == 0) {
    }
    w->gathering = false;
}

static void *
writer_main(void *arg)
{
    struct ctl_writer *w = arg;
    struct ctl_job *batch[WRITER_MAX_BATCH];

    for (;;) {
        size_t n = 0;

        pthread_mutex_lock(&w->mu);
        while (!w->head && !w->stop) {
            pthread_cond_wait(&w->cond, &w->mu);
        }
        if (!w->head) {
            pthread_mutex_unlock(&w->mu);
            break; /* stopping, and the queue is drained */
        }
        gather(w);
        while (w->head && n < WRITER_MAX_BATCH) {
            batch[n++] = w->head;
            w->head = w->head->next;
        }
        if (!w->head) {
            w->tail = NULL;
        }
        w->qlen -= n;
        w->last_n = n;
        pthread_mutex_unlock(&w->mu);
        if (process_batch(w, batch, n) == REG_EUNAVAIL) {
            fail_queued(w);
        }
    }
    reg_thread_end();
    return NULL;
}

int
ctl_writer_new(struct ctl_server *srv, struct ctl_writer **out)
{
    struct ctl_writer *w = calloc(1, sizeof(*w));

    *out = NULL;
    if (!w) {
        return -1;
    }
    w->srv = srv;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    if (reg_open(&srv->regcfg, &w->store) != REG_OK) {
        ctl_writer_free(w);
        return -1;
    }
    *out = w;
    return 0;
}

int
ctl_writer_start(struct ctl_writer *w)
{
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        return -1;
    }
    w->started = true;
    return 0;
}

bool
ctl_writer_submit(struct ctl_writer *w, struct ctl_job *job)
{
    bool ok;

    job->next = NULL;
    job->enqueued_us = util_mono_ms() * 1000;
    pthread_mutex_lock(&w->mu);
    ok = !w->stop && (int64_t)w->qlen < w->srv->cfg->max_queue;
    if (ok) {
        if (w->tail) {
            w->tail->next = job;
        } else {
            w->head = job;
        }
        w->tail = job;
        w->qlen++;
        if (!w->gathering || w->qlen >= WRITER_MAX_BATCH) {
            pthread_cond_signal(&w->cond);
        }
    }
    pthread_mutex_unlock(&w->mu);
    return ok;
}

size_t
ctl_writer_queue_len(struct ctl_writer *w)
{
    size_t n;

    pthread_mutex_lock(&w->mu);
    n = w->qlen;
    pthread_mutex_unlock(&w->mu);
    return n;
}

void
ctl_writer_stop(struct ctl_writer *w)
{
    if (!w || !w->started) {
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    w->started = false;
}

void
ctl_writer_free(struct ctl_writer *w)
{
    if (!w) {
        return;
    }
    ctl_writer_stop(w);
    reg_close(w->store);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cond);
    free(w);
}

/* ---- refresher ------------------------------------------------------------- */
struct ctl_refresher {
    struct ctl_server *srv;
    struct reg_store *store;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;
    bool migrated;
    int64_t last_full_mono;
    int64_t last_sweep_mono;
    int64_t poll_since_ms; /* database time */
    int64_t hb_since_ms;   /* database time: heartbeats since (-1: none yet) */
    int64_t count_offset;  /* table rows - view instances after the last full read */
    struct reg_stats last_stats;
};

static int
do_refresh(struct ctl_refresher *r, bool full)
{
    struct ctl_server *srv = r->srv;
    int64_t t0 = util_mono_ms();
    int64_t t0_us = util_mono_us();
    uint64_t token = ctl_view_refresh_begin(srv->view);
    int64_t db_now = 0;
    int64_t table_rows = 0;
    int rc;

    const struct reg_row *rows = NULL;
    size_t nrows = 0;
    /* the rows stay in the store's array (no copy): valid until its next call */
    rc = reg_list_rows(r->store, full ? -1 : r->poll_since_ms, r->hb_since_ms, &rows, &nrows,
                       &db_now, &table_rows);
    add_stats(srv, r->store, &r->last_stats);
    ctl_db_note(srv, rc, reg_errmsg(r->store));
    atomic_fetch_add(&srv->metrics.refreshes, 1);
    if (full) {
        atomic_fetch_add(&srv->metrics.full_refreshes, 1);
    }
    if (rc != REG_OK) {
        atomic_fetch_add(&srv->metrics.refresh_errors, 1);
        ctl_view_set_db_reachable(srv->view, false);
        return rc;
    }
    int64_t t1 = util_mono_ms();
    metrics_hist_observe_us(&srv->metrics.refresh_latency, (t1 - t0) * 1000);
    ctl_view_set_db_reachable(srv->view, true);
    size_t ignored = ctl_view_refresh_apply(srv->view, token, rows, nrows, full, db_now, t0, t1);
    r->poll_since_ms = db_now - POLL_SLACK_MS;
    r->hb_since_ms = db_now - HB_POLL_SLACK_MS;
    int64_t offset = table_rows - (int64_t)ctl_view_count(srv->view);
    if (full) {
        metrics_hist_observe_us(&srv->metrics.full_refresh_latency, util_mono_us() - t0_us);
        r->last_full_mono = t1;
        if (ignored > 0 && r->count_offset != offset) {
            log_warn("the registry table holds %lld rows; this controller's view holds at most "
                     "--max_instances=%lld and ignores %zu of them",
                     (long long)table_rows, (long long)srv->cfg->max_instances, ignored);
        }
        r->count_offset = offset; /* what a poll should find when nothing was deleted */
        atomic_store(&srv->metrics.view_ignored_rows, (int64_t)ignored);
    } else if (offset != r->count_offset) {
        /* Rows were deleted elsewhere (or written by a DB-GPT controller,
         * which leaves roster_updated_ms alone): only a full read shows
         * which. A write racing the count costs one needless full read. */
        return do_refresh(r, true);
    }
    return REG_OK;
}

static void
do_sweep(struct ctl_refresher *r)
{
    struct ctl_server *srv = r->srv;
    int marked = 0;
    int deleted = 0;
    int rc;

    if (!ctl_view_sweep_allowed(srv->view)) {
        return; /* during an outage or its grace period the stored times are stale */
    }
    rc = reg_sweep(r->store, srv->cfg->registry_gc_secs * 1000, &marked, &deleted);
    if (rc != REG_OK) {
        log_warn("registry sweep failed: %s", reg_errmsg(r->store));
        return;
    }
    atomic_fetch_add(&srv->metrics.sweep_marked, (uint64_t)marked);
    atomic_fetch_add(&srv->metrics.sweep_deleted, (uint64_t)deleted);
    if (deleted > 0) {
        log_info("registry sweep removed %d instance(s) silent for over %lld s", deleted,
                 (long long)srv->cfg->registry_gc_secs);
    }
}

/* How often the whole table is read: --view_refresh_ms, or a third of the
 * shortest lease if that is sooner (never more often than the poll). An
 * instance heartbeating through another controller every lease/3 is then
 * seen here at most two thirds of a lease after its last beat, so no lease
 * runs out in this view while the instance is beating. */
static int64_t
full_period_ms(struct ctl_refresher *r)
{
    const struct ctl_config *cfg = r->srv->cfg;
    int64_t period = cfg->view_refresh_ms;
    int64_t third = ctl_view_min_lease_ms(r->srv->view) / 3;

    if (third > 0 && third < period) {
        period = third > cfg->view_poll_ms ? third : cfg->view_poll_ms;
    }
    return period;
}

/* One pass: migrate if still needed, refresh (full or incremental), sweep. */
static void
refresher_pass(struct ctl_refresher *r)
{
    struct ctl_server *srv = r->srv;
    int64_t now = util_mono_ms();
    int rc;

    if (!r->migrated) {
        rc = reg_migrate(r->store);
        ctl_db_note(srv, rc, reg_errmsg(r->store));
        if (rc != REG_OK) {
            return;
        }
        r->migrated = true;
        log_info("registry schema is up to date");
    }
    bool full = r->last_full_mono == 0 || now - r->last_full_mono >= full_period_ms(r);
    if (do_refresh(r, full) != REG_OK) {
        return;
    }
    if (now - r->last_sweep_mono >= (int64_t)(srv->cfg->heartbeat_interval_secs * 1000)) {
        r->last_sweep_mono = now;
        do_sweep(r);
    }
}

static void *
refresher_main(void *arg)
{
    struct ctl_refresher *r = arg;
    int64_t poll_ms = r->srv->cfg->view_poll_ms;

    r->last_sweep_mono = util_mono_ms();
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        struct timespec ts;

        pthread_mutex_unlock(&r->mu);
        refresher_pass(r);
        pthread_mutex_lock(&r->mu);
        util_deadline_us(poll_ms * 1000, &ts);
        if (!r->stop) {
            pthread_cond_timedwait(&r->cond, &r->mu, &ts);
        }
    }
    pthread_mutex_unlock(&r->mu);
    reg_thread_end();
    return NULL;
}

int
ctl_refresher_new(struct ctl_server *srv, struct ctl_refresher **out)
{
    struct ctl_refresher *r = calloc(1, sizeof(*r));

    *out = NULL;
    if (!r) {
        return -1;
    }
    r->srv = srv;
    r->hb_since_ms = -1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cond, NULL);
    if (reg_open(&srv->regcfg, &r->store) != REG_OK) {
        ctl_refresher_free(r);
        return -1;
    }
    *out = r;
    return 0;
}

int
ctl_refresher_prime(struct ctl_refresher *r)
{
    int rc = reg_migrate(r->store);

    ctl_db_note(r->srv, rc, reg_errmsg(r->store));
    if (rc != REG_OK) {
        return rc;
    }
    r->migrated = true;
    return do_refresh(r, true);
}

const char *
ctl_refresher_errmsg(struct ctl_refresher *r)
{
    return reg_errmsg(r->store);
}

int
ctl_refresher_start(struct ctl_refresher *r)
{
    if (pthread_create(&r->thread, NULL, refresher_main, r) != 0) {
        return -1;
    }
    r->started = true;
    return 0;
}

void
ctl_refresher_stop(struct ctl_refresher *r)
{
    if (!r || !r->started) {
        return;
    }
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    r->started = false;
}

void
ctl_refresher_free(struct ctl_refresher *r)
{
    if (!r) {
        return;
    }
    ctl_refresher_stop(r);
    reg_close(r->store);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cond);
    free(r);
}
