/* cmd_dlq.c: `tpctl dlq list` prints the dead letters recorded by tp-worker; `tpctl dlq replay ID`
 * puts a FAILED request back to ACCEPTED (policy is evaluated again) and re-produces its original
 * record to the requests topic. Poison and invalid records cannot be replayed. */
#include "cli/cli_common.h"
#include "tp/codec.h"
#include "tp/error.h"
#include "tp/kafka.h"
#include "tp/stages.h"
#include "tp/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void dlq_usage(FILE *out) {
    fprintf(out, "usage: tpctl dlq [--config FILE] list [--all]\n"
                 "       tpctl dlq [--config FILE] replay DEAD_LETTER_ID\n");
}

static int dlq_list(tp_db *db, bool all) {
    tp_res *res = NULL;
    int rc = tp_db_query(db,
                         all ? "SELECT id, coalesce(request_id, '-'), reason, coalesce(message, ''), origin_topic, "
                               "origin_partition, origin_offset, created_at, coalesce(replayed_at::text, '-') "
                               "FROM dead_letters ORDER BY id"
                             : "SELECT id, coalesce(request_id, '-'), reason, coalesce(message, ''), origin_topic, "
                               "origin_partition, origin_offset, created_at, coalesce(replayed_at::text, '-') "
                               "FROM dead_letters WHERE replayed_at IS NULL ORDER BY id",
                         0, NULL, &res);
    if (rc != 0) {
        fprintf(stderr, "tpctl dlq list: %s\n", tp_db_errmsg(db));
        return 1;
    }
    printf("%-6s %-40s %-22s %-36s %s\n", "ID", "REQUEST", "REASON", "ORIGIN", "REPLAYED / MESSAGE");
    for (int i = 0; i < tp_res_nrows(res); i++) {
        char origin[300];
        snprintf(origin, sizeof(origin), "%s[%s]@%s", tp_res_get(res, i, 4), tp_res_get(res, i, 5),
                 tp_res_get(res, i, 6));
        printf("%-6s %-40s %-22s %-36s %s / %s\n", tp_res_get(res, i, 0), tp_res_get(res, i, 1),
               tp_res_get(res, i, 2), origin, tp_res_get(res, i, 8), tp_res_get(res, i, 3));
    }
    printf("%d dead letter(s)\n", tp_res_nrows(res));
    tp_res_free(res);
    return 0;
}

typedef struct replay_delivery {
    int done;
    int err;
} replay_delivery;

static void on_delivery(void *opaque, int err, int32_t partition, int64_t offset) {
    replay_delivery *d = opaque;
    (void)partition;
    (void)offset;
    d->done = 1;
    d->err = err;
}

