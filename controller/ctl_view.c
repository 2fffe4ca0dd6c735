/* SPDX-License-Identifier: MIT
 *
 * ctl_view.c - the controller's in-memory view of the registry table.
 *
 * DESIGN
 * Two layers:
 *   - the master table: models (sorted by name), each with its instances
 *     (sorted by host, port), mutable, guarded by `mu`, written by the
 *     writer thread (local commits), the refresher thread (rows from the
 *     database) and the tick thread (lease expiry);
 *   - snapshots: immutable, reference-counted copies that readers on loop
 *     threads take with ctl_view_acquire() (a pointer copy under `snap_mu`).
 *     A snapshot shares every unchanged model with its predecessor, so a
 *     heartbeat storm on one model does not copy the others; the list JSON
 *     of each model is serialised once per snapshot, on first use.
 *
 * Versions (incremental watches): each snapshot has a version (one more
 * per publish) and the view a random epoch; each model snapshot records
 * the version in which its routing fields last changed (a rebuild that
 * routes alike, e.g. for a full refresh's new load figures, keeps the
 * version of the one it replaces: routing_same). ctl_snap_delta_json serves
 * since=<epoch>-<version> from that: the models above the version, from
 * their cached JSON, and the names of all.
 *
 * Time: an instance's heartbeat is kept as a point on this process's
 * monotonic clock, derived from the age the database computed
 * (db now - last_heartbeat) when the row was read, or from the commit time
 * of a local heartbeat. Wall clocks never enter, so a controller whose
 * clock is minutes off agrees with the others.
 *
 * Database outages (the mass-eviction brake): while the refresher cannot
 * reach the database, leases do not expire (frozen: the workers cannot
 * heartbeat either); when it comes back, every instance that was alive
 * gets one lease of grace to heartbeat again before it can expire. Leases
 * also stop running once the table has not been read for cfg.stale_ms (a
 * refresh stuck in its retry budget), so the seconds before the refresher
 * gives up and freezes the view evict no one either.
 *
 * Admission (--max_instances) is the writer's (ctl_writer.c): it counts the
 * table before a batch that adds keys. So a row committed here is always
 * inserted, even past the bound (another controller's rows may have raced
 * it), and only rows read from the table are ignored when the view is full;
 * ctl_view_refresh_apply says how many, so the refresher can tell "rows
 * the view cannot hold" from "rows deleted elsewhere".
 *
 * --instance_networks at read: an instance whose host is outside the
 * allowed networks (a row another controller, one without the flag, or a
 * DB-GPT controller wrote) is listed with healthy=false, routable=false and
 * "blocked" in view=full: no client that routes by the list (DB-GPT's
 * healthy_only=true, roster's apiserver by `routable`) is sent to it, and an
 * operator still sees the row and why it gets no traffic. The host is part
 * of the key, so the test runs once, when the instance enters the view.
 *
 * Locks. `mu` guards the master table and is held for a whole merge and
 * publish (tens of ms with 100,000 instances): loop threads never take it.
 * `snap_mu` guards only the `current` pointer (held for a pointer copy and
 * a reference count): ctl_view_acquire takes it, from any thread. What a
 * loop thread reads besides the snapshot (the time of the last refresh) is
 * atomic. Lock order: mu, then snap_mu. on_change runs with neither held.
 *
 * Memory. Each list JSON is charged to the process budget (budget.h,
 * --memory_budget_bytes) for as long as it lives (the snapshot's cache and
 * every response still sending it hold references); the buffer it is built
 * in is capped at CTL_INST_JSON_MAX bytes per instance of the snapshot. A
 * JSON the budget cannot hold is dropped: the reader answers 503 +
 * Retry-After.
 * Records are compact (struct reg_row, 96 bytes, strings at their length):
 * a master instance holds its host inline, a template only if it has one,
 * and its model's name by pointer; a model snapshot is one block (the
 * struct, its instances, their heartbeat cells, their strings). At 100,000
 * instances the master table takes about 170 bytes an instance and the
 * snapshot about 140 (they were 536 and 504 with reg_instance's fixed
 * 129-byte strings), the refresher's row array 110 (registry/reg_store.c).
 * A full refresh rebuilds the models whose load moved (with a fleet that
 * reports load, most of them), so the old and the new snapshot
 * live side by side for a moment: with malloc, the old one's pages stayed
 * in the heap (and in another thread's arena the first time), about
 * 300 bytes an instance for good. So a publish that rebuilds at least
 * SNAP_SLAB_MIN bytes of snapshots builds them in one mapping (struct
 * ctl_snap_slab), counted by the model snapshots in it and unmapped when
 * the last is released; smaller publishes (a write, a poll) use malloc.
 * Snapshots are freed on the view's threads only: a replaced one waits in
 * a retired list until its readers are done (reap), so a loop thread's
 * release never frees a snapshot's models or unmaps their mapping.
 * A model that stops changing would keep its mapping alive forever, so
 * the next publish also rebuilds the survivors of a mapping whose live
 * bytes fell under half its size (a mapping holds at most about twice
 * what its snapshots use).
 * The price is faulting in a fresh mapping per such publish (14 MB at
 * 100,000 instances, in the refresh time): done in one call (MAP_POPULATE),
 * the full refresh costs about what it did before the records were
 * compact; page by page it cost about 25 ms more. The list JSONs stay on
 * malloc: a mapping of their own (tried) freed nothing the benchmark saw
 * and made every rebuild of the list-all fault its pages in anew (the
 * first list after a full refresh: ~250 ms instead of ~60 to ~200).
 */
#include "ctl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "budget.h"
#include "json_write.h"
#include "util.h"

/* One instance of the master table, one allocation: the record's
 * model_name is its model's name, its host the `host` at the end, its
 * prompt_template a string of its own (NULL: none). */
struct vinst {
    struct reg_row rec;
    int64_t hb_mono_ms;       /* valid when rec.has_last_heartbeat */
    int64_t grace_until_mono; /* alive until then after an outage (0 = none) */
    uint64_t write_seq;       /* view seq of the last local write */
    uint64_t seen_gen;        /* refresh generation that last saw the row */
    bool alive;               /* as last computed */
    bool blocked;             /* host outside --instance_networks: never routable */
    bool load_stale;          /* its load changed since its model's snapshot was built */
    char host[];              /* the key's host, at its length */
};

struct vmodel {
    char name[REG_NAME_MAX + 1];
    struct vinst **v; /* sorted by (host, port) */
    size_t n;
    size_t cap;
    bool dirty;
    uint64_t expired;            /* leases that ran out here (see set_alive) */
    struct ctl_model_snap *snap; /* published; the master holds a reference */
};

struct ctl_view {
    struct ctl_view_config cfg;
    pthread_mutex_t mu;
    struct vmodel **models; /* sorted by name */
    size_t nmodels;
    size_t cap;
    size_t ninst;
    uint64_t seq;
    uint64_t gen;
    int64_t db_offset_ms; /* db clock - monotonic clock, from the last refresh */
    bool frozen;
    int64_t grace_end_mono;            /* latest grace_until of any instance */
    _Atomic int64_t last_refresh_mono; /* read by loop threads without mu */
    size_t ignored;                    /* rows of the current refresh the full view ignored */
    int64_t min_lease_ms;              /* shortest lease in the table (0 = empty) */
    uint64_t version;
    uint64_t epoch; /* random: names this view in watch tokens */
    bool any_dirty;
    bool structure_dirty; /* models added or removed */
    pthread_mutex_t snap_mu;
    struct ctl_snap *current;
    /* replaced snapshots readers may still hold, with the view's reference
     * (mu): freed by reap() on a view thread once that is the last one, so
     * a loop thread's release never frees a snapshot (its model snapshots,
     * their mapping: milliseconds at 100,000 instances) */
    struct ctl_snap *retired;
    void (*on_change)(void *);
    void *on_change_arg;
    pthread_t tick;
    bool tick_started;
    bool stop;
    pthread_cond_t cond;
};

/* ---- hashing (ETags) ------------------------------------------------------ */

static uint64_t
fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;

    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 1099511628211ULL;
    }
    return h;
}

#define FNV_INIT 14695981039346656037ULL

/* ---- snapshots ------------------------------------------------------------ */

/* Bytes the view's mappings (snapshot slabs) hold now. */
static _Atomic int64_t mapped_bytes;

int64_t
ctl_view_mapped_bytes(void)
{
    return atomic_load_explicit(&mapped_bytes, memory_order_relaxed);
}

