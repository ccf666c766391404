-- payment_link on a void or uncollectible invoice: claim the right to
-- issue a new one. Parallel calls get LR_BUSY. The old invoice keeps its
-- webhook index lg:invoice:<old> while the claim is held: wh_invoice
-- refuses a void of it while reissueAt is younger than ARGV[5] (the void
-- of an uncollectible one that nginx sends next must not cancel the
-- request), a payment of it settles the request, and a claim whose
-- worker died lapses after ARGV[5], the old index in place. nginx
-- deletes the old index once lr_reissue_store named the new invoice.
--
-- A reissueAt found here is a claim that ended without its store or its
-- release: its worker died (or outlived the hold, or released it before
-- it could look, reissueAt 0), and Stripe may hold an invoice it made
-- that no request names. Taken over, the claim says so (lapsed 1): nginx
-- discards those invoices before it issues another (line_manage.c, the
-- sweep); invoiceSeq + 1 refuses the lapsed claim's store from now on.
-- What it may have left was made after its reissueAt: the earliest claim
-- not swept yet is kept in sweepFrom (ms; a claim released lapsed leaves
-- reissueAt 0, its time there), so that the sweep lists the customer's
-- invoices from then on, not over the request's whole life. sweepFrom
-- goes once a sweep is done (lr_reissue_store, lr_reissue_abort).
-- The latest such claim is kept in sweepTo (ms) likewise: what a claim
-- left was made within a bounded time of it, so that the sweep lists a
-- window of the customer's invoices that does not grow with the time
-- since (a customer billed often would otherwise fill its pages).
--
-- The claim also keeps who took it (reissueBy, ARGV[6]: unique to the
-- call): a caller that does not know whether its claim was taken (the
-- reply lost, or no replica acknowledged it) releases it by that name
-- (lr_reissue_abort), so that the next caller need not wait for its hold.
-- KEYS[1] lg:{ws:W}:lr:<id>
-- ARGV[1] ws, ARGV[2] id (not read), ARGV[3] the old invoice id,
-- ARGV[4] now (ms), ARGV[5] ms a claim holds, ARGV[6] the caller's name
-- Returns {LR_OK, invoiceSeq, lapsed (1 or 0), sweepFrom (ms, 0:
-- unknown), sweepTo (ms, 0: unknown)}, {LR_WRONG_STATE, status} or
-- {LR_BUSY}.
--#include lr_codes
local lkey = KEYS[1]
local h = redis.call('HMGET', lkey, 'provisioningStatus', 'invoiceId',
                     'reissueAt', 'sweepFrom', 'sweepTo')
if h[1] ~= 'awaiting_payment' then
    return {LR_WRONG_STATE, h[1] or ''}
end

if h[2] ~= ARGV[3]
   or tonumber(ARGV[4]) - tonumber(h[3] or '0') < tonumber(ARGV[5])
then
    return {LR_BUSY}
end

local from, to = 0, 0
if h[3] then
    local at = tonumber(h[3]) or 0
    from = tonumber(h[4] or '0') or 0
    to = tonumber(h[5] or '0') or 0
    if at > 0 and (from == 0 or at < from) then
        from = at
        redis.call('HSET', lkey, 'sweepFrom', from)
    end
    if at > to then
        to = at
        redis.call('HSET', lkey, 'sweepTo', to)
    end
end

redis.call('HSET', lkey, 'reissueAt', ARGV[4], 'reissueBy', ARGV[6])
local seq = redis.call('HINCRBY', lkey, 'invoiceSeq', 1)

return {LR_OK, seq, h[3] and 1 or 0, from, to}
