#!/usr/bin/env bash
# bench/social.sh - the social service on PostgreSQL, next to pgbench running the same statements on the
# same server in the same run (`make bench-social`; part of `make bench`).
#
#   B=build bash bench/social.sh
#
# Starts PostgreSQL, Redis and NATS (scripts/engines.sh) in a temporary directory and `pulse serve
# --services identity,social` on them, then, at 16 clients (wrk -t2 / pgbench -j2), one round each:
#
#   create  POST /api/v1/posts (post row + outbox row + the post read back, one transaction) next to
#           pgbench doing the same INSERT, an outbox-shaped INSERT and the SELECT in BEGIN/COMMIT.
#   page    GET /api/v1/users/{id}/posts?limit=20 by a follower (projection check, follow check, the
#           page with liked_by_me) next to pgbench running those three statements.
#   rsvp    PUT /api/v1/campus-events/{id}/rsvp by 64 users flipping going <-> interested on ONE event
#           (every request changes state and emits an event; all serialise on the event's row lock)
#           next to pgbench doing the same lock, reads, upsert, counter update and outbox INSERT.
#
# Reported: rate, p50/p99 latency and CPU per request of the server and of PostgreSQL. The machine is
# shared: compare the ratios of the same run, not absolute rates.
#
# Environment: B (build dir, default build), BENCH_DURATION (seconds per run, default 4), BENCH_DOCS
# (default docs/BENCHMARKS.md), BENCH_SOCIAL_DOCS=0 to only print.
set -euo pipefail

