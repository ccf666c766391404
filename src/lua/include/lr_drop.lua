-- Forget a reservation (an awaiting_payment request whose invoice was
-- never stored): the request, its listing entry and the workspace's
-- pending marker, in one step. Its owner index lg:line:<id> (another
-- slot) is left naming the workspace: every reader of the index answers
-- a request the workspace does not hold as unknown (docs/data-model.md).
-- lg_lr_drop(lkey, lines, pending, inflight, ws, id): lkey the request's
-- hash lg:{ws:W}:lr:<id>, lines and pending lg:{ws:W}:lines and :pending,
-- inflight lg:{fleet}:lr:inflight (KEYS[] of the caller; lkey derived
-- only where the caller's header says so)
local function lg_lr_drop(lkey, lines, pending, inflight, ws, id)
    redis.call('DEL', lkey)
    redis.call('ZREM', lines, id)
    redis.call('ZREM', inflight, ws .. ' ' .. id)
    if redis.call('GET', pending) == id then
        redis.call('DEL', pending)
    end
end
