/* cmd_submit.c: `tpctl submit`: builds a ProvisioningRequest from flags or a JSON file, encodes it
 * (Avro single-object) and produces it to the requests topic with the idempotent producer, as a
 * billing system would. Waits for the PERSISTED delivery reports; prints the request ids. */
#include "cli/cli_common.h"
#include "tp/codec.h"
#include "tp/config.h"
#include "tp/error.h"
#include "tp/ids.h"
#include "tp/kafka.h"
#include "tp/request.h"
#include "tp/stages.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void submit_usage(FILE *out) {
    fprintf(out,
            "usage: tpctl submit [--config FILE] (--file REQUEST.json | --name N --slug S --residency US|EU)\n"
            "         [--region R] [--plan FREE|STARTER|PRO|ENTERPRISE] [--environment prod|staging|dev]\n"
            "         [--seats N] [--storage BYTES] [--request-id ID] [--idempotency-key K]\n"
            "         [--source ADMIN_API|SELF_SERVE_API|BILLING] [--actor-id ID] [--actor-type T]\n"
            "         [--roles a,b] [--correlation-id C] [--traceparent 00-...] [--count N] [--repeat N]\n"
            "  --count N   N requests with slugs S-1..S-N (and request ids ID-1..ID-N when --request-id is given)\n"
            "  --repeat N  produce each record N times (duplicates are provisioned once)\n");
}

typedef struct delivery_state {
    int persisted;
    int failed;
} delivery_state;

static void on_delivery(void *opaque, int err, int32_t partition, int64_t offset) {
    delivery_state *st = opaque;
    (void)partition;
    (void)offset;
    if (err == 0)
        st->persisted++;
    else
        st->failed++;
}

