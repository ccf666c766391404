-- Operator API: create or update a workspace or account hash.
-- KEYS[1]  the hash (lg:{ws:W} or lg:{acct:A})
-- ARGV[1]  now, ISO 8601
-- ARGV[2]  the field a creation must set ("" when none is required)
-- ARGV[3..] triples: field, "set" or "del", value
-- Returns {-1} when the hash does not exist and the required field is
-- not set (nothing written), else {1, created (0/1), HGETALL}.
local key = KEYS[1]
local exists = redis.call("EXISTS", key) == 1

if not exists and ARGV[2] ~= "" then
    local found = false
    for i = 3, #ARGV, 3 do
        if ARGV[i] == ARGV[2] and ARGV[i + 1] == "set" then
            found = true
        end
    end
    if not found then
        return {-1}
    end
end

for i = 3, #ARGV, 3 do
    if ARGV[i + 1] == "set" then
        redis.call("HSET", key, ARGV[i], ARGV[i + 2])
    else
        redis.call("HDEL", key, ARGV[i])
    end
end

if not exists then
    redis.call("HSET", key, "createdAt", ARGV[1])
end
redis.call("HSET", key, "updatedAt", ARGV[1])

return {1, exists and 0 or 1, redis.call("HGETALL", key)}
