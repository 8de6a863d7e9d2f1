#!/usr/bin/env bash
# bench/ws.sh - WebSocket fan-out: 50,000 authenticated sessions, 2,000 events/s (make bench-ws).
#
#   B=build bash bench/ws.sh [full|sanity]
#
# Builds nothing: expects $B/pulse and $B/bench/ws_load (the Makefile's bench-ws target builds them).
# Starts PostgreSQL, Redis and NATS JetStream with scripts/engines.sh in a temporary directory, then:
#
#   - one pulse process `--services identity,testkit` (the API: mints sessions, commits the events);
#   - WS_GATEWAYS pulse processes `--services realtime` (the WebSocket gateways: one consumer group on the
#     bus, cross-instance delivery through Redis pub/sub), each on its own port;
#   - mints WS_SESSIONS bearer tokens (POST /api/v1/testkit/sessions: no argon2, one principal each);
#   - WS_CLIENTS `ws_load sessions` processes (epoll; this machine caps open files at 20,000 per process),
#     from WS_SRC loopback source addresses (127.0.0.2...), session k to gateway k % WS_GATEWAYS;
#   - measures each gateway's RSS before and after the sessions opened, and its idle CPU;
#   - `ws_load drive`: WS_RATE events/s for WS_SECONDS s to POST /api/v1/testkit/pushes, one transaction
#     per POST (the events due together; WS_TX=each: one per event), 90% to 1 user, 9% to 50, 1% to 1,000 (WS_MIX), recipients drawn from the open sessions;
#     sent_at_ns is taken in the transaction right before the outbox insert and COMMIT;
#   - waits until the realtime consumers' lag is 0 and the gateways stop sending, stops the clients (they write latency histograms), merges them (ws_load report).
#
# Every server listens on loopback and is stopped by PID at exit. `full` (the default) writes the section
# "WebSocket fan-out, DATE" of docs/BENCHMARKS.md (replaced on the same day); `sanity` is a quick check
# (100 sessions, 2 gateways, 100 events/s for 10 s, no docs) that exits 1 unless every session opened and
# every expected delivery arrived exactly once.
#
# Environment: B, WS_SESSIONS (50000), WS_GATEWAYS (ceil(sessions / 14000), at least 2), WS_CLIENTS
# (ceil(sessions / 12500)), WS_SRC (8 source addresses), WS_RATE (2000), WS_SECONDS (30), WS_MIX
# (90:1,9:50,1:1000), WS_TX (one: the events due together in one transaction; each: one per event),
# WS_DRAIN (2) and WS_DRAIN_MAX (120: seconds to wait for the backlog after the drive), WS_SETTLE (5),
# WS_INFLIGHT (handshakes in flight per client, 128), WS_PROFILE (distributed: PostgreSQL + Redis + NATS;
# embedded: SQLite and the embedded bus in one shared data directory, Redis for kv),
# WS_GATEWAY_ENV ("VAR=VALUE ..." for the gateway processes, e.g. PULSE_SERVER_HEADER_LIMIT=4KiB),
# BENCH_DOCS (docs/BENCHMARKS.md), WS_DOCS=0 to print only, WS_KEEP=1 to keep the work directory.
set -euo pipefail

cd "$(dirname "$0")/.."
B=${B:-build}
MODE=${1:-full}
case $MODE in
    full) ;;
    sanity)
        : "${WS_SESSIONS:=100}" "${WS_GATEWAYS:=2}" "${WS_RATE:=100}" "${WS_SECONDS:=10}" "${WS_DRAIN:=1}"
        : "${WS_SETTLE:=1}" "${WS_SRC:=2}"
        WS_DOCS=0
        ;;
    *) echo "usage: $0 [full|sanity]" >&2; exit 2 ;;
