-- Operator API: a number of the quarantine back to the inventory, as it
-- is or corrected (POST /_linegate/inventory/quarantine/release).
-- KEYS[1] lg:{fleet}:inventory:quarantine, KEYS[2] lg:{fleet}:inventory,
-- KEYS[3] lg:{fleet}:held (the numbers handed out: claimed by a
-- purchase, on a line, or held by a reconcile entry)
-- ARGV[1] the entry of the quarantine, as it is there
-- ARGV[2] the number to put in the inventory: ARGV[1] or its correction
-- (validated by the caller, and again here by the rule pv_claim sells by)
--
-- Returns {1, the inventory's size}: ARGV[1] left the quarantine and
-- ARGV[2] is in the inventory, in one step; otherwise nothing is
-- written: {0} ARGV[1] is not in the quarantine; {-1} ARGV[2] is no
-- E.164 number; {-2} ARGV[2] is handed out (a second purchase would
-- be sold it); {-3} ARGV[2] is in the inventory already (drop the
-- entry instead).

--#include pv_e164

if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
    return {0}
end

if not lg_pv_e164(ARGV[2]) then
    return {-1}
end

if redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 then
    return {-2}
end

if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then
    return {-3}
end

redis.call('SREM', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])

return {1, redis.call('SCARD', KEYS[2])}
