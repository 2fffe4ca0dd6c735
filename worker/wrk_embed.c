/* SPDX-License-Identifier: MIT
 *
 * wrk_embed.c - the builtin embedder.
 *
 * Feature hashing (the "hashing trick"): a text's features are its
 * lower-cased words (weight 1), adjacent word pairs (0.5) and the character
 * trigrams of each word padded with '#' (0.25). Each feature's 64-bit FNV-1a
 * hash picks a dimension (low bits) and a sign (top bit); the vector is the
 * sum, L2-normalised. Texts that share words and word pieces get a high
 * cosine similarity, so it is good enough to try retrieval out and to test
 * the plumbing, and it needs no model file. It is not a semantic model.
 *
 * Words are maximal runs of ASCII letters and digits and of bytes >= 0x80
 * (so UTF-8 text in any script forms words); only ASCII is lower-cased.
 */
#include "wrk.h"

#include <math.h>
#include <string.h>

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME  0x100000001b3ULL

static unsigned char
lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

static uint64_t
fnv_bytes(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= lower((unsigned char)p[i]);
        h *= FNV_PRIME;
    }
    return h;
}

static uint64_t
fnv_byte(uint64_t h, unsigned char c)
{
    h ^= c;
    return h * FNV_PRIME;
}

static void
add(float *out, size_t dim, uint64_t h, float w)
{
    /* final avalanche so that the low bits depend on every input byte */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    out[h % dim] += (h >> 63) ? -w : w;
}

/* Finds the next word at or after *pos; returns false at the end. */
static bool
next_word(const char *t, size_t len, size_t *pos, size_t *start, size_t *n)
{
    size_t i = *pos;

    while (i < len && !wrk_word_byte((unsigned char)t[i])) {
        i++;
    }
    if (i == len) {
        *pos = len;
        return false;
    }
    *start = i;
    while (i < len && wrk_word_byte((unsigned char)t[i])) {
        i++;
    }
    *n = i - *start;
    *pos = i;
    return true;
}

size_t
wrk_count_words(const char *text, size_t len)
{
    size_t pos = 0, start, n, count = 0;

    while (next_word(text, len, &pos, &start, &n)) {
        count++;
    }
    return count;
}

void
wrk_embed(const char *text, size_t len, float *out, size_t dim)
{
    size_t pos = 0, start, n;
    uint64_t prev = 0;
    bool have_prev = false;
    bool any = false;
    double norm = 0;

    memset(out, 0, dim * sizeof(*out));
    while (next_word(text, len, &pos, &start, &n)) {
        const char *w = text + start;
        uint64_t hw = fnv_bytes(FNV_OFFSET, w, n);

        any = true;
        add(out, dim, fnv_byte(hw, 'w'), 1.0f);
        if (have_prev) {
            add(out, dim, fnv_byte(fnv_bytes(prev, " ", 1) ^ hw, 'b'), 0.5f);
        }
        prev = hw;
        have_prev = true;
        /* trigrams of "#word#" */
        for (size_t k = 0; k + 3 <= n + 2; k++) {
            uint64_t h = FNV_OFFSET;
            for (size_t j = k; j < k + 3; j++) {
                unsigned char c = (j == 0 || j == n + 1) ? '#' : lower((unsigned char)w[j - 1]);
                h = fnv_byte(h, c);
            }
            add(out, dim, fnv_byte(h, 't'), 0.25f);
        }
    }
    if (!any) {
        add(out, dim, fnv_bytes(FNV_OFFSET, "<empty>", 7), 1.0f);
    }
    for (size_t i = 0; i < dim; i++) {
        norm += (double)out[i] * out[i];
    }
    if (norm == 0) {
        /* every feature cancelled out: fall back to the marker */
        add(out, dim, fnv_bytes(FNV_OFFSET, "<empty>", 7), 1.0f);
        norm = 1;
    }
    norm = sqrt(norm);
    for (size_t i = 0; i < dim; i++) {
        out[i] = (float)(out[i] / norm);
    }
}
