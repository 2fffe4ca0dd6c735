/* SPDX-License-Identifier: MIT
 *
 * test_route.c - apiserver/api_route.c: policy names, proportions by weight
 * (p2c, weighted_random, least_inflight within a point, round_robin exact
 * over whole cycles), weight 0, the tried list, least loaded choices,
 * ejection with its single half-open trial, the session ring (stickiness,
 * minimal movement when an instance leaves, bounded load), pinned hashes,
 * and round robin from two threads at once.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "api_route.h"
#include "check.h"
#include "util.h"

#define MAX_INST 8
#define NPICKS   100000

static const enum route_policy all_policies[] = {
    ROUTE_P2C, ROUTE_WEIGHTED_RANDOM, ROUTE_ROUND_ROBIN, ROUTE_LEAST_INFLIGHT, ROUTE_SESSION,
};

/* A set over n instances "10.0.0.<i>:8000" with the given weights. */
struct fixture {
    struct route_inst inst[MAX_INST];
    struct route_entry e[MAX_INST];
    struct route_set s;
    size_t n;
};

static int
fixture_init(struct fixture *f, const double *w, size_t n)
{
    memset(f, 0, sizeof(*f));
    f->n = n;
    for (size_t i = 0; i < n; i++) {
        char id[32];
        int len = snprintf(id, sizeof(id), "10.0.0.%zu:8000", i + 1);

        atomic_init(&f->inst[i].in_flight, 0);
        atomic_init(&f->inst[i].ejected_until_ms, 0);
        atomic_init(&f->inst[i].trial, 0);
        f->inst[i].hash = route_hash(id, (size_t)len);
        f->e[i].st = &f->inst[i];
        f->e[i].weight = w[i];
    }
    return route_set_build(&f->s, f->e, n);
}

/* One pick with no tried list at time 1000; session picks get a key made
 * from `k`. */
static int
pick1(struct route_set *s, enum route_policy p, int k, bool *trial)
{
    char key[32];
    int len = snprintf(key, sizeof(key), "user-%d", k);

    return route_pick(s, p, NULL, 0, key, (size_t)len, 1000, trial);
}

/* Counts `picks` picks into counts[0..n); returns false on a -1, an index
 * out of range or a trial. */
static bool
count_picks(struct route_set *s, enum route_policy p, int picks, long *counts)
{
    memset(counts, 0, s->n * sizeof(*counts));
    for (int k = 0; k < picks; k++) {
        bool trial = true;
        int i = pick1(s, p, k, &trial);
        if (i < 0 || (size_t)i >= s->n || trial) {
            fprintf(stderr, "%s: pick %d returned %d (trial %d)\n", route_policy_name(p), k, i,
                    trial);
            return false;
        }
        counts[i]++;
    }
    return true;
}

static void
test_policy_names(void)
{
    static const char *const bad[] = {
        "", "P2C", "p2c ", " p2c", "random", "round-robin", "least", "sessions", "weighted"};
    enum route_policy p = ROUTE_SESSION;

    for (size_t i = 0; i < UTIL_ARRAY_LEN(all_policies); i++) {
        const char *name = route_policy_name(all_policies[i]);
        CHECK_EQ_INT(route_policy_parse(name, &p), 0);
        CHECK_EQ_INT(p, all_policies[i]);
    }
    CHECK_EQ_INT(route_policy_parse("p2c", &p), 0);
    CHECK_EQ_INT(p, ROUTE_P2C);
    CHECK_EQ_INT(route_policy_parse("weighted_random", &p), 0);
    CHECK_EQ_INT(p, ROUTE_WEIGHTED_RANDOM);
    CHECK_EQ_INT(route_policy_parse("round_robin", &p), 0);
    CHECK_EQ_INT(p, ROUTE_ROUND_ROBIN);
    CHECK_EQ_INT(route_policy_parse("least_inflight", &p), 0);
    CHECK_EQ_INT(p, ROUTE_LEAST_INFLIGHT);
    CHECK_EQ_INT(route_policy_parse("session", &p), 0);
    CHECK_EQ_INT(p, ROUTE_SESSION);
    CHECK_EQ_STR(route_policy_name(ROUTE_P2C), "p2c");
    CHECK_EQ_STR(route_policy_name(ROUTE_ROUND_ROBIN), "round_robin");
    for (size_t i = 0; i < UTIL_ARRAY_LEN(bad); i++) {
        p = ROUTE_LEAST_INFLIGHT;
        if (route_policy_parse(bad[i], &p) != -1) {
            fprintf(stderr, "accepted '%s'\n", bad[i]);
            CHECK(0);
        }
        CHECK_EQ_INT(p, ROUTE_LEAST_INFLIGHT); /* untouched */
    }
    CHECK_EQ_INT(route_policy_parse(NULL, &p), -1);
}

