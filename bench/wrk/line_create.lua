-- wrk -t2 -c50 -d10s --latency -s bench/wrk/line_create.lua URL
--
-- POST /api/line-requests: included phone lines (201, status
-- "provisioning"), each a unique body, no idempotency key. Creations change
-- capacity: a growth workspace includes 2 live phone lines, then bills an
-- add-on. So bench/seed-extra.pl --write-workspaces N seeds N fresh growth
-- workspaces (keys tuco_benchwrite<%08d i><22 x>, N in write.txt); each wrk
-- thread walks its own slice of them, two creations per workspace, and
-- done() says how much of the slices was used. A run that outgrows them
-- turns into add-ons and 409s, visible as non-2xx.
--
-- LG_WRK_THREADS must be wrk's -t (bench/run.sh sets it).

package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;"
               .. package.path
local lg = require "lgbench"

local first = 0
size, k = 0, 0    -- globals: done() reads them with thread:get
local hdr
local format = string.format

local threads = {}
function setup(thread)
    threads[#threads + 1] = thread
    thread:set("tid", #threads)
end

function init(args)
    local total = tonumber(lg.lines("write.txt")[1])
    size = math.floor(total / lg.threads)
    first = ((tid or 1) - 1) * size
    hdr = "POST /api/line-requests HTTP/1.1\r\nHost: " .. lg.host()
          .. "\r\nContent-Type: application/json\r\nAuthorization: Bearer "
end

function request()
    local w = first + math.floor(k / 2) % size
    local body = format('{"firstName":"Bench","lastName":"Writer %d-%d",'
                        .. '"channelType":"phone","lineType":"purchased",'
                        .. '"zipcode":"94105","state":"CA"}', tid or 1, k)
    k = k + 1
    return hdr .. format("tuco_benchwrite%08dxxxxxxxxxxxxxxxxxxxxxx", w)
           .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
end

function done(summary, latency, requests)
    local used, avail = 0, 0
    for _, t in ipairs(threads) do
        used = used + (t:get("k") or 0)
        avail = avail + 2 * (t:get("size") or 0)
    end
    io.write(format("lg-create: %d creations sent, %d included slots seeded\n",
                    used, avail))
end
