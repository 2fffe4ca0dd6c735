/* SPDX-License-Identifier: MIT
 *
 * fuzz_flags.c - common/flags.c (argv and the environment, as every
 * `roster start <role>` reads them) over the controller's, the API
 * server's and the worker's real option tables, and the controller's
 * check of what it read (ctl_config_check: --registry_db_url and the
 * other registry options). Byte 0 picks the table; the rest is lines:
 * "E" + one byte + VALUE sets ROSTER_<NAME> of the option that byte picks
 * to VALUE; any other line is one argv element.
 *
 * Invariants checked:
 *   - the result is 0, 1 (--help) or -1 with a message;
 *   - on 0, every value is within its table entry: an enum holds one of
 *     its choices exactly as written there, numbers within their range, a
 *     secret within FLAG_SECRET_MAX;
 *   - --check's listing shows every secret that is set as "***";
 *   - flags_scrub_secrets changes only the bytes of secret values and of
 *     passwords inside URLs, each into 'x', and the scrubbed argv parses
 *     again to the same configuration with those bytes as 'x's (the round
 *     trip);
 *   - no leak (flags_cleanup frees all), the environment restored.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "ctl.h"
#include "flags.h"
#include "fuzz.h"
#include "util.h"
#include "wrk.h"

#define MAX_ARGS 64

union cfg {
    struct ctl_config ctl;
    struct api_config api;
    struct wrk_config wrk;
};

static bool
is_choice(const char *choices, const char *v)
{
    size_t n = strlen(v);

    for (const char *p = choices;;) {
        size_t len = strcspn(p, "|");
        if (len == n && strncmp(p, v, n) == 0) {
            return true;
        }
        if (!p[len]) {
            return false;
        }
        p += len + 1;
    }
}

static void
check_values(const struct flag_def *defs, const union cfg *cfg)
{
    for (size_t i = 0; defs[i].name; i++) {
        const struct flag_def *d = &defs[i];
        const char *field = (const char *)cfg + d->offset;
        bool ranged = d->min <= d->max;
        switch (d->type) {
        case FLAG_STR: {
            const char *v = *(char *const *)(const void *)field;
            FUZZ_ASSERT(!v || !(d->flags & FLAG_SECRET) || strlen(v) <= FLAG_SECRET_MAX);
            break;
        }
        case FLAG_ENUM: {
            const char *v = *(char *const *)(const void *)field;
            FUZZ_ASSERT(!v || is_choice(d->metavar, v));
            break;
        }
        case FLAG_INT: {
            int64_t v;
            memcpy(&v, field, sizeof(v));
            FUZZ_ASSERT(!ranged || (v >= (int64_t)d->min && v <= (int64_t)d->max));
            break;
        }
        case FLAG_DOUBLE: {
            double v;
            memcpy(&v, field, sizeof(v));
            FUZZ_ASSERT(!ranged || (v >= d->min && v <= d->max));
            break;
        }
        case FLAG_BOOL:
            break;
        }
    }
}

/* The two configurations agree, but for secrets from argv, which are 'x's
 * of the same length in b. */
static void
check_scrubbed(const struct flag_def *defs, const union cfg *a, const union cfg *b,
               const enum flag_source *src)
{
    for (size_t i = 0; defs[i].name; i++) {
        const struct flag_def *d = &defs[i];
        const char *fa = (const char *)a + d->offset;
        const char *fb = (const char *)b + d->offset;
        if (d->type == FLAG_STR || d->type == FLAG_ENUM) {
            const char *va = *(char *const *)(const void *)fa;
            const char *vb = *(char *const *)(const void *)fb;
            FUZZ_ASSERT(!va == !vb);
            if (!va) {
                continue;
            }
            if ((d->flags & FLAG_SECRET) && src[i] == FLAG_FROM_ARGV) {
                FUZZ_ASSERT(strlen(va) == strlen(vb));
                FUZZ_ASSERT(strspn(vb, "x") == strlen(vb));
            } else if (d->type == FLAG_STR && src[i] == FLAG_FROM_ARGV) {
                char *want = strdup(va); /* URL passwords masked, the rest kept */
                FUZZ_ASSERT(want != NULL);
                (void)util_url_mask_passwords(want);
                FUZZ_ASSERT(strcmp(want, vb) == 0);
                free(want);
            } else {
                FUZZ_ASSERT(strcmp(va, vb) == 0);
            }
        } else {
            size_t size = d->type == FLAG_BOOL ? sizeof(bool) : 8;
            FUZZ_ASSERT(memcmp(fa, fb, size) == 0);
        }
    }
}

