/*
 * realtime.c - the realtime gateway: GET /api/v1/stream (WebSocket) delivers
 * a user's events as CloudEvents. README.md in this directory has the
 * protocol, the delivery path, resume and the slow-client policy.
 *
 * Threads: the consumer thread (a batch of events -> one pipelined history
 * write + one pub/sub message), the kv subscription thread (message -> one
 * frame per event -> ws_hub_publish), MHD's
 * threads (the upgrade and the resume read), the hub's thread (sockets) and
 * the verifier thread (re-checks tokens of open sessions every ping_interval).
 * `lock` guards the list of open connections, which revocation and the
 * verifier read.
 */
#include "bus/cloudevent.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/uuid.h"
#include "http/auth.h"
#include "http/ws.h"
#include "services/service.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct conn conn;
struct conn {
    atomic_int refs;          /* the upgrade's `opened` and the hub's `closed` */
    bool listed, gone;        /* under realtime.lock */
    uint64_t sid;
    char user_id[40];
    char auth_session[40];
    char stream_id[40];       /* ready.session_id */
    char last_id[40];         /* resume after this event ("" none) */
    char *token;              /* re-verified every ping_interval; never logged */
    conn *prev, *next;
};

/* What the consumer's handler staged for the batch's flush (consumer thread only). */
typedef struct stage {
    kv_zop *ops;           /* history writes; keys point into keys[], set at flush */
    char (*keys)[48];
    size_t nops, capops;
    char **encs;           /* each event's JSON, once (the ops' members) */
    size_t nencs, capencs;
    char *msg;             /* the batch's pub/sub messages: records, see on_message */
    size_t len, cap;
    size_t *cuts;          /* where a message ends and the next begins (record boundaries) */
    size_t ncuts, capcuts;
} stage;

/* A batch's records go out in messages of about this size at most (a message is split only between
 * records): Redis disconnects a subscriber whose pending output passes its pubsub buffer limit
 * (8 MiB for 60 s by default), and a batch of 256 events to 1,000 users each would come near that. */
#define RT_MSG_SPLIT (1u << 20)

/* Event ids the gateway already handed to the hub (kv subscription thread only): a redelivered
 * event is published again, and must not reach a session twice. Two generations of 64-bit hashes;
 * when the current one is half full the older is forgotten, so the last 32k-64k ids are known. */
#define SEEN_SLOTS 65536
typedef struct seen {
    uint64_t *gen[2];
    size_t count; /* in gen[0] */
} seen;

typedef struct realtime {
    service_ctx *ctx;
    stage st;
    seen seen;
    ws_hub *hub;
    kv_sub *sub;
    char channel[160];
    int64_t retention_ms, ping_ms;
    size_t history_max;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;
    pthread_t verifier;
    conn *conns;
} realtime;

static const config_key realtime_keys[] = {
    {"service.realtime", "ping_interval", CFG_DURATION, "25s", 1000, 3600000, "WebSocket ping period; also how often open sessions' tokens are re-verified"},
    {"service.realtime", "idle_timeout", CFG_DURATION, "60s", 1000, 3600000, "close a session after this long without a frame from the client (or without write progress: 4008)"},
    {"service.realtime", "retention", CFG_DURATION, "10m", 1000, 7LL * 86400000, "how long a user's events are kept for resume (last_event_id)"},
    {"service.realtime", "history_max", CFG_INT, "500", 1, 100000, "events kept per user for resume"},
    {"service.realtime", "send_queue_max", CFG_INT, "256", 1, 1000000, "events waiting per session; one more drops the oldest (pl.realtime.dropped.v1)"},
    {"service.realtime", "send_buffer", CFG_SIZE, "0", 0, 64LL << 20, "SO_SNDBUF of session sockets; 0: the kernel's autotuning"},
};

static void conn_unref(conn *c)
{
    if (c && atomic_fetch_sub(&c->refs, 1) == 1) {
        if (c->token) {
            memset(c->token, 0, strlen(c->token));
            free(c->token);
        }
        free(c);
    }
}

