/* SPDX-License-Identifier: MIT
 *
 * reg_store.c - the public registry API: configuration, validation, and the
 * one retry policy every backend shares.
 *
 * DESIGN
 * A call is a sequence of attempts until one succeeds, fails for good, or
 * the retry budget (cfg.retry_budget_ms) is spent:
 *   - connect if not connected; while the database is down, connection
 *     attempts are spaced by a capped, jittered exponential backoff that
 *     persists across calls, so a dead database costs each call at most one
 *     connect timeout instead of a storm of them;
 *   - run the backend op (one transaction);
 *   - REG_EBUSY (deadlock, lock wait): back off briefly, retry;
 *   - REG_EUNAVAIL (connection lost): disconnect, retry (reconnecting);
 *   - REG_EBACKEND / REG_ESCHEMA / REG_EINVAL: return at once.
 * Retrying a write whose COMMIT was lost is safe because every registry
 * operation is idempotent (registry.h).
 *
 * Time bound. A call has a deadline (now + the retry budget, or the
 * caller's: reg_apply_until). It bounds the whole call, not each attempt:
 *   - a connect gets at most the whole seconds left (reg__connect_secs),
 *     and none is started when less than a second is left;
 *   - with the caller's deadline (reg_apply_until), the I/O of an attempt
 *     is guarded: a watchdog thread shuts the socket down at the deadline, so a read blocked on a
 * stopped server returns then, not one read timeout later (Connector/C counts whole seconds per
 * read, and an attempt is several reads);
 *   - no retry starts after the deadline.
 * Measured with mariadbd SIGSTOPped (Connector/C 3.3, 10.11): a read
 * blocks exactly MYSQL_OPT_READ_TIMEOUT (no internal retry there), a
 * connect blocks MYSQL_OPT_CONNECT_TIMEOUT (the kernel completes the TCP
 * handshake; the greeting never comes). Before the bound, a write could
 * start a 2 s connect with 1.9 s of its 3 s budget left: 503 after 4-4.5 s.
 *
 * The watchdog only ever calls shutdown(2) on a descriptor whose guard is
 * armed; the owner disarms (under the watchdog's mutex) before it can
 * close the descriptor, so a reused descriptor number is never touched.
 *
 * Rows read. A store keeps the rows of its last list (reg_list_rows hands
 * them out without a copy) in compact form, struct reg_row: the fixed
 * fields (96 bytes) in one array, the strings at their length in 64 KiB
 * blocks, a model's name once per run of its rows. Both are reused by the
 * next read, so a full read of a large table faults no new pages; at
 * 100,000 instances that is about 11 MB where an array of reg_instance
 * (464 bytes each, strings at their column limits) held 46 MB, kept for
 * the controller's whole life.
 */
#include "reg_backend.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include <mysql.h>
#include <sqlite3.h>

static int64_t
mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
reg__mono_ms(void)
{
    return mono_ms();
}

static void
sleep_ms(int64_t ms)
{
    struct timespec ts;

    if (ms <= 0) {
        return;
    }
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A random duration in [ms/2, ms]: full jitter would allow 0. */
static int64_t
jitter(int64_t ms)
{
    uint32_t r = 0;

    if (ms <= 1) {
        return ms;
    }
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
        r = (uint32_t)mono_ms();
    }
    return ms / 2 + (int64_t)(r % (uint32_t)(ms / 2 + 1));
}

/* ---- time guard ------------------------------------------------------------ */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t thread;
    bool started;
    bool stop;
    struct reg_guard *head;
    int64_t waiting_for; /* the deadline the watchdog sleeps until; INT64_MAX: none */
} gw = {.mu = PTHREAD_MUTEX_INITIALIZER, .waiting_for = INT64_MAX};

static void *
watchdog_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&gw.mu);
    while (!gw.stop) {
        int64_t now = mono_ms();
        int64_t next = INT64_MAX;

        for (struct reg_guard *g = gw.head; g; g = g->next) {
            if (g->fired) {
                continue;
            }
            if (g->deadline_ms <= now) {
                shutdown(g->fd, SHUT_RDWR);
                g->fired = true;
            } else if (g->deadline_ms < next) {
                next = g->deadline_ms;
            }
        }
        gw.waiting_for = next;
        if (next == INT64_MAX) {
            pthread_cond_wait(&gw.cond, &gw.mu);
        } else {
            struct timespec ts = {.tv_sec = (time_t)(next / 1000),
                                  .tv_nsec = (long)(next % 1000) * 1000000L};
            pthread_cond_timedwait(&gw.cond, &gw.mu, &ts);
        }
    }
    pthread_mutex_unlock(&gw.mu);
    return NULL;
}

