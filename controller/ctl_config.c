/* SPDX-License-Identifier: MIT
 *
 * ctl_config.c - the controller's options: one table that parses argv and
 * the environment, prints --help and generates docs/configuration.md.
 * DB-GPT's flag names come first and keep DB-GPT's defaults.
 */
#include "ctl.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG_MODULE "controller"
#include "log.h"
#include "query.h"
#include "util.h"

/* lo > hi means "no range" */
/* clang-format 14 would put the stringized name on a line of its own */
// clang-format off
#define F(name, type, def, lo, hi, env, fl, meta, help) \
    {#name, type, offsetof(struct ctl_config, name), def, lo, hi, env, fl, meta, help}
// clang-format on

const struct flag_def ctl_flag_defs[] = {
    F(host, FLAG_STR, "0.0.0.0", 1, 0, NULL, 0, "ADDR",
      "Address to listen on (numeric IPv4 or IPv6)."),
    F(port, FLAG_INT, "8000", 0, 65535, NULL, 0, "PORT", "Port to listen on (0 = any free port)."),
    F(threads, FLAG_INT, "1", 1, 64, NULL, 0, "N", "HTTP event-loop threads."),
    F(port_file, FLAG_STR, NULL, 1, 0, NULL, 0, "PATH",
      "Write the bound port to PATH once listening (for tests and supervisors)."),
    F(registry_type, FLAG_ENUM, "database", 1, 0, NULL, 0, "database|embedded",
      "'database' (the table in --registry_db_type) or 'embedded' (an in-memory SQLite "
      "table: state is lost on exit)."),
    F(registry_db_url, FLAG_STR, NULL, 1, 0, NULL, 0, "URL",
      "The registry database as one URL, instead of --registry_db_type/host/port/user/name/"
      "socket: mysql://USER@HOST[:PORT][,HOST[:PORT]...]/DATABASE (also mariadb:// and "
      "SQLAlchemy's "
      "mysql+pymysql://; a Unix socket with ?unix_socket=PATH), sqlite:///relative.db, "
      "sqlite:////absolute/path.db or sqlite:///:memory:. Keep the password out of it: "
      "ROSTER_REGISTRY_DB_PASSWORD."),
    F(registry_db_type, FLAG_ENUM, "sqlite", 1, 0, NULL, 0, "sqlite|mysql|mariadb",
      "'sqlite' (one machine, the default) or 'mysql' (MySQL or MariaDB, shared by any "
      "number of controllers; 'mariadb' is the same)."),
    F(registry_db_name, FLAG_STR, "", 1, 0, NULL, 0, "NAME",
      "SQLite: the database file (default roster.db). MySQL: the database (default roster)."),
    F(registry_db_host, FLAG_STR, "127.0.0.1", 1, 0, NULL, 0, "HOST",
      "MySQL server host, or several comma-separated as HOST[:PORT],HOST[:PORT],... (the "
      "nodes of a Galera cluster; also in --registry_db_url): the controller keeps to the one "
      "that answers and moves to the next when it fails."),
    F(registry_db_port, FLAG_INT, "3306", 1, 65535, NULL, 0, "PORT", "MySQL server port."),
    F(registry_db_user, FLAG_STR, "root", 1, 0, NULL, 0, "USER", "MySQL user."),
    F(registry_db_password, FLAG_STR, "", 1, 0, "CONTROLLER_REGISTRY_DB_PASSWORD", FLAG_SECRET,
      "PASSWORD", "MySQL password (prefer the environment: argv is visible in ps)."),
    F(registry_db_socket, FLAG_STR, NULL, 1, 0, NULL, 0, "PATH",
      "MySQL Unix socket (instead of host and port)."),
    F(registry_db_connect_timeout_ms, FLAG_INT, "2000", 100, 60000, NULL, 0, "MS",
      "Database connect timeout."),
    F(registry_db_timeout_ms, FLAG_INT, "3000", 100, 60000, NULL, 0, "MS",
      "Database read/write timeout, lock-wait timeout, and the retry budget of one "
      "operation."),
    F(registry_db_sync_full, FLAG_BOOL, "false", 1, 0, NULL, 0, NULL,
      "SQLite: PRAGMA synchronous=FULL (survive power loss) instead of NORMAL."),
    F(heartbeat_interval_secs, FLAG_DOUBLE, "20", 0.1, 86400, NULL, 0, "SECS",
      "How often the sweep marks expired rows unhealthy in the table (for DB-GPT readers)."),
    F(heartbeat_timeout_secs, FLAG_DOUBLE, "60", 0.1, 86400, NULL, 0, "SECS",
      "Lease of instances that declare no heartbeat interval (DB-GPT workers). roster "
      "workers declare theirs and get 3 intervals."),
    F(registry_gc_secs, FLAG_INT, "86400", 0, 315360000, NULL, 0, "SECS",
      "Delete rows not heard from for this long (0 = never)."),
    F(view_refresh_ms, FLAG_INT, "5000", 50, 600000, NULL, 0, "MS",
      "Longest time between full re-reads of the table (heartbeat times and loads in the list, "
      "rows deleted elsewhere); sooner when a third of the shortest lease is shorter."),
    F(view_poll_ms, FLAG_INT, "200", 10, 60000, NULL, 0, "MS",
      "Poll for rows other controllers changed (registrations, deregistrations, admin)."),
    F(cluster_secret, FLAG_STR, NULL, 1, 0, NULL, FLAG_SECRET, "SECRET",
      "Shared secret required for writes (header X-Roster-Secret or Authorization: Bearer)."),
    F(trusted_networks, FLAG_STR, "127.0.0.0/8,::1", 1, 0, NULL, 0, "CIDRS",
      "Peers in these networks may write without the secret (DB-GPT workers send none). "
      "'0.0.0.0/0,::/0' opens writes to everyone."),
    F(protect_reads, FLAG_BOOL, "false", 1, 0, NULL, 0, NULL,
      "Require the secret (or a trusted network) for reads too."),
    F(instance_networks, FLAG_STR, "", 1, 0, NULL, 0, "CIDRS",
      "If set, registered hosts must be IP literals inside these networks (SSRF guard)."),
    F(max_instances, FLAG_INT, "100000", 1, 10000000, NULL, 0, "N",
      "Most instances the registry holds: a registration or heartbeat that would add a row "
      "beyond it gets 409 (the table's rows are counted, not only this controller's view)."),
    F(memory_budget_bytes, FLAG_INT, "536870912", 0, 1099511627776.0, NULL, 0, "BYTES",
      "Most bytes the list JSON documents may hold (cached, or pinned by responses still "
      "being sent); beyond it lists get 503 with Retry-After (0 = no limit)."),
    F(max_body_bytes, FLAG_INT, "65536", 1024, 16777216, NULL, 0, "BYTES",
      "Largest request body accepted (413 beyond)."),
    F(write_gather_us, FLAG_INT, "1000", 0, 100000, NULL, 0, "US",
      "Under load (the last commit held several writes), wait up to this long for more writes "
      "to join the next commit (0 = never wait)."),
    F(max_queue, FLAG_INT, "100000", 1, 10000000, NULL, 0, "N",
      "Writes waiting for the database before new ones get 503."),
    F(watch_max_secs, FLAG_INT, "60", 0, 3600, NULL, 0, "SECS",
      "Longest a watch (long-poll list with If-None-Match and wait=) is held."),
    F(max_watchers, FLAG_INT, "10000", 0, 1000000, NULL, 0, "N",
      "Most watches held at once; beyond it a watch is answered at once."),
    HTTP_LIMIT_FLAGS(struct ctl_config, http),
    F(shutdown_grace_ms, FLAG_INT, "10000", 0, 600000, NULL, 0, "MS",
      "On SIGTERM, time allowed for in-flight requests (a second signal stops at once)."),
    F(log_level, FLAG_ENUM, "info", 1, 0, NULL, 0, "error|warn|info|debug|trace",
      "The least severe messages logged."),
    F(access_log, FLAG_BOOL, "false", 1, 0, NULL, 0, NULL,
      "Log every request at info (default: writes at info, heartbeats and reads at debug)."),
    F(check, FLAG_BOOL, "false", 1, 0, NULL, FLAG_ARGV_ONLY, NULL, FLAG_CHECK_HELP),
    {0},
};

const char ctl_usage[] = "roster start controller [options]";
const char ctl_summary[] =
    "Runs a model controller: DB-GPT's controller API (/api/controller/*) over the registry "
    "table. Any number of controllers may share one MySQL table; none holds state of its own.";

void
ctl_config_cleanup(struct ctl_config *cfg)
{
    flags_cleanup(ctl_flag_defs, cfg);
}

/* Replaces a string option's value (the table owns it). */
static int
set_str(char **field, const char *v, char *err, size_t errcap)
{
    char *copy = strdup(v);

    if (!copy) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    free(*field);
    *field = copy;
    return 0;
}

static size_t
flag_index(const char *name)
{
    size_t i = 0;

    while (ctl_flag_defs[i].name && strcmp(ctl_flag_defs[i].name, name) != 0) {
        i++;
    }
    return i;
}

static enum flag_source
source_of(const enum flag_source *sources, const char *name)
{
    return sources ? sources[flag_index(name)] : FLAG_FROM_DEFAULT;
}

/* "--name", or for a value from the environment "--name (set in the
 * environment: ROSTER_NAME or ALIAS)", for messages. */
static void
describe_option(const char *name, enum flag_source src, char *out, size_t cap)
{
    const struct flag_def *d = &ctl_flag_defs[flag_index(name)];
    char env[96];
    size_t n = 0;

    if (src != FLAG_FROM_ENV || !d->name) {
        snprintf(out, cap, "--%s", name);
        return;
    }
    for (const char *p = name; *p && n + 1 < sizeof(env); p++) {
        env[n++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
    }
    env[n] = '\0';
    snprintf(out, cap, "--%s (set in the environment: ROSTER_%s%s%s)", name, env,
             d->env ? " or " : "", d->env ? d->env : "");
}

/* ---- --registry_db_url -------------------------------------------------------

   mysql://[USER[:PASSWORD]@]HOST[:PORT]/DATABASE[?unix_socket=PATH&charset=utf8mb4]
   (schemes mysql, mariadb, and either with a driver: mysql+pymysql, ...)
   sqlite:///relative/path.db   sqlite:////absolute/path.db   sqlite:///:memory:
   sqlite://   (SQLAlchemy's in-memory database)

   RFC 3986 splits the URL: the authority ends at the first '/', '?' or '#',
   and the user information at the authority's last '@'; so '@', '/', '?',
   '#' and ':' in a password must be percent-encoded (SQLAlchemy's rule as
   well). User, password, database and unix_socket are percent-decoded; an
   SQLite path is taken literally, as SQLAlchemy does. Messages never quote
   the URL: a misplaced part of it may be the password. */

#define URL_MAX 4096

struct db_url {
    bool mysql;
    bool has_user;
    bool has_password;
    int port;
    char user[256];
    char password[256];
    char host[256];
    char database[URL_MAX];
    char socket[URL_MAX];
};

/* The authority of the text after "://" ends at its first '/', '?' or '#'
 * (RFC 3986), the user information at the authority's last '@'. Returns
 * the authority's length; *at is that '@' or NULL. */
static size_t
split_authority(const char *rest, const char **at)
{
    size_t alen = strcspn(rest, "/?#");

    *at = NULL;
    for (size_t i = 0; i < alen; i++) {
        if (rest[i] == '@') {
            *at = rest + i;
        }
    }
    return alen;
}

/* Where the password is in `url`: returns its length (0 if it has none)
 * and its offset in *off. */
static size_t
url_password_span(const char *url, size_t *off)
{
    const char *sep = strstr(url, "://");
    const char *at = NULL;
    const char *colon;

    if (!sep) {
        return 0;
    }
    split_authority(sep + 3, &at);
    colon = at ? memchr(sep + 3, ':', (size_t)(at - (sep + 3))) : NULL;
    if (!colon) {
        return 0;
    }
    *off = (size_t)(colon + 1 - url);
    return (size_t)(at - colon - 1);
}

/* Percent-decodes s[0..n) into out. Returns 0, or -1 with a reason. */
static int
decode(const char *s, size_t n, char *out, size_t cap, const char *what, char *err, size_t errcap)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int hi = i + 2 < n ? util_hexval((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? util_hexval((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                snprintf(err, errcap, "--registry_db_url: bad percent-encoding in the %s", what);
                return -1;
            }
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
        }
        if (c < 0x20 || c == 0x7f) {
            snprintf(err, errcap, "--registry_db_url: a control character in the %s", what);
            return -1;
        }
        if (o + 1 >= cap) {
            snprintf(err, errcap, "--registry_db_url: the %s is too long", what);
            return -1;
        }
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

static bool
is_scheme_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '.' || c == '-' || c == '_';
}

static bool
is_plain_word(const char *s)
{
    size_t n = strlen(s);

    return n > 0 && n <= 32 &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == n;
}

/* The query of a MySQL URL: unix_socket=PATH, charset=utf8mb4|utf8|utf8mb3. */
static int
parse_url_query(const char *qs, struct db_url *u, char *err, size_t errcap)
{
    struct query q = {0};
    char qerr[128];
    int rc = -1;

    if (query_parse(qs, strlen(qs), &q, qerr, sizeof(qerr)) != 0) {
        snprintf(err, errcap, "--registry_db_url: %s", qerr);
        goto out;
    }
    for (size_t i = 0; i < q.n; i++) {
        const char *k = q.key[i];
        const char *v = q.value[i];
        if (strcmp(k, "unix_socket") == 0) {
            if (!*v || strlen(v) >= sizeof(u->socket)) {
                snprintf(err, errcap, "--registry_db_url: unix_socket needs a path");
                goto out;
            }
            util_strlcpy(u->socket, v, sizeof(u->socket));
        } else if (strcmp(k, "charset") == 0) {
            if (strcmp(v, "utf8mb4") != 0 && strcmp(v, "utf8") != 0 && strcmp(v, "utf8mb3") != 0) {
                snprintf(err, errcap,
                         "--registry_db_url: charset must be utf8mb4 (roster always uses it)");
                goto out;
            }
        } else {
            bool plain = is_plain_word(k);
            snprintf(err, errcap,
                     "--registry_db_url: unknown query parameter%s%s%s (roster reads unix_socket "
                     "and charset)",
                     plain ? " '" : "", plain ? k : "", plain ? "'" : "");
            goto out;
        }
    }
    rc = 0;
out:
    query_cleanup(&q);
    return rc;
}

/* HOST[:PORT] or [IPV6][:PORT]: the n bytes at p. */
static int
parse_host_port(const char *p, size_t n, struct db_url *u, char *err, size_t errcap)
{
    const char *port = NULL;
    const char *host = p;
    size_t hlen = n;
    int64_t v = 0;

    if (n && p[0] == '[') {
        const char *close = memchr(p, ']', n);
        if (!close) {
            snprintf(err, errcap, "--registry_db_url: an IPv6 host needs its closing ']'");
            return -1;
        }
        host = p + 1;
        hlen = (size_t)(close - host);
        if (close + 1 < p + n) {
            if (close[1] != ':') {
                snprintf(err, errcap, "--registry_db_url: unexpected text after the IPv6 host");
                return -1;
            }
            port = close + 2;
        }
    } else {
        const char *colon = memchr(p, ':', n);
        if (colon) {
            hlen = (size_t)(colon - p);
            port = colon + 1;
        }
    }
    if (hlen >= sizeof(u->host)) {
        snprintf(err, errcap, "--registry_db_url: the host is too long");
        return -1;
    }
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)host[i];
        if (c <= 0x20 || c == 0x7f || c == '%') {
            snprintf(err, errcap,
                     "--registry_db_url: the host has a space, a control character or a '%%' "
                     "in it");
            return -1;
        }
    }
    memcpy(u->host, host, hlen);
    u->host[hlen] = '\0';
    u->port = 3306;
    if (port) {
        char digits[8];
        size_t plen = (size_t)(p + n - port);
        if (plen == 0 || plen >= sizeof(digits) || strspn(port, "0123456789") < plen) {
            snprintf(err, errcap,
                     "--registry_db_url: the port must be a number in 1..65535 (leave out "
                     "':PORT' for 3306; an IPv6 host goes in brackets)");
            return -1;
        }
        memcpy(digits, port, plen);
        digits[plen] = '\0';
        if (util_parse_i64(digits, 1, 65535, &v) != 0) {
            snprintf(err, errcap, "--registry_db_url: the port must be a number in 1..65535");
            return -1;
        }
        u->port = (int)v;
    }
    return 0;
}

/* Several servers, HOST[:PORT],HOST[:PORT],... (a Galera cluster): each is
 * checked as above, and the list is kept as written for the registry,
 * which parses it again (registry.h, reg_config.mysql_host). */
static int
parse_host_list(const char *p, size_t n, struct db_url *u, char *err, size_t errcap)
{
    struct db_url one;
    size_t off = 0;

    if (n >= sizeof(u->host)) {
        snprintf(err, errcap, "--registry_db_url: the host list is too long");
        return -1;
    }
    while (off <= n) {
        const char *c = memchr(p + off, ',', n - off);
        size_t len = c ? (size_t)(c - (p + off)) : n - off;
        if (len == 0) {
            snprintf(err, errcap, "--registry_db_url: an empty host in the host list");
            return -1;
        }
        memset(&one, 0, sizeof(one));
        if (parse_host_port(p + off, len, &one, err, errcap) != 0) {
            return -1;
        }
        off += len + 1;
    }
    memcpy(u->host, p, n);
    u->host[n] = '\0';
    u->port = 3306;
    return 0;
}

#define NEED_DATABASE "--registry_db_url: no database name (mysql://USER@HOST:PORT/DATABASE)"

static int
parse_mysql_url(const char *rest, struct db_url *u, char *err, size_t errcap)
{
    const char *at = NULL;
    size_t alen = split_authority(rest, &at);
    const char *hp = rest;
    const char *path;
    const char *query;
    size_t dlen;

    u->mysql = true;
    if (at) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        size_t ulen = colon ? (size_t)(colon - rest) : (size_t)(at - rest);
        if (ulen == 0) {
            snprintf(err, errcap, "--registry_db_url: the user name before the '@' is empty");
            return -1;
        }
        if (decode(rest, ulen, u->user, sizeof(u->user), "user name", err, errcap) != 0) {
            return -1;
        }
        u->has_user = true;
        if (colon) {
            if (decode(colon + 1, (size_t)(at - colon - 1), u->password, sizeof(u->password),
                       "password", err, errcap) != 0) {
                return -1;
            }
            u->has_password = true;
        }
        hp = at + 1;
    }
    path = rest + alen;
    query = strchr(path, '?');
    dlen = query ? (size_t)(query - path) : strlen(path);
    if (memchr(path, '@', dlen)) {
        snprintf(err, errcap,
                 "--registry_db_url: an '@' after the host: percent-encode '@' (%%40), "
                 "'/' (%%2F), ':' (%%3A), '?' (%%3F) and '#' (%%23) in a password, or better, "
                 "give it in ROSTER_REGISTRY_DB_PASSWORD");
        return -1;
    }
    if (memchr(hp, ',', (size_t)(rest + alen - hp))) {
        if (parse_host_list(hp, (size_t)(rest + alen - hp), u, err, errcap) != 0) {
            return -1;
        }
    } else if (parse_host_port(hp, (size_t)(rest + alen - hp), u, err, errcap) != 0) {
        return -1;
    }
    if (*path != '/') {
        snprintf(err, errcap, NEED_DATABASE);
        return -1;
    }
    path++;
    dlen = query ? (size_t)(query - path) : strlen(path);
    if (dlen == 0) {
        snprintf(err, errcap, NEED_DATABASE);
        return -1;
    }
    if (memchr(path, '/', dlen)) {
        snprintf(err, errcap,
                 "--registry_db_url: a '/' in the database name (percent-encode a '/' in a "
                 "password as %%2F)");
        return -1;
    }
    if (decode(path, dlen, u->database, sizeof(u->database), "database name", err, errcap) != 0) {
        return -1;
    }
    if (query && parse_url_query(query + 1, u, err, errcap) != 0) {
        return -1;
    }
    if (!u->host[0] && !u->socket[0]) {
        snprintf(err, errcap,
                 "--registry_db_url: no host (mysql://USER@HOST:PORT/DATABASE, or "
                 "mysql://USER@localhost/DATABASE?unix_socket=PATH)");
        return -1;
    }
    return 0;
}

