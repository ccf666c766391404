-- linegate_limit: give back one admission of a zone when another zone of
-- the same location rejected the request (the request never ran).
--
-- KEYS[1]  the key's TAT (see rl_gcra.lua)
-- ARGV[1]  the emission interval T of the zone, microseconds
-- ARGV[2]  now, microseconds of the worker's clock (as the decision);
--          absent: Redis TIME

local tat = tonumber(redis.call('GET', KEYS[1]) or '')
if not tat then
    return 0
end

local now = tonumber(ARGV[2])

if not now then
    if redis.replicate_commands then
        redis.replicate_commands()
    end

    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

tat = tat - tonumber(ARGV[1])

if tat <= now then
    redis.call('DEL', KEYS[1])
    return 1
end

-- a whole number of microseconds, as lg_rl_gcra writes it
redis.call('SET', KEYS[1], string.format('%d', tat),
           'PX', math.ceil((tat - now) / 1000) + 1)
return 1
