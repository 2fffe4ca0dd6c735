/* SPDX-License-Identifier: MIT
 *
 * check.h - the unit-test harness: a handful of macros, no framework.
 *
 * A test program calls CHECK_RUN(fn) for each case; a failed CHECK prints
 * file:line and the expression, marks the case failed and returns from it.
 * main() ends with `return check_summary();` (exit 1 on any failure), so
 * ctest sees the result. Cases run in order in one process.
 */
#ifndef ROSTER_CHECK_H
#define ROSTER_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int check_failed_cases;
static int check_total_cases;
static int check_case_failed;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            check_case_failed = 1;                                                                 \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long check_a_ = (long long)(a);                                                       \
        long long check_b_ = (long long)(b);                                                       \
        if (check_a_ != check_b_) {                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__, __LINE__,  \
                    #a, #b, check_a_, check_b_);                                                   \
            check_case_failed = 1;                                                                 \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *check_a_ = (a);                                                                \
        const char *check_b_ = (b);                                                                \
        if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0) {                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n", __FILE__,        \
                    __LINE__, #a, #b, check_a_ ? check_a_ : "(null)",                              \
                    check_b_ ? check_b_ : "(null)");                                               \
            check_case_failed = 1;                                                                 \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_RUN(fn)                                                                              \
    do {                                                                                           \
        check_case_failed = 0;                                                                     \
        check_total_cases++;                                                                       \
        fn();                                                                                      \
        fprintf(stderr, "%s %s\n", check_case_failed ? "FAIL" : "ok  ", #fn);                      \
        check_failed_cases += check_case_failed;                                                   \
    } while (0)

static inline int
check_summary(void)
{
    fprintf(stderr, "%d/%d cases passed\n", check_total_cases - check_failed_cases,
            check_total_cases);
    return check_failed_cases ? 1 : 0;
}

#endif