esac
SESSIONS=${WS_SESSIONS:-50000}
GATEWAYS=${WS_GATEWAYS:-$(( (SESSIONS + 13999) / 14000 < 2 ? 2 : (SESSIONS + 13999) / 14000 ))}
CLIENTS=${WS_CLIENTS:-$(( (SESSIONS + 12499) / 12500 ))}
NSRC=${WS_SRC:-8}
RATE=${WS_RATE:-2000}
SECONDS_RUN=${WS_SECONDS:-30}
MIX=${WS_MIX:-90:1,9:50,1:1000}
DRAIN=${WS_DRAIN:-2}
DRAIN_MAX=${WS_DRAIN_MAX:-120}
SETTLE=${WS_SETTLE:-5}
INFLIGHT=${WS_INFLIGHT:-128}
PROFILE=${WS_PROFILE:-distributed}
case $PROFILE in distributed | embedded) ;; *) echo "bench: WS_PROFILE is distributed or embedded" >&2; exit 2 ;; esac
TX=${WS_TX:-one}
if [[ $TX == one ]]; then
    TX_NOTE="the events due together, up to 200, in one transaction: \`ws_load drive --tx one\`"
else
    TX_NOTE="one transaction per event: \`ws_load drive --tx each\`"
fi
DOCS=${BENCH_DOCS:-docs/BENCHMARKS.md}
WRITE=${WS_DOCS:-1}
LOAD=$B/bench/ws_load

for bin in "$B/pulse" "$LOAD"; do
    [[ -x $bin ]] || { echo "bench: $bin is missing; run: make B=$B bench-ws" >&2; exit 1; }
done
for tool in curl jq awk; do
    command -v $tool >/dev/null || { echo "bench: $tool is not installed" >&2; exit 1; }
done
(( SESSIONS / GATEWAYS < 19000 )) || { echo "bench: $SESSIONS sessions need more than $GATEWAYS gateways (20,000 files per process)" >&2; exit 1; }
(( SESSIONS / CLIENTS < 19000 )) || { echo "bench: $SESSIONS sessions need more than $CLIENTS client processes" >&2; exit 1; }

# Open files: up to the hard limit (here 20,000 per process, which is why everything runs as several processes).
ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pulse-wsbench.XXXXXX")
chmod 755 "$WORK" # engines.sh: PostgreSQL's user must be able to enter it (as root)
ENG=$WORK/engines
PIDS=()

log() { printf '[ws-bench] %s\n' "$*" >&2; }
calc() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; } # EXPR [DECIMALS]
kv() { awk -F= -v k="$2" '$1 == k { print $2 }' <<<"$1"; } # TEXT KEY

