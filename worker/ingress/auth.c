/* auth.c: bearer JWT verification around libjwt 1.10.2, closing its traps: the token's alg must
 * equal the configured one (checked before and after decoding), never a NULL key, and exp, nbf,
 * iss and aud are checked here because libjwt does not. Also mints development tokens. */
#include "tp/error.h"
#include "tp/ingress.h"
#include "tp/log.h"

#include <jansson.h>
#include <jwt.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOKEN_MAX 8192
#define KEY_FILE_MAX 65536
#define HS_SECRET_MIN 32

struct tp_auth {
    jwt_alg_t alg;
    char alg_name[8];
    unsigned char *key; /* never NULL once built */
    size_t key_len;
    char *issuer;   /* NULL: not checked */
    char *audience; /* NULL: not checked */
    char *roles_claim;
    char *admin_role;
    int64_t leeway_s;
};

static char *dup_or_null(const char *s) { return (s && *s) ? strdup(s) : NULL; }

int tp_auth_read_key(const char *path, bool strip, unsigned char **out, size_t *out_len) {
    char *buf = NULL;
    size_t len = 0;
    int rc = tp_read_file(path, KEY_FILE_MAX, &buf, &len);
    if (rc != 0)
        return rc;
    if (strip)
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
            buf[--len] = '\0';
    *out = (unsigned char *)buf;
    *out_len = len;
    return 0;
}

int tp_auth_new(const tp_config *cfg, tp_auth **out, char *errstr, size_t errstr_size) {
    int rc = TP_ENOMEM;
    const char *alg = tp_config_get(cfg, "jwt.alg");
    const char *key_file = tp_config_get(cfg, "jwt.key_file");
    *out = NULL;
    if (sodium_init() < 0) {
        snprintf(errstr, errstr_size, "libsodium failed to initialise");
        return TP_ECONFIG;
    }
    tp_auth *a = calloc(1, sizeof(*a));
    if (!a)
        goto out_nomem;
    if (strcmp(alg, "HS256") == 0)
        a->alg = JWT_ALG_HS256;
    else if (strcmp(alg, "RS256") == 0)
        a->alg = JWT_ALG_RS256;
    else if (strcmp(alg, "ES256") == 0)
        a->alg = JWT_ALG_ES256;
    else {
        snprintf(errstr, errstr_size, "jwt.alg must be HS256, RS256 or ES256 (got \"%s\")", alg);
        rc = TP_ECONFIG;
        goto out_free;
    }
    snprintf(a->alg_name, sizeof(a->alg_name), "%s", alg);
    bool hs = a->alg == JWT_ALG_HS256;
    rc = tp_auth_read_key(key_file, hs, &a->key, &a->key_len);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "jwt.key_file %s: %s", key_file, tp_strerror(rc));
        goto out_free;
    }
    if (hs && a->key_len < HS_SECRET_MIN) {
        snprintf(errstr, errstr_size, "jwt.key_file %s: an HS256 secret needs at least %d bytes",
                 key_file, HS_SECRET_MIN);
        rc = TP_ECONFIG;
        goto out_free;
    }
    if (!hs && (!strstr((char *)a->key, "-----BEGIN PUBLIC KEY-----") ||
                strstr((char *)a->key, "PRIVATE KEY"))) {
        snprintf(errstr, errstr_size, "jwt.key_file %s: expected a PEM public key (BEGIN PUBLIC KEY)",
                 key_file);
        rc = TP_ECONFIG;
        goto out_free;
    }
    a->issuer = dup_or_null(tp_config_get(cfg, "jwt.issuer"));
    a->audience = dup_or_null(tp_config_get(cfg, "jwt.audience"));
    a->roles_claim = strdup(tp_config_get(cfg, "jwt.roles_claim"));
    a->admin_role = strdup(tp_config_get(cfg, "jwt.admin_role"));
    a->leeway_s = tp_config_get_int(cfg, "jwt.leeway_s");
    if (a->leeway_s < 0 || a->leeway_s > 3600) {
        snprintf(errstr, errstr_size, "jwt.leeway_s must be within 0..3600");
        rc = TP_ECONFIG;
        goto out_free;
    }
    rc = TP_ENOMEM;
    if (!a->roles_claim || !a->admin_role || (*tp_config_get(cfg, "jwt.issuer") && !a->issuer) ||
        (*tp_config_get(cfg, "jwt.audience") && !a->audience))
        goto out_nomem;
    *out = a;
    return 0;
