#!/usr/bin/env bash
# bench/kv.sh - the kv store kind (run by `make bench` and `make bench-kv`).
#
#   B=build bash bench/kv.sh
#
# Builds nothing: expects $B/bench/kv_bench (the Makefile's bench targets build it). Starts a Redis of its
# own with scripts/engines.sh in a temporary directory (loopback, a free port, stopped by PID at the end)
# and measures, KV_REPS times each, interleaved so that both sides of a ratio see the same machine:
#
#   - redis-benchmark -t set,get,incr,zadd (-c 50 and -c 1, -r 100000 -d 100) next to the same commands
#     through the adapter (bench/kv_bench.c: 50 threads on a pool of 50 connections, and 1 thread),
#     with the Redis server's CPU time per operation for both;
#   - the timeline's fan-out: one member into each of 10,000 feeds of 100 members, trimmed back to 100,
#     in one kv_zadd_batch, next to the same pipeline sent raw with hiredis (ZADD + ZREMRANGEBYRANK per
#     feed, one round trip), KV_ROUNDS rounds each;
#   - the embedded engine: the same operations (1 and 4 threads) and the same fan-out.
#
# Prints the results, and appends (or replaces, on the same day) the section "kv store, DATE" of
# docs/BENCHMARKS.md, leaving the other sections alone. Environment: B, KV_N (operations per command and
# run, default 100000), KV_N1 (the same with one client, 20000), KV_REPS (3), KV_ROUNDS (100),
# KV_FEEDS (10000), KV_FILL (100), BENCH_DOCS (docs/BENCHMARKS.md), KV_DOCS=0 to print only.
set -euo pipefail

cd "$(dirname "$0")/.."
B=${B:-build}
BIN=$B/bench/kv_bench
N=${KV_N:-100000}
N1=${KV_N1:-20000}
REPS=${KV_REPS:-3}
ROUNDS=${KV_ROUNDS:-100}
FEEDS=${KV_FEEDS:-10000}
FILL=${KV_FILL:-100}
DOCS=${BENCH_DOCS:-docs/BENCHMARKS.md}
WRITE=${KV_DOCS:-1}
CMDS=(set get incr zadd)

[[ -x $BIN ]] || { echo "bench: $BIN is missing; run: make B=$B bench-kv" >&2; exit 1; }
command -v redis-benchmark >/dev/null || { echo "bench: redis-benchmark is missing; run scripts/setup.sh" >&2; exit 1; }

log() { printf '[kv-bench] %s\n' "$*" >&2; }
calc() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; } # EXPR [DECIMALS]
kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; } # LINE KEY
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ksep() { sed -e ':a' -e 's/\B[0-9]\{3\}\>/,&/' -e 'ta' <<<"$(calc "$1" 0)"; } # 200000 -> 200,000

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pulse-kvbench.XXXXXX")
chmod 755 "$WORK" # engines.sh insists that PostgreSQL's user could enter it (as root), even for Redis alone
cleanup() {
    bash scripts/engines.sh stop "$WORK/engines" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
bash scripts/engines.sh up redis "$WORK/engines" >/dev/null
URL=$(sed -n 's/^PULSE_TEST_REDIS_URL=//p' "$WORK/engines/engines.env")
PORT=$(sed -n 's|^redis://[^:]*:\([0-9]*\)/.*|\1|p' <<<"$URL")
RPID=$(cat "$WORK/engines/redis.pid")
[[ -n $PORT && -n $RPID ]] || { echo "bench: redis did not start" >&2; exit 1; }
log "redis $(redis-server --version | awk '{ print $3 }') at $URL (pid $RPID)"

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # utime + stime of PID, in clock ticks
HZ=$(getconf CLK_TCK)

# One redis-benchmark run of one command: prints "CMD rps p50_us p99_us server_us_per_op".
redis_bench() { # CMD CLIENTS N
    local t0 t1 out
    t0=$(ticks "$RPID")
    out=$(redis-benchmark -h 127.0.0.1 -p "$PORT" --csv -t "$1" -n "$3" -c "$2" -r 100000 -d 100 2>/dev/null)
    t1=$(ticks "$RPID")
    awk -F'"' -v cpu="$(calc "($t1 - $t0) * 1000000 / $HZ / $3" 2)" \
        'NR > 1 { printf "%s %s %.1f %.1f %s\n", tolower($2), $4, $10 * 1000, $14 * 1000, cpu }' <<<"$out"
}

# One adapter run of one command: prints the same, then the client's CPU µs per operation.
adapter_bench() { # CMD THREADS N [URL]
    local t0 t1 out
    t0=$(ticks "$RPID")
    out=$("$BIN" ops --url "${4-$URL}" --threads "$2" --n "$3" --value 100 --keyspace 100000 --only "$1")
    t1=$(ticks "$RPID")
    awk -v cpu="$(calc "($t1 - $t0) * 1000000 / $HZ / $3" 2)" '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
        printf "%s %s %s %s %s %s\n", f["op"], f["rate"], f["p50_us"], f["p99_us"], cpu, f["cpu_us_per_op"]
    }' <<<"$out"
}

