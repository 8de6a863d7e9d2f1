/*
 * project.c - the timeline projection: builds the follow graph, the post and
 * user read models (sql) and every home feed (kv sorted sets) from social's
 * and identity's events, and announces new feed entries.
 *
 * Exactly-once with two stores. The sql effects (read models, outbox rows of
 * pl.timeline.entries_added.v1) are in the consumer's transaction with its
 * inbox row: all or nothing. The kv effects cannot join that transaction, so
 * every handler does them LAST (after its sql statements succeeded) and only
 * does what is idempotent and order-insensitive against a replay of the same
 * events: ZADD of (post id, creation time) — the same member with the same
 * score — and ZREM. Then:
 *   - crash or failed commit after the kv writes: nothing in sql happened,
 *     the events come again, and the kv writes are repeated to the same end;
 *   - a kv write that fails: the handler fails, its savepoint undoes its sql
 *     writes, the event is retried;
 *   - the kv writes become visible before the sql commit: a reader then sees
 *     a feed entry whose post is not in the read model yet, and skips it (the
 *     read path shows only posts present, not deleted, by the reader or by
 *     someone the reader follows in the committed follow graph), so an entry
 *     whose transaction never commits is never shown either.
 * sql_after_commit is not used for the kv writes: a crash between the commit
 * and the callback would lose them for good (the inbox says "done").
 */
#include "bus/outbox.h"
#include "core/arena.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "services/timeline/feed.h"
#include "services/timeline/timeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENTRIES_CHUNK 1000 /* user_ids per entries_added event (docs/EVENTS.md) */

static const char *str(const json_t *d, const char *key) { return json_string_value(json_object_get(d, key)); }

/* A required id member (post, user): present and usable as a kv member and key. */
static const char *need_id(const cloudevent *ev, const char *key, pl_error *err)
{
    const char *s = str(ev->data, key);
    if (!tl_id_valid(s)) {
        err_set(err, PL_EINVAL, key, "%s without a valid data.%s", ev->type, key);
        return NULL;
    }
    return s;
}

/* ---- cache invalidation after commit ------------------------------------------------------------ */

static cache *kind_cache(timeline *t, char kind)
{
    return kind == 'p' ? t->posts : kind == 'u' ? t->users : t->readers;
}

static void flush_pending(void *ud)
{
    timeline *t = ud;
    pthread_mutex_lock(&t->pend_lock);
    for (size_t i = 0; i < t->npending; i++)
        cache_invalidate(kind_cache(t, t->pending[i][0]), t->pending[i] + 1);
    t->npending = 0;
    pthread_mutex_unlock(&t->pend_lock);
}

/* Drops a cached post ('p'), author ('u') or reader state ('r') now, and again once tx commits. Keys of a transaction
 * that rolled back stay pending until the next commit: an extra invalidation costs one load. */
static void invalidate(timeline *t, sql_tx *tx, char kind, const char *id)
{
    cache_invalidate(kind_cache(t, kind), id);
    pthread_mutex_lock(&t->pend_lock);
    if (t->npending == t->cap_pending) {
        t->cap_pending = t->cap_pending ? t->cap_pending * 2 : 64;
        t->pending = realloc(t->pending, t->cap_pending * sizeof *t->pending);
        if (!t->pending)
            abort();
    }
    snprintf(t->pending[t->npending++], sizeof t->pending[0], "%c%s", kind, id);
    pthread_mutex_unlock(&t->pend_lock);
    sql_after_commit(tx, flush_pending, t);
}

/* ---- helpers ----------------------------------------------------------------------------------- */

static void read_int(void *ud, sql_rows *r) { *(int64_t *)ud = sql_int(r, 0); }

static int add_owner(sql_tx *tx, const char *user_id, pl_error *err)
{
    return sql_exec(tx, "INSERT INTO timeline_feed_owners (user_id) VALUES ($1) ON CONFLICT DO NOTHING",
                    SQL_ARGS(SQL_TEXT(user_id)), NULL, err);
}

