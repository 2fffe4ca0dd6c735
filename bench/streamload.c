/* SPDX-License-Identifier: MIT
 *
 * streamload.c - the load generator of bench/scale_streams.sh: opens N
 * streamed requests (one per connection) to one HTTP server and holds them
 * until each ends, measuring every stream's time to first token and
 * counting its SSE events. One thread, one libevent loop, no allocation per
 * event: it stays small next to the servers it measures.
 *
 *   streamload PORT STREAMS BODY_FILE [options]
 *     -a N       spread the connections over N source addresses,
 *                127.0.0.2 .. 127.0.0.(N+1) (per-address caps; default 1:
 *                127.0.0.1)
 *     -r RATE    open at most RATE streams per second (default 20000)
 *     -p PID     sample PID's VmRSS once every stream has had its first
 *                token (repeatable, up to 4)
 *     -t SECS    give up on the run after SECS (default 60): the streams
 *                still open count as errors
 *
 * The RSS sample is taken once every stream has had its first token or
 * failed before it.
 *
 * Time to first token: from the moment the whole request has been written
 * to the first "data: " of the answer. A stream is good when its status is
 * 200, it ends with "data: [DONE]" and carries no error event ({"error":...}); anything
 * else (refused, reset, other status, cut short, timed out) is an error.
 *
 * Prints one line of key=value pairs on stdout:
 *   streams ok errors events elapsed_s ttfb_p50_ms ttfb_p99_ms ttfb_max_ms
 *   open_at_sample rss_kib_<PID>... cpu_s (this process's user+system)
 *   err_connect err_status err_closed err_event err_timeout (why streams
 *   failed) last_status (a non-200 status line seen, blanks as _) last_code
 *   (the "code" of its error body, when in the same read)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#define MAX_PIDS 4

enum st { S_IDLE, S_CONNECTING, S_WAITING, S_STREAMING, S_DONE };

struct conn {
    int fd;
    enum st st;
    struct event *ev;
    size_t sent;      /* request bytes written */
    double t_sent;    /* request written (s) */
    unsigned events;  /* "data: " seen */
    unsigned char md; /* match state of "data: " */
    unsigned char mx; /* match state of "[DONE]" */
    unsigned char me; /* match state of "{\"error\"" */
    unsigned char hl; /* status line bytes seen */
    char status[12];
    int ok;
};

static struct event_base *base;
static struct conn *conns;
static int nstreams, naddrs = 1, port;
static double rate = 20000;
static char *req;
static size_t reqlen;
static double *ttfb;
static int nttfb, started, finished, good, bad, first_tokens, settled;
/* why streams failed: connect, other status, closed early, error event, timed out */
enum why { W_CONNECT, W_STATUS, W_CLOSED, W_EVENT, W_TIMEOUT, W_N };
static const char *const why_names[W_N] = {"connect", "status", "closed", "event", "timeout"};
static int whys[W_N];
static char last_status[13];
static char last_code[64];
static long long total_events;
static pid_t pids[MAX_PIDS];
static int npids;
static long rss[MAX_PIDS];
static int open_at_sample = -1;
static double t0, t_end;
static struct event *opener, *deadline;

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long
vmrss_kib(pid_t pid)
{
    char path[64], line[256];
    long v = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            v = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* A stream has had its first token, or failed before it: once every
 * stream has, the servers' RSS is sampled (the streams open then are
 * open_at_sample). */
static void
settle(void)
{
    if (++settled == nstreams) {
        open_at_sample = started - finished;
        for (int i = 0; i < npids; i++)
            rss[i] = vmrss_kib(pids[i]);
    }
}

static void
first_token(struct conn *c)
{
    if (nttfb < nstreams)
        ttfb[nttfb++] = (now() - c->t_sent) * 1000.0;
    first_tokens++;
    settle();
}

static void
finish(struct conn *c, int ok, enum why why)
{
    if (c->st == S_DONE)
        return;
    if (!ok)
        whys[why < W_N ? why : W_CONNECT]++;
    bool unsettled = !ok && c->events == 0;
    if (c->ev)
        event_free(c->ev);
    c->ev = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->st = S_DONE;
    finished++;
    if (unsettled)
        settle(); /* after finished++: it is not open */
    if (ok)
        good++;
    else
        bad++;
    if (finished == nstreams) {
        t_end = now();
        event_base_loopexit(base, NULL);
    }
}

