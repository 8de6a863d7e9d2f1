/*
 * bus.h - the event bus: one interface, several engines (like the store kinds).
 *
 * Engines register by URL scheme: "" (or "embedded:") is the durable log in
 * SQLite (WAL) in the data directory; "nats://" is NATS JetStream (a later
 * driver). Callers use only the bus_* wrappers.
 *
 * Model (Kafka/JetStream-like): publishers append CloudEvents (bus/cloudevent.h)
 * to a log. A durable consumer is a named group with type patterns; every
 * group sees every matching event; instances of one group (threads or
 * processes) share the work. Order is kept per partition key: the log is
 * split by hash(partitionkey) into partitions and a partition is processed by
 * one instance at a time, strictly in order; a nak pauses that partition
 * until the redelivery, so a later event with the same key never overtakes
 * an earlier one. Delivery is at-least-once; consumers make effects
 * exactly-once with the inbox (bus/consumer.h).
 *
 * After `max_deliver` deliveries a message is dead-lettered: recorded with
 * its last error, delivery count and consumer, published as "<type>.dlq",
 * and the partition moves on. Dead letters can be listed, re-driven to the
 * consumer that failed them, or dropped.
 *
 * Threads: a bus is shared; a subscription is used by one thread at a time.
 * Errors: 0 or negative PL_E* codes with detail in pl_error.
 */
#ifndef PULSE_BUS_BUS_H
#define PULSE_BUS_BUS_H

#include "bus/cloudevent.h"
#include "core/err.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct bus bus;
typedef struct bus_sub bus_sub;

/* A message to publish: an encoded CloudEvent and its routing attributes. */
typedef struct bus_out {
    const char *id;
    const char *type;
    const char *partitionkey;
    const char *body; /* the CloudEvent JSON */
    size_t body_len;
} bus_out;

/* A delivered message. Strings are valid until the next fetch on the subscription. */
typedef struct bus_msg {
    uint64_t seq;          /* position in the log; increases with publish order */
    const char *id;
    const char *type;
    const char *body;
    size_t body_len;
    int deliveries;        /* 1 on the first delivery */
    int partition;
    int64_t redrive_id;    /* > 0 when re-driven from the dead letters */
} bus_msg;

typedef struct bus_options {
    const char *data_dir;
    int partitions;             /* per group; default 4 */
    int64_t retention_age_ms;   /* default 7 days */
    int64_t retention_max;      /* events kept at most; default 10,000,000 */
    const char *ns;             /* server.namespace: engines shared by several deployments keep
                                 * them apart with it (stream and subject prefixes); "" none */
} bus_options;

typedef struct bus_sub_options {
    const char *group;                /* durable consumer name */
    const char *const *patterns;      /* NULL-terminated type patterns */
    int max_deliver;                  /* default 5 */
    int64_t lease_ms;                 /* partition ownership lease; default 10 s */
} bus_sub_options;

typedef struct bus_dead {
    int64_t id;
    char group[96];
    char type[CE_TYPE_MAX + 8];
    char event_id[40];
    uint64_t seq;
    int deliveries;
    char error[512];
    char dead_at[40];
} bus_dead;

typedef struct bus_driver {
    int version;                /* 1; fields are only ever appended */
    const char *name;
    const char *const *schemes;
    int  (*xOpen)(const char *url, const bus_options *o, void **h, pl_error *err);
    void (*xClose)(void *h);
    int  (*xPing)(void *h, pl_error *err);
    int  (*xPublish)(void *h, const bus_out *msgs, size_t n, pl_error *err);
    int  (*xSubscribe)(void *h, const bus_sub_options *o, void **sub, pl_error *err);
    void (*xUnsubscribe)(void *sub);
    int  (*xFetch)(void *sub, bus_msg *out, size_t max, int timeout_ms, size_t *n, pl_error *err);
    int  (*xAck)(void *sub, const bus_msg *m, pl_error *err);
    int  (*xNak)(void *sub, const bus_msg *m, int64_t delay_ms, const char *error, pl_error *err);
    int  (*xTerm)(void *sub, const bus_msg *m, const char *error, pl_error *err);
    int  (*xReset)(void *h, const char *group, pl_error *err);
    int  (*xLag)(void *h, const char *group, int64_t *lag, pl_error *err);
    int  (*xHead)(void *h, uint64_t *seq, pl_error *err);
    int  (*xRead)(void *h, uint64_t after, size_t max, int timeout_ms,
                  int (*fn)(void *ud, uint64_t seq, const char *type, const char *body, size_t len), void *ud,
                  uint64_t *last, pl_error *err);
    int  (*xDeadList)(void *h, bus_dead **out, size_t *n, pl_error *err);
    int  (*xDeadRetry)(void *h, int64_t id /* 0: all */, int *count, pl_error *err);
    int  (*xDeadDrop)(void *h, int64_t id, pl_error *err);
    int  (*xDeadCount)(void *h, int64_t *n, pl_error *err);
} bus_driver;

void bus_register(const bus_driver *d);

int  bus_open(const char *url, const bus_options *o, bus **out, pl_error *err);
void bus_close(bus *b); /* NULL is a no-op */
const char *bus_engine(const bus *b);
int  bus_ping(bus *b, pl_error *err);

/* Appends a batch atomically and in order. An event id already in the log
 * (within the engine's dedup window) is dropped silently. */
int bus_publish(bus *b, const bus_out *msgs, size_t n, pl_error *err);

/* Durable consumers. A fetch waits up to timeout_ms for messages and returns
 * at most `max` in log order. Each message must be settled in order with
 * ack (done), nak (redeliver after delay; dead-letters once max_deliver is
 * reached) or term (dead-letter now). After a nak, the other fetched
 * messages of that partition are redelivered later too; settling them is
 * a no-op. */
int  bus_subscribe(bus *b, const bus_sub_options *o, bus_sub **out, pl_error *err);
void bus_unsubscribe(bus_sub *s); /* NULL is a no-op */
int  bus_fetch(bus_sub *s, bus_msg *out, size_t max, int timeout_ms, size_t *n, pl_error *err);
int  bus_ack(bus_sub *s, const bus_msg *m, pl_error *err);
int  bus_nak(bus_sub *s, const bus_msg *m, int64_t delay_ms, const char *error, pl_error *err);
int  bus_term(bus_sub *s, const bus_msg *m, const char *error, pl_error *err);

/* Replay: moves the group back to the start of the log (instances notice). */
int bus_reset(bus *b, const char *group, pl_error *err);
/* Events in the log after the group's position (0 when caught up). */
int bus_lag(bus *b, const char *group, int64_t *lag, pl_error *err);
int bus_head(bus *b, uint64_t *seq, pl_error *err);

/* Reads the raw log after `after`, waiting up to timeout_ms for the first
 * event; fn returns 0 to go on. *last gets the last seq seen. For tail. */
int bus_read(bus *b, uint64_t after, size_t max, int timeout_ms,
             int (*fn)(void *ud, uint64_t seq, const char *type, const char *body, size_t len), void *ud,
             uint64_t *last, pl_error *err);

/* Dead letters ("parking lot"). bus_dead_list allocates *out (free()). */
int bus_dead_list(bus *b, bus_dead **out, size_t *n, pl_error *err);
int bus_dead_retry(bus *b, int64_t id, int *count, pl_error *err);
int bus_dead_drop(bus *b, int64_t id, pl_error *err);
int bus_dead_count(bus *b, int64_t *n, pl_error *err);

#endif
