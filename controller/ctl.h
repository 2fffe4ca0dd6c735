/* SPDX-License-Identifier: MIT
 *
 * ctl.h - the controller: DB-GPT's model-controller API over the registry,
 * stateless, any number per database (internal header of controller/).
 *
 * DESIGN (threads and data flow)
 *
 *   loop threads (http_server)      writer thread           refresher thread
 *   parse, validate, reply          batches of ops ->       polls the table ->
 *   reads from the view snapshot    reg_apply -> view       view (merge), sweeps
 *            ^                           |                        |
 *            +---- completion tasks -----+                        |
 *            +---- "view changed" tasks (watchers) <-- view ------+
 *
 * - Nothing on a loop thread touches the database. Writes become ctl_job
 *   records queued to the writer (ctl_writer.c), which commits everything
 *   queued so far in one transaction (heartbeats that arrive together share
 *   a commit) and posts each job back to its loop to be answered.
 * - Reads are served from an immutable, reference-counted snapshot of the
 *   table (ctl_view.c) with the JSON of each list pre-serialised, rebuilt
 *   when a local write changes routing or membership, when the refresher
 *   sees such changes from other controllers, when a lease runs out, and
 *   at every full read. A plain heartbeat (local, or read by the poll from
 *   another controller's commit) rebuilds nothing: its time is stored in
 *   the model snapshot's heartbeat cell and the next list copies it into
 *   the JSON (struct ctl_model_snap), so the acknowledging controller lists
 *   the new last_heartbeat at once and the others within --view_poll_ms.
 * - Health is computed from the database clock: the refresher reads each
 *   row's heartbeat age as computed by the database, the view converts it
 *   to this process's monotonic clock, so a controller whose wall clock is
 *   wrong computes the same health as the others.
 *
 * LOCKS A LOOP THREAD MAY TAKE (each held for a few instructions, never
 * across a query, a merge or a snapshot build; nothing else is locked on a
 * loop thread):
 *   - the view's snap_mu: ctl_view_acquire (a pointer copy and a reference);
 *   - a snapshot's json_mu: ctl_snap_json (a pointer swap and a reference);
 *   - the writer's mu: ctl_writer_submit, ctl_writer_queue_len (link a job,
 *     read a count);
 *   - ctl_server.db.mu: /api/health copies the database state;
 *   - the settings' mu: ctl_settings_acquire (a pointer copy and a
 *     reference), ctl_settings_submit (link a job).
 * The view's master lock (held by the refresher through a whole full
 * refresh: tens of ms with 100,000 instances) is never taken on a loop
 * thread; what a loop reads besides the snapshot is atomic
 * (ctl_view_last_refresh_mono, ctl_metrics, the histograms). The writer
 * and the view post completions and wake-ups to a loop through its mailbox
 * lock (http_loop_post, held to link a task); the log takes no lock.
 */
#ifndef ROSTER_CTL_H
#define ROSTER_CTL_H

#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "flags.h"
#include "http_limits.h"
#include "http_server.h"
#include "metrics.h"
#include "netaddr.h"
#include "registry.h"

/* ---- configuration (ctl_config.c) ------------------------------------------ */

struct ctl_config {
    char *host;
    int64_t port;
    int64_t threads;
    char *port_file;
    char *registry_type;
    char *registry_db_url; /* after ctl_config_check: its password shown as "***" */
    char *registry_db_type;
    char *registry_db_name;
    char *registry_db_host;
    int64_t registry_db_port;
    char *registry_db_user;
    char *registry_db_password;
    char *registry_db_socket;
    int64_t registry_db_connect_timeout_ms;
    int64_t registry_db_timeout_ms;
    bool registry_db_sync_full;
    double heartbeat_interval_secs; /* sweep period (DB-GPT's meaning) */
    double heartbeat_timeout_secs;  /* lease of instances that declare none */
    int64_t registry_gc_secs;
    int64_t view_refresh_ms;
    int64_t view_poll_ms;
    char *cluster_secret;
    char *trusted_networks;
    bool protect_reads;
    char *instance_networks;
    int64_t max_instances;
    int64_t memory_budget_bytes;
    int64_t max_body_bytes;
    struct http_limits http; /* --max_connections, --client_*_timeout_ms, ... */
    int64_t max_queue;
    int64_t write_gather_us;
    int64_t watch_max_secs;
    int64_t max_watchers;
    int64_t shutdown_grace_ms;
    char *log_level;
    bool check; /* --check: validate, print, exit */
    bool access_log;
    /* set by ctl_config_check (not options) */
    bool db_url_password_on_argv; /* the caller warns: other users can read argv */
};

