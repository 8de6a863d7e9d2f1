/*
 * ws_load.c - WebSocket load generator for Pulse's /api/v1/stream (driven by
 * bench/ws.sh; see bench/README.md). One epoll thread per process; run several
 * processes, each under the machine's open-files cap.
 *
 *   ws_load sessions --tokens FILE --first I --count N --targets H:P[,H:P...]
 *                    [--src 127.0.0.2-127.0.0.9] [--inflight 256] [--timeout-s 30]
 *                    [--retries 2] --out PREFIX
 *       Opens N sessions with the tokens on lines I..I+N-1 of FILE ("user_id token"
 *       per line); line k goes to target k % ntargets from source address
 *       k % nsrc (bound before connect, port chosen at connect). A session
 *       counts as open when its first frame, the pl.realtime.ready.v1 control
 *       event, arrives. When every session is open or has failed, writes
 *       PREFIX.connected (the line numbers of the open ones) and PREFIX.ramp
 *       (key=value counts). Then receives until SIGTERM or SIGINT, and writes
 *       PREFIX.hist (latency histogram) and PREFIX.result. Answers pings;
 *       every frame it sends is masked.
 *       Latency = receive time (CLOCK_REALTIME, taken right after recv()) -
 *       data.sent_at_ns of every event carrying a "wsb" sequence number.
 *
 *   ws_load drive --api H:P --tokens FILE --connected FILE[,FILE...] --rate R --seconds S
 *                 [--mix 90:1,9:50,1:1000] [--conns 4] [--batch 50] [--tx one|each] [--seed N]
 *                 --out FILE
 *       POSTs R pl.testkit.push.v1 events a second for S seconds to
 *       /api/v1/testkit/pushes over keep-alive connections: whenever a
 *       connection is idle it carries the events that are due (at most
 *       --batch), committed by the server in one transaction (--tx one, the
 *       default: a group commit of the events due together) or one transaction
 *       each (--tx each); each event goes to 1, 50 or 1,000 distinct
 *       users drawn from the open sessions, in the given percentages. Writes
 *       key=value results to FILE (expected deliveries among them).
 *
 *   ws_load report FILE...
 *       Merges .hist files (percentiles) and key=value files (sums; max_* keys
 *       take the maximum) and prints key=value lines.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* ---- small helpers ------------------------------------------------------------------- */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ws_load: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

static int64_t clock_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
static int64_t rt_ns(void) { return clock_ns(CLOCK_REALTIME); }
static int64_t mono_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void) /* xorshift64*: a benchmark's draws, not secrets */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static void raise_nofile(void)
{
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* "H:P" -> sockaddr_in */
static void parse_hostport(const char *s, struct sockaddr_in *out)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host)
        die("bad address %s (want HOST:PORT)", s);
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &out->sin_addr) != 1)
        die("bad IPv4 address %s", host);
}

/* The integer after "key": in a JSON text (our own events; no nesting tricks). */
static bool json_int_after(const char *s, size_t n, const char *key, int64_t *out)
{
    size_t kl = strlen(key);
    const char *p = memmem(s, n, key, kl);
    if (!p)
        return false;
    const char *end = s + n;
    p += kl;
    while (p < end && (*p == ' ' || *p == ':'))
        p++;
    bool neg = p < end && *p == '-';
    p += neg;
    if (p >= end || *p < '0' || *p > '9')
        return false;
    int64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9')
        v = v * 10 + (*p++ - '0');
    *out = neg ? -v : v;
    return true;
}

/* ---- latency histogram: 1 µs buckets below 2,048 µs, then 1,024 per octave (0.1%) ------ */

#define HIST_N 32768

static int hist_index(uint64_t us)
{
    if (us < 2048)
        return (int)us;
    int e = 63 - __builtin_clzll(us);
    if (e > 40)
        return HIST_N - 1;
    return 2048 + (e - 11) * 1024 + (int)((us >> (e - 10)) & 1023);
}

static uint64_t hist_lower(int i)
{
    if (i < 2048)
        return (uint64_t)i;
    int e = 11 + (i - 2048) / 1024;
    return (uint64_t)(1024 + (i - 2048) % 1024) << (e - 10);
}

/* ---- tokens file --------------------------------------------------------------------- */

typedef struct {
    char uid[40];
    char tok[64];
} cred;

/* Lines first..first+count-1 (count < 0: all). */
static cred *load_tokens(const char *path, long first, long count, long *n_out)
{
    FILE *f = fopen(path, "r");
    if (!f)
        die("cannot open %s: %s", path, strerror(errno));
    cred *c = NULL;
    long n = 0, cap = 0, line = 0;
    char buf[256];
    while (fgets(buf, sizeof buf, f)) {
        if (line++ < first)
            continue;
        if (count >= 0 && n >= count)
            break;
        if (n == cap)
            c = xrealloc(c, (size_t)(cap = cap ? cap * 2 : 1024) * sizeof *c);
        if (sscanf(buf, "%39s %63s", c[n].uid, c[n].tok) != 2)
            die("%s:%ld: want \"user_id token\"", path, line);
        n++;
    }
    fclose(f);
    if (count >= 0 && n < count)
        die("%s has %ld lines from line %ld, %ld wanted", path, n, first, count);
    *n_out = n;
    return c;
}

/* ---- key=value output ---------------------------------------------------------------- */

