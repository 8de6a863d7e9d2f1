/*
 * kv_hub.c - publish/subscribe inside this process for the embedded kv
 * engine (kvlocal.h).
 *
 * One hub per process, shared by every embedded store: channels are not
 * prefixed (kv.h) because they are where services meet, so a message one
 * service publishes reaches another service's subscription as it would
 * through one Redis. Publishing matches the subscriptions present at that
 * moment (what Redis counts as receivers) and queues the message; a single
 * dispatcher thread runs the callbacks, so every subscriber sees messages in
 * publish order and a slow callback delays, but never reorders, the others.
 */
#include "store/kvlocal/kvlocal.h"
#include "core/log.h"

#include <fnmatch.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* A publisher whose subscribers stop consuming gets PL_EUNAVAILABLE instead of
 * growing the queue without bound (Redis disconnects such a subscriber). */
#define QUEUE_MAX_MSGS 100000
#define QUEUE_MAX_BYTES (256u << 20)

struct hub_sub {
    char *channel;
    bool pattern;
    bool dead;     /* unsubscribed: receives nothing more */
    int refs;      /* the hub's list + queued messages that name it */
    kv_message_fn fn;
    void *ud;
    hub_sub *next;
};

typedef struct msg {
    char *channel;
    char *data;
    size_t len;
    hub_sub **to;
    size_t nto;
    struct msg *next;
} msg;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t more;    /* a message was queued, or stop */
    pthread_cond_t idle;    /* the running callback returned */
    int refs;
    bool running, stop;
    pthread_t thread;
    hub_sub *subs;
    msg *head, *tail;
    size_t nq, qbytes;
    hub_sub *current;       /* whose callback runs now */
} hub = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .more = PTHREAD_COND_INITIALIZER,
    .idle = PTHREAD_COND_INITIALIZER,
};

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

static void sub_unref(hub_sub *s) /* hub.mu held */
{
    if (--s->refs == 0) {
        free(s->channel);
        free(s);
    }
}

static bool matches(const hub_sub *s, const char *channel)
{
    return s->pattern ? fnmatch(s->channel, channel, 0) == 0 : strcmp(s->channel, channel) == 0;
}

static void msg_free(msg *m) /* hub.mu held */
{
    for (size_t i = 0; i < m->nto; i++)
        sub_unref(m->to[i]);
    free(m->to);
    free(m->channel);
    free(m->data);
    free(m);
}

static void *dispatch(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&hub.mu);
    for (;;) {
        while (!hub.head && !hub.stop)
            pthread_cond_wait(&hub.more, &hub.mu);
        if (!hub.head)
            break;
        msg *m = hub.head;
        hub.head = m->next;
        if (!hub.head)
            hub.tail = NULL;
        hub.nq--;
        hub.qbytes -= m->len;
        for (size_t i = 0; i < m->nto; i++) {
            hub_sub *s = m->to[i];
            if (s->dead)
                continue;
            hub.current = s;
            pthread_mutex_unlock(&hub.mu);
            s->fn(s->ud, m->channel, m->data, m->len);
            pthread_mutex_lock(&hub.mu);
            hub.current = NULL;
            pthread_cond_broadcast(&hub.idle);
        }
        msg_free(m);
    }
    hub.stop = false;
    pthread_mutex_unlock(&hub.mu);
    return NULL;
}

void hub_ref(void)
{
    pthread_mutex_lock(&hub.mu);
    hub.refs++;
    pthread_mutex_unlock(&hub.mu);
}

void hub_unref(void)
{
    pthread_mutex_lock(&hub.mu);
    if (--hub.refs > 0 || !hub.running) {
        pthread_mutex_unlock(&hub.mu);
        return;
    }
    /* Last store closed: deliver what is queued, then stop. */
    hub.stop = true;
    pthread_cond_signal(&hub.more);
    pthread_t t = hub.thread;
    bool self = pthread_equal(t, pthread_self());
    hub.running = false;
    pthread_mutex_unlock(&hub.mu);
    if (self)
        pthread_detach(t);
    else
        pthread_join(t, NULL);
    pthread_mutex_lock(&hub.mu);
    if (hub.subs)
        log_warn("kv: %s subscriptions outlived every embedded kv store", hub.subs->next ? "some" : "a");
    pthread_mutex_unlock(&hub.mu);
}

int hub_publish(const char *channel, const void *data, size_t len, pl_error *err)
{
    pthread_mutex_lock(&hub.mu);
    size_t n = 0;
    for (hub_sub *s = hub.subs; s; s = s->next)
        n += matches(s, channel);
    if (n == 0) {
        pthread_mutex_unlock(&hub.mu);
        return 0;
    }
    if (hub.nq >= QUEUE_MAX_MSGS || hub.qbytes + len > QUEUE_MAX_BYTES) {
        pthread_mutex_unlock(&hub.mu);
        return err_set(err, PL_EUNAVAILABLE, "channel",
                       "kv: %zu messages wait for subscribers that do not keep up; %s dropped", hub.nq, channel);
    }
    msg *m = xmalloc(sizeof *m);
    m->channel = strdup(channel);
    m->data = xmalloc(len + 1);
    if (!m->channel)
        abort();
    memcpy(m->data, data, len);
    m->data[len] = '\0';
    m->len = len;
    m->to = xmalloc(n * sizeof *m->to);
    m->nto = 0;
    m->next = NULL;
    /* The list is newest first; deliver in subscription order. */
    for (hub_sub *s = hub.subs; s; s = s->next)
        if (matches(s, channel)) {
            s->refs++;
            m->to[m->nto++] = s;
        }
    for (size_t i = 0; i < n / 2; i++) {
        hub_sub *t = m->to[i];
        m->to[i] = m->to[n - 1 - i];
        m->to[n - 1 - i] = t;
    }
    if (hub.tail)
        hub.tail->next = m;
    else
        hub.head = m;
    hub.tail = m;
    hub.nq++;
    hub.qbytes += len;
    pthread_cond_signal(&hub.more);
    pthread_mutex_unlock(&hub.mu);
    return (int)(n > INT32_MAX ? INT32_MAX : n);
}

int hub_subscribe(const char *channel, kv_message_fn fn, void *ud, hub_sub **out, pl_error *err)
{
    hub_sub *s = xmalloc(sizeof *s);
    s->channel = strdup(channel);
    if (!s->channel)
        abort();
    s->pattern = strchr(channel, '*') != NULL;
    s->dead = false;
    s->refs = 1;
    s->fn = fn;
    s->ud = ud;
    pthread_mutex_lock(&hub.mu);
    if (!hub.running) {
        int rc = pthread_create(&hub.thread, NULL, dispatch, NULL);
        if (rc) {
            pthread_mutex_unlock(&hub.mu);
            free(s->channel);
            free(s);
            return err_set(err, PL_EINTERNAL, NULL, "kv: cannot start the pub/sub dispatcher: %s", strerror(rc));
        }
        hub.running = true;
    }
    s->next = hub.subs;
    hub.subs = s;
    pthread_mutex_unlock(&hub.mu);
    *out = s;
    return 0;
}

void hub_unsubscribe(hub_sub *s)
{
    pthread_mutex_lock(&hub.mu);
    s->dead = true;
    for (hub_sub **p = &hub.subs; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    /* kv.h: no callback runs after this returns. A callback that unsubscribes
     * itself is the one running, on this very thread: nothing to wait for. */
    if (!(hub.running && pthread_equal(hub.thread, pthread_self())))
        while (hub.current == s)
            pthread_cond_wait(&hub.idle, &hub.mu);
    sub_unref(s);
    pthread_mutex_unlock(&hub.mu);
}
