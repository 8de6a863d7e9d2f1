#!/usr/bin/env bash
# bench/bus.sh - the event backbone, embedded (run by `make bench` and `make bench-bus`).
#
#   B=build bash bench/bus.sh
#
# Builds nothing: expects $B/bench/bus_bench (the Makefile's bench targets build
# it). Every run of bus_bench is a fresh process with a fresh data directory
# under $TMPDIR (removed at its end). Measures, BUS_REPS times each and
# interleaved so that the raw and the bus runs share the machine's moods:
#
#   - raw SQLite: the same rows (same bodies) into a plain table, 1,000 rows per
#     transaction, WAL, synchronous=NORMAL;
#   - throughput through outbox -> relay -> log -> consumer (inbox + handler),
#     100 events per producer transaction, and 1 event per transaction;
#   - latency (commit -> handler start) at a steady 2,000 events/s; then a
#     ladder of rising rates (BUS_STEP_SECS each) finds the highest sustainable
#     one, which is measured BUS_REPS times for BUS_SECS.
#
# Prints the results, and appends (or replaces, on the same day) the section
# "Event backbone (embedded), DATE" of docs/BENCHMARKS.md, leaving the other
# sections alone. Environment: B, BUS_N (default 200000), BUS_N1 (50000),
# BUS_SECS (10), BUS_REPS (3), BUS_STEP_SECS (5), BUS_LADDER (rates),
# BENCH_DOCS (docs/BENCHMARKS.md), BUS_DOCS=0 to print only.
set -euo pipefail

cd "$(dirname "$0")/.."
B=${B:-build}
BIN=$B/bench/bus_bench
N=${BUS_N:-200000}
N1=${BUS_N1:-50000}
SECS=${BUS_SECS:-10}
REPS=${BUS_REPS:-3}
STEP=${BUS_STEP_SECS:-5}
LADDER=${BUS_LADDER:-1000 2000 3000 4000 5000 6000 8000 10000 12000 15000 20000 25000 30000 40000}
DOCS=${BENCH_DOCS:-docs/BENCHMARKS.md}
WRITE=${BUS_DOCS:-1}

[[ -x $BIN ]] || { echo "bench: $BIN is missing; run: make B=$B bench-bus" >&2; exit 1; }

log() { printf '[bus-bench] %s\n' "$*" >&2; }
calc() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; } # EXPR [DECIMALS]
kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; } # LINE KEY
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
load1() { cut -d' ' -f1 /proc/loadavg; }
busy_ticks() { # "busy total" clock ticks of the whole machine
    local _cpu user nice sys idle iowait irq softirq steal _rest
    read -r _cpu user nice sys idle iowait irq softirq steal _rest </proc/stat
    echo "$((user + nice + sys + irq + softirq + steal)) $((user + nice + sys + idle + iowait + irq + softirq + steal))"
}
TCK=$(getconf CLK_TCK)
NPROC=$(nproc)

