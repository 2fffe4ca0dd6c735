/* SPDX-License-Identifier: MIT
 *
 * test_flags.c - common/flags.c over a small table: defaults, environment
 * (ROSTER_<NAME> and aliases), argv precedence, --a-b == --a_b, "--x=v" and
 * "--x v", boolean forms, ranges, unknown flags, missing values, --help,
 * the sources array, and the generated help and Markdown.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "check.h"
#include "ctl.h"
#include "flags.h"
#include "wrk.h"

struct tcfg {
    char *t_host;
    int64_t t_port;
    double t_ratio;
    bool t_verbose;
    char *t_secret;
    int64_t t_count;
    char *t_name;
    bool t_on;
};

#define F(name, type, def, lo, hi, env, fl, meta, help)                                            \
    {                                                                                              \
#name, type, offsetof(struct tcfg, name), def, lo, hi, env, fl, meta, help                 \
    }

static const struct flag_def defs[] = {
    F(t_host, FLAG_STR, "0.0.0.0", 1, 0, NULL, 0, "ADDR", "Address."),
    F(t_port, FLAG_INT, "8000", 0, 65535, NULL, 0, "PORT", "Port."),
    F(t_ratio, FLAG_DOUBLE, "1.5", 0.1, 10, NULL, 0, "R", "Ratio."),
    F(t_verbose, FLAG_BOOL, "false", 1, 0, NULL, 0, NULL, "Verbose."),
    F(t_secret, FLAG_STR, NULL, 1, 0, "T_SECRET_ALIAS,T_SECRET_ALIAS2", FLAG_SECRET, "S",
      "Secret."),
    F(t_count, FLAG_INT, "-3", 1, 0, NULL, FLAG_HIDDEN, "N", "Unranged, hidden."),
    F(t_name, FLAG_STR, NULL, 1, 0, NULL, 0, "NAME", "Unset by default."),
    F(t_on, FLAG_BOOL, "true", 1, 0, NULL, 0, NULL, "On by default."),
    {NULL, FLAG_STR, 0, NULL, 0, 0, NULL, 0, NULL, NULL},
};
#define NDEFS 8

static const char *const env_names[] = {
    "ROSTER_T_HOST",  "ROSTER_T_PORT",   "ROSTER_T_RATIO", "ROSTER_T_VERBOSE", "ROSTER_T_SECRET",
    "T_SECRET_ALIAS", "T_SECRET_ALIAS2", "ROSTER_T_COUNT", "ROSTER_T_NAME",    "ROSTER_T_ON",
};

static void
clear_env(void)
{
    for (size_t i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++) {
        unsetenv(env_names[i]);
    }
}

/* Parses a NULL-terminated argv list into a zeroed *cfg. */
static int
parse(struct tcfg *cfg, enum flag_source *src, char *err, size_t errcap, const char **args)
{
    char *argv[32];
    int argc = 0;

    memset(cfg, 0, sizeof(*cfg));
    err[0] = '\0';
    while (args[argc] && argc < 31) {
        argv[argc] = (char *)(uintptr_t)args[argc];
        argc++;
    }
    argv[argc] = NULL;
    return flags_parse(defs, cfg, argc, argv, src, err, errcap);
}

#define ARGS(...) ((const char *[]){__VA_ARGS__, NULL})
#define NOARGS    ((const char *[]){NULL})

static void
test_defaults(void)
{
    struct tcfg c;
    enum flag_source src[NDEFS];
    char err[256];

    clear_env();
    memset(src, 0xff, sizeof(src));
    CHECK_EQ_INT(parse(&c, src, err, sizeof(err), NOARGS), 0);
    CHECK_EQ_STR(c.t_host, "0.0.0.0");
    CHECK_EQ_INT(c.t_port, 8000);
    CHECK(c.t_ratio == 1.5);
    CHECK(c.t_verbose == false);
    CHECK(c.t_secret == NULL);
    CHECK_EQ_INT(c.t_count, -3);
    CHECK(c.t_name == NULL);
    CHECK(c.t_on == true);
    for (int i = 0; i < NDEFS; i++) {
        CHECK_EQ_INT(src[i], FLAG_FROM_DEFAULT);
    }
    flags_cleanup(defs, &c);
    CHECK(c.t_host == NULL);
    /* sources may be NULL */
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), NOARGS), 0);
    flags_cleanup(defs, &c);
}

