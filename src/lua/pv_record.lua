-- POST /accounts/lines/provision-confirm, last step: the subscription
-- exists, the reservation becomes the account's line, and the limit slot
-- counts from now (the moment the confirm succeeds).
--
-- KEYS[1]  lg:{acct:<A>}
-- ARGV[1]  worker id               ARGV[2]  subscription id
-- ARGV[3]  now, Unix ms            ARGV[4]  now, ISO 8601
--
-- Returns {1, phone number}, or {0} when no reservation is left (an
-- operator released it meanwhile): the caller queues the case.

local akey = KEYS[1]
local resv = akey .. ':resv:' .. ARGV[1]
local number = redis.call('HGET', resv, 'phone_number')

if not number then
    return {0}
end

redis.call('HSET', akey .. ':line:' .. ARGV[1], 'phone_number', number,
           'subscription_id', ARGV[2], 'createdAt', ARGV[4])
redis.call('DEL', resv)
redis.call('ZADD', akey .. ':prov', ARGV[3], ARGV[1])

return {1, number}
