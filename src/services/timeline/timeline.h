/*
 * timeline.h - the timeline service's internals, shared by its files:
 * timeline.c (declaration, config, start/stop), project.c (the projection
 * that builds the feeds from events) and read.c (GET timeline/home).
 * Nothing outside src/services/timeline includes it.
 */
#ifndef PULSE_SERVICES_TIMELINE_TIMELINE_H
#define PULSE_SERVICES_TIMELINE_TIMELINE_H

#include "services/service.h"
#include "store/cache.h"

#include <pthread.h>
#include <stdatomic.h>

#define TL_FEED_KEY 80 /* "feed:<id>" / "posts:<id>" / "likes:<id>" with an id of at most 64 bytes */

typedef struct timeline {
    service_ctx *ctx;
    size_t feed_max;          /* members kept per home feed */
    int64_t fanout_threshold; /* authors with more followers are merged at read time */
    size_t backfill;          /* posts of a followee copied into the feed on follow */
    size_t author_posts_max;  /* members kept per "posts:<author>" */
    cache *posts;             /* post_id -> the post's JSON (without the reader's liked_by_me) */
    cache *users;             /* user_id -> {username, display_name} */
    cache *readers;           /* user_id -> the reader's followees and which of them are merged at read time */
    /* set by the projection's reset: a replay rebuilds feeds but does not announce them again */
    atomic_bool replaying;
    /* cache keys the projection changed in the current transaction, invalidated again after it
     * commits (a reader between the first invalidation and the commit may have cached the old row) */
    pthread_mutex_t pend_lock;
    char (*pending)[72];
    size_t npending, cap_pending;
} timeline;

void tl_feed_key(char out[TL_FEED_KEY], const char *prefix, const char *id);

/* project.c */
extern const consumer_def timeline_consumers[];
extern const size_t timeline_nconsumers;

/* read.c */
int timeline_home(http_req *req, http_res *res);

#endif
