/*
 * argon2.c - the cost of one argon2id password hash at Pulse's parameters.
 *
 *   argon2 [N [THREADS [T_COST [M_COST_KIB [PARALLELISM]]]]]
 *
 * Defaults: N=20 hashes per thread, THREADS=1, and the identity service's
 * defaults t=2, m=19 MiB (19456 KiB), p=1 (service.identity.argon2_*), with a
 * 16-byte salt and a 32-byte tag as in src/services/identity/identity.c.
 * The process's first hash is timed on its own (first_ms: it also faults in the
 * 19 MiB, as pulse's first hash at start-up does); then one more warm-up hash
 * per thread, not counted. Every thread times its own calls; the output is one
 * line of key=value pairs:
 *
 *   threads=1 n=20 t=2 m_kib=19456 p=1 first_ms=... mean_ms=... p50_ms=... min_ms=... max_ms=... hashes_per_s=...
 *
 * hashes_per_s is the total hashes over the wall time of the timed part, so
 * with THREADS = nproc it is the machine's ceiling for logins per second.
 */
#include <argon2.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static unsigned n_per_thread = 20, t_cost = 2, m_kib = 19456, lanes = 1;
static pthread_barrier_t start_line;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int one_hash(unsigned seq)
{
    static const char pw[] = "correct horse battery staple";
    unsigned char salt[16];
    for (size_t i = 0; i < sizeof salt; i++)
        salt[i] = (unsigned char)(seq * 31u + i * 7u);
    char encoded[256];
    return argon2id_hash_encoded(t_cost, m_kib, lanes, pw, sizeof pw - 1, salt, sizeof salt, 32, encoded,
                                 sizeof encoded);
}

static void *worker(void *arg)
{
    double *ms = arg;
    if (one_hash(0) != ARGON2_OK) /* warm-up: page faults of the first 19 MiB */
        exit(1);
    pthread_barrier_wait(&start_line);
    for (unsigned i = 0; i < n_per_thread; i++) {
        double t0 = now_ms();
        if (one_hash(i + 1) != ARGON2_OK)
            exit(1);
        ms[i] = now_ms() - t0;
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    unsigned threads = 1;
    if (argc > 1)
        n_per_thread = (unsigned)strtoul(argv[1], NULL, 10);
    if (argc > 2)
        threads = (unsigned)strtoul(argv[2], NULL, 10);
    if (argc > 3)
        t_cost = (unsigned)strtoul(argv[3], NULL, 10);
    if (argc > 4)
        m_kib = (unsigned)strtoul(argv[4], NULL, 10);
    if (argc > 5)
        lanes = (unsigned)strtoul(argv[5], NULL, 10);
    if (!n_per_thread || !threads || threads > 64 || !t_cost || !lanes) {
        fprintf(stderr, "usage: argon2 [N [THREADS [T_COST [M_COST_KIB [PARALLELISM]]]]]\n");
        return 2;
    }
    double c0 = now_ms();
    if (one_hash(0) != ARGON2_OK) {
        fprintf(stderr, "argon2: argon2id_hash_encoded fails with t=%u m=%u KiB p=%u\n", t_cost, m_kib, lanes);
        return 1;
    }
    double first_ms = now_ms() - c0; /* cold: the process's first hash faults its memory in */

    size_t total = (size_t)n_per_thread * threads;
    double *ms = calloc(total, sizeof *ms);
    pthread_t tid[64];
    if (!ms)
        return 1;
    pthread_barrier_init(&start_line, NULL, threads + 1);
    for (unsigned i = 0; i < threads; i++)
        pthread_create(&tid[i], NULL, worker, ms + (size_t)i * n_per_thread);
    pthread_barrier_wait(&start_line);
    double t0 = now_ms();
    for (unsigned i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    double wall = now_ms() - t0;

    double sum = 0;
    for (size_t i = 0; i < total; i++)
        sum += ms[i];
    qsort(ms, total, sizeof *ms, cmp_double);
    printf("threads=%u n=%u t=%u m_kib=%u p=%u first_ms=%.2f mean_ms=%.2f p50_ms=%.2f min_ms=%.2f max_ms=%.2f "
           "hashes_per_s=%.1f\n",
           threads, n_per_thread, t_cost, m_kib, lanes, first_ms, sum / (double)total, ms[total / 2], ms[0],
           ms[total - 1], (double)total / (wall / 1e3));
    free(ms);
    return 0;
}
