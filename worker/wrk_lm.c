/* SPDX-License-Identifier: MIT
 *
 * wrk_lm.c - the builtin language model: a word-level trigram model with
 * backoff, trained at start-up on text that ships with roster (its own
 * README and docs, embedded at build time).
 *
 * Tokens are words (runs of ASCII letters and digits and of bytes >= 0x80),
 * single punctuation characters and newlines. Training counts every
 * (a, b, c) and (b, c) in the text; the unique n-grams with their counts
 * are kept in sorted arrays, so the candidates after a context are one
 * binary search away. Generation takes the last two tokens of the prompt
 * as the context, backs off from trigram to bigram to unigram counts when a
 * context was never seen, and samples: weight = count^(1/temperature),
 * top_p keeps the smallest set of most likely tokens whose weight reaches
 * that share, temperature 0 takes the most frequent (ties: the lowest
 * token id), and `seed` makes sampling repeatable (splitmix64).
 *
 * It writes plausible-looking roster documentation, nothing more: it is for
 * trying roster out and for tests, never for real answers.
 */
#include "wrk_lm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wrk.h"

#define BOS 0u /* start-of-text token id */

struct gram3 {
    uint32_t a, b, c, n;
};

struct gram2 {
    uint32_t b, c, n;
};

struct wrk_lm {
    char **words; /* id -> text (owned) */
    uint32_t *unigram;
    size_t nwords, capwords;
    uint32_t *slots; /* hash table of ids + 1, open addressing */
    size_t nslots;
    struct gram3 *g3;
    size_t n3;
    struct gram2 *g2;
    size_t n2;
    uint32_t *by_freq; /* ids by unigram count, descending (backoff to unigrams) */
};

/* The next token of text[*pos..len): sets *start, *n; false at the end. */
static bool
next_token(const char *t, size_t len, size_t *pos, size_t *start, size_t *n)
{
    size_t i = *pos;

    while (i < len && (t[i] == ' ' || t[i] == '\t' || t[i] == '\r')) {
        i++;
    }
    if (i >= len) {
        *pos = len;
        return false;
    }
    *start = i;
    if (wrk_word_byte((unsigned char)t[i])) {
        /* words run through inner hyphens, apostrophes and underscores:
         * "DB-GPT's", "worker_type" */
        while (i < len && (wrk_word_byte((unsigned char)t[i]) ||
                           ((t[i] == '-' || t[i] == '\'' || t[i] == '_') && i + 1 < len &&
                            wrk_word_byte((unsigned char)t[i + 1])))) {
            i++;
        }
    } else {
        i++;
    }
    *n = i - *start;
    *pos = i;
    return true;
}

static uint64_t
hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < n; i++) {
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    }
    return h;
}

static int
grow_table(struct wrk_lm *lm)
{
    size_t ns = lm->nslots ? lm->nslots * 2 : 1024;
    uint32_t *slots = calloc(ns, sizeof(*slots));

    if (!slots) {
        return -1;
    }
    for (size_t i = 0; i < lm->nslots; i++) {
        if (lm->slots[i]) {
            const char *w = lm->words[lm->slots[i] - 1];
            size_t j = hash(w, strlen(w)) & (ns - 1);
            while (slots[j]) {
                j = (j + 1) & (ns - 1);
            }
            slots[j] = lm->slots[i];
        }
    }
    free(lm->slots);
    lm->slots = slots;
    lm->nslots = ns;
    return 0;
}

/* The id of s[0..n), or UINT32_MAX when it is not a known word. */
static uint32_t
lookup(const struct wrk_lm *lm, const char *s, size_t n)
{
    size_t j;

    if (lm->nslots == 0) {
        return UINT32_MAX;
    }
    j = hash(s, n) & (lm->nslots - 1);
    while (lm->slots[j]) {
        const char *w = lm->words[lm->slots[j] - 1];
        if (strlen(w) == n && memcmp(w, s, n) == 0) {
            return lm->slots[j] - 1;
        }
        j = (j + 1) & (lm->nslots - 1);
    }
    return UINT32_MAX;
}

