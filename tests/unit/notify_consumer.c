/* notify_consumer.c - notify's event handling on a real embedded doc store
 * (SQLite), event by event: the paths no other hosted service emits yet
 * (achievements' badges, commerce's orders) next to the social ones, the
 * self-action and preference rules, coalescing and its outbox events. The
 * events are built here and handed to the service's own consumer, exactly
 * as the host does after a fetch. */
#include "bus/cloudevent.h"
#include "core/uuid.h"
#include "services/service.h"
#include "store/doc.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const service_def notify_service;

static struct {
    char dir[64];
    doc_store *d;
    service_ctx ctx;
} fx;

static void setup(void)
{
    cr_assert_geq(sodium_init(), 0);
    snprintf(fx.dir, sizeof fx.dir, "/tmp/pulse-notify-unit-XXXXXX");
    cr_assert_not_null(mkdtemp(fx.dir));
    sql_options o = {.data_dir = fx.dir, .service = "notify"};
    pl_error err = {0};
    cr_assert_eq(doc_open("", &o, &fx.d, &err), 0, "%s", err.msg);
    cr_assert_geq(sql_migrate(doc_sql(fx.d), "bus", sql_builtin_migrations, sql_builtin_nmigrations, &err), 0, "%s",
                  err.msg);
    memset(&fx.ctx, 0, sizeof fx.ctx);
    fx.ctx.def = &notify_service;
    fx.ctx.doc = fx.d;
    fx.ctx.sql = doc_sql(fx.d);
    cr_assert_eq(notify_service.start(&fx.ctx, &err), 0, "%s", err.msg);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) { return remove(path); }

