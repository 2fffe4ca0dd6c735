/* SPDX-License-Identifier: MIT
 *
 * api_table.c - the apiserver's instance table and the watcher thread that
 * keeps it current.
 *
 * The watcher long-polls a controller: GET /api/controller/models?view=full
 * (every instance, with `routable` and the effective weight), then the same
 * with If-None-Match and wait=--watch_wait_secs, which the controller holds
 * until the routing state changes. Each answer becomes an immutable
 * api_table, handed to every event loop with http_loop_post; a loop swaps
 * its pointer and drops its reference to the old table. So a request never
 * waits for, or calls, a controller, and a registration reaches routing as
 * soon as the controller's watch fires.
 *
 * Deltas: every view=full answer names the controller's view version
 * (header X-Roster-View: "<epoch>-<version>", the epoch random per
 * controller process), and the watcher sends it back as since= with its
 * long poll. The controller then answers a change with a delta (a JSON
 * object, docs/api.md): the names of all current models, the models whose
 * routing changed since, and their instances. The watcher merges it into
 * the table it holds (w->last): a changed model gets its routing built
 * from its rows; an unchanged one shares the previous table's
 * api_model_core (the route set: entries, cumulative weights, round-robin
 * schedule, consistent-hash ring; and its instance references), at the
 * cost of a reference; a model not named is gone. So at 100,000 instances
 * a registration costs the changed model's rows parsed and routed plus a
 * linear pass over the instances (references, the merge by key), not a
 * 45 MB list parsed and a ring sorted per model. Instances keep their identity either way
 * (api_inst, with in-flight counts, ejection and counters). A full answer
 * (an array) replaces everything, as before: the controller sends one for
 * a token of another process, a version it has not reached, or a change
 * touching more than half of the instances; the watcher asks for one
 * (drops since=) after switching controllers, when a delta does not fit
 * the table it holds (a model said unchanged that it lacks), and while an
 * instance's host does not resolve (each full list retries the lookup).
 * A controller that sends no X-Roster-View (DB-GPT's, an older roster) is
 * watched with full lists.
 *
 * Settings: the watch also names the cluster settings version it holds
 * (settings=V) and the controller answers as soon as its version differs
 * (X-Roster-Settings); the watcher then fetches the settings from the same
 * controller (api_settings.c), retrying every second while that fails.
 *
 * Failover: on an error, a timeout or a 5xx the watcher moves to the next
 * controller of --controller_addr at once; once every controller has
 * failed in a row it waits (100 ms doubling to 2 s, with jitter) and goes
 * round again, forever. Meanwhile the loops keep routing on the last table
 * they got, and /api/health says the table is stale. From the moment a
 * controller fails, health names the one being tried (not reachable until
 * it answers). A controller whose process dies closes its connection, so
 * its long poll fails at once; TCP keep-alive bounds the wait for one that
 * vanishes without a word.
 *
 * --instance_networks: a row whose resolved address is outside them is in
 * the table (counted, listed by the dashboard as excluded) but never in a
 * model's routable set; api_proxy.c checks the address again before it
 * connects.
 *
 * Instances keep their identity across tables (model, host, port): the
 * watcher reuses the api_inst of the previous table, so in-flight counts,
 * ejections and counters survive updates.
 */
#include "api.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#define LOG_MODULE "apiserver"
#include "buf.h"
#include "json_check.h"
#include "log.h"
#include "util.h"

#define MAX_LIST_BYTES (256u * 1024 * 1024)
#define MAX_JSON_DEPTH 16
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
/* beyond this many changes in one list, one summary event */
#define MAX_EVENTS_PER_LIST 50

struct api_watch {
    struct api_server *srv;
    pthread_t thread;
    bool started;
    _Atomic bool stop;
    pthread_mutex_t mu; /* guards st, and cond's waits */
    pthread_cond_t cond;
    struct api_watch_status st;
    int cur;
    char etag[128];
    char view[64];           /* the controller's view token of the table held ("": none): since= */
    struct api_table *last;  /* the table held (a reference): deltas are merged into it */
    bool unresolved;         /* some instance of it has no address: full lists (each retries) */
    struct api_inst **known; /* sorted by (model, host, port); one reference each */
    size_t nknown;
    uint64_t version;
    bool first_list;      /* no table built yet: no per-instance events */
    size_t nevents;       /* events reported for the list being taken */
    int64_t settings;     /* the settings version in force (-1: none yet): settings= */
    bool settings_warned; /* a failed settings fetch was logged (until one succeeds) */
};

/* ---- tables and instances ---------------------------------------------------- */

void
api_inst_unref(struct api_inst *i)
{
    if (i && atomic_fetch_sub(&i->refs, 1) == 1) {
        pthread_mutex_destroy(&i->err_mu);
        free(i);
    }
}

void
api_inst_heard(struct api_inst *i)
{
    int64_t now = util_mono_ms();

    if (atomic_load_explicit(&i->heard_ms, memory_order_relaxed) != now) {
        atomic_store_explicit(&i->heard_ms, now, memory_order_relaxed);
    }
}

bool
api_inst_heard_lately(const struct api_inst *i)
{
    int64_t t = atomic_load_explicit(&i->heard_ms, memory_order_relaxed);

    return t != 0 && util_mono_ms() - t < API_ALIVE_MS;
}

struct api_table *
api_table_ref(struct api_table *t)
{
    atomic_fetch_add(&t->refs, 1);
    return t;
}

struct api_model_core {
    _Atomic int refs;
    struct route_set set;   /* built once; tables copy it (their cursor their own) */
    struct api_inst **inst; /* parallel to set.e; a reference each */
};

static void core_unref(struct api_model_core *c);

static void
table_free(struct api_table *t)
{
    for (size_t i = 0; i < t->nall; i++) {
        api_inst_unref(t->all[i]);
    }
    free(t->all);
    for (size_t m = 0; m < t->nmodels; m++) {
        core_unref(t->models[m].core); /* the set and inst arrays are the core's */
    }
    free(t->models);
    free(t);
}

void
api_table_unref(struct api_table *t)
{
    if (t && atomic_fetch_sub(&t->refs, 1) == 1) {
        table_free(t);
    }
}

static int
model_cmp(const char *name, const char *type, const struct api_model *m)
{
    int c = strcmp(name, m->name);
    return c ? c : strcmp(type, m->type);
}

