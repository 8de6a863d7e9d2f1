/*
 * read.c - GET /api/v1/timeline/home: the caller's home feed, newest first,
 * hydrated from the post and user read models through the layered cache.
 *
 * Sources: the caller's "feed:<id>" (fanned out on write) and the
 * "posts:<author>" set of every followed author who has posts left out of the
 * fan-out (more followers than fanout_threshold), merged at read time
 * (feed.h). Paging is by an opaque cursor (score, id) of the last entry
 * shown: the next page holds exactly the entries after it, so entries added
 * at the head meanwhile cause neither duplicates nor gaps.
 *
 * Shown: posts in the read model, not deleted, whose author is the caller or
 * someone the caller follows (the committed follow graph): an entry written
 * to kv by a transaction that has not committed (or never will) stays hidden.
 *
 * A warm read runs no sql: the reader's followees and merged authors come
 * from the cached reader state, liked_by_me from "likes:<me>" in kv (scored
 * by post time: one range read over the page's span).
 *
 * The page is built by concatenating cached JSON text (posts cached as ready
 * object members, authors as objects): parsing and re-serialising with
 * jansson was most of a warm read's CPU.
 */
#include "core/arena.h"
#include "core/json.h"
#include "services/timeline/feed.h"
#include "services/timeline/timeline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE_DEFAULT 20
#define PAGE_MAX 100
#define CELEBRITIES_MAX 200 /* merged sources per read, beyond the caller's own feed */
#define ROUNDS_MAX 8        /* fetch rounds when entries of a page are hidden */

typedef struct source {
    char key[TL_FEED_KEY];
    bool exhausted; /* the last fetch returned every entry it had after the cursor */
} source;

typedef struct page_ctx {
    http_req *req;
    timeline *t;
    sql_tx *tx;          /* begun only when the reader's follow list is too long to cache */
    const char *me;
    const char *follows; /* ",a,b,...," the reader's followees, or NULL: ask sql */
    pl_error err;
} page_ctx;

#define FOLLOWS_CACHED_MAX 1000 /* followees kept in a reader's cached state */

/* The entries of one source after `cur`, up to `want`, copied into the arena. */
static int fetch_source(page_ctx *pc, source *s, const tl_cursor *cur, size_t want, tl_entry **out, size_t *nout)
{
    *out = arena_alloc(pc->req->arena, want * sizeof **out);
    *nout = 0;
    double hi = cur ? (double)cur->score : INFINITY;
    for (size_t lim = want + 8;; lim *= 2) {
        kv_zitem *items = NULL;
        size_t n = 0;
        int rc = kv_zrange_score(pc->t->ctx->kv, s->key, -INFINITY, hi, true, 0, lim, &items, &n, &pc->err);
        if (rc)
            return rc;
        size_t valid = 0;
        for (size_t i = 0; i < n; i++) {
            tl_entry e = {.id = items[i].member, .score = items[i].score};
            valid += tl_id_valid(e.id) && tl_after(&e, cur);
        }
        if (n < lim || valid >= want) {
            /* ties at the cursor's score come in either order from the engine: keep the first
             * `want` in feed order, which tl_merge sorts out below */
            tl_entry *all = arena_alloc(pc->req->arena, (valid ? valid : 1) * sizeof *all);
            size_t k = 0;
            for (size_t i = 0; i < n; i++) {
                tl_entry e = {.id = items[i].member, .score = items[i].score};
                if (tl_id_valid(e.id) && tl_after(&e, cur))
                    all[k++] = (tl_entry){.id = arena_strdup(pc->req->arena, e.id), .score = e.score};
            }
            kv_zitems_free(items, n);
            const tl_entry *srcs[1] = {all};
            *nout = tl_merge(srcs, &k, 1, cur, *out, want);
            s->exhausted = n < lim && *nout == k;
            return 0;
        }
        kv_zitems_free(items, n);
    }
}

/* ---- hydration through the cache, one query per kind for what it misses ------------------------------------ */

typedef struct miss_list {
    const char **keys;
    size_t n, cap;
    arena *a;
} miss_list;

static int note_miss(void *ud, const char *key, char **val, size_t *len, pl_error *err)
{
    miss_list *m = ud;
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 32;
        const char **k = arena_alloc(m->a, cap * sizeof *k);
        if (m->n)
            memcpy(k, m->keys, m->n * sizeof *k);
        m->keys = k;
        m->cap = cap;
    }
    m->keys[m->n++] = arena_strdup(m->a, key);
    return 0;
}

