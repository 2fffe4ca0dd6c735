/* SPDX-License-Identifier: MIT
 *
 * budget.h - the process-wide budget of bytes that requests may hold in
 * memory: bodies buffered whole (a proxied answer, an engine's reply) and
 * the queues of open streams. Each role sets the limit once from its
 * --memory_budget_bytes flag; a request whose next buffer would go past it
 * is refused (503 + Retry-After before the head is sent, an error event or
 * a close after) instead of growing the process until the kernel kills it.
 *
 * Threads: every function is lock-free (relaxed atomics) and may be called
 * from any thread, event-loop threads included. Ownership: whoever takes
 * bytes gives the same number back exactly once, when the memory they stand
 * for is freed.
 */
#ifndef ROSTER_BUDGET_H
#define ROSTER_BUDGET_H

#include <stdbool.h>
#include <stdint.h>

/* Sets the limit in bytes (0: no limit). Call before serving. */
void budget_set_limit(int64_t bytes);
int64_t budget_limit(void);

/* Takes n bytes (n >= 0) if they fit under the limit: true, and the caller
 * owes them back; false, nothing taken, and the refusal is counted. */
bool budget_take(int64_t n);
/* Gives back n bytes taken earlier. */
void budget_give(int64_t n);

/* For /metrics: bytes held now, the most ever held, refusals so far. */
int64_t budget_used(void);
int64_t budget_peak(void);
uint64_t budget_refused(void);

#endif
