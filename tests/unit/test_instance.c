/* SPDX-License-Identifier: MIT
 *
 * test_instance.c - controller/ctl_instance.c: the bodies and query strings
 * DB-GPT's clients send, byte for byte, roster's extensions (heartbeat
 * interval -> lease, load), and for every field the wrong types and ranges
 * (422) as opposed to malformed JSON (400). Also the model-name and host
 * rules and the admin body (weight null clears the override).
 */
#include <string.h>

#include "check.h"
#include "ctl.h"

/* What DB-GPT's ModelRegistryClient posts (register and heartbeat). */
#define DBGPT_BODY                                                                                 \
    "{\"model_name\":\"vicuna@llm\",\"host\":\"127.0.0.1\",\"port\":8001,\"weight\":1.0,"          \
    "\"check_healthy\":true,\"healthy\":false,\"enabled\":true,\"prompt_template\":null,"          \
    "\"last_heartbeat\":null,\"remove_from_registry\":false}"

/* What it sends as the query of DELETE /api/controller/models. */
#define DBGPT_QUERY                                                                                \
    "model_name=vicuna%40llm&host=127.0.0.1&port=8001&weight=1.0&check_healthy=True&"              \
    "healthy=False&enabled=True&prompt_template=&last_heartbeat=&remove_from_registry=False"

static int
parse_inst(const char *body, struct reg_instance *in, int *status, char *err, size_t errcap)
{
    return ctl_instance_parse_json(body, strlen(body), in, status, err, errcap);
}

/* Expects `body` to be refused with `status` and `reason` in the message. */
#define EXPECT_INST_FAIL(body, want_status, reason)                                                \
    do {                                                                                           \
        struct reg_instance fi_;                                                                   \
        int fst_ = 0;                                                                              \
        char ferr_[256] = "";                                                                      \
        CHECK_EQ_INT(parse_inst((body), &fi_, &fst_, ferr_, sizeof(ferr_)), -1);                   \
        if (fst_ != (want_status) || !strstr(ferr_, (reason))) {                                   \
            fprintf(stderr, "%s\n  -> %d \"%s\", want %d \"%s\"\n", (body), fst_, ferr_,           \
                    (want_status), (reason));                                                      \
            CHECK(0);                                                                              \
        }                                                                                          \
    } while (0)

static void
test_dbgpt_body(void)
{
    struct reg_instance in;
    int status = 0;
    char err[256];

    CHECK_EQ_INT(parse_inst(DBGPT_BODY, &in, &status, err, sizeof(err)), 0);
    CHECK_EQ_STR(in.model_name, "vicuna@llm");
    CHECK_EQ_STR(in.host, "127.0.0.1");
    CHECK_EQ_INT(in.port, 8001);
    CHECK(in.weight == 1.0);
    CHECK(in.check_healthy == true);
    CHECK(in.enabled == true);
    CHECK(in.has_prompt_template == false);
    CHECK_EQ_INT(in.lease_ms, 0); /* DB-GPT declares no interval: the default lease */
    CHECK_EQ_INT(in.in_flight, 0);
    CHECK_EQ_INT(in.capacity, 0);
    CHECK(in.has_weight_override == false);
}

