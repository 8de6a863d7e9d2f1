/*
 * bus_nats.c - the event bus on NATS JetStream (libnats), bus-level half:
 * connection, streams, publishing, dead letters and the parking lot, replay,
 * lag, and raw reads for `pulse events tail`. The consumer groups live in
 * nats_sub.c. Design and trade-offs: README.md in this directory.
 *
 * Layout on the server:
 *   PL_<CONTEXT>   one stream per context, subjects "pl.<context>.>", file
 *                  storage, limits retention (bus.retention_age/_max),
 *                  Nats-Msg-Id dedup. An event of type T with partition key K
 *                  is stored under the subject "T.<hash(K) % P>", where P is
 *                  fixed per stream when it is created (kept in its
 *                  description), so a consumer can select one partition with
 *                  a filter subject. Dead letters: "T.dlq.<p>".
 *   PULSE_DLQ      the parking lot: one record per dead letter under
 *                  "pulse.dlq.<group key>"; its id is the record's sequence.
 *   PULSE_REDRIVE  work queue of re-driven dead letters, "pulse.redrive.<group key>".
 *   PULSE_LEASES   KV bucket: group membership and partition leases.
 * With server.namespace set, every name above starts with "<ns>-" and every
 * subject with "ns_<ns>.", so deployments can share one server.
 */
#include "bus/nats/nats_internal.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/uuid.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct nb_pub {
    jsCtx *js;
    int kind; /* 0: on nc, 1: on bulk */
    pthread_mutex_t mu;
    int failed;
    natsStatus first_status;
    char error[200];
    nb_pub *next_idle, *next_all;
};

/* ---- small helpers --------------------------------------------------------------------- */

int64_t nb_mono_ms(void) { return time_mono_ns() / 1000000; }

int nb_fail(natsStatus s, jsErrCode jerr, pl_error *err, const char *what)
{
    int code;
    switch (s) {
    case NATS_TIMEOUT:
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NO_SERVER:
    case NATS_NO_RESPONDERS:
    case NATS_STALE_CONNECTION:
    case NATS_IO_ERROR:
    case NATS_SYS_ERROR:
        code = PL_EUNAVAILABLE;
        break;
    case NATS_NOT_FOUND:
        code = PL_ENOTFOUND;
        break;
    default:
        code = PL_EIO;
    }
    if (jerr == JSStreamNotFoundErr || jerr == JSConsumerNotFoundErr || jerr == JSNoMessageFoundErr)
        code = PL_ENOTFOUND;
    if (jerr == JSNotEnabledErr || jerr == JSNotEnabledForAccountErr)
        return err_set(err, PL_ECONFIG, "bus.url", "JetStream is not enabled on the NATS server (run nats-server -js)");
    const char *detail = nats_GetLastError(NULL);
    return err_set(err, code, NULL, "NATS %s: %s%s%s", what, natsStatus_GetText(s), detail && *detail ? ": " : "",
                   detail ? detail : "");
}

int nb_check_up(nbus *b, pl_error *err)
{
    if (natsConnection_Status(b->nc) == NATS_CONN_STATUS_CONNECTED &&
        natsConnection_Status(b->bulk) == NATS_CONN_STATUS_CONNECTED)
        return 0;
    return err_set(err, PL_EUNAVAILABLE, NULL, "NATS is not reachable (reconnecting)");
}

void nb_flush_bulk(nbus *b)
{
    natsConnection_FlushTimeout(b->bulk, NB_API_WAIT_MS);
}

void nb_group_key(const char *group, char *out, size_t size)
{
    uint32_t h = ce_partition_hash(group);
    size_t n = 0;
    char tmp[64];
    for (const char *p = group; *p && n < 48; p++)
        tmp[n++] = isalnum((unsigned char)*p) || *p == '-' || *p == '_' ? *p : '_';
    tmp[n] = '\0';
    snprintf(out, size, "%s-%08x", tmp, h);
}

bool nb_type_ctx(const char *type, char *ctx, size_t size)
{
    if (strncmp(type, "pl.", 3) != 0)
        return false;
    const char *s = type + 3, *e = strchr(s, '.');
    if (!e || e == s || (size_t)(e - s) >= size)
        return false;
    memcpy(ctx, s, (size_t)(e - s));
    ctx[e - s] = '\0';
    return true;
}

