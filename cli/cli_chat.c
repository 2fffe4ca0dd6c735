/* SPDX-License-Identifier: MIT
 *
 * cli_chat.c - `roster model chat`: a streamed conversation with an llm in
 * the terminal (DB-GPT's `dbgpt model chat`).
 *
 * Where requests go: with --api_base, POST <api_base>/chat/completions (an
 * apiserver's or a webserver's OpenAI base URL, --api_key as a Bearer
 * token); otherwise, each turn, the routable instances of name@llm are
 * asked of the controllers (healthy_only=true&view=full), one is picked at
 * random by weight, and the reply streams from its /v1/chat/completions (an
 * instance that refuses the connection is left for another).
 *
 * Every request carries the whole conversation (the --system prompt first,
 * then the user's and the model's turns), "stream": true, and --temperature
 * and --max_tokens when set. The SSE answer is parsed as it arrives, line
 * by line in a bounded buffer: each delta is printed at once, an error
 * event is shown, a stream that ends without [DONE] or a finish_reason is
 * an error. A failed turn is forgotten (the next request does not carry
 * it); a reply stopped with Ctrl-C is kept as far as it went.
 *
 * Input: on a terminal, a prompt; /exit, Ctrl-D or Ctrl-C at the prompt
 * leave, /clear or /reset start over (the --system prompt stays). Ctrl-C
 * during a reply stops only that reply: SIGINT sets a flag and libcurl's
 * progress callback, called at least once a second, aborts the transfer.
 * Waiting for input, SIGINT is blocked except inside pselect(), so a Ctrl-C
 * just before the wait is not lost. With stdin not a terminal each input
 * line is one message, no prompt is printed, the replies are, and the
 * command exits at the end of the input (status 69 if a turn failed).
 *
 * Bounds: an input line (MAX_LINE), an SSE line (MAX_SSE_LINE), a reply
 * (MAX_REPLY), an error body (MAX_ERROR_BODY), and the request: past
 * MAX_REQUEST the oldest turns are dropped from it.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/select.h>
#include <sysexits.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "buf.h"
#include "cli.h"
#include "json_check.h"
#include "sse.h"
#include "util.h"

#define MAX_LINE       (1024u * 1024)
#define MAX_SSE_LINE   (1024u * 1024)
#define MAX_REPLY      (8u * 1024 * 1024)
#define MAX_ERROR_BODY (64u * 1024)
#define MAX_REQUEST    (16u * 1024 * 1024)
#define MAX_JSON_DEPTH 64

static volatile sig_atomic_t interrupted;

static void
on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

struct chat {
    const struct cli_model_opts *o;
    char model[256]; /* the name sent in requests: no "@llm" */
    char full[300];  /* name@llm */
    bool tty;        /* stdin is a terminal */
    cJSON *history;  /* [{role, content}], the system prompt first */
    char *auth;      /* "Authorization: Bearer <key>" for --api_base, or NULL */
    char *input;     /* MAX_LINE + 1 bytes: input not yet consumed */
    size_t input_len;
    bool input_eof;
    bool skipping; /* the rest of an over-long line is being dropped */
};

/* ---- input --------------------------------------------------------------------- */

enum { LINE_OK = 1, LINE_EOF = 0, LINE_INTERRUPTED = -1, LINE_TOO_LONG = -2, LINE_ERROR = -3 };

/* Waits until stdin is readable or SIGINT arrives, without the race of a
 * signal that lands just before the wait. Returns 0 (readable), or
 * LINE_INTERRUPTED. */