struct api_model *
api_table_find(struct api_table *t, const char *name, const char *type)
{
    size_t lo = 0, hi = t ? t->nmodels : 0;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = model_cmp(name, type, &t->models[mid]);
        if (c == 0) {
            return &t->models[mid];
        }
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}

bool
api_table_has_name(struct api_table *t, const char *name)
{
    for (size_t i = 0; t && i < t->nmodels; i++) {
        if (strcmp(t->models[i].name, name) == 0) {
            return true;
        }
    }
    return false;
}

/* ---- building a table from the controller's list ------------------------------ */

struct row {
    const char *model; /* "name@type" */
    const char *host;
    int port;
    double weight;
    bool routable;
    bool alive;
    bool enabled;
    struct {
        int64_t capacity, busy; /* running + queued */
    } load;                     /* its load report (the wait queue's) */
};

static int
row_cmp(const void *a, const void *b)
{
    const struct row *x = a, *y = b;
    int c = strcmp(x->model, y->model);

    if (c == 0) {
        c = strcmp(x->host, y->host);
    }
    return c ? c : (x->port > y->port) - (x->port < y->port);
}

static int
inst_cmp_key(const char *model, const char *host, int port, const struct api_inst *i)
{
    int c = strcmp(model, i->model->model);

    if (c == 0) {
        c = strcmp(host, i->host);
    }
    return c ? c : (port > i->port) - (port < i->port);
}

/* The instance's address, looked up here on the watcher's thread (host
 * names are allowed in the registry; the loops never block on a lookup).
 * Looked up once per instance identity; a failure leaves salen 0 (every
 * attempt then fails over as a connect error). */
static void
resolve(struct api_inst *i)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char port[16];
    int rc;

    snprintf(port, sizeof(port), "%d", i->port);
    rc = getaddrinfo(i->host, port, &hints, &res);
    if (rc != 0 || !res || res->ai_addrlen > sizeof(i->sa)) {
        log_warn("instance %s: cannot resolve '%s': %s", i->label, i->host,
                 rc ? gai_strerror(rc) : "no address");
    } else {
        memcpy(&i->sa, res->ai_addr, res->ai_addrlen);
        /* published after the address: the loops read salen first */
        atomic_store_explicit(&i->salen, (unsigned)res->ai_addrlen, memory_order_release);
    }
    if (res) {
        freeaddrinfo(res);
    }
}

/* The watcher's instance for a row: the one it already knows, or a new one. */
static struct api_inst *
inst_for(struct api_watch *w, const struct row *r)
{
    size_t lo = 0, hi = w->nknown;
    struct api_inst *i;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = inst_cmp_key(r->model, r->host, r->port, w->known[mid]);
        if (c == 0) {
            atomic_fetch_add(&w->known[mid]->refs, 1); /* the new list's */
            if (atomic_load_explicit(&w->known[mid]->salen, memory_order_acquire) == 0) {
                resolve(w->known[mid]); /* did not resolve before: try again */
            }
            return w->known[mid];
        }
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    i = calloc(1, sizeof(*i));
    if (!i) {
        return NULL;
    }
    pthread_mutex_init(&i->err_mu, NULL);
    atomic_store(&i->refs, 1); /* the new list's */
    util_strlcpy(i->host, r->host, sizeof(i->host));
    i->port = r->port;
    bool v6 = strchr(r->host, ':') != NULL;
    snprintf(i->base, sizeof(i->base), v6 ? "http://[%s]:%d" : "http://%s:%d", r->host, r->port);
    snprintf(i->label, sizeof(i->label), v6 ? "[%s]:%d" : "%s:%d", r->host, r->port);
    i->rt.hash = route_hash(i->label, strlen(i->label));
    resolve(i);
    i->model = api_mstats_get(w->srv, r->model);
    if (!i->model) {
        pthread_mutex_destroy(&i->err_mu);
        free(i);
        return NULL;
    }
    return i;
}

/* Reports what changed for instance `i` between the previous list (its
 * `seen`; `fresh`: it was not in that list) and row `r`. Watcher thread. */
static void
note_changes(struct api_watch *w, struct api_inst *i, const struct row *r)
{
    struct api_seen now = {true, r->alive, r->routable, r->enabled, r->weight};
    const struct api_seen *was = &i->seen;
    struct api_server *srv = w->srv;
    const char *m = r->model;

    bool same = was->listed && was->alive == now.alive && was->enabled == now.enabled &&
                (was->weight > 0) == (now.weight > 0);

    if (w->first_list || same || ++w->nevents > MAX_EVENTS_PER_LIST) {
        i->seen = now; /* the first list, nothing to tell, or a flood */
        return;
    }
    if (!was->listed) {
        api_event_add(srv, "joined", m, i->host, i->port, "%s, weight %g%s",
                      r->alive ? "alive" : "not alive", r->weight, r->enabled ? "" : ", disabled");
    } else {
        if (was->alive && !now.alive) {
            api_event_add(srv, "unhealthy", m, i->host, i->port,
                          "its lease ran out or it deregistered");
        } else if (!was->alive && now.alive) {
            api_event_add(srv, "healthy", m, i->host, i->port, "heartbeating again");
        }
        if (was->weight > 0 && now.weight <= 0) {
            api_event_add(srv, "drained", m, i->host, i->port, "weight 0: no new requests");
        } else if (was->weight <= 0 && now.weight > 0) {
            api_event_add(srv, "undrained", m, i->host, i->port, "weight %g", now.weight);
        }
        if (was->enabled && !now.enabled) {
            api_event_add(srv, "disabled", m, i->host, i->port, "out of rotation");
        } else if (!was->enabled && now.enabled) {
            api_event_add(srv, "enabled", m, i->host, i->port, "back in rotation");
        }
    }
    i->seen = now;
}

/* Whether instance `i` is left out of routing by --instance_networks: its
 * resolved address is outside them (an address that did not resolve is
 * never connected to anyway). Updates i->excluded; a newly excluded
 * instance is logged and reported as an event (the first
 * MAX_EVENTS_PER_LIST of one list; *count counts them). Watcher thread. */