void nb_stream_name(const nbus *b, const char *ctx, char *out, size_t size)
{
    size_t n = (size_t)snprintf(out, size, "%s", b->events_prefix);
    for (const char *p = ctx; *p && n + 1 < size; p++)
        out[n++] = (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

int nb_stream_ctx(const nbus *b, const char *name, char *ctx, size_t size)
{
    size_t k = strlen(b->events_prefix);
    if (strncmp(name, b->events_prefix, k) != 0 || !name[k])
        return -1;
    size_t n = 0;
    for (const char *p = name + k; *p && n + 1 < size; p++)
        ctx[n++] = (char)tolower((unsigned char)*p);
    ctx[n] = '\0';
    return 0;
}

void nb_subject_type(const nbus *b, const char *subject, char *out, size_t size)
{
    size_t k = strlen(b->pre_subj);
    snprintf(out, size, "%s", strncmp(subject, b->pre_subj, k) == 0 ? subject + k : subject);
    char *dot = strrchr(out, '.');
    if (dot)
        *dot = '\0'; /* the partition token */
}

/* Tokens of an ack reply: $JS.ACK.<stream>.<consumer>.<dc>.<sseq>.<dseq>.<ts>.<pending>
 * (or the longer form with domain and account hash in front). */
bool nb_parse_ack(const char *reply, nb_meta *m)
{
    if (!reply || strncmp(reply, "$JS.ACK.", 8) != 0)
        return false;
    const char *tok[12];
    size_t len[12];
    int n = 0;
    const char *p = reply + 8;
    while (n < 12) {
        const char *d = strchr(p, '.');
        tok[n] = p;
        len[n] = d ? (size_t)(d - p) : strlen(p);
        n++;
        if (!d)
            break;
        p = d + 1;
    }
    int o;
    if (n == 7)
        o = 0;
    else if (n >= 9)
        o = 2;
    else
        return false;
    m->stream = tok[o];
    m->stream_len = len[o];
    m->consumer = tok[o + 1];
    m->consumer_len = len[o + 1];
    m->dc = (int)strtol(tok[o + 2], NULL, 10);
    m->sseq = strtoull(tok[o + 3], NULL, 10);
    m->dseq = strtoull(tok[o + 4], NULL, 10);
    m->ts = strtoll(tok[o + 5], NULL, 10);
    m->pending = strtoull(tok[o + 6], NULL, 10);
    return m->sseq > 0;
}

void nb_names_free(char **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static jsOptions api_opts(void)
{
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = NB_API_WAIT_MS;
    return o;
}

/* ---- streams ------------------------------------------------------------------------------ */

static int parts_of(const jsStreamInfo *si, int dflt)
{
    const char *d = si->Config && si->Config->Description ? strstr(si->Config->Description, "partitions=") : NULL;
    int p = d ? atoi(d + 11) : 0;
    return p >= 1 && p <= NB_MAX_PARTS ? p : dflt;
}

/* Gets a stream's info, creating it from cfg when absent (a concurrent creator wins quietly). */
static int ensure_stream(nbus *b, jsStreamConfig *cfg, bool create, jsStreamInfo **out, pl_error *err)
{
    jsOptions jo = api_opts();
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, b->js, cfg->Name, &jo, &jerr);
    if ((s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) && create) {
        jerr = 0;
        s = js_AddStream(&si, b->js, cfg, &jo, &jerr);
        if (s != NATS_OK && jerr == JSStreamNameExistErr) {
            jerr = 0;
            s = js_GetStreamInfo(&si, b->js, cfg->Name, &jo, &jerr);
        }
        if (s == NATS_OK)
            log_with(LOG_INFO, "bus stream created", LF_STR("stream", cfg->Name));
    }
    if (s != NATS_OK) {
        char what[128];
        snprintf(what, sizeof what, "stream %s", cfg->Name);
        return nb_fail(s, jerr, err, what);
    }
    *out = si;
    return 0;
}

int nb_stream_get(nbus *b, const char *ctx, bool create, nb_stream *out, pl_error *err)
{
    pthread_mutex_lock(&b->mu);
    for (size_t i = 0; i < b->nstreams; i++) {
        if (strcmp(b->streams[i].ctx, ctx) == 0) {
            *out = b->streams[i];
            pthread_mutex_unlock(&b->mu);
            return 0;
        }
    }
    pthread_mutex_unlock(&b->mu);

    nb_stream st = {0};
    snprintf(st.ctx, sizeof st.ctx, "%s", ctx);
    nb_stream_name(b, ctx, st.name, sizeof st.name);
    char subj[128], desc[160];
    snprintf(subj, sizeof subj, "%spl.%s.>", b->pre_subj, ctx);
    snprintf(desc, sizeof desc, "Pulse events of context %s; partitions=%d", ctx, b->o.partitions);
    const char *subjects[] = {subj};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = st.name;
    cfg.Description = desc;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Retention = js_LimitsPolicy;
    cfg.Storage = js_FileStorage;
    cfg.Discard = js_DiscardOld;
    cfg.MaxAge = b->o.retention_age_ms * 1000000;
    cfg.MaxMsgs = b->o.retention_max;
    cfg.Duplicates = (int64_t)NB_DUP_WINDOW_MS * 1000000;
    cfg.AllowDirect = true;
    jsStreamInfo *si = NULL;
    int rc = ensure_stream(b, &cfg, create, &si, err);
    if (rc)
        return rc;
    st.parts = parts_of(si, b->o.partitions);
    /* Retention follows the configuration of whoever publishes (operators change it there). */
    if (create && si->Config && (si->Config->MaxAge != cfg.MaxAge || si->Config->MaxMsgs != cfg.MaxMsgs)) {
        jsStreamConfig up = *si->Config;
        up.MaxAge = cfg.MaxAge;
        up.MaxMsgs = cfg.MaxMsgs;
        jsStreamInfo *si2 = NULL;
        jsErrCode jerr = 0;
        jsOptions jo = api_opts();
        if (js_UpdateStream(&si2, b->js, &up, &jo, &jerr) == NATS_OK)
            log_with(LOG_INFO, "bus stream retention updated", LF_STR("stream", st.name));
        jsStreamInfo_Destroy(si2);
    }
    jsStreamInfo_Destroy(si);

    pthread_mutex_lock(&b->mu);
    bool present = false;
    for (size_t i = 0; i < b->nstreams && !present; i++)
        present = strcmp(b->streams[i].ctx, ctx) == 0;
    if (!present) {
        if (b->nstreams == b->capstreams) {
            b->capstreams = b->capstreams ? b->capstreams * 2 : 8;
            b->streams = realloc(b->streams, b->capstreams * sizeof *b->streams);
            if (!b->streams)
                abort();
        }
        b->streams[b->nstreams++] = st;
    }
    pthread_mutex_unlock(&b->mu);
    *out = st;
    return 0;
}

void nb_stream_forget(nbus *b, const char *ctx)
{
    pthread_mutex_lock(&b->mu);
    for (size_t i = 0; i < b->nstreams; i++) {
        if (strcmp(b->streams[i].ctx, ctx) == 0) {
            b->streams[i] = b->streams[--b->nstreams];
            break;
        }
    }
    pthread_mutex_unlock(&b->mu);
}

int nb_stream_names(nbus *b, char ***names, int *n, pl_error *err)
{
    *names = NULL;
    *n = 0;
    jsStreamNamesList *list = NULL;
    jsErrCode jerr = 0;
    jsOptions jo = api_opts();
    natsStatus s = js_StreamNames(&list, b->js, &jo, &jerr);
    if (s == NATS_NOT_FOUND)
        return 0; /* no streams at all */
    if (s != NATS_OK)
        return nb_fail(s, jerr, err, "listing streams");
    char **out = calloc((size_t)list->Count + 1, sizeof *out);
    if (!out)
        abort();
    int k = 0;
    char ctx[64];
    for (int i = 0; i < list->Count; i++)
        if (nb_stream_ctx(b, list->List[i], ctx, sizeof ctx) == 0 && !(out[k++] = strdup(list->List[i])))
            abort();
    jsStreamNamesList_Destroy(list);
    *names = out;
    *n = k;
    return 0;
}

int nb_ensure_consumer(nbus *b, const char *stream, const char *name, const char *filter, const char *group,
                       int64_t ack_wait_ms, pl_error *err)
{
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = name;
    cc.Description = group;
    cc.DeliverPolicy = js_DeliverAll; /* a new group starts at the beginning of the log, as embedded */
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = ack_wait_ms * 1000000;
    cc.MaxDeliver = -1;               /* the driver counts deliveries and dead-letters itself */
    cc.FilterSubject = filter;
    cc.ReplayPolicy = js_ReplayInstant;
    cc.MaxAckPending = NB_MAX_ACK_PENDING;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    jsOptions jo = api_opts();
    natsStatus s = js_AddConsumer(&ci, b->js, stream, &cc, &jo, &jerr);
    jsConsumerInfo_Destroy(ci);
    if (s != NATS_OK) {
        char what[200];
        snprintf(what, sizeof what, "consumer %s on %s", name, stream);
        return nb_fail(s, jerr, err, what);
    }
    return 0;
}

/* ---- connection ------------------------------------------------------------------------------ */

/* Connection events are only logged: the closure is NULL on purpose, because
 * libnats may run these callbacks after the bus is freed. Subscriptions see
 * reconnects through the connection's statistics instead. */
static void on_disconnected(natsConnection *nc, void *ud)
{
    (void)ud;
    if (natsConnection_IsClosed(nc))
        return; /* our own close */
    log_with(LOG_WARN, "bus: NATS disconnected; reconnecting");
}

static void on_reconnected(natsConnection *nc, void *ud)
{
    (void)nc, (void)ud;
    log_with(LOG_INFO, "bus: NATS reconnected");
}

static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus s, void *ud)
{
    (void)nc, (void)sub, (void)ud;
    log_with(LOG_WARN, "bus: NATS asynchronous error", LF_STR("status", natsStatus_GetText(s)));
}

static int ensure_infra(nbus *b, pl_error *err)
{
    char dsubj[96], rsubj[96];
    snprintf(dsubj, sizeof dsubj, "%spulse.dlq.>", b->pre_subj);
    snprintf(rsubj, sizeof rsubj, "%spulse.redrive.>", b->pre_subj);
    const char *dlq_subj[] = {dsubj}, *rd_subj[] = {rsubj};
    jsStreamConfig cfg;
    jsStreamInfo *si = NULL;
    jsStreamConfig_Init(&cfg);
    cfg.Name = b->dlq_stream;
    cfg.Description = "Pulse dead letters (the parking lot): one record per dead letter";
    cfg.Subjects = dlq_subj;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.AllowDirect = true;
    cfg.Duplicates = (int64_t)NB_DUP_WINDOW_MS * 1000000;
    int rc = ensure_stream(b, &cfg, true, &si, err);
    jsStreamInfo_Destroy(si);
    if (rc)
        return rc;
    jsStreamConfig_Init(&cfg);
    cfg.Name = b->redrive_stream;
    cfg.Description = "Pulse dead letters re-driven to their consumer group";
    cfg.Subjects = rd_subj;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Retention = js_WorkQueuePolicy;
    cfg.Duplicates = (int64_t)NB_DUP_WINDOW_MS * 1000000;
    si = NULL;
    if ((rc = ensure_stream(b, &cfg, true, &si, err)))
        return rc;
    jsStreamInfo_Destroy(si);

    natsStatus s = js_KeyValue(&b->kv, b->js, b->lease_bucket);
    if (s == NATS_NOT_FOUND) {
        kvConfig kc;
        kvConfig_Init(&kc);
        kc.Bucket = b->lease_bucket;
        kc.Description = "Pulse consumer groups: members and partition leases";
        kc.History = 1;
        kc.StorageType = js_FileStorage;
        s = js_CreateKeyValue(&b->kv, b->js, &kc);
        if (s != NATS_OK) /* created concurrently */
            s = js_KeyValue(&b->kv, b->js, b->lease_bucket);
    }
    return s == NATS_OK ? 0 : nb_fail(s, 0, err, "lease bucket");
}

static void x_close(void *h);

/* Two connections, because libnats either writes every message at once
 * (SendAsap: a syscall per message) or leaves it to a flusher thread that waits
 * a millisecond to gather more. Round trips (pulls, API calls, leases) want the
 * first (shared/TARGETS.md); publishing batches and acking thousands of
 * messages a second want the second. */
static natsStatus connect_one(const char *url, const char *name, bool asap, natsConnection **out)
{
    natsOptions *opts = NULL;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(opts, url);
    if (s == NATS_OK) {
        natsOptions_SetName(opts, name);
        natsOptions_SetSendAsap(opts, asap);
        natsOptions_SetTimeout(opts, 2000);
        natsOptions_SetMaxReconnect(opts, -1);
        natsOptions_SetReconnectWait(opts, 250);
        natsOptions_SetReconnectJitter(opts, 100, 1000);
        natsOptions_SetPingInterval(opts, 2000);
        natsOptions_SetMaxPingsOut(opts, 3);
        natsOptions_SetDisconnectedCB(opts, on_disconnected, NULL);
        natsOptions_SetReconnectedCB(opts, on_reconnected, NULL);
        natsOptions_SetErrorHandler(opts, on_async_error, NULL);
        s = natsConnection_Connect(out, opts);
    }
    natsOptions_Destroy(opts);
    return s;
}

static int x_open(const char *url, const bus_options *o, void **out, pl_error *err)
{
    nbus *b = calloc(1, sizeof *b);
    if (!b)
        abort();
    b->o = *o;
    if (b->o.partitions <= 0)
        b->o.partitions = 4;
    if (b->o.partitions > NB_MAX_PARTS)
        b->o.partitions = NB_MAX_PARTS;
    if (b->o.retention_age_ms <= 0)
        b->o.retention_age_ms = 7LL * 86400000;
    if (b->o.retention_max <= 0)
        b->o.retention_max = 10000000;
    const char *ns = o->ns ? o->ns : "";
    if (strlen(ns) > 24 || strspn(ns, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(ns)) {
        free(b);
        return err_set(err, PL_ECONFIG, "namespace", "server.namespace must be up to 24 of [a-z0-9_], got \"%s\"", ns);
    }
    if (*ns) {
        snprintf(b->pre_name, sizeof b->pre_name, "%s-", ns);
        snprintf(b->pre_subj, sizeof b->pre_subj, "ns_%s.", ns);
    }
    snprintf(b->events_prefix, sizeof b->events_prefix, "%sPL_", b->pre_name);
    snprintf(b->dlq_stream, sizeof b->dlq_stream, "%sPULSE_DLQ", b->pre_name);
    snprintf(b->redrive_stream, sizeof b->redrive_stream, "%sPULSE_REDRIVE", b->pre_name);
    snprintf(b->lease_bucket, sizeof b->lease_bucket, "%sPULSE_LEASES", b->pre_name);
    b->o.ns = NULL; /* borrowed: not kept */
    pthread_mutex_init(&b->mu, NULL);
    natsStatus s = connect_one(url, "pulse", true, &b->nc);
    if (s == NATS_OK)
        s = connect_one(url, "pulse-bulk", false, &b->bulk);
    if (s != NATS_OK) {
        int rc = nb_fail(s, 0, err, "connect");
        natsConnection_Destroy(b->nc);
        pthread_mutex_destroy(&b->mu);
        free(b);
        return rc;
    }
    jsOptions jo = api_opts();
    s = natsConnection_JetStream(&b->js, b->nc, &jo);
    int rc = s == NATS_OK ? ensure_infra(b, err) : nb_fail(s, 0, err, "JetStream context");
    if (rc) {
        x_close(b);
        return rc;
    }
    *out = b;
    return 0;
}

static void reader_destroy(nb_reader *r);

static void x_close(void *h)
{
    nbus *b = h;
    reader_destroy(b->reader);
    for (nb_pub *p = b->all_pubs, *next; p; p = next) {
        next = p->next_all;
        jsCtx_Destroy(p->js);
        pthread_mutex_destroy(&p->mu);
        free(p);
    }
    kvStore_Destroy(b->kv);
    jsCtx_Destroy(b->js);
    natsConnection_Close(b->bulk);
    natsConnection_Destroy(b->bulk);
    natsConnection_Close(b->nc);
    natsConnection_Destroy(b->nc);
    pthread_mutex_destroy(&b->mu);
    free(b->streams);
    free(b);
}

static int x_ping(void *h, pl_error *err)
{
    nbus *b = h;
    int rc = nb_check_up(b, err);
    if (rc)
        return rc;
    natsStatus s = natsConnection_FlushTimeout(b->nc, 1000);
    if (s == NATS_OK)
        s = natsConnection_FlushTimeout(b->bulk, 1000);
    return s == NATS_OK ? 0 : nb_fail(s, 0, err, "ping");
}

/* ---- publish --------------------------------------------------------------------------------- */

static void on_pub_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js, (void)pa;
    nb_pub *p = closure;
    if (pae) {
        pthread_mutex_lock(&p->mu);
        if (!p->failed++) {
            p->first_status = pae->Err;
            snprintf(p->error, sizeof p->error, "%s", pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err));
        }
        pthread_mutex_unlock(&p->mu);
    }
    natsMsg_Destroy(msg);
}

