/*
 * outbox.h - the transactional outbox: events written in the same local
 * transaction as the state change they describe, published after commit by a
 * relay, in commit order, in batches.
 *
 * Crash safety: before commit nothing exists; after commit the row waits in
 * pulse_outbox until the relay has published it AND deleted it; a crash
 * between publish and delete republishes it on restart, and the duplicate is
 * dropped by the log's id dedup and by every consumer's inbox.
 *
 * The relay deletes only the rows it published. On an engine with concurrent
 * writers (PostgreSQL) seqs are taken at insert, not at commit: a row that
 * commits after a later-numbered one was published goes in the next batch.
 * While the bus is unreachable the rows wait, and outbox_relay_depth says
 * how many.
 */
#ifndef PULSE_BUS_OUTBOX_H
#define PULSE_BUS_OUTBOX_H

#include "bus/bus.h"
#include "store/sql.h"

#include <jansson.h>

/* Appends an event to `service`'s outbox inside tx (a write transaction of
 * that service's own store). `data` is stolen. The type must match
 * pl.<context>.<event>.v<N> or nothing is written (PL_EINVAL). The event's
 * traceparent is the calling thread's (the HTTP request's). partitionkey
 * NULL means the subject. On success *id_out (may be NULL) gets the event id. */
int outbox_emit(sql_tx *tx, const char *service, const char *type, const char *subject, const char *partitionkey,
                json_t *data, char id_out[40], pl_error *err);

typedef struct outbox_relay outbox_relay;

/* Starts the relay thread of one service's outbox. db and b are borrowed. */
int  outbox_relay_start(sql_db *db, const char *service, bus *b, outbox_relay **out, pl_error *err);
/* Publishes what is committed, then stops. NULL is a no-op. */
void outbox_relay_stop(outbox_relay *r);
/* Rows waiting to be published (last observed). */
int64_t outbox_relay_depth(const outbox_relay *r);
const char *outbox_relay_service(const outbox_relay *r);
/* Events published by this relay since start. */
int64_t outbox_relay_published(const outbox_relay *r);

#endif
