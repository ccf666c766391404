-- The reconciliation sweep of lost purchases, the account's side of a
-- claim left in lg:{fleet}:pv:inflight (one read, the account's slot):
-- is the line recorded, is the reservation still held, did a RECORD or
-- RELEASE write the outbox. The sweep then settles the claim
-- (pv_settle.lua, the fleet's slot).
--
-- KEYS[1]  lg:{acct:<A>}            KEYS[2]  lg:{acct:<A>}:prov
-- KEYS[3]  lg:{acct:<A>}:resv:<worker>
-- KEYS[4]  lg:{acct:<A>}:line:<worker>
-- KEYS[5]  lg:{acct:<A>}:reconcile:w:<worker> (the outbox)
-- (a purchase's five keys, ngx_http_linegate_key_purchase(): every key
-- the step touches is named, so that a cluster checks them all first)
-- ARGV[1]  worker id
--
-- Returns {line exists: 1 | 0, reservation exists: 1 | 0, the outbox's
-- fields flat {name, value, ...} or {}, the account's Stripe customer
-- ('' none), the reservation's createdAt ('' none)}.

local akey = KEYS[1]
local line = redis.call('EXISTS', KEYS[4])
local resv = KEYS[3]
local held = redis.call('EXISTS', resv)
local obox = KEYS[5]
local fields = {}

local t = redis.call('TYPE', obox)
if (t.ok or t) == 'hash' then
    fields = redis.call('HGETALL', obox)
end

return {line, held, fields,
        redis.call('HGET', akey, 'stripeCustomerId') or '',
        redis.call('HGET', resv, 'createdAt') or ''}
