/* SPDX-License-Identifier: MIT
 *
 * test_wrk.c - worker/: the builtin embedder (dimension, unit norm,
 * determinism, case folding, similarity, empty and odd input, pinned
 * values) and the parsing of --controller_addr lists.
 */
#include <math.h>
#include <string.h>

#include "check.h"
#include "wrk.h"
#include "wrk_lm.h"

static double
norm(const float *v, size_t n)
{
    double s = 0;

    for (size_t i = 0; i < n; i++) {
        s += (double)v[i] * v[i];
    }
    return sqrt(s);
}

static double
cosine(const float *a, const float *b, size_t n)
{
    double s = 0;

    for (size_t i = 0; i < n; i++) {
        s += (double)a[i] * b[i];
    }
    return s / (norm(a, n) * norm(b, n));
}

static void
embed_s(const char *s, float *out, size_t dim)
{
    wrk_embed(s, strlen(s), out, dim);
}

static void
test_unit_norm_every_dimension(void)
{
    static const char *const texts[] = {
        "hello", "", "   ,,, ", "a", "日本語", "x y z w v u", "\xff\xfe broken utf-8 \xc3"};
    static const size_t dims[] = {8, 13, 384, 4096};
    float v[4096];

    for (size_t d = 0; d < sizeof(dims) / sizeof(dims[0]); d++) {
        for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
            embed_s(texts[t], v, dims[d]);
            CHECK(fabs(norm(v, dims[d]) - 1.0) < 1e-5);
        }
    }
}

static void
test_deterministic_and_case_folded(void)
{
    float a[64], b[64], c[64];

    embed_s("The Quick Brown Fox", a, 64);
    embed_s("the quick brown fox", b, 64);
    embed_s("the quick brown fox", c, 64);
    CHECK(memcmp(b, c, sizeof(b)) == 0);
    CHECK(memcmp(a, b, sizeof(a)) == 0);
    /* punctuation and spacing do not make words */
    embed_s("the, quick -- brown\tfox!", c, 64);
    CHECK(memcmp(b, c, sizeof(b)) == 0);
}

static void
test_similarity(void)
{
    float a[256], b[256], c[256], d[256];

    embed_s("the cat sat on the mat", a, 256);
    embed_s("the cat sat on a mat", b, 256);
    embed_s("quantum chromodynamics lecture notes", c, 256);
    embed_s("mat on the sat cat the", d, 256); /* same words, other order */
    CHECK(cosine(a, b, 256) > 0.8);
    CHECK(cosine(a, c, 256) < 0.3);
    CHECK(cosine(a, d, 256) > cosine(a, c, 256));
    CHECK(cosine(a, d, 256) < 0.999); /* bigrams tell the orders apart */
}

static void
test_pinned_values(void)
{
    /* the hashing is part of the contract: vectors stored by a client must
     * stay comparable across releases, so a change here is a breaking one */
    static const float want[8] = {0,           0.485071242f,  0.12126781f,  -0.606339037f,
                                  0.12126781f, -0.363803446f, 0.485071242f, 0};
    float v[8];
    int nonzero = 0;

    embed_s("hello world", v, 8);
    for (int i = 0; i < 8; i++) {
        CHECK(fabsf(v[i] - want[i]) < 1e-6f);
    }
    embed_s("", v, 8);
    for (int i = 0; i < 8; i++) {
        nonzero += v[i] != 0;
        CHECK(v[i] == 0 || fabsf(fabsf(v[i]) - 1.0f) < 1e-6f);
    }
    CHECK_EQ_INT(nonzero, 1);
}

static void
test_count_words(void)
{
    CHECK_EQ_INT(wrk_count_words("", 0), 0);
    CHECK_EQ_INT(wrk_count_words("a b, c", 6), 3);
    CHECK_EQ_INT(wrk_count_words("  leading and trailing  ", 24), 3);
    CHECK_EQ_INT(wrk_count_words("日本語 text", strlen("日本語 text")), 2);
    CHECK_EQ_INT(wrk_count_words("a\0b", 3), 2); /* lengths, not C strings */
}

static void
test_parse_controllers(void)
{
    struct wrk_registrar_config c;
    char err[256];

    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(
        wrk_parse_controllers("http://a:8000, http://b:8000/ ,https://c", &c, err, sizeof(err)), 0);
    CHECK_EQ_INT(c.nurls, 3);
    CHECK_EQ_STR(c.urls[0], "http://a:8000");
    CHECK_EQ_STR(c.urls[1], "http://b:8000");
    CHECK_EQ_STR(c.urls[2], "https://c");
    CHECK_EQ_INT(wrk_parse_controllers("http://a,,", &c, err, sizeof(err)), 0);
    CHECK_EQ_INT(c.nurls, 1);
    CHECK_EQ_INT(wrk_parse_controllers("", &c, err, sizeof(err)), -1);
    CHECK(strstr(err, "no address"));
    CHECK_EQ_INT(wrk_parse_controllers(" , ", &c, err, sizeof(err)), -1);
    CHECK_EQ_INT(wrk_parse_controllers("a:8000", &c, err, sizeof(err)), -1);
    CHECK(strstr(err, "not an http"));
    CHECK_EQ_INT(wrk_parse_controllers("http://a,ftp://b", &c, err, sizeof(err)), -1);
    char many[2000];
    size_t off = 0;
    for (int i = 0; i <= WRK_MAX_CTLS; i++) {
        memcpy(many + off, "http://x,", 9);
        off += 9;
    }
    many[off] = '\0';
    CHECK_EQ_INT(wrk_parse_controllers(many, &c, err, sizeof(err)), -1);
    CHECK(strstr(err, "more than"));
}

