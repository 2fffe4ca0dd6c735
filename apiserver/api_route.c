/* SPDX-License-Identifier: MIT
 *
 * api_route.c - see api_route.h.
 *
 * DESIGN
 *
 * A set is built once and then only read, except for the round-robin
 * cursor; per-instance state lives in route_inst and is read and written
 * with atomics only. route_pick takes no lock and allocates nothing.
 *
 * Usability. An entry can be picked when its weight is positive (and
 * finite), it is not in the request's tried list, and it is in service
 * (ejected_until_ms == 0). An ejected entry whose cooldown has passed
 * (0 < ejected_until_ms <= now) is a trial candidate while no trial runs on
 * it (trial == 0): it takes part in the policy's choice like any other,
 * and when chosen the pick claims the trial with a CAS on `trial`. Losing
 * that race (another loop claimed it first) makes the entry unusable, so
 * the pick simply runs the policy again.
 *
 * Randomness. Each thread has its own xorshift128+ generator, seeded once
 * from util_random_bytes(): fast, and no shared state between loops.
 *
 * Weighted draws (p2c, weighted_random). A draw binary-searches the
 * cumulative weights of the whole set and rejects an unusable result; after
 * a few rejections it falls back to an exact draw over the usable entries
 * (two linear passes). Either way the result is in proportion to weight
 * among the usable entries.
 *
 * Round robin. route_set_build turns the weights into small integers with
 * the same proportions (as close as a schedule of at most RR_CAP entries
 * allows) and lays out nginx's smooth weighted round robin over one cycle;
 * a pick takes the entry under an atomic cursor. An unusable entry is
 * skipped by taking the next cursor value (a few times, so the skipped
 * share spreads in proportion over the others), then by scanning on.
 *
 * Session ring. Each entry with a positive weight gets about RING_VNODES
 * virtual nodes scaled by its weight relative to the mean (at least one),
 * placed at route_hash(instance hash, vnode index): positions depend only
 * on the instance, so a set without some instance keeps every other
 * instance's nodes where they were. A key goes to the first usable
 * instance clockwise from its hash whose in-flight count is under the
 * bounded-load limit.
 *
 * Cost per pick (n instances; measured on a 2-core VM, noisy): p2c and
 * weighted_random O(log n), round_robin O(1), both under 1 us up to 10,000
 * instances; least_inflight O(n) (a scan: about 3 us at 100 instances, 34
 * us at 1,000); session O(log n) while the key's instance is idle, else O(n)
 * (the limit sums in-flight counts: about 2 us at 100, 13 us at 1,000).
 */
#include "api_route.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define RR_CAP        4096 /* most entries in a round-robin schedule (about) */
#define RR_HOPS       8    /* cursor values taken before scanning on */
#define RING_VNODES   160  /* virtual nodes of an instance of mean weight */
#define DRAW_TRIES    4    /* rejected draws before the exact one */
#define PICK_ATTEMPTS 64   /* policy runs per pick (lost trial races) */
#define ROUND_EXACT   1e-9 /* proportions this close count as exact */
#define BOUND_NUM     5    /* bounded load: 1.25 = 5 / 4 */
#define BOUND_DEN     4
#define GOLDEN_GAMMA  UINT64_C(0x9e3779b97f4a7c15) /* splitmix64's increment */

/* ---- policies by name ---------------------------------------------------- */

static const struct {
    const char *name;
    enum route_policy policy;
} policies[] = {
    {"p2c", ROUTE_P2C},
    {"weighted_random", ROUTE_WEIGHTED_RANDOM},
    {"round_robin", ROUTE_ROUND_ROBIN},
    {"least_inflight", ROUTE_LEAST_INFLIGHT},
    {"session", ROUTE_SESSION},
};

int
route_policy_parse(const char *name, enum route_policy *out)
{
    if (!name) {
        return -1;
    }
    for (size_t i = 0; i < UTIL_ARRAY_LEN(policies); i++) {
        if (strcmp(policies[i].name, name) == 0) {
            *out = policies[i].policy;
            return 0;
        }
    }
    return -1;
}

