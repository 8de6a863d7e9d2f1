/*
 * consumer.h - durable event consumers with an idempotent inbox.
 *
 * A consumer is declared as data by its service (consumer_def) and run by the
 * host: a thread fetches batches from the bus, and applies them inside ONE
 * write transaction of the service's own sql store. For each event it first
 * records (consumer, event id) in pulse_inbox; an event already recorded is
 * acknowledged without running the handler again. Each event runs under a
 * savepoint, so a failing handler undoes only its own writes; the partition
 * of a failed event pauses and the event is redelivered with exponential
 * backoff and jitter, up to max_deliver, then dead-lettered.
 *
 * A batch the store refuses as a whole (the transaction cannot begin, or fails
 * while the store is unreachable) is not the events' fault: the thread tries
 * the same batch again with backoff (50 ms doubling to 1 s) until the store
 * takes it, without settling anything meanwhile, so an outage of the store
 * costs no delivery and nothing behind the batch moves past it.
 *
 * Handler contract: runs on the consumer's thread, writes only through tx,
 * returns 0 (applied), a negative PL_E* code (retry later), or PL_EINVAL for
 * an event it can never apply (dead-lettered at once). Handlers must not
 * commit or roll back tx.
 *
 * A projection (CONSUMER_PROJECTION) builds a read model; `reset` empties it
 * and `pulse replay` rebuilds it from the start of the log.
 *
 * Batching (`flush`, optional). A handler may stage work in ctx instead of
 * doing it per event; flush is then called once per fetched batch, after the
 * last event of it was applied and before the commit (on the consumer's
 * thread, with the batch's tx; NULL under CONSUMER_NO_INBOX), to perform it
 * all, e.g. in one pipelined round trip. Whether it returns 0 or not, flush
 * leaves nothing staged. If it fails with PL_EUNAVAILABLE or PL_ETIMEOUT (the
 * engine it writes to is away), the transaction is rolled back and the same
 * batch is tried again with backoff, nothing settled, as when the store
 * refuses a commit. If it fails otherwise, the batch counts as not applied: the
 * transaction is rolled back and every event of it that was applied is
 * redelivered (nak with backoff); events that failed on
 * their own are settled as they would have been. A handler that fails must
 * not leave anything staged for its event. Flush runs only after a handler
 * ran in the batch (not for a batch of inbox duplicates alone). If the commit
 * fails after flush succeeded, flush's effects stay and the events come again:
 * effects outside tx are at-least-once.
 *
 * No inbox (CONSUMER_NO_INBOX). For consumers whose effects are idempotent
 * writes outside the sql store: no transaction, no inbox row, no savepoint;
 * the handler gets tx == NULL, and the batch is acked after flush (if any)
 * succeeds. At-least-once: an event can be handled again after a failed
 * flush, a failed ack or a crash, so the effects must tolerate repeats. The
 * store is not touched (db may be NULL); not for projections.
 */
#ifndef PULSE_BUS_CONSUMER_H
#define PULSE_BUS_CONSUMER_H

#include "bus/bus.h"
#include "bus/cloudevent.h"
#include "store/sql.h"

enum { CONSUMER_PROJECTION = 1u << 0, CONSUMER_NO_INBOX = 1u << 1 };

typedef struct consumer_def {
    const char *name;                 /* group is "<service>.<name>" */
    const char *const *types;         /* NULL-terminated type patterns */
    int (*handle)(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err);
    int (*reset)(void *ctx, sql_tx *tx, pl_error *err); /* projections: empty the read model */
    unsigned flags;
    int max_deliver;                  /* 0: the bus default (bus.max_deliver) */
    /* Optional: performs what the batch's handlers staged (see Batching). */
    int (*flush)(void *ctx, sql_tx *tx, pl_error *err);
} consumer_def;

typedef struct consumer_opts {
    int batch;              /* events per fetch and transaction; default 256 */
    int max_deliver;        /* default 5 */
    int64_t retry_base_ms;  /* first redelivery delay; default 100 */
    int64_t retry_max_ms;   /* cap; default 30000 */
    int64_t inbox_keep_ms;  /* inbox rows older than this are pruned; default 7 days */
    int64_t lease_ms;       /* partition ownership lease (how soon a dead instance's share moves); default 10 s */
} consumer_opts;

typedef struct consumer consumer;

/* Starts the consumer thread. Everything passed is borrowed and must outlive it. */
int  consumer_start(bus *b, sql_db *db, const char *service, const consumer_def *def, void *ctx,
                    const consumer_opts *o, consumer **out, pl_error *err);
/* Asks the thread to stop after the batch in hand, without waiting: stopping
 * many consumers costs one fetch timeout, not one each. NULL is a no-op. */
void consumer_request_stop(consumer *c);
void consumer_stop(consumer *c); /* requests the stop, waits for it, frees; NULL is a no-op */
const char *consumer_group(const consumer *c);
int64_t consumer_handled(const consumer *c); /* events applied since start */

/* Replays a projection: empties its read model and inbox, moves its group to
 * the start of the log and applies everything up to the head, then returns. */
int consumer_replay(bus *b, sql_db *db, const char *service, const consumer_def *def, void *ctx,
                    const consumer_opts *o, pl_error *err);

/* The delay before redelivery number `deliveries` + 1 (exposed for tests). */
int64_t consumer_backoff_ms(const consumer_opts *o, int deliveries);

#endif
