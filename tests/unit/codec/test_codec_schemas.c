/* test_codec_schemas.c: schema evolution discipline of schemas/avro (DESIGN §5: full-transitive
 * compatibility). Every nullable field is ["null", T] with default null; every field added after
 * v1 has a default; no v1 field disappears; one namespace. The checker is tested on bad schemas too. */
#include "codec_fixture.h"

#include <jansson.h>
#include <stdio.h>

#define NS "io.tenantprovisioner.v1"

/* The v1 fields of every record, by fullname. Fields beyond these must carry a default. */
typedef struct baseline {
    const char *record;
    const char *fields[16];
} baseline;

static const baseline v1[] = {
    {NS ".ProvisioningRequest",
     {"requestId", "idempotencyKey", "source", "actor", "tenant", "plan", "environment",
      "requestedSeats", "storageEstimateBytes", "correlationId", "submittedAt"}},
    {NS ".Actor", {"id", "type", "roles"}},
    {NS ".TenantSpec", {"name", "slug", "residency", "region"}},
    {NS ".DeadLetter",
     {"original", "reasonCode", "reasonMessage", "originTopic", "originPartition", "originOffset",
      "failedStage", "requestId", "timestamp", "originalKey"}},
    {NS ".ProvenanceReceipt",
     {"receiptId", "actionType", "tenantId", "requestId", "sequence", "previousHash", "hash",
      "timestamp", "envelope"}},
    {NS ".DsseEnvelope", {"payloadType", "payload", "signatures"}},
    {NS ".DsseSignature", {"keyid", "sig"}},
    {NS ".TreeCheckpoint", {"origin", "treeSize", "rootHash", "note"}},
    {NS ".TenantActionRequest",
     {"requestId", "idempotencyKey", "source", "actor", "tenantSlug", "action", "plan",
      "requestedSeats", "storageEstimateBytes", "reason", "retentionDays", "correlationId",
      "submittedAt"}},
};

static const baseline *find_baseline(const char *record) {
    for (size_t i = 0; i < sizeof(v1) / sizeof(v1[0]); i++)
        if (strcmp(v1[i].record, record) == 0)
            return &v1[i];
    return NULL;
}

static bool in_baseline(const baseline *b, const char *field) {
    for (size_t i = 0; b && i < 16 && b->fields[i]; i++)
        if (strcmp(b->fields[i], field) == 0)
            return true;
    return false;
}

static bool is_nullable(json_t *type) {
    size_t i;
    json_t *t;
    if (!json_is_array(type))
        return false;
    json_array_foreach(type, i, t) if (json_is_string(t) && strcmp(json_string_value(t), "null") == 0) return true;
    return false;
}

/* Walks a schema, counting violations (and printing them); records found are counted too. */
static int check(json_t *s, const char *ns, int *records) {
    int bad = 0;
    if (json_is_array(s)) {
        size_t i;
        json_t *t;
        json_array_foreach(s, i, t) bad += check(t, ns, records);
        return bad;
    }
    if (!json_is_object(s))
        return 0;
    {
        const char *type = json_string_value(json_object_get(s, "type"));
        if (type && (strcmp(type, "array") == 0))
            return check(json_object_get(s, "items"), ns, records);
        if (type && (strcmp(type, "map") == 0))
            return check(json_object_get(s, "values"), ns, records);
        if (!type || strcmp(type, "record") != 0)
            return 0;
    }
    {
        const char *name = json_string_value(json_object_get(s, "name"));
        const char *own_ns = json_string_value(json_object_get(s, "namespace"));
        char full[256];
        const baseline *b;
        size_t i;
        json_t *f;
        if (!own_ns)
            own_ns = ns;
        snprintf(full, sizeof(full), "%s.%s", own_ns, name ? name : "?");
        (*records)++;
        if (strcmp(own_ns, NS) != 0) {
            printf("record %s is not in namespace " NS "\n", full);
            bad++;
        }
        b = find_baseline(full);
        if (!b) {
            printf("record %s is not in the v1 baseline (new records need a baseline entry)\n", full);
            bad++;
        }
        for (size_t k = 0; b && k < 16 && b->fields[k]; k++) {
            bool found = false;
            json_array_foreach(json_object_get(s, "fields"), i, f) found |=
                strcmp(json_string_value(json_object_get(f, "name")), b->fields[k]) == 0;
            if (!found) {
                printf("%s: v1 field %s was removed\n", full, b->fields[k]);
                bad++;
            }
        }
        json_array_foreach(json_object_get(s, "fields"), i, f) {
            const char *fname = json_string_value(json_object_get(f, "name"));
            json_t *type = json_object_get(f, "type");
            json_t *def = json_object_get(f, "default");
            if (is_nullable(type)) {
                json_t *first = json_array_get(type, 0);
                if (!def || !json_is_null(def) || !json_is_string(first) ||
                    strcmp(json_string_value(first), "null") != 0) {
                    printf("%s.%s: nullable fields are [\"null\", T] with default null\n", full, fname);
                    bad++;
                }
            }
            if (!in_baseline(b, fname) && !def) {
                printf("%s.%s: added after v1 without a default\n", full, fname);
                bad++;
            }
            bad += check(type, own_ns, records);
        }
    }
    return bad;
}