static void
test_env(void)
{
    struct tcfg c;
    enum flag_source src[NDEFS];
    char err[256];

    clear_env();
    setenv("ROSTER_T_HOST", "10.0.0.1", 1);
    setenv("ROSTER_T_PORT", "9000", 1);
    setenv("ROSTER_T_VERBOSE", "yes", 1);
    setenv("T_SECRET_ALIAS2", "from-alias-2", 1);
    CHECK_EQ_INT(parse(&c, src, err, sizeof(err), NOARGS), 0);
    CHECK_EQ_STR(c.t_host, "10.0.0.1");
    CHECK_EQ_INT(c.t_port, 9000);
    CHECK(c.t_verbose == true);
    CHECK_EQ_STR(c.t_secret, "from-alias-2"); /* the second alias */
    CHECK_EQ_INT(src[0], FLAG_FROM_ENV);
    CHECK_EQ_INT(src[1], FLAG_FROM_ENV);
    CHECK_EQ_INT(src[2], FLAG_FROM_DEFAULT);
    CHECK_EQ_INT(src[3], FLAG_FROM_ENV);
    CHECK_EQ_INT(src[4], FLAG_FROM_ENV);
    flags_cleanup(defs, &c);

    /* ROSTER_<NAME> wins over an alias; the first alias over the second */
    setenv("T_SECRET_ALIAS", "from-alias-1", 1);
    CHECK_EQ_INT(parse(&c, src, err, sizeof(err), NOARGS), 0);
    CHECK_EQ_STR(c.t_secret, "from-alias-1");
    flags_cleanup(defs, &c);
    setenv("ROSTER_T_SECRET", "from-roster", 1);
    CHECK_EQ_INT(parse(&c, src, err, sizeof(err), NOARGS), 0);
    CHECK_EQ_STR(c.t_secret, "from-roster");
    flags_cleanup(defs, &c);

    /* an empty environment value is a value ("" for a string) */
    setenv("ROSTER_T_NAME", "", 1);
    CHECK_EQ_INT(parse(&c, src, err, sizeof(err), NOARGS), 0);
    CHECK_EQ_STR(c.t_name, "");
    CHECK_EQ_INT(src[6], FLAG_FROM_ENV);
    flags_cleanup(defs, &c);
    clear_env();
}

static void
test_env_bad_value(void)
{
    struct tcfg c;
    char err[256];

    clear_env();
    setenv("ROSTER_T_PORT", "80x", 1);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), NOARGS), -1);
    CHECK(strstr(err, "--t_port") != NULL);
    CHECK(strstr(err, "80x") != NULL);
    flags_cleanup(defs, &c);
    clear_env();
    setenv("ROSTER_T_ON", "maybe", 1);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), NOARGS), -1);
    CHECK(strstr(err, "true or false") != NULL);
    flags_cleanup(defs, &c);
    clear_env();
}

static void
test_argv_precedence(void)
{
    struct tcfg c;
    enum flag_source src[NDEFS];
    char err[256];

    clear_env();
    setenv("ROSTER_T_PORT", "9000", 1);
    setenv("ROSTER_T_HOST", "10.0.0.1", 1);
    CHECK_EQ_INT(parse(&c, src, err, sizeof(err), ARGS("--t_port", "9100")), 0);
    CHECK_EQ_INT(c.t_port, 9100);
    CHECK_EQ_INT(src[1], FLAG_FROM_ARGV);
    CHECK_EQ_STR(c.t_host, "10.0.0.1"); /* untouched by argv: still env */
    CHECK_EQ_INT(src[0], FLAG_FROM_ENV);
    flags_cleanup(defs, &c);
    /* the last occurrence wins, and a repeated string does not leak */
    CHECK_EQ_INT(
        parse(&c, src, err, sizeof(err), ARGS("--t_host=a", "--t_host=b", "--t_host", "c")), 0);
    CHECK_EQ_STR(c.t_host, "c");
    flags_cleanup(defs, &c);
    clear_env();
}