/* Advances a match state of `pat` by one byte (patterns whose first byte
 * does not occur again in them, so a mismatch restarts at 0 or 1). */
static unsigned char
step(unsigned char m, const char *pat, size_t plen, char ch)
{
    if (ch == pat[m])
        m++;
    else
        m = ch == pat[0] ? 1 : 0;
    return m == plen ? 0xff : m;
}

static void
on_read(struct conn *c)
{
    char buf[16384];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) { /* closed (or failed) before [DONE] */
            finish(c, 0, W_CLOSED);
            return;
        }
        for (ssize_t i = 0; i < n; i++) {
            char ch = buf[i];
            if (c->hl < sizeof c->status) {
                c->status[c->hl++] = ch;
                if (c->hl == sizeof c->status && memcmp(c->status + 8, " 200", 4) != 0) {
                    memcpy(last_status, c->status, sizeof c->status);
                    /* the error's code, for the report: the body's tail of this read */
                    const char *code = memmem(buf + i, (size_t)(n - i), "\"code\":\"", 8);
                    if (code) {
                        size_t k = 0;
                        for (code += 8; code < buf + n && *code != '"' && k + 1 < sizeof last_code;)
                            last_code[k++] = *code++;
                        last_code[k] = 0;
                    }
                    finish(c, 0, W_STATUS);
                    return;
                }
                continue;
            }
            c->md = step(c->md, "data: ", 6, ch);
            if (c->md == 0xff) {
                c->md = 0;
                if (c->events++ == 0)
                    first_token(c);
                total_events++;
                c->st = S_STREAMING;
            }
            c->me = step(c->me, "{\"error\"", 8, ch);
            if (c->me == 0xff) {
                finish(c, 0, W_EVENT);
                return;
            }
            c->mx = step(c->mx, "[DONE]", 6, ch);
            if (c->mx == 0xff) {
                finish(c, 1, W_N);
                return;
            }
        }
    }
}

static void
on_event(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    if (c->st == S_CONNECTING && (what & EV_WRITE)) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
            finish(c, 0, W_CONNECT);
            return;
        }
        while (c->sent < reqlen) {
            ssize_t n = write(c->fd, req + c->sent, reqlen - c->sent);
            if (n < 0 && errno == EAGAIN)
                return;
            if (n <= 0) {
                finish(c, 0, W_CONNECT);
                return;
            }
            c->sent += (size_t)n;
        }
        c->t_sent = now();
        c->st = S_WAITING;
        event_free(c->ev);
        c->ev = event_new(base, c->fd, EV_READ | EV_PERSIST, on_event, c);
        if (!c->ev || event_add(c->ev, NULL) < 0) {
            finish(c, 0, W_CONNECT);
            return;
        }
        return;
    }
    if (what & EV_READ)
        on_read(c);
}

static void
start_one(int i)
{
    struct conn *c = &conns[i];
    struct sockaddr_in src = {.sin_family = AF_INET};
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    dst.sin_addr.s_addr = htonl(0x7f000001);
    src.sin_addr.s_addr = htonl(naddrs > 1 ? 0x7f000002u + (uint32_t)(i % naddrs) : 0x7f000001u);
    started++;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        finish(c, 0, W_CONNECT);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(c->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* the kernel picks the port at connect time, per destination */
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0 ||
        (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS)) {
        finish(c, 0, W_CONNECT);
        return;
    }
    c->st = S_CONNECTING;
    c->ev = event_new(base, c->fd, EV_WRITE, on_event, c);
    if (!c->ev || event_add(c->ev, NULL) < 0)
        finish(c, 0, W_CONNECT);
}

/* Every millisecond: open the streams due by now at `rate`. */
static void
on_open_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    int due = (int)((now() - t0) * rate) + 1;
    if (due > nstreams)
        due = nstreams;
    while (started < due)
        start_one(started);
    if (started == nstreams)
        event_del(opener);
}

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    for (int i = 0; i < nstreams; i++)
        if (conns[i].st != S_DONE) {
            if (conns[i].st == S_IDLE) {
                started++;
                conns[i].ev = NULL;
                conns[i].fd = -1;
            }
            finish(&conns[i], 0, W_TIMEOUT);
        }
}

