-- Operator API: issue a workspace API key. Only its digest is stored.
-- KEYS[1] lg:{ws:W}, KEYS[2] lg:{ws:W}:keys, KEYS[3] lg:apikey:<digest>
-- ARGV[1] key id, ARGV[2] sha256hex of the key, ARGV[3] W
-- Returns 0 when the workspace does not exist (nothing written), else 1.
if redis.call("EXISTS", KEYS[1]) == 0 then
    return 0
end

redis.call("HSET", KEYS[2], ARGV[1], ARGV[2])
redis.call("SET", KEYS[3], ARGV[3])

return 1
