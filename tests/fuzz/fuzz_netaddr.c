/* SPDX-License-Identifier: MIT
 *
 * fuzz_netaddr.c - common/netaddr.c: a CIDR list from configuration
 * (--trusted_networks, --instance_networks), on a NUL-terminated copy of
 * the input.
 *
 * Invariants checked: on failure the list is empty; on success every entry
 * has a prefix within its family's width, IPv4-mapped entries were turned
 * into IPv4, and each network contains its own address (as a sockaddr and
 * as a string). The input is also tried as an IP literal against a fixed
 * list, which must agree with netaddr_is_ip_literal.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "fuzz.h"
#include "netaddr.h"

static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void
check_entry(const struct netaddr_list *l, const struct netaddr_cidr *c)
{
    char text[INET6_ADDRSTRLEN];

    FUZZ_ASSERT(c->family == AF_INET || c->family == AF_INET6);
    FUZZ_ASSERT(c->prefix >= 0 && c->prefix <= (c->family == AF_INET ? 32 : 128));
    if (c->family == AF_INET6) {
        FUZZ_ASSERT(c->prefix < 96 || memcmp(c->addr, v4mapped, 12) != 0);
    }
    FUZZ_ASSERT(inet_ntop(c->family, c->addr, text, sizeof(text)) != NULL);
    FUZZ_ASSERT(netaddr_is_ip_literal(text));
    if (c->family == AF_INET) {
        struct sockaddr_in sin;
        memset(&sin, 0, sizeof(sin));
        sin.sin_family = AF_INET;
        memcpy(&sin.sin_addr, c->addr, 4);
        FUZZ_ASSERT(netaddr_list_match(l, (const struct sockaddr *)&sin));
        FUZZ_ASSERT(netaddr_list_match_str(l, text));
    } else if (memcmp(c->addr, v4mapped, 12) != 0) {
        /* (an entry like ::ffff:0:0/80 holds mapped addresses, which
         * match as IPv4 and so not against it: nothing to check there) */
        struct sockaddr_in6 sin6;
        memset(&sin6, 0, sizeof(sin6));
        sin6.sin6_family = AF_INET6;
        memcpy(&sin6.sin6_addr, c->addr, 16);
        FUZZ_ASSERT(netaddr_list_match(l, (const struct sockaddr *)&sin6));
        FUZZ_ASSERT(netaddr_list_match_str(l, text));
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct netaddr_list fixed;
    static int fixed_ready;
    struct netaddr_list l;
    char err[256];
    char *s = malloc(size + 1);

    if (!s) {
        return 0;
    }
    memcpy(s, data, size);
    s[size] = '\0';
    if (!fixed_ready) {
        FUZZ_ASSERT(netaddr_list_parse("127.0.0.0/8,::1,10.0.0.0/8,fd00::/8", &fixed, err,
                                       sizeof(err)) == 0);
        fixed_ready = 1;
    }
    if (netaddr_list_parse(s, &l, err, sizeof(err)) != 0) {
        FUZZ_ASSERT(l.n == 0 && l.items == NULL);
    } else {
        for (size_t i = 0; i < l.n; i++) {
            check_entry(&l, &l.items[i]);
        }
        netaddr_list_cleanup(&l);
    }
    if (netaddr_list_match_str(&fixed, s)) {
        FUZZ_ASSERT(netaddr_is_ip_literal(s));
    }
    free(s);
    return 0;
}
