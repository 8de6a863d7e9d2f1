/*
 * nats_sub.c - consumer groups on JetStream.
 *
 * JetStream pull consumers share messages among whoever pulls, but know
 * nothing of partition keys, so order per key across instances is kept here:
 *
 * - A group has P partitions (P of the stream: publishers put the partition in
 *   the subject's last token). For every context stream the group reads and
 *   every partition there is one durable pull consumer, a "lane", filtered to
 *   that partition ("<gkey>-p<N>", "<gkey>-dlq-p<N>" for dead-letter patterns).
 * - Instances of a group divide the partitions through leases in the
 *   PULSE_LEASES bucket: "<gkey>.members" lists live instances with a beat
 *   each renews (compare-and-set every lease/3); "<gkey>.p<N>" names the owner
 *   of partition N. An instance whose beat has not moved for a lease (as
 *   observed on the local monotonic clock: no cross-host clock comparisons) is
 *   dead and its partitions are free. Each live instance takes a fair share.
 * - Only the owner pulls a lane. It keeps the deliveries it holds in stream
 *   order and hands them out in that order; a nak pauses the lane until the
 *   server redelivers that message (nak with delay), the later ones it holds
 *   come again after it. A lane also pauses while deliveries made to someone
 *   else are still pending (after a takeover or a reconnect): it counts them
 *   from the consumer's NumAckPending and waits until they come back.
 * - Giving a partition away (rebalance, unsubscribe): stop pulling, let the
 *   outstanding pull expire, nak what is held in order (JetStream redelivers
 *   in that order, before anything new), then release the lease.
 *
 * Pulls are raw requests to $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>
 * replying to one inbox per subscription, so one thread waits on every lane at
 * once (libnats 3.4's pull subscriptions block per consumer). Acks are plain
 * publishes to the delivery's reply subject.
 */
#include "bus/nats/nats_internal.h"
#include "core/arena.h"
#include "core/log.h"
#include "core/uuid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { K_EVENTS, K_DLQ, K_KINDS };

#define LANE_CAP 512          /* deliveries a lane holds before it stops pulling */
#define PULL_EXPIRES_MS 1000  /* a pull waits this long server-side; also bounds a release */
#define PULL_RENEW_MS 50      /* a pull is replaced this long before it expires */
#define RESYNC_MS 250         /* a lane waiting for others' deliveries looks again this often */
#define REDRIVE_BATCH 16

typedef struct entry {
    natsMsg *m;
    uint64_t sseq;
    int64_t ts;
    int dc;
    int64_t touched; /* last delivery or progress signal (mono ms) */
} entry;

typedef struct lane {
    int idx, si, kind, part;
    char consumer[112];
    char next_subj[224]; /* pull requests go here */
    char reply[96];      /* "<inbox>.<idx>" */
    bool ensured, need_sync;
    entry *q;            /* deliveries held, in stream order; [0, next) handed out */
    size_t n, cap, next;
    bool pulling;        /* a pull we count deliveries against is out */
    int pull_left;
    int64_t pull_renew;  /* when to replace it (before it expires: see issue_pulls) */
    int64_t pull_alive;  /* until then a pull of ours may still deliver, server-side */
    int64_t prev_alive;  /* the same for the pull before it (they overlap briefly) */
    int64_t next_pull;
    uint64_t hi;         /* highest stream seq the consumer has delivered, as far as we know */
    uint64_t last_dseq;  /* consumer sequences only grow: a smaller one means a new consumer (reset) */
    uint64_t wait_seq;   /* we nak'd it: the lane waits for its redelivery */
    int64_t blocked_until;
    int64_t missing;     /* deliveries pending elsewhere, counted by the last sync */
    int64_t next_sync;
} lane;

typedef struct sstream {
    char name[80], ctx[64];
    int parts;
    bool kinds[K_KINDS];
    int lane0[K_KINDS];
} sstream;

typedef struct rd_entry {
    natsMsg *rec, *orig;
    uint64_t rseq, oseq;
    int part;
    bool handed;
    char type[CE_TYPE_MAX + 8], event_id[40], stream[80];
} rd_entry;

typedef struct member {
    char owner[40];
    uint64_t beat;
    int64_t seen;
} member;

typedef struct nsub {
    nbus *b;
    char group[96], gkey[96], owner[40];
    char **patterns;
    int max_deliver;
    int64_t lease_ms;
    bool wild[K_KINDS], want[K_KINDS];
    sstream *streams;
    int nstreams;
    lane **lanes;
    int nlanes;
    int nparts;
    bool owned[NB_MAX_PARTS], draining[NB_MAX_PARTS];
    uint64_t lease_rev[NB_MAX_PARTS];
    member *members;
    int nmembers;
    uint64_t beat;
    int64_t next_renew, last_renew_ok, next_wpi;
    natsConnection *acks; /* the connection settlements go out on (chosen per fetch) */
    natsSubscription *inbox;
    char inbox_prefix[64];
    size_t inbox_len;
    natsStatistics *stats;
    uint64_t reconnects;
    char rd_consumer[112], rd_next[224], rd_reply[96];
    bool rd_pulling;
    int rd_left;
    int64_t rd_until;
    rd_entry *rd;
    size_t nrd, caprd;
    arena *a;
    natsMsg **grave; /* settled deliveries: their strings live until the next fetch */
    size_t ngrave, capgrave;
} nsub;

/* ---- small helpers ------------------------------------------------------------------------ */

static void bury(nsub *s, natsMsg *m)
{
    if (!m)
        return;
    if (s->ngrave == s->capgrave) {
        s->capgrave = s->capgrave ? s->capgrave * 2 : 256;
        s->grave = realloc(s->grave, s->capgrave * sizeof *s->grave);
        if (!s->grave)
            abort();
    }
    s->grave[s->ngrave++] = m;
}

static void grave_free(nsub *s)
{
    for (size_t i = 0; i < s->ngrave; i++)
        natsMsg_Destroy(s->grave[i]);
    s->ngrave = 0;
}

static int settle_raw(nsub *s, natsMsg *m, const char *how, pl_error *err)
{
    const char *reply = natsMsg_GetReply(m);
    if (!reply)
        return 0;
    natsStatus st = natsConnection_PublishString(s->acks, reply, how);
    return st == NATS_OK ? 0 : nb_fail(st, 0, err, "settling a message");
}

