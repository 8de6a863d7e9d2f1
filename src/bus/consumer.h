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
 */
#ifndef PULSE_BUS_CONSUMER_H
#define PULSE_BUS_CONSUMER_H

#include "bus/bus.h"
#include "bus/cloudevent.h"
#include "store/sql.h"

enum { CONSUMER_PROJECTION = 1u << 0 };

typedef struct consumer_def {
    const char *name;                 /* group is "<service>.<name>" */
    const char *const *types;         /* NULL-terminated type patterns */
    int (*handle)(void *ctx, sql_tx *tx, const cloudevent *ev, pl_error *err);
    int (*reset)(void *ctx, sql_tx *tx, pl_error *err); /* projections: empty the read model */
    unsigned flags;
    int max_deliver;                  /* 0: the bus default (bus.max_deliver) */
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