static void
unmap(void *p, size_t size)
{
    munmap(p, size);
    atomic_fetch_sub_explicit(&mapped_bytes, (int64_t)size, memory_order_relaxed);
}

void
ctl_json_release(struct ctl_json *j)
{
    if (j && atomic_fetch_sub_explicit(&j->refs, 1, memory_order_acq_rel) == 1) {
        budget_give((int64_t)j->charged);
        free(j);
    }
}

/* A mapping that holds the model snapshots of one publish that rebuilt
 * many (see "Memory." at the top): given back whole (munmap) once the
 * last of them is released. */
struct ctl_snap_slab {
    _Atomic size_t refs; /* model snapshots in it, and the publish building it */
    _Atomic size_t live; /* bytes of the model snapshots in it not yet released */
    size_t size;         /* of the mapping */
    size_t used;
};

/* A model snapshot whose database clock offset is this far from the
 * view's is rebuilt at the next full refresh (its listed ages). */
#define DRIFT_MS 5000
/* the most a read-back heartbeat may lie after the view's time and count as
 * the same beat (merge_row): a query slower than this is a retried one */
#define SLACK_MAX_MS 1000
/* ... plus the clocks' grain: ages and monotonic times are whole ms, and
 * SQLite's julianday() arithmetic rounds to the ms (a sub-ms query placed
 * its own beat 1-2 ms after the commit) */
#define CLOCK_GRAIN_MS 2

/* Publishes whose rebuilt snapshots take at least this much build them in
 * one mapping; smaller ones use malloc. */
#define SNAP_SLAB_MIN (1024 * 1024)

/* A fresh mapping of `size` bytes, its pages faulted in by the one call
 * (MAP_POPULATE: a page fault per page cost a full refresh at 100,000
 * instances about 25 ms more, measured); NULL when refused. */
static void *
map_fresh(size_t size)
{
#ifdef MAP_POPULATE
    int populate = MAP_POPULATE;
#else
    int populate = 0;
#endif
    void *p =
        mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | populate, -1, 0);

    if (p == MAP_FAILED) {
        return NULL;
    }
    atomic_fetch_add_explicit(&mapped_bytes, (int64_t)size, memory_order_relaxed);
    return p;
}

static void
slab_release(struct ctl_snap_slab *sl)
{
    if (sl && atomic_fetch_sub_explicit(&sl->refs, 1, memory_order_acq_rel) == 1) {
        unmap(sl, sl->size);
    }
}

