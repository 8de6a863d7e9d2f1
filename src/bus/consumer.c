/* consumer.c - the consumer thread: fetch, apply under the inbox, settle. */
#include "bus/consumer.h"
#include "core/log.h"
#include "core/timeutil.h"

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Retries while the bus or the store is away back off up to this: once the engine returns, work
 * resumes within about this long, however long the outage was (the target is 5 s). */
#define OUTAGE_RETRY_MAX_MS 1000

struct consumer {
    bus *bus;
    sql_db *db;
    const consumer_def *def;
    void *ctx;
    consumer_opts o;
    char service[64];
    char group[128];
    bus_sub *sub;
    pthread_t thread;
    atomic_bool stop;
    atomic_llong handled;
    int64_t next_prune;
};

enum { R_SKIP, R_ACK, R_NAK, R_TERM };

static void defaults(consumer_opts *o, const consumer_opts *in, const consumer_def *def)
{
    *o = in ? *in : (consumer_opts){0};
    if (o->batch <= 0)
        o->batch = 256;
    if (def->max_deliver > 0)
        o->max_deliver = def->max_deliver;
    if (o->max_deliver <= 0)
        o->max_deliver = 5;
    if (o->retry_base_ms <= 0)
        o->retry_base_ms = 100;
    if (o->retry_max_ms <= 0)
        o->retry_max_ms = 30000;
    if (o->inbox_keep_ms <= 0)
        o->inbox_keep_ms = 7LL * 86400000;
}

int64_t consumer_backoff_ms(const consumer_opts *o, int deliveries)
{
    int64_t d = o->retry_base_ms;
    for (int i = 1; i < deliveries && d < o->retry_max_ms; i++)
        d *= 2;
    if (d > o->retry_max_ms)
        d = o->retry_max_ms;
    /* full jitter on the upper half: [d/2, d] */
    return d / 2 + (int64_t)randombytes_uniform((uint32_t)(d / 2 + 1));
}

/* Runs the handler with the event's trace context in the log. */
static int run_handler(consumer *c, sql_tx *tx, const cloudevent *ev, pl_error *err)
{
    log_ctx_traceparent(ev->traceparent[0] ? ev->traceparent : NULL);
    char trace[33] = "";
    if (ev->traceparent[0])
        snprintf(trace, sizeof trace, "%.32s", ev->traceparent + 3);
    log_ctx_set(NULL, trace[0] ? trace : NULL);
    int rc = c->def->handle(c->ctx, tx, ev, err);
    log_ctx_set(NULL, NULL);
    log_ctx_traceparent(NULL);
    return rc;
}

/* Applies one event under a savepoint (tx NULL: CONSUMER_NO_INBOX, the handler alone): R_ACK,
 * R_NAK or R_TERM; msg gets the error; *ran says whether the handler ran and succeeded (an inbox
 * duplicate is acked without it). */
static int apply(consumer *c, sql_tx *tx, const bus_msg *m, char *msg, size_t msgsz, bool *ran)
{
    cloudevent ev;
    pl_error err = {0};
    *ran = false;
    if (ce_decode(m->body, m->body_len, &ev, &err)) {
        snprintf(msg, msgsz, "malformed event: %s", err.msg);
        return R_TERM;
    }
    int result = R_ACK;
    if (!tx) {
        int rc = run_handler(c, NULL, &ev, &err);
        if (rc) {
            snprintf(msg, msgsz, "%s", err.msg[0] ? err.msg : err_message(rc));
            result = rc == PL_EINVAL ? R_TERM : R_NAK;
        }
        *ran = rc == 0;
    } else {
        int64_t changes = 0;
        int rc = sql_exec(tx, "SAVEPOINT pulse_event", SQL_NOARGS, NULL, &err);
        if (!rc)
            rc = sql_exec(tx,
                          "INSERT INTO pulse_inbox (consumer, event_id, handled_ms) VALUES ($1, $2, $3)"
                          " ON CONFLICT DO NOTHING",
                          SQL_ARGS(SQL_TEXT(c->group), SQL_TEXT(ev.id), SQL_INT(time_now_ms())), &changes, &err);
        if (!rc && changes == 1) {
            rc = run_handler(c, tx, &ev, &err);
            *ran = rc == 0;
        }
        if (rc) {
            snprintf(msg, msgsz, "%s", err.msg[0] ? err.msg : err_message(rc));
            result = rc == PL_EINVAL ? R_TERM : R_NAK;
            sql_exec(tx, "ROLLBACK TO SAVEPOINT pulse_event", SQL_NOARGS, NULL, NULL);
        }
        if (sql_exec(tx, "RELEASE SAVEPOINT pulse_event", SQL_NOARGS, NULL, &err) && result == R_ACK) {
            snprintf(msg, msgsz, "%s", err.msg);
            result = R_NAK;
        }
    }
    if (result != R_ACK)
        log_with(LOG_WARN, "event handler failed", LF_STR("consumer", c->group), LF_STR("type", ev.type),
                 LF_STR("event_id", ev.id), LF_INT("delivery", m->deliveries), LF_STR("error", msg));
    ce_clear(&ev);
    return result;
}

