/* migrate.c: applies schemas/sql/<version>_<name>.sql in order under a PostgreSQL advisory lock,
 * each file in its own transaction together with its schema_migrations row, and refuses a
 * database that holds a version this binary has no file for. */
#include "tp/store.h"
#include "tp/config.h"
#include "tp/error.h"
#include "tp/log.h"
#include "store_int.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Arbitrary but fixed: every tenant-provisioner process migrating one database takes this lock. */
#define MIGRATE_LOCK_KEY "7470202501"
#define MIGRATION_FILE_MAX (4 * 1024 * 1024)

int tp_store_parse_migration_name(const char *fname, int *version) {
    size_t len = strlen(fname), i = 0;
    long v = 0;
    while (i < len && isdigit((unsigned char)fname[i])) {
        v = v * 10 + (fname[i] - '0');
        if (v > INT_MAX / 10)
            return TP_EINVAL;
        i++;
    }
    if (i == 0 || i >= len || fname[i] != '_')
        return TP_EINVAL;
    if (len < i + 1 + 4 + 1 || strcmp(fname + len - 4, ".sql") != 0)
        return TP_EINVAL; /* needs at least one character of name before ".sql" */
    if (v <= 0)
        return TP_EINVAL;
    *version = (int)v;
    return 0;
}

static int cmp_migration(const void *a, const void *b) {
    const tp_migration_file *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

int tp_store_list_migrations(const char *dir, tp_migration_file *files, int cap, int *n,
                             char *errstr, size_t errstr_size) {
    DIR *d = opendir(dir);
    struct dirent *de;
    int count = 0, rc = 0;
    *n = 0;
    if (!d) {
        snprintf(errstr, errstr_size, "cannot open migrations directory %s: %s", dir, strerror(errno));
        return TP_EIO;
    }
    while ((de = readdir(d)) != NULL) {
        int version;
        if (tp_store_parse_migration_name(de->d_name, &version) != 0)
            continue;
        if (strlen(de->d_name) >= TP_MIGRATION_NAME_MAX || count >= cap) {
            snprintf(errstr, errstr_size, "too many or too long migration files in %s", dir);
            rc = TP_ECONFIG;
            goto out_close;
        }
        files[count].version = version;
        memcpy(files[count].name, de->d_name, strlen(de->d_name) + 1);
        count++;
    }
    qsort(files, (size_t)count, sizeof(files[0]), cmp_migration);
    for (int i = 1; i < count; i++) {
        if (files[i].version == files[i - 1].version) {
            snprintf(errstr, errstr_size, "two migrations with version %d: %s and %s",
                     files[i].version, files[i - 1].name, files[i].name);
            rc = TP_ECONFIG;
            goto out_close;
        }
    }
    *n = count;
out_close:
    closedir(d);
    return rc;
}

static int ensure_table(tp_db *db) {
    return tp_db_exec(db,
                      "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                      "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
                      0, NULL, NULL);
}

/* Reads the applied versions; checks each against the files. *missing counts files not applied. */
static int compare_versions(tp_db *db, const tp_migration_file *files, int n, bool *applied,
                            int *missing, char *errstr, size_t errstr_size) {
    tp_res *res = NULL;
    int rc = tp_db_query(db, "SELECT version FROM schema_migrations ORDER BY version", 0, NULL, &res);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "reading schema_migrations: %s", tp_db_errmsg(db));
        return rc;
    }
    for (int i = 0; i < n; i++)
        applied[i] = false;
    for (int r = 0; r < tp_res_nrows(res); r++) {
        int64_t v = 0;
        bool known = false;
        tp_res_get_int64(res, r, 0, &v);
        for (int i = 0; i < n; i++) {
            if (files[i].version == v) {
                applied[i] = known = true;
                break;
            }
        }
        if (!known) {
            snprintf(errstr, errstr_size,
                     "database has schema version %lld that this binary does not know "
                     "(newest known: %d)", (long long)v, n ? files[n - 1].version : 0);
            tp_res_free(res);
            return TP_EDB_SCHEMA_NEWER;
        }
    }
    tp_res_free(res);
    *missing = 0;
    for (int i = 0; i < n; i++)
        if (!applied[i])
            (*missing)++;
    return 0;
}