static bool matches(const nsub *s, const char *type)
{
    for (char **p = s->patterns; *p; p++)
        if (ce_type_matches(*p, type))
            return true;
    return false;
}

static int pattern_kind(const char *p)
{
    size_t n = strlen(p);
    return n >= 4 && strcmp(p + n - 4, ".dlq") == 0 ? K_DLQ : K_EVENTS;
}

/* The context a pattern is limited to, or false when it reaches every context. */
static bool pattern_ctx(const char *p, char *ctx, size_t size)
{
    if (strncmp(p, "pl.", 3) != 0)
        return false;
    const char *s = p + 3, *e = strchr(s, '.');
    if (!e || e == s || (size_t)(e - s) >= size || memchr(s, '*', (size_t)(e - s)))
        return false;
    memcpy(ctx, s, (size_t)(e - s));
    ctx[e - s] = '\0';
    return true;
}

/* The filter subject of a lane without its partition token: the exact type
 * when one literal pattern is all the group wants from this context, else
 * every type of the context (the rest is filtered here, ack-and-skip). */
static void lane_filter(const nsub *s, const char *ctx, int kind, char *out, size_t size)
{
    const char *pre = s->b->pre_subj;
    const char *only = NULL;
    int count = 0;
    for (char **p = s->patterns; *p; p++) {
        char pc[64];
        if (pattern_kind(*p) != kind)
            continue;
        if (pattern_ctx(*p, pc, sizeof pc) && strcmp(pc, ctx) != 0)
            continue;
        count++;
        only = strchr(*p, '*') ? NULL : *p;
    }
    if (count == 1 && only)
        snprintf(out, size, "%s%s", pre, only);
    else
        snprintf(out, size, kind == K_DLQ ? "%spl.%s.*.*.dlq" : "%spl.%s.*.*", pre, ctx);
}

static bool kind_wanted_in(const nsub *s, const char *ctx, int kind)
{
    for (char **p = s->patterns; *p; p++) {
        char pc[64];
        if (pattern_kind(*p) == kind && (!pattern_ctx(*p, pc, sizeof pc) || strcmp(pc, ctx) == 0))
            return true;
    }
    return false;
}

/* ---- lanes and streams ------------------------------------------------------------------- */

static void lane_clear(nsub *s, lane *l)
{
    for (size_t i = 0; i < l->n; i++)
        bury(s, l->q[i].m);
    l->n = l->next = 0;
    l->hi = 0;
    l->wait_seq = 0;
    l->missing = 0;
    l->need_sync = true;
}

/* Gives back what the lane holds, in stream order, so the next owner gets it first. */
static void lane_release(nsub *s, lane *l)
{
    for (size_t i = 0; i < l->n; i++)
        settle_raw(s, l->q[i].m, "-NAK", NULL);
    lane_clear(s, l);
}

static void lane_remove(nsub *s, lane *l, size_t i)
{
    bury(s, l->q[i].m);
    memmove(&l->q[i], &l->q[i + 1], (l->n - i - 1) * sizeof *l->q);
    l->n--;
    if (i < l->next)
        l->next--;
}

static int add_stream(nsub *s, const nb_stream *st, pl_error *err)
{
    for (int i = 0; i < s->nstreams; i++)
        if (strcmp(s->streams[i].name, st->name) == 0)
            return 0;
    s->streams = realloc(s->streams, (size_t)(s->nstreams + 1) * sizeof *s->streams);
    if (!s->streams)
        abort();
    sstream *ss = &s->streams[s->nstreams];
    memset(ss, 0, sizeof *ss);
    snprintf(ss->name, sizeof ss->name, "%s", st->name);
    snprintf(ss->ctx, sizeof ss->ctx, "%s", st->ctx);
    ss->parts = st->parts;
    int si = s->nstreams++;
    if (st->parts > s->nparts)
        s->nparts = st->parts;
    int rc = 0;
    for (int k = 0; k < K_KINDS; k++) {
        if (!kind_wanted_in(s, st->ctx, k))
            continue;
        ss->kinds[k] = true;
        ss->lane0[k] = s->nlanes;
        char filter[200];
        lane_filter(s, st->ctx, k, filter, sizeof filter);
        s->lanes = realloc(s->lanes, (size_t)(s->nlanes + st->parts) * sizeof *s->lanes);
        if (!s->lanes)
            abort();
        for (int p = 0; p < st->parts; p++) {
            lane *l = calloc(1, sizeof *l);
            if (!l)
                abort();
            l->idx = s->nlanes;
            l->si = si;
            l->kind = k;
            l->part = p;
            snprintf(l->consumer, sizeof l->consumer, "%s%s-p%d", s->gkey, k == K_DLQ ? "-dlq" : "", p);
            snprintf(l->next_subj, sizeof l->next_subj, "$JS.API.CONSUMER.MSG.NEXT.%s.%s", st->name, l->consumer);
            snprintf(l->reply, sizeof l->reply, "%s.%d", s->inbox_prefix, l->idx);
            l->need_sync = true;
            s->lanes[s->nlanes++] = l;
            char f[224];
            snprintf(f, sizeof f, "%s.%d", filter, p);
            /* consumers exist for every partition from the start, so lag counts
             * from the subscription on, whoever owns what */
            int r = nb_ensure_consumer(s->b, st->name, l->consumer, f, s->group, s->lease_ms, err);
            l->ensured = r == 0;
            if (r && !rc)
                rc = r;
        }
    }
    return rc;
}

/* Follows the context streams the group's patterns reach. */
static int discover(nsub *s, pl_error *err)
{
    int rc = 0;
    for (char **p = s->patterns; *p && !rc; p++) {
        char ctx[64];
        nb_stream st;
        if (pattern_ctx(*p, ctx, sizeof ctx) && !(rc = nb_stream_get(s->b, ctx, true, &st, err)))
            rc = add_stream(s, &st, err);
    }
    if (rc || (!s->wild[K_EVENTS] && !s->wild[K_DLQ]))
        return rc;
    char **names;
    int nn;
    if ((rc = nb_stream_names(s->b, &names, &nn, err)))
        return rc;
    for (int i = 0; i < nn && !rc; i++) {
        bool have = false;
        for (int k = 0; k < s->nstreams && !have; k++)
            have = strcmp(s->streams[k].name, names[i]) == 0;
        if (have)
            continue;
        char ctx[64];
        if (nb_stream_ctx(s->b, names[i], ctx, sizeof ctx))
            continue;
        nb_stream st;
        if (!(rc = nb_stream_get(s->b, ctx, false, &st, err)))
            rc = add_stream(s, &st, err);
        else if (rc == PL_ENOTFOUND)
            rc = 0; /* deleted meanwhile */
    }
    nb_names_free(names, nn);
    return rc;
}

