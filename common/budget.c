/* SPDX-License-Identifier: MIT
 *
 * budget.c - see budget.h.
 */
#include "budget.h"

#include <stdatomic.h>

static _Atomic int64_t limit_bytes;
static _Atomic int64_t used_bytes;
static _Atomic int64_t peak_bytes;
static _Atomic uint64_t refusals;

void
budget_set_limit(int64_t bytes)
{
    atomic_store_explicit(&limit_bytes, bytes > 0 ? bytes : 0, memory_order_relaxed);
}

int64_t
budget_limit(void)
{
    return atomic_load_explicit(&limit_bytes, memory_order_relaxed);
}

bool
budget_take(int64_t n)
{
    int64_t limit = budget_limit();
    int64_t now;

    if (n <= 0) {
        return true;
    }
    now = atomic_fetch_add_explicit(&used_bytes, n, memory_order_relaxed) + n;
    if (limit > 0 && now > limit) {
        atomic_fetch_sub_explicit(&used_bytes, n, memory_order_relaxed);
        atomic_fetch_add_explicit(&refusals, 1, memory_order_relaxed);
        return false;
    }
    int64_t peak = atomic_load_explicit(&peak_bytes, memory_order_relaxed);
    while (now > peak && !atomic_compare_exchange_weak_explicit(
                             &peak_bytes, &peak, now, memory_order_relaxed, memory_order_relaxed)) {
    }
    return true;
}

void
budget_give(int64_t n)
{
    if (n > 0) {
        atomic_fetch_sub_explicit(&used_bytes, n, memory_order_relaxed);
    }
}

int64_t
budget_used(void)
{
    return atomic_load_explicit(&used_bytes, memory_order_relaxed);
}

int64_t
budget_peak(void)
{
    return atomic_load_explicit(&peak_bytes, memory_order_relaxed);
}

uint64_t
budget_refused(void)
{
    return atomic_load_explicit(&refusals, memory_order_relaxed);
}