/* The registrar's backoff with every controller down for 200 rounds (far
 * past the 57 doublings that overflowed an uncapped int64 and the ~63
 * after which it was 0): every wait stays within its jitter of a value
 * that climbs to the cap and stays there; never 0, never negative. */
static void
test_backoff_capped(void)
{
    static const int64_t caps[] = {20000, 50, 100, 3600000, INT64_MAX};
    static const uint64_t rs[] = {0, 1, 12345, UINT64_MAX};

    for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++) {
        int64_t cap = caps[c], backoff = WRK_BACKOFF_MIN_MS, prev = 0;
        for (int round = 0; round < 200; round++) {
            /* as registrar_main waits: the value, capped, with jitter */
            int64_t v = backoff < cap ? backoff : cap;
            CHECK(v >= (cap < WRK_BACKOFF_MIN_MS ? cap : WRK_BACKOFF_MIN_MS));
            CHECK(v >= prev); /* never falls back while the controllers stay down */
            for (size_t k = 0; k < sizeof(rs) / sizeof(rs[0]); k++) {
                int64_t w = wrk_backoff_wait(v, rs[k]);
                CHECK(w > 0 && (w >= v / 2 || v > INT64_MAX / 2));
                CHECK(v > INT64_MAX / 2 || w < v + v / 2 + 1);
            }
            prev = v;
            backoff = wrk_backoff_next(backoff, cap);
            CHECK(backoff > 0 && backoff <= (cap > WRK_BACKOFF_MIN_MS ? cap : WRK_BACKOFF_MIN_MS));
        }
        CHECK_EQ_INT(prev, cap); /* it reached the cap */
    }
    /* the jitter spreads: not every worker waits the same */
    CHECK(wrk_backoff_wait(20000, 0) == 10000);
    CHECK(wrk_backoff_wait(20000, 19999) == 29999);
    /* odd inputs are clamped, not trusted */
    CHECK(wrk_backoff_next(0, 20000) > 0);
    CHECK(wrk_backoff_next(-5, 20000) > 0);
    CHECK(wrk_backoff_next(INT64_MAX, INT64_MAX) == INT64_MAX);
    CHECK(wrk_backoff_wait(0, 7) >= 0);
}

static const char corpus[] = "# Title\n\nThe cat sat on the mat. The cat ate the fish.\n"
                             "The dog sat on the log.\n\n```\ncode is left out\n```\n"
                             "| a | table |\n";

static void
gen_all(const struct wrk_lm *lm, const char *prompt, struct wrk_gen_params p, char *out, size_t cap,
        int *ntok)
{
    struct wrk_gen g;
    char tok[128];
    const char *t;
    size_t o = 0;

    wrk_gen_init(&g, lm, prompt, strlen(prompt), &p);
    out[0] = '\0';
    while ((t = wrk_gen_next(&g, tok, sizeof(tok))) != NULL) {
        size_t n = strlen(t);
        if (o + n + 1 < cap) {
            memcpy(out + o, t, n + 1);
            o += n;
        }
    }
    *ntok = g.completion_tokens;
}

static void
test_lm_train_and_generate(void)
{
    struct wrk_lm *lm = NULL;
    struct wrk_gen_params p = {.temperature = 0, .top_p = 1, .seed = 1, .max_tokens = 5};
    char a[1024], b[1024];
    int na, nb;

    CHECK_EQ_INT(wrk_lm_train("too short", 9, &lm), -1);
    CHECK_EQ_INT(wrk_lm_train(corpus, strlen(corpus), &lm), 0);
    CHECK(wrk_lm_vocab(lm) >= 12);
    /* temperature 0: the most frequent continuation, every time */
    gen_all(lm, "The cat", p, a, sizeof(a), &na);
    gen_all(lm, "The cat", p, b, sizeof(b), &nb);
    CHECK_EQ_STR(a, b);
    CHECK_EQ_INT(na, 5);
    CHECK(strncmp(a, "sat on the", 10) == 0 || strncmp(a, "ate the", 7) == 0);
    CHECK(strstr(a, "code") == NULL && strstr(b, "table") == NULL);
    /* seeds: the same seed gives the same text, sampling varies across seeds */
    p.temperature = 1.5;
    p.max_tokens = 40;
    gen_all(lm, "The", p, a, sizeof(a), &na);
    gen_all(lm, "The", p, b, sizeof(b), &nb);
    CHECK_EQ_STR(a, b);
    int differ = 0;
    for (uint64_t seed = 2; seed < 12; seed++) {
        p.seed = seed;
        gen_all(lm, "The", p, b, sizeof(b), &nb);
        differ += strcmp(a, b) != 0;
    }
    CHECK(differ > 0);
    /* max_tokens is a hard bound */
    p.max_tokens = 3;
    gen_all(lm, "The", p, a, sizeof(a), &na);
    CHECK(na <= 3);
    CHECK_EQ_INT(wrk_lm_count_tokens("DB-GPT's worker_type, ok.", 25), 5);
    wrk_lm_free(lm);
}

int
main(void)
{
    CHECK_RUN(test_unit_norm_every_dimension);
    CHECK_RUN(test_deterministic_and_case_folded);
    CHECK_RUN(test_similarity);
    CHECK_RUN(test_pinned_values);
    CHECK_RUN(test_count_words);
    CHECK_RUN(test_parse_controllers);
    CHECK_RUN(test_backoff_capped);
    CHECK_RUN(test_lm_train_and_generate);
    return check_summary();
}
