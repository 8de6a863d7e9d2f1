/*
 * paced.c - an open-loop HTTP/1.1 load generator at a fixed rate (what wrk2
 * does; wrk2 is not packaged in Debian). Used by bench/pg.sh for the latency
 * run at a given fraction of the API's top rate.
 *
 *   paced PORT METHOD PATH BODY RATE SECONDS CONNS
 *
 * Request i is due at t0 + i / RATE, whatever happened to the ones before
 * (open loop); a timerfd wakes the loop at each due time. A due request goes
 * out on an idle keep-alive connection to 127.0.0.1:PORT; when all CONNS are
 * busy it waits in line, and its latency still counts from its due time, so a
 * stall shows in the percentiles instead of lowering the rate (no coordinated
 * omission). "%n" in BODY (or PATH) becomes a request counter (unique subjects,
 * e-mails). Prints one line of key=value: sent, ok, errors (non-2xx or broken),
 * achieved rate, latency avg/p50/p90/p99/max in ms from the due time, and the
 * average service time (from the moment the request was written).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

typedef struct conn {
    int fd;
    int busy;
    int64_t due_ns, sent_ns;
    char in[65536];
    size_t inlen;
} conn;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Replaces every "%n" of tmpl with k. */
static size_t expand(const char *tmpl, long k, char *out, size_t size)
{
    size_t o = 0;
    for (const char *p = tmpl; *p && o + 24 < size; p++) {
        if (p[0] == '%' && p[1] == 'n') {
            o += (size_t)snprintf(out + o, size - o, "%ld", k);
            p++;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    return o;
}

static int open_conn(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* A whole response in c->in: its length (headers + Content-Length body), or 0 when more is needed. */
static size_t response_len(conn *c, int *status)
{
    c->in[c->inlen < sizeof c->in ? c->inlen : sizeof c->in - 1] = '\0';
    char *end = strstr(c->in, "\r\n\r\n");
    if (!end)
        return 0;
    size_t head = (size_t)(end - c->in) + 4;
    long clen = 0;
    for (char *p = c->in; p && p < end; p = strstr(p, "\r\n"), p = p ? p + 2 : NULL)
        if (strncasecmp(p, "Content-Length:", 15) == 0)
            clen = strtol(p + 15, NULL, 10);
    if (c->inlen < head + (size_t)clen)
        return 0;
    *status = atoi(c->in + 9);
    return head + (size_t)clen;
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: paced PORT METHOD PATH BODY RATE SECONDS CONNS\n");
        return 2;
    }
    int port = atoi(argv[1]);
    const char *method = argv[2], *path = argv[3], *body = argv[4];
    double rate = atof(argv[5]), secs = atof(argv[6]);
    int nconn = atoi(argv[7]);
    if (port <= 0 || rate <= 0 || secs <= 0 || nconn <= 0 || nconn > 4096) {
        fprintf(stderr, "paced: bad arguments\n");
        return 2;
    }
    long total = (long)(rate * secs);
    int64_t *lat = calloc((size_t)total + 1, sizeof *lat);
    conn *cs = calloc((size_t)nconn, sizeof *cs);
    if (!lat || !cs)
        return 1;
    int ep = epoll_create1(0);
    for (int i = 0; i < nconn; i++) {
        if ((cs[i].fd = open_conn(port)) < 0) {
            perror("paced: connect");
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);

    double gap_ns = 1e9 / rate;
    int64_t t0 = now_ns() + 1000000, service_sum = 0;
    long next = 0, done = 0, ok = 0, errors = 0, inflight = 0;
    char req[8192], b[4096], pth[2048];
    while (done + errors < total) {
        int64_t now = now_ns();
        /* Send every due request that has a free connection. */
        while (next < total && t0 + (int64_t)(next * gap_ns) <= now) {
            conn *c = NULL;
            for (int i = 0; i < nconn && !c; i++)
                if (!cs[i].busy && cs[i].fd >= 0)
                    c = &cs[i];
            if (!c)
                break; /* waits in line; its latency runs from its due time */
            size_t blen = expand(body, next, b, sizeof b);
            expand(path, next, pth, sizeof pth);
            int n = snprintf(req, sizeof req,
                             "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             "Content-Length: %zu\r\n\r\n%s",
                             method, pth, strcmp(method, "GET") ? blen : 0, strcmp(method, "GET") ? b : "");
            c->due_ns = t0 + (int64_t)(next * gap_ns);
            c->sent_ns = now_ns();
            c->inlen = 0;
            if (write(c->fd, req, (size_t)n) != n) {
                errors++;
                close(c->fd);
                c->fd = -1;
                next++;
                continue;
            }
            c->busy = 1;
            inflight++;
            next++;
        }
        struct itimerspec its = {0};
        if (next < total) {
            int64_t due = t0 + (int64_t)(next * gap_ns);
            its.it_value.tv_sec = due / 1000000000;
            its.it_value.tv_nsec = due % 1000000000;
        }
        timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        if (next >= total && inflight == 0)
            break;
        struct epoll_event evs[64];
        int ne = epoll_wait(ep, evs, 64, 5000);
        if (ne < 0 && errno != EINTR)
            break;
        if (ne == 0 && inflight) { /* 5 s without an answer: give up on the rest */
            errors += total - done - errors;
            break;
        }
        for (int k = 0; k < ne; k++) {
            conn *c = evs[k].data.ptr;
            if (!c) {
                uint64_t x;
                if (read(tfd, &x, sizeof x) < 0) { /* spurious: nothing to do */
                }
                continue;
            }
            ssize_t r = read(c->fd, c->in + c->inlen, sizeof c->in - 1 - c->inlen);
            if (r <= 0) {
                if (c->busy) {
                    errors++;
                    inflight--;
                }
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                c->busy = 0;
                continue;
            }
            c->inlen += (size_t)r;
            int status = 0;
            size_t len = response_len(c, &status);
            if (!len)
                continue;
            int64_t t = now_ns();
            if (status >= 200 && status < 300) {
                lat[done++] = t - c->due_ns;
                service_sum += t - c->sent_ns;
                ok++;
            } else {
                errors++;
            }
            c->busy = 0;
            inflight--;
        }
    }
    int64_t elapsed = now_ns() - t0;
    qsort(lat, (size_t)done, sizeof *lat, cmp_i64);
    double sum = 0;
    for (long i = 0; i < done; i++)
        sum += (double)lat[i];
#define PCT(p) (done ? (double)lat[(long)((double)(done - 1) * (p))] / 1e6 : 0)
    printf("sent=%ld ok=%ld errors=%ld rate=%.0f avg_ms=%.3f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f "
           "service_avg_ms=%.3f\n",
           next, ok, errors, (double)done / ((double)elapsed / 1e9), done ? sum / (double)done / 1e6 : 0, PCT(0.50),
           PCT(0.90), PCT(0.99), done ? (double)lat[done - 1] / 1e6 : 0,
           done ? (double)service_sum / (double)done / 1e6 : 0);
    return errors ? 1 : 0;
}
