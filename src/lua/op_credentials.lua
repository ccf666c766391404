-- Operator API: issue (rotate) a provisioning account's key id and
-- secret, first step (the account's slot): the account names its new key
-- id, and from this moment on refuses every other one (the account step
-- of a preview, limits or confirm compares the presented key id with
-- key_id). Then nginx writes the new lg:sbkey:<key id> lookup (its own
-- slot) and deletes the previous one (op_sbkey_drop).
-- KEYS[1] lg:{acct:A}
-- ARGV[1] new key id, ARGV[2] now, ISO 8601
-- Returns {0} when the account does not exist (nothing written), else
-- {1, the previous key id or ""}.
if redis.call("EXISTS", KEYS[1]) == 0 then
    return {0}
end

local old = redis.call("HGET", KEYS[1], "key_id") or ""

redis.call("HSET", KEYS[1], "key_id", ARGV[1], "updatedAt", ARGV[2])

return {1, old}