stop_pid() { # PID: SIGTERM, wait up to 10 s, then SIGKILL
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ -d $ENG ]]; then bash scripts/engines.sh stop "$ENG" >/dev/null 2>&1 || true; fi
    if [[ ${WS_KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ticks() { local s; read -r s <"/proc/$1/stat"; s=${s##*) }; set -- $s; echo $((${12} + ${13})); } # utime+stime
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
TCK=$(getconf CLK_TCK)
NPROC=$(nproc)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- engines and servers ------------------------------------------------------------------------

if [[ $PROFILE == distributed ]]; then
    log "engines (PostgreSQL, Redis, NATS JetStream) in $ENG"
    bash scripts/engines.sh start "$ENG" >/dev/null
    set -a
    # shellcheck disable=SC1091
    . "$ENG/engines.env"
    set +a
    NATS_PID=$(cat "$ENG/nats.pid")
    ENGINES_NOTE="PostgreSQL, Redis, NATS JetStream (\`scripts/engines.sh\`)"
    SQL_NOTE=PostgreSQL BUS_NOTE=JetStream
else
    # Embedded SQL and bus in one data directory that every pulse process shares (SQLite WAL, the
    # embedded log); kv on Redis, which the gateways need for sessions, history and pub/sub.
    log "engine (Redis) in $ENG; SQLite and the embedded bus in $WORK/data (shared)"
    bash scripts/engines.sh up redis "$ENG" >/dev/null
    export PULSE_DEFAULTS_KV
    PULSE_DEFAULTS_KV=$(sed -n 's/^PULSE_TEST_REDIS_URL=//p' "$ENG/engines.env")
    unset PULSE_DEFAULTS_SQL PULSE_BUS_URL
    NATS_PID=
    SQL_NOTE=SQLite BUS_NOTE="the embedded log"
    ENGINES_NOTE="Redis (\`scripts/engines.sh\`) for kv; SQLite and the embedded bus in one data directory shared by every pulse process"
fi
REDIS_PID=$(cat "$ENG/redis.pid")

http_ok() { # PORT PATH: 0 when it answers 200
    local fd line
    { exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&"$fd"
    IFS= read -r -t 2 line <&"$fd" || line=
    exec {fd}>&-
    [[ $line == "HTTP/1.1 200"* ]]
}

# start_pulse NAME SERVICES [VAR=VALUE...]: sets PORT and PID.
start_pulse() {
    local name=$1 services=$2 logf=$WORK/$1.log i text
    shift 2
    local data=$WORK/$name
    [[ $PROFILE == distributed ]] || data=$WORK/data
    mkdir -p "$data"
    : >"$logf"
    env PULSE_LOG_ACCESS=false "$@" "$B/pulse" serve --listen 127.0.0.1:0 --data "$data" \
        --services "$services" 2>"$logf" &
    PID=$!
    PIDS+=("$PID")
    PORT=
    for ((i = 0; i < 1500; i++)); do
        if [[ -z $PORT ]]; then
            IFS= read -r -d '' text <"$logf" || true
            [[ $text =~ \"msg\":\"listening\"[^$'\n']*\"port\":([0-9]+) ]] && PORT=${BASH_REMATCH[1]}
        fi
        if [[ -n $PORT ]] && http_ok "$PORT" /healthz; then return 0; fi
        kill -0 "$PID" 2>/dev/null || { cat "$logf" >&2; echo "bench: pulse ($name) exited at start" >&2; exit 1; }
        sleep 0.02
    done
    cat "$logf" >&2
    echo "bench: pulse ($name) never became ready" >&2
    exit 1
}

start_pulse api identity,testkit
API_PORT=$PORT API_PID=$PID
GW_PORTS=() GW_PIDS=()
for ((g = 0; g < GATEWAYS; g++)); do
    # shellcheck disable=SC2086
    start_pulse "gw$g" realtime PULSE_SERVER_CONNECTION_LIMIT=20000 ${WS_GATEWAY_ENV:-}
    GW_PORTS+=("$PORT") GW_PIDS+=("$PID")
done
log "api :$API_PORT (pid $API_PID); gateways ${GW_PORTS[*]} (pids ${GW_PIDS[*]})"
TARGETS=$(printf '127.0.0.1:%s,' "${GW_PORTS[@]}")
TARGETS=${TARGETS%,}
SRC="127.0.0.2-127.0.0.$((NSRC + 1))"

# ---- tokens --------------------------------------------------------------------------------------

log "minting $SESSIONS sessions"
t0=$EPOCHREALTIME
: >"$WORK/tokens"
left=$SESSIONS
while ((left > 0)); do
    n=$((left > 10000 ? 10000 : left))
    curl -sf -X POST "http://127.0.0.1:$API_PORT/api/v1/testkit/sessions" -H 'Content-Type: application/json' \
        -d "{\"count\":$n}" | jq -r '.items[] | "\(.user_id) \(.token)"' >>"$WORK/tokens" \
        || { echo "bench: minting sessions failed" >&2; exit 1; }
    left=$((left - n))
done
MINT_S=$(calc "${EPOCHREALTIME/./} / 1e6 - ${t0/./} / 1e6" 1)
[[ $(wc -l <"$WORK/tokens") == "$SESSIONS" ]] || { echo "bench: minted $(wc -l <"$WORK/tokens") tokens, not $SESSIONS" >&2; exit 1; }

# ---- sessions ------------------------------------------------------------------------------------

sleep 1
declare -A RSS0 RSS1 T0 T1
for p in "${GW_PIDS[@]}"; do RSS0[$p]=$(rss_kb "$p"); done
SLAB0=$(awk '/^Slab:/ { print $2 }' /proc/meminfo)

log "opening $SESSIONS sessions: $CLIENTS client processes, sources $SRC, targets $TARGETS"
CL_PIDS=()
per=$(( (SESSIONS + CLIENTS - 1) / CLIENTS ))
t0=$EPOCHREALTIME
for ((c = 0; c < CLIENTS; c++)); do
    first=$((c * per))
    count=$(( SESSIONS - first < per ? SESSIONS - first : per ))
    "$LOAD" sessions --tokens "$WORK/tokens" --first "$first" --count "$count" --targets "$TARGETS" --src "$SRC" \
        --inflight "$INFLIGHT" --out "$WORK/client$c" 2>"$WORK/client$c.log" &
    CL_PIDS+=("$!")
    PIDS+=("$!")
done
for ((i = 0; ; i++)); do
    done_n=0
    for ((c = 0; c < CLIENTS; c++)); do [[ -f $WORK/client$c.ramp ]] && done_n=$((done_n + 1)); done
    ((done_n == CLIENTS)) && break
    for p in "${CL_PIDS[@]}"; do kill -0 "$p" 2>/dev/null || { cat "$WORK"/client*.log >&2; echo "bench: a client exited" >&2; exit 1; }; done
    ((i < 6000)) || { echo "bench: the sessions did not open within 10 minutes" >&2; exit 1; }
    sleep 0.1
done
RAMP_S=$(calc "${EPOCHREALTIME/./} / 1e6 - ${t0/./} / 1e6" 1)
RAMP=$("$LOAD" report "$WORK"/client*.ramp "$WORK"/client*.hshist)
READY=$(kv "$RAMP" ready)
log "open: $READY of $SESSIONS in $RAMP_S s (failed $(kv "$RAMP" failed): connect $(kv "$RAMP" connect_err), http $(kv "$RAMP" http_err), timeouts $(kv "$RAMP" timeouts), closed $(kv "$RAMP" closed_early); retried $(kv "$RAMP" retried))"

# Idle: settle, then memory and CPU over WS_SETTLE seconds.
sleep "$SETTLE"
for p in "${GW_PIDS[@]}"; do T0[$p]=$(ticks "$p"); done
sleep "$SETTLE"
for p in "${GW_PIDS[@]}"; do T1[$p]=$(ticks "$p") RSS1[$p]=$(rss_kb "$p"); done
SLAB1=$(awk '/^Slab:/ { print $2 }' /proc/meminfo)
# Open sessions per gateway: session k went to gateway k % GATEWAYS.
mapfile -t PER_GW < <(cat "$WORK"/client*.connected | awk -v g="$GATEWAYS" '{ n[$1 % g]++ } END { for (i = 0; i < g; i++) print n[i] + 0 }')
MEM_ROWS=()
RSS_DELTA_SUM=0
IDLE_TICKS=0
for ((g = 0; g < GATEWAYS; g++)); do
    p=${GW_PIDS[$g]}
    d=$((RSS1[$p] - RSS0[$p]))
    RSS_DELTA_SUM=$((RSS_DELTA_SUM + d))
    IDLE_TICKS=$((IDLE_TICKS + T1[$p] - T0[$p]))
    per_s=$( ((PER_GW[g] > 0)) && calc "$d * 1024 / ${PER_GW[$g]} / 1024" 2 || echo -)
    MEM_ROWS+=("| gateway $g | ${PER_GW[$g]} | $(calc "${RSS0[$p]} / 1024" 1) | $(calc "${RSS1[$p]} / 1024" 1) | $per_s |")
    log "gateway $g: ${PER_GW[$g]} sessions, RSS $(calc "${RSS0[$p]} / 1024" 1) -> $(calc "${RSS1[$p]} / 1024" 1) MiB: $per_s KiB per session"
done
MEM_PER=$( ((READY > 0)) && calc "$RSS_DELTA_SUM / $READY" 2 || echo 0)
SLAB_PER=$( ((READY > 0)) && calc "($SLAB1 - $SLAB0) / $READY" 2 || echo 0)
IDLE_CPU=$(calc "$IDLE_TICKS / $TCK / $SETTLE * 100" 1)
log "server RSS per idle session: $MEM_PER KiB (user space, all gateways); kernel slab: $SLAB_PER KiB per connection (both ends); idle gateways: $IDLE_CPU% of a core"

# ---- drive -----------------------------------------------------------------------------------------

metric_sum() { # NAME: the sum of a metric over the gateways (a label filter may follow the name)
    local g
    for ((g = 0; g < GATEWAYS; g++)); do curl -s "http://127.0.0.1:${GW_PORTS[$g]}/metrics" || true; done |
        awk -v m="$1" 'index($0, m) == 1 { s += $NF } END { printf "%.0f\n", s }'
}
HANDLED='pulse_consumer_handled_total{consumer="realtime.deliver"}'
CONNECTED=$(printf '%s,' "$WORK"/client*.connected)
log "driving $RATE events/s for $SECONDS_RUN s (mix $MIX) through POST /api/v1/testkit/pushes"
for p in "${GW_PIDS[@]}" "$API_PID" "$REDIS_PID" $NATS_PID; do T0[$p]=$(ticks "$p"); done
read -r _ u0 n0 s0 i0 w0 q0 sq0 st0 _ </proc/stat
H0=$(metric_sum "$HANDLED")
t0=$EPOCHREALTIME
DRIVE_RC=0
"$LOAD" drive --api "127.0.0.1:$API_PORT" --tokens "$WORK/tokens" --connected "${CONNECTED%,}" --rate "$RATE" \
    --seconds "$SECONDS_RUN" --mix "$MIX" --conns 8 --batch 200 --tx "$TX" --out "$WORK/drive" 2>"$WORK/drive.log" || DRIVE_RC=$?
[[ -f $WORK/drive ]] || { cat "$WORK/drive.log" >&2; echo "bench: the driver failed" >&2; exit 1; }
H1=$(metric_sum "$HANDLED")
DRIVE_S=$(calc "${EPOCHREALTIME/./} / 1e6 - ${t0/./} / 1e6" 2)
CONSUMER_RATE=$(calc "($H1 - $H0) / $DRIVE_S" 0)
# Where a backlog sits when the driver stops: outbox depth, consumer lag, hub queues (kept in $WORK/metrics-*).
curl -s "http://127.0.0.1:$API_PORT/metrics" >"$WORK/metrics-api.txt" || true
for ((g = 0; g < GATEWAYS; g++)); do curl -s "http://127.0.0.1:${GW_PORTS[$g]}/metrics" >"$WORK/metrics-gw$g.txt" || true; done
grep -hE '^pulse_(outbox|consumer|bus)[a-z_]*(depth|lag|pending)' "$WORK"/metrics-*.txt 2>/dev/null | sed 's/^/[ws-bench] at the end of the drive: /' >&2 || true
# Drain: until the realtime consumers have no lag and the gateways' frame counters stand still for a second
# (at least WS_DRAIN s, at most WS_DRAIN_MAX s). What has not arrived by then counts as not received.
DRAIN_T0=$EPOCHREALTIME
sleep "$DRAIN"
prev=-1 still=0
for ((i = 0; i < DRAIN_MAX * 2; i++)); do
    lag=$(metric_sum 'pulse_consumer_lag_events{consumer="realtime.deliver"}')
    sent=$(metric_sum pulse_ws_frames_sent_total)
    if [[ $lag == 0 && $sent == "$prev" ]]; then still=$((still + 1)); else still=0; fi
    ((still >= 2)) && break
    prev=$sent
    sleep 0.5
done
DRAIN_S=$(calc "${EPOCHREALTIME/./} / 1e6 - ${DRAIN_T0/./} / 1e6" 1)
log "drained in $DRAIN_S s (realtime consumer lag ${lag:-?})"
t1=$EPOCHREALTIME
for p in "${GW_PIDS[@]}" "$API_PID" "$REDIS_PID" $NATS_PID; do T1[$p]=$(ticks "$p"); done
read -r _ u1 n1 s1 i1 w1 q1 sq1 st1 _ </proc/stat
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
for p in "${CL_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${CL_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
DRIVE=$(cat "$WORK/drive")
RES=$("$LOAD" report "$WORK"/client*.result "$WORK"/client*.hist)
cat "$WORK/drive.log" >&2

EXPECTED=$(kv "$DRIVE" expected)
RECEIVED=$(kv "$RES" received)
DUPS=$(kv "$RES" dups)
LOST=$((EXPECTED - RECEIVED))
GW_TICKS=0
for p in "${GW_PIDS[@]}"; do GW_TICKS=$((GW_TICKS + T1[$p] - T0[$p])); done
WALL=$(calc "${t1/./} / 1e6 - ${t0/./} / 1e6" 2)
GW_US=$( ((RECEIVED > 0)) && calc "$GW_TICKS / $TCK * 1e6 / $RECEIVED" 2 || echo -)
COMMITTED=$(kv "$DRIVE" committed)
API_US=$( ((COMMITTED > 0)) && calc "(${T1[$API_PID]} - ${T0[$API_PID]}) / $TCK * 1e6 / $COMMITTED" 1 || echo -)
REDIS_US=$( ((COMMITTED > 0)) && calc "(${T1[$REDIS_PID]} - ${T0[$REDIS_PID]}) / $TCK * 1e6 / $COMMITTED" 1 || echo -)
NATS_US=$( ((COMMITTED > 0)) && [[ -n $NATS_PID ]] && calc "(${T1[$NATS_PID]} - ${T0[$NATS_PID]}) / $TCK * 1e6 / $COMMITTED" 1 || echo -)
GW_CORES=$(calc "$GW_TICKS / $TCK / $WALL" 2)
BUSY=$(( (u1 + n1 + s1 + q1 + sq1 + st1) - (u0 + n0 + s0 + q0 + sq0 + st0) ))
TOTAL=$(( BUSY + (i1 + w1) - (i0 + w0) ))
MACHINE=$(calc "$BUSY / $TOTAL * 100" 0)

P50=$(kv "$RES" latency_p50_ms) P99=$(kv "$RES" latency_p99_ms) P999=$(kv "$RES" latency_p999_ms)
PMAX=$(kv "$RES" latency_max_ms)
echo
echo "sessions:   $READY of $SESSIONS open ($GATEWAYS gateways, $CLIENTS client processes, $NSRC source addresses), ramp $RAMP_S s"
echo "memory:     $MEM_PER KiB RSS per idle session (gateways, user space); kernel slab $SLAB_PER KiB per connection (both ends)"
echo "events:     $COMMITTED committed of $(kv "$DRIVE" events) at $(kv "$DRIVE" rate_achieved)/s (failed $(kv "$DRIVE" failed)); commit mean $(kv "$DRIVE" commit_us_mean) us"
echo "deliveries: expected $EXPECTED, received $RECEIVED, not received $LOST (drain $DRAIN_S s), duplicates $DUPS, sessions closed during the run $(kv "$RES" closed_later)"
echo "latency:    commit -> receive p50 $P50 ms, p99 $P99 ms, p99.9 $P999 ms, max $PMAX ms"
echo "cpu:        gateways $GW_US us per delivery ($GW_CORES cores); per event: api $API_US us, redis $REDIS_US us, nats $NATS_US us; machine $MACHINE% busy"
echo "consumer:   the realtime consumers handled $CONSUMER_RATE events/s during the drive (all gateways)"
echo "load:       before $LOAD_BEFORE, after $LOAD_AFTER"

if [[ $MODE == sanity ]]; then
    ok=1
    [[ $READY == "$SESSIONS" ]] || { log "FAIL: $READY of $SESSIONS sessions opened"; ok=0; }
    [[ $DRIVE_RC == 0 && $(kv "$DRIVE" failed) == 0 ]] || { log "FAIL: the API refused events"; ok=0; }
    ((EXPECTED > 0 && LOST == 0)) || { log "FAIL: $LOST of $EXPECTED deliveries missing"; ok=0; }
    [[ $DUPS == 0 ]] || { log "FAIL: $DUPS duplicate deliveries"; ok=0; }
    ((ok)) && log "sanity: ok" || exit 1
    exit 0
fi
[[ $WRITE == 1 ]] || exit 0

# ---- docs/BENCHMARKS.md -----------------------------------------------------------------------------

DATE=$(date -u +%Y-%m-%d)
TIME=$(date -u +%H:%M)
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain -- src bench/ws_load.c 2>/dev/null) ]]; then
    COMMIT="$COMMIT plus uncommitted changes in src or bench/ws_load.c"
fi
met() { awk "BEGIN { exit !($1) }" && echo "met" || echo "**not met**"; }
SECTION=$WORK/section.md
{
    echo "<!-- ws-bench-run $DATE $PROFILE -->"
    echo "## WebSocket fan-out ($PROFILE), $DATE"
    echo
    echo "\`make bench-ws\` (here: \`WS_PROFILE=$PROFILE WS_SESSIONS=$SESSIONS WS_RATE=$RATE B=$B bash bench/ws.sh\`), $DATE $TIME UTC, commit $COMMIT."
    echo "Machine: $NPROC × $CPU, $MEM RAM, Linux $(uname -r); 20,000 open files per process (hard limit). Load average"
    echo "before: $LOAD_BEFORE; after: $LOAD_AFTER (the benchmark's processes included; the cores are shared with other"
    echo "engineers' builds and tests). Everything on loopback on this one machine: $ENGINES_NOTE;"
    echo "one pulse \`--services identity,testkit\` (the API), $GATEWAYS pulse \`--services realtime\`"
    echo "(the gateways), $CLIENTS \`ws_load sessions\` processes from $NSRC source addresses, one \`ws_load drive\`."
    echo
    echo "The measured path is the real one: \`POST /api/v1/testkit/pushes\` commits the events (outbox rows on $SQL_NOTE;"
    echo "$TX_NOTE; \`sent_at_ns\` = CLOCK_REALTIME taken in the transaction right before its inserts"
    echo "and COMMIT, so the latency includes the commit) → outbox relay → $BUS_NOTE → the realtime consumer → Redis (history, pub/sub) → every gateway's epoll"
    echo "thread → socket → \`ws_load\`, which takes CLOCK_REALTIME right after \`recv()\`. Recipients: $MIX (percent:users),"
    echo "drawn from the open sessions (one session per user)."
    echo
    echo "| measure | result | target |"
    echo "|---|---|---|"
    echo "| sessions open | $READY of $SESSIONS (ramp $RAMP_S s; failed $(kv "$RAMP" failed)) | 50,000: $(met "$READY >= 50000") |"
    echo "| gateway RSS per idle session (user space) | $MEM_PER KiB | < 16 KiB: $(met "$MEM_PER < 16") (stretch < 8: $(met "$MEM_PER < 8")) |"
    echo "| kernel slab per connection (both ends, whole machine) | $SLAB_PER KiB | |"
    echo "| idle gateways' CPU | $IDLE_CPU% of a core | |"
    echo "| events committed | $COMMITTED of $(kv "$DRIVE" events) at $(kv "$DRIVE" rate_achieved)/s (failed $(kv "$DRIVE" failed); commit mean $(kv "$DRIVE" commit_us_mean) µs, max $(kv "$DRIVE" max_commit_us) µs) | 2,000/s |"
    echo "| deliveries expected / received / not received / duplicated | $EXPECTED / $RECEIVED / $LOST / $DUPS (drain after the drive: $DRAIN_S s) | none lost |"
    echo "| commit → receive p50 / p99 / p99.9 / max | $P50 / $P99 / $P999 / $PMAX ms | p99 < 50 ms: $(met "$P99 < 50") |"
    echo "| gateway CPU per delivery | $GW_US µs ($GW_CORES cores) | |"
    echo "| CPU per event: API process / Redis / NATS | $API_US / $REDIS_US / $NATS_US µs | |"
    echo "| realtime consumers' rate during the drive (all gateways) | $CONSUMER_RATE events/s | |"
    echo "| machine busy during the run | $MACHINE% of $NPROC cores | |"
    echo
    echo "| gateway | sessions | RSS before MiB | RSS after MiB | KiB per session |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${MEM_ROWS[@]}"
    echo "<!-- /ws-bench-run -->"
} >"$SECTION"
if [[ ! -f $DOCS ]]; then
    mkdir -p "$(dirname "$DOCS")"
    printf '# Benchmarks\n\nResults of `make bench`, newest runs last.\n\n' >"$DOCS"
fi
TMPD=$(mktemp)
awk -v date="$DATE" -v profile="$PROFILE" -v sect="$SECTION" '
    function emit(   line) { while ((getline line < sect) > 0) print line; close(sect); done = 1 }
    $0 == "<!-- ws-bench-run " date " " profile " -->" { skip = 1; emit(); next }
    skip && $0 == "<!-- /ws-bench-run -->" { skip = 0; next }
    skip { next }
    { print }
    END { if (!done) { print ""; emit() } }
' "$DOCS" >"$TMPD"
cat "$TMPD" >"$DOCS"
rm -f "$TMPD"
log "wrote the $DATE WebSocket ($PROFILE) section of $DOCS"