static int
wait_input(void)
{
    sigset_t block, old;
    int rc = 0;

    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &old);
    for (;;) {
        fd_set in;
        if (interrupted) {
            rc = LINE_INTERRUPTED;
            break;
        }
        FD_ZERO(&in);
        FD_SET(0, &in);
        if (pselect(1, &in, NULL, NULL, NULL, &old) >= 0 || errno != EINTR) {
            break;
        }
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* The next input line, without its newline, NUL-terminated in out (cap
 * MAX_LINE + 1). Returns LINE_OK, LINE_EOF, LINE_INTERRUPTED, LINE_TOO_LONG
 * (the line was dropped) or LINE_ERROR. */
static int
read_line(struct chat *c, char *out)
{
    for (;;) {
        char *nl = c->input_len ? memchr(c->input, '\n', c->input_len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - c->input);
            bool skipped = c->skipping;
            if (!skipped) {
                memcpy(out, c->input, n);
                out[n] = '\0';
            }
            memmove(c->input, nl + 1, c->input_len - n - 1);
            c->input_len -= n + 1;
            c->skipping = false;
            if (skipped) {
                continue; /* the end of a line already reported as too long */
            }
            return LINE_OK;
        }
        if (c->input_len == MAX_LINE) {
            c->input_len = 0;
            if (!c->skipping) {
                c->skipping = true;
                return LINE_TOO_LONG;
            }
        }
        if (c->input_eof) {
            if (c->input_len && !c->skipping) {
                memcpy(out, c->input, c->input_len);
                out[c->input_len] = '\0';
                c->input_len = 0;
                return LINE_OK;
            }
            return LINE_EOF;
        }
        if (wait_input() != 0) {
            return LINE_INTERRUPTED;
        }
        ssize_t n = read(0, c->input + c->input_len, MAX_LINE - c->input_len);
        if (n > 0) {
            c->input_len += (size_t)n;
        } else if (n == 0) {
            c->input_eof = true;
        } else if (errno != EINTR && errno != EAGAIN) {
            return LINE_ERROR;
        }
    }
}

/* ---- one streamed request -------------------------------------------------------- */

struct reply {
    CURL *easy;
    const struct cli_model_opts *o;
    long status; /* 0 until the first byte */
    bool sse;    /* text/event-stream */
    bool done;   /* [DONE] or a finish_reason seen */
    struct sse_splitter line;
    struct buf text;
    struct buf body; /* an error answer, or a whole (non-streamed) answer */
    char error[512];
    int64_t last_rx_ms;
    bool idle;
};

static void
emit(const char *p, size_t n)
{
    fwrite(p, 1, n, stdout);
    fflush(stdout);
}

/* One `data:` payload of the stream. Returns 0, or -1 with r->error. */
static int
sse_data(struct reply *r, const char *p, size_t n)
{
    cJSON *root = NULL;
    char err[128];
    const cJSON *choices, *c, *delta, *content, *fin;

    if (sse_data_is_done(p, n)) {
        r->done = true;
        return 0;
    }
    if (json_parse(p, n, MAX_JSON_DEPTH, &root, err, sizeof(err)) != 0) {
        snprintf(r->error, sizeof(r->error), "an event of the stream is not JSON: %s", err);
        return -1;
    }
    if (json_get(root, "error")) {
        char msg[320];
        json_error_message(p, n, msg, sizeof(msg));
        snprintf(r->error, sizeof(r->error), "the server reported an error mid-stream: %s", msg);
        cJSON_Delete(root);
        return -1;
    }
    choices = json_get(root, "choices");
    c = cJSON_IsArray(choices) ? choices->child : NULL;
    delta = cJSON_IsObject(c) ? json_get(c, "delta") : NULL;
    content = cJSON_IsObject(delta) ? json_get(delta, "content") : NULL;
    fin = cJSON_IsObject(c) ? json_get(c, "finish_reason") : NULL;
    if (cJSON_IsString(content) && *content->valuestring) {
        size_t len = strlen(content->valuestring);
        if (buf_append(&r->text, content->valuestring, len) != 0) {
            snprintf(r->error, sizeof(r->error), "the reply exceeds %u bytes", MAX_REPLY);
            cJSON_Delete(root);
            return -1;
        }
        emit(content->valuestring, len);
    }
    if (cJSON_IsString(fin)) {
        r->done = true;
    }
    cJSON_Delete(root);
    return 0;
}

/* One line of the SSE stream (comments, event names, blank lines skipped). */
static int
sse_line(void *arg, const char *p, size_t n)
{
    return sse_line_data(p, n, &p, &n) ? sse_data(arg, p, n) : 0;
}

/* Feeds bytes of the SSE stream. Returns 0, or -1 with r->error. */
static int
sse_feed(struct reply *r, const char *p, size_t n)
{
    int rc = sse_splitter_feed(&r->line, p, n, sse_line, r);

    if (rc == SSE_TOO_LONG) {
        snprintf(r->error, sizeof(r->error), "an event of the stream exceeds %u bytes",
                 MAX_SSE_LINE);
    }
    return rc == SSE_OK ? 0 : -1;
}