/* Called with gw.mu held. */
static bool
watchdog_start(void)
{
    pthread_condattr_t attr;
    bool ok;

    if (gw.started) {
        return true;
    }
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    ok = pthread_cond_init(&gw.cond, &attr) == 0;
    pthread_condattr_destroy(&attr);
    if (!ok) {
        return false;
    }
    gw.stop = false;
    if (pthread_create(&gw.thread, NULL, watchdog_main, NULL) != 0) {
        pthread_cond_destroy(&gw.cond);
        return false;
    }
    gw.started = true;
    return true;
}

static void
watchdog_stop(void)
{
    pthread_mutex_lock(&gw.mu);
    if (!gw.started) {
        pthread_mutex_unlock(&gw.mu);
        return;
    }
    gw.stop = true;
    pthread_cond_signal(&gw.cond);
    pthread_mutex_unlock(&gw.mu);
    pthread_join(gw.thread, NULL);
    pthread_mutex_lock(&gw.mu);
    pthread_cond_destroy(&gw.cond);
    gw.started = false;
    gw.waiting_for = INT64_MAX;
    pthread_mutex_unlock(&gw.mu);
}

void
reg__guard_arm(struct reg_store *st, int fd)
{
    struct reg_guard *g = &st->guard;

    if (g->armed || fd < 0 || st->deadline_ms <= 0) {
        return;
    }
    g->fd = fd;
    g->deadline_ms = st->deadline_ms;
    g->fired = false;
    pthread_mutex_lock(&gw.mu);
    if (watchdog_start()) {
        g->next = gw.head;
        gw.head = g;
        g->armed = true;
        /* deadlines mostly grow: wake the watchdog only for an earlier one */
        if (g->deadline_ms < gw.waiting_for) {
            pthread_cond_signal(&gw.cond);
        }
    }
    pthread_mutex_unlock(&gw.mu);
}

bool
reg__guard_disarm(struct reg_store *st)
{
    struct reg_guard *g = &st->guard;
    bool fired;

    if (!g->armed) {
        return false;
    }
    pthread_mutex_lock(&gw.mu);
    for (struct reg_guard **pp = &gw.head; *pp; pp = &(*pp)->next) {
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    }
    fired = g->fired;
    g->armed = false;
    g->next = NULL;
    pthread_mutex_unlock(&gw.mu);
    return fired;
}

unsigned int
reg__connect_secs(const struct reg_store *st)
{
    int ms = st->cfg.connect_timeout_ms;
    unsigned int secs = ms <= 0 ? 1 : (unsigned int)((ms + 999) / 1000);

    if (st->deadline_ms > 0) {
        int64_t left = st->deadline_ms - mono_ms();
        unsigned int left_s = left <= 0 ? 0 : (unsigned int)(left / 1000);
        if (left_s < secs) {
            secs = left_s;
        }
        if (secs == 0 && left > 0 && st->deadline_ms - st->call_start_ms < 1000) {
            secs = 1; /* a bound under a second: connects are rounded up */
        }
    }
    return secs;
}

const char *
reg_strerror(int rc)
{
    switch (rc) {
    case REG_OK:
        return "ok";
    case REG_EINVAL:
        return "invalid argument";
    case REG_ENOMEM:
        return "out of memory";
    case REG_ENOTFOUND:
        return "no such instance";
    case REG_EUNAVAIL:
        return "database unavailable";
    case REG_EBUSY:
        return "database busy (lock contention)";
    case REG_EBACKEND:
        return "database error";
    case REG_ESCHEMA:
        return "registry schema error";
    default:
        return "unknown error";
    }
}

void
reg__set_err(struct reg_store *st, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(st->errmsg, sizeof(st->errmsg), fmt, ap);
    va_end(ap);
}

