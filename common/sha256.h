/* SPDX-License-Identifier: MIT
 *
 * sha256.h - SHA-256 (FIPS 180-4), for API keys stored as hashes. A key is
 * 256 random bits, so one unsalted hash is what is needed: nothing can be
 * guessed from it, and the apiserver looks a presented key up by its hash.
 * Pure; any thread.
 */
#ifndef ROSTER_SHA256_H
#define ROSTER_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32
#define SHA256_HEX (2 * SHA256_LEN + 1)

struct sha256 {
    uint32_t h[8];
    uint64_t len; /* bytes hashed */
    uint8_t buf[64];
    size_t nbuf;
};

void sha256_init(struct sha256 *c);
void sha256_update(struct sha256 *c, const void *data, size_t n);
void sha256_final(struct sha256 *c, uint8_t out[SHA256_LEN]);
/* The hash of `n` bytes as 64 lowercase hex digits and a NUL. */
void sha256_hex(const void *data, size_t n, char out[SHA256_HEX]);

#endif