/* The id of s[0..n), added if new; UINT32_MAX when out of memory. */
static uint32_t
intern(struct wrk_lm *lm, const char *s, size_t n)
{
    size_t j;
    uint32_t id = lookup(lm, s, n);

    if (id != UINT32_MAX) {
        return id;
    }
    if ((lm->nwords + 1) * 2 > lm->nslots && grow_table(lm) != 0) {
        return UINT32_MAX;
    }
    if (lm->nwords == lm->capwords) {
        size_t nc = lm->capwords ? lm->capwords * 2 : 1024;
        char **nw = realloc(lm->words, nc * sizeof(*nw));
        uint32_t *nu = realloc(lm->unigram, nc * sizeof(*nu));
        if (nw) {
            lm->words = nw;
        }
        if (nu) {
            lm->unigram = nu;
        }
        if (!nw || !nu) {
            return UINT32_MAX;
        }
        lm->capwords = nc;
    }
    char *copy = malloc(n + 1);
    if (!copy) {
        return UINT32_MAX;
    }
    memcpy(copy, s, n);
    copy[n] = '\0';
    lm->words[lm->nwords] = copy;
    lm->unigram[lm->nwords] = 0;
    j = hash(s, n) & (lm->nslots - 1);
    while (lm->slots[j]) {
        j = (j + 1) & (lm->nslots - 1);
    }
    lm->slots[j] = (uint32_t)lm->nwords + 1;
    return (uint32_t)lm->nwords++;
}

static int
cmp3(const void *x, const void *y)
{
    const struct gram3 *p = x, *q = y;

    if (p->a != q->a) {
        return p->a < q->a ? -1 : 1;
    }
    if (p->b != q->b) {
        return p->b < q->b ? -1 : 1;
    }
    return (p->c > q->c) - (p->c < q->c);
}

static int
cmp2(const void *x, const void *y)
{
    const struct gram2 *p = x, *q = y;

    if (p->b != q->b) {
        return p->b < q->b ? -1 : 1;
    }
    return (p->c > q->c) - (p->c < q->c);
}

/* (count, id) pairs, ordered by count descending, then id */
static int
cmp_freq(const void *x, const void *y)
{
    const uint32_t *p = x, *q = y;

    if (p[0] != q[0]) {
        return p[0] > q[0] ? -1 : 1;
    }
    return (p[1] > q[1]) - (p[1] < q[1]);
}

/* Markdown to prose: drops fenced code, tables and indented code, strips
 * heading marks, list bullets, emphasis and backticks. Returns a malloc'd
 * string (caller frees) and its length, or NULL. */
