/*
 * timeline.c - the timeline service: every user's home feed (the posts of the
 * people they follow and their own), fanned out on write into kv sorted sets
 * by the projection in project.c and read by GET /api/v1/timeline/home
 * (read.c). Design and invariants: README.md in this directory.
 */
#include "services/timeline/timeline.h"

#include <stdlib.h>
#include <string.h>

static const config_key timeline_keys[] = {
    {"service.timeline", "feed_max", CFG_INT, "800", 10, 100000, "entries kept per home feed (the oldest are trimmed)"},
    {"service.timeline", "fanout_threshold", CFG_INT, "10000", 0, 100000000,
     "authors with more followers are not fanned out on write; their posts are merged into feeds at read time"},
    {"service.timeline", "follow_backfill", CFG_INT, "20", 0, 1000, "recent posts of a followee copied into the feed on follow"},
    {"service.timeline", "author_posts_max", CFG_INT, "200", 10, 100000,
     "recent posts kept per author for the read-time merge"},
    {"service.timeline", "post_cache_size", CFG_SIZE, "16MiB", 0, (int64_t)1 << 32, "in-process (L1) cache of posts, authors and readers' follow lists"},
    {"service.timeline", "post_cache_ttl", CFG_DURATION, "60s", 1000, 86400000, "longest a cached post or author is served"},
};

static int timeline_start(service_ctx *ctx, pl_error *err)
{
    timeline *t = calloc(1, sizeof *t);
    if (!t)
        abort();
    const char *sec = "service.timeline";
    t->ctx = ctx;
    t->feed_max = (size_t)config_int(ctx->cfg, sec, "feed_max");
    t->fanout_threshold = config_int(ctx->cfg, sec, "fanout_threshold");
    t->backfill = (size_t)config_int(ctx->cfg, sec, "follow_backfill");
    t->author_posts_max = (size_t)config_int(ctx->cfg, sec, "author_posts_max");
    size_t cache_bytes = (size_t)config_int(ctx->cfg, sec, "post_cache_size");
    int64_t ttl = config_int(ctx->cfg, sec, "post_cache_ttl");
    pthread_mutex_init(&t->pend_lock, NULL);
    int rc = cache_create("timeline_posts", ctx->kv, cache_bytes / 8 * 5, ttl, &t->posts, err);
    if (!rc)
        rc = cache_create("timeline_users", ctx->kv, cache_bytes / 8, ttl, &t->users, err);
    if (!rc)
        rc = cache_create("timeline_readers", ctx->kv, cache_bytes / 4, ttl, &t->readers, err);
    if (rc) {
        cache_destroy(t->posts);
        cache_destroy(t->users);
        pthread_mutex_destroy(&t->pend_lock);
        free(t);
        return rc;
    }
    ctx->state = t;
    return 0;
}

static void timeline_stop(service_ctx *ctx)
{
    timeline *t = ctx->state;
    if (t) {
        cache_destroy(t->posts);
        cache_destroy(t->users);
        cache_destroy(t->readers);
        pthread_mutex_destroy(&t->pend_lock);
        free(t->pending);
    }
    free(t);
    ctx->state = NULL;
}

static const http_route timeline_routes[] = {
    {"GET", "/api/v1/timeline/home", timeline_home, HTTP_AUTH,
     "the caller's home feed, newest first (?limit=1..100&cursor=)"},
};

const service_def timeline_service = {
    .version = 1,
    .name = "timeline",
    .summary = "home feeds: posts of the people you follow, fanned out on write (kv), merged on read for celebrities",
    .stores = SERVICE_USES_SQL | SERVICE_USES_KV,
    .routes = timeline_routes,
    .nroutes = sizeof timeline_routes / sizeof timeline_routes[0],
    .config_keys = timeline_keys,
    .nconfig_keys = sizeof timeline_keys / sizeof timeline_keys[0],
    .start = timeline_start,
    .stop = timeline_stop,
    .consumers = timeline_consumers,
    .nconsumers = 1,
};