extern const struct flag_def ctl_flag_defs[];
extern const char ctl_usage[];
extern const char ctl_summary[];

/* Parses argv/env into `cfg` (zeroed by the caller) and checks it with
 * ctl_config_check. Returns 0, 1 for --help (printed), or -1 after printing
 * the error to stderr. Logs a warning for each secret given on argv, and
 * overwrites a password inside a --registry_db_url argument with 'x' (as
 * MySQL's client does) so that ps shows it only during start-up. */
int ctl_config_load(struct ctl_config *cfg, int argc, char **argv);
/* Checks a configuration filled by flags_parse() over ctl_flag_defs, and
 * applies --registry_db_url onto registry_type and the registry_db_* fields
 * (registry_db_url itself keeps the URL with its password replaced by
 * "***", safe to log). `sources` has one slot per ctl_flag_defs entry, as
 * flags_parse fills it; NULL treats every value as a default. Errors: an
 * unknown --registry_type or --registry_db_type, a URL or host:port in
 * --registry_db_host, a bad URL, a URL together with any of
 * --registry_db_type/host/port/user/name/socket given explicitly (argv or
 * environment), two passwords. Never prints, logs or exits: returns 0, or
 * -1 with a message in `err` (a usage error: exit 64); never copies a
 * password into `err`. Sets cfg->db_url_password_on_argv for the caller to
 * warn about. Any thread; does not block. */
int ctl_config_check(struct ctl_config *cfg, const enum flag_source *sources, char *err,
                     size_t errcap);
/* --check (ctl_check.c): what the options name (the registry file, the
 * networks), checked without opening a database, connecting or binding;
 * one line per check on `out`. Returns 0, or an exit code after printing
 * why on stderr (78: a registry file that cannot be used). */
int ctl_check(struct ctl_config *cfg, FILE *out);

/* Overwrites a password inside a --registry_db_url argument of argv with
 * 'x' (ps then shows it only during start-up). */
void ctl_config_scrub_argv(int argc, char **argv);
void ctl_config_cleanup(struct ctl_config *cfg);
/* Fills a registry config from `cfg` (strings are borrowed from cfg). */
void ctl_config_registry(const struct ctl_config *cfg, struct reg_config *out);

/* ---- request bodies and JSON (ctl_instance.c: pure functions) --------------- */

/* Field rules of DB-GPT's ModelInstance plus roster's extensions. Returns 0
 * and fills `out` (key, weight, flags, template, lease, load), or -1 with a
 * message for a 422 (or 400 for malformed JSON: *status_out). */
int ctl_instance_parse_json(const char *body, size_t len, struct reg_instance *out, int *status_out,
                            char *err, size_t errcap);

/* DELETE /api/controller/models query: model_name, host, port,
 * remove_from_registry. Returns 0 or -1 (422) with a message. */
int ctl_instance_parse_delete(const char *query, struct reg_instance *out, bool *remove_out,
                              char *err, size_t errcap);

/* The admin body: {model_name, host, port, weight?: number|null,
 * enabled?: bool}. Returns 0 or -1 with *status_out (400/422). */
int ctl_admin_parse_json(const char *body, size_t len, struct reg_op *op, int *status_out,
                         char *err, size_t errcap);

/* Checks a "<model>@<worker_type>" name: 1..128 bytes, exactly one '@' with
 * text on both sides, no control characters or surrounding spaces. */
bool ctl_valid_model_name(const char *s);
/* A host name or IP literal: no scheme, path, user info, spaces. */
bool ctl_valid_host(const char *s);

/* ---- the view (ctl_view.c) -------------------------------------------------- */

