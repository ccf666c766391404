-- payment_link: the new invoice is finalized; make it the request's.
-- Its webhook index lg:invoice:<new> (its own slot) was written by nginx
-- before this step, and answered (docs/data-model.md).
-- KEYS[1] lg:{ws:W}:lr:<id>
-- ARGV[1] ws, ARGV[2] id (not read), ARGV[3] invoiceSeq of the claim,
-- ARGV[4] new invoice id, ARGV[5] its hosted URL, ARGV[6] now (ms),
-- ARGV[7] now (ISO), ARGV[8] the Stripe customer (not read: what nginx
-- queues should a durable re-send of this step be refused), ARGV[9] the
-- old invoice (not read: nginx deletes its webhook index once this
-- answered LR_OK, the first send's answer or a re-send's), ARGV[10] its
-- status at Stripe ('open', or 'paid')
-- Returns {LR_OK}; {LR_WRONG_STATE, status} when the request moved on
-- meanwhile; {LR_BUSY} when another payment_link claimed the reissue
-- since (this claim was held past its hold); {LR_FENCED} when the claim
-- is still this one's but the invoice is being voided (lr_void_fence
-- added it to voidingInvoice: a reconciliation run, or a sweeper whose
-- own claim was then taken over by this one, found it unstored). The
-- module then voids the new invoice (queues it, when this was the step
-- sent again after its reply was lost); on LR_FENCED it also releases its
-- claim lapsed (lr_reissue_abort ARGV[5] '1'), which nobody else would:
-- the next claim looks for what is left at Stripe. A paid invoice is
-- never voided, so the fence does not refuse it. Stored, the marks go.
--#include lr_codes
local lkey = KEYS[1]
local h = redis.call('HMGET', lkey, 'provisioningStatus', 'invoiceSeq',
                     'invoiceId', 'voidingInvoice')
if h[3] == ARGV[4] then
    -- stored already: the same step sent again (its reply lost)
    return {LR_OK}
end
if h[1] ~= 'awaiting_payment' then
    return {LR_WRONG_STATE, h[1] or ''}
end
if h[2] ~= ARGV[3] then
    return {LR_BUSY}
end
if h[4] and ARGV[10] ~= 'paid'
   and string.find(' ' .. h[4] .. ' ', ' ' .. ARGV[4] .. ' ', 1, true)
then
    return {LR_FENCED}
end

redis.call('HSET', lkey, 'invoiceId', ARGV[4], 'paymentUrl', ARGV[5],
           'reconciledAt', ARGV[6], 'updatedAt', ARGV[7])
-- the marks go too, as lr_invoice_store drops them: no store of a marked
-- invoice can land from now on (a creation's finds an invoice named, an
-- older claim's another invoiceSeq), and left they would only grow with
-- each lapsed sweep; a run that fences after this step marks afresh
redis.call('HDEL', lkey, 'reissueAt', 'sweepFrom', 'sweepTo', 'reissueBy',
           'voidingInvoice')

return {LR_OK}
