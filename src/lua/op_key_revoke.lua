-- Operator API: revoke a workspace API key. The digest lookup goes first:
-- from this moment on Redis no longer knows the key.
-- KEYS[1] lg:{ws:W}:keys
-- ARGV[1] key id
-- Also deletes lg:apikey:<digest>, the digest read from KEYS[1]: a global
-- key named by data (issue 10).
-- Publishes the digest on lg:keys:revoked (keys.c; a channel, not a
-- key): every worker subscribed there forgets the key at once
-- (linegate_api_key_cache's pushed time, auth.c).
-- Returns 0 when the key id is unknown, else 1.
local digest = redis.call("HGET", KEYS[1], ARGV[1])
if not digest then
    return 0
end

redis.call("DEL", "lg:apikey:" .. digest)
redis.call("HDEL", KEYS[1], ARGV[1])
redis.call("PUBLISH", "lg:keys:revoked", digest)

return 1
