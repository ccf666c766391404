-- A line request as the module renders it: the hash, flat, with its id
-- as '_id' and the usage counters of one UTC day as '_nc' (new
-- conversations) and '_tm' (total messages) appended. nil when the
-- request does not exist.
local function lg_lr_line(wkey, id, date)
    local h = redis.call('HGETALL', wkey .. ':lr:' .. id)
    if #h == 0 then
        return nil
    end

    local u = redis.call('HMGET', wkey .. ':usage:' .. id .. ':' .. date,
                         'newConversationsCount', 'totalMessagesCount')
    h[#h + 1] = '_id'
    h[#h + 1] = id
    h[#h + 1] = '_nc'
    h[#h + 1] = u[1] or '0'
    h[#h + 1] = '_tm'
    h[#h + 1] = u[2] or '0'

    return h
end
