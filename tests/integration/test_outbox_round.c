/* test_outbox_round: the relay's database round (outbox/relay_db.c) driven directly on a scratch
 * database, with receipts the real stages sealed (the stack's OPA, Ed25519): a round that marks
 * delivered receipts and finds new ones commits the marks, the positions and the numbering in ONE
 * transaction (every row it wrote has one xmin) and answers the new rows numbered in the same
 * statement; a round with nothing to mark or number writes nothing; a refused COMMIT leaves no
 * mark, no number and no row to send; a backlog past one batch asks for the next round; two relays at once take turns on the counter, number
 * densely in chain order and each answers only its own slots' rows; a round given the fetch
 * cursor answers only the rows from it on. The Kafka side of a round
 * (reconciliation) is left out: the slots are taken with the topic taken as empty. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "outbox/outbox_int.h"
#include "support/pgtest.h"
#include "support/stagetest.h"
#include "tp/config.h"
#include "tp/error.h"
#include "tp/policy.h"
#include "tp/receipts.h"
#include "tp/stages.h"
#include "tp/store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOPIC "tp-test-outbox-round"

typedef struct relay {
    tp_outbox_round round;
    tp_outbox_pos pos[TP_OUTBOX_SLOTS];
} relay;

typedef struct fixture {
    stagetest st;
    tp_config *cfg;
    relay a, b;
    int n_tenants;
    char *marks[2]; /* ids to mark (freed in teardown: assertions longjmp) */
} fixture;

static fixture fx;

static int setup(void **state) {
    char err[256];
    memset(&fx, 0, sizeof(fx));
    if (stagetest_open(&fx.st) != 0)
        return -1;
    fx.cfg = tp_config_new();
    if (!fx.cfg || tp_config_set(fx.cfg, "pg.dsn", fx.st.t.dsn, err, sizeof(err)) != 0 ||
        tp_config_set(fx.cfg, "topic.receipts", TOPIC, err, sizeof(err)) != 0)
        return -1;
    *state = &fx;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    relay *rs[2] = {&f->a, &f->b};
    for (int i = 0; i < 2; i++) {
        tp_outbox_round_rows_free(&rs[i]->round);
        tp_db_close(rs[i]->round.db);
        free(f->marks[i]);
    }
    tp_config_free(f->cfg);
    return stagetest_close(&f->st);
}

static int64_t qint(tp_db *db, const char *sql) {
    int64_t v = -1;
    assert_int_equal(pgtest_query_int(db, sql, &v), 0);
    return v;
}

static void qtext(tp_db *db, const char *sql, char *buf, size_t cap) {
    assert_int_equal(pgtest_query_text(db, sql, buf, cap), 0);
}

/* Provisions n new tenants (3 receipts each, committed unnumbered). */
static void provision(fixture *f, int n) {
    for (int i = 0; i < n; i++) {
        tp_request r;
        tp_run_result out;
        int k = f->n_tenants++;
        memset(&r, 0, sizeof(r));
        snprintf(r.request_id, sizeof(r.request_id), "req-round-%d", k);
        r.source = TP_SOURCE_BILLING;
        snprintf(r.actor.id, sizeof(r.actor.id), "billing");
        snprintf(r.actor.type, sizeof(r.actor.type), "system");
        snprintf(r.tenant.name, sizeof(r.tenant.name), "Round %d", k);
        snprintf(r.tenant.slug, sizeof(r.tenant.slug), "round-%d", k);
        r.tenant.residency = TP_RESIDENCY_US;
        r.plan = TP_PLAN_PRO;
        r.environment = TP_ENV_PROD;
        r.has_requested_seats = true;
        r.requested_seats = 3;
        r.submitted_at_ms = 1700000000000;
        assert_int_equal(tp_stages_run(&f->st.env, &r, &out), 0);
        assert_int_equal(out.status, TP_RUN_SUCCEEDED);
    }
}

/* A claim round: takes (or gives back) slots up to this relay's share; the topic being empty,
 * the slots taken count as reconciled. */