static void
test_dbgpt_variants(void)
{
    struct reg_instance in;
    int status = 0;
    char err[256];

    /* the minimum: the key only; the rest takes DB-GPT's defaults */
    CHECK_EQ_INT(parse_inst("{\"model_name\":\"m@w\",\"host\":\"h\",\"port\":1}", &in, &status, err,
                            sizeof(err)),
                 0);
    CHECK(in.weight == 1.0);
    CHECK(in.check_healthy == true);
    CHECK(in.enabled == true);
    /* heartbeats carry last_heartbeat as a string; templates are strings */
    CHECK_EQ_INT(parse_inst("{\"model_name\":\"chatglm2-6b@llm\",\"host\":\"worker-1.local\","
                            "\"port\":65535,\"weight\":0,\"check_healthy\":false,"
                            "\"enabled\":false,\"prompt_template\":\"vicuna_v1.1\","
                            "\"last_heartbeat\":\"2023-09-12T23:04:31.287000\","
                            "\"healthy\":true,\"remove_from_registry\":true}",
                            &in, &status, err, sizeof(err)),
                 0);
    CHECK_EQ_STR(in.host, "worker-1.local");
    CHECK_EQ_INT(in.port, 65535);
    CHECK(in.weight == 0.0);
    CHECK(in.check_healthy == false);
    CHECK(in.enabled == false);
    CHECK(in.has_prompt_template == true);
    CHECK_EQ_STR(in.prompt_template, "vicuna_v1.1");
    /* an epoch number for last_heartbeat, an integer-valued float port, an
     * IPv6 host, unknown fields (ignored, as FastAPI does) */
    CHECK_EQ_INT(parse_inst("{\"model_name\":\"m@w\",\"host\":\"::1\",\"port\":8001.0,"
                            "\"last_heartbeat\":1694559871.287,\"weight\":1e6,"
                            "\"future_field\":{\"x\":[1,2,{\"y\":null}]},\"prompt_template\":\"\"}",
                            &in, &status, err, sizeof(err)),
                 0);
    CHECK_EQ_STR(in.host, "::1");
    CHECK_EQ_INT(in.port, 8001);
    CHECK(in.weight == 1e6);
    CHECK(in.has_prompt_template == true);
    CHECK_EQ_STR(in.prompt_template, "");
}

static void
test_roster_extensions(void)
{
    struct reg_instance in;
    int status = 0;
    char err[256];

    CHECK_EQ_INT(parse_inst("{\"model_name\":\"m@w\",\"host\":\"h\",\"port\":1,"
                            "\"heartbeat_interval_secs\":5,"
                            "\"load\":{\"in_flight\":3,\"queue_length\":7,\"capacity\":16}}",
                            &in, &status, err, sizeof(err)),
                 0);
    CHECK_EQ_INT(in.lease_ms, 15000); /* three intervals */
    CHECK_EQ_INT(in.in_flight, 3);
    CHECK_EQ_INT(in.queue_length, 7);
    CHECK_EQ_INT(in.capacity, 16);

    CHECK_EQ_INT(parse_inst("{\"model_name\":\"m@w\",\"host\":\"h\",\"port\":1,"
                            "\"heartbeat_interval_secs\":0.05,\"load\":{\"capacity\":1e9}}",
                            &in, &status, err, sizeof(err)),
                 0);
    CHECK_EQ_INT(in.lease_ms, 150);
    CHECK_EQ_INT(in.capacity, 1000000000);
    CHECK_EQ_INT(in.in_flight, 0); /* absent load fields stay 0 */

    CHECK_EQ_INT(parse_inst("{\"model_name\":\"m@w\",\"host\":\"h\",\"port\":1,"
                            "\"heartbeat_interval_secs\":3600,\"load\":{}}",
                            &in, &status, err, sizeof(err)),
                 0);
    CHECK_EQ_INT(in.lease_ms, 10800000);
    CHECK_EQ_INT(parse_inst("{\"model_name\":\"m@w\",\"host\":\"h\",\"port\":1,"
                            "\"heartbeat_interval_secs\":null,\"load\":null}",
                            &in, &status, err, sizeof(err)),
                 0);
    CHECK_EQ_INT(in.lease_ms, 0);
}

#define KEY "\"model_name\":\"m@w\",\"host\":\"h\",\"port\":1"

