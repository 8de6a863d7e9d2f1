/*
 * nats_internal.h - shared parts of the JetStream bus engine (bus_nats.c: the
 * bus, publishing, streams, dead letters, replay, lag, tail; nats_sub.c: the
 * consumer groups). See README.md in this directory for the design.
 */
#ifndef PULSE_BUS_NATS_INTERNAL_H
#define PULSE_BUS_NATS_INTERNAL_H

#include "bus/bus.h"

#include <nats/nats.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define NB_MAX_PARTS 64
#define NB_API_WAIT_MS 2000      /* JetStream API requests (DESIGN §3: 2 s statement timeout) */
#define NB_PUB_WAIT_MS 3000      /* a publish batch must be confirmed within this */
#define NB_PUB_MAX_PENDING 4096  /* async publishes in flight per publisher */
#define NB_MAX_ACK_PENDING 4096  /* per lane consumer: bounds what one owner may hold */
#define NB_DUP_WINDOW_MS 120000  /* Nats-Msg-Id dedup window of the event streams */
#define NB_SMALL 16              /* up to this many messages at once go out on the immediate connection */


typedef struct nb_stream {
    char ctx[64];
    char name[80]; /* PL_<CTX> */
    int parts;
} nb_stream;

typedef struct nb_pub nb_pub;
typedef struct nb_reader nb_reader;

typedef struct nbus {
    natsConnection *nc;   /* round trips: API calls, pulls, leases (sends at once) */
    natsConnection *bulk; /* one-way traffic: async publishes, acks (buffered, flushed in batches) */
    jsCtx *js;           /* API calls; thread-safe */
    kvStore *kv;         /* partition leases and group membership */
    bus_options o;
    /* server.namespace keeps deployments sharing a server apart: "<ns>-" before
     * every stream and bucket name, "ns_<ns>." before every subject ("" both
     * without one). The separators cannot occur in a namespace, so no
     * namespace's names are a prefix of another's. */
    char pre_name[40], pre_subj[40];
    char dlq_stream[80], redrive_stream[80], lease_bucket[80], events_prefix[48]; /* events: "<pre>PL_" */
    pthread_mutex_t mu;  /* streams, pubs, reader */
    nb_stream *streams;
    size_t nstreams, capstreams;
    nb_pub *idle_pubs[2], *all_pubs; /* [0] on nc (small batches), [1] on bulk */
    nb_reader *reader;
} nbus;

/* Monotonic milliseconds, for every timer of the engine (never the wall clock). */
int64_t nb_mono_ms(void);

/* Maps a libnats failure to a PL_E* code with detail. */
int nb_fail(natsStatus s, jsErrCode jerr, pl_error *err, const char *what);
/* PL_EUNAVAILABLE unless both connections are up. */
int nb_check_up(nbus *b, pl_error *err);
/* Sends what the bulk connection has buffered now (instead of within the flusher's 1 ms). */
void nb_flush_bulk(nbus *b);

/* "<sanitised group>-<fnv32 hex>": the stable name of a group in consumer names,
 * KV keys and subjects (those allow fewer characters than group names). */
void nb_group_key(const char *group, char *out, size_t size);

/* The context of a type ("pl.<context>.…"); false when type is malformed. */
bool nb_type_ctx(const char *type, char *ctx, size_t size);
void nb_stream_name(const nbus *b, const char *ctx, char *out, size_t size);
/* The context of one of our event streams' names; -1 when it is not one. */
int nb_stream_ctx(const nbus *b, const char *name, char *ctx, size_t size);
/* The type carried by a delivered subject: without the namespace and the partition token. */
void nb_subject_type(const nbus *b, const char *subject, char *out, size_t size);

/* The stream of a context, created when `create` (else PL_ENOTFOUND when absent). */
int nb_stream_get(nbus *b, const char *ctx, bool create, nb_stream *out, pl_error *err);
void nb_stream_forget(nbus *b, const char *ctx);
/* Names of every PL_* stream; free with nb_names_free. */
int nb_stream_names(nbus *b, char ***names, int *n, pl_error *err);
void nb_names_free(char **names, int n);

/* Creates or updates a durable pull consumer (creating updates in JetStream 2.9). */
int nb_ensure_consumer(nbus *b, const char *stream, const char *name, const char *filter, const char *group,
                       int64_t ack_wait_ms, pl_error *err);

/* Dead letter: publishes "<type>.dlq" into the event's stream and records the
 * parking-lot entry for `group`. redrive_seq distinguishes a re-driven copy. */
int nb_dead_letter(nbus *b, const char *group, const char *stream, int parts, const char *type, const char *event_id,
                   uint64_t seq, const char *body, size_t body_len, int deliveries, const char *error,
                   uint64_t redrive_seq, pl_error *err);

/* Parses a JetStream ack reply subject ($JS.ACK.…). */
typedef struct nb_meta {
    const char *stream, *consumer; /* not terminated: lengths below */
    size_t stream_len, consumer_len;
    int dc;
    uint64_t sseq, dseq, pending;
    int64_t ts;
} nb_meta;
bool nb_parse_ack(const char *reply, nb_meta *m);

/* The subscription side (nats_sub.c). */
int  nb_subscribe(void *h, const bus_sub_options *o, void **sub, pl_error *err);
void nb_unsubscribe(void *sub);
int  nb_fetch(void *sub, bus_msg *out, size_t max, int timeout_ms, size_t *n, pl_error *err);
int  nb_ack(void *sub, const bus_msg *m, pl_error *err);
int  nb_nak(void *sub, const bus_msg *m, int64_t delay_ms, const char *error, pl_error *err);
int  nb_term(void *sub, const bus_msg *m, const char *error, pl_error *err);

#endif
