/* test_ingress_auth.c: tp_auth_check against every attack of issue 5 (no token, bad signature,
 * expired, nbf in the future, alg none, HS256 keyed with the RS256 public key, wrong iss, wrong
 * aud), plus good HS256/RS256/ES256 tokens, leeway, roles and the dev token minter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tp/config.h"
#include "tp/error.h"
#include "tp/ingress.h"

#define SECRET "0123456789abcdef0123456789abcdef-dev-secret"
#define NOW 1700000000LL

static char dir[64];
static char hs_path[128], rs_priv[128], rs_pub[128], es_priv[128], es_pub[128];

int tpctl_cmd_token(int argc, char **argv);

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *slurp(const char *path, size_t *len) {
    char *buf = NULL;
    assert_int_equal(tp_read_file(path, 65536, &buf, len), 0);
    return buf;
}

static int setup(void **state) {
    (void)state;
    char cmd[1024];
    snprintf(dir, sizeof(dir), "/tmp/tp_auth_XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(hs_path, sizeof(hs_path), "%s/jwt.secret", dir);
    snprintf(rs_priv, sizeof(rs_priv), "%s/rs.key", dir);
    snprintf(rs_pub, sizeof(rs_pub), "%s/rs.pub", dir);
    snprintf(es_priv, sizeof(es_priv), "%s/es.key", dir);
    snprintf(es_pub, sizeof(es_pub), "%s/es.pub", dir);
    write_file(hs_path, SECRET "\n");
    snprintf(cmd, sizeof(cmd),
             "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out %s 2>/dev/null && "
             "openssl pkey -in %s -pubout -out %s 2>/dev/null && "
             "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s 2>/dev/null && "
             "openssl pkey -in %s -pubout -out %s 2>/dev/null",
             rs_priv, rs_priv, rs_pub, es_priv, es_priv, es_pub);
    return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static tp_auth *make_auth(const char *alg, const char *key_file) {
    char err[256];
    tp_config *cfg = tp_config_new();
    assert_non_null(cfg);
    assert_int_equal(tp_config_set(cfg, "jwt.alg", alg, err, sizeof(err)), 0);
    assert_int_equal(tp_config_set(cfg, "jwt.key_file", key_file, err, sizeof(err)), 0);
    assert_int_equal(tp_config_set(cfg, "jwt.issuer", "tp-dev", err, sizeof(err)), 0);
    assert_int_equal(tp_config_set(cfg, "jwt.audience", "tenant-provisioner", err, sizeof(err)), 0);
    assert_int_equal(tp_config_set(cfg, "jwt.leeway_s", "30", err, sizeof(err)), 0);
    tp_auth *auth = NULL;
    int rc = tp_auth_new(cfg, &auth, err, sizeof(err));
    if (rc != 0)
        print_error("tp_auth_new: %s\n", err);
    assert_int_equal(rc, 0);
    tp_config_free(cfg);
    return auth;
}

/* Standard claims with overrides: exp/nbf relative to NOW; iss/aud NULL = omitted. Returns one
 * of four rotating static buffers. */
static char *claims(const char *iss, const char *aud, long long exp_rel, long long nbf_rel,
                    const char *roles_json) {
    static char bufs[4][1024];
    static int next;
    char *out = bufs[next++ % 4];
    int n = snprintf(out, 1024, "{\"sub\":\"user-1\",\"exp\":%lld,\"nbf\":%lld", NOW + exp_rel,
                     NOW + nbf_rel);
    if (iss)
        n += snprintf(out + n, 1024 - (size_t)n, ",\"iss\":\"%s\"", iss);
    if (aud)
        n += snprintf(out + n, 1024 - (size_t)n, ",\"aud\":%s", aud);
    if (roles_json)
        n += snprintf(out + n, 1024 - (size_t)n, ",\"roles\":%s", roles_json);
    snprintf(out + n, 1024 - (size_t)n, "}");
    return out;
}

static char *sign_hs(const char *claims_js) {
    return tp_auth_sign("HS256", (const unsigned char *)SECRET, strlen(SECRET), claims_js);
}

static char *sign_file(const char *alg, const char *key_path, const char *claims_js) {
    size_t len = 0;
    char *key = slurp(key_path, &len);
    char *tok = tp_auth_sign(alg, (unsigned char *)key, len, claims_js);
    free(key);
    assert_non_null(tok);
    return tok;
}

