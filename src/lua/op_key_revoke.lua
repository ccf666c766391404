-- Operator API: revoke a workspace API key, first step (the workspace's
-- slot): the entry goes, and with it the key, from this moment on (the
-- workspace step of a Lines call that resolved the key checks its entry,
-- include/lr_gate). nginx then deletes the lookup lg:apikey:<digest> by a
-- durable write (its own slot); it read the digest before (HGET), so
-- that a lost reply deletes it too.
-- KEYS[1] lg:{ws:W}:keys
-- ARGV[1] key id
-- Publishes the digest on lg:keys:revoked (keys.c; a channel, not a
-- key): every worker subscribed there forgets the key at once
-- (linegate_api_key_cache's pushed time, auth.c).
-- Returns {0} when the key id is unknown, else {1, digest}.
local digest = redis.call("HGET", KEYS[1], ARGV[1])
if not digest then
    return {0}
end

redis.call("HDEL", KEYS[1], ARGV[1])
redis.call("PUBLISH", "lg:keys:revoked", digest)

return {1, digest}