const char *
route_policy_name(enum route_policy p)
{
    for (size_t i = 0; i < UTIL_ARRAY_LEN(policies); i++) {
        if (policies[i].policy == p) {
            return policies[i].name;
        }
    }
    return "unknown";
}

/* ---- hashing and randomness ------------------------------------------------ */

/* splitmix64's finalizer: a bijection that spreads every input bit. */
static uint64_t
mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

uint64_t
route_hash(const void *p, size_t n)
{
    const unsigned char *c = p;
    uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a 64 offset basis */

    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= UINT64_C(0x100000001b3); /* FNV-1a 64 prime */
    }
    return mix64(h);
}

static _Thread_local uint64_t rng_state[2];
static _Thread_local bool rng_seeded;

/* The thread's next 64 random bits (xorshift128+), seeded on first use.
 * The seed goes through splitmix64's mix, a bijection: two distinct inputs
 * give distinct words, so never the all-zero state xorshift cannot leave. */
static uint64_t
rng_next(void)
{
    uint64_t a, b;

    if (!rng_seeded) {
        uint64_t seed;

        util_random_bytes(&seed, sizeof(seed));
        rng_state[0] = mix64(seed + GOLDEN_GAMMA);
        rng_state[1] = mix64(seed + 2 * GOLDEN_GAMMA);
        rng_seeded = true;
    }
    a = rng_state[0];
    b = rng_state[1];
    rng_state[0] = b;
    a ^= a << 23;
    rng_state[1] = a ^ b ^ (a >> 17) ^ (b >> 26);
    return rng_state[1] + b;
}

/* A random double in [0, 1). */
static double
rng_unit(void)
{
    return (double)(rng_next() >> 11) * 0x1.0p-53;
}

/* ---- usability ------------------------------------------------------------- */

enum avail {
    AV_NO,    /* not pickable */
    AV_YES,   /* in service */
    AV_TRIAL, /* cooldown over, no trial running: pickable as the trial */
};

/* What one pick is working with. */
struct pick {
    struct route_set *s;
    const int *tried;
    size_t ntried;
    int64_t now;
};

/* Weights that take part in routing: positive and finite. */
static bool
weight_ok(double w)
{
    return w > 0 && isfinite(w);
}

static bool
was_tried(const struct pick *c, size_t i)
{
    for (size_t k = 0; k < c->ntried; k++) {
        if (c->tried[k] >= 0 && (size_t)c->tried[k] == i) {
            return true;
        }
    }
    return false;
}

/* Whether entry i may be picked now, and how. */
static enum avail
avail(const struct pick *c, size_t i)
{
    const struct route_entry *e = &c->s->e[i];
    int64_t until;

    if (!weight_ok(e->weight) || was_tried(c, i)) {
        return AV_NO;
    }
    until = atomic_load(&e->st->ejected_until_ms);
    if (until == 0) {
        return AV_YES;
    }
    if (until > c->now || atomic_load(&e->st->trial) != 0) {
        return AV_NO;
    }
    return AV_TRIAL;
}

static int
in_flight(const struct pick *c, size_t i)
{
    return atomic_load_explicit(&c->s->e[i].st->in_flight, memory_order_relaxed);
}

/* Whether entry a carries fewer in-flight requests per unit of weight than
 * entry b (cross-multiplied: no division). */
static bool
lighter(const struct pick *c, size_t a, size_t b)
{
    return (double)in_flight(c, a) * c->s->e[b].weight <
           (double)in_flight(c, b) * c->s->e[a].weight;
}

/* Claims the half-open trial of an instance whose cooldown has passed.
 * Returns 1 when claimed, 0 when the instance came back into service in
 * the meantime (an ordinary pick), -1 when it cannot be had (another pick
 * holds the trial, or it was ejected again). */
static int
claim_trial(struct route_inst *st, int64_t now)
{
    int expected = 0;
    int64_t until;

    if (!atomic_compare_exchange_strong(&st->trial, &expected, 1)) {
        return -1;
    }
    /* Re-read under the claim: route_success and route_eject write
     * ejected_until_ms before they clear `trial`. */
    until = atomic_load(&st->ejected_until_ms);
    if (until == 0 || until > now) {
        atomic_store(&st->trial, 0);
        return until == 0 ? 0 : -1;
    }
    return 1;
}

