#!/usr/bin/env bash
# bench/run.sh - Pulse's HTTP, login and start-up benchmarks (run by `make bench`).
#
#   B=build bash bench/run.sh [all|http|login|startup]
#
# Builds nothing: expects $B/pulse, $B/bench/hello and $B/bench/argon2 (the
# Makefile's bench targets build them). Starts the bare libmicrohttpd hello
# world and pulse on kernel-chosen 127.0.0.1 ports with temporary data
# directories and the access log off, drives them with wrk, and stops every
# server it started by PID on exit. `all` (the default) rewrites today's
# section of docs/BENCHMARKS.md; a partial run only prints its results.
#
# Environment: B (build dir, default build), BENCH_DURATION (wrk -d, default
# 10s), BENCH_C1000=0 to skip the -c1000 runs, BENCH_DOCS (default
# docs/BENCHMARKS.md), BENCH_REV (how to name the code measured; default: this
# tree's git HEAD, noting uncommitted changes in src/). PULSE_* variables reach
# pulse as usual (threads, argon2 costs); the hello world gets pulse's
# effective server.threads.
set -euo pipefail

cd "$(dirname "$0")/.."
B=${B:-build}
WHAT=${1:-all}
DUR=${BENCH_DURATION:-10s}
C1000=${BENCH_C1000:-1}
DOCS=${BENCH_DOCS:-docs/BENCHMARKS.md}
case $WHAT in all | http | login | startup) ;; *) echo "usage: $0 [all|http|login|startup]" >&2; exit 2 ;; esac

