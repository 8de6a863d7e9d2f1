#!/usr/bin/env bash
# bench/doc.sh - the doc store kind (run by `make bench` and `make bench-doc`).
#
#   B=build bash bench/doc.sh
#
# Builds nothing: expects $B/bench/doc_bench. Starts a PostgreSQL of its own with scripts/engines.sh in a
# temporary directory (loopback, a free port, stopped by PID at the end), then runs bench/doc_bench.c:
#
#   - PostgreSQL: document writes (doc_insert in a write transaction) and reads by an indexed field (the
#     newest 10 documents of a user: equality on user_id, order by created desc, limit 10) through the doc
#     store on JSONB, each at a paced DOC_RATE ops/s (open loop, latency from when each operation was due,
#     DOC_CLIENTS client threads taking the operations in turn),
#     next to raw libpq prepared statements on a table of the same shape with the same expression index
#     (BEGIN; INSERT; COMMIT, and the same SELECT), rounds alternating, DOC_ROUNDS rounds of DOC_SECS s;
#   - SQLite: the same through the embedded doc store (JSON1), next to raw sqlite3 statements.
#
# Prints the results, and appends (or replaces, on the same day) the section "doc store, DATE" of
# docs/BENCHMARKS.md. Environment: B, DOC_RATE (1000), DOC_CLIENTS (8), DOC_SECS (5), DOC_ROUNDS (3), DOC_SEED (20000
# documents on each side before measuring), BENCH_DOCS (docs/BENCHMARKS.md), DOC_DOCS=0 to print only.
set -euo pipefail

cd "$(dirname "$0")/.."
B=${B:-build}
BIN=$B/bench/doc_bench
RATE=${DOC_RATE:-1000}
SECS=${DOC_SECS:-5}
export DOC_ROUNDS=${DOC_ROUNDS:-3}
export DOC_CLIENTS=${DOC_CLIENTS:-8}
SEED=${DOC_SEED:-20000}
DOCS=${BENCH_DOCS:-docs/BENCHMARKS.md}
WRITE=${DOC_DOCS:-1}

[[ -x $BIN ]] || { echo "bench: $BIN is missing; run: make B=$B bench-doc" >&2; exit 1; }

log() { printf '[doc-bench] %s\n' "$*" >&2; }
calc() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; } # EXPR [DECIMALS]
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pulse-docbench.XXXXXX")
chmod 755 "$WORK" # PostgreSQL runs as its own user under root and must reach $WORK/engines
cleanup() {
    bash scripts/engines.sh stop "$WORK/engines" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
bash scripts/engines.sh up pg "$WORK/engines" >/dev/null
URL=$(sed -n 's/^PULSE_TEST_PG_URL=//p' "$WORK/engines/engines.env")
[[ -n $URL ]] || { echo "bench: postgres did not start" >&2; exit 1; }
PGVER=$(psql "$URL" -Atc 'SHOW server_version' | awk '{ print $1 }')
log "postgres $PGVER at $URL; $RATE ops/s, $DOC_ROUNDS rounds of $SECS s, $SEED documents seeded per side"

OUT=$WORK/out.txt
"$BIN" "$URL" "$RATE" "$SECS" "$SEED" | tee "$OUT"
"$BIN" "" "$RATE" "$SECS" "$SEED" | tee -a "$OUT"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# median of KEY over the measured runs of ENGINE SIDE OP (the first read line of each side is the warm-up)
med() {
    local vals
    vals=$(awk -v e="$1" -v s="$2" -v o="$3" -v k="$4" '
        { split("", f); for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } }
        f["engine"] == e && f["side"] == s && f["op"] == o && f["n"] + 0 > '"$(calc "$RATE * 0.5" 0)"' { print f[k] }' "$OUT")
    median $vals
}
row() { # ENGINE OP LABEL
    local e=$1 o=$2
    printf '| %s | %s | %s / %s | %s / %s | %s / %s | %s / %s | %s |\n' "$3" "$(med "$e" doc "$o" rate)" \
        "$(med "$e" doc "$o" p50_us)" "$(med "$e" raw "$o" p50_us)" "$(med "$e" doc "$o" p99_us)" "$(med "$e" raw "$o" p99_us)" \
        "$(med "$e" doc "$o" max_us)" "$(med "$e" raw "$o" max_us)" \
        "$(med "$e" doc "$o" cpu_us_per_op)" "$(med "$e" raw "$o" cpu_us_per_op)" \
        "$(calc "$(med "$e" doc "$o" p99_us) / $(med "$e" raw "$o" p99_us)" 2)"
}
met() { awk "BEGIN { exit !($1) }" && echo "met" || echo "**not met**"; }
[[ $WRITE == 1 ]] || exit 0

DATE=$(date -u +%Y-%m-%d)
TIME=$(date -u +%H:%M)
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain -- src/store bench/doc_bench.c 2>/dev/null) ]]; then
    COMMIT="$COMMIT plus uncommitted changes in src/store or bench/doc_bench.c"
