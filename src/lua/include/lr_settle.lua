-- Settle a line request that awaits payment, atomically with the outbox.
--
-- lg_lr_settle(ws, id, outcome, now_ms, now_iso) -> status, changed
--   outcome 'paid': awaiting_payment -> provisioning (paymentStatus paid),
--                   and the line is appended to the provisioning stream;
--   outcome 'void': awaiting_payment -> canceled (paymentStatus failed).
-- Either way the workspace's pending marker is cleared if it names this
-- request. Any other current status is left alone (changed = false), so a
-- webhook racing a poll or a cancel cannot apply twice.
-- Returns nil when the request does not exist.

local function lg_lr_settle(ws, id, outcome, now_ms, now_iso)
    local wkey = 'lg:{ws:' .. ws .. '}'
    local lkey = wkey .. ':lr:' .. id
    local cur = redis.call('HMGET', lkey, 'provisioningStatus',
                           'channelType', 'lineType')
    if not cur[1] then
        return nil, false
    end
    if cur[1] ~= 'awaiting_payment' then
        return cur[1], false
    end

    local status
    if outcome == 'paid' then
        status = 'provisioning'
        redis.call('HSET', lkey, 'provisioningStatus', status,
                   'paymentStatus', 'paid', 'updatedAt', now_iso)
        redis.call('XADD', 'lg:provisioning', '*', 'workspace', ws,
                   'id', id, 'channelType', cur[2] or '',
                   'lineType', cur[3] or '', 'at', now_iso)
    else
        status = 'canceled'
        redis.call('HSET', lkey, 'provisioningStatus', status,
                   'paymentStatus', 'failed', 'updatedAt', now_iso)
    end

    if redis.call('GET', wkey .. ':pending') == id then
        redis.call('DEL', wkey .. ':pending')
    end

    return status, true
end