/* A control CloudEvent of this service as a frame. */
static ws_frame *control_frame(const char *type, const char *user_id, json_t *data)
{
    char id[40], now[40];
    uuid7_new(id);
    time_rfc3339(time_now_ms(), now, sizeof now);
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "specversion", "1.0", "id", id, "source",
                           "/pulse/realtime", "type", type, "subject", user_id, "time", now, "datacontenttype",
                           "application/json", "partitionkey", user_id, "data", data);
    char *s = json_compact(ev);
    json_decref(ev);
    ws_frame *f = ws_frame_text(s, strlen(s), NULL);
    free(s);
    return f;
}

/* ---- the hub's callbacks -------------------------------------------------------- */

typedef struct hist {
    char id[40];
    const char *json;
    size_t len;
    double score;
} hist;

/* Registered (held) already: whatever is published from here on reaches the
 * session; what was published before is in the history. */
static void on_opened(void *ud, uint64_t sid, void *sdata)
{
    realtime *rt = ud;
    conn *c = sdata;
    pthread_mutex_lock(&rt->lock);
    c->sid = sid;
    if (!c->gone) {
        c->listed = true;
        c->next = rt->conns;
        if (rt->conns)
            rt->conns->prev = c;
        rt->conns = c;
    }
    pthread_mutex_unlock(&rt->lock);

    size_t nreplay = 0;
    ws_frame **replay = NULL;
    bool gap = false;
    if (c->last_id[0]) {
        char key[64];
        snprintf(key, sizeof key, "rt:%s", c->user_id);
        kv_zitem *items = NULL;
        size_t n = 0;
        pl_error err = {0};
        int rc = kv_zrange_rank(rt->ctx->kv, key, 0, -1, false, &items, &n, &err);
        if (rc) {
            log_with(LOG_WARN, "realtime: history unavailable for a resume", LF_STR("detail", err.msg));
            gap = true;
        } else {
            hist *h = calloc(n ? n : 1, sizeof *h);
            if (!h)
                abort();
            size_t nh = 0;
            double cutoff = (double)(time_now_ms() - rt->retention_ms);
            for (size_t i = 0; i < n; i++) {
                if (items[i].score < cutoff) { /* past retention: gone for good */
                    kv_zrem(rt->ctx->kv, key, items[i].member, NULL);
                    continue;
                }
                json_t *ev = json_loads(items[i].member, 0, NULL);
                const char *id = json_string_value(json_object_get(ev, "id"));
                if (id) {
                    snprintf(h[nh].id, sizeof h[nh].id, "%s", id);
                    h[nh].json = items[i].member;
                    h[nh].len = strlen(items[i].member);
                    h[nh++].score = items[i].score;
                }
                json_decref(ev);
            }
            /* The history is in delivery order (scored when written), which is
             * what the client saw: everything after its last event is what it
             * missed. Ids alone would not do: events of other partitions or a
             * redelivery arrive out of id order. Only when the id is not in the
             * history (older than the window, or unknown) do ids decide. */
            size_t at = nh;
            for (size_t i = 0; i < nh && at == nh; i++)
                if (strcmp(h[i].id, c->last_id) == 0)
                    at = i;
            gap = at == nh;
            replay = calloc(nh ? nh : 1, sizeof *replay);
            if (!replay)
                abort();
            for (size_t i = gap ? 0 : at + 1; i < nh; i++)
                if (!gap || strcmp(h[i].id, c->last_id) > 0)
                    replay[nreplay++] = ws_frame_text(h[i].json, h[i].len, h[i].id);
            free(h);
            kv_zitems_free(items, n);
        }
    }
    ws_frame *ready = control_frame("pl.realtime.ready.v1", c->user_id,
                                    json_pack("{s:s, s:I, s:b}", "session_id", c->stream_id, "resumed",
                                              (json_int_t)nreplay, "gap", gap));
    ws_hub_release(rt->hub, sid, replay, nreplay, ready);
    free(replay);
    conn_unref(c);
}

