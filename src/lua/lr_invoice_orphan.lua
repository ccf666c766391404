-- POST /api/line-requests and payment_link: an invoice the request made
-- could not be discarded (Stripe failed every repair for the request's
-- time), or a draft may exist whose id was never seen. It is queued on
-- the reconcile stream, at most once, for a reconciliation run to delete
-- or void
-- (docs/operator.md, "Reconciliation"). Idempotent: a durable write.
-- The same for a request that ended (paid, canceled) while its hash
-- still held a payment_link's claim that lapsed (reissueAt): the
-- invoices that claim may have left unstored are looked for by the run
-- (ARGV[6] reissue_lapsed, ARGV[3] "").
-- And the invoice of a canceled request that its customer paid (an
-- uncollectible one paid late: SPEC 2.3 keeps the request canceled),
-- for a human (ARGV[6] paid_after_cancel, KEYS[1] ...:paid_<ARGV[3]>).
--
-- KEYS[1] lg:{fleet}:q:<W>:inv_<ARGV[3], or draft_<ARGV[2]> when
-- ARGV[3] is ""> (lapsed_<ARGV[2]> for reissue_lapsed, paid_<ARGV[3]>
-- for paid_after_cancel), the entry's
-- marker (pv_queue), KEYS[2] lg:{fleet}:reconcile: one slot, the
-- fleet's (the marker beside the stream it guards, as pv_settle's
-- lg:{fleet}:q:<A>:... markers)
-- ARGV[1] ws, ARGV[2] request id, ARGV[3] invoice id ("" never seen),
-- ARGV[4] Stripe customer, ARGV[5] the time its invoices are looked for
-- from (ISO 8601: the queuing's, or the request's creation), ARGV[6]
-- the reason (absent: invoice_unrepaired), ARGV[7] (reissue_lapsed,
-- optional) the latest claim's time (ISO 8601: sweepPendingTo), the
-- entry's 'to': the run lists the customer's invoices until an hour
-- after it rather than until now
--
-- The marker of an entry naming an invoice (inv_<in>, paid_<in>) never
-- expires: an invoice, paid ones left for a human above all, is queued
-- once for as long as its request exists (include/pv_queue.lua); those
-- of a draft never seen (inv_draft_<id>) and of reissue_lapsed
-- (lapsed_<id>) last 7 days, a durable write's resend. A reconciliation
-- run's reissue_lapsed or worker_lost entry that leaves a paid invoice
-- for a human takes the same inv_<in> (or paid_<in>) marker
-- (lr_paid_claim, value its entry id): queued after it, the invoice is
-- queued before (0), one entry an invoice.
--
-- Returns 1 when queued now, 0 when it was already.

--#include pv_queue

local fields = {
    'workspace', ARGV[1], 'line_request_id', ARGV[2],
    'invoice_id', ARGV[3], 'reason', ARGV[6] or 'invoice_unrepaired',
    'customer', ARGV[4], 'at', ARGV[5]}
if ARGV[7] and ARGV[7] ~= '' then
    fields[#fields + 1] = 'to'
    fields[#fields + 1] = ARGV[7]
end

return lg_pv_queue(KEYS[1], KEYS[2], fields, ARGV[3] ~= '')