static bool
excluded(struct api_watch *w, struct api_inst *i, size_t *count)
{
    struct api_server *srv = w->srv;
    unsigned salen = atomic_load_explicit(&i->salen, memory_order_acquire);
    bool ex = srv->inst_nets.n > 0 && salen != 0 &&
              !api_addr_allowed(srv, (const struct sockaddr *)&i->sa, salen);
    char ip[64];

    if (atomic_exchange(&i->excluded, ex) == ex || !ex || ++*count > MAX_EVENTS_PER_LIST) {
        return ex;
    }
    netaddr_format((const struct sockaddr *)&i->sa, ip, sizeof(ip));
    log_warn("instance %s of %s (address %s): %s; it gets no requests", i->label, i->model->model,
             ip, API_EXCLUDED_WHY);
    api_event_add(srv, "excluded", i->model->model, i->host, i->port,
                  "address %s: %s; it gets no requests", ip, API_EXCLUDED_WHY);
    return ex;
}

/* The load report of a row ({"in_flight","queue_length","capacity"}; the
 * controller checked their ranges), for the wait queue. */
static void
load_of(const cJSON *load, struct row *r)
{
    const cJSON *c = json_get(load, "capacity"), *f = json_get(load, "in_flight");
    const cJSON *q = json_get(load, "queue_length");

    r->load.capacity = cJSON_IsNumber(c) && c->valuedouble > 0 ? (int64_t)c->valuedouble : 0;
    r->load.busy = (cJSON_IsNumber(f) && f->valuedouble > 0 ? (int64_t)f->valuedouble : 0) +
                   (cJSON_IsNumber(q) && q->valuedouble > 0 ? (int64_t)q->valuedouble : 0);
}

/* Reads the rows of the controller's view=full list. Returns the count, or
 * -1 with a reason in err. *rows_out points into `root`. */
static long
parse_rows(const cJSON *root, struct row **rows_out, char *err, size_t errcap)
{
    size_t n = (size_t)cJSON_GetArraySize(root), k = 0;
    struct row *rows = calloc(n ? n : 1, sizeof(*rows));

    if (!rows) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    for (const cJSON *it = root->child; it; it = it->next) {
        const cJSON *m = json_get(it, "model_name"), *h = json_get(it, "host");
        const cJSON *p = json_get(it, "port"), *wt = json_get(it, "weight");
        const cJSON *rt = json_get(it, "routable");
        const cJSON *al = json_get(it, "alive");
        const cJSON *en = json_get(it, "enabled");
        if (!cJSON_IsString(m) || !strchr(m->valuestring, '@') || !cJSON_IsString(h) ||
            strlen(h->valuestring) > API_NAME_MAX || strlen(m->valuestring) > API_NAME_MAX ||
            !cJSON_IsNumber(p) || p->valuedouble < 1 || p->valuedouble > 65535 ||
            !cJSON_IsNumber(wt)) {
            free(rows);
            snprintf(err, errcap, "the controller's list has a malformed instance");
            return -1;
        }
        /* a DB-GPT controller has no "alive": its "healthy" means the same */
        if (!al) {
            al = json_get(it, "healthy");
        }
        rows[k] =
            (struct row){m->valuestring,   h->valuestring,   (int)p->valuedouble, wt->valuedouble,
                         cJSON_IsTrue(rt), cJSON_IsTrue(al), !cJSON_IsFalse(en),  {0, 0}};
        load_of(json_get(it, "load"), &rows[k++]);
    }
    qsort(rows, k, sizeof(*rows), row_cmp);
    *rows_out = rows;
    return (long)k;
}

/* One model of the list being taken: its rows (changed: the list or the
 * delta carries them) or, unchanged in a delta, taken over from the
 * previous table. */
struct mdesc {
    const char *model; /* "name@type" */
    bool changed;
    const struct row *rows; /* changed: rows[0..nrows), sorted by (host, port) */
    size_t nrows;
    const struct api_model *old; /* unchanged: the previous table's */
    size_t old_first;            /* ... and its first instance in that table's `all` */
    size_t first;                /* its first instance in the new `all` */
};

static void
core_unref(struct api_model_core *c)
{
    if (c && atomic_fetch_sub(&c->refs, 1) == 1) {
        for (size_t i = 0; i < c->set.n; i++) {
            api_inst_unref(c->inst[i]);
        }
        free(c->inst);
        route_set_cleanup(&c->set);
        free(c);
    }
}

/* The table's view of a core: the arrays shared, the round-robin cursor
 * its own (carried over from `cursor`). */
static void
model_set_core(struct api_model *m, struct api_model_core *c, uint64_t cursor)
{
    m->core = c;
    memcpy(&m->set, &c->set, sizeof(m->set));
    atomic_store(&m->set.rr_next, cursor);
    m->inst = c->inst;
}