static ws_frame *on_dropped(void *ud, void *sdata, uint64_t count, const char *first, const char *last)
{
    (void)ud;
    conn *c = sdata;
    return control_frame("pl.realtime.dropped.v1", c->user_id,
                         json_pack("{s:I, s:s, s:s}", "count", (json_int_t)count, "first_id", first, "last_id", last));
}

static void on_closed(void *ud, uint64_t sid, void *sdata, int code)
{
    (void)code;
    realtime *rt = ud;
    conn *c = sdata;
    pthread_mutex_lock(&rt->lock);
    c->gone = true;
    if (c->listed) {
        if (c->prev)
            c->prev->next = c->next;
        else
            rt->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        c->listed = false;
    }
    pthread_mutex_unlock(&rt->lock);
    if (sid == 0) /* never opened: `opened` holds no reference */
        conn_unref(c);
    conn_unref(c);
}

static const ws_hub_cbs hub_cbs = {.opened = on_opened, .dropped = on_dropped, .closed = on_closed};

/* ---- the endpoint ------------------------------------------------------------------ */

static int stream(http_req *req, http_res *res)
{
    realtime *rt = ((service_ctx *)req->ctx)->state;
    const char *tok = req->bearer ? req->bearer : http_query(req, "access_token");
    if (!tok || !*tok) {
        http_header_add(req, res, "WWW-Authenticate", "Bearer");
        return http_fail(req, PL_EUNAUTHORIZED, NULL,
                         "a bearer token is required (Authorization: Bearer, or access_token in the query)");
    }
    principal p;
    int rc = auth_verify(tok, &p);
    if (rc == PL_EUNAUTHORIZED) {
        http_header_add(req, res, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
        return http_fail(req, rc, NULL, "the token is invalid, expired or revoked");
    }
    if (rc)
        return http_fail(req, rc, NULL, NULL);
    const char *last = http_query(req, "last_event_id");
    if (!last)
        last = http_header_get(req, "Last-Event-ID");
    if (last && *last && !uuid_valid(last))
        return http_fail(req, PL_EINVAL, json_pack("{s:s}", "last_event_id", "must be an event id (a UUID)"),
                         "invalid last_event_id");
    conn *c = calloc(1, sizeof *c);
    if (!c || !(c->token = strdup(tok)))
        abort();
    atomic_init(&c->refs, 2);
    snprintf(c->user_id, sizeof c->user_id, "%s", p.user_id);
    snprintf(c->auth_session, sizeof c->auth_session, "%s", p.session_id);
    snprintf(c->last_id, sizeof c->last_id, "%s", last ? last : "");
    uuid7_new(c->stream_id);
    rc = ws_upgrade(rt->hub, req, res, p.user_id, c);
    if (rc) {
        atomic_store(&c->refs, 1);
        conn_unref(c);
    }
    return rc;
}

/* ---- delivery: the consumer and the subscription -------------------------------------- */

static int add_recipient(json_t *to, json_t *v)
{
    if (json_is_string(v) && uuid_valid(json_string_value(v)))
        return json_array_append(to, v);
    return 0;
}

static int str_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted and without repeats: a user listed twice gets the event once. */
static json_t *unique_sorted(json_t *to)
{
    size_t n = json_array_size(to);
    if (n < 2)
        return to;
    const char **v = malloc(n * sizeof *v);
    if (!v)
        abort();
    for (size_t i = 0; i < n; i++)
        v[i] = json_string_value(json_array_get(to, i));
    qsort(v, n, sizeof *v, str_cmp);
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++)
        if (i == 0 || strcmp(v[i], v[i - 1]) != 0)
            json_array_append_new(out, json_string(v[i]));
    free(v);
    json_decref(to);
    return out;
}

