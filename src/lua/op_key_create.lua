-- Operator API: issue a workspace API key, first step (the workspace's
-- slot): the key's entry, so that it is listed and revocable before it
-- can authenticate. nginx then writes the lookup lg:apikey:<digest> (its
-- own slot) and only then answers with the key. Only its digest is
-- stored. A lookup without its entry never authenticates: the workspace
-- step of every Lines call that resolved the key checks the entry
-- (include/lr_gate).
-- KEYS[1] lg:{ws:W}, KEYS[2] lg:{ws:W}:keys
-- ARGV[1] key id, ARGV[2] sha256hex of the key
-- Returns 0 when the workspace does not exist, -1 when it has as many
-- keys as it may (nothing written either way: a Lines call whose key no
-- worker caches walks the workspace's keys, include/lr_gate), else 1.
local LG_WS_KEYS_MAX = 100  --#define NGX_HTTP_LINEGATE_WS_KEYS_MAX

if redis.call("EXISTS", KEYS[1]) == 0 then
    return 0
end

if redis.call("HLEN", KEYS[2]) >= LG_WS_KEYS_MAX then
    return -1
end

redis.call("HSET", KEYS[2], ARGV[1], ARGV[2])

return 1