/* Counts the deliveries of this lane's consumer that are pending somewhere we
 * do not hold them (a previous owner, a lost connection): the lane waits until
 * they come back, so nothing newer overtakes them. */
static int sync_lane(nsub *s, lane *l, int64_t now, pl_error *err)
{
    sstream *ss = &s->streams[l->si];
    int rc;
    if (!l->ensured) {
        char filter[200], f[224];
        lane_filter(s, ss->ctx, l->kind, filter, sizeof filter);
        snprintf(f, sizeof f, "%s.%d", filter, l->part);
        if ((rc = nb_ensure_consumer(s->b, ss->name, l->consumer, f, s->group, s->lease_ms, err)))
            return rc;
        l->ensured = true;
    }
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = NB_API_WAIT_MS;
    natsStatus st = js_GetConsumerInfo(&ci, s->b->js, ss->name, l->consumer, &jo, &jerr);
    if (st == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr) {
        l->ensured = false;
        l->next_sync = now + RESYNC_MS;
        return 0;
    }
    if (st != NATS_OK)
        return nb_fail(st, jerr, err, "consumer info");
    int64_t unknown = ci->NumAckPending - (int64_t)l->n - (l->wait_seq ? 1 : 0);
    l->missing = unknown > 0 ? unknown : 0;
    if (ci->Delivered.Stream > l->hi)
        l->hi = ci->Delivered.Stream;
    jsConsumerInfo_Destroy(ci);
    l->need_sync = false;
    if (l->missing)
        l->next_sync = now + RESYNC_MS;
    else if (l->wait_seq) /* the nak'd one should be back by then; if not, look why */
        l->next_sync = l->blocked_until + s->lease_ms + 1000;
    else
        l->next_sync = INT64_MAX;
    return 0;
}

/* ---- membership and leases ------------------------------------------------------------------- */

static int kv_get(nsub *s, const char *key, char *val, size_t size, uint64_t *rev, pl_error *err)
{
    kvEntry *e = NULL;
    natsStatus st = kvStore_Get(&e, s->b->kv, key);
    val[0] = '\0';
    *rev = 0;
    if (st == NATS_NOT_FOUND)
        return 1;
    if (st != NATS_OK)
        return nb_fail(st, 0, err, "lease read");
    if (kvEntry_Operation(e) == kvOp_Put)
        snprintf(val, size, "%.*s", kvEntry_ValueLen(e), (const char *)kvEntry_Value(e));
    *rev = kvEntry_Revision(e);
    kvEntry_Destroy(e);
    return val[0] ? 0 : 1;
}

/* Compare-and-set: 0 written, 1 somebody else wrote first, <0 error. */
static int kv_cas(nsub *s, const char *key, const char *val, uint64_t rev, uint64_t *out, pl_error *err)
{
    uint64_t nr = 0;
    natsStatus st = rev ? kvStore_UpdateString(&nr, s->b->kv, key, val, rev)
                        : kvStore_CreateString(&nr, s->b->kv, key, val);
    if (st == NATS_OK) {
        if (out)
            *out = nr;
        return 0;
    }
    int rc = nb_fail(st, 0, err, "lease write");
    return rc == PL_EUNAVAILABLE ? rc : 1;
}

/* Alive when its beat moved within the last lease, by our own clock. */
static bool observe(nsub *s, const char *owner, uint64_t beat, int64_t now)
{
    for (int i = 0; i < s->nmembers; i++) {
        member *m = &s->members[i];
        if (strcmp(m->owner, owner) != 0)
            continue;
        if (m->beat != beat) {
            m->beat = beat;
            m->seen = now;
        }
        return now - m->seen < s->lease_ms;
    }
    s->members = realloc(s->members, (size_t)(s->nmembers + 1) * sizeof *s->members);
    if (!s->members)
        abort();
    member *m = &s->members[s->nmembers++];
    snprintf(m->owner, sizeof m->owner, "%s", owner);
    m->beat = beat;
    m->seen = now;
    return true;
}

/* Rewrites the members key with our beat and without members that stopped.
 * `leaving` removes us. Returns the live members in *live (us included). */