static int
cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
pct(double p)
{
    if (nttfb == 0)
        return 0;
    size_t k = (size_t)(p * (double)(nttfb - 1) + 0.5);
    return ttfb[k];
}

static int
usage(void)
{
    fprintf(stderr, "usage: streamload PORT STREAMS BODY_FILE [-a N] [-r RATE] [-p PID]... "
                    "[-t SECS]\n");
    return 2;
}

int
main(int argc, char **argv)
{
    int rc = 1;
    double secs = 60;
    if (argc < 4)
        return usage();
    port = (int)strtol(argv[1], NULL, 10);
    nstreams = (int)strtol(argv[2], NULL, 10);
    const char *body_file = argv[3];
    for (int i = 4; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-a") == 0)
            naddrs = (int)strtol(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "-r") == 0)
            rate = strtod(argv[i + 1], NULL);
        else if (strcmp(argv[i], "-t") == 0)
            secs = strtod(argv[i + 1], NULL);
        else if (strcmp(argv[i], "-p") == 0 && npids < MAX_PIDS)
            pids[npids++] = (pid_t)strtol(argv[i + 1], NULL, 10);
        else
            return usage();
    }
    if (port <= 0 || port > 65535 || nstreams <= 0 || naddrs < 1 || naddrs > 250 || rate <= 0)
        return usage();

    char body[65536];
    FILE *f = fopen(body_file, "r");
    if (!f) {
        perror(body_file);
        return 1;
    }
    size_t blen = fread(body, 1, sizeof body, f);
    fclose(f);
    while (blen > 0 && (body[blen - 1] == '\n' || body[blen - 1] == '\r'))
        blen--;
    size_t cap = blen + 256;
    req = malloc(cap);
    conns = calloc((size_t)nstreams, sizeof *conns);
    ttfb = calloc((size_t)nstreams, sizeof *ttfb);
    base = event_base_new();
    if (!req || !conns || !ttfb || !base) {
        fprintf(stderr, "streamload: out of memory\n");
        goto out;
    }
    int hl = snprintf(req, cap,
                      "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      port, blen);
    if (hl < 0 || (size_t)hl + blen > cap)
        goto out;
    memcpy(req + hl, body, blen);
    reqlen = (size_t)hl + blen;

    struct timeval ms = {0, 1000}, dl = {(time_t)secs, (suseconds_t)((secs - (time_t)secs) * 1e6)};
    opener = event_new(base, -1, EV_PERSIST, on_open_tick, NULL);
    deadline = evtimer_new(base, on_deadline, NULL);
    if (!opener || !deadline || event_add(opener, &ms) < 0 || evtimer_add(deadline, &dl) < 0)
        goto out;
    t0 = now();
    on_open_tick(-1, 0, NULL);
    if (event_base_dispatch(base) < 0)
        goto out;
    if (t_end == 0)
        t_end = now();

    qsort(ttfb, (size_t)nttfb, sizeof *ttfb, cmp);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    printf("streams=%d ok=%d errors=%d events=%lld elapsed_s=%.3f ttfb_p50_ms=%.3f "
           "ttfb_p99_ms=%.3f ttfb_max_ms=%.3f open_at_sample=%d",
           nstreams, good, bad, total_events, t_end - t0, pct(0.50), pct(0.99),
           nttfb ? ttfb[nttfb - 1] : 0.0, open_at_sample);
    for (int i = 0; i < npids; i++)
        printf(" rss_kib_%d=%ld", (int)pids[i], rss[i]);
    printf(" cpu_s=%.2f", cpu);
    for (int i = 0; i < W_N; i++)
        printf(" err_%s=%d", why_names[i], whys[i]);
    for (char *p = last_status; *p; p++)
        if (*p == ' ')
            *p = '_';
    printf(" last_status=%s last_code=%s\n", last_status[0] ? last_status : "-",
           last_code[0] ? last_code : "-");
    rc = 0;
out:
    if (conns)
        for (int i = 0; i < nstreams; i++) {
            if (conns[i].ev)
                event_free(conns[i].ev);
            if (conns[i].fd > 0)
                close(conns[i].fd);
        }
    if (opener)
        event_free(opener);
    if (deadline)
        event_free(deadline);
    if (base)
        event_base_free(base);
    free(conns);
    free(ttfb);
    free(req);
    return rc;
}
