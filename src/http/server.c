/*
 * server.c - libmicrohttpd glue.
 *
 * MHD calls the access handler several times per request: the first call
 * only creates our request context (queueing a response there would turn
 * keep-alive off in MHD 0.9.75), the next calls hand over body chunks, and
 * the last call (no upload data) dispatches to the route's handler. The
 * completion callback writes the access log, records metrics and frees the
 * context.
 */
#include "http/server.h"
#include "core/json.h"
#include "core/log.h"
#include "core/rand.h"
#include "core/timeutil.h"
#include "core/uuid.h"
#include "http/auth.h"
#include "http/ws.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct reqctx reqctx;

/* The offload pool: a bounded FIFO of suspended requests and its threads. */
typedef struct job {
    reqctx *rc;
    int (*fn)(http_req *, http_res *, void *);
    void *arg;
} job;

typedef struct offload_pool {
    pthread_mutex_t lock;
    pthread_cond_t ready;
    job *q;
    size_t cap, head, len;
    bool stop;
    pthread_t *threads;
    int nthreads;
} offload_pool;

struct http_server {
    struct MHD_Daemon *d;
    offload_pool pool;
    router *router;
    metrics *metrics;
    http_server_opts o;
    int port;
    atomic_int inflight;
};

struct reqctx {
    http_req req; /* first: http_offload finds the context from the request */
    http_res res;
    http_server *srv;
    int64_t start_ns;
    int route_index; /* -1 when unmatched */
    unsigned flags;
    bool responded;
    int status;
    int rejected;    /* PL_E* found while the body streamed in, answered at its end */
    size_t discarded; /* body bytes dropped after the rejection */
    char *body;      /* malloc'd, grows */
    size_t body_cap;
    char client_ip[INET6_ADDRSTRLEN];
    bool offloaded;  /* suspended while a pool thread runs the rest of the handler */
    bool async_done; /* the pool thread finished: respond on MHD's next call */
    int async_rc;
    bool upgraded;   /* handed to the WebSocket hub: logged and counted already */
};

/* ---- request helpers (http.h) -------------------------------------------- */

const char *http_param(const http_req *req, const char *name)
{
    for (int i = 0; i < req->nparams; i++)
        if (strcmp(req->param_name[i], name) == 0)
            return req->param_value[i];
    return NULL;
}

const char *http_header_get(const http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_query(const http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_client_ip(const http_req *req) { return req->client_ip; }

int http_fail(http_req *req, int code, json_t *fields, const char *fmt, ...)
{
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        req->error_message = arena_vsprintf(req->arena, fmt, ap);
        va_end(ap);
    }
    json_decref(req->error_fields);
    req->error_fields = fields;
    return code;
}

int http_json_body(http_req *req, json_t **out)
{
    *out = NULL;
    const char *ct = http_header_get(req, "Content-Type");
    if (req->body_len == 0)
        return http_fail(req, PL_EBADJSON, NULL, "a JSON object body is required");
    if (!ct || strncasecmp(ct, "application/json", 16) != 0 || (ct[16] && ct[16] != ';' && ct[16] != ' '))
        return http_fail(req, PL_EMEDIATYPE, NULL, "Content-Type must be application/json");
    json_error_t je;
    json_t *v = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!v)
        return http_fail(req, PL_EBADJSON, NULL, "malformed JSON at position %d: %s", je.position, je.text);
    if (!json_is_object(v)) {
        json_decref(v);
        return http_fail(req, PL_EBADJSON, NULL, "the body must be a JSON object");
    }
    *out = v;
    return 0;
}

int http_json_fields(http_req *req, jv *v, json_t **body, const char *const *allowed)
{
    int rc = http_json_body(req, body);
    if (rc)
        return rc;
    jv_init(v, *body);
    jv_only(v, allowed);
    return 0;
}

int http_fail_fields(http_req *req, jv *v, json_t *body)
{
    int rc = http_fail(req, PL_EINVAL, jv_take_fields(v), "the request has invalid fields");
    jv_free(v);
    json_decref(body);
    return rc;
}

static void res_set_body(http_res *res, char *body, size_t len)
{
    free(res->body);
    res->body = body;
    res->body_len = len;
}

void http_json(http_res *res, int status, json_t *body)
{
    res->status = status;
    res->content_type = "application/json";
    if (body) {
        char *s = json_compact(body);
        res_set_body(res, s, strlen(s));
        json_decref(body);
    } else {
        res_set_body(res, NULL, 0);
    }
}

