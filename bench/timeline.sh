#!/usr/bin/env bash
# bench/timeline.sh - the timeline's benchmarks (run by `make bench`, `make bench-fanout`, `make bench-timeline`).
#
#   B=build bash bench/timeline.sh [fanout|read|all]
#
# Builds nothing: expects $B/pulse, $B/bench/kv_bench and $B/bench/hello. Every server it starts listens on
# 127.0.0.1 with a temporary data directory and is stopped by PID at the end.
#
# fanout: one author with TL_FOLLOWERS (10,000) followers posts TL_POSTS (20) times through social's API; for
#   each post, the time from the 201 until the post is on the first page of the last-written follower's home
#   feed (bench/timeline_bench.mjs says how followers are made and what is polled). Twice: the timeline's kv
#   embedded, and on a Redis this script starts (sql and the bus embedded in both, so the kv engine is the
#   difference). In the same run, the raw engine: `kv_bench fanout` sends 10,000 ZADD + ZREMRANGEBYRANK in one
#   hiredis pipeline (one member into each of 10,000 feeds of 100, trimmed back to 100), TL_POSTS rounds,
#   before and after the pulse runs; with it, the same batch through the kv adapter.
# read: wrk -t2 -c100 -d$TL_DURATION (10s) on GET /api/v1/timeline/home and, for scale, GET /api/v1/me (a reader following 3 authors with
#   10 posts each; page of 20, warm cache) between two runs of the bare libmicrohttpd hello world.
#
# Prints the results; paste them into docs/BENCHMARKS.md (section "Timeline").
set -euo pipefail

cd "$(dirname "$0")/.."
B=${B:-build}
WHAT=${1:-all}
FOLLOWERS=${TL_FOLLOWERS:-10000}
POSTS=${TL_POSTS:-20}
DUR=${TL_DURATION:-10s}
case $WHAT in all | fanout | read) ;; *) echo "usage: $0 [fanout|read|all]" >&2; exit 2 ;; esac
for bin in "$B/pulse" "$B/bench/kv_bench" "$B/bench/hello"; do
    [[ -x $bin ]] || { echo "bench: $bin is missing; run: make B=$B bench-fanout" >&2; exit 1; }
done
command -v node >/dev/null || { echo "bench: node is missing" >&2; exit 1; }