static void
test_dashes_and_forms(void)
{
    struct tcfg c;
    char err[256];

    clear_env();
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err),
                       ARGS("--t-host", "h1", "--t-port=1", "--t_ratio", "2.5", "--t-name=a=b")),
                 0);
    CHECK_EQ_STR(c.t_host, "h1");
    CHECK_EQ_INT(c.t_port, 1);
    CHECK(c.t_ratio == 2.5);
    CHECK_EQ_STR(c.t_name, "a=b"); /* only the first '=' splits */
    flags_cleanup(defs, &c);
    /* "--x=" gives an empty string; "--x v" takes the next word even if it
     * looks like an option */
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--t_name=", "--t_host", "--t-port")), 0);
    CHECK_EQ_STR(c.t_name, "");
    CHECK_EQ_STR(c.t_host, "--t-port");
    flags_cleanup(defs, &c);
}

static void
test_booleans(void)
{
    struct tcfg c;
    enum flag_source src[NDEFS];
    char err[256];

    clear_env();
    CHECK_EQ_INT(parse(&c, src, err, sizeof(err), ARGS("--t_verbose")), 0);
    CHECK(c.t_verbose == true);
    CHECK_EQ_INT(src[3], FLAG_FROM_ARGV);
    flags_cleanup(defs, &c);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--t_on=false", "--t-verbose=True")), 0);
    CHECK(c.t_on == false);
    CHECK(c.t_verbose == true);
    flags_cleanup(defs, &c);
    /* "--register true" as DB-GPT writes it: the next word is consumed only
     * when it is a boolean */
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--t_on", "false", "--t_verbose", "1")), 0);
    CHECK(c.t_on == false);
    CHECK(c.t_verbose == true);
    flags_cleanup(defs, &c);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--t_verbose", "--t_port", "5")), 0);
    CHECK(c.t_verbose == true);
    CHECK_EQ_INT(c.t_port, 5);
    flags_cleanup(defs, &c);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--t_verbose", "hello")), -1);
    CHECK(strstr(err, "unexpected argument 'hello'") != NULL);
    flags_cleanup(defs, &c);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--t_verbose=maybe")), -1);
    CHECK(strstr(err, "--t_verbose") != NULL);
    flags_cleanup(defs, &c);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--t_verbose=")), -1);
    flags_cleanup(defs, &c);
}

static void
test_ranges(void)
{
    static const struct {
        const char *arg;
        int ok;
    } cases[] = {
        {"--t_port=0", 1},
        {"--t_port=65535", 1},
        {"--t_port=65536", 0},
        {"--t_port=-1", 0},
        {"--t_port=8e3", 0},
        {"--t_port=80.0", 0},
        {"--t_port= 80", 0},
        {"--t_ratio=0.1", 1},
        {"--t_ratio=10", 1},
        {"--t_ratio=0.09", 0},
        {"--t_ratio=10.5", 0},
        {"--t_ratio=1e0", 1},
        {"--t_ratio=nan", 0},
        {"--t_ratio=inf", 0},
        {"--t_ratio=0x1", 0},
        {"--t_count=-9223372036854775808", 1},
        {"--t_count=9223372036854775808", 0},
        {"--t_count=abc", 0},
    };
    struct tcfg c;
    char err[256];

    clear_env();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = parse(&c, NULL, err, sizeof(err), ARGS(cases[i].arg));
        flags_cleanup(defs, &c);
        if (rc != (cases[i].ok ? 0 : -1)) {
            fprintf(stderr, "%s: rc %d (%s)\n", cases[i].arg, rc, err);
            CHECK(0);
        }
    }
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--t_port=70000")), -1);
    CHECK_EQ_STR(err, "--t_port: '70000' is not an integer in [0, 65535]");
    flags_cleanup(defs, &c);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--t_count=x")), -1);
    CHECK_EQ_STR(err, "--t_count: 'x' is not an integer");
    flags_cleanup(defs, &c);
}