/* One instance as served: the stored record plus state computed at the
 * time the snapshot was built. The record's strings belong to its model
 * snapshot (model_name is the model's name; host and prompt_template sit
 * in its string block): valid as long as the snapshot. */
struct ctl_snap_inst {
    struct reg_row rec;
    int64_t lease_ms; /* effective lease */
    bool alive;       /* false for a blocked instance */
    bool routable;    /* alive, enabled, weight > 0 */
    bool blocked;     /* host outside --instance_networks */
};

enum ctl_json_variant {
    CTL_JSON_ALL = 0,
    CTL_JSON_ROUTABLE,
    CTL_JSON_FULL_ALL,
    CTL_JSON_FULL_ROUTABLE
};

/* Longest JSON one instance can take in a list (either form, every string
 * at its column limit and escaped as \u00XX): the cap of a list's buffer is
 * this times the instances in the snapshot. */
#define CTL_INST_JSON_MAX 4096

/* Where one instance's heartbeat fields sit in a list JSON, the time
 * written there, and the live time it is copied from (a cell of a
 * ctl_model_snap). Both are fixed width, so a fresher time is written in
 * place (in a copy): last_heartbeat in DB-GPT's form
 * "YYYY-MM-DDTHH:MM:SS.mmm000", and view=full's heartbeat_age_ms as a
 * number right-aligned in CTL_AGE_WIDTH bytes (spaces before it: JSON
 * allows whitespace before a value). */
struct ctl_json_patch {
    size_t off;           /* of the timestamp's first byte */
    size_t age_off;       /* of heartbeat_age_ms's field (0: not in this form) */
    int64_t ms;           /* the time written */
    int64_t db_offset_ms; /* the model snapshot's (the age is computed on the db clock) */
    const _Atomic int64_t *cell;
};

/* Width of view=full's heartbeat_age_ms (ages above 10^12 ms, 31 years,
 * are shown as 999999999999). */
#define CTL_AGE_WIDTH 12

/* The oldest a listed heartbeat age gets: a cached view=full list is
 * patched again on the first read after this (ages grow with time, and no
 * snapshot is rebuilt for time alone). */
#define CTL_AGE_FRESH_MS 1000

/* A list JSON. Immutable once published (a response may be sending it):
 * fresher heartbeat times make a new copy (ctl_snap_json). */
struct ctl_json {
    _Atomic int refs;
    size_t charged;               /* bytes taken from the process budget (budget.h) */
    uint64_t hb_gen;              /* heartbeat generation of the snapshot it was made at */
    int64_t aged_mono;            /* when its heartbeat ages were computed (0: none shown) */
    size_t npatch;                /* entries of `patch` (instances with a heartbeat) */
    struct ctl_json_patch *patch; /* inside this allocation */
    size_t len;
    char data[];
};

/* Heartbeat times (last_heartbeat) without a snapshot rebuild. A model
 * snapshot is immutable but for its cells hb_ms[i] (one per instance, the
 * epoch ms shown as instance i's last_heartbeat; INT64_MIN = none): the
 * writer and the refresher store a plain heartbeat's time there (an atomic
 * 64-bit store, under the view's master lock, into the model's current
 * snapshot only) and then bump hb_gen (release). A reader that finds the
 * cached JSON older than hb_gen (acquire) makes a new JSON - a copy with
 * the changed timestamps rewritten and, in view=full, every heartbeat age
 * recomputed (both are fixed width: struct ctl_json_patch) - and swaps it
 * into the slot under json_mu. So a timestamp in a JSON being sent is
 * never written (no
 * torn time is possible), a heartbeat costs the writer two atomics, and a
 * list after heartbeats costs one copy. So does a view=full list whose
 * ages are CTL_AGE_FRESH_MS old, heartbeats or not (a whole-list copy on
 * the loop thread that reads it: ~140 ms at 100,000 instances). Loop
 * threads take json_mu for a pointer swap and a reference, nothing else. */
struct ctl_snap_slab;

