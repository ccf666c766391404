-- Operator API: provisioning -> active | failed, checked and written in
-- one step, the workspace's: nginx read the owner first (GET
-- lg:line:<id>, its own slot).
-- KEYS[1] lg:{ws:W}:lr:<id>, KEYS[2] lg:{ws:W}:live (the workspace's
-- index of live requests, which a creation counts: a failed line leaves
-- it here; lg:{ws:W}:lines keeps it, by-user lists it, SPEC 2.8)
-- ARGV[1] id, ARGV[2] "active" or "failed", ARGV[3] now, ISO 8601,
-- ARGV[4] active: the phone ("" when none given); failed: the reason,
-- ARGV[5] W
-- Returns {0} unknown line, {-1, status} not in provisioning,
-- {-2} a phone line without a number needs one, {-3} a phone number
-- given for a line that is not a phone line, else {1, W, HGETALL}.
local lr = KEYS[1]
local cur = redis.call("HMGET", lr, "provisioningStatus", "channelType",
                       "phone")
if not cur[1] then
    return {0}
end

if cur[1] ~= "provisioning" then
    return {-1, cur[1]}
end

if ARGV[2] == "active" then
    if ARGV[4] ~= "" then
        if cur[2] ~= "phone" then
            return {-3}
        end
        redis.call("HSET", lr, "phone", ARGV[4])
    elseif cur[2] == "phone" and (not cur[3] or cur[3] == "") then
        return {-2}
    end
else
    redis.call("HSET", lr, "failureReason", ARGV[4])
end

redis.call("HSET", lr, "provisioningStatus", ARGV[2], "updatedAt", ARGV[3])
if ARGV[2] == "failed" then
    redis.call("ZREM", KEYS[2], ARGV[1])
end

return {1, ARGV[5], redis.call("HGETALL", lr)}