out_nomem:
    snprintf(errstr, errstr_size, "out of memory");
out_free:
    tp_auth_free(a);
    return rc;
}

void tp_auth_free(tp_auth *a) {
    if (!a)
        return;
    if (a->key) {
        sodium_memzero(a->key, a->key_len);
        free(a->key);
    }
    free(a->issuer);
    free(a->audience);
    free(a->roles_claim);
    free(a->admin_role);
    free(a);
}

static int reject(tp_problem **problem_out, const char *code, const char *detail) {
    tp_problem *p = tp_problem_new(TP_PROBLEM_UNAUTHORIZED, detail);
    if (!p || tp_problem_set_string(p, "code", code) != 0) {
        tp_problem_free(p);
        return TP_ENOMEM;
    }
    *problem_out = p;
    return TP_EAUTH;
}

/* Reads the JOSE header's alg without trusting anything else in the token. */
static bool header_alg_is(const char *token, size_t seg_len, const char *want) {
    unsigned char hdr[1024];
    size_t hdr_len = 0;
    if (seg_len == 0 || seg_len > 1360 ||
        sodium_base642bin(hdr, sizeof(hdr), token, seg_len, NULL, &hdr_len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return false;
    json_t *h = json_loadb((const char *)hdr, hdr_len, JSON_REJECT_DUPLICATES, NULL);
    const char *alg = json_string_value(json_object_get(h, "alg"));
    bool ok = alg && strcmp(alg, want) == 0;
    json_decref(h);
    return ok;
}

/* NumericDate member; returns false when absent or not a finite number. */
static bool get_time(json_t *claims, const char *name, double *out) {
    json_t *v = json_object_get(claims, name);
    if (!json_is_number(v))
        return false;
    *out = json_number_value(v);
    return isfinite(*out);
}

static bool audience_ok(json_t *aud, const char *want) {
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    size_t i;
    json_t *v;
    json_array_foreach(aud, i, v) {
        if (json_is_string(v) && strcmp(json_string_value(v), want) == 0)
            return true;
    }
    return false;
}

/* Follows a dotted path ("realm_access.roles") through nested objects. */
static json_t *get_path(json_t *obj, const char *path) {
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    char *save = NULL;
    for (char *part = strtok_r(buf, ".", &save); part && obj; part = strtok_r(NULL, ".", &save))
        obj = json_object_get(obj, part);
    return obj;
}

static void add_role(tp_auth *a, tp_caller *out, const char *role, size_t len) {
    if (len == strlen(a->admin_role) && memcmp(role, a->admin_role, len) == 0)
        out->is_admin = true;
    if (out->n_roles < TP_ROLES_MAX &&
        tp_copy_field(out->roles[out->n_roles], sizeof(out->roles[0]), role, len) == 0)
        out->n_roles++;
}

/* Roles: an array of strings, or one space-separated string (OAuth "scope" style). */
static bool read_roles(tp_auth *a, json_t *claims, tp_caller *out) {
    json_t *r = get_path(claims, a->roles_claim);
    if (!r)
        return true; /* no roles */
    if (json_is_string(r)) {
        const char *s = json_string_value(r);
        while (*s) {
            size_t n = strcspn(s, " ");
            if (n)
                add_role(a, out, s, n);
            s += n;
            while (*s == ' ')
                s++;
        }
        return true;
    }
    if (!json_is_array(r))
        return false;
    size_t i;
    json_t *v;
    json_array_foreach(r, i, v) {
        if (!json_is_string(v))
            return false;
        add_role(a, out, json_string_value(v), json_string_length(v));
    }
    return true;
}

static int check_claims(tp_auth *a, json_t *claims, int64_t now, tp_caller *out,
                        tp_problem **problem_out) {
    double exp, nbf;
    if (!get_time(claims, "exp", &exp))
        return reject(problem_out, "missing_exp", "token has no exp claim");
    if ((double)now >= exp + (double)a->leeway_s)
        return reject(problem_out, "expired", "token expired");
    if (json_object_get(claims, "nbf")) {
        if (!get_time(claims, "nbf", &nbf))
            return reject(problem_out, "not_yet_valid", "token nbf is not a number");
        if (nbf > (double)now + (double)a->leeway_s)
            return reject(problem_out, "not_yet_valid", "token is not valid yet (nbf)");
    }
    if (a->issuer) {
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        if (!iss || strcmp(iss, a->issuer) != 0)
            return reject(problem_out, "bad_issuer", "token issuer is not accepted");
    }
    if (a->audience && !audience_ok(json_object_get(claims, "aud"), a->audience))
        return reject(problem_out, "bad_audience", "token audience is not accepted");
    json_t *sub = json_object_get(claims, "sub");
    if (!json_is_string(sub) || json_string_length(sub) == 0 ||
        tp_copy_field(out->sub, sizeof(out->sub), json_string_value(sub), json_string_length(sub)) != 0 ||
        strlen(out->sub) != json_string_length(sub))
        return reject(problem_out, "missing_sub", "token has no usable sub claim");
    if (!read_roles(a, claims, out))
        return reject(problem_out, "bad_roles", "token roles claim must be strings");
    return 0;
}

int tp_auth_check(tp_auth *a, const char *authz, size_t len, int64_t now_s, tp_caller *out,
                  tp_problem **problem_out) {
    int rc;
    char token[TOKEN_MAX + 1];
    *problem_out = NULL;
    memset(out, 0, sizeof(*out));
    if (!authz || len == 0)
        return reject(problem_out, "missing_token", "an Authorization: Bearer token is required");
    if (len < 7 || strncasecmp(authz, "Bearer ", 7) != 0)
        return reject(problem_out, "missing_token", "the Authorization scheme must be Bearer");
    size_t off = 7;
    while (off < len && authz[off] == ' ')
        off++;
    size_t tlen = len - off;
    while (tlen > 0 && authz[off + tlen - 1] == ' ')
        tlen--;
    if (tlen == 0)
        return reject(problem_out, "missing_token", "the bearer token is empty");
    if (tlen > TOKEN_MAX)
        return reject(problem_out, "malformed_token", "the bearer token is too long");
    int dots = 0;
    size_t first_dot = 0;
    for (size_t i = 0; i < tlen; i++) {
        char c = authz[off + i];
        if (c == '.') {
            if (dots++ == 0)
                first_dot = i;
        } else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '_')) {
            return reject(problem_out, "malformed_token", "the bearer token is not a compact JWT");
        }
    }
    if (dots != 2)
        return reject(problem_out, "malformed_token", "the bearer token is not a compact JWT");
    memcpy(token, authz + off, tlen);
    token[tlen] = '\0';

    /* Trap 1: the token chooses its alg; refuse any other than ours before libjwt sees it. */
    if (!header_alg_is(token, first_dot, a->alg_name))
        return reject(problem_out, "alg_mismatch", "token algorithm is not accepted");

    /* Trap 2: a NULL key skips verification; ours is never NULL (tp_auth_new checked it). */
    jwt_t *jwt = NULL;
    if (jwt_decode(&jwt, token, a->key, (int)a->key_len) != 0 || !jwt) {
        rc = reject(problem_out, "bad_signature", "token signature or encoding is invalid");
        goto out_free;
    }
    if (jwt_get_alg(jwt) != a->alg) {
        rc = reject(problem_out, "alg_mismatch", "token algorithm is not accepted");
        goto out_free;
    }
    /* Trap 3: libjwt checks no claim; parse them all and check them here. */
    char *claims_js = jwt_get_grants_json(jwt, NULL);
    json_t *claims = claims_js ? json_loads(claims_js, 0, NULL) : NULL;
    free(claims_js);
    if (!json_is_object(claims)) {
        json_decref(claims);
        rc = reject(problem_out, "malformed_token", "token claims are not a JSON object");
        goto out_free;
    }
    rc = check_claims(a, claims, now_s ? now_s : (int64_t)time(NULL), out, problem_out);
    json_decref(claims);
out_free:
    if (jwt)
        jwt_free(jwt);
    if (rc != 0)
        memset(out, 0, sizeof(*out));
    return rc;
}

