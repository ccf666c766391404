-- POST /accounts/lines/provision-confirm, RELEASE (the account's slot),
-- when the purchase fails: the reservation is dropped and the limit slot
-- freed, in one step. When Stripe's answer was lost (a subscription may
-- exist), the purchase is written to the account's outbox in the same
-- step, for the settle (pv_settle.lua) to queue. The claimed number
-- goes back to the inventory in that settle (the fleet's slot), not
-- here.
--
-- Idempotent, by the reservation (the worker id): a second run, or one
-- after a timed-out first run, finds no reservation and frees nothing,
-- and the outbox is written once (the first writer wins). It never
-- touches a line that was recorded for the worker id (its slot counts).
-- So it can be sent again until Redis answers (a durable write).
--
-- KEYS[1]  lg:{acct:<A>}            KEYS[2]  lg:{acct:<A>}:prov
-- KEYS[3]  lg:{acct:<A>}:resv:<worker>
-- KEYS[4]  lg:{acct:<A>}:line:<worker>
-- KEYS[5]  lg:{acct:<A>}:reconcile:w:<worker> (the outbox)
-- (a purchase's five keys, ngx_http_linegate_key_purchase(): every key
-- the step touches is named, so that a cluster checks them all first)
-- The outbox is written as pv_record.lua writes it.
-- ARGV[1]  worker id               ARGV[2]  now, Unix ms
-- ARGV[3]  default daily limit     ARGV[4]  default monthly limit
-- ARGV[5]  reconcile reason, "" for none
-- ARGV[6]  account id              ARGV[7]  Stripe Idempotency-Key
-- ARGV[8]  Stripe customer         ARGV[9]  now, ISO 8601
-- ARGV[10] the claimed number, "" when none (or unknown)
--
-- Returns {released: 1 | 0 (nothing was reserved), w[1..6], account,
-- line_exists: 1 | 0}.

--#include pv_state

local akey = KEYS[1]
local acct = ARGV[6]
local released = redis.call('DEL', KEYS[3])
local line = redis.call('EXISTS', KEYS[4])

-- a recorded line keeps its slot (a release sent after its record)
if line == 0 then
    redis.call('ZREM', KEYS[2], ARGV[1])
end

local obox = KEYS[5]

if ARGV[5] ~= '' and redis.call('EXISTS', obox) == 0 then
    redis.pcall('HSET', obox, 'account', acct, 'subscription_id', '',
                'phone_number', ARGV[10], 'worker_id', ARGV[1],
                'reason', ARGV[5], 'idempotency_key', ARGV[7],
                'customer', ARGV[8], 'at', ARGV[9])
    redis.pcall('EXPIRE', obox, 604800)
end

local _, _, w = lg_pv_state(akey, KEYS[2], tonumber(ARGV[2]),
                            tonumber(ARGV[3]), tonumber(ARGV[4]))

return lg_pv_reply(released, w, acct, line)