/* The index in t->all of the first instance of `model` (t->nall if none). */
static size_t
all_lower_bound(const struct api_table *t, const char *model)
{
    size_t lo = 0, hi = t->nall;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(t->all[mid]->model->model, model) < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* Splits "name@type" at its last '@' into m->name and m->type. */
static void
model_names(struct api_model *m, const char *model)
{
    const char *at = strrchr(model, '@');

    snprintf(m->name, sizeof(m->name), "%.*s", (int)(at - model), model);
    util_strlcpy(m->type, at + 1, sizeof(m->type));
}

/* A changed model's routing from its rows (next: their instances). */
static int
model_build(struct api_watch *w, struct api_table *t, struct api_model *m, const struct mdesc *d,
            struct api_inst **next, struct route_entry *ent, size_t *nexcluded)
{
    struct api_model_core *c = calloc(1, sizeof(*c));
    size_t ne = 0;

    if (!c) {
        return -1;
    }
    atomic_init(&c->refs, 1);
    c->inst = calloc(d->nrows ? d->nrows : 1, sizeof(*c->inst));
    if (!c->inst) {
        free(c);
        return -1;
    }
    model_names(m, d->model);
    m->known = d->nrows;
    m->stats = next[0]->model;
    for (size_t k = 0; k < d->nrows; k++) {
        const struct row *r = &d->rows[k];
        bool ex = excluded(w, next[k], nexcluded);
        atomic_store_explicit(&next[k]->load_capacity, r->load.capacity, memory_order_relaxed);
        atomic_store_explicit(&next[k]->load_busy, r->load.busy, memory_order_relaxed);
        m->alive += r->alive;
        m->excluded += ex;
        if (r->routable && r->weight > 0 && !ex) {
            ent[ne] = (struct route_entry){&next[k]->rt, r->weight};
            c->inst[ne++] = next[k];
            atomic_fetch_add(&next[k]->refs, 1); /* the core's */
        }
    }
    if (route_set_build(&c->set, ent, ne) != 0) {
        for (size_t k = 0; k < ne; k++) {
            api_inst_unref(c->inst[k]);
        }
        free(c->inst);
        free(c);
        return -1;
    }
    model_set_core(m, c, 0);
    t->routable += ne;
    t->excluded += m->excluded;
    return 0;
}

/* Builds the table of the models md[0..nmd) (sorted by "name@type"; `old`
 * the previous table, for the unchanged ones) and makes `known` its
 * instances. Returns the table (one reference per loop, srv->latest's and
 * the watcher's), or NULL when out of memory. A model whose routing did
 * not change keeps its route set (and so its instances' state: they are
 * the same api_inst anyway), at the cost of a reference. */
static struct api_table *
build(struct api_watch *w, const struct api_table *old, struct mdesc *md, size_t nmd)
{
    struct api_table *t = calloc(1, sizeof(*t));
    struct api_inst **next = NULL;
    struct route_entry *ent = NULL;
    size_t n = 0, got = 0, maxrows = 0, nexcluded = 0;

    if (!t) {
        return NULL;
    }
    for (size_t i = 0; i < nmd; i++) {
        n += md[i].changed ? md[i].nrows : md[i].old->known;
        if (md[i].changed && md[i].nrows > maxrows) {
            maxrows = md[i].nrows;
        }
    }
    next = calloc(n ? n : 1, sizeof(*next));
    ent = calloc(maxrows ? maxrows : 1, sizeof(*ent));
    t->models = calloc(nmd ? nmd : 1, sizeof(*t->models));
    t->all = calloc(n ? n : 1, sizeof(*t->all));
    if (!next || !ent || !t->models || !t->all) {
        goto oom;
    }
    for (size_t i = 0; i < nmd; i++) {
        md[i].first = got;
        if (md[i].changed) {
            for (size_t k = 0; k < md[i].nrows; k++, got++) {
                next[got] = inst_for(w, &md[i].rows[k]);
                if (!next[got]) {
                    goto oom;
                }
            }
        } else {
            for (size_t k = 0; k < md[i].old->known; k++, got++) {
                next[got] = old->all[md[i].old_first + k];
                atomic_fetch_add(&next[got]->refs, 1); /* the new list's */
            }
        }
    }
    w->unresolved = false;
    for (size_t i = 0; i < n; i++) {
        t->all[i] = next[i];
        atomic_fetch_add(&next[i]->refs, 1); /* the table's */
        w->unresolved |= atomic_load_explicit(&next[i]->salen, memory_order_acquire) == 0;
    }
    t->nall = n;
    for (size_t i = 0; i < nmd; i++) {
        struct api_model *m = &t->models[t->nmodels];
        const struct api_model *om = md[i].old;
        if (md[i].changed) {
            if (md[i].nrows == 0) {
                continue; /* nothing listed: not in the table */
            }
            if (model_build(w, t, m, &md[i], next + md[i].first, ent, &nexcluded) != 0) {
                goto oom;
            }
        } else {
            memcpy(m->name, om->name, sizeof(m->name));
            memcpy(m->type, om->type, sizeof(m->type));
            m->known = om->known;
            m->alive = om->alive;
            m->excluded = om->excluded;
            m->stats = om->stats;
            atomic_fetch_add(&om->core->refs, 1);
            model_set_core(m, om->core, atomic_load(&om->set.rr_next));
            t->routable += m->set.n;
            t->excluded += m->excluded;
        }
        t->nmodels++;
    }
    /* sorted by (name, type): "name@type" order can differ when a name is
     * a prefix of another */
    for (size_t a = 1; a < t->nmodels; a++) {
        for (size_t b = a;
             b > 0 && model_cmp(t->models[b].name, t->models[b].type, &t->models[b - 1]) < 0; b--) {
            struct api_model tmp = t->models[b];
            t->models[b] = t->models[b - 1];
            t->models[b - 1] = tmp;
        }
    }
    t->instances = n;
    t->version = ++w->version;
    t->built_mono_ms = util_mono_ms();
    atomic_store(&t->refs, w->srv->nloops + 2); /* each loop's, srv->latest and w->last */
    /* what changed since the last list: instances that left, then each row */
    w->nevents = 0;
    for (size_t i = 0, k = 0; i < w->nknown; i++) {
        struct api_inst *o = w->known[i];
        while (k < n && next[k] != o &&
               inst_cmp_key(next[k]->model->model, next[k]->host, next[k]->port, o) < 0) {
            k++;
        }
        if ((k == n || next[k] != o) && ++w->nevents <= MAX_EVENTS_PER_LIST) {
            api_event_add(w->srv, "left", o->model->model, o->host, o->port,
                          "removed from the registry");
        }
    }
    for (size_t i = 0; i < nmd; i++) {
        for (size_t k = 0; md[i].changed && k < md[i].nrows; k++) {
            note_changes(w, next[md[i].first + k], &md[i].rows[k]);
        }
    }
    if (w->first_list) {
        api_event_add(w->srv, "loaded", NULL, NULL, 0, "the registry: %zu instances of %zu models",
                      n, t->nmodels);
    } else if (w->nevents > MAX_EVENTS_PER_LIST) {
        api_event_add(w->srv, "changes", NULL, NULL, 0,
                      "%zu more changes in one update (not listed one by one)",
                      w->nevents - MAX_EVENTS_PER_LIST);
    }
    if (nexcluded > MAX_EVENTS_PER_LIST) {
        log_warn("%zu more instances newly outside --instance_networks (not listed one by one)",
                 nexcluded - MAX_EVENTS_PER_LIST);
    }
    w->first_list = false;
    for (size_t i = 0; i < w->nknown; i++) {
        api_inst_unref(w->known[i]);
    }
    free(w->known);
    w->known = next;
    w->nknown = n;
    free(ent);
    return t;
oom:
    for (size_t i = 0; next && i < got; i++) {
        api_inst_unref(next[i]); /* the ones created here go away */
    }
    atomic_store(&t->refs, 1);
    table_free(t);
    free(next);
    free(ent);
    return NULL;
}

/* ---- handing tables to the loops ------------------------------------------------ */

struct swap_task {
    struct http_task task; /* first */
    struct api_loop *loop;
    struct api_table *table;
};

static void
swap_table(struct http_task *task)
{
    struct swap_task *s = (struct swap_task *)task;
    struct api_table *old = s->loop->table;

    s->loop->table = s->table;
    api_table_unref(old);
    free(s);
}

static void
publish(struct api_watch *w, struct api_table *t)
{
    struct api_server *srv = w->srv;
    struct api_table *old;

    pthread_mutex_lock(&srv->latest_mu);
    old = srv->latest;
    srv->latest = t; /* build() counted this reference */
    pthread_mutex_unlock(&srv->latest_mu);
    api_table_unref(old);

    for (int i = 0; i < srv->nloops; i++) {
        struct swap_task *s = calloc(1, sizeof(*s));
        if (!s) {
            uint64_t version = t->version;
            api_table_unref(t); /* that loop keeps its old table */
            log_error("out of memory: loop %d keeps the table before version %" PRIu64 "", i,
                      version);
            continue;
        }
        s->task.fn = swap_table;
        s->loop = &srv->loops[i];
        s->table = t;
        http_loop_post(srv->loops[i].loop, &s->task);
    }
    api_queue_table(srv, t); /* free slots in its load reports: waiters go */
    if (srv->notify) {
        srv->notify(srv->notify_arg);
    }
}

struct api_table *
api_latest_table(struct api_server *srv)
{
    struct api_table *t;

    pthread_mutex_lock(&srv->latest_mu);
    t = srv->latest ? api_table_ref(srv->latest) : NULL;
    pthread_mutex_unlock(&srv->latest_mu);
    return t;
}

struct api_inst *
api_table_inst(struct api_table *t, const char *model, const char *host, int port)
{
    size_t lo = 0, hi = t ? t->nall : 0;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = inst_cmp_key(model, host, port, t->all[mid]);
        if (c == 0) {
            return t->all[mid];
        }
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}

/* ---- the watch call ------------------------------------------------------------- */

struct call {
    struct api_watch *w;
    struct buf body;
    char etag[128];
    char view[64];    /* X-Roster-View: the answer's view token ("": none, or not a token) */
    int64_t settings; /* X-Roster-Settings: the controller's settings version (-1: none) */
};

static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
    struct call *c = arg;
    size_t len = size * n;

    if (len > 5 && strncasecmp(p, "ETag:", 5) == 0) {
        size_t a = 5, b = len;
        while (a < b && (p[a] == ' ' || p[a] == '\t')) {
            a++;
        }
        while (b > a && (p[b - 1] == '\r' || p[b - 1] == '\n' || p[b - 1] == ' ')) {
            b--;
        }
        snprintf(c->etag, sizeof(c->etag), "%.*s", (int)(b - a), p + a);
    } else if (len > 14 && strncasecmp(p, "X-Roster-View:", 14) == 0) {
        size_t a = 14, b = len;
        while (a < b && (p[a] == ' ' || p[a] == '\t')) {
            a++;
        }
        while (b > a && (p[b - 1] == '\r' || p[b - 1] == '\n' || p[b - 1] == ' ')) {
            b--;
        }
        /* it goes into a URL: hex digits, '-' and decimal digits only */
        c->view[0] = '\0';
        if (b - a < sizeof(c->view) && strspn(p + a, "0123456789abcdef-") >= b - a) {
            snprintf(c->view, sizeof(c->view), "%.*s", (int)(b - a), p + a);
        }
    } else if (len > 18 && strncasecmp(p, "X-Roster-Settings:", 18) == 0) {
        char num[24];
        size_t a = 18, b = len;
        int64_t v;
        while (a < b && (p[a] == ' ' || p[a] == '\t')) {
            a++;
        }
        while (b > a && (p[b - 1] == '\r' || p[b - 1] == '\n' || p[b - 1] == ' ')) {
            b--;
        }
        if (b - a < sizeof(num)) {
            snprintf(num, sizeof(num), "%.*s", (int)(b - a), p + a);
            if (util_parse_i64(num, 0, INT64_MAX, &v) == 0) {
                c->settings = v;
            }
        }
    }
    return len;
}

