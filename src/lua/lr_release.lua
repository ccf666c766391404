-- POST /api/line-requests failed after lr_create was sent (Stripe refused
-- or could not be reached, the answer could not be built, or lr_create's
-- own reply never came): drop the reservation, if this call made one and
-- it still has no invoice, and free the idempotency key it holds, in one
-- step. Idempotent: sent again until Redis answers, and safe whichever of
-- lr_create and this one Redis runs first: the mark lg:lrvoid:<id> makes
-- an lr_create still queued do nothing.
-- KEYS[1] lg:lrvoid:<id>, KEYS[2] lg:line:<id>, KEYS[3] lg:{fleet}:lr:inflight,
-- KEYS[4] lg:{ws:W} when W is known; else the workspace's keys derive
-- from the W KEYS[2] holds (another slot: issue 10)
-- ARGV[1] ws ("" when not known: the request's owner index says), ARGV[2]
-- id, ARGV[3] sha256hex of the idempotency key (""), ARGV[4] ms the mark
-- lasts
--#include lr_drop
redis.call('SET', KEYS[1], '1', 'PX', tonumber(ARGV[4]))

local ws, wkey = ARGV[1], KEYS[4]
if not wkey then
    ws = redis.call('GET', KEYS[2])
    if not ws then
        return 1
    end
    wkey = 'lg:{ws:' .. ws .. '}'
end

local lkey = wkey .. ':lr:' .. ARGV[2]
local cur = redis.call('HMGET', lkey, 'provisioningStatus', 'invoiceId')
if cur[1] == 'awaiting_payment' and not cur[2] then
    lg_lr_drop(wkey, ws, ARGV[2], KEYS[3])
end

if ARGV[3] ~= '' then
    local ikey = wkey .. ':idem:' .. ARGV[3]
    local rec = redis.call('HMGET', ikey, 'state', 'id')
    if rec[1] == 'running' and rec[2] == ARGV[2] then
        redis.call('DEL', ikey)
    end
end

return 1
