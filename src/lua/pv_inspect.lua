-- The reconciliation sweep of lost purchases, the account's side of a
-- claim left in lg:{fleet}:pv:inflight (one step, the account's slot):
-- is the line recorded, is the reservation still held, did a RECORD or
-- RELEASE write the outbox. The sweep then settles the claim
-- (pv_settle.lua, the fleet's slot).
--
-- For an intent ("<A> <worker> -": the confirm reserved, or was about
-- to, and never claimed a number, so never reached Stripe), a
-- reservation with no line and no outbox is released here, as
-- pv_release.lua would: the reservation dropped, the limit slot freed.
--
-- For a claim of a number, a reservation with no line and no outbox is
-- a dead worker's (worker_lost): the outbox is written here with that
-- reason, the entry the sweep queues, in the step that decides it. It
-- is the fence a live worker's late record meets (pv_record.lua): one
-- cut off from Redis past linegate_reconcile_lost_after re-sends its
-- record once Redis is back, which would otherwise make the line whose
-- subscription the run then cancels.
--
-- KEYS[1]  lg:{acct:<A>}            KEYS[2]  lg:{acct:<A>}:prov
-- KEYS[3]  lg:{acct:<A>}:resv:<worker>
-- KEYS[4]  lg:{acct:<A>}:line:<worker>
-- KEYS[5]  lg:{acct:<A>}:reconcile:w:<worker> (the outbox)
-- (a purchase's five keys, ngx_http_linegate_key_purchase(): every key
-- the step touches is named, so that a cluster checks them all first)
-- ARGV[1]  worker id
-- ARGV[2]  "1": the claim is an intent, "0": it names a number
-- ARGV[3]  the account id            ARGV[4]  the claimed number
--
-- Returns {line exists: 1 | 0, reservation exists: 1 | 0, the outbox's
-- fields flat {name, value, ...} or {} (the fence's when written now,
-- in pv_settle's order of an entry's fields), the Stripe customer (the
-- reservation's, else the account's; '' none), the reservation's
-- createdAt ('' none), released: 1 | 0}.

local akey = KEYS[1]
local line = redis.call('EXISTS', KEYS[4])
local resv = KEYS[3]
local held = redis.call('EXISTS', resv)
local obox = KEYS[5]
local fields = {}

local t = redis.call('TYPE', obox)
local otype = t.ok or t
if otype == 'hash' then
    fields = redis.call('HGETALL', obox)
end

local held_at = redis.call('HMGET', resv, 'createdAt', 'customer')
local at = held_at[1] or ''
-- the customer the purchase was charged to, as pv_reserve kept it: the
-- account's may have changed since
local customer = held_at[2] or redis.call('HGET', akey, 'stripeCustomerId')
                 or ''
local released = 0

if ARGV[2] == '1' and held == 1 and line == 0 and #fields == 0 then
    redis.call('DEL', resv)
    redis.call('ZREM', KEYS[2], ARGV[1])
    released = 1
elseif ARGV[2] == '0' and held == 1 and line == 0 and otype == 'none' then
    fields = {'account', ARGV[3], 'subscription_id', '',
              'phone_number', ARGV[4], 'worker_id', ARGV[1],
              'reason', 'worker_lost', 'idempotency_key', '',
              'customer', customer, 'at', at}
    redis.call('HSET', obox, unpack(fields))
    redis.call('EXPIRE', obox, 604800)
end

return {line, held, fields, customer, at, released}
