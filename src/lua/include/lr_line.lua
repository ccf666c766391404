-- A line request as the module renders it: the hash, flat, with its id
-- appended as '_id'. The hash holds the usage counters of the latest day
-- with any ('_ud' the day, '_nc' new conversations, '_tm' total messages:
-- op_line_usage.lua), which nginx shows when '_ud' is today. nil when the
-- request does not exist. lkey: lg:{ws:W}:lr:<id>.
local function lg_lr_line(lkey, id)
    local h = redis.call('HGETALL', lkey)
    if #h == 0 then
        return nil
    end

    h[#h + 1] = '_id'
    h[#h + 1] = id

    return h
end