/* Settles a batch in order; after a nak or term the partition's later messages come again, so
 * they are left alone (settling them would be a no-op anyway). */
static void settle(consumer *c, const bus_msg *msgs, size_t n, const int *result, char (*errors)[256])
{
    bool rewound[64] = {0};
    for (size_t i = 0; i < n; i++) {
        const bus_msg *m = &msgs[i];
        pl_error e = {0};
        int s = 0;
        if (rewound[m->partition & 63] && !m->redrive_id)
            continue;
        switch (result[i]) {
        case R_ACK: s = bus_ack(c->sub, m, &e); break;
        case R_NAK:
            s = bus_nak(c->sub, m, consumer_backoff_ms(&c->o, m->deliveries), errors[i], &e);
            rewound[m->partition & 63] = true;
            break;
        case R_TERM:
            s = bus_term(c->sub, m, errors[i], &e);
            rewound[m->partition & 63] = true;
            break;
        default: break;
        }
        if (s)
            log_with(LOG_WARN, "settling an event failed", LF_STR("consumer", c->group), LF_STR("detail", e.msg));
    }
}

/* Hands a batch that the store refused back to the bus (a delivery each), for a consumer that
 * stops before the store returns. */
static void give_back(consumer *c, const bus_msg *msgs, size_t n)
{
    int *result = calloc(n, sizeof *result);
    char (*errors)[256] = calloc(n, sizeof *errors);
    if (!result || !errors)
        abort();
    for (size_t i = 0; i < n; i++) {
        result[i] = R_NAK;
        snprintf(errors[i], sizeof errors[i], "the consumer stopped while its store was unavailable");
    }
    settle(c, msgs, n, result, errors);
    free(result);
    free(errors);
}

/* Applies a fetched batch in one transaction, then settles every message in order. Returns 0,
 * or PL_EUNAVAILABLE when the store could not take the batch at all (the transaction could not
 * begin, or failed while the store is unreachable): then nothing is settled and the caller tries
 * the same batch again. Those events are not at fault: a nak would count a delivery towards the
 * dead letters for every one of them, and leaving them unsettled while fetching on would let the
 * acks of later events pass them by. */
