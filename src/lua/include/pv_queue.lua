-- The reconciliation entry of one purchase, written at most once.
--
-- lg_pv_queue(mkey, stream, fields) -> 1 when written now, 0 when it
-- already was
--   mkey: the entry's marker, lg:{fleet}:q:<W>:inv_<...> (a KEYS[] of
--   lr_invoice_orphan) or lg:{fleet}:q:<A>:<worker>:<reason> (of
--   pv_settle), in the stream's slot; stream: the key of
--   lg:{fleet}:reconcile (a KEYS[] of the caller); fields: the entry's
--   flat {name, value, ...} list (account, subscription_id, phone_number,
--   worker_id, reason, idempotency_key, customer, at).
--   The marker remembers the entry for 7 days, so that a durable write
--   sent again after a lost answer does not queue the entry twice: as
--   long as a purchase's outbox (pv_record.lua), written before it.
--   keep (lr_invoice_orphan, an entry naming an invoice): the marker
--   never expires, and one found in place is kept for good too (one set
--   with 7 days, by a module from before 2026-11-29 or as
--   invoice_unrepaired): an invoice is queued once for as long as its
--   request exists, which a request that stored an invoice always does
--   (docs/data-model.md). Until 2026-11-29 it lasted 7 days, and a sweep
--   after that queued a paid invoice for a human a second time.

local function lg_pv_queue(mkey, stream, fields, keep)
    if keep then
        if not redis.call('SET', mkey, '1', 'NX') then
            redis.call('PERSIST', mkey)
            return 0
        end

    elseif not redis.call('SET', mkey, '1', 'NX', 'EX', 604800) then
        return 0
    end

    redis.call('XADD', stream, '*', unpack(fields))

    return 1
end