log() { printf '[timeline-bench] %s\n' "$*" >&2; }
calc() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; }
kvf() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; } # LINE KEY

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pulse-tlbench.XXXXXX")
chmod 755 "$WORK"
PIDS=()
stop_pid() {
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
    bash scripts/engines.sh stop "$WORK/engines" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_pulse NAME [VAR=VALUE...]: pulse hosting identity, social, timeline and the testkit fixture; sets PORT, PID.
start_pulse() {
    local name=$1 i
    shift
    mkdir -p "$WORK/$name"
    env PULSE_LOG_ACCESS=false PULSE_SERVICE_IDENTITY_ARGON2_M_COST=64KiB PULSE_SERVICE_IDENTITY_ARGON2_T_COST=1 "$@" \
        "$B/pulse" serve --listen 127.0.0.1:0 --data "$WORK/$name" --services identity,social,timeline,testkit \
        2>"$WORK/$name.log" &
    PID=$!
    PIDS+=("$PID")
    PORT=
    for ((i = 0; i < 1000; i++)); do
        PORT=$(grep -o '"msg":"listening".*"port":[0-9]*' "$WORK/$name.log" | grep -o '[0-9]*$' || true)
        [[ -n $PORT ]] && break
        kill -0 "$PID" 2>/dev/null || { cat "$WORK/$name.log" >&2; exit 1; }
        sleep 0.02
    done
    [[ -n $PORT ]] || { echo "bench: pulse ($name) never listened" >&2; exit 1; }
}
stop_server() {
    local keep=() p
    stop_pid "$1"
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# The consumer's own account of each fan-out (log line "fanned out"): median kv_ms and announce_ms.
handler_stats() { # LOGFILE
    grep '"msg":"fanned out"' "$1" | tail -n "$POSTS" | awk -F'"kv_ms":|"announce_ms":|"followers_ms":' '
        { split($2, f, ","); split($3, a, ","); split($4, k, ","); fo[NR] = f[1]; an[NR] = a[1]; kv[NR] = k[1] }
        function med(x, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
                                        return x[int((n + 1) / 2)] }
        END { if (NR) printf "followers_ms=%.1f announce_ms=%.1f kv_ms=%.1f", med(fo, NR), med(an, NR), med(kv, NR) }'
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "# timeline benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), load before: $LOAD_BEFORE, $(nproc) cores"

if [[ $WHAT == all || $WHAT == fanout ]]; then
    bash scripts/engines.sh up redis "$WORK/engines" >/dev/null
    URL=$(sed -n 's/^PULSE_TEST_REDIS_URL=//p' "$WORK/engines/engines.env")
    RPORT=$(sed -n 's|^redis://[^:]*:\([0-9]*\)/.*|\1|p' <<<"$URL")
    log "redis at $URL"

    log "raw Redis fan-out (kv_bench fanout, $POSTS rounds)"
    RAW1=$("$B/bench/kv_bench" fanout --url "$URL" --feeds "$FOLLOWERS" --fill 100 --rounds "$POSTS")
    echo "$RAW1"

    log "pulse, kv embedded: $FOLLOWERS followers, $POSTS posts"
    start_pulse embedded
    EMB=$(node bench/timeline_bench.mjs fanout "http://127.0.0.1:$PORT" "$FOLLOWERS" "$POSTS")
    echo "$EMB $(handler_stats "$WORK/embedded.log") engine=embedded"
    stop_server "$PID"

    log "pulse, kv on Redis: $FOLLOWERS followers, $POSTS posts"
    redis-cli -p "$RPORT" flushall >/dev/null
    start_pulse redis PULSE_SERVICE_TIMELINE_KV="$URL"
    RED=$(node bench/timeline_bench.mjs fanout "http://127.0.0.1:$PORT" "$FOLLOWERS" "$POSTS")
    echo "$RED $(handler_stats "$WORK/redis.log") engine=redis"
    # every feed, not only the polled ones: the last post is in the first and last synthetic follower's feed
    post=$(kvf "$RED" post)
    for fid in 00000000-0000-4000-8000-000000000000 "00000000-0000-4000-8000-$(printf '%012d' $((FOLLOWERS - 4)))"; do
        s=$(redis-cli -p "$RPORT" zscore "timeline:feed:$fid" "$post")
        [[ -n $s ]] || { echo "bench: the post is missing from feed $fid" >&2; exit 1; }
    done
    echo "check: the last post is in synthetic feeds #0 and #$((FOLLOWERS - 4)) (redis ZSCORE); feeds: $(redis-cli -p "$RPORT" --scan --pattern 'timeline:feed:*' | wc -l)"
    stop_server "$PID"

    log "raw Redis fan-out again"
    RAW2=$("$B/bench/kv_bench" fanout --url "$URL" --feeds "$FOLLOWERS" --fill 100 --rounds "$POSTS")
    echo "$RAW2"
    r1=$(grep raw-hiredis <<<"$RAW1"); r2=$(grep raw-hiredis <<<"$RAW2")
    RAWP99=$(calc "($(kvf "$r1" p99_ms) + $(kvf "$r2" p99_ms)) / 2")
    echo "summary: raw redis p99 (mean of the two runs) ${RAWP99} ms; pulse on redis p99 $(kvf "$RED" p99_ms) ms" \
        "= $(calc "$(kvf "$RED" p99_ms) / $RAWP99" 2) x raw (target <= 1.2); pulse embedded p99 $(kvf "$EMB" p99_ms) ms (target < 50)"
fi

if [[ $WHAT == all || $WHAT == read ]]; then
    command -v wrk >/dev/null || { echo "bench: wrk is not installed" >&2; exit 1; }
    THREADS=$("$B/pulse" config 2>/dev/null | awk -F' *= *| *;' '$1 == "server.threads" { print $2 }')
    "$B/bench/hello" "${THREADS:-4}" >"$WORK/hello.out" &
    HPID=$!
    PIDS+=("$HPID")
    for ((i = 0; i < 500; i++)); do
        HPORT=$(grep -o 'listening [0-9]*' "$WORK/hello.out" | grep -o '[0-9]*' || true)
        [[ -n $HPORT ]] && break
        sleep 0.02
    done
    start_pulse read
    TOKEN=$(node bench/timeline_bench.mjs read "http://127.0.0.1:$PORT" | sed -n 's/^TOKEN=//p')
    ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # utime + stime of PID, in clock ticks
    run_wrk() { # NAME SERVER_PID URL [args]: also the server's CPU per request (steadier than rates here)
        local name=$1 spid=$2 url=$3 out t0 t1 n
        shift 3
        t0=$(ticks "$spid")
        out=$(wrk -t2 -c100 -d"$DUR" --latency "$@" "$url")
        t1=$(ticks "$spid")
        n=$(awk '/requests in/ { print $1 }' <<<"$out")
        printf '%s rps=%s p50=%s p99=%s cpu_us_per_req=%s\n' "$name" "$(awk '/Requests\/sec/ { print $2 }' <<<"$out")" \
            "$(awk '$1 == "50%" { print $2 }' <<<"$out")" "$(awk '$1 == "99%" { print $2 }' <<<"$out")" \
            "$(calc "($t1 - $t0) * 1000000 / $(getconf CLK_TCK) / $n" 1)"
        grep -q 'Non-2xx' <<<"$out" && { echo "bench: $name had non-2xx answers" >&2; grep Non-2xx <<<"$out" >&2; exit 1; }
        return 0
    }
    H1=$(run_wrk hello_a "$HPID" "http://127.0.0.1:$HPORT/")
    echo "$H1"
    T=$(run_wrk timeline_home "$PID" "http://127.0.0.1:$PORT/api/v1/timeline/home" -H "Authorization: Bearer $TOKEN")
    echo "$T"
    M=$(run_wrk me "$PID" "http://127.0.0.1:$PORT/api/v1/me" -H "Authorization: Bearer $TOKEN")
    echo "$M"
    H2=$(run_wrk hello_b "$HPID" "http://127.0.0.1:$HPORT/")
    echo "$H2"
    HR=$(calc "($(kvf "$H1" rps) + $(kvf "$H2" rps)) / 2" 0)
    echo "summary: timeline/home $(kvf "$T" rps) req/s = $(calc "$(kvf "$T" rps) / $HR" 2) x hello ($HR req/s; target >= 0.5), p99 $(kvf "$T" p99) (target < 5 ms)"
    curl -s "http://127.0.0.1:$PORT/metrics" | grep 'pulse_cache_requests_total{cache="timeline_' || true
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