/* Makes entry i, chosen by a policy, the pick: claims its trial when it
 * needs one. Returns 0, or -1 when the entry is no longer to be had. */
static int
settle(const struct pick *c, size_t i, bool *trial)
{
    enum avail a = avail(c, i);
    int r;

    if (a != AV_TRIAL) {
        return a == AV_YES ? 0 : -1;
    }
    r = claim_trial(c->s->e[i].st, c->now);
    *trial = r == 1;
    return r >= 0 ? 0 : -1;
}

/* ---- weighted draws (p2c, weighted_random) ---------------------------------- */

/* The entry whose cumulative-weight interval holds r, or s->n. */
static size_t
cum_search(const struct route_set *s, double r)
{
    size_t lo = 0, hi = s->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->cum[mid] > r) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

/* An exact draw in proportion to weight over the usable entries other than
 * `skip`: one pass for their total, one to find the draw. */
static int
draw_exact(const struct pick *c, int skip)
{
    double total = 0, r;
    int last = -1;

    for (size_t i = 0; i < c->s->n; i++) {
        if ((int)i != skip && avail(c, i) != AV_NO) {
            total += c->s->e[i].weight;
        }
    }
    if (total <= 0) {
        return -1;
    }
    r = rng_unit() * total;
    for (size_t i = 0; i < c->s->n; i++) {
        if ((int)i == skip || avail(c, i) == AV_NO) {
            continue;
        }
        if (r < c->s->e[i].weight) {
            return (int)i;
        }
        r -= c->s->e[i].weight;
        last = (int)i; /* rounding, or a concurrent change */
    }
    return last;
}

/* One entry drawn in proportion to weight among the usable ones other than
 * `skip` (-1: none), or -1 when there is none. */
static int
draw(const struct pick *c, int skip)
{
    for (int k = 0; k < DRAW_TRIES && c->s->total_weight > 0; k++) {
        size_t i = cum_search(c->s, rng_unit() * c->s->total_weight);
        if (i < c->s->n && (int)i != skip && avail(c, i) != AV_NO) {
            return (int)i;
        }
    }
    return draw_exact(c, skip);
}

/* Two distinct draws; the second wins only when strictly lighter. */
static int
pick_p2c(const struct pick *c)
{
    int a = draw(c, -1);
    int b;

    if (a < 0) {
        return -1;
    }
    b = draw(c, a);
    if (b < 0) {
        return a;
    }
    return lighter(c, (size_t)b, (size_t)a) ? b : a;
}

/* ---- least in flight ---------------------------------------------------------- */

/* The lightest usable entry; among equals, each replaces the incumbent
 * with probability weight / (weight of all equals so far), which picks in
 * proportion to weight in one pass. */
static int
pick_least(const struct pick *c)
{
    int best = -1;
    double ties = 0;

    for (size_t i = 0; i < c->s->n; i++) {
        double w = c->s->e[i].weight;

        if (avail(c, i) == AV_NO) {
            continue;
        }
        if (best < 0 || lighter(c, i, (size_t)best)) {
            best = (int)i;
            ties = w;
        } else if (!lighter(c, (size_t)best, i)) {
            ties += w;
            if (rng_unit() * ties < w) {
                best = (int)i;
            }
        }
    }
    return best;
}

/* ---- round robin ------------------------------------------------------------- */

/* The round-robin pick: the entry under the cursor, else the entry under
 * the next cursor values, else the next usable entry of the schedule. */
static int
pick_rr(const struct pick *c)
{
    struct route_set *s = c->s;
    uint64_t pos = 0;

    if (s->nrr == 0) {
        return -1;
    }
    for (int hop = 0; hop < RR_HOPS; hop++) {
        pos = atomic_fetch_add_explicit(&s->rr_next, 1, memory_order_relaxed);
        if (avail(c, s->rr[pos % s->nrr]) != AV_NO) {
            return (int)s->rr[pos % s->nrr];
        }
    }
    for (size_t k = 1; k < s->nrr; k++) {
        uint32_t i = s->rr[(pos + k) % s->nrr];
        if (avail(c, i) != AV_NO) {
            return (int)i;
        }
    }
    return -1;
}

