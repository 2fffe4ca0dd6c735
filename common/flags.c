/* SPDX-License-Identifier: MIT
 *
 * flags.c - see flags.h.
 */
#include "flags.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "util.h"

static void
normalize(const char *in, size_t n, char *out, size_t cap)
{
    size_t i = 0;

    for (; i < n && i + 1 < cap; i++) {
        out[i] = in[i] == '-' ? '_' : in[i];
    }
    out[i] = '\0';
}

static const struct flag_def *
find(const struct flag_def *defs, const char *name, size_t *index)
{
    for (size_t i = 0; defs[i].name; i++) {
        if (strcmp(defs[i].name, name) == 0) {
            *index = i;
            return &defs[i];
        }
    }
    return NULL;
}

/* The choice of "a|b|c" that `value` names (case aside), pointing into
 * `choices`, or NULL. */
static const char *
choice(const char *choices, const char *value)
{
    size_t vlen = strlen(value);

    for (const char *p = choices;;) {
        size_t n = strcspn(p, "|");
        if (n == vlen && n > 0 && strncasecmp(p, value, n) == 0) {
            return p;
        }
        if (!p[n]) {
            return NULL;
        }
        p += n + 1;
    }
}

static int
set_value(const struct flag_def *d, void *cfg, const char *value, char *err, size_t errcap)
{
    char *field = (char *)cfg + d->offset;
    bool ranged = d->min <= d->max;

    switch (d->type) {
    case FLAG_STR: {
        char **sp = (char **)(void *)field;
        char *copy;
        /* secrets travel in headers of bounded size */
        if (value && (d->flags & FLAG_SECRET) && strlen(value) > FLAG_SECRET_MAX) {
            snprintf(err, errcap, "--%s: longer than %d bytes", d->name, FLAG_SECRET_MAX);
            return -1;
        }
        copy = value ? strdup(value) : NULL;
        if (value && !copy) {
            snprintf(err, errcap, "out of memory");
            return -1;
        }
        free(*sp);
        *sp = copy;
        return 0;
    }
    case FLAG_INT: {
        int64_t v = 0;
        if (value && util_parse_i64(value, ranged ? (int64_t)d->min : INT64_MIN,
                                    ranged ? (int64_t)d->max : INT64_MAX, &v) != 0) {
            if (ranged) {
                snprintf(err, errcap, "--%s: '%s' is not an integer in [%.0f, %.0f]", d->name,
                         value, d->min, d->max);
            } else {
                snprintf(err, errcap, "--%s: '%s' is not an integer", d->name, value);
            }
            return -1;
        }
        memcpy(field, &v, sizeof(v));
        return 0;
    }
    case FLAG_DOUBLE: {
        double v = 0;
        if (value &&
            util_parse_double(value, ranged ? d->min : -1e308, ranged ? d->max : 1e308, &v) != 0) {
            snprintf(err, errcap, "--%s: '%s' is not a number in [%g, %g]", d->name, value, d->min,
                     d->max);
            return -1;
        }
        memcpy(field, &v, sizeof(v));
        return 0;
    }
    case FLAG_BOOL: {
        bool v = false;
        if (value && util_parse_bool(value, &v) != 0) {
            snprintf(err, errcap, "--%s: '%s' is not true or false", d->name, value);
            return -1;
        }
        memcpy(field, &v, sizeof(v));
        return 0;
    }
    case FLAG_ENUM: {
        char **sp = (char **)(void *)field;
        char *copy = NULL;
        if (value) {
            const char *c = d->metavar ? choice(d->metavar, value) : NULL;
            size_t n = c ? strcspn(c, "|") : 0;
            if (!c) {
                snprintf(err, errcap, "--%s: '%.64s' is not one of %s", d->name, value,
                         d->metavar ? d->metavar : "(no choices)");
                return -1;
            }
            copy = strndup(c, n);
            if (!copy) {
                snprintf(err, errcap, "out of memory");
                return -1;
            }
        }
        free(*sp);
        *sp = copy;
        return 0;
    }
    }
    return -1;
}

static const char *
env_value(const struct flag_def *d)
{
    char name[128] = "ROSTER_";
    size_t n = strlen(name);
    const char *v;

    for (const char *p = d->name; *p && n + 1 < sizeof(name); p++) {
        name[n++] = (char)toupper((unsigned char)*p);
    }
    name[n] = '\0';
    v = getenv(name);
    if (v) {
        return v;
    }
    if (d->env) {
        const char *p = d->env;
        while (*p) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            if (len < sizeof(name)) {
                memcpy(name, p, len);
                name[len] = '\0';
                v = getenv(name);
                if (v) {
                    return v;
                }
            }
            p += len + (comma ? 1 : 0);
        }
    }
    return NULL;
}