struct ctl_model_snap {
    _Atomic int refs;
    struct ctl_snap_slab *slab; /* the mapping it was built in (NULL: its own malloc) */
    size_t bytes;               /* of its block (the struct, instances, cells, strings) */
    char name[REG_NAME_MAX + 1];
    size_t n;
    struct ctl_snap_inst *v; /* sorted by host, port; in the same block as the snapshot */
    char *strs;              /* the hosts and templates of v, at their length (same block) */
    size_t n_alive;
    size_t n_routable;
    uint64_t expired; /* leases that ran out in this view, ever (a counter) */
    uint64_t etag[2]; /* [0] all instances, [1] routable only (routing fields) */
    /* the view version (ctl_snap.version) of the snapshot in which this
     * model's routing fields (host, port, effective weight, alive, enabled,
     * routable) last changed: a rebuild that changes none of them keeps the
     * version of the snapshot it replaces. A watch with since=V lists the
     * models whose version is above V (ctl_snap_delta_json). */
    uint64_t version;
    int64_t db_offset_ms;    /* database clock - monotonic clock at build (heartbeat ages) */
    _Atomic uint64_t hb_gen; /* bumped after each store into hb_ms */
    _Atomic int64_t *hb_ms;  /* n cells */
    pthread_mutex_t json_mu; /* guards the json slots */
    struct ctl_json *_Atomic json[4]; /* built on first use, replaced when hb_gen moved
                                         or (view=full) its ages are stale */
};

struct ctl_snap {
    _Atomic int refs;
    uint64_t version;
    uint64_t epoch; /* random per view (process): a version means nothing in another one */
    int64_t built_mono_ms;
    size_t nmodels;
    struct ctl_model_snap **models; /* sorted by name */
    size_t n_instances;
    size_t n_alive;
    size_t n_routable;
    uint64_t etag[2];
    pthread_mutex_t json_mu;          /* guards the json slots */
    struct ctl_json *_Atomic json[4]; /* hb_gen: the sum of its models' */
    struct ctl_snap *retired_next;    /* the view's retired list (its mu) */
};

struct ctl_view;

struct ctl_view_config {
    int64_t default_lease_ms;
    int64_t tick_ms;       /* lease-expiry check period */
    int64_t max_instances; /* most rows read from the table the view holds */
    int64_t stale_ms;      /* no lease expires on data older than this (0 = no limit) */
    /* --instance_networks (borrowed; NULL or empty: every host): instances
     * outside are listed as blocked, never alive or routable */
    const struct netaddr_list *instance_nets;
};

/* `on_change(arg)` runs (on a view thread) after a snapshot whose routing
 * state differs from the previous one is published. */
int ctl_view_new(const struct ctl_view_config *cfg, void (*on_change)(void *), void *arg,
                 struct ctl_view **out);
void ctl_view_free(struct ctl_view *v);
int ctl_view_start(struct ctl_view *v); /* starts the expiry tick thread */
void ctl_view_stop(struct ctl_view *v);

/* Threads and locks. The view's master lock is held by the refresher for
 * a whole merge and publish (tens of ms with 100,000 instances), by the
 * writer while it applies a batch and by the tick thread: functions that
 * take it are marked "not on a loop thread". Loop threads may call only
 * ctl_view_acquire (the snapshot lock, held for a pointer copy), the
 * ctl_snap_* functions (no lock: the snapshot is immutable; the JSON cache
 * slots are atomics) and ctl_view_last_refresh_mono (an atomic). */

/* The current snapshot, with a reference the caller drops with
 * ctl_snap_release(). Any thread; never blocks for long. */
struct ctl_snap *ctl_view_acquire(struct ctl_view *v);
/* Another reference to `s` (one the caller holds). Any thread. */
struct ctl_snap *ctl_snap_ref(struct ctl_snap *s);
void ctl_snap_release(struct ctl_snap *s);

/* Looks up one model (binary search); NULL if absent. Borrowed from `s`. */
const struct ctl_model_snap *ctl_snap_model(const struct ctl_snap *s, const char *name);

/* The list JSON ('[...]') for one model or, with name NULL, all models, with
 * a reference (release with ctl_json_release). Built on first use (by the
 * caller's thread) and charged to the process budget while it lives; it
 * shows every heartbeat time stored before the call (see ctl_model_snap).
 * NULL when the budget (--memory_budget_bytes) or memory refuses: answer
 * 503. */
