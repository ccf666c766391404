-- The reconciliation entry of one purchase, written at most once.
--
-- lg_pv_queue(tkey, worker, stream, fields) -> 1 when written now, 0 when
-- it already was
--   tkey: the tenant's key (lg:{acct:A} or lg:{ws:W}); stream: the key of
--   lg:{fleet}:reconcile (a KEYS[] of the caller); fields: the entry's flat
--   {name, value, ...} list (account, subscription_id, phone_number,
--   worker_id, reason, idempotency_key, customer, at).
--   <tkey>:reconcile:w:<worker id>, under the tenant's tag, remembers the
--   entry for 7 days, so that a write re-sent after a lost answer (the
--   durable writes of pv_record and pv_release) does not queue the
--   purchase twice.

local function lg_pv_queue(tkey, worker, stream, fields)
    if not redis.call('SET', tkey .. ':reconcile:w:' .. worker, '1',
                      'NX', 'EX', 604800) then
        return 0
    end

    redis.call('XADD', stream, '*', unpack(fields))

    return 1
end