/* One option of argv, as the parse reads it. */
struct arg_step {
    const struct flag_def *d;
    size_t group, idx; /* the group that has it, its index there */
    char *value;       /* its value (in argv when in_argv, else a constant) */
    bool in_argv;
};

/* Reads the option at argv[*a] (and its value, which may be the next
 * element: *a then moves on to it). Returns 0; 1 for --help or -h; -1 with
 * a message in err. */
static int
next_arg(const struct flag_group *g, size_t ng, int argc, char **argv, int *a, struct arg_step *st,
         char *err, size_t errcap)
{
    const char *arg = argv[*a];
    const char *eq;
    char name[96];
    size_t k = 0;

    memset(st, 0, sizeof(*st));
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
        return 1;
    }
    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
        snprintf(err, errcap, "unexpected argument '%.128s' (options start with --)", arg);
        return -1;
    }
    arg += 2;
    eq = strchr(arg, '=');
    normalize(arg, eq ? (size_t)(eq - arg) : strlen(arg), name, sizeof(name));
    for (k = 0; k < ng && !(st->d = find(g[k].defs, name, &st->idx)); k++) {
    }
    if (!st->d) {
        snprintf(err, errcap, "unknown option --%s (see --help)", name);
        return -1;
    }
    st->group = k;
    st->in_argv = true;
    if (eq) {
        st->value = argv[*a] + (eq - argv[*a]) + 1;
    } else if (st->d->type == FLAG_BOOL) {
        bool tmp;
        st->value = (char *)(uintptr_t) "true";
        st->in_argv = false;
        if (*a + 1 < argc && util_parse_bool(argv[*a + 1], &tmp) == 0) {
            st->value = argv[++*a]; /* "--register true", as DB-GPT's docs write it */
            st->in_argv = true;
        }
    } else if (*a + 1 < argc) {
        st->value = argv[++*a];
    } else {
        snprintf(err, errcap, "option --%s needs a value", name);
        return -1;
    }
    return 0;
}

int
flags_parse_groups(struct flag_group *g, size_t ng, int argc, char **argv, char *err, size_t errcap)
{
    for (size_t k = 0; k < ng; k++) {
        for (size_t i = 0; g[k].defs[i].name; i++) {
            const struct flag_def *d = &g[k].defs[i];
            const char *env = (d->flags & FLAG_ARGV_ONLY) ? NULL : env_value(d);
            if (set_value(d, g[k].cfg, d->def, err, errcap) != 0) {
                return -1;
            }
            if (g[k].sources) {
                g[k].sources[i] = FLAG_FROM_DEFAULT;
            }
            if (env) {
                if (set_value(d, g[k].cfg, env, err, errcap) != 0) {
                    return -1;
                }
                if (g[k].sources) {
                    g[k].sources[i] = FLAG_FROM_ENV;
                }
            }
        }
    }
    for (int a = 0; a < argc; a++) {
        struct arg_step st;
        int rc = next_arg(g, ng, argc, argv, &a, &st, err, errcap);
        if (rc != 0) {
            return rc;
        }
        if (set_value(st.d, g[st.group].cfg, st.value, err, errcap) != 0) {
            return -1;
        }
        if (g[st.group].sources) {
            g[st.group].sources[st.idx] = FLAG_FROM_ARGV;
        }
    }
    return 0;
}

int
flags_scrub_secrets(const struct flag_group *g, size_t ng, int argc, char **argv)
{
    char err[256];
    int n = 0;

    for (int a = 0; a < argc; a++) {
        struct arg_step st;
        if (next_arg(g, ng, argc, argv, &a, &st, err, sizeof(err)) != 0) {
            break; /* as the parse stopped */
        }
        if ((st.d->flags & FLAG_SECRET) && st.in_argv && *st.value) {
            memset(st.value, 'x', strlen(st.value));
            n++;
        } else if (st.d->type == FLAG_STR && st.in_argv) {
            n += util_url_mask_passwords(st.value); /* --upstream http://u:pw@... */
        }
    }
    return n;
}

size_t
flags_count(const struct flag_def *defs)
{
    size_t n = 0;

    while (defs[n].name) {
        n++;
    }
    return n;
}

int
flags_set_defaults(const struct flag_def *defs, void *cfg, char *err, size_t errcap)
{
    for (size_t i = 0; defs[i].name; i++) {
        if (set_value(&defs[i], cfg, defs[i].def, err, errcap) != 0) {
            return -1;
        }
    }
    return 0;
}

int
flags_parse(const struct flag_def *defs, void *cfg, int argc, char **argv,
            enum flag_source *sources, char *err, size_t errcap)
{
    struct flag_group g = {.defs = defs, .cfg = cfg, .sources = sources};

    return flags_parse_groups(&g, 1, argc, argv, err, errcap);
}

