-- POST /accounts/lines/provision-confirm, RECORD (the account's slot):
-- the subscription exists, the reservation becomes the account's line
-- with the claimed number, and the limit slot counts from now (the
-- moment the confirm succeeds). When it cannot, the purchase is written
-- to the account's outbox in the same step: its reconcile entry, which
-- the settle (pv_settle.lua, the fleet's slot) queues, or the sweep
-- from the claim if the settle never comes.
--
-- Idempotent, so that it can be sent again after a lost answer (a
-- timeout, a dropped connection, the request gone: it is then a durable
-- write, re-sent until Redis answers): a second run finds the line it
-- recorded, or the outbox it wrote, and changes nothing.
--
-- KEYS[1]  lg:{acct:<A>}            KEYS[2]  lg:{acct:<A>}:prov
-- KEYS[3]  lg:{acct:<A>}:resv:<worker>
-- KEYS[4]  lg:{acct:<A>}:line:<worker>
-- KEYS[5]  lg:{acct:<A>}:reconcile:w:<worker> (the outbox)
-- (a purchase's five keys, ngx_http_linegate_key_purchase(): every key
-- the step touches is named, so that a cluster checks them all first)
-- ARGV[1]  worker id               ARGV[2]  subscription id
-- ARGV[3]  now, Unix ms            ARGV[4]  account id
-- ARGV[5]  Stripe Idempotency-Key  ARGV[6]  Stripe customer
-- ARGV[7]  now, ISO 8601           ARGV[8]  the claimed number
--
-- Returns {1, phone number} recorded (now or by an earlier run), or
-- {0, reason} written to the outbox: "reservation_missing" (the
-- reservation was released meanwhile) or "record_failed" (the line
-- could not be written: its key is not a hash; the reservation and the
-- slot are kept), or Redis's error when it refuses writes for now.
--
-- A reconciliation sweep that took this purchase for a dead worker's
-- wrote the outbox first, reason worker_lost (pv_inspect.lua): its run
-- cancels the subscription and returns the number, so no line is made
-- here. The reservation and its slot go, as the run's release would (if
-- the sweep's settle was lost, no entry would ever release them), and
-- the answer is "reservation_missing".
--
-- The outbox lg:{acct:<A>}:reconcile:w:<worker> is a hash of the
-- reconcile entry's fields (account, subscription_id, phone_number,
-- worker_id, reason, idempotency_key, customer, at), kept 7 days; the
-- first writer wins (pv_record or pv_release).

local resv = KEYS[3]
local lkey = KEYS[4]
local obox = KEYS[5]

-- An error of a write Redis refuses for now (MISCONF, OOM, NOREPLICAS,
-- READONLY: at the script's first write, so nothing of it is written)
-- is the step's answer: its sender takes it for an unanswered step and
-- sends it again until Redis takes writes. Only WRONGTYPE says that the
-- line itself cannot be written.
-- Redis 6.x prefixes the errors it raises inside a script's pcall (OOM,
-- MISCONF, NOREPLICAS, READONLY) with where the call was and the code's
-- '-' ('@user_script: 58: -OOM command not allowed...\r\n'); 7.0 does
-- not. The step's answer is the bare error on both, its first word the
-- code, which is what the sender reads to send it again.
local function bare(r)
    local msg = r.err:gsub('^@[%w_]+: %d+: ', '')
    msg = msg:gsub('^%-', ''):gsub('[\r\n]+$', '')
    return msg
end

local function refused(r)
    return type(r) == 'table' and r.err
           and not bare(r):find('^WRONGTYPE')
end

local function outbox(reason)
    if redis.call('EXISTS', obox) == 0 then
        local ok = redis.pcall('HSET', obox, 'account', ARGV[4],
                               'subscription_id', ARGV[2],
                               'phone_number', ARGV[8],
                               'worker_id', ARGV[1], 'reason', reason,
                               'idempotency_key', ARGV[5],
                               'customer', ARGV[6], 'at', ARGV[7])
        if type(ok) == 'table' and ok.err then
            return redis.error_reply(bare(ok))
        end
        redis.call('EXPIRE', obox, 604800)
    end
    return {0, reason}
end

local t = redis.call('TYPE', obox)
if (t.ok or t) == 'hash'
   and redis.call('HGET', obox, 'reason') == 'worker_lost'
   and redis.call('EXISTS', lkey) == 0
then
    redis.call('DEL', resv)
    redis.call('ZREM', KEYS[2], ARGV[1])
    return {0, 'reservation_missing'}
end

if redis.call('EXISTS', resv) == 0 then
    -- recorded by an earlier run of this script?
    local t = redis.call('TYPE', lkey)
    if (t.ok or t) == 'hash'
       and redis.call('HGET', lkey, 'subscription_id') == ARGV[2]
    then
        return {1, redis.call('HGET', lkey, 'phone_number')}
    end

    return outbox('reservation_missing')
end

local ok = redis.pcall('HSET', lkey, 'phone_number', ARGV[8],
                       'subscription_id', ARGV[2], 'createdAt', ARGV[7])

if refused(ok) then
    return redis.error_reply(bare(ok))
end

if type(ok) == 'table' and ok.err then
    -- paid for: the reservation stays, the slot keeps counting
    return outbox('record_failed')
end

redis.call('DEL', resv)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])

return {1, ARGV[8]}
