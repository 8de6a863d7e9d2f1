-- bench/pg_register.lua - wrk script for bench/pg.sh: one new account per request
-- (POST /api/v1/auth/register). Usage: wrk ... -s bench/pg_register.lua URL -- TAG
-- TAG ([a-z0-9], short) keeps e-mails and usernames unique across runs; each wrk
-- thread adds its own number and a counter.
local counter = 1
local threads = 0
local tag = "r"
-- "me" (this thread's number) is a global that setup() sets in each thread's state

function setup(thread)
    threads = threads + 1
    thread:set("me", threads)
end

function init(args)
    tag = args[1] or "r"
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
    counter = counter + 1
    local u = tag .. "_" .. (me or 0) .. "_" .. counter
    return wrk.format(nil, nil, nil,
        '{"email":"' .. u .. '@example.com","username":"' .. u ..
        '","password":"bench-password-1234","display_name":"Bench ' .. u .. '"}')
end