static int
parse_sqlite_url(const char *rest, struct db_url *u, char *err, size_t errcap)
{
    u->mysql = false;
    if (!*rest) {
        util_strlcpy(u->database, ":memory:", sizeof(u->database)); /* "sqlite://" */
        return 0;
    }
    if (*rest != '/') {
        snprintf(err, errcap,
                 "--registry_db_url: an SQLite URL has no host: sqlite:///relative.db, "
                 "sqlite:////absolute/path.db or sqlite:///:memory:");
        return -1;
    }
    rest++;
    if (strchr(rest, '?')) {
        snprintf(err, errcap, "--registry_db_url: an SQLite URL takes no query parameters");
        return -1;
    }
    if (!*rest) {
        snprintf(err, errcap,
                 "--registry_db_url: no file name (sqlite:///relative.db or "
                 "sqlite:////absolute/path.db)");
        return -1;
    }
    if (strlen(rest) >= sizeof(u->database)) {
        snprintf(err, errcap, "--registry_db_url: the file name is too long");
        return -1;
    }
    for (const char *p = rest; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            snprintf(err, errcap, "--registry_db_url: a control character in the file name");
            return -1;
        }
    }
    util_strlcpy(u->database, rest, sizeof(u->database));
    return 0;
}

#define NOT_A_URL                                                                                  \
    "--registry_db_url: not a URL (mysql://USER@HOST:PORT/DATABASE or sqlite:///file.db)"

