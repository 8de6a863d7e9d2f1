#!/usr/bin/env bash
# bench/nats.sh - the event bus on NATS JetStream next to bare libnats (run by `make bench` and `make bench-nats`).
#
#   B=build bash bench/nats.sh
#
# Builds nothing: expects $B/bench/nats_bench (the Makefile's bench targets build it). Uses the nats-server at
# $NATS_URL, or starts one (scripts/engines.sh up nats, loopback, a temporary directory) and stops it by PID at the
# end. Every nats_bench run is a fresh process with its own context stream, deleted at its end. NATS_REPS times
# each, interleaved so that the raw and the Pulse runs share the machine's moods:
#
#   - raw: a bare libnats async publish loop (js_PublishAsync, Nats-Msg-Id, 4,096 in flight) of the same bodies
#     into a file stream like Pulse's, then a bare pull consumer (fetch 256, ack each);
#   - relay: events already committed in a service's outbox (SQLite), published by the outbox relay through
#     bus_publish (batches of 512, confirmed before the rows are deleted);
#   - consume: one bus subscription fetching 256 and acking each (the driver alone, no store);
#   - pipeline: producer -> outbox -> relay -> JetStream -> consumer with inbox and a handler row (SQLite stores);
#   - latency: commit -> handler start at a steady 2,000 events/s, 1 event per transaction;
#   - bus latency: the bus alone at 2,000 events/s: bus_publish of one event -> a subscription's fetch returns it.
#
# Prints the results and appends (or replaces, on the same day) the section "Event bus on NATS JetStream, DATE"
# of docs/BENCHMARKS.md, leaving the other sections alone. Environment: B, NATS_URL, NATS_N (default 200000),
# NATS_PIPE_N (100000), NATS_SECS (10), NATS_REPS (3), BENCH_DOCS (docs/BENCHMARKS.md), NATS_DOCS=0 to print only.
set -euo pipefail

cd "$(dirname "$0")/.."
B=${B:-build}
BIN=$B/bench/nats_bench
N=${NATS_N:-200000}
PN=${NATS_PIPE_N:-100000}
SECS=${NATS_SECS:-10}
REPS=${NATS_REPS:-3}
DOCS=${BENCH_DOCS:-docs/BENCHMARKS.md}
WRITE=${NATS_DOCS:-1}

[[ -x $BIN ]] || { echo "bench: $BIN is missing; run: make B=$B bench-nats" >&2; exit 1; }

log() { printf '[nats-bench] %s\n' "$*" >&2; }
calc() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; } # EXPR [DECIMALS]
kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; } # LINE KEY
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
load1() { cut -d' ' -f1 /proc/loadavg; }
busy_ticks() {
    local _cpu user nice sys idle iowait irq softirq steal _rest
    read -r _cpu user nice sys idle iowait irq softirq steal _rest </proc/stat
    echo "$((user + nice + sys + irq + softirq + steal)) $((user + nice + sys + idle + iowait + irq + softirq + steal))"
}
TCK=$(getconf CLK_TCK)
NPROC=$(nproc)

ENGDIR=
if [[ -z ${NATS_URL:-} ]]; then
    ENGDIR=$(mktemp -d /tmp/pulse-natsbench.XXXXXX)
    trap 'bash scripts/engines.sh down nats "$ENGDIR" >/dev/null 2>&1 || true; rm -rf "$ENGDIR"' EXIT
    bash scripts/engines.sh up nats "$ENGDIR" >/dev/null
    NATS_URL=$(awk -F= '$1 == "PULSE_TEST_NATS_URL" { print $2 }' "$ENGDIR/engines.env")
    log "started nats-server at $NATS_URL (data in $ENGDIR)"
fi
export NATS_URL
NATSV=$(nats-server --version 2>/dev/null | awk '{ print $2 }' || echo '?')
CNATSV=$(pkg-config --modversion libnats 2>/dev/null || echo '?')

