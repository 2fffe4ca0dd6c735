/* SPDX-License-Identifier: MIT
 *
 * netaddr.h - lists of CIDR networks ("127.0.0.0/8,::1/128") and membership
 * tests, for trusted-network and registered-address policies.
 * IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) match as IPv4, and a mapped
 * entry in a list (prefix >= 96) is stored as the IPv4 network it names.
 *
 * Threads: a list is built once at start-up and then only read, so any
 * thread (event loops included) may test membership; no locks.
 */
#ifndef ROSTER_NETADDR_H
#define ROSTER_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct netaddr_cidr {
    int family;             /* AF_INET or AF_INET6 */
    unsigned char addr[16]; /* network byte order; 4 bytes used for IPv4 */
    int prefix;             /* prefix length in bits */
};

struct netaddr_list {
    size_t n;
    struct netaddr_cidr *items; /* owned */
};

/* Parses a comma-separated list of CIDRs or bare addresses (a bare address
 * is a /32 or /128). An empty string gives an empty list. Returns 0, or -1
 * with a reason in `err`. Free with netaddr_list_cleanup(). */
int netaddr_list_parse(const char *csv, struct netaddr_list *out, char *err, size_t errcap);
void netaddr_list_cleanup(struct netaddr_list *l);

bool netaddr_list_match(const struct netaddr_list *l, const struct sockaddr *sa);
/* Matches a numeric IP literal; returns false for anything that is not one. */
bool netaddr_list_match_str(const struct netaddr_list *l, const char *ip);
/* True when `s` is a numeric IPv4 or IPv6 literal (inet_pton accepts it). */
bool netaddr_is_ip_literal(const char *s);

/* Formats the address of `sa` (without port) into `out`. */
void netaddr_format(const struct sockaddr *sa, char *out, size_t cap);

#endif