declare -A R
# GET reads what SET wrote: each side runs SET first, and the GETs of the embedded engine run in the same
# process as its SETs (one kv_bench run for all four).
for rep in $(seq 1 "$REPS"); do
    log "round $rep/$REPS: redis-benchmark and the adapter, command by command, 50 clients then 1"
    for c in "${CMDS[@]}"; do
        read -r _ rps p50 p99 cpu < <(redis_bench "$c" 50 "$N")
        R[rb50_$c]+="$rps " R[rb50p99_$c]+="$p99 " R[rb50cpu_$c]+="$cpu "
        read -r _ rps p50 p99 cpu ccpu < <(adapter_bench "$c" 50 "$N")
        R[ad50_$c]+="$rps " R[ad50p99_$c]+="$p99 " R[ad50cpu_$c]+="$cpu " R[ad50ccpu_$c]+="$ccpu "
        read -r _ rps p50 p99 cpu < <(redis_bench "$c" 1 "$N1")
        R[rb1_$c]+="$rps " R[rb1p50_$c]+="$p50 "
        read -r _ rps p50 p99 cpu ccpu < <(adapter_bench "$c" 1 "$N1")
        R[ad1_$c]+="$rps " R[ad1p50_$c]+="$p50 " R[ad1ccpu_$c]+="$ccpu "
    done
    log "round $rep/$REPS: the embedded engine, 1 and 4 threads"
    while read -r c rps p50 p99 cpu ccpu; do
        R[em1_$c]+="$rps " R[em1p50_$c]+="$p50 " R[em1p99_$c]+="$p99 "
    done < <(adapter_bench set,get,incr,zadd 1 "$N" "")
    while read -r c rps p50 p99 cpu ccpu; do R[em4_$c]+="$rps " R[em4p99_$c]+="$p99 "; done \
        < <(adapter_bench set,get,incr,zadd 4 "$N" "")
done
med() { median ${R[$1]}; } # KEY

log "fan-out on redis: $FEEDS feeds of $FILL, $ROUNDS rounds, adapter and raw hiredis interleaved"
redis-cli -p "$PORT" flushall >/dev/null
FAN_REDIS=$("$BIN" fanout --url "$URL" --feeds "$FEEDS" --fill "$FILL" --rounds "$ROUNDS")
REDIS_MEM=$(redis-cli -p "$PORT" info memory | sed -n 's/^used_memory_human:\([^\r]*\).*/\1/p')
redis-cli -p "$PORT" flushall >/dev/null
log "fan-out on the embedded engine"
FAN_EMB=$("$BIN" fanout --feeds "$FEEDS" --fill "$FILL" --rounds "$ROUNDS")
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