static void teardown(void)
{
    doc_close(fx.d);
    fx.d = NULL;
    nftw(fx.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(notify_consumer, .init = setup, .fini = teardown);

static const consumer_def *find_consumer(const char *name)
{
    for (size_t i = 0; i < notify_service.nconsumers; i++)
        if (strcmp(notify_service.consumers[i].name, name) == 0)
            return &notify_service.consumers[i];
    cr_assert_fail("no consumer %s", name);
    return NULL;
}

/* Applies one event (data stolen) through the named consumer, in its own transaction. */
static int apply(const char *cons, const char *type, json_t *data)
{
    cloudevent ev;
    char id[UUID_STR_LEN];
    uuid7_new(id);
    pl_error err = {0};
    cr_assert_eq(ce_new(&ev, "test", type, id, NULL, data, &err), 0, "%s", err.msg);
    sql_tx *tx;
    cr_assert_eq(sql_begin(doc_sql(fx.d), SQL_TX_WRITE, &tx, &err), 0, "%s", err.msg);
    int rc = find_consumer(cons)->handle(&fx.ctx, tx, &ev, &err);
    if (rc)
        sql_rollback(tx);
    else
        cr_assert_eq(sql_commit(tx, &err), 0, "%s", err.msg);
    ce_clear(&ev);
    return rc;
}

static char *new_id(char buf[UUID_STR_LEN])
{
    uuid7_new(buf);
    return buf;
}

/* The user's notifications, newest first (new references in *docs). */
static size_t inbox(const char *uid, json_t **docs, size_t max)
{
    json_t *u = json_string(uid);
    doc_cond w[] = {{"user_id", DOC_EQ, u}};
    doc_query q = {.where = w, .nwhere = 1, .order_by = "sort", .desc = true};
    sql_tx *tx;
    char **ids;
    json_t **found;
    size_t n;
    pl_error err = {0};
    cr_assert_eq(sql_begin(doc_sql(fx.d), SQL_TX_READ, &tx, &err), 0);
    cr_assert_eq(doc_find(tx, fx.d, "notifications", &q, &ids, &found, &n, &err), 0, "%s", err.msg);
    sql_rollback(tx);
    json_decref(u);
    for (size_t i = 0; i < n && i < max; i++)
        docs[i] = json_incref(found[i]);
    doc_results_free(ids, found, n);
    return n;
}

static void drop(json_t **docs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        json_decref(docs[i]);
}

static const char *s(const json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static int64_t outbox_count(const char *type)
{
    sql_tx *tx;
    sql_rows *r;
    int64_t n = -1;
    cr_assert_eq(sql_begin(doc_sql(fx.d), SQL_TX_READ, &tx, NULL), 0);
    cr_assert_eq(sql_query(tx, "SELECT count(*) FROM pulse_outbox WHERE type = $1", SQL_ARGS(SQL_TEXT(type)), &r, NULL), 0);
    if (sql_next(r, NULL) == 1)
        n = sql_int(r, 0);
    sql_rows_close(r);
    sql_rollback(tx);
    return n;
}

static void registered(const char *uid, const char *name)
{
    cr_assert_eq(apply("users", "pl.identity.user_registered.v1",
                       json_pack("{s:s, s:s, s:s, s:s, s:s}", "user_id", uid, "username", "someone", "display_name",
                                 name, "role", "student", "created_at", "2026-11-22T06:00:00.000Z")),
                 0);
}

Test(notify_consumer, badges_and_orders_notify_their_user_without_actors)
{
    char u[UUID_STR_LEN], b[UUID_STR_LEN], o1[UUID_STR_LEN], o2[UUID_STR_LEN];
    new_id(u);
    cr_assert_eq(apply("events", "pl.achievements.badge_awarded.v1",
                       json_pack("{s:s, s:s, s:s, s:s, s:s}", "badge_id", new_id(b), "user_id", u, "badge",
                                 "first_post", "title", "First post", "awarded_at", "2026-11-22T06:00:00.000Z")),
                 0);
    cr_assert_eq(apply("events", "pl.commerce.order_completed.v1",
                       json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:s}", "order_id", new_id(o1), "buyer_id", u,
                                 "course_id", b, "amount_cents", 4900, "currency", "EUR", "invoice_id", o1,
                                 "invoice_number", "INV-2026-000042")),
                 0);
    cr_assert_eq(apply("events", "pl.commerce.order_failed.v1",
                       json_pack("{s:s, s:s, s:s, s:s}", "order_id", new_id(o2), "buyer_id", u, "course_id", b,
                                 "reason", "sold_out")),
                 0);
    json_t *n[4];
    cr_assert_eq(inbox(u, n, 4), 3);
    cr_assert_str_eq(s(n[0], "kind"), "order");
    cr_assert_str_eq(s(n[0], "object_id"), o2);
    cr_assert_str_eq(s(n[0], "text"), "Your purchase could not be completed (sold_out)");
    cr_assert_str_eq(s(n[1], "text"), "Your purchase is complete (invoice INV-2026-000042)");
    cr_assert_str_eq(s(n[2], "kind"), "badge");
    cr_assert_str_eq(s(n[2], "object_type"), "badge");
    cr_assert_str_eq(s(n[2], "text"), "You earned the badge \"First post\"");
    cr_assert_eq(json_array_size(json_object_get(n[2], "actor_ids")), 0);
    cr_assert_eq(json_integer_value(json_object_get(n[2], "actor_count")), 0);
    drop(n, 3);
    cr_assert_eq(outbox_count("pl.notify.notification_created.v1"), 3);
}

Test(notify_consumer, rsvps_notify_the_organizer_only_for_news)
{
    char org[UUID_STR_LEN], who[UUID_STR_LEN], ev[UUID_STR_LEN];
    new_id(org), new_id(who), new_id(ev);
    registered(who, "Rui");
#define RSVP(st, prev)                                                                                                \
    apply("events", "pl.social.rsvp_changed.v1",                                                                      \
          json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s}", "event_id", ev, "organizer_id", org, "user_id", who, "status", \
                    st, "previous", prev, "changed_at", "2026-11-22T06:00:00.000Z"))
    cr_assert_eq(RSVP("cancelled", NULL), 0);
    cr_assert_eq(RSVP("interested", NULL), 0);
    cr_assert_eq(RSVP("interested", "interested"), 0);
    cr_assert_eq(RSVP("going", "interested"), 0);
    json_t *n[4];
    cr_assert_eq(inbox(org, n, 4), 2, "cancelled and unchanged statuses notify nobody");
    cr_assert_str_eq(s(n[0], "text"), "Rui is going to your event");
    cr_assert_str_eq(s(n[1], "text"), "Rui is interested in your event");
    cr_assert_str_eq(s(n[1], "object_type"), "campus_event");
    drop(n, 2);
    /* the organizer's own RSVP is not news to them */
    cr_assert_eq(apply("events", "pl.social.rsvp_changed.v1",
                       json_pack("{s:s, s:s, s:s, s:s, s:n, s:s}", "event_id", ev, "organizer_id", org, "user_id", org,
                                 "status", "going", "previous", "changed_at", "2026-11-22T06:00:00.000Z")),
                 0);
    cr_assert_eq(inbox(org, n, 4), 2);
    drop(n, 2);
}

static int like(const char *post, const char *author, const char *user)
{
    return apply("events", "pl.social.post_liked.v1",
                 json_pack("{s:s, s:s, s:s, s:s}", "post_id", post, "post_author_id", author, "user_id", user,
                           "liked_at", "2026-11-22T06:00:00.000Z"));
}

Test(notify_consumer, likes_coalesce_count_distinct_actors_once_and_reopen_after_read)
{
    char author[UUID_STR_LEN], post[UUID_STR_LEN], f[6][UUID_STR_LEN];
    new_id(author), new_id(post);
    static const char *const names[] = {"Ada", "Bo", "Cy", "Di", "Ed", "Flo"};
    for (int i = 0; i < 6; i++)
        registered(new_id(f[i]), names[i]);
    cr_assert_eq(like(post, author, author), 0);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(like(post, author, f[i]), 0);
    cr_assert_eq(like(post, author, f[1]), 0); /* a new event from a counted actor (unlike + like) */
    json_t *n[4];
    cr_assert_eq(inbox(author, n, 4), 1);
    cr_assert_eq(json_integer_value(json_object_get(n[0], "actor_count")), 5);
    json_t *ids = json_object_get(n[0], "actor_ids");
    cr_assert_eq(json_array_size(ids), 3);
    cr_assert_str_eq(json_string_value(json_array_get(ids, 0)), f[4]);
    cr_assert_str_eq(json_string_value(json_array_get(ids, 2)), f[2]);
    cr_assert_str_eq(s(n[0], "text"), "Ed, Di and 3 others liked your post");
    drop(n, 1);
    cr_assert_eq(outbox_count("pl.notify.notification_created.v1"), 1);
    cr_assert_eq(outbox_count("pl.notify.notification_updated.v1"), 4);
    /* read: the next liker opens a new one */
    sql_tx *tx;
    json_t *patch = json_pack("{s:b}", "read", 1), *uid = json_string(author);
    doc_cond w[] = {{"user_id", DOC_EQ, uid}};
    cr_assert_eq(sql_begin(doc_sql(fx.d), SQL_TX_WRITE, &tx, NULL), 0);
    cr_assert_eq(doc_patch_where(tx, fx.d, "notifications", w, 1, patch, NULL, NULL), 0);
    cr_assert_eq(sql_commit(tx, NULL), 0);
    json_decref(patch);
    json_decref(uid);
    cr_assert_eq(like(post, author, f[5]), 0);
    cr_assert_eq(inbox(author, n, 4), 2);
    cr_assert_str_eq(s(n[0], "text"), "Flo liked your post");
    cr_assert(json_is_false(json_object_get(n[0], "read")));
    drop(n, 2);
}

Test(notify_consumer, replies_and_comments)
{
    char pa[UUID_STR_LEN], c1[UUID_STR_LEN], c2[UUID_STR_LEN], post[UUID_STR_LEN], parent[UUID_STR_LEN],
        cid[UUID_STR_LEN];
    new_id(pa), new_id(c1), new_id(c2), new_id(post), new_id(parent);
#define COMMENT(author, par, par_author)                                                                              \
    apply("events", "pl.social.comment_created.v1",                                                                   \
          json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s?, s:s, s:b, s:s}", "comment_id", new_id(cid), "post_id", post,    \
                    "post_author_id", pa, "author_id", author, "parent_id", par, "parent_author_id", par_author,      \
                    "text", "hi", "peer_review", 0, "created_at", "2026-11-22T06:00:00.000Z"))
    cr_assert_eq(COMMENT(c1, NULL, NULL), 0);
    cr_assert_eq(COMMENT(c2, parent, c1), 0);   /* c1 gets a reply, pa a comment */
    cr_assert_eq(COMMENT(c2, parent, pa), 0);   /* pa's own comment replied to: one reply, no comment */
    cr_assert_eq(COMMENT(pa, parent, c1), 0);   /* pa replies to c1: c1's reply grows; pa nothing */
    json_t *n[4];
    cr_assert_eq(inbox(pa, n, 4), 2);
    cr_assert_str_eq(s(n[0], "kind"), "reply");
    cr_assert_eq(json_integer_value(json_object_get(n[1], "actor_count")), 2, "c1 and c2 commented");
    drop(n, 2);
    cr_assert_eq(inbox(c1, n, 4), 1);
    cr_assert_str_eq(s(n[0], "kind"), "reply");
    cr_assert_str_eq(s(n[0], "object_id"), parent);
    cr_assert_eq(json_integer_value(json_object_get(n[0], "actor_count")), 2);
    drop(n, 1);
}

Test(notify_consumer, preferences_and_bad_events)
{
    char u[UUID_STR_LEN], b[UUID_STR_LEN];
    new_id(u);
    json_t *pref = json_pack("{s:{s:b}}", "in_app", "badge", 0);
    sql_tx *tx;
    cr_assert_eq(sql_begin(doc_sql(fx.d), SQL_TX_WRITE, &tx, NULL), 0);
    cr_assert_eq(doc_put(tx, fx.d, "prefs", u, pref, NULL, NULL), 0);
    cr_assert_eq(sql_commit(tx, NULL), 0);
    json_decref(pref);
    cr_assert_eq(apply("events", "pl.achievements.badge_awarded.v1",
                       json_pack("{s:s, s:s, s:s, s:s, s:s}", "badge_id", new_id(b), "user_id", u, "badge", "quiz_ace",
                                 "title", "Quiz ace", "awarded_at", "2026-11-22T06:00:00.000Z")),
                 0);
    json_t *n[2];
    cr_assert_eq(inbox(u, n, 2), 0, "a kind switched off is not created");
    /* events that can never apply are PL_EINVAL (dead-lettered), and write nothing */
    cr_assert_eq(apply("events", "pl.social.post_liked.v1", json_pack("{s:s}", "post_id", b)), PL_EINVAL);
    cr_assert_eq(apply("events", "pl.commerce.order_failed.v1", json_pack("{s:i}", "buyer_id", 7)), PL_EINVAL);
    cr_assert_eq(apply("users", "pl.identity.profile_updated.v1", json_pack("{s:s}", "bio", "x")), PL_EINVAL);
    cr_assert_eq(outbox_count("pl.notify.notification_created.v1"), 0);
}