cd "$(dirname "$0")/.."
B=${B:-build}
DUR=${BENCH_DURATION:-4}
DOCS=${BENCH_DOCS:-docs/BENCHMARKS.md}
WRITE_DOCS=${BENCH_SOCIAL_DOCS:-1}
C=16
[[ -x $B/pulse ]] || { echo "bench: $B/pulse is missing; run: make B=$B bench-social" >&2; exit 1; }
for tool in wrk pgbench psql curl awk python3; do
    command -v $tool >/dev/null || { echo "bench: $tool is not installed" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pulse-socialbench.XXXXXX")
chmod 755 "$WORK"
ENG=$WORK/engines
SRV=0
log() { printf '[bench-social %s] %s\n' "$(date +%T)" "$*" >&2; }
calc() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; }
cleanup() {
    if [[ $SRV != 0 ]]; then kill -TERM "$SRV" 2>/dev/null || true; wait "$SRV" 2>/dev/null || true; fi
    [[ -d $ENG ]] && bash scripts/engines.sh stop "$ENG" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TCK=$(getconf CLK_TCK)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $LOAD_BEFORE; starting PostgreSQL, Redis and NATS"
bash scripts/engines.sh start "$ENG" >/dev/null
set -a
# shellcheck disable=SC1091
. "$ENG/engines.env"
set +a
PGPORT=$(cat "$ENG/pg.port")
PG_PM=$(head -1 "$ENG/pg/postmaster.pid")
PSQL=(psql -X -q -h 127.0.0.1 -p "$PGPORT" -U pulse -d pulse -v ON_ERROR_STOP=1)

cpu_pid() { local s; read -r s <"/proc/$1/stat"; s=${s##*) }; set -- $s; echo $((${12} + ${13})); }
pg_ticks() {
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v pm="$PG_PM" '
        { i = index($0, ") "); split(substr($0, i + 2), f, " ")
          if ($1 == pm) t += f[12] + f[13] + f[14] + f[15]; else if (f[2] == pm) t += f[12] + f[13] }
        END { print t + 0 }'
}

# ---- pulse ------------------------------------------------------------------------------------
mkdir -p "$WORK/data"
env PULSE_LOG_ACCESS=false PULSE_SERVICE_IDENTITY_ARGON2_M_COST=64KiB PULSE_SERVICE_IDENTITY_ARGON2_T_COST=1 \
    "$B/pulse" serve --listen 127.0.0.1:0 --data "$WORK/data" --services identity,social 2>"$WORK/pulse.log" &
SRV=$!
PORT=
for ((i = 0; i < 1500; i++)); do
    [[ $(cat "$WORK/pulse.log") =~ \"msg\":\"listening\"[^$'\n']*\"port\":([0-9]+) ]] && PORT=${BASH_REMATCH[1]} && break
    sleep 0.02
done
[[ -n $PORT ]] || { cat "$WORK/pulse.log" >&2; echo "bench: pulse did not start" >&2; exit 1; }
API=http://127.0.0.1:$PORT/api/v1
jget() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
login() { # NAME -> "token id" (the registration is retried: the machine may be busy)
    local i
    for ((i = 0; i < 5; i++)); do login_once "$1" && return 0; sleep 0.5; done
    return 1
}
login_once() {
    curl -s -o /dev/null -X POST "$API/auth/register" -H 'Content-Type: application/json' \
        -d "{\"email\":\"$1@bench.example\",\"username\":\"$1\",\"password\":\"bench-password-1\",\"display_name\":\"$1\"}" >/dev/null
    curl -sf -X POST "$API/auth/login" -H 'Content-Type: application/json' \
        -d "{\"login\":\"$1\",\"password\":\"bench-password-1\"}" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["token"], d["user"]["id"])'
}
log "pulse is up; registering users"
read -r A_TOK A_ID < <(login author)
read -r F_TOK F_ID < <(login follower)
export -f login login_once
export API
seq 0 63 | xargs -P 4 -I{} bash -c 'login rsvp{}' | awk '{ print $1 }' >"$WORK/tokens.txt"
[[ $(grep -c '^plt_' "$WORK/tokens.txt") == 64 ]] || { echo "bench: registering the RSVP users failed" >&2; exit 1; }
for ((i = 0; i < 200; i++)); do
    curl -sf -o /dev/null http://127.0.0.1:$PORT/healthz && \
        [[ $(curl -s -o /dev/null -w '%{http_code}' -X POST "$API/users/$A_ID/follow" -H "Authorization: Bearer $F_TOK") == 200 ]] && break
    sleep 0.05
done
for ((i = 0; i < 100; i++)); do
    curl -sf -o /dev/null -X POST "$API/posts" -H "Authorization: Bearer $A_TOK" -H 'Content-Type: application/json' \
        -d "{\"text\":\"seed post $i\",\"visibility\":\"$([[ $((i % 3)) == 0 ]] && echo followers || echo public)\"}"
done
log "users, follow and posts made"
EV_ID=$(curl -sf -X POST "$API/campus-events" -H "Authorization: Bearer $A_TOK" -H 'Content-Type: application/json' \
    -d "{\"title\":\"Bench\",\"location\":\"Hall\",\"starts_at\":\"2030-01-01T10:00:00Z\",\"ends_at\":\"2030-01-01T12:00:00Z\"}" | jget '["id"]')
SCHEMA=social

# ---- wrk scripts --------------------------------------------------------------------------------
cat >"$WORK/create.lua" <<EOF
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $A_TOK"
function request()
    n = n + 1
    return wrk.format(nil, "/api/v1/posts", nil, '{"text":"benchmark post number ' .. n .. ' about graphs and dynamic programming","visibility":"public"}')
end
EOF
cat >"$WORK/page.lua" <<EOF
wrk.headers["Authorization"] = "Bearer $F_TOK"
EOF
cat >"$WORK/rsvp.lua" <<EOF
local toks = {}
for l in io.lines("$WORK/tokens.txt") do toks[#toks + 1] = l end
local n, flip = 0, {}
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/json"
function request()
    n = n + 1
    local i = (n % #toks) + 1
    flip[i] = not flip[i]
    wrk.headers["Authorization"] = "Bearer " .. toks[i]
    return wrk.format(nil, "/api/v1/campus-events/$EV_ID/rsvp", nil, flip[i] and '{"status":"going"}' or '{"status":"interested"}')
end
local shown = 0
function response(status, headers, body)
    if status ~= 200 and shown < 3 then
        shown = shown + 1
        io.write("non-2xx " .. status .. " " .. body .. "\n")
    end
end
EOF

# ---- pgbench scripts: the same statements the handlers run ----------------------------------------
"${PSQL[@]}" -c "CREATE TABLE $SCHEMA.bench_outbox (seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL, type TEXT NOT NULL,
    subject TEXT NOT NULL, partitionkey TEXT NOT NULL, body TEXT NOT NULL, created_ms BIGINT NOT NULL)"
"${PSQL[@]}" -c "INSERT INTO $SCHEMA.social_rsvps (event_id, user_id, id, status, updated_at)
    SELECT '$EV_ID', 'raw-' || i, gen_random_uuid()::text, 'interested', 'x' FROM generate_series(1, 64) i;
    UPDATE $SCHEMA.social_campus_events SET interested_count = interested_count + 64 WHERE id = '$EV_ID'"
BODY='{"specversion":"1.0","id":"01a20178-7782-7551-a4fd-74742125741b","source":"/pulse/social","type":"pl.social.post_created.v1","subject":"01a20178-7782-7551-a4fd-74742125741c","time":"2026-11-22T04:16:41.917Z","datacontenttype":"application/json","partitionkey":"01a20178-7782-7551-a4fd-74742125741d","data":{"post_id":"01a20178-7782-7551-a4fd-74742125741c","author_id":"01a20178-7782-7551-a4fd-74742125741d","text":"benchmark post about graphs and dynamic programming","visibility":"public","course_id": null,"created_at":"2026-11-22T04:16:41.917Z"}}'
POSTSEL="SELECT p.id, p.author_id, p.text, p.course_id, p.visibility, p.like_count, p.comment_count, p.created_at, p.updated_at, (SELECT COUNT(*) FROM social_likes l WHERE l.post_id = p.id AND l.user_id = '$F_ID'), u.username FROM social_posts p LEFT JOIN social_users u ON u.user_id = p.author_id"
cat >"$WORK/create.sql" <<EOF
\set n random(1, 1000000000)
BEGIN;
INSERT INTO social_posts (id, author_id, text, course_id, visibility, created_at, updated_at) VALUES ('01a2-' || :n::text, '$A_ID', 'benchmark post number ' || :n, NULL, 'public', '2026-11-22T04:16:41.917Z', '2026-11-22T04:16:41.917Z');
INSERT INTO bench_outbox (id, type, subject, partitionkey, body, created_ms) VALUES (gen_random_uuid()::text, 'pl.social.post_created.v1', '01a2-' || :n::text, '$A_ID', '$BODY', :n);
$POSTSEL WHERE p.id = '01a2-' || :n::text;
COMMIT;
EOF
cat >"$WORK/page.sql" <<EOF
BEGIN READ ONLY;
SELECT 1 FROM social_users WHERE user_id = '$A_ID';
SELECT 1 FROM social_follows WHERE follower_id = '$F_ID' AND followee_id = '$A_ID';
SELECT p.id, p.author_id, p.text, p.course_id, p.visibility, p.like_count, p.comment_count, p.created_at, p.updated_at, (SELECT COUNT(*) FROM social_likes l WHERE l.post_id = p.id AND l.user_id = '$F_ID'), u.username FROM (SELECT * FROM social_posts p WHERE p.author_id = '$A_ID' AND p.visibility IN ('public', 'followers') ORDER BY p.id DESC LIMIT 20) p LEFT JOIN social_users u ON u.user_id = p.author_id ORDER BY p.id DESC;
COMMIT;
EOF
cat >"$WORK/rsvp.sql" <<EOF
\set u random(1, 64)
BEGIN;
UPDATE social_campus_events SET going_count = going_count WHERE id = '$EV_ID';
SELECT capacity, going_count, ends_ms, organizer_id, interested_count FROM social_campus_events WHERE id = '$EV_ID';
SELECT status FROM social_rsvps WHERE event_id = '$EV_ID' AND user_id = 'raw-' || :u::text;
INSERT INTO social_rsvps (event_id, user_id, id, status, updated_at) VALUES ('$EV_ID', 'raw-' || :u::text, gen_random_uuid()::text, 'going', 'x') ON CONFLICT (event_id, user_id) DO UPDATE SET status = CASE WHEN social_rsvps.status = 'going' THEN 'interested' ELSE 'going' END, updated_at = excluded.updated_at;
UPDATE social_campus_events SET going_count = going_count + 0, interested_count = interested_count + 0 WHERE id = '$EV_ID';
INSERT INTO bench_outbox (id, type, subject, partitionkey, body, created_ms) VALUES (gen_random_uuid()::text, 'pl.social.rsvp_changed.v1', '$EV_ID', '$EV_ID', '$BODY', :u);
COMMIT;
EOF

# ---- runs -------------------------------------------------------------------------------------------
declare -A RATE P50 P99 SRVUS PGUS ERRS
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u); if (u == "us") n /= 1000; else if (u == "s") n *= 1000; printf "%.2f", n }'; }
api() { # KEY PATH LUA
    local key=$1 out=$WORK/wrk-$1.txt pg0 s0 n
    pg0=$(pg_ticks); s0=$(cpu_pid "$SRV")
    wrk -t2 -c$C -d"${DUR}s" --latency --timeout 10s -s "$3" "http://127.0.0.1:$PORT$2" >"$out" 2>&1
    sleep 1 # the relay and consumers finish inside the measurement
    n=$(awk '/ requests in / { print $1 }' "$out")
    RATE[$key]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    P50[$key]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    P99[$key]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    SRVUS[$key]=$(calc "($(cpu_pid "$SRV") - $s0) / $TCK * 1e6 / $n" 0)
    PGUS[$key]=$(calc "($(pg_ticks) - $pg0) / $TCK * 1e6 / $n" 0)
    ERRS[$key]=$(awk -F': ' '/Non-2xx or 3xx responses/ { print $2 }' "$out")
    grep -m3 '^non-2xx' "$out" >&2 || true
    log "  $key: ${RATE[$key]} req/s, p50 ${P50[$key]} p99 ${P99[$key]} ms, server ${SRVUS[$key]} + PG ${PGUS[$key]} µs/req${ERRS[$key]:+, non-2xx ${ERRS[$key]}}"
}
pgb() { # KEY SQLFILE
    local key=$1 out=$WORK/pgb-$1.txt pg0 n
    rm -f "$WORK"/pgblog-"$key".*
    pg0=$(pg_ticks)
    PGOPTIONS="-c search_path=$SCHEMA" pgbench -n -h 127.0.0.1 -p "$PGPORT" -U pulse -c $C -j 2 -T "$DUR" -M prepared \
        -l --log-prefix="$WORK/pgblog-$key" -f "$2" pulse >"$out" 2>&1 || { grep -m5 error "$out" >&2; exit 1; }
    grep -q 'aborted' "$out" && { grep -m5 error "$out" >&2; echo "bench: pgbench $key aborted" >&2; exit 1; }
    n=$(awk '/number of transactions actually processed:/ { print $NF }' "$out")
    RATE[$key]=$(awk '/^tps = / { printf "%.0f", $3 }' "$out")
    read -r P50[$key] P99[$key] < <(cat "$WORK"/pgblog-"$key".* | awk '{ print $3 }' | sort -n |
        awk '{ a[NR] = $1 } END { printf "%.2f %.2f\n", a[int((NR - 1) * 0.50) + 1] / 1000, a[int((NR - 1) * 0.99) + 1] / 1000 }')
    rm -f "$WORK"/pgblog-"$key".*
    SRVUS[$key]=-
    PGUS[$key]=$(calc "($(pg_ticks) - $pg0) / $TCK * 1e6 / $n" 0)
    ERRS[$key]=
    log "  $key: ${RATE[$key]} tps, p50 ${P50[$key]} p99 ${P99[$key]} ms, PG ${PGUS[$key]} µs/txn"
}
log "pulse on port $PORT; $C clients, ${DUR} s per run"
api create /api/v1/posts "$WORK/create.lua"
pgb create_raw "$WORK/create.sql"
# the writes above leave work for autovacuum (and the relay's deletes): settle it before the reads, so that
# neither read run is charged for it; raw first this time
sleep 1
"${PSQL[@]}" -c "VACUUM ANALYZE $SCHEMA.social_posts" -c "VACUUM ANALYZE $SCHEMA.pulse_outbox" 2>/dev/null ||
    "${PSQL[@]}" -c "VACUUM ANALYZE $SCHEMA.social_posts"
pgb page_raw "$WORK/page.sql"
api page "/api/v1/users/$A_ID/posts?limit=20" "$WORK/page.lua"
api rsvp "/api/v1/campus-events/$EV_ID/rsvp" "$WORK/rsvp.lua"
pgb rsvp_raw "$WORK/rsvp.sql"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- report ---------------------------------------------------------------------------------------
ratio() { calc "${RATE[$1]} / ${RATE[$2]}" 2; }
report() {
    cat <<EOF

## Social on PostgreSQL (bench/social.sh)

\`make bench-social\` (B=$B, BENCH_DURATION=$DUR), 2026-11-22, load average $LOAD_BEFORE before and $LOAD_AFTER after; $(nproc)
cores shared with other work. PostgreSQL $("${PSQL[@]}" -tA -c 'SHOW server_version'), NATS JetStream bus; \`pulse serve --services
identity,social\`; $C clients (wrk -t2, pgbench -j2 -M prepared), one round each (the reads after a VACUUM ANALYZE
of the posts written by the create runs). "raw" is pgbench running the
statements the handler runs (same tables, same schema, an outbox-shaped table), so the difference is Pulse's HTTP,
JSON, validation, auth and pool work around them.

| run | req/s | p50 ms | p99 ms | server µs/req | PostgreSQL µs/req | API / raw |
|---|---|---|---|---|---|---|
| POST /posts | ${RATE[create]} | ${P50[create]} | ${P99[create]} | ${SRVUS[create]} | ${PGUS[create]} | $(ratio create create_raw) |
| raw: INSERT post + outbox + SELECT in a transaction | ${RATE[create_raw]} | ${P50[create_raw]} | ${P99[create_raw]} | - | ${PGUS[create_raw]} | |
| GET users/{id}/posts?limit=20 (follower) | ${RATE[page]} | ${P50[page]} | ${P99[page]} | ${SRVUS[page]} | ${PGUS[page]} | $(ratio page page_raw) |
| raw: user check + follow check + page query | ${RATE[page_raw]} | ${P50[page_raw]} | ${P99[page_raw]} | - | ${PGUS[page_raw]} | |
| PUT campus-events/{id}/rsvp, 64 users, one event | ${RATE[rsvp]} | ${P50[rsvp]} | ${P99[rsvp]} | ${SRVUS[rsvp]} | ${PGUS[rsvp]} | $(ratio rsvp rsvp_raw) |
| raw: row lock + reads + upsert + counters + outbox | ${RATE[rsvp_raw]} | ${P50[rsvp_raw]} | ${P99[rsvp_raw]} | - | ${PGUS[rsvp_raw]} | |

Errors (non-2xx): create ${ERRS[create]:-0}, page ${ERRS[page]:-0}, rsvp ${ERRS[rsvp]:-0}. Every RSVP request changes the
user's answer (going <-> interested) and emits \`rsvp_changed\`; all of them serialise on the one event's row lock,
which is the point of the run (capacity is enforced under that lock). The raw RSVP script adds 0 to the counters
(it does not branch on the previous answer), which flatters it slightly.
EOF
}
report
if [[ $WRITE_DOCS == 1 ]]; then report >>"$DOCS"; log "appended to $DOCS"; fi