struct ctl_json *ctl_snap_json(struct ctl_snap *s, const char *name, enum ctl_json_variant var);
void ctl_json_release(struct ctl_json *j);
/* The view token of a snapshot, "<epoch>-<version>" (16 hex digits, '-',
 * decimal): the X-Roster-View header of a view=full answer, and what a
 * watcher sends back as since=. Writes at most cap bytes (NUL included). */
void ctl_snap_token(const struct ctl_snap *s, char *out, size_t cap);
/* Parses a since= token: true and *version_out when it names a version
 * of this snapshot's view (same epoch, not above s->version); false for a
 * token of another controller process, a version this view has not
 * reached, or garbage (the caller answers with the full list). */
bool ctl_snap_since(const struct ctl_snap *s, const char *token, uint64_t *version_out);
/* The delta answer of view=full since `since` (a version of s's view):
 *   {"delta":true,"since":"<token>","version":"<token>",
 *    "models":[every model of s, by name],
 *    "changed":[models whose version > since],
 *    "instances":[the instances of the changed models, as in the list]}
 * `var` is CTL_JSON_FULL_ALL or CTL_JSON_FULL_ROUTABLE. Built by the
 * caller's thread from the models' cached lists (a copy of the changed
 * models' JSON plus the names: small when few changed), not cached.
 * Returns NULL with *full_out true when the changed models hold more than
 * half of s's instances (the cached full list is then the cheaper
 * answer), NULL with *full_out false when the budget or memory refuses
 * (503). Release with ctl_json_release. */
struct ctl_json *ctl_snap_delta_json(struct ctl_snap *s, uint64_t since, enum ctl_json_variant var,
                                     bool *full_out);
/* Appends instance i of m as JSON (DB-GPT's ten fields; with `full`,
 * roster's extended record), its heartbeat time and age as of now. */
struct jw;
void ctl_snap_inst_json(struct jw *w, const struct ctl_model_snap *m, size_t i, bool full);
/* The ETag for a query (routing fields only). */
uint64_t ctl_snap_etag(const struct ctl_snap *s, const char *name, bool routable_only);

/* Bytes held now in the mappings of every view of the process (model
 * snapshots built by a large publish; ctl_view.c "Memory."): 0 once every
 * snapshot is released. Any thread. */
int64_t ctl_view_mapped_bytes(void);

/* Applies committed operations to the view and publishes (writer thread).
 * `ops` carry their per-op rc. Every committed REGISTER/HEARTBEAT is
 * inserted, past max_instances too (the writer admitted it). */
void ctl_view_apply_ops(struct ctl_view *v, const struct reg_op *ops, size_t n);
/* Sets missing[i] for each REGISTER/HEARTBEAT op whose key the view does
 * not hold (false for other kinds); returns how many (a key repeated in
 * `ops` counts each time) and the view's instance count in *count_out.
 * Writer thread (takes the master lock: not on a loop thread). */
size_t ctl_view_missing(struct ctl_view *v, const struct reg_op *ops, size_t n, bool *missing,
                        size_t *count_out);

/* Merging rows read from the database (refresher thread): call
 * ctl_view_refresh_begin() before the query, then ctl_view_refresh_apply()
 * with the rows, the database's clock and the monotonic times the query
 * was sent and returned. Local writes that happened meanwhile win over the (older) rows.
 * A `full` refresh also drops instances the database no longer has.
 * Returns how many rows were ignored because the view already held
 * max_instances instances (or memory ran out). */
uint64_t ctl_view_refresh_begin(struct ctl_view *v);
size_t ctl_view_refresh_apply(struct ctl_view *v, uint64_t begin_token, const struct reg_row *rows,
                              size_t n, bool full, int64_t db_now_ms, int64_t query_start_mono_ms,
                              int64_t query_end_mono_ms);
/* The database became (un)reachable: freezes lease expiry while it is down
 * and grants one lease of grace after it returns (the mass-eviction brake). */
void ctl_view_set_db_reachable(struct ctl_view *v, bool reachable);
/* False while the database is unreachable or during the grace period after
 * it came back: the stored heartbeat times are stale, so the sweep must not
 * mark instances unhealthy. */
