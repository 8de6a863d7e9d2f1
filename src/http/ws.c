/*
 * ws.c - the WebSocket hub (see ws.h for the contract).
 *
 * One thread per hub runs epoll over its session sockets, an eventfd that
 * wakes it for commands, and a one-second tick for pings, idle and stall
 * checks. wslay's event API parses client frames, answers pings and runs the
 * close handshake; its output (control frames only) is copied into a small
 * per-session buffer so header and payload leave in one send(). Data frames
 * never go through wslay's queue: they are encoded once by wslay's frame
 * layer (ws_frame_text) and the same bytes are written to every recipient.
 *
 * Output order per session: the control buffer first, then wslay's queue,
 * then our frames; wslay is only asked to produce output between two of our
 * frames, so frames never interleave on the wire.
 *
 * Memory: a wslay event context is about 9 KiB, more than everything else a
 * session holds, and an idle session needs none. So it exists only while
 * needed: created when the client sends something or a ping or close goes
 * out, freed again once its output is written and the client's byte stream
 * stands exactly between two frames outside a fragmented message (scan_rx
 * follows the frame boundaries of what is fed to wslay), when wslay holds no
 * state worth keeping.
 */
#include "http/ws.h"
#include "core/log.h"
#include "core/timeutil.h"

#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wslay/wslay.h>

struct ws_frame {
    atomic_int refs;
    size_t len;
    char tag[40];
    unsigned char data[];
};

typedef struct sess sess;
struct sess {
    uint64_t id;
    int fd;
    struct MHD_UpgradeResponseHandle *urh;
    wslay_event_context_ptr wctx;
    char *key;
    void *sdata;
    sess *id_next, *key_next; /* hash chains */
    ws_frame **q;             /* ring of frames to write */
    uint32_t qcap, qhead, qlen;
    size_t off;               /* bytes of q[qhead] already written */
    unsigned char *extra;     /* bytes MHD read past the request headers */
    size_t extra_len, extra_off;
    uint16_t pend_len;
    bool held, closing, epollout, dead, idle;
    int close_code;
    int64_t last_rx_ms, last_progress_ms, next_ping_ms, close_deadline_ms;
    uint64_t drops;
    char drop_first[40], drop_last[40];
    /* where the client's byte stream stands between frames (see scan_rx) */
    uint64_t rx_left;         /* payload bytes of the current frame still to come */
    uint8_t rx_hdr[14], rx_hlen;
    bool rx_msg_open;         /* a fragmented data message has begun */
    bool rx_too_big;          /* a frame header announced more than WS_MAX_RECV */
    size_t rx_budget;         /* bytes ev_recv may still read in this turn */
    unsigned char pend[160];  /* wslay's control frames waiting for the socket */
};

enum { CMD_ADD, CMD_PUBLISH, CMD_RELEASE, CMD_CLOSE, CMD_SHUTDOWN };

typedef struct cmd {
    int kind;
    uint64_t sid;
    sess *s;                  /* CMD_ADD */
    ws_frame *frame;          /* PUBLISH: the frame; RELEASE: ready */
    char **keys;              /* PUBLISH */
    size_t nkeys;
    ws_frame **frames;        /* RELEASE: the replay */
    size_t nframes;
    int code;
    char reason[64];
    struct cmd *next;
} cmd;

#define KEY_BUCKETS 4096
#define WS_MAX_RECV 4096 /* clients send pings and tiny messages only */
/* Bytes read from one session per readiness: a client that sends without
 * pause must not hold the hub thread (epoll is level-triggered, so the rest
 * is read on the next turn, after every other ready session). */
#define WS_RX_BUDGET (64 * 1024)
/* Control frames (pongs, the close) wslay may hold for a session whose
 * socket does not drain: a client that pings without reading is cut off
 * here instead of growing the queue until the stall timeout. */
#define WS_MAX_QUEUED_CONTROL 64
#define ID_BUCKETS 4096

struct ws_hub {
    ws_hub_opts o;
    ws_hub_cbs cb;
    void *ud;
    int ep, evfd;
    pthread_t thread;
    pthread_mutex_t lock;     /* the command queue, shutdown handshake */
    pthread_cond_t cond;
    cmd *head, *tail;
    bool stop, shut_done;
    int shut_timeout_ms;
    int64_t shut_deadline_ms;
    bool shutting;
    /* set when the stop begins: an upgrade finishing after it is closed on
     * MHD's thread, never handed to a hub that may be gone before MHD is */
    atomic_bool refusing;
    atomic_uint_fast64_t next_sid;
    /* hub thread only */
    sess *by_key[KEY_BUCKETS];
    sess *by_id[ID_BUCKETS];
    size_t nsess;
    ws_hub *next_hub;
    /* metrics */
    atomic_long open, frames, bytes, drops, closes[6];
};

enum { CR_NORMAL, CR_AWAY, CR_REVOKED, CR_SLOW, CR_IDLE, CR_PEER };
static const char *const close_reason_names[] = {"normal", "going_away", "revoked", "too_slow", "idle", "peer"};

static pthread_mutex_t hubs_lock = PTHREAD_MUTEX_INITIALIZER;
static ws_hub *hubs;