static int
parse_url(const char *url, struct db_url *u, char *err, size_t errcap)
{
    const char *sep = strstr(url, "://");
    size_t slen = sep ? (size_t)(sep - url) : 0;
    char scheme[40];
    size_t base;

    memset(u, 0, sizeof(*u));
    if (strlen(url) >= URL_MAX) {
        snprintf(err, errcap, "--registry_db_url: longer than %d bytes", URL_MAX - 1);
        return -1;
    }
    if (slen == 0 || slen >= sizeof(scheme)) {
        snprintf(err, errcap, NOT_A_URL);
        return -1;
    }
    for (size_t i = 0; i < slen; i++) {
        if (!is_scheme_char(url[i])) {
            snprintf(err, errcap, NOT_A_URL);
            return -1;
        }
        scheme[i] = (char)(url[i] >= 'A' && url[i] <= 'Z' ? url[i] - 'A' + 'a' : url[i]);
    }
    scheme[slen] = '\0';
    if (strchr(url, '#')) {
        snprintf(err, errcap,
                 "--registry_db_url: '#' must be percent-encoded (%%23), in a password too");
        return -1;
    }
    base = strcspn(scheme, "+"); /* SQLAlchemy's dialect+driver */
    if ((base == 5 && strncmp(scheme, "mysql", 5) == 0) ||
        (base == 7 && strncmp(scheme, "mariadb", 7) == 0)) {
        return parse_mysql_url(sep + 3, u, err, errcap);
    }
    if (base == 6 && strncmp(scheme, "sqlite", 6) == 0) {
        return parse_sqlite_url(sep + 3, u, err, errcap);
    }
    snprintf(err, errcap,
             "--registry_db_url: unknown scheme '%s' (the registry is mysql://, mariadb:// or "
             "sqlite:///)",
             scheme);
    return -1;
}

