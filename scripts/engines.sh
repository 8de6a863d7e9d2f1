#!/usr/bin/env bash
# engines.sh - local PostgreSQL 15, Redis and NATS JetStream for development and tests.
#
#   scripts/engines.sh start   [DIR]   start whatever is not running, wait until ready, print the URLs
#   scripts/engines.sh stop    [DIR]   stop every engine by its recorded PID (works if one already died)
#   scripts/engines.sh status  [DIR]   what runs where; exit 1 when an engine is down
#   scripts/engines.sh env     [DIR]   print DIR/engines.env
#   scripts/engines.sh up|down|restart pg|redis|nats [DIR]
#                                      one engine, same port and data (for fault tests)
#
# DIR defaults to ./.engines. It holds everything: data, sockets, logs, PIDs, ports and the two files
# clients read: DIR/engines.env (KEY=VALUE lines; `set -a; . DIR/engines.env; set +a`) and DIR/pulse.ini
# (the configuration shape of DESIGN.md §5: `pulse serve --config DIR/pulse.ini`).
#
# Engines come from Debian packages (scripts/setup.sh installs them); nothing is installed here. Every
# server listens on 127.0.0.1 only, on a port that was free when it started, and is stopped by the PID
# recorded at start. PostgreSQL refuses to run as root, so under root initdb and pg_ctl run as the
# `postgres` system user and the directories it writes are handed to it.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
ENGINES=(pg redis nats)

die() { echo "engines: $*" >&2; exit 1; }
say() { echo "engines: $*" >&2; }

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# ---- helpers -------------------------------------------------------------------------------------

is_root() { [ "$(id -u)" -eq 0 ]; }

# Runs a command as the user PostgreSQL runs as.
as_pg() {
    if is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Makes a directory that PostgreSQL's user owns (0700: initdb insists).
pg_dir() {
    mkdir -p "$1"
    if is_root; then chown postgres:postgres "$1"; fi
    chmod 700 "$1"
}

# True when PID is alive (a zombie is not) and is the program we started (PIDs get reused).
pid_is() {
    local pid=$1 comm=$2 state
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] || return 1
    state=$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "/proc/$pid/status" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

comm_of() {
    case $1 in
        pg) echo postgres ;;
        redis) echo redis-server ;;
        nats) echo nats-server ;;
    esac
}

# Closes every descriptor above 2 in the current (sub)shell, so that servers do not inherit our
# lock or a caller's pipe (a caller waiting for EOF on that pipe would wait forever).
close_fds() {
    local fd
    for fd in $(ls "/proc/$BASHPID/fd"); do
        [ "$fd" -gt 2 ] && eval "exec $fd>&-"
    done
    return 0
}

# Starts "$@" in the background in its own session with no inherited descriptors; $! is its PID.
spawn() {
    (close_fds; exec setsid "$@") </dev/null >/dev/null 2>&1 &
}

read_file() { [ -r "$1" ] && head -n1 "$1" 2>/dev/null || true; }

pid_of() { read_file "$D/$1.pid"; }
port_of() { read_file "$D/$1.port"; }

running() {
    local pid
    pid=$(pid_of "$1")
    pid_is "$pid" "$(comm_of "$1")"
}