static unsigned hash_str(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* ---- frames ---------------------------------------------------------------- */

typedef struct fbuf {
    unsigned char *p;
    size_t len, cap;
} fbuf;

static ssize_t fbuf_send(wslay_frame_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)ctx;
    (void)flags;
    fbuf *b = ud;
    if (b->len + len > b->cap)
        return WSLAY_ERR_NOMEM;
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return (ssize_t)len;
}

static ssize_t frame_send_cb(const uint8_t *data, size_t len, int flags, void *ud)
{
    return fbuf_send(NULL, data, len, flags, ud);
}

static ssize_t frame_recv_cb(uint8_t *buf, size_t len, int flags, void *ud)
{
    (void)buf, (void)len, (void)flags, (void)ud;
    return -1;
}

static int frame_genmask_cb(uint8_t *buf, size_t len, void *ud)
{
    (void)ud;
    randombytes_buf(buf, len);
    return 0;
}

ws_frame *ws_frame_text(const char *payload, size_t len, const char *tag)
{
    ws_frame *f = malloc(sizeof *f + len + 10);
    if (!f)
        abort();
    atomic_init(&f->refs, 1);
    snprintf(f->tag, sizeof f->tag, "%s", tag ? tag : "");
    fbuf b = {f->data, 0, len + 10};
    struct wslay_frame_callbacks cbs = {frame_send_cb, frame_recv_cb, frame_genmask_cb};
    wslay_frame_context_ptr fc;
    if (wslay_frame_context_init(&fc, &cbs, &b))
        abort();
    struct wslay_frame_iocb io = {.fin = 1, .opcode = WSLAY_TEXT_FRAME, .payload_length = len,
                                  .mask = 0, .data = (const uint8_t *)payload, .data_length = len};
    ssize_t n = wslay_frame_send(fc, &io);
    wslay_frame_context_free(fc);
    if (n != (ssize_t)len)
        abort(); /* the buffer is sized for the largest header: cannot happen */
    f->len = b.len;
    return f;
}

void ws_frame_ref(ws_frame *f) { atomic_fetch_add(&f->refs, 1); }

void ws_frame_unref(ws_frame *f)
{
    if (f && atomic_fetch_sub(&f->refs, 1) == 1)
        free(f);
}

const char *ws_frame_tag(const ws_frame *f) { return f->tag; }

const unsigned char *ws_frame_bytes(const ws_frame *f, size_t *len)
{
    *len = f->len;
    return f->data;
}

/* ---- the accept key (SHA-1, FIPS 180-4; only used for the handshake) -------- */

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1(const unsigned char *msg, size_t len, unsigned char out[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = ((len + 8) / 64 + 1) * 64;
    unsigned char *m = calloc(1, total);
    if (!m)
        abort();
    memcpy(m, msg, len);
    m[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        m[total - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t blk = 0; blk < total; blk += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)m[blk + 4 * i] << 24 | (uint32_t)m[blk + 4 * i + 1] << 16 |
                   (uint32_t)m[blk + 4 * i + 2] << 8 | m[blk + 4 * i + 3];
        for (int i = 16; i < 80; i++)
            w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20)
                f = (b & c) | (~b & d), k = 0x5A827999;
            else if (i < 40)
                f = b ^ c ^ d, k = 0x6ED9EBA1;
            else if (i < 60)
                f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
            else
                f = b ^ c ^ d, k = 0xCA62C1D6;
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d, d = c, c = rol(b, 30), b = a, a = t;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
    }
    free(m);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
}