static size_t
on_data(char *p, size_t size, size_t n, void *arg)
{
    struct reply *r = arg;
    size_t len = size * n;

    r->last_rx_ms = util_mono_ms();
    if (!r->status) {
        char *ct = NULL;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
        curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct);
        r->sse = ct && strncasecmp(ct, "text/event-stream", 17) == 0;
        if (r->status / 100 != 2) {
            r->body.max = MAX_ERROR_BODY;
        }
    }
    if (r->status / 100 != 2) {
        size_t room = r->body.max - r->body.len;
        if (buf_append(&r->body, p, len < room ? len : room) != 0) {
            r->body.len = 0; /* out of memory: the status alone tells */
        }
        return len;
    }
    if (!r->sse) {
        if (buf_append(&r->body, p, len) != 0) {
            snprintf(r->error, sizeof(r->error), "the answer exceeds %u bytes", MAX_REPLY);
            return 0;
        }
        return len;
    }
    return sse_feed(r, p, len) == 0 ? len : 0;
}

/* Called by libcurl at least once a second: Ctrl-C and the idle timeout. */
static int
on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    struct reply *r = arg;

    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    if (interrupted) {
        return 1;
    }
    if (util_mono_ms() - r->last_rx_ms > r->o->idle_timeout_ms) {
        r->idle = true;
        return 1;
    }
    return 0;
}

/* The reply of a server that answered with one chat.completion. */
static int
whole_answer(struct reply *r)
{
    cJSON *root = NULL;
    char err[128];
    const cJSON *choices, *c, *msg, *content;
    int rc = -1;

    if (json_parse(r->body.data, r->body.len, MAX_JSON_DEPTH, &root, err, sizeof(err)) == 0) {
        choices = json_get(root, "choices");
        c = cJSON_IsArray(choices) ? choices->child : NULL;
        msg = cJSON_IsObject(c) ? json_get(c, "message") : NULL;
        content = cJSON_IsObject(msg) ? json_get(msg, "content") : NULL;
        if (cJSON_IsString(content) &&
            buf_append(&r->text, content->valuestring, strlen(content->valuestring)) == 0) {
            emit(r->text.data ? r->text.data : "", r->text.len);
            rc = 0;
        }
    }
    if (rc != 0) {
        snprintf(r->error, sizeof(r->error),
                 "the answer is neither a stream nor a chat completion");
    }
    cJSON_Delete(root);
    return rc;
}

enum turn { TURN_OK, TURN_INTERRUPTED, TURN_FAILED, TURN_UNREACHABLE };

/* Streams the reply to `body` from `url` (printing it as it comes) into
 * r->text. TURN_UNREACHABLE: no connection (another instance may do);
 * otherwise `why` says what failed. */
static enum turn
stream_reply(struct chat *c, const char *url, const char *body, struct reply *r, char *why,
             size_t cap)
{
    const struct cli_model_opts *o = c->o;
    struct curl_slist *hl = NULL;
    const char *lines[] = {"Content-Type: application/json", "Accept: text/event-stream",
                           "Expect:", c->auth};
    char errbuf[CURL_ERROR_SIZE] = "";
    enum turn t = TURN_FAILED;
    CURLcode cc;

    r->easy = curl_easy_init();
    if (!r->easy) {
        snprintf(why, cap, "cannot create a curl handle");
        return TURN_FAILED;
    }
    for (size_t i = 0; i < UTIL_ARRAY_LEN(lines); i++) {
        struct curl_slist *n = lines[i] ? curl_slist_append(hl, lines[i]) : hl;
        if (!n) {
            snprintf(why, cap, "out of memory");
            goto out;
        }
        hl = n;
    }
    curl_easy_setopt(r->easy, CURLOPT_URL, url);
    curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(r->easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)o->timeout_ms);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(r->easy, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(r->easy, CURLOPT_XFERINFODATA, r);
    curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, errbuf);
    r->last_rx_ms = util_mono_ms();
    cc = curl_easy_perform(r->easy);
    if (cc == CURLE_ABORTED_BY_CALLBACK && interrupted) {
        t = TURN_INTERRUPTED;
    } else if (cc == CURLE_ABORTED_BY_CALLBACK) {
        snprintf(why, cap, "%s: no data for %lld ms (--idle_timeout_ms)", url,
                 (long long)o->idle_timeout_ms);
    } else if (r->error[0]) {
        snprintf(why, cap, "%s: %s", url, r->error);
    } else if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
               (cc == CURLE_OPERATION_TIMEDOUT && !r->status)) {
        snprintf(why, cap, "cannot reach %s: %s", url, errbuf[0] ? errbuf : curl_easy_strerror(cc));
        t = TURN_UNREACHABLE;
    } else if (cc != CURLE_OK) {
        snprintf(why, cap, "%s: %s", url, errbuf[0] ? errbuf : curl_easy_strerror(cc));
    } else if (r->status / 100 != 2) {
        char msg[320];
        json_error_message(r->body.data, r->body.len, msg, sizeof(msg));
        snprintf(why, cap, "%s answered HTTP %ld: %s", url, r->status, msg);
    } else if (!r->sse) {
        if (whole_answer(r) == 0) {
            t = TURN_OK;
        } else {
            snprintf(why, cap, "%s: %s", url, r->error);
        }
    } else if (!r->done) {
        snprintf(why, cap, "%s: the stream ended before the reply was complete", url);
    } else {
        t = TURN_OK;
    }
