-- Before an invoice of a Lines API request that the request may not name
-- is voided or deleted, the request is read again, in the workspace's
-- slot, and fenced: by a reconciliation run (worker_lost,
-- invoice_unrepaired), and by payment_link taking over a lapsed claim,
-- for each invoice of the request it found unstored at Stripe. The
-- invoice's maker may be alive after all: a creation's lr_invoice_store,
-- sent again after its reply was lost (a durable write), can land after
-- the sweep read the request; so can a reissue's lr_reissue_store, its
-- claim lapsed but not yet taken over when it was sent. A request that
-- names the invoice keeps it: its client has (or gets on retry) the
-- invoice's link, which must stay payable. A request still awaiting
-- payment is marked: the invoice's id is added to its voidingInvoice
-- (ids separated by spaces), and a store of that invoice landing after
-- this step is refused (lr_invoice_store, lr_reissue_store), so no
-- request ever names the invoice the caller then discards. A store of
-- another invoice (a second draft the run did not find) is not refused.
-- A request gone, or in any other state, takes no store either: nothing
-- to mark.
--
-- The same step reads only (ARGV[4] 'check') for an invoice the run
-- found paid: it is not discarded, so nothing is fenced; a request that
-- names it is the same stored_late, and one still awaiting payment with
-- no invoice is answered with its hash, for the run to store the paid
-- invoice on it and promote it (lr_invoice_settle, a worker_lost entry);
-- one awaiting payment on another invoice with that invoice's id, for a
-- reissue_lapsed entry to adopt the paid one in its place once Stripe
-- says the named one is not paid (lr_invoice_settle's ARGV[12]), and the
-- request's invoiceSeq (the latest claim's, '0' when none): the paid one
-- is the lapsed claim's only if its metadata[invoice_seq] is one of the
-- claims since the named invoice, none past this one.
--
-- A sweeper (payment_link over a lapsed claim) passes its claim's
-- invoiceSeq (ARGV[5]): once another claim took it over (invoiceSeq moved
-- on: this one outlived its own hold mid-sweep), it marks nothing and
-- discards nothing (3): the live claim's own invoice, unstored yet, may be
-- the one it found, and that claim sweeps for itself.
--
-- KEYS[1] lg:{ws:W}:lr:<id>
-- ARGV[1] ws (not read: every step of a request passes it), ARGV[2] id,
-- ARGV[3] the invoice id the run found, ARGV[4] 'check' (paid) or absent
-- ('' when ARGV[5] follows), ARGV[5] the sweeping claim's invoiceSeq
-- (absent: a reconciliation run, no claim)
--
-- Returns 1: discard it (paid: the request moved on, a human's); 0: the
-- request names it (stored late), keep it; 3: the sweeper's claim was
-- taken over, keep it; 'check' only: {0, the request's
-- provisioningStatus} when it names it (awaiting_payment: its payment
-- never settled it, the run promotes it), {2, the request's hash, flat
-- (lr_line)}: it awaits payment with no invoice, {4, the invoice it
-- names, the request's invoiceSeq}: it awaits payment on another one.
--#include lr_line
local lkey = KEYS[1]
local cur = redis.call('HMGET', lkey, 'provisioningStatus', 'invoiceId',
                       'voidingInvoice')

if ARGV[4] == 'check' then
    if cur[2] == ARGV[3] then
        -- its status: one still awaiting payment on the paid invoice
        -- (its webhook came before the index) is the run's to promote
        return {0, cur[1] or ''}
    end
    if cur[1] == 'awaiting_payment' and not cur[2] then
        return {2, lg_lr_line(lkey, ARGV[2])}
    end
    if cur[1] == 'awaiting_payment' then
        return {4, cur[2], redis.call('HGET', lkey, 'invoiceSeq') or '0'}
    end
    return 1
end

if cur[2] == ARGV[3] then
    return 0
end

if ARGV[5] and ARGV[5] ~= ''
   and redis.call('HGET', lkey, 'invoiceSeq') ~= ARGV[5]
then
    return 3
end

if cur[1] == 'awaiting_payment' then
    local marks = cur[3]
    if not marks then
        redis.call('HSET', lkey, 'voidingInvoice', ARGV[3])
    elseif not string.find(' ' .. marks .. ' ', ' ' .. ARGV[3] .. ' ', 1,
                           true)
    then
        redis.call('HSET', lkey, 'voidingInvoice', marks .. ' ' .. ARGV[3])
    end
end
return 1
