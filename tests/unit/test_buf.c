/* SPDX-License-Identifier: MIT
 *
 * test_buf.c - common/buf.c: the size cap (an append that would pass it
 * fails and leaves the buffer as it was), growth through printf, take,
 * reset, cleanup, and the NUL terminator that is always there.
 */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "check.h"

static void
test_init_empty(void)
{
    struct buf b;

    buf_init(&b, 16);
    CHECK(b.data == NULL);
    CHECK_EQ_INT(b.len, 0);
    CHECK_EQ_INT(b.max, 16);
    CHECK_EQ_STR(buf_str(&b), "");
    buf_cleanup(&b);
    buf_cleanup(&b); /* twice is fine */
    CHECK(b.data == NULL);
}

static void
test_append_to_cap(void)
{
    struct buf b;

    buf_init(&b, 8);
    CHECK_EQ_INT(buf_append(&b, "abcd", 4), 0);
    CHECK_EQ_INT(buf_append(&b, "efgh", 4), 0); /* exactly the cap */
    CHECK_EQ_INT(b.len, 8);
    CHECK_EQ_STR(buf_str(&b), "abcdefgh");
    CHECK(b.cap >= 9);                   /* room for the NUL */
    CHECK_EQ_INT(buf_putc(&b, 'x'), -1); /* one byte more */
    CHECK_EQ_INT(b.len, 8);
    CHECK_EQ_STR(buf_str(&b), "abcdefgh");
    CHECK_EQ_INT(buf_puts(&b, ""), 0); /* zero bytes always fit */
    CHECK_EQ_INT(buf_append(&b, NULL, 0), 0);
    CHECK_EQ_INT(b.len, 8);
    buf_cleanup(&b);
}

static void
test_append_over_cap_unchanged(void)
{
    struct buf b;

    buf_init(&b, 10);
    CHECK_EQ_INT(buf_puts(&b, "hello"), 0);
    CHECK_EQ_INT(buf_puts(&b, "world!"), -1); /* 11 > 10 */
    CHECK_EQ_INT(b.len, 5);
    CHECK_EQ_STR(buf_str(&b), "hello");
    CHECK_EQ_INT(buf_append(&b, "x", (size_t)-1), -1); /* size overflow */
    CHECK_EQ_INT(b.len, 5);
    CHECK_EQ_INT(buf_puts(&b, "world"), 0);
    CHECK_EQ_STR(buf_str(&b), "helloworld");
    buf_cleanup(&b);
}

static void
test_zero_cap(void)
{
    struct buf b;
    char *p;

    buf_init(&b, 0);
    CHECK_EQ_INT(buf_putc(&b, 'a'), -1);
    CHECK_EQ_INT(buf_append(&b, "", 0), 0);
    CHECK_EQ_STR(buf_str(&b), "");
    p = buf_take(&b);
    CHECK(p != NULL);
    CHECK_EQ_STR(p, "");
    free(p);
    buf_cleanup(&b);
}

static void
test_growth(void)
{
    struct buf b;
    char chunk[100];

    memset(chunk, 'z', sizeof(chunk));
    buf_init(&b, 100000);
    for (int i = 0; i < 1000; i++) {
        CHECK_EQ_INT(buf_append(&b, chunk, sizeof(chunk)), 0);
    }
    CHECK_EQ_INT(b.len, 100000);
    CHECK(b.cap == 100001); /* growth is clamped to max + 1 */
    CHECK_EQ_INT(b.data[b.len], '\0');
    CHECK_EQ_INT(buf_putc(&b, 'z'), -1);
    buf_cleanup(&b);
}

static void
test_printf(void)
{
    struct buf b;
    char big[300];

    buf_init(&b, 1000);
    CHECK_EQ_INT(buf_printf(&b, "%d-%s", 42, "x"), 0);
    CHECK_EQ_STR(buf_str(&b), "42-x");
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    /* past the first 64-byte allocation: printf must grow the storage */
    CHECK_EQ_INT(buf_printf(&b, "[%s]", big), 0);
    CHECK_EQ_INT(b.len, 4 + 2 + 299);
    CHECK_EQ_INT(b.data[4], '[');
    CHECK_EQ_INT(b.data[b.len - 1], ']');
    CHECK_EQ_INT(b.data[b.len], '\0');
    CHECK_EQ_INT(buf_printf(&b, "%s", ""), 0);
    CHECK_EQ_INT(b.len, 305);
    buf_cleanup(&b);
}