static uint64_t
gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Entry i's weight relative to the smallest positive weight `min` (0 for
 * an unusable weight). */
static double
rel_weight(const struct route_entry *e, size_t i, double min)
{
    return weight_ok(e[i].weight) ? e[i].weight / min : 0;
}

/* How far the integers round(rel * k) are from the proportions of the
 * weights (the sum over entries of the difference in share), or INFINITY
 * when their total would exceed RR_CAP. */
static double
rr_error(const struct route_entry *e, size_t n, double min, double sum, uint32_t k)
{
    double total = 0, err = 0;

    for (size_t i = 0; i < n; i++) {
        total += round(rel_weight(e, i, min) * k);
    }
    if (total > RR_CAP) {
        return INFINITY;
    }
    for (size_t i = 0; i < n; i++) {
        double x = rel_weight(e, i, min);
        err += fabs(round(x * k) / total - x / sum);
    }
    return err;
}

/* Integer weights iw[] with the proportions of e[] (0 for an unusable
 * weight). Weights are taken relative to the smallest one and multiplied
 * by the k in 1, 2, ... that matches the proportions best while the total
 * stays within RR_CAP (the first exact k wins); when even k = 1 is over,
 * they are scaled down to RR_CAP, each at least 1. Returns the total. */
static uint64_t
rr_weights(const struct route_entry *e, size_t n, uint32_t *iw)
{
    double min = 0, sum = 0, best_err = INFINITY, k_best = 1;
    uint64_t total = 0, g = 0;

    for (size_t i = 0; i < n; i++) {
        if (weight_ok(e[i].weight) && (min == 0 || e[i].weight < min)) {
            min = e[i].weight;
        }
    }
    if (min == 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        sum += rel_weight(e, i, min);
    }
    if (sum > RR_CAP) {
        k_best = RR_CAP / sum;
    }
    for (uint32_t k = 1; sum <= RR_CAP && best_err > ROUND_EXACT; k++) {
        double err = rr_error(e, n, min, sum, k);
        if (err == INFINITY) {
            break;
        }
        if (err < best_err) {
            best_err = err;
            k_best = k;
        }
    }
    for (size_t i = 0; i < n; i++) {
        double v = round(rel_weight(e, i, min) * k_best);
        iw[i] = !weight_ok(e[i].weight) ? 0 : !(v >= 1) ? 1 : v > RR_CAP ? RR_CAP : (uint32_t)v;
        g = gcd64(g, iw[i]);
    }
    for (size_t i = 0; i < n; i++) {
        iw[i] = (uint32_t)(iw[i] / g);
        total += iw[i];
    }
    return total;
}

/* Lays out one cycle of smooth weighted round robin (nginx): each step
 * every entry gains its weight, the richest is chosen and pays the total.
 * Over `total` steps each entry is chosen exactly iw[i] times, spread out. */
static int
rr_build(struct route_set *s)
{
    uint32_t *iw = calloc(s->n, sizeof(*iw));
    int64_t *cur = calloc(s->n, sizeof(*cur));
    uint64_t total;
    int rc = -1;

    if (!iw || !cur) {
        goto out;
    }
    total = rr_weights(s->e, s->n, iw);
    if (total == 0) {
        rc = 0;
        goto out;
    }
    s->rr = malloc((size_t)total * sizeof(*s->rr));
    if (!s->rr) {
        goto out;
    }
    for (size_t t = 0; t < total; t++) {
        size_t best = s->n;
        for (size_t i = 0; i < s->n; i++) {
            if (iw[i] == 0) {
                continue;
            }
            cur[i] += iw[i];
            if (best == s->n || cur[i] > cur[best]) {
                best = i;
            }
        }
        cur[best] -= (int64_t)total;
        s->rr[t] = (uint32_t)best;
    }
    s->nrr = (size_t)total;
    rc = 0;
out:
    free(iw);
    free(cur);
    return rc;
}