/* Replaces the stored URL by a copy with its password as "***" (for logs),
 * wiping the original. */
static int
redact_url(char **url, char *err, size_t errcap)
{
    size_t off = 0;
    size_t len = url_password_span(*url, &off);
    size_t total = strlen(*url);
    char *out;

    if (len == 0) {
        return 0;
    }
    out = malloc(total - len + 4);
    if (!out) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    memcpy(out, *url, off);
    memcpy(out + off, "***", 3);
    memcpy(out + off + 3, *url + off + len, total - off - len + 1);
    memset(*url, 0, total);
    free(*url);
    *url = out;
    return 0;
}

/* Applies a parsed URL onto the separate options. */
static int
apply_url(struct ctl_config *cfg, const struct db_url *u, char *err, size_t errcap)
{
    if (set_str(&cfg->registry_type, "database", err, errcap) != 0 ||
        set_str(&cfg->registry_db_type, u->mysql ? "mysql" : "sqlite", err, errcap) != 0 ||
        set_str(&cfg->registry_db_name, u->database, err, errcap) != 0) {
        return -1;
    }
    if (!u->mysql) {
        return 0;
    }
    if ((u->host[0] && set_str(&cfg->registry_db_host, u->host, err, errcap) != 0) ||
        (u->has_user && set_str(&cfg->registry_db_user, u->user, err, errcap) != 0) ||
        (u->has_password && set_str(&cfg->registry_db_password, u->password, err, errcap) != 0) ||
        (u->socket[0] && set_str(&cfg->registry_db_socket, u->socket, err, errcap) != 0)) {
        return -1;
    }
    cfg->registry_db_port = u->port;
    return 0;
}