void http_text(http_res *res, int status, const char *content_type, const char *text, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy)
        abort();
    memcpy(copy, text, len);
    copy[len] = '\0';
    res->status = status;
    res->content_type = content_type;
    res_set_body(res, copy, len);
}

void http_header_add(http_req *req, http_res *res, const char *name, const char *value)
{
    http_header *h = arena_alloc(req->arena, sizeof *h);
    h->name = arena_strdup(req->arena, name);
    h->value = arena_strdup(req->arena, value);
    h->next = res->headers;
    res->headers = h;
}

/* ---- tracing --------------------------------------------------------------- */

static bool is_lower_hex(const char *s, size_t n)
{
    bool nonzero = false;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
            return false;
        nonzero |= s[i] != '0';
    }
    return nonzero;
}

static void hex_random(char *out, size_t nbytes)
{
    unsigned char b[16];
    rand_bytes(b, nbytes);
    sodium_bin2hex(out, nbytes * 2 + 1, b, nbytes);
}

static bool hex_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
            return false;
    return true;
}

/* Continues a valid W3C traceparent ("00-<trace>-<parent>-<flags>") or starts a
 * new trace. Versions other than 00 are read by their 00 prefix, as the spec asks. */
static void trace_begin(http_req *req, const char *tp)
{
    req->trace_flags = 1;
    bool ok = tp && strlen(tp) >= 55 && hex_digits(tp, 2) && strncmp(tp, "ff", 2) != 0 && tp[2] == '-' &&
              is_lower_hex(tp + 3, 32) && tp[35] == '-' && is_lower_hex(tp + 36, 16) && tp[52] == '-' &&
              hex_digits(tp + 53, 2) &&
              (strncmp(tp, "00", 2) == 0 ? tp[55] == '\0' : (tp[55] == '\0' || tp[55] == '-'));
    if (ok) {
        memcpy(req->trace_id, tp + 3, 32);
        req->trace_id[32] = '\0';
        req->trace_flags = (unsigned char)strtoul((char[]){tp[53], tp[54], 0}, NULL, 16);
    } else {
        hex_random(req->trace_id, 16);
    }
    hex_random(req->span_id, 8);
    snprintf(req->traceparent, sizeof req->traceparent, "00-%s-%s-%02x", req->trace_id, req->span_id,
             req->trace_flags);
}

static void request_id_begin(http_req *req, const char *given)
{
    size_t n = given ? strlen(given) : 0;
    bool ok = n > 0 && n < sizeof req->request_id;
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)given[i]) || given[i] == '-' || given[i] == '_' || given[i] == '.';
    if (ok)
        memcpy(req->request_id, given, n + 1);
    else
        uuid7_new(req->request_id);
}

/* ---- responses ------------------------------------------------------------- */

static void render_error(reqctx *rc, int code)
{
    http_req *req = &rc->req;
    json_t *err = json_object();
    json_object_set_new(err, "code", json_string(err_api_code(code)));
    json_object_set_new(err, "message", json_string(req->error_message ? req->error_message : err_message(code)));
    json_object_set_new(err, "fields", req->error_fields ? req->error_fields : json_object());
    req->error_fields = NULL;
    http_json(&rc->res, err_http_status(code), json_pack("{s:o}", "error", err));
}

static void access_log(reqctx *rc, int status, enum MHD_RequestTerminationCode toe);

/* MHD has sent the 101: the socket goes to the hub. The request is logged and
 * counted now, and no longer in flight (a WebSocket session does not hold up
 * a graceful stop; ws_hubs_shutdown closes it). Only this small context stays
 * with MHD's connection until the socket is closed. */
static void on_upgraded(void *cls, struct MHD_Connection *conn, void *con_cls, const char *extra, size_t extra_len,
                        MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    (void)conn, (void)con_cls;
    reqctx *rc = cls;
    void (*fn)(void *, int, const char *, size_t, void *) = rc->res.upgrade;
    void *arg = rc->res.upgrade_arg;
    rc->res.upgrade = NULL;
    rc->upgraded = true;
    access_log(rc, 101, MHD_REQUEST_TERMINATED_COMPLETED_OK);
    json_decref(rc->req.error_fields);
    rc->req.error_fields = NULL;
    free(rc->body);
    rc->body = NULL;
    arena_destroy(rc->req.arena);
    rc->req.arena = NULL;
    atomic_fetch_sub(&rc->srv->inflight, 1);
    fn(arg, sock, extra, extra_len, urh);
}