/* "$first, $first+1, ..." for n ids. */
static char *placeholders(arena *a, int first, size_t n)
{
    char *s = arena_alloc(a, n * 8 + 1), *p = s;
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "%s$%d", i ? "," : "", first + (int)i);
    *p = '\0';
    return s;
}

/* The batched load of the keys a page missed in the cache, run inside the cache_get of every one
 * of them (see chain): cache_get stores a loaded value only when no invalidation happened between
 * its start and the loader's return, so each key's window must cover the one query. The query runs
 * in its own read transaction, whose snapshot is taken inside those windows (SQLite keeps a read
 * transaction's snapshot from its first statement: the request's would be older than them). */
typedef struct batch {
    page_ctx *pc;
    cache *c;
    const char *select;
    char *(*row_text)(sql_rows *r);
    const char **keys;   /* the missed keys */
    size_t n;
    json_t *loaded;      /* key -> JSON text, once the query ran */
    int rc;
} batch;

static int batch_query(batch *b)
{
    page_ctx *pc = b->pc;
    arena *a = pc->req->arena;
    b->loaded = json_object();
    char *q = arena_sprintf(a, "%s%s)", b->select, placeholders(a, 1, b->n));
    sql_arg *args = arena_alloc(a, b->n * sizeof *args);
    for (size_t i = 0; i < b->n; i++)
        args[i] = SQL_TEXT(b->keys[i]);
    sql_tx *tx;
    sql_rows *r;
    int rc = sql_begin(pc->t->ctx->sql, SQL_TX_READ, &tx, &pc->err);
    if (rc)
        return rc;
    if (!(rc = sql_query(tx, q, args, b->n, &r, &pc->err))) {
        while ((rc = sql_next(r, &pc->err)) == 1) {
            char *text = b->row_text(r);
            json_object_set_new(b->loaded, sql_text(r, 0), json_string(text));
            free(text);
        }
        sql_rows_close(r);
    }
    sql_rollback(tx);
    return rc < 0 ? rc : 0;
}

typedef struct link {
    batch *b;
    size_t i;
    bool called;
} link;

static int chain(batch *b, size_t i);

static int chain_loader(void *ud, const char *key, char **val, size_t *len, pl_error *err)
{
    link *l = ud;
    l->called = true;
    int rc = chain(l->b, l->i + 1);
    if (rc < 0)
        return rc;
    json_t *s = json_object_get(l->b->loaded, key);
    if (!s)
        return 0;
    *val = strdup(json_string_value(s));
    if (!*val)
        abort();
    *len = strlen(*val);
    return 1;
}

/* cache_get of missed key i whose loader first runs chain(i + 1), down to the query at the end. */
static int chain(batch *b, size_t i)
{
    if (i == b->n)
        return b->loaded ? 0 : batch_query(b);
    link l = {.b = b, .i = i};
    char *v = NULL;
    size_t len = 0;
    int rc = cache_get(b->c, b->keys[i], chain_loader, &l, &v, &len, &b->pc->err);
    if (rc >= 0 && !l.called) /* found in the cache after all: the rest still need their windows */
        rc = chain(b, i + 1);
    if (rc < 0) {
        free(v);
        return rc;
    }
    if (v) {
        /* kept by the caller through b->loaded: the value it shows is the one cache_get returned */
        json_object_set_new(b->loaded ? b->loaded : (b->loaded = json_object()), b->keys[i], json_string(v));
        free(v);
    }
    return 0;
}

/* A cached post: "<deleted 0|1>\t<author id>\n" then the members of its JSON object without the braces,
 * ready to be pasted into a page (the hot path builds pages by concatenation: no JSON parsing). */
static char *post_row_text(sql_rows *r)
{
    json_t *o = json_pack("{s:s, s:s, s:s?, s:s, s:s, s:I, s:I}", "id", sql_text(r, 0), "text", sql_text(r, 2),
                          "course_id", sql_text(r, 3), "visibility", sql_text(r, 4), "created_at", sql_text(r, 5),
                          "like_count", (json_int_t)sql_int(r, 7), "comment_count", (json_int_t)sql_int(r, 8));
    if (!sql_text(r, 3))
        json_object_set_new(o, "course_id", json_null());
    char *body = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    size_t n = strlen(body);
    char *out = malloc(n + TL_ID_MAX + 8);
    if (!body || !out)
        abort();
    body[n - 1] = '\0'; /* drop the closing brace; the opening one is skipped below */
    sprintf(out, "%d\t%s\n%s", sql_int(r, 6) ? 1 : 0, sql_text(r, 1), body + 1);
    free(body);
    return out;
}