static void
test_errors(void)
{
    struct tcfg c;
    char err[256];

    clear_env();
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--nope=1")), -1);
    CHECK_EQ_STR(err, "unknown option --nope (see --help)");
    flags_cleanup(defs, &c);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--no-pe")), -1);
    CHECK_EQ_STR(err, "unknown option --no_pe (see --help)");
    flags_cleanup(defs, &c);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--T_PORT=1")), -1); /* case matters */
    flags_cleanup(defs, &c);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--t_port")), -1);
    CHECK_EQ_STR(err, "option --t_port needs a value");
    flags_cleanup(defs, &c);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--t_host")), -1);
    flags_cleanup(defs, &c);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("t_port=1")), -1);
    CHECK(strstr(err, "unexpected argument") != NULL);
    flags_cleanup(defs, &c);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("-t_port=1")), -1);
    flags_cleanup(defs, &c);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--")), -1);
    flags_cleanup(defs, &c);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--=1")), -1);
    flags_cleanup(defs, &c);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("")), -1);
    flags_cleanup(defs, &c);
    /* a very long unknown name is truncated in the message, not overflowed */
    {
        char longarg[400];
        memset(longarg, 'x', sizeof(longarg) - 1);
        longarg[0] = '-';
        longarg[1] = '-';
        longarg[sizeof(longarg) - 1] = '\0';
        CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS(longarg)), -1);
        CHECK(strstr(err, "unknown option --xxx") != NULL);
        flags_cleanup(defs, &c);
    }
}

static void
test_help(void)
{
    struct tcfg c;
    char err[256];

    clear_env();
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--help")), 1);
    flags_cleanup(defs, &c);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("-h")), 1);
    flags_cleanup(defs, &c);
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--t_port=1", "--help", "--bogus")), 1);
    flags_cleanup(defs, &c);
    /* an error before --help is still an error */
    CHECK_EQ_INT(parse(&c, NULL, err, sizeof(err), ARGS("--bogus", "--help")), -1);
    flags_cleanup(defs, &c);
}

static void
test_help_text(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    CHECK(f != NULL);
    flags_print_help(f, "prog [options]", "Does things.", defs);
    fclose(f);
    CHECK(strstr(text, "usage: prog [options]") != NULL);
    CHECK(strstr(text, "--t_port PORT") != NULL);
    CHECK(strstr(text, "default: 8000; env: ROSTER_T_PORT") != NULL);
    CHECK(strstr(text, "env: ROSTER_T_SECRET, T_SECRET_ALIAS,T_SECRET_ALIAS2") != NULL);
    CHECK(strstr(text, "t_count") == NULL); /* hidden */
    CHECK(strstr(text, "--help") != NULL);
    free(text);

    text = NULL;
    f = open_memstream(&text, &len);
    CHECK(f != NULL);
    flags_print_markdown(f, "Test", "Summary.", defs);
    fclose(f);
    CHECK(strstr(text, "## Test") != NULL);
    CHECK(strstr(text, "| `--t_host ADDR` | `0.0.0.0` | `ROSTER_T_HOST` | Address. |") != NULL);
    CHECK(strstr(text, "| `--t_name NAME` | (unset) |") != NULL);
    CHECK(strstr(text, "t_count") == NULL);
    free(text);
}

/* ---- FLAG_ENUM --------------------------------------------------------------- */

struct ecfg {
    char *e_mode;
    char *e_unset;
    char *e_key;
    bool e_flag;
    char *e_plain;
};

#define E(name, type, def, env, fl, meta, help)                                                    \
    {                                                                                              \
#name, type, offsetof(struct ecfg, name), def, 1, 0, env, fl, meta, help                   \
    }