static FILE *open_out(const char *prefix, const char *ext, char *tmp, size_t size)
{
    snprintf(tmp, size, "%s%s.tmp", prefix, ext);
    FILE *f = fopen(tmp, "w");
    if (!f)
        die("cannot write %s: %s", tmp, strerror(errno));
    return f;
}

/* Written under a temporary name and renamed: a reader polling for the file sees it whole. */
static void close_out(FILE *f, const char *tmp)
{
    char final[1024];
    snprintf(final, sizeof final, "%.*s", (int)(strlen(tmp) - 4), tmp);
    if (fclose(f) || rename(tmp, final))
        die("cannot write %s: %s", final, strerror(errno));
}

/* ======================================================================================= */
/* sessions                                                                               */
/* ======================================================================================= */

enum { S_IDLE, S_CONNECTING, S_HANDSHAKE, S_OPEN, S_READY, S_DONE };

typedef struct conn {
    int fd;
    uint8_t state;
    uint8_t tries;
    uint32_t idx;      /* position in this process's slice */
    int64_t t0;        /* mono ns when the attempt started */
    char *in;          /* bytes not yet parsed (HTTP head or a partial frame) */
    uint32_t inlen, incap;
    char *msg;         /* a fragmented message being collected */
    uint32_t msglen, msgcap;
    char *out;         /* bytes the socket did not take yet */
    uint32_t outlen, outoff;
} conn;

typedef struct {
    /* configuration */
    cred *creds;
    long n;
    long first;
    struct sockaddr_in *targets;
    int ntargets;
    struct in_addr *srcs;
    int nsrc;
    int inflight_max;
    int64_t timeout_ns;
    int retries;
    const char *prefix;
    /* state */
    int ep;
    conn *c;
    long next;        /* next slice position never tried */
    long *retry_q;    /* positions waiting for another try */
    long nretry, retry_cap;
    long inflight;
    long ready, failed, settled;
    int64_t t_start;
    bool ramp_written;
    /* counters */
    uint64_t connect_err, http_err, http_401, http_503, timeouts, closed_early, retried;
    uint64_t closed_later, pings, other_msgs, received, dups, neg_lat, bad_frames;
    uint64_t *hist;
    uint64_t lat_max_us;
    uint64_t *hs_hist;  /* handshake times (connect to ready) */
    /* duplicate detection: (seq, session) pairs seen */
    uint64_t *seen;
    uint64_t seen_cap, seen_n;
} sess;

static volatile sig_atomic_t g_stop;
static void on_signal(int s) { (void)s; g_stop = 1; }

static bool seen_add(sess *s, uint64_t key)
{
    key += 1; /* 0 marks an empty slot */
    if (s->seen_n * 2 >= s->seen_cap) {
        uint64_t ncap = s->seen_cap ? s->seen_cap * 2 : 1u << 16, *nt = calloc(ncap, sizeof *nt);
        if (!nt)
            die("out of memory");
        for (uint64_t i = 0; i < s->seen_cap; i++)
            if (s->seen[i]) {
                uint64_t h = (s->seen[i] * 0x9e3779b97f4a7c15ull) & (ncap - 1);
                while (nt[h])
                    h = (h + 1) & (ncap - 1);
                nt[h] = s->seen[i];
            }
        free(s->seen);
        s->seen = nt;
        s->seen_cap = ncap;
    }
    uint64_t h = (key * 0x9e3779b97f4a7c15ull) & (s->seen_cap - 1);
    while (s->seen[h]) {
        if (s->seen[h] == key)
            return false;
        h = (h + 1) & (s->seen_cap - 1);
    }
    s->seen[h] = key;
    s->seen_n++;
    return true;
}

static void write_ramp(sess *s);

static void conn_reset(sess *s, conn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    free(c->in);
    free(c->msg);
    free(c->out);
    c->in = c->msg = c->out = NULL;
    c->inlen = c->incap = c->msglen = c->msgcap = c->outlen = c->outoff = 0;
}

/* An attempt failed before the session opened: try again later or give up. */
static void attempt_failed(sess *s, conn *c)
{
    conn_reset(s, c);
    s->inflight--;
    if (c->tries <= s->retries) {
        if (s->nretry == s->retry_cap)
            s->retry_q = xrealloc(s->retry_q, (size_t)(s->retry_cap = s->retry_cap ? s->retry_cap * 2 : 256) *
                                                  sizeof *s->retry_q);
        s->retry_q[s->nretry++] = c->idx;
        s->retried++;
        c->state = S_IDLE;
    } else {
        c->state = S_DONE;
        s->failed++;
        s->settled++;
    }
}

/* The session closed after it opened (the server hung up, or a protocol error). */
static void session_lost(sess *s, conn *c)
{
    conn_reset(s, c);
    c->state = S_DONE;
    s->closed_later++;
}

static void conn_fail(sess *s, conn *c)
{
    if (c->state == S_READY)
        session_lost(s, c);
    else
        attempt_failed(s, c);
}