static int process(consumer *c, bus_msg *msgs, size_t n)
{
    int *result = calloc(n, sizeof *result);
    char (*errors)[256] = calloc(n, sizeof *errors);
    bool failed[64] = {0}; /* partitions with a failure in this batch */
    if (!result || !errors)
        abort();
    pl_error err = {0};
    sql_tx *tx = NULL;
    bool no_inbox = c->def->flags & CONSUMER_NO_INBOX;
    int rc = no_inbox ? 0 : sql_begin(c->db, SQL_TX_WRITE, &tx, &err);
    bool refused = rc != 0;
    int64_t ran = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        int p = msgs[i].partition & 63;
        if (failed[p] && !msgs[i].redrive_id) {
            result[i] = R_SKIP; /* comes again after the failed one, in order */
            continue;
        }
        bool did = false;
        result[i] = apply(c, tx, &msgs[i], errors[i], sizeof errors[i], &did);
        ran += did;
        if (did && !c->def->flush)
            atomic_fetch_add(&c->handled, 1);
        if (result[i] != R_ACK && !msgs[i].redrive_id)
            failed[p] = true;
    }
    bool flush_failed = false;
    if (!rc && ran && c->def->flush) {
        /* the batch's staged effects, in one go; failing, the batch was not applied */
        int frc = c->def->flush(c->ctx, tx, &err);
        if ((flush_failed = frc != 0)) {
            /* An engine that is away (the kv a flush writes to, say) is not the
             * events' fault, as for a commit: the same batch again, nothing
             * counted towards the dead letters. */
            bool away = frc == PL_EUNAVAILABLE || frc == PL_ETIMEOUT;
            log_with(LOG_WARN, "consumer flush failed", LF_STR("consumer", c->group), LF_STR("detail", err.msg),
                     LF_STR("then", away ? "the same batch again" : "the batch's applied events redelivered"));
            if (tx)
                sql_rollback(tx);
            if (away) {
                free(result);
                free(errors);
                return PL_EUNAVAILABLE;
            }
            for (size_t i = 0; i < n; i++)
                if (result[i] == R_ACK) {
                    result[i] = R_NAK;
                    snprintf(errors[i], sizeof errors[i], "flush: %s", err.msg);
                }
        } else if (no_inbox) {
            atomic_fetch_add(&c->handled, ran);
        }
    }
    if (!rc && tx && !flush_failed) {
        rc = sql_commit(tx, &err);
        /* a commit that failed because the store went away (mid-batch, every statement after
         * the lost connection fails too) is the store's failure, not the events' */
        refused = rc && (rc == PL_EUNAVAILABLE || rc == PL_ETIMEOUT || sql_ping(c->db, NULL) != 0);
        if (!rc && c->def->flush)
            atomic_fetch_add(&c->handled, ran);
    }
    if (rc)
        log_with(LOG_WARN, "consumer transaction failed", LF_STR("consumer", c->group), LF_STR("detail", err.msg),
                 LF_STR("then", refused ? "the same batch again" : "every event redelivered"));
    if (rc && !refused) { /* nothing was applied: every event comes again */
        for (size_t i = 0; i < n; i++) {
            result[i] = result[i] == R_SKIP ? R_SKIP : R_NAK;
            snprintf(errors[i], sizeof errors[i], "%s", err.msg);
        }
    }
    if (!refused)
        settle(c, msgs, n, result, errors);
    free(result);
    free(errors);
    return refused ? PL_EUNAVAILABLE : 0;
}

/* Sleeps up to ms, in slices, returning early once a stop is requested. */
static void nap(consumer *c, int64_t ms)
{
    while (ms > 0 && !atomic_load(&c->stop)) {
        int64_t d = ms > 50 ? 50 : ms;
        usleep((useconds_t)d * 1000);
        ms -= d;
    }
}

/* Processes a batch, trying it again with backoff while the store refuses it, until it is taken
 * or the consumer stops (then the batch goes back to the bus), or until deadline_ms (> 0) passes.
 * Returns 0 or PL_EUNAVAILABLE (the batch was given back). */
static int process_until_taken(consumer *c, bus_msg *msgs, size_t n, int64_t deadline_ms)
{
    int64_t backoff = 0;
    while (process(c, msgs, n) == PL_EUNAVAILABLE) {
        if (atomic_load(&c->stop) || (deadline_ms > 0 && time_now_ms() >= deadline_ms)) {
            give_back(c, msgs, n);
            return PL_EUNAVAILABLE;
        }
        backoff = backoff ? (backoff * 2 > OUTAGE_RETRY_MAX_MS ? OUTAGE_RETRY_MAX_MS : backoff * 2) : 50;
        nap(c, backoff);
    }
    return 0;
}

static void prune_inbox(consumer *c)
{
    if (c->def->flags & CONSUMER_NO_INBOX)
        return;
    int64_t now = time_now_ms();
    if (now < c->next_prune)
        return;
    c->next_prune = now + 600000;
    sql_tx *tx;
    if (sql_begin(c->db, SQL_TX_WRITE, &tx, NULL))
        return;
    if (sql_exec(tx, "DELETE FROM pulse_inbox WHERE consumer = $1 AND handled_ms < $2",
                 SQL_ARGS(SQL_TEXT(c->group), SQL_INT(now - c->o.inbox_keep_ms)), NULL, NULL))
        sql_rollback(tx);
    else
        sql_commit(tx, NULL);
}

static void *consumer_main(void *arg)
{
    consumer *c = arg;
    log_ctx_service(c->service);
    bus_msg *msgs = calloc((size_t)c->o.batch, sizeof *msgs);
    if (!msgs)
        abort();
    int64_t backoff = 0;
    while (!atomic_load(&c->stop)) {
        size_t n = 0;
        pl_error err = {0};
        if (bus_fetch(c->sub, msgs, (size_t)c->o.batch, 200, &n, &err)) {
            backoff = backoff ? (backoff * 2 > OUTAGE_RETRY_MAX_MS ? OUTAGE_RETRY_MAX_MS : backoff * 2) : 50;
            log_with(LOG_WARN, "consumer fetch failed", LF_STR("consumer", c->group), LF_STR("detail", err.msg));
            usleep((useconds_t)backoff * 1000);
            continue;
        }
        backoff = 0;
        if (n)
            process_until_taken(c, msgs, n, 0);
        prune_inbox(c);
    }
    free(msgs);
    return NULL;
}