/* FNV-1a 64 then splitmix64's finalizer; values computed once, by an
 * independent implementation, and pinned: the ring must not move between
 * releases or machines. */
static void
test_hash_pinned(void)
{
    CHECK(route_hash("", 0) == UINT64_C(0xf52a15e9a9b5e89b));
    CHECK(route_hash("10.0.0.1:8000", 13) == UINT64_C(0x9201c0cea293f846));
    CHECK(route_hash("user-42", 7) == route_hash("user-42!", 7)); /* only n bytes */
    CHECK(route_hash("user-42", 7) != route_hash("user-43", 7));
}

static void
test_empty_set(void)
{
    static const double zero[] = {0, 0, -1};
    struct route_set s;
    struct fixture f;
    bool trial = true;

    CHECK_EQ_INT(route_set_build(&s, NULL, 0), 0);
    for (size_t i = 0; i < UTIL_ARRAY_LEN(all_policies); i++) {
        CHECK_EQ_INT(pick1(&s, all_policies[i], 1, &trial), -1);
        CHECK(!trial);
        CHECK_EQ_INT(route_pick(&s, all_policies[i], NULL, 0, NULL, 0, 1000, &trial), -1);
    }
    route_set_cleanup(&s);
    route_set_cleanup(&s); /* twice is fine */

    /* Instances but no positive weight: nothing to pick either. */
    CHECK_EQ_INT(fixture_init(&f, zero, 3), 0);
    for (size_t i = 0; i < UTIL_ARRAY_LEN(all_policies); i++) {
        CHECK_EQ_INT(pick1(&f.s, all_policies[i], 1, &trial), -1);
    }
    CHECK_EQ_INT(f.s.nrr, 0);
    CHECK_EQ_INT(f.s.nring, 0);
    route_set_cleanup(&f.s);
}

/* Weights 1:3 give 25% : 75% within one percentage point. */
static void
check_split_1_3(enum route_policy p, bool *ok)
{
    static const double w[] = {1, 3};
    struct fixture f;
    long c[2];
    double share;

    *ok = false;
    CHECK_EQ_INT(fixture_init(&f, w, 2), 0);
    CHECK(count_picks(&f.s, p, NPICKS, c));
    route_set_cleanup(&f.s);
    CHECK_EQ_INT(c[0] + c[1], NPICKS);
    share = (double)c[0] / NPICKS;
    if (share < 0.24 || share > 0.26) {
        fprintf(stderr, "%s: share of weight 1 is %.4f\n", route_policy_name(p), share);
        CHECK(0);
    }
    *ok = true;
}

static void
test_split_p2c(void)
{
    bool ok;

    check_split_1_3(ROUTE_P2C, &ok);
    CHECK(ok);
}

static void
test_split_weighted_random(void)
{
    bool ok;

    check_split_1_3(ROUTE_WEIGHTED_RANDOM, &ok);
    CHECK(ok);
}

static void
test_split_least_inflight_ties(void)
{
    bool ok;

    check_split_1_3(ROUTE_LEAST_INFLIGHT, &ok); /* all ties: by weight */
    CHECK(ok);
}

