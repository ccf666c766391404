-- Operator API: issue (rotate) a provisioning account's key id and secret.
-- The previous key id stops working in the same step.
-- KEYS[1] lg:{acct:A}, KEYS[2] lg:sbkey:<new key id>
-- ARGV[1] new key id, ARGV[2] sha256hex of the secret, ARGV[3] A,
-- ARGV[4] now, ISO 8601
-- Also deletes lg:sbkey:<old key id>, the id read from KEYS[1]: a global
-- key named by data (issue 10).
-- Returns 0 when the account does not exist (nothing written), else 1.
if redis.call("EXISTS", KEYS[1]) == 0 then
    return 0
end

local old = redis.call("HGET", KEYS[1], "key_id")
if old and redis.call("HGET", "lg:sbkey:" .. old, "account") == ARGV[3] then
    redis.call("DEL", "lg:sbkey:" .. old)
end

redis.call("HSET", KEYS[2], "account", ARGV[3], "secret_sha256", ARGV[2])
redis.call("HSET", KEYS[1], "key_id", ARGV[1], "updatedAt", ARGV[4])

return 1