/* True when an earlier group has an option of this name. */
static bool
shadowed(const struct flag_group *g, size_t k, const char *name)
{
    size_t idx;

    for (size_t j = 0; j < k; j++) {
        if (find(g[j].defs, name, &idx)) {
            return true;
        }
    }
    return false;
}

/* The options of group k that no earlier group has, as "--a, --b". */
static void
print_names(FILE *out, const struct flag_group *g, size_t k, const char *indent, size_t width)
{
    size_t col = strlen(indent);

    fputs(indent, out);
    for (size_t i = 0, n = 0; g[k].defs[i].name; i++) {
        const struct flag_def *d = &g[k].defs[i];
        if ((d->flags & FLAG_HIDDEN) || shadowed(g, k, d->name)) {
            continue;
        }
        size_t len = strlen(d->name) + 4;
        if (n && col + len > width) {
            fprintf(out, ",\n%s", indent);
            col = strlen(indent);
        } else if (n) {
            fputs(", ", out);
            col += 2;
        }
        fprintf(out, "--%s", d->name);
        col += len - 2;
        n++;
    }
    fputs("\n", out);
}

void
flags_print_help_groups(FILE *out, const char *usage, const char *summary,
                        const struct flag_group *g, size_t ng)
{
    flags_print_help(out, usage, summary, g[0].defs);
    for (size_t k = 1; k < ng; k++) {
        fprintf(out, "\n%s (see %s):\n", g[k].title, g[k].see);
        print_names(out, g, k, "  ", 78);
    }
}

void
flags_print_markdown_groups(FILE *out, const char *title, const char *summary,
                            const struct flag_group *g, size_t ng)
{
    flags_print_markdown(out, title, summary, g[0].defs);
    for (size_t k = 1; k < ng; k++) {
        fprintf(out, "%s, as in `%s`:\n\n", g[k].title, g[k].see);
        print_names(out, g, k, "", 100);
        fprintf(out, "\n");
    }
}

/* Prints group k's options (those no earlier group has). */
static void
print_effective(FILE *out, const struct flag_group *g, size_t k)
{
    static const char *const from[] = {"default", "environment", "command line"};
    const struct flag_def *defs = g[k].defs;
    const void *cfg = g[k].cfg;
    const enum flag_source *src = g[k].sources;

    for (size_t i = 0; defs[i].name; i++) {
        const struct flag_def *d = &defs[i];
        const char *field = (const char *)cfg + d->offset;
        char value[512];

        if ((d->flags & FLAG_ARGV_ONLY) || shadowed(g, k, d->name)) {
            continue;
        }
        switch (d->type) {
        case FLAG_STR:
        case FLAG_ENUM: {
            const char *v = *(char *const *)(const void *)field;
            if (v && *v && !(d->flags & FLAG_SECRET)) {
                util_url_redact(v, value, sizeof(value)); /* a URL's password masked */
                break;
            }
            snprintf(value, sizeof(value), "%s",
                     !v                         ? "(unset)"
                     : (d->flags & FLAG_SECRET) ? (*v ? "***" : "(empty)")
                     : *v                       ? v
                                                : "(empty)");
            break;
        }
        case FLAG_INT: {
            int64_t v;
            memcpy(&v, field, sizeof(v));
            snprintf(value, sizeof(value), "%lld", (long long)v);
            break;
        }
        case FLAG_DOUBLE: {
            double v;
            memcpy(&v, field, sizeof(v));
            snprintf(value, sizeof(value), "%g", v);
            break;
        }
        case FLAG_BOOL: {
            bool v;
            memcpy(&v, field, sizeof(v));
            snprintf(value, sizeof(value), "%s", v ? "true" : "false");
            break;
        }
        }
        fprintf(out, "  --%-32s %s%s%s%s\n", d->name, value, src ? "  (" : "",
                src ? from[src[i]] : "", src ? ")" : "");
    }
}

void
flags_print_effective(FILE *out, const struct flag_def *defs, const void *cfg,
                      const enum flag_source *src)
{
    struct flag_group g = {.defs = defs, .cfg = (void *)cfg, .sources = (enum flag_source *)src};

    print_effective(out, &g, 0);
}

void
flags_print_effective_groups(FILE *out, const struct flag_group *g, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        print_effective(out, g, k);
    }
}

void
flags_cleanup(const struct flag_def *defs, void *cfg)
{
    for (size_t i = 0; defs[i].name; i++) {
        if (defs[i].type == FLAG_STR || defs[i].type == FLAG_ENUM) {
            char **sp = (char **)(void *)((char *)cfg + defs[i].offset);
            free(*sp);
            *sp = NULL;
        }
    }
}

