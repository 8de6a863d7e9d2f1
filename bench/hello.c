/*
 * hello.c - the bare libmicrohttpd hello world that Pulse's HTTP numbers are
 * compared against (docs/BENCHMARKS.md, ../shared/HTTP-CHOICE.md).
 *
 * Same build flags as Pulse (the Makefile's release rule) and the same daemon
 * set-up as src/http/server.c: the same MHD flags, thread-pool size (argv),
 * connection limit, per-connection memory pool and listen backlog. The handler
 * is the two-call pattern: the first call only marks the request, the second
 * queues a small JSON body from a persistent buffer, so keep-alive stays on
 * (queueing on the first call makes MHD 0.9.75 answer "Connection: close").
 *
 *   hello [THREADS [PORT]]     PORT 0 (default): any free port
 *
 * Listens on 127.0.0.1 only, prints "listening <port>" on stdout once ready,
 * and runs until SIGINT or SIGTERM.
 */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char BODY[] = "{\"message\":\"hello\"}";
static int first_call_marker; /* the address is the "seen" mark in *con_cls */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size,
                                  void **con_cls)
{
    (void)url;
    (void)method;
    (void)version;
    (void)upload_data;
    struct MHD_Response *resp = cls;
    if (*con_cls == NULL) {
        *con_cls = &first_call_marker;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0;
        return MHD_YES;
    }
    return MHD_queue_response(conn, MHD_HTTP_OK, resp);
}

int main(int argc, char **argv)
{
    unsigned threads = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 4;
    unsigned port = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 0;
    if (threads < 1)
        threads = 1;

    /* Block the stop signals before MHD starts its threads, so that they inherit
     * the mask and sigwait() below receives them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    /* One shared response (MHD reference-counts it and allows concurrent queueing). */
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(sizeof BODY - 1, (void *)BODY, MHD_RESPMEM_PERSISTENT);
    if (!resp || MHD_add_response_header(resp, "Content-Type", "application/json") != MHD_YES)
        return 1;

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    /* As in src/http/server.c with its defaults (header_limit 16 KiB, connection_limit 10000). */
    size_t pool = 16384 + 16384;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_ALLOW_UPGRADE |
                     MHD_USE_TURBO;
    struct MHD_Daemon *d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, resp,
                                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                            MHD_OPTION_THREAD_POOL_SIZE, threads,
                                            MHD_OPTION_CONNECTION_TIMEOUT, 30u,
                                            MHD_OPTION_CONNECTION_LIMIT, 10000u,
                                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool,
                                            MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
                                            MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "hello: cannot listen on 127.0.0.1:%u\n", port);
        return 1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("listening %u\n", di ? (unsigned)di->port : port);
    fflush(stdout);

    int sig;
    sigwait(&set, &sig);

    MHD_stop_daemon(d);
    MHD_destroy_response(resp);
    return 0;
}