# run ARGS...: one bus_bench process; sets OUT (its result line), LOAD (1-min load average
# before it) and OTHER (CPU, in cores, used by every other process during it).
run() {
    local b0 t0 b1 t1 tf cpu
    LOAD=$(load1)
    read -r b0 t0 < <(busy_ticks)
    tf=$(mktemp)
    local TIMEFORMAT='%3U %3S'
    { time "$BIN" "$@" >"$tf.out"; } 2>"$tf"
    read -r b1 t1 < <(busy_ticks)
    OUT=$(grep '^mode=' "$tf.out" | tail -1)
    cpu=$(tail -1 "$tf" | awk '{ print $1 + $2 }')
    rm -f "$tf" "$tf.out"
    [[ -n $OUT ]] || { echo "bench: bus_bench $* printed nothing" >&2; exit 1; }
    OTHER=$(calc "(($b1 - $b0) / $TCK - $cpu) / (($t1 - $t0) / $NPROC / $TCK)" 2)
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $LOAD_BEFORE"

# ---- throughput, interleaved with the raw SQLite rate --------------------------------------

declare -a RAW RAWCPU T100 T1 RATIO RATIO1 CRATIO ROWS
for ((r = 1; r <= REPS; r++)); do
    run raw "$N"
    RAW[r]=$(kv "$OUT" rows_per_s) RAWCPU[r]=$(kv "$OUT" cpu_us_per_row) BODY=$(kv "$OUT" body_bytes)
    ROWS+=("| $r | raw SQLite, 1,000 rows/txn | ${RAW[r]} rows/s | | ${RAWCPU[r]} | $LOAD | $OTHER |")
    log "run $r: raw ${RAW[r]} rows/s (load $LOAD, other $OTHER cores)"
    run throughput "$N" 100
    T100[r]=$(kv "$OUT" events_per_s)
    RATIO[r]=$(calc "${T100[r]} / ${RAW[r]}" 3)
    CRATIO[r]=$(calc "${RAWCPU[r]} / $(kv "$OUT" cpu_us_per_event)" 3)
    T100_LINE[r]=$OUT
    ROWS+=("| $r | bus, 100 events/txn | ${T100[r]} events/s | ${RATIO[r]} | $(kv "$OUT" cpu_us_per_event) | $LOAD | $OTHER |")
    log "run $r: bus 100/txn ${T100[r]} events/s = ${RATIO[r]} of raw, $(kv "$OUT" cpu_us_per_event) µs CPU/event (load $LOAD, other $OTHER)"
    run throughput "$N1" 1
    T1[r]=$(kv "$OUT" events_per_s)
    RATIO1[r]=$(calc "${T1[r]} / ${RAW[r]}" 3)
    T1_LINE[r]=$OUT
    ROWS+=("| $r | bus, 1 event/txn | ${T1[r]} events/s | ${RATIO1[r]} | $(kv "$OUT" cpu_us_per_event) | $LOAD | $OTHER |")
    log "run $r: bus 1/txn ${T1[r]} events/s, $(kv "$OUT" cpu_us_per_event) µs CPU/event (load $LOAD, other $OTHER)"
done
RAW_MED=$(median "${RAW[@]}") T100_MED=$(median "${T100[@]}") T1_MED=$(median "${T1[@]}")
RATIO_MED=$(median "${RATIO[@]}") RATIO1_MED=$(median "${RATIO1[@]}") CRATIO_MED=$(median "${CRATIO[@]}")
RAWCPU_MED=$(median "${RAWCPU[@]}")
# the CPU breakdown of the median 100/txn run
for ((r = 1; r <= REPS; r++)); do [[ ${T100[r]} == "$T100_MED" ]] && MED_LINE=${T100_LINE[r]}; done
for ((r = 1; r <= REPS; r++)); do [[ ${T1[r]} == "$T1_MED" ]] && MED1_LINE=${T1_LINE[r]}; done

# ---- latency ---------------------------------------------------------------------------------

# latency_runs RATE: BUS_REPS runs; sets L50 L99 L999 (medians), LSUST ("3/3"), LROWS
latency_runs() {
    local rate=$1 i p50=() p99=() p999=() ok=0
    for ((i = 1; i <= REPS; i++)); do
        run latency "$rate" "$SECS"
        p50+=("$(kv "$OUT" p50_ms)") p99+=("$(kv "$OUT" p99_ms)") p999+=("$(kv "$OUT" p999_ms)")
        [[ $(kv "$OUT" sustainable) == 1 ]] && ok=$((ok + 1))
        LROWS+=("| $rate | $i | $(kv "$OUT" achieved_per_s) | $(kv "$OUT" p50_ms) | $(kv "$OUT" p99_ms) | $(kv "$OUT" p999_ms) | $(kv "$OUT" max_ms) | $(kv "$OUT" cpu_us_per_event) | $LOAD | $OTHER |")
        log "latency at $rate/s, run $i: p50 $(kv "$OUT" p50_ms) p99 $(kv "$OUT" p99_ms) p99.9 $(kv "$OUT" p999_ms) ms (achieved $(kv "$OUT" achieved_per_s)/s, load $LOAD, other $OTHER)"
    done
    L50=$(median "${p50[@]}") L99=$(median "${p99[@]}") L999=$(median "${p999[@]}") LSUST="$ok/$REPS"
}

LROWS=()
latency_runs 2000
L2_50=$L50 L2_99=$L99 L2_999=$L999 L2_SUST=$LSUST

log "ladder: $LADDER events/s, ${STEP} s each, until one is not sustainable"
LADDER_OUT=$(mktemp)
# shellcheck disable=SC2086
"$BIN" ladder "$STEP" $LADDER >"$LADDER_OUT"
LADDER_ROWS=()
HIGH=
while read -r line; do
    rate=$(kv "$line" rate)
    ok=$(kv "$line" sustainable)
    [[ $ok == 1 ]] && HIGH=$rate
    LADDER_ROWS+=("| $rate | $(kv "$line" achieved_per_s) | $(kv "$line" p50_ms) | $(kv "$line" p99_ms) | $(kv "$line" q1_p50_ms) / $(kv "$line" q4_p50_ms) | $(kv "$line" backlog_end) | $([[ $ok == 1 ]] && echo yes || echo no) |")
    log "  $rate/s: achieved $(kv "$line" achieved_per_s)/s, p99 $(kv "$line" p99_ms) ms, p50 first/last quarter $(kv "$line" q1_p50_ms)/$(kv "$line" q4_p50_ms) ms, sustainable $ok"
done < <(grep '^mode=' "$LADDER_OUT")
rm -f "$LADDER_OUT"
if [[ -n $HIGH ]]; then
    latency_runs "$HIGH"
    LH_50=$L50 LH_99=$L99 LH_999=$L999 LH_SUST=$LSUST
fi

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average after: $LOAD_AFTER"
log "throughput: ${T100_MED} events/s (100/txn) = ${RATIO_MED} of raw ${RAW_MED} rows/s; 1/txn ${T1_MED} events/s"
log "latency at 2000/s: p50 $L2_50 p99 $L2_99 p99.9 $L2_999 ms; highest sustainable ${HIGH:-none}/s: p50 ${LH_50:-} p99 ${LH_99:-} p99.9 ${LH_999:-} ms"

[[ $WRITE == 1 ]] || exit 0

# ---- docs/BENCHMARKS.md -----------------------------------------------------------------------

DATE=$(date -u +%Y-%m-%d)
TIME=$(date -u +%H:%M)
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
DISK=$(df -P "${TMPDIR:-/tmp}" | awk 'NR == 2 { print $1 }')
FSTYPE=$(df -PT "${TMPDIR:-/tmp}" | awk 'NR == 2 { print $2 }')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain -- src/bus bench/bus_bench.c 2>/dev/null) ]]; then
    COMMIT="$COMMIT plus uncommitted changes to $(git status --porcelain -- src/bus bench/bus_bench.c | wc -l) paths in src/bus or bench/"