void
flags_env_names(const struct flag_def *d, char *out, size_t cap)
{
    size_t n;

    if (d->flags & FLAG_ARGV_ONLY) {
        snprintf(out, cap, "(command line only)");
        return;
    }
    n = (size_t)snprintf(out, cap, "ROSTER_");

    for (const char *p = d->name; *p && n + 1 < cap; p++) {
        out[n++] = (char)toupper((unsigned char)*p);
    }
    out[n] = '\0';
    if (d->env && n + 3 < cap) {
        snprintf(out + n, cap - n, ", %s", d->env);
    }
}

void
flags_print_help(FILE *out, const char *usage, const char *summary, const struct flag_def *defs)
{
    fprintf(out, "usage: %s\n\n%s\n\noptions:\n", usage, summary);
    for (size_t i = 0; defs[i].name; i++) {
        const struct flag_def *d = &defs[i];
        char left[256];
        char env[160];

        if (d->flags & FLAG_HIDDEN) {
            continue;
        }
        snprintf(left, sizeof(left), "--%s%s%s", d->name, d->metavar ? " " : "",
                 d->metavar ? d->metavar : "");
        flags_env_names(d, env, sizeof(env));
        if (strlen(left) > 34) { /* the choices of a long enum: the help on a line of its own */
            fprintf(out, "  %s\n  %-34s %s\n", left, "", d->help);
        } else {
            fprintf(out, "  %-34s %s\n", left, d->help);
        }
        if (d->def && !(d->flags & FLAG_SECRET)) {
            fprintf(out, "  %-34s   default: %s; env: %s\n", "", d->def, env);
        } else {
            fprintf(out, "  %-34s   env: %s\n", "", env);
        }
    }
    fprintf(out, "  %-34s %s\n", "--help", "show this help");
}

/* s with each '|' escaped, for a cell of a Markdown table ("" for NULL). */
static void
md_cell(const char *s, char *out, size_t cap)
{
    size_t n = 0;

    for (; s && *s && n + 3 < cap; s++) {
        if (*s == '|') {
            out[n++] = '\\';
        }
        out[n++] = *s;
    }
    out[n] = '\0';
}

void
flags_print_markdown(FILE *out, const char *title, const char *summary, const struct flag_def *defs)
{
    fprintf(out, "## %s\n\n%s\n\n| flag | default | environment | meaning |\n|---|---|---|---|\n",
            title, summary);
    for (size_t i = 0; defs[i].name; i++) {
        const struct flag_def *d = &defs[i];
        char env[160];
        char meta[256];

        if (d->flags & FLAG_HIDDEN) {
            continue;
        }
        flags_env_names(d, env, sizeof(env));
        md_cell(d->metavar, meta, sizeof(meta));
        fprintf(out, "| `--%s%s%s` | %s%s%s | `%s` | %s |\n", d->name, d->metavar ? " " : "", meta,
                d->def && *d->def ? "`" : "", d->def ? (*d->def ? d->def : "(empty)") : "(unset)",
                d->def && *d->def ? "`" : "", env, d->help);
    }
    fprintf(out, "\n");
}

int
flags_load_role(const struct flag_def *defs, void *cfg, int argc, char **argv, const char *usage,
                const char *summary, size_t log_level_offset, enum flag_source *sources)
{
    enum flag_source own[128];
    enum flag_source *src = sources ? sources : own;
    char err[256];
    size_t n = 0;
    int rc;

    while (defs[n].name) {
        n++;
    }
    if (!sources && n > sizeof(own) / sizeof(own[0])) {
        fprintf(stderr, "roster: internal error: option table too long\n");
        return -1;
    }
    rc = flags_parse(defs, cfg, argc, argv, src, err, sizeof(err));
    if (rc == 1) {
        flags_print_help(stdout, usage, summary, defs);
        return 1;
    }
    if (rc != 0) {
        fprintf(stderr, "roster: %s\n", err);
        return -1;
    }
    const char *level = *(char **)((char *)cfg + log_level_offset);
    if (log_set_level_name(level) != 0) {
        fprintf(stderr, "roster: --log_level: unknown level '%s'\n", level);
        return -1;
    }
    struct flag_group g = {.defs = defs, .cfg = cfg, .sources = src};
    (void)flags_scrub_secrets(&g, 1, argc, argv);
    for (size_t i = 0; i < n; i++) {
        if ((defs[i].flags & FLAG_SECRET) && src[i] == FLAG_FROM_ARGV) {
            flags_warn_secret_on_argv(&defs[i]);
        }
    }
    return 0;
}

void
flags_warn_secret_on_argv(const struct flag_def *d)
{
    char env[160];

    flags_env_names(d, env, sizeof(env));
    log_warn("--%s was given on the command line: its value is now blanked from the process's "
             "arguments, but other users could read it until then; the environment (%s) is "
             "the better place",
             d->name, env);
}