/* The options a URL replaces: giving one of them as well is an error. */
static const char *const url_replaces[] = {"registry_db_type", "registry_db_host",
                                           "registry_db_port", "registry_db_user",
                                           "registry_db_name", "registry_db_socket"};

/* The URL and the separate options it replaces are exclusive. */
static int
check_url_conflicts(const struct ctl_config *cfg, const enum flag_source *sources, char *err,
                    size_t errcap)
{
    char both[600] = "";
    char url_opt[160];
    size_t n = 0;

    for (size_t i = 0; i < sizeof(url_replaces) / sizeof(url_replaces[0]); i++) {
        enum flag_source src = source_of(sources, url_replaces[i]);
        char what[160];
        if (src == FLAG_FROM_DEFAULT) {
            continue;
        }
        describe_option(url_replaces[i], src, what, sizeof(what));
        if (n + strlen(what) + 3 < sizeof(both)) {
            n += (size_t)snprintf(both + n, sizeof(both) - n, "%s%s", n ? ", " : "", what);
        }
    }
    describe_option("registry_db_url", source_of(sources, "registry_db_url"), url_opt,
                    sizeof(url_opt));
    if (n) {
        snprintf(err, errcap,
                 "%s and %s both say which database to use: give the URL or the separate "
                 "--registry_db_* options, not both",
                 url_opt, both);
        return -1;
    }
    if (strcmp(cfg->registry_type, "embedded") == 0) {
        snprintf(err, errcap,
                 "%s names a database, but --registry_type is 'embedded' (an in-memory table): "
                 "drop one of them",
                 url_opt);
        return -1;
    }
    return 0;
}