port_busy() {
    if command -v ss >/dev/null 2>&1; then
        [ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# A port nobody listens on, not one of ours, from the range below the kernel's ephemeral ports.
free_port() {
    local p i taken
    taken=" $(cat "$D"/*.port 2>/dev/null | tr '\n' ' ') "
    for i in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        case $taken in *" $p "*) continue ;; esac
        if ! port_busy "$p"; then
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# The recorded port when it is still free, else a new one (recorded).
pick_port() {
    local name=$1 p
    p=$(port_of "$name")
    if [ -z "$p" ] || port_busy "$p"; then
        [ -n "$p" ] && say "$name: port $p is taken by another program; choosing another"
        p=$(free_port)
    fi
    echo "$p" >"$D/$name.port"
    echo "$p"
}

# Waits (up to $2 tenths of a second) for command $3... to succeed while PID $1 lives.
wait_for() {
    local pid=$1 tenths=$2
    shift 2
    local i
    for ((i = 0; i < tenths; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Sends SIG to PID and waits up to TENTHS for it to exit; then SIGKILL.
stop_pid() {
    local pid=$1 comm=$2 sig=$3 tenths=$4 i
    pid_is "$pid" "$comm" || return 0
    kill "-$sig" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < tenths; i++)); do
        pid_is "$pid" "$comm" || return 0
        sleep 0.1
    done
    say "$comm (pid $pid) did not stop on SIG$sig; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        pid_is "$pid" "$comm" || return 0
        sleep 0.1
    done
}

# ---- PostgreSQL ------------------------------------------------------------------------------------

pg_url() { echo "postgres://pulse@127.0.0.1:$(port_of pg)/pulse"; }

pg_postmaster_pid() { read_file "$D/pg/postmaster.pid"; }

pg_init() {
    [ -f "$D/pg/PG_VERSION" ] && return 0
    [ -x "$PGBIN/initdb" ] || die "PostgreSQL 15 is not installed ($PGBIN/initdb); run scripts/setup.sh"
    rm -rf "$D/pg"
    pg_dir "$D/pg"
    pg_dir "$D/pgrun"
    # --no-sync only skips initdb's own final flush (a crash mid-init means re-init); the server runs
    # with fsync on.
    as_pg "$PGBIN/initdb" -D "$D/pg" -U pulse --auth-local=trust --auth-host=trust -E UTF8 \
        --locale=C.UTF-8 --no-sync >"$D/pgrun/initdb.log" 2>&1 ||
        { cat "$D/pgrun/initdb.log" >&2; die "pg: initdb failed"; }
    echo "include_if_exists = 'pulse.conf'" | as_pg tee -a "$D/pg/postgresql.conf" >/dev/null
}

pg_start() {
    pg_init
    pg_dir "$D/pgrun"
    local port try
    for try in 1 2 3; do
        port=$(pick_port pg)
        # Rewritten at every start: the port may have changed. Loopback only, socket inside DIR.
        as_pg tee "$D/pg/pulse.conf" >/dev/null <<EOF
# Written by scripts/engines.sh at each start.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$D/pgrun'
fsync = on
max_connections = 300
EOF
        if (close_fds; as_pg "$PGBIN/pg_ctl" -D "$D/pg" -l "$D/pgrun/postgres.log" -w -t 30 -s start) \
            </dev/null >/dev/null 2>&1; then
            pg_postmaster_pid >"$D/pg.pid"
            # The database Pulse uses; created once.
            local psql=("$PGBIN/psql" -X -q -h "$D/pgrun" -p "$port" -U pulse -d postgres -tA)
            if [ "$(as_pg "${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'pulse'")" != 1 ]; then
                as_pg "${psql[@]}" -c "CREATE DATABASE pulse" >/dev/null
            fi
            return 0
        fi
        if grep -q "Address already in use" "$D/pgrun/postgres.log" 2>/dev/null; then
            rm -f "$D/pg.port"
            continue
        fi
        tail -n 20 "$D/pgrun/postgres.log" >&2 || true
        die "pg: failed to start (log: $D/pgrun/postgres.log)"
    done
    die "pg: no usable port"
}

pg_stop() {
    local pid pm
    pid=$(pid_of pg)
    pm=$(pg_postmaster_pid)
    # SIGINT is PostgreSQL's "fast" shutdown: it disconnects clients instead of waiting for them.
    stop_pid "$pid" postgres INT 150
    [ "$pm" = "$pid" ] || stop_pid "$pm" postgres INT 150
    rm -f "$D/pg.pid"
}

# ---- Redis ------------------------------------------------------------------------------------------

redis_url() { echo "redis://127.0.0.1:$(port_of redis)/0"; }

redis_start() {
    command -v redis-server >/dev/null || die "redis-server is not installed; run scripts/setup.sh"
    mkdir -p "$D/redis"
    local port try pid
    for try in 1 2 3; do
        port=$(pick_port redis)
        rm -f "$D/redis/redis.pid"
        spawn redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes --save '' --appendonly no \
            --dir "$D/redis" --pidfile "$D/redis/redis.pid" --logfile "$D/redis/redis.log" --daemonize no
        pid=$!
        echo "$pid" >"$D/redis.pid"
        if wait_for "$pid" 100 redis_ping "$port"; then
            return 0
        fi
        if grep -q "Address already in use" "$D/redis/redis.log" 2>/dev/null; then
            rm -f "$D/redis.port"
            continue
        fi
        tail -n 20 "$D/redis/redis.log" >&2 || true
        die "redis: failed to start (log: $D/redis/redis.log)"
    done
    die "redis: no usable port"
}

redis_ping() { [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }

redis_stop() {
    stop_pid "$(pid_of redis)" redis-server TERM 100
    rm -f "$D/redis.pid"
}

# ---- NATS -------------------------------------------------------------------------------------------

nats_url() { echo "nats://127.0.0.1:$(port_of nats)"; }

# Ready when the server greets with an INFO line that says JetStream is on.
nats_ready() {
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    read -r -t 1 line <&3 || { exec 3<&-; return 1; }
    exec 3<&-
    case $line in INFO*'"jetstream":true'*) return 0 ;; esac
    return 1
}

nats_start() {
    command -v nats-server >/dev/null || die "nats-server is not installed; run scripts/setup.sh"
    mkdir -p "$D/nats"
    local port try pid
    for try in 1 2 3; do
        port=$(pick_port nats)
        : >"$D/nats/nats.log"
        # No -m: the monitoring port stays off.
        spawn nats-server -js -a 127.0.0.1 -p "$port" -sd "$D/nats" -n "pulse-$port" \
            -l "$D/nats/nats.log"
        pid=$!
        echo "$pid" >"$D/nats.pid"
        if wait_for "$pid" 100 nats_ready "$port"; then
            return 0
        fi
        if grep -q "address already in use" "$D/nats/nats.log" 2>/dev/null; then
            rm -f "$D/nats.port"
            continue
        fi
        tail -n 20 "$D/nats/nats.log" >&2 || true
        die "nats: failed to start (log: $D/nats/nats.log)"
    done
    die "nats: no usable port"
}

nats_stop() {
    stop_pid "$(pid_of nats)" nats-server TERM 100
    rm -f "$D/nats.pid"
}

# ---- the files clients read --------------------------------------------------------------------------

write_client_files() {
    local pg redis nats
    pg=$(pg_url)
    redis=$(redis_url)
    nats=$(nats_url)
    cat >"$D/engines.env.tmp" <<EOF
PULSE_DEFAULTS_SQL=$pg
PULSE_DEFAULTS_KV=$redis
PULSE_DEFAULTS_DOC=$pg
PULSE_BUS_URL=$nats
PULSE_TEST_PG_URL=$pg
PULSE_TEST_REDIS_URL=$redis
PULSE_TEST_NATS_URL=$nats
PULSE_TEST_ENGINES_DIR=$D
EOF
    mv "$D/engines.env.tmp" "$D/engines.env"
    cat >"$D/pulse.ini.tmp" <<EOF
; Written by scripts/engines.sh: Pulse on the local engines in $D.
[bus]
url = $nats
[defaults]
sql = $pg
kv  = $redis
doc = $pg
EOF
    mv "$D/pulse.ini.tmp" "$D/pulse.ini"
}

print_urls() {
    echo "postgres  $(pg_url)"
    echo "redis     $(redis_url)"
    echo "nats      $(nats_url)"
    echo "env       $D/engines.env"
    echo "config    $D/pulse.ini"
}

# ---- commands ----------------------------------------------------------------------------------------

start_one() {
    local name=$1
    if running "$name"; then return 0; fi
    # A crashed engine may leave its PID file; PostgreSQL's own lock file is handled by pg_ctl.
    rm -f "$D/$name.pid"
    "${name}_start"
}

stop_one() { "${1}_stop"; }

cmd_start() {
    local name
    for name in "${ENGINES[@]}"; do start_one "$name"; done
    write_client_files
    print_urls
}

cmd_stop() {
    local name
    for name in "${ENGINES[@]}"; do stop_one "$name"; done
}

cmd_status() {
    local name down=0
    for name in "${ENGINES[@]}"; do
        if running "$name"; then
            printf '%-6s running  pid %-8s %s\n' "$name" "$(pid_of "$name")" "$("${name}_url")"
        else
            printf '%-6s stopped\n' "$name"
            down=1
        fi
    done
    return $down
}

check_engine() {
    case ${1:-} in pg | redis | nats) ;; *) usage ;; esac
}

cmd=${1:-}
case $cmd in
    start | stop | status | env)
        dir=${2:-./.engines}
        ;;
    up | down | restart)
        check_engine "${2:-}"
        one=$2
        dir=${3:-./.engines}
        ;;
    *) usage ;;
esac

if [ "$cmd" = status ] || [ "$cmd" = env ] || [ "$cmd" = stop ] || [ "$cmd" = down ]; then
    [ -d "$dir" ] || { [ "$cmd" = status ] && { echo "no engines in $dir"; exit 1; }; [ "$cmd" = env ] && die "no engines in $dir"; exit 0; }
fi
mkdir -p "$dir"
D=$(cd "$dir" && pwd)
if is_root; then
    # PostgreSQL's user must reach its directories inside DIR.
    chmod 755 "$D"
    runuser -u postgres -- test -x "$D" ||
        die "the postgres user cannot enter $D (a parent directory is not searchable); choose another DIR"
fi

# One command at a time per DIR.
exec 9>"$D/.lock"
flock 9

case $cmd in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cat "$D/engines.env" ;;
    up) start_one "$one"; write_client_files ;;
    down) stop_one "$one" ;;
    restart) stop_one "$one"; start_one "$one"; write_client_files ;;
esac