bool ctl_view_sweep_allowed(struct ctl_view *v);
/* Instances in the view. Not on a loop thread. */
size_t ctl_view_count(struct ctl_view *v);
/* The shortest lease of any instance in the view (0 = none): the refresher
 * reads the whole table at least three times per shortest lease. Not on a
 * loop thread. */
int64_t ctl_view_min_lease_ms(struct ctl_view *v);
/* Monotonic time of the last successful refresh (0 = never). Any thread:
 * an atomic read, no lock. */
int64_t ctl_view_last_refresh_mono(struct ctl_view *v);

/* ---- the writer and refresher (ctl_writer.c) -------------------------------- */

struct ctl_server;

/* A write waiting for the database. Owned by the loop thread that made it
 * until ctl_writer_submit, by the writer until it posts `task` back, then
 * by the loop again, which replies and frees it. */
struct ctl_job {
    struct http_task task; /* completion, run on `loop` */
    struct reg_op op;
    struct http_request *req;
    struct http_loop *loop;
    struct ctl_server *srv;
    int rc;           /* REG_OK or the batch's error */
    char errmsg[160]; /* for the log, never for the client */
    int64_t enqueued_us;
    struct ctl_job *next;
};

struct ctl_writer;

/* ctl_job.rc when the instance table is full (--max_instances): 409. */
#define CTL_RC_FULL (-100)

int ctl_writer_new(struct ctl_server *srv, struct ctl_writer **out);
int ctl_writer_start(struct ctl_writer *w);
/* Queues a job; false when the queue is full (reply 503 yourself). */
bool ctl_writer_submit(struct ctl_writer *w, struct ctl_job *job);
/* Stops after the queue is drained (jobs still get their completions). */
void ctl_writer_stop(struct ctl_writer *w);
void ctl_writer_free(struct ctl_writer *w);
size_t ctl_writer_queue_len(struct ctl_writer *w);

struct ctl_refresher;
int ctl_refresher_new(struct ctl_server *srv, struct ctl_refresher **out);
/* Before serving: migrate the schema and load the view, synchronously (so
 * a restarted controller never answers from an empty table). Returns the
 * registry rc of the first step that failed. */
int ctl_refresher_prime(struct ctl_refresher *r);
const char *ctl_refresher_errmsg(struct ctl_refresher *r);
int ctl_refresher_start(struct ctl_refresher *r);
void ctl_refresher_stop(struct ctl_refresher *r);
void ctl_refresher_free(struct ctl_refresher *r);

/* ---- cluster settings (ctl_settings.c, ctl_settings_api.c) -------------------- */

/* The settings as one immutable document (reference-counted). */
struct ctl_settings_doc {
    _Atomic int refs;
    int64_t version;
    char *json; /* GET /api/roster/settings: every setting, key hashes included */
    size_t len;
    char *keys_json; /* GET /api/roster/keys: the keys without their hashes */
    size_t keys_len;
    char *aliases_json; /* GET /api/roster/aliases */
    size_t aliases_len;
    char *models_json; /* GET /api/roster/models */
    size_t models_len;
    size_t nkeys, naliases;
};

enum ctl_set_op {
    CTL_SET_PUT,
    CTL_SET_CREATE,
    CTL_SET_DELETE,
    CTL_SET_REVOKE,
    CTL_SET_MERGE, /* value's members replace the stored ones; a null removes one */
    CTL_USAGE_TAKE /* value: the body of POST /api/roster/keys/usage; answer: the grants */
};

/* A settings write from a loop thread: owned by that thread until
 * ctl_settings_submit, by the settings thread until it posts `task` back
 * to `loop`, then by the loop again, which replies and frees it. */
