-- Forget a reservation (an awaiting_payment request whose invoice was
-- never stored): the request, its listing entry and the workspace's
-- pending marker, in one step. Its owner index lg:line:<id> (another
-- slot) is left naming the workspace: every reader of the index answers
-- a request the workspace does not hold as unknown (docs/data-model.md).
-- Its member of the journal lg:{fleet}:lr:inflight (the fleet's slot) is
-- not touched: its worker removes it once this step answered, or the
-- reconciliation sweep does, finding the request gone.
-- lg_lr_drop(lkey, lines, live, pending, id): lkey the request's hash
-- lg:{ws:W}:lr:<id>, lines, live and pending lg:{ws:W}:lines, :live and
-- :pending (KEYS[] of the caller; lkey derived only where the caller's
-- header says so)
local function lg_lr_drop(lkey, lines, live, pending, id)
    redis.call('DEL', lkey)
    redis.call('ZREM', lines, id)
    redis.call('ZREM', live, id)
    if redis.call('GET', pending) == id then
        redis.call('DEL', pending)
    end
end