static enum MHD_Result send_response(reqctx *rc)
{
    http_res *res = &rc->res;
    struct MHD_Response *r;
    if (res->upgrade) {
        r = MHD_create_response_for_upgrade(on_upgraded, rc);
    } else if (res->body) {
        r = MHD_create_response_from_buffer(res->body_len, res->body, MHD_RESPMEM_MUST_FREE);
        res->body = NULL;
    } else {
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    if (!r)
        return MHD_NO;
    if (res->content_type)
        MHD_add_response_header(r, "Content-Type", res->content_type);
    MHD_add_response_header(r, "traceparent", rc->req.traceparent);
    MHD_add_response_header(r, "X-Request-Id", rc->req.request_id);
    for (http_header *h = res->headers; h; h = h->next)
        MHD_add_response_header(r, h->name, h->value);
    rc->status = res->status;
    rc->responded = true;
    enum MHD_Result ok = MHD_queue_response(rc->req.conn, (unsigned)res->status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result send_error(reqctx *rc, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result send_error(reqctx *rc, int code, const char *fmt, ...)
{
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        rc->req.error_message = arena_vsprintf(rc->req.arena, fmt, ap);
        va_end(ap);
    }
    render_error(rc, code);
    return send_response(rc);
}

/* ---- the request path ------------------------------------------------------- */

/* How much of a body over the limit is read (and dropped) so that its 413
 * reaches the client; beyond this the connection is cut. */
static size_t drain_limit(const http_server *srv) { return 4 * srv->o.body_limit; }

/* Besides its bytes, each header costs MHD a record in the connection's memory
 * pool; charging at least that much per header keeps everything within
 * header_limit inside the pool (see http_server_start), so that too many small
 * headers meet our JSON 431 rather than MHD's own HTML one. */
#define HEADER_RECORD_COST 64

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *k, const char *v)
{
    (void)kind;
    size_t n = strlen(k) + (v ? strlen(v) : 0) + 4;
    *(size_t *)cls += n < HEADER_RECORD_COST ? HEADER_RECORD_COST : n;
    return MHD_YES;
}

static int authenticate(reqctx *rc)
{
    http_req *req = &rc->req;
    const char *h = http_header_get(req, "Authorization");
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        const char *t = h + 7;
        while (*t == ' ')
            t++;
        if (*t)
            req->bearer = t;
    }
    if (!(rc->flags & HTTP_AUTH))
        return 0;
    if (!req->bearer) {
        http_header_add(req, &rc->res, "WWW-Authenticate", "Bearer");
        return http_fail(req, PL_EUNAUTHORIZED, NULL, "a bearer token is required");
    }
    principal *p = arena_calloc(req->arena, sizeof *p);
    int rcode = auth_verify(req->bearer, p);
    if (rcode == PL_EUNAUTHORIZED) {
        http_header_add(req, &rc->res, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
        return http_fail(req, rcode, NULL, "the token is invalid, expired or revoked");
    }
    if (rcode)
        return http_fail(req, rcode, NULL, NULL);
    req->principal = p;
    return 0;
}

static enum MHD_Result finish(reqctx *rc, int rcode);

static enum MHD_Result dispatch(reqctx *rc, const char *url)
{
    http_req *req = &rc->req;
    route_match m;
    char *path = arena_strdup(req->arena, url);
    int rcode = router_match(rc->srv->router, req->method, path, &m);
    if (rcode == PL_ENOTFOUND)
        return send_error(rc, PL_ENOTFOUND, "no route for %s", url);
    if (rcode == PL_EMETHOD) {
        http_header_add(req, &rc->res, "Allow", m.allow);
        return send_error(rc, PL_EMETHOD, "%s is not allowed on %s; allowed: %s", req->method, url, m.allow);
    }
    rc->route_index = m.index;
    rc->flags = m.route->flags;
    req->route = m.route->pattern;
    req->ctx = m.ctx;
    req->nparams = m.nparams;
    for (int i = 0; i < m.nparams; i++) {
        req->param_name[i] = m.param_name[i];
        req->param_value[i] = m.param_value[i];
    }
    rcode = authenticate(rc);
    if (rcode == 0) {
        rc->res.status = 200;
        rcode = m.route->handler(req, &rc->res);
    }
    if (rc->offloaded)
        return MHD_YES; /* suspended: a pool thread resumes the connection */
    return finish(rc, rcode);
}

/* Renders the handler's outcome: an error code, or the response it filled. */
static enum MHD_Result finish(reqctx *rc, int rcode)
{
    http_req *req = &rc->req;
    if (rcode < 0) {
        if (err_http_status(rcode) >= 500)
            log_with(LOG_ERROR, "request failed", LF_STR("error", err_name(rcode)),
                     LF_STR("detail", req->error_message ? req->error_message : ""));
        if (err_http_status(rcode) >= 500 && rcode != PL_EUNAVAILABLE && rcode != PL_ETIMEOUT)
            req->error_message = NULL; /* internal details stay in the log */
        render_error(rc, rcode);
    }
    return send_response(rc);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size,
                                  void **con_cls)
{
    (void)version;
    http_server *srv = cls;
    reqctx *rc = *con_cls;
    if (!rc) {
        rc = calloc(1, sizeof *rc);
        if (!rc)
            return MHD_NO;
        *con_cls = rc;
        atomic_fetch_add(&srv->inflight, 1);
        rc->srv = srv;
        rc->start_ns = time_mono_ns();
        rc->route_index = -1;
        rc->req.conn = conn;
        rc->req.method = method;
        rc->req.path = url;
        rc->req.route = "unmatched";
        rc->req.arena = arena_create(4096);
        rc->req.client_ip = rc->client_ip;
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (ci && ci->client_addr)
            getnameinfo(ci->client_addr, ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                                             : sizeof(struct sockaddr_in),
                        rc->client_ip, sizeof rc->client_ip, NULL, 0, NI_NUMERICHOST);
        trace_begin(&rc->req, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "traceparent"));
        request_id_begin(&rc->req, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id"));
        log_ctx_set(rc->req.request_id, rc->req.trace_id);
        log_ctx_traceparent(rc->req.traceparent);

        size_t hsize = strlen(url);
        MHD_get_connection_values(conn, MHD_HEADER_KIND, count_header, &hsize);
        if (hsize > srv->o.header_limit)
            return send_error(rc, PL_EHEADERS, "request headers of %zu bytes exceed the limit of %zu", hsize,
                              srv->o.header_limit);
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > srv->o.body_limit) {
            /* Answering now closes the connection while the client is still
             * sending, and the reset that follows can destroy the answer before
             * the client reads it. So the body is read and dropped, and the 413
             * comes at its end; only a client waiting for 100-continue (it has
             * sent nothing yet) or a body not worth reading is answered now. */
            const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Expect");
            if ((expect && strcasecmp(expect, "100-continue") == 0) || strtoull(cl, NULL, 10) > drain_limit(srv))
                return send_error(rc, PL_ETOOLARGE, "the body exceeds the limit of %zu bytes", srv->o.body_limit);
            rc->rejected = PL_ETOOLARGE;
        }
        return MHD_YES;
    }
    log_ctx_set(rc->req.request_id, rc->req.trace_id);
    log_ctx_traceparent(rc->req.traceparent);
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (rc->responded)
            return MHD_YES; /* discarding the rest of a rejected body */
        /* MHD cannot queue a response while body data is being handed over
         * (and a chunked body gives no length up front), so the 413 waits for
         * the end of the body, which is dropped meanwhile. A client that keeps
         * on sending long after the limit is cut off instead. */
        if (rc->rejected) {
            rc->discarded += n;
            return rc->discarded > drain_limit(srv) ? MHD_NO : MHD_YES;
        }
        if (rc->req.body_len + n > srv->o.body_limit) {
            rc->rejected = PL_ETOOLARGE;
            rc->discarded = n;
            return MHD_YES;
        }
        if (rc->req.body_len + n + 1 > rc->body_cap) {
            size_t cap = rc->body_cap ? rc->body_cap : 1024;
            while (cap < rc->req.body_len + n + 1)
                cap *= 2;
            char *nb = realloc(rc->body, cap);
            if (!nb)
                return MHD_NO;
            rc->body = nb;
            rc->body_cap = cap;
        }
        memcpy(rc->body + rc->req.body_len, upload_data, n);
        rc->req.body_len += n;
        rc->body[rc->req.body_len] = '\0';
        rc->req.body = rc->body;
        return MHD_YES;
    }
    if (rc->responded)
        return MHD_YES;
    if (rc->offloaded) {
        if (!rc->async_done)
            return MHD_YES; /* not resumed by the pool yet */
        rc->offloaded = false;
        return finish(rc, rc->async_rc);
    }
    if (rc->rejected == PL_ETOOLARGE)
        return send_error(rc, PL_ETOOLARGE, "the body exceeds the limit of %zu bytes", srv->o.body_limit);
    if (!rc->req.body)
        rc->req.body = "";
    return dispatch(rc, url);
}

