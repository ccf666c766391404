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
-- KEYS[4]  lg:{fleet}:inventory:quarantine: the numbers drawn that are
--          no E.164 number, set aside for the operator
-- ARGV[1]  account id               ARGV[2]  worker id
-- ARGV[3]  now, Unix ms
-- ARGV[4]  linegate_reconcile_lost_after, ms ('' or absent: not looked
--          at)
--
-- Returns {1, number, aside...}: the claim "<account> <worker id>
-- <number>" is in KEYS[2], scored ARGV[3], the intent gone; {0,
-- aside...}: the inventory is empty, or held only numbers set aside
-- (the intent stays, for the settle after the release); aside: the
-- numbers this step moved to KEYS[4], which nginx logs; {2}: no intent
-- (the sweep released this purchase: its confirm was too slow), nothing
-- is taken; {3}: the intent is older than ARGV[4], nothing is taken
-- either (it stays, for the settle after the release).
--
-- Why {3}: the sweep takes an intent that old for a dead worker's, and
-- releases its reservation (pv_inspect.lua, the account's slot) one
-- step before it drops the intent (pv_settle.lua, this slot). A confirm
-- stalled that long whose claim landed in between found its intent
-- still there, took a number with no reservation behind it, and was
-- charged at Stripe before its record found the slot gone
-- (reservation_missing: the charge refunded by a later run). The age
-- is measured on one clock, the confirm's (it scored the intent too);
-- the sweep picks by its own: a sweep whose clock runs ahead of the
-- confirm's by d still meets that race within d (the refund covers it).
--
-- Why numbers are set aside: the inventory may hold numbers loaded
-- before op_inventory_add refused a country code of 0 ("+0...",
-- 2026-11-28), or written there by hand; sold, such a number is a line
-- nobody can call. Each one drawn leaves the inventory for KEYS[4]
-- (never held: no purchase holds it) and the draw goes on, at most
-- LG_PV_ASIDE_MAX of them a step, so that a long bad list costs one
-- confirm a 503 rather than block Redis; the next confirm goes on.

local intent = ARGV[1] .. ' ' .. ARGV[2] .. ' -'
local since = redis.call('ZSCORE', KEYS[2], intent)

if not since then
    return {2}
end

local lost = tonumber(ARGV[4] or '')

if lost and tonumber(ARGV[3]) - tonumber(since) >= lost then
    return {3}
end

--#include pv_e164

local LG_PV_ASIDE_MAX = 100
local aside = {}
local number

while true do
    number = redis.call('SPOP', KEYS[1])

    if not number or lg_pv_e164(number) then
        break
    end

    redis.call('SADD', KEYS[4], number)
    aside[#aside + 1] = number

    if #aside == LG_PV_ASIDE_MAX then
        number = nil
        break
    end
end

if not number then
    return {0, unpack(aside)}
end

redis.call('ZREM', KEYS[2], intent)
redis.call('ZADD', KEYS[2], ARGV[3],
           ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. number)
redis.call('SADD', KEYS[3], number)

return {1, number, unpack(aside)}