const char *
reg_errmsg(const struct reg_store *st)
{
    return st->errmsg;
}

void
reg_get_stats(const struct reg_store *st, struct reg_stats *out)
{
    *out = st->stats;
}

/* Strings of collected rows go into blocks of this size (a row's three
 * strings take at most 3 * 129 bytes, far less than a block). */
#define STRBLOCK_BYTES (64 * 1024)

/* A copy of `s` (len bytes and a NUL) in the row set's blocks; NULL when
 * memory ran out. */
static const char *
rows_strdup(struct reg_rows *rows, const char *s, size_t len)
{
    struct reg_strblock *b = rows->cur;
    char *p;

    if (!b || b->cap - b->used < len + 1) {
        if (b && b->next) {
            b = b->next; /* a block kept from an earlier read */
            b->used = 0;
        } else {
            struct reg_strblock *nb = malloc(sizeof(*nb) + STRBLOCK_BYTES);
            if (!nb) {
                return NULL;
            }
            nb->next = NULL;
            nb->used = 0;
            nb->cap = STRBLOCK_BYTES;
            if (b) {
                b->next = nb;
            } else {
                rows->blocks = nb;
            }
            b = nb;
        }
        rows->cur = b;
    }
    p = b->data + b->used;
    memcpy(p, s, len);
    p[len] = '\0';
    b->used += len + 1;
    return p;
}

void
reg_row_from_instance(struct reg_row *out, const struct reg_instance *in)
{
    out->model_name = in->model_name;
    out->host = in->host;
    out->prompt_template = in->has_prompt_template ? in->prompt_template : NULL;
    out->weight = in->weight;
    out->weight_override = in->weight_override;
    out->last_heartbeat_ms = in->last_heartbeat_ms;
    out->age_ms = in->age_ms;
    out->updated_ms = in->updated_ms;
    out->port = in->port;
    out->lease_ms = in->lease_ms;
    out->in_flight = in->in_flight;
    out->queue_length = in->queue_length;
    out->capacity = in->capacity;
    out->has_weight_override = in->has_weight_override;
    out->check_healthy = in->check_healthy;
    out->healthy = in->healthy;
    out->enabled = in->enabled;
    out->has_prompt_template = in->has_prompt_template;
    out->has_last_heartbeat = in->has_last_heartbeat;
}

