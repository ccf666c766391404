-- Forget a reservation (an awaiting_payment request whose invoice was
-- never stored): the request, its listing entry, its owner index and the
-- workspace's pending marker, in one step.
local function lg_lr_drop(ws, id)
    local wkey = 'lg:{ws:' .. ws .. '}'
    redis.call('DEL', wkey .. ':lr:' .. id)
    redis.call('ZREM', wkey .. ':lines', id)
    redis.call('DEL', 'lg:line:' .. id)
    redis.call('ZREM', 'lg:lr:inflight', ws .. ' ' .. id)
    if redis.call('GET', wkey .. ':pending') == id then
        redis.call('DEL', wkey .. ':pending')
    end
end
