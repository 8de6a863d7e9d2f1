-- bench/pg_read.lua - wrk script for bench/pg.sh: GET /api/v1/users/{id} over
-- the users bench/pg.sh seeds, whose ids are 00000000-0000-7000-8000-<i, 12 digits>.
--   wrk ... -s bench/pg_read.lua URL -- random LO HI     uniformly random i in [LO, HI]
--   wrk ... -s bench/pg_read.lua URL -- seq LO HI T      each of the T wrk threads walks
--                                                        its own i = LO + thread + T*k (never twice
--                                                        while fewer than HI-LO+1 requests are made)
local mode, lo, hi, nthreads = "random", 1, 1, 1
local k = 0
-- "me" (this thread's number) is a global that setup() sets in each thread's state
local threads = 0

function setup(thread)
    thread:set("me", threads)
    threads = threads + 1
end

function init(args)
    mode = args[1] or "random"
    lo = tonumber(args[2] or "1")
    hi = tonumber(args[3] or "1")
    nthreads = tonumber(args[4] or "1")
    me = me or 0
    math.randomseed(os.time() * 1000 + me)
end

local function path(i)
    return string.format("/api/v1/users/00000000-0000-7000-8000-%012d", i)
end

function request()
    local i
    if mode == "seq" then
        i = lo + (me + nthreads * k) % (hi - lo + 1)
        k = k + 1
    else
        i = math.random(lo, hi)
    end
    return wrk.format("GET", path(i))
end