fi
SQLV=$(sqlite3 --version 2>/dev/null | cut -d' ' -f1 || true)
SQLV=${SQLV:-$(pkg-config --modversion sqlite3 2>/dev/null || echo '?')}
CCV=$(${CC:-cc} --version | head -1)
met() { awk "BEGIN { exit !($1) }" && echo "met" || echo "**not met**"; }
ksep() { sed -e ':a' -e 's/\B[0-9]\{3\}\>/,&/' -e 'ta' <<<"$1"; } # 200000 -> 200,000

SECTION=$(mktemp)
{
    echo "<!-- bus-bench-run $DATE -->"
    echo "## Event backbone (embedded), $DATE"
    echo
    echo "\`make bench-bus\` (here: \`B=$B bash bench/bus.sh\`; also run by \`make bench\`), $DATE $TIME UTC, commit $COMMIT."
    echo
    echo "Machine: $NPROC × $CPU, $MEM RAM, Linux $(uname -r), data directories on $DISK ($FSTYPE); SQLite $SQLV; $CCV."
    echo "Load average (1/5/15 min) before: $LOAD_BEFORE; after: $LOAD_AFTER. Each row gives the 1-minute load average"
    echo "before the run and *other load*: the CPU (in cores) used by every other process during it, from /proc/stat."
    echo
    echo "\`bench/bus_bench\` is linked with the release objects; each run is a fresh process and data directory: a"
    echo "producer store (\`benchprod\`), a consumer store (\`benchcons\`), both migrated with the \"bus\" migrations,"
    echo "the embedded log, an outbox relay and one consumer whose handler inserts one row in the consumer's"
    echo "transaction. Events carry ${BODY} bytes of CloudEvent JSON (about 140 bytes of data), 1,024 partition keys, 4"
    echo "partitions. Medians of $REPS runs; raw and bus runs alternate."
    echo
    echo "### Throughput: outbox → relay → log → consumer with inbox"
    echo
    echo "| measure | median of $REPS | target |"
    echo "|---|---|---|"
    echo "| raw SQLite insert of the same rows, 1,000 rows/txn, WAL, synchronous=NORMAL | $(ksep "$RAW_MED") rows/s | |"
    echo "| events/s end to end, $(ksep "$N") events, 100 per producer transaction | $(ksep "$T100_MED") | ≥ 90,000: $(met "$T100_MED >= 90000") |"
    echo "| the same / raw SQLite (median of the per-run ratios) | $RATIO_MED | ≥ 0.333: $(met "$RATIO_MED >= 0.3333") |"
    echo "| CPU per raw row / CPU per event (the ratio if both had the same CPU) | $CRATIO_MED ($RAWCPU_MED µs / $(kv "$MED_LINE" cpu_us_per_event) µs) | |"
    echo "| events/s end to end, $(ksep "$N1") events, 1 per producer transaction | $(ksep "$T1_MED") ($RATIO1_MED of raw) | |"
    echo "| CPU per event, 100/txn (producer / relay / consumer / bus watcher), µs | $(kv "$MED_LINE" cpu_us_per_event) ($(kv "$MED_LINE" producer_us) / $(kv "$MED_LINE" relay_us) / $(kv "$MED_LINE" consumer_us) / $(kv "$MED_LINE" watcher_us)) | |"
    echo "| CPU per event, 1/txn, µs | $(kv "$MED1_LINE" cpu_us_per_event) ($(kv "$MED1_LINE" producer_us) / $(kv "$MED1_LINE" relay_us) / $(kv "$MED1_LINE" consumer_us) / $(kv "$MED1_LINE" watcher_us)) | |"
    echo
    echo "Events/s is from the first emit to the start of the last handler; CPU per event is the process's CPU time"
    echo "over that interval divided by the events, split by thread from /proc/self/task."
    echo
    echo "| run | what | rate | ratio to raw | CPU µs/event | load | other load |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "### Latency: producer commit → start of the consumer's handler"
    echo
    echo "A paced producer, 1 event per transaction. The producer takes CLOCK_MONOTONIC right after \`sql_commit\`"
    echo "returns, the handler first thing; both go to per-event arrays in the process and are subtracted after the"
    echo "run. A rate is *sustainable* when the producer held ≥ 97% of it and no queue built up: the median latency of"
    echo "the last quarter of the events is at most twice the first quarter's plus 10 ms (a stall of a busy machine"
    echo "lifts the tail, not the median; even 1% over capacity for 5 s lifts the median by ~40 ms)."
    echo
    echo "| rate | p50 ms | p99 ms | p99.9 ms | sustainable runs | target |"
    echo "|---|---|---|---|---|---|"
    echo "| 2,000 events/s, ${SECS} s | $L2_50 | $L2_99 | $L2_999 | $L2_SUST | p99 < 5 ms: $(met "$L2_99 < 5") |"
    if [[ -n $HIGH ]]; then
        echo "| $(ksep "$HIGH") events/s (highest sustainable step), ${SECS} s | $LH_50 | $LH_99 | $LH_999 | $LH_SUST | |"
    else
        echo "| no ladder step was sustainable | | | | | |"
    fi
    echo
    echo "Every latency run:"
    echo
    echo "| rate | run | achieved/s | p50 ms | p99 ms | p99.9 ms | max ms | CPU µs/event | load | other load |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${LROWS[@]}"
    echo
    echo "Ladder (${STEP} s per step, one process):"
    echo
    echo "| rate | achieved/s | p50 ms | p99 ms | p50 first / last quarter ms | backlog at the end | sustainable |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${LADDER_ROWS[@]}"
    echo
    echo "### Reading"
    echo
    echo "- End to end the backbone moves $(ksep "$T100_MED") events/s with 100 events per producer transaction:"
    echo "  $RATIO_MED of the raw insert rate of the same rows on the same disk (target ≥ 1/3: $(met "$RATIO_MED >= 0.3333"); ≥ 90,000/s:"
    echo "  $(met "$T100_MED >= 90000")). Each event is written four times (outbox insert, log append, inbox row, handler row),"
    echo "  deleted once (outbox) and JSON-encoded and decoded once, in three SQLite files, by three threads on"
    echo "  $NPROC shared cores: $(kv "$MED_LINE" cpu_us_per_event) µs of CPU per event against $RAWCPU_MED µs per raw row. With 1 event"
    echo "  per producer transaction, $(ksep "$T1_MED") events/s: every transaction is its own WAL commit."
    echo "- Latency at 2,000 events/s: p50 $L2_50 ms, p99 $L2_99 ms, p99.9 $L2_999 ms (target p99 < 5 ms: $(met "$L2_99 < 5"))."
    echo "  The tail comes in bursts: tens of events delayed together by a few to tens of ms, when a thread of the"
    echo "  pipeline waits for a CPU (the load columns) or for a WAL checkpoint's fsync in the service stores."
    if [[ -n $HIGH ]]; then
        echo "- Highest sustainable rate found with 1 event per transaction: $(ksep "$HIGH") events/s (p99 $LH_99 ms)."
    fi
    echo "- Where the time goes, and what was changed for it: see \"Event backbone: what is measured, and where the time goes\" above."
    echo "<!-- /bus-bench-run -->"
} >"$SECTION"

if [[ ! -f $DOCS ]]; then
    mkdir -p "$(dirname "$DOCS")"
    printf '# Benchmarks\n\nResults of `make bench`, newest runs last.\n\n' >"$DOCS"
fi
# Replace today's bus section if there is one (in place), else append it; other sections stay as they are.
TMPD=$(mktemp)
awk -v date="$DATE" -v sect="$SECTION" '
    function emit(   line) { while ((getline line < sect) > 0) print line; close(sect); done = 1 }
    $0 == "<!-- bus-bench-run " date " -->" { skip = 1; emit(); next }
    skip && $0 == "<!-- /bus-bench-run -->" { skip = 0; next }
    skip { next }
    { print }
    END { if (!done) { print ""; emit() } }
' "$DOCS" >"$TMPD"
sed -e ':a' -e '/^\n*$/{$d;N;ba' -e '}' "$TMPD" >"$DOCS"
rm -f "$TMPD" "$SECTION"
log "wrote the $DATE event backbone section of $DOCS"