static const struct flag_def edefs[] = {
    E(e_mode, FLAG_ENUM, "fast", NULL, 0, "fast|safe|very_safe", "Mode."),
    E(e_unset, FLAG_ENUM, NULL, NULL, 0, "a|b", "Unset by default."),
    E(e_key, FLAG_STR, NULL, NULL, FLAG_SECRET, "KEY", "A secret."),
    E(e_flag, FLAG_BOOL, "false", NULL, 0, NULL, "A flag."),
    E(e_plain, FLAG_STR, NULL, NULL, 0, "TEXT", "Not secret."),
    {NULL, FLAG_STR, 0, NULL, 0, 0, NULL, 0, NULL, NULL},
};

static int
eparse(struct ecfg *cfg, char *err, size_t errcap, char **argv, int argc)
{
    flags_cleanup(edefs, cfg);
    memset(cfg, 0, sizeof(*cfg));
    err[0] = '\0';
    return flags_parse(edefs, cfg, argc, argv, NULL, err, errcap);
}

static void
test_enum(void)
{
    struct ecfg c = {0};
    char err[256];
    char a0[] = "--e_mode", a1[] = "SAFE", b0[] = "--e-mode=very_safe", c0[] = "--e_mode=saf",
         d0[] = "--e_mode=", e0[] = "--e_unset", e1[] = "b", f0[] = "--e_mode=fast|safe";
    char *argv_a[] = {a0, a1}, *argv_b[] = {b0}, *argv_c[] = {c0}, *argv_d[] = {d0},
         *argv_e[] = {e0, e1}, *argv_f[] = {f0};

    unsetenv("ROSTER_E_MODE");
    CHECK_EQ_INT(eparse(&c, err, sizeof(err), NULL, 0), 0);
    CHECK_EQ_STR(c.e_mode, "fast");
    CHECK(c.e_unset == NULL);
    /* any case; stored as the table writes it */
    CHECK_EQ_INT(eparse(&c, err, sizeof(err), argv_a, 2), 0);
    CHECK_EQ_STR(c.e_mode, "safe");
    CHECK_EQ_INT(eparse(&c, err, sizeof(err), argv_b, 1), 0);
    CHECK_EQ_STR(c.e_mode, "very_safe");
    CHECK_EQ_INT(eparse(&c, err, sizeof(err), argv_e, 2), 0);
    CHECK_EQ_STR(c.e_unset, "b");
    /* prefixes, the empty string and the separator are no choice */
    CHECK_EQ_INT(eparse(&c, err, sizeof(err), argv_c, 1), -1);
    CHECK(strstr(err, "--e_mode: 'saf' is not one of fast|safe|very_safe") != NULL);
    CHECK_EQ_INT(eparse(&c, err, sizeof(err), argv_d, 1), -1);
    CHECK_EQ_INT(eparse(&c, err, sizeof(err), argv_f, 1), -1);
    /* from the environment, checked the same way */
    setenv("ROSTER_E_MODE", "Very_Safe", 1);
    CHECK_EQ_INT(eparse(&c, err, sizeof(err), NULL, 0), 0);
    CHECK_EQ_STR(c.e_mode, "very_safe");
    setenv("ROSTER_E_MODE", "slow", 1);
    CHECK_EQ_INT(eparse(&c, err, sizeof(err), NULL, 0), -1);
    CHECK(strstr(err, "'slow'") != NULL);
    unsetenv("ROSTER_E_MODE");
    flags_cleanup(edefs, &c);
    CHECK(c.e_mode == NULL);
}

static void
test_enum_help(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    CHECK(f != NULL);
    flags_print_help(f, "u", "s", edefs);
    fclose(f);
    CHECK(strstr(text, "--e_mode fast|safe|very_safe") != NULL);
    free(text);
    text = NULL;
    f = open_memstream(&text, &len);
    CHECK(f != NULL);
    flags_print_markdown(f, "T", "S", edefs);
    fclose(f);
    /* a '|' would end the Markdown table's cell */
    CHECK(strstr(text, "| `--e_mode fast\\|safe\\|very_safe` | `fast` |") != NULL);
    free(text);
}

