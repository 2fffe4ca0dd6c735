/* SPDX-License-Identifier: MIT
 *
 * test_netaddr.c - common/netaddr.c: parsing CIDR lists (IPv4, IPv6, bare
 * addresses, /0 and full-length prefixes, what must be refused), matching
 * socket addresses and strings (IPv4-mapped IPv6 matches as IPv4), IP
 * literal detection and formatting.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "check.h"
#include "netaddr.h"

static struct sockaddr_in
sin4(const char *ip)
{
    struct sockaddr_in s;

    memset(&s, 0, sizeof(s));
    s.sin_family = AF_INET;
    s.sin_port = htons(80);
    inet_pton(AF_INET, ip, &s.sin_addr);
    return s;
}

static struct sockaddr_in6
sin6(const char *ip)
{
    struct sockaddr_in6 s;

    memset(&s, 0, sizeof(s));
    s.sin6_family = AF_INET6;
    s.sin6_port = htons(80);
    inet_pton(AF_INET6, ip, &s.sin6_addr);
    return s;
}

static bool
match4(const struct netaddr_list *l, const char *ip)
{
    struct sockaddr_in s = sin4(ip);

    return netaddr_list_match(l, (const struct sockaddr *)&s);
}

static bool
match6(const struct netaddr_list *l, const char *ip)
{
    struct sockaddr_in6 s = sin6(ip);

    return netaddr_list_match(l, (const struct sockaddr *)&s);
}

static void
test_parse_list(void)
{
    struct netaddr_list l;
    char err[128];

    CHECK_EQ_INT(netaddr_list_parse("127.0.0.0/8, ::1 ,10.1.2.3,fd00::/8", &l, err, sizeof(err)),
                 0);
    CHECK_EQ_INT(l.n, 4);
    CHECK_EQ_INT(l.items[0].family, AF_INET);
    CHECK_EQ_INT(l.items[0].prefix, 8);
    CHECK_EQ_INT(l.items[1].family, AF_INET6);
    CHECK_EQ_INT(l.items[1].prefix, 128); /* bare IPv6 */
    CHECK_EQ_INT(l.items[2].family, AF_INET);
    CHECK_EQ_INT(l.items[2].prefix, 32); /* bare IPv4 */
    CHECK_EQ_INT(l.items[3].prefix, 8);
    CHECK_EQ_INT(l.items[2].addr[3], 3);
    netaddr_list_cleanup(&l);
    CHECK(l.items == NULL);
    CHECK_EQ_INT(l.n, 0);
    netaddr_list_cleanup(&l); /* twice is fine */
}

static void
test_parse_empty(void)
{
    static const char *const empty[] = {"", ",", " , ,", "   "};
    struct netaddr_list l;
    char err[128];

    for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++) {
        CHECK_EQ_INT(netaddr_list_parse(empty[i], &l, err, sizeof(err)), 0);
        CHECK_EQ_INT(l.n, 0);
        CHECK(!match4(&l, "127.0.0.1"));
        CHECK(!netaddr_list_match_str(&l, "::1"));
        netaddr_list_cleanup(&l);
    }
}

static void
test_parse_prefixes(void)
{
    static const struct {
        const char *s;
        int family;
        int prefix;
    } ok[] = {
        {"0.0.0.0/0", AF_INET, 0},   {"10.0.0.0/32", AF_INET, 32},      {"::/0", AF_INET6, 0},
        {"::1/128", AF_INET6, 128},  {"10.0.0.0/007", AF_INET, 7},      {"fe80::/10", AF_INET6, 10},
        {"1.2.3.4/31", AF_INET, 31}, {"2001:db8::/127", AF_INET6, 127},
    };
    struct netaddr_list l;
    char err[128];

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        CHECK_EQ_INT(netaddr_list_parse(ok[i].s, &l, err, sizeof(err)), 0);
        CHECK_EQ_INT(l.n, 1);
        CHECK_EQ_INT(l.items[0].family, ok[i].family);
        CHECK_EQ_INT(l.items[0].prefix, ok[i].prefix);
        netaddr_list_cleanup(&l);
    }
}