static size_t
on_data(char *p, size_t size, size_t n, void *arg)
{
    struct call *c = arg;

    return buf_append(&c->body, p, size * n) == 0 ? size * n : 0;
}

static int
on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    struct call *call = arg;

    (void)a;
    (void)b;
    (void)c;
    (void)d;
    return atomic_load(&call->w->stop) ? 1 : 0; /* nonzero aborts the transfer */
}

/* The watch connection's TCP options: keep-alive probes every second after
 * a second of silence, and the peer given up after KEEPALIVE_PROBES
 * unanswered ones (or unacknowledged data for as long). A controller
 * whose process dies closes the connection at once (the long poll fails
 * with "nothing returned" and the watcher moves on); these bound the wait
 * when it vanishes without a word (its host or network gone) to a few
 * seconds instead of the long poll's whole --watch_wait_secs. */
#define KEEPALIVE_PROBES 3

static int
on_sockopt(void *arg, curl_socket_t fd, curlsocktype purpose)
{
    int on = 1, idle = 1, intvl = 1, cnt = KEEPALIVE_PROBES;
    unsigned user_timeout_ms = 1000u * (1 + KEEPALIVE_PROBES);

    (void)arg;
    if (purpose == CURLSOCKTYPE_IPCXN) {
        /* best effort: a failure leaves the long poll's own timeout */
        (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
        (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
        (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
        (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
        (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms,
                         sizeof(user_timeout_ms));
    }
    return CURL_SOCKOPT_OK;
}

/* While a long poll waits, the controller it waits on is asked for
 * /api/health every PROBE_EVERY_MS, each probe bounded by
 * --control_timeout_ms: any HTTP answer means the process is alive.
 * TCP alone cannot tell: the kernel of a stopped (SIGSTOP) or wedged
 * controller still acknowledges, so the long poll would wait its whole
 * --watch_wait_secs while the table goes stale. */
#define PROBE_EVERY_MS 1000

static size_t
on_probe_data(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n; /* the answer itself does not matter */
}

static CURL *
probe_new(struct api_watch *w, int ctl, struct curl_slist *hl, char *url, size_t cap)
{
    const struct api_config *cfg = w->srv->cfg;
    CURL *h = curl_easy_init();

    if (!h) {
        return NULL;
    }
    snprintf(url, cap, "%s/api/health", w->srv->ctl[ctl]);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl); /* the secret, for --protect_reads */
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->control_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)cfg->control_timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_probe_data);
    return h;
}

/* One list call to controller `ctl`: a long-poll when we hold an ETag.
 * Returns the HTTP status (200, 304, ...), or -1 with a reason in err. */
static long
watch_call(struct api_watch *w, int ctl, struct call *c, char *err, size_t errcap)
{
    const struct api_config *cfg = w->srv->cfg;
    struct curl_slist *hl = NULL, *probe_hl = NULL, *n;
    char url[700], probe_url[700], inm[160], secret[600], settings[40] = "";
    long status = -1;
    CURL *h = curl_easy_init();
    CURLM *m = curl_multi_init();
    CURL *probe = NULL;
    int64_t next_probe = util_mono_ms() + PROBE_EVERY_MS;
    bool done = false;

    err[0] = '\0';
    if (!h || !m) {
        snprintf(err, errcap, "cannot create a curl handle");
        goto out;
    }
    if (w->settings >= 0) {
        /* the settings version held: the watch answers when it moves */
        snprintf(settings, sizeof(settings), "&settings=%lld", (long long)w->settings);
    }
    if (w->etag[0]) {
        /* with the view token of the table held: a change comes as a delta */
        snprintf(url, sizeof(url), "%s/api/controller/models?view=full&wait=%lld%s%s%s",
                 w->srv->ctl[ctl], (long long)cfg->watch_wait_secs, w->view[0] ? "&since=" : "",
                 w->view, settings);
    } else {
        snprintf(url, sizeof(url), "%s/api/controller/models?view=full", w->srv->ctl[ctl]);
    }
    snprintf(inm, sizeof(inm), "If-None-Match: %s", w->etag);
    if (w->etag[0] && (n = curl_slist_append(hl, inm))) {
        hl = n;
    }
    if (api_secret_header(w->srv, secret, sizeof(secret))) {
        if ((n = curl_slist_append(hl, secret))) {
            hl = n;
        }
        if ((n = curl_slist_append(probe_hl, secret))) {
            probe_hl = n;
        }
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->control_timeout_ms);
    curl_easy_setopt(
        h, CURLOPT_TIMEOUT_MS,
        (long)(cfg->control_timeout_ms + (w->etag[0] ? cfg->watch_wait_secs * 1000 : 0)));
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
    curl_easy_setopt(h, CURLOPT_SOCKOPTFUNCTION, on_sockopt);
    if (curl_multi_add_handle(m, h) != CURLM_OK) {
        snprintf(err, errcap, "cannot start the transfer");
        goto out;
    }
    while (!done) {
        int running = 0;
        CURLMsg *msg;
        int left;

        if (curl_multi_perform(m, &running) != CURLM_OK) {
            snprintf(err, errcap, "the transfer failed");
            break;
        }
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) {
                continue;
            }
            if (msg->easy_handle == h) {
                if (msg->data.result == CURLE_OK) {
                    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
                } else if (!err[0]) {
                    snprintf(err, errcap, "%s", curl_easy_strerror(msg->data.result));
                }
                done = true;
            } else if (msg->easy_handle == probe) {
                long ps = 0;
                curl_easy_getinfo(probe, CURLINFO_RESPONSE_CODE, &ps);
                if (msg->data.result != CURLE_OK || ps == 0) {
                    /* no answer at all: the long poll waits on a dead end */
                    snprintf(err, errcap, "no answer to a health probe within %lld ms (%s)",
                             (long long)cfg->control_timeout_ms,
                             curl_easy_strerror(msg->data.result));
                    status = -1;
                    done = true;
                }
                curl_multi_remove_handle(m, probe);
                curl_easy_cleanup(probe);
                probe = NULL;
                next_probe = util_mono_ms() + PROBE_EVERY_MS;
            }
        }
        if (done || atomic_load(&w->stop)) {
            break;
        }
        if (!probe && util_mono_ms() >= next_probe) {
            probe = probe_new(w, ctl, probe_hl, probe_url, sizeof(probe_url));
            if (probe && curl_multi_add_handle(m, probe) != CURLM_OK) {
                curl_easy_cleanup(probe);
                probe = NULL;
            }
            next_probe = util_mono_ms() + PROBE_EVERY_MS; /* retried then if it failed */
        }
        int64_t wait = next_probe - util_mono_ms();
        (void)curl_multi_poll(m, NULL, 0, wait < 1 ? 1 : wait > 250 ? 250 : (int)wait, NULL);
    }
