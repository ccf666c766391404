-- payment_link on a void or uncollectible invoice: claim the right to
-- issue a new one. Parallel calls get LR_BUSY. Once the claim is held,
-- nginx removes the old invoice's webhook index lg:invoice:<old> (its own
-- slot, a step of its own) so that a late event about it (the void of an
-- uncollectible one that follows) cannot cancel the request meanwhile;
-- a reissue that does not store a new invoice puts it back.
-- KEYS[1] lg:{ws:W}:lr:<id>
-- ARGV[1] ws, ARGV[2] id (not read), ARGV[3] the old invoice id,
-- ARGV[4] now (ms), ARGV[5] ms a claim holds
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

return {LR_OK, seq}