static void access_log(reqctx *rc, int status, enum MHD_RequestTerminationCode toe)
{
    http_server *srv = rc->srv;
    double secs = (double)(time_mono_ns() - rc->start_ns) / 1e9;
    metrics_observe(srv->metrics, rc->route_index, status, secs);
    /* the path is MHD's url, without the query string (access_token stays out) */
    if (srv->o.access_log && !(rc->flags & HTTP_NOLOG)) {
        log_ctx_set(rc->req.request_id, rc->req.trace_id);
        log_with(LOG_INFO, "access", LF_STR("method", rc->req.method), LF_STR("path", rc->req.path),
                 LF_STR("route", rc->req.route), LF_INT("status", status), LF_DBL("ms", secs * 1000.0),
                 LF_INT("bytes_in", rc->req.body_len), LF_STR("client", rc->client_ip),
                 LF_INT("completed", toe == MHD_REQUEST_TERMINATED_COMPLETED_OK));
    }
    log_ctx_clear();
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    http_server *srv = cls;
    reqctx *rc = *con_cls;
    if (!rc)
        return;
    *con_cls = NULL;
    if (rc->upgraded) {
        free(rc);
        return;
    }
    if (rc->res.upgrade) /* the 101 was never sent */
        rc->res.upgrade(rc->res.upgrade_arg, -1, NULL, 0, NULL);
    /* 499: the client went away first; a body cut off after its rejection
     * counts as the rejection. */
    int status = rc->responded ? rc->status : rc->rejected ? err_http_status(rc->rejected) : 499;
    access_log(rc, status, toe);
    json_decref(rc->req.error_fields);
    free(rc->res.body);
    free(rc->body);
    arena_destroy(rc->req.arena);
    free(rc);
    atomic_fetch_sub(&srv->inflight, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_with(LOG_WARN, "http", LF_STR("detail", msg));
}

/* ---- the offload pool ------------------------------------------------------ */

static void *pool_main(void *arg)
{
    http_server *s = arg;
    offload_pool *p = &s->pool;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (!p->len && !p->stop)
            pthread_cond_wait(&p->ready, &p->lock);
        if (!p->len) { /* stopping and drained */
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        job j = p->q[p->head];
        p->head = (p->head + 1) % p->cap;
        p->len--;
        pthread_mutex_unlock(&p->lock);

        reqctx *rc = j.rc;
        log_ctx_set(rc->req.request_id, rc->req.trace_id);
        log_ctx_traceparent(rc->req.traceparent);
        rc->async_rc = j.fn(&rc->req, &rc->res, j.arg);
        log_ctx_clear();
        rc->async_done = true;
        /* MHD calls the access handler again for this connection on its own
         * thread; the lock inside MHD_resume_connection publishes the writes
         * above to that thread. */
        MHD_resume_connection(rc->req.conn);
    }
}

int http_offload(http_req *req, http_res *res, int (*fn)(http_req *, http_res *, void *), void *arg)
{
    reqctx *rc = (reqctx *)req;
    offload_pool *p = &rc->srv->pool;
    pthread_mutex_lock(&p->lock);
    bool full = p->len == p->cap || p->stop;
    if (!full) {
        /* Suspend before the job is visible, so its resume cannot come first. */
        MHD_suspend_connection(req->conn);
        rc->offloaded = true;
        p->q[(p->head + p->len) % p->cap] = (job){rc, fn, arg};
        p->len++;
        pthread_cond_signal(&p->ready);
    }
    pthread_mutex_unlock(&p->lock);
    if (full) {
        http_header_add(req, res, "Retry-After", "1");
        return http_fail(req, PL_EUNAVAILABLE, NULL, "the server is busy; retry in a second");
    }
    return 0;
}

static void pool_start(http_server *s, int threads, int queue)
{
    offload_pool *p = &s->pool;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->ready, NULL);
    p->cap = (size_t)(queue > 0 ? queue : 256);
    p->q = calloc(p->cap, sizeof *p->q);
    p->nthreads = threads > 0 ? threads : 2;
    p->threads = calloc((size_t)p->nthreads, sizeof *p->threads);
    if (!p->q || !p->threads)
        abort();
    for (int i = 0; i < p->nthreads; i++)
        if (pthread_create(&p->threads[i], NULL, pool_main, s))
            abort();
}