/* Sends what it can; keeps the rest for EPOLLOUT. */
static int conn_send(sess *s, conn *c, const void *buf, size_t len)
{
    if (c->outlen) { /* already behind: queue */
        c->out = xrealloc(c->out, c->outlen + len);
        memcpy(c->out + c->outlen, buf, len);
        c->outlen += (uint32_t)len;
        return 0;
    }
    ssize_t w = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        return -1;
    if (w < 0)
        w = 0;
    if ((size_t)w < len) {
        c->out = xrealloc(NULL, len - (size_t)w);
        memcpy(c->out, (const char *)buf + w, len - (size_t)w);
        c->outlen = (uint32_t)(len - (size_t)w);
        c->outoff = 0;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = c->idx};
        epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    return 0;
}

static int conn_flush(sess *s, conn *c)
{
    while (c->outoff < c->outlen) {
        ssize_t w = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (w < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        c->outoff += (uint32_t)w;
    }
    free(c->out);
    c->out = NULL;
    c->outlen = c->outoff = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = c->idx};
    epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &ev);
    return 0;
}

/* A client frame: FIN, opcode, masked (RFC 6455 §5.3), payload <= 125 bytes. */
static int send_control(sess *s, conn *c, int opcode, const uint8_t *p, size_t n)
{
    uint8_t f[2 + 4 + 125];
    if (n > 125)
        n = 125;
    uint32_t mask = (uint32_t)rng();
    f[0] = (uint8_t)(0x80 | opcode);
    f[1] = (uint8_t)(0x80 | n);
    memcpy(f + 2, &mask, 4);
    for (size_t i = 0; i < n; i++)
        f[6 + i] = p[i] ^ f[2 + (i & 3)];
    return conn_send(s, c, f, 6 + n);
}

static void start_attempt(sess *s, long i)
{
    conn *c = &s->c[i];
    c->tries++;
    c->t0 = mono_ns();
    s->inflight++;
    long line = s->first + i;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s (raise ulimit -n or run more processes)", strerror(errno));
    c->fd = fd;
    c->state = S_CONNECTING;
    if (s->nsrc) {
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr = s->srcs[(line / s->ntargets) % s->nsrc]};
        if (bind(fd, (struct sockaddr *)&a, sizeof a)) {
            s->connect_err++;
            attempt_failed(s, c);
            return;
        }
    }
    const struct sockaddr_in *t = &s->targets[line % s->ntargets];
    if (connect(fd, (const struct sockaddr *)t, sizeof *t) && errno != EINPROGRESS) {
        s->connect_err++;
        attempt_failed(s, c);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
    if (epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &ev))
        die("epoll_ctl: %s", strerror(errno));
}

static void send_upgrade(sess *s, conn *c)
{
    long line = s->first + c->idx;
    const struct sockaddr_in *t = &s->targets[line % s->ntargets];
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char key[25];
    for (int k = 0; k < 21; k++)
        key[k] = b64[rng() % 64];
    key[21] = b64[(rng() % 4) * 16]; /* 16 bytes = 22 chars, the last one carrying 2 bits, then "==" */
    key[22] = key[23] = '=';
    key[24] = 0;
    char addr[32], req[512];
    inet_ntop(AF_INET, &t->sin_addr, addr, sizeof addr);
    int n = snprintf(req, sizeof req,
                     "GET /api/v1/stream HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n",
                     addr, ntohs(t->sin_port), key, s->creds[c->idx].tok);
    c->state = S_HANDSHAKE;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = c->idx};
    epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &ev);
    if (conn_send(s, c, req, (size_t)n))
        conn_fail(s, c);
}

static void on_message(sess *s, conn *c, const char *m, size_t n, int64_t now_rt)
{
    if (c->state == S_OPEN) {
        if (memmem(m, n, "pl.realtime.ready.v1", 20)) {
            c->state = S_READY;
            s->inflight--;
            s->ready++;
            s->settled++;
            s->hs_hist[hist_index((uint64_t)(mono_ns() - c->t0) / 1000)]++;
            return;
        }
    }
    int64_t seq, sent;
    if (!json_int_after(m, n, "\"wsb\"", &seq) || !json_int_after(m, n, "\"sent_at_ns\"", &sent)) {
        s->other_msgs++;
        return;
    }
    if (!seen_add(s, ((uint64_t)seq << 24) | c->idx)) {
        s->dups++;
        return;
    }
    s->received++;
    int64_t lat = now_rt - sent;
    if (lat < 0) {
        s->neg_lat++;
        lat = 0;
    }
    uint64_t us = (uint64_t)lat / 1000;
    s->hist[hist_index(us)]++;
    if (us > s->lat_max_us)
        s->lat_max_us = us;
}