void ws_accept_key(const char *client_key, char out[29])
{
    char buf[128];
    int n = snprintf(buf, sizeof buf, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", client_key);
    unsigned char d[20];
    sha1((const unsigned char *)buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1, d);
    sodium_bin2base64(out, 29, d, 20, sodium_base64_VARIANT_ORIGINAL);
}

/* ---- commands ---------------------------------------------------------------- */

static void push_cmd(ws_hub *h, cmd *c)
{
    pthread_mutex_lock(&h->lock);
    if (h->tail)
        h->tail->next = c;
    else
        h->head = c;
    h->tail = c;
    pthread_mutex_unlock(&h->lock);
    uint64_t one = 1;
    ssize_t w = write(h->evfd, &one, sizeof one);
    (void)w; /* EAGAIN: the counter is already non-zero, the thread wakes anyway */
}

static cmd *new_cmd(int kind, uint64_t sid)
{
    cmd *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->kind = kind;
    c->sid = sid;
    return c;
}

void ws_hub_publish(ws_hub *h, const char *const *keys, size_t nkeys, ws_frame *f)
{
    if (!nkeys)
        return;
    cmd *c = new_cmd(CMD_PUBLISH, 0);
    c->keys = calloc(nkeys, sizeof *c->keys);
    if (!c->keys)
        abort();
    for (size_t i = 0; i < nkeys; i++)
        if (!(c->keys[i] = strdup(keys[i])))
            abort();
    c->nkeys = nkeys;
    ws_frame_ref(f);
    c->frame = f;
    push_cmd(h, c);
}

void ws_hub_release(ws_hub *h, uint64_t sid, ws_frame **replay, size_t n, ws_frame *ready)
{
    cmd *c = new_cmd(CMD_RELEASE, sid);
    if (n) {
        c->frames = malloc(n * sizeof *c->frames);
        if (!c->frames)
            abort();
        memcpy(c->frames, replay, n * sizeof *c->frames);
    }
    c->nframes = n;
    c->frame = ready;
    push_cmd(h, c);
}

void ws_hub_close(ws_hub *h, uint64_t sid, int code, const char *reason)
{
    cmd *c = new_cmd(CMD_CLOSE, sid);
    c->code = code;
    snprintf(c->reason, sizeof c->reason, "%s", reason ? reason : "");
    push_cmd(h, c);
}

static void cmd_free(cmd *c)
{
    for (size_t i = 0; i < c->nkeys; i++)
        free(c->keys[i]);
    free(c->keys);
    for (size_t i = 0; i < c->nframes; i++)
        ws_frame_unref(c->frames[i]);
    free(c->frames);
    ws_frame_unref(c->frame);
    free(c);
}

/* ---- the lazily created wslay context ---------------------------------------------- */

static const struct wslay_event_callbacks ev_callbacks;

static void wctx_ensure(sess *s)
{
    if (s->wctx)
        return;
    if (wslay_event_context_server_init(&s->wctx, &ev_callbacks, s))
        abort();
    wslay_event_config_set_max_recv_msg_length(s->wctx, WS_MAX_RECV);
}

static void wctx_trim(sess *s)
{
    if (s->wctx && !s->closing && !s->pend_len && !wslay_event_want_write(s->wctx) && !s->rx_hlen && !s->rx_left &&
        !s->rx_msg_open) {
        wslay_event_context_free(s->wctx);
        s->wctx = NULL;
    }
}

/* Follows frame boundaries in the bytes handed to wslay (RFC 6455 §5.2). */
static void scan_rx(sess *s, const uint8_t *p, size_t n)
{
    while (n) {
        if (s->rx_left) {
            size_t k = s->rx_left < n ? (size_t)s->rx_left : n;
            s->rx_left -= k;
            p += k;
            n -= k;
            continue;
        }
        s->rx_hdr[s->rx_hlen++] = *p++;
        n--;
        if (s->rx_hlen < 2)
            continue;
        uint8_t l7 = s->rx_hdr[1] & 0x7f;
        size_t ext = l7 == 126 ? 2 : l7 == 127 ? 8 : 0;
        if (s->rx_hlen < 2 + ext + ((s->rx_hdr[1] & 0x80) ? 4 : 0))
            continue;
        uint64_t len = l7;
        if (ext) {
            len = 0;
            for (size_t i = 0; i < ext; i++)
                len = len << 8 | s->rx_hdr[2 + i];
        }
        if (len > WS_MAX_RECV)
            s->rx_too_big = true; /* refused at the header, not after waiting for the payload */
        uint8_t opcode = s->rx_hdr[0] & 0x0f;
        if (!(opcode & 0x08)) /* data or continuation: the message ends with FIN */
            s->rx_msg_open = !(s->rx_hdr[0] & 0x80);
        s->rx_left = len;
        s->rx_hlen = 0;
    }
}

/* ---- sessions (hub thread) ---------------------------------------------------- */

static sess *find_sess(ws_hub *h, uint64_t sid)
{
    for (sess *s = h->by_id[sid % ID_BUCKETS]; s; s = s->id_next)
        if (s->id == sid)
            return s;
    return NULL;
}

static void q_grow(sess *s)
{
    if (s->qlen == s->qcap) {
        uint32_t ncap = s->qcap ? s->qcap * 2 : 4;
        ws_frame **nq = malloc(ncap * sizeof *nq);
        if (!nq)
            abort();
        for (uint32_t i = 0; i < s->qlen; i++)
            nq[i] = s->q[(s->qhead + i) % s->qcap];
        free(s->q);
        s->q = nq;
        s->qcap = ncap;
        s->qhead = 0;
    }
}

static void q_push(sess *s, ws_frame *f)
{
    q_grow(s);
    s->q[(s->qhead + s->qlen++) % s->qcap] = f;
}

static void q_push_front(sess *s, ws_frame *f)
{
    q_grow(s);
    s->qhead = (s->qhead + s->qcap - 1) % s->qcap;
    s->q[s->qhead] = f;
    s->qlen++;
}

static ws_frame *q_pop(sess *s)
{
    ws_frame *f = s->q[s->qhead];
    s->qhead = (s->qhead + 1) % s->qcap;
    s->qlen--;
    return f;
}

/* An idle session gives back what a burst took. */
static void q_shrink(sess *s)
{
    if (!s->qlen && s->qcap > 4) {
        free(s->q);
        s->q = NULL;
        s->qcap = s->qhead = 0;
    }
}

/* Leaves only a frame already partly written (it must be finished). */
static void q_clear(sess *s)
{
    uint32_t keep = s->off > 0 && s->qlen ? 1 : 0;
    while (s->qlen > keep) {
        uint32_t last = (s->qhead + s->qlen - 1) % s->qcap;
        ws_frame_unref(s->q[last]);
        s->qlen--;
    }
    q_shrink(s);
}

static void set_epollout(ws_hub *h, sess *s, bool on)
{
    if (s->epollout == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0), .data.u64 = s->id};
    epoll_ctl(h->ep, EPOLL_CTL_MOD, s->fd, &ev);
    s->epollout = on;
}

