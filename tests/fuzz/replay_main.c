/* SPDX-License-Identifier: MIT
 *
 * replay_main.c - a main() for the fuzz targets without libFuzzer: runs
 * LLVMFuzzerTestOneInput once over every file named on the command line or
 * found (not recursively) in a directory named there, in name order. Each
 * input is copied into a heap block of exactly its size, so a sanitizer
 * sees any read past its end. This is how every corpus runs as a ctest
 * test (label `fuzz`) in ordinary and sanitizer builds.
 *
 * Exit status: 0 when every input ran (a failing input aborts), 1 on a
 * usage or I/O error, or when no input at all was found (a corpus that
 * went missing must not pass silently).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int
run_file(const char *path)
{
    FILE *f = NULL;
    unsigned char *data = NULL;
    long size;
    int rc = -1;

    f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        goto out;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "replay: %s: cannot size the file\n", path);
        goto out;
    }
    data = malloc(size ? (size_t)size : 1);
    if (!data) {
        fprintf(stderr, "replay: %s: out of memory\n", path);
        goto out;
    }
    if (size && fread(data, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "replay: %s: short read\n", path);
        goto out;
    }
    LLVMFuzzerTestOneInput(data, (size_t)size);
    rc = 0;
out:
    free(data);
    if (f) {
        fclose(f);
    }
    return rc;
}

static int
cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Runs every regular file in `dir`. Returns the count, or -1. */
static long
run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0;
    size_t cap = 0;
    long done = -1;

    if (!d) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        char path[4096];
        struct stat st;
        char *copy;

        if (e->d_name[0] == '.') {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            continue;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **p = realloc(names, ncap * sizeof(*names));
            if (!p) {
                goto out;
            }
            names = p;
            cap = ncap;
        }
        copy = strdup(path);
        if (!copy) {
            goto out;
        }
        names[n++] = copy;
    }
    qsort(names, n, sizeof(*names), cmp_names);
    for (size_t i = 0; i < n; i++) {
        if (run_file(names[i]) != 0) {
            goto out;
        }
    }
    done = (long)n;
out:
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
    closedir(d);
    return done;
}

int
main(int argc, char **argv)
{
    long total = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR_OR_FILE...\n", argv[0]);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;

        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        if (S_ISDIR(st.st_mode)) {
            long n = run_dir(argv[i]);
            if (n < 0) {
                return 1;
            }
            total += n;
        } else {
            if (run_file(argv[i]) != 0) {
                return 1;
            }
            total++;
        }
    }
    fprintf(stderr, "replay: %ld inputs ran\n", total);
    return total > 0 ? 0 : 1;
}