static void
test_round_robin_exact(void)
{
    static const double w13[] = {1, 3};
    static const double w_frac[] = {0.5, 0.75, 1.25}; /* 2:3:5 */
    static const double w_wide[] = {1, 1000000};
    struct fixture f;
    long c[3];

    CHECK_EQ_INT(fixture_init(&f, w13, 2), 0);
    CHECK_EQ_INT(f.s.nrr, 4);
    CHECK(count_picks(&f.s, ROUTE_ROUND_ROBIN, NPICKS, c));
    route_set_cleanup(&f.s);
    CHECK_EQ_INT(c[0], NPICKS / 4);
    CHECK_EQ_INT(c[1], 3 * NPICKS / 4);

    /* Fractional weights, exact; smooth: the lightest never twice in a row. */
    CHECK_EQ_INT(fixture_init(&f, w_frac, 3), 0);
    CHECK_EQ_INT(f.s.nrr, 10);
    CHECK(count_picks(&f.s, ROUTE_ROUND_ROBIN, NPICKS, c));
    CHECK_EQ_INT(c[0], NPICKS / 10 * 2);
    CHECK_EQ_INT(c[1], NPICKS / 10 * 3);
    CHECK_EQ_INT(c[2], NPICKS / 10 * 5);
    for (size_t t = 0; t + 1 < f.s.nrr; t++) {
        CHECK(!(f.s.rr[t] == 0 && f.s.rr[t + 1] == 0));
    }
    route_set_cleanup(&f.s);

    /* Too wide for an exact schedule: capped, both still present. */
    CHECK_EQ_INT(fixture_init(&f, w_wide, 2), 0);
    CHECK(f.s.nrr >= 4000 && f.s.nrr <= 4200);
    CHECK(count_picks(&f.s, ROUTE_ROUND_ROBIN, (int)f.s.nrr, c));
    CHECK_EQ_INT(c[0], 1);
    route_set_cleanup(&f.s);
}

static void
test_weight_zero_never(void)
{
    static const double w[] = {0, 1, -2, 2, 0};
    struct fixture f;
    long c[5];

    CHECK_EQ_INT(fixture_init(&f, w, 5), 0);
    for (size_t p = 0; p < UTIL_ARRAY_LEN(all_policies); p++) {
        CHECK(count_picks(&f.s, all_policies[p], 20000, c));
        CHECK_EQ_INT(c[0] + c[2] + c[4], 0);
        CHECK(c[1] > 0 && c[3] > 0);
    }
    route_set_cleanup(&f.s);
}

static void
test_tried_excludes(void)
{
    static const double w[] = {1, 1, 1};
    static const int tried[] = {0, 2};
    static const int tried_all[] = {2, 0, 1};
    struct fixture f;
    bool trial;

    CHECK_EQ_INT(fixture_init(&f, w, 3), 0);
    for (size_t p = 0; p < UTIL_ARRAY_LEN(all_policies); p++) {
        for (int k = 0; k < 2000; k++) {
            char key[16];
            int len = snprintf(key, sizeof(key), "k%d", k);

            CHECK_EQ_INT(
                route_pick(&f.s, all_policies[p], tried, 2, key, (size_t)len, 1000, &trial), 1);
            CHECK_EQ_INT(
                route_pick(&f.s, all_policies[p], tried_all, 3, key, (size_t)len, 1000, &trial),
                -1);
            CHECK(!trial);
        }
    }
    route_set_cleanup(&f.s);
}

static void
test_least_inflight(void)
{
    static const double w[] = {1, 2, 4};
    struct fixture f;
    long c[3];

    /* in flight per unit of weight: 3, 2, 2.5 */
    CHECK_EQ_INT(fixture_init(&f, w, 3), 0);
    atomic_store(&f.inst[0].in_flight, 3);
    atomic_store(&f.inst[1].in_flight, 4);
    atomic_store(&f.inst[2].in_flight, 10);
    CHECK(count_picks(&f.s, ROUTE_LEAST_INFLIGHT, 1000, c));
    CHECK_EQ_INT(c[1], 1000);
    /* 3, 2.5, 2.5: the lowest always, never the highest */
    atomic_store(&f.inst[1].in_flight, 5);
    CHECK(count_picks(&f.s, ROUTE_LEAST_INFLIGHT, 10000, c));
    CHECK_EQ_INT(c[0], 0);
    CHECK(c[1] > 2500 && c[2] > 5000); /* 1/3 : 2/3 by weight */
    route_set_cleanup(&f.s);
}