static void
copy_bounded(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strnlen(src, cap - 1) : 0;

    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

void
reg_row_to_instance(struct reg_instance *out, const struct reg_row *r)
{
    memset(out, 0, sizeof(*out));
    copy_bounded(out->model_name, sizeof(out->model_name), r->model_name);
    copy_bounded(out->host, sizeof(out->host), r->host);
    copy_bounded(out->prompt_template, sizeof(out->prompt_template),
                 r->has_prompt_template ? r->prompt_template : NULL);
    out->weight = r->weight;
    out->weight_override = r->weight_override;
    out->last_heartbeat_ms = r->last_heartbeat_ms;
    out->age_ms = r->age_ms;
    out->updated_ms = r->updated_ms;
    out->port = r->port;
    out->lease_ms = r->lease_ms;
    out->in_flight = r->in_flight;
    out->queue_length = r->queue_length;
    out->capacity = r->capacity;
    out->has_weight_override = r->has_weight_override;
    out->check_healthy = r->check_healthy;
    out->healthy = r->healthy;
    out->enabled = r->enabled;
    out->has_prompt_template = r->has_prompt_template;
    out->has_last_heartbeat = r->has_last_heartbeat;
}

double
reg_row_weight(const struct reg_row *r)
{
    return r->has_weight_override ? r->weight_override : r->weight;
}

int
reg__rows_push(struct reg_rows *rows, const struct reg_instance *in)
{
    struct reg_row *r;
    const struct reg_row *prev = rows->n > 0 ? &rows->v[rows->n - 1] : NULL;

    if (rows->n == rows->cap) {
        size_t ncap = rows->cap ? rows->cap * 2 : 64;
        struct reg_row *v = realloc(rows->v, ncap * sizeof(*v));
        if (!v) {
            return REG_ENOMEM;
        }
        rows->v = v;
        rows->cap = ncap;
        prev = rows->n > 0 ? &rows->v[rows->n - 1] : NULL;
    }
    r = &rows->v[rows->n];
    reg_row_from_instance(r, in);
    /* rows come in model order: consecutive rows share their model's name */
    if (prev && strcmp(prev->model_name, in->model_name) == 0) {
        r->model_name = prev->model_name;
    } else {
        r->model_name = rows_strdup(rows, in->model_name, strnlen(in->model_name, REG_NAME_MAX));
    }
    r->host = rows_strdup(rows, in->host, strnlen(in->host, REG_HOST_MAX));
    if (in->has_prompt_template) {
        r->prompt_template =
            rows_strdup(rows, in->prompt_template, strnlen(in->prompt_template, REG_TEMPLATE_MAX));
    }
    if (!r->model_name || !r->host || (in->has_prompt_template && !r->prompt_template)) {
        return REG_ENOMEM;
    }
    rows->n++;
    return REG_OK;
}

void
reg__rows_reset(struct reg_rows *rows)
{
    rows->n = 0;
    rows->cur = rows->blocks;
    if (rows->cur) {
        rows->cur->used = 0;
    }
}

/* Frees the string blocks after the one being filled (none are in use). */
static void
rows_trim_blocks(struct reg_rows *rows)
{
    struct reg_strblock *b = rows->cur ? rows->cur->next : rows->blocks;

    if (rows->cur) {
        rows->cur->next = NULL;
    } else {
        rows->blocks = NULL;
    }
    while (b) {
        struct reg_strblock *next = b->next;
        free(b);
        b = next;
    }
}

void
reg__rows_cleanup(struct reg_rows *rows)
{
    rows->cur = NULL;
    rows_trim_blocks(rows);
    free(rows->v);
    rows->v = NULL;
    rows->n = rows->cap = 0;
}

double
reg_instance_weight(const struct reg_instance *in)
{
    return in->has_weight_override ? in->weight_override : in->weight;
}

static bool
bounded_text(const char *s, size_t max, bool allow_empty)
{
    size_t n = strnlen(s, max + 1);

    if (n > max || (n == 0 && !allow_empty)) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            return false;
        }
    }
    return true;
}

int
reg_instance_validate(const struct reg_instance *in)
{
    if (!bounded_text(in->model_name, REG_NAME_MAX, false) ||
        !bounded_text(in->host, REG_HOST_MAX, false)) {
        return REG_EINVAL;
    }
    if (in->port < 1 || in->port > 65535) {
        return REG_EINVAL;
    }
    if (!isfinite(in->weight) || in->weight < 0 || in->weight > 1e9) {
        return REG_EINVAL;
    }
    if (in->has_prompt_template && !bounded_text(in->prompt_template, REG_TEMPLATE_MAX, true)) {
        return REG_EINVAL;
    }
    if (in->lease_ms < 0 || in->in_flight < 0 || in->queue_length < 0 || in->capacity < 0) {
        return REG_EINVAL;
    }
    return REG_OK;
}

static int
validate_op(const struct reg_op *op)
{
    if (op->kind < REG_OP_REGISTER || op->kind > REG_OP_ADMIN) {
        return REG_EINVAL;
    }
    if (reg_instance_validate(&op->inst) != REG_OK) {
        return REG_EINVAL;
    }
    if (op->kind == REG_OP_ADMIN) {
        if (op->admin_weight == REG_WEIGHT_SET &&
            (!isfinite(op->admin_weight_value) || op->admin_weight_value < 0 ||
             op->admin_weight_value > 1e9)) {
            return REG_EINVAL;
        }
        if (op->admin_enabled < -1 || op->admin_enabled > 1) {
            return REG_EINVAL;
        }
    }
    return REG_OK;
}