/* A publisher (its own JetStream context, so its acks and errors are its own)
 * for one batch at a time; publishers are pooled per bus and connection. */
static nb_pub *pub_take(nbus *b, int kind, pl_error *err)
{
    pthread_mutex_lock(&b->mu);
    nb_pub *p = b->idle_pubs[kind];
    if (p)
        b->idle_pubs[kind] = p->next_idle;
    pthread_mutex_unlock(&b->mu);
    if (p)
        return p;
    p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->kind = kind;
    pthread_mutex_init(&p->mu, NULL);
    jsOptions jo = api_opts();
    jo.PublishAsync.MaxPending = NB_PUB_MAX_PENDING;
    jo.PublishAsync.StallWait = NB_PUB_WAIT_MS;
    jo.PublishAsync.AckHandler = on_pub_ack;
    jo.PublishAsync.AckHandlerClosure = p;
    natsStatus s = natsConnection_JetStream(&p->js, kind ? b->bulk : b->nc, &jo);
    if (s != NATS_OK) {
        nb_fail(s, 0, err, "JetStream context");
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    pthread_mutex_lock(&b->mu);
    p->next_all = b->all_pubs;
    b->all_pubs = p;
    pthread_mutex_unlock(&b->mu);
    return p;
}

static void pub_give(nbus *b, nb_pub *p)
{
    pthread_mutex_lock(&b->mu);
    p->next_idle = b->idle_pubs[p->kind];
    b->idle_pubs[p->kind] = p;
    pthread_mutex_unlock(&b->mu);
}

/* The batch goes out asynchronously with at most NB_PUB_MAX_PENDING in flight,
 * then every publish must be confirmed before we return 0: the outbox relay
 * deletes its rows only then. On one connection JetStream stores the batch in
 * order. A failure leaves a prefix stored; the relay's retry of the whole
 * batch is deduplicated by Nats-Msg-Id. */
static int x_publish(void *h, const bus_out *m, size_t n, pl_error *err)
{
    nbus *b = h;
    int rc = nb_check_up(b, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        if (!ce_type_valid(m[i].type, true))
            return err_set(err, PL_EINVAL, "type", "event type must match pl.<context>.<event>.v<N>, got \"%s\"",
                           m[i].type);
    /* a few messages: written at once (the relay of a quiet service, latency
     * counts); many: buffered and flushed together (throughput counts) */
    nb_pub *p = pub_take(b, n > NB_SMALL, err);
    if (!p)
        return PL_EUNAVAILABLE;
    pthread_mutex_lock(&p->mu);
    p->failed = 0;
    p->error[0] = '\0';
    pthread_mutex_unlock(&p->mu);

    nb_stream st = {0};
    natsStatus s = NATS_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        char ctx[64], subject[CE_TYPE_MAX + 64];
        nb_type_ctx(m[i].type, ctx, sizeof ctx);
        if (strcmp(ctx, st.ctx) != 0 && (rc = nb_stream_get(b, ctx, true, &st, err)))
            break;
        snprintf(subject, sizeof subject, "%s%s.%u", b->pre_subj, m[i].type,
                 ce_partition_hash(m[i].partitionkey ? m[i].partitionkey : "") % (uint32_t)st.parts);
        natsMsg *msg = NULL;
        jsPubOptions po; /* no per-message MaxWait: the batch has one deadline, below */
        jsPubOptions_Init(&po);
        po.MsgId = m[i].id;
        s = natsMsg_Create(&msg, subject, NULL, m[i].body, (int)m[i].body_len);
        if (s == NATS_OK)
            s = js_PublishMsgAsync(p->js, &msg, &po);
        natsMsg_Destroy(msg); /* NULL once the library owns it */
        if (s != NATS_OK)
            rc = nb_fail(s, 0, err, "publish");
    }
    /* out now rather than after the flusher's pause; then wait, even after a
     * failure: the publisher is reused, its batch must be over */
    if (p->kind)
        natsConnection_FlushTimeout(b->bulk, NB_PUB_WAIT_MS);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = NB_PUB_WAIT_MS;
    s = js_PublishAsyncComplete(p->js, &po);
    if (s != NATS_OK) {
        natsMsgList pending = {0};
        if (js_PublishAsyncGetPendingList(&pending, p->js) == NATS_OK)
            natsMsgList_Destroy(&pending);
        if (!rc)
            rc = err_set(err, PL_EUNAVAILABLE, NULL, "NATS publish: not confirmed within %d ms", NB_PUB_WAIT_MS);
    }
    pthread_mutex_lock(&p->mu);
    if (!rc && p->failed) {
        bool down = p->first_status == NATS_TIMEOUT || p->first_status == NATS_NO_RESPONDERS;
        rc = err_set(err, down ? PL_EUNAVAILABLE : PL_EIO, NULL, "NATS publish: %d of %zu failed: %s", p->failed, n,
                     p->error);
    }
    pthread_mutex_unlock(&p->mu);
    pub_give(b, p);
    if (rc && st.ctx[0])
        nb_stream_forget(b, st.ctx); /* the stream may be gone: look again next time */
    return rc;
}

/* ---- dead letters ---------------------------------------------------------------------------- */

static int publish_sync(nbus *b, const char *subject, const char *msg_id, const char *body, size_t len,
                        pl_error *err)
{
    natsMsg *msg = NULL;
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = NB_API_WAIT_MS;
    po.MsgId = msg_id;
    natsStatus s = natsMsg_Create(&msg, subject, NULL, body, (int)len);
    if (s == NATS_OK)
        s = js_PublishMsg(&pa, b->js, msg, &po, &jerr);
    natsMsg_Destroy(msg);
    jsPubAck_Destroy(pa);
    return s == NATS_OK ? 0 : nb_fail(s, jerr, err, "publish");
}

int nb_dead_letter(nbus *b, const char *group, const char *stream, int parts, const char *type, const char *event_id,
                   uint64_t seq, const char *body, size_t body_len, int deliveries, const char *error,
                   uint64_t redrive_seq, pl_error *err)
{
    int64_t now = time_now_ms();
    char gkey[96];
    nb_group_key(group, gkey, sizeof gkey);

    /* 1. "<type>.dlq" into the event's own stream, the same body as the embedded engine */
    json_error_t je;
    json_t *orig = json_loadb(body, body_len, 0, &je);
    cloudevent dlq;
    memset(&dlq, 0, sizeof dlq);
    uuid7_new(dlq.id);
    snprintf(dlq.source, sizeof dlq.source, "/pulse/bus");
    snprintf(dlq.type, sizeof dlq.type, "%s.dlq", type);
    snprintf(dlq.subject, sizeof dlq.subject, "%s", event_id);
    snprintf(dlq.partitionkey, sizeof dlq.partitionkey, "%s", event_id);
    time_rfc3339(now, dlq.time, sizeof dlq.time);
    dlq.data = json_pack("{s:o, s:s, s:i, s:s, s:I}", "event", orig ? orig : json_null(), "error", error ? error : "",
                         "deliveries", deliveries, "consumer", group, "seq", (json_int_t)seq);
    char *ev = ce_encode(&dlq);
    char subject[CE_TYPE_MAX + 80];
    snprintf(subject, sizeof subject, "%s%s.%u", b->pre_subj, dlq.type,
             ce_partition_hash(event_id) % (uint32_t)(parts > 0 ? parts : 1));
    int rc = publish_sync(b, subject, dlq.id, ev, strlen(ev), err);
    free(ev);
    ce_clear(&dlq);
    if (rc)
        return rc;

    /* 2. the parking-lot record; its msg id makes a repeat (crash before the
     * original was settled) a no-op inside the dedup window */
    json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:I, s:i, s:s, s:I}", "group", group, "type", type, "event_id",
                            event_id, "stream", stream, "seq", (json_int_t)seq, "deliveries", deliveries, "error",
                            error ? error : "", "dead_ms", (json_int_t)now);
    char *rb = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    char rsubj[160], rid[200];
    snprintf(rsubj, sizeof rsubj, "%spulse.dlq.%s", b->pre_subj, gkey);
    snprintf(rid, sizeof rid, "%s.%s.%llu.%llu", gkey, stream, (unsigned long long)seq, (unsigned long long)redrive_seq);
    rc = publish_sync(b, rsubj, rid, rb, strlen(rb), err);
    free(rb);
    if (!rc)
        log_with(LOG_WARN, "dead-lettered", LF_STR("consumer", group), LF_STR("type", type), LF_STR("event_id", event_id),
                 LF_INT("deliveries", deliveries), LF_STR("error", error ? error : ""));
    return rc;
}