/* The followers of an author, copied into the arena. */
static int followers_of(sql_tx *tx, arena *a, const char *author, char ***out, size_t *n, pl_error *err)
{
    sql_rows *r;
    *out = NULL;
    *n = 0;
    int rc = sql_query(tx, "SELECT follower_id FROM timeline_follows WHERE followee_id = $1",
                       SQL_ARGS(SQL_TEXT(author)), &r, err);
    if (rc)
        return rc;
    size_t cap = 0;
    while ((rc = sql_next(r, err)) == 1) {
        if (*n == cap) {
            size_t ncap = cap ? cap * 2 : 256;
            char **grown = arena_alloc(a, ncap * sizeof *grown);
            if (cap)
                memcpy(grown, *out, cap * sizeof *grown);
            *out = grown;
            cap = ncap;
        }
        (*out)[(*n)++] = arena_strdup(a, sql_text(r, 0));
    }
    sql_rows_close(r);
    return rc < 0 ? rc : 0;
}

/* The users who liked a post, copied into the arena. */
static int likers_of(sql_tx *tx, arena *a, const char *post_id, char ***out, size_t *n, pl_error *err)
{
    sql_rows *r;
    *out = NULL;
    *n = 0;
    int rc = sql_query(tx, "SELECT user_id FROM timeline_likes WHERE post_id = $1", SQL_ARGS(SQL_TEXT(post_id)), &r, err);
    if (rc)
        return rc;
    size_t cap = 0;
    while ((rc = sql_next(r, err)) == 1) {
        if (*n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char **grown = arena_alloc(a, ncap * sizeof *grown);
            if (cap)
                memcpy(grown, *out, cap * sizeof *grown);
            *out = grown;
            cap = ncap;
        }
        (*out)[(*n)++] = arena_strdup(a, sql_text(r, 0));
    }
    sql_rows_close(r);
    return rc < 0 ? rc : 0;
}

void tl_feed_key(char out[TL_FEED_KEY], const char *prefix, const char *id)
{
    snprintf(out, TL_FEED_KEY, "%s:%s", prefix, id);
}

/* ---- social: posts -------------------------------------------------------------------------------- */