static char *
dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int
reg_open(const struct reg_config *cfg, struct reg_store **out)
{
    struct reg_store *st = NULL;
    int rc;

    *out = NULL;
    if (!cfg || (cfg->backend != REG_SQLITE && cfg->backend != REG_MYSQL)) {
        return REG_EINVAL;
    }
    if (cfg->backend == REG_SQLITE && (!cfg->sqlite_path || !*cfg->sqlite_path)) {
        return REG_EINVAL;
    }
    st = calloc(1, sizeof(*st));
    if (!st) {
        return REG_ENOMEM;
    }
    st->cfg = *cfg;
    st->cfg.sqlite_path = dup_or_null(cfg->sqlite_path);
    st->cfg.mysql_host = dup_or_null(cfg->mysql_host);
    st->cfg.mysql_socket = dup_or_null(cfg->mysql_socket);
    st->cfg.mysql_user = dup_or_null(cfg->mysql_user);
    st->cfg.mysql_password = dup_or_null(cfg->mysql_password);
    st->cfg.mysql_database = dup_or_null(cfg->mysql_database);
    if (st->cfg.connect_timeout_ms <= 0) {
        st->cfg.connect_timeout_ms = 2000;
    }
    if (st->cfg.io_timeout_ms <= 0) {
        st->cfg.io_timeout_ms = 3000;
    }
    if (st->cfg.busy_ms <= 0) {
        st->cfg.busy_ms = 2000;
    }
    if (st->cfg.retry_budget_ms <= 0) {
        st->cfg.retry_budget_ms = 5000;
    }
    if (st->cfg.default_lease_ms <= 0) {
        st->cfg.default_lease_ms = 60000;
    }
    if (st->cfg.mysql_port <= 0) {
        st->cfg.mysql_port = 3306;
    }
    st->ops = cfg->backend == REG_SQLITE ? &reg_sqlite_ops : &reg_mysql_ops;
    st->connect_backoff_ms = 50;
    rc = st->ops->version == REG_BACKEND_OPS_VERSION ? st->ops->init(st) : REG_EINVAL;
    if (rc != REG_OK) {
        reg_close(st);
        return rc;
    }
    *out = st;
    return REG_OK;
}

void
reg_close(struct reg_store *st)
{
    if (!st) {
        return;
    }
    if (st->be) {
        st->ops->fini(st);
    }
    free((char *)st->cfg.sqlite_path);
    free((char *)st->cfg.mysql_host);
    free((char *)st->cfg.mysql_socket);
    free((char *)st->cfg.mysql_user);
    if (st->cfg.mysql_password) {
        /* do not leave the password in freed heap memory */
        memset((char *)st->cfg.mysql_password, 0, strlen(st->cfg.mysql_password));
    }
    free((char *)st->cfg.mysql_password);
    free((char *)st->cfg.mysql_database);
    reg__rows_cleanup(&st->list_rows);
    free(st);
}

/* Connects unless connected; honours the cross-call reconnect backoff. */
static int
ensure_connected(struct reg_store *st, int64_t deadline)
{
    int64_t now = mono_ms();
    int rc;

    if (st->connected) {
        return REG_OK;
    }
    if (now < st->next_connect_ms) {
        if (st->next_connect_ms > deadline) {
            return REG_EUNAVAIL; /* errmsg still holds the last connect error */
        }
        sleep_ms(st->next_connect_ms - now);
    }
    rc = st->ops->connect(st);
    if (rc == REG_OK) {
        st->connected = true;
        st->connect_backoff_ms = 50;
        st->next_connect_ms = 0;
        return REG_OK;
    }
    st->stats.reconnects++;
    st->next_connect_ms = mono_ms() + jitter(st->connect_backoff_ms);
    st->connect_backoff_ms = st->connect_backoff_ms * 2 > 1000 ? 1000 : st->connect_backoff_ms * 2;
    return rc;
}

enum call_kind {
    CALL_APPLY,
    CALL_LIST,
    CALL_SWEEP,
    CALL_PING,
    CALL_MIGRATE,
    CALL_SETTINGS_READ,
    CALL_SETTINGS_WRITE,
    CALL_USAGE_TAKE,
    CALL_USAGE_GC
};

struct call {
    enum call_kind kind;
    struct reg_op *ops;
    size_t n;
    int64_t since;
    int64_t hb_since;
    struct reg_rows *rows;
    int64_t *now_out;
    int64_t *table_rows_out;
    int64_t gc_after_ms;
    int *marked;
    int *deleted;
    bool hard; /* the caller's deadline: the attempt's I/O is guarded */
    /* settings */
    int64_t version;
    int64_t *version_out;
    struct reg_settings *settings;
    const struct reg_setting *writes;
    bool *applied;
    struct reg_usage_take *takes;
};