static int dead_parse(natsMsg *msg, bus_dead *d)
{
    json_error_t je;
    json_t *j = json_loadb(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg), 0, &je);
    if (!j)
        return -1;
    memset(d, 0, sizeof *d);
    d->id = (int64_t)natsMsg_GetSequence(msg);
    const char *s;
    if ((s = json_string_value(json_object_get(j, "group"))))
        snprintf(d->group, sizeof d->group, "%s", s);
    if ((s = json_string_value(json_object_get(j, "type"))))
        snprintf(d->type, sizeof d->type, "%s", s);
    if ((s = json_string_value(json_object_get(j, "event_id"))))
        snprintf(d->event_id, sizeof d->event_id, "%s", s);
    if ((s = json_string_value(json_object_get(j, "error"))))
        snprintf(d->error, sizeof d->error, "%s", s);
    d->seq = (uint64_t)json_integer_value(json_object_get(j, "seq"));
    d->deliveries = (int)json_integer_value(json_object_get(j, "deliveries"));
    time_rfc3339(json_integer_value(json_object_get(j, "dead_ms")), d->dead_at, sizeof d->dead_at);
    json_decref(j);
    return 0;
}

/* Walks the parking lot in id order (direct gets skip the holes left by drops). */
static int dead_walk(nbus *b, int (*fn)(void *ud, natsMsg *msg), void *ud, pl_error *err)
{
    jsOptions jo = api_opts();
    uint64_t seq = 1;
    char all[96];
    snprintf(all, sizeof all, "%spulse.dlq.>", b->pre_subj);
    for (;;) {
        natsMsg *msg = NULL;
        jsDirectGetMsgOptions dg;
        jsDirectGetMsgOptions_Init(&dg);
        dg.Sequence = seq;
        dg.NextBySubject = all;
        natsStatus s = js_DirectGetMsg(&msg, b->js, b->dlq_stream, &jo, &dg);
        if (s == NATS_NOT_FOUND)
            return 0;
        if (s != NATS_OK)
            return nb_fail(s, 0, err, "reading dead letters");
        seq = natsMsg_GetSequence(msg) + 1;
        int rc = fn(ud, msg);
        natsMsg_Destroy(msg);
        if (rc)
            return rc;
    }
}