struct ctl_set_job {
    struct http_task task; /* completion, run on `loop` */
    struct http_request *req;
    struct http_loop *loop;
    struct ctl_server *srv;
    enum ctl_set_op op;
    char kind[REG_SETTING_KIND_MAX + 1];
    char name[REG_SETTING_NAME_MAX + 1];
    char *value;     /* PUT, CREATE: the JSON to store (owned) */
    char *answer;    /* CTL_USAGE_TAKE: the JSON answer (owned) */
    char secret[64]; /* a created key, answered once (wiped with the job) */
    int status;      /* settings thread: 200/201, or 400, 404, 409, 422, 503 with err */
    char err[256];
    int64_t version; /* the settings version the write made */
    struct ctl_set_job *next;
};

#define CTL_SETTINGS_MAX_QUEUE 256

struct ctl_settings;

int ctl_settings_new(struct ctl_server *srv, struct ctl_settings **out);
/* A first read before serving (after the schema was migrated); a failure
 * is logged and the thread keeps trying. */
void ctl_settings_prime(struct ctl_settings *s);
int ctl_settings_start(struct ctl_settings *s);
/* Runs the writes queued, then stops (their completions are posted). */
void ctl_settings_stop(struct ctl_settings *s);
void ctl_settings_free(struct ctl_settings *s);
/* Queues a write; false when the queue is full or stopping (reply 503). */
bool ctl_settings_submit(struct ctl_settings *s, struct ctl_set_job *job);
/* The current document with a reference, NULL before the first read.
 * Any thread (a mutex held for a pointer copy). */
struct ctl_settings_doc *ctl_settings_acquire(struct ctl_settings *s);
void ctl_settings_doc_release(struct ctl_settings_doc *d); /* NULL-safe */
/* The version of the current document, -1 before the first. Any thread. */
int64_t ctl_settings_version(struct ctl_settings *s);

extern const struct http_route ctl_settings_routes[];

/* ---- whole lists built off the loops (ctl_lists.c) ------------------------- */

/* A whole list (every model) of a snapshot this large is built on the
 * lists thread; smaller ones where they are asked for. */
#define CTL_LIST_OFFLOAD_MIN 2000
#define CTL_LISTS_MAX_QUEUE  64

/* A list to build: `json` is set on the lists thread (NULL: over the memory
 * budget), then task.fn runs on `loop`. */
struct ctl_list_job {
    struct http_task task;
    struct http_loop *loop;
    struct ctl_snap *snap; /* a reference, the job's */
    enum ctl_json_variant var;
    struct ctl_json *json;
    struct ctl_list_job *next;
};

struct ctl_lists;

int ctl_lists_new(struct ctl_lists **out);
int ctl_lists_start(struct ctl_lists *l);
/* Queues a build; false when the queue is full or stopping (reply 503). */
bool ctl_lists_submit(struct ctl_lists *l, struct ctl_list_job *job);
/* Builds and answers what is queued, then stops. */
void ctl_lists_stop(struct ctl_lists *l);
void ctl_lists_free(struct ctl_lists *l);

/* ---- the server (ctl_server.c, ctl_api.c) ----------------------------------- */

struct ctl_db_state {
    pthread_mutex_t mu;
    bool reachable;
    int64_t last_ok_mono_ms;
    char last_error[256];
};

struct ctl_metrics {
    _Atomic uint64_t writes_ok[6]; /* by reg_op_kind */
    _Atomic uint64_t writes_failed;
    _Atomic uint64_t batches;
    _Atomic uint64_t batch_ops;
    _Atomic uint64_t rejected_queue_full;
    _Atomic uint64_t rejected_full;    /* 409 registry_full (--max_instances) */
    _Atomic int64_t view_ignored_rows; /* table rows the view ignored at the last full read */
    _Atomic uint64_t rejected_auth;
    _Atomic uint64_t refreshes;
    _Atomic uint64_t full_refreshes;
    _Atomic uint64_t lists_offloaded; /* whole lists built on the lists thread */
    _Atomic uint64_t refresh_errors;
    _Atomic uint64_t sweep_marked;
    _Atomic uint64_t sweep_deleted;
    _Atomic uint64_t db_reconnects;
    _Atomic uint64_t db_retries;
    _Atomic int64_t watchers;
    _Atomic uint64_t settings_writes; /* committed through this controller */
    _Atomic uint64_t settings_errors; /* failed settings reads */
    struct metrics_hist commit_latency;
    struct metrics_hist write_latency;        /* enqueue to commit, per job */
    struct metrics_hist refresh_latency;      /* every table read (polls and full), read only */
    struct metrics_hist full_refresh_latency; /* a full refresh: read, merge and publish */
};

