-- POST /accounts/lines/provision-confirm, when the purchase fails: the
-- reserved number goes back to the inventory and the limit slot is freed,
-- in one step. When Stripe's answer was lost (a subscription may exist),
-- the case is also queued on lg:{fleet}:reconcile in the same step.
--
-- Idempotent, by the reservation (the worker id): a second run, or one
-- after a timed-out first run, finds no reservation and frees nothing,
-- and the entry is queued once (lg_pv_queue). It never touches a line
-- that was recorded for the worker id (its slot counts). So it can be
-- sent again until Redis answers (a durable write).
--
-- KEYS[1]  lg:{acct:<A>}, or lg:sbkey:<key id> when the account is not
--          known (the answer of pv_confirm was lost: it may have run)
-- KEYS[2]  lg:{fleet}:pv:inflight           KEYS[3]  lg:{fleet}:reconcile
-- KEYS[4]  lg:{fleet}:inventory
-- Derived from the account's key (KEYS[1]'s slot, or, with lg:sbkey,
-- the account read from it: another slot, issue 10): its :resv:<worker>,
-- :line:<worker>, :prov, :reconcile:w:<worker>.
-- ARGV[1]  worker id               ARGV[2]  now, Unix ms
-- ARGV[3]  default daily limit     ARGV[4]  default monthly limit
-- ARGV[5]  reconcile reason, "" for none
-- ARGV[6]  account id              ARGV[7]  Stripe Idempotency-Key
-- ARGV[8]  Stripe customer         ARGV[9]  now, ISO 8601
--
-- Returns {1 | 0 (nothing was reserved), w[1..6], account}, or {0} when
-- the key id is unknown.

--#include pv_state
--#include pv_queue

local akey = KEYS[1]
local acct = ARGV[6]

if acct == '' then
    acct = redis.call('HGET', KEYS[1], 'account')
    if not acct then
        return {0}
    end
    akey = 'lg:{acct:' .. acct .. '}'
end

redis.call('ZREM', KEYS[2], acct .. ' ' .. ARGV[1])

local resv = akey .. ':resv:' .. ARGV[1]
local number = redis.call('HGET', resv, 'phone_number')
local released = 0

if number then
    redis.call('SADD', KEYS[4], number)
    redis.call('DEL', resv)
    released = 1
end

-- a recorded line keeps its slot (a release sent after its record)
if redis.call('EXISTS', akey .. ':line:' .. ARGV[1]) == 0 then
    redis.call('ZREM', akey .. ':prov', ARGV[1])
end

if ARGV[5] ~= '' then
    lg_pv_queue(akey, ARGV[1], KEYS[3], {
        'account', acct, 'subscription_id', '',
        'phone_number', number or '', 'worker_id', ARGV[1],
        'reason', ARGV[5], 'idempotency_key', ARGV[7],
        'customer', ARGV[8], 'at', ARGV[9]})
end

local _, _, w = lg_pv_state(akey, tonumber(ARGV[2]), tonumber(ARGV[3]),
                            tonumber(ARGV[4]))

return lg_pv_reply(released, w, acct)