static void
test_parse_bad(void)
{
    static const char *const bad[] = {
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/-1",
        "10.0.0.0/",
        "10.0.0.0/a",
        "10.0.0.0/8/8",
        "10.0.0.0/ 8",
        "10.0.0.0 /8",
        "10.0.0.0/8 x",
        "10.0.0",
        "256.0.0.1",
        "1.2.3.4.5",
        "localhost",
        "/8",
        "::g",
        "1:2:3:4:5:6:7:8:9",
        "10.0.0.1, bogus",
        "[::1]",
        "10.0.0.0/+8",
        "10.0.0.0/0x8",
        "0x7f.0.0.1",
        "127.1",
        "10.0.0.1\t",
        "::1%lo",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    };
    struct netaddr_list l;
    char err[128];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (netaddr_list_parse(bad[i], &l, err, sizeof(err)) != -1) {
            fprintf(stderr, "accepted '%s'\n", bad[i]);
            netaddr_list_cleanup(&l);
            CHECK(0);
        }
        CHECK(l.items == NULL);
        CHECK_EQ_INT(l.n, 0);
        CHECK(strstr(err, "not an address or CIDR network") != NULL);
    }
    CHECK_EQ_INT(netaddr_list_parse("1.2.3.4,nope", &l, err, sizeof(err)), -1);
    CHECK_EQ_STR(err, "not an address or CIDR network: 'nope'");
}

static void
test_match_v4(void)
{
    struct netaddr_list l;
    char err[128];

    CHECK_EQ_INT(netaddr_list_parse("127.0.0.0/8,10.1.0.0/16,192.168.1.7,172.16.0.0/12", &l, err,
                                    sizeof(err)),
                 0);
    CHECK(match4(&l, "127.0.0.1"));
    CHECK(match4(&l, "127.255.255.255"));
    CHECK(!match4(&l, "128.0.0.1"));
    CHECK(match4(&l, "10.1.200.3"));
    CHECK(!match4(&l, "10.2.0.1"));
    CHECK(match4(&l, "192.168.1.7"));
    CHECK(!match4(&l, "192.168.1.8"));
    CHECK(match4(&l, "172.31.255.255")); /* /12: a prefix that is not a byte boundary */
    CHECK(!match4(&l, "172.32.0.0"));
    CHECK(!match4(&l, "172.15.255.255"));
    CHECK(!match6(&l, "::1")); /* family must agree */
    netaddr_list_cleanup(&l);
}

static void
test_match_v6(void)
{
    struct netaddr_list l;
    char err[128];

    CHECK_EQ_INT(netaddr_list_parse("::1,fd00::/8,2001:db8:abcd::/49", &l, err, sizeof(err)), 0);
    CHECK(match6(&l, "::1"));
    CHECK(!match6(&l, "::2"));
    CHECK(match6(&l, "fd12:3456::1"));
    CHECK(!match6(&l, "fe00::1"));
    CHECK(match6(&l, "2001:db8:abcd:7fff::1"));
    CHECK(!match6(&l, "2001:db8:abcd:8000::1")); /* bit 49 set */
    CHECK(!match4(&l, "127.0.0.1"));
    netaddr_list_cleanup(&l);
}

static void
test_match_all_and_none(void)
{
    struct netaddr_list l;
    char err[128];

    CHECK_EQ_INT(netaddr_list_parse("0.0.0.0/0,::/0", &l, err, sizeof(err)), 0);
    CHECK(match4(&l, "1.2.3.4"));
    CHECK(match4(&l, "255.255.255.255"));
    CHECK(match6(&l, "2001:db8::1"));
    CHECK(match6(&l, "::ffff:8.8.8.8"));
    netaddr_list_cleanup(&l);

    CHECK_EQ_INT(netaddr_list_parse("", &l, err, sizeof(err)), 0);
    CHECK(!match4(&l, "1.2.3.4"));
    netaddr_list_cleanup(&l);
}

static void
test_match_v4_mapped(void)
{
    struct netaddr_list l;
    char err[128];

    /* a dual-stack socket sees IPv4 peers as ::ffff:a.b.c.d */
    CHECK_EQ_INT(netaddr_list_parse("127.0.0.0/8", &l, err, sizeof(err)), 0);
    CHECK(match6(&l, "::ffff:127.0.0.1"));
    CHECK(!match6(&l, "::ffff:128.0.0.1"));
    CHECK(netaddr_list_match_str(&l, "::ffff:127.0.0.9"));
    CHECK(!match6(&l, "::127.0.0.1")); /* IPv4-compatible is not mapped */
    CHECK(!match6(&l, "64:ff9b::127.0.0.1"));
    netaddr_list_cleanup(&l);

    /* and a mapped address written in the list means its IPv4 address */
    CHECK_EQ_INT(netaddr_list_parse("::ffff:10.0.0.1,::ffff:192.168.0.0/112", &l, err, sizeof(err)),
                 0);
    CHECK(match4(&l, "10.0.0.1"));
    CHECK(match6(&l, "::ffff:10.0.0.1"));
    CHECK(!match4(&l, "10.0.0.2"));
    CHECK(match4(&l, "192.168.44.1"));
    CHECK(!match4(&l, "192.169.0.1"));
    CHECK(netaddr_list_match_str(&l, "192.168.0.1"));
    netaddr_list_cleanup(&l);
}