static void
test_wrong_types_422(void)
{
    /* every known field with the wrong type or out of its range */
    EXPECT_INST_FAIL("{\"host\":\"h\",\"port\":1}", 422, "'model_name' is required");
    EXPECT_INST_FAIL("{\"model_name\":null,\"host\":\"h\",\"port\":1}", 422,
                     "'model_name' is required");
    EXPECT_INST_FAIL("{\"model_name\":1,\"host\":\"h\",\"port\":1}", 422, "'model_name' must");
    EXPECT_INST_FAIL("{\"model_name\":\"vicuna\",\"host\":\"h\",\"port\":1}", 422,
                     "'model_name' must");
    EXPECT_INST_FAIL("{\"model_name\":\"m@w\",\"port\":1}", 422, "'host' is required");
    EXPECT_INST_FAIL("{\"model_name\":\"m@w\",\"host\":[],\"port\":1}", 422, "'host' must");
    EXPECT_INST_FAIL("{\"model_name\":\"m@w\",\"host\":\"http://h\",\"port\":1}", 422,
                     "'host' must");
    EXPECT_INST_FAIL("{\"model_name\":\"m@w\",\"host\":\"h\"}", 422, "'port' is required");
    EXPECT_INST_FAIL("{\"model_name\":\"m@w\",\"host\":\"h\",\"port\":\"8001\"}", 422,
                     "'port' must be an integer");
    EXPECT_INST_FAIL("{\"model_name\":\"m@w\",\"host\":\"h\",\"port\":0}", 422, "'port' must");
    EXPECT_INST_FAIL("{\"model_name\":\"m@w\",\"host\":\"h\",\"port\":65536}", 422, "'port' must");
    EXPECT_INST_FAIL("{\"model_name\":\"m@w\",\"host\":\"h\",\"port\":80.5}", 422, "'port' must");
    EXPECT_INST_FAIL("{\"model_name\":\"m@w\",\"host\":\"h\",\"port\":-80}", 422, "'port' must");
    EXPECT_INST_FAIL("{\"model_name\":\"m@w\",\"host\":\"h\",\"port\":1e400}", 422, "'port' must");
    EXPECT_INST_FAIL("{\"model_name\":\"m@w\",\"host\":\"h\",\"port\":true}", 422, "'port' must");
    EXPECT_INST_FAIL("{" KEY ",\"weight\":\"1.0\"}", 422, "'weight'");
    EXPECT_INST_FAIL("{" KEY ",\"weight\":-0.5}", 422, "'weight'");
    EXPECT_INST_FAIL("{" KEY ",\"weight\":1000001}", 422, "'weight'");
    EXPECT_INST_FAIL("{" KEY ",\"weight\":1e400}", 422, "'weight'");
    EXPECT_INST_FAIL("{" KEY ",\"weight\":true}", 422, "'weight'");
    EXPECT_INST_FAIL("{" KEY ",\"check_healthy\":1}", 422, "'check_healthy' must be true or false");
    EXPECT_INST_FAIL("{" KEY ",\"check_healthy\":\"true\"}", 422, "'check_healthy'");
    EXPECT_INST_FAIL("{" KEY ",\"enabled\":\"True\"}", 422, "'enabled'");
    EXPECT_INST_FAIL("{" KEY ",\"healthy\":0}", 422, "'healthy'");
    EXPECT_INST_FAIL("{" KEY ",\"remove_from_registry\":\"False\"}", 422, "'remove_from_registry'");
    EXPECT_INST_FAIL("{" KEY ",\"prompt_template\":1}", 422, "'prompt_template' must be a string");
    EXPECT_INST_FAIL("{" KEY ",\"last_heartbeat\":true}", 422, "'last_heartbeat'");
    EXPECT_INST_FAIL("{" KEY ",\"last_heartbeat\":{}}", 422, "'last_heartbeat'");
    EXPECT_INST_FAIL("{" KEY ",\"heartbeat_interval_secs\":0.04}", 422, "heartbeat_interval_secs");
    EXPECT_INST_FAIL("{" KEY ",\"heartbeat_interval_secs\":3600.5}", 422,
                     "heartbeat_interval_secs");
    EXPECT_INST_FAIL("{" KEY ",\"heartbeat_interval_secs\":\"5\"}", 422, "heartbeat_interval_secs");
    EXPECT_INST_FAIL("{" KEY ",\"load\":[]}", 422, "'load' must be an object");
    EXPECT_INST_FAIL("{" KEY ",\"load\":5}", 422, "'load' must be an object");
    EXPECT_INST_FAIL("{" KEY ",\"load\":{\"in_flight\":-1}}", 422, "'in_flight'");
    EXPECT_INST_FAIL("{" KEY ",\"load\":{\"queue_length\":1.5}}", 422, "'queue_length'");
    EXPECT_INST_FAIL("{" KEY ",\"load\":{\"capacity\":1000000001}}", 422, "'capacity'");
    EXPECT_INST_FAIL("{" KEY ",\"load\":{\"capacity\":\"8\"}}", 422, "'capacity'");
    /* the body itself must be an object */
    EXPECT_INST_FAIL("[]", 422, "JSON object");
    EXPECT_INST_FAIL("null", 422, "JSON object");
    EXPECT_INST_FAIL("\"m@w\"", 422, "JSON object");
    EXPECT_INST_FAIL("42", 422, "JSON object");
}

