-- POST /api/line-requests failed after lr_create was sent (Stripe refused
-- or could not be reached, the answer could not be built, or lr_create's
-- own reply never came): drop the reservation, if this call made one and
-- it still has no invoice, and free the idempotency key it holds, in one
-- step. Idempotent: sent again until Redis answers, and safe whichever of
-- lr_create and this one Redis runs first: the mark lg:{ws:W}:lrvoid:<id>
-- makes an lr_create still queued do nothing.
-- Its member of the journal lg:{fleet}:lr:inflight (another slot) is
-- removed by nginx once this step answered (a durable ZREM).
-- KEYS[1] lg:{ws:W}:lrvoid:<id>, KEYS[2] lg:{ws:W}:lr:<id>,
-- KEYS[3] lg:{ws:W}:lines, KEYS[4] lg:{ws:W}:live,
-- KEYS[5] lg:{ws:W}:pending, KEYS[6] lg:{ws:W}:idem:<ARGV[3]> (declared
-- also without one, never touched then)
-- ARGV[1] ws, ARGV[2] id, ARGV[3] sha256hex of the idempotency key (""),
-- ARGV[4] ms the mark lasts
-- Returns 1 when the workspace holds no request of that id (its owner
-- index lg:line:<id>, another slot, may go: the mark keeps lr_create from
-- making it later), 0 when it does (created, or already invoiced).
--#include lr_drop
redis.call('SET', KEYS[1], '1', 'PX', tonumber(ARGV[4]))

local lkey = KEYS[2]
local cur = redis.call('HMGET', lkey, 'provisioningStatus', 'invoiceId')
if cur[1] == 'awaiting_payment' and not cur[2] then
    lg_lr_drop(lkey, KEYS[3], KEYS[4], KEYS[5], ARGV[2])
end

if ARGV[3] ~= '' then
    local ikey = KEYS[6]
    local rec = redis.call('HMGET', ikey, 'state', 'id')
    if rec[1] == 'running' and rec[2] == ARGV[2] then
        redis.call('DEL', ikey)
    end
end

return redis.call('EXISTS', lkey) == 1 and 0 or 1