out:
    curl_slist_free_all(hl);
    curl_easy_cleanup(r->easy);
    r->easy = NULL;
    return t;
}

/* ---- instances ------------------------------------------------------------------ */

/* Says why no instance of the model is routable. */
static void
explain_none(struct chat *c)
{
    int code = 0, n = 0;
    cJSON *all = cli_model_instances(c->o, false, &code);

    if (!all) {
        return;
    }
    n = cJSON_GetArraySize(all);
    if (n == 0) {
        fprintf(stderr, "roster: no instance of %s is registered\n", c->full);
    } else {
        fprintf(stderr,
                "roster: no instance of %s is routable (%d registered, none alive, enabled and "
                "weighted above 0: see roster model list --model_name %s)\n",
                c->full, n, c->full);
    }
    cJSON_Delete(all);
}

/* Removes and returns an instance of `arr` picked at random by weight, or
 * NULL when none has a positive weight. */
static cJSON *
pick(cJSON *arr)
{
    double total = 0, x;
    cJSON *it;

    cJSON_ArrayForEach(it, arr)
    {
        const cJSON *w = json_get(it, "weight");
        total += cJSON_IsNumber(w) && w->valuedouble > 0 ? w->valuedouble : 0;
    }
    if (total <= 0) {
        return NULL;
    }
    x = (double)util_random_below(UINT64_C(1) << 53) / (double)(UINT64_C(1) << 53) * total;
    cJSON_ArrayForEach(it, arr)
    {
        const cJSON *w = json_get(it, "weight");
        double wt = cJSON_IsNumber(w) && w->valuedouble > 0 ? w->valuedouble : 0;
        if (wt > 0 && (x < wt || !it->next)) {
            return cJSON_DetachItemViaPointer(arr, it);
        }
        x -= wt;
    }
    return NULL;
}

/* ---- a turn -------------------------------------------------------------------- */

/* The request body for the conversation so far; the oldest turns are left
 * out while it exceeds MAX_REQUEST. Returns the text (cJSON_free it), or
 * NULL. */
static char *
request_body(struct chat *c)
{
    for (;;) {
        cJSON *req = cJSON_CreateObject();
        char *text = NULL;
        /* a reference: the request does not own the history */
        if (req && cJSON_AddStringToObject(req, "model", c->model) &&
            cJSON_AddItemReferenceToObject(req, "messages", c->history) &&
            cJSON_AddTrueToObject(req, "stream") &&
            (c->o->temperature < 0 ||
             cJSON_AddNumberToObject(req, "temperature", c->o->temperature)) &&
            (c->o->max_tokens <= 0 ||
             cJSON_AddNumberToObject(req, "max_tokens", (double)c->o->max_tokens))) {
            text = cJSON_PrintUnformatted(req);
        }
        cJSON_Delete(req);
        if (!text || strlen(text) <= MAX_REQUEST) {
            return text;
        }
        cJSON_free(text);
        int first = c->o->system && *c->o->system ? 1 : 0; /* the system prompt stays */
        if (cJSON_GetArraySize(c->history) - first <= 1) {
            return NULL; /* the message alone is too long */
        }
        cJSON_DeleteItemFromArray(c->history, first); /* the oldest turn */
    }
}

static int
add_message(cJSON *history, const char *role, const char *content, size_t len)
{
    cJSON *m = cJSON_CreateObject();
    char *copy = malloc(len + 1);
    int rc = -1;

    if (m && copy) {
        memcpy(copy, content, len);
        copy[len] = '\0';
        if (cJSON_AddStringToObject(m, "role", role) &&
            cJSON_AddStringToObject(m, "content", copy) && cJSON_AddItemToArray(history, m)) {
            m = NULL;
            rc = 0;
        }
    }
    free(copy);
    cJSON_Delete(m);
    return rc;
}

