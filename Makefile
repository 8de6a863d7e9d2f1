# Pulse — build, run, test, bench.
#
#   make run     install what is missing, build, serve on embedded stores with demo data
#   make test    same set-up, build with AddressSanitizer + UBSan, run every test
#   make bench   build optimised and run the benchmarks (results: docs/BENCHMARKS.md)
#   make build   build/pulse only
#
# Plain GNU make over a flat source list; objects per flavour under build/.

SHELL    := /bin/bash
B        ?= build
CC       ?= gcc
JOBS     ?= 2
PKGS     := libmicrohttpd jansson inih sqlite3 libsodium libargon2 libpq hiredis libnats
CPPFLAGS := -Isrc -I$(B)/gen -D_GNU_SOURCE $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
            -Wformat=2 -Wvla -Wcast-align -Wwrite-strings -Wnull-dereference -Wundef \
            -Wno-unused-parameter -Wno-format-truncation -Werror
CFLAGS_BASE := -std=gnu11 -g -pthread $(WARN)
LIBS     := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lwslay -lpthread -lm

REL_CFLAGS  := $(CFLAGS_BASE) -O2 -fno-omit-frame-pointer
ASAN_CFLAGS := $(CFLAGS_BASE) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
ASAN_LDFLAGS := -fsanitize=address,undefined

SRC        := $(shell find src -name '*.c' -not -path 'src/cli/*' | sort)
CLI_SRC    := $(shell find src/cli -name '*.c' | sort)
MIGRATIONS := $(shell find src -path '*/migrations/*/*.sql' | sort)
GEN_SRC    := $(B)/gen/migrations.c
UNIT_SRC   := $(shell find tests/unit -name '*.c' 2>/dev/null | sort)

REL_OBJ  := $(patsubst %.c,$(B)/rel/%.o,$(SRC) $(GEN_SRC))
REL_CLI  := $(patsubst %.c,$(B)/rel/%.o,$(CLI_SRC))
ASAN_OBJ := $(patsubst %.c,$(B)/asan/%.o,$(SRC) $(GEN_SRC))
ASAN_CLI := $(patsubst %.c,$(B)/asan/%.o,$(CLI_SRC))

.PHONY: all build run run-distributed test unit api api-distributed bench setup clean fmt

all: build
build: $(B)/pulse

setup:
	@bash scripts/setup.sh

run: setup
	@$(MAKE) --no-print-directory -j$(JOBS) $(B)/pulse
	./$(B)/pulse serve --demo

# The same hub on PostgreSQL, Redis and NATS JetStream, started from Debian's
# packages into ./.engines (scripts/engines.sh; `scripts/engines.sh stop` ends them).
run-distributed: setup
	@$(MAKE) --no-print-directory -j$(JOBS) $(B)/pulse
	bash scripts/engines.sh start .engines
	./$(B)/pulse serve --config .engines/pulse.ini --demo

test: setup
	@$(MAKE) --no-print-directory -j$(JOBS) $(B)/asan/pulse $(B)/asan/unit-tests $(B)/asan/conformance-tests
	@$(MAKE) --no-print-directory unit api api-distributed test-conformance test-faults

unit: $(B)/asan/unit-tests
	ASAN_OPTIONS=detect_leaks=1 ./$(B)/asan/unit-tests --jobs 2

api: $(B)/asan/pulse
	cd tests/api && PULSE_TEST_BIN=$(abspath $(B))/asan/pulse node --test --test-concurrency=2 .

# The same black-box suite on PostgreSQL, Redis and NATS JetStream, which it starts itself
# (scripts/engines.sh, loopback, a temporary directory) and stops by PID at the end.
api-distributed: $(B)/asan/pulse
	@dir=$$(mktemp -d /tmp/pulse-engines.XXXXXX); \
	trap 'bash $(CURDIR)/scripts/engines.sh stop "$$dir" >/dev/null; rm -rf "$$dir"' EXIT; \
	bash scripts/engines.sh start "$$dir" >/dev/null && cd tests/api && \
	PULSE_TEST_PROFILE=distributed PULSE_TEST_ENGINES_ENV="$$dir/engines.env" \
	PULSE_TEST_BIN=$(abspath $(B))/asan/pulse node --test --test-concurrency=2 .