static int reason_index(int code)
{
    switch (code) {
    case WS_CLOSE_GOING_AWAY: return CR_AWAY;
    case WS_CLOSE_REVOKED: return CR_REVOKED;
    case WS_CLOSE_TOO_SLOW: return CR_SLOW;
    case WS_CLOSE_ABNORMAL: return CR_PEER;
    default: return CR_NORMAL;
    }
}

static void destroy_sess(ws_hub *h, sess *s)
{
    epoll_ctl(h->ep, EPOLL_CTL_DEL, s->fd, NULL);
    MHD_upgrade_action(s->urh, MHD_UPGRADE_ACTION_CLOSE);
    for (sess **pp = &h->by_id[s->id % ID_BUCKETS]; *pp; pp = &(*pp)->id_next)
        if (*pp == s) {
            *pp = s->id_next;
            break;
        }
    for (sess **pp = &h->by_key[hash_str(s->key) % KEY_BUCKETS]; *pp; pp = &(*pp)->key_next)
        if (*pp == s) {
            *pp = s->key_next;
            break;
        }
    h->nsess--;
    atomic_fetch_sub(&h->open, 1);
    int code = s->close_code ? s->close_code : WS_CLOSE_ABNORMAL;
    atomic_fetch_add(&h->closes[!s->close_code ? CR_PEER : s->idle ? CR_IDLE : reason_index(code)], 1);
    if (h->cb.closed)
        h->cb.closed(h->ud, s->id, s->sdata, code);
    s->off = 0;
    q_clear(s);
    free(s->q);
    if (s->wctx)
        wslay_event_context_free(s->wctx);
    free(s->extra);
    free(s->key);
    free(s);
}

static void start_close(ws_hub *h, sess *s, int code, const char *reason, int64_t now)
{
    if (s->closing)
        return;
    s->closing = true;
    s->close_code = code;
    s->close_deadline_ms = now + 2000;
    q_clear(s);
    s->held = false;
    wctx_ensure(s);
    if (wslay_event_get_write_enabled(s->wctx) && !wslay_event_get_close_sent(s->wctx))
        wslay_event_queue_close(s->wctx, (uint16_t)code, (const uint8_t *)reason, reason ? strlen(reason) : 0);
}

/* Writes what it can without blocking. Returns false when the session died. */
static bool flush(ws_hub *h, sess *s, int64_t now)
{
    for (;;) {
        if (s->pend_len) {
            ssize_t n = send(s->fd, s->pend, s->pend_len, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                break;
            if (n <= 0)
                return s->dead = true, false;
            memmove(s->pend, s->pend + n, s->pend_len - (size_t)n);
            s->pend_len = (uint16_t)(s->pend_len - n);
            s->last_progress_ms = now;
            continue;
        }
        if (s->off == 0 && s->wctx && wslay_event_want_write(s->wctx)) {
            uint16_t before = s->pend_len;
            if (wslay_event_send(s->wctx) != 0)
                return s->dead = true, false;
            if (s->pend_len != before)
                continue;
        }
        if (s->held || !s->qlen)
            break;
        if (s->off == 0 && s->drops && h->cb.dropped) {
            ws_frame *notice = h->cb.dropped(h->ud, s->sdata, s->drops, s->drop_first, s->drop_last);
            s->drops = 0;
            if (notice)
                q_push_front(s, notice);
        }
        ws_frame *f = s->q[s->qhead];
        ssize_t n = send(s->fd, f->data + s->off, f->len - s->off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            break;
        if (n <= 0)
            return s->dead = true, false;
        s->last_progress_ms = now;
        atomic_fetch_add(&h->bytes, n);
        s->off += (size_t)n;
        if (s->off == f->len) {
            s->off = 0;
            ws_frame_unref(q_pop(s));
            atomic_fetch_add(&h->frames, 1);
        }
    }
    if (!s->closing && s->wctx && wslay_event_get_close_sent(s->wctx)) {
        /* wslay failed the connection itself (a protocol error, a message too
         * large, invalid UTF-8): its close frame went out; the peer gets a
         * moment to answer, then the socket is closed */
        s->closing = true;
        s->close_code = wslay_event_get_status_code_sent(s->wctx);
        s->close_deadline_ms = now + 500; /* no reply is owed by a peer that broke the protocol */
        q_clear(s);
    }
    bool pending = s->pend_len || (s->qlen && !s->held) || (s->off == 0 && s->wctx && wslay_event_want_write(s->wctx));
    if (!pending)
        s->last_progress_ms = now;
    set_epollout(h, s, pending);
    if (s->closing && !pending && s->wctx && wslay_event_get_close_sent(s->wctx) &&
        wslay_event_get_close_received(s->wctx))
        return false; /* handshake complete */
    wctx_trim(s);
    q_shrink(s);
    return true;
}

/* ---- wslay callbacks ------------------------------------------------------------ */

static ssize_t ev_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    (void)flags;
    sess *s = ud;
    if (s->extra_off < s->extra_len) {
        size_t n = s->extra_len - s->extra_off < len ? s->extra_len - s->extra_off : len;
        memcpy(buf, s->extra + s->extra_off, n);
        s->extra_off += n;
        scan_rx(s, buf, n);
        return (ssize_t)n;
    }
    if (s->rx_budget == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    ssize_t n = recv(s->fd, buf, len < s->rx_budget ? len : s->rx_budget, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (n <= 0) {
        s->dead = true;
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    s->rx_budget -= (size_t)n;
    scan_rx(s, buf, (size_t)n);
    return n;
}

static ssize_t ev_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)flags;
    sess *s = ud;
    if (s->pend_len + len > sizeof s->pend) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    memcpy(s->pend + s->pend_len, data, len);
    s->pend_len = (uint16_t)(s->pend_len + len);
    return (ssize_t)len;
}

static int ev_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud)
{
    (void)ctx, (void)ud;
    randombytes_buf(buf, len);
    return 0;
}

static __thread ws_hub *cur_hub;

static void ev_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *ud)
{
    (void)ctx;
    sess *s = ud;
    if (arg->opcode == WSLAY_TEXT_FRAME && cur_hub && cur_hub->cb.text)
        cur_hub->cb.text(cur_hub->ud, s->id, s->sdata, (const char *)arg->msg, arg->msg_length);
    if (arg->opcode == WSLAY_CONNECTION_CLOSE && !s->closing) {
        s->closing = true; /* wslay answers with the same code */
        s->close_code = arg->status_code ? arg->status_code : WS_CLOSE_NORMAL;
        s->close_deadline_ms = time_now_ms() + 2000;
        q_clear(s);
    }
}