static void
test_lengths_422(void)
{
    char body[1024];
    char name[200];
    char tpl[200];

    /* a 128-byte name passes, 129 fails */
    memset(name, 'a', 128);
    name[126] = '@';
    name[128] = '\0';
    snprintf(body, sizeof(body), "{\"model_name\":\"%s\",\"host\":\"h\",\"port\":1}", name);
    {
        struct reg_instance in;
        int status;
        char err[256];
        CHECK_EQ_INT(parse_inst(body, &in, &status, err, sizeof(err)), 0);
        CHECK_EQ_STR(in.model_name, name);
    }
    name[128] = 'a';
    name[129] = '\0';
    snprintf(body, sizeof(body), "{\"model_name\":\"%s\",\"host\":\"h\",\"port\":1}", name);
    EXPECT_INST_FAIL(body, 422, "'model_name'");

    memset(tpl, 't', 128);
    tpl[128] = '\0';
    snprintf(body, sizeof(body), "{" KEY ",\"prompt_template\":\"%s\"}", tpl);
    {
        struct reg_instance in;
        int status;
        char err[256];
        CHECK_EQ_INT(parse_inst(body, &in, &status, err, sizeof(err)), 0);
        CHECK_EQ_STR(in.prompt_template, tpl);
    }
    tpl[128] = 't';
    tpl[129] = '\0';
    snprintf(body, sizeof(body), "{" KEY ",\"prompt_template\":\"%s\"}", tpl);
    EXPECT_INST_FAIL(body, 422, "longer than 128 bytes");
}

static void
test_malformed_400(void)
{
    EXPECT_INST_FAIL("", 400, "empty body");
    EXPECT_INST_FAIL("{", 400, "malformed");
    EXPECT_INST_FAIL("{\"model_name\":\"m@w\",}", 400, "malformed");
    EXPECT_INST_FAIL(DBGPT_BODY "x", 400, "trailing data");
    EXPECT_INST_FAIL(DBGPT_BODY DBGPT_BODY, 400, "trailing data");
    EXPECT_INST_FAIL("{" KEY ",\"port\":2}", 400, "duplicate key");
    EXPECT_INST_FAIL("{" KEY ",\"x\":\"\xff\"}", 400, "invalid UTF-8");
    EXPECT_INST_FAIL("{" KEY ",\"x\":\"\\u0000\"}", 400, "\\u0000");
    EXPECT_INST_FAIL("{" KEY ",\"x\":[[[[[[[[1]]]]]]]]}", 400, "nesting too deep");
    /* embedded NUL: the length counts, not the terminator */
    {
        static const char body[] = "{\"model_name\":\"m@w\",\"host\":\"h\",\"port\":1}\0junk";
        struct reg_instance in;
        int status = 0;
        char err[256];
        CHECK_EQ_INT(
            ctl_instance_parse_json(body, sizeof(body) - 1, &in, &status, err, sizeof(err)), -1);
        CHECK_EQ_INT(status, 400);
        CHECK_EQ_INT(ctl_instance_parse_json(body, strlen(body), &in, &status, err, sizeof(err)),
                     0);
    }
}