static int beat(nsub *s, int64_t now, bool leaving, char live[][40], int *nlive, pl_error *err)
{
    char key[128];
    snprintf(key, sizeof key, "%s.members", s->gkey);
    for (int attempt = 0; attempt < 8; attempt++) {
        char val[8192], out[8192];
        uint64_t rev;
        int rc = kv_get(s, key, val, sizeof val, &rev, err);
        if (rc < 0)
            return rc;
        size_t len = 0;
        int k = 0;
        s->beat++;
        if (!leaving) {
            len += (size_t)snprintf(out + len, sizeof out - len, "%s:%llu", s->owner, (unsigned long long)s->beat);
            snprintf(live[k++], 40, "%s", s->owner);
        }
        for (char *save = NULL, *tok = strtok_r(val, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
            char *colon = strchr(tok, ':');
            if (!colon)
                continue;
            *colon = '\0';
            if (strcmp(tok, s->owner) == 0 || strlen(tok) >= 40)
                continue;
            uint64_t b = strtoull(colon + 1, NULL, 10);
            if (!observe(s, tok, b, now) || k >= NB_MAX_PARTS * 2 || len + 64 >= sizeof out)
                continue; /* stopped: dropped from the list */
            len += (size_t)snprintf(out + len, sizeof out - len, "%s%s:%llu", len ? ";" : "", tok, (unsigned long long)b);
            snprintf(live[k++], 40, "%s", tok);
        }
        rc = kv_cas(s, key, out, rev, NULL, err);
        if (rc < 0)
            return rc;
        if (rc == 0) {
            *nlive = k;
            return 0;
        }
    }
    return err_set(err, PL_EUNAVAILABLE, NULL, "group %s: membership keeps changing", s->group);
}

static void part_lanes(nsub *s, int p, void (*fn)(nsub *, lane *))
{
    for (int i = 0; i < s->nlanes; i++)
        if (s->lanes[i]->part == p)
            fn(s, s->lanes[i]);
}

static void lane_take(nsub *s, lane *l)
{
    (void)s;
    l->need_sync = true;
    l->pulling = false;
}

/* Beat, then settle ownership: drop what we lost, give back what exceeds a
 * fair share, take free partitions up to it. */
static int renew(nsub *s, int64_t now, pl_error *err)
{
    char live[NB_MAX_PARTS * 2 + 1][40];
    int nlive = 0;
    int rc = beat(s, now, false, live, &nlive, err);
    if (rc)
        return rc;
    int share = (s->nparts + nlive - 1) / (nlive > 0 ? nlive : 1), mine = 0;
    bool free_[NB_MAX_PARTS] = {0};
    uint64_t rev[NB_MAX_PARTS] = {0};
    for (int p = 0; p < s->nparts; p++) {
        char key[128], holder[64];
        snprintf(key, sizeof key, "%s.p%d", s->gkey, p);
        if ((rc = kv_get(s, key, holder, sizeof holder, &rev[p], err)) < 0)
            return rc;
        bool me = strcmp(holder, s->owner) == 0;
        if (s->owned[p] && !me) { /* taken while we were not heard from */
            log_with(LOG_WARN, "bus partition lease lost", LF_STR("group", s->group), LF_INT("partition", p));
            part_lanes(s, p, lane_release);
            s->owned[p] = s->draining[p] = false;
        }
        if (me) {
            if (!s->owned[p])
                part_lanes(s, p, lane_take);
            s->owned[p] = true;
            s->lease_rev[p] = rev[p];
            mine++;
        }
        bool alive = false;
        for (int i = 0; i < nlive && !alive && holder[0]; i++)
            alive = strcmp(live[i], holder) == 0;
        free_[p] = !me && !alive;
    }
    for (int p = s->nparts - 1; p >= 0 && mine > share; p--) {
        if (s->owned[p] && !s->draining[p]) {
            s->draining[p] = true;
            mine--;
        } else if (s->draining[p]) {
            mine--;
        }
    }
    for (int p = 0; p < s->nparts && mine < share; p++) {
        if (s->owned[p] || !free_[p])
            continue;
        char key[128];
        snprintf(key, sizeof key, "%s.p%d", s->gkey, p);
        uint64_t nr = 0;
        if ((rc = kv_cas(s, key, s->owner, rev[p], &nr, err)) < 0)
            return rc;
        if (rc == 0) {
            s->owned[p] = true;
            s->draining[p] = false;
            s->lease_rev[p] = nr;
            part_lanes(s, p, lane_take);
            mine++;
        }
    }
    s->last_renew_ok = now;
    return 0;
}

/* Releases partition p once its pulls are over: naks what it holds, frees the lease. */
static bool release_part(nsub *s, int p, int64_t now, bool force)
{
    for (int i = 0; i < s->nlanes && !force; i++) {
        lane *l = s->lanes[i];
        if (l->part == p && now < l->pull_alive + 20)
            return false;
    }
    part_lanes(s, p, lane_release);
    nb_flush_bulk(s->b); /* the naks reach the server before the next owner can start */
    char key[128];
    snprintf(key, sizeof key, "%s.p%d", s->gkey, p);
    kv_cas(s, key, "", s->lease_rev[p], NULL, NULL);
    s->owned[p] = s->draining[p] = false;
    return true;
}

/* ---- pulls and arrivals ----------------------------------------------------------------------- */

static int pull(nsub *s, const char *subj, const char *reply, int batch)
{
    char req[96];
    int len = snprintf(req, sizeof req, "{\"batch\":%d,\"expires\":%lld}", batch, (long long)PULL_EXPIRES_MS * 1000000);
    return natsConnection_PublishRequest(s->b->nc, subj, reply, req, len) == NATS_OK ? 0 : -1;
}

static bool lane_live(const nsub *s, const lane *l)
{
    return s->owned[l->part] && !s->draining[l->part];
}

static void issue_pulls(nsub *s, int64_t now)
{
    for (int i = 0; i < s->nlanes; i++) {
        lane *l = s->lanes[i];
        /* JetStream 2.9 drops an expired pull silently when a message is ready
         * for it (nextWaiting sends no 408 then), so a client waiting for the
         * 408 would sit without a pull: replace each pull before it expires */
        if (l->pulling && now >= l->pull_renew)
            l->pulling = false;
        if (!lane_live(s, l) || !l->ensured || l->need_sync || l->pulling || now < l->next_pull)
            continue;
        if (l->wait_seq && now < l->blocked_until)
            continue; /* the retry is not due: nothing to hand out before it */
        bool blocked = l->wait_seq || l->missing;
        int room = LANE_CAP - (int)l->n, batch = room;
        if (room < LANE_CAP / 4) {
            /* full: a paused lane still needs its redelivery, one at a time */
            if (!blocked)
                continue;
            batch = 1;
            l->next_pull = now + 100;
        }
        if (pull(s, l->next_subj, l->reply, batch) == 0) {
            l->pulling = true;
            l->pull_left = batch;
            l->prev_alive = l->pull_alive;
            l->pull_alive = now + PULL_EXPIRES_MS;
            l->pull_renew = l->pull_alive - PULL_RENEW_MS;
        }
    }
    if (s->rd_pulling && now >= s->rd_until - PULL_RENEW_MS)
        s->rd_pulling = false; /* as above */
    if (!s->rd_pulling && s->nrd < REDRIVE_BATCH && pull(s, s->rd_next, s->rd_reply, REDRIVE_BATCH) == 0) {
        s->rd_pulling = true;
        s->rd_left = REDRIVE_BATCH;
        s->rd_until = now + PULL_EXPIRES_MS;
    }
}

static lane *lane_for(nsub *s, const nb_meta *mt)
{
    for (int i = 0; i < s->nstreams; i++) {
        sstream *ss = &s->streams[i];
        if (strlen(ss->name) != mt->stream_len || memcmp(ss->name, mt->stream, mt->stream_len) != 0)
            continue;
        size_t gk = strlen(s->gkey);
        if (mt->consumer_len <= gk || memcmp(mt->consumer, s->gkey, gk) != 0)
            return NULL;
        const char *r = mt->consumer + gk;
        int kind = K_EVENTS;
        if (strncmp(r, "-dlq", 4) == 0) {
            kind = K_DLQ;
            r += 4;
        }
        if (strncmp(r, "-p", 2) != 0)
            return NULL;
        int p = atoi(r + 2);
        if (!ss->kinds[kind] || p < 0 || p >= ss->parts)
            return NULL;
        return s->lanes[ss->lane0[kind] + p];
    }
    return NULL;
}

static void arrive_redrive(nsub *s, natsMsg *m, const nb_meta *mt)
{
    if (s->rd_pulling && --s->rd_left <= 0)
        s->rd_pulling = false;
    for (size_t i = 0; i < s->nrd; i++) {
        if (s->rd[i].rseq == mt->sseq) { /* redelivered: keep the newest reply */
            bury(s, s->rd[i].rec);
            s->rd[i].rec = m;
            return;
        }
    }
    json_error_t je;
    json_t *j = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, &je);
    rd_entry e;
    memset(&e, 0, sizeof e);
    e.rec = m;
    e.rseq = mt->sseq;
    const char *v;
    if (j && (v = json_string_value(json_object_get(j, "type"))))
        snprintf(e.type, sizeof e.type, "%s", v);
    if (j && (v = json_string_value(json_object_get(j, "event_id"))))
        snprintf(e.event_id, sizeof e.event_id, "%s", v);
    if (j && (v = json_string_value(json_object_get(j, "stream"))))
        snprintf(e.stream, sizeof e.stream, "%s", v);
    e.oseq = j ? (uint64_t)json_integer_value(json_object_get(j, "seq")) : 0;
    json_decref(j);
    jsErrCode jerr = 0;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = NB_API_WAIT_MS;
    natsStatus st = e.stream[0] && e.oseq ? js_GetMsg(&e.orig, s->b->js, e.stream, e.oseq, &jo, &jerr) : NATS_NOT_FOUND;
    if (st != NATS_OK) {
        if (st == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr || jerr == JSStreamNotFoundErr) {
            log_with(LOG_WARN, "re-driven event is no longer in the log", LF_STR("group", s->group),
                     LF_STR("event_id", e.event_id));
            settle_raw(s, m, "+ACK", NULL);
        } /* else: not acked, it comes again after the ack wait */
        natsMsg_Destroy(m);
        return;
    }
    const char *dot = strrchr(natsMsg_GetSubject(e.orig), '.');
    e.part = dot ? atoi(dot + 1) : 0;
    if (s->nrd == s->caprd) {
        s->caprd = s->caprd ? s->caprd * 2 : 16;
        s->rd = realloc(s->rd, s->caprd * sizeof *s->rd);
        if (!s->rd)
            abort();
    }
    s->rd[s->nrd++] = e;
}