static int
attempt(struct reg_store *st, struct call *c)
{
    switch (c->kind) {
    case CALL_APPLY:
        return st->ops->apply(st, c->ops, c->n);
    case CALL_LIST:
        reg__rows_reset(c->rows);
        return st->ops->list(st, c->since, c->hb_since, c->rows, c->now_out, c->table_rows_out);
    case CALL_SWEEP:
        return st->ops->sweep(st, c->gc_after_ms, c->marked, c->deleted);
    case CALL_PING:
        return st->ops->ping(st);
    case CALL_MIGRATE:
        return reg__migrate(st);
    case CALL_SETTINGS_READ:
        reg_settings_free(c->settings);
        return st->ops->settings_read(st, c->version, c->version_out, c->settings);
    case CALL_SETTINGS_WRITE:
        return st->ops->settings_write(st, c->version, c->writes, c->n, c->applied);
    case CALL_USAGE_TAKE:
        return st->ops->usage_take(st, c->version, c->takes, c->n);
    case CALL_USAGE_GC:
        return st->ops->usage_gc(st, c->version);
    }
    return REG_EINVAL;
}

/* One attempt, with the write's I/O under the time guard. */
static int
guarded_attempt(struct reg_store *st, struct call *c)
{
    int fd = c->hard && st->ops->socket_fd ? st->ops->socket_fd(st) : -1;
    int rc;

    reg__guard_arm(st, fd);
    rc = attempt(st, c);
    if (reg__guard_disarm(st) && rc != REG_OK) {
        char keep[sizeof(st->errmsg)];
        memcpy(keep, st->errmsg, sizeof(keep));
        reg__set_err(st, "no answer from the database within the time bound (%.200s)", keep);
        rc = REG_EUNAVAIL;
    }
    return rc;
}

static int
run(struct reg_store *st, struct call *c, int64_t deadline)
{
    int64_t backoff = 5;
    int rc;

    if (mono_ms() >= deadline) {
        /* the caller's bound ran out before the first attempt (a write that
         * queued behind a slow batch): busy, not unreachable */
        reg__set_err(st, "the time bound ran out before the database was tried");
        return REG_EBUSY;
    }
    st->deadline_ms = deadline;
    st->call_start_ms = mono_ms();
    for (;;) {
        rc = ensure_connected(st, deadline);
        if (rc == REG_OK) {
            rc = guarded_attempt(st, c);
            st->stats.statements++;
            if (rc == REG_EUNAVAIL) {
                /* the connection is lost: the next attempt reconnects */
                st->ops->disconnect(st);
                st->connected = false;
                st->stats.reconnects++;
            }
        }
        if (rc != REG_EBUSY && rc != REG_EUNAVAIL) {
            break;
        }
        if (mono_ms() + backoff >= deadline) {
            break;
        }
        st->stats.retries++;
        sleep_ms(jitter(backoff));
        backoff = backoff * 2 > 250 ? 250 : backoff * 2;
    }
    st->deadline_ms = 0;
    return rc;
}

static int64_t
budget_deadline(const struct reg_store *st)
{
    return mono_ms() + st->cfg.retry_budget_ms;
}

int
reg_migrate(struct reg_store *st)
{
    struct call c = {.kind = CALL_MIGRATE};

    return run(st, &c, budget_deadline(st));
}

int
reg_apply(struct reg_store *st, struct reg_op *ops, size_t n)
{
    return reg_apply_until(st, ops, n, 0);
}

int
reg_apply_until(struct reg_store *st, struct reg_op *ops, size_t n, int64_t deadline_mono_ms)
{
    struct call c = {.kind = CALL_APPLY, .ops = ops, .n = n, .hard = deadline_mono_ms > 0};

    for (size_t i = 0; i < n; i++) {
        if (validate_op(&ops[i]) != REG_OK) {
            reg__set_err(st, "operation %zu: invalid field", i);
            return REG_EINVAL;
        }
        ops[i].rc = REG_OK;
    }
    if (n == 0) {
        return REG_OK;
    }
    return run(st, &c, deadline_mono_ms > 0 ? deadline_mono_ms : budget_deadline(st));
}