static void
test_control_chars_in_strings(void)
{
    /* escaped control characters decode into the string: refused there */
    EXPECT_INST_FAIL("{\"model_name\":\"m\\n@w\",\"host\":\"h\",\"port\":1}", 422, "'model_name'");
    EXPECT_INST_FAIL("{\"model_name\":\"m@w\",\"host\":\"h\\t\",\"port\":1}", 422, "'host'");
}

static void
test_valid_model_name(void)
{
    static const char *const ok[] = {
        "vicuna@llm", "m@w",        "chatglm2-6b@llm",  "text2vec@text2vec",
        "a b@c",      "\xc3\xa9@w", "Qwen/Qwen-7B@llm",
    };
    static const char *const bad[] = {
        "",      "vicuna", "@llm",    "vicuna@", "a@b@c",  " a@b", "a@b ",
        "a\t@b", "a@b\n",  "a\x7f@b", "\xff@w",  "a@\xc3", "@",
    };
    char name[200];

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (!ctl_valid_model_name(ok[i])) {
            fprintf(stderr, "refused '%s'\n", ok[i]);
            CHECK(0);
        }
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (ctl_valid_model_name(bad[i])) {
            fprintf(stderr, "accepted '%s'\n", bad[i]);
            CHECK(0);
        }
    }
    memset(name, 'x', sizeof(name));
    name[0] = 'm';
    name[1] = '@';
    name[REG_NAME_MAX] = '\0';
    CHECK(ctl_valid_model_name(name)); /* exactly the limit */
    name[REG_NAME_MAX] = 'x';
    name[REG_NAME_MAX + 1] = '\0';
    CHECK(!ctl_valid_model_name(name));
    name[REG_NAME_MAX + 1] = 'x';
    name[sizeof(name) - 1] = '\0';
    CHECK(!ctl_valid_model_name(name)); /* far longer */
}

static void
test_valid_host(void)
{
    static const char *const ok[] = {
        "127.0.0.1",
        "localhost",
        "worker-1.example.com",
        "my_host",
        "::1",
        "fe80::1",
        "::ffff:10.0.0.1",
        "10.0.0.1",
        "h",
        "H0ST",
        "1host",
    };
    static const char *const bad[] = {
        "",   "http://h", "h/path", "user@h",   "h:8001",  "[::1]",        "h h", " h",  "h ",
        ".h", "-h",       "h\n",    "\xc3\xa9", "1::2::3", "fe80::1%eth0", "h?x", "h#x",
    };
    char host[200];

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (!ctl_valid_host(ok[i])) {
            fprintf(stderr, "refused '%s'\n", ok[i]);
            CHECK(0);
        }
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (ctl_valid_host(bad[i])) {
            fprintf(stderr, "accepted '%s'\n", bad[i]);
            CHECK(0);
        }
    }
    memset(host, 'h', sizeof(host));
    host[REG_HOST_MAX] = '\0';
    CHECK(ctl_valid_host(host));
    host[REG_HOST_MAX] = 'h';
    host[REG_HOST_MAX + 1] = '\0';
    CHECK(!ctl_valid_host(host));
}

