#!/usr/bin/env bash
# bench/pg.sh - relational writes and reads through Pulse on PostgreSQL, next to pgbench on the same
# server in the same run (run by `make bench` and `make bench-pg`).
#
#   B=build bash bench/pg.sh
#
# Starts PostgreSQL 15, Redis and NATS (scripts/engines.sh) in a temporary directory, then:
#
#   writes  pgbench: a 1-row INSERT per transaction (autocommit, -M prepared) into a table shaped like
#           Pulse's outbox, and the same INSERT inside BEGIN/COMMIT (Pulse's shape); Pulse: POST
#           /api/v1/testkit/events (one outbox row in one transaction: the single-row API write) and
#           POST /api/v1/auth/register (users row + outbox row, argon2id at m=64KiB t=1 so that the hash
#           does not hide the database). Same client counts, wrk -t2 / pgbench -j2, rounds interleaved.
#   latency the API write at half of its best rate, open loop (bench/paced.c), next to pgbench -R at
#           the same rate.
#   reads   pgbench -S (scale 1) and a point select on the users table Pulse reads; GET
#           /api/v1/users/{id} warm (L1 hit), with L1 off answered by L2 (Redis), and with L1 off on
#           users not in L2 (every read reaches PostgreSQL: the comparison with pgbench).
#
# CPU per request of the server, of PostgreSQL (postmaster + every backend, from /proc) and of everything
# else on the machine is recorded for every run; the machine is shared, so the ratios (same round, same
# minute) and CPU/request are the numbers to compare, not the absolute rates.
#
# Environment: B (build dir, default build), BENCH_DURATION (seconds per run, default 4),
# BENCH_REPEAT (rounds at 16 clients, default 3; medians), BENCH_PG_BUS (nats, the default, or
# embedded), BENCH_DOCS (default docs/BENCHMARKS.md), BENCH_PG_DOCS=0 to only print, BENCH_REV.
set -euo pipefail

cd "$(dirname "$0")/.."
B=${B:-build}
DUR=${BENCH_DURATION:-4}
DUR=${DUR%s}
REPEAT=${BENCH_REPEAT:-3}
BUS=${BENCH_PG_BUS:-nats}
DOCS=${BENCH_DOCS:-docs/BENCHMARKS.md}
WRITE_DOCS=${BENCH_PG_DOCS:-1}
MAINC=16           # the client count of the repeated rounds (as in TARGETS.md)
OTHERC="1 4"       # writes: one round each
READC=1            # reads: one more round at this client count
HOT=10000          # users read warm / by the pgbench users select
NUSERS=60000       # users seeded; reads past HOT are first reads (not in any cache)

for bin in "$B/pulse" "$B/bench/paced"; do
    [[ -x $bin ]] || { echo "bench: $bin is missing; run: make B=$B bench-pg" >&2; exit 1; }
done
for tool in wrk pgbench psql redis-cli curl awk; do
    command -v $tool >/dev/null || { echo "bench: $tool is not installed" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pulse-pgbench.XXXXXX")
chmod 755 "$WORK" # PostgreSQL runs as its own user (under root) and must reach $WORK/engines
ENG=$WORK/engines
PIDS=()
T_START=$EPOCHREALTIME

log() { printf '[bench-pg] %s\n' "$*" >&2; }
calc() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; } # EXPR [DECIMALS]

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
    if [[ -d $ENG ]]; then bash scripts/engines.sh stop "$ENG" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TCK=$(getconf CLK_TCK)
NPROC=$(nproc)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- CPU accounting ------------------------------------------------------------------------

cpu_ticks_pid() { # utime + stime of PID
    local s
    read -r s <"/proc/$1/stat"
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    echo $((${12} + ${13}))
}
cpu_ticks_all() { # "busy total" ticks of the machine
    local _cpu user nice sys idle iowait irq softirq steal _rest
    read -r _cpu user nice sys idle iowait irq softirq steal _rest </proc/stat
    echo "$((user + nice + sys + irq + softirq + steal)) $((user + nice + sys + idle + iowait + irq + softirq + steal))"
}
# PostgreSQL's CPU: the postmaster's own and reaped children's (exited backends), plus every live
# child's. A backend that exits moves its ticks from the second sum to the first: nothing is lost.
pg_ticks() {
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v pm="$PG_PM" '
        { i = index($0, ") "); split(substr($0, i + 2), f, " ")
          if ($1 == pm) t += f[12] + f[13] + f[14] + f[15]; else if (f[2] == pm) t += f[12] + f[13] }
        END { print t + 0 }'
}

# ---- engines -----------------------------------------------------------------------------