/* Runs the check with "Bearer <token>"; expect_code NULL means accepted. Takes token. */
static void check(tp_auth *auth, char *token, const char *expect_code, tp_caller *caller_out) {
    char header[9000];
    snprintf(header, sizeof(header), "Bearer %s", token ? token : "");
    free(token);
    tp_caller caller;
    tp_problem *p = NULL;
    int rc = tp_auth_check(auth, header, strlen(header), NOW, &caller, &p);
    if (!expect_code) {
        if (rc != 0) {
            char *js = tp_problem_to_json(p, NULL);
            print_error("rejected: %s\n", js);
            free(js);
        }
        assert_int_equal(rc, 0);
        assert_null(p);
        if (caller_out)
            *caller_out = caller;
        return;
    }
    assert_int_equal(rc, TP_EAUTH);
    assert_non_null(p);
    assert_int_equal(tp_problem_status(p), 401);
    char *js = tp_problem_to_json(p, NULL);
    char want[128];
    snprintf(want, sizeof(want), "\"code\":\"%s\"", expect_code);
    if (!strstr(js, want))
        print_error("expected %s in %s\n", want, js);
    assert_non_null(strstr(js, want));
    free(js);
    tp_problem_free(p);
    assert_string_equal(caller.sub, "");
}

#define GOOD_AUD "\"tenant-provisioner\""

static void test_good_hs256_token_accepted(void **state) {
    (void)state;
    tp_auth *auth = make_auth("HS256", hs_path);
    tp_caller c;
    check(auth, sign_hs(claims("tp-dev", GOOD_AUD, 600, -10, "[\"user\",\"admin\"]")), NULL, &c);
    assert_string_equal(c.sub, "user-1");
    assert_int_equal(c.n_roles, 2);
    assert_string_equal(c.roles[0], "user");
    assert_true(c.is_admin);
    check(auth, sign_hs(claims("tp-dev", "[\"other\"," GOOD_AUD "]", 600, -10, "[\"user\"]")), NULL, &c);
    assert_false(c.is_admin);
    tp_auth_free(auth);
}

static void test_no_token(void **state) {
    (void)state;
    tp_auth *auth = make_auth("HS256", hs_path);
    tp_caller c;
    tp_problem *p = NULL;
    assert_int_equal(tp_auth_check(auth, NULL, 0, NOW, &c, &p), TP_EAUTH);
    assert_int_equal(tp_problem_status(p), 401);
    tp_problem_free(p);
    assert_int_equal(tp_auth_check(auth, "Basic dXNlcjpwdw==", 18, NOW, &c, &p), TP_EAUTH);
    tp_problem_free(p);
    check(auth, NULL, "missing_token", NULL);
    check(auth, strdup("not-a-jwt"), "malformed_token", NULL);
    check(auth, strdup("a.b.c.d"), "malformed_token", NULL);
    tp_auth_free(auth);
}

static void test_bad_signature(void **state) {
    (void)state;
    tp_auth *auth = make_auth("HS256", hs_path);
    const char *other = "another-secret-of-enough-length-000000";
    char *cl = claims("tp-dev", GOOD_AUD, 600, -10, NULL);
    check(auth, tp_auth_sign("HS256", (const unsigned char *)other, strlen(other), cl),
          "bad_signature", NULL);
    /* Flip one character of the signature of a good token. */
    char *tok = sign_hs(cl);
    size_t n = strlen(tok);
    tok[n - 2] = tok[n - 2] == 'A' ? 'B' : 'A';
    check(auth, tok, "bad_signature", NULL);
    /* Swap in another payload under a good signature. */
    char *good = sign_hs(cl), *evil = sign_hs("{\"sub\":\"root\",\"exp\":1}");
    char *sig = strrchr(good, '.');
    char *evil_sig = strrchr(evil, '.');
    *evil_sig = '\0';
    char forged[2048];
    snprintf(forged, sizeof(forged), "%s%s", evil, sig);
    check(auth, strdup(forged), "bad_signature", NULL);
    free(good);
    free(evil);
    tp_auth_free(auth);
}

static void test_expired(void **state) {
    (void)state;
    tp_auth *auth = make_auth("HS256", hs_path);
    check(auth, sign_hs(claims("tp-dev", GOOD_AUD, -31, -600, NULL)), "expired", NULL);
    /* Inside the 30 s leeway it is still accepted. */
    check(auth, sign_hs(claims("tp-dev", GOOD_AUD, -29, -600, NULL)), NULL, NULL);
    check(auth, sign_hs("{\"sub\":\"u\",\"iss\":\"tp-dev\",\"aud\":\"tenant-provisioner\"}"),
          "missing_exp", NULL);
    tp_auth_free(auth);
}

