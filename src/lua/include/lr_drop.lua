-- Forget a reservation (an awaiting_payment request whose invoice was
-- never stored): the request, its listing entry, its owner index and the
-- workspace's pending marker, in one step.
-- lg_lr_drop(wkey, ws, id, inflight): wkey lg:{ws:W}, inflight the key of
-- lg:{fleet}:lr:inflight (KEYS[] of the caller). lg:line:<id> is named from the
-- id, which may be one read from data (issue 10).
local function lg_lr_drop(wkey, ws, id, inflight)
    redis.call('DEL', wkey .. ':lr:' .. id)
    redis.call('ZREM', wkey .. ':lines', id)
    redis.call('DEL', 'lg:line:' .. id)
    redis.call('ZREM', inflight, ws .. ' ' .. id)
    if redis.call('GET', wkey .. ':pending') == id then
        redis.call('DEL', wkey .. ':pending')
    end
end
