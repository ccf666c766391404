-- wrk -t2 -c50 -d10s --latency -s bench/wrk/line_request_clerk.lua URL
--
-- GET /api/line-requests/:id with a Clerk session token instead of an API
-- key: the same requests as the peers' wrk/line_request.lua (a random
-- workspace and one of its ids), authenticated by that workspace's own
-- token (clerk.txt, line i = an RS256 token whose active organization is
-- workspace i, made by bench/seed-extra.pl --clerk). 1000 distinct tokens.

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
    math.randomseed(3000 + (tid or 0))
    local tokens = lg.lines("clerk.txt")
    local ids = lg.lines("ids.txt")
    for i, tok in ipairs(tokens) do
        for _, id in ipairs(lg.words(ids[i])) do
            n = n + 1
            reqs[n] = wrk.format("GET", "/api/line-requests/" .. id,
                                 { ["Authorization"] = "Bearer " .. tok })
        end
    end
end

function request()
    return reqs[math.random(n)]
end