bench: setup
	@$(MAKE) --no-print-directory -j$(JOBS) $(B)/pulse $(B)/bench/hello $(B)/bench/argon2
	B=$(B) bash bench/run.sh
	@$(MAKE) --no-print-directory -j$(JOBS) $(B)/bench/bus_bench
	B=$(B) bash bench/bus.sh
	@$(MAKE) --no-print-directory -j$(JOBS) $(B)/pulse $(B)/bench/paced
	B=$(B) bash bench/pg.sh

# Partial runs: print their results, leave docs/BENCHMARKS.md alone.
.PHONY: bench-http bench-login bench-startup
bench-http bench-login bench-startup: bench-%: setup
	@$(MAKE) --no-print-directory -j$(JOBS) $(B)/pulse $(B)/bench/hello $(B)/bench/argon2
	B=$(B) bash bench/run.sh $*

$(B)/gen/migrations.c: scripts/gen-migrations.sh $(MIGRATIONS)
	@mkdir -p $(@D)
	sh scripts/gen-migrations.sh $(MIGRATIONS) > $@.tmp && mv $@.tmp $@

$(B)/rel/%.o: %.c
	@mkdir -p $(@D)
	@echo "  CC  $@"
	@$(CC) $(CPPFLAGS) $(REL_CFLAGS) -MMD -MP -c $< -o $@

$(B)/asan/%.o: %.c
	@mkdir -p $(@D)
	@echo "  CC  $@"
	@$(CC) $(CPPFLAGS) $(ASAN_CFLAGS) -MMD -MP -c $< -o $@

$(B)/pulse: $(REL_OBJ) $(REL_CLI)
	$(CC) $(REL_CFLAGS) -o $@ $^ $(LIBS)

$(B)/asan/pulse: $(ASAN_OBJ) $(ASAN_CLI)
	$(CC) $(ASAN_CFLAGS) $(ASAN_LDFLAGS) -o $@ $^ $(LIBS)

$(B)/asan/unit-tests: $(ASAN_OBJ) $(patsubst %.c,$(B)/asan/%.o,$(UNIT_SRC))
	$(CC) $(ASAN_CFLAGS) $(ASAN_LDFLAGS) -o $@ $^ $(LIBS) -lcriterion

$(B)/bench/hello: bench/hello.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(REL_CFLAGS) -o $@ $< $(LIBS)

$(B)/bench/argon2: bench/argon2.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(REL_CFLAGS) -o $@ $< $(LIBS)

# The event backbone (bench/bus.sh): outbox -> relay -> embedded log -> consumer; writes its section of
# docs/BENCHMARKS.md.
.PHONY: bench-bus
bench-bus: setup
	@$(MAKE) --no-print-directory -j$(JOBS) $(B)/bench/bus_bench
	B=$(B) bash bench/bus.sh

$(B)/bench/bus_bench: bench/bus_bench.c $(REL_OBJ)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(REL_CFLAGS) -o $@ $< $(REL_OBJ) $(LIBS)

clean:
	rm -rf $(B)

-include $(shell find $(B) -name '*.d' 2>/dev/null)

# ---- conformance: one suite per store kind, the same cases against every engine (tests/conformance).
CONF_SRC := $(shell find tests/conformance -name '*.c' 2>/dev/null | sort)

.PHONY: test-conformance
$(B)/asan/conformance-tests: $(ASAN_OBJ) $(patsubst %.c,$(B)/asan/%.o,$(CONF_SRC))
	$(CC) $(ASAN_CFLAGS) $(ASAN_LDFLAGS) -o $@ $^ $(LIBS) -lcriterion

