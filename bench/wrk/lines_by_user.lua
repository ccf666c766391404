-- wrk -t2 -c50 -d10s --latency -s bench/wrk/lines_by_user.lua URL
--
-- GET /api/lines/by-user with a random workspace's API key (keys.txt):
-- every answer is a real 200 listing that workspace's seeded lines (10
-- seeded, the canceled one not listed), indexed by bench/seed-extra.pl
-- --index.

package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;"
               .. package.path
local lg = require "lgbench"

local reqs = {}
local n = 0

local threads = {}
function setup(thread)
    threads[#threads + 1] = thread
    thread:set("tid", #threads)
end

function init(args)
    math.randomseed(4000 + (tid or 0))
    for _, key in ipairs(lg.lines("keys.txt")) do
        n = n + 1
        reqs[n] = wrk.format("GET", "/api/lines/by-user",
                             { ["Authorization"] = "Bearer " .. key })
    end
end

function request()
    return reqs[math.random(n)]
end