/* A cached author: its JSON object {id, username, display_name}. */
static char *user_row_text(sql_rows *r)
{
    json_t *o = json_pack("{s:s, s:s, s:s}", "id", sql_text(r, 0), "username", sql_text(r, 1), "display_name",
                          sql_text(r, 2));
    char *out = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!out)
        abort();
    return out;
}

/* Fills vals[i] (the cached text, arena-owned, or NULL when not in the read model) for keys[i] from
 * cache c: every hit from L1/L2, every miss from one query. */
static int hydrate(page_ctx *pc, cache *c, const char *select, char *(*row_text)(sql_rows *r), const char *const *keys,
                   size_t n, char **vals)
{
    miss_list m = {.a = pc->req->arena};
    for (size_t i = 0; i < n; i++) {
        char *v = NULL;
        size_t len = 0;
        int rc = cache_get(c, keys[i], note_miss, &m, &v, &len, &pc->err);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            vals[i] = arena_strndup(pc->req->arena, v, len);
            free(v);
        }
    }
    if (!m.n)
        return 0;
    batch b = {.pc = pc, .c = c, .select = select, .row_text = row_text, .keys = m.keys, .n = m.n};
    int rc = chain(&b, 0);
    for (size_t i = 0; i < n && !rc; i++) {
        json_t *s = vals[i] ? NULL : json_object_get(b.loaded, keys[i]);
        if (s)
            vals[i] = arena_strdup(pc->req->arena, json_string_value(s));
    }
    json_decref(b.loaded);
    return rc;
}

/* A small set of ids (a page's worth): linear, in the arena. */
typedef struct idset {
    const char **ids;
    size_t n, cap;
} idset;

static void idset_add(arena *a, idset *s, const char *id)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        const char **ids = arena_alloc(a, cap * sizeof *ids);
        if (s->n)
            memcpy(ids, s->ids, s->n * sizeof *ids);
        s->ids = ids;
        s->cap = cap;
    }
    s->ids[s->n++] = arena_strdup(a, id);
}

static bool idset_has(const idset *s, const char *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->ids[i], id) == 0)
            return true;
    return false;
}

/* The caller's likes among the page's posts and follows among its authors, in one query. */
static int reader_marks(page_ctx *pc, const char *const *posts, size_t np, const char *const *authors, size_t na,
                        idset *liked, idset *followed)
{
    arena *a = pc->req->arena;
    char *q = arena_sprintf(a,
                            "SELECT 'l', post_id FROM timeline_likes WHERE user_id = $1 AND post_id IN (%s)"
                            " UNION ALL SELECT 'f', followee_id FROM timeline_follows WHERE follower_id = $1"
                            " AND followee_id IN (%s)",
                            placeholders(a, 2, np), placeholders(a, 2 + (int)np, na));
    sql_arg *args = arena_alloc(a, (1 + np + na) * sizeof *args);
    args[0] = SQL_TEXT(pc->me);
    for (size_t i = 0; i < np; i++)
        args[1 + i] = SQL_TEXT(posts[i]);
    for (size_t i = 0; i < na; i++)
        args[1 + np + i] = SQL_TEXT(authors[i]);
    sql_rows *r;
    int rc = sql_query(pc->tx, q, args, 1 + np + na, &r, &pc->err);
    if (rc)
        return rc;
    while ((rc = sql_next(r, &pc->err)) == 1)
        idset_add(a, sql_text(r, 0)[0] == 'l' ? liked : followed, sql_text(r, 1));
    sql_rows_close(r);
    return rc < 0 ? rc : 0;
}

static const char POST_SELECT[] =
    "SELECT p.post_id, p.author_id, p.text, p.course_id, p.visibility, p.created_at, p.deleted,"
    " COALESCE(s.like_count, 0), COALESCE(s.comment_count, 0) FROM timeline_posts p"
    " LEFT JOIN timeline_post_stats s ON s.post_id = p.post_id WHERE p.post_id IN (";
static const char USER_SELECT[] = "SELECT user_id, username, display_name FROM timeline_users WHERE user_id IN (";