# run ARGS...: one nats_bench process; sets OUT (its result line), LOAD (1-min load average before it) and OTHER
# (CPU, in cores, used by every other process, nats-server included, during it).
run() {
    local b0 t0 b1 t1 tf cpu
    LOAD=$(load1)
    read -r b0 t0 < <(busy_ticks)
    tf=$(mktemp)
    local TIMEFORMAT='%3U %3S'
    { time "$BIN" "$@" >"$tf.out"; } 2>"$tf"
    read -r b1 t1 < <(busy_ticks)
    OUT=$(grep '^mode=' "$tf.out" | tail -1 || true)
    cpu=$(tail -1 "$tf" | awk '{ print $1 + $2 }')
    rm -f "$tf" "$tf.out"
    [[ -n $OUT ]] || { echo "bench: nats_bench $* printed nothing" >&2; exit 1; }
    OTHER=$(calc "(($b1 - $b0) / $TCK - $cpu) / (($t1 - $t0) / $NPROC / $TCK)" 2)
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $LOAD_BEFORE"

declare -a RAWP RAWC RELAY CONS PIPE RR CR PR ROWS
for ((r = 1; r <= REPS; r++)); do
    run raw "$N"
    RAWP[r]=$(kv "$OUT" pub_per_s) RAWC[r]=$(kv "$OUT" consume_per_s) BODY=$(kv "$OUT" body_bytes)
    ROWS+=("| $r | raw libnats async publish | ${RAWP[r]} | | $(kv "$OUT" pub_cpu_us) | $LOAD | $OTHER |")
    ROWS+=("| $r | raw libnats pull consumer, fetch 256 + ack | ${RAWC[r]} | | $(kv "$OUT" consume_cpu_us) | $LOAD | $OTHER |")
    log "run $r: raw publish ${RAWP[r]}/s, raw consume ${RAWC[r]}/s (load $LOAD, other $OTHER)"
    run relay "$N"
    RELAY[r]=$(kv "$OUT" events_per_s) RR[r]=$(calc "${RELAY[r]} / ${RAWP[r]}" 3)
    ROWS+=("| $r | outbox relay → JetStream | ${RELAY[r]} | ${RR[r]} of raw publish | $(kv "$OUT" cpu_us_per_event) | $LOAD | $OTHER |")
    log "run $r: relay ${RELAY[r]}/s = ${RR[r]} of raw (load $LOAD, other $OTHER)"
    run consume "$N"
    CONS[r]=$(kv "$OUT" events_per_s) CR[r]=$(calc "${CONS[r]} / ${RAWC[r]}" 3)
    ROWS+=("| $r | bus subscription, fetch 256 + ack | ${CONS[r]} | ${CR[r]} of raw consume | $(kv "$OUT" cpu_us_per_event) | $LOAD | $OTHER |")
    log "run $r: consume ${CONS[r]}/s = ${CR[r]} of raw (load $LOAD, other $OTHER)"
    run pipeline "$PN" 100
    PIPE[r]=$(kv "$OUT" events_per_s) PR[r]=$(calc "${PIPE[r]} / ${RAWP[r]}" 3)
    ROWS+=("| $r | outbox → relay → JetStream → consumer with inbox, 100/txn | ${PIPE[r]} | ${PR[r]} of raw publish | $(kv "$OUT" cpu_us_per_event) | $LOAD | $OTHER |")
    log "run $r: pipeline ${PIPE[r]}/s = ${PR[r]} of raw (load $LOAD, other $OTHER)"
done
RAWP_MED=$(median "${RAWP[@]}") RAWC_MED=$(median "${RAWC[@]}") RELAY_MED=$(median "${RELAY[@]}")
CONS_MED=$(median "${CONS[@]}") PIPE_MED=$(median "${PIPE[@]}")
RR_MED=$(median "${RR[@]}") CR_MED=$(median "${CR[@]}") PR_MED=$(median "${PR[@]}")

LROWS=()
p50=() p99=() p999=() ok=0
for ((r = 1; r <= REPS; r++)); do
    run latency 2000 "$SECS"
    p50+=("$(kv "$OUT" p50_ms)") p99+=("$(kv "$OUT" p99_ms)") p999+=("$(kv "$OUT" p999_ms)")
    [[ $(kv "$OUT" sustainable) == 1 ]] && ok=$((ok + 1))
    LROWS+=("| $r | $(kv "$OUT" achieved_per_s) | $(kv "$OUT" p50_ms) | $(kv "$OUT" p99_ms) | $(kv "$OUT" p999_ms) | $(kv "$OUT" max_ms) | $(kv "$OUT" cpu_us_per_event) | $LOAD | $OTHER |")
    log "latency at 2000/s, run $r: p50 $(kv "$OUT" p50_ms) p99 $(kv "$OUT" p99_ms) p99.9 $(kv "$OUT" p999_ms) ms (load $LOAD, other $OTHER)"
done
L50=$(median "${p50[@]}") L99=$(median "${p99[@]}") L999=$(median "${p999[@]}")
BROWS=()
b50=() b99=() b999=()
for ((r = 1; r <= REPS; r++)); do
    run buslat 2000 "$SECS"
    b50+=("$(kv "$OUT" p50_ms)") b99+=("$(kv "$OUT" p99_ms)") b999+=("$(kv "$OUT" p999_ms)")
    BROWS+=("| $r | $(kv "$OUT" p50_ms) | $(kv "$OUT" p99_ms) | $(kv "$OUT" p999_ms) | $(kv "$OUT" max_ms) | $LOAD | $OTHER |")
    log "bus latency at 2000/s, run $r: p50 $(kv "$OUT" p50_ms) p99 $(kv "$OUT" p99_ms) p99.9 $(kv "$OUT" p999_ms) ms (load $LOAD, other $OTHER)"
done
B50=$(median "${b50[@]}") B99=$(median "${b99[@]}") B999=$(median "${b999[@]}")
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average after: $LOAD_AFTER"
log "relay ${RELAY_MED}/s = ${RR_MED} of raw publish ${RAWP_MED}/s; consume ${CONS_MED}/s = ${CR_MED} of raw ${RAWC_MED}/s;"
log "pipeline ${PIPE_MED}/s = ${PR_MED} of raw publish; latency at 2000/s p50 $L50 p99 $L99 p99.9 $L999 ms;"
log "the bus alone at 2000/s: p50 $B50 p99 $B99 p99.9 $B999 ms"

[[ $WRITE == 1 ]] || exit 0

DATE=$(date -u +%Y-%m-%d)
TIME=$(date -u +%H:%M)
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain -- src/bus bench/nats_bench.c 2>/dev/null) ]]; then
    COMMIT="$COMMIT plus uncommitted changes to $(git status --porcelain -- src/bus bench/nats_bench.c | wc -l) paths in src/bus or bench/"
