/*
 * bench.h - the testkit routes of the WebSocket benchmark (see bench.c for
 * their contracts): bulk session minting and paced pushes.
 */
#ifndef PULSE_SERVICES_TESTKIT_BENCH_H
#define PULSE_SERVICES_TESTKIT_BENCH_H

#include "http/http.h"

/* POST /api/v1/testkit/sessions */
int testkit_mint_sessions(http_req *req, http_res *res);
/* POST /api/v1/testkit/pushes */
int testkit_pushes(http_req *req, http_res *res);
/* Closes identity's kv if a route opened it (from the service's stop). */
void testkit_bench_stop(void);

#endif
