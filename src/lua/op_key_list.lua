-- Operator API: the key ids of a workspace, sorted.
-- KEYS[1] lg:{ws:W}, KEYS[2] lg:{ws:W}:keys
-- Returns nil when the workspace does not exist.
if redis.call("EXISTS", KEYS[1]) == 0 then
    return false
end

local ids = redis.call("HKEYS", KEYS[2])
table.sort(ids)

return ids
