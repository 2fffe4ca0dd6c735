/* SPDX-License-Identifier: MIT
 *
 * fuzz_instance.c - controller/ctl_instance.c: the same bytes as a
 * register/heartbeat body (ctl_instance_parse_json), an admin body
 * (ctl_admin_parse_json) and a DELETE query string
 * (ctl_instance_parse_delete, on a NUL-terminated copy).
 *
 * Invariants checked: a 400 means json_parse refuses the bytes and a 422
 * means it accepts them; whatever is accepted satisfies the registry's own
 * validation (reg_instance_validate) and the field rules (name, host, port,
 * weight, lease, load); an accepted admin body changes something.
 */
#include <math.h>
#include <string.h>

#include "ctl.h"
#include "fuzz.h"
#include "json_check.h"

static void
check_key(const struct reg_instance *in)
{
    FUZZ_ASSERT(ctl_valid_model_name(in->model_name));
    FUZZ_ASSERT(ctl_valid_host(in->host));
    FUZZ_ASSERT(in->port >= 1 && in->port <= 65535);
}

static void
check_status(int rc, int status, const char *body, size_t len)
{
    cJSON *root = NULL;
    char err[128];
    int parsed;

    if (rc == 0) {
        return;
    }
    FUZZ_ASSERT(status == 400 || status == 422);
    parsed = json_parse(body, len, 8, &root, err, sizeof(err));
    cJSON_Delete(root);
    FUZZ_ASSERT(status == 400 ? parsed != 0 : parsed == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    struct reg_instance in;
    struct reg_op op;
    int status = 0;
    bool rm = false;
    char err[256];
    char *qs;
    int rc;

    err[0] = '\0';
    rc = ctl_instance_parse_json(body, size, &in, &status, err, sizeof(err));
    check_status(rc, status, body, size);
    if (rc == 0) {
        check_key(&in);
        FUZZ_ASSERT(isfinite(in.weight) && in.weight >= 0 && in.weight <= 1e6);
        FUZZ_ASSERT(in.lease_ms == 0 || (in.lease_ms >= 150 && in.lease_ms <= 10800000));
        FUZZ_ASSERT(in.in_flight >= 0 && in.queue_length >= 0 && in.capacity >= 0);
        FUZZ_ASSERT(strlen(in.prompt_template) <= REG_TEMPLATE_MAX);
        FUZZ_ASSERT(in.has_prompt_template || in.prompt_template[0] == '\0');
        FUZZ_ASSERT(reg_instance_validate(&in) == REG_OK);
    } else {
        FUZZ_ASSERT(err[0] != '\0');
    }

    err[0] = '\0';
    rc = ctl_admin_parse_json(body, size, &op, &status, err, sizeof(err));
    check_status(rc, status, body, size);
    if (rc == 0) {
        check_key(&op.inst);
        FUZZ_ASSERT(op.kind == REG_OP_ADMIN);
        FUZZ_ASSERT(op.admin_weight != REG_WEIGHT_KEEP || op.admin_enabled >= 0);
        FUZZ_ASSERT(op.admin_enabled >= -1 && op.admin_enabled <= 1);
        if (op.admin_weight == REG_WEIGHT_SET) {
            FUZZ_ASSERT(isfinite(op.admin_weight_value) && op.admin_weight_value >= 0 &&
                        op.admin_weight_value <= 1e6);
        }
    } else {
        FUZZ_ASSERT(err[0] != '\0');
    }

    qs = malloc(size + 1);
    if (!qs) {
        return 0;
    }
    memcpy(qs, data, size);
    qs[size] = '\0';
    err[0] = '\0';
    rc = ctl_instance_parse_delete(qs, &in, &rm, err, sizeof(err));
    if (rc == 0) {
        check_key(&in);
        FUZZ_ASSERT(reg_instance_validate(&in) == REG_OK);
    } else {
        FUZZ_ASSERT(err[0] != '\0');
    }
    free(qs);
    return 0;
}