line() { grep "^$1 engine=$2 " <<<"$3" || true; } # KIND ENGINE TEXT
FR=$(line fanout redis "$FAN_REDIS")
FW=$(line fanout raw-hiredis "$FAN_REDIS")
FE=$(line fanout embedded "$FAN_EMB")
FILL_E=$(line fill embedded "$FAN_EMB")
CLOSE_E=$(line close embedded "$FAN_EMB")
P99_RATIO=$(calc "$(kv "$FR" p99_ms) / $(kv "$FW" p99_ms)" 2)
P50_RATIO=$(calc "$(kv "$FR" p50_ms) / $(kv "$FW" p50_ms)" 2)

echo
echo "redis-benchmark vs adapter, 50 clients (median of $REPS):"
for c in "${CMDS[@]}"; do
    printf '  %-5s redis-benchmark %8s/s   adapter %8s/s   ratio %s\n' "$c" "$(med rb50_$c)" "$(med ad50_$c)" \
        "$(calc "$(med ad50_$c) / $(med rb50_$c)" 2)"
done
echo "fan-out: $FR"
echo "         $FW"
echo "         $FE"
echo "embedded 1 thread: $(for c in "${CMDS[@]}"; do printf '%s %s/s  ' "$c" "$(med em1_$c)"; done)"

[[ $WRITE == 1 ]] || exit 0

# ---- docs/BENCHMARKS.md -----------------------------------------------------------------------------

DATE=$(date -u +%Y-%m-%d)
TIME=$(date -u +%H:%M)
NPROC=$(nproc)
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain -- src/store bench/kv_bench.c 2>/dev/null) ]]; then
    COMMIT="$COMMIT plus uncommitted changes in src/store or bench/kv_bench.c"
fi
met() { awk "BEGIN { exit !($1) }" && echo "met" || echo "**not met**"; }
row50() {
    local c=$1
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "${c^^}" "$(ksep "$(med rb50_$c)")" "$(ksep "$(med ad50_$c)")" \
        "$(calc "$(med ad50_$c) / $(med rb50_$c)" 2)" "$(med rb50p99_$c) / $(med ad50p99_$c)" \
        "$(med rb50cpu_$c) / $(med ad50cpu_$c)" "$(med ad50ccpu_$c)"
}
row1() {
    local c=$1
    printf '| %s | %s | %s | %s | %s / %s | %s |\n' "${c^^}" "$(ksep "$(med rb1_$c)")" "$(ksep "$(med ad1_$c)")" \
        "$(calc "$(med ad1_$c) / $(med rb1_$c)" 2)" "$(med rb1p50_$c)" "$(med ad1p50_$c)" "$(med ad1ccpu_$c)"
}
rowem() {
    local c=$1
    printf '| %s | %s | %s / %s | %s | %s |\n' "${c^^}" "$(ksep "$(med em1_$c)")" "$(med em1p50_$c)" "$(med em1p99_$c)" \
        "$(ksep "$(med em4_$c)")" "$(med em4p99_$c)"
}

avg4() { calc "($(med "$1"_set) + $(med "$1"_get) + $(med "$1"_incr) + $(med "$1"_zadd)) / 4" 1; }
RB_SRV=$(avg4 rb50cpu)
AD_SRV=$(avg4 ad50cpu)
AD_CLI=$(avg4 ad50ccpu)