/* The recipients of an event, by its type's contract (docs/EVENTS.md). */
static json_t *recipients(const cloudevent *ev)
{
    json_t *to = json_array(), *d = ev->data;
    const char *t = ev->type;
    if (strncmp(t, "pl.notify.notification_", 23) == 0)
        add_recipient(to, json_object_get(d, "user_id"));
    else if (strcmp(t, "pl.commerce.order_updated.v1") == 0)
        add_recipient(to, json_object_get(d, "buyer_id"));
    else {
        const char *list = strcmp(t, "pl.messaging.message_sent.v1") == 0 ? "recipient_ids" : "user_ids";
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(d, list), i, v) add_recipient(to, v);
    }
    return unique_sorted(to);
}

static void stage_put(stage *st, const char *p, size_t n)
{
    if (st->len + n + 1 > st->cap) {
        size_t cap = st->cap ? st->cap : 4096;
        while (cap < st->len + n + 1)
            cap *= 2;
        if (!(st->msg = realloc(st->msg, cap)))
            abort();
        st->cap = cap;
    }
    memcpy(st->msg + st->len, p, n);
    st->len += n;
}

/* Before a record: ends the current message there when it is big enough. */
static void stage_record(stage *st)
{
    size_t start = st->ncuts ? st->cuts[st->ncuts - 1] : 0;
    if (st->len - start < RT_MSG_SPLIT)
        return;
    if (st->ncuts == st->capcuts) {
        st->capcuts = st->capcuts ? st->capcuts * 2 : 8;
        if (!(st->cuts = realloc(st->cuts, st->capcuts * sizeof *st->cuts)))
            abort();
    }
    st->cuts[st->ncuts++] = st->len;
}

static void stage_clear(stage *st)
{
    for (size_t i = 0; i < st->nencs; i++)
        free(st->encs[i]);
    st->nencs = st->nops = st->len = st->ncuts = 0;
}

static void stage_free(stage *st)
{
    stage_clear(st);
    free(st->ops);
    free(st->keys);
    free(st->encs);
    free(st->msg);
    free(st->cuts);
}

/* Stages the event: its frame JSON (built once), a history write per recipient and a record in
 * the batch's message; deliver_flush performs them. Nothing is staged when it fails. */
static int deliver_handle(void *ud, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    (void)tx;
    service_ctx *ctx = ud;
    realtime *rt = ctx->state;
    stage *st = &rt->st;
    if (strcmp(ev->type, "pl.identity.session_revoked.v1") == 0) {
        const char *u = json_string_value(json_object_get(ev->data, "user_id"));
        const char *s = json_string_value(json_object_get(ev->data, "session_id"));
        if (!u || !s || !uuid_valid(s))
            return err_set(err, PL_EINVAL, NULL, "session_revoked without user_id/session_id");
        char rec[128];
        int n = snprintf(rec, sizeof rec, "R%s\n", s);
        stage_record(st);
        stage_put(st, rec, (size_t)n);
        return 0;
    }
    json_t *to = recipients(ev);
    size_t nto = json_array_size(to);
    if (!nto) {
        json_decref(to);
        return 0;
    }
    json_t *data = json_deep_copy(ev->data);
    json_object_del(data, "user_ids");
    json_object_del(data, "recipient_ids");
    json_t *out = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "specversion", "1.0", "id", ev->id,
                            "source", ev->source, "type", ev->type, "subject", ev->subject, "time", ev->time,
                            "datacontenttype", "application/json", "partitionkey",
                            ev->partitionkey[0] ? ev->partitionkey : ev->subject, "data", data);
    char *enc = json_compact(out);
    json_decref(out);
    size_t enclen = strlen(enc);

    if (st->nops + nto > st->capops) {
        size_t cap = st->capops ? st->capops : 256;
        while (cap < st->nops + nto)
            cap *= 2;
        if (!(st->ops = realloc(st->ops, cap * sizeof *st->ops)) || !(st->keys = realloc(st->keys, cap * sizeof *st->keys)))
            abort();
        st->capops = cap;
    }
    if (st->nencs == st->capencs) {
        st->capencs = st->capencs ? st->capencs * 2 : 64;
        if (!(st->encs = realloc(st->encs, st->capencs * sizeof *st->encs)))
            abort();
    }
    st->encs[st->nencs++] = enc;
    double score = (double)time_now_ms();
    char head[64];
    stage_record(st);
    stage_put(st, head, (size_t)snprintf(head, sizeof head, "E%s ", ev->id));
    for (size_t i = 0; i < nto; i++) {
        const char *u = json_string_value(json_array_get(to, i));
        snprintf(st->keys[st->nops], sizeof st->keys[st->nops], "rt:%s", u);
        st->ops[st->nops++] = (kv_zop){.member = enc, .score = score, .trim_to = rt->history_max};
        if (i)
            stage_put(st, ",", 1);
        stage_put(st, u, strlen(u));
    }
    stage_put(st, head, (size_t)snprintf(head, sizeof head, " %zu\n", enclen));
    stage_put(st, enc, enclen);
    json_decref(to);
    return 0;
}

