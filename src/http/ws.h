/*
 * ws.h - the WebSocket hub: RFC 6455 sessions taken over from libmicrohttpd's
 * connection upgrade and served by one epoll thread of our own, framed with
 * wslay. Generic: it knows sessions, keys and frames, not users or events.
 *
 * Threads. Only the hub's thread touches sockets, wslay contexts and the
 * session tables. Every other thread talks to it through a FIFO command queue
 * (mutex + eventfd): ws_hub_publish, ws_hub_release, ws_hub_close and the
 * registration made by the upgrade are applied in the order they were called,
 * so a frame published after a session's registration reaches that session.
 *
 * Keys. Each session is registered under one key (for Pulse: a user id);
 * ws_hub_publish sends one frame to every session of a list of keys. A frame
 * is built once (ws_frame_text) and its bytes are shared by every recipient.
 *
 * Hold. A session starts held: published frames queue but are not written
 * until ws_hub_release, which puts the replay (and a "ready" frame) in front of
 * them and drops held frames whose tag was replayed. That is how a resume
 * misses nothing and repeats nothing.
 *
 * Slow clients. A session queues at most queue_max published frames; one more
 * drops the oldest unsent tagged frame (never a half-written one, never an
 * untagged control frame) and counts it; before
 * the next frame is written the `dropped` callback builds a notice that goes
 * first. A session that makes no write progress for idle_timeout while output
 * waits is closed with 4008. Writes never block: EPOLLOUT resumes them.
 *
 * Liveness. A ping every ping_interval; no frame from the client for
 * idle_timeout closes the session with 1000 ("idle"). Client pings are
 * answered by wslay.
 *
 * Stop. ws_hubs_shutdown (called by http_server_stop before MHD stops) sends
 * 1001 to every session of every hub, waits briefly for the close handshakes,
 * then closes every socket through MHD_upgrade_action(CLOSE).
 */
#ifndef PULSE_HTTP_WS_H
#define PULSE_HTTP_WS_H

#include "core/err.h"
#include "http/http.h"
#include "http/metrics.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ws_hub ws_hub;
typedef struct ws_frame ws_frame;

enum {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_ABNORMAL = 1006,    /* never sent: the peer vanished */
    WS_CLOSE_REVOKED = 4001,     /* token revoked or expired */
    WS_CLOSE_TOO_SLOW = 4008,
};

typedef struct ws_hub_opts {
    const char *name;       /* label in metrics */
    int ping_interval_ms;   /* default 25000 */
    int idle_timeout_ms;    /* default 60000 */
    size_t queue_max;       /* published frames waiting per session; default 256 */
    int sndbuf;             /* SO_SNDBUF of session sockets; 0: the kernel's autotuning */
} ws_hub_opts;

typedef struct ws_hub_cbs {
    /* MHD's thread, right after the session was registered (held) under its
     * key: the place to read a replay and call ws_hub_release. It runs
     * concurrently with the hub thread, where the session may already have
     * ended (and `closed` run): sdata must stay valid for both (refcount it). */
    void (*opened)(void *ud, uint64_t sid, void *sdata);
    /* Hub thread: the notice written before the next frame after drops
     * (tags of the first and last dropped frame). NULL: no notice. */
    ws_frame *(*dropped)(void *ud, void *sdata, uint64_t count, const char *first_tag, const char *last_tag);
    /* Hub thread, once, after the socket is gone: frees sdata. Also called
     * (sid 0) when an accepted upgrade never happened. */
    void (*closed)(void *ud, uint64_t sid, void *sdata, int code);
    /* Hub thread: a text message from the client (may be NULL). */
    void (*text)(void *ud, uint64_t sid, void *sdata, const char *msg, size_t len);
} ws_hub_cbs;

/* Starts the hub's thread. cbs and ud are borrowed for the hub's life. */
int  ws_hub_create(const ws_hub_opts *o, const ws_hub_cbs *cbs, void *ud, ws_hub **out, pl_error *err);
/* Closes what is left with 1001, stops the thread, frees. NULL is a no-op. */
void ws_hub_destroy(ws_hub *h);

/* In a route handler: validates the upgrade request (GET, Upgrade: websocket,
 * Connection: upgrade, Sec-WebSocket-Version: 13, a 16-byte base64
 * Sec-WebSocket-Key) and fills res with the 101 answer; the socket is handed
 * to the hub after it is sent, registered under `key` (copied), held. sdata
 * belongs to the hub from a 0 return on (the closed callback frees it). On
 * a bad request returns PL_EBADREQUEST (400; 426 with Sec-WebSocket-Version
 * for another version) and owns nothing. */
int ws_upgrade(ws_hub *h, http_req *req, http_res *res, const char *key, void *sdata);

/* A server text frame holding a copy of payload; tag (may be NULL, at most
 * 39 bytes) names it for release and drop notices. Refcount 1. */
ws_frame *ws_frame_text(const char *payload, size_t len, const char *tag);
void ws_frame_ref(ws_frame *f);
void ws_frame_unref(ws_frame *f); /* NULL is a no-op */
const char *ws_frame_tag(const ws_frame *f);
/* The encoded frame (header + payload), for tests. */
const unsigned char *ws_frame_bytes(const ws_frame *f, size_t *len);

/* Queues f for every session under each of keys (takes no reference from
 * the caller: the hub takes its own). Any thread. */
void ws_hub_publish(ws_hub *h, const char *const *keys, size_t nkeys, ws_frame *f);
/* Ends a session's hold: writes replay[0..n) (references stolen), then
 * `ready` (stolen, may be NULL), then the held frames whose tag is not a
 * replayed tag. Any thread. */
void ws_hub_release(ws_hub *h, uint64_t sid, ws_frame **replay, size_t n, ws_frame *ready);
/* Sends a close frame with code and then closes the socket. Any thread. */
void ws_hub_close(ws_hub *h, uint64_t sid, int code, const char *reason);

/* Every hub: close all sessions with 1001 and their sockets, waiting at most
 * timeout_ms for the close handshakes. Called by http_server_stop. */
void ws_hubs_shutdown(unsigned timeout_ms);
/* Appends the hubs' metrics families (a metrics collector; ud unused). */
void ws_metrics_collect(void *ud, metrics_buf *b);

/* SHA-1 accept value of RFC 6455 §4.2.2 for a client key (28 chars + NUL). */
void ws_accept_key(const char *client_key, char out[29]);

#endif