static void
test_p2c_prefers_less_loaded(void)
{
    static const double w2[] = {1, 1};
    static const double w3[] = {1, 1, 1};
    struct fixture f;
    long c[3];

    /* Two instances: both are always drawn, the idle one always wins. */
    CHECK_EQ_INT(fixture_init(&f, w2, 2), 0);
    atomic_store(&f.inst[0].in_flight, 10);
    CHECK(count_picks(&f.s, ROUTE_P2C, 10000, c));
    CHECK_EQ_INT(c[1], 10000);
    route_set_cleanup(&f.s);

    /* Three: the busiest never wins, the idlest wins 2/3 of the time. */
    CHECK_EQ_INT(fixture_init(&f, w3, 3), 0);
    atomic_store(&f.inst[1].in_flight, 5);
    atomic_store(&f.inst[2].in_flight, 10);
    CHECK(count_picks(&f.s, ROUTE_P2C, 30000, c));
    CHECK_EQ_INT(c[2], 0);
    CHECK(c[0] > 19000 && c[0] < 21000);
    route_set_cleanup(&f.s);
}

/* Picks from `s` with instance 1 excluded (so only 0 can come back) and
 * returns what came back. */
static int
pick_only0(struct route_set *s, enum route_policy p, int64_t now, bool *trial)
{
    static const int tried[] = {1};

    return route_pick(s, p, tried, 1, "key", 3, now, trial);
}

static void
check_ejection(enum route_policy p, bool *ok)
{
    static const double w[] = {1, 1};
    struct fixture f;
    bool trial = false;
    long c[2];

    *ok = false;
    CHECK_EQ_INT(fixture_init(&f, w, 2), 0);
    CHECK(route_eject(&f.inst[0], 1000, 500));  /* out until 1500: news */
    CHECK(!route_eject(&f.inst[0], 1000, 500)); /* a second loop's ejection: not news */
    CHECK_EQ_INT(pick_only0(&f.s, p, 1000, &trial), -1);
    CHECK_EQ_INT(pick_only0(&f.s, p, 1499, &trial), -1);
    CHECK(count_picks(&f.s, p, 2000, c)); /* at 1000: all to 1 */
    CHECK_EQ_INT(c[0], 0);

    /* Cooldown over: one trial, and no second one while it runs. */
    CHECK_EQ_INT(pick_only0(&f.s, p, 1500, &trial), 0);
    CHECK(trial);
    CHECK_EQ_INT(pick_only0(&f.s, p, 1600, &trial), -1);
    CHECK(!trial);
    CHECK_EQ_INT(route_pick(&f.s, p, NULL, 0, "key", 3, 1600, &trial), 1);
    CHECK(!trial);

    /* The trial succeeded: back in service, no trial needed. */
    route_success(&f.inst[0]);
    CHECK_EQ_INT(pick_only0(&f.s, p, 1600, &trial), 0);
    CHECK(!trial);
    CHECK_EQ_INT(pick_only0(&f.s, p, 1600, &trial), 0);
    CHECK(!trial);

    /* Failed again at 2000; the trial at 2500 fails: out for another cooldown. */
    CHECK(route_eject(&f.inst[0], 2000, 500)); /* back in service until then: news */
    CHECK_EQ_INT(pick_only0(&f.s, p, 2100, &trial), -1);
    CHECK_EQ_INT(pick_only0(&f.s, p, 2500, &trial), 0);
    CHECK(trial);
    CHECK(!route_eject(&f.inst[0], 2500, 500)); /* a failed trial: not news */
    CHECK_EQ_INT(pick_only0(&f.s, p, 2999, &trial), -1);

    /* A trial without a verdict goes to the next request. */
    CHECK_EQ_INT(pick_only0(&f.s, p, 3000, &trial), 0);
    CHECK(trial);
    CHECK_EQ_INT(pick_only0(&f.s, p, 3000, &trial), -1);
    route_trial_abort(&f.inst[0]);
    CHECK_EQ_INT(pick_only0(&f.s, p, 3000, &trial), 0);
    CHECK(trial);
    route_success(&f.inst[0]);
    CHECK_EQ_INT(atomic_load(&f.inst[0].trial), 0);
    CHECK_EQ_INT(atomic_load(&f.inst[0].ejected_until_ms), 0);
    route_set_cleanup(&f.s);
    *ok = true;
}