static void claim(fixture *f, relay *r) {
    tp_outbox_round *round = &r->round;
    round->cfg = f->cfg;
    round->claim = true;
    round->skip_reconcile = true;
    round->fetch = false;
    round->mark_ids = NULL;
    round->n_pos = 0;
    for (int s = 0; s < TP_OUTBOX_SLOTS; s++)
        round->releasable[s] = true;
    tp_outbox_round_run(round);
    assert_int_equal(round->rc, 0);
    for (int s = 0; s < TP_OUTBOX_SLOTS; s++)
        round->reconcile[s] = false;
}

/* A publishing round as the relay's kick starts one: marks (may be NULL) and a fetch. */
static void publish_round(fixture *f, relay *r, char *mark_ids, size_t n_pos) {
    tp_outbox_round *round = &r->round;
    tp_outbox_round_rows_free(round);
    round->cfg = f->cfg;
    round->claim = false;
    round->skip_reconcile = true;
    round->fetch = true;
    round->mark_ids = mark_ids;
    round->pos = r->pos;
    round->n_pos = n_pos;
    round->limit = 500;
    round->notify_others = false;
    tp_outbox_round_run(round);
}

/* "{id,...}" of the rows the round answered (what the relay would send, then mark). */
static char *ids_of(const tp_outbox_round *round) {
    size_t cap = 16 + round->n_rows * 72, len = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    s[len++] = '{';
    for (size_t i = 0; i < round->n_rows; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s%s", i ? "," : "", round->rows[i].rec.receipt_id);
    snprintf(s + len, cap - len, "}");
    return s;
}

/* Every answered row is numbered as committed, in a slot the relay holds, readable, and a
 * tenant's rows come in chain order. */
static void assert_rows_committed(fixture *f, const tp_outbox_round *round) {
    for (size_t i = 0; i < round->n_rows; i++) {
        const tp_outbox_row *row = &round->rows[i];
        const char *p[1] = {row->rec.receipt_id};
        int64_t leaf = -2;
        assert_false(row->bad);
        assert_true(row->slot >= 0 && row->slot < TP_OUTBOX_SLOTS);
        assert_true(round->held[row->slot]);
        assert_int_equal(pgtest_query_int_p(f->st.db, "SELECT leaf_index FROM receipt_outbox WHERE receipt_id = $1",
                                            1, p, &leaf), 0);
        assert_int_equal(leaf, row->leaf_index);
        if (i > 0 && strcmp(round->rows[i - 1].rec.tenant_id, row->rec.tenant_id) == 0) {
            assert_true(round->rows[i - 1].rec.sequence < row->rec.sequence);
            assert_true(round->rows[i - 1].leaf_index < row->leaf_index);
        }
    }
}

/* Every receipt numbered: dense from 0, unique, increasing along each tenant's chain. */
static void assert_log_dense(fixture *f, int64_t want) {
    assert_int_equal(qint(f->st.db, "SELECT count(*) FROM receipt_outbox WHERE leaf_index IS NULL"), 0);
    assert_int_equal(qint(f->st.db, "SELECT count(DISTINCT leaf_index) FROM receipt_outbox"), want);
    assert_int_equal(qint(f->st.db, "SELECT max(leaf_index) + 1 FROM receipt_outbox"), want);
    assert_int_equal(qint(f->st.db, "SELECT next_leaf FROM tlog_counter"), want);
    assert_int_equal(qint(f->st.db, "SELECT count(*) FROM (SELECT leaf_index < lead(leaf_index) OVER (PARTITION "
                                 "BY tenant_id ORDER BY sequence) AS up FROM receipt_outbox) x WHERE up IS FALSE"), 0);
}

/* The transaction ids (xmin, and xmax: a row lock) of every row a round may write. */
#define WRITES_SQL                                                                                 \
    "SELECT concat_ws(';', (SELECT string_agg(receipt_id || ':' || xmin || ':' || xmax, ',' ORDER BY " \
    "receipt_id) FROM receipt_outbox), (SELECT xmin || ':' || xmax FROM tlog_counter), "          \
    "(SELECT string_agg(slot || ':' || partition || ':' || xmin, ',' ORDER BY slot, partition) "  \
    "FROM receipt_topic_positions))"

static void test_marks_and_numbering_one_commit(void **state) {
    fixture *f = *state;
    tp_outbox_round *round = &f->a.round;
    char **marks = &f->marks[0], before[65536], after[65536];

    claim(f, &f->a);
    for (int s = 0; s < TP_OUTBOX_SLOTS; s++)
        assert_true(round->held[s]); /* the only relay: every slot */

    /* Receipts committed unnumbered; the round numbers them and answers them numbered. */
    provision(f, 2);
    assert_int_equal(qint(f->st.db, "SELECT count(*) FROM receipt_outbox WHERE leaf_index IS NULL"), 6);
    publish_round(f, &f->a, NULL, 0);
    assert_int_equal(round->rc, 0);
    assert_int_equal(round->sequenced, 6);
    assert_false(round->sequence_more);
    assert_int_equal(round->n_rows, 6);
    assert_rows_committed(f, round);
    assert_log_dense(f, 6);

    /* Delivered: the next round marks them (with a topic position of the first row's slot) while
     * three new receipts wait. ONE transaction wrote the marks, the position, the numbering and
     * the counter: every row it wrote has its xmin. */
    *marks = ids_of(round);
    f->a.pos[0] = (tp_outbox_pos){round->rows[0].slot, 0, 6};
    provision(f, 1);
    publish_round(f, &f->a, *marks, 1);
    assert_int_equal(round->rc, 0);
    assert_int_equal(round->marked, 6);
    assert_int_equal(round->sequenced, 3);
    assert_int_equal(round->n_rows, 3); /* the new ones, answered by the numbering statement */
    assert_rows_committed(f, round);
    assert_log_dense(f, 9);
    assert_int_equal(qint(f->st.db, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL"), 6);
    assert_int_equal(qint(f->st.db, "SELECT count(*) FROM receipt_topic_positions"), 1);
    assert_int_equal(qint(f->st.db, "SELECT count(DISTINCT xmin::text) FROM (SELECT xmin FROM receipt_outbox "
                                 "WHERE published_at IS NOT NULL OR leaf_index >= 6 UNION ALL SELECT xmin "
                                 "FROM tlog_counter UNION ALL SELECT xmin FROM receipt_topic_positions) w"), 1);

    /* Nothing to mark, nothing to number: the round reads (the unpublished rows come back, as
     * the relay's rows in flight do, skipped there) and writes nothing: no row changed, no row
     * locked, the counter untouched. */
    qtext(f->st.db, WRITES_SQL, before, sizeof(before));
    publish_round(f, &f->a, NULL, 0);
    assert_int_equal(round->rc, 0);
    assert_int_equal(round->sequenced, 0);
    assert_int_equal(round->n_rows, 3);
    qtext(f->st.db, WRITES_SQL, after, sizeof(after));
    assert_string_equal(before, after);

    /* Marks without new receipts: one transaction, the counter neither locked nor moved. */
    free(*marks);
    *marks = ids_of(round);
    qtext(f->st.db, "SELECT xmin || ':' || xmax FROM tlog_counter", before, sizeof(before));
    publish_round(f, &f->a, *marks, 0);
    assert_int_equal(round->rc, 0);
    assert_int_equal(round->marked, 3);
    assert_int_equal(round->n_rows, 0);
    qtext(f->st.db, "SELECT xmin || ':' || xmax FROM tlog_counter", after, sizeof(after));
    assert_string_equal(before, after);
    assert_int_equal(qint(f->st.db, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NULL"), 0);
}

/* A COMMIT the database refuses (a deferred trigger, as a failure at commit would be) leaves the
 * marks undone, the new receipts unnumbered, the counter where it was, and the round answers no
 * row, so no leaf index that is not committed ever goes out. The next session's round does it all. */
static void test_refused_commit_publishes_nothing(void **state) {
    fixture *f = *state;
    tp_outbox_round *round = &f->a.round;
    char **marks = &f->marks[0];

    claim(f, &f->a);
    provision(f, 1);
    publish_round(f, &f->a, NULL, 0);
    assert_int_equal(round->rc, 0);
    assert_int_equal(round->n_rows, 3);
    *marks = ids_of(round);
    provision(f, 1);
    assert_int_equal(tp_db_exec_script(f->st.db,
                                       "CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS "
                                       "$$BEGIN RAISE EXCEPTION 'commit refused'; END$$;"
                                       "CREATE CONSTRAINT TRIGGER refuse_commit AFTER UPDATE ON tlog_counter "
                                       "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_commit();"),
                     0);
    publish_round(f, &f->a, *marks, 0);
    assert_int_not_equal(round->rc, 0);
    assert_string_equal(round->failed_step, "commit");
    assert_int_equal(round->n_rows, 0);
    assert_int_equal(qint(f->st.db, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NOT NULL"), 0);
    assert_int_equal(qint(f->st.db, "SELECT count(*) FROM receipt_outbox WHERE leaf_index IS NULL"), 3);
    assert_int_equal(qint(f->st.db, "SELECT next_leaf FROM tlog_counter"), 3);

    /* As the relay does after a failed round: a new session, the slots taken again. */
    assert_int_equal(tp_db_exec_script(f->st.db, "DROP TRIGGER refuse_commit ON tlog_counter"), 0);
    tp_db_close(round->db);
    round->db = NULL;
    claim(f, &f->a);
    publish_round(f, &f->a, *marks, 0);
    assert_int_equal(round->rc, 0);
    assert_int_equal(round->marked, 3);
    assert_int_equal(round->n_rows, 3);
    assert_rows_committed(f, round);
    assert_log_dense(f, 6);
}

/* A backlog larger than one batch (rows made here, not by the stages: 520 receipts of 10
 * tenants): a round numbers TP_OUTBOX_SEQUENCE_BATCH of them in (tenant, sequence) order and says
 * more wait (the relay then runs the next round at once); the next round numbers the rest. */
static void test_full_batch_asks_for_more(void **state) {
    fixture *f = *state;
    tp_outbox_round *round = &f->a.round;

    claim(f, &f->a);
    assert_int_equal(tp_db_exec_script(f->st.db,
                                       "INSERT INTO tenants (id, name, slug, residency, region, plan, environment, "
                                       "created_by_request) SELECT 'batch-' || g, 'Batch ' || g, 'batch-' || g, 'US', "
                                       "'us-east-1', 'PRO', 'prod', 'req-batch-' || g FROM generate_series(1, 10) g;"
                                       "INSERT INTO receipt_outbox (receipt_id, tenant_id, request_id, action_type, "
                                       "sequence, previous_hash, hash, payload, envelope, signed_at_ms) SELECT "
                                       "'prov_batch_' || g || '_' || k, 'batch-' || g, 'req-batch-' || g || '-' || k, "
                                       "'TENANT_PROVISIONED', k, 'prev', 'hash', convert_to('{}', 'UTF8'), "
                                       "'{\"signatures\": [{\"keyid\": \"k\", \"sig\": \"c2ln\"}]}', 1700000000000 "
                                       "FROM generate_series(1, 10) g, generate_series(1, 52) k;"),
                     0);
    publish_round(f, &f->a, NULL, 0);
    assert_int_equal(round->rc, 0);
    assert_int_equal(round->sequenced, TP_OUTBOX_SEQUENCE_BATCH);
    assert_true(round->sequence_more);
    assert_int_equal(round->n_rows, 500);
    assert_rows_committed(f, round);
    assert_int_equal(qint(f->st.db, "SELECT count(*) FROM receipt_outbox WHERE leaf_index IS NULL"),
                     520 - TP_OUTBOX_SEQUENCE_BATCH);
    publish_round(f, &f->a, NULL, 0);
    assert_int_equal(round->rc, 0);
    assert_int_equal(round->sequenced, 520 - TP_OUTBOX_SEQUENCE_BATCH);
    assert_false(round->sequence_more);
    assert_log_dense(f, 520);
}

/* The fetch's cursor: a round answers the log's next leaf in its snapshot, and a round given it
 * (for the same slots) answers only rows from there on, not the ones already sent (before it,
 * every round read the unpublished rows again for the relay to skip them); given it for other
 * slots, the round reads them all again. */
static void test_fetch_from_next_leaf(void **state) {
    fixture *f = *state;
    tp_outbox_round *round = &f->a.round;

    claim(f, &f->a);
    provision(f, 2);
    publish_round(f, &f->a, NULL, 0);
    assert_int_equal(round->rc, 0);
    assert_int_equal(round->n_rows, 6);
    assert_int_equal(round->next_leaf, 6);
    assert_int_equal(round->fetched_mask, 0xFFFFu);

    /* Sent, not marked: three new receipts; the round given the cursor answers only those. */
    round->from_leaf = round->next_leaf;
    round->from_mask = round->fetched_mask;
    provision(f, 1);
    publish_round(f, &f->a, NULL, 0);
    assert_int_equal(round->rc, 0);
    assert_int_equal(round->sequenced, 3);
    assert_int_equal(round->n_rows, 3);
    assert_rows_committed(f, round);
    for (size_t i = 0; i < round->n_rows; i++)
        assert_true(round->rows[i].leaf_index >= 6);
    assert_int_equal(round->next_leaf, 9);

    /* Nothing new: the plain fetch from leaf 9 answers nothing (the 9 unpublished rows used to). */
    round->from_leaf = round->next_leaf;
    publish_round(f, &f->a, NULL, 0);
    assert_int_equal(round->rc, 0);
    assert_int_equal(round->sequenced, 0);
    assert_int_equal(round->n_rows, 0);
    assert_int_equal(qint(f->st.db, "SELECT count(*) FROM receipt_outbox WHERE published_at IS NULL"), 9);

    /* A cursor learned for other slots does not apply: every unpublished row comes back. */
    round->from_mask = 0x1u;
    publish_round(f, &f->a, NULL, 0);
    assert_int_equal(round->rc, 0);
    assert_int_equal(round->n_rows, 9);
    assert_int_equal(round->next_leaf, 9);
}

static void *round_thread(void *arg) {
    tp_outbox_round_run(arg);
    return NULL;
}

/* Two relays (two sessions, 8 slots each) run their rounds at the same moment, marking what they
 * answered the time before while new receipts wait: they take turns on the counter, the log
 * stays dense and in chain order, and each answers only its own slots' rows, every row once. */
static void test_two_relays_take_turns(void **state) {
    fixture *f = *state;
    relay *rs[2] = {&f->a, &f->b};
    char **marks = f->marks;
    int64_t answered = 0, total = 0;
    bool seen_a = false, seen_b = false;

    claim(f, &f->a); /* all 16 */
    claim(f, &f->b); /* none free: asks A to give some back */
    claim(f, &f->a); /* down to its share */
    claim(f, &f->b); /* takes the rest */
    for (int s = 0; s < TP_OUTBOX_SLOTS; s++)
        assert_true(f->a.round.held[s] != f->b.round.held[s]);
    for (int i = 0; i < 2; i++) {
        int n = 0; /* the claims' NOTIFYs: not what is checked below */
        assert_int_equal(tp_db_consume_notifies(rs[i]->round.db, &n), 0);
    }

    for (int iter = 0; iter < 4; iter++) {
        pthread_t th[2];
        provision(f, 6);
        total += 18;
        for (int i = 0; i < 2; i++) {
            tp_outbox_round *round = &rs[i]->round;
            tp_outbox_round_rows_free(round);
            round->cfg = f->cfg;
            round->claim = false;
            round->skip_reconcile = true;
            round->fetch = true;
            round->mark_ids = marks[i];
            round->n_pos = 0;
            round->limit = 500;
            round->notify_others = true; /* sent with the commit */
        }
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_create(&th[i], NULL, round_thread, &rs[i]->round), 0);
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_join(th[i], NULL), 0);
        for (int i = 0; i < 2; i++) {
            tp_outbox_round *round = &rs[i]->round;
            if (round->rc != 0)
                fprintf(stderr, "relay %d: %s: %s\n", i, round->failed_step, tp_db_errmsg(round->db));
            assert_int_equal(round->rc, 0);
            assert_rows_committed(f, round);
            answered += (int64_t)round->n_rows;
            free(marks[i]);
            marks[i] = ids_of(round);
        }
        seen_a = seen_a || f->a.round.n_rows > 0;
        seen_b = seen_b || f->b.round.n_rows > 0;
        /* Each answered exactly the receipts of its slots not published yet: all of this batch. */
        assert_int_equal(answered, total);
        assert_log_dense(f, total);
    }
    assert_true(seen_a && seen_b);
    /* The rounds' NOTIFYs (sent with their commits) reached the other relay's session. */
    for (int i = 0; i < 2; i++) {
        int n = 0;
        assert_int_equal(tp_db_consume_notifies(rs[i]->round.db, &n), 0);
        assert_true(n > 0);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_marks_and_numbering_one_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_commit_publishes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_batch_asks_for_more, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_relays_take_turns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fetch_from_next_leaf, setup, teardown),
    };
    if (getenv("TP_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TP_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