static int
check_url(struct ctl_config *cfg, const enum flag_source *sources, char *err, size_t errcap)
{
    struct db_url *u = NULL;
    int rc = -1;

    if (check_url_conflicts(cfg, sources, err, errcap) != 0) {
        return -1;
    }
    u = malloc(sizeof(*u));
    if (!u) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    if (parse_url(cfg->registry_db_url, u, err, errcap) != 0) {
        goto out;
    }
    if (u->has_password && source_of(sources, "registry_db_password") != FLAG_FROM_DEFAULT) {
        char what[160];
        describe_option("registry_db_password", source_of(sources, "registry_db_password"), what,
                        sizeof(what));
        snprintf(err, errcap,
                 "--registry_db_url carries a password and %s gives one too: keep only the "
                 "environment variable",
                 what);
        goto out;
    }
    if (apply_url(cfg, u, err, errcap) != 0 ||
        redact_url(&cfg->registry_db_url, err, errcap) != 0) {
        goto out;
    }
    cfg->db_url_password_on_argv =
        u->has_password && source_of(sources, "registry_db_url") == FLAG_FROM_ARGV;
    rc = 0;
out:
    memset(u->password, 0, sizeof(u->password));
    free(u);
    return rc;
}

/* --registry_db_host takes a host name: a URL, a host:port or a path there
 * is a mistake worth naming (the value is not quoted: it may hold a
 * password). */