static char *
prose(const char *text, size_t len, size_t *out_len)
{
    char *out = malloc(len + 2); /* a last line without "\n" still gets its space */
    size_t o = 0;
    bool fence = false;

    if (!out) {
        return NULL;
    }
    for (size_t i = 0; i < len;) {
        const char *line = text + i;
        const char *nl = memchr(line, '\n', len - i);
        size_t n = nl ? (size_t)(nl - line) : len - i;
        i += n + (nl ? 1 : 0);
        if (n >= 3 && memcmp(line, "```", 3) == 0) {
            fence = !fence;
            continue;
        }
        if (fence || (n > 0 && line[0] == '|') ||
            (n >= 4 && memcmp(line, "    ", 4) == 0 && !(n > 4 && line[4] == '-'))) {
            continue;
        }
        size_t k = 0;
        while (k < n && (line[k] == '#' || line[k] == ' ' || line[k] == '>')) {
            k++;
        }
        if (k + 1 < n && (line[k] == '-' || line[k] == '*') && line[k + 1] == ' ') {
            k += 2;
        }
        if (k == n) {
            /* a blank line ends a paragraph: one newline token */
            if (o > 0 && out[o - 1] != '\n') {
                out[o++] = '\n';
            }
            continue;
        }
        for (; k < n; k++) {
            if (line[k] != '`' && line[k] != '*') {
                out[o++] = line[k];
            }
        }
        out[o++] = ' '; /* lines of a paragraph join with a space */
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

int
wrk_lm_train(const char *markdown, size_t mdlen, struct wrk_lm **out)
{
    size_t len = 0;
    char *text = prose(markdown, mdlen, &len);
    struct wrk_lm *lm = calloc(1, sizeof(*lm));
    size_t pos = 0, start, n, cap = 0, count = 0;
    uint32_t *ids = NULL;

    *out = NULL;
    if (!lm || !text || intern(lm, "", 0) != BOS) {
        goto fail;
    }
    while (next_token(text, len, &pos, &start, &n)) {
        uint32_t id = intern(lm, text + start, n);
        if (id == UINT32_MAX) {
            goto fail;
        }
        if (count == cap) {
            cap = cap ? cap * 2 : 4096;
            uint32_t *ni = realloc(ids, cap * sizeof(*ni));
            if (!ni) {
                goto fail;
            }
            ids = ni;
        }
        ids[count++] = id;
        lm->unigram[id]++;
    }
    if (count < 3) {
        goto fail;
    }
    lm->g3 = malloc(count * sizeof(*lm->g3));
    lm->g2 = malloc(count * sizeof(*lm->g2));
    lm->by_freq = malloc(lm->nwords * sizeof(*lm->by_freq));
    if (!lm->g3 || !lm->g2 || !lm->by_freq) {
        goto fail;
    }
    for (size_t i = 0; i < count; i++) {
        uint32_t a = i >= 2 ? ids[i - 2] : BOS, b = i >= 1 ? ids[i - 1] : BOS;
        lm->g3[i] = (struct gram3){a, b, ids[i], 1};
        lm->g2[i] = (struct gram2){b, ids[i], 1};
    }
    qsort(lm->g3, count, sizeof(*lm->g3), cmp3);
    qsort(lm->g2, count, sizeof(*lm->g2), cmp2);
    for (size_t i = 0; i < count; i++) {
        if (lm->n3 && cmp3(&lm->g3[lm->n3 - 1], &lm->g3[i]) == 0) {
            lm->g3[lm->n3 - 1].n++;
        } else {
            lm->g3[lm->n3++] = lm->g3[i];
        }
        if (lm->n2 && cmp2(&lm->g2[lm->n2 - 1], &lm->g2[i]) == 0) {
            lm->g2[lm->n2 - 1].n++;
        } else {
            lm->g2[lm->n2++] = lm->g2[i];
        }
    }
    free(ids);
    ids = malloc(lm->nwords * 2 * sizeof(*ids));
    if (!ids) {
        goto fail;
    }
    for (size_t i = 0; i < lm->nwords; i++) {
        ids[2 * i] = lm->unigram[i];
        ids[2 * i + 1] = (uint32_t)i;
    }
    qsort(ids, lm->nwords, 2 * sizeof(*ids), cmp_freq);
    for (size_t i = 0; i < lm->nwords; i++) {
        lm->by_freq[i] = ids[2 * i + 1];
    }
    free(ids);
    free(text);
    *out = lm;
    return 0;
fail:
    free(ids);
    free(text);
    wrk_lm_free(lm);
    return -1;
}

void
wrk_lm_free(struct wrk_lm *lm)
{
    if (!lm) {
        return;
    }
    for (size_t i = 0; i < lm->nwords; i++) {
        free(lm->words[i]);
    }
    free(lm->words);
    free(lm->unigram);
    free(lm->slots);
    free(lm->g3);
    free(lm->g2);
    free(lm->by_freq);
    free(lm);
}

size_t
wrk_lm_vocab(const struct wrk_lm *lm)
{
    return lm->nwords - 1; /* BOS is not a word */
}

size_t
wrk_lm_count_tokens(const char *text, size_t len)
{
    size_t pos = 0, start, n, count = 0;

    while (next_token(text, len, &pos, &start, &n)) {
        count++;
    }
    return count;
}

static uint64_t
splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void
wrk_gen_init(struct wrk_gen *g, const struct wrk_lm *lm, const char *prompt, size_t len,
             const struct wrk_gen_params *p)
{
    size_t pos = 0, start, n;

    memset(g, 0, sizeof(*g));
    g->lm = lm;
    g->params = *p;
    g->rng = p->seed ^ 0x5eedULL;
    g->a = g->b = BOS;
    while (next_token(prompt, len, &pos, &start, &n)) {
        uint32_t id = lookup(lm, prompt + start, n);
        g->a = g->b;
        g->b = id == UINT32_MAX ? BOS : id;
        g->prompt_tokens++;
    }
    g->prev_text[0] = '\n'; /* no space before the first token */
}

/* Candidates after the context: [*lo, *hi) of g3 or g2, or the unigrams. */
struct cands {
    const struct wrk_lm *lm;
    int kind; /* 3, 2 or 1 */
    size_t lo, hi;
};

static uint32_t
cand_id(const struct cands *c, size_t i)
{
    return c->kind == 3 ? c->lm->g3[i].c : c->kind == 2 ? c->lm->g2[i].c : c->lm->by_freq[i];
}

static uint32_t
cand_n(const struct cands *c, size_t i)
{
    return c->kind == 3   ? c->lm->g3[i].n
           : c->kind == 2 ? c->lm->g2[i].n
                          : c->lm->unigram[c->lm->by_freq[i]];
}

static void
find_cands(const struct wrk_lm *lm, uint32_t a, uint32_t b, struct cands *c)
{
    size_t lo = 0, hi = lm->n3;

    c->lm = lm;
    while (lo < hi) { /* first g3 with (a, b) >= key */
        size_t mid = lo + (hi - lo) / 2;
        if (lm->g3[mid].a < a || (lm->g3[mid].a == a && lm->g3[mid].b < b)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    c->lo = lo;
    while (lo < lm->n3 && lm->g3[lo].a == a && lm->g3[lo].b == b) {
        lo++;
    }
    if (lo > c->lo) {
        c->kind = 3;
        c->hi = lo;
        return;
    }
    lo = 0;
    hi = lm->n2;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (lm->g2[mid].b < b) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    c->lo = lo;
    while (lo < lm->n2 && lm->g2[lo].b == b) {
        lo++;
    }
    if (lo > c->lo && b != BOS) {
        c->kind = 2;
        c->hi = lo;
        return;
    }
    c->kind = 1; /* the 200 most frequent words */
    c->lo = 0;
    c->hi = lm->nwords < 200 ? lm->nwords : 200;
}

#define MAX_CANDS 4096

static uint32_t
sample(struct wrk_gen *g)
{
    static __thread uint32_t ids[MAX_CANDS];
    static __thread double w[MAX_CANDS];
    struct cands c;
    size_t n = 0;
    double total = 0;
    double t = g->params.temperature;

    find_cands(g->lm, g->a, g->b, &c);
    for (size_t i = c.lo; i < c.hi && n < MAX_CANDS; i++) {
        uint32_t id = cand_id(&c, i);
        uint32_t cnt = cand_n(&c, i);
        if (id == BOS || cnt == 0) {
            continue;
        }
        ids[n] = id;
        w[n] = (double)cnt;
        n++;
    }
    if (n == 0) {
        return BOS;
    }
    if (t <= 0) {
        size_t best = 0;
        for (size_t i = 1; i < n; i++) {
            if (w[i] > w[best] || (w[i] == w[best] && ids[i] < ids[best])) {
                best = i;
            }
        }
        return ids[best];
    }
    /* weights count^(1/t), sorted descending (insertion sort: n is small
     * for trigram and bigram contexts, at most 200 for unigrams) */
    for (size_t i = 0; i < n; i++) {
        w[i] = pow(w[i], 1.0 / t);
    }
    for (size_t i = 1; i < n; i++) {
        uint32_t id = ids[i];
        double x = w[i];
        size_t j = i;
        while (j > 0 && (w[j - 1] < x || (w[j - 1] == x && ids[j - 1] > id))) {
            w[j] = w[j - 1];
            ids[j] = ids[j - 1];
            j--;
        }
        w[j] = x;
        ids[j] = id;
    }
    for (size_t i = 0; i < n; i++) {
        total += w[i];
    }
    double top = g->params.top_p > 0 && g->params.top_p < 1 ? g->params.top_p * total : total;
    double kept = 0;
    size_t m = 0;
    while (m < n && (m == 0 || kept < top)) {
        kept += w[m++];
    }
    double r = (double)(splitmix(&g->rng) >> 11) * (1.0 / 9007199254740992.0) * kept;
    for (size_t i = 0; i < m; i++) {
        if (r < w[i]) {
            return ids[i];
        }
        r -= w[i];
    }
    return ids[m - 1];
}

static bool
no_space_before(const char *tok)
{
    return tok[0] && !tok[1] && strchr(".,;:!?)]}\n'%", tok[0]);
}

static bool
no_space_after(const char *prev)
{
    return prev[0] && !prev[1] && strchr("([{\n`'\"/", prev[0]);
}

const char *
wrk_gen_next(struct wrk_gen *g, char *buf, size_t cap)
{
    uint32_t id;
    const char *tok;

    if (g->completion_tokens >= g->params.max_tokens) {
        return NULL;
    }
    id = sample(g);
    if (id == BOS) {
        return NULL;
    }
    g->a = g->b;
    g->b = id;
    g->completion_tokens++;
    tok = g->lm->words[id];
    snprintf(buf, cap, "%s%s", no_space_before(tok) || no_space_after(g->prev_text) ? "" : " ",
             tok);
    snprintf(g->prev_text, sizeof(g->prev_text), "%s", tok);
    return buf;
}