/* The page's JSON, built by concatenation. */
typedef struct page_out {
    char *buf;
    size_t len, cap, count;
} page_out;

static void out_put(page_out *o, const char *s, size_t n)
{
    if (o->len + n + 1 > o->cap) {
        o->cap = (o->len + n + 1) * 2;
        o->buf = realloc(o->buf, o->cap);
        if (!o->buf)
            abort();
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

static void out_str(page_out *o, const char *s) { out_put(o, s, strlen(s)); }

/* Hydrates the merged entries and appends the ones the caller may see to the page. */
static int show(page_ctx *pc, const tl_entry *e, size_t n, page_out *out, size_t limit, tl_entry *last_shown)
{
    arena *a = pc->req->arena;
    const char **ids = arena_alloc(a, n * sizeof *ids);
    char **posts = arena_calloc(a, n * sizeof *posts);
    const char **author_of = arena_calloc(a, n * sizeof *author_of);
    for (size_t i = 0; i < n; i++)
        ids[i] = e[i].id;
    int rc = hydrate(pc, pc->t->posts, POST_SELECT, post_row_text, ids, n, posts);
    const char **authors = arena_alloc(a, n * sizeof *authors);
    size_t na = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        /* "<deleted>\t<author>\n<members>": split in place */
        char *tab = posts[i] ? strchr(posts[i], '\t') : NULL, *nl = tab ? strchr(tab, '\n') : NULL;
        if (!nl || posts[i][0] != '0') {
            posts[i] = NULL; /* deleted, or not a value this code wrote */
            continue;
        }
        *nl = '\0';
        author_of[i] = tab + 1;
        posts[i] = nl + 1;
        bool seen = false;
        for (size_t k = 0; k < na && !seen; k++)
            seen = strcmp(authors[k], author_of[i]) == 0;
        if (!seen)
            authors[na++] = author_of[i];
    }
    char **users = arena_calloc(a, (na ? na : 1) * sizeof *users);
    idset liked = {0}, followed = {0};
    if (!rc && na)
        rc = hydrate(pc, pc->t->users, USER_SELECT, user_row_text, authors, na, users);
    if (!rc && na && !pc->follows) { /* a reader following too many to cache: sql answers both */
        if (!pc->tx)
            rc = sql_begin(pc->t->ctx->sql, SQL_TX_READ, &pc->tx, &pc->err);
        if (!rc)
            rc = reader_marks(pc, ids, n, authors, na, &liked, &followed);
    } else if (!rc && na) {
        /* liked_by_me: the reader's likes scored by post time, read over the page's time span */
        double lo = e[0].score, hi = e[0].score;
        for (size_t i = 1; i < n; i++) {
            lo = e[i].score < lo ? e[i].score : lo;
            hi = e[i].score > hi ? e[i].score : hi;
        }
        char key[TL_FEED_KEY];
        tl_feed_key(key, "likes", pc->me);
        kv_zitem *items = NULL;
        size_t ni = 0;
        rc = kv_zrange_score(pc->t->ctx->kv, key, lo, hi, false, 0, 100000, &items, &ni, &pc->err);
        for (size_t i = 0; i < ni; i++)
            idset_add(a, &liked, items[i].member);
        kv_zitems_free(items, ni);
        for (size_t k = 0; k < na; k++) {
            char *pat = arena_sprintf(a, ",%s,", authors[k]);
            if (strstr(pc->follows, pat))
                idset_add(a, &followed, authors[k]);
        }
    }
    for (size_t i = 0; i < n && !rc && out->count < limit; i++) {
        const char *au = author_of[i];
        if (!posts[i] || !au || (strcmp(au, pc->me) != 0 && !idset_has(&followed, au)))
            continue;
        const char *user = NULL;
        for (size_t k = 0; k < na && !user; k++)
            if (strcmp(authors[k], au) == 0)
                user = users[k];
        out_str(out, out->count ? ",{" : "{");
        out_str(out, posts[i]);
        out_str(out, ",\"author\":");
        if (user) {
            out_str(out, user);
        } else { /* the author's registration has not reached the timeline yet (ids are [A-Za-z0-9_-]) */
            out_str(out, "{\"id\":\"");
            out_str(out, au);
            out_str(out, "\",\"username\":null,\"display_name\":null}");
        }
        out_str(out, idset_has(&liked, e[i].id) ? ",\"liked_by_me\":true}" : ",\"liked_by_me\":false}");
        out->count++;
        *last_shown = e[i];
    }
    return rc;
}

/* ---- the handler ------------------------------------------------------------------------------------------ */

static int bad_query(http_req *req, const char *field, const char *why)
{
    return http_fail(req, PL_EINVAL, json_pack("{s:s}", field, why), "invalid query");
}

/* Loads a reader's state: "<merged authors, comma-separated>\n<,followee,...,>" — the second line "*"
 * when the reader follows more than FOLLOWS_CACHED_MAX (then the page asks sql). In its own read
 * transaction, inside cache_get's window (see batch). Invalidated by the projection on the reader's
 * follow/unfollow and when a followee's first post is left out of the fan-out. */
static int load_reader(void *ud, const char *key, char **val, size_t *len, pl_error *err)
{
    page_ctx *pc = ud;
    sql_tx *tx;
    sql_rows *r;
    int rc = sql_begin(pc->t->ctx->sql, SQL_TX_READ, &tx, err);
    if (rc)
        return rc;
    size_t cap = 256, n = 0, ncelebs = 0;
    char *celebs = calloc(1, 1), *follows = malloc(cap);
    if (!celebs || !follows)
        abort();
    size_t clen = 0, flen = 1;
    follows[0] = ',';
    if (!(rc = sql_query(tx,
                         "SELECT f.followee_id, COALESCE(a.unfanned, 0) FROM timeline_follows f LEFT JOIN timeline_authors a"
                         " ON a.author_id = f.followee_id WHERE f.follower_id = $1 LIMIT $2",
                         SQL_ARGS(SQL_TEXT(key), SQL_INT(FOLLOWS_CACHED_MAX + 1)), &r, err))) {
        while ((rc = sql_next(r, err)) == 1) {
            const char *id = sql_text(r, 0);
            size_t il = strlen(id);
            n++;
            if (flen + il + 2 > cap) {
                cap = (flen + il + 2) * 2;
                follows = realloc(follows, cap);
                if (!follows)
                    abort();
            }
            memcpy(follows + flen, id, il);
            flen += il;
            follows[flen++] = ',';
            if (sql_int(r, 1) && ncelebs < CELEBRITIES_MAX) {
                celebs = realloc(celebs, clen + il + 2);
                if (!celebs)
                    abort();
                if (clen)
                    celebs[clen++] = ',';
                memcpy(celebs + clen, id, il);
                clen += il;
                celebs[clen] = '\0';
                ncelebs++;
            }
        }
        sql_rows_close(r);
    }
    if (rc >= 0 && n > FOLLOWS_CACHED_MAX) { /* too many to keep: the merged ones from their own query */
        clen = ncelebs = 0;
        celebs[0] = '\0';
        if (!(rc = sql_query(tx,
                             "SELECT f.followee_id FROM timeline_follows f JOIN timeline_authors a"
                             " ON a.author_id = f.followee_id WHERE f.follower_id = $1 AND a.unfanned = 1 LIMIT $2",
                             SQL_ARGS(SQL_TEXT(key), SQL_INT(CELEBRITIES_MAX)), &r, err))) {
            while ((rc = sql_next(r, err)) == 1) {
                size_t il = strlen(sql_text(r, 0));
                celebs = realloc(celebs, clen + il + 2);
                if (!celebs)
                    abort();
                if (clen)
                    celebs[clen++] = ',';
                memcpy(celebs + clen, sql_text(r, 0), il + 1);
                clen += il;
            }
            sql_rows_close(r);
        }
    }
    sql_rollback(tx);
    if (rc < 0) {
        free(celebs);
        free(follows);
        return rc;
    }
    follows[flen] = '\0';
    *val = n > FOLLOWS_CACHED_MAX ? arena_sprintf(pc->req->arena, "%s\n*", celebs)
                                  : arena_sprintf(pc->req->arena, "%s\n%s", celebs, flen > 1 ? follows : ",");
    *val = strdup(*val);
    free(celebs);
    free(follows);
    if (!*val)
        abort();
    *len = strlen(*val);
    return 1;
}

/* The sources of a page: the reader's feed, then "posts:<a>" for each merged author in `celebs`. */
static void page_sources(page_ctx *pc, char *celebs, source **out, size_t *n)
{
    size_t cap = 1;
    for (const char *p = celebs; *p; p++)
        cap += *p == ',';
    cap += *celebs != '\0';
    source *s = arena_calloc(pc->req->arena, cap * sizeof *s);
    tl_feed_key(s[0].key, "feed", pc->me);
    *n = 1;
    char *save = NULL;
    for (char *id = strtok_r(celebs, ",", &save); id && *n < cap; id = strtok_r(NULL, ",", &save))
        tl_feed_key(s[(*n)++].key, "posts", id);
    *out = s;
}

int timeline_home(http_req *req, http_res *res)
{
    service_ctx *ctx = req->ctx;
    const char *ls = http_query(req, "limit"), *cs = http_query(req, "cursor");
    size_t limit = PAGE_DEFAULT;
    if (ls) {
        size_t d = strspn(ls, "0123456789");
        if (!*ls || ls[d] || d > 3 || (limit = (size_t)strtoul(ls, NULL, 10)) < 1 || limit > PAGE_MAX)
            return bad_query(req, "limit", "must be an integer from 1 to 100");
    }
    tl_cursor cursor, *cur = NULL;
    if (cs) {
        if (tl_cursor_decode(cs, &cursor))
            return bad_query(req, "cursor", "is not a cursor from this feed");
        cur = &cursor;
    }
    page_ctx pc = {.req = req, .t = ctx->state, .me = req->principal->user_id};
    if (!tl_id_valid(pc.me))
        return http_fail(req, PL_EFORBIDDEN, NULL, "this account has no feed");
    source *src = NULL;
    size_t nsrc = 0;
    char *state = NULL;
    size_t slen = 0;
    int rc = cache_get(pc.t->readers, pc.me, load_reader, &pc, &state, &slen, &pc.err);
    if (rc == 1) {
        char *nl = strchr(state, '\n');
        if (nl) {
            *nl = '\0';
            pc.follows = strcmp(nl + 1, "*") ? arena_strdup(req->arena, nl + 1) : NULL;
            page_sources(&pc, state, &src, &nsrc);
            rc = 0;
        } else {
            rc = err_set(&pc.err, PL_EINTERNAL, NULL, "a cached reader state without its two lines");
        }
        free(state);
    } else if (rc == 0) {
        rc = err_set(&pc.err, PL_EINTERNAL, NULL, "no reader state");
    }
    page_out out = {0};
    out_str(&out, "{\"items\":[");
    tl_entry last = {0};
    bool more = true;
    for (int round = 0; !rc && round < ROUNDS_MAX && out.count < limit && more; round++) {
        size_t want = limit - out.count;
        const tl_entry **lists = arena_alloc(req->arena, nsrc * sizeof *lists);
        size_t *counts = arena_alloc(req->arena, nsrc * sizeof *counts);
        more = false;
        for (size_t s = 0; s < nsrc && !rc; s++) {
            tl_entry *got;
            rc = fetch_source(&pc, &src[s], cur, want, &got, &counts[s]);
            lists[s] = got;
            more |= !src[s].exhausted;
        }
        if (rc)
            break;
        tl_entry *merged = arena_alloc(req->arena, want * sizeof *merged);
        size_t n = tl_merge(lists, counts, nsrc, cur, merged, want);
        if (!n)
            break;
        /* more may wait in a source that is not exhausted, or in one whose entries were cut by the merge */
        more = more || n == want;
        rc = show(&pc, merged, n, &out, limit, &last);
        /* the next round starts after the last entry considered, shown or not */
        cur = arena_alloc(req->arena, sizeof *cur);
        cur->score = (int64_t)merged[n - 1].score;
        snprintf(cur->id, sizeof cur->id, "%s", merged[n - 1].id);
    }
    sql_rollback(pc.tx); /* NULL unless the follow list was asked from sql */
    if (rc) {
        free(out.buf);
        return http_fail(req, rc, NULL, "%s", pc.err.msg[0] ? pc.err.msg : err_message(rc));
    }
    char token[TL_CURSOR_MAX];
    if (out.count == limit && !tl_cursor_encode((int64_t)last.score, last.id, token)) {
        out_str(&out, "],\"next_cursor\":\""); /* base64url: nothing to escape */
        out_str(&out, token);
        out_str(&out, "\"}");
    } else {
        out_str(&out, "],\"next_cursor\":null}");
    }
    http_text(res, 200, "application/json", out.buf, out.len);
    free(out.buf);
    return 0;
}
