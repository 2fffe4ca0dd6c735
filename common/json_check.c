/* SPDX-License-Identifier: MIT
 *
 * json_check.c - see json_check.h. The scanner is a small state machine over
 * the raw bytes; it does not validate JSON grammar (cJSON does), only the
 * properties cJSON lets through.
 */
#include "json_check.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Length of the UTF-8 sequence at p (1..4), or 0 if it is not valid
 * (overlong forms, surrogates and code points above U+10FFFF rejected). */
static size_t
utf8_seq(const unsigned char *p, size_t avail)
{
    unsigned char c = p[0];

    if (c < 0x80) {
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        return (avail >= 2 && (p[1] & 0xc0) == 0x80) ? 2 : 0;
    }
    if (c >= 0xe0 && c <= 0xef) {
        if (avail < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80) {
            return 0;
        }
        if (c == 0xe0 && p[1] < 0xa0) {
            return 0; /* overlong */
        }
        if (c == 0xed && p[1] >= 0xa0) {
            return 0; /* surrogate */
        }
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (avail < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80) {
            return 0;
        }
        if (c == 0xf0 && p[1] < 0x90) {
            return 0; /* overlong */
        }
        if (c == 0xf4 && p[1] >= 0x90) {
            return 0; /* above U+10FFFF */
        }
        return 4;
    }
    return 0;
}

bool
json_utf8_valid(const char *buf, size_t len)
{
    const unsigned char *p = (const unsigned char *)buf;

    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0 || p[i] == 0) {
            return false;
        }
        i += n;
    }
    return true;
}

/* The escape at p (p[0] is the backslash): its length (2, or 6 for \uXXXX),
 * 0 when the input ends inside it, -1 when it is not one JSON allows, -2
 * for \u0000. */
static long
escape_len(const unsigned char *p, size_t avail)
{
    unsigned v = 0;

    if (avail < 2) {
        return 0;
    }
    if (p[1] != 'u') {
        return p[1] != '\0' && strchr("\"\\/bfnrt", p[1]) ? 2 : -1;
    }
    for (size_t k = 2; k < 6; k++) {
        int h;
        if (k >= avail) {
            return 0;
        }
        h = util_hexval(p[k]);
        if (h < 0) {
            return -1;
        }
        v = v * 16 + (unsigned)h;
    }
    return v == 0 ? -2 : 6;
}

static int
fail(char *err, size_t cap, const char *msg, size_t at)
{
    if (err && cap) {
        snprintf(err, cap, "%s at byte %zu", msg, at);
    }
    return -1;
}

int
json_check(const char *buf, size_t len, int max_depth, char *err, size_t errcap)
{
    const unsigned char *p = (const unsigned char *)buf;
    bool in_string = false;
    int depth = 0;
    size_t i = 0;

    while (i < len) {
        unsigned char c = p[i];
        size_t n = utf8_seq(p + i, len - i);

        if (n == 0) {
            return fail(err, errcap, "invalid UTF-8", i);
        }
        if (c == 0) {
            return fail(err, errcap, "NUL byte", i);
        }
        if (in_string) {
            if (c < 0x20) {
                return fail(err, errcap, "control character in string", i);
            }
            if (c == '"') {
                in_string = false;
            } else if (c == '\\') {
                /* Checked here, not left to cJSON: it reads "\u00zz" as
                 * U+0000 (cutting the string short) and would let the byte
                 * after "\u00\" skip the UTF-8 check above. */
                long n_esc = escape_len(p + i, len - i);
                if (n_esc == 0) {
                    return fail(err, errcap, "truncated escape", i);
                }
                if (n_esc < 0) {
                    return fail(err, errcap,
                                n_esc == -2 ? "\\u0000 in string" : "bad escape in string", i);
                }
                i += (size_t)n_esc; /* "\"" must not end the string */
                continue;
            }
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max_depth) {
                return fail(err, errcap, "nesting too deep", i);
            }
        } else if (c == '}' || c == ']') {
            depth--;
        }
        i += n;
    }
    return 0;
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* True when the object `node` has two members with the same key. Small
 * objects are compared pairwise; large ones are sorted (O(n log n)) so a
 * body full of keys cannot make this quadratic. */
