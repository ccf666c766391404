-- payment_link on a void or uncollectible invoice: claim the right to
-- issue a new one. Parallel calls get LR_BUSY; the old invoice's webhook
-- index is removed so that a late event about it cannot cancel the
-- request meanwhile (lr_reissue_abort puts it back).
-- KEYS[1] lg:{ws:W}:lr:<id>,
-- KEYS[2] lg:invoice:<the old invoice id>
-- ARGV[1] ws, ARGV[2] id, ARGV[3] the old invoice id, ARGV[4] now (ms),
-- ARGV[5] ms a claim holds
-- Returns {LR_OK, invoiceSeq}, {LR_WRONG_STATE, status} or {LR_BUSY}.
--#include lr_codes
local lkey = KEYS[1]
local h = redis.call('HMGET', lkey, 'provisioningStatus', 'invoiceId',
                     'reissueAt')
if h[1] ~= 'awaiting_payment' then
    return {LR_WRONG_STATE, h[1] or ''}
end

if h[2] ~= ARGV[3]
   or tonumber(ARGV[4]) - tonumber(h[3] or '0') < tonumber(ARGV[5])
then
    return {LR_BUSY}
end

redis.call('HSET', lkey, 'reissueAt', ARGV[4])
local seq = redis.call('HINCRBY', lkey, 'invoiceSeq', 1)
redis.call('DEL', KEYS[2])

return {LR_OK, seq}
