/* outbox.c - outbox_emit and the relay thread (read batch, publish, delete). */
#include "bus/outbox.h"
#include "core/log.h"
#include "core/timeutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 512
#define MAX_RELAYS 32
/* While the bus or the store is away the relay retries with backoff up to this (and at once when
 * a commit kicks it): the backlog moves within about this long of the engine's return. */
#define RETRY_MAX_MS 1000

struct outbox_relay {
    sql_db *db;
    bus *bus;
    char service[64];
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t kick;
    bool kicked;
    atomic_bool stop;
    atomic_llong depth, published;
};

/* Relays by service, so that a commit anywhere in the process can wake its own. */
static outbox_relay *relays[MAX_RELAYS];
static pthread_mutex_t relays_lock = PTHREAD_MUTEX_INITIALIZER;

static void kick(void *ud)
{
    outbox_relay *r = ud;
    pthread_mutex_lock(&r->lock);
    r->kicked = true;
    pthread_cond_signal(&r->kick);
    pthread_mutex_unlock(&r->lock);
}

static outbox_relay *relay_for(const char *service)
{
    outbox_relay *found = NULL;
    pthread_mutex_lock(&relays_lock);
    for (int i = 0; i < MAX_RELAYS && !found; i++)
        if (relays[i] && strcmp(relays[i]->service, service) == 0)
            found = relays[i];
    pthread_mutex_unlock(&relays_lock);
    return found;
}

int outbox_emit(sql_tx *tx, const char *service, const char *type, const char *subject, const char *partitionkey,
                json_t *data, char id_out[40], pl_error *err)
{
    cloudevent ev;
    int rc = ce_new(&ev, service, type, subject, partitionkey, data, err);
    if (rc)
        return rc;
    char *body = ce_encode(&ev);
    rc = sql_exec(tx,
                  "INSERT INTO pulse_outbox (id, type, partitionkey, body, created_ms) VALUES ($1, $2, $3, $4, $5)",
                  SQL_ARGS(SQL_TEXT(ev.id), SQL_TEXT(ev.type), SQL_TEXT(ev.partitionkey), SQL_TEXT(body),
                           SQL_INT(time_now_ms())),
                  NULL, err);
    free(body);
    if (!rc && id_out)
        memcpy(id_out, ev.id, sizeof ev.id);
    ce_clear(&ev);
    if (rc)
        return rc;
    outbox_relay *r = relay_for(service);
    if (r)
        sql_after_commit(tx, kick, r);
    return 0;
}

typedef struct {
    bus_out msg[BATCH];
    int64_t seq[BATCH];
    char *strs[BATCH * 4];
    size_t n, nstr;
} batch;

static char *keep(batch *b, const char *s)
{
    char *p = strdup(s ? s : "");
    if (!p)
        abort();
    b->strs[b->nstr++] = p;
    return p;
}

static void batch_free(batch *b)
{
    for (size_t i = 0; i < b->nstr; i++)
        free(b->strs[i]);
    b->n = b->nstr = 0;
}

/* Deletes exactly the rows of the batch, as runs of consecutive seqs. Not "seq <= last": seqs
 * are taken when a row is inserted, not when it commits, so on an engine with concurrent
 * writers (PostgreSQL) a row with a smaller seq can commit after the batch was read, and must
 * stay for the next batch. */
static int delete_batch(outbox_relay *r, const batch *b, pl_error *err)
{
    sql_tx *tx;
    int rc = sql_begin(r->db, SQL_TX_WRITE, &tx, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < b->n && !rc;) {
        size_t j = i;
        while (j + 1 < b->n && b->seq[j + 1] == b->seq[j] + 1)
            j++;
        rc = sql_exec(tx, "DELETE FROM pulse_outbox WHERE seq >= $1 AND seq <= $2",
                      SQL_ARGS(SQL_INT(b->seq[i]), SQL_INT(b->seq[j])), NULL, err);
        i = j + 1;
    }
    return rc ? (sql_rollback(tx), rc) : sql_commit(tx, err);
}

