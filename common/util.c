/* SPDX-License-Identifier: MIT
 *
 * util.c - see util.h.
 */
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int64_t
util_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
util_mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t
util_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
util_sleep_ms(int64_t ms)
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

int
util_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    char *end = NULL;
    long long v;

    if (!s || !*s || (*s != '-' && (*s < '0' || *s > '9'))) {
        return -1;
    }
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max) {
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

int
util_parse_double(const char *s, double min, double max, double *out)
{
    char *end = NULL;
    double v;

    /* Decimal only, no surrounding space: strtod alone would also skip any
     * leading white space ("\v1") and read hex ("0x10", "0x1p3"), which
     * Python's float() refuses. */
    if (!s || !*s || !strchr("0123456789+-.", *s) || strpbrk(s, "xX")) {
        return -1;
    }
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < min || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

int
util_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on", "t", "y"};
    static const char *const no[] = {"false", "0", "no", "off", "f", "n"};

    if (!s) {
        return -1;
    }
    for (size_t i = 0; i < UTIL_ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

int
util_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

bool
util_next_item(const char **p, const char **item, size_t *n)
{
    const char *s = *p;
    const char *end;
    size_t len;

    if (!*s) {
        return false;
    }
    end = strchr(s, ',');
    len = end ? (size_t)(end - s) : strlen(s);
    *p = end ? end + 1 : s + len;
    while (len > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t')) {
        len--;
    }
    *item = s;
    *n = len;
    return true;
}

size_t
util_strlcpy(char *dst, const char *src, size_t cap)
{
    size_t n = strlen(src);

    if (cap) {
        size_t c = n < cap - 1 ? n : cap - 1;
        memcpy(dst, src, c);
        dst[c] = '\0';
    }
    return n;
}

bool
util_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    const unsigned char *pa = a;
    const unsigned char *pb = b;
    unsigned char diff = (unsigned char)(alen != blen);

    /* Compare over the longer length so the time does not reveal where the
     * first difference is; index the shorter one modulo its length. */
    size_t n = alen > blen ? alen : blen;
    for (size_t i = 0; i < n; i++) {
        unsigned char x = alen ? pa[i % alen] : 0;
        unsigned char y = blen ? pb[i % blen] : 0;
        diff |= (unsigned char)(x ^ y);
    }
    return diff == 0;
}

void
util_random_bytes(void *p, size_t n)
{
    unsigned char *c = p;
    size_t got = 0;

    while (got < n) {
        ssize_t r = getrandom(c + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        got += (size_t)r;
    }
    if (got < n) {
        /* Only reachable on kernels without getrandom: not for secrets. */
        uint64_t x = (uint64_t)util_mono_ms() ^ ((uint64_t)getpid() << 32);
        for (; got < n; got++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c[got] = (unsigned char)x;
        }
    }
}

uint64_t
util_random_below(uint64_t n)
{
    uint64_t x;
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;

    do {
        util_random_bytes(&x, sizeof(x));
    } while (x >= limit);
    return x % n;
}

void
util_format_double(double v, char *out, size_t cap)
{
    char sci[40];
    char digits[20];
    size_t nd = 0;
    int prec = 0;
    int exp10;
    const char *e;

    if (!isfinite(v)) {
        snprintf(out, cap, "%s", isnan(v) ? "NaN" : (v > 0 ? "Infinity" : "-Infinity"));
        return;
    }
    /* The fewest significant digits that read back as the same double... */
    for (prec = 0; prec <= 16; prec++) {
        snprintf(sci, sizeof(sci), "%.*e", prec, v);
        if (prec == 16 || strtod(sci, NULL) == v) {
            break;
        }
    }
    /* ...then laid out as Python's repr does: positional when the decimal
     * exponent is in [-4, 16), scientific otherwise ("1e-05", "1e+16"), and
     * a positional number always has a fractional part ("100.0"). */
    e = strchr(sci, 'e');
    exp10 = e ? (int)strtol(e + 1, NULL, 10) : 0;
    if (exp10 >= -4 && exp10 < 16) {
        snprintf(out, cap, "%.*f", prec > exp10 ? prec - exp10 : 1, v);
        return;
    }
    for (const char *p = sci; p < e && nd + 1 < sizeof(digits); p++) {
        if (*p >= '0' && *p <= '9') {
            digits[nd++] = *p;
        }
    }
    digits[nd] = '\0';
    snprintf(out, cap, "%s%c%s%se%c%02d", v < 0 ? "-" : "", digits[0], nd > 1 ? "." : "",
             nd > 1 ? digits + 1 : "", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
}

void
util_format_iso_ms(int64_t epoch_ms, char *out, size_t cap)
{
    time_t sec = (time_t)(epoch_ms / 1000);
    int ms = (int)(epoch_ms % 1000);
    struct tm tm;
    size_t n;

    if (ms < 0) {
        ms += 1000;
        sec -= 1;
    }
    gmtime_r(&sec, &tm);
    n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, cap - n, ".%03d000", ms);
}

int
util_ncpu(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int
util_write_port_file(const char *path, int port)
{
    char tmp[4096];
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    f = fopen(tmp, "w");
    if (!f) {
        return -1;
    }
    fprintf(f, "%d\n", port);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

void
util_deadline_us(int64_t us, struct timespec *out)
{
    clock_gettime(CLOCK_REALTIME, out);
    out->tv_sec += (time_t)(us / 1000000);
    out->tv_nsec += (long)(us % 1000000) * 1000L;
    out->tv_sec += out->tv_nsec / 1000000000L;
    out->tv_nsec %= 1000000000L;
}

int
util_parse_urls(const char *list, char (*out)[UTIL_URL_MAX], size_t max, char *err, size_t errcap)
{
    const char *rest = list;
    const char *p;
    size_t n, count = 0;

    while (util_next_item(&rest, &p, &n)) {
        while (n > 0 && p[n - 1] == '/') {
            n--;
        }
        if (n == 0) {
            continue;
        }
        if (count == max) {
            snprintf(err, errcap, "more than %zu addresses", max);
            return -1;
        }
        if (n >= UTIL_URL_MAX ||
            (strncmp(p, "http://", 7) != 0 && strncmp(p, "https://", 8) != 0)) {
            char item[UTIL_URL_MAX], shown[UTIL_URL_MAX + 64];
            if (n >= sizeof(item)) {
                snprintf(err, errcap, "an address of %zu bytes is too long", n);
                return -1;
            }
            memcpy(item, p, n);
            item[n] = '\0';
            snprintf(err, errcap, "'%s' is not an http:// or https:// URL",
                     util_url_redact(item, shown, sizeof(shown)));
            return -1;
        }
        memcpy(out[count], p, n);
        out[count][n] = '\0';
        count++;
    }
    if (count == 0) {
        snprintf(err, errcap, "no address given");
        return -1;
    }
    return (int)count;
}

/* Appends p[0..n) to out[*o..cap-1), truncating. */
static void
put(char *out, size_t cap, size_t *o, const char *p, size_t n)
{
    size_t room = cap - 1 - *o;

    if (n > room) {
        n = room;
    }
    memcpy(out + *o, p, n);
    *o += n;
}

const char *
util_url_redact(const char *text, char *out, size_t cap)
{
    const char *p = text, *sep;
    size_t o = 0;

    if (cap == 0) {
        return out;
    }
    while ((sep = strstr(p, "://")) != NULL) {
        const char *auth = sep + 3;
        size_t alen = strcspn(auth, "/?# \t\r\n\"'<>"); /* ',' may be in a password */
        const char *at = NULL;
        for (size_t i = 0; i < alen; i++) {
            if (auth[i] == '@') {
                at = auth + i; /* the last one: a password may hold '@' */
            }
        }
        put(out, cap, &o, p, (size_t)(auth - p));
        if (at) {
            const char *colon = memchr(auth, ':', (size_t)(at - auth));
            if (colon) {
                put(out, cap, &o, auth, (size_t)(colon - auth) + 1);
            }
            put(out, cap, &o, "***", 3);
            p = at;
        } else {
            p = auth;
        }
    }
    put(out, cap, &o, p, strlen(p));
    out[o] = '\0';
    return out;
}

int
util_url_mask_passwords(char *s)
{
    char *p = s, *sep;
    int n = 0;

    while ((sep = strstr(p, "://")) != NULL) {
        char *auth = sep + 3;
        size_t alen = strcspn(auth, "/?# \t\r\n\"'<>"); /* as util_url_redact */
        char *at = NULL;
        for (size_t i = 0; i < alen; i++) {
            if (auth[i] == '@') {
                at = auth + i;
            }
        }
        if (at) {
            char *colon = memchr(auth, ':', (size_t)(at - auth));
            char *from = colon ? colon + 1 : auth;
            if (at > from) {
                memset(from, 'x', (size_t)(at - from));
                n++;
            }
            p = at;
        } else {
            p = auth;
        }
    }
    return n;
}

int
util_check_creatable(const char *path, char *why, size_t cap)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    struct stat st;

    if (!slash) {
        util_strlcpy(dir, ".", sizeof(dir));
    } else if (slash == path) {
        util_strlcpy(dir, "/", sizeof(dir));
    } else {
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    }
    if (stat(dir, &st) != 0) {
        snprintf(why, cap, "directory '%s' %s", dir,
                 errno == ENOENT ? "does not exist" : strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(why, cap, "'%s' is not a directory", dir);
        return -1;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        snprintf(why, cap, "no permission to write in directory '%s'", dir);
        return -1;
    }
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(why, cap, "'%s' is a directory", path);
        return -1;
    }
    if (stat(path, &st) == 0 && access(path, R_OK | W_OK) != 0) {
        snprintf(why, cap, "no permission to read and write '%s'", path);
        return -1;
    }
    return 0;
}