static void
model_snap_release(struct ctl_model_snap *m)
{
    if (!m || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    for (int i = 0; i < 4; i++) {
        ctl_json_release(atomic_load(&m->json[i]));
    }
    pthread_mutex_destroy(&m->json_mu);
    if (m->slab) {
        atomic_fetch_sub_explicit(&m->slab->live, m->bytes, memory_order_relaxed);
        slab_release(m->slab); /* v, hb_ms and strs are in the same block */
    } else {
        free(m);
    }
}

void
ctl_snap_release(struct ctl_snap *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    for (size_t i = 0; i < s->nmodels; i++) {
        model_snap_release(s->models[i]);
    }
    for (int i = 0; i < 4; i++) {
        ctl_json_release(atomic_load(&s->json[i]));
    }
    pthread_mutex_destroy(&s->json_mu);
    free(s->models);
    free(s);
}

struct ctl_snap *
ctl_snap_ref(struct ctl_snap *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

struct ctl_snap *
ctl_view_acquire(struct ctl_view *v)
{
    struct ctl_snap *s;

    pthread_mutex_lock(&v->snap_mu);
    s = v->current;
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&v->snap_mu);
    return s;
}

const struct ctl_model_snap *
ctl_snap_model(const struct ctl_snap *s, const char *name)
{
    size_t lo = 0;
    size_t hi = s->nmodels;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s->models[mid]->name, name);
        if (c == 0) {
            return s->models[mid];
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

uint64_t
ctl_snap_etag(const struct ctl_snap *s, const char *name, bool routable_only)
{
    const struct ctl_model_snap *m;

    if (!name || !*name) {
        return s->etag[routable_only];
    }
    m = ctl_snap_model(s, name);
    if (!m) {
        /* an absent model and one without routable instances give the same
         * (empty) routable list, so they share its ETag */
        return routable_only ? FNV_INIT : fnv(FNV_INIT, "absent", 6);
    }
    return m->etag[routable_only];
}

/* Writes "YYYY-MM-DDTHH:MM:SS.mmm000" (26 bytes, no NUL) for `ms`, as
 * util_format_iso_ms does; `day`/`date` cache the last day's date part,
 * so a run of times on one day costs no gmtime. */
struct ts_cache {
    int64_t day;
    char date[11];
};

static void
format_ts(struct ts_cache *c, int64_t ms, char *out)
{
    int64_t day = ms >= 0 ? ms / 86400000 : -((-ms + 86399999) / 86400000);
    int64_t in_day = ms - day * 86400000;
    int h = (int)(in_day / 3600000);
    int mi = (int)(in_day / 60000 % 60);
    int sec = (int)(in_day / 1000 % 60);
    int milli = (int)(in_day % 1000);

    if (c->day != day || c->date[0] == '\0') {
        char iso[40];
        util_format_iso_ms(day * 86400000, iso, sizeof(iso));
        memcpy(c->date, iso, 10);
        c->date[10] = '\0';
        c->day = day;
    }
    memcpy(out, c->date, 10);
    out[10] = 'T';
    out[11] = (char)('0' + h / 10);
    out[12] = (char)('0' + h % 10);
    out[13] = ':';
    out[14] = (char)('0' + mi / 10);
    out[15] = (char)('0' + mi % 10);
    out[16] = ':';
    out[17] = (char)('0' + sec / 10);
    out[18] = (char)('0' + sec % 10);
    out[19] = '.';
    out[20] = (char)('0' + milli / 100);
    out[21] = (char)('0' + milli / 10 % 10);
    out[22] = (char)('0' + milli % 10);
    memcpy(out + 23, "000", 3);
}

#define TS_LEN 26

/* Writes `age` right-aligned in CTL_AGE_WIDTH bytes (no NUL): a number
 * with spaces before it, valid JSON and patchable in place. */
static void
format_age(int64_t age, char *out)
{
    int64_t a = age < 0 ? 0 : age > 999999999999 ? 999999999999 : age;
    size_t i = CTL_AGE_WIDTH;

    do {
        out[--i] = (char)('0' + a % 10);
        a /= 10;
    } while (a > 0 && i > 0);
    memset(out, ' ', i);
}

/* One instance. `hb_ms` (INT64_MIN: none) and `age_ms` (-1: none) are the
 * times to show; *ts_off receives the offset of the timestamp's first
 * byte in w's buffer (0 when it is null), *age_off that of the fixed-width
 * heartbeat_age_ms (view=full with a heartbeat; 0 otherwise). */
static void
inst_json(struct jw *w, const struct ctl_snap_inst *si, bool full, int64_t hb_ms, int64_t age_ms,
          struct ts_cache *tc, size_t *ts_off, size_t *age_off)
{
    const struct reg_row *r = &si->rec;
    char ts[TS_LEN + 1];

    *ts_off = 0;
    *age_off = 0;
    jw_raw(w, "{\"model_name\":");
    jw_str(w, r->model_name);
    jw_raw(w, ",\"host\":");
    jw_str(w, r->host);
    jw_raw(w, ",\"port\":");
    jw_i64(w, r->port);
    jw_raw(w, ",\"weight\":");
    jw_double(w, reg_row_weight(r));
    jw_raw(w, ",\"check_healthy\":");
    jw_bool(w, r->check_healthy);
    jw_raw(w, ",\"healthy\":");
    jw_bool(w, si->alive);
    jw_raw(w, ",\"enabled\":");
    jw_bool(w, r->enabled);
    jw_raw(w, ",\"prompt_template\":");
    jw_str(w, r->has_prompt_template ? r->prompt_template : NULL);
    jw_raw(w, ",\"last_heartbeat\":");
    if (hb_ms != INT64_MIN) {
        format_ts(tc, hb_ms, ts);
        ts[TS_LEN] = '\0';
        jw_raw(w, "\"");
        *ts_off = w->b->len;
        jw_raw(w, ts);
        jw_raw(w, "\"");
    } else {
        jw_raw(w, "null");
    }
    jw_raw(w, ",\"remove_from_registry\":false");
    if (full) {
        const char *at = strchr(r->model_name, '@');
        jw_raw(w, ",\"model\":");
        jw_strn(w, r->model_name, at ? (size_t)(at - r->model_name) : strlen(r->model_name));
        jw_raw(w, ",\"worker_type\":");
        jw_str(w, at ? at + 1 : "");
        jw_raw(w, ",\"alive\":");
        jw_bool(w, si->alive);
        jw_raw(w, ",\"routable\":");
        jw_bool(w, si->routable);
        jw_raw(w, ",\"weight_declared\":");
        jw_double(w, r->weight);
        jw_raw(w, ",\"weight_override\":");
        if (r->has_weight_override) {
            jw_double(w, r->weight_override);
        } else {
            jw_raw(w, "null");
        }
        jw_raw(w, ",\"lease_ms\":");
        jw_i64(w, si->lease_ms);
        jw_raw(w, ",\"heartbeat_age_ms\":");
        if (age_ms >= 0) {
            char age[CTL_AGE_WIDTH + 1];
            format_age(age_ms, age);
            age[CTL_AGE_WIDTH] = '\0';
            *age_off = w->b->len;
            jw_raw(w, age);
        } else {
            jw_raw(w, "null");
        }
        jw_raw(w, ",\"load\":{\"in_flight\":");
        jw_i64(w, r->in_flight);
        jw_raw(w, ",\"queue_length\":");
        jw_i64(w, r->queue_length);
        jw_raw(w, ",\"capacity\":");
        jw_i64(w, r->capacity);
        jw_raw(w, "}");
        jw_raw(w, ",\"blocked\":");
        jw_str(w, si->blocked ? "host outside --instance_networks" : NULL);
    }
    jw_raw(w, "}");
}

/* The age at monotonic time `now` of heartbeat time hb (a cell of m), on
 * the database clock of m; -1 for none. */
static int64_t
listed_age(const struct ctl_model_snap *m, int64_t hb, int64_t now)
{
    if (hb == INT64_MIN) {
        return -1;
    }
    return now + m->db_offset_ms - hb > 0 ? now + m->db_offset_ms - hb : 0;
}

void
ctl_snap_inst_json(struct jw *w, const struct ctl_model_snap *m, size_t i, bool full)
{
    struct ts_cache tc = {0};
    size_t off;
    size_t age_off;
    int64_t hb = atomic_load_explicit(&m->hb_ms[i], memory_order_relaxed);

    inst_json(w, &m->v[i], full, hb, listed_age(m, hb, util_mono_ms()), &tc, &off, &age_off);
}

/* A JSON being built: the document and where each heartbeat field went. */
struct json_build {
    struct buf b;
    struct jw w;
    struct ctl_json_patch *patch;
    size_t npatch;
    int64_t now_mono;
    struct ts_cache tc;
};

/* Appends the model's instances (comma-separated, no brackets), with the
 * heartbeat times of its cells. */
static void
write_model_items(struct json_build *jb, const struct ctl_model_snap *m, enum ctl_json_variant var,
                  bool *first)
{
    bool routable_only = var == CTL_JSON_ROUTABLE || var == CTL_JSON_FULL_ROUTABLE;
    bool full = var == CTL_JSON_FULL_ALL || var == CTL_JSON_FULL_ROUTABLE;

    for (size_t i = 0; i < m->n; i++) {
        int64_t hb;
        int64_t age = -1;
        size_t off;
        size_t age_off;

        if (routable_only && !m->v[i].routable) {
            continue;
        }
        if (!*first) {
            jw_raw(&jb->w, ",");
        }
        *first = false;
        hb = atomic_load_explicit(&m->hb_ms[i], memory_order_relaxed);
        age = listed_age(m, hb, jb->now_mono);
        inst_json(&jb->w, &m->v[i], full, hb, age, &jb->tc, &off, &age_off);
        if (off > 0 && jb->patch) {
            jb->patch[jb->npatch].off = off;
            jb->patch[jb->npatch].age_off = age_off;
            jb->patch[jb->npatch].ms = hb;
            jb->patch[jb->npatch].db_offset_ms = m->db_offset_ms;
            jb->patch[jb->npatch].cell = &m->hb_ms[i];
            jb->npatch++;
        }
    }
}

/* Allocates a ctl_json for `len` bytes of document and `npatch` entries,
 * charged to the process budget for its whole life; NULL when the budget
 * or memory refuses. */
static struct ctl_json *
json_alloc(size_t len, size_t npatch)
{
    size_t data = sizeof(struct ctl_json) + len + 1;
    size_t pad = (_Alignof(struct ctl_json_patch) - data % _Alignof(struct ctl_json_patch)) %
                 _Alignof(struct ctl_json_patch);
    size_t size = data + pad + npatch * sizeof(struct ctl_json_patch);
    struct ctl_json *j;

    if (!budget_take((int64_t)size)) {
        return NULL;
    }
    j = malloc(size);
    if (!j) {
        budget_give((int64_t)size);
        return NULL;
    }
    atomic_init(&j->refs, 1);
    j->charged = size;
    j->len = len;
    j->npatch = npatch;
    j->patch = npatch ? (struct ctl_json_patch *)((char *)j + data + pad) : NULL;
    j->hb_gen = 0;
    j->aged_mono = 0;
    return j;
}

/* Serialises the list of one model (m) or of every model (m NULL). */
static struct ctl_json *
json_build(struct ctl_snap *s, const struct ctl_model_snap *m, enum ctl_json_variant var,
           uint64_t gen)
{
    size_t n = m ? m->n : s->n_instances;
    struct json_build jb = {0};
    struct ctl_json *j = NULL;
    bool first = true;

    jb.now_mono = util_mono_ms();
    if (n > 0) {
        jb.patch = malloc(n * sizeof(*jb.patch));
        if (!jb.patch) {
            return NULL;
        }
    }
    /* the buffer is capped by what the snapshot's instances can take; the
     * document is charged to the budget once built (the buffer itself is
     * transient: one per building thread) */
    buf_init(&jb.b, 2 + n * (CTL_INST_JSON_MAX + 1));
    jw_init(&jb.w, &jb.b);
    jw_raw(&jb.w, "[");
    if (m) {
        write_model_items(&jb, m, var, &first);
    } else {
        for (size_t i = 0; i < s->nmodels; i++) {
            write_model_items(&jb, s->models[i], var, &first);
        }
    }
    jw_raw(&jb.w, "]");
    if (!jb.w.err) {
        j = json_alloc(jb.b.len, jb.npatch);
    }
    if (j) {
        memcpy(j->data, buf_str(&jb.b), jb.b.len + 1);
        if (jb.npatch) {
            memcpy(j->patch, jb.patch, jb.npatch * sizeof(*jb.patch));
        }
        j->hb_gen = gen;
        for (size_t i = 0; i < jb.npatch && !j->aged_mono; i++) {
            j->aged_mono = jb.patch[i].age_off > 0 ? jb.now_mono : 0;
        }
    }
    buf_cleanup(&jb.b);
    free(jb.patch);
    return j;
}

/* A copy of `old` with every timestamp whose cell moved rewritten and, in
 * view=full, every heartbeat age recomputed for now. */
static struct ctl_json *
json_patched(const struct ctl_json *old, uint64_t gen)
{
    struct ctl_json *j = json_alloc(old->len, old->npatch);
    struct ts_cache tc = {0};
    int64_t now = util_mono_ms();

    if (!j) {
        return NULL;
    }
    memcpy(j->data, old->data, old->len + 1);
    memcpy(j->patch, old->patch, old->npatch * sizeof(*old->patch));
    j->hb_gen = gen;
    j->aged_mono = old->aged_mono ? now : 0;
    for (size_t i = 0; i < j->npatch; i++) {
        struct ctl_json_patch *p = &j->patch[i];
        int64_t ms = atomic_load_explicit(p->cell, memory_order_relaxed);
        if (ms != p->ms && ms != INT64_MIN) {
            format_ts(&tc, ms, j->data + p->off);
            p->ms = ms;
        }
        if (p->age_off > 0) {
            format_age(now + p->db_offset_ms - p->ms, j->data + p->age_off);
        }
    }
    return j;
}

/* Whether j's heartbeat ages (view=full) are older than CTL_AGE_FRESH_MS:
 * no snapshot is rebuilt for time passing, the next read patches them. */
static bool
ages_stale(const struct ctl_json *j)
{
    return j->aged_mono && util_mono_ms() - j->aged_mono >= CTL_AGE_FRESH_MS;
}

/* Returns the JSON in *slot, made or refreshed for heartbeat generation
 * `gen` if needed, with one extra reference for the caller. */
static struct ctl_json *
cached_json(pthread_mutex_t *mu, struct ctl_json *_Atomic *slot, struct ctl_snap *s,
            const struct ctl_model_snap *m, enum ctl_json_variant var, uint64_t gen)
{
    struct ctl_json *j;
    struct ctl_json *nj;
    struct ctl_json *old = NULL;

    pthread_mutex_lock(mu);
    j = atomic_load_explicit(slot, memory_order_relaxed);
    if (j) {
        atomic_fetch_add_explicit(&j->refs, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(mu);
    if (j && j->hb_gen >= gen && !ages_stale(j)) {
        return j;
    }
    /* built here, outside the lock: another thread may build at the same
     * time; the later generation stays in the slot */
    nj = j && j->npatch > 0 ? json_patched(j, gen) : json_build(s, m, var, gen);
    if (!nj) {
        return j; /* the budget refused a fresher copy: serve the older times */
    }
    atomic_fetch_add_explicit(&nj->refs, 1, memory_order_relaxed); /* the slot's */
    pthread_mutex_lock(mu);
    old = atomic_load_explicit(slot, memory_order_relaxed);
    if (!old || old->hb_gen < nj->hb_gen ||
        (old->hb_gen == nj->hb_gen && old->aged_mono < nj->aged_mono)) {
        atomic_store_explicit(slot, nj, memory_order_relaxed);
    } else {
        old = nj; /* another thread installed a fresher one: drop the slot's reference */
    }
    pthread_mutex_unlock(mu);
    ctl_json_release(old);
    ctl_json_release(j);
    return nj;
}

/* The heartbeat generation of a whole snapshot: the sum of its models'
 * (each only grows, so the sum moves whenever one does). */
static uint64_t
snap_hb_gen(const struct ctl_snap *s)
{
    uint64_t g = 0;

    for (size_t i = 0; i < s->nmodels; i++) {
        g += atomic_load_explicit(&s->models[i]->hb_gen, memory_order_acquire);
    }
    return g;
}

struct ctl_json *
ctl_snap_json(struct ctl_snap *s, const char *name, enum ctl_json_variant var)
{
    struct ctl_model_snap *m;
    struct ctl_json *j;

    if (!name || !*name) {
        return cached_json(&s->json_mu, &s->json[var], s, NULL, var, snap_hb_gen(s));
    }
    m = (struct ctl_model_snap *)ctl_snap_model(s, name);
    if (m) {
        return cached_json(&m->json_mu, &m->json[var], s, m, var,
                           atomic_load_explicit(&m->hb_gen, memory_order_acquire));
    }
    j = malloc(sizeof(*j) + 3);
    if (j) {
        atomic_init(&j->refs, 1);
        j->charged = 0;
        j->hb_gen = 0;
        j->aged_mono = 0;
        j->npatch = 0;
        j->patch = NULL;
        j->len = 2;
        memcpy(j->data, "[]", 3);
    }
    return j;
}

/* A view token: "<epoch, 16 hex digits>-<version>". */
static void
format_token(uint64_t epoch, uint64_t version, char *out, size_t cap)
{
    snprintf(out, cap, "%016" PRIx64 "-%" PRIu64, epoch, version);
}

void
ctl_snap_token(const struct ctl_snap *s, char *out, size_t cap)
{
    format_token(s->epoch, s->version, out, cap);
}

bool
ctl_snap_since(const struct ctl_snap *s, const char *token, uint64_t *version_out)
{
    uint64_t epoch = 0;
    int64_t ver;

    for (int i = 0; i < 16; i++) {
        int d = util_hexval((unsigned char)token[i]);
        if (d < 0) {
            return false;
        }
        epoch = epoch << 4 | (uint64_t)d;
    }
    if (token[16] != '-' || util_parse_i64(token + 17, 0, INT64_MAX, &ver) != 0) {
        return false;
    }
    if (epoch != s->epoch || (uint64_t)ver > s->version) {
        return false;
    }
    *version_out = (uint64_t)ver;
    return true;
}

struct ctl_json *
ctl_snap_delta_json(struct ctl_snap *s, uint64_t since, enum ctl_json_variant var, bool *full_out)
{
    struct ctl_json **parts = NULL;
    struct ctl_json *j = NULL;
    size_t nchanged = 0;
    size_t changed_inst = 0;
    size_t cap = 256;
    char tok[48];
    struct buf b;
    struct jw w;
    bool first = true;

    *full_out = false;
    for (size_t i = 0; i < s->nmodels; i++) {
        if (s->models[i]->version > since) {
            nchanged++;
            changed_inst += s->models[i]->n;
        }
        /* a name, quoted and escaped (\u00XX at worst), twice */
        cap += 2 * (6 * REG_NAME_MAX + 3);
    }
    if (changed_inst > 0 && changed_inst * 2 > s->n_instances) {
        *full_out = true;
        return NULL;
    }
    parts = calloc(nchanged ? nchanged : 1, sizeof(*parts));
    if (!parts) {
        return NULL;
    }
    for (size_t i = 0, k = 0; i < s->nmodels; i++) {
        if (s->models[i]->version > since) {
            parts[k] = ctl_snap_json(s, s->models[i]->name, var);
            if (!parts[k]) {
                goto out;
            }
            cap += parts[k]->len + 1;
            k++;
        }
    }
    buf_init(&b, cap);
    jw_init(&w, &b);
    jw_raw(&w, "{\"delta\":true,\"since\":\"");
    format_token(s->epoch, since, tok, sizeof(tok));
    jw_raw(&w, tok);
    jw_raw(&w, "\",\"version\":\"");
    ctl_snap_token(s, tok, sizeof(tok));
    jw_raw(&w, tok);
    jw_raw(&w, "\",\"models\":[");
    for (size_t i = 0; i < s->nmodels; i++) {
        if (i > 0) {
            jw_raw(&w, ",");
        }
        jw_str(&w, s->models[i]->name);
    }
    jw_raw(&w, "],\"changed\":[");
    for (size_t i = 0, k = 0; i < s->nmodels; i++) {
        if (s->models[i]->version > since) {
            jw_raw(&w, k++ > 0 ? "," : "");
            jw_str(&w, s->models[i]->name);
        }
    }
    jw_raw(&w, "],\"instances\":[");
    for (size_t k = 0; k < nchanged; k++) {
        /* each part is "[...]": its items, without the brackets */
        if (parts[k]->len > 2) {
            if (!first && buf_append(&b, ",", 1) != 0) {
                w.err = true;
            }
            first = false;
            if (buf_append(&b, parts[k]->data + 1, parts[k]->len - 2) != 0) {
                w.err = true;
            }
        }
    }
    jw_raw(&w, "]}");
    if (!w.err) {
        j = json_alloc(b.len, 0);
    }
    if (j) {
        memcpy(j->data, buf_str(&b), b.len + 1);
    }
    buf_cleanup(&b);
out:
    for (size_t k = 0; k < nchanged; k++) {
        ctl_json_release(parts[k]);
    }
    free(parts);
    return j;
}

/* ---- master table ---------------------------------------------------------- */

static int64_t
lease_of(const struct ctl_view *v, const struct vinst *in)
{
    return in->rec.lease_ms > 0 ? in->rec.lease_ms : v->cfg.default_lease_ms;
}

static bool
compute_alive(const struct ctl_view *v, const struct vinst *in, int64_t now)
{
    if (!in->rec.healthy) {
        return false;
    }
    if (!in->rec.check_healthy) {
        return true;
    }
    if (v->frozen) {
        return in->alive; /* no expiry while the database is unreachable */
    }
    if (in->grace_until_mono > now) {
        return true;
    }
    /* The database has confirmed nothing for a while: the refresher is
     * stuck retrying an unreachable server and heartbeats cannot commit
     * either. Time stands still for leases until it answers (or fails and
     * freezes the view), so the start of an outage evicts no one. */
    int64_t last = atomic_load(&v->last_refresh_mono);
    if (v->cfg.stale_ms > 0 && last > 0 && now > last + v->cfg.stale_ms) {
        now = last + v->cfg.stale_ms;
    }
    return in->rec.has_last_heartbeat && now - in->hb_mono_ms <= lease_of(v, in);
}

/* Sets a recomputed `alive` of instance `in` of model m; true when it
 * changed. An instance that stops being alive while its row still says
 * healthy has had its lease run out (a deregistration or a sweep elsewhere
 * clears `healthy` first): m->expired counts those, the alert rules'
 * "instance down" (roster_view_model_expired_total). */
static bool
set_alive(struct vmodel *m, struct vinst *in, bool a)
{
    if (a == in->alive) {
        return false;
    }
    if (!a && in->rec.healthy) {
        m->expired++;
    }
    in->alive = a;
    return true;
}

static int
key_cmp(const char *host, int port, const struct vinst *in)
{
    int c = strcmp(host, in->rec.host);

    return c ? c : (port > in->rec.port) - (port < in->rec.port);
}

static size_t
find_model_idx(const struct ctl_view *v, const char *name, bool *found)
{
    size_t lo = 0;
    size_t hi = v->nmodels;

    *found = false;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(name, v->models[mid]->name);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c > 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static size_t
find_inst_idx(const struct vmodel *m, const char *host, int port, bool *found)
{
    size_t lo = 0;
    size_t hi = m->n;

    *found = false;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = key_cmp(host, port, m->v[mid]);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c > 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static struct vmodel *
get_model(struct ctl_view *v, const char *name, bool create)
{
    bool found;
    size_t i = find_model_idx(v, name, &found);
    struct vmodel *m;

    if (found) {
        return v->models[i];
    }
    if (!create) {
        return NULL;
    }
    if (v->nmodels == v->cap) {
        size_t ncap = v->cap ? v->cap * 2 : 16;
        struct vmodel **nm = realloc(v->models, ncap * sizeof(*nm));
        if (!nm) {
            return NULL;
        }
        v->models = nm;
        v->cap = ncap;
    }
    m = calloc(1, sizeof(*m));
    if (!m) {
        return NULL;
    }
    util_strlcpy(m->name, name, sizeof(m->name));
    memmove(&v->models[i + 1], &v->models[i], (v->nmodels - i) * sizeof(*v->models));
    v->models[i] = m;
    v->nmodels++;
    v->structure_dirty = true;
    return m;
}

static struct vinst *
find_inst(struct ctl_view *v, const char *model_name, const char *host, int port,
          struct vmodel **m_out, size_t *idx)
{
    struct vmodel *m = get_model(v, model_name, false);
    bool found = false;

    *m_out = m;
    if (!m) {
        return NULL;
    }
    *idx = find_inst_idx(m, host, port, &found);
    return found ? m->v[*idx] : NULL;
}

/* Sets the instance's template to `t` (NULL: none). Returns false when
 * memory ran out (the old one is kept). */
static bool
set_template(struct vinst *in, const char *t)
{
    char *copy = NULL;

    if (t) {
        if (in->rec.prompt_template && strcmp(in->rec.prompt_template, t) == 0) {
            return true;
        }
        copy = strdup(t);
        if (!copy) {
            return false;
        }
    }
    free((char *)in->rec.prompt_template);
    in->rec.prompt_template = copy;
    in->rec.has_prompt_template = t != NULL;
    return true;
}

/* Copies `row`'s fields into `in`, keeping its own strings (the key's are
 * the same; the template is copied when it differs). */
static void
vinst_assign(struct vinst *in, const struct reg_row *row)
{
    struct reg_row keep = in->rec;

    in->rec = *row;
    in->rec.model_name = keep.model_name;
    in->rec.host = keep.host;
    in->rec.prompt_template = keep.prompt_template;
    in->rec.has_prompt_template = keep.has_prompt_template;
    /* out of memory: the old template stays until the next read */
    (void)set_template(in, row->has_prompt_template ? row->prompt_template : NULL);
}

static void
vinst_free(struct vinst *in)
{
    if (in) {
        free((char *)in->rec.prompt_template);
        free(in);
    }
}

/* Inserts a new instance for `rec`; NULL when memory ran out or, for a
 * row read from the table (`local` false), when the view is full. A local
 * write committed here is always inserted: the writer admitted it. */
static struct vinst *
insert_inst(struct ctl_view *v, const struct reg_row *rec, bool local)
{
    struct vmodel *m;
    struct vinst *in;
    bool found;
    size_t i;
    size_t hostlen;

    if (!local && (int64_t)v->ninst >= v->cfg.max_instances) {
        return NULL;
    }
    m = get_model(v, rec->model_name, true);
    if (!m) {
        return NULL;
    }
    i = find_inst_idx(m, rec->host, rec->port, &found);
    if (found) {
        return m->v[i];
    }
    if (m->n == m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 8;
        struct vinst **nv = realloc(m->v, ncap * sizeof(*nv));
        if (!nv) {
            return NULL;
        }
        m->v = nv;
        m->cap = ncap;
    }
    hostlen = strnlen(rec->host, REG_HOST_MAX);
    in = calloc(1, sizeof(*in) + hostlen + 1);
    if (!in) {
        return NULL;
    }
    memcpy(in->host, rec->host, hostlen);
    in->rec = *rec;
    in->rec.model_name = m->name;
    in->rec.host = in->host;
    in->rec.prompt_template = NULL;
    in->rec.has_prompt_template = false;
    if (!set_template(in, rec->has_prompt_template ? rec->prompt_template : NULL)) {
        free(in);
        return NULL;
    }
    in->blocked = v->cfg.instance_nets && v->cfg.instance_nets->n > 0 &&
                  !netaddr_list_match_str(v->cfg.instance_nets, rec->host);
    memmove(&m->v[i + 1], &m->v[i], (m->n - i) * sizeof(*m->v));
    m->v[i] = in;
    m->n++;
    m->dirty = true;
    v->ninst++;
    v->any_dirty = true;
    return in;
}

static void
remove_inst(struct ctl_view *v, struct vmodel *m, size_t i)
{
    vinst_free(m->v[i]);
    memmove(&m->v[i], &m->v[i + 1], (m->n - i - 1) * sizeof(*m->v));
    m->n--;
    m->dirty = true;
    v->ninst--;
    v->any_dirty = true;
}

static void
mark(struct ctl_view *v, struct vmodel *m)
{
    m->dirty = true;
    v->any_dirty = true;
}

/* ---- publishing ------------------------------------------------------------- */

#define ALIGN16(x) (((x) + 15) & ~(size_t)15)

/* The bytes of m's snapshot: the struct, its instances, their heartbeat
 * cells and their strings at their length, in one block. */
static size_t
model_snap_bytes(const struct vmodel *m)
{
    size_t nstr = 0;

    for (size_t i = 0; i < m->n; i++) {
        nstr += strlen(m->v[i]->rec.host) + 1;
        if (m->v[i]->rec.prompt_template) {
            nstr += strlen(m->v[i]->rec.prompt_template) + 1;
        }
    }
    return ALIGN16(sizeof(struct ctl_model_snap)) + ALIGN16(m->n * sizeof(struct ctl_snap_inst)) +
           ALIGN16(m->n * sizeof(_Atomic int64_t)) + ALIGN16(nstr);
}

/* Builds m's snapshot in `slab` if it has `bytes` left, else in a block
 * of its own. */
static struct ctl_model_snap *
build_model_snap(struct ctl_view *v, struct vmodel *m, int64_t now, struct ctl_snap_slab *slab)
{
    size_t bytes = model_snap_bytes(m);
    struct ctl_model_snap *s;
    uint64_t h_all = FNV_INIT;
    uint64_t h_rt = FNV_INIT;
    char *block;
    char *sp;

    if (slab && slab->size - slab->used >= bytes) {
        block = (char *)slab + slab->used;
        slab->used += bytes;
        atomic_fetch_add_explicit(&slab->refs, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&slab->live, bytes, memory_order_relaxed);
    } else {
        slab = NULL;
        block = malloc(bytes);
        if (!block) {
            return NULL;
        }
    }
    s = (struct ctl_model_snap *)block;
    memset(s, 0, sizeof(*s));
    s->slab = slab;
    s->bytes = bytes;
    block += ALIGN16(sizeof(*s));
    s->v = (struct ctl_snap_inst *)block;
    block += ALIGN16(m->n * sizeof(*s->v));
    s->hb_ms = (_Atomic int64_t *)block;
    block += ALIGN16(m->n * sizeof(*s->hb_ms));
    s->strs = block;
    sp = s->strs;
    atomic_init(&s->refs, 1);
    atomic_init(&s->hb_gen, 0);
    pthread_mutex_init(&s->json_mu, NULL);
    s->db_offset_ms = v->db_offset_ms;
    util_strlcpy(s->name, m->name, sizeof(s->name));
    s->n = m->n;
    s->expired = m->expired;
    for (size_t i = 0; i < m->n; i++) {
        struct vinst *in = m->v[i];
        struct ctl_snap_inst *si = &s->v[i];
        double w = reg_row_weight(&in->rec);
        unsigned char flags[2];
        size_t len;

        memset(si, 0, sizeof(*si));
        si->rec = in->rec;
        si->rec.model_name = s->name;
        len = strlen(in->rec.host) + 1;
        memcpy(sp, in->rec.host, len);
        si->rec.host = sp;
        sp += len;
        if (in->rec.prompt_template) {
            len = strlen(in->rec.prompt_template) + 1;
            memcpy(sp, in->rec.prompt_template, len);
            si->rec.prompt_template = sp;
            sp += len;
        }
        in->load_stale = false;
        si->blocked = in->blocked;
        si->alive = in->alive && !in->blocked;
        si->routable = si->alive && in->rec.enabled && w > 0;
        si->lease_ms = lease_of(v, in);
        if (in->rec.has_last_heartbeat) {
            int64_t age = now - in->hb_mono_ms > 0 ? now - in->hb_mono_ms : 0;
            si->rec.last_heartbeat_ms = now + v->db_offset_ms - age;
        }
        atomic_init(&s->hb_ms[i],
                    in->rec.has_last_heartbeat ? si->rec.last_heartbeat_ms : INT64_MIN);
        s->n_alive += si->alive;
        s->n_routable += si->routable;
        flags[0] = (unsigned char)si->alive;
        flags[1] = (unsigned char)in->rec.enabled;
        h_all = fnv(h_all, in->rec.host, strlen(in->rec.host) + 1);
        h_all = fnv(h_all, &in->rec.port, sizeof(in->rec.port));
        h_all = fnv(h_all, &w, sizeof(w));
        h_all = fnv(h_all, flags, sizeof(flags));
        if (si->routable) {
            h_rt = fnv(h_rt, in->rec.host, strlen(in->rec.host) + 1);
            h_rt = fnv(h_rt, &in->rec.port, sizeof(in->rec.port));
            h_rt = fnv(h_rt, &w, sizeof(w));
        }
    }
    s->etag[0] = h_all;
    s->etag[1] = h_rt;
    return s;
}

/* True when two snapshots of a model route alike: the same instances
 * with the same routing fields (what a watcher's delta carries). */
static bool
routing_same(const struct ctl_model_snap *a, const struct ctl_model_snap *b)
{
    if (a->n != b->n || a->etag[0] != b->etag[0] || a->etag[1] != b->etag[1]) {
        return false;
    }
    for (size_t i = 0; i < a->n; i++) {
        const struct ctl_snap_inst *x = &a->v[i];
        const struct ctl_snap_inst *y = &b->v[i];
        if (x->rec.port != y->rec.port || x->alive != y->alive || x->routable != y->routable ||
            x->rec.enabled != y->rec.enabled ||
            reg_row_weight(&x->rec) != reg_row_weight(&y->rec) ||
            strcmp(x->rec.host, y->rec.host) != 0) {
            return false;
        }
    }
    return true;
}

/* Frees the retired snapshots no reader holds any more (mu held). A
 * retired snapshot cannot be acquired again (only `current` is), so a
 * reference count of one - the list's - stays one. */
static void
reap(struct ctl_view *v)
{
    for (struct ctl_snap **p = &v->retired; *p;) {
        struct ctl_snap *s = *p;
        if (atomic_load_explicit(&s->refs, memory_order_acquire) == 1) {
            *p = s->retired_next;
            ctl_snap_release(s);
        } else {
            p = &s->retired_next;
        }
    }
}

/* Builds and installs a new snapshot from the master (mu held). Returns
 * true when the routing state changed (the caller runs on_change). */
static bool
publish(struct ctl_view *v)
{
    int64_t now = util_mono_ms();
    struct ctl_snap *s;
    struct ctl_snap *old;
    struct ctl_snap_slab *slab = NULL;
    size_t keep = 0;
    bool changed;

    reap(v); /* every publish and every tick */
    if (!v->any_dirty && !v->structure_dirty) {
        return false;
    }
    /* A mapping goes back to the kernel only with the last snapshot in it:
     * the survivors of one that is mostly released (models that stopped
     * changing) are rebuilt by the next publish too, so a mapping holds
     * at most about twice the bytes its live snapshots use. */
    for (size_t i = 0; i < v->nmodels; i++) {
        struct vmodel *m = v->models[i];
        if (!m->dirty && m->snap && m->snap->slab &&
            atomic_load_explicit(&m->snap->slab->live, memory_order_relaxed) * 2 <
                m->snap->slab->size) {
            mark(v, m);
        }
    }
    /* a publish that rebuilds many models (a full refresh that finds most
     * loads moved) builds them in one mapping, given back whole once they
     * are all replaced */
    size_t slab_bytes = ALIGN16(sizeof(struct ctl_snap_slab));
    for (size_t i = 0; i < v->nmodels; i++) {
        struct vmodel *m = v->models[i];
        if (m->n > 0 && (m->dirty || !m->snap)) {
            slab_bytes += model_snap_bytes(m);
        }
    }
    if (slab_bytes >= SNAP_SLAB_MIN) {
        slab = map_fresh(slab_bytes);
        if (slab) {
            atomic_init(&slab->refs, 1); /* this publish's, dropped below */
            atomic_init(&slab->live, 0);
            slab->size = slab_bytes;
            slab->used = ALIGN16(sizeof(*slab));
        }
    }
    /* rebuild dirty models; drop empty ones */
    for (size_t i = 0; i < v->nmodels; i++) {
        struct vmodel *m = v->models[i];
        if (m->n == 0) {
            model_snap_release(m->snap);
            free(m->v);
            free(m);
            continue;
        }
        if (m->dirty || !m->snap) {
            struct ctl_model_snap *ns = build_model_snap(v, m, now, slab);
            if (ns) {
                ns->version =
                    m->snap && routing_same(m->snap, ns) ? m->snap->version : v->version + 1;
                model_snap_release(m->snap);
                m->snap = ns;
                m->dirty = false;
            }
        }
        v->models[keep++] = m;
    }
    v->nmodels = keep;
    slab_release(slab); /* the model snapshots built in it hold it now */
    s = calloc(1, sizeof(*s));
    if (!s) {
        return false; /* keep serving the old snapshot; retried on the next change */
    }
    s->models = calloc(v->nmodels ? v->nmodels : 1, sizeof(*s->models));
    if (!s->models) {
        free(s);
        return false;
    }
    atomic_init(&s->refs, 1);
    pthread_mutex_init(&s->json_mu, NULL);
    s->version = ++v->version;
    s->epoch = v->epoch;
    s->built_mono_ms = now;
    s->etag[0] = s->etag[1] = FNV_INIT;
    for (size_t i = 0; i < v->nmodels; i++) {
        struct ctl_model_snap *ms = v->models[i]->snap;
        if (!ms) {
            continue;
        }
        atomic_fetch_add_explicit(&ms->refs, 1, memory_order_relaxed);
        s->models[s->nmodels++] = ms;
        s->n_instances += ms->n;
        s->n_alive += ms->n_alive;
        s->n_routable += ms->n_routable;
        for (int k = 0; k < 2; k++) {
            if (k == 1 && ms->n_routable == 0) {
                continue; /* not in the routable list: must not change its ETag */
            }
            s->etag[k] = fnv(s->etag[k], ms->name, strlen(ms->name) + 1);
            s->etag[k] = fnv(s->etag[k], &ms->etag[k], sizeof(ms->etag[k]));
        }
    }
    v->any_dirty = false;
    v->structure_dirty = false;
    pthread_mutex_lock(&v->snap_mu);
    old = v->current;
    v->current = s;
    pthread_mutex_unlock(&v->snap_mu);
    changed = !old || old->etag[0] != s->etag[0];
    if (old) {
        old->retired_next = v->retired; /* its reference moves to the list */
        v->retired = old;
        reap(v);
    }
    return changed;
}

/* A plain heartbeat: its time into the model's published snapshot (see
 * struct ctl_model_snap in ctl.h), for the next list to copy into the
 * JSON. Nothing when the model is rebuilt at the next publish anyway (its
 * layout may differ from the published one: the rebuild reads the time). */
static void
store_hb(struct ctl_view *v, struct vmodel *m, size_t idx, const struct vinst *in)
{
    struct ctl_model_snap *s = m->snap;

    if (m->dirty || !s || idx >= s->n) {
        return;
    }
    atomic_store_explicit(&s->hb_ms[idx], in->hb_mono_ms + v->db_offset_ms, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->hb_gen, 1, memory_order_release);
}

static void
notify(struct ctl_view *v, bool changed)
{
    if (changed && v->on_change) {
        v->on_change(v->on_change_arg);
    }
}

/* ---- local writes ------------------------------------------------------------ */

static void
apply_upsert(struct ctl_view *v, const struct reg_op *op, int64_t now)
{
    struct vmodel *m = NULL;
    size_t idx = 0;
    struct vinst *in = find_inst(v, op->inst.model_name, op->inst.host, op->inst.port, &m, &idx);
    bool dirty = false;

    if (!in) {
        struct reg_row row;
        reg_row_from_instance(&row, &op->inst);
        in = insert_inst(v, &row, true);
        if (!in) {
            return; /* out of memory: the next full refresh reads it */
        }
        in->rec.has_weight_override = false;
        in->rec.healthy = true;
        m = get_model(v, op->inst.model_name, false);
        dirty = true;
    } else {
        if (op->kind == REG_OP_REGISTER) {
            dirty |= in->rec.weight != op->inst.weight;
            in->rec.weight = op->inst.weight;
            if (op->inst.has_prompt_template) {
                dirty |= !in->rec.has_prompt_template ||
                         strcmp(in->rec.prompt_template, op->inst.prompt_template) != 0;
                /* out of memory: the next full refresh reads it */
                (void)set_template(in, op->inst.prompt_template);
            }
        }
        dirty |= !in->rec.healthy || !in->rec.has_last_heartbeat ||
                 in->rec.lease_ms != op->inst.lease_ms;
        in->rec.healthy = true;
        in->rec.lease_ms = op->inst.lease_ms;
        in->load_stale |= in->rec.in_flight != op->inst.in_flight ||
                          in->rec.queue_length != op->inst.queue_length ||
                          in->rec.capacity != op->inst.capacity;
        in->rec.in_flight = op->inst.in_flight;
        in->rec.queue_length = op->inst.queue_length;
        in->rec.capacity = op->inst.capacity;
    }
    in->rec.has_last_heartbeat = true;
    in->hb_mono_ms = now;
    in->grace_until_mono = 0;
    in->write_seq = ++v->seq;
    bool alive = compute_alive(v, in, now);
    dirty |= alive != in->alive;
    if (v->min_lease_ms == 0 || lease_of(v, in) < v->min_lease_ms) {
        v->min_lease_ms = lease_of(v, in);
    }
    in->alive = alive;
    /* Only what routing or a registration changes rebuilds the model's
     * snapshot at once: a new instance, a revived one, a new weight, template
     * or lease. A plain heartbeat's time goes into the published snapshot's
     * cell (the next list shows it); its load reaches view=full with the
     * next full refresh (view_refresh_ms). Rebuilding on every heartbeat
     * cost a snapshot per model per batch (docs/performance.md). */
    if (m && dirty) {
        mark(v, m);
    } else if (m) {
        store_hb(v, m, idx, in);
    }
}

void
ctl_view_apply_ops(struct ctl_view *v, const struct reg_op *ops, size_t n)
{
    int64_t now = util_mono_ms();
    bool changed;

    pthread_mutex_lock(&v->mu);
    for (size_t i = 0; i < n; i++) {
        const struct reg_op *op = &ops[i];
        struct vmodel *m = NULL;
        size_t idx = 0;
        struct vinst *in;

        if (op->kind == REG_OP_REGISTER || op->kind == REG_OP_HEARTBEAT) {
            apply_upsert(v, op, now);
            continue;
        }
        in = find_inst(v, op->inst.model_name, op->inst.host, op->inst.port, &m, &idx);
        if (!in) {
            continue;
        }
        in->write_seq = ++v->seq;
        switch (op->kind) {
        case REG_OP_DEREGISTER:
            in->rec.healthy = false;
            in->alive = false;
            break;
        case REG_OP_REMOVE:
            remove_inst(v, m, idx);
            continue;
        case REG_OP_ADMIN:
            if (op->admin_enabled >= 0) {
                in->rec.enabled = op->admin_enabled == 1;
            }
            if (op->admin_weight == REG_WEIGHT_SET) {
                in->rec.has_weight_override = true;
                in->rec.weight_override = op->admin_weight_value;
            } else if (op->admin_weight == REG_WEIGHT_CLEAR) {
                in->rec.has_weight_override = false;
            }
            break;
        default:
            break;
        }
        mark(v, m);
    }
    changed = publish(v);
    pthread_mutex_unlock(&v->mu);
    notify(v, changed);
}

size_t
ctl_view_missing(struct ctl_view *v, const struct reg_op *ops, size_t n, bool *missing,
                 size_t *count_out)
{
    size_t fresh = 0;

    pthread_mutex_lock(&v->mu);
    for (size_t i = 0; i < n; i++) {
        struct vmodel *m = NULL;
        size_t idx = 0;
        missing[i] =
            (ops[i].kind == REG_OP_REGISTER || ops[i].kind == REG_OP_HEARTBEAT) &&
            !find_inst(v, ops[i].inst.model_name, ops[i].inst.host, ops[i].inst.port, &m, &idx);
        fresh += missing[i];
    }
    *count_out = v->ninst;
    pthread_mutex_unlock(&v->mu);
    return fresh;
}

/* ---- refreshes from the database -------------------------------------------- */

uint64_t
ctl_view_refresh_begin(struct ctl_view *v)
{
    uint64_t seq;

    pthread_mutex_lock(&v->mu);
    seq = v->seq;
    pthread_mutex_unlock(&v->mu);
    return seq;
}

/* Fields whose change rebuilds the model's snapshot. Not last_heartbeat
 * (a cell: store_hb) nor the load: polls return every heartbeated row, and
 * a rebuild per poll is what the cells avoid; the load (load_stale)
 * reaches view=full with the next full read, which rebuilds the models
 * whose load moved. Heartbeat ages are never a reason: a cached view=full
 * list is patched when they are CTL_AGE_FRESH_MS old (cached_json). */
static bool
displayed_fields_differ(const struct reg_row *a, const struct reg_row *b)
{
    return a->healthy != b->healthy || a->enabled != b->enabled ||
           a->check_healthy != b->check_healthy || a->weight != b->weight ||
           a->has_weight_override != b->has_weight_override ||
           (a->has_weight_override && a->weight_override != b->weight_override) ||
           a->has_prompt_template != b->has_prompt_template ||
           (a->has_prompt_template && strcmp(a->prompt_template, b->prompt_template) != 0) ||
           a->lease_ms != b->lease_ms || a->has_last_heartbeat != b->has_last_heartbeat;
}

/* A row's heartbeat, placed on the monotonic clock from its age, is late by
 * up to the query's duration (db now is taken when the statement starts,
 * mono_end after its last row) and the clocks' grain. So a poll that reads
 * back a heartbeat committed here can place it up to that long after the
 * commit time the view holds: a row within `slack` of it is that same beat,
 * and the listed time stays (the lists made between two polls agree). A
 * beat through another controller that close costs the lease those few ms. */
static void
merge_row(struct ctl_view *v, uint64_t token, const struct reg_row *row, int64_t mono_end,
          int64_t slack)
{
    struct vmodel *m = NULL;
    size_t idx = 0;
    struct vinst *in = find_inst(v, row->model_name, row->host, row->port, &m, &idx);
    int64_t hb = row->has_last_heartbeat ? mono_end - row->age_ms : 0;

    if (!in) {
        in = insert_inst(v, row, false);
        if (!in) {
            v->ignored++; /* the view is full (or out of memory): counted for the caller */
            return;
        }
        in->hb_mono_ms = hb;
        in->seen_gen = v->gen;
        return;
    }
    if (in->seen_gen == v->gen && row->has_last_heartbeat && in->rec.has_last_heartbeat &&
        hb <= in->hb_mono_ms) {
        return; /* a second row for this key (NULL and '' sys_code): keep the fresher */
    }
    in->seen_gen = v->gen;
    if (in->write_seq > token) {
        /* written here while the query ran: local state is newer */
        if (row->has_last_heartbeat && hb > in->hb_mono_ms + slack) {
            in->hb_mono_ms = hb;
            store_hb(v, m, idx, in);
        }
        return;
    }
    bool differ = displayed_fields_differ(&in->rec, row);
    bool beat = row->has_last_heartbeat && row->last_heartbeat_ms != in->rec.last_heartbeat_ms;
    if (differ) {
        mark(v, m);
    }
    in->load_stale |= in->rec.in_flight != row->in_flight ||
                      in->rec.queue_length != row->queue_length ||
                      in->rec.capacity != row->capacity;
    vinst_assign(in, row);
    if (!differ && beat && hb <= in->hb_mono_ms + slack) {
        /* a poll reads this controller's own heartbeats back too, stamped at
         * their statement, a little before the commit time the view holds:
         * the listed time neither goes back nor moves for that */
        return;
    }
    if (row->has_last_heartbeat) {
        in->hb_mono_ms = hb;
    }
    if (!differ && beat) {
        store_hb(v, m, idx, in);
    }
}

size_t
ctl_view_refresh_apply(struct ctl_view *v, uint64_t token, const struct reg_row *rows, size_t n,
                       bool full, int64_t db_now_ms, int64_t mono_start, int64_t mono_end)
{
    int64_t slack = mono_end - mono_start; /* merge_row: the query's duration, bounded */
    bool changed;
    size_t ignored;

    slack = (slack < 0 ? 0 : slack > SLACK_MAX_MS ? SLACK_MAX_MS : slack) + CLOCK_GRAIN_MS;

    pthread_mutex_lock(&v->mu);
    v->gen++;
    v->ignored = 0;
    v->db_offset_ms = db_now_ms - mono_end; /* before store_hb uses it */
    for (size_t i = 0; i < n; i++) {
        merge_row(v, token, &rows[i], mono_end, slack);
    }
    if (full) {
        for (size_t mi = 0; mi < v->nmodels; mi++) {
            struct vmodel *m = v->models[mi];
            for (size_t i = m->n; i-- > 0;) {
                if (m->v[i]->seen_gen != v->gen && m->v[i]->write_seq <= token) {
                    remove_inst(v, m, i);
                }
            }
            /* load (view=full) changes with heartbeats without a rebuild:
             * it reaches the snapshot here, once per full refresh, for the
             * models whose load moved. No watcher wakes for this: the
             * ETags do not change. Heartbeat times and ages need no
             * rebuild: they are patched into the cached JSON (cached_json). */
            /* Ages are computed on the database clock of the model's
             * snapshot: one whose offset moved by more than DRIFT_MS (the
             * database's clock was set) is rebuilt too. Smaller moves are
             * the reads' own durations (db now is taken when a statement
             * starts, mono_end after its last row). */
            int64_t drift = m->snap ? m->snap->db_offset_ms - v->db_offset_ms : 0;
            if (drift > DRIFT_MS || drift < -DRIFT_MS) {
                mark(v, m);
            }
            for (size_t i = 0; i < m->n && !m->dirty; i++) {
                if (m->v[i]->load_stale) {
                    mark(v, m);
                }
            }
        }
    }
    v->db_offset_ms = db_now_ms - mono_end;
    atomic_store(&v->last_refresh_mono, mono_end);
    int64_t min_lease = 0;
    for (size_t mi = 0; mi < v->nmodels; mi++) {
        struct vmodel *m = v->models[mi];
        for (size_t i = 0; i < m->n; i++) {
            if (min_lease == 0 || lease_of(v, m->v[i]) < min_lease) {
                min_lease = lease_of(v, m->v[i]);
            }
            if (set_alive(m, m->v[i], compute_alive(v, m->v[i], mono_end))) {
                mark(v, m);
            }
        }
    }
    if (full || (min_lease > 0 && min_lease < v->min_lease_ms)) {
        v->min_lease_ms = min_lease;
    }
    changed = publish(v);
    ignored = v->ignored;
    pthread_mutex_unlock(&v->mu);
    notify(v, changed);
    return ignored;
}

void
ctl_view_set_db_reachable(struct ctl_view *v, bool reachable)
{
    int64_t now = util_mono_ms();

    pthread_mutex_lock(&v->mu);
    if (!reachable) {
        v->frozen = true;
    } else if (v->frozen) {
        v->frozen = false;
        for (size_t mi = 0; mi < v->nmodels; mi++) {
            struct vmodel *m = v->models[mi];
            for (size_t i = 0; i < m->n; i++) {
                if (m->v[i]->alive) {
                    m->v[i]->grace_until_mono = now + lease_of(v, m->v[i]);
                    if (m->v[i]->grace_until_mono > v->grace_end_mono) {
                        v->grace_end_mono = m->v[i]->grace_until_mono;
                    }
                }
            }
        }
    }
    pthread_mutex_unlock(&v->mu);
}

bool
ctl_view_sweep_allowed(struct ctl_view *v)
{
    bool ok;

    pthread_mutex_lock(&v->mu);
    ok = !v->frozen && util_mono_ms() >= v->grace_end_mono;
    pthread_mutex_unlock(&v->mu);
    return ok;
}

size_t
ctl_view_count(struct ctl_view *v)
{
    size_t n;

    pthread_mutex_lock(&v->mu);
    n = v->ninst;
    pthread_mutex_unlock(&v->mu);
    return n;
}

int64_t
ctl_view_min_lease_ms(struct ctl_view *v)
{
    int64_t t;

    pthread_mutex_lock(&v->mu);
    t = v->min_lease_ms;
    pthread_mutex_unlock(&v->mu);
    return t;
}

int64_t
ctl_view_last_refresh_mono(struct ctl_view *v)
{
    return atomic_load(&v->last_refresh_mono); /* loop threads: never mu */
}

/* ---- the expiry tick ------------------------------------------------------------ */

static void
tick_once(struct ctl_view *v)
{
    int64_t now = util_mono_ms();
    bool changed;

    pthread_mutex_lock(&v->mu);
    for (size_t mi = 0; mi < v->nmodels; mi++) {
        struct vmodel *m = v->models[mi];
        for (size_t i = 0; i < m->n; i++) {
            if (set_alive(m, m->v[i], compute_alive(v, m->v[i], now))) {
                mark(v, m);
            }
        }
    }
    changed = publish(v);
    pthread_mutex_unlock(&v->mu);
    notify(v, changed);
}

static void *
tick_main(void *arg)
{
    struct ctl_view *v = arg;

    pthread_mutex_lock(&v->mu);
    while (!v->stop) {
        struct timespec ts;
        util_deadline_us(v->cfg.tick_ms * 1000, &ts);
        pthread_cond_timedwait(&v->cond, &v->mu, &ts);
        if (v->stop) {
            break;
        }
        pthread_mutex_unlock(&v->mu);
        tick_once(v);
        pthread_mutex_lock(&v->mu);
    }
    pthread_mutex_unlock(&v->mu);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------ */

int
ctl_view_new(const struct ctl_view_config *cfg, void (*on_change)(void *), void *arg,
             struct ctl_view **out)
{
    struct ctl_view *v = calloc(1, sizeof(*v));

    *out = NULL;
    if (!v) {
        return -1;
    }
    v->cfg = *cfg;
    if (v->cfg.tick_ms <= 0) {
        v->cfg.tick_ms = 100;
    }
    v->on_change = on_change;
    v->on_change_arg = arg;
    pthread_mutex_init(&v->mu, NULL);
    pthread_mutex_init(&v->snap_mu, NULL);
    pthread_cond_init(&v->cond, NULL);
    v->structure_dirty = true;
    util_random_bytes(&v->epoch, sizeof(v->epoch));
    /* until the first refresh, show heartbeat times on this host's clock */
    v->db_offset_ms = util_wall_ms() - util_mono_ms();
    pthread_mutex_lock(&v->mu);
    publish(v);
    pthread_mutex_unlock(&v->mu);
    if (!v->current) {
        ctl_view_free(v);
        return -1;
    }
    *out = v;
    return 0;
}

int
ctl_view_start(struct ctl_view *v)
{
    if (pthread_create(&v->tick, NULL, tick_main, v) != 0) {
        return -1;
    }
    v->tick_started = true;
    return 0;
}

void
ctl_view_stop(struct ctl_view *v)
{
    if (!v->tick_started) {
        return;
    }
    pthread_mutex_lock(&v->mu);
    v->stop = true;
    pthread_cond_signal(&v->cond);
    pthread_mutex_unlock(&v->mu);
    pthread_join(v->tick, NULL);
    v->tick_started = false;
}

void
ctl_view_free(struct ctl_view *v)
{
    if (!v) {
        return;
    }
    ctl_view_stop(v);
    for (size_t mi = 0; mi < v->nmodels; mi++) {
        struct vmodel *m = v->models[mi];
        for (size_t i = 0; i < m->n; i++) {
            vinst_free(m->v[i]);
        }
        model_snap_release(m->snap);
        free(m->v);
        free(m);
    }
    free(v->models);
    ctl_snap_release(v->current);
    while (v->retired) { /* the readers are gone: the last references */
        struct ctl_snap *s = v->retired;
        v->retired = s->retired_next;
        ctl_snap_release(s);
    }
    pthread_mutex_destroy(&v->mu);
    pthread_mutex_destroy(&v->snap_mu);
    pthread_cond_destroy(&v->cond);
    free(v);
}