int tpctl_cmd_submit(int argc, char **argv) {
    const char *path = NULL, *file = NULL, *request_id = NULL;
    long long count = 1, repeat = 1, v;
    tp_request base, req;
    tp_config *cfg = NULL;
    tp_codec *codec = NULL;
    tp_producer *producer = NULL;
    delivery_state st = {0, 0};
    char err[512];
    int status = 2, sent = 0;

    memset(&base, 0, sizeof(base));
    base.source = TP_SOURCE_BILLING;
    base.plan = TP_PLAN_STARTER;
    snprintf(base.actor.id, sizeof(base.actor.id), "billing");
    snprintf(base.actor.type, sizeof(base.actor.type), "system");
    base.tenant.residency = TP_RESIDENCY_US;

    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i], *val;
        if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
            submit_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tpctl submit: %s needs a value\n", opt);
            return 2;
        }
        val = argv[++i];
        if (strcmp(opt, "--config") == 0)
            path = val;
        else if (strcmp(opt, "--file") == 0)
            file = val;
        else if (strcmp(opt, "--request-id") == 0)
            request_id = val;
        else if (strcmp(opt, "--name") == 0)
            snprintf(base.tenant.name, sizeof(base.tenant.name), "%s", val);
        else if (strcmp(opt, "--slug") == 0)
            snprintf(base.tenant.slug, sizeof(base.tenant.slug), "%s", val);
        else if (strcmp(opt, "--region") == 0)
            snprintf(base.tenant.region, sizeof(base.tenant.region), "%s", val);
        else if (strcmp(opt, "--idempotency-key") == 0)
            snprintf(base.idempotency_key, sizeof(base.idempotency_key), "%s", val);
        else if (strcmp(opt, "--actor-id") == 0)
            snprintf(base.actor.id, sizeof(base.actor.id), "%s", val);
        else if (strcmp(opt, "--actor-type") == 0)
            snprintf(base.actor.type, sizeof(base.actor.type), "%s", val);
        else if (strcmp(opt, "--traceparent") == 0 && tp_traceparent_valid(val, strlen(val)))
            snprintf(base.traceparent, sizeof(base.traceparent), "%s", val);
        else if (strcmp(opt, "--correlation-id") == 0)
            snprintf(base.correlation_id, sizeof(base.correlation_id), "%s", val);
        else if (strcmp(opt, "--residency") == 0 && tp_residency_parse(val, &base.tenant.residency) == 0)
            ;
        else if (strcmp(opt, "--plan") == 0 && tp_plan_parse(val, &base.plan) == 0)
            ;
        else if (strcmp(opt, "--environment") == 0 && tp_environment_parse(val, &base.environment) == 0)
            ;
        else if (strcmp(opt, "--source") == 0 && tp_source_parse(val, &base.source) == 0)
            ;
        else if (strcmp(opt, "--roles") == 0 && tpctl_set_roles(&base.actor, val) == 0)
            ;
        else if (strcmp(opt, "--seats") == 0 && tpctl_parse_ll(val, 0, 2147483647LL, &v) == 0) {
            base.has_requested_seats = true;
            base.requested_seats = (int32_t)v;
        } else if (strcmp(opt, "--storage") == 0 && tpctl_parse_ll(val, 0, INT64_MAX, &v) == 0) {
            base.has_storage_estimate = true;
            base.storage_estimate_bytes = v;
        } else if (strcmp(opt, "--count") == 0 && tpctl_parse_ll(val, 1, 1000000, &count) == 0)
            ;
        else if (strcmp(opt, "--repeat") == 0 && tpctl_parse_ll(val, 1, 1000, &repeat) == 0)
            ;
        else {
            fprintf(stderr, "tpctl submit: bad option or value: %s %s\n", opt, val);
            submit_usage(stderr);
            return 2;
        }
    }
    if (file) {
        char *json = NULL;
        int rc = tp_read_file(file, 1 << 20, &json, NULL);
        if (rc == 0)
            rc = tp_stages_request_from_json(json, &base);
        free(json);
        if (rc != 0) {
            fprintf(stderr, "tpctl submit: %s: %s\n", file, tp_strerror(rc));
            return 2;
        }
        if (base.request_id[0] && !request_id)
            request_id = base.request_id;
    }
    if (!base.tenant.name[0] || !base.tenant.slug[0]) {
        fprintf(stderr, "tpctl submit: --name and --slug (or --file) are required\n");
        submit_usage(stderr);
        return 2;
    }
    cfg = tpctl_config_load(path);
    if (!cfg)
        return 2;
    codec = tp_codec_new(tp_config_get(cfg, "codec.schema_dir"), "", err, sizeof(err));
    if (!codec) {
        fprintf(stderr, "tpctl submit: codec: %s\n", err);
        goto out;
    }
    if (tp_producer_new(cfg, &producer, err, sizeof(err)) != 0) {
        fprintf(stderr, "tpctl submit: producer: %s\n", err);
        goto out;
    }
    status = 1;
    for (long long n = 1; n <= count; n++) {
        unsigned char *buf = NULL;
        size_t len = 0;
        int rc;
        req = base;
        if (count > 1)
            snprintf(req.tenant.slug, sizeof(req.tenant.slug), "%.40s-%d", base.tenant.slug, (int)n);
        if (request_id && count > 1)
            snprintf(req.request_id, sizeof(req.request_id), "%.100s-%d", request_id, (int)n);
        else if (request_id)
            snprintf(req.request_id, sizeof(req.request_id), "%s", request_id);
        else
            tp_uuid_v4(req.request_id);
        req.submitted_at_ms = (int64_t)time(NULL) * 1000;
        rc = tp_codec_encode_request(codec, &req, &buf, &len);
        if (rc != 0) {
            fprintf(stderr, "tpctl submit: encoding %s: %s\n", req.request_id, tp_strerror(rc));
            goto out;
        }
        for (long long r = 0; r < repeat; r++) {
            tp_kafka_header trace = {"traceparent", req.traceparent, strlen(req.traceparent)};
            while ((rc = tp_producer_send(producer, tp_config_get(cfg, "topic.requests"), req.tenant.slug,
                                          strlen(req.tenant.slug), buf, len, req.traceparent[0] ? &trace : NULL,
                                          req.traceparent[0] ? 1 : 0, on_delivery, &st)) ==
                   TP_EKAFKA)
                tp_producer_poll(producer, 100); /* local queue full: let it drain */
            if (rc != 0) {
                free(buf);
                fprintf(stderr, "tpctl submit: produce: %s\n", tp_strerror(rc));
                goto out;
            }
            sent++;
        }
        free(buf);
        printf("%s\n", req.request_id);
        tp_producer_poll(producer, 0);
    }
    if (tp_producer_flush(producer, 60000) != 0 || st.persisted != sent) {
        fprintf(stderr, "tpctl submit: %d of %d records persisted (%d failed)\n", st.persisted, sent, st.failed);
        goto out;
    }
    fprintf(stderr, "tpctl submit: %d records persisted\n", st.persisted);
    status = 0;
out:
    tp_producer_free(producer, 10000);
    tp_codec_free(codec);
    tp_config_free(cfg);
    return status;
}