for bin in "$B/pulse" "$B/bench/hello" "$B/bench/argon2"; do
    [[ -x $bin ]] || { echo "bench: $bin is missing; run: make B=$B bench" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "bench: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
for tool in curl awk; do
    command -v $tool >/dev/null || { echo "bench: $tool is not installed" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pulse-bench.XXXXXX")
PIDS=()

stop_pid() { # PID: SIGTERM, wait up to 5 s, then SIGKILL
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[bench] %s\n' "$*" >&2; }
calc() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; } # EXPR [DECIMALS]

# ---- small probes ---------------------------------------------------------------------

# 0 when GET PATH on 127.0.0.1:PORT answers 200 (bash's /dev/tcp: no process start per poll).
http_ok() { # PORT PATH
    local fd line
    { exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&"$fd"
    IFS= read -r -t 2 line <&"$fd" || line=
    exec {fd}>&-
    [[ $line == "HTTP/1.1 200"* ]]
}

# A sleep without a process start (the pollers below must not steal the CPU they measure).
exec {NAPFD}<> <(:)
nap() { read -r -t "$1" -u "$NAPFD" _ || true; }

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

cpu_ticks_pid() { # utime + stime of PID, in clock ticks
    local s
    read -r s <"/proc/$1/stat"
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    echo $((${12} + ${13}))
}

cpu_ticks_all() { # "busy total" clock ticks of the whole machine
    local _cpu user nice sys idle iowait irq softirq steal _rest
    read -r _cpu user nice sys idle iowait irq softirq steal _rest </proc/stat
    echo "$((user + nice + sys + irq + softirq + steal)) $((user + nice + sys + idle + iowait + irq + softirq + steal))"
}

TCK=$(getconf CLK_TCK)
NPROC=$(nproc)

# ---- servers ------------------------------------------------------------------------

# start_pulse NAME DATADIR: starts pulse on a free port; sets PORT, PID, READY_MS (process start
# until /healthz answers 200) and STARTUP_MS (pulse's own "startup_ms" from its listening line).
start_pulse() {
    local name=$1 data=$2 logf=$WORK/$1.log t0 t1 i text
    : >"$logf"
    t0=$EPOCHREALTIME
    PULSE_LOG_ACCESS=false "$B/pulse" serve --listen 127.0.0.1:0 --data "$data" 2>"$logf" &
    PID=$!
    PIDS+=("$PID")
    PORT=
    for ((i = 0; i < 20000; i++)); do
        if [[ -z $PORT ]]; then
            IFS= read -r -d '' text <"$logf" || true
            [[ $text =~ \"msg\":\"listening\"[^$'\n']*\"port\":([0-9]+) ]] && PORT=${BASH_REMATCH[1]}
        fi
        if [[ -n $PORT ]] && http_ok "$PORT" /healthz; then break; fi
        kill -0 "$PID" 2>/dev/null || { cat "$logf" >&2; echo "bench: pulse ($name) exited at start" >&2; exit 1; }
        nap 0.002
    done
    t1=$EPOCHREALTIME
    [[ -n $PORT ]] || { cat "$logf" >&2; echo "bench: pulse ($name) never became ready" >&2; exit 1; }
    READY_MS=$(calc "(${t1/./} - ${t0/./}) / 1000" 1)
    STARTUP_MS=$(grep -o '"startup_ms":[0-9.]*' "$logf" | head -1 | cut -d: -f2)
}

# start_hello NAME: the bare libmicrohttpd hello world; sets PORT, PID, READY_MS.
start_hello() {
    local name=$1 out=$WORK/$1.out t0 t1 i text
    : >"$out"
    t0=$EPOCHREALTIME
    "$B/bench/hello" "$THREADS" >"$out" &
    PID=$!
    PIDS+=("$PID")
    PORT=
    for ((i = 0; i < 20000; i++)); do
        if [[ -z $PORT ]]; then
            IFS= read -r -d '' text <"$out" || true
            [[ $text =~ listening\ ([0-9]+) ]] && PORT=${BASH_REMATCH[1]}
        fi
        if [[ -n $PORT ]] && http_ok "$PORT" /; then break; fi
        kill -0 "$PID" 2>/dev/null || { echo "bench: hello exited at start" >&2; exit 1; }
        nap 0.002
    done
    t1=$EPOCHREALTIME
    [[ -n $PORT ]] || { echo "bench: hello never became ready" >&2; exit 1; }
    READY_MS=$(calc "(${t1/./} - ${t0/./}) / 1000" 1)
}

forget_pid() { # PID: drops it from PIDS (it has ended)
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}
stop_server() { # PID: stops it and drops it from PIDS
    stop_pid "$1"
    forget_pid "$1"
}

# ---- wrk ------------------------------------------------------------------------------

to_ms() { # "686.00us" / "1.30ms" / "2.00s" -> milliseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.2f", n }'
}

declare -A RPS P50 P99 REQS ERRS SRV_US WRK_CPU OTHER CONNS_OF URL_OF

# bench_wrk KEY SERVER_PID CONNS URL [wrk args...]: one wrk run; results in the arrays above by KEY.
bench_wrk() {
    local key=$1 spid=$2 conns=$3 url=$4
    shift 4
    local out=$WORK/wrk-$key.txt tfile=$WORK/wrk-$key.time s0 s1 b0 b1 t_busy0 t_busy1 tot0 tot1
    log "wrk -t2 -c$conns -d$DUR $key"
    s0=$(cpu_ticks_pid "$spid")
    read -r t_busy0 tot0 < <(cpu_ticks_all)
    local TIMEFORMAT='%3U %3S'
    { time wrk -t2 -c"$conns" -d"$DUR" --latency "$@" "$url" >"$out" 2>&1; } 2>"$tfile"
    read -r t_busy1 tot1 < <(cpu_ticks_all)
    s1=$(cpu_ticks_pid "$spid")
    local wu ws
    read -r wu ws <"$tfile"
    RPS[$key]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    REQS[$key]=$(awk '/ requests in / { print $1 }' "$out")
    P50[$key]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    P99[$key]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    local non2xx sockerr
    non2xx=$(awk -F': ' '/Non-2xx or 3xx responses/ { print $2 }' "$out")
    sockerr=$(awk '/Socket errors:/ { sub(/.*Socket errors: /, ""); print }' "$out")
    ERRS[$key]=
    [[ -n $non2xx ]] && ERRS[$key]="non-2xx $non2xx"
    [[ -n $sockerr ]] && ERRS[$key]="${ERRS[$key]:+${ERRS[$key]}; }socket $sockerr"
    [[ -n ${RPS[$key]} && -n ${REQS[$key]} ]] || { cat "$out" >&2; echo "bench: wrk $key failed" >&2; exit 1; }
    # Server CPU per request; CPU of everything else on the machine (other users' builds and tests)
    # in cores, from /proc/stat minus the server and wrk.
    SRV_US[$key]=$(calc "($s1 - $s0) / $TCK * 1e6 / ${REQS[$key]}" 1)
    WRK_CPU[$key]=$(calc "$wu + $ws" 2)
    local elapsed
    elapsed=$(calc "($tot1 - $tot0) / $NPROC / $TCK" 3)
    OTHER[$key]=$(calc "(($t_busy1 - $t_busy0) / $TCK - ($s1 - $s0) / $TCK - $wu - $ws) / $elapsed" 2)
    CONNS_OF[$key]=$conns
    URL_OF[$key]=$url
    log "  ${RPS[$key]} req/s  p50 ${P50[$key]} ms  p99 ${P99[$key]} ms  server ${SRV_US[$key]} us/req  other load ${OTHER[$key]} cores${ERRS[$key]:+  (${ERRS[$key]})}"
}

# ---- machine -------------------------------------------------------------------------

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
THREADS=$("$B/pulse" config 2>/dev/null | awk -F' *= *| *;' '$1 == "server.threads" { print $2 }')
THREADS=${THREADS:-4}
ARGON_T=$("$B/pulse" config 2>/dev/null | awk -F' *= *| *;' '$1 == "service.identity.argon2_t_cost" { print $2 }')
ARGON_M=$("$B/pulse" config 2>/dev/null | awk -F' *= *| *;' '$1 == "service.identity.argon2_m_cost" { print $2 }')
ARGON_P=$("$B/pulse" config 2>/dev/null | awk -F' *= *| *;' '$1 == "service.identity.argon2_parallelism" { print $2 }')
size_kib() { # "19MiB" / "64KiB" / "1GiB" / bytes -> KiB
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "KiB") n *= 1; else if (u == "MiB") n *= 1024; else if (u == "GiB") n *= 1048576; else n /= 1024
        printf "%d", n }'
}
ARGON_M_KIB=$(size_kib "${ARGON_M:-19MiB}")
log "load average before: $LOAD_BEFORE; server.threads=$THREADS; argon2id t=$ARGON_T m=$ARGON_M p=$ARGON_P"

# ---- start-up and idle memory -----------------------------------------------------------

if [[ $WHAT == all || $WHAT == startup ]]; then
    READY=() INTERNAL=() RSS0=()
    for i in 1 2 3 4 5; do
        mkdir -p "$WORK/start$i"
        start_pulse "start$i" "$WORK/start$i"
        READY+=("$READY_MS")
        INTERNAL+=("$STARTUP_MS")
        sleep 0.3
        RSS0+=("$(rss_kb "$PID")")
        stop_server "$PID"
    done
    # restart on the data the last run created (migrations already applied)
    start_pulse restart "$WORK/start5"
    RESTART_MS=$READY_MS
    stop_server "$PID"
    start_hello hello-start
    HELLO_READY_MS=$READY_MS
    sleep 0.3
    HELLO_RSS=$(rss_kb "$PID")
    stop_server "$PID"
    median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
    maxof() { printf '%s\n' "$@" | sort -g | tail -1; }
    READY_MED=$(median "${READY[@]}") READY_MAX=$(maxof "${READY[@]}")
    INTERNAL_MED=$(calc "$(median "${INTERNAL[@]}")" 1)
    RSS_MED=$(calc "$(median "${RSS0[@]}") / 1024" 1) RSS_MAX=$(calc "$(maxof "${RSS0[@]}") / 1024" 1)
    HELLO_RSS_MB=$(calc "$HELLO_RSS / 1024" 1)
    log "start to ready (empty data, 5 runs): median $READY_MED ms, max $READY_MAX ms (pulse's own startup_ms median $INTERNAL_MED); restart on existing data $RESTART_MS ms; hello $HELLO_READY_MS ms"
    log "idle RSS after start: median $RSS_MED MB, max $RSS_MAX MB (hello $HELLO_RSS_MB MB)"
fi

# ---- argon2id cost ------------------------------------------------------------------

if [[ $WHAT == all || $WHAT == login ]]; then
    log "argon2id t=$ARGON_T m=${ARGON_M_KIB}KiB p=$ARGON_P: 20 hashes on 1 thread, 20 per thread on $NPROC threads"
    A1=$("$B/bench/argon2" 20 1 "$ARGON_T" "$ARGON_M_KIB" "$ARGON_P")
    AN=$("$B/bench/argon2" 20 "$NPROC" "$ARGON_T" "$ARGON_M_KIB" "$ARGON_P")
    kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
    ARGON_MS=$(kv "$A1" p50_ms) ARGON_MIN=$(kv "$A1" min_ms) ARGON_1_RATE=$(kv "$A1" hashes_per_s)
    ARGON_FIRST=$(kv "$A1" first_ms)
    ARGON_N_MS=$(kv "$AN" p50_ms) ARGON_N_RATE=$(kv "$AN" hashes_per_s)
    log "  1 thread: p50 $ARGON_MS ms/hash ($ARGON_1_RATE/s), first hash of the process $ARGON_FIRST ms; $NPROC threads: p50 $ARGON_N_MS ms/hash, $ARGON_N_RATE hashes/s"
fi

# ---- HTTP and logins -------------------------------------------------------------------

if [[ $WHAT == all || $WHAT == http || $WHAT == login ]]; then
    mkdir -p "$WORK/data"
    start_pulse pulse "$WORK/data"
    PULSE_PID=$PID PULSE_PORT=$PORT
    BASE=http://127.0.0.1:$PULSE_PORT
    PW='bench-password-1234'
    REG=$(curl -sf -X POST "$BASE/api/v1/auth/register" -H 'Content-Type: application/json' \
        -d "{\"email\":\"bench@example.com\",\"username\":\"bench\",\"password\":\"$PW\",\"display_name\":\"Bench User\"}")
    json_str() { grep -o "\"$1\":\"[^\"]*\"" | head -1 | cut -d'"' -f4; } # KEY < JSON: first string value
    USER_ID=$(json_str id <<<"$REG")
    TOKEN=$(curl -sf -X POST "$BASE/api/v1/auth/login" -H 'Content-Type: application/json' \
        -d "{\"login\":\"bench\",\"password\":\"$PW\"}" | json_str token)
    [[ -n $USER_ID && -n $TOKEN ]] || { echo "bench: seeding failed" >&2; exit 1; }
    curl -sf "$BASE/api/v1/users/$USER_ID" >/dev/null
    curl -sf -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/me" >/dev/null
    log "pulse on port $PULSE_PORT, user $USER_ID"
    # CPU an idle pulse uses (background threads: bus relay and consumers polling their stores).
    c0=$(cpu_ticks_pid "$PULSE_PID")
    sleep 3
    c1=$(cpu_ticks_pid "$PULSE_PID")
    IDLE_CPU=$(calc "100 * ($c1 - $c0) / $TCK / 3" 1)
    log "pulse idle CPU: $IDLE_CPU% of a core"
fi

if [[ $WHAT == all || $WHAT == http ]]; then
    start_hello hello
    HELLO_PID=$PID HELLO_URL=http://127.0.0.1:$PORT/
    # hello before and after the pulse runs: the machine is shared, so its rate drifts; the
    # ratios use the mean of the two, and the spread between them shows the drift.
    bench_wrk hello_a "$HELLO_PID" 100 "$HELLO_URL"
    bench_wrk healthz "$PULSE_PID" 100 "$BASE/healthz"
    bench_wrk users "$PULSE_PID" 100 "$BASE/api/v1/users/$USER_ID"
    bench_wrk me "$PULSE_PID" 100 "$BASE/api/v1/me" -H "Authorization: Bearer $TOKEN"
    bench_wrk hello_b "$HELLO_PID" 100 "$HELLO_URL"
    HELLO_RPS=$(calc "(${RPS[hello_a]} + ${RPS[hello_b]}) / 2" 0)
    HELLO_US=$(calc "(${SRV_US[hello_a]} + ${SRV_US[hello_b]}) / 2" 2)
    if [[ $C1000 == 1 ]]; then
        bench_wrk hello_1k "$HELLO_PID" 1000 "$HELLO_URL"
        bench_wrk users_1k "$PULSE_PID" 1000 "$BASE/api/v1/users/$USER_ID"
    fi
    stop_server "$HELLO_PID"
    sleep 1
    RSS_HTTP=$(calc "$(rss_kb "$PULSE_PID") / 1024" 1)
    log "pulse RSS, idle after the HTTP runs: $RSS_HTTP MB"
fi

if [[ $WHAT == all || $WHAT == login ]]; then
    cat >"$WORK/login.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"login":"bench","password":"$PW"}'
wrk.headers["Content-Type"] = "application/json"
EOF
    # While logins saturate the server, a light probe (one GET /healthz every 0.25 s) shows what
    # argon2 on the HTTP threads does to every other request.
    (
        sleep 0.5 # let wrk fill the server first
        while [[ ! -e $WORK/login.done ]]; do
            curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 10 "$BASE/healthz" || echo "000 10"
            sleep 0.25
        done >"$WORK/probe.txt"
    ) &
    PROBE_PID=$!
    PIDS+=("$PROBE_PID")
    # -c16: four connections per MHD thread keep every thread hashing; at -c100 each login only
    # waits longer in line (~1 s, past wrk's 2 s timeout at p99) for the same rate.
    bench_wrk login "$PULSE_PID" 16 "$BASE/api/v1/auth/login" -s "$WORK/login.lua" --timeout 10s
    touch "$WORK/login.done"
    wait "$PROBE_PID" || true
    forget_pid "$PROBE_PID"
    PROBE_N=$(awk '$1 == 200' "$WORK/probe.txt" | wc -l)
    PROBE_BAD=$(awk '$1 != 200' "$WORK/probe.txt" | wc -l)
    PROBE_P50=$(awk '$1 == 200 { print $2 * 1000 }' "$WORK/probe.txt" | sort -g | awk '{ a[NR] = $1 } END { printf "%.1f", NR ? a[int((NR + 1) / 2)] : 0 }')
    PROBE_MAX=$(awk '$1 == 200 { print $2 * 1000 }' "$WORK/probe.txt" | sort -g | tail -1)
    PROBE_MAX=$(calc "${PROBE_MAX:-0}" 1)
    log "  /healthz during the login load: $PROBE_N probes, p50 $PROBE_P50 ms, max $PROBE_MAX ms, $PROBE_BAD failed"
    # Compare with /healthz answered by the same server when idle.
    IDLE_PROBE=$(for i in 1 2 3 4 5; do curl -s -o /dev/null -w '%{time_total}\n' "$BASE/healthz"; done | sort -g | awk 'NR == 3 { printf "%.1f", $1 * 1000 }')
fi

if [[ -n ${PULSE_PID:-} ]]; then
    sleep 1
    RSS_AFTER=$(calc "$(rss_kb "$PULSE_PID") / 1024" 1)
    log "pulse RSS, idle after all runs: $RSS_AFTER MB"
    stop_server "$PULSE_PID"
fi

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average after: $LOAD_AFTER"

[[ $WHAT == all ]] || exit 0

# ---- docs/BENCHMARKS.md ------------------------------------------------------------------

DATE=$(date -u +%Y-%m-%d)
TIME=$(date -u +%H:%M)
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
if [[ -n ${BENCH_REV:-} ]]; then
    COMMIT=$BENCH_REV
else
    COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n $(git status --porcelain -- src 2>/dev/null) ]]; then
        COMMIT="$COMMIT plus uncommitted changes to $(git status --porcelain -- src | wc -l) paths in src/"
    fi
fi
MHD=$(pkg-config --modversion libmicrohttpd 2>/dev/null || echo '?')
CCV=$(${CC:-cc} --version | head -1)

pct() { calc "100 * $1 / $2" 0; }
yes_no() { awk "BEGIN { exit !($1) }" && echo "met" || echo "**not met**"; }

row() { # KEY LABEL RATIO_TO_KEY_RPS RATIO_TO_US
    local k=$1 ratio=$3 cpu_ratio=$4
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" "${CONNS_OF[$k]}" "${RPS[$k]}" "${P50[$k]}" \
        "${P99[$k]}" "$ratio" "${SRV_US[$k]}" "$cpu_ratio" "${OTHER[$k]}${ERRS[$k]:+ (${ERRS[$k]})}"
}
r_rps() { calc "${RPS[$1]} / $2" 2; }
r_us() { calc "${SRV_US[$1]} / $2" 2; }

MAXOTHER=$(printf '%s\n' "${OTHER[@]}" | sort -g | tail -1)
DRIFT=$(calc "100 * (${RPS[hello_b]} - ${RPS[hello_a]}) / ${RPS[hello_a]}" 0)
[[ $DRIFT == -0 ]] && DRIFT=0
USERS_RATIO=$(r_rps users "$HELLO_RPS")
ME_RATIO=$(r_rps me "$HELLO_RPS")
NOISY=0
# The load average after includes this benchmark's own wrk and servers; "other load" does not.
awk "BEGIN { exit !($MAXOTHER > 0.15 || ${LOAD_BEFORE%% *} > 0.5 || ($DRIFT > 10 || $DRIFT < -10)) }" && NOISY=1

SECTION=$WORK/section.md
{
    echo "<!-- bench-run $DATE -->"
    echo "## Results, $DATE"
    echo
    echo "\`make bench\` (here: \`B=$B bash bench/run.sh\`), $DATE $TIME UTC, code: commit $COMMIT."
    echo
    echo "Machine: $NPROC × $CPU, $MEM RAM, Linux $(uname -r); $CCV; libmicrohttpd $MHD; $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)."
    echo "Load average (1/5/15 min) before: $LOAD_BEFORE; after (includes this benchmark): $LOAD_AFTER. Pulse and the hello world run"
    echo "$THREADS MHD threads; wrk (-t2) runs on the same $NPROC cores as the server."
    echo
    echo "### HTTP (wrk -t2 -d$DUR --latency, keep-alive, access log off)"
    echo
    echo "Ratios are to the bare libmicrohttpd hello world measured in this run (mean of the runs before and"
    echo "after Pulse's: ${RPS[hello_a]} and ${RPS[hello_b]} req/s). *Server µs/req* is the server process's CPU"
    echo "time per request (utime+stime from /proc); *other load* is the CPU, in cores, used by everything except"
    echo "the server and wrk during the run (other engineers' builds and tests)."
    echo
    echo "| endpoint | conns | req/s | p50 ms | p99 ms | req/s vs hello | server µs/req | CPU vs hello | other load |"
    echo "|---|---|---|---|---|---|---|---|---|"
    row hello_a "hello world (before)" "$(r_rps hello_a "$HELLO_RPS")" "$(r_us hello_a "$HELLO_US")"
    row hello_b "hello world (after)" "$(r_rps hello_b "$HELLO_RPS")" "$(r_us hello_b "$HELLO_US")"
    row healthz "GET /healthz" "$(r_rps healthz "$HELLO_RPS")" "$(r_us healthz "$HELLO_US")"
    row users "GET /api/v1/users/{id}" "$USERS_RATIO" "$(r_us users "$HELLO_US")"
    row me "GET /api/v1/me (Bearer)" "$ME_RATIO" "$(r_us me "$HELLO_US")"
    if [[ $C1000 == 1 ]]; then
        row hello_1k "hello world" "1.00" "1.00"
        row users_1k "GET /api/v1/users/{id}" "$(r_rps users_1k "${RPS[hello_1k]}")" "$(r_us users_1k "${SRV_US[hello_1k]}")"
    fi
    echo
    echo "### Logins (POST /api/v1/auth/login, successful, wrk -t2 -c${CONNS_OF[login]} -d$DUR, default argon2id parameters)"
    echo
    echo "| measure | value |"
    echo "|---|---|"
    echo "| argon2id cost per hash, t=$ARGON_T m=$ARGON_M p=$ARGON_P (\`bench/argon2\`, 1 thread, p50 of 20) | $ARGON_MS ms (min $ARGON_MIN) |"
    echo "| the same, first hash of a process (its 19 MiB are faulted in) | $ARGON_FIRST ms |"
    echo "| argon2id hashes/s on $NPROC threads (machine ceiling for logins) | $ARGON_N_RATE (p50 $ARGON_N_MS ms/hash) |"
    echo "| logins/s | ${RPS[login]} ($(pct "${RPS[login]}" "$ARGON_N_RATE")% of the argon2 ceiling) |"
    echo "| login latency p50 / p99 | ${P50[login]} / ${P99[login]} ms |"
    echo "| server CPU per login | $(calc "${SRV_US[login]} / 1000" 1) ms |"
    echo "| errors | ${ERRS[login]:-none} |"
    echo "| GET /healthz during the login load (probe every 0.25 s) | p50 $PROBE_P50 ms, max $PROBE_MAX ms, $PROBE_BAD failed of $((PROBE_N + PROBE_BAD)) (idle: $IDLE_PROBE ms) |"
    echo
    echo "### Start-up and memory"
    echo
    echo "| measure | value | target |"
    echo "|---|---|---|"
    echo "| start to ready, empty data (process start → /healthz 200; 5 runs) | median $READY_MED ms, max $READY_MAX ms | < 200 ms: $(yes_no "$READY_MAX < 200") |"
    echo "| of which pulse's own \`startup_ms\` (median) | $INTERNAL_MED ms | |"
    echo "| restart on existing data | $RESTART_MS ms | |"
    echo "| idle RSS after start (VmRSS) | median $RSS_MED MB, max $RSS_MAX MB | < 50 MB: $(yes_no "$RSS_MAX < 50") |"
    echo "| idle RSS after the HTTP runs (one registration and one login so far) | $RSS_HTTP MB | |"
    echo "| idle RSS after the login run too | $RSS_AFTER MB | |"
    echo "| idle CPU (3 s with no requests, after seeding) | ${IDLE_CPU}% of a core | |"
    echo "| hello world: start to ready / idle RSS | $HELLO_READY_MS ms / $HELLO_RSS_MB MB | |"
    echo
    echo "### Reading"
    echo
    echo "- \`GET /api/v1/users/{id}\` runs at $(pct "$USERS_RATIO" 1)% of the hello world (target ≥ 50%:"
    echo "  $(yes_no "$USERS_RATIO >= 0.5")) with p99 ${P99[users]} ms (target < 5 ms: $(yes_no "${P99[users]} < 5"); the hello"
    echo "  world's own p99 in this run: ${P99[hello_a]} / ${P99[hello_b]} ms). \`GET /api/v1/me\`, which also looks up"
    echo "  the bearer token's session, runs at $(pct "$ME_RATIO" 1)%; \`GET /healthz\` (no store) at"
    echo "  $(pct "$(r_rps healthz "$HELLO_RPS")" 1)%, the cost of Pulse's request path alone."
    echo "- Server CPU per request: hello ${HELLO_US} µs, /healthz ${SRV_US[healthz]}, users/{id} ${SRV_US[users]},"
    echo "  /me ${SRV_US[me]}. This is the steadier measure on a shared machine: it does not depend on how much"
    echo "  CPU the server got."
    if [[ $C1000 == 1 ]]; then
        echo "- At 1,000 connections users/{id} keeps $(pct "$(r_rps users_1k "${RPS[hello_1k]}")" 1)% of the hello world's rate."
    fi
    echo "- Logins are bound by argon2id: ${RPS[login]}/s against $ARGON_N_RATE hashes/s for \`bench/argon2\` on"
    echo "  $NPROC threads; each login costs the server $(calc "${SRV_US[login]} / 1000" 1) ms of CPU, the hash alone $ARGON_MS ms."
    echo "  The hash runs on the MHD threads, so while logins keep them busy every other request"
    echo "  queued on the same threads waits: GET /healthz took up to $PROBE_MAX ms (p50 $PROBE_P50 ms) during the"
    echo "  login load against $IDLE_PROBE ms idle."
    echo "- Start-up: ready in $READY_MED ms (median), of which pulse's own start is $INTERNAL_MED ms; it includes"
    echo "  one argon2id hash (the dummy hash that keeps unknown-login timing equal), which costs"
    echo "  ~$ARGON_FIRST ms as the first hash of a process. The hello world, linked with the same libraries, is"
    echo "  ready in $HELLO_READY_MS ms."
    if awk "BEGIN { exit !($RSS_AFTER >= 50) }"; then
        echo "- Idle RSS is $RSS_MED MB after start, $RSS_HTTP MB after the HTTP runs, but **$RSS_AFTER MB after the"
        echo "  logins**: each argon2id hash allocates"
        echo "  19 MiB; after the first one is freed glibc raises its mmap threshold, so later hashes are served"
        echo "  from each MHD thread's malloc arena, which keeps the pages (up to threads × 19 MiB resident). That"
        echo "  is also why warm hashes are cheap (${ARGON_MS} ms against ~${ARGON_FIRST} ms with fresh pages)."
    fi
    if [[ $NOISY == 1 ]]; then
        echo "- **Noisy run**: other load up to $MAXOTHER cores, load average $LOAD_BEFORE before and $LOAD_AFTER after,"
        echo "  hello world drift ${DRIFT}% between its two runs. Compare the ratios, not the absolute rates."
    else
        echo "- Quiet run: other load at most $MAXOTHER cores, hello world drift ${DRIFT}% between its two runs."
    fi
    echo "<!-- /bench-run -->"
} >"$SECTION"

if [[ ! -f $DOCS ]]; then
    mkdir -p "$(dirname "$DOCS")"
    printf '# Benchmarks\n\nResults of `make bench` (bench/run.sh), newest runs last.\n\n' >"$DOCS"
fi
# Replace today's section if there is one (in place), else append it.
awk -v date="$DATE" -v sect="$SECTION" '
    function emit(   line) { while ((getline line < sect) > 0) print line; close(sect); done = 1 }
    $0 == "<!-- bench-run " date " -->" { skip = 1; emit(); next }
    skip && $0 == "<!-- /bench-run -->" { skip = 0; next }
    skip { next }
    { print }
    END { if (!done) { print ""; emit() } }
' "$DOCS" >"$WORK/docs.md"
# no blank-line pile-up at the end
sed -e ':a' -e '/^\n*$/{$d;N;ba' -e '}' "$WORK/docs.md" >"$DOCS"
log "wrote the $DATE section of $DOCS"
