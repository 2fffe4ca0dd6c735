/* SPDX-License-Identifier: MIT
 *
 * wrk_lm.h - the builtin language model (see wrk_lm.c): a trigram model
 * trained at start-up, with real sampling. For trying roster out and for
 * tests, not for real answers.
 *
 * Ownership: wrk_lm_train allocates the model, wrk_lm_free releases it; a
 * trained model is read-only and may be shared by any number of threads.
 * A struct wrk_gen is one generation's state, owned by its caller.
 */
#ifndef ROSTER_WRK_LM_H
#define ROSTER_WRK_LM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct wrk_lm;

struct wrk_gen_params {
    double temperature; /* 0 = always the most likely token */
    double top_p;       /* (0, 1]; 1 = no nucleus cut */
    uint64_t seed;      /* sampling is a function of the seed */
    int max_tokens;
};

struct wrk_gen {
    const struct wrk_lm *lm;
    struct wrk_gen_params params;
    uint64_t rng;
    uint32_t a, b; /* the context: the last two tokens */
    int prompt_tokens;
    int completion_tokens;
    char prev_text[64];
};

/* Trains on the Markdown text[0..len) (code blocks and tables are left
 * out). Returns 0, or -1 (out of memory, or fewer than three tokens). */
int wrk_lm_train(const char *markdown, size_t len, struct wrk_lm **out);
void wrk_lm_free(struct wrk_lm *lm);
size_t wrk_lm_vocab(const struct wrk_lm *lm);
/* Tokens in text[0..len), as the model splits them. */
size_t wrk_lm_count_tokens(const char *text, size_t len);

/* Starts a generation that continues `prompt`. */
void wrk_gen_init(struct wrk_gen *g, const struct wrk_lm *lm, const char *prompt, size_t len,
                  const struct wrk_gen_params *p);
/* The next token's text, with the space that goes before it, written into
 * buf (cap bytes); NULL when max_tokens are out or nothing can follow. */
const char *wrk_gen_next(struct wrk_gen *g, char *buf, size_t cap);

/* The training text embedded at build time (README.md and docs/). */
extern const char wrk_lm_corpus[];

#endif