static void test_nbf_in_future(void **state) {
    (void)state;
    tp_auth *auth = make_auth("HS256", hs_path);
    check(auth, sign_hs(claims("tp-dev", GOOD_AUD, 600, 31, NULL)), "not_yet_valid", NULL);
    check(auth, sign_hs(claims("tp-dev", GOOD_AUD, 600, 29, NULL)), NULL, NULL);
    tp_auth_free(auth);
}

static char *b64url(const char *s) {
    size_t cap = sodium_base64_ENCODED_LEN(strlen(s), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = malloc(cap);
    sodium_bin2base64(out, cap, (const unsigned char *)s, strlen(s),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

static void test_alg_none(void **state) {
    (void)state;
    assert_true(sodium_init() >= 0);
    tp_auth *auth = make_auth("HS256", hs_path);
    char *cl = claims("tp-dev", GOOD_AUD, 600, -10, "[\"admin\"]");
    const char *headers[] = {"{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"alg\":\"NONE\"}",
                             "{\"typ\":\"JWT\"}"};
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        char *h = b64url(headers[i]), *p = b64url(cl);
        char tok[2048];
        snprintf(tok, sizeof(tok), "%s.%s.", h, p);
        check(auth, strdup(tok), "alg_mismatch", NULL);
        /* With a copied HS256 signature appended. */
        char *good = sign_hs(cl);
        snprintf(tok, sizeof(tok), "%s.%s%s", h, p, strrchr(good, '.'));
        check(auth, strdup(tok), "alg_mismatch", NULL);
        free(good);
        free(h);
        free(p);
    }
    tp_auth_free(auth);
}

static void test_rs256_good_and_hs256_confusion(void **state) {
    (void)state;
    tp_auth *auth = make_auth("RS256", rs_pub);
    char *cl = claims("tp-dev", GOOD_AUD, 600, -10, "[\"admin\"]");
    tp_caller c;
    check(auth, sign_file("RS256", rs_priv, cl), NULL, &c);
    assert_true(c.is_admin);
    /* The attack: HMAC-SHA256 keyed with the (public) RS256 key file's exact bytes. */
    check(auth, sign_file("HS256", rs_pub, cl), "alg_mismatch", NULL);
    /* And a token of another algorithm (ES256) with a valid signature of its own. */
    check(auth, sign_file("ES256", es_priv, cl), "alg_mismatch", NULL);
    tp_auth_free(auth);
}

static void test_es256_good(void **state) {
    (void)state;
    tp_auth *auth = make_auth("ES256", es_pub);
    char *cl = claims("tp-dev", GOOD_AUD, 600, -10, NULL);
    check(auth, sign_file("ES256", es_priv, cl), NULL, NULL);
    check(auth, sign_file("RS256", rs_priv, cl), "alg_mismatch", NULL);
    tp_auth_free(auth);
}

static void test_wrong_iss(void **state) {
    (void)state;
    tp_auth *auth = make_auth("HS256", hs_path);
    check(auth, sign_hs(claims("evil", GOOD_AUD, 600, -10, NULL)), "bad_issuer", NULL);
    check(auth, sign_hs(claims(NULL, GOOD_AUD, 600, -10, NULL)), "bad_issuer", NULL);
    tp_auth_free(auth);
}

static void test_wrong_aud(void **state) {
    (void)state;
    tp_auth *auth = make_auth("HS256", hs_path);
    check(auth, sign_hs(claims("tp-dev", "\"other\"", 600, -10, NULL)), "bad_audience", NULL);
    check(auth, sign_hs(claims("tp-dev", "[\"a\",\"b\"]", 600, -10, NULL)), "bad_audience", NULL);
    check(auth, sign_hs(claims("tp-dev", NULL, 600, -10, NULL)), "bad_audience", NULL);
    tp_auth_free(auth);
}

static void test_sub_and_roles_checked(void **state) {
    (void)state;
    tp_auth *auth = make_auth("HS256", hs_path);
    check(auth, sign_hs("{\"exp\":1800000000,\"iss\":\"tp-dev\",\"aud\":\"tenant-provisioner\"}"),
          "missing_sub", NULL);
    check(auth, sign_hs(claims("tp-dev", GOOD_AUD, 600, -10, "[1]")), "bad_roles", NULL);
    tp_caller c;
    check(auth, sign_hs(claims("tp-dev", GOOD_AUD, 600, -10, "\"user admin\"")), NULL, &c);
    assert_int_equal(c.n_roles, 2);
    assert_true(c.is_admin);
    tp_auth_free(auth);
}

static void test_config_rejected(void **state) {
    (void)state;
    char err[256], short_path[160];
    tp_auth *auth = NULL;
    tp_config *cfg = tp_config_new();
    assert_int_equal(tp_config_set(cfg, "jwt.alg", "none", err, sizeof(err)), 0);
    assert_int_equal(tp_config_set(cfg, "jwt.key_file", hs_path, err, sizeof(err)), 0);
    assert_int_equal(tp_auth_new(cfg, &auth, err, sizeof(err)), TP_ECONFIG);
    assert_null(auth);
    /* A private key where the public key belongs. */
    assert_int_equal(tp_config_set(cfg, "jwt.alg", "RS256", err, sizeof(err)), 0);
    assert_int_equal(tp_config_set(cfg, "jwt.key_file", rs_priv, err, sizeof(err)), 0);
    assert_int_equal(tp_auth_new(cfg, &auth, err, sizeof(err)), TP_ECONFIG);
    /* A short HS256 secret. */
    snprintf(short_path, sizeof(short_path), "%s/short.secret", dir);
    write_file(short_path, "short\n");
    assert_int_equal(tp_config_set(cfg, "jwt.alg", "HS256", err, sizeof(err)), 0);
    assert_int_equal(tp_config_set(cfg, "jwt.key_file", short_path, err, sizeof(err)), 0);
    assert_int_equal(tp_auth_new(cfg, &auth, err, sizeof(err)), TP_ECONFIG);
    /* A missing file. */
    assert_int_equal(tp_config_set(cfg, "jwt.key_file", "/nonexistent/x", err, sizeof(err)), 0);
    assert_int_not_equal(tp_auth_new(cfg, &auth, err, sizeof(err)), 0);
    assert_null(auth);
    tp_config_free(cfg);
}

static void test_mint_dev_token_verifies(void **state) {
    (void)state;
    char err[256];
    tp_config *cfg = tp_config_new();
    assert_int_equal(tp_config_set(cfg, "jwt.key_file", hs_path, err, sizeof(err)), 0);
    char *tok = NULL;
    assert_int_equal(tp_auth_mint_dev(cfg, NULL, "alice", "admin,ops", 120, &tok, err, sizeof(err)), 0);
    tp_auth *auth = make_auth("HS256", hs_path);
    char header[4096];
    snprintf(header, sizeof(header), "Bearer %s", tok);
    tp_caller c;
    tp_problem *p = NULL;
    assert_int_equal(tp_auth_check(auth, header, strlen(header), 0, &c, &p), 0);
    assert_string_equal(c.sub, "alice");
    assert_int_equal(c.n_roles, 2);
    assert_true(c.is_admin);
    /* 200 s later it has expired (ttl 120 + leeway 30). */
    assert_int_equal(tp_auth_check(auth, header, strlen(header), (int64_t)time(NULL) + 200, &c, &p),
                     TP_EAUTH);
    tp_problem_free(p);
    free(tok);
    tp_auth_free(auth);
    assert_int_equal(tp_auth_mint_dev(cfg, NULL, "", NULL, 120, &tok, err, sizeof(err)), TP_EINVAL);
    tp_config_free(cfg);
}

static void test_tpctl_token_arguments(void **state) {
    (void)state;
    char *help[] = {"token", "--help", NULL};
    assert_int_equal(tpctl_cmd_token(2, help), 0);
    char *nosub[] = {"token", "--roles", "admin", NULL};
    assert_int_equal(tpctl_cmd_token(3, nosub), 2);
    char *badttl[] = {"token", "--sub", "a", "--ttl", "-5", NULL};
    assert_int_equal(tpctl_cmd_token(5, badttl), 2);
    char *nokey[] = {"token", "--sub", "a", "--key-file", "/nonexistent/key", NULL};
    assert_int_equal(tpctl_cmd_token(5, nokey), 1);
    char *ok[] = {"token", "--sub", "a", "--key-file", hs_path, "--ttl", "60", NULL};
    assert_int_equal(tpctl_cmd_token(7, ok), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_hs256_token_accepted),
        cmocka_unit_test(test_no_token),
        cmocka_unit_test(test_bad_signature),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_nbf_in_future),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_rs256_good_and_hs256_confusion),
        cmocka_unit_test(test_es256_good),
        cmocka_unit_test(test_wrong_iss),
        cmocka_unit_test(test_wrong_aud),
        cmocka_unit_test(test_sub_and_roles_checked),
        cmocka_unit_test(test_config_rejected),
        cmocka_unit_test(test_mint_dev_token_verifies),
        cmocka_unit_test(test_tpctl_token_arguments),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