static bool
has_duplicate_key(const cJSON *node)
{
    const char **keys = NULL;
    size_t n = 0;
    size_t i = 0;
    bool dup = false;

    for (const cJSON *a = node->child; a; a = a->next) {
        n++;
    }
    if (n <= 32) {
        for (const cJSON *a = node->child; a; a = a->next) {
            for (const cJSON *b = a->next; b; b = b->next) {
                if (strcmp(a->string, b->string) == 0) {
                    return true;
                }
            }
        }
        return false;
    }
    keys = malloc(n * sizeof(*keys));
    if (!keys) {
        return true; /* fail closed */
    }
    for (const cJSON *a = node->child; a; a = a->next) {
        keys[i++] = a->string;
    }
    qsort(keys, n, sizeof(*keys), cmp_str);
    for (i = 1; i < n && !dup; i++) {
        dup = strcmp(keys[i - 1], keys[i]) == 0;
    }
    free(keys);
    return dup;
}

static int
check_duplicates(const cJSON *node)
{
    if (cJSON_IsObject(node) && has_duplicate_key(node)) {
        return -1;
    }
    for (const cJSON *a = node->child; a; a = a->next) {
        if (check_duplicates(a) != 0) {
            return -1;
        }
    }
    return 0;
}

int
json_parse(const char *p, size_t len, int max_depth, cJSON **out, char *err, size_t errcap)
{
    const char *end = NULL;
    cJSON *root = NULL;
    char *copy = NULL;
    int rc = -1;

    *out = NULL;
    if (len == 0) {
        return fail(err, errcap, "empty body", 0);
    }
    if (json_check(p, len, max_depth, err, errcap) != 0) {
        return -1;
    }
    /* cJSON reads one byte past a number at the very end (cJSON #800):
     * parse a NUL-terminated copy. */
    copy = malloc(len + 1);
    if (!copy) {
        return fail(err, errcap, "out of memory", 0);
    }
    memcpy(copy, p, len);
    copy[len] = '\0';
    root = cJSON_ParseWithLengthOpts(copy, len, &end, 0);
    if (!root) {
        fail(err, errcap, "malformed JSON", end && end >= copy ? (size_t)(end - copy) : 0);
        goto out;
    }
    for (; end && *end; end++) {
        if (!strchr(" \t\r\n", *end)) {
            fail(err, errcap, "trailing data after JSON", (size_t)(end - copy));
            goto out;
        }
    }
    if (check_duplicates(root) != 0) {
        fail(err, errcap, "duplicate key", 0);
        goto out;
    }
    *out = root;
    root = NULL;
    rc = 0;
out:
    cJSON_Delete(root);
    free(copy);
    return rc;
}

const cJSON *
json_get(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);

    return (it && !cJSON_IsNull(it)) ? it : NULL;
}

void
json_error_message(const char *body, size_t len, char *out, size_t cap)
{
    cJSON *root = NULL;
    char err[64];
    const char *msg = NULL;
    size_t avail = 0, n = 0;

    if (cap == 0) {
        return;
    }
    if (len && json_parse(body, len, 64, &root, err, sizeof(err)) == 0) {
        const cJSON *e = json_get(root, "error");
        const cJSON *m = cJSON_IsObject(e) ? json_get(e, "message") : e;
        if (!cJSON_IsString(m)) {
            m = json_get(root, "detail");
        }
        if (!cJSON_IsString(m)) {
            m = json_get(root, "message");
        }
        if (cJSON_IsString(m)) {
            msg = m->valuestring;
            avail = strlen(msg);
        }
    }
    if (!msg) {
        msg = len ? body : "no details";
        avail = len ? len : strlen(msg);
    }
    for (; n < avail && n + 1 < cap && n < 300; n++) {
        unsigned char c = (unsigned char)msg[n];
        out[n] = c >= 0x20 && c < 0x7f ? (char)c : ' ';
    }
    out[n] = '\0';
    cJSON_Delete(root);
}