/* Reads, publishes and deletes one batch; returns the number published or <0. */
static int relay_once(outbox_relay *r, batch *b, pl_error *err)
{
    sql_tx *tx;
    sql_rows *rows;
    int rc = sql_begin(r->db, SQL_TX_READ, &tx, err);
    if (rc)
        return rc;
    rc = sql_query(tx, "SELECT seq, id, type, partitionkey, body FROM pulse_outbox ORDER BY seq LIMIT $1",
                   SQL_ARGS(SQL_INT(BATCH)), &rows, err);
    if (!rc) {
        while (b->n < BATCH && (rc = sql_next(rows, err)) == 1) {
            b->seq[b->n] = sql_int(rows, 0);
            bus_out *m = &b->msg[b->n++];
            m->id = keep(b, sql_text(rows, 1));
            m->type = keep(b, sql_text(rows, 2));
            m->partitionkey = keep(b, sql_text(rows, 3));
            m->body = keep(b, sql_text(rows, 4));
            m->body_len = strlen(m->body);
        }
        sql_rows_close(rows);
    }
    sql_rollback(tx);
    if (rc < 0 || b->n == 0) {
        batch_free(b);
        return rc < 0 ? rc : 0;
    }
    if ((rc = bus_publish(r->bus, b->msg, b->n, err)) == 0)
        rc = delete_batch(r, b, err);
    int n = (int)b->n;
    batch_free(b);
    return rc ? rc : n;
}

static void refresh_depth(outbox_relay *r)
{
    sql_tx *tx;
    if (sql_begin(r->db, SQL_TX_READ, &tx, NULL))
        return;
    sql_rows *rows;
    if (!sql_query(tx, "SELECT count(*) FROM pulse_outbox", SQL_NOARGS, &rows, NULL)) {
        if (sql_next(rows, NULL) == 1)
            atomic_store(&r->depth, sql_int(rows, 0));
        sql_rows_close(rows);
    }
    sql_rollback(tx);
}

static void *relay_main(void *arg)
{
    outbox_relay *r = arg;
    batch *b = calloc(1, sizeof *b);
    if (!b)
        abort();
    log_ctx_service(r->service);
    int64_t backoff = 0;
    for (;;) {
        bool stopping = atomic_load(&r->stop);
        pl_error err = {0};
        int n = relay_once(r, b, &err);
        if (n < 0) {
            /* the bus or the store is down: keep the rows, retry with backoff */
            backoff = backoff ? (backoff * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : backoff * 2) : 50;
            log_with(LOG_WARN, "outbox relay failed", LF_STR("detail", err.msg), LF_INT("retry_ms", backoff));
            refresh_depth(r); /* the backlog grows while the bus is away: /metrics must show it */
            if (stopping)
                break;
        } else {
            backoff = 0;
            atomic_fetch_add(&r->published, n);
            if (n == BATCH)
                continue; /* more waiting */
            refresh_depth(r);
            if (stopping)
                break;
        }
        pthread_mutex_lock(&r->lock);
        if (!r->kicked && !atomic_load(&r->stop)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t ms = backoff ? backoff : 500; /* also picks up rows committed by other processes */
            ts.tv_sec += ms / 1000;
            ts.tv_nsec += (ms % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&r->kick, &r->lock, &ts);
        }
        r->kicked = false;
        pthread_mutex_unlock(&r->lock);
    }
    free(b);
    return NULL;
}

int outbox_relay_start(sql_db *db, const char *service, bus *b, outbox_relay **out, pl_error *err)
{
    outbox_relay *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->db = db;
    r->bus = b;
    snprintf(r->service, sizeof r->service, "%s", service);
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->kick, NULL);
    pthread_mutex_lock(&relays_lock);
    int slot = -1;
    for (int i = 0; i < MAX_RELAYS && slot < 0; i++)
        if (!relays[i])
            slot = i;
    if (slot >= 0)
        relays[slot] = r;
    pthread_mutex_unlock(&relays_lock);
    if (slot < 0) {
        free(r);
        return err_set(err, PL_EINTERNAL, NULL, "too many outbox relays");
    }
    if (pthread_create(&r->thread, NULL, relay_main, r)) {
        pthread_mutex_lock(&relays_lock);
        relays[slot] = NULL;
        pthread_mutex_unlock(&relays_lock);
        free(r);
        return err_set(err, PL_EINTERNAL, NULL, "cannot start the outbox relay: %s", strerror(errno));
    }
    *out = r;
    return 0;
}

void outbox_relay_stop(outbox_relay *r)
{
    if (!r)
        return;
    atomic_store(&r->stop, true);
    kick(r);
    pthread_join(r->thread, NULL);
    pthread_mutex_lock(&relays_lock);
    for (int i = 0; i < MAX_RELAYS; i++)
        if (relays[i] == r)
            relays[i] = NULL;
    pthread_mutex_unlock(&relays_lock);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->kick);
    free(r);
}

int64_t outbox_relay_depth(const outbox_relay *r) { return atomic_load(&r->depth); }
const char *outbox_relay_service(const outbox_relay *r) { return r->service; }
int64_t outbox_relay_published(const outbox_relay *r) { return atomic_load(&r->published); }