out:
    if (probe) {
        curl_multi_remove_handle(m, probe);
        curl_easy_cleanup(probe);
    }
    if (h) {
        if (m) {
            curl_multi_remove_handle(m, h);
        }
        curl_easy_cleanup(h);
    }
    if (m) {
        curl_multi_cleanup(m);
    }
    explicit_bzero(secret, sizeof(secret));
    curl_slist_free_all(hl);
    curl_slist_free_all(probe_hl);
    if (status < 0 && !err[0]) {
        snprintf(err, errcap, "stopped");
    }
    return status;
}

static int
str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A model name of a delta: "name@type" within the registry's limits. */
static bool
valid_model(const cJSON *it)
{
    return cJSON_IsString(it) && strchr(it->valuestring, '@') &&
           strlen(it->valuestring) <= API_NAME_MAX;
}

/* The models of a delta answer (object: see docs/api.md, "Watching"):
 * every current model, the changed ones with their rows (rows[0..nrows),
 * sorted), the others taken from `old`. Returns the count of *md_out, or
 * -1 when the delta does not fit the table held (a model it says is
 * unchanged that `old` lacks, rows of a model it does not list): the
 * watcher then asks for the full list. */
static long
delta_models(const cJSON *root, const struct api_table *old, const struct row *rows, size_t nrows,
             struct mdesc **md_out)
{
    const cJSON *models = json_get(root, "models"), *changed = json_get(root, "changed");
    size_t nm = (size_t)cJSON_GetArraySize(models), nc = (size_t)cJSON_GetArraySize(changed);
    const char **names = calloc(nm ? nm : 1, sizeof(*names));
    const char **ch = calloc(nc ? nc : 1, sizeof(*ch));
    struct mdesc *md = calloc(nm ? nm : 1, sizeof(*md));
    size_t k = 0, r = 0;
    long rc = -1;