fi
met() { awk "BEGIN { exit !($1) }" && echo "met" || echo "**not met**"; }
ksep() { awk -v n="$1" 'BEGIN { printf "%\047d", n }' 2>/dev/null || echo "$1"; }

SECTION=$(mktemp)
{
    echo "<!-- nats-bench-run $DATE -->"
    echo "## Event bus on NATS JetStream, $DATE"
    echo
    echo "\`make bench-nats\` (here: \`B=$B bash bench/nats.sh\`; also run by \`make bench\`), $DATE $TIME UTC, commit $COMMIT."
    echo
    echo "Machine: $NPROC × $CPU, $MEM RAM, Linux $(uname -r); nats-server $NATSV (\`-js\`, file storage, loopback, on"
    echo "the same machine), libnats $CNATSV. Load average (1/5/15 min) before: $LOAD_BEFORE; after: $LOAD_AFTER. Each row"
    echo "gives the 1-minute load average before the run and *other load*: the CPU (in cores) used by every other"
    echo "process during it, nats-server included."
    echo
    echo "\`bench/nats_bench\` is linked with the release objects; each run is a fresh process with a context stream of"
    echo "its own (4 partitions), deleted at its end. Events carry ${BODY} bytes of CloudEvent JSON, 1,024 partition keys."
    echo "Medians of $REPS runs; raw and Pulse runs alternate. The raw loops use libnats as a plain program would:"
    echo "default connection options, \`Nats-Msg-Id\` on every message, 4,096 publishes in flight, a durable pull"
    echo "consumer acking each message."
    echo
    echo "| measure | median of $REPS | target |"
    echo "|---|---|---|"
    echo "| raw libnats async publish, $(ksep "$N") events | $(ksep "$RAWP_MED")/s | |"
    echo "| outbox relay → JetStream (\`bus_publish\` in batches of 512, each confirmed) | $(ksep "$RELAY_MED")/s | |"
    echo "| the same / raw publish (median of the per-run ratios) | $RR_MED | ≥ 0.5: $(met "$RR_MED >= 0.5") |"
    echo "| raw libnats pull consumer, fetch 256 + ack | $(ksep "$RAWC_MED")/s | |"
    echo "| bus subscription, fetch 256 + ack (ordered lanes, leases) | $(ksep "$CONS_MED")/s ($CR_MED of raw) | |"
    echo "| outbox → relay → JetStream → consumer with inbox, $(ksep "$PN") events, 100/txn | $(ksep "$PIPE_MED")/s ($PR_MED of raw publish) | ≥ 0.5 of raw publish: $(met "$PR_MED >= 0.5") |"
    echo "| commit → handler at 2,000 events/s, ${SECS} s: p50 / p99 / p99.9 | $L50 / $L99 / $L999 ms ($ok/$REPS sustainable) | p99 < 10 ms: $(met "$L99 < 10") |"
    echo "| the bus alone at 2,000 events/s: \`bus_publish\` → fetch returns it, p50 / p99 / p99.9 | $B50 / $B99 / $B999 ms | |"
    echo
    echo "| run | what | events/s | ratio | CPU µs/event | load | other load |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Latency (paced producer, 1 event per transaction; CLOCK_MONOTONIC after \`sql_commit\` returns and first thing"
    echo "in the handler; *sustainable*: ≥ 97% of the rate held and the last quarter's p99 under 50 ms):"
    echo
    echo "| run | achieved/s | p50 ms | p99 ms | p99.9 ms | max ms | CPU µs/event | load | other load |"
    echo "|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${LROWS[@]}"
    echo
    echo "The bus alone (\`nats_bench buslat\`: one event per \`bus_publish\`, paced; a subscription on another thread"
    echo "fetching 256 and acking; no store on either side):"
    echo
    echo "| run | p50 ms | p99 ms | p99.9 ms | max ms | load | other load |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${BROWS[@]}"
    echo
    echo "### Reading"
    echo
    OTHER_MAX=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '{ gsub(/ /, "", $8); if ($8 + 0 > m) m = $8 + 0 } END { print m + 0 }')
    if awk "BEGIN { exit !($OTHER_MAX > 0.5) }"; then
        echo "- The machine was busy during these runs: other processes used up to $OTHER_MAX of the $NPROC cores (see the"
        echo "  *other load* column), so absolute rates are low and tails long; the ratios compare runs made in the same"
        echo "  conditions."
    fi
    echo "- The relay publishes $(ksep "$RELAY_MED") events/s into JetStream, $RR_MED of the bare async loop's $(ksep "$RAWP_MED")/s on the"
    echo "  same server (target ≥ 0.5: $(met "$RR_MED >= 0.5")). It does more per event than the loop: it reads the rows from"
    echo "  the outbox, waits for every publish of a 512-event batch to be confirmed before deleting the rows (the"
    echo "  outbox's crash safety), then deletes them; batches do not overlap."
    echo "- A subscription consumes $(ksep "$CONS_MED")/s ($CR_MED of the bare pull consumer) while keeping the order per"
    echo "  partition key across instances (one pull per owned partition lane, deliveries held and handed out in stream"
    echo "  order, acks gathered by libnats' flusher)."
    echo "- End to end with SQLite stores on both sides, $(ksep "$PIPE_MED") events/s: the consumer's store transaction (inbox"
    echo "  row and handler row per event, one transaction per fetched batch) is the bottleneck, as in the embedded"
    echo "  section's pipeline; JetStream's part (relay, consume) runs well above it."
    echo "- Latency at 2,000 events/s: p50 $L50 ms, p99 $L99 ms (target p99 < 10 ms: $(met "$L99 < 10")). Each event crosses"
    echo "  four threads and two processes (producer, relay, nats-server, consumer) and two SQLite commits: on $NPROC shared"
    echo "  cores the tail follows the other load column and the stores' commits (a commit that waits for a WAL"
    echo "  checkpoint or for a CPU holds everything behind it). The bus alone, publish → fetch, has p50 $B50 ms and"
    echo "  p99 $B99 ms in the same run."
    echo "<!-- /nats-bench-run -->"
} >"$SECTION"

if [[ ! -f $DOCS ]]; then
    mkdir -p "$(dirname "$DOCS")"
    printf '# Benchmarks\n\nResults of `make bench`, newest runs last.\n\n' >"$DOCS"
fi
# Replace today's section if there is one (in place), else append it; other sections stay as they are.
TMPD=$(mktemp)
awk -v date="$DATE" -v sect="$SECTION" '
    function emit(   line) { while ((getline line < sect) > 0) print line; close(sect); done = 1 }
    $0 == "<!-- nats-bench-run " date " -->" { skip = 1; emit(); next }
    skip && $0 == "<!-- /nats-bench-run -->" { skip = 0; next }
    skip { next }
    { print }
    END { if (!done) { print ""; emit() } }
' "$DOCS" >"$TMPD"
cat "$TMPD" >"$DOCS"
rm -f "$TMPD" "$SECTION"
log "wrote the $DATE NATS JetStream section of $DOCS"