/* Every enum of the role tables has choices, and every default is valid. */
static void
test_role_tables(void)
{
    static const struct {
        const struct flag_def *defs;
        size_t size;
    } tables[] = {
        {ctl_flag_defs, sizeof(struct ctl_config)},
        {api_flag_defs, sizeof(struct api_config)},
        {wrk_flag_defs, sizeof(struct wrk_config)},
    };
    int enums = 0;

    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
        void *cfg = calloc(1, tables[t].size);
        char err[256] = "";
        CHECK(cfg != NULL);
        for (size_t i = 0; tables[t].defs[i].name; i++) {
            const struct flag_def *d = &tables[t].defs[i];
            if (d->type == FLAG_ENUM) {
                CHECK(d->metavar && strchr(d->metavar, '|'));
                CHECK(d->offset + sizeof(char *) <= tables[t].size);
                enums++;
            }
        }
        int rc = flags_set_defaults(tables[t].defs, cfg, err, sizeof(err));
        if (rc != 0) {
            fprintf(stderr, "defaults: %s\n", err);
        }
        flags_cleanup(tables[t].defs, cfg);
        free(cfg);
        CHECK_EQ_INT(rc, 0);
    }
    CHECK(enums >= 7); /* log_level x3, routing, registry_type, registry_db_type, backend... */
}

/* ---- secrets out of argv ----------------------------------------------------- */

static void
test_scrub_secrets(void)
{
    struct ecfg c = {0};
    char err[256];
    char a0[] = "--e_key", a1[] = "canary-1", a2[] = "--e-key=canary-2", a3[] = "--e_plain",
         a4[] = "--e_key", a5[] = "--e_flag", a6[] = "--e_key", a7[] = "", a8[] = "--e_plain=v";
    /* --e_plain's value is "--e_key": the parse reads it as a value, and so must the scrub */
    char *argv[] = {a0, a1, a2, a3, a4, a5, a6, a7, a8};
    struct flag_group g = {.defs = edefs, .cfg = &c};

    CHECK_EQ_INT(eparse(&c, err, sizeof(err), argv, 9), 0);
    CHECK_EQ_STR(c.e_key, ""); /* the last one wins */
    CHECK_EQ_STR(c.e_plain, "v");
    CHECK_EQ_INT(flags_scrub_secrets(&g, 1, 9, argv), 2);
    CHECK_EQ_STR(a0, "--e_key");
    CHECK_EQ_STR(a1, "xxxxxxxx");
    CHECK_EQ_STR(a2, "--e-key=xxxxxxxx");
    CHECK_EQ_STR(a3, "--e_plain");
    CHECK_EQ_STR(a4, "--e_key"); /* a value, not a secret */
    CHECK_EQ_STR(a5, "--e_flag");
    CHECK_EQ_STR(a8, "--e_plain=v");
    /* the values were copied before: the parse's result is unchanged */
    CHECK_EQ_INT(eparse(&c, err, sizeof(err), argv, 2), 0);
    CHECK_EQ_STR(c.e_key, "xxxxxxxx");
    /* a parse that fails stops the scrub where it stopped */
    char b0[] = "--e_key", b1[] = "canary-3", b2[] = "--nope", b3[] = "--e_key=canary-4";
    char *bad[] = {b0, b1, b2, b3};
    CHECK_EQ_INT(flags_scrub_secrets(&g, 1, 4, bad), 1);
    CHECK_EQ_STR(b1, "xxxxxxxx");
    CHECK_EQ_STR(b3, "--e_key=canary-4");
    flags_cleanup(edefs, &c);
}

int
main(void)
{
    CHECK_RUN(test_defaults);
    CHECK_RUN(test_env);
    CHECK_RUN(test_env_bad_value);
    CHECK_RUN(test_argv_precedence);
    CHECK_RUN(test_dashes_and_forms);
    CHECK_RUN(test_booleans);
    CHECK_RUN(test_ranges);
    CHECK_RUN(test_errors);
    CHECK_RUN(test_help);
    CHECK_RUN(test_help_text);
    CHECK_RUN(test_enum);
    CHECK_RUN(test_enum_help);
    CHECK_RUN(test_role_tables);
    CHECK_RUN(test_scrub_secrets);
    clear_env();
    return check_summary();
}
