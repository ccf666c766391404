-- linegate_limit: one GCRA decision for one key (a zone's limited value).
--
-- KEYS[1]  the key's theoretical arrival time (TAT), in microseconds of
--          Redis's clock: one clock for the whole fleet, so the nodes'
--          clocks never matter
-- ARGV[1]  the emission interval T (microseconds per request)
-- ARGV[2]  the tolerance tau = burst * T
--
-- Returns {allowed, remaining, reset_ms, retry_after_ms}: remaining is how
-- many more requests would pass now, reset_ms when the key is back to its
-- full burst, retry_after_ms when a rejected request would pass (0 when
-- allowed). A rejection writes nothing; an admission sets the TAT and its
-- expiry (when it would be back to full anyway) in one write.

if redis.replicate_commands then
    redis.replicate_commands()
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])

local tat = tonumber(redis.call('GET', KEYS[1]) or '') or now
if tat < now then
    tat = now
end

local new_tat = tat + T
local allow_at = new_tat - tau - T

if allow_at > now then
    return {0, 0, math.ceil((tat - now) / 1000),
            math.ceil((allow_at - now) / 1000)}
end

redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
           'PX', math.ceil((new_tat - now) / 1000) + 1)

return {1, math.floor((now - allow_at) / T),
        math.ceil((new_tat - now) / 1000), 0}