/* ---- session ring ------------------------------------------------------------- */

/* Where vnode j of an instance sits: the hash of (instance hash, j) in
 * little-endian bytes, so the ring is the same on every machine. */
static uint64_t
vnode_hash(uint64_t inst, uint32_t j)
{
    unsigned char b[12];

    for (int k = 0; k < 8; k++) {
        b[k] = (unsigned char)(inst >> (8 * k));
    }
    for (int k = 0; k < 4; k++) {
        b[8 + k] = (unsigned char)(j >> (8 * k));
    }
    return route_hash(b, sizeof(b));
}

static int
vnode_cmp(const void *pa, const void *pb)
{
    const struct route_vnode *a = pa;
    const struct route_vnode *b = pb;

    if (a->h != b->h) {
        return a->h < b->h ? -1 : 1;
    }
    return a->i < b->i ? -1 : a->i > b->i;
}

/* Virtual nodes of entry i: RING_VNODES scaled by its weight relative to
 * the mean positive weight, at least 1 (0 for an unusable weight). */
static uint32_t
ring_count(const struct route_set *s, size_t i, double mean)
{
    double v;

    if (!weight_ok(s->e[i].weight)) {
        return 0;
    }
    v = round(RING_VNODES * (s->e[i].weight / mean));
    if (!(v >= 1)) {
        return 1; /* also NaN, should the total weight overflow */
    }
    return v > RING_VNODES * 1e4 ? RING_VNODES * 10000 : (uint32_t)v;
}

static int
ring_build(struct route_set *s)
{
    size_t npos = 0, total = 0, k = 0;
    double mean;

    for (size_t i = 0; i < s->n; i++) {
        npos += weight_ok(s->e[i].weight);
    }
    if (npos == 0) {
        return 0;
    }
    mean = s->total_weight / (double)npos;
    for (size_t i = 0; i < s->n; i++) {
        total += ring_count(s, i, mean);
    }
    s->ring = malloc(total * sizeof(*s->ring));
    if (!s->ring) {
        return -1;
    }
    for (size_t i = 0; i < s->n; i++) {
        uint32_t c = ring_count(s, i, mean);
        for (uint32_t j = 0; j < c; j++) {
            s->ring[k].h = vnode_hash(s->e[i].st->hash, j);
            s->ring[k].i = (uint32_t)i;
            k++;
        }
    }
    qsort(s->ring, total, sizeof(*s->ring), vnode_cmp);
    s->nring = total;
    return 0;
}

/* The first vnode at or after h, wrapping around to 0. */
static size_t
ring_search(const struct route_set *s, uint64_t h)
{
    size_t lo = 0, hi = s->nring;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->ring[mid].h < h) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo == s->nring ? 0 : lo;
}

/* Bounded-load consistent hashing: the first usable instance clockwise
 * from the key whose in-flight count is under ceil(1.25 * (total + 1) / n)
 * over the usable instances; should none be (loads moved meanwhile), the
 * least loaded one. The limit is at least 1, so when the key's own
 * instance (the first clockwise) is usable with nothing in flight it is
 * the pick whatever the total: the O(n) sum is taken only otherwise. */
static int
pick_session(const struct pick *c, const char *key, size_t keylen)
{
    const struct route_set *s = c->s;
    int64_t total = 0, n = 0, bound;
    size_t start;

    if (s->nring == 0) {
        return -1;
    }
    start = ring_search(s, route_hash(key, keylen));
    if (in_flight(c, s->ring[start].i) <= 0 && avail(c, s->ring[start].i) != AV_NO) {
        return (int)s->ring[start].i;
    }
    for (size_t i = 0; i < s->n; i++) {
        if (avail(c, i) != AV_NO) {
            total += in_flight(c, i);
            n++;
        }
    }
    if (n == 0 || s->nring == 0) {
        return -1;
    }
    total = total < 0 ? 0 : total;
    bound = (BOUND_NUM * (total + 1) + BOUND_DEN * n - 1) / (BOUND_DEN * n);
    for (size_t k = 0; k < s->nring; k++) {
        uint32_t i = s->ring[(start + k) % s->nring].i;
        if (in_flight(c, i) < bound && avail(c, i) != AV_NO) {
            return (int)i;
        }
    }
    return pick_least(c);
}