static const struct wslay_event_callbacks ev_callbacks = {
    .recv_callback = ev_recv,
    .send_callback = ev_send,
    .genmask_callback = ev_genmask,
    .on_msg_recv_callback = ev_msg,
};

/* ---- the hub thread -------------------------------------------------------------- */

static void on_readable(ws_hub *h, sess *s, int64_t now)
{
    s->last_rx_ms = now;
    wctx_ensure(s);
    if (!wslay_event_get_read_enabled(s->wctx)) {
        /* after the peer's close frame: what follows is dropped (level-triggered
         * epoll would report it forever), the end of the stream ends the session */
        char sink[512];
        ssize_t n = 0;
        for (size_t got = 0; got < WS_RX_BUDGET && (n = recv(s->fd, sink, sizeof sink, MSG_DONTWAIT)) > 0;)
            got += (size_t)n;
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            s->dead = true;
        return;
    }
    s->rx_budget = WS_RX_BUDGET;
    if (wslay_event_recv(s->wctx) != 0)
        s->dead = true;
    else if (s->rx_too_big)
        start_close(h, s, 1009, "message too big", now);
    else if (wslay_event_get_queued_msg_count(s->wctx) > WS_MAX_QUEUED_CONTROL)
        s->dead = true; /* it pings and does not read: its socket cannot take the pongs */
}

static void apply_add(ws_hub *h, sess *s, int64_t now)
{
    if (h->shutting) { /* arrived after the stop began */
        s->close_code = WS_CLOSE_GOING_AWAY;
        s->dead = true;
    }
    s->id_next = h->by_id[s->id % ID_BUCKETS];
    h->by_id[s->id % ID_BUCKETS] = s;
    unsigned kb = hash_str(s->key) % KEY_BUCKETS;
    s->key_next = h->by_key[kb];
    h->by_key[kb] = s;
    h->nsess++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = s->id};
    if (!s->dead && epoll_ctl(h->ep, EPOLL_CTL_ADD, s->fd, &ev) != 0)
        s->dead = true;
    s->last_rx_ms = s->last_progress_ms = now;
    s->next_ping_ms = now + h->o.ping_interval_ms;
    if (s->dead) {
        /* never added to epoll: make the DEL in destroy harmless */
        destroy_sess(h, s);
        return;
    }
    if (s->extra_len) {
        on_readable(h, s, now);
        /* what those bytes caused (a pong, a close reply) leaves now, not at the next event */
        if (s->dead || !flush(h, s, now))
            destroy_sess(h, s);
    }
}

static void apply_publish(ws_hub *h, cmd *c, int64_t now)
{
    for (size_t i = 0; i < c->nkeys; i++) {
        for (sess *s = h->by_key[hash_str(c->keys[i]) % KEY_BUCKETS], *nx; s; s = nx) {
            nx = s->key_next;
            if (s->closing || strcmp(s->key, c->keys[i]) != 0)
                continue;
            /* Over the limit: drop the oldest tagged frame not yet begun.
             * Untagged frames (ready, drop notices) are never dropped. */
            uint32_t first = s->off > 0 ? 1 : 0, k = first;
            if (s->qlen - first >= h->o.queue_max) {
                while (k < s->qlen && !s->q[(s->qhead + k) % s->qcap]->tag[0])
                    k++;
            } else {
                k = s->qlen;
            }
            if (k < s->qlen) {
                ws_frame *old = s->q[(s->qhead + k) % s->qcap];
                if (!s->drops)
                    snprintf(s->drop_first, sizeof s->drop_first, "%s", old->tag);
                snprintf(s->drop_last, sizeof s->drop_last, "%s", old->tag);
                s->drops++;
                atomic_fetch_add(&h->drops, 1);
                ws_frame_unref(old);
                /* close the gap: the frames before it move one place back */
                for (uint32_t j = k; j > 0; j--)
                    s->q[(s->qhead + j) % s->qcap] = s->q[(s->qhead + j - 1) % s->qcap];
                s->qhead = (s->qhead + 1) % s->qcap;
                s->qlen--;
            }
            ws_frame_ref(c->frame);
            q_push(s, c->frame);
            /* write now unless earlier output is still waiting for EPOLLOUT */
            if (!s->held && !s->epollout && !flush(h, s, now))
                destroy_sess(h, s);
        }
    }
}

