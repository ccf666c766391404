-- Reconciliation: a reissue_lapsed or worker_lost entry leaves a paid
-- invoice of its request for a human (invoice_paid, or held
-- named_missing). The invoice's own marker, lg:{fleet}:q:<W>:inv_<in>
-- (lr_invoice_orphan's; paid_<in> for an invoice its canceled request
-- names, the paid_after_cancel one), says who presents it: set by a
-- payment_link, cancel or GET sweep that queued it (or by its queuing as
-- invoice_unrepaired, a creation's refused store's; the webhook's or a
-- GET's paid_after_cancel), value '1', the invoice has an entry of its
-- own and the run passes over it; none, or
-- this entry's, the run takes it (ARGV[1], the entry's stream id: the
-- same for every run of the entry; a held copy is never looked at
-- again), and a sweep after it finds the invoice queued before
-- (lr_invoice_orphan answers 0): one entry a paid invoice; another
-- reissue_lapsed entry of the request passes over it too. The marker
-- never expires (a PERSIST of one set with 7 days), as
-- lr_invoice_orphan's of an invoice.
--
-- KEYS[1] lg:{fleet}:q:<W>:inv_<in> (or paid_<in>): the fleet's slot
-- ARGV[1] the owner: the entry's id on lg:{fleet}:reconcile
--
-- Returns 1: the entry's (taken now or by an earlier run), 0: another's.

local v = redis.call('GET', KEYS[1])

if not v then
    redis.call('SET', KEYS[1], ARGV[1])
    return 1
end

redis.call('PERSIST', KEYS[1])

if v == ARGV[1] then
    return 1
end

return 0