int
reg_list_rows(struct reg_store *st, int64_t changed_since_ms, int64_t heartbeat_since_ms,
              const struct reg_row **rows_out, size_t *n_out, int64_t *db_now_ms_out,
              int64_t *table_rows_out)
{
    struct reg_rows *rows = &st->list_rows;
    int64_t now = 0;
    int64_t total = 0;
    struct call c = {.kind = CALL_LIST,
                     .since = changed_since_ms,
                     .hb_since = changed_since_ms < 0 ? -1 : heartbeat_since_ms,
                     .rows = rows,
                     .now_out = &now,
                     .table_rows_out = &total};
    int rc = run(st, &c, budget_deadline(st));

    *rows_out = rows->v;
    *n_out = rc == REG_OK ? rows->n : 0;
    if (rc == REG_OK) {
        if (db_now_ms_out) {
            *db_now_ms_out = now;
        }
        if (table_rows_out) {
            *table_rows_out = total;
        }
    }
    /* a full read that fills under a quarter of the array (the table
     * shrank) gives the rest back, string blocks included; polls, small by
     * nature, never do */
    if (changed_since_ms < 0 && rows->cap > 1024 && rows->n < rows->cap / 4) {
        size_t ncap = rows->n > 512 ? rows->n * 2 : 1024;
        struct reg_row *v = realloc(rows->v, ncap * sizeof(*v));
        if (v) {
            rows->v = v;
            rows->cap = ncap;
            *rows_out = v;
        }
        rows_trim_blocks(rows);
    }
    return rc;
}

int
reg_list(struct reg_store *st, int64_t changed_since_ms, reg_list_cb *cb, void *arg,
         int64_t *db_now_ms_out, int64_t *table_rows_out)
{
    const struct reg_row *rows = NULL;
    size_t n = 0;
    int rc = reg_list_rows(st, changed_since_ms, -1, &rows, &n, db_now_ms_out, table_rows_out);

    for (size_t i = 0; rc == REG_OK && i < n; i++) {
        struct reg_instance in;
        reg_row_to_instance(&in, &rows[i]);
        if (cb(&in, arg) != 0) {
            break;
        }
    }
    return rc;
}

int
reg_table_rows_until(struct reg_store *st, int64_t deadline_mono_ms, int64_t *rows_out)
{
    struct reg_rows rows = {0};
    int64_t now = 0;
    struct call c = {.kind = CALL_LIST,
                     .since = INT64_MAX, /* no row changed after the end of time */
                     .hb_since = -1,
                     .rows = &rows,
                     .now_out = &now,
                     .table_rows_out = rows_out,
                     .hard = true};
    int rc = run(st, &c, deadline_mono_ms);

    reg__rows_cleanup(&rows);
    return rc;
}

int
reg_sweep(struct reg_store *st, int64_t gc_after_ms, int *marked_out, int *deleted_out)
{
    int marked = 0;
    int deleted = 0;
    struct call c = {
        .kind = CALL_SWEEP, .gc_after_ms = gc_after_ms, .marked = &marked, .deleted = &deleted};
    int rc = run(st, &c, budget_deadline(st));

    if (marked_out) {
        *marked_out = marked;
    }
    if (deleted_out) {
        *deleted_out = deleted;
    }
    return rc;
}

int
reg_ping(struct reg_store *st)
{
    struct call c = {.kind = CALL_PING};

    return run(st, &c, budget_deadline(st));
}

/* ---- settings ---------------------------------------------------------------- */

int
reg__settings_push(struct reg_settings *s, const char *kind, const char *name, const char *value,
                   size_t vlen, int64_t updated_ms)
{
    struct reg_setting *r;

    if (s->n % 16 == 0) {
        struct reg_setting *v = realloc(s->v, (s->n + 16) * sizeof(*v));
        if (!v) {
            return REG_ENOMEM;
        }
        s->v = v;
    }
    r = &s->v[s->n];
    r->kind = strdup(kind);
    r->name = strdup(name);
    r->value = malloc(vlen + 1);
    r->updated_ms = updated_ms;
    if (!r->kind || !r->name || !r->value) {
        free(r->kind);
        free(r->name);
        free(r->value);
        return REG_ENOMEM;
    }
    memcpy(r->value, value, vlen);
    r->value[vlen] = '\0';
    s->n++;
    return REG_OK;
}