char *tp_auth_sign(const char *alg, const unsigned char *key, size_t key_len,
                   const char *claims_json) {
    jwt_t *jwt = NULL;
    char *tok = NULL;
    jwt_alg_t a = jwt_str_alg(alg);
    if (a == JWT_ALG_INVAL || a == JWT_ALG_NONE || !key || key_len == 0)
        return NULL;
    if (jwt_new(&jwt) != 0)
        return NULL;
    if (jwt_add_grants_json(jwt, claims_json) == 0 &&
        jwt_set_alg(jwt, a, key, (int)key_len) == 0)
        tok = jwt_encode_str(jwt);
    jwt_free(jwt);
    return tok;
}

int tp_auth_mint_dev(const tp_config *cfg, const char *key_file, const char *sub,
                     const char *roles_csv, int64_t ttl_s, char **out, char *errstr,
                     size_t errstr_size) {
    int rc = TP_ENOMEM;
    unsigned char *key = NULL;
    size_t key_len = 0;
    char *claims_js = NULL;
    *out = NULL;
    if (!sub || !*sub || ttl_s <= 0) {
        snprintf(errstr, errstr_size, "a non-empty sub and a positive ttl are required");
        return TP_EINVAL;
    }
    if (!key_file)
        key_file = tp_config_get(cfg, "jwt.key_file");
    rc = tp_auth_read_key(key_file, true, &key, &key_len);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "%s: %s", key_file, tp_strerror(rc));
        return rc;
    }
    rc = TP_ENOMEM;
    json_t *claims = json_object();
    json_t *roles = json_array();
    if (!claims || !roles)
        goto out_free;
    int64_t now = (int64_t)time(NULL);
    json_object_set_new(claims, "sub", json_string(sub));
    json_object_set_new(claims, "iat", json_integer(now));
    json_object_set_new(claims, "nbf", json_integer(now));
    json_object_set_new(claims, "exp", json_integer(now + ttl_s));
    if (*tp_config_get(cfg, "jwt.issuer"))
        json_object_set_new(claims, "iss", json_string(tp_config_get(cfg, "jwt.issuer")));
    if (*tp_config_get(cfg, "jwt.audience"))
        json_object_set_new(claims, "aud", json_string(tp_config_get(cfg, "jwt.audience")));
    for (const char *r = roles_csv; r && *r;) {
        size_t n = strcspn(r, ",");
        if (n)
            json_array_append_new(roles, json_stringn(r, n));
        r += n;
        if (*r == ',')
            r++;
    }
    /* Only a plain claim name can be written; dotted paths are for third-party issuers. */
    json_object_set(claims, strchr(tp_config_get(cfg, "jwt.roles_claim"), '.') ? "roles"
                                                                             : tp_config_get(cfg, "jwt.roles_claim"),
                    roles);
    claims_js = json_dumps(claims, JSON_COMPACT);
    if (!claims_js)
        goto out_free;
    *out = tp_auth_sign("HS256", key, key_len, claims_js);
    if (!*out) {
        snprintf(errstr, errstr_size, "signing failed");
        rc = TP_EINVAL;
        goto out_free;
    }
    rc = 0;
out_free:
    if (rc == TP_ENOMEM)
        snprintf(errstr, errstr_size, "out of memory");
    json_decref(claims);
    json_decref(roles);
    free(claims_js);
    sodium_memzero(key, key_len);
    free(key);
    return rc;
}
