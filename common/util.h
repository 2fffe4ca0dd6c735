/* SPDX-License-Identifier: MIT
 *
 * util.h - small helpers every module needs: clocks, strict number parsing,
 * bounded string copies, constant-time comparison, randomness.
 * All functions are thread-safe and never block (except util_sleep_ms).
 */
#ifndef ROSTER_UTIL_H
#define ROSTER_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Monotonic milliseconds (CLOCK_MONOTONIC): for durations and deadlines. */
int64_t util_mono_ms(void);
int64_t util_mono_us(void);
/* Wall-clock milliseconds since the epoch: for display only, never health. */
int64_t util_wall_ms(void);
void util_sleep_ms(int64_t ms);
/* The CLOCK_REALTIME time `us` microseconds from now: the deadline for
 * pthread_cond_timedwait (whose condition variables use that clock). */
struct timespec;
void util_deadline_us(int64_t us, struct timespec *out);

/* Writes "PORT\n" to path atomically (a temp file, then rename). Returns 0,
 * or -1 with errno set. */
int util_write_port_file(const char *path, int port);

/* For --check: whether a file could be created at `path` (its directory
 * exists and this process may write there; `path` itself may exist).
 * Returns 0, or -1 with the reason in `why`. Creates nothing. */
int util_check_creatable(const char *path, char *why, size_t cap);

/* Parses all of `s` as a base-10 integer in [min, max]. Leading/trailing
 * spaces, signs other than a leading '-', and empty input are errors.
 * Returns 0 and stores *out, or -1. */
int util_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);
/* Parses all of `s` as a finite double in [min, max]. Returns 0 or -1. */
int util_parse_double(const char *s, double min, double max, double *out);
/* Parses true/false the way DB-GPT's clients send them: true/false, True/False,
 * 1/0, yes/no, on/off (case-insensitive). Returns 0 or -1. */
int util_parse_bool(const char *s, bool *out);

/* Copies at most cap-1 bytes and NUL-terminates. Returns strlen(src); a
 * result >= cap means truncation. */
size_t util_strlcpy(char *dst, const char *src, size_t cap);

/* Steps through a comma-separated list: sets *item and *n to the next
 * element without surrounding blanks (n may be 0 for an empty element) and
 * advances *p past it. Returns false when the list is exhausted. */
bool util_next_item(const char **p, const char **item, size_t *n);

/* The value of hex digit c (0-15), or -1. */
int util_hexval(unsigned char c);

/* Parses a comma-separated list of http:// or https:// URLs (spaces around
 * items and trailing slashes dropped, empty items skipped) into
 * out[0..max). Returns the count (at least 1), or -1 with a reason in err. */
#define UTIL_URL_MAX 512
int util_parse_urls(const char *list, char (*out)[UTIL_URL_MAX], size_t max, char *err,
                    size_t errcap);

/* Copies `text` to out[0..cap) with the password of every URL in it
 * masked: "http://user:pass@host/" becomes "http://user:***@host/", and
 * userinfo without a colon ("http://token@host") becomes "***@". `text`
 * may hold several URLs (a comma-separated list, a message). Use it
 * wherever a URL given by the operator is logged, returned or printed.
 * Truncates at cap - 1 bytes (never cutting a password into view);
 * returns out (cap > 0). */
const char *util_url_redact(const char *text, char *out, size_t cap);
/* The same passwords overwritten in place with 'x's (the length kept): for
 * argv, which /proc/PID/cmdline shows. Returns how many were masked. */
int util_url_mask_passwords(char *s);

/* Constant-time equality of two byte strings (time depends only on the
 * lengths). Returns true when equal. */
bool util_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

/* Fills `p` with `n` random bytes from getrandom(2); falls back to a
 * time-seeded generator only if the kernel call fails. */
void util_random_bytes(void *p, size_t n);
/* A random integer in [0, n) (n > 0). */
uint64_t util_random_below(uint64_t n);

/* Formats `v` the way Python's repr(float) does ("1.0", "0.5", "1e+100"):
 * the shortest string that reads back as the same double. `cap` >= 32. */
void util_format_double(double v, char *out, size_t cap);

/* Formats epoch milliseconds as ISO 8601 UTC without a zone, with
 * microseconds, as Python's datetime.isoformat(): "2023-09-12T23:04:31.287000".
 * `cap` >= 32. */
void util_format_iso_ms(int64_t epoch_ms, char *out, size_t cap);

/* Number of CPUs online (at least 1). */
int util_ncpu(void);

#define UTIL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
