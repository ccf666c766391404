-- Reconciliation, a Lines API paid add-on whose worker died before its
-- invoice was stored (a worker_lost entry: the request awaits payment
-- with no invoice) and whose invoice the run found paid at Stripe (paid
-- at finalization from the customer's credit balance, or on its hosted
-- page before anything named it). The customer paid for this request:
-- the run does in this one step what a live creation does with an
-- invoice paid at finalization, lr_invoice_store (the invoice named, the
-- answer kept under the idempotency key) then lr_resolve 'paid'
-- (provisioning/paid, its set-up entry, the pending marker cleared).
-- Only while the request still awaits payment with no invoice, or names
-- this very invoice (this step sent again, or a store that landed late:
-- the promotion alone, and only of a request awaiting payment; one
-- settled already is answered as settled, a canceled one is never
-- reopened here: {0}); a request released meanwhile, or naming another
-- invoice, is left alone and its entry stays for a human. The marks of
-- lr_void_fence go: the request names the invoice the run keeps.
-- A reissue_lapsed entry (a payment_link claim lapsed after Stripe made
-- its invoice, before its store; the customer paid that one) adopts it
-- as payment_link's own sweep does (LINK_STORE, LINK_RESOLVE): ARGV[12]
-- names the invoice the request named when the run read it (FENCE), and
-- Stripe said unpaid since; the paid one replaces it only while the
-- request still awaits payment on that very invoice (compared and set
-- here: a payment of the named one, or another claim's store, landing
-- first leaves the paid one a human's, {0}). Adopted, the claim's fields
-- go in the same step (reissueAt, reissueBy, sweepFrom, sweepTo), as
-- lr_reissue_store drops them: the run itself discards what the lapsed
-- claims left (it lists the request's invoices again after this step,
-- and its entry stays until that is done), so lr_settle must not mark
-- the request sweepPending for a second, needless reissue_lapsed. A
-- claim still held (reissueAt younger than ARGV[13], a payment_link
-- that took the lapsed one over since the run read the request) keeps
-- them: its invoice may be made after the run's list, and only the
-- mark has it looked for should that claim's worker die too.
-- The invoice's webhook index lg:invoice:<in> was written by nginx before
-- this step, and answered (no request names an invoice the index does
-- not know); on a cluster, the set-up member too (lr_setup.h).
-- KEYS[1] lg:{ws:W}:lr:<id>, KEYS[2] lg:{ws:W}:lines,
-- KEYS[3] lg:{ws:W}:live, KEYS[4] lg:{ws:W}:pending,
-- KEYS[5] lg:{ws:W}:idem:<ARGV[7]> (declared also without one, never
-- touched then), KEYS[6] lg:provisioning (one Redis only: not declared
-- on a cluster)
-- ARGV[1] ws, ARGV[2] id, ARGV[3] invoice id, ARGV[4] its hosted invoice
-- URL ("" when Stripe gave none), ARGV[5] now (ms), ARGV[6] now (ISO
-- 8601), ARGV[7] sha256hex of the idempotency key the request holds
-- ("" when none), ARGV[8] status, ARGV[9] body (the 201 of the request
-- paid, as a creation answers it), ARGV[10] TTL, ARGV[11] 'w' (one
-- Redis: the set-up entry appended here) or 'c' (a Redis Cluster: nginx
-- relays it after the step), ARGV[12] the invoice the paid one replaces
-- ("" or absent: none, the request must name no invoice), ARGV[13] the
-- ms a reissue claim holds (read only with ARGV[12])
-- Returns {1, changed (0/1: this step promoted the request), channelType,
-- lineType}, or {0} when the request moved on (gone, another state,
-- another invoice).
--#include lr_idem
--#include lr_settle
local lkey = KEYS[1]
local cur = redis.call('HMGET', lkey, 'provisioningStatus', 'invoiceId')

if cur[2] == ARGV[3] and cur[1] ~= 'awaiting_payment' then
    -- settled already (provisioning, active...), or canceled: never
    -- reopened here, a human's
    if cur[1] == 'canceled' then
        return {0}
    end
    return {1, 0, '', ''}
end

if cur[2] ~= ARGV[3] then
    if cur[1] ~= 'awaiting_payment' or (cur[2] and cur[2] ~= ARGV[12]) then
        return {0}
    end

    redis.call('HSET', lkey, 'invoiceId', ARGV[3], 'reconciledAt', ARGV[5])
    if ARGV[4] ~= '' then
        redis.call('HSET', lkey, 'paymentUrl', ARGV[4])
    elseif cur[2] then
        -- the replaced invoice's link is not this one's
        redis.call('HDEL', lkey, 'paymentUrl')
    end
    redis.call('HDEL', lkey, 'reservedAt', 'idem', 'voidingInvoice')

    if cur[2] then
        -- adopted over the named invoice: the lapsed claim's fields go,
        -- unless a claim is held (see above)
        local at = tonumber(redis.call('HGET', lkey, 'reissueAt') or '0')
                   or 0
        if at <= 0 or tonumber(ARGV[5]) - at >= tonumber(ARGV[13] or '0')
        then
            redis.call('HDEL', lkey, 'reissueAt', 'reissueBy', 'sweepFrom',
                       'sweepTo')
        end
    end

    -- the key the dead creation held "running": its answer, the request
    -- paid, as the creation would have kept it (its body's fingerprint)
    if ARGV[7] ~= '' then
        local rec = redis.call('HMGET', KEYS[5], 'state', 'id', 'fp')
        if rec[1] == 'running' and rec[2] == ARGV[2] then
            lg_lr_idem_done(KEYS[5], rec[3] or '', ARGV[8], ARGV[9],
                            ARGV[10])
        end
    end
end

local stream = ARGV[11] == 'w' and KEYS[6] or nil
local _, changed, channel, line_type = lg_lr_settle(stream, lkey, KEYS[2],
    KEYS[3], KEYS[4], ARGV[1], ARGV[2], 'paid', tonumber(ARGV[5]), ARGV[6])

return {1, changed and 1 or 0, channel or '', line_type or ''}