/* The batch: every history write in one pipelined kv_zadd_batch, then one message with every
 * event (several past RT_MSG_SPLIT). History first: a session registered before the publish gets the events live, one that
 * reads history after the write finds them. */
static int deliver_flush(void *ud, sql_tx *tx, pl_error *err)
{
    (void)tx;
    service_ctx *ctx = ud;
    realtime *rt = ctx->state;
    stage *st = &rt->st;
    for (size_t i = 0; i < st->nops; i++)
        st->ops[i].key = st->keys[i];
    int rc = st->nops ? kv_zadd_batch(ctx->kv, st->ops, st->nops, err) : 0;
    /* messages in order on one channel; if one fails, the batch comes again and the gateways skip
     * the events they already had */
    for (size_t i = 0, from = 0; !rc && i <= st->ncuts; i++) {
        size_t to = i < st->ncuts ? st->cuts[i] : st->len;
        if (to > from) {
            rc = kv_publish(ctx->kv, rt->channel, st->msg + from, to - from, err);
            rc = rc < 0 ? rc : 0;
        }
        from = to;
    }
    stage_clear(st);
    return rc;
}

static uint64_t id_hash(const char *id)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ULL;
    return h ? h : 1;
}

static bool seen_in(const uint64_t *t, uint64_t h)
{
    for (size_t i = h & (SEEN_SLOTS - 1);; i = (i + 1) & (SEEN_SLOTS - 1)) {
        if (t[i] == h)
            return true;
        if (!t[i])
            return false;
    }
}

/* true when the id was handed to the hub before (remembers it otherwise) */
static bool seen_check(seen *sn, const char *id)
{
    uint64_t h = id_hash(id);
    if (seen_in(sn->gen[0], h) || seen_in(sn->gen[1], h))
        return true;
    if (sn->count >= SEEN_SLOTS / 2) { /* forget the older generation */
        uint64_t *old = sn->gen[1];
        sn->gen[1] = sn->gen[0];
        memset(old, 0, SEEN_SLOTS * sizeof *old);
        sn->gen[0] = old;
        sn->count = 0;
    }
    size_t i = h & (SEEN_SLOTS - 1);
    while (sn->gen[0][i])
        i = (i + 1) & (SEEN_SLOTS - 1);
    sn->gen[0][i] = h;
    sn->count++;
    return false;
}

/* A revoked login session: close its sockets (4001). */
static void revoke(realtime *rt, const char *sid)
{
    pthread_mutex_lock(&rt->lock);
    for (conn *c = rt->conns; c; c = c->next)
        if (strcmp(c->auth_session, sid) == 0)
            ws_hub_close(rt->hub, c->sid, WS_CLOSE_REVOKED, "session revoked");
    pthread_mutex_unlock(&rt->lock);
}

