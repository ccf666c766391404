-- The reconciliation sweep of lost purchases, the account's side of a
-- claim left in lg:{fleet}:pv:inflight (one read, the account's slot):
-- is the line recorded, is the reservation still held, did a RECORD or
-- RELEASE write the outbox. The sweep then settles the claim
-- (pv_settle.lua, the fleet's slot).
--
-- KEYS[1]  lg:{acct:<A>}
-- Derived from KEYS[1] (its slot): :line:<worker>, :resv:<worker>,
-- :reconcile:w:<worker> (the outbox).
-- ARGV[1]  worker id
--
-- Returns {line exists: 1 | 0, reservation exists: 1 | 0, the outbox's
-- fields flat {name, value, ...} or {}, the account's Stripe customer
-- ('' none), the reservation's createdAt ('' none)}.

local akey = KEYS[1]
local line = redis.call('EXISTS', akey .. ':line:' .. ARGV[1])
local resv = akey .. ':resv:' .. ARGV[1]
local held = redis.call('EXISTS', resv)
local obox = akey .. ':reconcile:w:' .. ARGV[1]
local fields = {}

local t = redis.call('TYPE', obox)
if (t.ok or t) == 'hash' then
    fields = redis.call('HGETALL', obox)
end

return {line, held, fields,
        redis.call('HGET', akey, 'stripeCustomerId') or '',
        redis.call('HGET', resv, 'createdAt') or ''}