typedef struct {
    bus_dead *v;
    size_t n, cap;
} dead_vec;

static int collect_dead(void *ud, natsMsg *msg)
{
    dead_vec *dv = ud;
    if (dv->n == dv->cap) {
        dv->cap = dv->cap ? dv->cap * 2 : 16;
        dv->v = realloc(dv->v, dv->cap * sizeof *dv->v);
        if (!dv->v)
            abort();
    }
    if (dead_parse(msg, &dv->v[dv->n]) == 0)
        dv->n++;
    return 0;
}

static int x_dead_list(void *h, bus_dead **out, size_t *n, pl_error *err)
{
    nbus *b = h;
    dead_vec dv = {0};
    int rc = nb_check_up(b, err);
    if (!rc)
        rc = dead_walk(b, collect_dead, &dv, err);
    if (rc) {
        free(dv.v);
        dv.v = NULL;
        dv.n = 0;
    }
    *out = dv.v;
    *n = dv.n;
    return rc;
}

/* Moves one parking-lot record to its group's redrive queue. */
static int redrive_one(nbus *b, natsMsg *rec, pl_error *err)
{
    bus_dead d;
    if (dead_parse(rec, &d))
        return err_set(err, PL_EIO, NULL, "dead letter %llu is not a Pulse record",
                       (unsigned long long)natsMsg_GetSequence(rec));
    char gkey[96], subj[160], id[64];
    nb_group_key(d.group, gkey, sizeof gkey);
    snprintf(subj, sizeof subj, "%spulse.redrive.%s", b->pre_subj, gkey);
    snprintf(id, sizeof id, "redrive.%lld", (long long)d.id);
    int rc = publish_sync(b, subj, id, natsMsg_GetData(rec), (size_t)natsMsg_GetDataLength(rec), err);
    if (rc)
        return rc;
    jsErrCode jerr = 0;
    jsOptions jo = api_opts();
    natsStatus s = js_DeleteMsg(b->js, b->dlq_stream, (uint64_t)d.id, &jo, &jerr);
    return s == NATS_OK ? 0 : nb_fail(s, jerr, err, "deleting a re-driven dead letter");
}