static int check_text(const char *text, int *records) {
    json_error_t e;
    json_t *root = json_loads(text, 0, &e);
    int bad;
    if (!root)
        fail_msg("not JSON: %s", e.text);
    bad = check(root, "", records);
    json_decref(root);
    return bad;
}

static void test_committed_schemas_follow_the_rules(void **state) {
    static const char *files[] = {"ProvisioningRequest.avsc", "DeadLetter.avsc",
                                  "ProvenanceReceipt.avsc", "TreeCheckpoint.avsc"};
    int records = 0, bad = 0;
    (void)state;
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[512];
        json_error_t e;
        json_t *root;
        snprintf(path, sizeof(path), "%s/%s", FX_SCHEMA_DIR, files[i]);
        root = json_load_file(path, 0, &e);
        if (!root)
            fail_msg("%s: %s", path, e.text);
        bad += check(root, "", &records);
        json_decref(root);
    }
    assert_int_equal(bad, 0);
    assert_int_equal(records, 8); /* every record of the baseline was visited */
}

static void test_checker_catches_violations(void **state) {
    int records = 0;
    (void)state;
    /* nullable without default */
    assert_int_equal(check_text("{\"type\":\"record\",\"name\":\"DsseSignature\",\"namespace\":\"" NS
                                "\",\"fields\":[{\"name\":\"keyid\",\"type\":\"string\"},"
                                "{\"name\":\"sig\",\"type\":[\"null\",\"bytes\"]}]}",
                                &records),
                     1);
    /* null not first */
    assert_int_equal(check_text("{\"type\":\"record\",\"name\":\"DsseSignature\",\"namespace\":\"" NS
                                "\",\"fields\":[{\"name\":\"keyid\",\"type\":\"string\"},"
                                "{\"name\":\"sig\",\"type\":[\"bytes\",\"null\"],\"default\":null}]}",
                                &records),
                     1);
    /* a field added without a default, inside a nested record */
    assert_int_equal(check_text("{\"type\":\"record\",\"name\":\"DsseEnvelope\",\"namespace\":\"" NS
                                "\",\"fields\":[{\"name\":\"payloadType\",\"type\":\"string\"},"
                                "{\"name\":\"payload\",\"type\":\"bytes\"},"
                                "{\"name\":\"signatures\",\"type\":{\"type\":\"array\",\"items\":"
                                "{\"type\":\"record\",\"name\":\"DsseSignature\",\"fields\":["
                                "{\"name\":\"keyid\",\"type\":\"string\"},"
                                "{\"name\":\"sig\",\"type\":\"bytes\"},"
                                "{\"name\":\"alg\",\"type\":\"string\"}]}}}]}",
                                &records),
                     1);
    /* a v1 field removed */
    assert_int_equal(check_text("{\"type\":\"record\",\"name\":\"DsseSignature\",\"namespace\":\"" NS
                                "\",\"fields\":[{\"name\":\"keyid\",\"type\":\"string\"}]}",
                                &records),
                     1);
    /* another namespace */
    assert_true(check_text("{\"type\":\"record\",\"name\":\"DsseSignature\",\"namespace\":\"x\","
                           "\"fields\":[{\"name\":\"keyid\",\"type\":\"string\"},"
                           "{\"name\":\"sig\",\"type\":\"bytes\"}]}",
                           &records) > 0);
    /* an added field with a default is fine */
    assert_int_equal(check_text("{\"type\":\"record\",\"name\":\"DsseSignature\",\"namespace\":\"" NS
                                "\",\"fields\":[{\"name\":\"keyid\",\"type\":\"string\"},"
                                "{\"name\":\"sig\",\"type\":\"bytes\"},"
                                "{\"name\":\"alg\",\"type\":\"string\",\"default\":\"ed25519\"}]}",
                                &records),
                     0);
}

static void test_readme_states_the_rule(void **state) {
    char path[512];
    FILE *f;
    char buf[8192];
    size_t n;
    (void)state;
    snprintf(path, sizeof(path), "%s/README.md", FX_SCHEMA_DIR);
    f = fopen(path, "r");
    assert_non_null(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "must have a default"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_committed_schemas_follow_the_rules),
        cmocka_unit_test(test_checker_catches_violations),
        cmocka_unit_test(test_readme_states_the_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
