-- Operator API: record a line's health check.
-- KEYS[1] lg:line:<id>; the workspace's keys lg:{ws:W}:lr:<id> (and
-- :usage:...) are derived from the W it holds: another slot (issue 10).
-- ARGV[1] id, ARGV[2] "healthy" or "unhealthy", ARGV[3] now, ISO 8601
-- Returns 0 for an unknown line, else 1.
local w = redis.call("GET", KEYS[1])
if not w then
    return 0
end

local lr = "lg:{ws:" .. w .. "}:lr:" .. ARGV[1]
if redis.call("EXISTS", lr) == 0 then
    return 0
end

redis.call("HSET", lr, "healthStatus", ARGV[2], "healthCheckedAt", ARGV[3])

return 1