/* One event record: one frame, the same bytes for every recipient. */
static void deliver_event(realtime *rt, const char *id, const char *users, size_t ulen, const char *json, size_t jlen)
{
    if (seen_check(&rt->seen, id))
        return; /* published again (a redelivery): every session here had it already */
    size_t nkeys = 1;
    for (size_t i = 0; i < ulen; i++)
        nkeys += users[i] == ',';
    char *list = strndup(users, ulen);
    const char **keys = calloc(nkeys, sizeof *keys);
    if (!list || !keys)
        abort();
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(list, ",", &save); t && n < nkeys; t = strtok_r(NULL, ",", &save))
        keys[n++] = t;
    ws_frame *f = ws_frame_text(json, jlen, id);
    ws_hub_publish(rt->hub, keys, n, f);
    ws_frame_unref(f);
    free(keys);
    free(list);
}

/* A message is a sequence of records, in the consumer's order:
 *   R<auth session id>\n                              a revoked login session
 *   E<event id> <user>,<user>... <json length>\n<json>  an event and its recipients
 * Anything malformed ends the parse (the records before it were delivered). */
static void on_message(void *ud, const char *channel, const char *msg, size_t len)
{
    (void)channel;
    realtime *rt = ud;
    const char *p = msg, *end = msg + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl || nl - p < 2)
            return;
        if (*p == 'R') {
            char sid[40];
            snprintf(sid, sizeof sid, "%.*s", (int)(nl - p - 1), p + 1);
            revoke(rt, sid);
            p = nl + 1;
            continue;
        }
        if (*p != 'E')
            return;
        const char *sp1 = memchr(p, ' ', (size_t)(nl - p));
        const char *sp2 = sp1 ? memrchr(sp1 + 1, ' ', (size_t)(nl - sp1 - 1)) : NULL;
        if (!sp1 || !sp2 || sp1 - p - 1 >= 40)
            return;
        char id[40], *e;
        snprintf(id, sizeof id, "%.*s", (int)(sp1 - p - 1), p + 1);
        errno = 0;
        unsigned long long jlen = strtoull(sp2 + 1, &e, 10);
        if (errno || e != nl || jlen > (unsigned long long)(end - nl - 1))
            return;
        deliver_event(rt, id, sp1 + 1, (size_t)(sp2 - sp1 - 1), nl + 1, (size_t)jlen);
        p = nl + 1 + jlen;
    }
}

/* ---- token re-verification ---------------------------------------------------------------- */

static void *verifier_main(void *arg)
{
    realtime *rt = arg;
    pthread_mutex_lock(&rt->lock);
    while (!rt->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (rt->ping_ms % 1000) * 1000000;
        ts.tv_sec += rt->ping_ms / 1000 + ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&rt->wake, &rt->lock, &ts);
        if (rt->stopping)
            break;
        /* check outside the lock: take a reference to each connection */
        size_t n = 0;
        for (conn *c = rt->conns; c; c = c->next)
            n++;
        conn **all = calloc(n ? n : 1, sizeof *all);
        if (!all)
            abort();
        n = 0;
        for (conn *c = rt->conns; c; c = c->next) {
            atomic_fetch_add(&c->refs, 1);
            all[n++] = c;
        }
        pthread_mutex_unlock(&rt->lock);
        for (size_t i = 0; i < n; i++) {
            principal p;
            if (auth_verify(all[i]->token, &p) == PL_EUNAUTHORIZED)
                ws_hub_close(rt->hub, all[i]->sid, WS_CLOSE_REVOKED, "token expired or revoked");
            conn_unref(all[i]);
        }
        free(all);
        pthread_mutex_lock(&rt->lock);
    }
    pthread_mutex_unlock(&rt->lock);
    return NULL;
}

/* ---- life cycle ------------------------------------------------------------------------------ */

