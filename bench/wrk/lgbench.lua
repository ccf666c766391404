-- Shared by linegate's wrk scripts (bench/wrk/*.lua): where the seed
-- files are, reading them, and numbering the wrk threads.
--
-- The seed files are written by the peers' seed.pl (keys.txt, ids.txt,
-- creds.txt) and by bench/seed-extra.pl (clerk.txt, write.txt) into
-- $LG_PEERS_DATA, which bench/run.sh sets.

local M = {}

M.data = os.getenv("LG_PEERS_DATA")
         or ((os.getenv("LG_PEERS_TMP") or "/tmp/lg-peers") .. "/data")

-- wrk calls setup() and init() of thread 1 before setting up thread 2,
-- so a thread cannot count its siblings: run.sh passes the count
M.threads = tonumber(os.getenv("LG_WRK_THREADS") or "2")

function M.lines(name)
    local path = M.data .. "/" .. name
    local f = assert(io.open(path, "r"), "cannot open " .. path)
    local t = {}
    for l in f:lines() do
        if l ~= "" then
            t[#t + 1] = l
        end
    end
    f:close()
    return t
end

function M.words(s)
    local t = {}
    for w in s:gmatch("%S+") do
        t[#t + 1] = w
    end
    return t
end

-- the host header wrk itself would send
function M.host()
    local h = wrk.host
    if wrk.port and wrk.port ~= "" then
        h = h .. ":" .. wrk.port
    end
    return h
end

return M