static void
test_printf_over_cap(void)
{
    struct buf b;

    buf_init(&b, 10);
    CHECK_EQ_INT(buf_printf(&b, "%s", "12345"), 0);
    CHECK_EQ_INT(buf_printf(&b, "%d", 123456), -1); /* 11 > 10 */
    CHECK_EQ_STR(buf_str(&b), "12345");
    CHECK_EQ_INT(buf_printf(&b, "%05d", 7), 0); /* exactly 10 */
    CHECK_EQ_STR(buf_str(&b), "1234500007");
    CHECK_EQ_INT(buf_printf(&b, "%s", ""), 0);
    CHECK_EQ_INT(buf_printf(&b, "%c", 'x'), -1);
    CHECK_EQ_STR(buf_str(&b), "1234500007");
    buf_cleanup(&b);
}

static void
test_take(void)
{
    struct buf b;
    char *p;

    buf_init(&b, 64);
    CHECK_EQ_INT(buf_puts(&b, "owned"), 0);
    p = buf_take(&b);
    CHECK(p != NULL);
    CHECK_EQ_STR(p, "owned");
    CHECK(b.data == NULL);
    CHECK_EQ_INT(b.len, 0);
    CHECK_EQ_INT(b.cap, 0);
    CHECK_EQ_INT(b.max, 64); /* the cap survives */
    free(p);
    /* the buf is usable again, and take on an untouched buf gives "" */
    p = buf_take(&b);
    CHECK(p != NULL);
    CHECK_EQ_STR(p, "");
    free(p);
    CHECK_EQ_INT(buf_puts(&b, "again"), 0);
    CHECK_EQ_STR(buf_str(&b), "again");
    buf_cleanup(&b);
}

static void
test_reset(void)
{
    struct buf b;
    char *storage;

    buf_init(&b, 32);
    buf_reset(&b); /* before any storage: harmless */
    CHECK_EQ_STR(buf_str(&b), "");
    CHECK_EQ_INT(buf_puts(&b, "0123456789"), 0);
    storage = b.data;
    buf_reset(&b);
    CHECK_EQ_INT(b.len, 0);
    CHECK_EQ_STR(buf_str(&b), "");
    CHECK(b.data == storage); /* storage kept */
    CHECK_EQ_INT(buf_puts(&b, "abc"), 0);
    CHECK_EQ_STR(buf_str(&b), "abc");
    buf_cleanup(&b);
    CHECK(b.data == NULL);
    CHECK_EQ_INT(b.len, 0);
    CHECK_EQ_STR(buf_str(&b), "");
}

static void
test_binary_and_nul(void)
{
    struct buf b;

    buf_init(&b, 16);
    CHECK_EQ_INT(buf_append(&b, "a\0b", 3), 0);
    CHECK_EQ_INT(b.len, 3);
    CHECK(memcmp(b.data, "a\0b\0", 4) == 0); /* terminated after the last byte */
    CHECK_EQ_INT(buf_putc(&b, '\0'), 0);
    CHECK_EQ_INT(b.len, 4);
    CHECK_EQ_INT(b.data[4], '\0');
    buf_cleanup(&b);
}

int
main(void)
{
    CHECK_RUN(test_init_empty);
    CHECK_RUN(test_append_to_cap);
    CHECK_RUN(test_append_over_cap_unchanged);
    CHECK_RUN(test_zero_cap);
    CHECK_RUN(test_growth);
    CHECK_RUN(test_printf);
    CHECK_RUN(test_printf_over_cap);
    CHECK_RUN(test_take);
    CHECK_RUN(test_reset);
    CHECK_RUN(test_binary_and_nul);
    return check_summary();
}