static void apply_release(ws_hub *h, sess *s, cmd *c)
{
    (void)h;
    if (!s->held || s->closing)
        return;
    /* nothing was written while held, so s->off == 0 */
    uint32_t n = s->qlen;
    ws_frame **held = malloc((n ? n : 1) * sizeof *held);
    if (!held)
        abort();
    for (uint32_t i = 0; i < n; i++)
        held[i] = q_pop(s);
    for (size_t i = 0; i < c->nframes; i++) {
        q_push(s, c->frames[i]);
        c->frames[i] = NULL;
    }
    c->nframes = 0;
    if (c->frame) {
        q_push(s, c->frame);
        c->frame = NULL;
    }
    s->held = false;
    /* the replayed tags were moved into the queue: check against it */
    uint32_t replay_end = s->qlen;
    for (uint32_t i = 0; i < n; i++) {
        bool dup = false;
        for (uint32_t j = 0; j < replay_end && !dup; j++)
            dup = held[i]->tag[0] && strcmp(s->q[(s->qhead + j) % s->qcap]->tag, held[i]->tag) == 0;
        if (dup)
            ws_frame_unref(held[i]);
        else
            q_push(s, held[i]);
    }
    free(held);
}

static void apply(ws_hub *h, cmd *c, int64_t now)
{
    sess *s;
    switch (c->kind) {
    case CMD_ADD:
        apply_add(h, c->s, now);
        c->s = NULL;
        break;
    case CMD_PUBLISH:
        apply_publish(h, c, now);
        break;
    case CMD_RELEASE:
        if ((s = find_sess(h, c->sid))) {
            apply_release(h, s, c);
            if (!flush(h, s, now))
                destroy_sess(h, s);
        }
        break;
    case CMD_CLOSE:
        if ((s = find_sess(h, c->sid))) {
            start_close(h, s, c->code, c->reason, now);
            if (!flush(h, s, now))
                destroy_sess(h, s);
        }
        break;
    case CMD_SHUTDOWN:
        h->shutting = true;
        h->shut_deadline_ms = now + c->code;
        for (unsigned b = 0; b < ID_BUCKETS; b++)
            for (sess *x = h->by_id[b], *nx; x; x = nx) {
                nx = x->id_next;
                start_close(h, x, WS_CLOSE_GOING_AWAY, "server stopping", now);
                if (!flush(h, x, now))
                    destroy_sess(h, x);
            }
        break;
    }
}

/* Pings, idle and stall checks, close deadlines: once a second. */
static void tick(ws_hub *h, int64_t now)
{
    for (unsigned b = 0; b < ID_BUCKETS; b++)
        for (sess *s = h->by_id[b], *nx; s; s = nx) {
            nx = s->id_next;
            if (s->closing) {
                if (now >= s->close_deadline_ms)
                    destroy_sess(h, s);
                continue;
            }
            bool stalled = (s->pend_len || (s->qlen && !s->held)) && now - s->last_progress_ms > h->o.idle_timeout_ms;
            if (stalled) {
                start_close(h, s, WS_CLOSE_TOO_SLOW, "too slow", now);
            } else if (now - s->last_rx_ms > h->o.idle_timeout_ms) {
                s->idle = true;
                start_close(h, s, WS_CLOSE_NORMAL, "idle", now);
            } else if (now >= s->next_ping_ms) {
                s->next_ping_ms = now + h->o.ping_interval_ms;
                struct wslay_event_msg m = {WSLAY_PING, NULL, 0};
                wctx_ensure(s);
                wslay_event_queue_msg(s->wctx, &m);
            } else {
                continue;
            }
            if (!flush(h, s, now))
                destroy_sess(h, s);
        }
    if (h->shutting && h->nsess && now >= h->shut_deadline_ms)
        for (unsigned b = 0; b < ID_BUCKETS; b++)
            while (h->by_id[b])
                destroy_sess(h, h->by_id[b]);
}

static void *hub_main(void *arg)
{
    ws_hub *h = arg;
    cur_hub = h;
    struct epoll_event evs[256];
    int64_t next_tick = time_now_ms() + 1000;
    for (;;) {
        int64_t now = time_now_ms();
        int wait = h->shutting ? 50 : (int)(next_tick > now ? next_tick - now : 0);
        int n = epoll_wait(h->ep, evs, 256, wait);
        now = time_now_ms();
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == 0) {
                uint64_t v;
                ssize_t r = read(h->evfd, &v, sizeof v);
                (void)r;
                continue;
            }
            sess *s = find_sess(h, evs[i].data.u64);
            if (!s)
                continue;
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                on_readable(h, s, now);
            if (s->dead || !flush(h, s, now))
                destroy_sess(h, s);
        }
        pthread_mutex_lock(&h->lock);
        cmd *c = h->head;
        h->head = h->tail = NULL;
        bool stop = h->stop;
        pthread_mutex_unlock(&h->lock);
        while (c) {
            cmd *nx = c->next;
            apply(h, c, now);
            cmd_free(c);
            c = nx;
        }
        if (now >= next_tick || h->shutting) {
            tick(h, now);
            if (now >= next_tick)
                next_tick = now + 1000;
        }
        if (h->shutting && !h->shut_done && h->nsess == 0) {
            pthread_mutex_lock(&h->lock);
            h->shut_done = true;
            pthread_cond_broadcast(&h->cond);
            pthread_mutex_unlock(&h->lock);
        }
        if (stop && h->nsess == 0)
            return NULL;
    }
}