/* Parses frames from buf; returns bytes consumed, or -1 to drop the connection. */
static long parse_frames(sess *s, conn *c, char *buf, size_t len, int64_t now_rt)
{
    size_t off = 0;
    while (len - off >= 2) {
        uint8_t *p = (uint8_t *)buf + off;
        int fin = p[0] & 0x80, op = p[0] & 0x0f, masked = p[1] & 0x80;
        uint64_t plen = p[1] & 0x7f;
        size_t h = 2;
        if (plen == 126) {
            if (len - off < 4)
                break;
            plen = (uint64_t)p[2] << 8 | p[3];
            h = 4;
        } else if (plen == 127) {
            if (len - off < 10)
                break;
            plen = 0;
            for (int k = 0; k < 8; k++)
                plen = plen << 8 | p[2 + k];
            h = 10;
        }
        if (plen > (64u << 20)) {
            s->bad_frames++;
            return -1;
        }
        size_t mk = masked ? 4 : 0;
        if (len - off < h + mk + plen)
            break;
        uint8_t *pl = p + h + mk;
        if (masked) /* servers must not mask; tolerate it */
            for (uint64_t k = 0; k < plen; k++)
                pl[k] ^= p[h + (k & 3)];
        off += h + mk + plen;
        switch (op) {
        case 0x0: /* continuation */
        case 0x1:
        case 0x2:
            if (op == 0x0 && !c->msg) {
                s->bad_frames++;
                return -1;
            }
            if (fin && op != 0x0) {
                on_message(s, c, (const char *)pl, plen, now_rt);
                break;
            }
            if (c->msglen + plen > c->msgcap)
                c->msg = xrealloc(c->msg, c->msgcap = (uint32_t)(c->msglen + plen) * 2);
            memcpy(c->msg + c->msglen, pl, plen);
            c->msglen += (uint32_t)plen;
            if (fin) {
                on_message(s, c, c->msg, c->msglen, now_rt);
                free(c->msg);
                c->msg = NULL;
                c->msglen = c->msgcap = 0;
            }
            break;
        case 0x8: /* close: answer it, then hang up */
            send_control(s, c, 0x8, pl, plen >= 2 ? 2 : 0);
            return -1;
        case 0x9:
            s->pings++;
            if (send_control(s, c, 0xA, pl, plen))
                return -1;
            break;
        case 0xA:
            break;
        default:
            s->bad_frames++;
            return -1;
        }
        if (c->fd < 0)
            return -1;
    }
    return (long)off;
}

/* The HTTP head of the upgrade answer; returns bytes consumed, 0 when incomplete, -1 on failure. */
static long parse_head(sess *s, conn *c, const char *buf, size_t len)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return len > 8192 ? -1 : 0;
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 || status != 101) {
        s->http_err++;
        s->http_401 += status == 401;
        s->http_503 += status == 503;
        return -1;
    }
    c->state = S_OPEN;
    return end + 4 - buf;
}

static char g_rbuf[256 * 1024];

static void on_readable(sess *s, conn *c)
{
    for (;;) {
        ssize_t r = recv(c->fd, g_rbuf, sizeof g_rbuf, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            if (c->state != S_READY)
                s->closed_early++;
            conn_fail(s, c);
            return;
        }
        if (r < 0)
            return;
        int64_t now = rt_ns();
        char *buf = g_rbuf;
        size_t len = (size_t)r;
        if (c->inlen) { /* continue what is pending */
            if (c->inlen + len > c->incap)
                c->in = xrealloc(c->in, c->incap = (uint32_t)(c->inlen + len) * 2);
            memcpy(c->in + c->inlen, buf, len);
            c->inlen += (uint32_t)len;
            buf = c->in;
            len = c->inlen;
        }
        size_t off = 0;
        if (c->state == S_HANDSHAKE) {
            long h = parse_head(s, c, buf, len);
            if (h < 0) {
                conn_fail(s, c);
                return;
            }
            off = (size_t)h;
        }
        if (c->state == S_OPEN || c->state == S_READY) {
            long k = parse_frames(s, c, buf + off, len - off, now);
            if (k < 0) {
                conn_fail(s, c);
                return;
            }
            off += (size_t)k;
        }
        size_t rest = len - off;
        if (rest == 0) {
            free(c->in);
            c->in = NULL;
            c->inlen = c->incap = 0;
        } else if (buf == c->in) {
            memmove(c->in, c->in + off, rest);
            c->inlen = (uint32_t)rest;
        } else {
            c->in = xrealloc(NULL, c->incap = (uint32_t)rest * 2);
            memcpy(c->in, buf + off, rest);
            c->inlen = (uint32_t)rest;
        }
        if ((size_t)r < sizeof g_rbuf)
            return;
    }
}

static void on_event(sess *s, conn *c, uint32_t events)
{
    if (c->fd < 0)
        return;
    if (c->state == S_CONNECTING) {
        int e = 0;
        socklen_t el = sizeof e;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &el);
        if (e || (events & (EPOLLERR | EPOLLHUP))) {
            s->connect_err++;
            attempt_failed(s, c);
            return;
        }
        send_upgrade(s, c);
        return;
    }
    if ((events & EPOLLOUT) && c->outlen && conn_flush(s, c)) {
        conn_fail(s, c);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(s, c);
}

static void hist_write(const char *prefix, const char *ext, const uint64_t *h)
{
    char tmp[1024];
    FILE *f = open_out(prefix, ext, tmp, sizeof tmp);
    for (int i = 0; i < HIST_N; i++)
        if (h[i])
            fprintf(f, "%" PRIu64 " %" PRIu64 "\n", hist_lower(i), h[i]);
    close_out(f, tmp);
}

static void write_ramp(sess *s)
{
    char tmp[1024];
    FILE *f = open_out(s->prefix, ".connected", tmp, sizeof tmp);
    for (long i = 0; i < s->n; i++)
        if (s->c[i].state == S_READY)
            fprintf(f, "%ld\n", s->first + i);
    close_out(f, tmp);
    hist_write(s->prefix, ".hshist", s->hs_hist);
    f = open_out(s->prefix, ".ramp", tmp, sizeof tmp);
    fprintf(f,
            "sessions=%ld\nready=%ld\nfailed=%ld\nconnect_err=%" PRIu64 "\nhttp_err=%" PRIu64 "\nhttp_401=%" PRIu64
            "\nhttp_503=%" PRIu64 "\ntimeouts=%" PRIu64 "\nclosed_early=%" PRIu64 "\nretried=%" PRIu64
            "\nmax_ramp_ms=%.0f\n",
            s->n, s->ready, s->failed, s->connect_err, s->http_err, s->http_401, s->http_503, s->timeouts,
            s->closed_early, s->retried, (mono_ns() - s->t_start) / 1e6);
    close_out(f, tmp);
    s->ramp_written = true;
}