static void status_arrived(nsub *s, natsMsg *m)
{
    const char *subj = natsMsg_GetSubject(m), *status = NULL, *desc = NULL;
    if (strncmp(subj, s->inbox_prefix, s->inbox_len) != 0 || subj[s->inbox_len] != '.')
        return;
    natsMsgHeader_Get(m, "Status", &status);
    natsMsgHeader_Get(m, "Description", &desc);
    if (status && strcmp(status, "100") == 0)
        return; /* idle heartbeat */
    const char *suffix = subj + s->inbox_len + 1;
    if (*suffix == 'r') {
        s->rd_pulling = false;
        return;
    }
    int idx = atoi(suffix);
    if (idx < 0 || idx >= s->nlanes)
        return;
    lane *l = s->lanes[idx];
    l->pulling = false; /* 408 expired, 404 nothing, 409 refused: this request is over */
    if (status && strcmp(status, "408") != 0 && strcmp(status, "404") != 0)
        l->next_pull = nb_mono_ms() + 200; /* refused: do not ask again at once */
    if (status && strcmp(status, "409") == 0 && desc && strstr(desc, "Deleted")) {
        lane_clear(s, l); /* the consumer is gone (reset): what we hold is void */
        l->ensured = false;
    }
}

static void arrived(nsub *s, natsMsg *m, int64_t now)
{
    nb_meta mt;
    if (!nb_parse_ack(natsMsg_GetReply(m), &mt)) {
        status_arrived(s, m);
        natsMsg_Destroy(m);
        return;
    }
    const char *rds = s->b->redrive_stream;
    if (mt.stream_len == strlen(rds) && memcmp(mt.stream, rds, mt.stream_len) == 0) {
        arrive_redrive(s, m, &mt);
        return;
    }
    lane *l = lane_for(s, &mt);
    if (!l) {
        settle_raw(s, m, "-NAK", NULL);
        natsMsg_Destroy(m);
        return;
    }
    if (l->pulling && --l->pull_left <= 0) { /* delivered in full: that pull is over */
        l->pulling = false;
        l->pull_alive = l->prev_alive > now ? l->prev_alive : now;
    }
    if (mt.dseq <= l->last_dseq) /* a new consumer under the same name: the group was reset */
        lane_clear(s, l);
    l->last_dseq = mt.dseq;
    if (!s->owned[l->part]) { /* not ours (any more): back to whoever owns it */
        settle_raw(s, m, "-NAK", NULL);
        natsMsg_Destroy(m);
        return;
    }
    /* already held: a redelivery after the ack wait; keep the newest reply subject */
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (l->q[mid].sseq < mt.sseq)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < l->n && l->q[lo].sseq == mt.sseq) {
        bury(s, l->q[lo].m);
        l->q[lo].m = m;
        l->q[lo].dc = mt.dc;
        l->q[lo].touched = now;
        return;
    }
    if (mt.sseq <= l->hi) { /* a redelivery of something we did not hold */
        if (mt.sseq == l->wait_seq)
            l->wait_seq = 0;
        else if (l->missing > 0)
            l->missing--;
    } else {
        l->hi = mt.sseq;
    }
    char type[CE_TYPE_MAX + 16];
    nb_subject_type(s->b, natsMsg_GetSubject(m), type, sizeof type);
    if (!matches(s, type)) { /* a pattern the filter subject could not express */
        settle_raw(s, m, "+ACK", NULL);
        natsMsg_Destroy(m);
        return;
    }
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->q = realloc(l->q, l->cap * sizeof *l->q);
        if (!l->q)
            abort();
    }
    memmove(&l->q[lo + 1], &l->q[lo], (l->n - lo) * sizeof *l->q);
    l->q[lo] = (entry){.m = m, .sseq = mt.sseq, .ts = mt.ts, .dc = mt.dc, .touched = now};
    l->n++;
    if (lo < l->next)
        l->next++;
}