static void
check_listing(const struct flag_def *defs, const union cfg *cfg, const enum flag_source *src)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    FUZZ_ASSERT(f != NULL);
    flags_print_effective(f, defs, cfg, src);
    fclose(f);
    for (size_t i = 0; defs[i].name; i++) {
        const char *v;
        char want[128];
        if (!(defs[i].flags & FLAG_SECRET) || defs[i].type != FLAG_STR ||
            (defs[i].flags & FLAG_ARGV_ONLY)) {
            continue;
        }
        v = *(char *const *)(const void *)((const char *)cfg + defs[i].offset);
        if (!v || !*v) {
            continue;
        }
        snprintf(want, sizeof(want), "  --%-32s ***", defs[i].name);
        FUZZ_ASSERT(strstr(text, want) != NULL);
    }
    free(text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct flag_def *const tables[] = {ctl_flag_defs, api_flag_defs, wrk_flag_defs};
    static bool printed;
    const struct flag_def *defs;
    char *args[MAX_ARGS], *orig[MAX_ARGS];
    char *envs[MAX_ARGS];
    int argc = 0, nenv = 0;
    union cfg a, b;
    enum flag_source src[160], src2[160];
    char err[768];
    size_t ndefs;
    int rc;

    if (size < 1) {
        return 0;
    }
    defs = tables[data[0] % 3];
    ndefs = flags_count(defs);
    FUZZ_ASSERT(ndefs <= sizeof(src) / sizeof(src[0]));
    if (!printed) { /* the generated texts, once */
        FILE *devnull = fopen("/dev/null", "w");
        FUZZ_ASSERT(devnull != NULL);
        for (size_t t = 0; t < 3; t++) {
            flags_print_help(devnull, "u", "s", tables[t]);
            flags_print_markdown(devnull, "t", "s", tables[t]);
        }
        fclose(devnull);
        printed = true;
    }
    for (size_t i = 1; i < size && argc < MAX_ARGS && nenv < MAX_ARGS;) {
        const char *p = (const char *)data + i;
        const char *nl = memchr(p, '\n', size - i);
        size_t n = nl ? (size_t)(nl - p) : size - i;
        if (n >= 2 && p[0] == 'E') {
            const struct flag_def *d = &defs[(unsigned char)p[1] % ndefs];
            char name[128] = "ROSTER_";
            size_t k = strlen(name);
            char *value = strndup(p + 2, n - 2);
            FUZZ_ASSERT(value != NULL);
            for (const char *q = d->name; *q && k + 1 < sizeof(name); q++) {
                name[k++] = (char)(*q >= 'a' && *q <= 'z' ? *q - 32 : *q);
            }
            name[k] = '\0';
            setenv(name, value, 1);
            free(value);
            envs[nenv] = strdup(name);
            FUZZ_ASSERT(envs[nenv] != NULL);
            nenv++;
        } else {
            args[argc] = strndup(p, n); /* (a NUL inside ends the element, as in exec) */
            orig[argc] = strndup(p, n);
            FUZZ_ASSERT(args[argc] && orig[argc]);
            argc++;
        }
        i += n + 1;
    }
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    err[0] = '\0';
    rc = flags_parse(defs, &a, argc, args, src, err, sizeof(err));
    FUZZ_ASSERT(rc == 0 || rc == 1 || rc == -1);
    FUZZ_ASSERT(strlen(err) < sizeof(err));
    if (rc == -1) {
        FUZZ_ASSERT(err[0] != '\0');
    }
    if (rc == 0) {
        struct flag_group g = {.defs = defs, .cfg = &a, .sources = src};
        check_values(defs, &a);
        check_listing(defs, &a, src);
        (void)flags_scrub_secrets(&g, 1, argc, args);
        for (int k = 0; k < argc; k++) {
            size_t n = strlen(orig[k]);
            FUZZ_ASSERT(strlen(args[k]) == n);
            for (size_t j = 0; j < n; j++) {
                FUZZ_ASSERT(args[k][j] == orig[k][j] || args[k][j] == 'x');
            }
        }
        FUZZ_ASSERT(flags_parse(defs, &b, argc, args, src2, err, sizeof(err)) == 0);
        check_scrubbed(defs, &a, &b, src);
        if (defs == ctl_flag_defs && ctl_config_check(&a.ctl, src, err, sizeof(err)) == 0) {
            FUZZ_ASSERT(strcmp(a.ctl.registry_db_type, "sqlite") == 0 ||
                        strcmp(a.ctl.registry_db_type, "mysql") == 0);
        }
    }
    flags_cleanup(defs, &a);
    flags_cleanup(defs, &b);
    for (int k = 0; k < argc; k++) {
        free(args[k]);
        free(orig[k]);
    }
    for (int k = 0; k < nenv; k++) {
        unsetenv(envs[k]);
        free(envs[k]);
    }
    return 0;
}
