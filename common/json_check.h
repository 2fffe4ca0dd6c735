/* SPDX-License-Identifier: MIT
 *
 * json_check.h - strict, bounded JSON intake on top of cJSON.
 *
 * cJSON accepts invalid UTF-8, truncates strings at \u0000, recurses up to
 * 1000 levels and lets duplicate keys through (the getter returns the
 * first). json_parse() closes those gaps: it pre-scans the raw bytes
 * (UTF-8, raw control characters in strings, \u0000, nesting depth), parses
 * with cJSON_ParseWithLengthOpts, rejects trailing garbage, and rejects
 * objects with duplicate keys. Pure functions; thread-safe as long as
 * cJSON_InitHooks is not called concurrently.
 */
#ifndef ROSTER_JSON_CHECK_H
#define ROSTER_JSON_CHECK_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

/* Scans `len` bytes. Returns 0 when the bytes are valid UTF-8, every string
 * is free of raw control characters and \u0000, every escape is one JSON
 * allows (cJSON reads "\u00zz" as U+0000), and nesting stays within
 * `max_depth`; otherwise -1 with a short reason in `err` (cap `errcap`). */
int json_check(const char *p, size_t len, int max_depth, char *err, size_t errcap);

/* True when `len` bytes are valid UTF-8 without NUL bytes. */
bool json_utf8_valid(const char *p, size_t len);

/* Checks and parses `len` bytes (no NUL terminator needed). On success
 * returns 0 and stores the tree in *out (caller frees with cJSON_Delete).
 * On failure returns -1, stores NULL and writes a reason to `err`. */
int json_parse(const char *p, size_t len, int max_depth, cJSON **out, char *err, size_t errcap);

/* Convenience accessors over cJSON_GetObjectItemCaseSensitive. Each returns
 * NULL when the key is missing or JSON null. */
const cJSON *json_get(const cJSON *obj, const char *key);

/* The human-readable message of an error answer body[0..len) (no NUL
 * needed): OpenAI's error.message, else FastAPI's "detail", else a
 * top-level "message", else the start of the body. Printable ASCII only
 * (anything else becomes a space), at most 300 bytes, always terminated. */
void json_error_message(const char *body, size_t len, char *out, size_t cap);

#endif
