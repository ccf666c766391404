-- POST /api/line-requests failed after lr_create was sent (Stripe refused
-- or could not be reached, the answer could not be built, or lr_create's
-- own reply never came): drop the reservation, if this call made one and
-- it still has no invoice, and free the idempotency key it holds, in one
-- step. Idempotent: sent again until Redis answers, and safe whichever of
-- lr_create and this one Redis runs first: the mark lg:lrvoid:<id> makes
-- an lr_create still queued do nothing.
-- ARGV[1] ws ("" when not known: the request's owner index says), ARGV[2]
-- id, ARGV[3] sha256hex of the idempotency key (""), ARGV[4] ms the mark
-- lasts
--#include lr_drop
redis.call('SET', 'lg:lrvoid:' .. ARGV[2], '1', 'PX', tonumber(ARGV[4]))

local ws = ARGV[1]
if ws == '' then
    ws = redis.call('GET', 'lg:line:' .. ARGV[2])
    if not ws then
        return 1
    end
end

local lkey = 'lg:{ws:' .. ws .. '}:lr:' .. ARGV[2]
local cur = redis.call('HMGET', lkey, 'provisioningStatus', 'invoiceId')
if cur[1] == 'awaiting_payment' and not cur[2] then
    lg_lr_drop(ws, ARGV[2])
end

if ARGV[3] ~= '' then
    local ikey = 'lg:{ws:' .. ws .. '}:idem:' .. ARGV[3]
    local rec = redis.call('HMGET', ikey, 'state', 'id')
    if rec[1] == 'running' and rec[2] == ARGV[2] then
        redis.call('DEL', ikey)
    end
end

return 1