fi
PGW=$(med pg doc write p99_us)
PGR=$(med pg doc read p99_us)
SECTION=$WORK/section.md
{
    echo "<!-- doc-bench-run $DATE -->"
    echo "## doc store, $DATE"
    echo
    echo "\`make bench-doc\` (here: \`B=$B bash bench/doc.sh\`), $DATE $TIME UTC, commit $COMMIT."
    echo "Machine: $(nproc) × $CPU, Linux $(uname -r); PostgreSQL $PGVER (scripts/engines.sh, loopback), SQLite"
    echo "$(pkg-config --modversion sqlite3). Load average before: $LOAD_BEFORE; after: $LOAD_AFTER (the 2 cores are shared"
    echo "with other engineers' builds and tests: compare doc with raw, measured side by side in alternating rounds)."
    echo
    echo "Open loop at $RATE operations/s: operation *i* is due at start + *i*/rate and its latency runs from when it was"
    echo "due, so a stall counts against every operation it delays; $DOC_CLIENTS client threads take the operations in turn (as"
    echo "concurrent requests would: one commit's fsync holds up one client, not the schedule; on the raw side each"
    echo "thread has its own connection, the doc side uses the store's pool). Median of $DOC_ROUNDS rounds of $SECS s"
    echo "($(calc "$RATE * $SECS" 0) operations) per cell, after $SEED documents were seeded on each side. A document is"
    echo "{user_id (1,000 users), created, title, likes, a 256-byte body}; collection \"posts\" with the index (user_id text,"
    echo "created int). *write*: \`doc_insert\` in its own write transaction; *raw*: BEGIN; INSERT (prepared); COMMIT on the"
    echo "same table shape (id text COLLATE \"C\" primary key, doc jsonb / TEXT) with the same expression index. *read*: the"
    echo "newest 10 of a user (\`doc_find\` user_id = X order by created desc limit 10, documents parsed into jansson);"
    echo "*raw*: the same SELECT, rows left as text. CPU is the benchmark process's (client side) per operation."
    echo
    echo "| engine, op | doc ops/s | p50 µs (doc / raw) | p99 µs (doc / raw) | max µs (doc / raw) | client CPU µs/op (doc / raw) | p99 doc / raw |"
    echo "|---|---|---|---|---|---|---|"
    row pg write "PostgreSQL JSONB, write"
    row pg read "PostgreSQL JSONB, read by index"
    row sqlite write "SQLite JSON1 (embedded), write"
    row sqlite read "SQLite JSON1 (embedded), read by index"
    echo
    echo "Targets (PostgreSQL, at $RATE ops/s): write p99 < 2 ms: $(calc "$PGW / 1000" 2) ms, $(met "$PGW < 2000"); read p99 < 1 ms:"
    echo "$(calc "$PGR / 1000" 2) ms, $(met "$PGR < 1000")."
    echo "<!-- /doc-bench-run -->"
} >"$SECTION"
cat "$SECTION"

if [[ ! -f $DOCS ]]; then
    mkdir -p "$(dirname "$DOCS")"
    printf '# Benchmarks\n\nResults of `make bench`, newest runs last.\n\n' >"$DOCS"
fi
TMPD=$(mktemp)
awk -v date="$DATE" -v sect="$SECTION" '
    function emit(   line) { while ((getline line < sect) > 0) print line; close(sect); done = 1 }
    $0 == "<!-- doc-bench-run " date " -->" { skip = 1; emit(); next }
    skip && $0 == "<!-- /doc-bench-run -->" { skip = 0; next }
    skip { next }
    { print }
    END { if (!done) { print ""; emit() } }
' "$DOCS" >"$TMPD"
cat "$TMPD" >"$DOCS"
rm -f "$TMPD"
log "wrote the $DATE doc store section of $DOCS"
