/* SPDX-License-Identifier: MIT
 *
 * netaddr.c - see netaddr.h.
 */
#include "netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static int
parse_one(const char *s, struct netaddr_cidr *c)
{
    char host[64];
    const char *slash = strchr(s, '/');
    size_t hlen = slash ? (size_t)(slash - s) : strlen(s);
    int64_t prefix;

    if (hlen == 0 || hlen >= sizeof(host)) {
        return -1;
    }
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    memset(c, 0, sizeof(*c));
    if (inet_pton(AF_INET, host, c->addr) == 1) {
        c->family = AF_INET;
        c->prefix = 32;
    } else if (inet_pton(AF_INET6, host, c->addr) == 1) {
        c->family = AF_INET6;
        c->prefix = 128;
    } else {
        return -1;
    }
    if (slash) {
        if (util_parse_i64(slash + 1, 0, c->prefix, &prefix) != 0) {
            return -1;
        }
        c->prefix = (int)prefix;
    }
    if (c->family == AF_INET6 && c->prefix >= 96 && memcmp(c->addr, v4mapped, 12) == 0) {
        /* "::ffff:10.0.0.1" means 10.0.0.1: peers are matched as IPv4 */
        memmove(c->addr, c->addr + 12, 4);
        memset(c->addr + 4, 0, 12);
        c->family = AF_INET;
        c->prefix -= 96;
    }
    return 0;
}

int
netaddr_list_parse(const char *csv, struct netaddr_list *out, char *err, size_t errcap)
{
    char *copy = NULL;
    char *save = NULL;
    size_t cap = 1;

    out->n = 0;
    out->items = NULL;
    for (const char *p = csv; *p; p++) {
        cap += *p == ',';
    }
    copy = strdup(csv);
    out->items = calloc(cap, sizeof(*out->items));
    if (!copy || !out->items) {
        free(copy);
        netaddr_list_cleanup(out);
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') {
            tok++;
        }
        size_t tl = strlen(tok);
        while (tl && tok[tl - 1] == ' ') {
            tok[--tl] = '\0';
        }
        if (!*tok) {
            continue;
        }
        if (parse_one(tok, &out->items[out->n]) != 0) {
            snprintf(err, errcap, "not an address or CIDR network: '%s'", tok);
            free(copy);
            netaddr_list_cleanup(out);
            return -1;
        }
        out->n++;
    }
    free(copy);
    return 0;
}

void
netaddr_list_cleanup(struct netaddr_list *l)
{
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static bool
prefix_match(const unsigned char *a, const unsigned char *net, int bits)
{
    int full = bits / 8;
    int rest = bits % 8;

    if (memcmp(a, net, (size_t)full) != 0) {
        return false;
    }
    if (rest) {
        unsigned char mask = (unsigned char)(0xff << (8 - rest));
        return (a[full] & mask) == (net[full] & mask);
    }
    return true;
}

static bool
match_raw(const struct netaddr_list *l, int family, const unsigned char *addr)
{
    if (family == AF_INET6 && memcmp(addr, v4mapped, 12) == 0) {
        family = AF_INET;
        addr += 12;
    }
    for (size_t i = 0; i < l->n; i++) {
        if (l->items[i].family == family &&
            prefix_match(addr, l->items[i].addr, l->items[i].prefix)) {
            return true;
        }
    }
    return false;
}

bool
netaddr_list_match(const struct netaddr_list *l, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        return match_raw(l, AF_INET, (const unsigned char *)&in->sin_addr);
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        return match_raw(l, AF_INET6, (const unsigned char *)&in6->sin6_addr);
    }
    return false;
}

bool
netaddr_list_match_str(const struct netaddr_list *l, const char *ip)
{
    unsigned char a[16];

    if (inet_pton(AF_INET, ip, a) == 1) {
        return match_raw(l, AF_INET, a);
    }
    if (inet_pton(AF_INET6, ip, a) == 1) {
        return match_raw(l, AF_INET6, a);
    }
    return false;
}

bool
netaddr_is_ip_literal(const char *s)
{
    unsigned char a[16];

    return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

void
netaddr_format(const struct sockaddr *sa, char *out, size_t cap)
{
    const void *src = NULL;

    if (sa->sa_family == AF_INET) {
        src = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    } else if (sa->sa_family == AF_INET6) {
        src = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    }
    if (!src || !inet_ntop(sa->sa_family, src, out, (socklen_t)cap)) {
        util_strlcpy(out, "?", cap);
    }
}
