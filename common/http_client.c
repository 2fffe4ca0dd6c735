/* SPDX-License-Identifier: MIT
 *
 * http_client.c - see http_client.h.
 */
#include "http_client.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

static size_t
on_data(char *p, size_t size, size_t n, void *arg)
{
    struct buf *b = arg;

    if (buf_append(b, p, size * n) != 0) {
        return 0; /* over the cap: abort the transfer */
    }
    return size * n;
}

static int
on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    const _Atomic bool *cancel = arg;

    (void)a;
    (void)b;
    (void)c;
    (void)d;
    return atomic_load(cancel) ? 1 : 0; /* nonzero aborts the transfer */
}

int
http_client_request(const char *method, const char *url, const char *body, size_t body_len,
                    const char *const *headers, int timeout_ms, size_t max_body,
                    struct http_client_response *resp, char *err, size_t errcap)
{
    return http_client_request_cancel(method, url, body, body_len, headers, timeout_ms, max_body,
                                      NULL, resp, err, errcap);
}

int
http_client_request_cancel(const char *method, const char *url, const char *body, size_t body_len,
                           const char *const *headers, int timeout_ms, size_t max_body,
                           const _Atomic bool *cancel, struct http_client_response *resp, char *err,
                           size_t errcap)
{
    struct curl_slist *hl = NULL;
    CURL *h = curl_easy_init();
    CURLcode cc;
    int rc = -1;

    resp->status = 0;
    buf_init(&resp->body, max_body);
    if (!h) {
        snprintf(err, errcap, "cannot create a curl handle");
        return -1;
    }
    for (const char *const *p = headers; p && *p; p++) {
        struct curl_slist *n = curl_slist_append(hl, *p);
        if (!n) {
            snprintf(err, errcap, "out of memory");
            goto out;
        }
        hl = n;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_ms < 2000 ? timeout_ms : 2000));
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp->body);
    if (hl) {
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    }
    if (cancel) {
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)cancel);
    }
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)body_len);
    }
    cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        snprintf(err, errcap, "%s",
                 cc == CURLE_ABORTED_BY_CALLBACK ? "cancelled" : curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    rc = 0;
out:
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    if (rc != 0) {
        buf_cleanup(&resp->body);
    }
    return rc;
}

void
http_client_response_cleanup(struct http_client_response *resp)
{
    buf_cleanup(&resp->body);
}