/* Announces that post_id entered the feeds of users[0..n): one event per 1,000 recipients. */
static int announce(timeline *t, sql_tx *tx, const char *post_id, const char *author, char **users, size_t n,
                    pl_error *err)
{
    if (atomic_load(&t->replaying))
        return 0;
    char now[32];
    time_rfc3339(time_now_ms(), now, sizeof now);
    for (size_t i = 0; i < n; i += ENTRIES_CHUNK) {
        json_t *ids = json_array();
        for (size_t k = i; k < n && k < i + ENTRIES_CHUNK; k++)
            json_array_append_new(ids, json_string(users[k]));
        int rc = outbox_emit(tx, "timeline", "pl.timeline.entries_added.v1", post_id, author,
                             json_pack("{s:s, s:s, s:o, s:s}", "post_id", post_id, "author_id", author, "user_ids", ids,
                                       "added_at", now),
                             NULL, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int on_post_created(timeline *t, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    const json_t *d = ev->data;
    const char *post_id = need_id(ev, "post_id", err), *author = post_id ? need_id(ev, "author_id", err) : NULL;
    if (!author)
        return PL_EINVAL;
    const char *text = str(d, "text"), *vis = str(d, "visibility"), *created = str(d, "created_at");
    const json_t *course = json_object_get(d, "course_id");
    int64_t created_ms;
    if (!text || !vis || (strcmp(vis, "public") && strcmp(vis, "followers")) || !created ||
        time_parse_rfc3339(created, &created_ms) || created_ms < 0 || (course && !json_is_null(course) && !json_is_string(course)))
        return err_set(err, PL_EINVAL, "data", "post_created without text, visibility, created_at or course_id");
    int64_t changes = 0;
    int rc = sql_exec(tx,
                      "INSERT INTO timeline_posts (post_id, author_id, text, course_id, visibility, created_at, created_ms)"
                      " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (post_id) DO NOTHING",
                      SQL_ARGS(SQL_TEXT(post_id), SQL_TEXT(author), SQL_TEXT(text),
                               SQL_TEXT_OR_NULL(json_string_value(course)), SQL_TEXT(vis), SQL_TEXT(created),
                               SQL_INT(created_ms)),
                      &changes, err);
    if (rc || changes == 0) /* the same post again (another event id): already in every feed */
        return rc;
    int64_t followers = 0;
    if ((rc = sql_exec(tx, "INSERT INTO timeline_authors (author_id) VALUES ($1) ON CONFLICT DO NOTHING",
                       SQL_ARGS(SQL_TEXT(author)), NULL, err)) ||
        (rc = sql_one(tx, "SELECT followers FROM timeline_authors WHERE author_id = $1", SQL_ARGS(SQL_TEXT(author)),
                      read_int, &followers, err)) < 0 ||
        (rc = add_owner(tx, author, err)))
        return rc;
    bool fan = followers <= t->fanout_threshold;
    rc = fan ? sql_exec(tx, "UPDATE timeline_posts SET fanned = 1 WHERE post_id = $1", SQL_ARGS(SQL_TEXT(post_id)),
                        NULL, err)
             : sql_exec(tx, "UPDATE timeline_authors SET unfanned = 1 WHERE author_id = $1 AND unfanned = 0",
                        SQL_ARGS(SQL_TEXT(author)), &changes, err);
    if (rc)
        return rc;
    bool flipped = !fan && changes == 1; /* the author's first post left out of the fan-out */
    arena *a = arena_create(64 * 1024);
    char **users = NULL;
    size_t n = 0;
    int64_t t0 = time_mono_ns(), t1, t2, t3;
    if (fan || flipped)
        rc = followers_of(tx, a, author, &users, &n, err);
    t1 = time_mono_ns();
    if (flipped) {
        /* every follower's cached reader state must now list this author as merged at read time
         * (once per author: later posts find the flag already set) */
        for (size_t i = 0; i < n; i++)
            invalidate(t, tx, 'r', users[i]);
        n = 0;
    }
    /* likes that arrived before the post (they are partitioned by post, the post by author) */
    char **likers = NULL;
    size_t nlikers = 0;
    if (!rc)
        rc = likers_of(tx, a, post_id, &likers, &nlikers, err);
    /* recipients: the author first, then the followers (nobody else: a home feed is the people
     * you follow and yourself, for public and followers-only posts alike) */
    char **all = arena_alloc(a, (n + 1) * sizeof *all);
    all[0] = (char *)author;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) /* a self-follow (social refuses them) must not list the author twice */
        if (strcmp(users[i], author) != 0)
            all[1 + kept++] = users[i];
    n = kept;
    if (!rc && fan)
        rc = announce(t, tx, post_id, author, all, n + 1, err);
    t2 = time_mono_ns();
    if (!rc) {
        kv_zop *ops = arena_alloc(a, (n + 2 + nlikers) * sizeof *ops);
        char *keys = arena_alloc(a, (n + 2 + nlikers) * TL_FEED_KEY);
        tl_feed_key(keys, "posts", author);
        ops[0] = (kv_zop){.key = keys, .member = post_id, .score = (double)created_ms, .trim_to = t->author_posts_max};
        for (size_t i = 0; i < n + 1; i++) {
            char *k = keys + (i + 1) * TL_FEED_KEY;
            tl_feed_key(k, "feed", all[i]);
            ops[i + 1] = (kv_zop){.key = k, .member = post_id, .score = (double)created_ms, .trim_to = t->feed_max};
        }
        for (size_t i = 0; i < nlikers; i++) {
            char *k = keys + (n + 2 + i) * TL_FEED_KEY;
            tl_feed_key(k, "likes", likers[i]);
            ops[n + 2 + i] = (kv_zop){.key = k, .member = post_id, .score = (double)created_ms};
        }
        rc = kv_zadd_batch(t->ctx->kv, ops, n + 2 + nlikers, err);
    }
    t3 = time_mono_ns();
    arena_destroy(a);
    if (!rc)
        log_with(fan ? LOG_INFO : LOG_DEBUG, fan ? "fanned out" : "kept for read-time merge", LF_STR("post_id", post_id),
                 LF_INT("feeds", n + 1), LF_DBL("followers_ms", (double)(t1 - t0) / 1e6),
                 LF_DBL("announce_ms", (double)(t2 - t1) / 1e6), LF_DBL("kv_ms", (double)(t3 - t2) / 1e6),
                 LF_DBL("lag_ms", (double)(time_now_ms() - created_ms)));
    return rc;
}

static int on_post_updated(timeline *t, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    const json_t *d = ev->data;
    const char *post_id = need_id(ev, "post_id", err);
    if (!post_id)
        return PL_EINVAL;
    const char *text = str(d, "text"), *vis = str(d, "visibility");
    const json_t *course = json_object_get(d, "course_id");
    if (!text || !vis || (strcmp(vis, "public") && strcmp(vis, "followers")) ||
        (course && !json_is_null(course) && !json_is_string(course)))
        return err_set(err, PL_EINVAL, "data", "post_updated without text, visibility or course_id");
    int rc = sql_exec(tx, "UPDATE timeline_posts SET text = $2, course_id = $3, visibility = $4 WHERE post_id = $1",
                      SQL_ARGS(SQL_TEXT(post_id), SQL_TEXT(text), SQL_TEXT_OR_NULL(json_string_value(course)),
                               SQL_TEXT(vis)),
                      NULL, err);
    if (!rc)
        invalidate(t, tx, 'p', post_id);
    return rc;
}

typedef struct post_row {
    char author[TL_ID_MAX + 1];
    int64_t fanned;
} post_row;

static void read_post_row(void *ud, sql_rows *r)
{
    post_row *p = ud;
    snprintf(p->author, sizeof p->author, "%s", sql_text(r, 0));
    p->fanned = sql_int(r, 1);
}

/* The post stays in the read model, marked deleted (a late like or a stale feed entry then finds
 * it and shows nothing); its entries leave every feed it was fanned out to. */
static int on_post_deleted(timeline *t, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    const char *post_id = need_id(ev, "post_id", err), *author = post_id ? need_id(ev, "author_id", err) : NULL;
    if (!author)
        return PL_EINVAL;
    post_row p = {0};
    int rc = sql_one(tx, "SELECT author_id, fanned FROM timeline_posts WHERE post_id = $1",
                     SQL_ARGS(SQL_TEXT(post_id)), read_post_row, &p, err);
    if (rc < 0)
        return rc;
    if ((rc = sql_exec(tx, "UPDATE timeline_posts SET deleted = 1 WHERE post_id = $1", SQL_ARGS(SQL_TEXT(post_id)),
                       NULL, err)))
        return rc;
    invalidate(t, tx, 'p', post_id);
    arena *a = arena_create(16 * 1024);
    char **users = NULL;
    size_t n = 0;
    if (p.fanned)
        rc = followers_of(tx, a, author, &users, &n, err);
    char key[TL_FEED_KEY];
    tl_feed_key(key, "posts", author);
    if (!rc && (rc = kv_zrem(t->ctx->kv, key, post_id, err)) > 0)
        rc = 0;
    tl_feed_key(key, "feed", author);
    if (!rc && (rc = kv_zrem(t->ctx->kv, key, post_id, err)) > 0)
        rc = 0;
    /* A celebrity's post (not fanned out) is only in its author's sets; a copy a follower got by
     * backfill is never shown (the read model says deleted) and ages out of the feed. */
    for (size_t i = 0; i < n && !rc; i++) {
        tl_feed_key(key, "feed", users[i]);
        if ((rc = kv_zrem(t->ctx->kv, key, post_id, err)) > 0)
            rc = 0;
    }
    arena_destroy(a);
    return rc;
}

/* ---- social: follows --------------------------------------------------------------------------------- */

static int on_followed(timeline *t, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    const char *follower = need_id(ev, "follower_id", err), *followee = follower ? need_id(ev, "followee_id", err) : NULL;
    if (!followee)
        return PL_EINVAL;
    int64_t changes = 0;
    int rc = sql_exec(tx,
                      "INSERT INTO timeline_follows (followee_id, follower_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                      SQL_ARGS(SQL_TEXT(followee), SQL_TEXT(follower)), &changes, err);
    if (rc || changes == 0)
        return rc;
    if ((rc = sql_exec(tx,
                       "INSERT INTO timeline_authors (author_id, followers) VALUES ($1, 1) ON CONFLICT (author_id)"
                       " DO UPDATE SET followers = timeline_authors.followers + 1",
                       SQL_ARGS(SQL_TEXT(followee)), NULL, err)) ||
        (rc = add_owner(tx, follower, err)))
        return rc;
    invalidate(t, tx, 'r', follower);
    /* backfill: the followee's recent posts enter the new follower's feed */
    sql_rows *r;
    if ((rc = sql_query(tx,
                        "SELECT post_id, created_ms FROM timeline_posts WHERE author_id = $1 AND deleted = 0"
                        " ORDER BY created_ms DESC LIMIT $2",
                        SQL_ARGS(SQL_TEXT(followee), SQL_INT((int64_t)t->backfill)), &r, err)))
        return rc;
    arena *a = arena_create(8 * 1024);
    kv_zop *ops = arena_alloc(a, (t->backfill + 1) * sizeof *ops);
    char key[TL_FEED_KEY];
    tl_feed_key(key, "feed", follower);
    size_t n = 0;
    while (n < t->backfill && (rc = sql_next(r, err)) == 1)
        ops[n++] = (kv_zop){.key = key, .member = arena_strdup(a, sql_text(r, 0)), .score = (double)sql_int(r, 1),
                            .trim_to = t->feed_max};
    sql_rows_close(r);
    if (rc >= 0)
        rc = n ? kv_zadd_batch(t->ctx->kv, ops, n, err) : 0;
    arena_destroy(a);
    return rc;
}

static int on_unfollowed(timeline *t, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    const char *follower = need_id(ev, "follower_id", err), *followee = follower ? need_id(ev, "followee_id", err) : NULL;
    if (!followee)
        return PL_EINVAL;
    int64_t changes = 0;
    int rc = sql_exec(tx, "DELETE FROM timeline_follows WHERE followee_id = $1 AND follower_id = $2",
                      SQL_ARGS(SQL_TEXT(followee), SQL_TEXT(follower)), &changes, err);
    if (!rc && changes)
        rc = sql_exec(tx, "UPDATE timeline_authors SET followers = followers - 1 WHERE author_id = $1",
                      SQL_ARGS(SQL_TEXT(followee)), NULL, err);
    if (rc)
        return rc;
    invalidate(t, tx, 'r', follower);
    /* The followee's entries leave the feed. Only posts at least as new as the feed's oldest entry
     * can be in it (it is trimmed from the old end), which bounds the work by the feed's size. */
    char key[TL_FEED_KEY];
    tl_feed_key(key, "feed", follower);
    kv_zitem *oldest = NULL;
    size_t n = 0;
    if ((rc = kv_zrange_rank(t->ctx->kv, key, 0, 0, false, &oldest, &n, err)))
        return rc;
    int64_t since = n ? (int64_t)oldest[0].score : 0;
    kv_zitems_free(oldest, n);
    if (!n)
        return 0;
    sql_rows *r;
    if ((rc = sql_query(tx, "SELECT post_id FROM timeline_posts WHERE author_id = $1 AND created_ms >= $2",
                        SQL_ARGS(SQL_TEXT(followee), SQL_INT(since)), &r, err)))
        return rc;
    while ((rc = sql_next(r, err)) == 1) {
        int z = kv_zrem(t->ctx->kv, key, sql_text(r, 0), err);
        if (z < 0) {
            rc = z;
            break;
        }
    }
    sql_rows_close(r);
    return rc < 0 ? rc : 0;
}

/* ---- social: likes and comments (counters of the post read model) -------------------------------------- */

static int bump(sql_tx *tx, const char *post_id, const char *column, int delta, pl_error *err)
{
    char q[256];
    snprintf(q, sizeof q,
             "INSERT INTO timeline_post_stats (post_id, %s) VALUES ($1, $2) ON CONFLICT (post_id)"
             " DO UPDATE SET %s = timeline_post_stats.%s + $2",
             column, column, column);
    return sql_exec(tx, q, SQL_ARGS(SQL_TEXT(post_id), SQL_INT(delta)), NULL, err);
}

static int on_like(timeline *t, sql_tx *tx, const cloudevent *ev, bool liked, pl_error *err)
{
    const char *post_id = need_id(ev, "post_id", err), *user = post_id ? need_id(ev, "user_id", err) : NULL;
    if (!user)
        return PL_EINVAL;
    int64_t changes = 0;
    int rc = liked ? sql_exec(tx, "INSERT INTO timeline_likes (user_id, post_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                              SQL_ARGS(SQL_TEXT(user), SQL_TEXT(post_id)), &changes, err)
                   : sql_exec(tx, "DELETE FROM timeline_likes WHERE user_id = $1 AND post_id = $2",
                              SQL_ARGS(SQL_TEXT(user), SQL_TEXT(post_id)), &changes, err);
    if (rc || !changes)
        return rc;
    if ((rc = bump(tx, post_id, "like_count", liked ? 1 : -1, err)) || (rc = add_owner(tx, user, err)))
        return rc;
    invalidate(t, tx, 'p', post_id);
    /* "likes:<user>" (member post, score the post's creation ms) answers liked_by_me for a page with one
     * range read; a like of a post not known yet is added by its post_created */
    int64_t created_ms = -1;
    if ((rc = sql_one(tx, "SELECT created_ms FROM timeline_posts WHERE post_id = $1", SQL_ARGS(SQL_TEXT(post_id)),
                      read_int, &created_ms, err)) < 0)
        return rc;
    char key[TL_FEED_KEY];
    tl_feed_key(key, "likes", user);
    if (!liked)
        rc = kv_zrem(t->ctx->kv, key, post_id, err);
    else if (created_ms >= 0)
        rc = kv_zadd(t->ctx->kv, key, post_id, (double)created_ms, err);
    return rc < 0 ? rc : 0;
}

static int on_comment(timeline *t, sql_tx *tx, const cloudevent *ev, bool created, pl_error *err)
{
    const char *comment = need_id(ev, "comment_id", err), *post_id = comment ? need_id(ev, "post_id", err) : NULL;
    if (!post_id)
        return PL_EINVAL;
    int64_t changes = 0;
    int rc = created ? sql_exec(tx,
                                "INSERT INTO timeline_comments (comment_id, post_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                                SQL_ARGS(SQL_TEXT(comment), SQL_TEXT(post_id)), &changes, err)
                     : sql_exec(tx, "DELETE FROM timeline_comments WHERE comment_id = $1", SQL_ARGS(SQL_TEXT(comment)),
                                &changes, err);
    if (!rc && changes && !(rc = bump(tx, post_id, "comment_count", created ? 1 : -1, err)))
        invalidate(t, tx, 'p', post_id);
    return rc;
}

/* ---- identity: authors' names ---------------------------------------------------------------------------- */

static int on_user(timeline *t, sql_tx *tx, const cloudevent *ev, bool registered, pl_error *err)
{
    const char *uid = need_id(ev, "user_id", err);
    if (!uid)
        return PL_EINVAL;
    const char *username = str(ev->data, "username"), *name = str(ev->data, "display_name");
    int rc;
    if (registered) {
        if (!username || !name)
            return err_set(err, PL_EINVAL, "data", "user_registered without username or display_name");
        rc = sql_exec(tx,
                      "INSERT INTO timeline_users (user_id, username, display_name) VALUES ($1, $2, $3)"
                      " ON CONFLICT (user_id) DO UPDATE SET username = excluded.username,"
                      " display_name = excluded.display_name",
                      SQL_ARGS(SQL_TEXT(uid), SQL_TEXT(username), SQL_TEXT(name)), NULL, err);
    } else {
        if (!name)
            return 0; /* nothing the timeline shows changed */
        rc = sql_exec(tx, "UPDATE timeline_users SET display_name = $2 WHERE user_id = $1",
                      SQL_ARGS(SQL_TEXT(uid), SQL_TEXT(name)), NULL, err);
    }
    if (!rc)
        invalidate(t, tx, 'u', uid);
    return rc;
}

/* ---- the consumer ---------------------------------------------------------------------------------------- */

static int feed_handle(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    timeline *t = ((service_ctx *)ctx)->state;
    const char *ty = ev->type;
    if (!ev->data || !json_is_object(ev->data))
        return err_set(err, PL_EINVAL, "data", "%s without data", ty);
    if (strcmp(ty, "pl.social.post_created.v1") == 0)
        return on_post_created(t, tx, ev, err);
    if (strcmp(ty, "pl.social.post_updated.v1") == 0)
        return on_post_updated(t, tx, ev, err);
    if (strcmp(ty, "pl.social.post_deleted.v1") == 0)
        return on_post_deleted(t, tx, ev, err);
    if (strcmp(ty, "pl.social.user_followed.v1") == 0)
        return on_followed(t, tx, ev, err);
    if (strcmp(ty, "pl.social.user_unfollowed.v1") == 0)
        return on_unfollowed(t, tx, ev, err);
    if (strcmp(ty, "pl.social.post_liked.v1") == 0 || strcmp(ty, "pl.social.post_unliked.v1") == 0)
        return on_like(t, tx, ev, strcmp(ty, "pl.social.post_liked.v1") == 0, err);
    if (strcmp(ty, "pl.social.comment_created.v1") == 0 || strcmp(ty, "pl.social.comment_deleted.v1") == 0)
        return on_comment(t, tx, ev, strcmp(ty, "pl.social.comment_created.v1") == 0, err);
    if (strcmp(ty, "pl.identity.user_registered.v1") == 0 || strcmp(ty, "pl.identity.profile_updated.v1") == 0)
        return on_user(t, tx, ev, strcmp(ty, "pl.identity.user_registered.v1") == 0, err);
    return err_set(err, PL_EINVAL, "type", "the timeline does not consume %s", ty);
}

/* Empties the read models AND the feeds: every feed key's owner is in timeline_feed_owners (added
 * before the first write to that user's feed or posts set, in the same transaction). The kv deletes
 * are not in the transaction: if it fails, the replay fails, and running it again deletes again. */
static int feed_reset(void *ctx, sql_tx *tx, pl_error *err)
{
    timeline *t = ((service_ctx *)ctx)->state;
    atomic_store(&t->replaying, true);
    sql_rows *r;
    int rc = sql_query(tx, "SELECT user_id FROM timeline_feed_owners", SQL_NOARGS, &r, err);
    if (rc)
        return rc;
    int64_t keys = 0;
    while ((rc = sql_next(r, err)) == 1) {
        char key[TL_FEED_KEY];
        static const char *const prefixes[] = {"feed", "posts", "likes"};
        cache_invalidate(t->readers, sql_text(r, 0));
        for (int i = 0; i < 3 && rc == 1; i++) {
            tl_feed_key(key, prefixes[i], sql_text(r, 0));
            int d = kv_del(t->ctx->kv, key, err);
            if (d < 0)
                rc = d;
            keys += d > 0;
        }
        if (rc < 0)
            break;
    }
    sql_rows_close(r);
    if (rc < 0)
        return rc;
    if ((rc = sql_query(tx, "SELECT post_id FROM timeline_posts", SQL_NOARGS, &r, err)))
        return rc;
    while ((rc = sql_next(r, err)) == 1)
        cache_invalidate(t->posts, sql_text(r, 0));
    sql_rows_close(r);
    if (rc < 0)
        return rc;
    static const char *const tables[] = {"timeline_users", "timeline_follows", "timeline_authors", "timeline_posts",
                                         "timeline_post_stats", "timeline_likes", "timeline_comments",
                                         "timeline_feed_owners"};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0] && !rc; i++) {
        char q[64];
        snprintf(q, sizeof q, "DELETE FROM %s", tables[i]);
        rc = sql_exec(tx, q, SQL_NOARGS, NULL, err);
    }
    if (!rc)
        log_with(LOG_INFO, "timeline reset", LF_INT("feed_keys_deleted", keys));
    return rc;
}

static const char *const feed_types[] = {
    "pl.social.post_created.v1",    "pl.social.post_updated.v1",     "pl.social.post_deleted.v1",
    "pl.social.user_followed.v1",   "pl.social.user_unfollowed.v1",  "pl.social.post_liked.v1",
    "pl.social.post_unliked.v1",    "pl.social.comment_created.v1",  "pl.social.comment_deleted.v1",
    "pl.identity.user_registered.v1", "pl.identity.profile_updated.v1", NULL,
};

/* Named "timeline" so that `pulse replay timeline` finds it (group "timeline.timeline"). */
const consumer_def timeline_consumers[] = {
    {.name = "timeline", .types = feed_types, .handle = feed_handle, .reset = feed_reset, .flags = CONSUMER_PROJECTION},
};
const size_t timeline_nconsumers = sizeof timeline_consumers / sizeof timeline_consumers[0];