void
reg_settings_free(struct reg_settings *s)
{
    for (size_t i = 0; s && i < s->n; i++) {
        free(s->v[i].kind);
        free(s->v[i].name);
        free(s->v[i].value);
    }
    if (s) {
        free(s->v);
        memset(s, 0, sizeof(*s));
    }
}

int
reg_settings_read(struct reg_store *st, int64_t have_version, struct reg_settings *out,
                  bool *changed_out)
{
    struct reg_settings rows = {0};
    int64_t version = -1;
    struct call c = {.kind = CALL_SETTINGS_READ,
                     .version = have_version,
                     .version_out = &version,
                     .settings = &rows};
    int rc = run(st, &c, budget_deadline(st));

    *changed_out = false;
    if (rc == REG_OK && version != have_version) {
        reg_settings_free(out);
        rows.version = version;
        *out = rows;
        *changed_out = true;
        return REG_OK;
    }
    reg_settings_free(&rows);
    return rc;
}

int
reg_settings_write(struct reg_store *st, int64_t expect_version, const struct reg_setting *w,
                   size_t n, bool *applied_out)
{
    struct call c = {.kind = CALL_SETTINGS_WRITE,
                     .version = expect_version,
                     .writes = w,
                     .n = n,
                     .applied = applied_out};

    *applied_out = false;
    for (size_t i = 0; i < n; i++) {
        if (!bounded_text(w[i].kind, REG_SETTING_KIND_MAX, false) ||
            !bounded_text(w[i].name, REG_SETTING_NAME_MAX, false) ||
            (w[i].value && strlen(w[i].value) > REG_SETTING_VALUE_MAX)) {
            reg__set_err(st, "setting %zu: kind, name or value out of bounds", i);
            return REG_EINVAL;
        }
    }
    if (n == 0) {
        *applied_out = true;
        return REG_OK;
    }
    return run(st, &c, budget_deadline(st));
}

void
reg__usage_grant(struct reg_usage_take *t, int64_t used_requests, int64_t used_tokens)
{
    int64_t r = used_requests - t->ret_requests;
    int64_t k = used_tokens - t->ret_tokens;

    r = r < 0 ? 0 : r;
    k = k < 0 ? 0 : k;
    t->granted_requests = t->want_requests;
    if (t->limit_requests > 0 && r + t->granted_requests > t->limit_requests) {
        t->granted_requests = t->limit_requests > r ? t->limit_requests - r : 0;
    }
    t->granted_tokens = t->want_tokens;
    if (t->limit_tokens > 0 && k + t->granted_tokens > t->limit_tokens) {
        t->granted_tokens = t->limit_tokens > k ? t->limit_tokens - k : 0;
    }
    t->used_requests = r + t->granted_requests;
    t->used_tokens = k + t->granted_tokens;
}

int
reg_usage_take(struct reg_store *st, int64_t window, struct reg_usage_take *t, size_t n)
{
    struct call c = {.kind = CALL_USAGE_TAKE, .version = window, .takes = t, .n = n};

    for (size_t i = 0; i < n; i++) {
        if (!bounded_text(t[i].name, REG_SETTING_NAME_MAX, false) || t[i].want_requests < 0 ||
            t[i].want_tokens < 0 || t[i].ret_requests < 0 || t[i].ret_tokens < 0) {
            reg__set_err(st, "usage take %zu: name or amounts out of bounds", i);
            return REG_EINVAL;
        }
    }
    return n ? run(st, &c, budget_deadline(st)) : REG_OK;
}

int
reg_usage_gc(struct reg_store *st, int64_t window)
{
    struct call c = {.kind = CALL_USAGE_GC, .version = window};

    return run(st, &c, budget_deadline(st));
}

int
reg_library_init(void)
{
    if (sqlite3_initialize() != SQLITE_OK) {
        return REG_EBACKEND;
    }
    if (mysql_library_init(0, NULL, NULL) != 0) {
        return REG_EBACKEND;
    }
    return REG_OK;
}

void
reg_library_end(void)
{
    watchdog_stop();
    mysql_library_end();
    sqlite3_shutdown();
}

void
reg_thread_end(void)
{
    mysql_thread_end();
}
