-- POST /api/line-requests failed after lr_create (Stripe refused or could
-- not be reached, or the answer could not be built): drop the
-- reservation, if this call made one and it still has no invoice, and
-- free the idempotency lock so that the client may retry, in one step.
-- ARGV[1] ws, ARGV[2] id, ARGV[3] sha256hex of the idempotency key ("")
--#include lr_drop
local lkey = 'lg:{ws:' .. ARGV[1] .. '}:lr:' .. ARGV[2]
local cur = redis.call('HMGET', lkey, 'provisioningStatus', 'invoiceId')
if cur[1] == 'awaiting_payment' and not cur[2] then
    lg_lr_drop(ARGV[1], ARGV[2])
end

if ARGV[3] ~= '' then
    local ikey = 'lg:{ws:' .. ARGV[1] .. '}:idem:' .. ARGV[3]
    if redis.call('HGET', ikey, 'state') == 'running' then
        redis.call('DEL', ikey)
    end
end

return 1
