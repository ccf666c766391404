-- Operator API: add to a line's usage counters of one UTC day, the
-- workspace's step: nginx read the owner first (GET lg:line:<id>, its
-- own slot).
-- KEYS[1] lg:{ws:W}:lr:<id>, KEYS[2] lg:{ws:W}:usage:<id>:<YYYY-MM-DD>,
-- KEYS[3] lg:{ws:W}:usageidem:<id>:<sha256hex(idempotency key)> (declared
-- without a key too, as lg:{ws:W}:usageidem:<id>:, and then never touched)
-- ARGV[1] id, ARGV[2] YYYY-MM-DD, ARGV[3] new conversations,
-- ARGV[4] messages, ARGV[5] seconds the day's counters (and the key's
-- record) are kept, ARGV[6] the body's fingerprint, "" without a key
-- Returns {0} for an unknown line, {-1} for a key used with another
-- body (nothing added), {2, conversations, messages, day} for a key used
-- before with this body (the first call's answer, nothing added), else
-- {1, conversations, messages, day}.
--
-- The key is recorded in the step that adds: a report whose reply was
-- lost (a 503 after the script ran) and that is sent again with its key
-- finds the record and adds nothing.
--
-- The counters of the latest day are also kept in the line's own hash
-- ('_ud' the day, '_nc', '_tm'), so that reading a line takes one HGETALL;
-- the day's key keeps the history.
local lr = KEYS[1]
local idem = KEYS[3]
local fp = ARGV[6]

if redis.call("EXISTS", lr) == 0 then
    return {0}
end

if fp ~= "" then
    local kept = redis.call("HMGET", idem, "fp", "day", "nc", "tm")
    if kept[1] then
        if kept[1] ~= fp then
            return {-1}
        end
        return {2, tonumber(kept[3]), tonumber(kept[4]), kept[2]}
    end
end

local key = KEYS[2]
local c = redis.call("HINCRBY", key, "newConversationsCount", ARGV[3])
local m = redis.call("HINCRBY", key, "totalMessagesCount", ARGV[4])
redis.call("EXPIRE", key, ARGV[5])

local day = redis.call("HGET", lr, "_ud")
if not day or ARGV[2] >= day then
    redis.call("HSET", lr, "_ud", ARGV[2], "_nc", c, "_tm", m)
end

if fp ~= "" then
    redis.call("HSET", idem, "fp", fp, "day", ARGV[2], "nc", c, "tm", m)
    redis.call("EXPIRE", idem, ARGV[5])
end

return {1, c, m, ARGV[2]}
