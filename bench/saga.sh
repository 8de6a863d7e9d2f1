#!/usr/bin/env bash
# bench/saga.sh - the purchase saga end to end (make bench-saga): purchases per
# second through reserve seat -> capture (simulator, zero latency) -> grant
# access -> invoice, and completion latency p50/p99 (server-stamped), on the
# embedded engines and on PostgreSQL + NATS (started here by scripts/engines.sh
# and stopped on exit); next to the raw engine's own single-row commit rate in
# the same run (sqlite3 CLI / pgbench), because a purchase is a chain of small
# commits. Appends its section to docs/BENCHMARKS.md (BENCH_DOCS=/dev/null to skip).
#
# Env: B (build dir, default build), SAGA_USERS, SAGA_COURSES, SAGA_CONCURRENCY (bench/saga.mjs).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-build}
DOCS=${BENCH_DOCS:-docs/BENCHMARKS.md}
[[ -x $B/pulse ]] || { echo "bench: $B/pulse is missing; run: make B=$B bench-saga" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pulse-saga.XXXXXX")
chmod 755 "$WORK" # the engines run as the postgres user, which must enter it
ENG=$WORK/eng
cleanup() {
    [[ -f $ENG/engines.env ]] && bash scripts/engines.sh stop "$ENG" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# raw SQLite: N single-row write transactions, WAL, synchronous=NORMAL (what the sql store uses)
raw_sqlite() {
    local n=5000 db=$WORK/raw.db t0 t1
    { echo "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);"
      for ((i = 0; i < n; i++)); do echo "BEGIN IMMEDIATE; INSERT INTO t (v) VALUES ('x$i'); COMMIT;"; done; } > "$WORK/raw.sql"
    t0=$(date +%s%N); sqlite3 "$db" < "$WORK/raw.sql" >/dev/null; t1=$(date +%s%N)
    echo $((n * 1000000000 / (t1 - t0)))
}

# raw PostgreSQL: pgbench, one single-row INSERT transaction per statement, 8 clients, 5 s
raw_pg() {
    # shellcheck disable=SC1090
    source "$ENG/engines.env"
    psql -q "$PULSE_DEFAULTS_SQL" -c "DROP TABLE IF EXISTS saga_raw; CREATE TABLE saga_raw (id BIGSERIAL PRIMARY KEY, v TEXT)" >/dev/null
    echo "INSERT INTO saga_raw (v) VALUES ('x');" > "$WORK/raw.pgb"
    pgbench -n -c 8 -j 2 -T 5 -f "$WORK/raw.pgb" "$PULSE_DEFAULTS_SQL" 2>/dev/null | awk '/^tps/ {printf "%d\n", $3}'
}

echo "saga bench: embedded" >&2
EMB=$(PULSE_TEST_BIN=$PWD/$B/pulse node bench/saga.mjs)
RAW_SQLITE=$(raw_sqlite)
echo "saga bench: distributed (PostgreSQL, Redis, NATS)" >&2
bash scripts/engines.sh start "$ENG" >/dev/null
DIST=$(PULSE_TEST_BIN=$PWD/$B/pulse PULSE_TEST_PROFILE=distributed PULSE_TEST_ENGINES_ENV=$ENG/engines.env node bench/saga.mjs)
RAW_PG=$(raw_pg)
echo "$EMB"; echo "$DIST"; echo "raw sqlite commits/s: $RAW_SQLITE; raw postgres commits/s: $RAW_PG"

row() { # JSON -> table row
    node -e 'const r = JSON.parse(process.argv[1]); console.log(`| ${r.profile} | ${r.purchases} | ${r.concurrency} | ${r.purchases_per_s} | ${r.p50_ms} / ${r.p99_ms} | ${r.paced.p50_ms} / ${r.paced.p99_ms} / ${r.paced.max_ms} | ${r.server_cpu_ms_per_purchase} | ${r.loadavg} |`)' "$1"
}
{
    echo
    echo "## Purchase saga (commerce + courses), $(date -u +%Y-%m-%d)"
    echo
    echo "\`make bench-saga\` (bench/saga.sh, bench/saga.mjs) at $(git rev-parse --short HEAD), release build, one process"
    echo "hosting identity, courses and commerce; payment simulator at zero latency. Every user buys every course once"
    echo "(Idempotency-Key per purchase) with the given requests in flight; purchases/s = accepted purchases / time from the"
    echo "first request until no saga is in flight; latency = order created_at -> completed (both stamped by the server, ms),
saturated (the run above: mostly queueing) and paced (100 purchases at 20/s afterwards: one purchase's own latency)."
    echo "Load average: the 1-minute value when the run started (the machine is shared: 2 cores)."
    echo
    echo "| profile | purchases | in flight | purchases/s | saturated p50 / p99 ms | paced 20/s p50 / p99 / max ms | server CPU ms / purchase | load avg |"
    echo "|---|---|---|---|---|---|---|---|"
    row "$EMB"
    row "$DIST"
    echo
    echo "Raw engine in the same run: SQLite (sqlite3 CLI, WAL, synchronous=NORMAL) $RAW_SQLITE single-row commits/s;"
    echo "PostgreSQL (pgbench, 8 clients) $RAW_PG single-row commits/s. A purchase costs about 9 commits in commerce's"
    echo "store (order, reply x3 via the inbox, simulator ledger x1-2, capture record, invoice) plus 3 in courses' and the"
    echo "outbox relays' deletes, so the engines' commit rates bound the saga's at roughly a tenth of theirs."
} >> "$DOCS"
