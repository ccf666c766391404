-- Operator API: record a line's health check, the workspace's step: nginx
-- read the owner first (GET lg:line:<id>, its own slot).
-- KEYS[1] lg:{ws:W}:lr:<id>
-- ARGV[1] id, ARGV[2] "healthy" or "unhealthy", ARGV[3] now, ISO 8601
-- Returns 0 for an unknown line, else 1.
if redis.call("EXISTS", KEYS[1]) == 0 then
    return 0
end

redis.call("HSET", KEYS[1], "healthStatus", ARGV[2], "healthCheckedAt",
           ARGV[3])

return 1
