-- Operator API: add to a line's usage counters of one UTC day, the
-- workspace's step: nginx read the owner first (GET lg:line:<id>, its
-- own slot).
-- KEYS[1] lg:{ws:W}:lr:<id>, KEYS[2] lg:{ws:W}:usage:<id>:<YYYY-MM-DD>
-- ARGV[1] id, ARGV[2] YYYY-MM-DD, ARGV[3] new conversations,
-- ARGV[4] messages, ARGV[5] seconds the day's counters are kept
-- Returns {0} for an unknown line, else {1, conversations, messages}.
--
-- The counters of the latest day are also kept in the line's own hash
-- ('_ud' the day, '_nc', '_tm'), so that reading a line takes one HGETALL;
-- the day's key keeps the history.
local lr = KEYS[1]
if redis.call("EXISTS", lr) == 0 then
    return {0}
end

local key = KEYS[2]
local c = redis.call("HINCRBY", key, "newConversationsCount", ARGV[3])
local m = redis.call("HINCRBY", key, "totalMessagesCount", ARGV[4])
redis.call("EXPIRE", key, ARGV[5])

local day = redis.call("HGET", lr, "_ud")
if not day or ARGV[2] >= day then
    redis.call("HSET", lr, "_ud", ARGV[2], "_nc", c, "_tm", m)
end

return {1, c, m}
