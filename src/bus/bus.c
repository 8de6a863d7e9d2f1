/* bus.c - engine registry and the thin wrappers of bus.h. */
#include "bus/bus.h"
#include "core/engines.h"

#include <stdlib.h>
#include <string.h>

struct bus {
    const bus_driver *d;
    void *h;
};
struct bus_sub {
    const bus_driver *d;
    void *h;
};

extern const bus_driver bus_local_driver;
extern const bus_driver bus_nats_driver;

static engines drivers = ENGINES_INIT;

void bus_register(const bus_driver *d) { engines_add(&drivers, d, d->schemes); }

static const bus_driver *driver_for(const char *url)
{
    bus_register(&bus_local_driver);
    bus_register(&bus_nats_driver);
    return *url ? engines_find(&drivers, url) : &bus_local_driver;
}

int bus_open(const char *url, const bus_options *o, bus **out, pl_error *err)
{
    url = url ? url : "";
    const bus_driver *d = driver_for(url);
    if (!d)
        return err_set(err, PL_ECONFIG, "bus.url", "no bus engine serves the URL \"%s\" in this build", url);
    void *h;
    int rc = d->xOpen(url, o, &h, err);
    if (rc)
        return rc;
    bus *b = calloc(1, sizeof *b);
    if (!b)
        abort();
    b->d = d;
    b->h = h;
    *out = b;
    return 0;
}

void bus_close(bus *b)
{
    if (!b)
        return;
    b->d->xClose(b->h);
    free(b);
}

const char *bus_engine(const bus *b) { return b->d->name; }
int bus_ping(bus *b, pl_error *err) { return b->d->xPing(b->h, err); }
int bus_publish(bus *b, const bus_out *m, size_t n, pl_error *err) { return n ? b->d->xPublish(b->h, m, n, err) : 0; }

int bus_subscribe(bus *b, const bus_sub_options *o, bus_sub **out, pl_error *err)
{
    void *h;
    int rc = b->d->xSubscribe(b->h, o, &h, err);
    if (rc)
        return rc;
    bus_sub *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->d = b->d;
    s->h = h;
    *out = s;
    return 0;
}

void bus_unsubscribe(bus_sub *s)
{
    if (!s)
        return;
    s->d->xUnsubscribe(s->h);
    free(s);
}

int bus_fetch(bus_sub *s, bus_msg *out, size_t max, int timeout_ms, size_t *n, pl_error *err)
{
    return s->d->xFetch(s->h, out, max, timeout_ms, n, err);
}
int bus_ack(bus_sub *s, const bus_msg *m, pl_error *err) { return s->d->xAck(s->h, m, err); }
int bus_nak(bus_sub *s, const bus_msg *m, int64_t delay_ms, const char *error, pl_error *err)
{
    return s->d->xNak(s->h, m, delay_ms, error, err);
}
int bus_term(bus_sub *s, const bus_msg *m, const char *error, pl_error *err) { return s->d->xTerm(s->h, m, error, err); }
int bus_reset(bus *b, const char *group, pl_error *err) { return b->d->xReset(b->h, group, err); }
int bus_lag(bus *b, const char *group, int64_t *lag, pl_error *err) { return b->d->xLag(b->h, group, lag, err); }
int bus_head(bus *b, uint64_t *seq, pl_error *err) { return b->d->xHead(b->h, seq, err); }
int bus_read(bus *b, uint64_t after, size_t max, int timeout_ms,
             int (*fn)(void *ud, uint64_t seq, const char *type, const char *body, size_t len), void *ud,
             uint64_t *last, pl_error *err)
{
    return b->d->xRead(b->h, after, max, timeout_ms, fn, ud, last, err);
}
int bus_dead_list(bus *b, bus_dead **out, size_t *n, pl_error *err) { return b->d->xDeadList(b->h, out, n, err); }
int bus_dead_retry(bus *b, int64_t id, int *count, pl_error *err) { return b->d->xDeadRetry(b->h, id, count, err); }
int bus_dead_drop(bus *b, int64_t id, pl_error *err) { return b->d->xDeadDrop(b->h, id, err); }
int bus_dead_count(bus *b, int64_t *n, pl_error *err) { return b->d->xDeadCount(b->h, n, err); }