static void
test_delete_dbgpt_query(void)
{
    struct reg_instance in;
    bool rm = true;
    char err[256];

    CHECK_EQ_INT(ctl_instance_parse_delete(DBGPT_QUERY, &in, &rm, err, sizeof(err)), 0);
    CHECK_EQ_STR(in.model_name, "vicuna@llm");
    CHECK_EQ_STR(in.host, "127.0.0.1");
    CHECK_EQ_INT(in.port, 8001);
    CHECK(rm == false);

    CHECK_EQ_INT(ctl_instance_parse_delete("model_name=vicuna%40llm&host=127.0.0.1&port=8001&"
                                           "remove_from_registry=True",
                                           &in, &rm, err, sizeof(err)),
                 0);
    CHECK(rm == true);
    /* the key alone; an empty remove_from_registry means false */
    CHECK_EQ_INT(ctl_instance_parse_delete("port=1&host=h&model_name=m@w&remove_from_registry=",
                                           &in, &rm, err, sizeof(err)),
                 0);
    CHECK(rm == false);
    CHECK_EQ_STR(in.model_name, "m@w"); /* a raw '@' works too */
    /* IPv6 host, percent-encoded */
    CHECK_EQ_INT(ctl_instance_parse_delete("model_name=m%40w&host=%3A%3A1&port=65535", &in, &rm,
                                           err, sizeof(err)),
                 0);
    CHECK_EQ_STR(in.host, "::1");
    CHECK_EQ_INT(in.port, 65535);
}

static void
test_delete_bad(void)
{
    static const struct {
        const char *q;
        const char *reason;
    } bad[] = {
        {"", "'model_name'"},
        {"host=h&port=1", "'model_name'"},
        {"model_name=&host=h&port=1", "'model_name'"},
        {"model_name=vicuna&host=h&port=1", "'model_name'"},
        {"model_name=m%40w&port=1", "'host'"},
        {"model_name=m%40w&host=&port=1", "'host'"},
        {"model_name=m%40w&host=h%2Fx&port=1", "'host'"},
        {"model_name=m%40w&host=h", "'port'"},
        {"model_name=m%40w&host=h&port=", "'port'"},
        {"model_name=m%40w&host=h&port=0", "'port'"},
        {"model_name=m%40w&host=h&port=65536", "'port'"},
        {"model_name=m%40w&host=h&port=8001.0", "'port'"},
        {"model_name=m%40w&host=h&port=+80", "'port'"},
        {"model_name=m%40w&host=h&port=%2080", "'port'"},
        {"model_name=m%40w&host=h&port=1&remove_from_registry=maybe", "'remove_from_registry'"},
        {"model_name=m%40w&host=h&port=1&port=2", "repeated"},
        {"model_name=m%40w&host=h&port=1&x=%zz", "percent"},
        {"model_name=m%40w%00&host=h&port=1", "percent"},
        {"model_name=m%40w%ff&host=h&port=1", "UTF-8"},
    };
    struct reg_instance in;
    bool rm;
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (ctl_instance_parse_delete(bad[i].q, &in, &rm, err, sizeof(err)) != -1 ||
            !strstr(err, bad[i].reason)) {
            fprintf(stderr, "'%s' -> \"%s\", want \"%s\"\n", bad[i].q, err, bad[i].reason);
            CHECK(0);
        }
    }
}

static int
parse_admin(const char *body, struct reg_op *op, int *status, char *err, size_t errcap)
{
    return ctl_admin_parse_json(body, strlen(body), op, status, err, errcap);
}