static void
test_ejection_every_policy(void)
{
    for (size_t p = 0; p < UTIL_ARRAY_LEN(all_policies); p++) {
        bool ok = false;

        check_ejection(all_policies[p], &ok);
        if (!ok) {
            fprintf(stderr, "policy %s\n", route_policy_name(all_policies[p]));
            CHECK(0);
        }
    }
}

/* Among many picks after the cooldown, exactly one is the trial. */
static void
test_exactly_one_trial(void)
{
    static const double w[] = {1, 1, 1};
    struct fixture f;

    CHECK_EQ_INT(fixture_init(&f, w, 3), 0);
    for (size_t p = 0; p < UTIL_ARRAY_LEN(all_policies); p++) {
        int trials = 0, zero = 0;

        route_eject(&f.inst[0], 0, 100);
        for (int k = 0; k < 3000; k++) {
            bool trial = false;
            int i = pick1(&f.s, all_policies[p], k, &trial);

            CHECK(i >= 0);
            CHECK(!trial || i == 0);
            trials += trial;
            zero += i == 0;
        }
        CHECK_EQ_INT(trials, 1);
        CHECK_EQ_INT(zero, 1);
        route_success(&f.inst[0]);
    }
    route_set_cleanup(&f.s);
}

static void
test_session_sticky(void)
{
    static const double w[] = {1, 2, 1, 1};
    struct fixture f;
    bool trial;

    CHECK_EQ_INT(fixture_init(&f, w, 4), 0);
    CHECK(f.s.nring > 600 && f.s.nring < 700); /* 128 + 256 + 128 + 128 */
    for (size_t t = 1; t < f.s.nring; t++) {
        CHECK(f.s.ring[t - 1].h <= f.s.ring[t].h);
    }
    for (int k = 0; k < 1000; k++) {
        int first = pick1(&f.s, ROUTE_SESSION, k, &trial);
        CHECK(first >= 0);
        for (int r = 0; r < 5; r++) {
            CHECK_EQ_INT(pick1(&f.s, ROUTE_SESSION, k, &trial), first);
        }
    }
    /* No key: p2c, still a valid pick. */
    CHECK(route_pick(&f.s, ROUTE_SESSION, NULL, 0, NULL, 0, 1000, &trial) >= 0);
    CHECK(route_pick(&f.s, ROUTE_SESSION, NULL, 0, "", 0, 1000, &trial) >= 0);
    route_set_cleanup(&f.s);
}

/* Removing one of 5 instances moves only the keys that were on it. */
static void
test_session_removal(void)
{
    static const double w[] = {1, 1, 1, 1, 1};
    struct route_entry rest[4];
    struct route_set s4;
    struct fixture f;
    long per[5] = {0};
    int moved = 0;
    bool trial;

    CHECK_EQ_INT(fixture_init(&f, w, 5), 0);
    rest[0] = f.e[0];
    rest[1] = f.e[1];
    rest[2] = f.e[3];
    rest[3] = f.e[4];
    CHECK_EQ_INT(route_set_build(&s4, rest, 4), 0);
    for (int k = 0; k < 10000; k++) {
        int a = pick1(&f.s, ROUTE_SESSION, k, &trial);
        int b = pick1(&s4, ROUTE_SESSION, k, &trial);

        CHECK(a >= 0 && b >= 0);
        per[a]++;
        if (f.s.e[a].st != s4.e[b].st) {
            CHECK_EQ_INT(a, 2); /* only keys of the removed instance move */
            moved++;
        }
    }
    CHECK_EQ_INT(moved, per[2]);
    for (int i = 0; i < 5; i++) {
        CHECK(per[i] > 1000 && per[i] < 3000); /* about 2000 each */
    }
    route_set_cleanup(&s4);
    route_set_cleanup(&f.s);
}

