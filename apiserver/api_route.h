/* SPDX-License-Identifier: MIT
 *
 * api_route.h - choosing an instance of a model for one request: the five
 * routing policies, passive ejection with a half-open trial, and retries'
 * exclusions. Pure and thread-safe: a route_set is immutable once built
 * (except the atomics), so every event loop picks from the same set without
 * locks; per-instance state (in-flight requests, ejection) lives in
 * route_inst, which outlives sets (the apiserver keeps one per instance
 * across table updates).
 *
 * Policies (--routing):
 *   p2c              two instances drawn at random in proportion to weight;
 *                    the one with fewer in-flight requests per unit of
 *                    weight wins (a tie goes to the first drawn). Default.
 *   weighted_random  one draw in proportion to weight (DB-GPT's intent).
 *   round_robin      smooth weighted round robin (nginx's), from a
 *                    schedule precomputed at build time and an atomic
 *                    cursor: exact proportions over each cycle.
 *   least_inflight   the fewest in-flight requests per unit of weight; ties
 *                    broken at random in proportion to weight.
 *   session          consistent hashing of a session key on a ring of
 *                    virtual nodes (about 160 per instance, scaled by
 *                    weight) with bounded load: walking clockwise from the
 *                    key, the first usable instance whose in-flight count is
 *                    below ceil(1.25 * (total in flight + 1) / n) wins. Losing
 *                    an instance moves only the keys that mapped to it
 *                    (while loads are under the bound). No key: p2c.
 *
 * Ejection: route_eject() takes an instance out until now + cooldown; once
 * the cooldown has passed, exactly one request at a time may try it (the
 * pick reports it as a trial); route_success() brings it back,
 * route_eject() again sends it out for another cooldown, and
 * route_trial_abort() gives the trial to the next request (the trial's
 * client went away: no verdict). Instances with weight <= 0 are never picked.
 */
#ifndef ROSTER_API_ROUTE_H
#define ROSTER_API_ROUTE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The shared, mutable state of one instance. */
struct route_inst {
    _Atomic int in_flight;
    _Atomic int64_t ejected_until_ms; /* monotonic ms; 0: in service */
    _Atomic int trial;                /* 1 while a half-open trial runs */
    uint64_t hash;                    /* of the instance's identity (host:port): the ring */
};

struct route_entry {
    struct route_inst *st; /* not owned */
    double weight;
};

struct route_vnode {
    uint64_t h;
    uint32_t i; /* index into entries */
};

/* A model's instances as routing sees them; immutable once built except
 * for the round-robin cursor. */
struct route_set {
    struct route_entry *e; /* owned copy */
    size_t n;
    double *cum; /* cumulative weights over e (weight <= 0 counts 0) */
    double total_weight;
    uint32_t *rr; /* round-robin schedule: indexes into e */
    size_t nrr;
    _Atomic uint64_t rr_next;
    struct route_vnode *ring; /* sorted by h */
    size_t nring;
};

enum route_policy {
    ROUTE_P2C,
    ROUTE_WEIGHTED_RANDOM,
    ROUTE_ROUND_ROBIN,
    ROUTE_LEAST_INFLIGHT,
    ROUTE_SESSION,
};

/* "p2c", "weighted_random", ... Returns 0, or -1 for an unknown name. */
int route_policy_parse(const char *name, enum route_policy *out);
const char *route_policy_name(enum route_policy p);

/* Builds a set over a copy of entries[0..n) (n may be 0). Returns 0, or -1
 * when out of memory (the set is then empty and safe to clean up). */
int route_set_build(struct route_set *s, const struct route_entry *entries, size_t n);
void route_set_cleanup(struct route_set *s);

/* 64-bit hash used for the ring and session keys (FNV-1a then a final
 * mix; stable across runs and machines). */
uint64_t route_hash(const void *p, size_t n);

/* Picks an instance for a request: an index into s->e, or -1 when no
 * instance is usable (all excluded, ejected, or weight 0). `tried` lists
 * indexes already tried by this request (never picked again). `key` (NULL
 * or empty: none) is the session key for ROUTE_SESSION. `now_ms` is
 * util_mono_ms(). *trial is set true when the pick is an ejected
 * instance's half-open trial: the caller must then end it with
 * route_success, route_eject or route_trial_abort. Does not touch
 * in_flight (the caller counts the request). */
int route_pick(struct route_set *s, enum route_policy policy, const int *tried, size_t ntried,
               const char *key, size_t keylen, int64_t now_ms, bool *trial);

/* The instance answered (any status that is not its own failure). */
void route_success(struct route_inst *st);
/* The instance failed (connect error, timeout, 5xx): out until now +
 * cooldown. Returns true when it was in service until now (false: it was
 * out already, e.g. a failed trial; exactly one of several concurrent
 * ejections returns true). */
bool route_eject(struct route_inst *st, int64_t now_ms, int64_t cooldown_ms);
/* A trial ended without a verdict. */
void route_trial_abort(struct route_inst *st);

#endif