static void
test_match_other_family(void)
{
    struct netaddr_list l;
    struct sockaddr sa;
    char err[128];

    CHECK_EQ_INT(netaddr_list_parse("0.0.0.0/0,::/0", &l, err, sizeof(err)), 0);
    memset(&sa, 0, sizeof(sa));
    sa.sa_family = AF_UNIX;
    CHECK(!netaddr_list_match(&l, &sa));
    netaddr_list_cleanup(&l);
}

static void
test_match_str(void)
{
    struct netaddr_list l;
    char err[128];

    CHECK_EQ_INT(netaddr_list_parse("10.0.0.0/8,::1", &l, err, sizeof(err)), 0);
    CHECK(netaddr_list_match_str(&l, "10.9.8.7"));
    CHECK(netaddr_list_match_str(&l, "::1"));
    CHECK(netaddr_list_match_str(&l, "0:0::1"));
    CHECK(!netaddr_list_match_str(&l, "11.0.0.1"));
    CHECK(!netaddr_list_match_str(&l, "10.0.0.1 "));
    CHECK(!netaddr_list_match_str(&l, " 10.0.0.1"));
    CHECK(!netaddr_list_match_str(&l, "10.0.0.1/8"));
    CHECK(!netaddr_list_match_str(&l, "localhost"));
    CHECK(!netaddr_list_match_str(&l, ""));
    CHECK(!netaddr_list_match_str(&l, "[::1]"));
    netaddr_list_cleanup(&l);
}

static void
test_is_ip_literal(void)
{
    CHECK(netaddr_is_ip_literal("127.0.0.1"));
    CHECK(netaddr_is_ip_literal("0.0.0.0"));
    CHECK(netaddr_is_ip_literal("::"));
    CHECK(netaddr_is_ip_literal("::1"));
    CHECK(netaddr_is_ip_literal("fe80::1:2"));
    CHECK(netaddr_is_ip_literal("::ffff:1.2.3.4"));
    CHECK(!netaddr_is_ip_literal(""));
    CHECK(!netaddr_is_ip_literal("localhost"));
    CHECK(!netaddr_is_ip_literal("127.1"));
    CHECK(!netaddr_is_ip_literal("1.2.3.4 "));
    CHECK(!netaddr_is_ip_literal("[::1]"));
    CHECK(!netaddr_is_ip_literal("fe80::1%eth0"));
    CHECK(!netaddr_is_ip_literal("1.2.3.256"));
    CHECK(!netaddr_is_ip_literal("1.2.3.4/32"));
}

static void
test_format(void)
{
    struct sockaddr_in a = sin4("192.0.2.33");
    struct sockaddr_in6 b = sin6("2001:db8::7");
    struct sockaddr other;
    char out[64];
    char tiny[4];

    netaddr_format((const struct sockaddr *)&a, out, sizeof(out));
    CHECK_EQ_STR(out, "192.0.2.33");
    netaddr_format((const struct sockaddr *)&b, out, sizeof(out));
    CHECK_EQ_STR(out, "2001:db8::7");
    memset(&other, 0, sizeof(other));
    other.sa_family = AF_UNIX;
    netaddr_format(&other, out, sizeof(out));
    CHECK_EQ_STR(out, "?");
    netaddr_format((const struct sockaddr *)&a, tiny, sizeof(tiny)); /* too small */
    CHECK_EQ_STR(tiny, "?");
}

int
main(void)
{
    CHECK_RUN(test_parse_list);
    CHECK_RUN(test_parse_empty);
    CHECK_RUN(test_parse_prefixes);
    CHECK_RUN(test_parse_bad);
    CHECK_RUN(test_match_v4);
    CHECK_RUN(test_match_v6);
    CHECK_RUN(test_match_all_and_none);
    CHECK_RUN(test_match_v4_mapped);
    CHECK_RUN(test_match_other_family);
    CHECK_RUN(test_match_str);
    CHECK_RUN(test_is_ip_literal);
    CHECK_RUN(test_format);
    return check_summary();
}