/* ---- fetch -------------------------------------------------------------------------------------- */

static uint64_t reconnect_count(nsub *s)
{
    uint64_t rc = 0;
    if (natsConnection_GetStats(s->b->nc, s->stats) == NATS_OK)
        natsStatistics_GetCounts(s->stats, NULL, NULL, NULL, NULL, &rc);
    return rc;
}

static int maintain(nsub *s, int64_t now, pl_error *err)
{
    int rc = 0;
    if (now >= s->next_renew) {
        pl_error e = {0};
        rc = discover(s, &e);
        if (!rc)
            rc = renew(s, now, &e);
        s->next_renew = now + (rc ? 500 : s->lease_ms / 3);
        if (rc) /* keep going on what we own; lane_ok() stops us once the lease may be gone */
            log_with(LOG_WARN, "bus lease renewal failed", LF_STR("group", s->group), LF_STR("detail", e.msg));
        rc = 0;
    }
    for (int p = 0; p < s->nparts; p++)
        if (s->draining[p])
            release_part(s, p, now, false);
    for (int i = 0; i < s->nlanes && !rc; i++) {
        lane *l = s->lanes[i];
        if (lane_live(s, l) && (!l->ensured || l->need_sync || now >= l->next_sync))
            rc = sync_lane(s, l, now, err);
    }
    if (now >= s->next_wpi) { /* held deliveries must not time out while they wait their turn */
        int64_t old = now - s->lease_ms / 3;
        for (int i = 0; i < s->nlanes; i++) {
            lane *l = s->lanes[i];
            for (size_t k = 0; k < l->n; k++) {
                if (l->q[k].touched <= old) {
                    settle_raw(s, l->q[k].m, "+WPI", NULL);
                    l->q[k].touched = now;
                }
            }
        }
        s->next_wpi = now + s->lease_ms / 6;
    }
    return rc;
}

static bool lane_ok(const nsub *s, const lane *l, int64_t now)
{
    return lane_live(s, l) && !l->need_sync && !l->wait_seq && !l->missing && l->ensured &&
           now - s->last_renew_ok < s->lease_ms;
}

static void fill(nsub *s, const lane *l, const entry *e, bus_msg *m)
{
    const char *id = NULL;
    char type[CE_TYPE_MAX + 16];
    nb_subject_type(s->b, natsMsg_GetSubject(e->m), type, sizeof type);
    natsMsgHeader_Get(e->m, "Nats-Msg-Id", &id);
    m->seq = e->sseq;
    m->type = arena_strdup(s->a, type);
    m->id = arena_strdup(s->a, id ? id : "");
    m->body = natsMsg_GetData(e->m);
    m->body_len = (size_t)natsMsg_GetDataLength(e->m);
    m->deliveries = e->dc;
    m->partition = l->part;
    m->redrive_id = 0;
}

/* Re-drives first (as embedded: a fetch with re-drives returns only them),
 * then the lanes merged by server timestamp, each lane in stream order. */
static size_t collect(nsub *s, bus_msg *out, size_t max, int64_t now)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nrd && n < max; i++) {
        rd_entry *e = &s->rd[i];
        if (e->handed)
            continue;
        e->handed = true;
        bus_msg *m = &out[n++];
        m->seq = e->oseq;
        m->id = arena_strdup(s->a, e->event_id);
        m->type = arena_strdup(s->a, e->type);
        m->body = natsMsg_GetData(e->orig);
        m->body_len = (size_t)natsMsg_GetDataLength(e->orig);
        m->deliveries = 1;
        m->partition = e->part;
        m->redrive_id = (int64_t)e->rseq;
    }
    if (n)
        return n;
    while (n < max) {
        lane *best = NULL;
        for (int i = 0; i < s->nlanes; i++) {
            lane *l = s->lanes[i];
            if (l->next >= l->n || !lane_ok(s, l, now))
                continue;
            const entry *e = &l->q[l->next];
            if (!best || e->ts < best->q[best->next].ts)
                best = l;
        }
        if (!best)
            break;
        fill(s, best, &best->q[best->next], &out[n++]);
        best->next++;
    }
    return n;
}

/* Everything already delivered to the inbox, without waiting. */
static void take_arrivals(nsub *s, int64_t now)
{
    bool lost = false;
    for (int k = 0; k < 8192; k++) {
        uint64_t queued = 0;
        if (natsSubscription_QueuedMsgs(s->inbox, &queued) != NATS_OK || !queued)
            break;
        natsMsg *m = NULL;
        natsStatus st = natsSubscription_NextMsg(&m, s->inbox, 0);
        if (st == NATS_OK)
            arrived(s, m, now);
        else if (st == NATS_NO_RESPONDERS)
            lost = true; /* a lane's consumer is missing; which one is not said */
        else
            break;
    }
    if (lost)
        for (int i = 0; i < s->nlanes; i++) {
            s->lanes[i]->pulling = false;
            s->lanes[i]->need_sync = true;
        }
}

static int64_t next_wake(const nsub *s, int64_t now, int64_t deadline)
{
    int64_t w = deadline;
    w = s->next_renew < w ? s->next_renew : w;
    w = s->next_wpi < w ? s->next_wpi : w;
    for (int i = 0; i < s->nlanes; i++) {
        const lane *l = s->lanes[i];
        if (!s->owned[l->part])
            continue;
        if (s->draining[l->part] && l->pull_alive + 20 < w)
            w = l->pull_alive + 20;
        if (l->pulling && l->pull_renew < w)
            w = l->pull_renew;
        if (l->wait_seq && !l->pulling && l->blocked_until < w)
            w = l->blocked_until;
        if (l->next_sync < w)
            w = l->next_sync;
        if (!l->pulling && l->next_pull > now && l->next_pull < w)
            w = l->next_pull;
    }
    return w > now ? w : now + 1;
}

