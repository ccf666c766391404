-- linegate_limit: one GCRA decision for one key (a zone's limited value).
--
-- KEYS[1]  the key's theoretical arrival time (see include/rl_gcra.lua)
-- ARGV[1]  the emission interval T (microseconds per request)
-- ARGV[2]  the tolerance tau = burst * T
-- ARGV[3]  how many to admit at most (a worker's lease; default 1)
-- ARGV[4]  now, microseconds of the deciding worker's clock (linegate_limit
--          sends it); absent: Redis TIME (the Lines API's GET)
--
-- Returns {allowed, remaining, reset_ms, retry_after_ms}; allowed is how
-- many were admitted (0: rejected).

if not ARGV[4] and redis.replicate_commands then
    redis.replicate_commands()
end

--#include rl_gcra

local allowed, remaining, reset_ms, retry_ms =
    lg_rl_gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]),
               tonumber(ARGV[3] or '1'), tonumber(ARGV[4]))

return {allowed, remaining, reset_ms, retry_ms}
