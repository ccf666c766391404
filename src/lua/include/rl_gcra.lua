-- GCRA, one decision for one key: the one implementation of the
-- algorithm, pasted (--#include rl_gcra) into every script that limits a
-- rate (rl_gcra.lua for linegate_limit; a caller must have called
-- redis.replicate_commands() before its first write when Redis < 5).
--
-- key  the theoretical arrival time (TAT), microseconds of Redis TIME:
--      one clock for the whole fleet
-- T    the emission interval, microseconds per request
-- tau  the tolerance, burst * T
--
-- want how many requests to admit at most (1, or a worker's lease: see
--      linegate_limit_zone lease=); as many as the key allows now, up
--      to want, are admitted together, 0 when not even one is
--
-- lg_rl_gcra(key, T, tau, want) -> admitted (0 .. want), remaining,
-- reset_ms, retry_after_ms: remaining is how many more would pass now,
-- reset_ms when the key is back to its full burst, retry_after_ms when a
-- rejected request would pass (0 when admitted). A rejection writes
-- nothing; an admission sets the TAT and its expiry (when it would be
-- back to full) in one SET.
local function lg_rl_gcra(key, T, tau, want)
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

    local tat = tonumber(redis.call('GET', key) or '') or now
    if tat < now then
        tat = now
    end

    -- one request passes while tat - tau <= now; n while
    -- tat + (n - 1) T - tau <= now
    local can = math.floor((now - tat + tau) / T) + 1

    if can < 1 then
        return 0, 0, math.ceil((tat - now) / 1000),
               math.ceil((tat - tau - now) / 1000)
    end

    local n = math.min(want or 1, can)
    local new_tat = tat + n * T

    redis.call('SET', key, string.format('%.0f', new_tat),
               'PX', math.ceil((new_tat - now) / 1000) + 1)

    return n, can - n, math.ceil((new_tat - now) / 1000), 0
end