static void write_result(sess *s)
{
    hist_write(s->prefix, ".hist", s->hist);
    char tmp[1024];
    FILE *f = open_out(s->prefix, ".result", tmp, sizeof tmp);
    long open_now = 0;
    for (long i = 0; i < s->n; i++)
        open_now += s->c[i].state == S_READY;
    fprintf(f,
            "received=%" PRIu64 "\ndups=%" PRIu64 "\nopen_at_end=%ld\nclosed_later=%" PRIu64 "\npings=%" PRIu64
            "\nother_msgs=%" PRIu64 "\nneg_latency=%" PRIu64 "\nbad_frames=%" PRIu64 "\nmax_latency_us=%" PRIu64 "\n",
            s->received, s->dups, open_now, s->closed_later, s->pings, s->other_msgs, s->neg_lat, s->bad_frames,
            s->lat_max_us);
    close_out(f, tmp);
}

static void parse_srcs(sess *s, const char *spec)
{
    /* "127.0.0.2-127.0.0.9" or "127.0.0.2,127.0.0.3" */
    char buf[512];
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *dash = strchr(tok, '-');
        struct in_addr a, b;
        if (dash)
            *dash = 0;
        if (inet_pton(AF_INET, tok, &a) != 1 || (dash && inet_pton(AF_INET, dash + 1, &b) != 1))
            die("bad --src %s", spec);
        uint32_t lo = ntohl(a.s_addr), hi = dash ? ntohl(b.s_addr) : lo;
        for (uint32_t v = lo; v <= hi; v++) {
            s->srcs = xrealloc(s->srcs, (size_t)(s->nsrc + 1) * sizeof *s->srcs);
            s->srcs[s->nsrc++].s_addr = htonl(v);
        }
    }
}

static int cmd_sessions(int argc, char **argv)
{
    sess S = {.inflight_max = 256, .timeout_ns = 30 * 1000000000ll, .retries = 2};
    sess *s = &S;
    const char *tokens = NULL;
    long count = -1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            die("%s needs a value", a);
        i++;
        if (!strcmp(a, "--tokens"))
            tokens = v;
        else if (!strcmp(a, "--first"))
            s->first = atol(v);
        else if (!strcmp(a, "--count"))
            count = atol(v);
        else if (!strcmp(a, "--targets")) {
            char buf[1024];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                s->targets = xrealloc(s->targets, (size_t)(s->ntargets + 1) * sizeof *s->targets);
                parse_hostport(t, &s->targets[s->ntargets++]);
            }
        } else if (!strcmp(a, "--src"))
            parse_srcs(s, v);
        else if (!strcmp(a, "--inflight"))
            s->inflight_max = atoi(v);
        else if (!strcmp(a, "--timeout-s"))
            s->timeout_ns = atol(v) * 1000000000ll;
        else if (!strcmp(a, "--retries"))
            s->retries = atoi(v);
        else if (!strcmp(a, "--out"))
            s->prefix = v;
        else
            die("unknown option %s", a);
    }
    if (!tokens || count < 1 || !s->ntargets || !s->prefix)
        die("sessions needs --tokens, --count, --targets and --out");
    raise_nofile();
    s->creds = load_tokens(tokens, s->first, count, &s->n);
    rng_state ^= (uint64_t)getpid() * 0x100000001b3ull ^ (uint64_t)mono_ns();
    s->c = calloc((size_t)s->n, sizeof *s->c);
    s->hist = calloc(HIST_N, sizeof *s->hist);
    s->hs_hist = calloc(HIST_N, sizeof *s->hs_hist);
    if (!s->c || !s->hist || !s->hs_hist)
        die("out of memory");
    for (long i = 0; i < s->n; i++) {
        s->c[i].fd = -1;
        s->c[i].idx = (uint32_t)i;
    }
    if ((s->ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1: %s", strerror(errno));
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    s->t_start = mono_ns();
    int64_t last_sweep = 0;
    enum { MAXEV = 1024 };
    struct epoll_event evs[MAXEV];
    while (!g_stop) {
        /* start attempts while the in-flight window allows */
        while (s->inflight < s->inflight_max && (s->nretry || s->next < s->n)) {
            long i = s->next < s->n ? s->next++ : s->retry_q[--s->nretry];
            start_attempt(s, i);
        }
        if (!s->ramp_written && s->settled == s->n)
            write_ramp(s);
        int n = epoll_wait(s->ep, evs, MAXEV, 100);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int k = 0; k < n; k++)
            on_event(s, &s->c[evs[k].data.u32], evs[k].events);
        int64_t now = mono_ns();
        if (now - last_sweep > 200000000 && s->inflight) { /* time out attempts that hang */
            last_sweep = now;
            for (long i = 0; i < s->n; i++) {
                conn *c = &s->c[i];
                if ((c->state == S_CONNECTING || c->state == S_HANDSHAKE || c->state == S_OPEN) &&
                    now - c->t0 > s->timeout_ns) {
                    s->timeouts++;
                    attempt_failed(s, c);
                }
            }
        }
    }
    if (!s->ramp_written)
        write_ramp(s);
    write_result(s);
    return 0;
}

