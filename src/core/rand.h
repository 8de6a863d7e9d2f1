/*
 * rand.h - cryptographically secure random bytes, cheap enough for every
 * request: each thread draws 512 bytes at a time from the kernel (through
 * libsodium) and hands them out, so trace ids, span ids and UUIDs cost no
 * system call each. Bytes are never handed out twice. sodium_init() must
 * have run.
 */
#ifndef PULSE_CORE_RAND_H
#define PULSE_CORE_RAND_H

#include <stddef.h>

void rand_bytes(void *buf, size_t n);

#endif