typedef struct {
    nbus *b;
    int count;
    pl_error *err;
} retry_ctx;

static int retry_each(void *ud, natsMsg *msg)
{
    retry_ctx *rc = ud;
    int r = redrive_one(rc->b, msg, rc->err);
    if (!r)
        rc->count++;
    return r;
}

static int x_dead_retry(void *h, int64_t id, int *count, pl_error *err)
{
    nbus *b = h;
    *count = 0;
    int rc = nb_check_up(b, err);
    if (rc)
        return rc;
    if (id == 0) {
        retry_ctx c = {b, 0, err};
        rc = dead_walk(b, retry_each, &c, err);
        *count = c.count;
        return rc;
    }
    natsMsg *msg = NULL;
    jsErrCode jerr = 0;
    jsOptions jo = api_opts();
    natsStatus s = js_GetMsg(&msg, b->js, b->dlq_stream, (uint64_t)id, &jo, &jerr);
    if (s != NATS_OK) {
        rc = nb_fail(s, jerr, err, "reading a dead letter");
        return rc == PL_ENOTFOUND ? err_set(err, PL_ENOTFOUND, "id", "no dead letter %lld", (long long)id) : rc;
    }
    rc = redrive_one(b, msg, err);
    natsMsg_Destroy(msg);
    if (!rc)
        *count = 1;
    return rc;
}

static int x_dead_drop(void *h, int64_t id, pl_error *err)
{
    nbus *b = h;
    int rc = nb_check_up(b, err);
    if (rc)
        return rc;
    jsErrCode jerr = 0;
    jsOptions jo = api_opts();
    natsStatus s = id > 0 ? js_DeleteMsg(b->js, b->dlq_stream, (uint64_t)id, &jo, &jerr) : NATS_NOT_FOUND;
    if (s == NATS_OK)
        return 0;
    rc = nb_fail(s, jerr, err, "dropping a dead letter");
    /* JetStream answers a missing sequence with a generic "no message found" error */
    if (rc == PL_ENOTFOUND || rc == PL_EIO)
        return err_set(err, PL_ENOTFOUND, "id", "no dead letter %lld", (long long)id);
    return rc;
}

static int x_dead_count(void *h, int64_t *n, pl_error *err)
{
    nbus *b = h;
    *n = 0;
    int rc = nb_check_up(b, err);
    if (rc)
        return rc;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    jsOptions jo = api_opts();
    natsStatus s = js_GetStreamInfo(&si, b->js, b->dlq_stream, &jo, &jerr);
    if (s != NATS_OK)
        return nb_fail(s, jerr, err, "dead letter count");
    *n = (int64_t)si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return 0;
}

/* ---- replay and lag ----------------------------------------------------------------------------- */