struct ctl_loop;

struct ctl_server {
    struct ctl_config *cfg;
    struct reg_config regcfg;
    struct http_server *http; /* the server it is mounted on (not owned) */
    struct ctl_loop **loops;  /* per loop of `http`, by http_loop_index */
    int nloops;
    struct ctl_view *view;
    struct ctl_writer *writer;
    struct ctl_refresher *refresher;
    struct ctl_settings *settings;
    struct ctl_lists *lists;
    struct netaddr_list trusted;
    struct netaddr_list instance_nets;
    struct ctl_db_state db;
    struct ctl_metrics metrics;
    int64_t started_mono_ms;
    _Atomic int stopping;
};

extern const struct http_route ctl_routes[];

/* Route flags */
enum { CTL_ROUTE_WRITE = 1, CTL_ROUTE_READ = 2 };

bool ctl_api_guard(struct http_request *req, void *arg);
/* The controller's read rule for a request another service answers with
 * the registry's data (the webserver's dashboard and /metrics): with
 * --protect_reads, the secret or a trusted peer. Replies 401/403 and
 * returns false when refused. Loop thread. */
bool ctl_api_read_allowed(struct ctl_server *srv, struct http_request *req);
void ctl_api_access_log(struct http_request *req, int status, size_t len, int64_t us, void *arg);
struct ctl_loop *ctl_api_loop_new(struct ctl_server *srv, struct http_loop *loop);
/* Answers the watches parked on `loop` with 503 (shutdown). */
void ctl_api_loop_drain(struct http_loop *loop, void *arg);
/* Wakes every loop's watchers (view thread). */
void ctl_api_view_changed(void *arg);
/* Completion of a write job (loop thread). */
void ctl_api_job_done(struct http_task *t);

void ctl_db_note(struct ctl_server *srv, int rc, const char *err);

/* The controller's own /metrics samples (registry, view, watches), without
 * the HTTP server's (metrics_write_http). Loop thread. Returns 0 or -1. */
int ctl_api_write_metrics(struct ctl_server *srv, struct buf *b);
/* GET /api/health's object for the controller; its status "ok" or
 * "degraded" is returned as *ok. Returns 0 or -1 (the buffer's cap). */
struct jw;
int ctl_api_write_health(struct ctl_server *srv, struct jw *w, bool *ok);

/* ---- the controller as a component (ctl_server.c) ---------------------------- *
 *
 * A process runs a controller on its own (ctl_main) or mounts it beside
 * other services on one HTTP server (the webserver). The life cycle, all
 * on the process's main thread:
 *
 *   ctl_server_open   networks, view, writer and refresher; migrates the
 *                     schema and loads the view (a configuration error the
 *                     database reports, or a SQLite file that cannot be
 *                     opened, is fatal here: EX_CONFIG)
 *   ctl_server_mount  its routes and per-loop state on `http` (before run)
 *   ctl_server_start  the view tick, writer and refresher threads
 *   ... http_server_run ...
 *   ctl_server_stop   stops every thread that posts to the loops and
 *                     answers watches still parked (after run returned)
 *   ... http_server_free (runs completions still queued) ...
 *   ctl_server_free   frees the rest (NULL-safe)
 *
 * The int functions return 0 or a sysexits code, having logged why. `cfg`
 * must outlive the server. */
int ctl_server_open(struct ctl_config *cfg, struct ctl_server **out);
int ctl_server_mount(struct ctl_server *srv, struct http_server *http);
int ctl_server_start(struct ctl_server *srv);
void ctl_server_stop(struct ctl_server *srv);
void ctl_server_free(struct ctl_server *srv);
/* "sqlite:<path>" or "mysql:<user>@<host>:<port>/<db>" for logs (no password). */
void ctl_server_describe_db(const struct ctl_server *srv, char *out, size_t cap);

/* Runs a controller until SIGTERM/SIGINT. Returns a process exit code. */
int ctl_main(int argc, char **argv);

#endif
