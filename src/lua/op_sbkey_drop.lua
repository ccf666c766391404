-- Operator API, the last step of a credentials rotation (op_credentials):
-- the previous key id's lookup is deleted if it still names the account.
-- Sent as a durable write, so idempotent.
-- KEYS[1] lg:sbkey:<previous key id>
-- ARGV[1] the account
-- Returns 1 when deleted, else 0.
if redis.call("HGET", KEYS[1], "account") == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end

return 0