/* ---- sets ---------------------------------------------------------------------- */

int
route_set_build(struct route_set *s, const struct route_entry *entries, size_t n)
{
    memset(s, 0, sizeof(*s));
    atomic_init(&s->rr_next, 0);
    if (n == 0) {
        return 0;
    }
    if (n > (size_t)INT32_MAX) {
        return -1; /* picks are ints */
    }
    s->e = malloc(n * sizeof(*s->e));
    s->cum = malloc(n * sizeof(*s->cum));
    if (!s->e || !s->cum) {
        goto fail;
    }
    memcpy(s->e, entries, n * sizeof(*s->e));
    s->n = n;
    for (size_t i = 0; i < n; i++) {
        s->total_weight += weight_ok(s->e[i].weight) ? s->e[i].weight : 0;
        s->cum[i] = s->total_weight;
    }
    if (rr_build(s) != 0 || ring_build(s) != 0) {
        goto fail;
    }
    return 0;
fail:
    route_set_cleanup(s);
    return -1;
}

void
route_set_cleanup(struct route_set *s)
{
    free(s->e);
    free(s->cum);
    free(s->rr);
    free(s->ring);
    memset(s, 0, sizeof(*s));
    atomic_init(&s->rr_next, 0);
}

/* ---- picking ------------------------------------------------------------------- */

static int
run_policy(const struct pick *c, enum route_policy policy, const char *key, size_t keylen)
{
    switch (policy) {
    case ROUTE_WEIGHTED_RANDOM:
        return draw(c, -1);
    case ROUTE_ROUND_ROBIN:
        return pick_rr(c);
    case ROUTE_LEAST_INFLIGHT:
        return pick_least(c);
    case ROUTE_SESSION:
        if (key && keylen > 0) {
            return pick_session(c, key, keylen);
        }
        return pick_p2c(c);
    case ROUTE_P2C:
        break;
    }
    return pick_p2c(c);
}

int
route_pick(struct route_set *s, enum route_policy policy, const int *tried, size_t ntried,
           const char *key, size_t keylen, int64_t now_ms, bool *trial)
{
    struct pick c = {s, tried, ntried, now_ms};

    *trial = false;
    if (!s || s->n == 0) {
        return -1;
    }
    /* A lost trial race leaves that entry unusable, so the next run of the
     * policy chooses among the others; the bound only guards against
     * pathological churn of trials. */
    for (int attempt = 0; attempt < PICK_ATTEMPTS; attempt++) {
        int i = run_policy(&c, policy, key, keylen);
        if (i < 0) {
            return -1;
        }
        if (settle(&c, (size_t)i, trial) == 0) {
            return i;
        }
    }
    return -1;
}

/* ---- outcomes ------------------------------------------------------------------- */

/* Each writes ejected_until_ms before it clears `trial`, so a pick that
 * claims a trial afterwards sees the new ejection state (claim_trial). */

void
route_success(struct route_inst *st)
{
    /* The common case (in service, no trial) writes nothing: no cache-line
     * traffic between loops for every answered request. */
    if (atomic_load(&st->ejected_until_ms) != 0) {
        atomic_store(&st->ejected_until_ms, 0);
    }
    if (atomic_load(&st->trial) != 0) {
        atomic_store(&st->trial, 0);
    }
}

bool
route_eject(struct route_inst *st, int64_t now_ms, int64_t cooldown_ms)
{
    int64_t until = now_ms + (cooldown_ms > 0 ? cooldown_ms : 0);
    /* 0 means in service */
    int64_t was = atomic_exchange(&st->ejected_until_ms, until != 0 ? until : 1);

    atomic_store(&st->trial, 0);
    return was == 0;
}

void
route_trial_abort(struct route_inst *st)
{
    atomic_store(&st->trial, 0);
}
