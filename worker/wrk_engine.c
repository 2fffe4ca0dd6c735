/* SPDX-License-Identifier: MIT
 *
 * wrk_engine.c - the exec backend's supervisor: a thread that runs the
 * engine (--engine_cmd) and tells the event loop whether it answers.
 *
 *   start --> probing (GET <upstream>/models every 200 ms) --answers--> up
 *     ^          | exits, or no answer within --engine_start_timeout_ms   |
 *     |          v                                                         |
 *     +-- backoff <----- exits, or three probes in a row fail ------------+
 *
 * Only "up" makes the worker's instances serving: the loop registers them
 * (wrk_registrar_set) when told the engine answers and deregisters them at
 * once when told it does not, so the registry never routes to an engine
 * that is down. Restarts wait 0.5 s, doubling to 30 s, back to 0.5 s once an
 * engine has stayed up for a minute.
 *
 * The engine runs under bash -c in a process group of its own, with the
 * default signal dispositions, no descriptor of the worker's beyond stdin,
 * stdout and stderr, and PR_SET_PDEATHSIG, so that it does not outlive a
 * worker killed with SIGKILL. bash (not dash) because bash replaces itself
 * with a single simple command ("VAR=1 vllm serve ..."), so the signal
 * reaches the engine itself rather than a shell. Stopping sends SIGTERM to
 * the group (a pipeline stops whole), then SIGKILL after
 * --engine_stop_timeout_ms.
 *
 * The thread blocks (probes, waits) and never touches the loop's state:
 * it posts a task to the loop for each change.
 */
#define _GNU_SOURCE 1
#include "wrk.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define LOG_MODULE "worker"
#include "http_client.h"
#include "log.h"
#include "util.h"

#define BACKOFF_MIN_MS   500
#define BACKOFF_MAX_MS   30000
#define STABLE_MS        60000 /* up this long: the next restart is quick again */
#define START_PROBE_MS   200
#define PROBE_FAILURES   3
#define REAP_INTERVAL_MS 100
#define MAX_PROBE_BODY   (1024 * 1024)

struct wrk_engine {
    struct wrk_server *srv;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;
    char probe_url[2048];
};

/* A change of the engine's state, for the loop thread. */
struct engine_note {
    struct http_task task; /* first */
    struct wrk_server *srv;
    bool up;
};

static void
apply_note(struct http_task *t)
{
    struct engine_note *n = (struct engine_note *)t;
    struct wrk_server *srv = n->srv;

    srv->engine_up = n->up;
    for (size_t i = 0; i < srv->nmodels; i++) {
        wrk_registrar_set(srv->registrar, i, wrk_serving(srv, i), srv->weight[i]);
    }
    free(n);
}

static void
notify(struct wrk_engine *e, bool up)
{
    struct engine_note *n = calloc(1, sizeof(*n));

    if (!n) {
        log_error("engine: out of memory; the registry may not reflect the engine's state");
        return;
    }
    n->task.fn = apply_note;
    n->srv = e->srv;
    n->up = up;
    http_loop_post(http_server_loop(e->srv->http, 0), &n->task);
}

/* Waits ms or until stopped; returns true when stopped. */
static bool
wait_ms(struct wrk_engine *e, int64_t ms)
{
    struct timespec ts;
    bool stop;

    util_deadline_us(ms * 1000, &ts);
    pthread_mutex_lock(&e->mu);
    while (!e->stop) {
        if (pthread_cond_timedwait(&e->cond, &e->mu, &ts) == ETIMEDOUT) {
            break;
        }
    }
    stop = e->stop;
    pthread_mutex_unlock(&e->mu);
    return stop;
}

static pid_t
spawn(const char *cmd)
{
    pid_t parent = getpid();
    long maxfd = sysconf(_SC_OPEN_MAX);
    sigset_t all, old;
    pid_t pid;

    /* No signal may be handled between fork and exec: the child still has
     * the worker's handlers (and libevent's signal pipe) until it resets
     * them. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = fork();
    if (pid == 0) {
        /* the child: async-signal-safe calls only, then exec */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof(dfl));
        dfl.sa_handler = SIG_DFL;
        for (int s = 1; s < NSIG; s++) {
            (void)sigaction(s, &dfl, NULL); /* ignored ones would stay ignored */
        }
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) {
            _exit(127); /* the worker died meanwhile */
        }
        if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0) {
            for (long fd = 3; fd < (maxfd > 0 && maxfd < 65536 ? maxfd : 65536); fd++) {
                close((int)fd); /* kernels before 5.9 */
            }
        }
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        execl("/bin/bash", "bash", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid > 0) {
        setpgid(pid, pid); /* the same as the child's own call, whichever runs first */
    }
    return pid;
}

