-- bench/pg_write.lua - wrk script for bench/pg.sh: one testkit event per request
-- (POST /api/v1/testkit/events = one outbox row in one transaction). Subjects
-- rotate over 1,024 values so that partitions and the tally projection's rows spread.
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
    n = n + 1
    return wrk.format(nil, nil, nil,
        '{"type":"pl.testkit.bench_written.v1","subject":"bench-' .. (n % 1024) .. '"}')
end
