/* SPDX-License-Identifier: MIT
 *
 * curl_loop.h - libcurl's multi interface driven by a libevent loop, for
 * HTTP calls made on an event-loop thread (the worker's upstream proxy, the
 * apiserver's calls to workers). Never blocks: curl tells the loop which
 * sockets to watch and when to wake it (CURLMOPT_SOCKETFUNCTION and
 * CURLMOPT_TIMERFUNCTION), and transfers progress in curl's callbacks.
 *
 * The multi handle keeps curl's connection cache, so consecutive transfers
 * to the same host reuse keep-alive connections.
 *
 * Ownership: the caller creates and configures each easy handle and owns
 * it throughout; curl_loop_add lends it to the loop until `done` runs or
 * curl_loop_remove is called. Loop thread only, all of it.
 */
#ifndef ROSTER_CURL_LOOP_H
#define ROSTER_CURL_LOOP_H

#include <curl/curl.h>

struct event_base;
struct curl_loop;

/* Called once per transfer that ends (success or failure), after the easy
 * handle has left the loop; the callee may free it, add it again, or add
 * and remove others. `rc` is curl's result (CURLE_OK: a response arrived,
 * whatever its status). */
typedef void curl_loop_done_fn(CURL *easy, CURLcode rc, void *arg);

/* NULL when out of memory. curl_global_init must have run. */
struct curl_loop *curl_loop_new(struct event_base *base);

/* Starts a transfer. Returns 0, or -1 (curl refused the handle). */
int curl_loop_add(struct curl_loop *cl, CURL *easy, curl_loop_done_fn *done, void *arg);

/* Cancels a transfer that has not ended: its connection is closed (the
 * peer sees the cancellation) and `done` is not called. Must not be called
 * from inside one of that transfer's own curl callbacks (make the write
 * callback return 0 there instead: the transfer then ends with
 * CURLE_WRITE_ERROR). */
void curl_loop_remove(struct curl_loop *cl, CURL *easy);

/* Transfers in progress. */
int curl_loop_active(const struct curl_loop *cl);

/* Frees the loop; transfers still in it are cancelled (their `done` is not
 * called; their easy handles stay the callers'). NULL-safe. Call it while
 * the event_base still exists. */
void curl_loop_free(struct curl_loop *cl);

#endif