static consumer *consumer_new(bus *b, sql_db *db, const char *service, const consumer_def *def, void *ctx,
                              const consumer_opts *o)
{
    consumer *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->bus = b;
    c->db = db;
    c->def = def;
    c->ctx = ctx;
    defaults(&c->o, o, def);
    snprintf(c->service, sizeof c->service, "%s", service);
    snprintf(c->group, sizeof c->group, "%s.%s", service, def->name);
    c->next_prune = time_now_ms() + 60000;
    return c;
}

static int subscribe(consumer *c, pl_error *err)
{
    bus_sub_options so = {.group = c->group, .patterns = c->def->types, .max_deliver = c->o.max_deliver,
                          .lease_ms = c->o.lease_ms};
    return bus_subscribe(c->bus, &so, &c->sub, err);
}

int consumer_start(bus *b, sql_db *db, const char *service, const consumer_def *def, void *ctx,
                   const consumer_opts *o, consumer **out, pl_error *err)
{
    consumer *c = consumer_new(b, db, service, def, ctx, o);
    int rc = subscribe(c, err);
    if (!rc && pthread_create(&c->thread, NULL, consumer_main, c))
        rc = err_set(err, PL_EINTERNAL, NULL, "cannot start consumer %s", c->group);
    if (rc) {
        bus_unsubscribe(c->sub);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void consumer_request_stop(consumer *c)
{
    if (c)
        atomic_store(&c->stop, true);
}

void consumer_stop(consumer *c)
{
    if (!c)
        return;
    atomic_store(&c->stop, true);
    pthread_join(c->thread, NULL);
    bus_unsubscribe(c->sub);
    free(c);
}

const char *consumer_group(const consumer *c) { return c->group; }
int64_t consumer_handled(const consumer *c) { return atomic_load(&c->handled); }

int consumer_replay(bus *b, sql_db *db, const char *service, const consumer_def *def, void *ctx,
                    const consumer_opts *o, pl_error *err)
{
    if (!(def->flags & CONSUMER_PROJECTION) || !def->reset || (def->flags & CONSUMER_NO_INBOX))
        return err_set(err, PL_EINVAL, "projection", "%s.%s is not a projection", service, def->name);
    consumer *c = consumer_new(b, db, service, def, ctx, o);
    sql_tx *tx;
    int rc = sql_begin(db, SQL_TX_WRITE, &tx, err);
    if (!rc) {
        rc = def->reset(ctx, tx, err);
        if (!rc)
            rc = sql_exec(tx, "DELETE FROM pulse_inbox WHERE consumer = $1", SQL_ARGS(SQL_TEXT(c->group)), NULL, err);
        rc = rc ? (sql_rollback(tx), rc) : sql_commit(tx, err);
    }
    if (!rc)
        rc = bus_reset(b, c->group, err);
    if (!rc)
        rc = subscribe(c, err);
    bus_msg *msgs = calloc((size_t)c->o.batch, sizeof *msgs);
    if (!msgs)
        abort();
    /* Apply until caught up: the group's lag is 0, or fetches keep coming back
     * empty (a running server publishing meanwhile, a retry waiting out its
     * backoff: the live consumer finishes those). Log positions are not
     * compared: on JetStream the head is a time, not a count. */
    int idle = 0;
    while (!rc) {
        size_t n = 0;
        if ((rc = bus_fetch(c->sub, msgs, (size_t)c->o.batch, 300, &n, err)))
            break;
        if (n && process_until_taken(c, msgs, n, time_now_ms() + 30000)) {
            rc = err_set(err, PL_EUNAVAILABLE, NULL, "%s: the store stayed unavailable for 30 s", c->group);
            break;
        }
        if (n) {
            idle = 0;
            continue;
        }
        int64_t lag = 0;
        if ((rc = bus_lag(b, c->group, &lag, err)))
            break;
        if (lag <= 0 || ++idle >= 5)
            break;
    }
    free(msgs);
    bus_unsubscribe(c->sub);
    log_with(LOG_INFO, "replayed", LF_STR("projection", c->group), LF_INT("applied", consumer_handled(c)));
    free(c);
    return rc;
}