/* Sends the conversation (the user's message last) and prints the reply.
 * Returns 0 when the reply came (or was stopped), -1 when it failed. */
static int
turn(struct chat *c)
{
    struct reply r;
    char why[1024] = "";
    char url[700];
    char *body = request_body(c);
    cJSON *targets = NULL;
    enum turn t = TURN_FAILED;
    int code = 0;

    memset(&r, 0, sizeof(r));
    r.o = c->o;
    sse_splitter_init(&r.line, SSE_LINES, MAX_SSE_LINE);
    buf_init(&r.text, MAX_REPLY);
    buf_init(&r.body, MAX_REPLY);
    if (!body) {
        snprintf(why, sizeof(why), "the message is too long, or out of memory");
        goto done;
    }
    if (c->tty) {
        emit("Bot: ", 5);
    }
    interrupted = 0;
    if (c->o->api_base) {
        size_t n = strlen(c->o->api_base);
        while (n && c->o->api_base[n - 1] == '/') {
            n--;
        }
        snprintf(url, sizeof(url), "%.*s/chat/completions", (int)n, c->o->api_base);
        t = stream_reply(c, url, body, &r, why, sizeof(why));
        goto done;
    }
    targets = cli_model_instances(c->o, true, &code);
    if (!targets) {
        snprintf(why, sizeof(why), "no instance to ask (see above)");
        goto done;
    }
    for (cJSON *it; (it = pick(targets));) {
        const cJSON *host = json_get(it, "host"), *port = json_get(it, "port");
        if (cJSON_IsString(host) && cJSON_IsNumber(port)) {
            bool v6 = strchr(host->valuestring, ':') != NULL;
            snprintf(url, sizeof(url), "http://%s%s%s:%d/v1/chat/completions", v6 ? "[" : "",
                     host->valuestring, v6 ? "]" : "", port->valueint);
            t = stream_reply(c, url, body, &r, why, sizeof(why));
        }
        cJSON_Delete(it);
        if (t != TURN_UNREACHABLE || !targets->child) {
            break;
        }
        fprintf(stderr, "roster: %s; trying another instance\n", why);
        t = TURN_FAILED;
        why[0] = '\0';
    }
    if (t == TURN_FAILED && !why[0]) {
        if (c->tty) {
            emit("\n", 1);
        }
        explain_none(c);
        snprintf(why, sizeof(why), "no routable instance");
        code = -1;
        goto out;
    }
done:
    if (c->tty || r.text.len || t == TURN_OK) {
        emit(t == TURN_INTERRUPTED ? " [stopped]\n" : "\n", t == TURN_INTERRUPTED ? 11 : 1);
    }
    if (t == TURN_OK || (t == TURN_INTERRUPTED && r.text.len)) {
        if (add_message(c->history, "assistant", r.text.data ? r.text.data : "", r.text.len) != 0) {
            fprintf(stderr, "roster: out of memory\n");
        }
        code = 0;
    } else {
        if (t != TURN_INTERRUPTED) {
            fprintf(stderr, "roster: %s\n", why);
        }
        code = t == TURN_INTERRUPTED ? 0 : -1;
    }
out:
    if (code != 0 || (t == TURN_INTERRUPTED && !r.text.len)) {
        /* no reply: forget the user's message too */
        cJSON_DeleteItemFromArray(c->history, cJSON_GetArraySize(c->history) - 1);
    }
    interrupted = 0;
    cJSON_Delete(targets);
    cJSON_free(body);
    sse_splitter_cleanup(&r.line);
    buf_cleanup(&r.text);
    buf_cleanup(&r.body);
    return code;
}

/* ---- the conversation ------------------------------------------------------------- */

/* Forgets the conversation; the system prompt stays. Returns 0 or -1. */
static int
reset(struct chat *c)
{
    cJSON_Delete(c->history);
    c->history = cJSON_CreateArray();
    if (!c->history) {
        return -1;
    }
    if (c->o->system && *c->o->system &&
        add_message(c->history, "system", c->o->system, strlen(c->o->system)) != 0) {
        return -1;
    }
    return 0;
}

/* "  /Exit  " is "/exit", as DB-GPT's chat reads commands. */
static bool
is_command(const char *line, const char *cmd)
{
    size_t n = strlen(cmd);

    while (*line == ' ' || *line == '\t' || *line == '\r') {
        line++;
    }
    if (strncasecmp(line, cmd, n) != 0) {
        return false;
    }
    for (line += n; *line; line++) {
        if (*line != ' ' && *line != '\t' && *line != '\r') {
            return false;
        }
    }
    return true;
}