int nb_fetch(void *h, bus_msg *out, size_t max, int timeout_ms, size_t *n, pl_error *err)
{
    nsub *s = h;
    *n = 0;
    grave_free(s);
    arena_reset(s->a);
    for (int i = 0; i < s->nlanes; i++)
        s->lanes[i]->next = 0; /* handed out but not settled: they come again */
    for (size_t i = 0; i < s->nrd; i++)
        s->rd[i].handed = false;
    int rc = nb_check_up(s->b, err);
    if (rc)
        return rc;
    uint64_t rcn = reconnect_count(s);
    if (rcn != s->reconnects) { /* requests and deliveries in flight may be lost: count again */
        s->reconnects = rcn;
        for (int i = 0; i < s->nlanes; i++) {
            s->lanes[i]->pulling = false;
            s->lanes[i]->need_sync = true;
        }
        s->rd_pulling = false;
    }
    int64_t deadline = nb_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        int64_t now = nb_mono_ms();
        if ((rc = maintain(s, now, err)))
            return rc;
        issue_pulls(s, now);
        take_arrivals(s, now);
        if ((*n = collect(s, out, max, now))) {
            /* a few acks: written at once, cheaper than waking the flusher; many: batched */
            s->acks = *n > NB_SMALL ? s->b->bulk : s->b->nc;
            return 0;
        }
        if (now >= deadline)
            return 0;
        natsMsg *m = NULL;
        natsStatus st = natsSubscription_NextMsg(&m, s->inbox, next_wake(s, now, deadline) - now);
        if (st == NATS_OK)
            arrived(s, m, nb_mono_ms());
        else if (st == NATS_NO_RESPONDERS)
            for (int i = 0; i < s->nlanes; i++) {
                s->lanes[i]->pulling = false;
                s->lanes[i]->need_sync = true;
            }
        else if (st != NATS_TIMEOUT)
            return nb_fail(st, 0, err, "waiting for messages");
    }
}

/* ---- settle ------------------------------------------------------------------------------------- */

static lane *lane_of(nsub *s, const bus_msg *m, size_t *idx)
{
    char ctx[64];
    if (!m->type || !nb_type_ctx(m->type, ctx, sizeof ctx))
        return NULL;
    int kind = pattern_kind(m->type);
    for (int i = 0; i < s->nstreams; i++) {
        sstream *ss = &s->streams[i];
        if (strcmp(ss->ctx, ctx) != 0 || !ss->kinds[kind] || m->partition < 0 || m->partition >= ss->parts)
            continue;
        lane *l = s->lanes[ss->lane0[kind] + m->partition];
        for (size_t k = 0; k < l->next; k++) {
            if (l->q[k].sseq == m->seq) {
                *idx = k;
                return l;
            }
        }
        return NULL;
    }
    return NULL;
}

static rd_entry *rd_of(nsub *s, const bus_msg *m, size_t *idx)
{
    for (size_t i = 0; i < s->nrd; i++) {
        if ((int64_t)s->rd[i].rseq == m->redrive_id && s->rd[i].handed) {
            *idx = i;
            return &s->rd[i];
        }
    }
    return NULL;
}

static void rd_remove(nsub *s, size_t i)
{
    bury(s, s->rd[i].rec);
    bury(s, s->rd[i].orig);
    s->rd[i] = s->rd[--s->nrd];
}

int nb_ack(void *h, const bus_msg *m, pl_error *err)
{
    nsub *s = h;
    size_t i;
    if (m->redrive_id) {
        rd_entry *e = rd_of(s, m, &i);
        int rc = e ? settle_raw(s, e->rec, "+ACK", err) : 0;
        if (e && !rc)
            rd_remove(s, i);
        return rc;
    }
    lane *l = lane_of(s, m, &i);
    if (!l)
        return 0; /* not expected any more: a no-op */
    int rc = settle_raw(s, l->q[i].m, "+ACK", err);
    if (!rc)
        lane_remove(s, l, i);
    return rc;
}

int nb_term(void *h, const bus_msg *m, const char *error, pl_error *err)
{
    nsub *s = h;
    size_t i;
    if (m->redrive_id) {
        rd_entry *e = rd_of(s, m, &i);
        if (!e)
            return 0;
        nb_stream st = {.parts = 1};
        char ctx[64];
        if (nb_type_ctx(e->type, ctx, sizeof ctx))
            nb_stream_get(s->b, ctx, false, &st, NULL);
        int rc = nb_dead_letter(s->b, s->group, e->stream, st.parts, e->type, e->event_id, e->oseq,
                                natsMsg_GetData(e->orig), (size_t)natsMsg_GetDataLength(e->orig), 1, error, e->rseq,
                                err);
        if (!rc && !(rc = settle_raw(s, e->rec, "+ACK", err)))
            rd_remove(s, i);
        return rc;
    }
    lane *l = lane_of(s, m, &i);
    if (!l)
        return 0;
    sstream *ss = &s->streams[l->si];
    entry *e = &l->q[i];
    int rc = nb_dead_letter(s->b, s->group, ss->name, ss->parts, m->type, m->id, e->sseq, natsMsg_GetData(e->m),
                            (size_t)natsMsg_GetDataLength(e->m), e->dc, error, 0, err);
    if (!rc)
        rc = settle_raw(s, e->m, "+TERM", err);
    if (rc)
        return rc;
    lane_remove(s, l, i);
    l->next = 0; /* the partition moves on; what it handed after this comes again */
    return 0;
}