static int realtime_start(service_ctx *ctx, pl_error *err)
{
    realtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        abort();
    rt->ctx = ctx;
    ctx->state = rt;
    rt->seen.gen[0] = calloc(SEEN_SLOTS, sizeof(uint64_t));
    rt->seen.gen[1] = calloc(SEEN_SLOTS, sizeof(uint64_t));
    if (!rt->seen.gen[0] || !rt->seen.gen[1])
        abort();
    const config *c = ctx->cfg;
    rt->retention_ms = config_int(c, "service.realtime", "retention");
    rt->history_max = (size_t)config_int(c, "service.realtime", "history_max");
    rt->ping_ms = config_int(c, "service.realtime", "ping_interval");
    char store[128];
    service_store_name(c, "realtime", store, sizeof store);
    snprintf(rt->channel, sizeof rt->channel, "pulse.%s.deliver", store);
    pthread_mutex_init(&rt->lock, NULL);
    pthread_cond_init(&rt->wake, NULL);
    ws_hub_opts o = {
        .name = "realtime",
        .ping_interval_ms = (int)rt->ping_ms,
        .idle_timeout_ms = (int)config_int(c, "service.realtime", "idle_timeout"),
        .queue_max = (size_t)config_int(c, "service.realtime", "send_queue_max"),
        .sndbuf = (int)config_int(c, "service.realtime", "send_buffer"),
    };
    int rc = ws_hub_create(&o, &hub_cbs, rt, &rt->hub, err);
    if (!rc)
        rc = kv_subscribe(ctx->kv, rt->channel, on_message, rt, &rt->sub, err);
    if (!rc && pthread_create(&rt->verifier, NULL, verifier_main, rt) != 0)
        rc = err_set(err, PL_EIO, NULL, "cannot start the token verifier: %s", strerror(errno));
    if (rc) {
        kv_unsubscribe(rt->sub);
        ws_hub_destroy(rt->hub);
        pthread_mutex_destroy(&rt->lock);
        pthread_cond_destroy(&rt->wake);
        free(rt->seen.gen[0]);
        free(rt->seen.gen[1]);
        free(rt);
        ctx->state = NULL;
    }
    return rc;
}

static void realtime_stop(service_ctx *ctx)
{
    realtime *rt = ctx->state;
    if (!rt)
        return;
    kv_unsubscribe(rt->sub);
    pthread_mutex_lock(&rt->lock);
    rt->stopping = true;
    pthread_cond_broadcast(&rt->wake);
    pthread_mutex_unlock(&rt->lock);
    pthread_join(rt->verifier, NULL);
    ws_hub_destroy(rt->hub); /* closes what is left (1001); `closed` frees each conn */
    pthread_mutex_destroy(&rt->lock);
    pthread_cond_destroy(&rt->wake);
    stage_free(&rt->st);
    free(rt->seen.gen[0]);
    free(rt->seen.gen[1]);
    free(rt);
    ctx->state = NULL;
}

static const http_route realtime_routes[] = {
    {"GET", "/api/v1/stream", stream, 0,
     "WebSocket: the caller's events as CloudEvents (token in Authorization or access_token; resume with last_event_id)"},
};

static const char *const deliver_types[] = {
    "pl.notify.notification_created.v1", "pl.notify.notification_updated.v1", "pl.messaging.message_sent.v1",
    "pl.timeline.entries_added.v1",      "pl.commerce.order_updated.v1",      "pl.identity.session_revoked.v1",
    "pl.testkit.push.v1",                NULL};

static const consumer_def realtime_consumers[] = {
    /* effects only in kv, idempotent (ZADD of the same member; the gateways skip a republished id) */
    {.name = "deliver", .types = deliver_types, .handle = deliver_handle, .flags = CONSUMER_NO_INBOX,
     .flush = deliver_flush},
};

const service_def realtime_service = {
    .version = 1,
    .name = "realtime",
    .summary = "WebSocket gateway: a user's notifications, messages, timeline entries and orders, live",
    .stores = SERVICE_USES_SQL | SERVICE_USES_KV,
    .routes = realtime_routes,
    .nroutes = sizeof realtime_routes / sizeof realtime_routes[0],
    .config_keys = realtime_keys,
    .nconfig_keys = sizeof realtime_keys / sizeof realtime_keys[0],
    .start = realtime_start,
    .stop = realtime_stop,
    .consumers = realtime_consumers,
    .nconsumers = sizeof realtime_consumers / sizeof realtime_consumers[0],
};