/* Runs what is queued, then ends the threads. */
static void pool_stop(http_server *s)
{
    offload_pool *p = &s->pool;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->ready);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p->q);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->ready);
}

static int resolve(const char *host, int port, struct sockaddr_storage *ss, pl_error *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int g = getaddrinfo(host, portstr, &hints, &ai);
    if (g || !ai)
        return err_set(err, PL_ECONFIG, "listen", "cannot resolve listen host %s: %s", host, gai_strerror(g));
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    return 0;
}

int http_server_start(router *r, metrics *m, const http_server_opts *o, http_server **out, pl_error *err)
{
    struct sockaddr_storage ss;
    int rc = resolve(o->host, o->port, &ss, err);
    if (rc)
        return rc;
    http_server *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->router = r;
    s->metrics = m;
    s->o = *o;
    /* The pool holds the header bytes (<= header_limit), their records (at most
     * header_limit / HEADER_RECORD_COST of them, HEADER_RECORD_COST bytes each)
     * and the response headers, with room to spare: so a request is judged by
     * header_limit, not by running out of pool. */
    size_t pool = 3 * o->header_limit + 32768;
    /* An upgraded (WebSocket) connection keeps its pool until it closes, and
     * libmicrohttpd 0.9.75 has touched about half of it by then: a process
     * serving only the gateway can choose a small pool (its requests are the
     * upgrade alone); headers beyond it get libmicrohttpd's own 431. */
    if (o->connection_memory)
        pool = o->connection_memory < 4096 ? 4096 : o->connection_memory;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_ALLOW_UPGRADE |
                     MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_TURBO;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    pool_start(s, o->workers, o->worker_queue);
    if (m)
        metrics_add_collector(m, ws_metrics_collect, NULL);
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_THREAD_POOL_SIZE, (unsigned)o->threads,
                            MHD_OPTION_CONNECTION_TIMEOUT, o->idle_timeout_s,
                            MHD_OPTION_CONNECTION_LIMIT, o->connection_limit,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
                            MHD_OPTION_END);
    if (!s->d) {
        pool_stop(s);
        free(s);
        return err_set(err, PL_EIO, "listen", "cannot listen on %s:%d (in use, or not an address of this host)",
                       o->host, o->port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : o->port;
    *out = s;
    return 0;
}

int http_server_port(const http_server *s) { return s->port; }

/* Connections the kernel completed before the listener closed, but that MHD
 * had not accepted yet (its threads busy), carry requests their clients have
 * already sent; closing the listener would reset them. They are handed to MHD
 * to be served like the rest; only later connections are refused. */
static void adopt_backlog(http_server *s, MHD_socket lfd)
{
    int fl = fcntl(lfd, F_GETFL);
    if (fl < 0 || fcntl(lfd, F_SETFL, fl | O_NONBLOCK) < 0)
        return; /* a blocking accept would wait for the next client forever */
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && errno == EINTR)
            continue;
        if (fd < 0)
            return; /* EAGAIN: the backlog is empty */
        MHD_add_connection(s->d, fd, (struct sockaddr *)&ss, len); /* closes fd on failure */
    }
}

