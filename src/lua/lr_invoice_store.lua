-- POST /api/line-requests, add-on: the invoice of a reservation exists
-- and is finalized; store it and keep the answer under the idempotency
-- key, in one step of the workspace's slot.
-- The invoice's webhook index lg:invoice:<invoice id> (its own slot) was
-- written by nginx before this step, and answered: a request never names
-- an invoice the index does not know (docs/data-model.md). Its member of
-- the journal lg:{fleet}:lr:inflight (another slot) is removed by nginx
-- once this step answered (a durable ZREM).
-- KEYS[1] lg:{ws:W}:lr:<id>, KEYS[2] lg:{ws:W}:idem:<ARGV[6]> (declared
-- also without one, never touched then)
-- ARGV[1] ws, ARGV[2] id (not read: every step of a request passes
-- them), ARGV[3] invoice id, ARGV[4] hosted invoice URL, ARGV[5] now
-- (ms), ARGV[6] sha256hex of the idempotency key ("" when none), ARGV[7]
-- fingerprint, ARGV[8] status, ARGV[9] body, ARGV[10] TTL, ARGV[11] the
-- invoice's status at Stripe ('paid', or anything else; absent)
-- Returns 1 (also when it was stored already: the step is sent again when
-- its reply is lost), or 0 when the reservation is gone (abandoned as
-- stale), or a reconciliation run is voiding this invoice (lr_void_fence
-- marked its id in voidingInvoice: it found the request lost while this
-- step was still on its way): the module then voids the invoice, or,
-- when this was the store sent again (its first reply lost: a durable
-- write), queues it as invoice_unrepaired for a reconciliation run to
-- discard. Only the invoices marked are refused: a store of another one
-- names it, and the marks go with it (the request, naming an invoice,
-- refuses every other store from then on). A paid invoice is never
-- voided, so the marks do not refuse it (as lr_reissue_store): a run
-- that fenced it, and then found it paid, keeps it too.
-- A run's own store of a paid invoice is lr_invoice_settle.
--#include lr_idem
local lkey = KEYS[1]
local cur = redis.call('HMGET', lkey, 'provisioningStatus', 'invoiceId',
                       'voidingInvoice')
if cur[2] == ARGV[3] then
    -- stored already: this is the same step sent again (its reply lost)
    return 1
end
if cur[1] ~= 'awaiting_payment' or cur[2] then
    return 0
end
if cur[3] and ARGV[11] ~= 'paid'
   and string.find(' ' .. cur[3] .. ' ', ' ' .. ARGV[3] .. ' ', 1, true)
then
    return 0
end

redis.call('HSET', lkey, 'invoiceId', ARGV[3], 'paymentUrl', ARGV[4],
           'reconciledAt', ARGV[5])
-- no longer a reservation without an invoice; the index's score, the
-- creation's, is read back from createdAt (lr_settle), not from here
redis.call('HDEL', lkey, 'reservedAt', 'idem', 'voidingInvoice')

if ARGV[6] ~= '' then
    lg_lr_idem_done(KEYS[2], ARGV[7], ARGV[8], ARGV[9], ARGV[10])
end

return 1