static int
check_host_and_name(const struct ctl_config *cfg, char *err, size_t errcap)
{
    const char *h = cfg->registry_db_host ? cfg->registry_db_host : "";
    const char *colon = strchr(h, ':');

    if (strstr(h, "://")) {
        snprintf(err, errcap,
                 "--registry_db_host takes a host name, not a URL: give the whole URL with "
                 "--registry_db_url (mysql://USER@HOST:PORT/DATABASE)");
        return -1;
    }
    if (!strchr(h, ',') && colon && colon[1] && !strchr(colon + 1, ':') &&
        strspn(colon + 1, "0123456789") == strlen(colon + 1)) {
        snprintf(err, errcap,
                 "--registry_db_host takes a host name without a port: put the port in "
                 "--registry_db_port");
        return -1;
    }
    if (strchr(h, '/')) {
        snprintf(err, errcap,
                 "--registry_db_host takes a host name, not a path: give a Unix socket with "
                 "--registry_db_socket");
        return -1;
    }
    if (cfg->registry_db_name && strstr(cfg->registry_db_name, "://")) {
        snprintf(err, errcap,
                 "--registry_db_name takes a database (MySQL) or file (SQLite) name, not a URL: "
                 "give the URL with --registry_db_url");
        return -1;
    }
    return 0;
}