int http_server_stop(http_server *s, unsigned timeout_ms)
{
    if (!s)
        return 0;
    MHD_socket lfd = MHD_quiesce_daemon(s->d);
    if (lfd != MHD_INVALID_SOCKET) {
        adopt_backlog(s, lfd);
        close(lfd);
    }
    /* WebSocket sessions get their 1001 while the process is still whole. */
    ws_hubs_shutdown(1000);
    /* A request counts as in flight once MHD has parsed its headers, so one
     * already sent on a connection whose thread is busy with another request
     * is not counted yet; the thread reads it moments after finishing the
     * current one. Waiting for the count to stay at zero for a short quiet
     * period, rather than to touch zero once, lets such requests finish too. */
    const int64_t quiet_ns = 50 * 1000000;
    int64_t deadline = time_mono_ns() + (int64_t)timeout_ms * 1000000;
    int64_t quiet_since = 0;
    for (int64_t now = time_mono_ns(); now < deadline; now = time_mono_ns()) {
        if (atomic_load(&s->inflight) > 0)
            quiet_since = 0;
        else if (!quiet_since)
            quiet_since = now;
        else if (now - quiet_since >= quiet_ns)
            break;
        usleep(2000);
    }
    int left = atomic_load(&s->inflight);
    /* Suspended connections must be resumed before MHD stops: the pool runs
     * what it holds and resumes each one before its threads end. */
    pool_stop(s);
    MHD_stop_daemon(s->d);
    free(s);
    return left;
}