static int apply_one(tp_db *db, const char *dir, const tp_migration_file *f, char *errstr,
                     size_t errstr_size) {
    char path[4096], vbuf[16];
    char *sql = NULL;
    size_t len = 0;
    int rc;
    snprintf(path, sizeof(path), "%s/%s", dir, f->name);
    rc = tp_read_file(path, MIGRATION_FILE_MAX, &sql, &len);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "cannot read %s", path);
        return rc;
    }
    snprintf(vbuf, sizeof(vbuf), "%d", f->version);
    const char *params[2] = {vbuf, f->name};
    if ((rc = tp_db_begin(db)) != 0)
        goto out_err;
    if ((rc = tp_db_exec_script(db, sql)) != 0)
        goto out_err;
    if ((rc = tp_db_exec(db, "INSERT INTO schema_migrations (version, name) VALUES ($1::int, $2) "
                             "ON CONFLICT (version) DO NOTHING",
                         2, params, NULL)) != 0)
        goto out_err;
    if ((rc = tp_db_commit(db)) != 0)
        goto out_err;
    tp_log_info("store", "applied migration %s", f->name);
    free(sql);
    return 0;
out_err:
    snprintf(errstr, errstr_size, "migration %s failed: %s (SQLSTATE %s)", f->name,
             tp_db_errmsg(db), tp_db_sqlstate(db));
    tp_db_rollback(db);
    free(sql);
    return rc;
}

int tp_store_migrate(tp_db *db, const char *sql_dir, char *errstr, size_t errstr_size) {
    tp_migration_file *files;
    bool applied[TP_MIGRATIONS_MAX];
    int n = 0, missing = 0, rc, urc;
    files = calloc(TP_MIGRATIONS_MAX, sizeof(*files));
    if (!files) {
        snprintf(errstr, errstr_size, "out of memory");
        return TP_ENOMEM;
    }
    rc = tp_store_list_migrations(sql_dir, files, TP_MIGRATIONS_MAX, &n, errstr, errstr_size);
    if (rc != 0)
        goto out_free;
    rc = tp_db_exec(db, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", 0, NULL, NULL);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "advisory lock: %s", tp_db_errmsg(db));
        goto out_free;
    }
    if ((rc = ensure_table(db)) != 0) {
        snprintf(errstr, errstr_size, "creating schema_migrations: %s", tp_db_errmsg(db));
        goto out_unlock;
    }
    rc = compare_versions(db, files, n, applied, &missing, errstr, errstr_size);
    if (rc != 0)
        goto out_unlock;
    for (int i = 0; i < n; i++) {
        if (applied[i])
            continue;
        if ((rc = apply_one(db, sql_dir, &files[i], errstr, errstr_size)) != 0)
            goto out_unlock;
    }
out_unlock:
    urc = tp_db_exec(db, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", 0, NULL, NULL);
    (void)urc; /* a lost connection releases the lock anyway */
out_free:
    free(files);
    return rc;
}

int tp_store_check_schema(tp_db *db, const char *sql_dir, char *errstr, size_t errstr_size) {
    tp_migration_file *files;
    bool applied[TP_MIGRATIONS_MAX];
    int n = 0, missing = 0, rc;
    bool found = false;
    char buf[8];
    files = calloc(TP_MIGRATIONS_MAX, sizeof(*files));
    if (!files)
        return TP_ENOMEM;
    rc = tp_store_list_migrations(sql_dir, files, TP_MIGRATIONS_MAX, &n, errstr, errstr_size);
    if (rc != 0)
        goto out_free;
    rc = tp_db_query_text(db, "SELECT to_regclass('schema_migrations') IS NOT NULL", 0, NULL, buf,
                          sizeof(buf), &found);
    if (rc != 0)
        goto out_free;
    if (strcmp(buf, "t") != 0) {
        snprintf(errstr, errstr_size, "database has no schema_migrations table: run migrations");
        rc = n ? TP_ECONFLICT : 0;
        goto out_free;
    }
    rc = compare_versions(db, files, n, applied, &missing, errstr, errstr_size);
    if (rc == 0 && missing > 0) {
        snprintf(errstr, errstr_size, "%d migration(s) not applied", missing);
        rc = TP_ECONFLICT;
    }
out_free:
    free(files);
    return rc;
}

int tp_store_schema_version(tp_db *db, int *version) {
    char buf[32];
    bool found = false;
    int rc;
    *version = 0;
    rc = tp_db_query_text(db, "SELECT to_regclass('schema_migrations') IS NOT NULL", 0, NULL, buf,
                          sizeof(buf), &found);
    if (rc != 0)
        return rc;
    if (strcmp(buf, "t") != 0)
        return 0;
    rc = tp_db_query_text(db, "SELECT max(version) FROM schema_migrations", 0, NULL, buf,
                          sizeof(buf), &found);
    if (rc == 0 && found)
        *version = atoi(buf);
    return rc;
}