    if (!old || !cJSON_IsArray(models) || !cJSON_IsArray(changed) || !names || !ch || !md) {
        goto out;
    }
    nm = nc = 0;
    for (const cJSON *it = models->child; it; it = it->next) {
        if (!valid_model(it)) {
            goto out;
        }
        names[nm++] = it->valuestring;
    }
    for (const cJSON *it = changed->child; it; it = it->next) {
        if (!valid_model(it)) {
            goto out;
        }
        ch[nc++] = it->valuestring;
    }
    qsort(names, nm, sizeof(*names), str_cmp);
    qsort(ch, nc, sizeof(*ch), str_cmp);
    for (size_t i = 0; i < nm; i++) {
        struct mdesc *d = &md[k];
        if (i > 0 && strcmp(names[i], names[i - 1]) == 0) {
            goto out; /* listed twice */
        }
        d->model = names[i];
        d->changed = bsearch(&names[i], ch, nc, sizeof(*ch), str_cmp) != NULL;
        if (r < nrows && strcmp(rows[r].model, names[i]) < 0) {
            goto out; /* rows of a model not listed */
        }
        d->rows = rows + r;
        while (r < nrows && strcmp(rows[r].model, names[i]) == 0) {
            r++;
        }
        d->nrows = (size_t)(rows + r - d->rows);
        if (!d->changed) {
            struct api_model probe;
            if (d->nrows > 0) {
                goto out; /* rows of a model said to be unchanged */
            }
            model_names(&probe, names[i]);
            d->old = api_table_find((struct api_table *)old, probe.name, probe.type);
            if (!d->old) {
                goto out; /* unchanged since a table we do not hold */
            }
            d->old_first = all_lower_bound(old, names[i]);
            if (d->old_first + d->old->known > old->nall) {
                goto out;
            }
        }
        k++;
    }
    if (r < nrows) {
        goto out;
    }
    *md_out = md;
    md = NULL;
    rc = (long)k;
out:
    free(names);
    free(ch);
    free(md);
    return rc;
}

/* The models of a full list: every group of rows, changed. */
static long
full_models(const struct row *rows, size_t n, struct mdesc **md_out)
{
    size_t nm = 0;
    struct mdesc *md;

    for (size_t i = 0; i < n; i++) {
        nm += i == 0 || strcmp(rows[i].model, rows[i - 1].model) != 0;
    }
    md = calloc(nm ? nm : 1, sizeof(*md));
    if (!md) {
        return -1;
    }
    nm = 0;
    for (size_t i = 0, j; i < n; i = j) {
        for (j = i; j < n && strcmp(rows[j].model, rows[i].model) == 0; j++) {
        }
        md[nm++] = (struct mdesc){
            .model = rows[i].model, .changed = true, .rows = rows + i, .nrows = j - i};
    }
    *md_out = md;
    return (long)nm;
}

/* Turns a 200 answer (a full list, or a delta since the table held) into
 * a table and publishes it. Returns 0; 1 when a delta does not fit the
 * table held (ask for the full list); -1 with a reason in err. */
static int
take_list(struct api_watch *w, struct call *c, char *err, size_t errcap)
{
    cJSON *root = NULL;
    const cJSON *inst;
    struct row *rows = NULL;
    struct mdesc *md = NULL;
    struct api_table *t;
    char jerr[128];
    long n, nm;
    bool delta;
    int rc = -1;

    if (json_parse(c->body.data, c->body.len, MAX_JSON_DEPTH, &root, jerr, sizeof(jerr)) != 0 ||
        !(cJSON_IsArray(root) || cJSON_IsObject(root))) {
        snprintf(err, errcap, "the controller's list is not a JSON array");
        goto out;
    }
    delta = cJSON_IsObject(root);
    inst = delta ? json_get(root, "instances") : root;
    if (delta && (!cJSON_IsTrue(json_get(root, "delta")) || !cJSON_IsArray(inst))) {
        snprintf(err, errcap, "the controller's answer is neither a list nor a delta");
        goto out;
    }
    n = parse_rows(inst, &rows, err, errcap);
    if (n < 0) {
        goto out;
    }
    nm = delta ? delta_models(root, w->last, rows, (size_t)n, &md)
               : full_models(rows, (size_t)n, &md);
    if (nm < 0) {
        if (delta) {
            rc = 1;
            log_info("the controller's delta does not fit the table held: asking for the full "
                     "list");
        } else {
            snprintf(err, errcap, "out of memory");
        }
        goto out;
    }
    t = build(w, w->last, md, (size_t)nm);
    if (!t) {
        snprintf(err, errcap, "out of memory building the table");
        goto out;
    }
    log_debug("table version %" PRIu64 ": %zu models, %zu instances, %zu routable (%s)", t->version,
              t->nmodels, t->instances, t->routable, delta ? "delta" : "full");
    api_table_unref(w->last);
    w->last = t; /* build() counted this reference */
    publish(w, t);
    rc = 0;
out:
    free(md);
    free(rows);
    cJSON_Delete(root);
    return rc;
}

