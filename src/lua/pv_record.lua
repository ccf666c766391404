-- POST /accounts/lines/provision-confirm, last step: the subscription
-- exists, the reservation becomes the account's line, and the limit slot
-- counts from now (the moment the confirm succeeds). When it cannot, the
-- purchase is queued on the reconcile stream in the same step: whatever
-- happens, one run of this script leaves the paid purchase written down.
--
-- Idempotent, so that it can be sent again after a lost answer (a
-- timeout, a dropped connection, the request gone: it is then a durable
-- write, re-sent until Redis answers): a second run finds the line it
-- recorded, or the entry it queued, and changes nothing.
--
-- KEYS[1]  lg:{acct:<A>}            KEYS[2]  lg:{fleet}:pv:inflight
-- KEYS[3]  lg:{fleet}:reconcile
-- Derived from KEYS[1] (its slot): <KEYS[1]>:resv:<worker>,
-- :line:<worker>, :prov, :reconcile:w:<worker>.
-- ARGV[1]  worker id               ARGV[2]  subscription id
-- ARGV[3]  now, Unix ms            ARGV[4]  account id
-- ARGV[5]  Stripe Idempotency-Key  ARGV[6]  Stripe customer
-- ARGV[7]  now, ISO 8601
--
-- Returns {1, phone number} recorded (now or by an earlier run), or
-- {0, reason} queued for reconciliation: "reservation_missing" (an
-- operator released the reservation meanwhile) or "record_failed" (the
-- line could not be written; the reservation and the slot are kept).

--#include pv_queue

local akey = KEYS[1]

-- whatever follows, the purchase is recorded or queued: no longer lost
redis.call('ZREM', KEYS[2], ARGV[4] .. ' ' .. ARGV[1])
local resv = akey .. ':resv:' .. ARGV[1]
local lkey = akey .. ':line:' .. ARGV[1]

local function queue(reason, number)
    lg_pv_queue(akey, ARGV[1], KEYS[3], {
        'account', ARGV[4], 'subscription_id', ARGV[2],
        'phone_number', number or '', 'worker_id', ARGV[1],
        'reason', reason, 'idempotency_key', ARGV[5],
        'customer', ARGV[6], 'at', ARGV[7]})
    return {0, reason}
end

local number = redis.call('HGET', resv, 'phone_number')

if not number then
    -- recorded by an earlier run of this script?
    local t = redis.call('TYPE', lkey)
    if (t.ok or t) == 'hash'
       and redis.call('HGET', lkey, 'subscription_id') == ARGV[2]
    then
        return {1, redis.call('HGET', lkey, 'phone_number')}
    end

    return queue('reservation_missing')
end

local ok = redis.pcall('HSET', lkey, 'phone_number', number,
                       'subscription_id', ARGV[2], 'createdAt', ARGV[7])

if type(ok) == 'table' and ok.err then
    -- paid for: the number stays reserved, the slot keeps counting
    return queue('record_failed', number)
end

redis.call('DEL', resv)
redis.call('ZADD', akey .. ':prov', ARGV[3], ARGV[1])

return {1, number}