# Starts PostgreSQL, Redis and NATS (scripts/engines.sh) in a temporary directory, runs every case on
# every engine, then the PostgreSQL restart and NATS outage cases alone (they stop servers), and stops the engines.
test-conformance: $(B)/asan/conformance-tests
	@dir=$$(mktemp -d /tmp/pulse-engines.XXXXXX); \
	trap 'bash scripts/engines.sh stop "$$dir"; rm -rf "$$dir"' EXIT; \
	bash scripts/engines.sh start "$$dir" && set -a && . "$$dir/engines.env" && set +a && \
	ASAN_OPTIONS=detect_leaks=1 ./$(B)/asan/conformance-tests --jobs 2 && \
	PULSE_TEST_PG_FAULTS=1 ASAN_OPTIONS=detect_leaks=1 ./$(B)/asan/conformance-tests --jobs 1 --filter 'sql_pg_fault/*' && \
	PULSE_TEST_NATS_FAULTS=1 ASAN_OPTIONS=detect_leaks=1 ./$(B)/asan/conformance-tests --jobs 1 --filter 'bus_nats_fault/*'

# ---- fuzz: libFuzzer drivers for the parsers (tests/fuzz; see tests/README.md).
# Not part of `make test`. Each target runs FUZZ_RUNS inputs from its seed
# corpus tests/fuzz/corpus/<target>; what it learns goes to $(B)/fuzz/corpus,
# crashes to $(B)/fuzz/crashes. `make fuzz FUZZ_TARGETS=json FUZZ_RUNS=1000000`.
FUZZ_CC      ?= clang
FUZZ_RUNS    ?= 200000
FUZZ_TARGETS ?= $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/*.c))
FUZZ_FLAGS   ?=
FUZZ_SRC     := $(sort $(wildcard src/core/*.c)) src/http/router.c src/store/doc_check.c
FUZZ_CFLAGS  := -std=gnu11 -g -O1 -fno-omit-frame-pointer -Wall -Wextra -Wno-unused-parameter -Werror \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined

.PHONY: fuzz fuzz-build
fuzz-build: $(addprefix $(B)/fuzz/,$(FUZZ_TARGETS))

fuzz: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(B)/fuzz/corpus/$$t $(B)/fuzz/crashes; \
	    dict=; [ -f tests/fuzz/$$t.dict ] && dict=-dict=tests/fuzz/$$t.dict; \
	    if ./$(B)/fuzz/$$t -runs=$(FUZZ_RUNS) -print_final_stats=1 -artifact_prefix=$(B)/fuzz/crashes/$$t- \
	        $$dict $(FUZZ_FLAGS) $(B)/fuzz/corpus/$$t tests/fuzz/corpus/$$t > $(B)/fuzz/$$t.log 2>&1; then \
	        echo "fuzz: $$t ok, $$(grep -h -o 'number_of_executed_units: *[0-9]*' $(B)/fuzz/$$t.log | grep -o '[0-9]*') runs," \
	            "$$(grep -o 'cov: [0-9]*' $(B)/fuzz/$$t.log | tail -1)"; \
	    else \
	        tail -n 40 $(B)/fuzz/$$t.log; echo "fuzz: $$t FAILED (log $(B)/fuzz/$$t.log, input in $(B)/fuzz/crashes)"; exit 1; \
	    fi; \
	done

$(B)/fuzz/%: tests/fuzz/%.c $(FUZZ_SRC)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_SRC) $(LIBS)

# ---- kv store benchmark (bench/kv.sh): the adapter next to redis-benchmark and a raw hiredis fan-out on a Redis
# it starts itself, and the embedded engine; writes its section of docs/BENCHMARKS.md. Part of `make bench`.
.PHONY: bench-kv
bench: bench-kv
bench-kv: setup
	@$(MAKE) --no-print-directory -j$(JOBS) $(B)/bench/kv_bench
	B=$(B) bash bench/kv.sh

$(B)/bench/kv_bench: bench/kv_bench.c $(REL_OBJ)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(REL_CFLAGS) -o $@ $< $(REL_OBJ) $(LIBS)

# Relational writes and reads on PostgreSQL next to pgbench in the same run (bench/pg.sh): starts its own
# PostgreSQL, Redis and NATS (scripts/engines.sh) and writes its section of docs/BENCHMARKS.md.
.PHONY: bench-pg
bench-pg: setup
	@$(MAKE) --no-print-directory -j$(JOBS) $(B)/pulse $(B)/bench/paced
	B=$(B) bash bench/pg.sh

$(B)/bench/paced: bench/paced.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(REL_CFLAGS) -o $@ $<

# ---- the event bus on NATS JetStream (bench/nats.sh): the outbox relay into JetStream next to a raw libnats async
# publish loop, consumer rates and commit -> handler latency, on a nats-server it starts itself (or $NATS_URL);
# writes its section of docs/BENCHMARKS.md. Part of `make bench`.
.PHONY: bench-nats
bench: bench-nats
bench-nats: setup
	@$(MAKE) --no-print-directory -j$(JOBS) $(B)/bench/nats_bench
	B=$(B) bash bench/nats.sh

$(B)/bench/nats_bench: bench/nats_bench.c $(REL_OBJ)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(REL_CFLAGS) -o $@ $< $(REL_OBJ) $(LIBS)

# ---- faults (tests/api/faults.test.mjs, see tests/README.md): PostgreSQL, Redis and NATS restarted under a
# writing client, consumer instances killed mid-batch; on engines the test file starts itself (scripts/engines.sh in
# a temporary directory, stopped by PID). About two minutes; part of `make test`.
.PHONY: test-faults
test-faults: $(B)/asan/pulse
	cd tests/api && PULSE_TEST_PROFILE=distributed PULSE_TEST_FAULTS=1 PULSE_TEST_BIN=$(abspath $(B))/asan/pulse \
	    node --test faults.test.mjs

# ---- WebSocket fan-out (bench/ws.sh): 50,000 sessions on several gateway processes, 2,000 events/s from the
# outbox to the client sockets, latency, memory and CPU per session; writes its section of docs/BENCHMARKS.md.
# bench-ws-sanity: 100 sessions, 10 s, fails unless every delivery arrived exactly once. Part of `make bench`.
.PHONY: bench-ws bench-ws-sanity
bench: bench-ws
bench-ws bench-ws-sanity: setup
	@$(MAKE) --no-print-directory -j$(JOBS) $(B)/pulse $(B)/bench/ws_load
	B=$(B) bash bench/ws.sh $(if $(filter bench-ws-sanity,$@),sanity,full)

$(B)/bench/ws_load: bench/ws_load.c
	@mkdir -p $(@D)
	$(CC) $(REL_CFLAGS) -o $@ $<
# `make test` only compiles the load generator (-Werror), so that it keeps building; it never runs it.
test: $(B)/bench/ws_load

# ---- doc store benchmark (bench/doc.sh): document writes and indexed reads at a paced 1k ops/s on PostgreSQL JSONB
# next to raw libpq on the same table shape, and on SQLite next to raw sqlite3; starts its own PostgreSQL and
# writes its section of docs/BENCHMARKS.md. Part of `make bench`.
.PHONY: bench-doc
bench: bench-doc
bench-doc: setup
	@$(MAKE) --no-print-directory -j$(JOBS) $(B)/bench/doc_bench
	B=$(B) bash bench/doc.sh

$(B)/bench/doc_bench: bench/doc_bench.c $(REL_OBJ)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(REL_CFLAGS) -o $@ $< $(REL_OBJ) $(LIBS)
# ---- the timeline (bench/timeline.sh): fan-out of one post to 10,000 feeds (embedded kv and Redis) next to a raw
# hiredis pipeline, and GET /api/v1/timeline/home under wrk next to the bare hello world. Part of `make bench`.
.PHONY: bench-fanout bench-timeline
bench: bench-fanout bench-timeline
bench-fanout bench-timeline: setup
	@$(MAKE) --no-print-directory -j$(JOBS) $(B)/pulse $(B)/bench/kv_bench $(B)/bench/hello
	B=$(B) bash bench/timeline.sh $(if $(filter bench-fanout,$@),fanout,read)
