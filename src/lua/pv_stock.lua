-- POST /accounts/lines/provision-preview, STOCK (the fleet's slot): is
-- there a number a confirm could sell? Run only when READ's sample of
-- the inventory (one SRANDMEMBER) was no E.164 number: a preview counted
-- such a number as stock (SCARD) and answered 200 for an inventory of
-- nothing else, whose confirm then answered 503 no_lines_available.
--
-- KEYS[1]  lg:{fleet}:inventory
-- KEYS[2]  lg:{fleet}:inventory:quarantine
--
-- Returns {1, aside...}: a number pv_claim would sell is there; {0,
-- aside...}: none, or LG_PV_ASIDE_MAX set aside without finding one;
-- aside: the numbers this step moved to KEYS[2], which nginx logs.
--
-- The rule and the bound are pv_claim's: each number looked at that is
-- no E.164 number goes to the quarantine, as the claim that drew it
-- would move it (never held: no purchase holds it), at most
-- LG_PV_ASIDE_MAX a step, so that a long bad list costs one preview a
-- 503 (as it costs one confirm) rather than block Redis; the next
-- preview goes on. A good number is only looked at, never taken.

--#include pv_e164

local LG_PV_ASIDE_MAX = 100
local aside = {}

while #aside < LG_PV_ASIDE_MAX do
    local number = redis.call('SRANDMEMBER', KEYS[1])

    if not number then
        break
    end

    if lg_pv_e164(number) then
        return {1, unpack(aside)}
    end

    redis.call('SMOVE', KEYS[1], KEYS[2], number)
    aside[#aside + 1] = number
end

return {0, unpack(aside)}