static bool
blank(const char *line)
{
    for (; *line; line++) {
        if (*line != ' ' && *line != '\t' && *line != '\r') {
            return false;
        }
    }
    return true;
}

int
cli_chat(const struct cli_model_opts *o)
{
    struct chat c;
    struct sigaction sa, old_sa;
    char *line = NULL;
    const char *at;
    int failures = 0;
    int code = 0;

    memset(&c, 0, sizeof(c));
    c.o = o;
    if (!o->model_name || !*o->model_name) {
        fprintf(stderr, "roster: model chat needs --model_name (or -m)\n");
        return EX_USAGE;
    }
    at = strchr(o->model_name, '@');
    if (at && strcmp(at + 1, "llm") != 0) {
        fprintf(stderr, "roster: model chat talks to an llm, not a %s model\n", at + 1);
        return EX_USAGE;
    }
    if (snprintf(c.model, sizeof(c.model), "%.*s",
                 at ? (int)(at - o->model_name) : (int)strlen(o->model_name),
                 o->model_name) >= (int)sizeof(c.model) ||
        snprintf(c.full, sizeof(c.full), "%s@llm", c.model) >= (int)sizeof(c.full)) {
        fprintf(stderr, "roster: --model_name is too long\n");
        return EX_USAGE;
    }
    c.tty = isatty(0);
    line = malloc(MAX_LINE + 1);
    c.input = malloc(MAX_LINE);
    if (!line || !c.input || reset(&c) != 0) {
        fprintf(stderr, "roster: out of memory\n");
        code = EX_OSERR;
        goto out;
    }
    if (o->api_base && o->api_key && *o->api_key) {
        size_t n = strlen(o->api_key) + 32;
        c.auth = malloc(n);
        if (!c.auth) {
            fprintf(stderr, "roster: out of memory\n");
            code = EX_OSERR;
            goto out;
        }
        snprintf(c.auth, n, "Authorization: Bearer %s", o->api_key);
    }
    if (!o->api_base) {
        /* fail at once when nothing can answer */
        cJSON *routable = cli_model_instances(o, true, &code);
        int n = routable ? cJSON_GetArraySize(routable) : 0;
        cJSON_Delete(routable);
        if (!routable) {
            goto out;
        }
        if (n == 0) {
            explain_none(&c);
            code = EX_UNAVAILABLE;
            goto out;
        }
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint; /* no SA_RESTART: a blocking wait returns */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_sa);
    if (c.tty) {
        printf("Chatting with %s %s%s. /exit or Ctrl-D leaves, /clear starts over, Ctrl-C stops "
               "a reply.\n",
               c.full, o->api_base ? "at " : "through the controllers",
               o->api_base ? o->api_base : "");
    }
    for (;;) {
        if (c.tty) {
            emit("\nYou: ", 6);
        }
        int rc = read_line(&c, line);
        if (rc == LINE_EOF || rc == LINE_INTERRUPTED) {
            if (c.tty) {
                emit("\n", 1);
            }
            break;
        }
        if (rc == LINE_ERROR) {
            fprintf(stderr, "roster: cannot read the input: %s\n", strerror(errno));
            code = EX_IOERR;
            break;
        }
        if (rc == LINE_TOO_LONG) {
            fprintf(stderr, "roster: a message of more than %u bytes was skipped\n", MAX_LINE);
            failures++;
            continue;
        }
        if (blank(line)) {
            continue;
        }
        if (is_command(line, "/exit")) {
            break;
        }
        if (is_command(line, "/clear") || is_command(line, "/reset")) {
            if (reset(&c) != 0) {
                fprintf(stderr, "roster: out of memory\n");
                code = EX_OSERR;
                break;
            }
            if (c.tty) {
                emit("\033[H\033[2J", 7);
                printf("A new conversation with %s.\n", c.full);
            }
            continue;
        }
        if (add_message(c.history, "user", line, strlen(line)) != 0) {
            fprintf(stderr, "roster: out of memory\n");
            code = EX_OSERR;
            break;
        }
        if (turn(&c) != 0) {
            failures++;
        }
    }
    sigaction(SIGINT, &old_sa, NULL);
    if (code == 0 && failures && !c.tty) {
        code = EX_UNAVAILABLE;
    }
out:
    cJSON_Delete(c.history);
    free(c.auth);
    free(c.input);
    free(line);
    return code;
}