int
ctl_config_check(struct ctl_config *cfg, const enum flag_source *sources, char *err, size_t errcap)
{
    cfg->db_url_password_on_argv = false;
    if (cfg->registry_db_type && strcmp(cfg->registry_db_type, "mariadb") == 0 &&
        set_str(&cfg->registry_db_type, "mysql", err, errcap) != 0) {
        return -1;
    }
    if (check_host_and_name(cfg, err, errcap) != 0) {
        return -1;
    }
    if (cfg->registry_db_url && *cfg->registry_db_url) {
        return check_url(cfg, sources, err, errcap);
    }
    return 0;
}

/* Overwrites the password of a --registry_db_url argument with 'x', so that
 * ps shows it only while the process starts (MySQL's client does the same
 * with -p). */
void
ctl_config_scrub_argv(int argc, char **argv)
{
    static const char *const prefixes[] = {"--registry_db_url=", "--registry-db-url="};

    for (int a = 0; a < argc; a++) {
        char *v = argv[a];
        size_t off = 0;
        size_t len;
        bool value = a > 0 && (strcmp(argv[a - 1], "--registry_db_url") == 0 ||
                               strcmp(argv[a - 1], "--registry-db-url") == 0);

        for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
            if (strncmp(v, prefixes[i], strlen(prefixes[i])) == 0) {
                v += strlen(prefixes[i]);
                value = true;
            }
        }
        if (value && (len = url_password_span(v, &off)) > 0) {
            memset(v + off, 'x', len);
        }
    }
}

int
ctl_config_load(struct ctl_config *cfg, int argc, char **argv)
{
    enum flag_source src[128];
    char err[768];
    int rc;

    if (flag_index("") > sizeof(src) / sizeof(src[0])) {
        fprintf(stderr, "roster: internal error: option table too long\n");
        return -1;
    }
    rc = flags_load_role(ctl_flag_defs, cfg, argc, argv, ctl_usage, ctl_summary,
                         offsetof(struct ctl_config, log_level), src);
    if (rc != 0) {
        return rc;
    }
    ctl_config_scrub_argv(argc, argv);
    if (ctl_config_check(cfg, src, err, sizeof(err)) != 0) {
        fprintf(stderr, "roster: %s\n", err);
        return -1;
    }
    if (cfg->db_url_password_on_argv) {
        log_warn("--registry_db_url on the command line carries a password, where other users "
                 "can read it; put the password in ROSTER_REGISTRY_DB_PASSWORD instead");
    }
    if (cfg->check) {
        printf("%s --check\noptions:\n", ctl_usage);
        flags_print_effective(stdout, ctl_flag_defs, cfg, src);
    }
    return 0;
}

void
ctl_config_registry(const struct ctl_config *cfg, struct reg_config *out)
{
    bool mysql =
        strcmp(cfg->registry_db_type, "mysql") == 0 && strcmp(cfg->registry_type, "embedded") != 0;
    const char *name = cfg->registry_db_name;

    memset(out, 0, sizeof(*out));
    out->backend = mysql ? REG_MYSQL : REG_SQLITE;
    if (strcmp(cfg->registry_type, "embedded") == 0) {
        out->sqlite_path = ":memory:";
    } else if (!mysql) {
        out->sqlite_path = *name ? name : "roster.db";
    }
    out->sqlite_synchronous_full = cfg->registry_db_sync_full;
    out->mysql_host = cfg->registry_db_host;
    out->mysql_port = (int)cfg->registry_db_port;
    out->mysql_socket = cfg->registry_db_socket;
    out->mysql_user = cfg->registry_db_user;
    out->mysql_password = cfg->registry_db_password;
    out->mysql_database = *name ? name : "roster";
    out->connect_timeout_ms = (int)cfg->registry_db_connect_timeout_ms;
    out->io_timeout_ms = (int)cfg->registry_db_timeout_ms;
    out->busy_ms = (int)cfg->registry_db_timeout_ms;
    out->retry_budget_ms = (int)cfg->registry_db_timeout_ms;
    out->default_lease_ms = (int64_t)(cfg->heartbeat_timeout_secs * 1000.0);
}