static void
test_session_bounded_load(void)
{
    static const double w[] = {1, 1, 1};
    struct fixture f;
    bool trial;
    int home, moved;

    CHECK_EQ_INT(fixture_init(&f, w, 3), 0);
    home = pick1(&f.s, ROUTE_SESSION, 7, &trial);
    CHECK(home >= 0);
    /* total 100, bound ceil(1.25 * 101 / 3) = 43: the home is over it */
    atomic_store(&f.inst[home].in_flight, 100);
    moved = pick1(&f.s, ROUTE_SESSION, 7, &trial);
    CHECK(moved >= 0 && moved != home);
    CHECK_EQ_INT(pick1(&f.s, ROUTE_SESSION, 7, &trial), moved); /* still stable */
    /* 40 of 40 + 0 + 0: bound ceil(1.25 * 41 / 3) = 18, still over */
    atomic_store(&f.inst[home].in_flight, 40);
    CHECK(pick1(&f.s, ROUTE_SESSION, 7, &trial) != home);
    /* 5 of 5 + 0 + 0: bound ceil(1.25 * 6 / 3) = 3, over */
    atomic_store(&f.inst[home].in_flight, 5);
    CHECK(pick1(&f.s, ROUTE_SESSION, 7, &trial) != home);
    /* 5 of 5 + 5 + 5: bound ceil(1.25 * 16 / 3) = 7, under: back home */
    for (int i = 0; i < 3; i++) {
        atomic_store(&f.inst[i].in_flight, 5);
    }
    CHECK_EQ_INT(pick1(&f.s, ROUTE_SESSION, 7, &trial), home);
    /* 6 of 6 + 0 + 0: bound ceil(1.25 * 7 / 3) = 3, over */
    atomic_store(&f.inst[(home + 1) % 3].in_flight, 0);
    atomic_store(&f.inst[(home + 2) % 3].in_flight, 0);
    atomic_store(&f.inst[home].in_flight, 6);
    CHECK(pick1(&f.s, ROUTE_SESSION, 7, &trial) != home);
    atomic_store(&f.inst[home].in_flight, 0);
    CHECK_EQ_INT(pick1(&f.s, ROUTE_SESSION, 7, &trial), home);
    route_set_cleanup(&f.s);
}

/* The key's own instance with nothing in flight is picked without summing
 * the loads (the limit is at least 1), but only when it may be picked:
 * not when tried or ejected; after its cooldown, as the trial. */
static void
test_session_idle_home(void)
{
    static const double w[] = {1, 1, 1, 1};
    struct fixture f;
    bool trial;
    int home, other;

    CHECK_EQ_INT(fixture_init(&f, w, 4), 0);
    home = pick1(&f.s, ROUTE_SESSION, 11, &trial);
    CHECK(home >= 0 && !trial);
    for (int i = 0; i < 4; i++) {
        atomic_store(&f.inst[i].in_flight, i == home ? 0 : 1000);
    }
    CHECK_EQ_INT(pick1(&f.s, ROUTE_SESSION, 11, &trial), home); /* idle home, loaded others */
    CHECK(!trial);
    /* tried: another instance, whatever the loads */
    other = route_pick(&f.s, ROUTE_SESSION, &home, 1, "user-11", 7, 1000, &trial);
    CHECK(other >= 0 && other != home && !trial);
    /* ejected until 1500: not at 1000, as the trial at 2000 */
    CHECK(route_eject(&f.inst[home], 500, 1000));
    CHECK(pick1(&f.s, ROUTE_SESSION, 11, &trial) != home);
    CHECK(route_pick(&f.s, ROUTE_SESSION, NULL, 0, "user-11", 7, 2000, &trial) == home);
    CHECK(trial);
    /* the trial runs: nobody else gets it, idle or not */
    CHECK(route_pick(&f.s, ROUTE_SESSION, NULL, 0, "user-11", 7, 2000, &trial) != home);
    CHECK(!trial);
    route_success(&f.inst[home]);
    CHECK_EQ_INT(pick1(&f.s, ROUTE_SESSION, 11, &trial), home);
    route_set_cleanup(&f.s);
}

/* Threads racing for one trial: each round, all pick at once with only
 * the cooled-down instance 0 allowed; exactly one may get it. */
#define RACE_THREADS 3
#define RACE_ROUNDS  2000

struct race {
    struct fixture *f;
    pthread_barrier_t *bar;
    int trials[RACE_ROUNDS];
};