/* ---- the upgrade ------------------------------------------------------------------- */

typedef struct pending {
    ws_hub *h;
    char *key;
    void *sdata;
} pending;

/* Called by the server once the 101 went out (fd >= 0), or with fd < 0 when
 * the connection ended before that. */
static void on_upgraded(void *arg, int fd, const char *extra, size_t extra_len, void *urh)
{
    pending *p = arg;
    ws_hub *h = p->h;
    if (fd < 0 || atomic_load(&h->refusing)) {
        if (fd >= 0) /* the server is stopping: closed here, while MHD still owns urh */
            MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        if (h->cb.closed)
            h->cb.closed(h->ud, 0, p->sdata, fd < 0 ? WS_CLOSE_ABNORMAL : WS_CLOSE_GOING_AWAY);
        free(p->key);
        free(p);
        return;
    }
    sess *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->id = atomic_fetch_add(&h->next_sid, 1);
    s->fd = fd;
    s->urh = urh;
    s->key = p->key;
    s->sdata = p->sdata;
    s->held = true;
    free(p);
    if (extra_len) {
        s->extra = malloc(extra_len);
        if (!s->extra)
            abort();
        memcpy(s->extra, extra, extra_len);
        s->extra_len = extra_len;
    }
    if (h->o.sndbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &h->o.sndbuf, sizeof h->o.sndbuf);
    atomic_fetch_add(&h->open, 1);
    uint64_t sid = s->id;
    void *sdata = s->sdata;
    cmd *c = new_cmd(CMD_ADD, sid);
    c->s = s;
    push_cmd(h, c);
    if (h->cb.opened)
        h->cb.opened(h->ud, sid, sdata); /* s may be gone already: only sid and sdata are used */
}

static bool has_token(const char *list, const char *tok)
{
    size_t tl = strlen(tok);
    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *te = e;
        while (te > p && (te[-1] == ' ' || te[-1] == '\t'))
            te--;
        if ((size_t)(te - p) == tl && strncasecmp(p, tok, tl) == 0)
            return true;
        p = e;
    }
    return false;
}

int ws_upgrade(ws_hub *h, http_req *req, http_res *res, const char *key, void *sdata)
{
    if (strcmp(req->method, "GET") != 0)
        return http_fail(req, PL_EBADREQUEST, NULL, "a WebSocket handshake is a GET");
    const char *up = http_header_get(req, "Upgrade");
    const char *conn = http_header_get(req, "Connection");
    if (!up || !has_token(up, "websocket") || !conn || !has_token(conn, "upgrade"))
        return http_fail(req, PL_EBADREQUEST, NULL,
                         "this endpoint speaks WebSocket only: send Upgrade: websocket and Connection: Upgrade");
    const char *ver = http_header_get(req, "Sec-WebSocket-Version");
    if (!ver || strcmp(ver, "13") != 0) {
        http_header_add(req, res, "Sec-WebSocket-Version", "13");
        return http_fail(req, PL_EBADREQUEST, json_pack("{s:s}", "Sec-WebSocket-Version", "must be 13"),
                         "unsupported WebSocket version");
    }
    const char *wkey = http_header_get(req, "Sec-WebSocket-Key");
    unsigned char raw[32];
    size_t rawlen = 0;
    if (!wkey || strlen(wkey) != 24 ||
        sodium_base642bin(raw, sizeof raw, wkey, 24, NULL, &rawlen, NULL, sodium_base64_VARIANT_ORIGINAL) != 0 ||
        rawlen != 16)
        return http_fail(req, PL_EBADREQUEST, json_pack("{s:s}", "Sec-WebSocket-Key", "must be 16 bytes in base64"),
                         "invalid Sec-WebSocket-Key");
    char accept[29];
    ws_accept_key(wkey, accept);
    pending *p = calloc(1, sizeof *p);
    if (!p || !(p->key = strdup(key)))
        abort();
    p->h = h;
    p->sdata = sdata;
    res->status = 101;
    http_header_add(req, res, "Upgrade", "websocket");
    http_header_add(req, res, "Sec-WebSocket-Accept", accept);
    res->upgrade = on_upgraded;
    res->upgrade_arg = p;
    return 0;
}

/* ---- life cycle ----------------------------------------------------------------------- */

int ws_hub_create(const ws_hub_opts *o, const ws_hub_cbs *cbs, void *ud, ws_hub **out, pl_error *err)
{
    ws_hub *h = calloc(1, sizeof *h);
    if (!h)
        abort();
    h->o = *o;
    if (h->o.ping_interval_ms <= 0)
        h->o.ping_interval_ms = 25000;
    if (h->o.idle_timeout_ms <= 0)
        h->o.idle_timeout_ms = 60000;
    if (!h->o.queue_max)
        h->o.queue_max = 256;
    if (!h->o.name)
        h->o.name = "ws";
    h->cb = *cbs;
    h->ud = ud;
    atomic_init(&h->next_sid, 1);
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    h->ep = epoll_create1(EPOLL_CLOEXEC);
    h->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    if (h->ep < 0 || h->evfd < 0 || epoll_ctl(h->ep, EPOLL_CTL_ADD, h->evfd, &ev) != 0 ||
        pthread_create(&h->thread, NULL, hub_main, h) != 0) {
        int e = errno;
        if (h->ep >= 0)
            close(h->ep);
        if (h->evfd >= 0)
            close(h->evfd);
        free(h);
        return err_set(err, PL_EIO, NULL, "cannot start the WebSocket hub: %s", strerror(e));
    }
    pthread_mutex_lock(&hubs_lock);
    h->next_hub = hubs;
    hubs = h;
    pthread_mutex_unlock(&hubs_lock);
    *out = h;
    return 0;
}

