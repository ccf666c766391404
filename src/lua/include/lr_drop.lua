-- Forget a reservation (an awaiting_payment request whose invoice was
-- never stored): the request, its listing entry and the workspace's
-- pending marker, in one step. Its owner index lg:line:<id> (another
-- slot) is left naming the workspace: every reader of the index answers
-- a request the workspace does not hold as unknown (docs/data-model.md).
-- lg_lr_drop(wkey, ws, id, inflight): wkey lg:{ws:W}, inflight the key of
-- lg:{fleet}:lr:inflight (KEYS[] of the caller).
local function lg_lr_drop(wkey, ws, id, inflight)
    redis.call('DEL', wkey .. ':lr:' .. id)
    redis.call('ZREM', wkey .. ':lines', id)
    redis.call('ZREM', inflight, ws .. ' ' .. id)
    if redis.call('GET', wkey .. ':pending') == id then
        redis.call('DEL', wkey .. ':pending')
    end
end
