/* SPDX-License-Identifier: MIT
 *
 * fuzz.h - shared by the fuzz targets: the libFuzzer entry point and an
 * assertion that aborts (libFuzzer and the replay runner both report an
 * abort as a crash, with the input that caused it).
 */
#ifndef ROSTER_FUZZ_H
#define ROSTER_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: FUZZ_ASSERT failed: %s\n", __FILE__, __LINE__, #cond);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