static void
test_admin(void)
{
    struct reg_op op;
    int status = 0;
    char err[256];

    CHECK_EQ_INT(parse_admin("{" KEY ",\"weight\":null}", &op, &status, err, sizeof(err)), 0);
    CHECK_EQ_INT(op.kind, REG_OP_ADMIN);
    CHECK_EQ_INT(op.admin_weight, REG_WEIGHT_CLEAR);
    CHECK_EQ_INT(op.admin_enabled, -1);
    CHECK_EQ_STR(op.inst.model_name, "m@w");
    CHECK_EQ_STR(op.inst.host, "h");
    CHECK_EQ_INT(op.inst.port, 1);

    CHECK_EQ_INT(parse_admin("{" KEY ",\"weight\":2.5}", &op, &status, err, sizeof(err)), 0);
    CHECK_EQ_INT(op.admin_weight, REG_WEIGHT_SET);
    CHECK(op.admin_weight_value == 2.5);
    CHECK_EQ_INT(op.admin_enabled, -1);

    CHECK_EQ_INT(parse_admin("{" KEY ",\"weight\":0}", &op, &status, err, sizeof(err)), 0);
    CHECK_EQ_INT(op.admin_weight, REG_WEIGHT_SET);
    CHECK(op.admin_weight_value == 0.0);

    CHECK_EQ_INT(parse_admin("{" KEY ",\"enabled\":false}", &op, &status, err, sizeof(err)), 0);
    CHECK_EQ_INT(op.admin_weight, REG_WEIGHT_KEEP);
    CHECK_EQ_INT(op.admin_enabled, 0);

    CHECK_EQ_INT(
        parse_admin("{" KEY ",\"enabled\":true,\"weight\":1e6}", &op, &status, err, sizeof(err)),
        0);
    CHECK_EQ_INT(op.admin_enabled, 1);
    CHECK_EQ_INT(op.admin_weight, REG_WEIGHT_SET);
    CHECK(op.admin_weight_value == 1e6);

    /* enabled: null means "keep" */
    CHECK_EQ_INT(
        parse_admin("{" KEY ",\"enabled\":null,\"weight\":3}", &op, &status, err, sizeof(err)), 0);
    CHECK_EQ_INT(op.admin_enabled, -1);
}

static void
test_admin_bad(void)
{
    static const struct {
        const char *body;
        int status;
        const char *reason;
    } bad[] = {
        {"{" KEY "}", 422, "nothing to change"},
        {"{" KEY ",\"enabled\":null}", 422, "nothing to change"},
        {"{" KEY ",\"weight\":\"2\"}", 422, "'weight'"},
        {"{" KEY ",\"weight\":-1}", 422, "'weight'"},
        {"{" KEY ",\"weight\":1000000.5}", 422, "'weight'"},
        {"{" KEY ",\"weight\":false}", 422, "'weight'"},
        {"{" KEY ",\"enabled\":1}", 422, "'enabled'"},
        {"{" KEY ",\"enabled\":\"true\"}", 422, "'enabled'"},
        {"{\"host\":\"h\",\"port\":1,\"enabled\":true}", 422, "'model_name'"},
        {"{\"model_name\":\"m@w\",\"host\":\"h\",\"port\":0,\"enabled\":true}", 422, "'port'"},
        {"[]", 422, "JSON object"},
        {"", 400, "empty body"},
        {"{\"enabled\":true", 400, "malformed"},
        {"{" KEY ",\"enabled\":true,\"enabled\":false}", 400, "duplicate key"},
    };
    struct reg_op op;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int status = 0;
        char err[256] = "";
        if (parse_admin(bad[i].body, &op, &status, err, sizeof(err)) != -1 ||
            status != bad[i].status || !strstr(err, bad[i].reason)) {
            fprintf(stderr, "%s -> %d \"%s\", want %d \"%s\"\n", bad[i].body, status, err,
                    bad[i].status, bad[i].reason);
            CHECK(0);
        }
    }
}

int
main(void)
{
    CHECK_RUN(test_dbgpt_body);
    CHECK_RUN(test_dbgpt_variants);
    CHECK_RUN(test_roster_extensions);
    CHECK_RUN(test_wrong_types_422);
    CHECK_RUN(test_lengths_422);
    CHECK_RUN(test_malformed_400);
    CHECK_RUN(test_control_chars_in_strings);
    CHECK_RUN(test_valid_model_name);
    CHECK_RUN(test_valid_host);
    CHECK_RUN(test_delete_dbgpt_query);
    CHECK_RUN(test_delete_bad);
    CHECK_RUN(test_admin);
    CHECK_RUN(test_admin_bad);
    return check_summary();
}