int nb_nak(void *h, const bus_msg *m, int64_t delay_ms, const char *error, pl_error *err)
{
    nsub *s = h;
    if (m->redrive_id || m->deliveries >= s->max_deliver)
        return nb_term(h, m, error, err);
    size_t i;
    lane *l = lane_of(s, m, &i);
    if (!l)
        return 0;
    char how[64];
    if (delay_ms > 0)
        snprintf(how, sizeof how, "-NAK {\"delay\":%lld}", (long long)delay_ms * 1000000);
    else
        snprintf(how, sizeof how, "-NAK");
    int rc = settle_raw(s, l->q[i].m, how, err);
    if (rc)
        return rc;
    int64_t now = nb_mono_ms();
    l->wait_seq = l->q[i].sseq;
    l->blocked_until = now + (delay_ms > 0 ? delay_ms : 0);
    l->next_sync = l->blocked_until + s->lease_ms + 1000;
    lane_remove(s, l, i);
    l->next = 0; /* the partition pauses: what it handed after this comes again later */
    return 0;
}

/* ---- subscribe / unsubscribe ------------------------------------------------------------------- */

static void sub_free(nsub *s)
{
    for (int i = 0; i < s->nlanes; i++) {
        for (size_t k = 0; k < s->lanes[i]->n; k++)
            natsMsg_Destroy(s->lanes[i]->q[k].m);
        free(s->lanes[i]->q);
        free(s->lanes[i]);
    }
    free(s->lanes);
    for (size_t i = 0; i < s->nrd; i++) {
        natsMsg_Destroy(s->rd[i].rec);
        natsMsg_Destroy(s->rd[i].orig);
    }
    free(s->rd);
    grave_free(s);
    free(s->grave);
    free(s->streams);
    free(s->members);
    for (char **p = s->patterns; p && *p; p++)
        free(*p);
    free(s->patterns);
    if (s->inbox) {
        natsSubscription_Unsubscribe(s->inbox);
        natsSubscription_Destroy(s->inbox);
    }
    natsStatistics_Destroy(s->stats);
    arena_destroy(s->a);
    free(s);
}

int nb_subscribe(void *h, const bus_sub_options *o, void **out, pl_error *err)
{
    nbus *b = h;
    int rc = nb_check_up(b, err);
    if (rc)
        return rc;
    if (!o->group || !*o->group || !o->patterns || !o->patterns[0])
        return err_set(err, PL_EINVAL, "group", "a subscription needs a group and at least one pattern");
    nsub *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->b = b;
    s->acks = b->bulk;
    snprintf(s->group, sizeof s->group, "%s", o->group);
    nb_group_key(o->group, s->gkey, sizeof s->gkey);
    uuid7_new(s->owner);
    s->max_deliver = o->max_deliver > 0 ? o->max_deliver : 5;
    s->lease_ms = o->lease_ms > 0 ? o->lease_ms : 10000;
    if (s->lease_ms < 300)
        s->lease_ms = 300;
    size_t np = 0;
    while (o->patterns[np])
        np++;
    s->patterns = calloc(np + 1, sizeof *s->patterns);
    if (!s->patterns)
        abort();
    for (size_t i = 0; i < np; i++) {
        if (!(s->patterns[i] = strdup(o->patterns[i])))
            abort();
        char ctx[64];
        int k = pattern_kind(o->patterns[i]);
        s->want[k] = true;
        if (!pattern_ctx(o->patterns[i], ctx, sizeof ctx))
            s->wild[k] = true;
    }
    s->nparts = b->o.partitions;
    s->a = arena_create(65536);
    natsStatistics_Create(&s->stats);
    s->reconnects = reconnect_count(s);
    char *inbox = NULL;
    natsStatus st = natsInbox_Create(&inbox);
    if (st == NATS_OK) {
        snprintf(s->inbox_prefix, sizeof s->inbox_prefix, "%s", inbox);
        s->inbox_len = strlen(s->inbox_prefix);
        natsInbox_Destroy(inbox);
        char subj[80];
        snprintf(subj, sizeof subj, "%s.*", s->inbox_prefix);
        st = natsConnection_SubscribeSync(&s->inbox, b->nc, subj);
    }
    if (st != NATS_OK) {
        rc = nb_fail(st, 0, err, "inbox");
        sub_free(s);
        return rc;
    }
    /* a slow consumer here would lose deliveries: what we pull is bounded anyway */
    natsSubscription_SetPendingLimits(s->inbox, -1, -1);

    snprintf(s->rd_consumer, sizeof s->rd_consumer, "%s", s->gkey);
    snprintf(s->rd_next, sizeof s->rd_next, "$JS.API.CONSUMER.MSG.NEXT.%s.%s", b->redrive_stream, s->rd_consumer);
    snprintf(s->rd_reply, sizeof s->rd_reply, "%s.r", s->inbox_prefix);
    char rd_filter[160];
    snprintf(rd_filter, sizeof rd_filter, "%spulse.redrive.%s", b->pre_subj, s->gkey);
    if (!(rc = nb_ensure_consumer(b, b->redrive_stream, s->rd_consumer, rd_filter, s->group, s->lease_ms, err)) &&
        !(rc = discover(s, err))) {
        int64_t now = nb_mono_ms();
        /* join at once, so that current owners start handing over partitions */
        rc = renew(s, now, err);
        s->next_renew = now + s->lease_ms / 3;
        s->next_wpi = now + s->lease_ms / 6;
    }
    if (rc) {
        sub_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void nb_unsubscribe(void *h)
{
    nsub *s = h;
    bool up = nb_check_up(s->b, NULL) == 0;
    for (int p = 0; p < s->nparts; p++)
        if (s->owned[p])
            s->draining[p] = true;
    /* hand over cleanly: wait for outstanding pulls to end, nak what we hold, free the leases */
    int64_t deadline = nb_mono_ms() + PULL_EXPIRES_MS + 500;
    for (;;) {
        int64_t now = nb_mono_ms();
        bool left = false;
        for (int p = 0; p < s->nparts; p++)
            if (s->draining[p] && !release_part(s, p, now, !up || now >= deadline))
                left = true;
        if (!left)
            break;
        natsMsg *m = NULL;
        if (natsSubscription_NextMsg(&m, s->inbox, 50) == NATS_OK)
            arrived(s, m, now);
    }
    for (size_t i = 0; i < s->nrd; i++)
        settle_raw(s, s->rd[i].rec, "-NAK", NULL);
    if (up) {
        char live[NB_MAX_PARTS * 2 + 1][40];
        int nlive;
        beat(s, nb_mono_ms(), true, live, &nlive, NULL);
        nb_flush_bulk(s->b); /* the naks and acks are out before we go */
    }
    sub_free(s);
}
