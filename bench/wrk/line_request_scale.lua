-- wrk -t2 -c50 -d10s --latency -s bench/wrk/line_request_scale.lua URL
--
-- GET /api/line-requests/:id as the peers' wrk/line_request.lua does (a
-- random workspace key with one of its ids), but the request is built per
-- request instead of formatted in advance, so the same script serves 1,000
-- and 100,000 seeded workspaces (1M requests formatted in advance take 17 s
-- and 800 MB of wrk). Used by bench/run.sh to compare the two sizes only.

package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;"
               .. package.path
local lg = require "lgbench"

local keys, ids
local n = 0
local pre, mid = nil, nil
local random, sub = math.random, string.sub

local threads = {}
function setup(thread)
    threads[#threads + 1] = thread
    thread:set("tid", #threads)
end

function init(args)
    math.randomseed(5000 + (tid or 0))
    keys = lg.lines("keys.txt")
    ids = lg.lines("ids.txt")
    n = #keys
    pre = "GET /api/line-requests/"
    mid = " HTTP/1.1\r\nHost: " .. lg.host() .. "\r\nAuthorization: Bearer "
end

-- ids.txt: 10 ids of 24 hex characters separated by one space
function request()
    local i = random(n)
    local j = random(10) - 1
    return pre .. sub(ids[i], j * 25 + 1, j * 25 + 24) .. mid .. keys[i] .. "\r\n\r\n"
end