static void hub_shutdown(ws_hub *h, unsigned timeout_ms)
{
    pthread_mutex_lock(&h->lock);
    bool done = h->shut_done;
    pthread_mutex_unlock(&h->lock);
    if (done)
        return;
    atomic_store(&h->refusing, true);
    cmd *c = new_cmd(CMD_SHUTDOWN, 0);
    c->code = (int)timeout_ms;
    push_cmd(h, c);
    pthread_mutex_lock(&h->lock);
    while (!h->shut_done)
        pthread_cond_wait(&h->cond, &h->lock);
    pthread_mutex_unlock(&h->lock);
}

void ws_hubs_shutdown(unsigned timeout_ms)
{
    pthread_mutex_lock(&hubs_lock);
    for (ws_hub *h = hubs; h; h = h->next_hub)
        hub_shutdown(h, timeout_ms);
    pthread_mutex_unlock(&hubs_lock);
}

void ws_hub_destroy(ws_hub *h)
{
    if (!h)
        return;
    hub_shutdown(h, 1000);
    pthread_mutex_lock(&hubs_lock);
    for (ws_hub **pp = &hubs; *pp; pp = &(*pp)->next_hub)
        if (*pp == h) {
            *pp = h->next_hub;
            break;
        }
    pthread_mutex_unlock(&hubs_lock);
    pthread_mutex_lock(&h->lock);
    h->stop = true;
    pthread_mutex_unlock(&h->lock);
    uint64_t one = 1;
    ssize_t w = write(h->evfd, &one, sizeof one);
    (void)w;
    pthread_join(h->thread, NULL);
    for (cmd *c = h->head, *nx; c; c = nx) { /* only after the HTTP server stopped: none are expected */
        nx = c->next;
        if (c->s) {
            MHD_upgrade_action(c->s->urh, MHD_UPGRADE_ACTION_CLOSE);
            if (h->cb.closed)
                h->cb.closed(h->ud, c->s->id, c->s->sdata, WS_CLOSE_GOING_AWAY);
            free(c->s->extra);
            free(c->s->key);
            free(c->s);
        }
        cmd_free(c);
    }
    close(h->ep);
    close(h->evfd);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    free(h);
}

/* ---- metrics ------------------------------------------------------------------------------ */

void ws_metrics_collect(void *ud, metrics_buf *b)
{
    (void)ud;
    pthread_mutex_lock(&hubs_lock);
    if (!hubs) {
        pthread_mutex_unlock(&hubs_lock);
        return;
    }
    metrics_printf(b, "# HELP pulse_ws_sessions_open WebSocket sessions open.\n# TYPE pulse_ws_sessions_open gauge\n");
    for (ws_hub *h = hubs; h; h = h->next_hub)
        metrics_printf(b, "pulse_ws_sessions_open{hub=\"%s\"} %ld\n", h->o.name, atomic_load(&h->open));
    metrics_printf(b, "# HELP pulse_ws_frames_sent_total Data frames written to WebSocket clients.\n"
                      "# TYPE pulse_ws_frames_sent_total counter\n");
    for (ws_hub *h = hubs; h; h = h->next_hub)
        metrics_printf(b, "pulse_ws_frames_sent_total{hub=\"%s\"} %ld\n", h->o.name, atomic_load(&h->frames));
    metrics_printf(b, "# HELP pulse_ws_bytes_sent_total Bytes of data frames written.\n"
                      "# TYPE pulse_ws_bytes_sent_total counter\n");
    for (ws_hub *h = hubs; h; h = h->next_hub)
        metrics_printf(b, "pulse_ws_bytes_sent_total{hub=\"%s\"} %ld\n", h->o.name, atomic_load(&h->bytes));
    metrics_printf(b, "# HELP pulse_ws_frames_dropped_total Frames dropped by the slow-client policy.\n"
                      "# TYPE pulse_ws_frames_dropped_total counter\n");
    for (ws_hub *h = hubs; h; h = h->next_hub)
        metrics_printf(b, "pulse_ws_frames_dropped_total{hub=\"%s\"} %ld\n", h->o.name, atomic_load(&h->drops));
    metrics_printf(b, "# HELP pulse_ws_closes_total WebSocket sessions closed, by reason.\n"
                      "# TYPE pulse_ws_closes_total counter\n");
    for (ws_hub *h = hubs; h; h = h->next_hub)
        for (int i = 0; i < 6; i++)
            metrics_printf(b, "pulse_ws_closes_total{hub=\"%s\",reason=\"%s\"} %ld\n", h->o.name,
                           close_reason_names[i], atomic_load(&h->closes[i]));
    pthread_mutex_unlock(&hubs_lock);
}
