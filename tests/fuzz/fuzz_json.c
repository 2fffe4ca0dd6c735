/* SPDX-License-Identifier: MIT
 *
 * fuzz_json.c - common/json_check.c and common/json_write.c on arbitrary
 * bytes, as a request body arrives.
 *
 * Invariants checked:
 *   - json_parse succeeds only if json_check does, and then the bytes are
 *     valid UTF-8 without NUL;
 *   - a tree json_parse accepts prints (cJSON), and the printed text parses
 *     again and prints the same (round trip);
 *   - every string and key in the tree, written with jw_str, reads back as
 *     the same string (json_write's escaping is lossless).
 */
#include <string.h>

#include "buf.h"
#include "fuzz.h"
#include "json_check.h"
#include "json_write.h"

#define DEPTH 16

/* jw_str(s), then parse it back and compare. */
static void
check_string_roundtrip(const char *s)
{
    struct buf b;
    struct jw w;
    cJSON *back = NULL;
    char err[128];

    buf_init(&b, 1 << 20);
    jw_init(&w, &b);
    jw_str(&w, s);
    FUZZ_ASSERT(w.err == 0);
    FUZZ_ASSERT(json_parse(b.data, b.len, DEPTH, &back, err, sizeof(err)) == 0);
    FUZZ_ASSERT(cJSON_IsString(back));
    FUZZ_ASSERT(strcmp(back->valuestring, s) == 0);
    cJSON_Delete(back);
    buf_cleanup(&b);
}

static void
walk(const cJSON *node, int depth)
{
    for (; node; node = node->next) {
        FUZZ_ASSERT(depth <= DEPTH); /* DEPTH containers, then a scalar */
        if (node->string) {
            check_string_roundtrip(node->string);
        }
        if (cJSON_IsString(node)) {
            check_string_roundtrip(node->valuestring);
        }
        walk(node->child, depth + 1);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    cJSON *root = (cJSON *)1;
    cJSON *again = NULL;
    char *text = NULL;
    char *text2 = NULL;
    char err[128];
    int checked = json_check(p, size, DEPTH, err, sizeof(err));

    if (json_parse(p, size, DEPTH, &root, err, sizeof(err)) != 0) {
        FUZZ_ASSERT(root == NULL);
        FUZZ_ASSERT(err[0] != '\0');
        return 0;
    }
    FUZZ_ASSERT(root != NULL);
    FUZZ_ASSERT(checked == 0);
    FUZZ_ASSERT(json_utf8_valid(p, size));
    text = cJSON_PrintUnformatted(root);
    FUZZ_ASSERT(text != NULL);
    FUZZ_ASSERT(json_parse(text, strlen(text), DEPTH, &again, err, sizeof(err)) == 0);
    text2 = cJSON_PrintUnformatted(again);
    FUZZ_ASSERT(text2 != NULL);
    FUZZ_ASSERT(strcmp(text, text2) == 0);
    walk(root, 0);
    cJSON_free(text2);
    cJSON_free(text);
    cJSON_Delete(again);
    cJSON_Delete(root);
    return 0;
}