/* True when `name` is one of the group's lane consumers ("<gkey>-p<N>" or "<gkey>-dlq-p<N>"). */
static bool group_consumer(const char *name, const char *gkey)
{
    size_t k = strlen(gkey);
    if (strncmp(name, gkey, k) != 0)
        return false;
    const char *r = name + k;
    if (strncmp(r, "-dlq", 4) == 0)
        r += 4;
    if (strncmp(r, "-p", 2) != 0 || !r[2])
        return false;
    for (r += 2; *r; r++)
        if (!isdigit((unsigned char)*r))
            return false;
    return true;
}

/* Every lane consumer of the group is deleted and created again with the same
 * configuration: JetStream 2.9 cannot move a durable consumer back, and
 * "deliver all" from a fresh consumer is exactly a replay from the start.
 * Running instances notice by the restarted delivery sequence (nats_sub.c). */
static int x_reset(void *h, const char *group, pl_error *err)
{
    nbus *b = h;
    int rc = nb_check_up(b, err);
    if (rc)
        return rc;
    char gkey[96];
    nb_group_key(group, gkey, sizeof gkey);
    char **names;
    int nn;
    if ((rc = nb_stream_names(b, &names, &nn, err)))
        return rc;
    jsOptions jo = api_opts();
    for (int i = 0; i < nn && !rc; i++) {
        jsConsumerInfoList *list = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_Consumers(&list, b->js, names[i], &jo, &jerr);
        if (s == NATS_NOT_FOUND)
            continue;
        if (s != NATS_OK) {
            rc = nb_fail(s, jerr, err, "listing consumers");
            break;
        }
        for (int c = 0; c < list->Count && !rc; c++) {
            jsConsumerInfo *ci = list->List[c];
            if (!ci->Config || !group_consumer(ci->Name, gkey))
                continue;
            jsConsumerConfig cfg = *ci->Config;
            cfg.DeliverPolicy = js_DeliverAll;
            cfg.OptStartSeq = 0;
            cfg.OptStartTime = 0;
            jerr = 0;
            s = js_DeleteConsumer(b->js, names[i], ci->Name, &jo, &jerr);
            if (s != NATS_OK && jerr != JSConsumerNotFoundErr) {
                rc = nb_fail(s, jerr, err, "deleting a consumer for replay");
                break;
            }
            jsConsumerInfo *nci = NULL;
            jerr = 0;
            s = js_AddConsumer(&nci, b->js, names[i], &cfg, &jo, &jerr);
            jsConsumerInfo_Destroy(nci);
            if (s != NATS_OK)
                rc = nb_fail(s, jerr, err, "re-creating a consumer for replay");
        }
        jsConsumerInfoList_Destroy(list);
    }
    nb_names_free(names, nn);
    if (!rc) { /* pending re-drives belong to the old position, as embedded */
        char subj[160];
        snprintf(subj, sizeof subj, "%spulse.redrive.%s", b->pre_subj, gkey);
        jo.Stream.Purge.Subject = subj;
        jsErrCode jerr = 0;
        natsStatus s = js_PurgeStream(b->js, b->redrive_stream, &jo, &jerr);
        if (s != NATS_OK)
            rc = nb_fail(s, jerr, err, "purging re-drives");
    }
    if (!rc)
        log_with(LOG_INFO, "bus group reset to the start of the log", LF_STR("group", group));
    return rc;
}

/* Lag: messages the group's consumers have not had acknowledged yet. */
static int x_lag(void *h, const char *group, int64_t *lag, pl_error *err)
{
    nbus *b = h;
    *lag = 0;
    int rc = nb_check_up(b, err);
    if (rc)
        return rc;
    char gkey[96];
    nb_group_key(group, gkey, sizeof gkey);
    char **names;
    int nn;
    if ((rc = nb_stream_names(b, &names, &nn, err)))
        return rc;
    jsOptions jo = api_opts();
    for (int i = 0; i < nn && !rc; i++) {
        jsConsumerInfoList *list = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_Consumers(&list, b->js, names[i], &jo, &jerr);
        if (s == NATS_NOT_FOUND)
            continue;
        if (s != NATS_OK) {
            rc = nb_fail(s, jerr, err, "consumer lag");
            break;
        }
        for (int c = 0; c < list->Count; c++)
            if (group_consumer(list->List[c]->Name, gkey))
                *lag += (int64_t)list->List[c]->NumPending + list->List[c]->NumAckPending;
        jsConsumerInfoList_Destroy(list);
    }
    nb_names_free(names, nn);
    return rc;
}

/* The head is a time, not a sequence: there is one sequence per stream, and
 * the timestamps JetStream gives every message are the one order they share
 * (nanoseconds since the epoch). bus_read takes the same unit. */
static int x_head(void *h, uint64_t *seq, pl_error *err)
{
    nbus *b = h;
    *seq = 0;
    int rc = nb_check_up(b, err);
    if (rc)
        return rc;
    jsStreamInfoList *list = NULL;
    jsErrCode jerr = 0;
    jsOptions jo = api_opts();
    natsStatus s = js_Streams(&list, b->js, &jo, &jerr);
    if (s == NATS_NOT_FOUND)
        return 0;
    if (s != NATS_OK)
        return nb_fail(s, jerr, err, "listing streams");
    for (int i = 0; i < list->Count; i++) {
        jsStreamInfo *si = list->List[i];
        char ctx[64];
        if (si->Config && si->Config->Name && nb_stream_ctx(b, si->Config->Name, ctx, sizeof ctx) == 0 &&
            si->State.LastSeq &&
            (uint64_t)si->State.LastTime > *seq)
            *seq = (uint64_t)si->State.LastTime;
    }
    jsStreamInfoList_Destroy(list);
    return 0;
}

/* ---- raw reads (tail) ------------------------------------------------------------------------- */

/* One ordered (ephemeral, flow-controlled) consumer per context stream feeds a
 * shared queue; each read hands out what arrived, sorted by timestamp. Within a
 * context that is the log order; across contexts it is the order of the
 * server's timestamps among the events that had arrived when the read looked. */
typedef struct rsub {
    char name[80];
    natsSubscription *sub;
} rsub;

struct nb_reader {
    nbus *b;
    uint64_t cursor;
    rsub *subs;
    int nsubs;
    int64_t next_discovery;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    natsMsg **q;
    size_t n, cap;
};

