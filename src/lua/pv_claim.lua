-- POST /accounts/lines/provision-confirm, CLAIM (the fleet's slot): a
-- number leaves the inventory and is written in the claims journal in
-- the same step, in place of the purchase's intent "<A> <worker> -"
-- (pv_reserve wrote it with the reservation on one Redis, the INTENT
-- step before it on a cluster). The claim is removed with
-- the number's next home (pv_settle.lua): the inventory again, the
-- account's line, or a reconcile entry. A claim left behind (its worker
-- died, or the answer to this script was lost) is the sweep's: it finds
-- the account's side (pv_inspect.lua) and settles it.
--
-- KEYS[1]  lg:{fleet}:inventory     KEYS[2]  lg:{fleet}:pv:inflight
-- KEYS[3]  lg:{fleet}:held: the numbers handed out, which an inventory
--          load leaves out (op_inventory_add); a number leaves it only
--          when it goes back to the inventory (pv_settle,
--          op_reconcile_resolve)
-- ARGV[1]  account id               ARGV[2]  worker id
-- ARGV[3]  now, Unix ms
--
-- Returns {1, number}: the claim "<account> <worker id> <number>" is in
-- KEYS[2], scored ARGV[3], the intent gone; {0}: the inventory is empty
-- (the intent stays, for the settle after the release); {2}: no intent
-- (the sweep released this purchase: its confirm was too slow), nothing
-- is taken.

local intent = ARGV[1] .. ' ' .. ARGV[2] .. ' -'

if not redis.call('ZSCORE', KEYS[2], intent) then
    return {2}
end

local number = redis.call('SPOP', KEYS[1])

if not number then
    return {0}
end

redis.call('ZREM', KEYS[2], intent)
redis.call('ZADD', KEYS[2], ARGV[3],
           ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. number)
redis.call('SADD', KEYS[3], number)

return {1, number}
