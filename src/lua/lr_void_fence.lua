-- Reconciliation, before a run voids or deletes the invoice of a Lines
-- API paid add-on (worker_lost, invoice_unrepaired): the request is read
-- again, in the workspace's slot, and fenced. Its worker may have been
-- alive after all: its lr_invoice_store, sent again after its reply was
-- lost (a durable write), can land after the sweep read the request. A
-- request that names the invoice is no longer lost: its client has (or
-- gets on retry) the invoice's link, which must stay payable. A request
-- still awaiting payment with no invoice is marked voidingInvoice: a
-- store landing after this step is refused (lr_invoice_store), so no
-- request ever names the invoice the run then discards. A request gone,
-- or in any other state, takes no store either: nothing to mark.
--
-- The same step reads only (ARGV[4] 'check') for an invoice the run
-- found paid: it is not discarded, so nothing is fenced (a store landing
-- later names the paid invoice, and its payment then settles the
-- request); a request that names it is the same stored_late.
--
-- KEYS[1] lg:{ws:W}:lr:<id>
-- ARGV[1] ws, ARGV[2] id (not read: every step of a request passes
-- them), ARGV[3] the invoice id the run found, ARGV[4] 'check' (paid) or
-- absent
--
-- Returns 1: discard it (paid: a human's); 0: the request names it
-- (stored late), keep it.
local lkey = KEYS[1]
local cur = redis.call('HMGET', lkey, 'provisioningStatus', 'invoiceId')
if cur[2] == ARGV[3] then
    return 0
end
if ARGV[4] == 'check' then
    return 1
end
if cur[1] == 'awaiting_payment' and not cur[2] then
    redis.call('HSET', lkey, 'voidingInvoice', ARGV[3])
end
return 1