static void *
race_thread_main(void *arg)
{
    struct race *r = arg;

    for (int round = 0; round < RACE_ROUNDS; round++) {
        bool trial = false;

        pthread_barrier_wait(r->bar); /* the instance is ejected and cooled down */
        r->trials[round] = pick_only0(&r->f->s, ROUTE_P2C, 1000, &trial) == 0 && trial;
        pthread_barrier_wait(r->bar); /* every pick done */
        pthread_barrier_wait(r->bar); /* counted and reset */
    }
    return NULL;
}

static void
test_trial_race(void)
{
    static const double w[] = {1, 1};
    static struct race r[RACE_THREADS];
    pthread_t th[RACE_THREADS];
    pthread_barrier_t bar;
    struct fixture f;
    int bad = 0;

    CHECK_EQ_INT(fixture_init(&f, w, 2), 0);
    pthread_barrier_init(&bar, NULL, RACE_THREADS + 1);
    for (int i = 0; i < RACE_THREADS; i++) {
        r[i].f = &f;
        r[i].bar = &bar;
        pthread_create(&th[i], NULL, race_thread_main, &r[i]);
    }
    for (int round = 0; round < RACE_ROUNDS; round++) {
        int trials = 0;

        route_eject(&f.inst[0], 0, 500); /* cooled down at 1000 */
        pthread_barrier_wait(&bar);
        pthread_barrier_wait(&bar);
        for (int i = 0; i < RACE_THREADS; i++) {
            trials += r[i].trials[round];
        }
        bad += trials != 1;
        pthread_barrier_wait(&bar);
    }
    for (int i = 0; i < RACE_THREADS; i++) {
        pthread_join(th[i], NULL);
    }
    pthread_barrier_destroy(&bar);
    route_set_cleanup(&f.s);
    CHECK_EQ_INT(bad, 0);
}

struct rr_thread {
    struct route_set *s;
    long counts[2];
    int bad;
};

static void *
rr_thread_main(void *arg)
{
    struct rr_thread *t = arg;

    for (int k = 0; k < 200000; k++) {
        bool trial;
        int i = route_pick(t->s, ROUTE_ROUND_ROBIN, NULL, 0, NULL, 0, 1000, &trial);

        if (i < 0 || i > 1 || trial) {
            t->bad++;
        } else {
            t->counts[i]++;
        }
    }
    return NULL;
}

static void
test_round_robin_two_threads(void)
{
    static const double w[] = {1, 3};
    struct rr_thread t[2];
    pthread_t th[2];
    struct fixture f;

    CHECK_EQ_INT(fixture_init(&f, w, 2), 0);
    memset(t, 0, sizeof(t));
    for (int i = 0; i < 2; i++) {
        t[i].s = &f.s;
        CHECK_EQ_INT(pthread_create(&th[i], NULL, rr_thread_main, &t[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
    }
    route_set_cleanup(&f.s);
    CHECK_EQ_INT(t[0].bad + t[1].bad, 0);
    CHECK_EQ_INT(t[0].counts[0] + t[0].counts[1], 200000);
    CHECK_EQ_INT(t[1].counts[0] + t[1].counts[1], 200000);
    /* The shared cursor went through 400,000 = 100,000 whole cycles. */
    CHECK_EQ_INT(t[0].counts[0] + t[1].counts[0], 100000);
    CHECK_EQ_INT(t[0].counts[1] + t[1].counts[1], 300000);
}

int
main(void)
{
    CHECK_RUN(test_policy_names);
    CHECK_RUN(test_hash_pinned);
    CHECK_RUN(test_empty_set);
    CHECK_RUN(test_split_p2c);
    CHECK_RUN(test_split_weighted_random);
    CHECK_RUN(test_split_least_inflight_ties);
    CHECK_RUN(test_round_robin_exact);
    CHECK_RUN(test_weight_zero_never);
    CHECK_RUN(test_tried_excludes);
    CHECK_RUN(test_least_inflight);
    CHECK_RUN(test_p2c_prefers_less_loaded);
    CHECK_RUN(test_ejection_every_policy);
    CHECK_RUN(test_exactly_one_trial);
    CHECK_RUN(test_session_sticky);
    CHECK_RUN(test_session_removal);
    CHECK_RUN(test_session_bounded_load);
    CHECK_RUN(test_session_idle_home);
    CHECK_RUN(test_round_robin_two_threads);
    CHECK_RUN(test_trial_race);
    return check_summary();
}