/* Waits ms or until stopped; returns true when stopped. */
static bool
wait_ms(struct api_watch *w, int64_t ms)
{
    struct timespec ts;

    util_deadline_us(ms * 1000, &ts);
    pthread_mutex_lock(&w->mu);
    while (!atomic_load(&w->stop)) {
        if (pthread_cond_timedwait(&w->cond, &w->mu, &ts) == ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&w->mu);
    return atomic_load(&w->stop);
}

static void
set_status(struct api_watch *w, bool ok, const char *error)
{
    pthread_mutex_lock(&w->mu);
    w->st.reachable = ok;
    util_strlcpy(w->st.current, w->srv->ctl[w->cur], sizeof(w->st.current));
    if (ok) {
        w->st.last_ok_mono_ms = util_mono_ms();
        w->st.error[0] = '\0';
    } else {
        util_url_redact(error, w->st.error, sizeof(w->st.error)); /* it names a URL */
    }
    pthread_mutex_unlock(&w->mu);
}

static void *
watch_main(void *arg)
{
    struct api_watch *w = arg;
    int64_t backoff = BACKOFF_MIN_MS;
    size_t failed_in_a_row = 0;
    bool warned = false;

    while (!atomic_load(&w->stop)) {
        struct call c = {.w = w, .settings = -1};
        char err[256] = "";
        long st;

        buf_init(&c.body, MAX_LIST_BYTES);
        st = watch_call(w, w->cur, &c, err, sizeof(err));
        if (atomic_load(&w->stop)) {
            buf_cleanup(&c.body);
            break;
        }
        int took = st == 200 ? take_list(w, &c, err, sizeof(err)) : -1;
        if (took == 1) {
            /* a delta that does not fit the table held: the full list next */
            w->etag[0] = '\0';
            w->view[0] = '\0';
            buf_cleanup(&c.body);
            continue;
        }
        if (st == 200 && took == 0) {
            util_strlcpy(w->etag, c.etag, sizeof(w->etag));
            /* an instance whose host did not resolve is looked up again
             * with each list that carries it: full lists until it does */
            util_strlcpy(w->view, w->unresolved ? "" : c.view, sizeof(w->view));
        } else if (st == 200 || (st != 304 && st >= 0)) {
            if (!err[0]) {
                snprintf(err, sizeof(err), "status %ld", st);
            }
            st = -1;
        }
        buf_cleanup(&c.body);
        if (st == 200 && c.settings >= 0 && c.settings != w->settings) {
            /* the settings moved: fetch them from the same controller */
            char serr[256];
            if (api_settings_fetch(w->srv, (size_t)w->cur, serr, sizeof(serr)) == 0) {
                w->settings = api_settings_version(w->srv);
                w->settings_warned = false;
            } else {
                if (!w->settings_warned) {
                    log_warn("controller %s: the settings (version %lld) could not be read: %s; "
                             "retrying every second with the old ones in force",
                             w->srv->ctl_shown[w->cur], (long long)c.settings, serr);
                    w->settings_warned = true;
                }
                if (wait_ms(w, 1000)) {
                    break;
                }
            }
        }
        if (st == 200 || st == 304) {
            if (warned) {
                log_info("watching %s", w->srv->ctl_shown[w->cur]);
            }
            warned = false;
            failed_in_a_row = 0;
            backoff = BACKOFF_MIN_MS;
            set_status(w, true, NULL);
            if (!w->etag[0] && wait_ms(w, 1000)) {
                break; /* a controller without watches (DB-GPT's): poll every second */
            }
            continue;
        }
        if (!warned) {
            log_warn("controller %s: %s; trying the next one (routing goes on with the last "
                     "table)",
                     w->srv->ctl_shown[w->cur], err);
            api_event_add(w->srv, "failover", NULL, NULL, 0,
                          "%s: %s; the routing table is now watched from the next controller",
                          w->srv->ctl_shown[w->cur], err);
            warned = true;
        }
        int failed = w->cur;
        w->cur = (w->cur + 1) % (int)w->srv->nctl;
        /* health names the controller being tried from now on, not the
         * one that failed (it says why that one was left) */
        char why[256];
        snprintf(why, sizeof(why), "%.120s: %.120s", w->srv->ctl_shown[failed], err);
        set_status(w, false, why);
        /* the next controller is asked for its list at once, not watched
         * with the last one's ETag: its answer says at once that it serves
         * (health is no longer stale) and brings its view */
        w->etag[0] = '\0';
        /* and never a delta: versions are per controller process (its
         * token names it, so another controller would answer in full
         * anyway) */
        w->view[0] = '\0';
        if (++failed_in_a_row < w->srv->nctl) {
            continue; /* the next controller at once */
        }
        failed_in_a_row = 0;
        int64_t d = backoff / 2 + (int64_t)util_random_below((uint64_t)backoff);
        if (wait_ms(w, d)) {
            break;
        }
        backoff = backoff * 2 < BACKOFF_MAX_MS ? backoff * 2 : BACKOFF_MAX_MS;
    }
    return NULL;
}

int
api_watch_start(struct api_server *srv, char *err, size_t errcap)
{
    struct api_watch *w = calloc(1, sizeof(*w));

    if (!w) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    w->srv = srv;
    w->first_list = true;
    w->settings = -1;
    w->cur = (int)util_random_below(srv->nctl);
    util_strlcpy(w->st.current, srv->ctl[w->cur], sizeof(w->st.current));
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    srv->watch = w;
    if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
        snprintf(err, errcap, "cannot start the watcher thread");
        return -1;
    }
    w->started = true;
    return 0;
}

void
api_watch_stop(struct api_server *srv)
{
    struct api_watch *w = srv->watch;

    if (!w) {
        return;
    }
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->stop, true);
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
    if (w->started) {
        pthread_join(w->thread, NULL);
    }
    for (size_t i = 0; i < w->nknown; i++) {
        api_inst_unref(w->known[i]);
    }
    free(w->known);
    api_table_unref(w->last);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mu);
    free(w);
    srv->watch = NULL;
}

void
api_watch_status(struct api_server *srv, struct api_watch_status *out)
{
    struct api_watch *w = srv->watch;

    memset(out, 0, sizeof(*out));
    if (!w) {
        return;
    }
    pthread_mutex_lock(&w->mu);
    *out = w->st;
    pthread_mutex_unlock(&w->mu);
}

size_t
api_controller_order(struct api_server *srv, size_t order[API_MAX_CTLS])
{
    struct api_watch_status ws;
    size_t n = 0;

    api_watch_status(srv, &ws);
    for (size_t i = 0; i < srv->nctl; i++) {
        if (strcmp(srv->ctl[i], ws.current) == 0) {
            order[n++] = i;
        }
    }
    for (size_t i = 0; i < srv->nctl; i++) {
        if (strcmp(srv->ctl[i], ws.current) != 0) {
            order[n++] = i;
        }
    }
    return n;
}

const char *
api_secret_header(const struct api_server *srv, char *out, size_t cap)
{
    const char *s = srv->cfg->cluster_secret;

    if (!s || !*s) {
        return NULL;
    }
    snprintf(out, cap, "X-Roster-Secret: %s", s);
    return out;
}