log "load average before: $LOAD_BEFORE; starting PostgreSQL, Redis and NATS in $ENG"
bash scripts/engines.sh start "$ENG" >/dev/null
set -a
# shellcheck disable=SC1091
. "$ENG/engines.env"
set +a
PGPORT=$(cat "$ENG/pg.port")
REDISPORT=$(cat "$ENG/redis.port")
PG_PM=$(head -1 "$ENG/pg/postmaster.pid")
PSQL=(psql -X -q -h 127.0.0.1 -p "$PGPORT" -U pulse -d pulse -v ON_ERROR_STOP=1)
PGB=(pgbench -n -h 127.0.0.1 -p "$PGPORT" -U pulse)
PGVER=$("${PSQL[@]}" -tA -c 'SHOW server_version')
PGSET=$("${PSQL[@]}" -tA -F' ' -c "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name)
    FROM pg_settings WHERE name IN ('shared_buffers', 'synchronous_commit', 'fsync', 'wal_sync_method', 'max_connections')")

# pgbench's tables: the scale-1 TPC-B-like set for -S (built while pulse starts), and a copy of the
# outbox's shape for the inserts.
"${PGB[@]}" -i -s 1 -q -I dtgp pulse >"$WORK/pgbench-init.txt" 2>&1 &
PGBI_PID=$!
"${PSQL[@]}" <<'EOF'
CREATE SCHEMA pgb;
CREATE TABLE pgb.outbox (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT NOT NULL,
    type         TEXT NOT NULL,
    partitionkey TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_ms   BIGINT NOT NULL
);
EOF
# A CloudEvent body of the size Pulse writes for a testkit event (~270 bytes).
BODY='{"specversion":"1.0","id":"01a20178-7782-7551-a4fd-74742125741b","source":"pulse/testkit","type":"pl.testkit.bench_written.v1","subject":"bench-17","time":"2026-11-22T04:16:41.917Z","datacontenttype":"application/json","partitionkey":"bench-17","data":{"seq":0}}'
INSERT="INSERT INTO pgb.outbox (id, type, partitionkey, body, created_ms) VALUES ('01a20178-7782-7551-a4fd-' || lpad(:n::text, 12, '0'), 'pl.testkit.bench_written.v1', 'bench-' || (:n % 1024), '$BODY', :n);"
printf '\\set n random(1, 1000000000)\n%s\n' "$INSERT" >"$WORK/insert.sql"
printf '\\set n random(1, 1000000000)\nBEGIN;\n%s\nCOMMIT;\n' "$INSERT" >"$WORK/insert_tx.sql"
UCOLS="id, email, username, display_name, bio, role, created_at, updated_at, password_hash"
printf '\\set i random(1, %d)\nSELECT %s FROM identity.users WHERE id = %s;\n' "$HOT" "$UCOLS" \
    "'00000000-0000-7000-8000-' || lpad(:i::text, 12, '0')" >"$WORK/users_select.sql"

# ---- pulse ---------------------------------------------------------------------------------

http_ok() { # PORT PATH
    local fd line
    { exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&"$fd"
    IFS= read -r -t 2 line <&"$fd" || line=
    exec {fd}>&-
    [[ $line == "HTTP/1.1 200"* ]]
}

# start_pulse NAME SERVICES [VAR=VALUE...]: sets PORT and PID (0 when it exited at start).
start_pulse() {
    local name=$1 services=$2 logf=$WORK/$1.log i text
    shift 2
    mkdir -p "$WORK/$name"
    : >"$logf"
    env PULSE_LOG_ACCESS=false "$@" "$B/pulse" serve --listen 127.0.0.1:0 --data "$WORK/$name" \
        --services "$services" 2>"$logf" &
    PID=$!
    PORT=
    for ((i = 0; i < 1500; i++)); do
        if [[ -z $PORT ]]; then
            IFS= read -r -d '' text <"$logf" || true
            [[ $text =~ \"msg\":\"listening\"[^$'\n']*\"port\":([0-9]+) ]] && PORT=${BASH_REMATCH[1]}
        fi
        if [[ -n $PORT ]] && http_ok "$PORT" /healthz; then
            PIDS+=("$PID")
            return 0
        fi
        kill -0 "$PID" 2>/dev/null || { wait "$PID" 2>/dev/null || true; PID=0; return 0; }
        sleep 0.02
    done
    cat "$logf" >&2
    echo "bench: pulse ($name) never became ready" >&2
    exit 1
}

ARGON=(PULSE_SERVICE_IDENTITY_ARGON2_M_COST=64KiB PULSE_SERVICE_IDENTITY_ARGON2_T_COST=1)
TTL=(PULSE_SERVICE_IDENTITY_PROFILE_CACHE_TTL=600s)
BUS_NOTE="NATS JetStream (PULSE_BUS_URL)"
BUSENV=()
if [[ $BUS != nats ]]; then
    BUSENV=(PULSE_BUS_URL=)
    BUS_NOTE="the embedded bus (PULSE_BUS_URL unset: BENCH_PG_BUS=$BUS)"
fi
# A: identity + audit + testkit, default caches (writes, warm reads).
start_pulse a identity,audit,testkit "${ARGON[@]}" "${TTL[@]}" "${BUSENV[@]}"
if [[ $PID == 0 && $BUS == nats ]]; then
    log "pulse did not start on NATS ($(tail -1 "$WORK/a.log")); using the embedded bus"
    BUSENV=(PULSE_BUS_URL=)
    BUS_NOTE="the embedded bus (PULSE_BUS_URL unset: pulse did not start on NATS)"
    start_pulse a identity,audit,testkit "${ARGON[@]}" "${TTL[@]}" "${BUSENV[@]}"
fi
[[ $PID != 0 ]] || { cat "$WORK/a.log" >&2; echo "bench: pulse (a) exited at start" >&2; exit 1; }
A_PID=$PID A_PORT=$PORT
# B: identity only, L1 off: profile_cache_size of 1 byte (0 means the 8 MiB default in
# src/store/cache.c; an entry larger than a quarter of the cache is never kept, so nothing is).
start_pulse b identity "${ARGON[@]}" "${TTL[@]}" "${BUSENV[@]}" PULSE_SERVICE_IDENTITY_PROFILE_CACHE_SIZE=1
[[ $PID != 0 ]] || { cat "$WORK/b.log" >&2; echo "bench: pulse (b) exited at start" >&2; exit 1; }
B_PID=$PID B_PORT=$PORT
THREADS=$(env "${ARGON[@]}" "$B/pulse" config 2>/dev/null | awk -F' *= *| *;' '$1 == "server.threads" { print $2 }')
WORKERS=$(env "${ARGON[@]}" "$B/pulse" config 2>/dev/null | awk -F' *= *| *;' '$1 == "server.workers" { print $2 }')
log "pulse A (identity,audit,testkit) on port $A_PORT, B (identity, L1 off) on $B_PORT; bus: $BUS_NOTE"

wait "$PGBI_PID" || { cat "$WORK/pgbench-init.txt" >&2; echo "bench: pgbench -i failed" >&2; exit 1; }
# Seeded users (the password hash is a well-formed dummy: nobody logs in as them).
"${PSQL[@]}" <<EOF
INSERT INTO identity.users ($UCOLS)
SELECT '00000000-0000-7000-8000-' || lpad(i::text, 12, '0'), 'seed' || i || '@example.com', 'seed' || i,
       'Seed User ' || i, '', 'student', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z',
       '\$argon2id\$v=19\$m=65536,t=1,p=1\$c2VlZHNlZWRzZWVkc2VlZA\$' || md5(i::text) || md5(i::text || 'x')
FROM generate_series(1, $NUSERS) AS i;
ANALYZE identity.users;
ANALYZE pgbench_accounts;
EOF
curl -sf "http://127.0.0.1:$A_PORT/api/v1/users/00000000-0000-7000-8000-000000000001" >/dev/null ||
    { echo "bench: a seeded user cannot be read through the API" >&2; exit 1; }
curl -sf -X POST "http://127.0.0.1:$A_PORT/api/v1/testkit/events" -H 'Content-Type: application/json' \
    -d '{"type":"pl.testkit.bench_written.v1","subject":"bench-0"}' >/dev/null ||
    { echo "bench: POST /api/v1/testkit/events failed" >&2; exit 1; }
log "seeded $NUSERS users; setup took $(calc "${EPOCHREALTIME/./} / 1e6 - ${T_START/./} / 1e6" 1) s"

# ---- runs ----------------------------------------------------------------------------------

to_ms() { # "686.00us" / "1.30ms" / "2.00s" -> milliseconds
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.2f", n }'
}
# "X/Y" LSN -> bytes
lsn_bytes() { local hi=${1%/*} lo=${1#*/}; echo $(((16#$hi << 32) + 16#$lo)); }
pg_marks() { # "wal_bytes next_xid"
    local l x
    read -r l x < <("${PSQL[@]}" -tA -F' ' -c 'SELECT pg_current_wal_insert_lsn(), pg_snapshot_xmax(pg_current_snapshot())')
    echo "$(lsn_bytes "$l") $x"
}

declare -A RATE AVG P50 P99 ERRS PGUS SRVUS CLIUS OTHER WALB XIDS CONNS LOAD1 HITS
TOTAL=0 # requests/transactions of the run just measured

# measure_begin / measure_end SERVER_PID KEY: CPU of PostgreSQL, the server (0: none) and the
# machine around a run; the client's own CPU comes from `time`.
measure_begin() {
    M_PG0=$(pg_ticks)
    M_SRV0=0
    [[ $1 != 0 ]] && M_SRV0=$(cpu_ticks_pid "$1")
    read -r M_BUSY0 M_TOT0 < <(cpu_ticks_all)
    read -r M_WAL0 M_XID0 < <(pg_marks)
    M_LOAD=$(cut -d' ' -f1 /proc/loadavg)
}
measure_end() { # SERVER_PID KEY CLIENT_TIME_FILE
    local spid=$1 key=$2 pg1 srv1=0 busy1 tot1 wal1 xid1 cu cs
    read -r busy1 tot1 < <(cpu_ticks_all)
    pg1=$(pg_ticks)
    [[ $spid != 0 ]] && srv1=$(cpu_ticks_pid "$spid")
    read -r wal1 xid1 < <(pg_marks)
    read -r cu cs <"$3"
    local n=${TOTAL:-0}
    ((n > 0)) || n=1
    PGUS[$key]=$(calc "($pg1 - $M_PG0) / $TCK * 1e6 / $n" 0)
    SRVUS[$key]=$(calc "($srv1 - $M_SRV0) / $TCK * 1e6 / $n" 0)
    CLIUS[$key]=$(calc "($cu + $cs) * 1e6 / $n" 0)
    local elapsed
    elapsed=$(calc "($tot1 - $M_TOT0) / $NPROC / $TCK" 3)
    OTHER[$key]=$(calc "(($busy1 - $M_BUSY0) / $TCK - ($pg1 - $M_PG0) / $TCK - ($srv1 - $M_SRV0) / $TCK - $cu - $cs) / $elapsed" 2)
    WALB[$key]=$(calc "($wal1 - $M_WAL0) / $n" 0)
    XIDS[$key]=$(calc "($xid1 - $M_XID0) / $n" 2)
    LOAD1[$key]=$M_LOAD
}

# pgb KEY CONNS [pgbench args]: one pgbench run (-T DUR, -j up to 2, per-transaction log for percentiles).
pgb() {
    local key=$1 c=$2
    shift 2
    local out=$WORK/pgb-$key.txt tfile=$WORK/pgb-$key.time j=$((c < 2 ? c : 2))
    rm -f "$WORK"/pgblog-"$key".*
    measure_begin 0
    local TIMEFORMAT='%3U %3S'
    { time "${PGB[@]}" -c "$c" -j "$j" -T "$DUR" -M prepared -l --log-prefix="$WORK/pgblog-$key" "$@" pulse \
        >"$out" 2>&1; } 2>"$tfile" || { cat "$out" >&2; echo "bench: pgbench $key failed" >&2; exit 1; }
    TOTAL=$(awk '/number of transactions actually processed:/ { print $NF }' "$out")
    measure_end 0 "$key" "$tfile"
    RATE[$key]=$(awk '/^tps = / { printf "%.0f", $3 }' "$out")
    AVG[$key]=$(awk '/^latency average = / { printf "%.2f", $4 }' "$out")
    # column 3 of pgbench's log is the transaction's latency in µs (from its scheduled start under -R)
    read -r P50[$key] P99[$key] < <(cat "$WORK"/pgblog-"$key".* | awk '{ print $3 }' | sort -n |
        awk '{ a[NR] = $1 } END { if (!NR) { print "0 0"; exit }
              printf "%.2f %.2f\n", a[int((NR - 1) * 0.50) + 1] / 1000, a[int((NR - 1) * 0.99) + 1] / 1000 }')
    rm -f "$WORK"/pgblog-"$key".*
    ERRS[$key]=$(awk '/number of failed transactions:/ { if ($5 + 0) print $5 " failed" }' "$out")
    CONNS[$key]=$c
    log "  $key: pgbench -c$c $(printf '%s ' "$@" | sed "s|$WORK/||g")→ ${RATE[$key]} tps, avg ${AVG[$key]} p50 ${P50[$key]} p99 ${P99[$key]} ms; PG ${PGUS[$key]} µs/txn, WAL ${WALB[$key]} B/txn, other load ${OTHER[$key]}"
}

# api KEY SERVER_PID CONNS URL [wrk args]: one wrk run; waits 1 s after it so that the events it
# caused are relayed and consumed inside the CPU measurement.
api() {
    local key=$1 spid=$2 c=$3 url=$4
    shift 4
    local out=$WORK/wrk-$key.txt tfile=$WORK/wrk-$key.time
    measure_begin "$spid"
    local TIMEFORMAT='%3U %3S'
    { time wrk -t$((c < 2 ? c : 2)) -c"$c" -d"${DUR}s" --latency --timeout 10s "$url" "$@" >"$out" 2>&1; } 2>"$tfile"
    [[ $url == *testkit* || $url == *register* ]] && sleep 1
    TOTAL=$(awk '/ requests in / { print $1 }' "$out")
    [[ -n $TOTAL ]] || { cat "$out" >&2; echo "bench: wrk $key failed" >&2; exit 1; }
    measure_end "$spid" "$key" "$tfile"
    RATE[$key]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    AVG[$key]=$(to_ms "$(awk '$1 == "Latency" { print $2; exit }' "$out")")
    P50[$key]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    P99[$key]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    local non2xx sockerr
    non2xx=$(awk -F': ' '/Non-2xx or 3xx responses/ { print $2 }' "$out")
    sockerr=$(awk '/Socket errors:/ { sub(/.*Socket errors: /, ""); print }' "$out")
    ERRS[$key]=
    [[ -n $non2xx ]] && ERRS[$key]="non-2xx $non2xx"
    [[ -n $sockerr ]] && ERRS[$key]="${ERRS[$key]:+${ERRS[$key]}; }socket $sockerr"
    CONNS[$key]=$c
    log "  $key: wrk -c$c → ${RATE[$key]} req/s, avg ${AVG[$key]} p50 ${P50[$key]} p99 ${P99[$key]} ms; server ${SRVUS[$key]} + PG ${PGUS[$key]} µs/req, WAL ${WALB[$key]} B/req, other load ${OTHER[$key]}${ERRS[$key]:+ (${ERRS[$key]})}"
}

cache_counts() { # PORT -> "l1 l2 miss" of the profiles cache
    curl -s "http://127.0.0.1:$1/metrics" | awk -F'[ "]' '/^pulse_cache_requests_total\{cache="profiles"/ {
        for (i = 1; i <= NF; i++) if ($i ~ /result=$/) r = $(i + 1); v[r] = $NF }
        END { print v["l1_hit"] + 0, v["l2_hit"] + 0, v["miss"] + 0 }'
}
# api_read KEY PORT PID CONNS [pg_read.lua args]: a read run and which cache layer answered it.
api_read() {
    local key=$1 port=$2 pid=$3 c=$4 l1a l2a ma l1b l2b mb
    shift 4
    read -r l1a l2a ma < <(cache_counts "$port")
    api "$key" "$pid" "$c" "http://127.0.0.1:$port" -s bench/pg_read.lua -- "$@"
    read -r l1b l2b mb < <(cache_counts "$port")
    local n=$(((l1b - l1a) + (l2b - l2a) + (mb - ma)))
    ((n > 0)) || n=1
    HITS[$key]="L1 $(calc "100 * ($l1b - $l1a) / $n" 0)%, L2 $(calc "100 * ($l2b - $l2a) / $n" 0)%, PostgreSQL $(calc "100 * ($mb - $ma) / $n" 0)%"
    log "    answered by: ${HITS[$key]}"
}
drop_l2() { # the profiles cache's L2 entries (Redis)
    redis-cli -p "$REDISPORT" EVAL "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('UNLINK', k) n = n + 1 end return n" 0 '*cache:profiles:*' >/dev/null
}

A_URL=http://127.0.0.1:$A_PORT
W_ARGS=(-s bench/pg_write.lua)

# ---- writes --------------------------------------------------------------------------------

log "writes: pgbench 1-row INSERT vs POST testkit/events vs POST auth/register, ${DUR}s per run"
for ((r = 1; r <= REPEAT; r++)); do
    pgb "ins_${MAINC}_$r" $MAINC -f "$WORK/insert.sql"
    api "tk_${MAINC}_$r" "$A_PID" $MAINC "$A_URL/api/v1/testkit/events" "${W_ARGS[@]}"
    api "reg_${MAINC}_$r" "$A_PID" $MAINC "$A_URL/api/v1/auth/register" -s bench/pg_register.lua -- "r${r}c$MAINC"
done
pgb "instx_$MAINC" $MAINC -f "$WORK/insert_tx.sql"
for c in $OTHERC; do
    pgb "ins_${c}_1" "$c" -f "$WORK/insert.sql"
    api "tk_${c}_1" "$A_PID" "$c" "$A_URL/api/v1/testkit/events" "${W_ARGS[@]}"
done

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
med_of() { # PREFIX FIELD-ARRAY-NAME -> median over rounds 1..REPEAT
    local -n arr=$2
    local v=() r
    for ((r = 1; r <= REPEAT; r++)); do v+=("${arr[${1}_$r]}"); done
    median "${v[@]}"
}
ratio_med() { # A_PREFIX B_PREFIX -> median over rounds of RATE[a_r] / RATE[b_r]
    local v=() r
    for ((r = 1; r <= REPEAT; r++)); do v+=("$(calc "${RATE[${1}_$r]} / ${RATE[${2}_$r]}" 3)"); done
    median "${v[@]}"
}
ratios_list() { # A_PREFIX B_PREFIX -> "0.31, 0.29, 0.33"
    local v=() r
    for ((r = 1; r <= REPEAT; r++)); do v+=("$(calc "${RATE[${1}_$r]} / ${RATE[${2}_$r]}" 2)"); done
    local IFS=,
    echo "${v[*]}" | sed 's/,/, /g'
}

TK_MED=$(med_of "tk_$MAINC" RATE)
REG_MED=$(med_of "reg_$MAINC" RATE)
INS_MED=$(med_of "ins_$MAINC" RATE)
TK_RATIO=$(ratio_med "tk_$MAINC" "ins_$MAINC")
REG_RATIO=$(ratio_med "reg_$MAINC" "ins_$MAINC")
TK_BEST=$TK_MED
for c in $OTHERC; do
    awk "BEGIN { exit !(${RATE[tk_${c}_1]} > $TK_BEST) }" && TK_BEST=${RATE[tk_${c}_1]}
done
log "write ratios at $MAINC clients (median of $REPEAT): testkit/pgbench $TK_RATIO, register/pgbench $REG_RATIO"

# ---- latency at half load ------------------------------------------------------------------

HALF=$(calc "$TK_BEST / 2" 0)
REG_HALF=$(calc "$REG_MED / 2" 0)
paced() { # KEY PID PORT PATH BODY RATE CONNS
    local key=$1 spid=$2 port=$3 path=$4 body=$5 rate=$6 c=$7 out=$WORK/paced-$1.txt tfile=$WORK/paced-$1.time
    measure_begin "$spid"
    local TIMEFORMAT='%3U %3S'
    { time "$B/bench/paced" "$port" POST "$path" "$body" "$rate" "$DUR" "$c" >"$out" 2>&1; } 2>"$tfile" || true
    sleep 1
    kvget() { tr ' ' '\n' <"$out" | awk -F= -v k="$1" '$1 == k { print $2 }'; }
    TOTAL=$(kvget ok)
    [[ -n $TOTAL ]] || { cat "$out" >&2; echo "bench: paced $key failed" >&2; exit 1; }
    measure_end "$spid" "$key" "$tfile"
    RATE[$key]=$(kvget rate)
    AVG[$key]=$(calc "$(kvget avg_ms)" 2)
    P50[$key]=$(calc "$(kvget p50_ms)" 2)
    P99[$key]=$(calc "$(kvget p99_ms)" 2)
    ERRS[$key]=$(kvget errors)
    [[ ${ERRS[$key]} == 0 ]] && ERRS[$key]=
    CONNS[$key]=$c
    log "  $key: $rate/s offered → ${RATE[$key]}/s, avg ${AVG[$key]} p50 ${P50[$key]} p99 ${P99[$key]} ms (service avg $(kvget service_avg_ms) ms)${ERRS[$key]:+ (errors ${ERRS[$key]})}"
}
log "latency: API write at $HALF/s (half its best rate), pgbench -R at the same rate"
paced lat_tk "$A_PID" "$A_PORT" /api/v1/testkit/events \
    '{"type":"pl.testkit.bench_written.v1","subject":"bench-%n"}' "$HALF" $MAINC
pgb lat_ins $MAINC -R "$HALF" -f "$WORK/insert.sql"
paced lat_reg "$A_PID" "$A_PORT" /api/v1/auth/register \
    '{"email":"lat_%n@example.com","username":"lat_%n","password":"bench-password-1234","display_name":"Lat %n"}' \
    "$REG_HALF" $MAINC

# ---- reads ---------------------------------------------------------------------------------

log "reads: warming $HOT users in A's L1 and in L2"
wrk -t2 -c$MAINC -d3s -s bench/pg_read.lua "http://127.0.0.1:$A_PORT" -- seq 1 $HOT 2 >/dev/null
wrk -t2 -c$MAINC -d2s -s bench/pg_read.lua "http://127.0.0.1:$A_PORT" -- random 1 $HOT >/dev/null
log "reads: pgbench -S, pgbench users select, API warm (L1), API with L1 off on users not in L2 (PostgreSQL)"
COLD_LO=$((HOT + 1))
for ((r = 1; r <= REPEAT; r++)); do
    pgb "sel_${MAINC}_$r" $MAINC -S --sampling-rate=0.1
    pgb "usel_${MAINC}_$r" $MAINC -f "$WORK/users_select.sql" --sampling-rate=0.1
    api_read "warm_${MAINC}_$r" "$A_PORT" "$A_PID" $MAINC random 1 $HOT
    drop_l2
    api_read "cold_${MAINC}_$r" "$B_PORT" "$B_PID" $MAINC seq "$COLD_LO" "$NUSERS" 2
done
for c in $READC; do
    pgb "sel_${c}_1" "$c" -S --sampling-rate=0.1
    pgb "usel_${c}_1" "$c" -f "$WORK/users_select.sql" --sampling-rate=0.1
    api_read "warm_${c}_1" "$A_PORT" "$A_PID" "$c" random 1 $HOT
    drop_l2
    api_read "cold_${c}_1" "$B_PORT" "$B_PID" "$c" seq "$COLD_LO" "$NUSERS" 2
done
# L1 off, answered by L2: the hot users, put in Redis by one pass first.
drop_l2
wrk -t2 -c$MAINC -d2s -s bench/pg_read.lua "http://127.0.0.1:$B_PORT" -- seq 1 $HOT 2 >/dev/null
api_read "l2_${MAINC}_1" "$B_PORT" "$B_PID" $MAINC random 1 $HOT

SEL_RATIO=$(ratio_med "cold_$MAINC" "sel_$MAINC")
USEL_RATIO=$(ratio_med "cold_$MAINC" "usel_$MAINC")
WARM_RATIO=$(ratio_med "warm_$MAINC" "usel_$MAINC")

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(calc "${EPOCHREALTIME/./} / 1e6 - ${T_START/./} / 1e6" 0)
log "reads at $MAINC clients (median of $REPEAT): API via PostgreSQL / pgbench -S $SEL_RATIO, / users select $USEL_RATIO; warm / users select $WARM_RATIO"
log "load average after: $LOAD_AFTER; the whole run took $ELAPSED s"

[[ $WRITE_DOCS == 1 ]] || exit 0

# ---- docs/BENCHMARKS.md --------------------------------------------------------------------

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
met() { awk "BEGIN { exit !($1) }" && echo "met" || echo "**not met**"; }
pct() { calc "100 * $1" 0; }

row() { # KEY LABEL [RATIO]
    local k=$1
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" "${CONNS[$k]}" "${RATE[$k]}" \
        "${AVG[$k]}" "${P50[$k]}" "${P99[$k]}" "${3:-}" "${SRVUS[$k]}" "${PGUS[$k]}" "${WALB[$k]}" "${LOAD1[$k]}" \
        "${OTHER[$k]}${ERRS[$k]:+ (${ERRS[$k]})}"
}
HEAD='| run | clients | per s | avg ms | p50 ms | p99 ms | vs pgbench | server µs/req | PostgreSQL µs/req | WAL B/req | load 1m | other load |'
SEP='|---|---|---|---|---|---|---|---|---|---|---|---|'
rr() { calc "${RATE[$1]} / ${RATE[$2]}" 2; }

SECTION=$WORK/section.md
{
    echo "<!-- bench-pg $DATE -->"
    echo "## Relational writes and reads on PostgreSQL, $DATE"
    echo
    echo "\`make bench-pg\` (here: \`B=$B bash bench/pg.sh\`; also run by \`make bench\`), $DATE $TIME UTC, code: commit $COMMIT."
    echo
    echo "Machine: $NPROC × $CPU, $MEM RAM, Linux $(uname -r). PostgreSQL $PGVER on 127.0.0.1 (scripts/engines.sh:"
    echo "$PGSET), Redis and NATS on the same machine; bus: $BUS_NOTE. Pulse: $THREADS HTTP threads, $WORKERS workers"
    echo "(registration's hashing), sql pool of 20 per service. Load average (1/5/15 min) before: $LOAD_BEFORE; after: $LOAD_AFTER."
    echo "The machine is shared with other engineers' builds and tests: *load 1m* is the load average when the run"
    echo "started and *other load* the CPU (cores) that everything but PostgreSQL, Pulse and the load generator used"
    echo "during it. Each run lasts ${DUR} s; the $MAINC-client runs are repeated $REPEAT times, interleaved (pgbench, API,"
    echo "pgbench, API, ...), and ratios are taken within a round, then the median. *server µs/req* is Pulse's CPU per"
    echo "request (all threads: HTTP, relay, consumers), *PostgreSQL µs/req* that of the postmaster and all backends, both"
    echo "counted until 1 s after the run so that the events a write caused are relayed and consumed inside it;"
    echo "*WAL B/req* is WAL written per request. Whole run: $ELAPSED s."
    echo
    echo "### Single-row writes"
    echo
    echo "- **pgbench INSERT**: \`pgbench -M prepared -j2\`, one autocommit \`INSERT\` of one ~270-byte row into a"
    echo "  table shaped like Pulse's outbox (\`pgb.outbox\`). **pgbench BEGIN+INSERT+COMMIT**: the same inside an explicit"
    echo "  transaction (three round trips; Pulse's driver sends the BEGIN with the INSERT: two)."
    echo "- **API event write**: \`POST /api/v1/testkit/events\` (testkit fixture service; \`bench/pg_write.lua\`):"
    echo "  one outbox row in one transaction, the single-row write through the whole API (HTTP, JSON, sql pool, commit)."
    echo "  Its event is then relayed to the bus and applied by testkit's two consumers (an effects row and a tally"
    echo "  upsert, each with its inbox row) in the same process: their cost is in the CPU and WAL columns."
    echo "- **API registration**: \`POST /api/v1/auth/register\` (\`bench/pg_register.lua\`) with"
    echo "  \`PULSE_SERVICE_IDENTITY_ARGON2_M_COST=64KiB\`, \`_T_COST=1\` (a ~0.1 ms hash instead of tens of ms):"
    echo "  two uniqueness reads, the users row and the outbox row in one transaction, on the $WORKERS worker threads."
    echo
    echo "$HEAD"
    echo "$SEP"
    for ((r = 1; r <= REPEAT; r++)); do
        row "ins_${MAINC}_$r" "pgbench INSERT, round $r" "1.00"
        row "tk_${MAINC}_$r" "API event write, round $r" "$(rr "tk_${MAINC}_$r" "ins_${MAINC}_$r")"
        row "reg_${MAINC}_$r" "API registration, round $r" "$(rr "reg_${MAINC}_$r" "ins_${MAINC}_$r")"
    done
    row "instx_$MAINC" "pgbench BEGIN+INSERT+COMMIT" "$(rr "instx_$MAINC" "ins_${MAINC}_$REPEAT")"
    for c in $OTHERC; do
        row "ins_${c}_1" "pgbench INSERT" "1.00"
        row "tk_${c}_1" "API event write" "$(rr "tk_${c}_1" "ins_${c}_1")"
    done
    echo
    echo "Latency at a fixed rate, open loop: \`bench/paced.c\` (wrk2 is not packaged in Debian; it sends request *i* at"
    echo "*t0 + i/rate* on $MAINC keep-alive connections and counts latency from that due time, so a stall is not"
    echo "hidden by a slower send) and \`pgbench -R\` at the same rate (its latency also counts from the scheduled start)."
    echo "Rate: half of the API event write's best rate above ($TK_BEST/s); registration at half its median ($REG_MED/s)."
    echo
    echo "$HEAD"
    echo "$SEP"
    row lat_ins "pgbench INSERT -R $HALF" ""
    row lat_tk "API event write at $HALF/s" ""
    row lat_reg "API registration at $REG_HALF/s" ""
    echo
    echo "At a fixed, lower rate each transaction costs more CPU than at full load (fewer commits share an fsync,"
    echo "every request is a wake-up of its own); pgbench's PostgreSQL figure also includes starting its $MAINC backends."
    echo
    echo "### Point reads"
    echo
    echo "- **pgbench -S**: the built-in select-only script on a scale-1 database (primary key of \`pgbench_accounts\`)."
    echo "- **pgbench users select**: \`SELECT $UCOLS FROM identity.users WHERE id = \$1\`, the statement Pulse runs, over"
    echo "  $HOT of the $NUSERS seeded users."
    echo "- **API warm**: \`GET /api/v1/users/{id}\` (\`bench/pg_read.lua\`) over the same $HOT users, all in L1: PostgreSQL is"
    echo "  not involved."
    echo "- **API, L1 off, L2 hit**: a second Pulse with \`PULSE_SERVICE_IDENTITY_PROFILE_CACHE_SIZE=1\` (0 means the default"
    echo "  8 MiB in src/store/cache.c; a 1-byte cache keeps nothing), answered by L2 (Redis)."
    echo "- **API via PostgreSQL**: the same L1-off Pulse reading users that are in no cache (each wrk thread walks its"
    echo "  own ids, L2 emptied before the run): every read is an L2 miss (one Redis GET), the select on PostgreSQL (one round trip:"
    echo "  a read transaction sends no BEGIN/ROLLBACK) and an L2 fill (one Redis SET). This is the row to hold against pgbench."
    echo
    echo "| run | clients | per s | avg ms | p50 ms | p99 ms | vs pgbench -S / users select | server µs/req | PostgreSQL µs/req | answered by | load 1m | other load |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    rrow() { # KEY LABEL SEL_KEY USEL_KEY
        local k=$1
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" "${CONNS[$k]}" "${RATE[$k]}" \
            "${AVG[$k]}" "${P50[$k]}" "${P99[$k]}" "${3:+$(rr "$k" "$3") / $(rr "$k" "$4")}" "${SRVUS[$k]}" \
            "${PGUS[$k]}" "${HITS[$k]:-}" "${LOAD1[$k]}" "${OTHER[$k]}${ERRS[$k]:+ (${ERRS[$k]})}"
    }
    for ((r = 1; r <= REPEAT; r++)); do
        rrow "sel_${MAINC}_$r" "pgbench -S, round $r"
        rrow "usel_${MAINC}_$r" "pgbench users select, round $r"
        rrow "warm_${MAINC}_$r" "API warm (L1), round $r" "sel_${MAINC}_$r" "usel_${MAINC}_$r"
        rrow "cold_${MAINC}_$r" "API via PostgreSQL, round $r" "sel_${MAINC}_$r" "usel_${MAINC}_$r"
    done
    rrow "l2_${MAINC}_1" "API, L1 off, L2 hit" "sel_${MAINC}_$REPEAT" "usel_${MAINC}_$REPEAT"
    for c in $READC; do
        rrow "sel_${c}_1" "pgbench -S"
        rrow "usel_${c}_1" "pgbench users select"
        rrow "warm_${c}_1" "API warm (L1)" "sel_${c}_1" "usel_${c}_1"
        rrow "cold_${c}_1" "API via PostgreSQL" "sel_${c}_1" "usel_${c}_1"
    done
    echo
    echo "### Against the targets"
    echo
    echo "- Single-row API write ≥ 50% of pgbench's 1-row INSERT in the same run: event write **$(pct "$TK_RATIO")%**"
    echo "  (median of rounds $(ratios_list "tk_$MAINC" "ins_$MAINC"); $TK_MED/s against $INS_MED tps at $MAINC clients):"
    echo "  $(met "$TK_RATIO >= 0.5"). Registration: **$(pct "$REG_RATIO")%** ($(ratios_list "reg_$MAINC" "ins_$MAINC")): $(met "$REG_RATIO >= 0.5")."
    echo "- Average < 2 ms at half that load: event write avg ${AVG[lat_tk]} ms (p99 ${P99[lat_tk]}) at ${RATE[lat_tk]}/s: $(met "${AVG[lat_tk]} < 2");"
    echo "  pgbench at the same rate: avg ${AVG[lat_ins]} ms. Registration at ${RATE[lat_reg]}/s: avg ${AVG[lat_reg]} ms: $(met "${AVG[lat_reg]} < 2")."
    WARM_P99=$(med_of "warm_$MAINC" P99) COLD_P99=$(med_of "cold_$MAINC" P99)
    echo "- Reads p99 < 5 ms (median p99 at $MAINC clients): warm $WARM_P99 ms: $(met "$WARM_P99 < 5"); via PostgreSQL"
    echo "  $COLD_P99 ms: $(met "$COLD_P99 < 5")."
    echo "- A read that reaches PostgreSQL runs at $(pct "$SEL_RATIO")% of pgbench -S and $(pct "$USEL_RATIO")% of the same select"
    echo "  through pgbench; a warm read at $(pct "$WARM_RATIO")% of that select (median ratios at $MAINC clients)."
    echo
    echo "### Reading"
    echo
    TK_CPU=$(calc "$(med_of "tk_$MAINC" SRVUS) + $(med_of "tk_$MAINC" PGUS)" 0)
    INS_CPU=$(med_of "ins_$MAINC" PGUS)
    echo "- CPU is what bounds every rate here (2 cores for PostgreSQL, Pulse, NATS, Redis, the load generator and"
    echo "  other people's work), so the cost per request explains the ratios better than the noisy rates do:"
    echo "  an API event write costs $(med_of "tk_$MAINC" SRVUS) µs of Pulse and $(med_of "tk_$MAINC" PGUS) µs of PostgreSQL"
    echo "  ($TK_CPU µs), a pgbench INSERT $INS_CPU µs of PostgreSQL (medians at $MAINC clients): $(calc "$TK_CPU / $INS_CPU" 1)×."
    echo "  It writes $(calc "$(med_of "tk_$MAINC" WALB) / $(med_of "ins_$MAINC" WALB)" 1)× the WAL ($(med_of "tk_$MAINC" WALB) B against $(med_of "ins_$MAINC" WALB) B) because one"
    echo "  API write is not one row in the end: its outbox row is read and deleted by the relay, and each of testkit's"
    echo "  two consumers writes its inbox row and its own row (effects; tally upsert) under a savepoint per event."
    echo "- Round trips to PostgreSQL per API event write (src/store/postgres/sql_pg.c pipelines BEGIN with the first"
    echo "  statement and savepoint commands with the next one): the request's transaction 2 (BEGIN+INSERT, COMMIT);"
    echo "  each consumer 2 per event (SAVEPOINT+inbox INSERT, the handler's statement; RELEASE goes with the next"
    echo "  event or the COMMIT) plus one COMMIT per batch; the relay one SELECT per batch and one DELETE per"
    echo "  100 ms. About 6 per write against pgbench's 1, each a wake-up of both processes on this VM."
    echo "- Registration adds two uniqueness reads and the users row to the same transaction (5 round trips) and"
    echo "  runs on $WORKERS worker threads: $(med_of "reg_$MAINC" SRVUS) µs of Pulse and $(med_of "reg_$MAINC" PGUS) µs of PostgreSQL per account."
    echo "- A read that reaches PostgreSQL is one round trip (a read transaction sends no BEGIN/ROLLBACK) between an"
    echo "  L2 GET and an L2 SET to Redis: $(med_of "cold_$MAINC" SRVUS) µs of Pulse and $(med_of "cold_$MAINC" PGUS) µs of PostgreSQL"
    echo "  per read against $(med_of "usel_$MAINC" PGUS) µs for pgbench's select. Warm reads never reach PostgreSQL"
    echo "  ($(med_of "warm_$MAINC" SRVUS) µs of Pulse each)."
    echo "<!-- /bench-pg -->"
} >"$SECTION"

if [[ ! -f $DOCS ]]; then
    mkdir -p "$(dirname "$DOCS")"
    printf '# Benchmarks\n\nResults of `make bench`, newest runs last.\n\n' >"$DOCS"
fi
# Replace today's section of this benchmark if there is one (in place), else append it; other
# sections stay as they are.
awk -v date="$DATE" -v sect="$SECTION" '
    function emit(   line) { while ((getline line < sect) > 0) print line; close(sect); done = 1 }
    $0 == "<!-- bench-pg " date " -->" { skip = 1; emit(); next }
    skip && $0 == "<!-- /bench-pg -->" { skip = 0; next }
    skip { next }
    { print }
    END { if (!done) { print ""; emit() } }
' "$DOCS" >"$WORK/docs.md"
sed -e ':a' -e '/^\n*$/{$d;N;ba' -e '}' "$WORK/docs.md" >"$DOCS"
log "wrote the $DATE PostgreSQL section of $DOCS"