/* ======================================================================================= */
/* drive                                                                                  */
/* ======================================================================================= */

typedef struct {
    int fd;
    bool busy;
    char *req;
    size_t reqlen, reqcap, reqoff;
    char *resp;
    size_t resplen, respcap;
    long batch_n;           /* events in the request in flight */
    uint64_t batch_recips;  /* their deliveries */
    int64_t t_sent;
} hconn;

typedef struct {
    int pct;
    int users;
} mix_part;

static void buf_add(hconn *h, const char *p, size_t n)
{
    if (h->reqlen + n > h->reqcap)
        h->req = xrealloc(h->req, h->reqcap = (h->reqlen + n) * 2 + 4096);
    memcpy(h->req + h->reqlen, p, n);
    h->reqlen += n;
}

static int dial(const struct sockaddr_in *a)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (const struct sockaddr *)a, sizeof *a))
        die("cannot connect to the API: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    set_nonblock(fd);
    return fd;
}

static int cmd_drive(int argc, char **argv)
{
    const char *api = NULL, *tokens = NULL, *connected = NULL, *out = NULL, *mixspec = "90:1,9:50,1:1000";
    const char *txmode = "one";
    double rate = 2000, seconds = 30;
    int nconns = 4, batch = 50;
    uint64_t seed = 42;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            die("%s needs a value", a);
        i++;
        if (!strcmp(a, "--api"))
            api = v;
        else if (!strcmp(a, "--tokens"))
            tokens = v;
        else if (!strcmp(a, "--connected"))
            connected = v;
        else if (!strcmp(a, "--rate"))
            rate = atof(v);
        else if (!strcmp(a, "--seconds"))
            seconds = atof(v);
        else if (!strcmp(a, "--mix"))
            mixspec = v;
        else if (!strcmp(a, "--conns"))
            nconns = atoi(v);
        else if (!strcmp(a, "--batch"))
            batch = atoi(v);
        else if (!strcmp(a, "--tx"))
            txmode = v;
        else if (!strcmp(a, "--seed"))
            seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--out"))
            out = v;
        else
            die("unknown option %s", a);
    }
    if (!api || !tokens || !connected || !out || rate <= 0 || seconds <= 0 || nconns < 1 || batch < 1)
        die("drive needs --api, --tokens, --connected, --out, and positive --rate/--seconds/--conns/--batch");
    if (strcmp(txmode, "one") != 0 && strcmp(txmode, "each") != 0)
        die("--tx is one or each");
    rng_state ^= seed * 0x100000001b3ull;

    mix_part mix[8];
    int nmix = 0, pct_total = 0;
    {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", mixspec);
        for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && nmix < 8; t = strtok_r(NULL, ",", &save)) {
            if (sscanf(t, "%d:%d", &mix[nmix].pct, &mix[nmix].users) != 2 || mix[nmix].pct < 0 ||
                mix[nmix].users < 1 || mix[nmix].users > 1000)
                die("bad --mix %s (want PCT:USERS,...; users 1..1000)", mixspec);
            pct_total += mix[nmix++].pct;
        }
        if (pct_total != 100)
            die("--mix percentages add up to %d, not 100", pct_total);
    }

    long nusers;
    cred *creds = load_tokens(tokens, 0, -1, &nusers);
    long *eligible = NULL, nel = 0, elcap = 0;
    {
        char buf[4096];
        snprintf(buf, sizeof buf, "%s", connected);
        for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            FILE *f = fopen(t, "r");
            if (!f)
                die("cannot open %s: %s", t, strerror(errno));
            long line;
            while (fscanf(f, "%ld", &line) == 1) {
                if (line < 0 || line >= nusers)
                    die("%s: line %ld is not in the tokens file", t, line);
                if (nel == elcap)
                    eligible = xrealloc(eligible, (size_t)(elcap = elcap ? elcap * 2 : 4096) * sizeof *eligible);
                eligible[nel++] = line;
            }
            fclose(f);
        }
    }
    if (nel == 0)
        die("no open sessions to send to");
    uint32_t *mark = calloc((size_t)nel, sizeof *mark), gen = 0;
    long *pick = calloc(1000, sizeof *pick);
    if (!mark || !pick)
        die("out of memory");

    struct sockaddr_in addr;
    parse_hostport(api, &addr);
    hconn *hc = calloc((size_t)nconns, sizeof *hc);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < nconns; i++) {
        hc[i].fd = dial(&addr);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, hc[i].fd, &ev);
    }
    signal(SIGPIPE, SIG_IGN);

    const long total = (long)(rate * seconds);
    long issued = 0;
    uint64_t committed = 0, failed = 0, expected = 0, posts = 0, commit_us_sum = 0, commit_us_max = 0;
    uint64_t by_mix[8] = {0};
    double max_backlog = 0;
    uint64_t post_ms_max = 0;
    int errors_shown = 0;
    const size_t body_max = 512 * 1024;
    int64_t t0 = mono_ns(), t_end_issue = 0;
    char tmpl[256];
    for (;;) {
        int64_t now = mono_ns();
        long due = (long)((double)(now - t0) / 1e9 * rate);
        if (due > total)
            due = total;
        if (due - issued > max_backlog)
            max_backlog = (double)(due - issued);
        /* hand due events to idle connections */
        for (int i = 0; i < nconns && issued < due; i++) {
            hconn *h = &hc[i];
            if (h->busy)
                continue;
            h->reqlen = h->reqoff = 0;
            h->batch_n = 0;
            h->batch_recips = 0;
            /* the body first (its length goes in the head): built after a gap the head fills in */
            const size_t head_room = 256;
            h->reqlen = head_room;
            buf_add(h, "{\"pushes\":[", 11);
            while (issued < due && h->batch_n < batch && h->reqlen + 1000 * 40 + 64 < body_max + head_room) {
                int r = (int)(rng() % 100), m = 0;
                for (int acc = mix[0].pct; r >= acc && m + 1 < nmix; acc += mix[++m].pct)
                    ;
                long want = mix[m].users < nel ? mix[m].users : nel;
                gen++;
                for (long k = 0; k < want;) {
                    long e = (long)(rng() % (uint64_t)nel);
                    if (mark[e] == gen)
                        continue;
                    mark[e] = gen;
                    pick[k++] = eligible[e];
                }
                if (h->batch_n)
                    buf_add(h, ",", 1);
                buf_add(h, "{\"user_ids\":[", 13);
                for (long k = 0; k < want; k++) {
                    int l = snprintf(tmpl, sizeof tmpl, "%s\"%s\"", k ? "," : "", creds[pick[k]].uid);
                    buf_add(h, tmpl, (size_t)l);
                }
                int l = snprintf(tmpl, sizeof tmpl, "],\"payload\":{\"wsb\":%ld}}", issued);
                buf_add(h, tmpl, (size_t)l);
                h->batch_n++;
                h->batch_recips += (uint64_t)want;
                by_mix[m]++;
                issued++;
            }
            int tl = snprintf(tmpl, sizeof tmpl, "],\"transaction\":\"%s\"}", txmode);
            buf_add(h, tmpl, (size_t)tl);
            size_t body_len = h->reqlen - head_room;
            int hl = snprintf(tmpl, sizeof tmpl,
                              "POST /api/v1/testkit/pushes HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                              "Content-Length: %zu\r\n\r\n",
                              api, body_len);
            h->reqoff = head_room - (size_t)hl;
            memcpy(h->req + h->reqoff, tmpl, (size_t)hl);
            h->busy = true;
            h->resplen = 0;
            h->t_sent = now;
            posts++;
            ssize_t w = send(h->fd, h->req + h->reqoff, h->reqlen - h->reqoff, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN)
                die("send to the API: %s", strerror(errno));
            if (w > 0)
                h->reqoff += (size_t)w;
            if (h->reqoff < h->reqlen) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i};
                epoll_ctl(ep, EPOLL_CTL_MOD, h->fd, &ev);
            }
        }
        bool any_busy = false;
        for (int i = 0; i < nconns; i++)
            any_busy |= hc[i].busy;
        if (issued == total && !t_end_issue)
            t_end_issue = now;
        if (issued == total && !any_busy)
            break;
        if (t_end_issue && now - t_end_issue > 30 * 1000000000ll)
            die("the API did not answer within 30 s");
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, 1);
        for (int k = 0; k < n; k++) {
            hconn *h = &hc[evs[k].data.u32];
            if (evs[k].events & EPOLLOUT) {
                ssize_t w = send(h->fd, h->req + h->reqoff, h->reqlen - h->reqoff, MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN)
                    die("send to the API: %s", strerror(errno));
                if (w > 0)
                    h->reqoff += (size_t)w;
                if (h->reqoff == h->reqlen) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[k].data.u32};
                    epoll_ctl(ep, EPOLL_CTL_MOD, h->fd, &ev);
                }
            }
            if (!(evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                continue;
            for (;;) {
                if (h->resplen + 65536 > h->respcap)
                    h->resp = xrealloc(h->resp, h->respcap = h->resplen + 65536 * 2);
                ssize_t r = recv(h->fd, h->resp + h->resplen, h->respcap - h->resplen - 1, 0);
                if (r == 0)
                    die("the API closed a keep-alive connection");
                if (r < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK)
                        break;
                    die("recv from the API: %s", strerror(errno));
                }
                h->resplen += (size_t)r;
            }
            h->resp[h->resplen] = 0;
            char *hend = strstr(h->resp, "\r\n\r\n");
            if (!hend)
                continue;
            const char *cl = strcasestr(h->resp, "\r\nContent-Length:");
            if (!cl || cl > hend)
                die("an API answer without Content-Length");
            size_t blen = strtoul(cl + 17, NULL, 10), hlen = (size_t)(hend + 4 - h->resp);
            if (h->resplen < hlen + blen)
                continue;
            int status = atoi(h->resp + 9);
            const char *body = h->resp + hlen;
            uint64_t ms = (uint64_t)(mono_ns() - h->t_sent) / 1000000;
            if (ms > post_ms_max)
                post_ms_max = ms;
            if (status == 201) {
                int64_t v;
                committed += (uint64_t)h->batch_n;
                expected += h->batch_recips;
                if (json_int_after(body, blen, "\"commit_us_sum\"", &v))
                    commit_us_sum += (uint64_t)v;
                if (json_int_after(body, blen, "\"commit_us_max\"", &v) && (uint64_t)v > commit_us_max)
                    commit_us_max = (uint64_t)v;
            } else {
                failed += (uint64_t)h->batch_n;
                if (errors_shown++ < 3)
                    fprintf(stderr, "ws_load: the API answered %d: %.*s\n", status, (int)(blen > 300 ? 300 : blen),
                            body);
            }
            if (h->resplen > hlen + blen)
                die("the API sent more than one answer");
            h->busy = false;
            h->resplen = 0;
        }
    }
    double elapsed = (double)(t_end_issue - t0) / 1e9;
    char tmp[1024];
    FILE *f = open_out(out, "", tmp, sizeof tmp);
    fprintf(f,
            "events=%ld\ncommitted=%" PRIu64 "\nfailed=%" PRIu64 "\nexpected=%" PRIu64 "\nposts=%" PRIu64
            "\nissue_seconds=%.3f\nrate_achieved=%.1f\nmax_backlog_events=%.0f\nmax_post_ms=%" PRIu64
            "\ncommit_us_mean=%.1f\nmax_commit_us=%" PRIu64 "\neligible_sessions=%ld\ntx=%s\n",
            total, committed, failed, expected, posts, elapsed, elapsed > 0 ? (double)issued / elapsed : 0.0,
            max_backlog, post_ms_max, committed ? (double)commit_us_sum / (double)committed : 0.0, commit_us_max, nel,
            txmode);
    for (int m = 0; m < nmix; m++)
        fprintf(f, "mix_%d_users=%" PRIu64 "\n", mix[m].users, by_mix[m]);
    close_out(f, tmp);
    return failed ? 3 : 0;
}