SECTION=$WORK/section.md
{
    echo "<!-- kv-bench-run $DATE -->"
    echo "## kv store, $DATE"
    echo
    echo "\`make bench-kv\` (here: \`B=$B bash bench/kv.sh\`), $DATE $TIME UTC, commit $COMMIT."
    echo "Machine: $NPROC × $CPU, $MEM RAM, Linux $(uname -r); Redis $(redis-server --version | awk '{ print $3 }' | sed 's/v=//'),"
    echo "hiredis $(pkg-config --modversion hiredis), SQLite $(pkg-config --modversion sqlite3). Load average before: $LOAD_BEFORE; after: $LOAD_AFTER"
    echo "(the benchmark's own processes included; these 2 cores are shared with other engineers' builds and tests, so"
    echo "absolute rates move by tens of percent between runs: compare the ratios, measured side by side)."
    echo
    echo "### Redis: the adapter next to redis-benchmark"
    echo
    echo "One Redis (started by \`scripts/engines.sh\`, loopback), the same commands on it in turns, median of $REPS runs of"
    echo "$(ksep "$N") operations each. redis-benchmark: \`-t set,get,incr,zadd -c 50 -r 100000 -d 100\` (one event loop, 50"
    echo "connections, no pipelining). The adapter: \`bench/kv_bench ops\`, 50 threads calling \`kv_set\`, \`kv_get\`, \`kv_incr\` (no"
    echo "TTL: a plain INCRBY), \`kv_zadd\` on a pool of 50 connections, on the same random keys and 100-byte values."
    echo "*Server µs/op*: the Redis process's CPU time per operation (from /proc), which shows what the server pays; *client"
    echo "µs/op*: the adapter process's CPU per operation (keys prefixed, argv built, one blocking round trip per call, and 50"
    echo "threads' context switches on 2 cores)."
    echo
    echo "| command | redis-benchmark ops/s | adapter ops/s | adapter / redis-benchmark | p99 µs (rb / adapter) | server µs/op (rb / adapter) | client µs/op |"
    echo "|---|---|---|---|---|---|---|"
    for c in "${CMDS[@]}"; do row50 "$c"; done
    echo
    echo "One client (\`-c 1\`, $(ksep "$N1") operations; the adapter: 1 thread): the round trip itself."
    echo
    echo "| command | redis-benchmark ops/s | adapter ops/s | ratio | p50 µs (rb / adapter) | client µs/op |"
    echo "|---|---|---|---|---|---|"
    for c in "${CMDS[@]}"; do row1 "$c"; done
    echo
    echo "### Fan-out: one post into $(ksep "$FEEDS") home feeds"
    echo
    echo "Every feed first holds $FILL members; each round adds one member to every feed with \`trim_to = $FILL\` (the steady"
    echo "state: one in, the oldest out), as one \`kv_zadd_batch\` of $(ksep "$FEEDS") ops. On Redis the adapter pipelines ZADD +"
    echo "ZREMRANGEBYRANK per feed in one round trip; *raw* is the same pipeline written with hiredis directly, to other"
    echo "keys, in alternation with the adapter's rounds. $ROUNDS rounds each."
    echo
    echo "| engine | p50 ms | p90 ms | p99 ms | max ms | min ms | target |"
    echo "|---|---|---|---|---|---|---|"
    echo "| raw hiredis pipeline (Redis) | $(kv "$FW" p50_ms) | $(kv "$FW" p90_ms) | $(kv "$FW" p99_ms) | $(kv "$FW" max_ms) | $(kv "$FW" min_ms) | |"
    echo "| adapter on Redis | $(kv "$FR" p50_ms) | $(kv "$FR" p90_ms) | $(kv "$FR" p99_ms) | $(kv "$FR" max_ms) | $(kv "$FR" min_ms) | p99 ≤ 1.2 × raw: $P99_RATIO × ($(met "$P99_RATIO <= 1.2")) |"
    echo "| adapter on the embedded engine | $(kv "$FE" p50_ms) | $(kv "$FE" p90_ms) | $(kv "$FE" p99_ms) | $(kv "$FE" max_ms) | $(kv "$FE" min_ms) | p99 < 50 ms: $(met "$(kv "$FE" p99_ms) < 50") |"
    echo
    echo "Embedded: $(kv "$FE" cpu_ms_per_round) ms of process CPU per round (the background thread's folds included); the fill ($(ksep "$(( FEEDS * FILL ))") ZADDs in batches of $(ksep "$FEEDS"))"
    echo "ran at $(ksep "$(kv "$FILL_E" zadds_per_s)") ZADDs/s and grew the process by $(kv "$FILL_E" rss_mb) MB (≈ $(calc "$(kv "$FILL_E" rss_mb) * 1048576 / ($FEEDS * $FILL)" 0) bytes"
    echo "per member); closing (the final checkpoint of every feed) took $(kv "$CLOSE_E" secs) s. Redis held the same data in $REDIS_MEM"
    echo "(adapter's and raw keys)."
    echo
    echo "### The embedded engine"
    echo
    echo "\`bench/kv_bench ops\` with the default URL (a temporary data directory), same operations and sizes, median of $REPS."
    echo "Reads are served from memory; every write appends its effects to the SQLite log (WAL, synchronous=NORMAL) before it"
    echo "returns, concurrent writers sharing one append."
    echo
    echo "| command | 1 thread ops/s | 1 thread p50 / p99 µs | 4 threads ops/s | 4 threads p99 µs |"
    echo "|---|---|---|---|---|"
    for c in "${CMDS[@]}"; do rowem "$c"; done
    echo
    echo "### Reading"
    echo
    echo "- Through the adapter, Redis runs at $(calc "$(med ad50_set) / $(med rb50_set) * 100" 0)% (SET), $(calc "$(med ad50_get) / $(med rb50_get) * 100" 0)% (GET),"
    echo "  $(calc "$(med ad50_incr) / $(med rb50_incr) * 100" 0)% (INCR) and $(calc "$(med ad50_zadd) / $(med rb50_zadd) * 100" 0)% (ZADD) of redis-benchmark's rate with 50 clients; with one client"
    echo "  (the round trip alone) $(for c in "${CMDS[@]}"; do printf '%s %s%%, ' "${c^^}" "$(calc "$(med ad1_$c) / $(med rb1_$c) * 100" 0)"; done | sed 's/, $//'). Redis spends $RB_SRV µs of CPU per operation on"
    echo "  redis-benchmark's requests and $AD_SRV µs on the adapter's: 50 blocking threads send one request each as"
    echo "  they get their reply, so the server wakes for fewer requests at a time than for an event loop's bursts."
    echo "  The adapter itself costs $AD_CLI µs of client CPU per call (prefixing, argv, a write and a read, a thread"
    echo "  switch), on the same $NPROC cores as the server."
    echo "- Fan-out on Redis: the adapter's p50 is $P50_RATIO × and its p99 $P99_RATIO × the raw pipeline's (target p99 ≤ 1.2 ×:"
    echo "  $(met "$P99_RATIO <= 1.2")). On the embedded engine the whole batch is applied in memory and appended as one log row:"
    echo "  p99 $(kv "$FE" p99_ms) ms (target < 50 ms: $(met "$(kv "$FE" p99_ms) < 50")), p50 $(kv "$FE" p50_ms) ms. A round is CPU work (the batch applied"
    echo "  in memory, then one sequential append), so it slows down when the machine is busy; the rare slow rounds"
    echo "  (max $(kv "$FE" max_ms) ms) meet a fold or a WAL checkpoint of the background thread on the disk."
    echo "- Why the embedded engine keeps sorted sets in memory: a SQLite row per member, table (key, member, score)"
    echo "  with an index on (key, score), took 1.0-1.5 s for the same fan-out over 100-member feeds (measured when the"
    echo "  engine was designed; see src/store/README.md)."
    echo "<!-- /kv-bench-run -->"
} >"$SECTION"

if [[ ! -f $DOCS ]]; then
    mkdir -p "$(dirname "$DOCS")"
    printf '# Benchmarks\n\nResults of `make bench`, newest runs last.\n\n' >"$DOCS"
fi
# Replace today's kv section if there is one (in place), else append it; other sections stay as they are.
TMPD=$(mktemp)
awk -v date="$DATE" -v sect="$SECTION" '
    function emit(   line) { while ((getline line < sect) > 0) print line; close(sect); done = 1 }
    $0 == "<!-- kv-bench-run " date " -->" { skip = 1; emit(); next }
    skip && $0 == "<!-- /kv-bench-run -->" { skip = 0; next }
    skip { next }
    { print }
    END { if (!done) { print ""; emit() } }
' "$DOCS" >"$TMPD"
cat "$TMPD" >"$DOCS"
rm -f "$TMPD"
cp "$SECTION" "${KV_SECTION_OUT:-/dev/null}" 2>/dev/null || true
log "wrote the $DATE kv store section of $DOCS"