static int dlq_replay(const tp_config *cfg, tp_db *db, const char *id) {
    const char *params[1] = {id};
    tp_res *res = NULL;
    tp_codec *codec = NULL;
    tp_producer *producer = NULL;
    tp_request req;
    replay_delivery d = {0, 0};
    char err[512];
    int status = 1, rc;
    unsigned char *orig;
    size_t orig_len;

    rc = tp_db_query(db, "SELECT request_id, original, replayed_at IS NOT NULL, reason FROM dead_letters WHERE id::text = $1",
                     1, params, &res);
    if (rc != 0 || tp_res_nrows(res) != 1) {
        fprintf(stderr, "tpctl dlq replay: no dead letter %s\n", id);
        goto out;
    }
    /* Only a request whose retries ran out can run again as it is; an undecodable or invalid
     * record (a request id is known for the latter) would only come back. */
    if (tp_res_isnull(res, 0, 0) || strcmp(tp_res_get(res, 0, 3), "RETRIES_EXHAUSTED") != 0) {
        fprintf(stderr, "tpctl dlq replay: dead letter %s (%s) is a record that cannot be processed as it is: "
                        "nothing to replay\n", id, tp_res_get(res, 0, 3));
        goto out;
    }
    codec = tp_codec_new(tp_config_get(cfg, "codec.schema_dir"), tp_config_get(cfg, "codec.confluent_schema_ids"),
                         err, sizeof(err));
    if (!codec) {
        fprintf(stderr, "tpctl dlq replay: codec: %s\n", err);
        goto out;
    }
    /* bytea comes back in hex text form: \x... */
    {
        const char *hex = tp_res_get(res, 0, 1);
        size_t hlen = strlen(hex);
        if (hlen < 2 || hex[0] != '\\' || hex[1] != 'x') {
            fprintf(stderr, "tpctl dlq replay: unexpected bytea format\n");
            goto out;
        }
        orig_len = (hlen - 2) / 2;
        orig = malloc(orig_len + 1);
        if (!orig)
            goto out;
        for (size_t i = 0; i < orig_len; i++) {
            unsigned int byte;
            sscanf(hex + 2 + 2 * i, "%2x", &byte);
            orig[i] = (unsigned char)byte;
        }
    }
    rc = tp_codec_decode_request(codec, orig, orig_len, &req, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "tpctl dlq replay: the original record does not decode: %s\n", err);
        free(orig);
        goto out;
    }
    rc = tp_stages_prepare_replay(db, req.request_id);
    if (rc != 0 && rc != TP_ECONFLICT && rc != TP_ENOT_FOUND) {
        fprintf(stderr, "tpctl dlq replay: resetting request %s: %s\n", req.request_id, tp_strerror(rc));
        free(orig);
        goto out;
    }
    if (rc == TP_ECONFLICT)
        fprintf(stderr, "tpctl dlq replay: request %s is not FAILED; re-producing it anyway (idempotent)\n",
                req.request_id);
    if (tp_producer_new(cfg, &producer, err, sizeof(err)) != 0) {
        fprintf(stderr, "tpctl dlq replay: producer: %s\n", err);
        free(orig);
        goto out;
    }
    rc = tp_producer_send(producer, tp_config_get(cfg, "topic.requests"), req.tenant.slug, strlen(req.tenant.slug),
                          orig, orig_len, NULL, 0, on_delivery, &d);
    free(orig);
    if (rc == 0)
        tp_producer_flush(producer, 30000);
    if (rc != 0 || !d.done || d.err != 0) {
        fprintf(stderr, "tpctl dlq replay: the record was not persisted; run the replay again\n");
        goto out;
    }
    tp_db_exec(db, "UPDATE dead_letters SET replayed_at = now() WHERE id::text = $1", 1, params, NULL);
    printf("replayed dead letter %s: request %s re-submitted\n", id, req.request_id);
    status = 0;
out:
    tp_producer_free(producer, 5000);
    tp_codec_free(codec);
    tp_res_free(res);
    return status;
}

int tpctl_cmd_dlq(int argc, char **argv) {
    const char *path = NULL, *verb = NULL, *id = NULL;
    bool all = false;
    tp_config *cfg;
    tp_db *db = NULL;
    char err[512];
    int status = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            path = argv[++i];
        else if (strcmp(argv[i], "--all") == 0)
            all = true;
        else if (strcmp(argv[i], "--help") == 0) {
            dlq_usage(stdout);
            return 0;
        } else if (!verb)
            verb = argv[i];
        else if (!id)
            id = argv[i];
        else {
            dlq_usage(stderr);
            return 2;
        }
    }
    if (!verb || (strcmp(verb, "list") != 0 && strcmp(verb, "replay") != 0) ||
        (strcmp(verb, "replay") == 0 && !id)) {
        dlq_usage(stderr);
        return 2;
    }
    cfg = tpctl_config_load(path);
    if (!cfg)
        return 2;
    if (tp_db_connect_cfg(cfg, &db, err, sizeof(err)) != 0) {
        fprintf(stderr, "tpctl dlq: %s\n", err);
        goto out;
    }
    status = strcmp(verb, "list") == 0 ? dlq_list(db, all) : dlq_replay(cfg, db, id);
out:
    tp_db_close(db);
    tp_config_free(cfg);
    return status;
}