/* ======================================================================================= */
/* report                                                                                 */
/* ======================================================================================= */

static int cmd_report(int argc, char **argv)
{
    uint64_t *h = calloc(HIST_N, sizeof *h), *hs = calloc(HIST_N, sizeof *hs);
    struct {
        char key[64];
        double v;
    } kv[128];
    int nkv = 0;
    if (!h || !hs)
        die("out of memory");
    for (int i = 0; i < argc; i++) {
        FILE *f = fopen(argv[i], "r");
        if (!f)
            die("cannot open %s: %s", argv[i], strerror(errno));
        size_t L = strlen(argv[i]);
        bool is_hs = L > 7 && !strcmp(argv[i] + L - 7, ".hshist");
        bool is_hist = is_hs || (L > 5 && !strcmp(argv[i] + L - 5, ".hist"));
        char line[256];
        while (fgets(line, sizeof line, f)) {
            if (is_hist) {
                uint64_t lo, n;
                if (sscanf(line, "%" SCNu64 " %" SCNu64, &lo, &n) == 2)
                    (is_hs ? hs : h)[hist_index(lo)] += n;
                continue;
            }
            char *eq = strchr(line, '=');
            if (!eq || eq - line >= 64)
                continue;
            *eq = 0;
            double v = atof(eq + 1);
            int k = 0;
            while (k < nkv && strcmp(kv[k].key, line))
                k++;
            if (k == nkv) {
                if (nkv == 128)
                    continue;
                snprintf(kv[nkv].key, sizeof kv[nkv].key, "%s", line);
                kv[nkv++].v = v;
            } else if (!strncmp(line, "max_", 4))
                kv[k].v = v > kv[k].v ? v : kv[k].v;
            else
                kv[k].v += v;
        }
        fclose(f);
    }
    for (int k = 0; k < nkv; k++)
        printf("%s=%.10g\n", kv[k].key, kv[k].v);
    for (int pass = 0; pass < 2; pass++) {
        const uint64_t *H = pass ? hs : h;
        const char *name = pass ? "handshake" : "latency";
        uint64_t total = 0;
        double sum = 0;
        for (int i = 0; i < HIST_N; i++) {
            total += H[i];
            sum += (double)H[i] * (double)hist_lower(i);
        }
        printf("%s_count=%" PRIu64 "\n", name, total);
        if (!total)
            continue;
        static const double qs[] = {0.5, 0.9, 0.99, 0.999, 1.0};
        static const char *const qn[] = {"p50", "p90", "p99", "p999", "max"};
        for (int q = 0; q < 5; q++) {
            uint64_t want = (uint64_t)((double)total * qs[q] + 0.999999), acc = 0;
            if (want < 1)
                want = 1;
            int i = 0;
            for (; i < HIST_N; i++)
                if ((acc += H[i]) >= want)
                    break;
            printf("%s_%s_ms=%.3f\n", name, qn[q], (double)hist_lower(i < HIST_N ? i : HIST_N - 1) / 1000.0);
        }
        printf("%s_mean_ms=%.3f\n", name, sum / (double)total / 1000.0);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        die("usage: ws_load sessions|drive|report ... (see the comment at the top of bench/ws_load.c)");
    if (!strcmp(argv[1], "sessions"))
        return cmd_sessions(argc - 2, argv + 2);
    if (!strcmp(argv[1], "drive"))
        return cmd_drive(argc - 2, argv + 2);
    if (!strcmp(argv[1], "report"))
        return cmd_report(argc - 2, argv + 2);
    die("unknown command %s", argv[1]);
}