static void
describe_exit(int status, char *out, size_t cap)
{
    if (WIFEXITED(status)) {
        snprintf(out, cap, "exit status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        snprintf(out, cap, "killed by signal %d", WTERMSIG(status));
    } else {
        snprintf(out, cap, "status %d", status);
    }
}

/* Stops the engine's process group: SIGTERM, then SIGKILL; never waits
 * more than KILL_WAIT_MS after SIGKILL (a process stuck in the kernel, in
 * a GPU driver say, is left to init). */
#define KILL_WAIT_MS 5000
static void
terminate(struct wrk_engine *e, pid_t pid, bool reaped)
{
    int64_t deadline = util_mono_ms() + e->srv->cfg->engine_stop_timeout_ms;
    bool killed = false;
    int status;

    kill(-pid, reaped ? SIGKILL : SIGTERM); /* reaped: whatever it left in its group */
    while (!reaped && waitpid(pid, &status, WNOHANG) == 0) {
        if (!killed && util_mono_ms() >= deadline) {
            log_warn("engine (pid %d) still running %lld ms after SIGTERM: SIGKILL", (int)pid,
                     (long long)e->srv->cfg->engine_stop_timeout_ms);
            kill(-pid, SIGKILL);
            killed = true;
            deadline = util_mono_ms() + KILL_WAIT_MS;
        } else if (killed && util_mono_ms() >= deadline) {
            log_error("engine (pid %d) survives SIGKILL; leaving it", (int)pid);
            return;
        }
        util_sleep_ms(20);
    }
    if (!reaped) {
        kill(-pid, SIGKILL); /* the rest of its group */
    }
}

static bool
probe(struct wrk_engine *e)
{
    const char *headers[] = {e->srv->auth_header, NULL};
    struct http_client_response resp;
    char err[256];
    bool ok;

    if (http_client_request("GET", e->probe_url, NULL, 0, headers,
                            (int)e->srv->cfg->control_timeout_ms, MAX_PROBE_BODY, &resp, err,
                            sizeof(err)) != 0) {
        log_debug("engine probe: %s", err);
        return false;
    }
    ok = resp.status == 200;
    if (!ok) {
        log_debug("engine probe: status %ld", resp.status);
    }
    http_client_response_cleanup(&resp);
    return ok;
}

/* Runs the engine once: until it exits, stops answering, or the worker
 * stops. Returns how long it was up (ms; 0: never answered). */
static int64_t
run_once(struct wrk_engine *e)
{
    const struct wrk_config *cfg = e->srv->cfg;
    int64_t start = util_mono_ms(), up_since = 0, next_probe = start + START_PROBE_MS;
    int fails = 0, status;
    bool reaped = false;
    pid_t pid = spawn(cfg->engine_cmd);
    char how[64];

    if (pid < 0) {
        log_error("engine: cannot start it: %s", strerror(errno));
        return 0;
    }
    atomic_store(&e->srv->engine_pid, (int)pid);
    char shown[sizeof(e->probe_url) + 16];
    log_info("engine started (pid %d); waiting for it to answer at %s", (int)pid,
             util_url_redact(e->probe_url, shown, sizeof(shown)));
    for (;;) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            describe_exit(status, how, sizeof(how));
            log_warn("engine (pid %d) exited: %s", (int)pid, how);
            reaped = true;
            break;
        }
        if (wait_ms(e, REAP_INTERVAL_MS)) {
            break;
        }
        int64_t now = util_mono_ms();
        if (now < next_probe) {
            continue;
        }
        if (probe(e)) {
            fails = 0;
            if (!up_since) {
                up_since = util_mono_ms();
                log_info("engine answers after %lld ms; registering",
                         (long long)(up_since - start));
                notify(e, true);
            }
        } else if (up_since && ++fails >= PROBE_FAILURES) {
            log_warn("engine (pid %d) failed %d probes in a row: restarting it", (int)pid, fails);
            break;
        } else if (!up_since && now - start > cfg->engine_start_timeout_ms) {
            log_warn("engine (pid %d) did not answer within %lld ms: restarting it", (int)pid,
                     (long long)cfg->engine_start_timeout_ms);
            break;
        }
        next_probe = util_mono_ms() + (up_since ? cfg->engine_probe_interval_ms : START_PROBE_MS);
    }
    if (up_since) {
        notify(e, false); /* out of the routable set before it is stopped */
    }
    terminate(e, pid, reaped);
    atomic_store(&e->srv->engine_pid, 0);
    return up_since ? util_mono_ms() - up_since : 0;
}

static void *
engine_main(void *arg)
{
    struct wrk_engine *e = arg;
    int64_t backoff = BACKOFF_MIN_MS;

    for (;;) {
        int64_t up_ms = run_once(e);
        if (wait_ms(e, 0)) {
            break;
        }
        backoff = up_ms >= STABLE_MS ? BACKOFF_MIN_MS : backoff;
        log_warn("engine: starting it again in %lld ms", (long long)backoff);
        if (wait_ms(e, backoff)) {
            break;
        }
        atomic_fetch_add(&e->srv->engine_restarts, 1);
        backoff = backoff * 2 < BACKOFF_MAX_MS ? backoff * 2 : BACKOFF_MAX_MS;
    }
    return NULL;
}

int
wrk_engine_start(struct wrk_server *srv)
{
    struct wrk_engine *e = calloc(1, sizeof(*e));

    if (!e) {
        return -1;
    }
    e->srv = srv;
    snprintf(e->probe_url, sizeof(e->probe_url), "%s/models", srv->cfg->upstream);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cond, NULL);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        pthread_cond_destroy(&e->cond);
        pthread_mutex_destroy(&e->mu);
        free(e);
        return -1;
    }
    srv->engine = e;
    return 0;
}

void
wrk_engine_stop(struct wrk_engine *e)
{
    if (!e) {
        return;
    }
    pthread_mutex_lock(&e->mu);
    e->stop = true;
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->thread, NULL);
    pthread_cond_destroy(&e->cond);
    pthread_mutex_destroy(&e->mu);
    free(e);
}
