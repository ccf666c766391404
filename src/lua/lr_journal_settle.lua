-- Reconciliation, the sweep of the Lines API's journal (the fleet's
-- slot): a member "<W> <id>" of lg:{fleet}:lr:inflight older than
-- linegate_reconcile_lost_after is a paid add-on whose worker died (or
-- whose removal was lost) between its journal's write and its settling
-- (lr_invoice_store or lr_release answered). nginx read the request
-- first, in the workspace's slot; this step removes the member and, only
-- if it removed it (the de-duplication: a run sent again, or the worker
-- settling meanwhile, finds it gone), queues the worker_lost entry nginx
-- built from what it read: the request awaiting payment with no invoice,
-- Stripe maybe holding an invoice no request names. A request found in
-- any other state, or gone, queues nothing: the member just goes.
-- A reissue claim's member "<W> <id> r<invoiceSeq>" (payment_link's,
-- line_manage.c) is settled the same way: nginx read the request's
-- claim, and queues reissue_lapsed for one awaiting payment whose claim
-- lapsed (reconcile.c, reconcile_lapsed_found); a claim still held is
-- not sent here (the member stays).
--
-- KEYS[1]  lg:{fleet}:lr:inflight   KEYS[2]  lg:{fleet}:reconcile
-- ARGV[1]  the member, "<workspace> <request id>" (a reissue claim's:
--          "<workspace> <request id> r<invoiceSeq>")
-- ARGV[2..] the worker_lost entry's fields, flat {name, value, ...}
--          (workspace, line_request_id, reason, idempotency_key,
--          customer, at), or the reissue_lapsed entry's (workspace,
--          line_request_id, reason, customer, at[, to]); none: nothing
--          to queue
--
-- Returns {removed: 1 | 0, queued: 1 | 0}.

local removed = redis.call('ZREM', KEYS[1], ARGV[1])
local queued = 0

if removed == 1 and #ARGV > 1 then
    redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
    queued = 1
end

return {removed, queued}