static void on_read(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc, (void)sub;
    nb_reader *r = closure;
    pthread_mutex_lock(&r->mu);
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 256;
        r->q = realloc(r->q, r->cap * sizeof *r->q);
        if (!r->q)
            abort();
    }
    r->q[r->n++] = msg;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void reader_destroy(nb_reader *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->nsubs; i++) {
        natsSubscription_Drain(r->subs[i].sub);
        natsSubscription_WaitForDrainCompletion(r->subs[i].sub, 1000);
        natsSubscription_Destroy(r->subs[i].sub);
    }
    free(r->subs);
    for (size_t i = 0; i < r->n; i++)
        natsMsg_Destroy(r->q[i]);
    free(r->q);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

/* Subscribes to the context streams not followed yet, from just after `after`. */
static int reader_discover(nb_reader *r, uint64_t after, pl_error *err)
{
    char **names;
    int nn;
    int rc = nb_stream_names(r->b, &names, &nn, err);
    if (rc)
        return rc;
    for (int i = 0; i < nn && !rc; i++) {
        bool have = false;
        for (int k = 0; k < r->nsubs && !have; k++)
            have = strcmp(r->subs[k].name, names[i]) == 0;
        char ctx[64], subj[128];
        if (have || nb_stream_ctx(r->b, names[i], ctx, sizeof ctx))
            continue;
        snprintf(subj, sizeof subj, "%spl.%s.>", r->b->pre_subj, ctx);
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = names[i];
        so.Ordered = true;
        if (after) {
            so.Config.DeliverPolicy = js_DeliverByStartTime;
            so.Config.OptStartTime = (int64_t)after + 1;
        } else {
            so.Config.DeliverPolicy = js_DeliverAll;
        }
        jsOptions jo = api_opts();
        natsSubscription *sub = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_Subscribe(&sub, r->b->js, subj, on_read, r, &jo, &so, &jerr);
        if (s != NATS_OK) {
            rc = nb_fail(s, jerr, err, "following a stream");
            break;
        }
        natsSubscription_SetPendingLimits(sub, -1, -1);
        r->subs = realloc(r->subs, (size_t)(r->nsubs + 1) * sizeof *r->subs);
        if (!r->subs)
            abort();
        snprintf(r->subs[r->nsubs].name, sizeof r->subs[r->nsubs].name, "%s", names[i]);
        r->subs[r->nsubs++].sub = sub;
    }
    nb_names_free(names, nn);
    r->next_discovery = nb_mono_ms() + 2000;
    return rc;
}

static int64_t msg_ts(natsMsg *m)
{
    nb_meta meta;
    return nb_parse_ack(natsMsg_GetReply(m), &meta) ? meta.ts : 0;
}

static int cmp_ts(const void *a, const void *b)
{
    int64_t x = msg_ts(*(natsMsg *const *)a), y = msg_ts(*(natsMsg *const *)b);
    return (x > y) - (x < y);
}

static int x_read(void *h, uint64_t after, size_t max, int timeout_ms,
                  int (*fn)(void *ud, uint64_t seq, const char *type, const char *body, size_t len), void *ud,
                  uint64_t *last, pl_error *err)
{
    nbus *b = h;
    *last = after;
    int rc = nb_check_up(b, err);
    if (rc)
        return rc;
    pthread_mutex_lock(&b->mu);
    nb_reader *r = b->reader;
    b->reader = NULL; /* ours while we read; one reader per bus */
    pthread_mutex_unlock(&b->mu);
    if (r && r->cursor != after) {
        reader_destroy(r);
        r = NULL;
    }
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            abort();
        r->b = b;
        r->cursor = after;
        pthread_mutex_init(&r->mu, NULL);
        pthread_cond_init(&r->cv, NULL);
        if ((rc = reader_discover(r, after, err))) {
            reader_destroy(r);
            return rc;
        }
    } else if (nb_mono_ms() >= r->next_discovery && (rc = reader_discover(r, after, err))) {
        reader_destroy(r);
        return rc;
    }

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = ts.tv_nsec + (int64_t)timeout_ms * 1000000;
    ts.tv_sec += ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    pthread_mutex_lock(&r->mu);
    while (r->n == 0)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) != 0)
            break;
    if (r->n > 0 && r->nsubs > 1) { /* a moment for the other contexts' events of the same instant */
        pthread_mutex_unlock(&r->mu);
        usleep(2000);
        pthread_mutex_lock(&r->mu);
    }
    if (r->n > 1)
        qsort(r->q, r->n, sizeof *r->q, cmp_ts);
    size_t used = 0;
    int stop = 0;
    while (used < r->n && used < max && !stop) {
        natsMsg *m = r->q[used++];
        int64_t t = msg_ts(m);
        char type[CE_TYPE_MAX + 16];
        nb_subject_type(b, natsMsg_GetSubject(m), type, sizeof type);
        if ((uint64_t)t > *last)
            *last = (uint64_t)t;
        stop = fn(ud, (uint64_t)t, type, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
        natsMsg_Destroy(m);
    }
    if (used < r->n)
        memmove(r->q, r->q + used, (r->n - used) * sizeof *r->q);
    r->n -= used;
    pthread_mutex_unlock(&r->mu);
    r->cursor = *last;

    pthread_mutex_lock(&b->mu);
    nb_reader *other = b->reader;
    b->reader = r;
    pthread_mutex_unlock(&b->mu);
    reader_destroy(other);
    return 0;
}

static const char *const nats_schemes[] = {"nats://", NULL};

const bus_driver bus_nats_driver = {
    .version = 1,
    .name = "nats",
    .schemes = nats_schemes,
    .xOpen = x_open,
    .xClose = x_close,
    .xPing = x_ping,
    .xPublish = x_publish,
    .xSubscribe = nb_subscribe,
    .xUnsubscribe = nb_unsubscribe,
    .xFetch = nb_fetch,
    .xAck = nb_ack,
    .xNak = nb_nak,
    .xTerm = nb_term,
    .xReset = x_reset,
    .xLag = x_lag,
    .xHead = x_head,
    .xRead = x_read,
    .xDeadList = x_dead_list,
    .xDeadRetry = x_dead_retry,
    .xDeadDrop = x_dead_drop,
    .xDeadCount = x_dead_count,
};
